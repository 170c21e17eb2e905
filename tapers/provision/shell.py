"""`shell:` steps: a script uploaded over SFTP and run with its shebang (default /bin/sh)."""

from __future__ import annotations

import re
import shlex
import time
import uuid
from pathlib import Path

from tapers.provision.api import (Guest, Inputs, digest, RebootStarted, StepFailed, read_step_file, settings_inputs, short,
                                  shown_path, step_file)
from tapers.ssh.session import ConnectionLost
from tapers.taperfile.machine import Step


REBOOTS = re.compile(r"\b(reboot|shutdown|poweroff|halt|init\s+[06]|kexec)\b")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def script_of(step: Step, root: Path) -> bytes:
    return _named_script(step, root)[1]


def _named_script(step: Step, root: Path) -> tuple[str, bytes]:
    """The script's name as an input (its path, or "the inline script") and its text."""
    if "inline" in step.options:
        return "the inline script", step.options["inline"].encode()
    path = step_file(root, step.options["path"], "the script")
    return shown_path(root, path), read_step_file(path, "the script")


def command_for(step: Step, remote: str, script: bytes) -> str:
    """The command line that runs the uploaded script, as root (sudo) or as the login user."""
    args = [_text(a) for a in step.options.get("args", [])]
    argv = [remote, *args] if script.startswith(b"#!") else ["/bin/sh", remote, *args]
    env = [f"{key}={_text(value)}" for key, value in sorted(step.options.get("env", {}).items())]
    words = (["env", *env] if env else []) + argv
    if step.options.get("privileged", True):
        words = ["sudo", "-n", "-H", *words]
    return shlex.join(words)


class ShellProvisioner:
    kind = "shell"

    def legacy_fingerprint(self, step: Step, root: Path) -> str:
        """The fingerprint tapers recorded before it recorded inputs (kept so that upgrading
        doesn't run every `run: once` script again)."""
        options = {key: value for key, value in step.options.items() if key not in ("inline", "path")}
        return digest({"kind": self.kind, "script": digest(script_of(step, root).decode(errors="replace")), **options})

    def inputs(self, step: Step, root: Path) -> Inputs:
        name, script = _named_script(step, root)
        return {name: short(script.decode(errors="surrogateescape")), **settings_inputs(step.options, ("args", "env", "privileged"))}

    def run(self, step: Step, guest: Guest) -> None:
        script = script_of(step, guest.root)
        remote = f"/tmp/tapers-step-{uuid.uuid4().hex[:12]}"
        guest.put_bytes(script, remote, 0o755)
        code = guest.run(command_for(step, remote, script))
        if code != 0:
            guest.capture(f"rm -f {remote}")
            raise StepFailed(f"failed with exit code {code}")
        # Clean up, and notice a reboot the script started: systemd is then "stopping" (only
        # root reads that reliably while the system bus goes down). `reboot` asks logind,
        # which queues the shutdown a moment later: a script that may reboot gets a second.
        patience = 1.0 if REBOOTS.search(script.decode(errors="replace")) else 0.0
        deadline = time.monotonic() + patience
        probe = f"rm -f {remote}; sudo -n systemctl is-system-running 2>/dev/null || true"
        while True:
            try:
                _, state = guest.capture(probe)
            except ConnectionLost:
                raise RebootStarted() from None  # the step ran; the machine is going down
            if state.strip() == "stopping":
                raise RebootStarted()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def check_host(self) -> None:
        pass


PROVISIONER = ShellProvisioner()
