"""A machine's triggers: what runs before or after a tapers command acts on it. The plan
places them (plan.with_triggers); this module runs one, and keeps the host safe from them.

A trigger's `run:` runs on the host: it is the Taperfile's code, and a Taperfile may come
from anyone (a cloned repository). So it runs only once the person running tapers approved
it (trust.py: `tapers trust` shows each command with its script's text and records a digest
of exactly that; any change asks again), as that person
(never root under sudo), in the project folder, in a session of its own (no terminal of
ours to type into). A script file is read once, checked against the approval and run from
a private copy: a machine writing the project folder can't swap it in between.
`run_remote:` runs in the machine over SSH, as a shell step does.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tapers import digests, project_files
from tapers.errors import TapersError, TriggerError
from tapers.events import Reporter
from tapers.project import Project
from tapers.taperfile.machine import Trigger
from tapers.taperfile.units import printable

MAX_LINE = 2000  # characters of a line of a trigger's output shown


class HostCommand:
    """A host trigger as approved and run: its script's text read once (None: inline)."""

    def __init__(self, project: Project, machine: str, trigger: Trigger) -> None:
        self.machine = machine
        self.trigger = trigger
        self.script = _script(project.root, trigger)
        body = json.dumps([machine, trigger._asdict(), self.script.hex() if self.script is not None else None],
                          sort_keys=True, default=list)
        self.digest = digests.sha256(body.encode()).hexdigest()  # the machine, the trigger as loaded, the text
        self.identity = f"trigger {machine} {trigger.index}"

    def describe(self) -> str:
        """What the person approving it reads: when, what, and a script file's whole text."""
        options, trigger = self.trigger.options, self.trigger
        head = f"`{self.machine}` {trigger.label}, {trigger.when} {'/'.join(trigger.events)}:"
        args = f"\n    arguments: {options['args']!r}" if options.get("args") else ""
        env = f"\n    environment: {options['env']!r}" if options.get("env") else ""
        if self.script is None:
            return f"{head} sh -c {printable(repr(options['inline']))}{args}{env}"
        text = "".join(f"\n    | {printable(line)}" for line in self.script.decode(errors="replace").splitlines())
        return f"{head} the script {options['path']}:{text}{args}{env}"


def host_commands(project: Project, events: set[str] | None = None) -> list[HostCommand]:
    """Every trigger of the Taperfile that runs on the host (for one of `events`)."""
    return [HostCommand(project, machine.name, trigger) for machine in project.machines for trigger in machine.triggers
            if trigger.on_host and (events is None or events & set(trigger.events))]


def run_on_host(project: Project, machine: str, trigger: Trigger, event: str, reporter: Reporter) -> None:
    """Run a `run:` trigger in the project folder as the person running tapers; its output
    is shown line by line. Raises TriggerError when it fails."""
    from tapers.engine import trust

    command = HostCommand(project, machine, trigger)
    trust.require_unchanged(project, command, f"`{machine}` {trigger.label}", "what it runs")
    options = trigger.options
    args = [str(a).lower() if isinstance(a, bool) else str(a) for a in options.get("args", [])]
    env = {**os.environ, **{key: str(value) for key, value in options.get("env", {}).items()},
           "TAPERS_MACHINE": machine, "TAPERS_TRIGGER": f"{trigger.when} {event}", "TAPERS_PROJECT": str(project.root)}
    drop, env = project_files.as_invoker(env)
    # (root's, in /tmp: not in a TMPDIR sudo may have kept, a folder the person could rename in)
    with tempfile.TemporaryDirectory(prefix="tapers-trigger-", dir="/tmp" if os.geteuid() == 0 else None) as private:
        if command.script is None:
            argv = ["/bin/sh", "-c", options["inline"], f"{machine}-trigger", *args]
        elif not command.script.startswith(b"#!"):  # the very text approved; $0 is still its path
            argv = ["/bin/sh", "-c", command.script.decode(errors="replace"), options["path"], *args]
        else:  # the very text approved, from a copy no one else can change, read by its interpreter
            copy = Path(private, "script")
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
            with os.fdopen(fd, "wb") as file:
                file.write(command.script)
                if drop:  # (the copy alone is theirs: the folder stays root's, so nothing in it changes)
                    os.fchown(fd, drop["user"], drop["group"])
                    os.chmod(private, 0o711)
            argv = [*_interpreter(command.script, machine, trigger), str(copy), *args]
        code = _run(argv, project.root, env, drop, machine, trigger, reporter)
    if code != 0:
        raise TriggerError(f"`{machine}` {trigger.label} ({trigger.when} {event}, on the host) failed with exit code "
                           f"{code}", hint="its output is above; `on_error: continue` lets the command go on")


def run_in_machine(machine: str, trigger: Trigger, event: str, guest: Any) -> None:
    """Run a `run_remote:` trigger over the machine's SSH session, as a shell step."""
    from tapers.provision import provisioner
    from tapers.provision.api import RebootStarted, StepFailed
    from tapers.provision.runner import last_lines

    step = trigger.as_step()
    guest.begin(step)
    try:
        provisioner("shell").run(step, guest)
        return
    except RebootStarted:
        why = "rebooted the machine (a trigger may not: use a provisioning step with `reboot: true`)"
    except StepFailed as failure:
        why = failure.why
    except TapersError as exc:  # the connection: SshError
        why = f"could not be run: {exc.message}"
    raise TriggerError(f"`{machine}` {trigger.label} ({trigger.when} {event}, in the machine) {why}{last_lines(guest)}",
                       hint=f"full output in {guest.log_path}")


def _interpreter(script: bytes, machine: str, trigger: Trigger) -> list[str]:
    """What runs a #! script: its interpreter, and one argument. A relative interpreter
    would be the project folder's, which nobody approved."""
    line = script[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    interpreter, _, argument = line.partition(" ")
    if not interpreter.startswith("/"):
        raise TriggerError(f"`{machine}` {trigger.label}: its #! line names `{printable(interpreter)}`, not an "
                           "absolute path; not run", hint="write the interpreter's absolute path (#!/usr/bin/env python3)")
    return [interpreter, *([argument.strip()] if argument.strip() else [])]


def _run(argv: list[str], cwd: Path, env: dict[str, str], drop: dict[str, Any], machine: str, trigger: Trigger,
         reporter: Reporter) -> int:
    """Run it in a session of its own, its output shown line by line (control characters
    escaped, long lines cut); its exit code. Interrupted, it is killed."""
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True, **drop)
    except OSError as exc:
        raise TriggerError(f"`{machine}` {trigger.label} could not be run: {argv[0]}: {exc.strerror}") from None
    assert process.stdout is not None
    try:
        while line := process.stdout.readline(MAX_LINE):
            reporter.line(machine, f"  {printable(line.decode(errors='replace').rstrip(chr(10)))}")
        return process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise


def _script(root: Path, trigger: Trigger) -> bytes | None:
    """The text of a trigger's script file (None: its script is inline), read once."""
    if "path" not in trigger.options:
        return None
    from tapers.provision.api import read_step_file, step_file

    return read_step_file(step_file(root, trigger.options["path"], "the trigger's script"), "the trigger's script")
