"""`tapers snapshot save|restore|list|delete`: keep a machine's disk and go back to it."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer

from tapers.cli import output
from tapers.cli.common import JsonFlag, Machine, complete_machine, engine_for, open_project
from tapers.errors import UsageError

snapshot_app = typer.Typer(no_args_is_help=True, help="Save, restore, list and delete machine snapshots.")

Snap = Annotated[str, typer.Argument(help="the snapshot's name")]
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@snapshot_app.command("save")
def save(ctx: typer.Context, machine: Machine, snapshot: Snap) -> None:
    """Keep the machine's disk as SNAPSHOT (a running machine is frozen while it is copied)."""
    if not _SNAPSHOT_NAME.match(snapshot):
        raise UsageError(f"`{snapshot}` is not a snapshot name", hint="use letters, digits, '.', '_' and '-'")
    with engine_for(ctx) as engine:
        engine.snapshot_save(machine, snapshot)
    output.say(f"saved snapshot `{snapshot}` of `{machine}`")


@snapshot_app.command("restore")
def restore(ctx: typer.Context, machine: Machine, snapshot: Snap) -> None:
    """Put the machine's disk back as it was in SNAPSHOT (a running machine is restarted)."""
    with engine_for(ctx) as engine:
        engine.snapshot_restore(machine, snapshot)
    output.say(f"restored `{machine}` to snapshot `{snapshot}`")


@snapshot_app.command("list")
def list_(
    ctx: typer.Context,
    machine: Annotated[Optional[str], typer.Argument(help="the machine (default: all)", autocompletion=complete_machine)] = None,
    as_json: JsonFlag = False,
) -> None:
    """The snapshots of a machine (or of every machine)."""
    from tapers.backend import default_backend
    from tapers.engine.observe import observe
    from tapers.taperfile.units import format_size

    project = open_project(ctx)
    backend = default_backend()
    observed = observe(project, backend)
    names = [project.loaded.machine(machine).name] if machine else [m.name for m in project.machines]
    rows = [
        {"machine": name, "snapshot": snap.name, "created": snap.created, "size": snap.size}
        for name in names
        if name in observed.machines
        for snap in backend.snapshot_list(project.container(name))
    ]
    output.listing(
        rows,
        as_json,
        "no snapshots",
        ["machine", "snapshot", "created", "size"],
        lambda r: [r["machine"], r["snapshot"], r["created"], format_size(r["size"])],
    )


@snapshot_app.command("delete")
def delete(ctx: typer.Context, machine: Machine, snapshot: Snap) -> None:
    """Delete a snapshot."""
    with engine_for(ctx) as engine:
        engine.snapshot_delete(machine, snapshot)
    output.say(f"deleted snapshot `{snapshot}` of `{machine}`")
