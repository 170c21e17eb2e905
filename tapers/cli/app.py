"""The typer commands. Each one: open the project, observe, plan, apply, render.

Heavy modules (the backend, paramiko, the apply engine) are imported inside the
commands that use them, so `tapers --help` and `tapers status` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from tapers import __version__
from tapers.cli import output
from tapers.cli.box_cmd import box_app
from tapers.errors import ExitCode, StateError, TapersError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible development environments in Linux containers.",
)
app.add_typer(box_app, name="box")

Names = Annotated[Optional[list[str]], typer.Argument(help="machines (default: all)", show_default=False)]


@dataclass
class Options:
    file: Path | None = None


def _version(value: bool) -> None:
    if value:
        output.say(f"tapers {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="the Taperfile to use")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    ctx.obj = Options(file=file)


def _project(ctx: typer.Context):  # -> Project
    from tapers.project import open_project

    return open_project(explicit=ctx.obj.file if ctx.obj else None)


def _engine(ctx: typer.Context):
    """The project, its backend and what is real now."""
    from tapers.backend import default_backend
    from tapers.observe import observe

    project = _project(ctx)
    backend = default_backend()
    return project, backend, observe(project, backend)


def _project_key(project) -> str:
    from tapers.ssh.keys import ensure_project_key

    return ensure_project_key(project.paths.private_key, project.paths.public_key, f"tapers-{project.id}")


def _print_notes(plan) -> None:
    for note in plan.notes:
        output.warn(note)


def _print_orphans(observed) -> None:
    for orphan in observed.orphans:
        name = (orphan.record or {}).get("machine", orphan.name)
        output.warn(
            f"machine `{name}` ({orphan.name}) is no longer in the Taperfile; `tapers destroy {name}` removes it"
        )


# -- commands --------------------------------------------------------------------------


@app.command()
def init(
    machine: Annotated[str, typer.Option(help="name of the machine")] = "default",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing Taperfile.yaml")] = False,
) -> None:
    """Write a commented Taperfile.yaml with one machine in this folder."""
    import re

    from tapers.scaffold import init_taperfile

    if not re.match(r"^[a-z][a-z0-9-]*$", machine):
        raise typer.BadParameter("machine names start with a letter and use a-z, 0-9 and '-'", param_hint="--machine")
    target = Path.cwd() / "Taperfile.yaml"
    if target.exists() and not force:
        raise StateError(f"{target} already exists", hint="edit it, or pass --force to overwrite it")
    target.write_text(init_taperfile(machine))
    output.say(f"wrote {target}\nnext: `tapers up` builds the box (first time only) and starts `{machine}`")


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check the Taperfile: every problem at once, with file:line:column."""
    project = _project(ctx)
    names = ", ".join(m.name for m in project.machines)
    output.say(f"{os.path.relpath(project.loaded.path)} is valid: {len(project.machines)} machine(s): {names}")


