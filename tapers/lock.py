"""One writer per project: `up`, `halt`, `destroy` hold `.tapers/lock` while they work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from tapers.events import Reporter
from tapers.project import Project


@contextmanager
def project_lock(project: Project, reporter: Reporter, command: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    paths = project.paths
    paths.state.mkdir(exist_ok=True)
    lock = FileLock(str(paths.lock))
    owner = paths.lock.with_name("lock.owner")
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        holder = owner.read_text().strip() if owner.exists() else "another tapers"
        reporter.line("tapers", f"waiting for {holder} to finish with this project")
        lock.acquire()
    try:
        owner.write_text(f"`tapers {command}` (pid {os.getpid()})\n")
        yield
    finally:
        lock.release()
