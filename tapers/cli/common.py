"""What the command modules share: the global options, opening the project, prompts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tapers.cli import output
from tapers.errors import ExitCode, TapersError

if TYPE_CHECKING:
    from tapers.backend.api import Backend
    from tapers.engine import Engine
    from tapers.engine.observe import Observed
    from tapers.project import Project

def _machines_here(ctx: typer.Context) -> list:
    """The Taperfile's machines, for shell completion (none when there is no valid Taperfile)."""
    from tapers.project import open_project as open_

    file = ctx.find_root().params.get("file")
    try:
        return open_(explicit=Path(file) if file else None).machines
    except (TapersError, OSError):
        return []


def complete_machine(ctx: typer.Context, incomplete: str) -> list[str]:
    return [m.name for m in _machines_here(ctx) if m.name.startswith(incomplete)]


def complete_steps(ctx: typer.Context, incomplete: str) -> list[str]:
    """Step names for `--with A,B`: completes the last name of the list."""
    done, _, last = incomplete.rpartition(",")
    names = sorted({s.name for m in _machines_here(ctx) for s in m.provision if s.name} - set(done.split(",")))
    return [f"{done},{n}" if done else n for n in names if n.startswith(last)]


Names = Annotated[Optional[list[str]], typer.Argument(help="machines (default: all)", show_default=False,
                                                      autocompletion=complete_machine)]
Machine = Annotated[str, typer.Argument(help="the machine", autocompletion=complete_machine)]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@dataclass
class Options:
    file: Path | None = None


def open_project(ctx: typer.Context) -> Project:
    from tapers.project import open_project as open_

    project = open_(explicit=ctx.obj.file if ctx.obj else None)
    if project.loaded.unset:
        from tapers.cli.output import warn

        many = len(project.loaded.unset) > 1
        warn(f"{'the variables' if many else 'the variable'} {', '.join(project.loaded.unset)} "
             f"{'are' if many else 'is'} not set: read as empty text (set {'them' if many else 'it'} in the "
             "environment or in .env beside the Taperfile)")
    return project


def observed_project(ctx: typer.Context) -> tuple[Project, Backend, Observed]:
    """The project, its backend and what is real now (for commands that only read)."""
    from tapers.backend import default_backend
    from tapers.engine.observe import observe

    project = open_project(ctx)
    backend = default_backend()
    return project, backend, observe(project, backend)


class ConsolePrompts:
    """The engine's questions and warnings, on this terminal."""

    def warn(self, text: str) -> None:
        output.warn(text)

    def confirm(self, question: str, refusal: str, flag: str) -> None:
        confirm(question, refusal, flag)


@contextmanager
def engine_for(ctx: typer.Context) -> Iterator[Engine]:
    """The Engine for this folder's project, its progress shown on the console."""
    from tapers.engine import Engine

    project = open_project(ctx)
    with output.ConsoleReporter() as reporter:
        yield Engine(project, reporter, ConsolePrompts())


def confirm(question: str, refusal: str, flag: str) -> None:
    """Ask on a terminal; without one, refuse and name the flag that says yes."""
    if not sys.stdin.isatty():
        raise TapersError(f"{refusal} without confirmation (no terminal to ask on)", hint=f"pass {flag} to go ahead")
    if not typer.confirm(question, default=False):
        raise typer.Exit(int(ExitCode.FAILED))
