"""A machine's writable layer copied into the provisioning cache, in the form every machine
of the same kind can stack it under its own: owners as the box has them (0 = the machine's
root, however its ids are shifted on the host), overlayfs' markers as the machine's own
overlay wrote them (`trusted.overlay.*` in a privileged machine's, `user.overlay.*` in an
unprivileged one's; `privileged` is part of a layer's key, so they are read alike).

The layer is the machine's, so the guest wrote it: nothing in it is followed (links are
copied as links, files opened without following them), device files other than overlayfs'
whiteouts are left out, and the copy stops at bounds of size, depth and entries. It is
written into a folder only its owner can reach (root's, or a normal user's as root of
their id map): the layer's setuid files are never another host user's to run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from tapers.backend.api import MACHINE_IDS
from tapers.errors import BackendError

MAX_ENTRIES = 2_000_000  # files, folders and links a layer may hold (a Debian with a desktop: ~300k)
MAX_DEPTH = 200  # folders within folders (a real system: under 30)
ENTRY_COST = 4096  # what each file, folder or link counts for against the size bound (its inode, its block)
NOBODY = 65534
_MARKERS = ("opaque", "redirect")  # overlayfs' own attributes a lower layer needs
_CAP = "security.capability"


class LayerTooBig(BackendError):
    """The machine's changes are over the bound a cached layer may have."""


Seen = dict[str, tuple[int, int]]  # a layer's files by path: (inode, ctime) of the machine's file copied


def copy_layer(source: Path, target: Path, shift: int, leave_out: Callable[[str], bool], limit: int,
               previous: tuple[Path, Seen] | None = None, in_user_namespace: bool = False) -> tuple[int, Seen]:
    """Copy `source` (a machine's writable layer, its owners shifted by `shift`) to `target`
    (which must not exist); `leave_out(relative path)` names what stays behind (per-machine
    files). `previous`: the layer last copied from the same machine and what it copied; a
    file the machine hasn't touched since (same inode, same ctime) is a hard link to that
    copy, not a new one. `in_user_namespace`: run as root of a normal user's id map, over
    one of their machines (unprivileged: `user.overlay.*` markers). The bytes copied and
    what was seen; LayerTooBig past `limit`."""
    copier = _Copier(shift, leave_out, limit, previous, unprivileged=bool(shift) or in_user_namespace)
    source_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.mkdir(target, 0o700)
        target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        copier.root = target_fd
        try:
            copier.folder(source_fd, target_fd, "")
            copier.finish(source_fd, target_fd, os.fstat(source_fd))
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)
    return copier.copied, copier.seen


