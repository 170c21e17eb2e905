"""Unprivileged machines (the default on liblxc): root in the machine is a host uid of the machine's
own range, so what root does in it can't reach the host. Each escape attempt runs as root in
the machine and must fail, and the host must be unchanged; the same attempts in a privileged
machine show which of them work there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapers.backend.liblxc import unprivileged
from tests.integration.conftest import USER

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
    project.give_to_user()
    project.tapers("up").ok()
    assert unprivileged.FIRST <= host_uid(project.init_pid("web")) < unprivileged.LAST
    assert guest(project, "id -u; sudo id -u; sudo cat /root/step; ls ~/mine") == (
        "1000\n0\nfrom-root\n/home/tapers/mine\n"
    )
    (row,) = json.loads(project.tapers("status", "--json").ok().out)["machines"]
    assert row["privileged"] is False and row["out_of_date"] == []
    assert "running " in project.tapers("status").ok().out and "(privileged)" not in project.tapers("status").out

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


def _write_back(path: str) -> str:
    """Shell that writes `path`'s own value back to it: it proves write access and changes nothing."""
    return f"v=$(cat {path}) && printf \"%s\\n\" \"$v\" > {path}"


# Each attempt, as root in the machine. The writes put back what was there, so that where
# one succeeds (a privileged machine) this host is still unchanged.
ESCAPES = {
    # a fresh procfs, and the host's core_pattern through it (a pipe there runs as host root)
    "core_pattern": "mkdir -p /tmp/p && mount -t proc proc /tmp/p && " + _write_back("/tmp/p/sys/kernel/core_pattern"),
    # (LXD doesn't mount /proc/sys on its own: then the write is tried as it is)
    "proc remount": "{ mount -o remount,rw /proc/sys || true; } && " + _write_back("/proc/sys/kernel/core_pattern"),
    # cgroup v1 release_agent: runs as host root when a cgroup empties
    "release_agent": "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && " + _write_back("/tmp/cg/release_agent"),
    "sysrq": "echo h > /proc/sysrq-trigger",  # h: help, harmless even where it works
    "block device": "mknod /tmp/disk b 254 0 && head -c 512 /tmp/disk >/dev/null",
    "kcore": "head -c 16 /proc/kcore >/dev/null",
    "sysfs rw": "mount -o remount,rw /sys && " + _write_back("/sys/kernel/mm/ksm/run"),
    "kernel module": "modprobe -q dummy || insmod /nonexistent.ko",
}
# Measured on this host with `privileged: true`: these worked, each a write to the host's own
# kernel settings (the rest failed there too: LXC's device rules and capability drops).
PRIVILEGED_ESCAPES = {"core_pattern", "proc remount", "sysfs rw"}


@pytest.mark.both_backends
@pytest.mark.parametrize("privileged", [False, True], ids=["unprivileged", "privileged"])
def test_root_in_a_machine_acts_on_the_host_only_when_privileged(project, backend_name, privileged: bool) -> None:
    project.write(TAPERFILE.replace("privileged: false", f"privileged: {str(privileged).lower()}"))
    project.give_to_user()
    project.tapers("up").ok()
    watched = [Path("/proc/sys/kernel/core_pattern"), Path("/sys/kernel/mm/ksm/run"),
               *sorted(Path("/sys/fs/cgroup").glob("*/release_agent"))]
    before = {path: path.read_text() for path in watched}
    refusals = ("Permission denied", "Operation not permitted", "Read-only file system", "No such file or directory",
                "Directory nonexistent", "not found")  # LXC hides the file; modprobe isn't in the box
    succeeded = set()
    for what, script in ESCAPES.items():
        code, said = as_root(project, script)
        if code == 0:
            succeeded.add(what)
        else:
            assert any(refusal.lower() in said.lower() for refusal in refusals), f"{what}: failed, but not by a refusal:\n{said}"
    assert {path: path.read_text() for path in watched} == before
    if privileged:
        assert succeeded == PRIVILEGED_ESCAPES, f"as root in a privileged machine, these worked: {sorted(succeeded)}"
        return
    assert succeeded == set(), f"as root in an unprivileged machine, these worked: {sorted(succeeded)}"
    if backend_name == "lxd":
        return
    # Host users reach neither the machine's files nor its view of the box.
    import lxc

    container = project.container("web")
    for place in (Path("/var/lib/lxc") / container, Path("/run/tapers/lower") / container):
        assert place.stat().st_mode & 0o007 == 0, f"{place} is open to other host users"
    assert lxc.Container(container).running


