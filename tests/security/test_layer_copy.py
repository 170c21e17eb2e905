"""A machine's writable layer is the guest's work: what tapers copies into the provisioning
cache from it (tapers/backend/layer_copy.py) must not follow its links, carry its devices,
keep host ids outside its range, or grow without bound; what must survive (whiteouts,
opaque folders, setuid bits, file capabilities, hard links) does, in the box's ids."""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from tapers.backend.layer_copy import NOBODY, LayerTooBig, copy_layer

SHIFT = 0x70000000
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes devices and other owners' files: needs root")


def _v3_capability(rootid: int) -> bytes:
    # magic (revision 3, effective), permitted cap_net_raw (bit 13), inheritable 0, the high words, the root uid
    return struct.pack("<IIIIII", 0x03000001, 1 << 13, 0, 0, 0, rootid)


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    """A writable layer as an unprivileged machine leaves it, hostile parts included."""
    root = tmp_path / "upper"
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "data").write_text("data")
    os.link(root / "opt" / "app" / "data", root / "opt" / "app" / "again")
    (root / "opt" / "suid").write_bytes(b"#!/bin/sh\n")
    (root / "opt" / "ping").write_bytes(b"\x7fELF")
    os.setxattr(root / "opt" / "ping", "security.capability", _v3_capability(SHIFT))
    (root / "opt" / "ids").write_text("not the machine's")
    os.mknod(root / "opt" / "gone", stat.S_IFCHR, 0)  # a whiteout
    os.mknod(root / "opt" / "disk", stat.S_IFBLK | 0o666, os.makedev(8, 0))
    os.mknod(root / "opt" / "mem", stat.S_IFCHR | 0o666, os.makedev(1, 1))
    os.mkfifo(root / "opt" / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "opt" / "socket"))
    server.close()
    (root / "opt" / "shadow").symlink_to("/etc/shadow")
    (root / "host-etc").symlink_to("/etc")
    (root / "usr" / "share" / "doc").mkdir(parents=True)
    os.setxattr(root / "usr" / "share" / "doc", "user.overlay.opaque", b"y")
    os.setxattr(root / "usr" / "share" / "doc", "user.overlay.origin", b"")
    os.setxattr(root / "usr" / "share" / "doc", "trusted.planted", b"x")
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("secret")
    (root / "etc" / "machine-id").write_text("0123")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, SHIFT, SHIFT)
    os.lchown(root / "opt" / "app" / "data", SHIFT + 1000, SHIFT + 1000)
    os.lchown(root / "opt" / "ids", 1000, 1000)  # a host id outside the machine's range
    os.chmod(root / "opt" / "suid", 0o4755)
    os.setxattr(root / "opt" / "ping", "security.capability", _v3_capability(SHIFT))  # chown cleared it
    return root


def _leave_out(path: str) -> bool:
    return path == "etc/machine-id" or path.startswith("etc/ssh/ssh_host_")


