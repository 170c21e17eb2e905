"""The engine every front end calls: `Engine(project, reporter, prompts).up(...)`.

Each operation takes the project lock (one writer per project), observes, plans (the
pure planner in plan.py, fed with what is read from disk here: boxes, step fingerprints),
asks what must be asked through `prompts`, then applies the plan (apply.py). Front ends
parse arguments and render; they never sequence backend calls themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from tapers.backend.api import Backend, ContainerInfo
from tapers.errors import StateError, TaperfileError
from tapers.profile import phase
from tapers.engine.observe import Observed, observe
from tapers.engine.plan import STARTS, Kind, Plan, plan_up
from tapers.project import Project
from tapers.taperfile import Machine

if TYPE_CHECKING:
    from tapers.events import Reporter
    from tapers.engine.caching import Caching


def machines_for_up(project: Project, names: list[str] | None) -> list[Machine]:
    """The machines named (or every autostart one), plus what they depend on."""
    chosen = {m.name for m in project.select(names, include_manual=bool(names))}
    pending = list(chosen)
    while pending:
        for dependency in project.loaded.machine(pending.pop()).depends_on:
            if dependency not in chosen:
                chosen.add(dependency)
                pending.append(dependency)
    return [m for m in project.machines if m.name in chosen]


def step_inputs(project: Project, machines: list[Machine]) -> dict[str, dict[str, dict[str, str]]]:
    """machine -> step key -> what the step reads and is given now (read from the project's files)."""
    result: dict[str, dict[str, dict[str, str]]] = {}
    if not any(machine.provision for machine in machines):
        return result  # without loading the provisioners (and OpenSSL's hashes): `status` is often here
    from tapers.provision import inputs

    for machine in machines:
        for step in machine.provision:
            try:
                result.setdefault(machine.name, {})[step.key] = inputs(step, project.root)
            except OSError as exc:
                raise TaperfileError(
                    f"machine `{machine.name}`, {step.label}: cannot read {exc.filename}: {exc.strerror}",
                    hint="paths in steps are relative to the Taperfile's folder",
                ) from None
    return result


def fingerprints_of(found: dict[str, dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """machine -> step key -> the hash of the step's inputs (what its record keeps)."""
    from tapers.provision import fingerprint_of

    return {machine: {key: fingerprint_of(step) for key, step in steps.items()} for machine, steps in found.items()}


def legacy_fingerprints(project: Project, machines: list[Machine], observed: Observed) -> dict[str, dict[str, str | None]]:
    """For steps a machine's record has without inputs (run by an older tapers): the
    fingerprint that tapers computed, so an upgrade doesn't run them again."""
    result: dict[str, dict[str, str | None]] = {}
    for machine in machines:
        info = observed.machines.get(machine.name)
        record = info.record if info else None
        old = [s for s in machine.provision if record and s.key in record.provisioned and s.key not in record.inputs]
        if old:
            from tapers.provision import legacy_fingerprint

            result[machine.name] = {step.key: legacy_fingerprint(step, project.root) for step in old}
    return result


def step_fingerprints(project: Project, machines: list[Machine]) -> dict[str, dict[str, str]]:
    return fingerprints_of(step_inputs(project, machines))


def up_plan(
    project: Project,
    backend: Backend,
    observed: Observed,
    names: list[str] | None,
    key: str,
    provision: str,
    remove_orphans: bool = False,
    event: str | None = "up",
    use_cache: bool = True,
) -> tuple[Plan, Caching | None]:
    """What `up` will do, with the machines' triggers for `event` (None: none; `reload`
    places its own), and what new machines get from the provisioning cache (None: nothing,
    `use_cache` false or a backend without one)."""
    from tapers.boxes.cache import find_box
    from tapers.engine.plan import with_triggers

    machines = machines_for_up(project, names)
    cached = {m.box for m in machines if find_box(m.box)}
    from tapers.engine import names as hosts

    found = step_inputs(project, machines)
    fingerprints = fingerprints_of(found)
    stale = hosts.stale(project, observed)
    forwarding = backend.network.forwarded() if any(m.ports for m in machines) else None
    legacy = legacy_fingerprints(project, machines, observed)
    plan = plan_up(machines, observed, key, cached, fingerprints, provision, remove_orphans and not names,
                   stale, forwarding, found, legacy)
    # The cache is asked only about the machines this plan makes; where it holds some of
    # their steps, the plan is made again without them (planning is pure and cheap).
    made = [m for m in machines if any(a.subject == m.name and a.kind in (Kind.CREATE, Kind.RECREATE)
                                       for a in plan.actions)]
    caching = None
    if use_cache and provision != "skip" and any(m.provision for m in made) and backend.caches_layers():
        from tapers.engine import caching as cache
        from tapers.user_config import cache_max_size

        bound = cache_max_size()
        if bound:
            caching = cache.Caching(cache.starts(made, fingerprints, found, backend.layer_scope()), fingerprints,
                                    found, bound)
            from_cache = {name: (start.from_cache, start.layer.seconds) for name, start in caching.starts.items()
                          if start.layer}
            if from_cache:
                plan = plan_up(machines, observed, key, cached, fingerprints, provision, remove_orphans and not names,
                               stale, forwarding, found, legacy, from_cache)
    return (with_triggers(plan, event, machines, observed) if event else plan), caching


def status_plan(project: Project, backend: Backend, observed: Observed) -> Plan:
    """What `up` would do to every machine of the Taperfile (autostart or not), creating
    nothing: `status` and the web panel show it as what is out of date. The host's port
    rules aren't read (a forward lost behind tapers' back shows in `tapers plan`)."""
    from tapers.boxes.cache import find_box
    from tapers.engine.access import known_project_key

    machines = [m for m in project.machines if m.name not in observed.foreign]
    cached = {m.box for m in machines if find_box(m.box)}
    found = step_inputs(project, machines)
    return plan_up(machines, observed, known_project_key(project), cached, fingerprints_of(found), inputs=found,
                   legacy=legacy_fingerprints(project, machines, observed))


def check_steps(plan: Plan, project: Project, prompts: Prompts | None = None,
                mounting: set[str] | None = None) -> None:
    """Before anything changes: the host has what the planned steps need (e.g. ansible), and
    the person approved the plays that will run on it and the folders outside the project
    that machines it makes, changes or starts will write (those of `mounting`, when given;
    `tapers trust`)."""
    from tapers.provision import check_host_tools

    steps = [(a.subject, project.loaded.machine(a.subject).provision[a.step - 1]) for a in plan.actions
             if a.kind is Kind.PROVISION]
    check_host_tools({step.kind for _, step in steps})
    plays = {(machine, step.key) for machine, step in steps if step.kind == "ansible"}
    if mounting is None:
        mounting = {a.subject for a in plan.actions if a.kind in (*STARTS, Kind.RECONFIGURE)}
    if plays or mounting:
        from tapers.engine import trust

        approving: list[Any] = trust.shared_folders(project, mounting)
        if plays:
            played = trust.plays(project, plays, trust.causes_of(plan, project))
            for play in played:
                trust.require_out_of_reach(project, play)
            approving += played
        trust.require(project, approving, prompts)


def orphan_warnings(observed: Observed) -> list[str]:
    """What to say of machines no longer in the Taperfile."""
    warnings = []
    for orphan in observed.orphans:
        name = orphan.machine
        warnings.append(
            f"machine `{name}` ({orphan.name}) is no longer in the Taperfile; "
            f"`tapers up --remove-orphans` or `tapers destroy {name}` removes it"
        )
    return warnings


def gone_projects(backend: Backend) -> list[ContainerInfo]:
    """Tapers machines on this host whose project folder no longer exists."""
    from tapers.project import CONTAINER_PREFIX

    return [info for info in backend.list(prefix=CONTAINER_PREFIX)
            if info.record is not None and not Path(info.record.project_dir).is_dir()]


def prune(backend: Backend, doomed: list[ContainerInfo], reporter: Reporter) -> None:
    """Destroy machines whose project folder is gone (`global-status --prune`), as `destroy`
    does: port rules first, then the container, then the host-only networks no machine is on."""
    from tapers.engine.apply import destroy_container

    for info in doomed:
        folder = info.record.project_dir if info.record else "?"
        reporter.line(info.machine, f"destroying {info.name} (its folder {folder} is gone)")
        destroy_container(backend, info.name)
    if doomed:
        backend.network.release_unused_private()


class Prompts(Protocol):
    """How the engine talks to the person at a front end, outside the progress lines."""

    def warn(self, text: str) -> None: ...

    def confirm(self, question: str, refusal: str, flag: str) -> None:
        """Return when the person says yes; raise (saying `refusal` and which `flag` says
        yes) when they say no or can't be asked."""

    def can_ask(self) -> bool:
        """Whether there is someone to ask (a terminal)."""


class Engine:
    """`host_check` (default: tapers doctor's required checks) runs before `up` and `reload`;
    `ssh_check` replaces the SSH login check and `guest_factory` the SSH connection steps
    run over (tests with a fake backend)."""

    def __init__(
        self,
        project: Project,
        reporter: Reporter,
        prompts: Prompts,
        backend: Backend | None = None,
        host_check: Callable[[], None] | None = None,
        ssh_check: Callable[..., None] | None = None,
        guest_factory: Callable[..., Any] | None = None,
    ) -> None:
        from tapers.backend import default_backend

        self.project = project
        self.reporter = reporter
        self.prompts = prompts
        self.backend = backend or default_backend()
        self._host_check = host_check
        self._ssh_check = ssh_check
        self._guest_factory = guest_factory

    # -- the operations -------------------------------------------------------------------

    def up(self, names: list[str] | None, provision: str = "auto", remove_orphans: bool = False, yes: bool = False,
           timeout: float = 60.0, use_cache: bool = True) -> bool:
        """Make the machines match the Taperfile; False when there was nothing to do.
        `use_cache`: new machines may start from the provisioning cache."""
        self._require_host()
        self._require_trust("up")
        with self._locked("up"):
            return self._reconcile(names, provision, remove_orphans, yes, timeout, use_cache=use_cache)

    def reload(self, names: list[str] | None, yes: bool = False, timeout: float = 60.0) -> None:
        """Halt, then up: every change in the Taperfile applied."""
        from tapers.engine.access import project_key
        from tapers.engine.plan import plan_halt, with_triggers

        self._require_host()
        self._require_trust("reload")
        with self._locked("reload"):
            machines, observed = self.project.select(names), self._observe()
            # What its up will need approved, asked before anything halts (the panel can't
            # ask: a refusal there must leave the machines running).
            key = project_key(self.project)
            up, _ = up_plan(self.project, self.backend, observed, names, key, "auto", event=None, use_cache=False)
            check_steps(up, self.project, self.prompts, mounting={m.name for m in machines})
            halt = plan_halt(machines, observed)
            self._apply(with_triggers(halt, "reload", machines, observed, ("before",)))
            halted = set(halt.subjects())  # the others' before-reload triggers go ahead of their up
            first = [m for m in machines if m.name not in halted]
            self._reconcile(names, "auto", False, yes, timeout, reload_first=first)

    def provision(self, names: list[str] | None, wanted: list[str] | None) -> bool:
        from tapers.engine.access import project_key
        from tapers.engine.plan import plan_provision, with_triggers

        key = project_key(self.project)
        self._require_trust("provision")
        with self._locked("provision"):
            machines, observed = self.project.select(names), self._observe()
            plan = with_triggers(plan_provision(machines, observed, wanted), "provision", machines, observed)
            check_steps(plan, self.project, self.prompts)
            return self._apply(plan, project_key=key)

    def halt(self, names: list[str] | None, timeout: float = 30.0) -> bool:
        from tapers.engine.plan import plan_halt, with_triggers

        self._require_trust("halt")
        with self._locked("halt"):
            machines, observed = self.project.select(names), self._observe()
            return self._apply(with_triggers(plan_halt(machines, observed), "halt", machines, observed),
                               halt_timeout=timeout)

    def suspend(self, names: list[str] | None) -> bool:
        from tapers.engine.plan import plan_suspend

        with self._locked("suspend"):
            return self._apply(plan_suspend(self.project.select(names), self._observe()))

    def resume(self, names: list[str] | None) -> bool:
        from tapers.engine.plan import plan_resume

        with self._locked("resume"):
            return self._apply(plan_resume(self.project.select(names), self._observe()))

    def destroy(self, names: list[str] | None, force: bool = False) -> bool:
        from tapers.engine.plan import plan_destroy, with_triggers

        self._require_trust("destroy")
        with self._locked("destroy"):
            machines, observed = self.project.select(names), self._observe()
            plan = with_triggers(plan_destroy(machines, observed, orphans=not names), "destroy", machines, observed)
            self._warn_notes(plan)
            if plan and not force:
                listed = ", ".join(f"`{s}`" for s in plan.subjects())
                self.prompts.confirm(f"Destroy {listed} and everything in them?", f"refusing to destroy {listed}",
                                     "-f/--force")
            return self._apply(plan)

    def snapshot_save(self, machine: str, snapshot: str) -> None:
        with self._locked("snapshot save"):
            container = self._created(machine)
            self.reporter.line(machine, f"saving snapshot `{snapshot}`")
            self.backend.snapshot_save(container, snapshot)

    def snapshot_restore(self, machine: str, snapshot: str) -> None:
        """The machine's disk as it was; a running machine is halted and started again the
        way `halt` and `up` do it (port rules, networks), not provisioned."""
        from tapers.engine.access import project_key
        from tapers.engine.plan import plan_halt, plan_start

        key = project_key(self.project)
        with self._locked("snapshot restore"):
            container = self._created(machine)
            self._require_snapshot(machine, container, snapshot)
            machines = [self.project.loaded.machine(machine)]
            halted = self._apply(plan_halt(machines, self._observe()))
            from tapers.backend.api import State
            from tapers.engine.apply import remove_port_rules

            info = self.backend.inspect(container)
            if info is not None and info.state is State.STOPPED:  # (stopped from inside: its rules are still there)
                remove_port_rules(self.backend, container, info)
            self.reporter.line(machine, f"restoring snapshot `{snapshot}`")
            self.backend.snapshot_restore(container, snapshot)
            if halted:
                self._apply(plan_start(machines, self._observe(), f"restored snapshot `{snapshot}`"), project_key=key)

    def snapshot_delete(self, machine: str, snapshot: str) -> None:
        with self._locked("snapshot delete"):
            container = self._created(machine)
            self._require_snapshot(machine, container, snapshot)
            self.backend.snapshot_delete(container, snapshot)

    def set_limits(self, machine: str, given: dict[str, Any], save: bool = False) -> bool:
        """Change the limits of a created machine (`given`: key -> value as loaded, None: no
        limit), live when it runs, and record them as applied; `save` writes them into the
        Taperfile first. True when the machine runs (changed now, not at its next start)."""
        from tapers.backend.api import State
        from tapers.engine import limits

        with self._locked("limits"):
            container = self._created(machine)
            if save:
                from tapers.taperfile.edit import as_written, set_machine_keys

                written = {key: as_written(key, value) for key, value in given.items()}
                set_machine_keys(self.project.loaded.path, machine, written, expect=given)
            info = self.backend.inspect(container)
            now = limits.applied(info.record if info else None)
            limits.set_limits(self.backend, container, now._replace(**given))
            return info is not None and info.state is State.RUNNING

    def package(self, machine: str, output: Path, name: str | None) -> dict[str, Any]:
        """Write the machine's files as a box archive at `output` (the machine held still
        while they are read); the box's metadata."""
        from tapers.boxes.package import package

        with self._locked("package"):
            container = self._created(machine)
            info = self.backend.inspect(container)
            return package(self.backend, container, info.record if info else None, output, name, self.reporter)

    # -- the steps every operation shares -----------------------------------------------------

    @contextmanager
    def _locked(self, command: str) -> Iterator[None]:
        from tapers.engine.lock import project_lock

        with project_lock(self.project, self.reporter, command):
            yield

    def _require_trust(self, event: str) -> None:
        """The triggers `event` runs on the host were approved by the person (`tapers trust`)."""
        if any(trigger.on_host for machine in self.project.machines for trigger in machine.triggers):
            from tapers.engine import triggers, trust

            trust.require(self.project, triggers.host_commands(self.project, {event}), self.prompts)

    def _require_host(self) -> None:
        if self._host_check is None:
            from tapers.doctor import require_host

            self._host_check = require_host
        with phase("check the host"):
            self._host_check()

    def _observe(self) -> Observed:
        return observe(self.project, self.backend)

    def _apply(self, plan: Plan, **options: object) -> bool:
        from tapers.engine.apply import Context, apply

        if self._ssh_check is not None:
            options["ssh_check"] = self._ssh_check
        if self._guest_factory is not None:
            options["guest_factory"] = self._guest_factory
        if plan:
            apply(plan, Context(self.project, self.backend, self.reporter, **options))  # type: ignore[arg-type]
        return bool(plan)

    def _reconcile(self, names: list[str] | None, provision: str, remove_orphans: bool, yes: bool,
                   timeout: float, reload_first: list[Machine] | None = None, use_cache: bool = True) -> bool:
        """Plan and apply `up` (the lock is held); False when there was nothing to do. As the
        second half of `reload` (`reload_first`: the machines its halt left alone), with the
        reload triggers instead of up's."""
        from tapers.engine.plan import with_triggers

        from tapers.engine.access import project_key, write_ssh_files

        key = project_key(self.project)
        observed = self._observe()
        with phase("plan"):
            if reload_first is None:
                plan, caching = up_plan(self.project, self.backend, observed, names, key, provision, remove_orphans,
                                        use_cache=use_cache)
            else:
                plan, caching = up_plan(self.project, self.backend, observed, names, key, provision, remove_orphans,
                                        event=None, use_cache=use_cache)
                plan = with_triggers(plan, "reload", reload_first, observed, ("before",))
                plan = with_triggers(plan, "reload", machines_for_up(self.project, names), observed, ("after",))
        self._warn_notes(plan)
        if not remove_orphans:
            self._warn_orphans(observed)
        check_steps(plan, self.project, self.prompts)
        losing = plan.losing_data()
        if losing and not yes:
            listed = ", ".join(f"`{a.subject}`" for a in losing)
            for action in losing:
                self.reporter.line(action.subject, action.what)
            self.prompts.confirm(
                f"Re-create {listed}? Everything stored in them is lost.",
                f"refusing to re-create {listed} (their box changed; data in them would be lost)",
                "--yes",
            )
        if plan:
            self._apply(plan, project_key=key, ssh_timeout=timeout, caching=caching)
            observed = self._observe()
        with phase("write the ssh files and inventory"):
            write_ssh_files(self.project, observed)
        return bool(plan)

    def _warn_notes(self, plan: Plan) -> None:
        for note in plan.notes:
            self.prompts.warn(note)

    def _warn_orphans(self, observed: Observed) -> None:
        for text in orphan_warnings(observed):
            self.prompts.warn(text)

    def _created(self, machine: str) -> str:
        self.project.loaded.machine(machine)  # an unknown name: the list of known ones
        if machine not in self._observe().machines:
            raise StateError(f"machine `{machine}` is not created", hint=f"tapers up {machine}")
        return self.project.container(machine)

    def _require_snapshot(self, machine: str, container: str, snapshot: str) -> None:
        if snapshot not in {s.name for s in self.backend.snapshot_list(container)}:
            raise StateError(f"machine `{machine}` has no snapshot `{snapshot}`", hint=f"tapers snapshot list {machine}")
