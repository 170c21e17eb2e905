"""What a Taperfile runs on this host, and the person's approval of it (`tapers trust`).

Two things in a Taperfile run on the host as the person running tapers: triggers' `run:`
commands (triggers.py) and `ansible:` steps (ansible-playbook, and whatever the playbook,
its roles, vars and ansible.cfg make it do there). A Taperfile may come from anyone (a
cloned repository), and machines can write the project folder (it is `/tapers` in them), so
neither runs until the person approved exactly what runs: a trigger's command with its
script's text, a play by the fingerprint of everything it reads (the step's inputs, see
tapers.provision). Any change asks again, like `direnv allow`: an edit of your own is one
`tapers trust`; a change you didn't make is a machine's, and is not run.

Approvals are kept per person and Taperfile (`uid:path`) in tapers' own folder, 0600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tapers import digests, paths, project_files
from tapers.errors import StateError, TriggerError
from tapers.project import Project
from tapers.taperfile.machine import Step

if TYPE_CHECKING:
    from tapers.backend.api import Backend
    from tapers.engine.plan import Plan
    from tapers.provision.api import Inputs

TRUSTED = "trusted.json"  # in tapers' own folder: "uid:Taperfile path" -> digests of what the person approved
LISTED_FILES = 12  # files of a play named in `tapers trust`; the rest are counted


class HostCode(Protocol):
    machine: str
    identity: str  # which trigger or play: a new approval of it replaces the last one
    digest: str  # of exactly what runs, as shown

    def describe(self) -> str:
        """What the person approving it reads."""


class HostPlay:
    """An `ansible:` step as approved and run: its inputs read once, their fingerprint."""

    def __init__(self, machine: str, step: Step, inputs: Inputs, cause: str = "") -> None:
        from tapers.provision import fingerprint_of
        from tapers.provision.api import digest

        self.machine = machine
        self.step = step
        self.inputs = inputs
        self.cause = cause  # why it would run now, as `plan` says: "site.yml changed"
        self.identity = f"play {machine} {step.key}"
        body = json.dumps(["ansible", machine, step.key, fingerprint_of(inputs), digest(step.options)])
        self.digest = digests.sha256(body.encode()).hexdigest()

    def describe(self) -> str:
        from tapers.provision.api import UNRESOLVED
        from tapers.taperfile.units import printable

        step = self.step
        files = sorted(name for name, value in self.inputs.items() if value and not name.startswith(UNRESOLVED)
                       and not _is_setting(name))
        unknown = sorted(name[len(UNRESOLVED):].strip() for name in self.inputs if name.startswith(UNRESOLVED))
        listed = ", ".join(printable(name) for name in files[:LISTED_FILES])
        more = f" and {len(files) - LISTED_FILES} more" if len(files) > LISTED_FILES else ""
        text = (f"`{self.machine}` {step.label}: ansible-playbook {printable(str(step.options['playbook']))}, which "
                f"can run anything on this host, with what it reads: {listed}{more}")
        settings = {key: value for key, value in step.options.items()
                    if key != "playbook" and value not in (None, "", [], {}, False)}
        if settings:
            text += "; with " + ", ".join(f"{key}: {printable(repr(value))}" for key, value in sorted(settings.items()))
        if unknown:
            text += "; and what can't be told without running it: " + "; ".join(printable(u) for u in unknown)
        if self.cause:
            text += f"\n    it would run now because: {printable(self.cause)}"
        return text


class SharedFolder:
    """A synced folder outside the project that machines may write: a machine (or `curl | sh`
    in it) can change what is there, and the person uses it on the host (a `~/bin` on
    their PATH, another repository's git hooks)."""

    def __init__(self, machine: str, folder: Path, guest: str) -> None:
        self.machine = machine
        self.folder = folder
        self.identity = f"folder {machine} {guest}"
        body = json.dumps(["folder", machine, str(folder), guest])
        self.digest = digests.sha256(body.encode()).hexdigest()
        self.guest = guest

    def describe(self) -> str:
        from tapers.taperfile.units import printable

        return (f"`{self.machine}` may write {printable(str(self.folder))} on this host (at {printable(self.guest)}): "
                "what a machine puts there is used as your files")


def shared_folders(project: Project, names: set[str] | None = None) -> list[SharedFolder]:
    """The writable synced folders outside the project folder (of the machines `names`)."""
    from tapers.host_folders import real_path

    root = project.root.resolve()
    found = []
    for machine in project.machines:
        if names is not None and machine.name not in names:
            continue
        for synced in machine.synced:
            folder = real_path(project.root, synced.host, machine.name)
            if not synced.readonly and not folder.is_relative_to(root):
                found.append(SharedFolder(machine.name, folder, synced.guest))
    return found


def _is_setting(name: str) -> bool:
    from tapers.provision.ansible import SETTINGS

    return name in SETTINGS


def require_out_of_reach(project: Project, play: HostPlay) -> None:
    """A play's files outside the project are read where they are: none may be in a synced
    folder a machine of the project can write (it would be read as it is then, not as
    approved), nor what ansible-playbook loads and runs as the ansible.cfg and the step name
    it. (ansible-playbook can't reach those folders at all: play_ns hides them; this says
    so before anything runs.)"""
    from tapers.errors import ProvisionError

    from tapers.provision import ansible_inputs

    writable = hidden_from_plays(project)
    if not writable:
        return
    options = play.step.options
    used = [Path(name) for name in play.inputs if name.startswith("/")]
    used += ansible_inputs.host_code_paths(ansible_inputs.config_file(project.root, options))
    written = options.get("vault_password_file")
    vault = ansible_inputs.real_path(str(written), project.root) if written else None
    if vault is not None:  # (None: no file can be there; the play says so when it runs)
        used.append(vault)
    for path in used:
        folder = next((f for f in writable if path.is_relative_to(f)), None)
        if folder is not None:
            raise ProvisionError(
                f"`{play.machine}` {play.step.label}: the play reads or runs {path}; {folder} is a synced folder "
                "machines can write, and the play runs on this host, so it may not",
                hint="keep the play's files in the project folder (they are copied for the play as approved), "
                "or make that synced folder `readonly: true`")


def hidden_from_plays(project: Project, backend: Backend | None = None) -> tuple[Path, ...]:
    """The host folders a play's programs must not reach: the synced folders outside the
    project that machines can write (what is there may have changed since any approval),
    by the Taperfile and, with `backend`, by what the project's machines have mounted (a
    machine can change the Taperfile, or a link in the project, not its mount records)."""
    folders = {shared.folder for shared in shared_folders(project)}
    if backend is not None:
        root = project.root.resolve()
        for info in backend.list(prefix=project.prefix):
            folders.update(f for f in backend.writable_sources(info.name) if not f.is_relative_to(root))
    return tuple(sorted(folders))


def plays(project: Project, wanted: set[tuple[str, str]] | None = None,
          causes: dict[tuple[str, str], str] | None = None) -> list[HostPlay]:
    """The ansible steps of the Taperfile (or those `wanted`: (machine, step key)), their
    inputs read now; `causes`: why each would run (from a plan)."""
    from tapers.provision import inputs

    causes = causes or {}
    return [HostPlay(machine.name, step, inputs(step, project.root), causes.get((machine.name, step.key), ""))
            for machine in project.machines for step in machine.provision
            if step.kind == "ansible" and (wanted is None or (machine.name, step.key) in wanted)]


def causes_of(plan: Plan, project: Project) -> dict[tuple[str, str], str]:
    """Why each planned step runs, by (machine, step key)."""
    from tapers.engine.plan import Kind

    return {(a.subject, project.loaded.machine(a.subject).provision[a.step - 1].key): a.cause
            for a in plan.actions if a.kind is Kind.PROVISION}


def approved(project: Project) -> set[str]:
    return set(_approvals().get(_key(project), {}).values())


def approve(project: Project, items: list[Any], keep: bool = False) -> None:
    """Record that the person approved these (read once, as they were shown): each replaces
    the last approval of the same trigger or play (an older version a machine puts back is
    asked about again); the rest is forgotten, unless `keep`."""
    approvals = _approvals()
    entries = dict(approvals.get(_key(project), {})) if keep else {}
    entries.update({item.identity: item.digest for item in items})
    approvals[_key(project)] = entries
    store = paths.tapers_home() / TRUSTED
    store.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    project_files.write(store, json.dumps(approvals, indent=2, sort_keys=True) + "\n", 0o600)


def require(project: Project, items: list[Any], prompts: Any = None) -> None:
    """Before anything changes: every one of `items` was approved by the person. With
    `prompts` (the engine's) on a terminal, what isn't is shown and they are asked."""
    known = approved(project)
    pending = [item for item in items if item.digest not in known]
    if not pending:
        return
    what = ("the Taperfile runs code on this host, as you, or lets machines write folders outside the project, "
            "that you haven't approved (or that changed since):") + "".join(
        f"\n  {item.describe()}" for item in pending)
    if prompts is not None and prompts.can_ask():
        from tapers.errors import TapersError

        prompts.warn(what)
        try:
            prompts.confirm("Approve it and go on?", "nothing approved", "y")
        except TapersError:
            raise TriggerError("nothing approved, nothing done",
                               hint="`tapers trust` shows it again and approves it") from None
        approve(project, pending, keep=True)
        return
    raise TriggerError(what, hint="read it (a Taperfile may come from anyone, and a machine can write the project "
                       "folder; `tapers plan` names what changed), then `tapers trust` approves it (run it as you run "
                       "tapers: with sudo if you use sudo)")


def require_unchanged(project: Project, item: HostCode, label: str, changed: str) -> None:
    """As it starts, what runs on the host is the very thing approved: a machine may have
    written the project folder (its script, what a play reads) since the plan was approved."""
    if item.digest not in approved(project):
        raise TriggerError(f"{label}: {changed} changed since you approved it (a machine wrote the project folder?); "
                           "not run", hint="`tapers plan` names what changed; read it, then `tapers trust`")


def require_approved(project: Project, shared: SharedFolder) -> None:
    """As it is mounted, a writable folder outside the project is one the person approved."""
    if shared.digest not in approved(project):
        raise TriggerError(f"{shared.describe()}; you haven't approved it (or a link in the project now leads "
                           "there); not mounted",
                           hint="read the Taperfile's synced_folders; `tapers trust` approves them")


def _key(project: Project) -> str:
    """Whose approval, of which Taperfile: the person running tapers (under sudo, who ran it)."""
    return f"{project_files.invoker()[0]}:{project.loaded.path}"


def _approvals() -> dict[str, dict[str, str]]:
    """"uid:Taperfile path" -> {which trigger or play: the digest of what that person approved}."""
    store: Path = paths.tapers_home() / TRUSTED
    try:
        data = json.loads(project_files.read_text(store) or "{}")
    except (ValueError, StateError):
        return {}
    if not isinstance(data, dict):
        return {}
    result: dict[str, dict[str, str]] = {}
    for key, entries in data.items():
        if isinstance(entries, list):  # as tapers kept them before: digests alone
            entries = {f"approved {digest}": digest for digest in entries}
        if isinstance(key, str) and isinstance(entries, dict):
            result[key] = {name: digest for name, digest in entries.items() if isinstance(digest, str)}
    return result
