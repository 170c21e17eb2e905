"""The views tapers mounts on the host of a machine's files (`tapers package`) and of its
synced folders (staged before a start) hold what machines wrote: a setuid file guest root
left, the project of a private home, the project key. No other host user may reach them,
and no setuid bit or device node counts through them. Real mounts, no containers."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tapers.backend import staging
from tapers.backend.liblxc import backend as liblxc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and other owners' files: needs root")

NOBODY = 65534
SHIFT = 0x70000000


def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True)


def _options(view: Path) -> set[str]:
    """The per-mount options of the mount at `view`."""
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == str(view):
            return set(fields[5].split(","))
    raise AssertionError(f"nothing is mounted at {view}")


def _euid_when_run(tool: Path) -> str:
    """The effective uid `tool` (a setuid `id`) gets, run by nobody: opened here (root passes
    where nobody may not), run through its fd."""
    fd = os.open(tool, os.O_PATH)
    try:
        ran = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                              f"/proc/self/fd/{fd}", "-u"], capture_output=True, text=True, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert ran.returncode == 0, ran
    return ran.stdout.strip()


def _setuid_id(folder: Path, owner: int) -> Path:
    """A copy of `id`, setuid to `owner`, that any user may run: what a machine would plant."""
    planted = folder / "tool"
    shutil.copy(shutil.which("id") or "/usr/bin/id", planted)
    os.chown(planted, owner, owner)
    os.chmod(planted, 0o4755)
    return planted


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(run, 0o755)  # as /run/tapers is: anyone may pass
    monkeypatch.setenv("TAPERS_RUN_DIR", str(run))
    return run


def test_a_machine_s_files_mounted_to_package_it_are_no_one_else_s(tmp_path: Path, run_dir: Path) -> None:
    upper, box = tmp_path / "upper", tmp_path / "box"
    for layer in (upper, box):
        layer.mkdir()
        os.chmod(layer, 0o755)
    _setuid_id(upper, 0)  # guest root's setuid file, in a privileged machine's layer
    with liblxc._overlay_view("tapers-x-web", upper, [box]) as view:
        assert {"nosuid", "nodev"} <= _options(view)
        assert stat.S_IMODE(view.parent.stat().st_mode) == 0o700
        refused = _as_nobody("stat", str(view / "tool"))
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        assert (view / "tool").stat().st_mode & stat.S_ISUID  # (packaged as it is)
        assert _euid_when_run(view / "tool") == str(NOBODY)
    assert not list(view.parent.iterdir())


def test_an_unprivileged_machine_s_layer_unshifted_gives_no_root(tmp_path: Path, run_dir: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    os.chmod(layer, 0o755)
    _setuid_id(layer, SHIFT)  # guest root's file: host uid SHIFT, root's once moved down
    with liblxc._unshifted(layer, SHIFT) as view:
        assert (view / "tool").stat().st_uid == 0
        assert {"nosuid", "nodev", "ro"} <= _options(view)
        assert stat.S_IMODE(view.parent.stat().st_mode) == 0o700
        assert _euid_when_run(view / "tool") == str(NOBODY)  # even reached, the bit counts for nothing


@pytest.mark.parametrize("shift", [SHIFT, 0])
def test_a_staged_synced_folder_is_reached_by_the_machine_only(tmp_path: Path, run_dir: Path, shift: int) -> None:
    project = tmp_path / "home" / "ana" / "shop"
    project.mkdir(parents=True)
    os.chmod(project.parent, 0o700)  # a private home
    os.chmod(project, 0o755)
    (project / "app.py").write_text("secret = 1\n")
    owner = 4242
    os.chown(project, owner, owner)
    _setuid_id(project, owner)  # what the login user made there: the owner's, on the host
    guest = 1000
    record = {"source": str(project), "target": "/tapers", "readonly": False, "staged": True,
              "idmap": [guest, owner, guest, owner], "shift": shift}
    try:
        staging.prepare("tapers-x-web", [record])
        view = staging.source_of("tapers-x-web", 0, None)  # type: ignore[arg-type]
        assert {"nosuid", "nodev"} <= _options(view)
        mounts, folder = view.parent.parent, view.parent
        assert stat.S_IMODE(mounts.stat().st_mode) == 0o711
        assert stat.S_IMODE(folder.stat().st_mode) == (0o710 if shift else 0o700)
        assert (folder.stat().st_uid, folder.stat().st_gid) == (0, shift)
        for path in (view / "app.py", view / "tool"):
            refused = _as_nobody("cat", str(path))
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
        assert _euid_when_run(view / "tool") == str(NOBODY)
    finally:
        staging.release("tapers-x-web")
    assert not (run_dir / "mounts" / "tapers-x-web").exists()
    assert (project / "app.py").read_text() == "secret = 1\n"


def test_a_folder_mounted_inside_a_synced_folder_stays_out_of_its_view(tmp_path: Path, run_dir: Path) -> None:
    """A mount under the synced folder (a tmpfs, an NFS share) would come into the view
    writable, unmapped and with its setuid bits counting: the view is of the folder alone
    (as LXD's disks), and what is mounted there later doesn't come in either."""
    from tapers.backend import idmap

    project, view = tmp_path / "shop", tmp_path / "view"
    for inner in ("inner", "later"):
        (project / inner).mkdir(parents=True)
    view.mkdir()
    subprocess.run(["mount", "--bind", str(project), str(project)], check=True)
    subprocess.run(["mount", "--make-shared", str(project)], check=True)  # (as / is where systemd runs)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "inner", str(project / "inner")], check=True)
    try:
        _setuid_id(project / "inner", 0)
        idmap.bind(project, view, [(0, 0, 4294967295)], None, readonly=True, inert=True)
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "later", str(project / "later")], check=True)
            try:
                _setuid_id(project / "later", 0)
                for inner in ("inner", "later"):
                    assert not idmap.is_mount(view / inner) and list((view / inner).iterdir()) == [], inner
                assert {"ro", "nosuid", "nodev"} <= _options(view)
                with pytest.raises(OSError, match="Read-only"):
                    (view / "inner" / "planted").write_text("x")
            finally:
                subprocess.run(["umount", str(project / "later")], check=True)
        finally:
            subprocess.run(["umount", str(view)], check=True)
    finally:
        subprocess.run(["umount", str(project / "inner")], check=True)
        subprocess.run(["umount", str(project)], check=True)
    assert sorted(p.name for p in project.iterdir()) == ["inner", "later"]
