"""What each provisioner kind would run, and what changes its fingerprint."""

from __future__ import annotations

import shlex
from pathlib import Path

from tapers.provision import fingerprint
from tapers.provision.inventory import groups_of, render_inventory
from tapers.provision.shell import command_for
from tapers.ssh.config import SshTarget
from tapers.taperfile.machine import Machine, Step


def shell(**options) -> Step:
    return Step(index=1, name=None, kind="shell", run="once", reboot=False, options=options)


def test_args_are_passed_verbatim_and_privileged_runs_through_sudo() -> None:
    step = shell(inline="echo", args=["hello", "two words", 3, True], env={"APP_ENV": "dev"})
    command = command_for(step, "/tmp/s", b"echo hi")
    assert shlex.split(command) == [
        "sudo", "-n", "-H", "env", "APP_ENV=dev", "/bin/sh", "/tmp/s", "hello", "two words", "3", "true",
    ]
    unprivileged = shell(inline="echo", privileged=False)
    assert shlex.split(command_for(unprivileged, "/tmp/s", b"#!/usr/bin/python3\n")) == ["/tmp/s"]


def test_shell_fingerprint_follows_the_script_content(tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("echo one\n")
    step = shell(path="setup.sh", args=["a"])
    first = fingerprint(step, tmp_path)
    assert fingerprint(step, tmp_path) == first
    (tmp_path / "unrelated.txt").write_text("x")
    assert fingerprint(step, tmp_path) == first
    script.write_text("echo two\n")
    second = fingerprint(step, tmp_path)
    assert second != first
    assert fingerprint(shell(path="setup.sh", args=["b"]), tmp_path) != second
    assert fingerprint(shell(path="setup.sh", args=["a"], privileged=False), tmp_path) != second
    script.write_bytes(b"echo \xff\n")  # bytes that aren't UTF-8: each its own fingerprint
    invalid = fingerprint(step, tmp_path)
    script.write_bytes(b"echo \xfe\n")
    assert fingerprint(step, tmp_path) != invalid


def test_file_fingerprint_sees_content_and_exec_bit(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "tool.sh").write_text("echo\n")
    step = Step(1, None, "file", "once", False, {"source": "conf", "destination": "/opt/conf"})
    first = fingerprint(step, tmp_path)
    (folder / "tool.sh").chmod(0o755)
    assert fingerprint(step, tmp_path) != first


def test_ansible_fingerprint_sees_roles_and_vars(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [web]\n")
    (tmp_path / "roles" / "web" / "tasks").mkdir(parents=True)
    task = tmp_path / "roles" / "web" / "tasks" / "main.yml"
    task.write_text("- debug: msg=hi\n")
    step = Step(1, None, "ansible", "once", False, {"playbook": "site.yml", "extra_vars": {"a": 1}})
    first = fingerprint(step, tmp_path)
    task.write_text("- debug: msg=changed\n")
    second = fingerprint(step, tmp_path)
    assert second != first
    changed_vars = Step(1, None, "ansible", "once", False, {"playbook": "site.yml", "extra_vars": {"a": 2}})
    assert fingerprint(changed_vars, tmp_path) != second


def test_inventory_lists_machines_groups_and_pins_host_keys(tmp_path: Path) -> None:
    play = Step(1, None, "ansible", "once", False, {"playbook": "site.yml", "groups": {"webservers": ["web"]}})
    web = Machine("web", "debian/bookworm", "web", None, None, None, True, True, provision=(play,))
    db = Machine("db", "debian/bookworm", "db", None, None, None, False, True)
    targets = [SshTarget("web", "tapers-shop-web", "10.97.0.2", "tapers", "ssh-ed25519 AAAA")]
    text = render_inventory(targets, groups_of([web, db]), tmp_path / "id", tmp_path / "known_hosts", "shop")
    assert "web ansible_host=10.97.0.2 ansible_user=tapers" in text
    assert "HostKeyAlias=tapers-shop-web -o StrictHostKeyChecking=yes" in text
    assert "[webservers]\nweb\n" in text
    assert "StrictHostKeyChecking=no" not in text


def test_missing_ansible_is_a_clear_error_with_the_install_hint(monkeypatch) -> None:
    import pytest

    from tapers.errors import ProvisionError
    from tapers.provision import ansible, check_host_tools

    monkeypatch.setattr(ansible, "playbook_command", lambda: None)
    with pytest.raises(ProvisionError) as raised:
        check_host_tools({"shell", "ansible"})
    assert "needs ansible-playbook" in raised.value.message
    assert "pip install 'tapers[ansible]'" in raised.value.hint
