"""Lines tapers adds to and takes from host files other tools share (/etc/subuid,
/etc/subgid, /etc/lxc/lxc-usernet), as shadow's tools (useradd, usermod) change them:
holding PATH.lock, the file replaced atomically with its mode and owner kept, nothing else
in it changed. A link there is refused (others' lines are in what it points to)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tapers.errors import BackendError


def edit(path: Path, change: Callable[[list[str]], list[str]], lock_timeout: float = 15) -> None:
    """Replace the file's lines by `change(lines)` (read under the lock); a new file is
    made 0644 root:root."""
    from tapers.rootfs import Root

    if path.is_symlink():
        raise BackendError(f"{path} is a symbolic link: tapers won't replace it (others' lines are in it)",
                           hint=f"make {path} a plain file")
    with _shadow_lock(path, lock_timeout):
        current = os.lstat(path) if path.exists() else None
        old = path.read_text().splitlines() if current else []
        new = change(old)
        if new == old:
            return
        owner = (current.st_mode & 0o777, current.st_uid, current.st_gid) if current else (0o644, 0, 0)
        with Root(path.parent, str(path.parent), BackendError) as folder:
            folder.write(path.name, "".join(f"{line}\n" for line in new).encode(), *owner)


def remove_if_empty(path: Path, lock_timeout: float = 15) -> None:
    """Remove the file when it is a plain file with nothing in it (one tapers made, once
    every line it added is taken back): the host as it was. A link is no file tapers made."""
    with _shadow_lock(path, lock_timeout):
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISREG(found.st_mode) and found.st_size == 0:
            path.unlink()


@contextmanager
def _shadow_lock(path: Path, timeout: float) -> Iterator[None]:
    """PATH.lock as shadow's tools take it: a file holding our pid, linked to that name (a
    link that exists means another program holds it, unless its pid is gone: stale)."""
    lock = path.with_name(f"{path.name}.lock")
    mine = path.with_name(f"{path.name}.{os.getpid()}")
    mine.unlink(missing_ok=True)
    fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.write(fd, f"{os.getpid()}\0".encode())
    os.close(fd)
    held = False
    try:
        deadline = time.monotonic() + timeout
        while not held:
            try:
                os.link(mine, lock)
                held = True
            except FileExistsError:
                if _stale(lock):
                    lock.unlink(missing_ok=True)
                elif time.monotonic() > deadline:
                    raise BackendError(f"{lock} is held by another program (useradd or usermod?) for {timeout:g} s",
                                       hint=f"try again; if no such program runs, remove {lock}") from None
                else:
                    time.sleep(0.05)
        yield
    finally:
        if held:
            lock.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)


def _stale(lock: Path) -> bool:
    """The lock's holder is gone (the pid it names doesn't exist)."""
    try:
        pid = int(lock.read_bytes().split(b"\0")[0].strip() or b"0")
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    from tapers.processes import alive

    return not alive(pid)
