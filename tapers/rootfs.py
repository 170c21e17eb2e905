"""Files inside a root filesystem tapers does not trust (a box from the internet, a
machine's writable layer that its guest has written), read and written from the host.

Every path is walked one component at a time from the root's own folder, opened with
O_NOFOLLOW: a symbolic link, a `..` or a folder swapped for a link anywhere on the way is
refused, so a write (as root) can never land outside the root. Files are written to a new
temporary name (O_EXCL, mode set on the open) and renamed over the old one.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from tapers import sinks
from tapers.errors import TapersError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(start: Path, names: Sequence[str], last_flags: int = os.O_DIRECTORY) -> int:
    """An fd of `start` (opened as given) joined with `names`, each opened from the one
    before without following a link: folders, the last one opened with `last_flags`
    (non-blocking: a pipe is never waited on). OSError ELOOP or ENOTDIR when one of them is
    a link or a file."""
    fd = os.open(start, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, name in enumerate(names):
            flags = os.O_DIRECTORY if index < len(names) - 1 else last_flags
            child = os.open(name, flags | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class Root:
    """A root filesystem at `path`; `what` names it in errors ("box `x`"), which are raised
    as `error` (a TapersError subclass). `id_shift`: the files' owners on disk are the guest's
    plus this (the writable layer of an unprivileged machine, whose root is that host uid)."""

    def __init__(self, path: Path, what: str, error: type[TapersError] = TapersError, id_shift: int = 0) -> None:
        self.path = path
        self.what = what
        self.error = error
        self.shift = id_shift
        try:
            self.fd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            raise error(f"cannot open the root filesystem of {what} ({path}): {exc.strerror}") from None

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- paths ------------------------------------------------------------------------

    def parts(self, path: str) -> list[str]:
        """`path` (absolute in the guest, or relative to the root) as checked components."""
        if sinks.has_control(path):
            raise self.error(f"{self.what}: the path {path!r} has a control character; refused")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.error(f"{self.what}: the path `{path}` climbs out with `..`; refused")
        if not parts:
            raise self.error(f"{self.what}: an empty path names the root itself; refused")
        return parts

    def _refuse(self, path: str, why: str) -> TapersError:
        return self.error(f"{self.what}: `/{path.lstrip('/')}` {why}; refused (nothing is followed out of the root)")

    def _open_dir(
        self, parts: list[str], create: bool, mode: int = 0o755, uid: int = 0, gid: int = 0, like: Root | None = None
    ) -> int:
        """An fd of the folder `parts`, walked without following links; missing folders are
        created when `create` (owned and moded like the same folder in `like`, else as given)."""
        fd = os.dup(self.fd)
        try:
            for depth, name in enumerate(parts):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o700, dir_fd=fd)
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    owner = like.lstat("/".join(parts[: depth + 1])) if like else None
                    if owner is not None and stat.S_ISDIR(owner.st_mode):
                        os.fchown(child, owner.st_uid + self.shift, owner.st_gid + self.shift)
                        os.fchmod(child, stat.S_IMODE(owner.st_mode))
                    else:
                        os.fchown(child, uid + self.shift, gid + self.shift)
                        os.fchmod(child, mode)
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file or a link where a folder should be
                        raise self._refuse("/".join(parts[: depth + 1]), "is not a folder (a link or a file)") from None
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    # -- reading ----------------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result | None:
        parts = self.parts(path)
        try:
            parent = self._open_dir(parts[:-1], create=False)
        except (FileNotFoundError, TapersError):
            return None
        try:
            return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(parent)

    def read(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """A regular file's content (None when missing); a link or a larger file is refused."""
        parts = self.parts(path)
        try:
            parent = self._open_dir(parts[:-1], create=False)
        except FileNotFoundError:
            return None
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse(path, "is a symbolic link") from None
            raise
        finally:
            os.close(parent)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._refuse(path, "is not a regular file")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise self._refuse(path, f"is larger than {limit} bytes")
        return data

    def listdir(self, path: str) -> list[str]:
        try:
            fd = self._open_dir(self.parts(path), create=False)
        except FileNotFoundError:
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    # -- writing ----------------------------------------------------------------------

    def write(
        self, path: str, content: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
        dir_mode: int = 0o755, like: Root | None = None,
    ) -> None:
        """Create or replace the file `path` (its missing parent folders too, see _open_dir)."""
        parts = self.parts(path)
        parent = self._open_dir(parts[:-1], create=True, mode=dir_mode, uid=uid, gid=gid, like=like)
        temporary = f".{parts[-1][:200]}.tapers-{os.urandom(4).hex()}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o7777,
                         dir_fd=parent)
            try:
                os.fchown(fd, uid + self.shift, gid + self.shift)
                os.fchmod(fd, mode & 0o7777)
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            try:
                existing = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                raise self._refuse(path, "is a folder")
            os.replace(temporary, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=parent)
            except FileNotFoundError:
                pass
            raise
        finally:
            os.close(parent)

    def make_dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """The folder `path` with this owner and mode (created, or corrected when it exists)."""
        fd = self._open_dir(self.parts(path), create=True, mode=mode, uid=uid, gid=gid)
        try:
            os.fchown(fd, uid + self.shift, gid + self.shift)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def remove(self, path: str) -> None:
        """Remove a file or link (never what a link points to); missing is fine."""
        parts = self.parts(path)
        try:
            parent = self._open_dir(parts[:-1], create=False)
        except FileNotFoundError:
            return
        try:
            os.unlink(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise self._refuse(path, "is a folder where a file was expected") from None
        finally:
            os.close(parent)

    def symlink(self, target: str, path: str) -> None:
        """`path` becomes a symbolic link to `target` (a guest path: never followed here)."""
        parts = self.parts(path)
        parent = self._open_dir(parts[:-1], create=True)
        try:
            try:
                os.unlink(parts[-1], dir_fd=parent)
            except FileNotFoundError:
                pass
            os.symlink(target, parts[-1], dir_fd=parent)
        except IsADirectoryError:
            raise self._refuse(path, "is a folder") from None
        finally:
            os.close(parent)
