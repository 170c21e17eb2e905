"""One writer per project: `up`, `halt`, `destroy` hold `.tapers/lock` while they work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tapers.events import Reporter
from tapers.profile import phase
from tapers.project import Project


@contextmanager
def project_lock(project: Project, reporter: Reporter, command: str) -> Iterator[None]:
    from tapers import project_files

    paths = project.paths
    project_files.check_dir(paths.state, create=True)
    fd = project_files.open_file(paths.lock, os.O_RDWR)
    owner = paths.lock.with_name("lock.owner")
    try:
        with phase("take the project lock"):
            _lock(fd, owner, reporter)
        project_files.write(owner, f"`tapers {command}` (pid {os.getpid()})\n", 0o644)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, owner: Path, reporter: Reporter) -> None:
    """Take the lock; when someone holds it, say who (from `owner`) and wait."""
    from tapers import locks, project_files

    def waiting() -> None:
        holder = (project_files.read_text(owner) or "").strip() or "another tapers"
        reporter.line("tapers", f"waiting for {holder} to finish with this project")

    locks.acquire(fd, waiting, patience=0.2)