@app.command()
def plan(
    ctx: typer.Context,
    names: Names = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show what `tapers up` would do and why, changing nothing."""
    from tapers.engine import up_plan

    project, _, observed = _engine(ctx)
    key = project.paths.public_key.read_text().strip() if project.paths.public_key.is_file() else ""
    result = up_plan(project, observed, names, key, provision="auto")
    if as_json:
        data = {
            "actions": [
                {"kind": a.kind.value, "subject": a.subject, "cause": a.cause, **({"step": a.step} if a.step else {})}
                for a in result.actions
            ],
            "notes": list(result.notes),
        }
        output.write_raw(json.dumps(data, indent=2) + "\n")
        return
    output.say(str(result))
    _print_orphans(observed)


@app.command()
def up(
    ctx: typer.Context,
    names: Names = None,
    provision: Annotated[
        Optional[bool],
        typer.Option("--provision/--no-provision", help="run every step again / skip provisioning", show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for SSH on each machine")] = 60.0,
) -> None:
    """Create and start the machines (build the box first if needed), wait for SSH, provision."""
    from tapers.doctor import require_host

    project = _project(ctx)
    require_host()
    mode = "auto" if provision is None else ("force" if provision else "skip")
    machines = _reconcile(project, "up", names, mode, timeout)
    if machines is not None:
        output.say(f"{len(machines)} machine(s) up to date: {', '.join(m.name for m in machines)}")


@app.command()
def provision(
    ctx: typer.Context,
    names: Names = None,
    with_steps: Annotated[
        Optional[str],
        typer.Option("--with", "--provision-with", help="only these steps (names or numbers, comma-separated)"),
    ] = None,
) -> None:
    """Run provisioning steps again on running machines (all `once` and `always` steps, or --with)."""
    from tapers.apply import Context, apply
    from tapers.backend import default_backend
    from tapers.engine import check_tools
    from tapers.lock import project_lock
    from tapers.observe import observe
    from tapers.plan import plan_provision

    project = _project(ctx)
    key = _project_key(project)
    backend = default_backend()
    wanted = [w.strip() for w in with_steps.split(",") if w.strip()] if with_steps else None
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, "provision"):
        observed = observe(project, backend)
        result = plan_provision(project.select(names), observed, wanted)
        check_tools(result, project)
        apply(result, Context(project, backend, reporter, project_key=key))
    if not result:
        output.say("no provisioning steps to run")


def _reconcile(project, command: str, names: list[str] | None, mode: str, timeout: float):
    """Plan and apply `up`; return the machines when there was nothing to do, else None."""
    from tapers.access import write_ssh_files
    from tapers.apply import Context, apply
    from tapers.backend import default_backend
    from tapers.engine import check_tools, machines_for_up, up_plan
    from tapers.lock import project_lock
    from tapers.observe import observe

    key = _project_key(project)
    backend = default_backend()
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, command):
        observed = observe(project, backend)
        result = up_plan(project, observed, names, key, mode)
        _print_notes(result)
        _print_orphans(observed)
        check_tools(result, project)
        if result:
            apply(result, Context(project, backend, reporter, project_key=key, ssh_timeout=timeout))
            observed = observe(project, backend)
        write_ssh_files(project, observed)
    return None if result else machines_for_up(project, names)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each machine: state, address, box."""
    project, _, observed = _engine(ctx)
    rows = []
    for machine in project.machines:
        info = observed.machines.get(machine.name)
        record = (info.record if info else None) or {}
        box = record.get("box", {})
        rows.append(
            {
                "machine": machine.name,
                "container": project.container(machine.name),
                "state": str(info.state) if info else "not created",
                "address": record.get("address") if info else None,
                "box": f"{box['name']}@{box['version']}" if box else machine.box,
                "primary": machine.primary,
            }
        )
    for orphan in observed.orphans:
        record = orphan.record or {}
        box = record.get("box", {})
        rows.append(
            {
                "machine": record.get("machine", orphan.name),
                "container": orphan.name,
                "state": f"{orphan.state} (orphan: not in the Taperfile)",
                "address": record.get("address"),
                "box": f"{box.get('name')}@{box.get('version')}",
                "primary": False,
            }
        )
    if as_json:
        output.write_raw(json.dumps({"project": project.id, "machines": rows}, indent=2) + "\n")
        return
    output.table(
        ["machine", "state", "address", "box"],
        [[r["machine"], r["state"], r["address"] or "-", r["box"]] for r in rows],
    )


@app.command()
def ssh(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="machine (default: the primary or only one)")] = None,
    command: Annotated[Optional[str], typer.Option("-c", "--command", help="run this command and exit")] = None,
) -> int:
    """Open a shell on a machine, or run one command and return its exit code."""
    from tapers.access import running_target, write_ssh_files

    from tapers.backend import default_backend
    from tapers.observe import observe

    project = _project(ctx)
    machine = project.loaded.machine(name) if name else project.default_machine()
    observed = observe(project, default_backend())
    target = running_target(project, observed, machine.name)
    if command is None:
        config = write_ssh_files(project, observed)
        argv = ["ssh", "-F", str(config), machine.name]
        try:
            os.execvp("ssh", argv)
        except FileNotFoundError:
            raise StateError("the OpenSSH client is not installed", hint="apt-get install openssh-client") from None
    from tapers.ssh.session import connect

    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    with connect(target, project.paths.private_key, timeout=10) as session:
        return session.run(command, sys.stdout.buffer, sys.stderr.buffer, stdin=stdin)


@app.command("ssh-config")
def ssh_config(ctx: typer.Context) -> None:
    """Print an OpenSSH config for the machines: `ssh -F FILE NAME` works with it."""
    from tapers.access import ssh_config_text, write_ssh_files

    project, _, observed = _engine(ctx)
    write_ssh_files(project, observed)
    output.write_raw(ssh_config_text(project, observed))


@app.command()
def halt(
    ctx: typer.Context,
    names: Names = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a clean shutdown before forcing")] = 30.0,
) -> None:
    """Shut machines down cleanly (forced off after --timeout)."""
    from tapers.apply import Context, apply
    from tapers.lock import project_lock
    from tapers.observe import observe
    from tapers.plan import plan_halt

    project, backend, _ = _engine(ctx)
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, "halt"):
        observed = observe(project, backend)
        result = plan_halt(project.select(names), observed)
        apply(result, Context(project, backend, reporter, halt_timeout=timeout))
    if not result:
        output.say("nothing to halt")


@app.command()
def destroy(
    ctx: typer.Context,
    names: Names = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="do not ask for confirmation")] = False,
) -> None:
    """Stop and delete machines and everything in them."""
    from tapers.apply import Context, apply
    from tapers.lock import project_lock
    from tapers.observe import observe
    from tapers.plan import plan_destroy

    project, backend, _ = _engine(ctx)
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, "destroy"):
        observed = observe(project, backend)
        result = plan_destroy(project.select(names), observed, orphans=not names)
        _print_notes(result)
        if not result:
            output.say("nothing to destroy")
            return
        if not force:
            _confirm_destroy(result.subjects())
        apply(result, Context(project, backend, reporter))


def _confirm_destroy(subjects: list[str]) -> None:
    listed = ", ".join(f"`{s}`" for s in subjects)
    if not sys.stdin.isatty():
        raise TapersError(
            f"refusing to destroy {listed} without confirmation (no terminal to ask on)",
            hint="pass -f/--force to destroy without asking",
        )
    if not typer.confirm(f"Destroy {listed} and everything in them?", default=False):
        raise typer.Exit(int(ExitCode.FAILED))


@app.command()
def doctor() -> int:
    """Check that this host can run tapers machines, and say how to fix what is missing."""
    from tapers.doctor import run_checks

    failed = 0
    for check in run_checks(full=True):
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        output.say(f"{mark}  {check.name}: {check.detail}")
        if not check.ok:
            output.say(f"      fix: {check.fix}")
            failed += check.required
    return int(ExitCode.FAILED) if failed else int(ExitCode.OK)
