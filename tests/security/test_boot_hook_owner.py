"""The boot hook runs tapers as root at every boot: it is installed only when no one but root
can change what it runs (the interpreter, its environment, tapers' code, their folders)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tapers.backend.liblxc import boot_hook
from tapers.errors import HostError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="other owners' files: needs root")


@pytest.fixture
def hook_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    unit, script = tmp_path / "etc/systemd/tapers-host.service", tmp_path / "etc/init.d/tapers-host"
    for path in (unit, script):
        path.parent.mkdir(parents=True)
    monkeypatch.setattr(boot_hook, "UNIT", unit)
    monkeypatch.setattr(boot_hook, "SCRIPT", script)
    return unit, script


@pytest.mark.parametrize("how", ["another user's folder", "a folder anyone may write"])
def test_a_tapers_others_can_change_gets_no_boot_hook(how: str, tmp_path: Path, hook_paths: tuple[Path, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    (venv / "python").symlink_to(sys.executable)
    if how == "another user's folder":
        os.chown(venv.parent, 4242, 4242)
    else:
        os.chmod(venv.parent, 0o777)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    with pytest.raises(HostError, match="can be changed by someone other than root") as refused:
        boot_hook.install()
    assert str(venv.parent) in refused.value.message
    assert not any(path.exists() for path in hook_paths)


def test_this_tapers_of_root_s_may_install_it() -> None:
    assert boot_hook.changeable_by_others() == ""


def test_a_read_only_mount_of_someone_else_s_files_is_still_theirs(tmp_path: Path, hook_paths: tuple[Path, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only here is no proof: the owner of a FUSE mount (sshfs -o ro...) changes what it
    shows at will, and a bind's source stays writable where it comes from."""
    import subprocess

    source, code = tmp_path / "source", tmp_path / "code"
    (source / "bin").mkdir(parents=True)
    code.mkdir()
    os.chmod(tmp_path, 0o755)
    (source / "bin" / "python").symlink_to(sys.executable)
    os.chown(source, 4242, 4242)
    subprocess.run(["mount", "--bind", str(source), str(code)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(code)], check=True)
        monkeypatch.setattr(sys, "executable", str(code / "bin" / "python"))
        with pytest.raises(HostError, match="can be changed by someone other than root") as refused:
            boot_hook.install()
        assert str(code) in refused.value.message
    finally:
        subprocess.run(["umount", str(code)], check=True)
    assert not any(path.exists() for path in hook_paths)


@pytest.mark.skipif(not shutil.which("lxcfs") or not os.path.exists("/dev/fuse"), reason="a FUSE file system to mount")
def test_code_on_a_fuse_file_system_is_its_daemon_s_whatever_owners_it_shows(
        tmp_path: Path, hook_paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A FUSE file system shows the owners and modes its daemon chooses (here lxcfs: root's
    files, 0444) while whoever runs the daemon decides what they hold."""
    import subprocess
    import time

    mounted = tmp_path / "fuse mount"
    mounted.mkdir()
    daemon = subprocess.Popen(["lxcfs", "--pidfile", str(tmp_path / "lxcfs.pid"), str(mounted)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (mounted / "proc" / "cpuinfo").exists():
            assert time.monotonic() < deadline and daemon.poll() is None, "lxcfs never mounted its file system"
            time.sleep(0.05)
        shown = (mounted / "proc" / "cpuinfo").stat()
        assert shown.st_uid == 0 and not shown.st_mode & 0o022  # what the owner check alone would pass
        monkeypatch.setattr(sys, "executable", str(mounted / "proc" / "cpuinfo"))
        with pytest.raises(HostError, match="can be changed by someone other than root") as refused:
            boot_hook.install()
        assert str(mounted) in refused.value.message
    finally:
        subprocess.run(["umount", str(mounted)], capture_output=True)  # (lxcfs ends with its mount)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert not any(path.exists() for path in hook_paths)
