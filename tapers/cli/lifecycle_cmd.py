"""Commands that change machines: up, provision, reload, halt, suspend, resume, destroy.

Each parses its arguments and asks the Engine (tapers/engine/__init__.py), which locks, observes,
plans, asks and applies; what it says is shown through the console.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tapers.cli import core_commands, output
from tapers.cli.common import Names, complete_steps, engine_for, file_of

Timeout = Annotated[float, typer.Option(help="seconds to wait for SSH on each machine")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="re-create machines whose box changed without asking")]


def up(
    ctx: typer.Context,
    names: Names = None,
    provision: Annotated[
        Optional[bool],
        typer.Option("--provision/--no-provision", help="run every step again / skip provisioning", show_default=False),
    ] = None,
    remove_orphans: Annotated[
        bool, typer.Option("--remove-orphans", help="destroy machines no longer in the Taperfile")
    ] = False,
    yes: Yes = False,
    timeout: Timeout = 60.0,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="new machines run every step, not starting from the provisioning cache")
    ] = False,
) -> None:
    """Make the machines match the Taperfile: create, start, reconfigure, provision."""
    mode = "auto" if provision is None else ("force" if provision else "skip")
    core_commands.up(file_of(ctx), names, mode, remove_orphans, yes, timeout, use_cache=not no_cache)


def reload(ctx: typer.Context, names: Names = None, yes: Yes = False, timeout: Timeout = 60.0) -> None:
    """Halt and start machines again, applying every change in the Taperfile."""
    with engine_for(ctx) as engine:
        engine.reload(names, yes, timeout)


def provision(
    ctx: typer.Context,
    names: Names = None,
    with_steps: Annotated[
        Optional[str],
        typer.Option("--with", "--provision-with", help="only these steps (names or numbers, comma-separated)",
                     autocompletion=complete_steps),
    ] = None,
) -> None:
    """Run provisioning steps again on running machines (all `once` and `always` steps, or --with)."""
    wanted = [w.strip() for w in with_steps.split(",") if w.strip()] if with_steps else None
    with engine_for(ctx) as engine:
        if not engine.provision(names, wanted):
            output.say("no provisioning steps to run")


def halt(
    ctx: typer.Context,
    names: Names = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a clean shutdown before forcing")] = 30.0,
) -> None:
    """Shut machines down cleanly (forced off after --timeout)."""
    core_commands.halt(file_of(ctx), names, timeout)


def suspend(ctx: typer.Context, names: Names = None) -> None:
    """Freeze running machines: their processes stop where they are, memory kept."""
    with engine_for(ctx) as engine:
        if not engine.suspend(names):
            output.say("nothing to suspend (no machine is running)")


def resume(ctx: typer.Context, names: Names = None) -> None:
    """Unfreeze suspended machines."""
    with engine_for(ctx) as engine:
        if not engine.resume(names):
            output.say("nothing to resume (no machine is suspended)")


def destroy(
    ctx: typer.Context,
    names: Names = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="do not ask for confirmation")] = False,
) -> None:
    """Stop and delete machines and everything in them (with no names: orphans too)."""
    core_commands.destroy(file_of(ctx), names, force)
