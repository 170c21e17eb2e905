"""Locks between tapers processes on this host: an flock(2) on a file, let go when its file
is closed or the process ends (a crashed tapers holds nothing). Written here rather than
taken from filelock, which costs a command 15-20 ms to import: every new machine takes the
network lock."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def acquire(fd: int, on_wait: Callable[[], None] | None = None, patience: float = 0.5) -> None:
    """Lock `fd`, waiting as long as it takes; when another process still holds it after
    `patience` seconds, `on_wait` is called once first (to say who is waited for)."""
    if on_wait is not None:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        on_wait()
    fcntl.flock(fd, fcntl.LOCK_EX)


_held = threading.local()  # the lock files this thread holds (taking one twice would wait forever)


@contextmanager
def held(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock file `path` (made when missing, its folder too; never opened through a
    link) for the block. The folder it makes is 0755 at most: no one else may put a lock
    file of theirs in its place."""
    from tapers.errors import HostError

    mine = _held.__dict__.setdefault("files", set())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        why = "it is a link (tapers never follows one)" if exc.errno == errno.ELOOP else exc.strerror
        raise HostError(f"cannot use the lock file {path}: {why}", hint=f"remove {path}; tapers makes it again") from None
    try:
        st = os.fstat(fd)
        file = (st.st_dev, st.st_ino)  # (the same file however its path is spelled)
        if file in mine:
            raise RuntimeError(f"{path} is already held by this thread")  # a bug in tapers: it would wait forever
        acquire(fd, on_wait)
        mine.add(file)
        try:
            yield
        finally:
            mine.discard(file)
    finally:
        os.close(fd)
