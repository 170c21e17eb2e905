"""`privileged: false` machines (liblxc): root in the machine is a host uid of the machine's
own range, so what root does in it can't reach the host. Each escape attempt runs as root in
the machine, must fail, and the host must be unchanged. (Not compared with a privileged
machine here: there, several of these would change this very host.)"""

from __future__ import annotations

import json
from pathlib import Path

from tapers.backend.liblxc import unprivileged

TAPERFILE = """\
machines:
  web:
    privileged: false
    provision:
      - shell: "echo from-root > /root/step"
      - {name: mine, shell: {inline: "touch ~/mine", privileged: false}}
"""


def guest(project, command: str) -> str:
    return project.tapers("ssh", "web", "-c", command).ok().out


def as_root(project, script: str) -> tuple[int, str]:
    """Run `script` as root in the machine: its exit code and what it printed."""
    result = project.tapers("ssh", "web", "-c", f"sudo sh -c '{script}' 2>&1")
    return result.code, result.out + result.err


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_an_unprivileged_machine_works_and_its_root_is_nobody_on_the_host(project) -> None:
    project.write(TAPERFILE)
    assert "web: create (not found; unprivileged)" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert unprivileged.FIRST <= host_uid(project.init_pid("web")) < unprivileged.LAST
    assert guest(project, "id -u; sudo id -u; sudo cat /root/step; ls ~/mine") == (
        "1000\n0\nfrom-root\n/home/tapers/mine\n"
    )
    (row,) = json.loads(project.tapers("status", "--json").ok().out)["machines"]
    assert row["privileged"] is False and row["out_of_date"] == []
    assert "running (unprivileged)" in project.tapers("status").ok().out

    # The synced project folder: the login user writes as the folder's owner...
    guest(project, "echo hi > /tapers/from-guest")
    written = (project.root / "from-guest").stat()
    assert (written.st_uid, written.st_gid) == (project.root.stat().st_uid, project.root.stat().st_gid)
    # ...and root in the machine can create nothing there (so no setuid-root file either).
    code, said = as_root(project, "touch /tapers/by-root")
    assert code != 0 and "Value too large" in said
    assert not (project.root / "by-root").exists()

    # Deleting a folder that comes from the box works (overlay in a user namespace).
    guest(project, "sudo rm -r /usr/share/doc/apt && test ! -e /usr/share/doc/apt")
    # Halt, start, snapshot and restore keep working; the box's view is made again at start.
    project.tapers("snapshot", "save", "web", "one").ok()
    guest(project, "sudo touch /etc/after-snapshot")
    project.tapers("halt").ok()
    project.tapers("snapshot", "restore", "web", "one").ok()
    project.tapers("up").ok()
    assert project.tapers("ssh", "web", "-c", "test -e /etc/after-snapshot").code == 1
    assert guest(project, "sudo cat /root/step") == "from-root\n"


def test_root_in_an_unprivileged_machine_cannot_act_on_the_host(project) -> None:
    project.write(TAPERFILE)
    project.tapers("up").ok()
    watched = [Path("/proc/sys/kernel/core_pattern")] + sorted(Path("/sys/fs/cgroup").glob("*/release_agent"))
    before = {path: path.read_text() for path in watched}
    attempts = {
        # a fresh procfs, and the host's core_pattern through it (a pipe runs as host root)
        "core_pattern": "mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo \"|/tmp/evil\" > /tmp/p/sys/kernel/core_pattern",
        "proc remount": "mount -o remount,rw /proc/sys && echo \"|/tmp/evil\" > /proc/sys/kernel/core_pattern",
        # cgroup v1 release_agent: runs as host root when a cgroup empties
        "release_agent": "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && echo /tmp/evil > /tmp/cg/release_agent",
        "sysrq": "echo h > /proc/sysrq-trigger",  # h: help, harmless even where it works
        "block device": "mknod /tmp/disk b 254 0 && head -c 512 /tmp/disk",
        "kcore": "head -c 16 /proc/kcore",
        "sysfs rw": "mount -o remount,rw /sys && echo 1 > /sys/kernel/mm/ksm/run",
    }
    for what, script in attempts.items():
        code, said = as_root(project, script)
        assert code != 0, f"{what}: succeeded as root in an unprivileged machine:\n{said}"
    assert {path: path.read_text() for path in watched} == before


def test_switching_privileged_is_a_recreate_that_asks(project) -> None:
    project.write(TAPERFILE)
    project.tapers("up").ok()
    guest(project, "echo precious > ~/data")
    project.write(TAPERFILE.replace("privileged: false", "privileged: true"))
    plan = project.tapers("plan").ok().out
    assert "web: re-create (unprivileged -> privileged; data in the machine is lost)  [recreate]" in plan
    refused = project.tapers("up")
    assert refused.code == 1 and "--yes" in refused.err
    assert guest(project, "cat ~/data") == "precious\n"
    project.tapers("up", "--yes").ok()
    assert host_uid(project.init_pid("web")) == 0
    assert project.tapers("ssh", "web", "-c", "cat ~/data").code != 0
