"""Every value that leaves tapers is checked where it is written: LXC config lines, the
ssh_config and known_hosts, the Ansible inventory, /etc/hosts, nftables rules. Each test
gives a hostile value and asserts the refusal, or that the value stays one value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.backend.api import Forward
from tapers.backend.liblxc import ports
from tapers.backend import lxc_config
from tapers.errors import UnsafeValueError
from tapers.engine.names import hosts_file
from tapers.provision.inventory import render_inventory
from tapers.ssh.config import SshTarget, render_known_hosts, render_ssh_config
from tapers.taperfile import Machine

HOSTILE = ["a\nlxc.hook.pre-start = /tmp/x", "a\rb", "a\x00b", "a\x1bb", "a\x7fb", "a\tb",
           # where Python's splitlines breaks lines (a reader of the file may), and a lone surrogate
           "x\u2028lxc.hook.pre-start=/tmp/x;#", "a\u2029b", "a\x85b", "a\udcffb"]


@pytest.mark.parametrize("value", HOSTILE)
def test_an_lxc_config_value_with_a_control_character_is_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeValueError) as refused:
        lxc_config.render([("lxc.uts.name", "web"), ("lxc.mount.entry", value)], tmp_path / "config")
    assert f"{tmp_path / 'config'}:2" in refused.value.message and "lxc.mount.entry" in refused.value.message


def test_an_lxc_config_key_must_be_a_key(tmp_path: Path) -> None:
    with pytest.raises(UnsafeValueError):
        lxc_config.render([("lxc.hook.pre-start = /x\nlxc.uts.name", "web")], tmp_path / "config")


def test_mount_entries_escape_spaces_and_backslashes_as_lxc_reads_them() -> None:
    entry = lxc_config.mount_entry(Path("/home/ana/my project"), "/srv/a b\\c", "bind,create=dir")
    assert entry == "/home/ana/my\\040project srv/a\\040b\\134c none bind,create=dir 0 0"
    assert len(entry.split()) == 6  # still the six fstab fields
    with pytest.raises(UnsafeValueError):
        lxc_config.mount_entry(Path("/home/ana/x\nlxc.hook.start = /bin/sh"), "/srv/a", "bind")


def test_a_config_line_is_edited_as_lxc_reads_it(tmp_path: Path) -> None:
    """A value with U+2028 in a config (written by hand or by an older tapers) stays one line
    when tapers edits the config: it is never split into a key of its own."""
    from tapers.backend.liblxc.backend import _edit_config

    config = tmp_path / "config"
    config.write_text("lxc.uts.name = web\nlxc.mount.entry = /x\u2028lxc.hook.pre-start=/tmp/pwn;# y none bind 0 0\n")
    _edit_config(tmp_path, ("lxc.uts.name",), [("lxc.uts.name", "db")])
    text = config.read_text()
    assert text.count("\n") == 2 and "\nlxc.hook" not in text
    assert [key for key, _ in lxc_config.parse(text)] == ["lxc.mount.entry", "lxc.uts.name"]


def _target(**changes: str) -> SshTarget:
    values = dict(machine="web", container="tapers-p-web", address="10.97.0.2", user="tapers",
                  host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx comment")
    values.update(changes)
    return SshTarget(**values)


@pytest.mark.parametrize("folder", ['/home/ana/x"y', "/home/ana/x\n  ProxyCommand touch /tmp/pwned", "/home/%h"])
def test_an_ssh_config_path_that_would_change_its_meaning_is_refused(folder: str) -> None:
    with pytest.raises(UnsafeValueError):
        render_ssh_config([_target()], Path(folder) / "id", Path(folder) / "known_hosts", "p")


def test_ssh_config_paths_with_spaces_are_quoted() -> None:
    text = render_ssh_config([_target()], Path("/home/ana/my p/id"), Path("/home/ana/my p/kh"), "p")
    assert '  IdentityFile "/home/ana/my p/id"' in text
    assert '  UserKnownHostsFile "/home/ana/my p/kh"' in text


@pytest.mark.parametrize("field,value", [("user", "tapers\n  ProxyCommand x"), ("address", "10.0.0.2 -oProxyCommand=x"),
                                         ("container", "tapers-p-web\n  ProxyCommand x")])
def test_record_values_in_ssh_files_are_checked(field: str, value: str) -> None:
    with pytest.raises(UnsafeValueError):
        render_ssh_config([_target(**{field: value})], Path("/p/id"), Path("/p/kh"), "p")


def test_a_host_key_is_one_known_hosts_line_whatever_it_holds() -> None:
    text = render_known_hosts([_target(host_key="ssh-ed25519 AAAA\nevil.host ssh-ed25519 BBBB")])
    assert text == "tapers-p-web ssh-ed25519 AAAA\n"


@pytest.mark.parametrize("group", ["web ansible_connection=local", "x]\n[all:vars", "1st", "a=b"])
def test_an_ansible_group_that_could_add_variables_is_refused(group: str) -> None:
    with pytest.raises(UnsafeValueError):
        render_inventory([_target()], {group: ["web"]}, Path("/p/id"), Path("/p/kh"), "p")


def test_inventory_paths_with_spaces_stay_one_value() -> None:
    import shlex

    text = render_inventory([_target()], {"webservers": ["web"]}, Path("/home/a b/id"), Path("/home/a b/kh"), "p")
    line = next(line for line in text.splitlines() if line.startswith("web "))
    fields = dict(part.split("=", 1) for part in shlex.split(line)[1:])
    assert fields["ansible_ssh_private_key_file"] == "/home/a b/id"
    assert shlex.split(fields["ansible_ssh_common_args"])[1] == "UserKnownHostsFile=/home/a b/kh"


def test_hosts_file_refuses_a_name_that_would_add_another() -> None:
    machine = Machine(name="web", box="b", hostname="web", cpus=None, memory=None, pids=None, primary=False,
                      autostart=True)
    assert "10.0.0.3\tdb" in hosts_file(machine, [("10.0.0.3", ["db"])])
    with pytest.raises(UnsafeValueError):
        hosts_file(machine, [("10.0.0.3", ["db 10.0.0.9 evil"])])
    with pytest.raises(UnsafeValueError):
        hosts_file(machine, [("10.0.0.3\n1.2.3.4", ["db"])])


def test_an_nftables_comment_cannot_close_its_quotes(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[object] = []
    monkeypatch.setattr(ports.nft, "apply", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(ports, "forwarded", lambda: ran.append("listed") or {})
    with pytest.raises(UnsafeValueError):
        ports.install('tapers-x"; flush ruleset; "', [])
    assert ran == []  # refused before nft was asked anything


def test_a_forwarded_port_only_ever_catches_traffic_to_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """`host_ip: 8.8.8.8` must not turn the host's own DNS queries into the machine's."""
    scripts: list[str] = []
    monkeypatch.setattr(ports.nft, "apply", lambda script, what: scripts.append(script))
    monkeypatch.setattr(ports, "forwarded", lambda: {})
    forwards = [Forward(host_ip=ip, host=53, guest=53, protocol="udp", guest_ip="10.97.0.2")
                for ip in ("8.8.8.8", "0.0.0.0", "127.0.0.1")]
    ports.install("tapers-p-web", forwards)
    rules = [line for line in scripts[0].splitlines() if line.startswith("add rule")]
    assert len(rules) == 6 and all("fib daddr type local" in rule for rule in rules)


def test_a_listener_bound_to_a_device_holds_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd-resolved's stub listens on 127.0.0.53%lo:53: a forward of 127.0.0.53:53 would
    take the host's DNS into a machine. `ss` names the device after the address."""
    import subprocess

    from tapers.backend import forwards

    listed = ("UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:* users:((\"systemd-resolve\",pid=321,fd=13))\n"
              "UNCONN 0 0 [fe80::1%eth0]:5353 [::]:* users:((\"avahi\",pid=7,fd=3))\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, listed, ""))
    assert forwards.listening_process("127.0.0.53", 53, "udp") == "systemd-resolve (pid 321)"
    assert forwards.listening_process("127.0.0.1", 53, "udp") is None