@pytest.mark.both_backends
def test_a_root_owned_project_is_shared_read_only_and_its_folders_must_say_so(project) -> None:
    """A root-owned folder written by the machine's login user would hold root's files on the
    host (a setuid-root file, say): the project folder is shared read-only, a declared folder
    is refused unless `readonly: true`."""
    (project.root / "conf").mkdir()
    (project.root / "conf" / "app.ini").write_text("x=1\n")
    declared = "    synced_folders: [{host: ./conf, guest: /srv/conf}]\n"
    project.write(TAPERFILE + declared)
    refused = project.tapers("up")
    assert refused.code == 1 and "belongs to root" in refused.err and "readonly: true" in refused.err
    assert project.lxc_state("web") == "MISSING"

    project.write(TAPERFILE + declared.replace("}]", ", readonly: true}]"))
    up = project.tapers("up").ok()
    assert "/tapers is read-only in this unprivileged machine" in up.out + up.err
    assert guest(project, "cat /srv/conf/app.ini; ls /tapers") == "x=1\nTaperfile.yaml\nconf\n"
    for path in ("/tapers/new", "/srv/conf/new"):
        written = project.tapers("ssh", "web", "-c", f"touch {path}")
        assert written.code != 0 and "Read-only" in written.err
    assert sorted(p.name for p in project.root.iterdir()) == [".tapers", "Taperfile.yaml", "conf"]


def test_switching_privileged_is_a_recreate_that_asks(project) -> None:
    project.write(TAPERFILE)
    project.give_to_user()
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
def test_machines_are_unprivileged_unless_the_taperfile_says_otherwise(project, backend_name) -> None:
    project.write("machines:\n  web: {}\n")
    project.give_to_user()
    project.tapers("up").ok()
    (row,) = json.loads(project.tapers("status", "--json").ok().out)["machines"]
    assert row["privileged"] is False and "(privileged)" not in project.tapers("status").ok().out
    root = host_uid(project.init_pid("web"))
    if backend_name == "liblxc":
        assert unprivileged.FIRST <= root < unprivileged.LAST
    assert root >= 65536, f"root in the machine is host uid {root}"
    # The login user writes the synced project folder as its owner; root in the machine can't write there.
    guest(project, "echo hi > /tapers/from-guest")
    written = (project.root / "from-guest").stat()
    assert (written.st_uid, written.st_gid) == (USER, USER)
    code, said = as_root(project, "touch /tapers/by-root")
    assert code != 0 and "Value too large" in said and not (project.root / "by-root").exists()


def test_without_overlayfs_an_unprivileged_machine_gets_a_shifted_copy(project) -> None:
    project.env["TAPERS_COPY_MODE"] = "copy"
    project.write(TAPERFILE)
    project.give_to_user()
    project.tapers("up").ok()
    assert unprivileged.FIRST <= host_uid(project.init_pid("web")) < unprivileged.LAST
    assert guest(project, "sudo id -u; stat -c %u /etc/hostname; ls -ln /usr/bin/sudo | cut -c1-10") == "0\n0\n-rwsr-xr-x\n"
    copy = Path("/var/lib/lxc") / project.container("web") / "rootfs"
    assert copy.stat().st_uid == host_uid(project.init_pid("web"))  # its root's, on the host
