"""A machine's writable layer copied into the provisioning cache, in the form every machine
can stack it under its own: owners as the box has them (0 = the machine's root, however
its ids are shifted on the host), overlayfs' markers readable both by a privileged
machine's overlay (`trusted.overlay.*`) and an unprivileged one's (`user.overlay.*`).

The layer is the machine's, so the guest wrote it: nothing in it is followed (links are
copied as links, files opened without following them), device files other than overlayfs'
whiteouts are left out, and the copy stops at a size bound. It is written as root into a
folder only root can reach (the layer's setuid files are never a host user's to run).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from tapers.errors import BackendError

RANGE = 65536  # ids of one machine: 0..65535 inside
MAX_ENTRIES = 2_000_000  # files, folders and links a layer may hold (a Debian with a desktop: ~300k)
MAX_DEPTH = 200  # folders within folders (a real system: under 30)
NOBODY = 65534
_MARKERS = ("opaque", "redirect")  # overlayfs' own attributes a lower layer needs
_CAP = "security.capability"


class LayerTooBig(BackendError):
    """The machine's changes are over the bound a cached layer may have."""


Seen = dict[str, tuple[int, int]]  # a layer's files by path: (inode, ctime) of the machine's file copied


def copy_layer(source: Path, target: Path, shift: int, leave_out: Callable[[str], bool], limit: int,
               previous: tuple[Path, Seen] | None = None) -> tuple[int, Seen]:
    """Copy `source` (a machine's writable layer, its owners shifted by `shift`) to `target`
    (which must not exist); `leave_out(relative path)` names what stays behind (per-machine
    files). `previous`: the layer last copied from the same machine and what it copied; a
    file the machine hasn't touched since (same inode, same ctime) is a hard link to that
    copy, not a new one. The bytes copied and what was seen; LayerTooBig past `limit`."""
    copier = _Copier(shift, leave_out, limit, previous)
    source_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.mkdir(target, 0o700)
        target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            copier.folder(source_fd, target_fd, "")
            copier.finish(source_fd, target_fd, os.fstat(source_fd), "")
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)
    return copier.copied, copier.seen


class _Copier:
    def __init__(self, shift: int, leave_out: Callable[[str], bool], limit: int,
                 previous: tuple[Path, Seen] | None) -> None:
        self.shift = shift
        self.leave_out = leave_out
        self.limit = limit
        self.previous = previous
        self.seen: Seen = {}
        self.copied = 0
        self.entries = 0
        self.linked: dict[tuple[int, int], tuple[int, str]] = {}  # (dev, ino) -> (folder fd, name) copied first
        self.held: list[int] = []  # folder fds kept open for hard links

    def folder(self, source: int, target: int, relative: str, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise LayerTooBig(f"the machine's files are more than {MAX_DEPTH} folders deep (/{relative}): not cached")
        names = os.listdir(source)
        self.entries += len(names)
        if self.entries > MAX_ENTRIES:
            raise LayerTooBig(f"the machine's changes are over {MAX_ENTRIES} files: not cached")
        for entry in sorted(names):
            path = f"{relative}/{entry}" if relative else entry
            if self.leave_out(path):
                continue
            st = os.stat(entry, dir_fd=source, follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(entry, 0o700, dir_fd=target)
                inner_source = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=source)
                try:
                    inner_target = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=target)
                    try:
                        self.folder(inner_source, inner_target, path, depth + 1)
                        self.finish(inner_source, inner_target, st, path)
                    finally:
                        os.close(inner_target)
                finally:
                    os.close(inner_source)
                continue
            if stat.S_ISREG(mode) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in self.linked:
                first_fd, first = self.linked[(st.st_dev, st.st_ino)]
                os.link(first, entry, src_dir_fd=first_fd, dst_dir_fd=target, follow_symlinks=False)
                continue
            capability = None
            if stat.S_ISREG(mode) and st.st_nlink == 1 and self._reused(target, entry, path, st):
                continue
            if stat.S_ISREG(mode):
                capability = self._file(source, target, entry, st)
                if st.st_nlink == 1:
                    self.seen[path] = (st.st_ino, st.st_ctime_ns)
                if st.st_nlink > 1:
                    kept = os.dup(target)
                    self.held.append(kept)
                    self.linked[(st.st_dev, st.st_ino)] = (kept, entry)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(entry, dir_fd=source), entry, dir_fd=target)
            elif stat.S_ISCHR(mode) and st.st_rdev == 0:  # overlayfs' whiteout: a deletion
                os.mknod(entry, stat.S_IFCHR, 0, dir_fd=target)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(entry, 0o600, dir_fd=target)
            else:  # a device or a socket: nothing a provisioned layer needs to carry
                continue
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

    def finish(self, source: int, target: int, st: os.stat_result, relative: str) -> None:
        """A folder's own owner, mode, markers and times, once its entries are in."""
        self._markers(source, target)
        uid, gid = self._ids(st)
        os.fchown(target, uid, gid)
        os.fchmod(target, stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        if relative == "":
            for fd in self.held:
                os.close(fd)
            self.held.clear()

    def _file(self, source: int, target: int, entry: str, st: os.stat_result) -> bytes | None:
        """Copy a file's data and attributes; its capability, set once its owner is (chown drops it)."""
        self.copied += st.st_size
        if self.copied > self.limit:
            raise LayerTooBig(f"the machine's changes are over {self.limit // 2**20} MiB: not cached")
        reading = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=source)
        try:
            writing = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=target)
            try:
                left = st.st_size
                while left > 0:
                    moved = os.copy_file_range(reading, writing, min(left, 1 << 30))
                    if moved == 0:  # the file is shorter than it was: the machine is frozen, so it can't be
                        break
                    left -= moved
                self._markers(reading, writing)
                return _capability(reading)
            finally:
                os.close(writing)
        finally:
            os.close(reading)

    def _markers(self, source: int, target: int) -> None:
        """overlayfs' own attributes, under both of its prefixes; other `user.` attributes
        as they are. A metacopy file (its data still below) can't be a layer of its own."""
        for name in os.listxattr(source):
            prefix, dot, marker = name.partition(".overlay.")
            if dot and prefix in ("trusted", "user"):
                if marker == "metacopy":
                    raise BackendError("the machine's layer has overlayfs metacopy files: not cached")
                if marker in _MARKERS:
                    value = os.getxattr(source, name)
                    for both in ("trusted", "user"):
                        os.setxattr(target, f"{both}.overlay.{marker}", value)
                continue
            if name.startswith("user."):
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
        return inside if 0 <= inside < RANGE else NOBODY


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
