"""Unprivileged machines (`privileged: false`, liblxc): root in the machine is a host uid of the machine's
own range, so what root does in it can't reach the host. Each escape attempt runs as root in
the machine, must fail, and the host must be unchanged. (Not compared with a privileged
machine here: there, several of these would change this very host.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapers.backend.liblxc import unprivileged

TAPERFILE = """\
machines:
  web:
    privileged: false
    provision:
      - shell: "echo from-root > /root/step"
      - {name: mine, shell: {inline: "touch ~/mine", privileged: false}}
"""


OWNER = 4242  # the project folder's owner: a user, not root (a root-owned folder is refused)


def give_away(project) -> None:
    import os

    os.chown(project.root, OWNER, OWNER)


def guest(project, command: str) -> str:
    return project.tapers("ssh", "web", "-c", command).ok().out


def as_root(project, script: str) -> tuple[int, str]:
    """Run `script` as root in the machine (root it is: checked first): its exit code and
    what it printed."""
    result = project.tapers("ssh", "web", "-c", f"sudo -n sh -c 'test $(id -u) = 0 || exit 99; {script}' 2>&1")
    assert result.code != 99, "sudo did not give root in the machine"
    return result.code, result.out + result.err


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_an_unprivileged_machine_works_and_its_root_is_nobody_on_the_host(project) -> None:
    project.write(TAPERFILE)
    give_away(project)
    project.tapers("up").ok()
    assert unprivileged.FIRST <= host_uid(project.init_pid("web")) < unprivileged.LAST
    assert guest(project, "id -u; sudo id -u; sudo cat /root/step; ls ~/mine") == (
        "1000\n0\nfrom-root\n/home/tapers/mine\n"
    )
    (row,) = json.loads(project.tapers("status", "--json").ok().out)["machines"]
    assert row["privileged"] is False and row["out_of_date"] == []
    assert "running " in project.tapers("status").ok().out and "(privileged)" not in project.tapers("status").out

    # The synced project folder: the login user writes as the folder's owner...
    guest(project, "echo hi > /tapers/from-guest")
    written = (project.root / "from-guest").stat()
    assert (written.st_uid, written.st_gid) == (OWNER, OWNER)
    # ...and root in the machine can create nothing there (so no setuid-root file either).
    code, said = as_root(project, "touch /tapers/by-root")
    assert code != 0 and "Value too large" in said
    assert not (project.root / "by-root").exists()

    # Deleting a folder that comes from the box works (overlay in a user namespace).
    guest(project, "sudo rm -r /usr/share/doc/apt && test ! -e /usr/share/doc/apt")
    # Packaged, the box carries the machine's own ids (not the host's) and its deletions.
    import tarfile

    archive = project.root.parent / "web.box.tar.gz"
    project.tapers("package", "web", "-o", str(archive), "--name", f"{project.name}/up").ok()
    with tarfile.open(archive) as packed:
        members = {m.name.removeprefix("./"): m for m in packed.getmembers()}
    assert (members["rootfs/etc/hostname"].uid, members["rootfs/home/tapers/mine"].uid) == (0, 1000)
    assert max(m.uid for m in members.values()) < 65536
    assert not any(name.startswith("rootfs/usr/share/doc/apt") for name in members)
    assert "rootfs/usr/share/doc/dpkg" in members
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
    give_away(project)
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
    refusals = ("Permission denied", "Operation not permitted", "Read-only file system", "No such file or directory",
                "Directory nonexistent")  # the last two: LXC hides the file from the machine
    for what, script in attempts.items():
        code, said = as_root(project, script)
        assert code != 0, f"{what}: succeeded as root in an unprivileged machine:\n{said}"
        assert any(refusal.lower() in said.lower() for refusal in refusals), f"{what}: failed, but not by a refusal:\n{said}"
    assert {path: path.read_text() for path in watched} == before
    # Host users reach neither the machine's files nor its view of the box.
    import lxc

    container = project.container("web")
    for place in (Path("/var/lib/lxc") / container, Path("/run/tapers/lower") / container):
        assert place.stat().st_mode & 0o007 == 0, f"{place} is open to other host users"
    assert lxc.Container(container).running


def test_a_root_owned_synced_folder_is_refused_and_nothing_is_made(project) -> None:
    """Its login user's files would be root's on the host (a setuid-root file, say)."""
    project.write(TAPERFILE)
    refused = project.tapers("up")
    assert refused.code == 1 and "belongs to root" in refused.err and "privileged: true" in refused.err
    assert project.lxc_state("web") == "MISSING"


def test_switching_privileged_is_a_recreate_that_asks(project) -> None:
    project.write(TAPERFILE)
    give_away(project)
    project.tapers("up").ok()
    guest(project, "echo precious > ~/data")
    project.write(TAPERFILE.replace("privileged: false", "privileged: true"))
    plan = project.tapers("plan").ok().out
    assert "web: re-create (unprivileged -> privileged; data in the machine is lost)  [recreate]" in plan
    assert "note: machine `web` is privileged (`privileged: true`): root in it can reach the host" in plan
    refused = project.tapers("up")
    assert refused.code == 1 and "--yes" in refused.err
    assert guest(project, "cat ~/data") == "precious\n"
    project.tapers("up", "--yes").ok()
    assert host_uid(project.init_pid("web")) == 0
    assert project.tapers("ssh", "web", "-c", "cat ~/data").code != 0


@pytest.mark.both_backends
def test_machines_are_privileged_unless_the_taperfile_says_otherwise(project, backend_name) -> None:
    """For now (status marks them, so nobody takes one for the other)."""
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    (row,) = json.loads(project.tapers("status", "--json").ok().out)["machines"]
    assert row["privileged"] is True
    assert "running (privileged)" in project.tapers("status").ok().out
    if backend_name == "liblxc":
        assert host_uid(project.init_pid("web")) == 0


def test_without_overlayfs_an_unprivileged_machine_gets_a_shifted_copy(project) -> None:
    project.env["TAPERS_COPY_MODE"] = "copy"
    project.write(TAPERFILE)
    give_away(project)
    project.tapers("up").ok()
    assert unprivileged.FIRST <= host_uid(project.init_pid("web")) < unprivileged.LAST
    assert guest(project, "sudo id -u; stat -c %u /etc/hostname; ls -ln /usr/bin/sudo | cut -c1-10") == "0\n0\n-rwsr-xr-x\n"
    copy = Path("/var/lib/lxc") / project.container("web") / "rootfs"
    assert copy.stat().st_uid == host_uid(project.init_pid("web"))  # its root's, on the host
