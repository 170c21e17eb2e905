"""What the command modules share: the global options, opening the project, prompts."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tapers.cli import console
from tapers.errors import TapersError

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


def file_of(ctx: typer.Context) -> Path | None:
    """The Taperfile given with -f/--file (None: found from this folder up)."""
    return ctx.obj.file if ctx.obj else None


def open_project(ctx: typer.Context) -> Project:
    return console.open_project(file_of(ctx))


def observed_project(ctx: typer.Context) -> tuple[Project, Backend, Observed]:
    """The project, its backend and what is real now (for commands that only read)."""
    return console.observed_project(file_of(ctx))


def engine_for(ctx: typer.Context) -> AbstractContextManager[Engine]:
    """The Engine for this folder's project, its progress shown on the console."""
    return console.engine_for(file_of(ctx))
