"""Commands about the project as a whole: init, validate, plan, status, global-status, doctor."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tapers.cli import output
from tapers.cli.common import JsonFlag, Names, file_of, observed_project, open_project
from tapers.cli.console import confirm
from tapers.errors import ExitCode, StateError

if TYPE_CHECKING:
    from tapers.project import Project


def init(
    machine: Annotated[str, typer.Option(help="name of the machine")] = "default",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing Taperfile.yaml")] = False,
) -> None:
    """Write a commented Taperfile.yaml with one machine in this folder."""
    from tapers.scaffold import init_taperfile

    if not re.match(r"^[a-z][a-z0-9-]*$", machine):
        raise typer.BadParameter("machine names start with a letter and use a-z, 0-9 and '-'", param_hint="--machine")
    target = Path.cwd() / "Taperfile.yaml"
    if target.exists() and not force:
        raise StateError(f"{target} already exists", hint="edit it, or pass --force to overwrite it")
    from tapers import project_files

    if force:
        project_files.write(target, init_taperfile(machine), 0o644)
    else:
        try:
            fd = project_files.create(target, 0o644)
        except FileExistsError:  # appeared since the check (or a dangling link): never written through
            raise StateError(f"{target} already exists", hint="edit it, or pass --force to overwrite it") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(init_taperfile(machine))
    output.say(f"wrote {target}\nnext: `tapers up` builds the box (first time only) and starts `{machine}`")


def validate(ctx: typer.Context) -> None:
    """Check the Taperfile: every problem at once, with file:line:column."""
    project = open_project(ctx)
    names = ", ".join(m.name for m in project.machines)
    output.say(f"{os.path.relpath(project.loaded.path)} is valid: {len(project.machines)} machine(s): {names}")


def config(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Print the Taperfile as tapers reads it: the override file merged, variables resolved."""
    from tapers.taperfile.load import read_texts
    from tapers.taperfile.validate import resolved

    project = open_project(ctx)  # validated: a Taperfile with problems says so here
    data = resolved(project.loaded.path, read_texts(project.loaded.path), []).data
    if as_json:
        output.say(json.dumps(data, indent=2))
        return
    import yaml

    output.say(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n"))


def schema() -> None:
    """Print a JSON Schema of the Taperfile (for editors: every key, its description and default)."""
    from tapers.taperfile.schema import taperfile_schema

    output.say(json.dumps(taperfile_schema(), indent=2))


def plan(
    ctx: typer.Context,
    names: Names = None,
    as_json: JsonFlag = False,
    remove_orphans: Annotated[bool, typer.Option("--remove-orphans", help="as `up --remove-orphans` would")] = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="exit 0 when there is nothing to do, 2 when changes are pending")
    ] = False,
) -> int:
    """Show what `tapers up` would do and why, changing nothing."""
    from tapers.engine.access import known_project_key
    from tapers.engine import orphan_warnings, up_plan

    project, backend, observed = observed_project(ctx)
    key = known_project_key(project)
    result, _ = up_plan(project, backend, observed, names, key, provision="auto", remove_orphans=remove_orphans)
    if as_json:
        data = {
            "actions": [
                {
                    "subject": a.subject,
                    "kind": a.kind.value,
                    "cause": a.cause,
                    "class": a.cls,
                    "loses_data": a.loses_data,
                    **({"step": a.step} if a.step else {}),
                }
                for a in result.actions
            ],
            "orphans": [o.machine for o in observed.orphans],
        }
        output.write_raw(json.dumps(data, indent=2) + "\n")
    else:
        output.say(str(result))
        for warning in orphan_warnings(observed):
            output.warn(warning)
    if detailed_exitcode and result:
        return int(ExitCode.USAGE)  # 2: changes pending, like `terraform plan -detailed-exitcode`
    return int(ExitCode.OK)