class _Copier:
    def __init__(self, shift: int, leave_out: Callable[[str], bool], limit: int,
                 previous: tuple[Path, Seen] | None, unprivileged: bool) -> None:
        self.shift = shift
        self.leave_out = leave_out
        self.limit = limit
        self.previous = previous
        self.seen: Seen = {}
        self.copied = 0
        self.entries = 0
        self.root = -1  # the layer's own folder (copy_layer sets it)
        self.linked: dict[tuple[int, int], str] = {}  # (dev, ino) -> the layer's path of its first copy
        # overlayfs' markers in this machine's layer: `user.overlay.*` in an unprivileged machine's
        # (in a privileged one those are plain attributes its root may set), `trusted.overlay.*` else
        self.markers = "user.overlay." if unprivileged else "trusted.overlay."

    def folder(self, source: int, target: int, relative: str, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise LayerTooBig(f"the machine's files are more than {MAX_DEPTH} folders deep: not cached")
        with os.scandir(source) as listing:
            for item in listing:
                self.entries += 1
                if self.entries > MAX_ENTRIES:
                    raise LayerTooBig(f"the machine's changes are over {MAX_ENTRIES} files: not cached")
                self._charge(ENTRY_COST)
                entry = item.name
                path = f"{relative}/{entry}" if relative else entry
                if not self.leave_out(path):
                    self._entry(source, target, entry, path, depth)

    def _entry(self, source: int, target: int, entry: str, path: str, depth: int) -> None:
        st = os.stat(entry, dir_fd=source, follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(entry, 0o700, dir_fd=target)
            inner_source = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=source)
            try:
                inner_target = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=target)
                try:
                    self.folder(inner_source, inner_target, path, depth + 1)
                    self.finish(inner_source, inner_target, st)
                finally:
                    os.close(inner_target)
            finally:
                os.close(inner_source)
            return
        capability = None
        if stat.S_ISREG(mode):
            first = self.linked.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
            if first is not None:  # a hard link to a file copied already: the same file in the layer
                os.link(first, entry, src_dir_fd=self.root, dst_dir_fd=target, follow_symlinks=False)
                return
            if st.st_nlink == 1 and self._reused(target, entry, path, st):
                return
            capability = self._file(source, target, entry, st)
            if st.st_nlink > 1:
                self.linked[(st.st_dev, st.st_ino)] = path
            else:
                self.seen[path] = (st.st_ino, st.st_ctime_ns)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry, dir_fd=source), entry, dir_fd=target)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:  # overlayfs' whiteout: a deletion
            os.mknod(entry, stat.S_IFCHR, 0, dir_fd=target)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(entry, 0o600, dir_fd=target)
        else:  # a device or a socket: nothing a provisioned layer needs to carry
            return
        self._owner_and_times(target, entry, st, capability)

    def _reused(self, target: int, entry: str, path: str, st: os.stat_result) -> bool:
        """Link the previous layer's copy of a file the machine hasn't touched since (its
        owner, mode and attributes are as they were: a change would have moved its ctime)."""
        if self.previous is None or self.previous[1].get(path) != (st.st_ino, st.st_ctime_ns):
            return False
        earlier = os.path.join(os.path.realpath(self.previous[0]), path)
        if os.path.realpath(earlier) != os.path.normpath(earlier):  # no link on the way (our own copy: never)
            return False
        try:
            os.link(earlier, entry, dst_dir_fd=target, follow_symlinks=False)
        except OSError:
            return False
        self.seen[path] = (st.st_ino, st.st_ctime_ns)
        return True

    def finish(self, source: int, target: int, st: os.stat_result) -> None:
        """A folder's own owner, mode, markers and times, once its entries are in."""
        self._markers(source, target)
        uid, gid = self._ids(st)
        os.fchown(target, uid, gid)
        os.fchmod(target, stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _charge(self, size: int) -> None:
        self.copied += size
        if self.copied > self.limit:
            raise LayerTooBig(f"the machine's changes are over {self.limit // 2**20} MiB: not cached")

    def _file(self, source: int, target: int, entry: str, st: os.stat_result) -> bytes | None:
        """Copy a file's data (its holes stay holes) and attributes; its capability, set once
        its owner is (chown drops it)."""
        self._charge(min(st.st_size, st.st_blocks * 512))
        reading = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=source)
        try:
            opened = os.fstat(reading)
            if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise BackendError("a file of the machine changed while it was copied: not cached")
            writing = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=target)
            try:
                _copy_data(reading, writing, st.st_size)
                self._markers(reading, writing)
                return _capability(reading)
            finally:
                os.close(writing)
        finally:
            os.close(reading)

    def _markers(self, source: int, target: int) -> None:
        """overlayfs' own markers (opaque folders, redirects) as the machine's overlay wrote
        them, and other `user.` attributes as they are. A metacopy file (its data still
        below) can't be a layer of its own."""
        for name in os.listxattr(source):
            if name.startswith(self.markers):
                marker = name[len(self.markers):]
                if marker == "metacopy":
                    raise BackendError("the machine's layer has overlayfs metacopy files: not cached")
                if marker in _MARKERS or marker.startswith("overlay."):  # (overlay.*: escaped, a nested overlay's)
                    os.setxattr(target, name, os.getxattr(source, name))
            elif name.startswith("user.") and ".overlay." not in name:
                os.setxattr(target, name, os.getxattr(source, name))

    def _owner_and_times(self, target: int, entry: str, st: os.stat_result, capability: bytes | None) -> None:
        uid, gid = self._ids(st)
        os.chown(entry, uid, gid, dir_fd=target, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(entry, stat.S_IMODE(st.st_mode), dir_fd=target)  # after chown: it clears setuid
        if capability is not None:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=target)
            try:
                os.setxattr(fd, _CAP, capability)
            finally:
                os.close(fd)
        os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=target, follow_symlinks=False)

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        return self._id(st.st_uid), self._id(st.st_gid)

    def _id(self, host: int) -> int:
        """The id as the machine sees it; one no machine's range holds (a host id that got in,
        a privileged machine's id past 65535) is nobody's."""
        inside = host - self.shift
        return inside if 0 <= inside < MACHINE_IDS else NOBODY


def _capability(fd: int) -> bytes | None:
    """A file capability as the box carries one (version 2): a version 3 one names the host
    uid of the machine's root, which another machine's root isn't."""
    try:
        value = os.getxattr(fd, _CAP)
    except OSError:
        return None
    if len(value) == 24 and value[3] == 3:  # v3: v2's 20 bytes, then the namespace's root uid
        value = value[:3] + b"\x02" + value[4:20]
    return value


def _copy_data(reading: int, writing: int, size: int) -> None:
    """The file's data ranges, in the kernel where it can (copy_file_range); its holes are
    left holes, and the file gets its length."""
    import errno

    offset = 0
    while offset < size:
        try:
            start = os.lseek(reading, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = min(os.lseek(reading, start, os.SEEK_HOLE), size)
        at = start
        while at < end:
            try:
                moved = os.copy_file_range(reading, writing, end - at, at, at)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                moved = _copy_plainly(reading, writing, at, end - at)
            if moved == 0:  # shorter than it was: it can't be, the machine is held still
                break
            at += moved
        offset = end
    os.ftruncate(writing, size)


def _copy_plainly(reading: int, writing: int, at: int, count: int) -> int:
    """Where copy_file_range can't (another filesystem on older kernels): read and write."""
    data = os.pread(reading, min(count, 1 << 20), at)
    os.pwrite(writing, data, at)
    return len(data)
