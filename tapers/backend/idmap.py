"""Idmapped bind mounts (Linux 5.12+): a host folder seen through a uid/gid translation.

Synced folders use them so the machine's login user owns the files of the host folder's
owner: what it writes lands on the host as the folder owner's, not as a foreign uid. The
translation is a user namespace held by a short-lived `unshare` process; the mount keeps it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import time
from pathlib import Path

from tapers.errors import BackendError

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442  # x86_64 and aarch64 share these
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_MNT_DETACH = 2
_MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def swap_map(inside: int, outside: int, top: int = 4294967295) -> list[tuple[int, int, int]]:
    """Identity everywhere except `inside` <-> `outside` (lines: inside, outside, count)."""
    if inside == outside:
        return [(0, 0, top)]
    low, high = sorted((inside, outside))
    lines = [(inside, outside, 1), (outside, inside, 1)]
    for start, end in ((0, low), (low + 1, high), (high + 1, top)):
        if end > start:
            lines.append((start, start, end - start))
    return sorted(lines)


def _check(result: int, what: str, path: Path) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise BackendError(f"cannot {what} {path}: {os.strerror(errno)}")
    return result


def _user_namespace(uid_map: list[tuple[int, int, int]], gid_map: list[tuple[int, int, int]]) -> int:
    """An fd of a new user namespace with these maps."""
    holder = subprocess.Popen(["unshare", "--user", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        ours = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/user") == ours:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise BackendError("could not create a user namespace for an idmapped mount (is `unshare` installed?)")
            time.sleep(0.001)
        Path(f"/proc/{holder.pid}/uid_map").write_text("".join(f"{a} {b} {c}\n" for a, b, c in uid_map))
        Path(f"/proc/{holder.pid}/gid_map").write_text("".join(f"{a} {b} {c}\n" for a, b, c in gid_map))
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()


def open_no_links(folder: Path) -> int:
    """An fd of the folder at the absolute real path `folder`, opened one component at a
    time without following any link: a folder swapped for a link since it was checked is
    refused, never mounted (a bind mount of a path would follow it)."""
    from tapers.host_folders import open_no_links as open_checked

    try:
        return open_checked(folder, folder=True)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BackendError(
                f"the synced folder {folder} is no longer the folder it was when it was set up (a part of its "
                "path is now a symbolic link or a file); refusing to mount it",
                hint="put the folder back, or change the Taperfile and run `tapers reload`",
            ) from None
        if exc.errno == errno.ENOENT:
            raise BackendError(f"the synced folder {folder} does not exist any more",
                               hint="create it again, or change the Taperfile and run `tapers reload`") from None
        raise


def bind(
    source: Path, target: Path, uid_map: list[tuple[int, int, int]] | None, gid_map: list[tuple[int, int, int]] | None,
    readonly: bool, inert: bool = False,
) -> None:
    """Mount the folder `source` (its real path: no link is followed) at `target` (an existing
    empty folder), through the maps when given. `inert`: no device node opens and no setuid
    bit counts through this mount (nodev, nosuid)."""
    userns = _user_namespace(uid_map, gid_map or uid_map) if uid_map else -1
    tree = folder = -1
    try:
        folder = open_no_links(source)
        tree = _check(
            # the folder alone, as LXD's disks: a mount inside it (NFS, a tmpfs) stays out
            _libc.syscall(_SYS_OPEN_TREE, folder, b"", _AT_EMPTY_PATH | _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC),
            "clone the mount of", source,
        )
        flags = (_MOUNT_ATTR_IDMAP if uid_map else 0) | (_MOUNT_ATTR_RDONLY if readonly else 0)
        flags |= (_MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV) if inert else 0
        # private: what is mounted in the folder later doesn't come into the view either
        attr = _MountAttr(flags, 0, _MS_PRIVATE, max(userns, 0))
        _check(
            _libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
            "give an id mapping to" if uid_map else "set up the view of", source,
        )
        _check(
            _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH),
            "mount at", target,
        )
    finally:
        for fd in (tree, folder, userns):
            if fd >= 0:
                os.close(fd)


def is_mount(path: Path) -> bool:
    """A mount point, by the kernel's own list (st_dev comparisons miss same-filesystem binds)."""
    wanted = os.fsencode(os.path.realpath(path))
    return any(os.fsencode(point) == wanted for point, _ in mounts())


def mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of each mount this process sees, by the kernel's list
    (/proc/self/mountinfo, whose paths escape a space, tab, newline or backslash as \\ooo)."""
    import re

    found = []
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        for line in mountinfo:
            fields = line.split(b" ")
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            kind = fields[fields.index(b"-") + 1] if b"-" in fields else b""
            found.append((os.fsdecode(point), kind.decode(errors="replace")))
    return found


def unmount(path: Path) -> None:
    """Unmount everything mounted at `path` (mounts may be stacked)."""
    while is_mount(path):
        _check(_libc.umount2(os.fsencode(path), _MNT_DETACH), "unmount", path)