def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Each machine: state, address, box, and whether its config is out of date."""
    from tapers.cli import core_commands

    core_commands.status(file_of(ctx), as_json)


def trust(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="approve without asking (you read them already)")] = False,
) -> None:
    """Show what the Taperfile runs on this host (its triggers' commands, its ansible plays)
    and the folders outside the project it lets machines write, and approve it (a Taperfile
    may come from anyone, and machines can write the project folder); any change asks again."""
    from tapers.engine import triggers, trust

    project = open_project(ctx)
    items = [*triggers.host_commands(project), *trust.plays(project, causes=_step_causes(project)),
             *trust.shared_folders(project)]
    if not items:
        output.say("the Taperfile runs nothing on this host and shares no folder outside the project for machines "
                   "to write: nothing to approve")
        return
    output.say(f"{project.loaded.path} runs this on this host, as you, in {project.root} "
               "(what a command runs from there is not covered), and shares these folders:")
    for item in items:
        output.say(f"  {item.describe()}")
    if not yes:
        confirm("Approve it?", "nothing approved", "--yes")
    trust.approve(project, items)  # exactly what was shown
    output.say("approved; any change to it asks again")


def _step_causes(project: Project) -> dict[tuple[str, str], str]:
    """Why each step would run now (`site.yml changed`), as `plan` says; none when the
    machines can't be read."""
    from tapers.backend import default_backend
    from tapers.engine import status_plan, trust
    from tapers.engine.observe import observe
    from tapers.errors import TapersError

    try:
        backend = default_backend()
        return trust.causes_of(status_plan(project, backend, observe(project, backend)), project)
    except TapersError:
        return {}


def global_status(
    as_json: JsonFlag = False,
    prune: Annotated[bool, typer.Option("--prune", help="destroy machines whose project folder is gone")] = False,
    force: Annotated[bool, typer.Option("-f", "--force", help="with --prune: do not ask")] = False,
) -> None:
    """Every tapers machine on this host, across projects, as it is now (as root: every user's)."""
    from tapers.backend import default_backend
    from tapers.project import CONTAINER_PREFIX

    backend = default_backend()
    rows = []
    for owner, info in _rows_of_everyone(backend):
        record = info.record
        folder = record.project_dir if record else None
        gone = bool(folder) and not Path(folder).is_dir()
        rows.append(
            {
                "user": owner,
                "container": info.name,
                "project": record.project if record else "?",
                "machine": record.machine if record else "?",
                "state": str(info.state),
                "address": record.address if record else None,
                "folder": folder,
                "folder_gone": gone,
                "tapers_record": bool(info.record),
            }
        )
    if prune:
        from tapers.engine import gone_projects, prune as prune_machines

        doomed = gone_projects(backend)
        if not doomed:
            output.say("no machine belongs to a project folder that is gone")
            return
        listed = ", ".join(f"`{info.name}`" for info in doomed)
        if not force:
            confirm(f"Destroy {listed}, whose project folders are gone?", f"refusing to destroy {listed}", "-f")
        with output.ConsoleReporter() as reporter:
            prune_machines(backend, doomed, reporter)
        return
    rows += _other_users_rows(backend)
    output.listing(
        rows,
        as_json,
        "no tapers machines on this host",
        ["user", "project", "machine", "state", "address", "folder"],
        lambda r: [
            r["user"], r["project"], r["machine"], r["state"], r["address"] or "-",
            (r["folder"] or "-") + (" (gone: `tapers global-status --prune`)" if r["folder_gone"] else ""),
        ],
    )


def _rows_of_everyone(backend):  # type: ignore[no-untyped-def]
    """(user, ContainerInfo) of this user's machines."""
    import getpass

    from tapers.project import CONTAINER_PREFIX

    me = getpass.getuser()
    return [(me, info) for info in backend.list(prefix=CONTAINER_PREFIX)]


def _other_users_rows(backend) -> list[dict]:  # type: ignore[no-untyped-def]
    """As root on liblxc: the rows of every user an admin let run machines, each listed by
    that user's own tapers running as them (root never reads a user's container config:
    liblxc acts on what it says, e.g. opens its log file). What they print is data: bounded,
    checked, its control characters escaped."""
    from tapers import paths

    if backend.name != "liblxc" or paths.as_user():
        return []
    from tapers.backend.liblxc import grants

    rows = []
    for grant in grants.all_grants():
        rows += grants.listing_of(grant.user)
    return rows


def doctor(
    backend: Annotated[
        Optional[str], typer.Option("--backend", help="check this backend (liblxc or lxd) instead of the chosen one")
    ] = None,
) -> int:
    """Check that this host (or the LXD endpoint) can run tapers machines, and say how to fix what is missing."""
    from tapers.doctor import run_checks

    if backend is not None:
        from tapers.user_config import BACKENDS

        if backend not in BACKENDS:
            raise typer.BadParameter(f"one of: {', '.join(BACKENDS)}", param_hint="--backend")
        os.environ["TAPERS_BACKEND"] = backend

    failed = 0
    for check in run_checks(full=True):
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        output.say(f"{mark}  {check.name}: {check.detail}")
        if not check.ok:
            output.say(f"      fix: {check.fix}")
            failed += check.required
    return int(ExitCode.FAILED) if failed else int(ExitCode.OK)
