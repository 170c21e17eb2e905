"""`tapers snapshot save|restore|list|delete`: keep a machine's disk and go back to it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer

from tapers.cli import output
from tapers.cli.common import JsonFlag, open_project
from tapers.errors import StateError, UsageError

snapshot_app = typer.Typer(no_args_is_help=True, help="Save, restore, list and delete machine snapshots.")

Machine = Annotated[str, typer.Argument(help="the machine")]
Snap = Annotated[str, typer.Argument(help="the snapshot's name")]
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@snapshot_app.command("save")
def save(ctx: typer.Context, machine: Machine, snapshot: Snap) -> None:
    """Keep the machine's disk as SNAPSHOT (a running machine is frozen while it is copied)."""
    if not _SNAPSHOT_NAME.match(snapshot):
        raise UsageError(f"`{snapshot}` is not a snapshot name", hint="use letters, digits, '.', '_' and '-'")
    with _machine(ctx, machine, "snapshot save") as (project, backend, container, reporter):
        reporter.line(machine, f"saving snapshot `{snapshot}`")
        backend.snapshot_save(container, snapshot)
    output.say(f"saved snapshot `{snapshot}` of `{machine}`")


@snapshot_app.command("restore")
def restore(ctx: typer.Context, machine: Machine, snapshot: Snap) -> None:
    """Put the machine's disk back as it was in SNAPSHOT (a running machine is restarted)."""
    from tapers.apply import ssh_login_check
    from tapers.backend.api import State
    from tapers.ssh.config import SshTarget

    with _machine(ctx, machine, "snapshot restore") as (project, backend, container, reporter):
        if snapshot not in {s.name for s in backend.snapshot_list(container)}:
            raise StateError(f"machine `{machine}` has no snapshot `{snapshot}`", hint=f"tapers snapshot list {machine}")
        info = backend.inspect(container)
        running = info.state is not State.STOPPED
        if running:
            reporter.line(machine, "halt (to restore its disk)")
            backend.stop(container, 30.0)
        reporter.line(machine, f"restoring snapshot `{snapshot}`")
        backend.snapshot_restore(container, snapshot)
        if running:
            reporter.line(machine, "start")
            backend.start(container)
            record = backend.inspect(container).record
            target = SshTarget(machine, container, record["address"], record["user"], record["host_key"])
            ssh_login_check(target, project.paths.private_key, 60.0)
    output.say(f"restored `{machine}` to snapshot `{snapshot}`")


@snapshot_app.command("list")
def list_(
    ctx: typer.Context,
    machine: Annotated[Optional[str], typer.Argument(help="the machine (default: all)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The snapshots of a machine (or of every machine)."""
    from tapers.backend import default_backend
    from tapers.observe import observe
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
    with _machine(ctx, machine, "snapshot delete") as (project, backend, container, reporter):
        if snapshot not in {s.name for s in backend.snapshot_list(container)}:
            raise StateError(f"machine `{machine}` has no snapshot `{snapshot}`", hint=f"tapers snapshot list {machine}")
        backend.snapshot_delete(container, snapshot)
    output.say(f"deleted snapshot `{snapshot}` of `{machine}`")


@contextmanager
def _machine(ctx: typer.Context, machine: str, command: str) -> Iterator[tuple[Any, Any, str, Any]]:
    """Lock the project and find the machine's container (it must exist)."""
    from tapers.backend import default_backend
    from tapers.lock import project_lock
    from tapers.observe import observe

    project = open_project(ctx)
    project.loaded.machine(machine)
    backend = default_backend()
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, command):
        if machine not in observe(project, backend).machines:
            raise StateError(f"machine `{machine}` is not created", hint=f"tapers up {machine}")
        yield project, backend, project.container(machine), reporter
