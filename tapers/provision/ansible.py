"""`ansible:` steps: ansible-playbook on the host, against the machine, over SSH with the
project key and the pinned host keys (the generated inventory, see inventory.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from tapers.errors import ProvisionError
from tapers.provision.api import Guest, StepFailed, digest, file_digest, step_file, tree_digest
from tapers.taperfile.machine import Step

# What a playbook conventionally uses beside itself: a change there re-runs the step.
BESIDE_PLAYBOOK = (
    "roles", "group_vars", "host_vars", "tasks", "handlers", "templates", "files", "vars", "defaults",
    "library", "filter_plugins", "module_utils", "ansible.cfg", "requirements.yml",
)


def playbook_command() -> str | None:
    beside_python = Path(sys.executable).parent / "ansible-playbook"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("ansible-playbook")


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]  # type: ignore[union-attr]


class AnsibleProvisioner:
    kind = "ansible"

    def fingerprint(self, step: Step, root: Path) -> str:
        playbook = step_file(root, step.options["playbook"], "the playbook")
        beside = {}
        for name in BESIDE_PLAYBOOK:
            path = playbook.parent / name
            if path.exists():
                beside[name] = tree_digest(path)
        for sibling in sorted(playbook.parent.glob("*.y*ml")):
            if sibling != playbook:
                beside[sibling.name] = file_digest(sibling)
        options = {key: value for key, value in step.options.items() if key != "playbook"}
        return digest({"kind": self.kind, "playbook": file_digest(playbook), "beside": beside, **options})

    def run(self, step: Step, guest: Guest) -> None:
        command = playbook_command()
        if command is None:
            self.check_host()
        options = step.options
        limit = guest.machine if not options.get("limit") else f"{guest.machine}:&{options['limit']}"
        argv = [command, "-i", str(guest.inventory), "--limit", limit]
        if options.get("extra_vars"):
            argv += ["--extra-vars", json.dumps(options["extra_vars"])]
        if options.get("tags"):
            argv += ["--tags", ",".join(_as_list(options["tags"]))]
        if options.get("skip_tags"):
            argv += ["--skip-tags", ",".join(_as_list(options["skip_tags"]))]
        if options.get("become"):
            argv.append("--become")
        argv.append(options["playbook"])
        env = {
            **os.environ,
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True",
        }
        code = guest.run_on_host(argv, guest.root, env)
        if code != 0:
            raise StepFailed(f"failed: ansible-playbook exited with code {code}")

    def check_host(self) -> None:
        if playbook_command() is None:
            raise ProvisionError(
                "an `ansible` step needs ansible-playbook, which is not installed",
                hint="pip install 'tapers[ansible]' (or install ansible-core some other way)",
            )


PROVISIONER = AnsibleProvisioner()