def test_a_layer_keeps_what_a_machine_needs_in_the_boxs_ids(upper: Path, tmp_path: Path) -> None:
    target = tmp_path / "layer"
    copy_layer(upper, target, SHIFT, _leave_out, 2**30)
    data = target / "opt" / "app" / "data"
    assert data.read_text() == "data" and (data.stat().st_uid, data.stat().st_gid) == (1000, 1000)
    assert os.stat(target / "opt" / "app" / "again").st_ino == data.stat().st_ino  # still one file
    assert stat.S_IMODE((target / "opt" / "suid").stat().st_mode) == 0o4755 and (target / "opt" / "suid").stat().st_uid == 0
    capability = os.getxattr(target / "opt" / "ping", "security.capability")
    assert len(capability) == 20 and capability[3] == 2 and capability[4:8] == struct.pack("<I", 1 << 13)
    gone = os.lstat(target / "opt" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert stat.S_ISFIFO(os.lstat(target / "opt" / "fifo").st_mode)
    doc = target / "usr" / "share" / "doc"
    assert os.getxattr(doc, "user.overlay.opaque") == b"y"  # as the machine's overlay wrote it
    assert set(os.listxattr(doc)) == {"user.overlay.opaque"}  # origin, a planted trusted.*: left out
    assert os.stat(target).st_uid == 0 and stat.S_IMODE(os.stat(target).st_mode) == stat.S_IMODE(upper.stat().st_mode)


def test_a_layer_carries_no_device_no_link_target_no_foreign_id_no_machine_secret(upper: Path, tmp_path: Path) -> None:
    shadow_before = os.stat("/etc/shadow")
    target = tmp_path / "layer"
    copy_layer(upper, target, SHIFT, _leave_out, 2**30)
    names = {str(p.relative_to(target)) for p in target.rglob("*")}
    assert not {"opt/disk", "opt/mem", "opt/socket"} & names  # devices and sockets stay behind
    assert os.readlink(target / "opt" / "shadow") == "/etc/shadow"  # a link, not the host's file
    assert os.readlink(target / "host-etc") == "/etc" and not any(n.startswith("host-etc/") for n in names)
    assert (target / "opt" / "ids").stat().st_uid == NOBODY  # a host id the machine doesn't own: nobody's
    assert "etc/machine-id" not in names and "etc/ssh/ssh_host_ed25519_key" not in names
    assert os.stat("/etc/shadow") == shadow_before


def test_a_layer_over_its_bound_stops(upper: Path, tmp_path: Path) -> None:
    (upper / "opt" / "big").write_bytes(b"x" * 4096)
    with pytest.raises(LayerTooBig, match="not cached"):
        copy_layer(upper, tmp_path / "layer", SHIFT, _leave_out, 1024)


def test_a_layer_is_written_only_where_nothing_was(upper: Path, tmp_path: Path) -> None:
    target = tmp_path / "layer"
    target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        copy_layer(upper, target, SHIFT, _leave_out, 2**30)
    assert not (tmp_path / "elsewhere").exists()


def test_a_file_the_machine_left_alone_since_the_last_layer_is_shared_not_copied(upper: Path, tmp_path: Path) -> None:
    (upper / "opt" / "big").write_bytes(b"x" * 2**20)
    first = tmp_path / "first"
    size, seen = copy_layer(upper, first, SHIFT, _leave_out, 2**30)
    (upper / "opt" / "suid").write_bytes(b"#!/bin/sh\necho changed\n")  # touched since: copied again
    os.chmod(upper / "opt" / "ids", 0o600)  # its mode changed (ctime moved): copied again
    second = tmp_path / "second"
    again, _ = copy_layer(upper, second, SHIFT, _leave_out, 2**30, (first, seen))
    assert size > 2**20 > again  # the big file, untouched, is not copied twice
    assert os.stat(second / "opt" / "ping").st_ino == os.stat(first / "opt" / "ping").st_ino
    assert os.getxattr(second / "opt" / "ping", "security.capability")[3] == 2
    for changed in ("suid", "ids"):
        assert os.stat(second / "opt" / changed).st_ino != os.stat(first / "opt" / changed).st_ino
    assert (second / "opt" / "suid").read_bytes().endswith(b"changed\n")
    assert stat.S_IMODE((second / "opt" / "ids").stat().st_mode) == 0o600


def test_a_layer_too_deep_or_with_too_many_files_stops(upper: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = upper / "opt"
    for _ in range(250):  # past Python's recursion comfort too: refused before that matters
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(LayerTooBig, match="folders deep"):
        copy_layer(upper, tmp_path / "deep", SHIFT, _leave_out, 2**30)
    import shutil

    shutil.rmtree(upper / "opt" / "d")
    monkeypatch.setattr("tapers.backend.layer_copy.MAX_ENTRIES", 10)
    with pytest.raises(LayerTooBig, match="over 10 files"):
        copy_layer(upper, tmp_path / "many", SHIFT, _leave_out, 2**30)


def test_a_privileged_machines_own_user_attributes_never_become_overlay_markers(tmp_path: Path) -> None:
    """In a privileged machine's overlay, `user.overlay.*` are plain attributes its root may
    set: kept as nothing, not as markers (its markers are `trusted.overlay.*`)."""
    upper = tmp_path / "upper"
    (upper / "etc" / "forged").mkdir(parents=True)
    os.setxattr(upper / "etc" / "forged", "user.overlay.opaque", b"y")
    os.setxattr(upper / "etc" / "forged", "user.overlay.redirect", b"/root")
    (upper / "etc" / "real").mkdir()
    os.setxattr(upper / "etc" / "real", "trusted.overlay.opaque", b"y")
    copy_layer(upper, tmp_path / "layer", 0, _leave_out, 2**30)
    assert os.listxattr(tmp_path / "layer" / "etc" / "forged") == []
    assert os.listxattr(tmp_path / "layer" / "etc" / "real") == ["trusted.overlay.opaque"]


def test_holes_stay_holes_and_many_hard_links_hold_no_descriptors(tmp_path: Path) -> None:
    import resource

    upper = tmp_path / "upper"
    upper.mkdir()
    with open(upper / "sparse", "wb") as handle:
        handle.truncate(200 * 2**20)  # 200 MiB of hole
        handle.seek(100 * 2**20)
        handle.write(b"data")
    for index in range(300):
        (upper / f"a{index}").write_text("x")
        os.link(upper / f"a{index}", upper / f"b{index}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # fewer than the linked files
    try:
        size, _ = copy_layer(upper, tmp_path / "layer", 0, _leave_out, 2**30)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    copied = tmp_path / "layer" / "sparse"
    assert copied.stat().st_size == 200 * 2**20 and copied.stat().st_blocks * 512 < 2**20
    with open(copied, "rb") as handle:
        handle.seek(100 * 2**20)
        assert handle.read(4) == b"data"
    assert size < 10 * 2**20  # the hole isn't counted against the bound either
    assert os.stat(tmp_path / "layer" / "a7").st_ino == os.stat(tmp_path / "layer" / "b7").st_ino


def test_a_layer_copies_across_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """copy_file_range refuses another filesystem (EXDEV): the data is read and written."""
    import errno

    def refused(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "file").write_bytes(b"y" * 3_000_000)
    monkeypatch.setattr(os, "copy_file_range", refused)
    copy_layer(upper, tmp_path / "layer", 0, _leave_out, 2**30)
    assert (tmp_path / "layer" / "file").read_bytes() == b"y" * 3_000_000
