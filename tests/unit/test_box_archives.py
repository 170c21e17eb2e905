"""Hostile box archives: each refused with exit code 3, naming the member, writing nothing
outside the cache; and what real boxes need is kept exactly."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from tapers.boxes.archive import extract
from tapers.cli.main import run
from tapers.errors import InvalidBoxError


def make_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644, **attrs: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def rootfs_box(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    box_json = (entry("box.json"), b'{"name": "evil", "version": "1"}')
    sshd = (entry("rootfs/usr/sbin/sshd", mode=0o755), b"#!/bin/sh\n")
    return make_archive(tmp_path / "box.tar.gz", [box_json, sshd, *members])


HOSTILE = {
    "dotdot": [(entry("rootfs/../../escaped"), b"x")],
    "absolute": [(entry("/tmp/tapers-absolute-escape"), b"x")],
    "symlink escape": [(entry("rootfs/up", tarfile.SYMTYPE, "../../../../.."), None)],
    "symlink then write": [
        (entry("rootfs/etc", tarfile.DIRTYPE, mode=0o755), None),
        (entry("rootfs/etc/link", tarfile.SYMTYPE, "/tmp"), None),
        (entry("rootfs/etc/link/tapers-written-through"), b"x"),
    ],
    "symlink then same name": [
        (entry("rootfs/shadow", tarfile.SYMTYPE, "/tmp/tapers-same-name-target"), None),
        (entry("rootfs/shadow"), b"x"),
    ],
    "hardlink escape": [(entry("rootfs/passwd", tarfile.LNKTYPE, "etc/passwd"), None)],
    "device outside dev": [(entry("rootfs/home/sda", tarfile.BLKTYPE, mode=0o600, devmajor=8, devminor=0), None)],
}


def _traces() -> set[str]:
    """What in /tmp the archives above would make if they escaped, and nothing else: other
    processes of the host (tapers' own among them) use /tmp meanwhile."""
    escapes = {"tapers-absolute-escape", "tapers-written-through", "tapers-same-name-target"}
    return {name for name in os.listdir("/tmp") if name in escapes}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_with_exit_3_and_no_trace(case: str, tmp_path: Path, monkeypatch, capsys) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TAPERS_HOME", str(home))
    archive = rootfs_box(tmp_path, *HOSTILE[case])
    before = _traces()
    assert run(["box", "add", "evil/box", str(archive)]) == 3
    err = capsys.readouterr().err
    assert "refused" in err and HOSTILE[case][-1][0].name in err
    assert _traces() - before == set()
    assert not (tmp_path / "escaped").exists()
    leftovers = [p for p in (home / "boxes").rglob("*")] if (home / "boxes").exists() else []
    assert all(p.is_dir() and not any(p.iterdir()) for p in leftovers), f"a refused box left {leftovers}"


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TAPERS_BOX_MAX_BYTES", str(1024 * 1024))
    archive = rootfs_box(tmp_path, (entry("rootfs/zeros"), b"\0" * (2 * 1024 * 1024)))
    with pytest.raises(InvalidBoxError, match="unpacks to more than 1048576 bytes"):
        extract(archive, tmp_path / "out", "rootfs")
    assert not (tmp_path / "out").exists()


def test_what_real_boxes_need_is_kept(tmp_path: Path) -> None:
    archive = rootfs_box(
        tmp_path,
        (entry("rootfs/usr/bin/sudo", mode=0o4755, uid=0, gid=0), b"suid"),
        (entry("rootfs/home/tapers/file", uid=1000, gid=1000), b"mine"),
        (entry("rootfs/dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
        (entry("rootfs/etc/localtime", tarfile.SYMTYPE, "/usr/share/zoneinfo/UTC"), None),
        (entry("rootfs/usr/bin/sudoedit", tarfile.LNKTYPE, "rootfs/usr/bin/sudo"), None),
    )
    root = tmp_path / "rootfs"
    extract(archive, root, "rootfs")
    assert stat.S_IMODE((root / "usr/bin/sudo").stat().st_mode) == 0o4755
    assert ((root / "home/tapers/file").stat().st_uid, (root / "home/tapers/file").stat().st_gid) == (1000, 1000)
    assert stat.S_ISCHR((root / "dev/null").lstat().st_mode)
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"  # the guest's path, untouched
    assert (root / "usr/bin/sudoedit").stat().st_ino == (root / "usr/bin/sudo").stat().st_ino


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    archive = rootfs_box(tmp_path)
    assert run(["box", "add", "some/box", str(archive), "--sha256", "0" * 64]) == 3
    assert "checksum mismatch" in capsys.readouterr().err
    assert not list((tmp_path / "home" / "boxes").rglob("*.json"))


def test_not_a_box(tmp_path: Path, capsys) -> None:
    plain = make_archive(tmp_path / "plain.tar.gz", [(entry("hello.txt"), b"hi")])
    assert run(["box", "add", "x/y", str(plain)]) == 3
    assert "no box.json" in capsys.readouterr().err


def test_an_archive_added_for_a_pinned_version_is_found_by_it(tmp_path: Path, monkeypatch, capsys) -> None:
    """`box: team/web@1.2` with a `box_url` archive records 1.2 (not `= 1.2`): the next `up` finds it."""
    from tapers.boxes.cache import find_box

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    archive = rootfs_box(tmp_path)
    assert run(["box", "add", "team/web", str(archive), "--version", "1.2"]) == 0
    found = find_box("team/web@1.2")
    assert found is not None and found.version == "1.2"
    assert run(["box", "add", "team/other", str(archive), "--version", "~> 1.2"]) == 3
    assert "not a box version" in capsys.readouterr().err
