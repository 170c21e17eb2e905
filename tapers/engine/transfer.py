"""`tapers cp`: files between the host and a machine, over SFTP on the pinned host key.

Into a machine, as a `file:` step copies (folders whole, modes kept, owned by root unless
in the login user's home). Out of a machine, what the machine sends is not trusted: every
name is a plain name (no `/`, `.` or `..`), nothing is written through a link, links and
special files are left out, no setuid or setgid bit lands on the host, and what is written
belongs to you (under sudo, to the user who ran it). Files are read as the login user.
Under sudo, tapers copies in only what that user could read, and out only where they could
write.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tapers import project_files
from tapers.errors import StateError, UsageError
from tapers.ssh.session import Session

if TYPE_CHECKING:
    from tapers.host_folders import Sharer

CHUNK = 1 << 15  # paramiko's SFTP read size: no read-ahead sized by what the machine claims
MAX_DEPTH = 64  # folders in folders


class _Guest:
    """A session as the file step's copy sees a machine."""

    def __init__(self, session: Session, home: str) -> None:
        self.session, self.home = session, home

    def run(self, command: str) -> int:
        return self.session.run(command, sys.stdout.buffer, sys.stderr.buffer)

    def put(self, source: Any, remote: str, mode: int) -> None:
        self.session.put(source, remote, mode)

    def mkdir(self, remote: str, mode: int = 0o755) -> None:
        self.session.mkdir(remote, mode)


def _sudo_user() -> Sharer | None:
    """Under sudo (doas, pkexec), the user root copies for: only what they could read goes
    into a machine (each file of a folder copied: see files.copy_into)."""
    if os.geteuid() != 0:
        return None
    uid, gid = project_files.invoker()
    from tapers.host_folders import Sharer

    return None if uid == 0 else Sharer(uid, gid, None)


def copy_in(session: Session, home: str, source: Path, destination: str) -> None:
    from tapers.provision.files import copy_into

    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        if not project_files.invoker_may_read(fd, os.fstat(fd)):
            raise UsageError(f"cannot read {source}: you may not read it (tapers runs as root for you, and copies "
                             "only what you could read)")
        if _remote_is_dir(session, destination):
            destination = str(PurePosixPath(destination) / source.resolve().name)
        code = copy_into(_Guest(session, home), fd, destination.rstrip("/") or "/", _sudo_user())
    finally:
        os.close(fd)
    if code != 0:
        raise StateError(f"could not copy {source} to {session.target.machine}:{destination} (exit code {code})")


def copy_out(session: Session, remote: str, destination: Path) -> int:
    """Files copied; `destination` an existing folder (the copy goes in it) or a new name."""
    sftp = session.sftp()
    try:
        attrs = sftp.stat(remote)
    except OSError as exc:
        raise StateError(f"cannot read {session.target.machine}:{remote}: {exc}") from None
    if destination.is_dir():
        folder, name = destination, PurePosixPath(remote.rstrip("/") or "/").name
    else:
        folder, name = destination.parent, destination.name
    if not _plain(name):
        raise UsageError(f"{remote} has no name to copy it to: name the destination", hint="tapers cp web:/ ./root")
    try:
        parent = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        if not project_files.invoker_may_read(parent, os.fstat(parent), 3):
            raise UsageError(f"cannot write in {folder}: you may not write there (tapers runs as root for you, and "
                             "writes only where you could)")
        return _get(sftp, remote, attrs, parent, name)
    except (OSError, UnicodeError) as exc:  # a file the login user can't read, a full disk, a name not UTF-8...
        raise StateError(f"could not copy {session.target.machine}:{remote}: {exc}",
                         hint="files are read as the login user: copy others to /tmp first (`tapers exec`)") from None
    finally:
        os.close(parent)


def _get(sftp: Any, remote: str, attrs: Any, parent: int, name: str, depth: int = 0) -> int:
    mode = attrs.st_mode or 0
    if stat.S_ISDIR(mode):
        if depth >= MAX_DEPTH:
            raise StateError(f"{remote}: folders nested more than {MAX_DEPTH} deep; not copied further")
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            pass
        folder = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            count = 0
            for child in sorted(sftp.listdir_attr(remote), key=lambda a: a.filename):
                if _plain(child.filename):
                    count += _get(sftp, f"{remote.rstrip('/')}/{child.filename}", child, folder, child.filename,
                                  depth + 1)
            _own(folder, mode)
            return count
        finally:
            os.close(folder)
    if not stat.S_ISREG(mode):
        return 0  # links, devices, sockets: left out
    # A new file under a temporary name, then renamed over the name: whatever was there (a
    # link, a hard link to someone's file, a FIFO) is replaced, never written through.
    temporary = f".{name}.tapers-{os.urandom(6).hex()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        with sftp.open(remote, "rb") as source:
            while chunk := source.read(CHUNK):
                os.write(fd, chunk)
        _own(fd, mode)
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        os.unlink(temporary, dir_fd=parent)
        raise
    finally:
        os.close(fd)
    return 1


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _own(fd: int, mode: int) -> None:
    """Its mode without setuid/setgid/sticky bits and within your umask, and yours."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, stat.S_IMODE(mode) & 0o777 & ~umask)
    if os.geteuid() == 0:
        os.fchown(fd, *project_files.invoker())


def _remote_is_dir(session: Session, path: str) -> bool:
    try:
        return stat.S_ISDIR(session.sftp().stat(path).st_mode or 0)
    except OSError:
        return False
