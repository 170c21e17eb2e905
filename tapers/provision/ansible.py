"""`ansible:` steps: ansible-playbook on the host, against the machine, over SSH with the
project key and the pinned host keys (an inventory of its own, see inventory.py and
access.write_play_access). It runs only as the person approved it (engine/trust.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tapers import project_files
from tapers.errors import ProvisionError
from tapers.provision.api import Guest, Inputs, StepFailed, settings_inputs, shown_path, step_file
from tapers.taperfile.machine import Step

if TYPE_CHECKING:
    from tapers.host_folders import Sharer

# The step's settings that change what the play does (vault_password_file: its path only,
# never a hash of the password).
SETTINGS = ("extra_vars", "groups", "limit", "tags", "skip_tags", "become", "config_file", "vault_password_file",
            "verbose", "raw_arguments", "requirements")


def playbook_command(tool: str = "ansible-playbook") -> str | None:
    beside_python = Path(sys.executable).parent / tool
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(tool)


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]  # type: ignore[union-attr]


class AnsibleProvisioner:
    kind = "ansible"

    def inputs(self, step: Step, root: Path) -> Inputs:
        from tapers.provision import ansible_inputs

        playbook = step_file(root, step.options["playbook"], "the playbook")
        return {**ansible_inputs.inputs(root, playbook, step.options), **settings_inputs(step.options, SETTINGS)}

    def run(self, step: Step, guest: Guest) -> None:
        from tapers.provision import ansible_inputs, inputs, play_copy

        command = playbook_command()
        if command is None:
            self.check_host()
        options = step.options
        found = inputs(step, guest.root)  # the files `watch:` names too
        guest.check_play(step, found)  # it runs on this host: exactly as the person approved it
        with guest.play_folder() as (private, inventory):  # made by tapers, given to the person below
            work = private / "project"  # the play's copy of the project: see play_copy
            config = ansible_inputs.config_file(guest.root, options)
            texts = {shown_path(guest.root, config)} if config is not None else set()
            person = _person(guest.root)
            play_copy.copy_inputs(guest.root, found, texts, work, person)
            work.mkdir(mode=0o700, exist_ok=True)
            limit = guest.machine if not options.get("limit") else f"{guest.machine}:&{options['limit']}"
            argv = [command, "-i", str(inventory), "--limit", limit]
            if options.get("extra_vars"):
                argv += ["--extra-vars", json.dumps(options["extra_vars"])]
            if options.get("tags"):
                argv += ["--tags", ",".join(_as_list(options["tags"]))]
            if options.get("skip_tags"):
                argv += ["--skip-tags", ",".join(_as_list(options["skip_tags"]))]
            if options.get("become"):
                argv.append("--become")
            if options.get("vault_password_file"):
                vault = _vault_file(guest.root, options["vault_password_file"], private, person)
                argv += ["--vault-password-file", vault]
            if options.get("verbose"):
                argv.append("-" + "v" * int(options["verbose"]))
            argv += [str(argument) for argument in options.get("raw_arguments", [])]
            argv.append(_in_copy(guest.root, options["playbook"]))
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
                "ANSIBLE_INVENTORY_ENABLED": "ini",  # the inventory tapers wrote, read as what it is
            }
            env.update(_paths_env(work, options))
            if os.geteuid() == 0:
                play_copy.give(private, project_files.invoker())  # ansible-playbook runs as them
            hidden = guest.hidden_from_plays  # (found once: on LXD, a request per machine)
            if options.get("requirements"):
                _install_requirements(guest, work, hidden, _in_copy(guest.root, options["requirements"]), env)
            code = guest.run_play(argv, work, hidden, env)
        if code != 0:
            raise StepFailed(f"failed: ansible-playbook exited with code {code}")

    def check_host(self) -> None:
        if playbook_command() is None:
            raise ProvisionError(
                "an `ansible` step needs ansible-playbook, which is not installed",
                hint="pip install 'tapers[ansible]' (or install ansible-core some other way)",
            )


PROVISIONER = AnsibleProvisioner()


def _paths_env(root: Path, options: dict[str, object]) -> dict[str, str]:
    """The step's ansible.cfg; with `requirements:`, what they installed comes first in the
    roles and collections paths (then what the ansible.cfg or Ansible's defaults say)."""
    from tapers.provision import ansible_inputs as found

    env = {}
    config = found.config_file(root, options)
    if options.get("config_file") and config is not None:
        env["ANSIBLE_CONFIG"] = str(config)
    if options.get("requirements"):
        installed = root / found.INSTALLED
        env["ANSIBLE_ROLES_PATH"] = os.pathsep.join(map(str, [installed / "roles", *found.roles_path(config, root)]))
        env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(map(str, [installed / "collections",
                                                                    *found.collections_path(config, root)]))
    return env


def _in_copy(root: Path, written: str) -> str:
    """A step's path as the play is given it: relative, in its copy of the project, when it is
    in the project; the real path otherwise."""
    path = (root / written).resolve()
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _person(root: Path) -> Sharer | None:
    """Under sudo, the user who ran it: the play runs as them and its copy becomes theirs, so
    it holds nothing they couldn't read. (As plain root, the play and its copy are root's.)"""
    from tapers.host_folders import sharer

    return sharer(root) if os.geteuid() == 0 and project_files.invoker()[0] != 0 else None


def _vault_file(root: Path, written: str, private: Path, person: Sharer | None) -> str:
    """The vault password file: one in the project as a private plain copy (see play_copy);
    one elsewhere where it is (an executable one there is yours to run)."""
    from tapers.provision import play_copy

    path = step_file(root, written, "the vault password file")
    if not path.is_relative_to(root.resolve()):
        return str(path)
    copy = private / "vault-password"
    play_copy.copy_private(path, copy, "the vault password file", person)
    return str(copy)


def _install_requirements(guest: Guest, work: Path, hidden: tuple[Path, ...], requirements: str,
                          env: dict[str, str]) -> None:
    """Roles and collections of a requirements.yml into the play's copy of the project
    (`.tapers/ansible/` there; from Galaxy, or local paths, tarballs and git URLs), with
    ansible-galaxy, as ansible-playbook runs."""
    from tapers.provision import ansible_inputs as found

    galaxy = playbook_command("ansible-galaxy")
    if galaxy is None:
        raise ProvisionError("`requirements:` needs ansible-galaxy, which is not installed",
                             hint="pip install 'tapers[ansible]' (or install ansible-core some other way)")
    installed = work / found.INSTALLED
    # --force: what the requirements say now (a new archive of the same version included)
    for what, argv in (("roles", [galaxy, "role", "install", "--force", "-r", requirements, "-p", str(installed / "roles")]),
                       ("collections", [galaxy, "collection", "install", "--force", "-r", requirements,
                                        "-p", str(installed / "collections")])):
        if guest.run_play(argv, work, hidden, env) != 0:
            raise StepFailed(f"failed: ansible-galaxy could not install the {what} of {requirements}")
