"""Commands that change machines: up, provision, reload, halt, suspend, resume, destroy.

Each takes the project lock (one writer per project), observes, plans, asks what must be
asked, then applies the plan.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from tapers.cli import output
from tapers.cli.common import Names, confirm, open_project, print_notes, print_orphans, project_key

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
) -> None:
    """Make the machines match the Taperfile: create, start, reconfigure, provision."""
    from tapers.doctor import require_host
    from tapers.lock import project_lock

    project = open_project(ctx)
    require_host()
    mode = "auto" if provision is None else ("force" if provision else "skip")
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, "up"):
        changed = _reconcile(project, reporter, names, mode, remove_orphans, yes, timeout)
    if not changed:
        from tapers.engine import machines_for_up

        machines = machines_for_up(project, names)
        output.say(f"{len(machines)} machine(s) up to date: {', '.join(m.name for m in machines)}")


def reload(ctx: typer.Context, names: Names = None, yes: Yes = False, timeout: Timeout = 60.0) -> None:
    """Halt and start machines again, applying every change in the Taperfile."""
    from tapers.apply import Context, apply
    from tapers.backend import default_backend
    from tapers.lock import project_lock
    from tapers.observe import observe
    from tapers.plan import plan_halt

    project = open_project(ctx)
    backend = default_backend()
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, "reload"):
        halted = plan_halt(project.select(names), observe(project, backend))
        apply(halted, Context(project, backend, reporter))
        _reconcile(project, reporter, names, "auto", False, yes, timeout)


def _reconcile(
    project: Any, reporter: Any, names: list[str] | None, mode: str, remove_orphans: bool, yes: bool, timeout: float
) -> bool:
    """Plan and apply `up` (the caller holds the project lock); False when there was nothing to do."""
    from tapers.access import write_ssh_files
    from tapers.apply import Context, apply
    from tapers.backend import default_backend
    from tapers.engine import check_tools, up_plan
    from tapers.observe import observe

    key = project_key(project)
    backend = default_backend()
    observed = observe(project, backend)
    result = up_plan(project, backend, observed, names, key, mode, remove_orphans)
    print_notes(result)
    if not remove_orphans:
        print_orphans(observed)
    check_tools(result, project)
    losing = result.losing_data()
    if losing and not yes:
        listed = ", ".join(f"`{a.subject}`" for a in losing)
        for action in losing:
            reporter.line(action.subject, action.what)
        confirm(
            f"Re-create {listed}? Everything stored in them is lost.",
            f"refusing to re-create {listed} (their box changed; data in them would be lost)",
            "--yes",
        )
    if result:
        apply(result, Context(project, backend, reporter, project_key=key, ssh_timeout=timeout))
        observed = observe(project, backend)
    write_ssh_files(project, observed)
    return bool(result)


def provision(
    ctx: typer.Context,
    names: Names = None,
    with_steps: Annotated[
        Optional[str],
        typer.Option("--with", "--provision-with", help="only these steps (names or numbers, comma-separated)"),
    ] = None,
) -> None:
    """Run provisioning steps again on running machines (all `once` and `always` steps, or --with)."""
    from tapers.engine import check_tools
    from tapers.plan import plan_provision

    wanted = [w.strip() for w in with_steps.split(",") if w.strip()] if with_steps else None

    def planner(project: Any, observed: Any) -> Any:
        result = plan_provision(project.select(names), observed, wanted)
        check_tools(result, project)
        return result

    if not _run(ctx, "provision", planner, with_key=True):
        output.say("no provisioning steps to run")


def halt(
    ctx: typer.Context,
    names: Names = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a clean shutdown before forcing")] = 30.0,
) -> None:
    """Shut machines down cleanly (forced off after --timeout)."""
    from tapers.plan import plan_halt

    if not _run(ctx, "halt", lambda project, observed: plan_halt(project.select(names), observed), halt_timeout=timeout):
        output.say("nothing to halt")


def suspend(ctx: typer.Context, names: Names = None) -> None:
    """Freeze running machines: their processes stop where they are, memory kept."""
    from tapers.plan import plan_suspend

    if not _run(ctx, "suspend", lambda project, observed: plan_suspend(project.select(names), observed)):
        output.say("nothing to suspend (no machine is running)")


def resume(ctx: typer.Context, names: Names = None) -> None:
    """Unfreeze suspended machines."""
    from tapers.plan import plan_resume

    if not _run(ctx, "resume", lambda project, observed: plan_resume(project.select(names), observed)):
        output.say("nothing to resume (no machine is suspended)")


def destroy(
    ctx: typer.Context,
    names: Names = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="do not ask for confirmation")] = False,
) -> None:
    """Stop and delete machines and everything in them (with no names: orphans too)."""
    from tapers.plan import plan_destroy

    def planner(project: Any, observed: Any) -> Any:
        result = plan_destroy(project.select(names), observed, orphans=not names)
        print_notes(result)
        if result and not force:
            listed = ", ".join(f"`{s}`" for s in result.subjects())
            confirm(f"Destroy {listed} and everything in them?", f"refusing to destroy {listed}", "-f/--force")
        return result

    if not _run(ctx, "destroy", planner):
        output.say("nothing to destroy")


def _run(ctx: typer.Context, command: str, planner: Any, with_key: bool = False, **options: Any) -> bool:
    """Lock, observe, plan with `planner(project, observed)`, apply. False when there was nothing to do."""
    from tapers.apply import Context, apply
    from tapers.backend import default_backend
    from tapers.lock import project_lock
    from tapers.observe import observe

    project = open_project(ctx)
    key = project_key(project) if with_key else ""
    backend = default_backend()
    with output.ConsoleReporter() as reporter, project_lock(project, reporter, command):
        result = planner(project, observe(project, backend))
        apply(result, Context(project, backend, reporter, project_key=key, **options))
    return bool(result)
