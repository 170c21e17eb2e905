"""Getting into machines: `tapers ssh`, `tapers ssh-config`, and without SSH `tapers exec` and `tapers console`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tapers.cli import output
from tapers.cli.common import complete_machine, file_of, observed_project
from tapers.errors import UsageError


def ssh(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="machine (default: the primary or only one)", autocompletion=complete_machine)] = None,
    command: Annotated[Optional[str], typer.Option("-c", "--command", help="run this command and exit")] = None,
    extra: Annotated[Optional[list[str]], typer.Argument(
        help="OpenSSH options, after `--` (`-- -L 8080:localhost:80`, `-- -A`)", show_default=False)] = None,
) -> int:
    """Open a shell on a machine, or run one command and return its exit code (OpenSSH's,
    255, when SSH itself fails)."""
    from tapers.cli import core_commands

    extra = list(extra or [])
    if name is not None and name.startswith("-"):  # `tapers ssh -- -A`: no name, OpenSSH options
        name, extra = None, [name, *extra]
    return core_commands.ssh(file_of(ctx), name, command, extra)


def ssh_config(ctx: typer.Context) -> None:
    """Print an OpenSSH config for the machines: `ssh -F FILE NAME` works with it."""
    from tapers.engine.access import ssh_config_text, write_ssh_files

    project, _, observed = observed_project(ctx)
    write_ssh_files(project, observed)
    output.write_raw(ssh_config_text(project, observed))


def exec_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the machine", autocompletion=complete_machine)],
    command: Annotated[Optional[list[str]], typer.Argument(help="the command, after `--` (default: a root shell)",
                                                           show_default=False)] = None,
) -> int:
    """Run a command as root in a machine through the container engine, not SSH (for when SSH
    is broken or not installed); its exit code is returned."""
    from tapers.engine.access import running_container

    project, backend, observed = observed_project(ctx)
    container = running_container(project, observed, project.loaded.machine(name).name)
    if not command and not backend.interactive_run:
        raise UsageError(f"on the {backend.name} backend, `tapers exec` runs a command (its output comes when it "
                         "ends; no interactive shell yet)", hint=f"tapers exec {name} -- COMMAND")
    return backend.run(container, command or ["/bin/sh", "-c", "exec bash -l 2>/dev/null || exec sh -l"],
                       terminal=True)


def console(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the machine", autocompletion=complete_machine)]) -> None:
    """Attach to a machine's console (its boot messages and login prompt); Ctrl-a q detaches."""
    from tapers.engine.access import running_container

    project, backend, observed = observed_project(ctx)
    backend.console(running_container(project, observed, project.loaded.machine(name).name))


def cp(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="a host path, or MACHINE:PATH")],
    destination: Annotated[str, typer.Argument(help="a host path, or MACHINE:PATH")],
) -> None:
    """Copy a file or folder into or out of a machine: `tapers cp ./dist web:/srv/app`,
    `tapers cp web:/var/log/app.log .` (folders whole, modes kept)."""
    from tapers.engine import transfer
    from tapers.engine.access import running_target
    from tapers.ssh.session import connect

    project, _, observed = observed_project(ctx)
    names = {m.name for m in project.machines}

    def remote(spec: str) -> tuple[str, str] | None:
        machine, colon, path = spec.partition(":")
        return (machine, path or ".") if colon and machine in names else None

    into, out_of = remote(destination), remote(source)
    if (into is None) == (out_of is None):
        raise UsageError("give one side as MACHINE:PATH (a machine of this Taperfile) and the other as a host path",
                         hint="tapers cp ./dist web:/srv/app   or   tapers cp web:/var/log/app.log .")
    machine, path = into or out_of  # type: ignore[misc]
    target = running_target(project, observed, machine)
    record = observed.machines[machine].record
    with connect(target, project.paths.private_key, timeout=10) as session:
        if into:
            transfer.copy_in(session, record.home if record else "/home/tapers", Path(source), path)
        else:
            count = transfer.copy_out(session, path, Path(destination))
            output.say(f"copied {count} file(s) from {machine}:{path}")
