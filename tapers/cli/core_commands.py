"""The commands run most often (status, up, halt, destroy, ssh) as plain functions of their
arguments, free of typer: their typer commands and their quick forms (quick.py) both call
these, so the two can't drift apart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tapers.cli import output
from tapers.cli.console import engine_for, observed_project, open_project
from tapers.errors import StateError

if TYPE_CHECKING:
    from tapers.project import Project
    from tapers.ssh.config import SshTarget


def status(file: Path | None, as_json: bool) -> None:
    from tapers.cli.status_view import show_status

    project, backend, observed = observed_project(file)
    show_status(project, backend, observed, as_json)


def up(file: Path | None, names: list[str] | None, provision: str = "auto", remove_orphans: bool = False,
       yes: bool = False, timeout: float = 60.0, use_cache: bool = True) -> None:
    with engine_for(file) as engine:
        changed = engine.up(names, provision, remove_orphans, yes, timeout, use_cache)
    if not changed:
        from tapers.engine import machines_for_up

        machines = machines_for_up(engine.project, names)
        output.say(f"{len(machines)} machine(s) up to date: {', '.join(m.name for m in machines)}")


def halt(file: Path | None, names: list[str] | None, timeout: float = 30.0) -> None:
    with engine_for(file) as engine:
        if not engine.halt(names, timeout):
            output.say("nothing to halt")


def destroy(file: Path | None, names: list[str] | None, force: bool) -> None:
    with engine_for(file) as engine:
        if not engine.destroy(names, force):
            output.say("nothing to destroy")


def ssh(file: Path | None, name: str | None, command: str | None, extra: list[str]) -> int:
    """A shell on a machine, or one command; its exit code (OpenSSH's, 255, when SSH fails)."""
    from tapers.backend import default_backend
    from tapers.engine.access import all_targets, running_target
    from tapers.engine.observe import observe

    project = open_project(file)
    machine = project.loaded.machine(name) if name else project.default_machine()
    observed = observe(project, default_backend())
    target = running_target(project, observed, machine.name)
    # A command reads no terminal (as with paramiko): `-n`; piped input still reaches it.
    quiet = ["-n"] if command is not None and sys.stdin is not None and sys.stdin.isatty() else []
    code = openssh(project, all_targets(project, observed), [*quiet, *extra, machine.name, *([command] if command else [])])
    if code is not None:
        return code
    if extra:  # OpenSSH is not installed: its options mean nothing to paramiko
        raise StateError("the OpenSSH client is not installed (the options after `--` are OpenSSH's)",
                         hint="apt-get install openssh-client, or leave out the options after `--`")
    from tapers.errors import SshError, SshFailed
    from tapers.ssh.session import connect

    try:
        with connect(target, project.paths.private_key, timeout=10) as session:
            if command is None:
                return session.shell(sys.stdin.fileno(), sys.stdout.buffer, sys.stderr.buffer)
            stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
            return session.run(command, sys.stdout.buffer, sys.stderr.buffer, stdin=stdin)
    except SshError as exc:  # 255 as from OpenSSH: not the command's own exit code
        raise SshFailed(exc.message, exc.hint) from None


def openssh(project: Project, targets: list[SshTarget], args: list[str]) -> int | None:
    """Run OpenSSH (`ssh ARGS`) with tapers' config and return its exit code; None when it is
    not installed. The config and known_hosts it reads are private copies, not the ones in
    `.tapers/`: those are in the project folder, which a machine can write (a ProxyCommand
    there would run on this host). ssh closes every file it inherits, so they are files."""
    import signal
    import subprocess
    import tempfile

    from tapers.ssh.config import render_known_hosts, render_ssh_config

    with tempfile.TemporaryDirectory(prefix="tapers-ssh-") as private:  # 0700, ours
        known_hosts, config = Path(private, "known_hosts"), Path(private, "config")
        known_hosts.write_text(render_known_hosts(targets))
        config.write_text(render_ssh_config(targets, project.paths.private_key, known_hosts, project.id))
        # Ctrl-C is ssh's to handle: a handler that does nothing here (ignoring it would be
        # inherited by ssh, which then can't be interrupted at all).
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            return subprocess.run(["ssh", "-F", str(config), *args]).returncode
        except FileNotFoundError:
            return None
        finally:
            signal.signal(signal.SIGINT, previous)
