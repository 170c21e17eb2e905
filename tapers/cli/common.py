"""What the command modules share: the global options, opening the project, prompts."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tapers.cli import output
from tapers.errors import ExitCode, TapersError

Names = Annotated[Optional[list[str]], typer.Argument(help="machines (default: all)", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@dataclass
class Options:
    file: Path | None = None


def open_project(ctx: typer.Context) -> Any:
    from tapers.project import open_project as open_

    return open_(explicit=ctx.obj.file if ctx.obj else None)


def engine(ctx: typer.Context) -> tuple[Any, Any, Any]:
    """The project, its backend and what is real now."""
    from tapers.backend import default_backend
    from tapers.observe import observe

    project = open_project(ctx)
    backend = default_backend()
    return project, backend, observe(project, backend)


def project_key(project: Any) -> str:
    from tapers.ssh.keys import ensure_project_key

    return ensure_project_key(project.paths.private_key, project.paths.public_key, f"tapers-{project.id}")


def print_notes(plan: Any) -> None:
    for note in plan.notes:
        output.warn(note)


def print_orphans(observed: Any) -> None:
    for orphan in observed.orphans:
        name = (orphan.record or {}).get("machine", orphan.name)
        output.warn(
            f"machine `{name}` ({orphan.name}) is no longer in the Taperfile; "
            f"`tapers up --remove-orphans` or `tapers destroy {name}` removes it"
        )


def confirm(question: str, refusal: str, flag: str) -> None:
    """Ask on a terminal; without one, refuse and name the flag that says yes."""
    if not sys.stdin.isatty():
        raise TapersError(f"{refusal} without confirmation (no terminal to ask on)", hint=f"pass {flag} to go ahead")
    if not typer.confirm(question, default=False):
        raise typer.Exit(int(ExitCode.FAILED))
