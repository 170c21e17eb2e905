"""How to reach a project's machines: SSH targets from container records, and the
generated `.tapers/ssh_config` and `.tapers/known_hosts` (regenerable at any time)."""

from __future__ import annotations

from pathlib import Path

from tapers import project_files
from tapers.backend.api import State
from tapers.record import Record
from tapers.errors import StateError
from tapers.engine.observe import Observed
from tapers.project import Project
from tapers.ssh.config import SshTarget, render_known_hosts, render_ssh_config


def project_key(project: Project) -> str:
    """The project's login key (its public line), generated on first use."""
    from tapers.ssh.keys import ensure_project_key

    return ensure_project_key(project.paths.private_key, project.paths.public_key, f"tapers-{project.id}")


def known_project_key(project: Project) -> str:
    """The project's public key if it has one yet ("" otherwise): for planning, which
    creates nothing."""
    return (project_files.read_text(project.paths.public_key) or "").strip()


def target_of(project: Project, observed: Observed, machine: str) -> SshTarget | None:
    info = observed.machines.get(machine)
    if info is None or info.record is None or not info.record.ready:
        return None
    return target_for(machine, info.name, info.record)


def target_for(machine: str, container: str, record: Record) -> SshTarget:
    """How to reach a machine over SSH, from its record: address, login user, pinned host key."""
    return SshTarget(machine, container, record.address, record.user, record.host_key)


def running_target(project: Project, observed: Observed, machine: str) -> SshTarget:
    """The target of a running machine, or a StateError saying why there is none."""
    running_container(project, observed, machine)
    target = target_of(project, observed, machine)
    if target is None:
        raise StateError(f"machine `{machine}` is not created", hint=f"run `tapers up {machine}`")
    return target


def running_container(project: Project, observed: Observed, machine: str) -> str:
    """The container of a running machine of this project, or a StateError saying why there is none."""
    info = observed.machines.get(machine)
    if info is None:
        raise StateError(f"machine `{machine}` is not created", hint=f"run `tapers up {machine}`")
    if info.state is not State.RUNNING:
        raise StateError(f"machine `{machine}` is not running (it is {info.state})", hint=f"run `tapers up {machine}`")
    return info.name


def all_targets(project: Project, observed: Observed) -> list[SshTarget]:
    return [t for m in project.machines if (t := target_of(project, observed, m.name))]


def ssh_config_text(project: Project, observed: Observed) -> str:
    paths = project.paths
    return render_ssh_config(all_targets(project, observed), paths.private_key, paths.known_hosts, project.id)


def write_ssh_files(project: Project, observed: Observed) -> Path:
    """Write .tapers/ssh_config, known_hosts and the Ansible inventory; return the config's path."""
    from tapers.provision.inventory import groups_of, render_inventory

    paths = project.paths
    project_files.check_dir(paths.state, create=True)
    targets = all_targets(project, observed)
    _write(paths.known_hosts, render_known_hosts(targets))
    _write(paths.ssh_config, ssh_config_text(project, observed))
    inventory = render_inventory(targets, groups_of(project.machines), paths.private_key, paths.known_hosts, project.id)
    _write(paths.inventory, inventory)
    _write_host_vars(project, paths.inventory.parent / "host_vars")
    return paths.ssh_config


def write_play_access(project: Project, observed: Observed, folder: Path) -> Path:
    """The inventory an ansible step runs with, and the known_hosts and key it names, written
    into `folder` (tapers' own, private); the inventory's path. Not the
    ones in `.tapers/`: a machine can write the project folder, and ansible-playbook reads a
    `group_vars/` or `host_vars/` beside its inventory (`ansible_connection: local` there
    would run the play on this host)."""
    from tapers.provision.inventory import groups_of, render_inventory
    from tapers.provision.play_copy import write_new

    key = project_files.read_text(project.paths.private_key)
    if key is None:
        raise StateError(f"the project key {project.paths.private_key} is missing", hint="`tapers up` makes it again")
    targets = all_targets(project, observed)
    inventory, known_hosts, identity = folder / "inventory", folder / "known_hosts", folder / "id_ed25519"
    for path, text in ((identity, key), (known_hosts, render_known_hosts(targets)),
                       (inventory, render_inventory(targets, groups_of(project.machines), identity, known_hosts, project.id))):
        write_new(path, text.encode(), 0o600)
    return inventory


def _write_host_vars(project: Project, folder: Path) -> None:
    """Each machine's ansible extra_vars (of all its steps, a later step's winning) beside the
    inventory, so `ansible-playbook -i .tapers/inventory PLAYBOOK` works alone."""
    import json

    machines = {m.name: m for m in project.machines if any(step.kind == "ansible" for step in m.provision)}
    if not machines:
        return
    project_files.check_dir(folder, create=True)
    for name, machine in machines.items():
        variables: dict[str, object] = {}
        for step in machine.provision:
            variables.update(step.options.get("extra_vars", {}) if step.kind == "ansible" else {})
        _write(folder / f"{name}.yml", "# Written by tapers: the extra_vars of this machine's ansible steps.\n"
               + json.dumps(variables, indent=2, sort_keys=True) + "\n")


def _write(path: Path, text: str) -> None:
    if project_files.read_text(path) == text:
        return
    project_files.write(path, text, 0o644)
