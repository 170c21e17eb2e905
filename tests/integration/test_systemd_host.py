"""A normal user runs tapers on a host whose init is systemd, after `sudo tapers host setup`.

This host's init is not systemd, but every tapers machine's is: a privileged machine with
`nesting: true` and LXC in it is that host, and its user logs in over SSH (a real PAM
session: logind, `user@UID.service`, `systemd-run --user`). Its cgroups are hybrid, as this
host's are (v1 controllers, an empty unified tree); a pure cgroup v2 host can't be made here
(every controller is bound to a v1 hierarchy of the host).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.integration.conftest import BOX, Result, box_archive, readable_code_copy, wait_for

PACKAGES = ("lxc", "lxc-templates", "uidmap", "libpam-systemd", "dbus-user-session", "nftables", "libnftables1",
            "mmdebstrap")
USER = "sdhost"
TAPERS = "python3 -P -m tapers"
# The user's machines and boxes on a synced folder: the machine's / is overlayfs, which can't
# hold their machines' writable layers (an artefact of nesting too).
ENV = ("export PYTHONPATH=/opt/tapers:/opt/tapers/site-packages NO_COLOR=1 TAPERS_HOME=/srv/tapers/home "
       "XDG_DATA_HOME=/srv/tapers/data")
MACHINES = "/srv/tapers/data/tapers/machines"

# An artefact of nesting, not of systemd hosts: this host mounts cpu and cpuacct as two
# hierarchies; systemd in the machine mounts them as one, fails, and leaves links to an empty
# folder, on which LXC fails. Mount them as the host has them.
SPLIT_CPU = """
if [ -L /sys/fs/cgroup/cpu ]; then
  mount -o remount,rw /sys/fs/cgroup
  rm /sys/fs/cgroup/cpu /sys/fs/cgroup/cpuacct
  rmdir /sys/fs/cgroup/cpu,cpuacct
  mkdir /sys/fs/cgroup/cpu /sys/fs/cgroup/cpuacct
  mount -t cgroup -o rw,nosuid,nodev,noexec,cpu cgroup /sys/fs/cgroup/cpu
  mount -t cgroup -o rw,nosuid,nodev,noexec,cpuacct cgroup /sys/fs/cgroup/cpuacct
  mount -o remount,ro /sys/fs/cgroup
fi
"""


class SystemdHost:
    def __init__(self, project, key: Path) -> None:
        self.project = project
        self.key = key
        self.address = ""

    def root(self, command: str) -> Result:
        """`command` as root on the systemd host."""
        return self.project.tapers("ssh", "host", "-c", f"sudo sh -c {shlex.quote(command)}", timeout=300)

    def user(self, command: str) -> Result:
        """`command` in a login of USER over SSH (their own session, as a developer's)."""
        process = subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{USER}@{self.address}",
             f"{ENV}; {command}"],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        return Result(process.returncode, process.stdout, process.stderr, ("ssh", USER, command))

    def tapers(self, *args: str) -> Result:
        result = self.user(f"cd ~/p && {TAPERS} {shlex.join(args)}")
        return Result(result.code, result.out, result.err, args)


def test_a_user_runs_machines_on_a_host_whose_init_is_systemd(project, box_home, tmp_path) -> None:
    code = readable_code_copy()
    shared = {"box": tmp_path / "box", "tapers": tmp_path / "tapers"}  # the user's tapers: not on overlayfs
    for folder in shared.values():
        folder.mkdir()
    box_archive(box_home.home, shared["box"] / "box.tar")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    host = SystemdHost(project, tmp_path / "key")
    try:
        with project.built_box("debian/bookworm", *PACKAGES) as box:
            project.write(
                f"machines:\n  host:\n    box: {box}\n    privileged: true\n    nesting: true\n"
                "    synced_folders:\n"
                f"      - {{host: {code}, guest: /srv/code, readonly: true}}\n"
                f"      - {{host: {shared['box']}, guest: /srv/box, readonly: true}}\n"
                f"      - {{host: {shared['tapers']}, guest: /srv/tapers}}\n")
            project.tapers("trust", "--yes").ok()  # (a folder outside the project, writable by the machine)
            project.tapers("up").ok()
            host.address = json.loads(project.tapers("status", "--json").ok().out)["machines"][0]["address"]
            wait_for(lambda: host.root("systemctl is-system-running").out.strip() in ("running", "degraded"), 60,
                     "systemd in the host machine to finish starting")
            host.root(SPLIT_CPU).ok()
            # tapers as a host's root installs it: in a folder of root's (its boot hook runs it)
            host.root("cp -a /srv/code /opt/tapers && chown -R 0:0 /opt/tapers").ok()
            _the_user_runs_machines(host)
    finally:
        shutil.rmtree(code, ignore_errors=True)


