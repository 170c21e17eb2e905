"""What commands share that needs no typer: the project of a Taperfile, the engine with its
progress on this console, and asking the person at it. The quick forms (quick.py) use these
as the typer commands do."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tapers.cli import output
from tapers.errors import TapersError

if TYPE_CHECKING:
    from tapers.backend.api import Backend
    from tapers.engine import Engine
    from tapers.engine.observe import Observed
    from tapers.project import Project


def open_project(file: Path | None) -> Project:
    """The project of `file` (None: the Taperfile found from this folder up)."""
    from tapers.project import open_project as open_

    project = open_(explicit=file)
    if project.loaded.unset:
        many = len(project.loaded.unset) > 1
        output.warn(f"{'the variables' if many else 'the variable'} {', '.join(project.loaded.unset)} "
                    f"{'are' if many else 'is'} not set: read as empty text (set {'them' if many else 'it'} in the "
                    "environment or in .env beside the Taperfile)")
    return project


def observed_project(file: Path | None) -> tuple[Project, Backend, Observed]:
    """The project, its backend and what is real now (for commands that only read)."""
    from tapers.backend import default_backend
    from tapers.engine.observe import observe

    project = open_project(file)
    backend = default_backend()
    return project, backend, observe(project, backend)


class ConsolePrompts:
    """The engine's questions and warnings, on this terminal."""

    def warn(self, text: str) -> None:
        output.warn(text)

    def confirm(self, question: str, refusal: str, flag: str) -> None:
        confirm(question, refusal, flag)

    def can_ask(self) -> bool:
        """A terminal to answer on, and one to read what is asked about (warnings go to stderr)."""
        return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stderr))


@contextmanager
def engine_for(file: Path | None) -> Iterator[Engine]:
    """The Engine for the project of `file`, its progress shown on the console."""
    from tapers.engine import Engine

    project = open_project(file)
    with output.ConsoleReporter() as reporter:
        yield Engine(project, reporter, ConsolePrompts())


def confirm(question: str, refusal: str, flag: str) -> None:
    """Ask on a terminal; without one, or when the answer isn't yes, refuse and name the
    flag that says yes."""
    if not sys.stdin.isatty():
        raise TapersError(f"{refusal} without confirmation (no terminal to ask on)", hint=f"pass {flag} to go ahead")
    try:
        answer = input(f"{question} [y/N]: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise TapersError(refusal, hint=f"pass {flag} to go ahead without being asked")