def _the_user_runs_machines(host: SystemdHost) -> None:
    public = host.key.with_suffix(".pub").read_text().strip()
    host.root(f"useradd -m -s /bin/bash {USER} && chown {USER}: /srv/tapers && "
              f"install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh && "
              f"echo {shlex.quote(public)} > /home/{USER}/.ssh/authorized_keys && "
              f"chown {USER}: /home/{USER}/.ssh/authorized_keys").ok()
    setup = host.root(f"{ENV}; {TAPERS} host setup --user {USER}").ok()
    assert "tapers-host.service makes it again" in setup.out, setup.out
    assert "Delegate=cpu cpuset io memory pids" in host.root("systemctl cat user@.service").ok().out
    assert host.root("systemctl is-enabled tapers-host.service").ok().out == "enabled\n"
    # The user's manager (whose scopes their machines run in) stays when their last login ends.
    assert host.root(f"loginctl show-user {USER} -p Linger").ok().out == "Linger=yes\n"

    # A login of theirs has its own systemd manager.
    session = host.user("echo $XDG_RUNTIME_DIR; systemctl --user is-system-running || true")
    assert session.code == 0 and session.out.split()[0] == f"/run/user/{_uid(host)}", session.err
    doctor = host.user(f"{TAPERS} doctor")
    assert doctor.code == 0, doctor.out
    host.user(f"{TAPERS} box add {BOX} /srv/box/box.tar --from-rootfs").ok()
    host.user("mkdir -p ~/p && printf 'version: 1\\nname: sd\\nmachines:\\n  web: {memory: 256M, pids: 512}\\n' "
              "> ~/p/Taperfile.yaml").ok()

    host.tapers("up").ok()
    assert host.tapers("ssh", "web", "-c", "echo hi").ok().out == "hi\n"
    # Its cgroups: the unified tree in a scope of the user's own manager; each v1 controller
    # in the user's cgroup tapers made (systemd gives normal users none of those).
    container = "tapers-sd-web"
    pid = host.user(f"lxc-info -P {MACHINES} -n {container} -p -H").ok().out.strip()
    cgroups = dict(line.split(":", 2)[1:] for line in host.root(f"cat /proc/{pid}/cgroup").ok().out.splitlines())
    assert f"/user@{_uid(host)}.service/" in cgroups[""] and f"lxc.payload.{container}" in cgroups[""], cgroups
    for controller in ("memory", "pids", "freezer"):
        assert cgroups[controller].startswith(f"/tapers/{USER}/lxc.payload.{container}"), cgroups
    limit = host.root(f"cat /sys/fs/cgroup/memory/tapers/{USER}/lxc.payload.{container}/memory.limit_in_bytes")
    assert limit.ok().out == f"{256 * 1024 * 1024}\n"

    host.tapers("suspend").ok()
    assert _state(host) == "frozen"
    host.tapers("resume").ok()
    assert host.tapers("ssh", "web", "-c", "echo again").ok().out == "again\n"
    host.tapers("halt").ok()
    assert _state(host) == "stopped"
    host.tapers("up").ok()
    assert host.tapers("ssh", "web", "-c", "echo back").ok().out == "back\n"
    host.tapers("halt").ok()

    # At each daemon-reload (an upgrade runs one) systemd removes the empty cgroups of the
    # v1 controllers it doesn't account for (blkio here): tapers makes none of those.
    host.root("systemctl daemon-reload").ok()
    assert host.user(f"{TAPERS} doctor").code == 0
    # One gone all the same (another systemd's defaults): tapers says why, and the fix works.
    host.root(f"find /sys/fs/cgroup/memory/tapers/{USER} -depth -type d -exec rmdir {{}} +").ok()  # (as a trim)
    refused = host.tapers("up")
    assert refused.code != 0 and f"sudo tapers host setup --user {USER}" in refused.err, refused.err
    assert "daemon-reload" in refused.err and _state(host) == "stopped", refused.err
    # What a reboot takes too (the bridge, the rules), made again by the boot unit setup installed.
    host.root(f"ip link delete tpu$(id -u {USER}) && nft delete table ip tapers_users").ok()
    host.root("systemctl set-environment PYTHONPATH=/opt/tapers:/opt/tapers/site-packages && "  # (this test's copy)
              "systemctl restart tapers-host.service").ok()
    assert host.user(f"{TAPERS} doctor").code == 0
    host.tapers("up").ok()
    assert host.tapers("ssh", "web", "-c", "echo restored").ok().out == "restored\n"
    host.tapers("destroy", "-f").ok()

    host.root(f"{ENV}; {TAPERS} host teardown --user {USER}").ok()
    left = host.root("ls -d /etc/systemd/system/user@.service.d /etc/systemd/system/tapers-host.service "
                     "/sys/fs/cgroup/*/tapers /etc/tapers /sys/class/net/tpu* /var/lib/systemd/linger/* 2>/dev/null; "
                     "nft list tables; cat /etc/lxc/lxc-usernet")
    assert USER not in left.out and "tapers" not in left.out and "tpu" not in left.out, left.out


def _uid(host: SystemdHost) -> int:
    return int(host.user("id -u").ok().out)


def _state(host: SystemdHost) -> str:
    return json.loads(host.tapers("status", "--json").ok().out)["machines"][0]["state"]

