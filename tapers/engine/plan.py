"""Decide what to do: a pure function from the Taperfile and observed reality to a Plan.

No I/O here. Every action carries the cause a person can read; `str(plan)` is what
`tapers plan` prints and what the planner tests compare with.
"""

import enum
from typing import Callable, NamedTuple

from tapers.backend.api import ContainerInfo, State
from tapers.errors import StateError, UsageError
from tapers.record import DESTROYING, Record
from tapers.engine.observe import Observed
from tapers.engine.settings import box_matches, privileged_was, settings_changes
from tapers.provision.api import UNRESOLVED
from tapers.ssh.keys import same_key
from tapers.taperfile import Machine
from tapers.taperfile.machine import Step, Trigger

NAMES = "names"  # the subject of project-wide SYNC_NAMES actions
NETWORK = "network"  # the subject of PREPARE_NETWORK and RELEASE_NETWORK
CHANGE_CLASSES = ("live", "restart", "recreate", "reprovision")


class Kind(str, enum.Enum):
    BUILD_BOX = "build box"
    PREPARE_NETWORK = "prepare"
    CREATE = "create"
    RECREATE = "re-create"
    START = "start"
    UNFREEZE = "unfreeze"
    AUTHORIZE_KEY = "authorize key"
    WAIT_SSH = "wait for ssh"
    PROVISION = "provision"
    SET_LIMITS = "set limits"
    RECONFIGURE = "reconfigure"
    HALT = "halt"
    FREEZE = "suspend"
    SYNC_NAMES = "update /etc/hosts"
    FORWARD_PORTS = "forward ports"
    DESTROY = "destroy"
    RELEASE_NETWORK = "release"
    TRIGGER = "run trigger"

    def __str__(self) -> str:
        return self.value


PROJECT_WIDE = (Kind.BUILD_BOX, Kind.PREPARE_NETWORK, Kind.SYNC_NAMES, Kind.RELEASE_NETWORK)
STARTS = (Kind.CREATE, Kind.RECREATE, Kind.START)  # a machine boots: its networks must exist


class Action(NamedTuple):
    kind: Kind
    subject: str  # a machine name, or a box name for BUILD_BOX
    cause: str
    step: int = 0  # PROVISION, TRIGGER: its number in the machine's `provision:` or `triggers:` list
    detail: str = ""  # PROVISION, TRIGGER: which one, as users read it
    cls: str = ""  # the change class: live, restart, recreate, reprovision (and create, start, ...)
    loses_data: bool = False  # re-creating a machine that has data in it: needs confirmation
    keys: tuple[str, ...] = ()  # SET_LIMITS, RECONFIGURE: the settings it changes (memory, hostname...)
    event: str = ""  # TRIGGER: the command it runs for (up, halt, reload, destroy, provision)

    @property
    def what(self) -> str:
        """The action without its subject: `provision step 2 "setup" (changed since the last run)`."""
        kind = f"{self.kind} {self.detail}" if self.detail else str(self.kind)
        return f"{kind} ({self.cause})"

    def __str__(self) -> str:
        tag = f"  [{self.cls}]" if self.cls in CHANGE_CLASSES else ""
        return f"{self.subject}: {self.what}{tag}"


class Plan(NamedTuple):
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()  # warnings: what `up` will not do, and why

    def __str__(self) -> str:
        lines = [str(a) for a in self.actions] or ["nothing to do"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __bool__(self) -> bool:
        return bool(self.actions)

    def losing_data(self) -> list[Action]:
        return [a for a in self.actions if a.loses_data]

    def for_subject(self, subject: str) -> list[Action]:
        return [a for a in self.actions if a.subject == subject and a.kind not in PROJECT_WIDE]

    def subjects(self) -> list[str]:
        """The machines this plan acts on, in order (project-wide actions aside)."""
        seen: dict[str, None] = {}
        for action in self.actions:
            if action.kind not in PROJECT_WIDE:
                seen.setdefault(action.subject, None)
        return list(seen)


def plan_up(
    machines: list[Machine],
    observed: Observed,
    project_key: str,
    boxes_cached: set[str],
    fingerprints: dict[str, dict[str, str]] | None = None,
    provision: str = "auto",
    remove_orphans: bool = False,
    names_stale: bool = False,
    forwarding: set[str] | None = None,
    inputs: dict[str, dict[str, dict[str, str]]] | None = None,
    legacy: dict[str, dict[str, str | None]] | None = None,
    from_cache: dict[str, tuple[tuple[int, ...], float]] | None = None,
) -> Plan:
    """What `up` does. `fingerprints`: machine -> step key -> fingerprint of what the step
    would run now; `inputs`: the same steps' inputs (to say which one changed);
    `provision`: "auto" (what changed), "force" (--provision) or "skip"; `legacy`: the
    fingerprints an older tapers recorded, for steps recorded without inputs;
    `from_cache`: machine -> the steps a new machine gets from the provisioning cache
    instead of running them, and the seconds they took."""
    fingerprints, inputs, legacy, from_cache = fingerprints or {}, inputs or {}, legacy or {}, from_cache or {}
    actions: list[Action] = []
    _refuse_foreign(machines, observed)
    for machine in machines:
        info = observed.machines.get(machine.name)
        record = info.record if info else None
        box_change = record is not None and not _interrupted(info) and not box_matches(machine.box, record)
        wanted_privileged = machine.privileged
        kind_change = (record is not None and not _interrupted(info) and not box_change
                       and privileged_was(record) != wanted_privileged)
        if info is None or _interrupted(info) or box_change or kind_change:
            if machine.box not in boxes_cached and not any(
                a.kind is Kind.BUILD_BOX and a.subject == machine.box for a in actions
            ):
                cause = "not in the box cache" + ("; from box_url" if machine.box_url else "")
                actions.append(Action(Kind.BUILD_BOX, machine.box, cause, cls="create"))
            cached, saves = from_cache.get(machine.name, ((), 0.0)) if provision != "skip" else ((), 0.0)
            saving = f"{saves:.0f} s" if saves >= 10 else f"{saves:.1f} s"
            also = f"; {steps_text(cached)} from the provisioning cache, saving about {saving}" if cached else ""
            if info is None:
                cls = "create"
                actions.append(Action(Kind.CREATE, machine.name, "not found" + also, cls=cls))
            elif box_change:
                cls = "recreate"
                cause = f"box {record.box} -> {machine.box}; data in the machine is lost{also}"  # type: ignore[union-attr]
                actions.append(Action(Kind.RECREATE, machine.name, cause, cls=cls, loses_data=True, keys=("box",)))
            elif kind_change:
                cls = "recreate"
                was, now = ("unprivileged", "privileged") if wanted_privileged else ("privileged", "unprivileged")
                cause = f"{was} -> {now}; data in the machine is lost{also}"
                actions.append(Action(Kind.RECREATE, machine.name, cause, cls=cls, loses_data=True, keys=("privileged",)))
            else:
                cls = "repair"
                what = "destroy" if record is not None and record.phase == DESTROYING else "creation"
                actions.append(Action(Kind.RECREATE, machine.name, f"its {what} was interrupted{also}", cls=cls))
            actions.append(Action(Kind.START, machine.name, "created", cls=cls))
            actions.append(Action(Kind.WAIT_SSH, machine.name, "started", cls=cls))
            if machine.ports:
                actions.append(Action(Kind.FORWARD_PORTS, machine.name, _ports_text(machine), cls=cls))
            if provision != "skip":
                actions += _steps(machine, "first up", lambda step: step.run != "never" and step.index not in cached, cls)
            continue
        assert record is not None  # not interrupted: it has a record
        actions += _existing(machine, info, record, project_key)
        actions += _forwards(machine, info, actions, forwarding)
        if provision != "skip":
            actions += _steps_to_rerun(machine, record, fingerprints.get(machine.name, {}), provision == "force",
                                       inputs.get(machine.name, {}), legacy.get(machine.name, {}))
    if remove_orphans:
        for orphan in observed.orphans:
            name = orphan.machine
            actions.append(Action(Kind.DESTROY, name, "no longer in the Taperfile; --remove-orphans", cls="orphan"))
    left = set(observed.machines) | {a.subject for a in actions if a.kind in STARTS}
    release = [_release_network()] if remove_orphans and observed.orphans and not left else []
    notes = tuple(f"machine `{m.name}` is privileged (`privileged: true`): root in it can reach the host"
                  for m in machines if m.privileged and any(a.subject == m.name and a.kind in STARTS for a in actions))
    notes += _unresolved_notes(machines, inputs)
    return Plan(actions=tuple(_with_network(actions, machines) + _names_update(actions, names_stale) + release),
                notes=notes)


def _release_network() -> Action:
    cause = "no machine of this project is left: its host-only networks go; the NAT network stays"
    return Action(Kind.RELEASE_NETWORK, NETWORK, cause, detail="networks")


def _with_network(actions: list[Action], machines: list[Machine]) -> list[Action]:
    """Before a machine boots, the host networks it is on exist: one action, after the box
    builds, saying which networks and for whom."""
    starting = list(dict.fromkeys(a.subject for a in actions if a.kind in STARTS))
    if not starting:
        return actions
    private = sorted({f"{ip.rsplit('.', 1)[0]}.0/24" for m in machines if m.name in starting for ip in m.private_ips})
    what = "the NAT network" + (f" and host-only {', '.join(private)}" if private else "")
    cause = f"{', '.join(f'`{name}`' for name in starting)} will boot on {what}"
    at = next((i for i, a in enumerate(actions) if a.kind is not Kind.BUILD_BOX), len(actions))
    return [*actions[:at], Action(Kind.PREPARE_NETWORK, NETWORK, cause, detail="networks"), *actions[at:]]


NAME_CHANGES = (Kind.CREATE, Kind.RECREATE, Kind.RECONFIGURE, Kind.DESTROY)


def _names_update(actions: list[Action], stale: bool) -> list[Action]:
    """Every machine resolves the others: after machines come, go or change address."""
    if stale:
        return [Action(Kind.SYNC_NAMES, NAMES, "a machine's /etc/hosts is out of date")]
    if any(a.kind in NAME_CHANGES for a in actions):
        return [Action(Kind.SYNC_NAMES, NAMES, "machines came, went or changed")]
    return []


def _existing(machine: Machine, info: ContainerInfo, record: Record, project_key: str) -> list[Action]:
    """A machine that exists: repair its state, apply what changed in its settings."""
    name = machine.name
    changed = settings_changes(machine, record)
    actions: list[Action] = []
    running = info.state in (State.RUNNING, State.FROZEN, State.BUSY)
    restart = [c for c in changed if c.cls == "restart"]
    if restart:
        cause = "; ".join(str(c) for c in restart)
        if running:
            actions.append(Action(Kind.HALT, name, f"{cause}: restart", cls="restart"))
        actions.append(Action(Kind.RECONFIGURE, name, cause, cls="restart", keys=tuple(c.key for c in restart)))
    elif info.state is State.FROZEN:
        actions.append(Action(Kind.UNFREEZE, name, "frozen", cls="start"))
    live = [c for c in changed if c.cls == "live"]
    if live:
        how = "applied live" if running and not restart else "applied at start"
        actions.append(Action(Kind.SET_LIMITS, name, f"{'; '.join(str(c) for c in live)}: {how}", cls="live",
                              keys=tuple(c.key for c in live)))
    start = restart or info.state in (State.STOPPED, State.BUSY)
    if start:
        cause = "reconfigured" if restart else str(info.state) if info.state is State.STOPPED else "in a transition"
        actions.append(Action(Kind.START, name, cause, cls="restart" if restart else "start"))
    if not same_key(record.authorized_key, project_key):
        cause = "the project key changed (.tapers/ was deleted?)"
        actions.append(Action(Kind.AUTHORIZE_KEY, name, cause, cls="repair"))
    if start or info.state is State.FROZEN:
        actions.append(Action(Kind.WAIT_SSH, name, "started", cls="restart" if restart else "start"))
    return actions


def _ports_text(machine: Machine) -> str:
    return ", ".join(str(port) for port in machine.ports) or "none"


def requested_ports(machine: Machine) -> list[list[object]]:
    return [[p.host_ip, p.host, p.protocol, p.guest] for p in machine.ports]


def _forwards(machine: Machine, info: ContainerInfo, planned: list[Action], forwarding: set[str] | None) -> list[Action]:
    """Host port forwards follow the machine: made when it runs, changed with the Taperfile."""
    ports = info.record.ports if info.record else ()
    applied = [[p.host_ip, p.requested, p.protocol, p.guest] for p in ports]
    will_run = info.state is not State.STOPPED or any(a.kind is Kind.START for a in planned if a.subject == machine.name)
    if not will_run or (not machine.ports and not applied):
        return []
    if applied != requested_ports(machine):
        return [Action(Kind.FORWARD_PORTS, machine.name, f"changed: {_ports_text(machine)}", cls="live")]
    missing = forwarding is not None and machine.ports and info.name not in forwarding
    if missing or any(a.kind is Kind.START and a.subject == machine.name for a in planned):
        return [Action(Kind.FORWARD_PORTS, machine.name, _ports_text(machine), cls="start")]
    return []


def plan_provision(machines: list[Machine], observed: Observed, wanted: list[str] | None) -> Plan:
    """`tapers provision`: every `once` and `always` step again, or the steps named in
    `wanted` (by name or number; `run: never` steps too)."""
    if wanted:
        unknown = [w for w in wanted if not any(m.step(w) for m in machines)]
        if unknown:
            names = sorted({s.name or str(s.index) for m in machines for s in m.provision})
            raise UsageError(
                f"no step named {', '.join(f'`{u}`' for u in unknown)} in the machines selected",
                hint=f"steps there: {', '.join(names) or 'none'} (a step can also be given by its number)",
            )
    actions: list[Action] = []
    for machine in machines:
        info = observed.machines.get(machine.name)
        if info is None or info.state is not State.RUNNING:
            state = "not created" if info is None else str(info.state)
            raise StateError(
                f"machine `{machine.name}` is not running ({state}): provisioning needs it up",
                hint=f"`tapers up {machine.name}` starts it (and provisions what changed)",
            )
        if wanted:
            chosen = {step.index for w in wanted if (step := machine.step(w))}
            actions += _steps(machine, "requested", lambda step, chosen=chosen: step.index in chosen, "provision")
        else:
            actions += _steps(machine, "requested", lambda step: step.run != "never", "provision")
    return Plan(actions=tuple(actions))


def _steps(machine: Machine, cause: str, keep: Callable[[Step], bool], cls: str) -> list[Action]:
    return [
        Action(Kind.PROVISION, machine.name, cause, step=step.index, detail=_step_text(step), cls=cls)
        for step in machine.provision
        if keep(step)
    ]


def steps_text(steps: tuple[int, ...]) -> str:
    """`step 1`, `steps 1-3`, `steps 1, 3`."""
    if len(steps) == 1:
        return f"step {steps[0]}"
    if list(steps) == list(range(steps[0], steps[-1] + 1)):
        return f"steps {steps[0]}-{steps[-1]}"
    return "steps " + ", ".join(str(step) for step in steps)


def _step_text(step: Step) -> str:
    return f'step {step.index} "{step.name}"' if step.name else f"step {step.index}"


def _unresolved_notes(machines: list[Machine], inputs: dict[str, dict[str, dict[str, str]]]) -> tuple[str, ...]:
    """What a step reads that can't be told without running it (a step with `watch:` lists
    it there: only a pattern matching nothing is said)."""
    notes = []
    for machine in machines:
        for step in machine.provision:
            for name in inputs.get(machine.name, {}).get(step.key, {}):
                if not name.startswith(UNRESOLVED):
                    continue
                what = name.removeprefix(UNRESOLVED).strip()
                if not step.watch:
                    notes.append(f"{machine.name}: {_step_text(step)}: can't tell what it reads from {what}; "
                                 "list such files under the step's `watch:`")
                elif "`watch:" in name:
                    notes.append(f"{machine.name}: {_step_text(step)}: {what}")
    return tuple(notes)


def what_changed(before: dict[str, str] | None, now: dict[str, str] | None) -> str:
    """The inputs that differ, for a person: `roles/x/defaults/main.yml changed`."""
    if not before or now is None:
        return "changed since the last run"
    differences = [f"{name} changed" if name in before else f"{name} added"
                   for name in now if not name.startswith(UNRESOLVED) and before.get(name) != now[name]]
    differences += [f"{name} removed" for name in before if name not in now and not name.startswith(UNRESOLVED)]
    if not differences:
        return "changed since the last run"
    more = len(differences) - 1
    return differences[0] + (f", and {more} more" if more else "")


def _steps_to_rerun(machine: Machine, record: Record, fingerprints: dict[str, str], force: bool,
                    inputs: dict[str, dict[str, str]], legacy: dict[str, str | None]) -> list[Action]:
    done = record.provisioned
    failed = record.provision_failed
    actions = []
    for step in machine.provision:
        if step.run == "never":
            continue
        if force:
            cause = "--provision"
        elif step.run == "always":
            cause = "run: always"
        elif step.key == failed:
            cause = "failed last time"
        elif step.key not in done:
            cause = "not run yet"
        elif done[step.key] != fingerprints.get(step.key) and not (
                step.key not in record.inputs and done[step.key] == legacy.get(step.key)):
            cause = what_changed(record.inputs.get(step.key), inputs.get(step.key))
        else:
            continue
        action = Action(Kind.PROVISION, machine.name, cause, step=step.index, detail=_step_text(step), cls="reprovision")
        actions.append(action)
    return actions


def plan_halt(machines: list[Machine], observed: Observed) -> Plan:
    running = (State.RUNNING, State.FROZEN, State.BUSY)
    return _where_state(machines, observed, running, Kind.HALT, lambda info: str(info.state))


def plan_start(machines: list[Machine], observed: Observed, cause: str) -> Plan:
    """Start stopped machines as they are (no reconfiguring, no provisioning): what a
    snapshot restore does to a machine that was running."""
    actions = []
    for machine in machines:
        info = observed.machines.get(machine.name)
        if info is None or info.state is not State.STOPPED:
            continue
        actions += [Action(Kind.START, machine.name, cause, cls="start"),
                    Action(Kind.WAIT_SSH, machine.name, "started", cls="start")]
        if machine.ports:
            actions.append(Action(Kind.FORWARD_PORTS, machine.name, _ports_text(machine), cls="start"))
    return Plan(actions=tuple(_with_network(actions, machines)))


def plan_suspend(machines: list[Machine], observed: Observed) -> Plan:
    return _where_state(machines, observed, (State.RUNNING,), Kind.FREEZE, lambda info: "running")


def plan_resume(machines: list[Machine], observed: Observed) -> Plan:
    return _where_state(machines, observed, (State.FROZEN,), Kind.UNFREEZE, lambda info: "suspended")


def _where_state(
    machines: list[Machine], observed: Observed, states: tuple[State, ...], kind: Kind, cause: Callable[..., str]
) -> Plan:
    """One `kind` action for each machine that exists and is in one of `states`."""
    actions = []
    for machine in machines:
        info = observed.machines.get(machine.name)
        if info is not None and info.state in states:
            actions.append(Action(kind, machine.name, cause(info)))
    return Plan(actions=tuple(actions))


def plan_destroy(machines: list[Machine], observed: Observed, orphans: bool) -> Plan:
    actions = []
    for machine in machines:
        info = observed.machines.get(machine.name)
        if info is not None:
            actions.append(Action(Kind.DESTROY, machine.name, str(info.state)))
    if orphans:
        for orphan in observed.orphans:
            name = orphan.machine
            actions.append(Action(Kind.DESTROY, name, "no longer in the Taperfile"))
    notes = tuple(f"`{name}` is not a tapers machine of this project; left alone" for name in observed.foreign)
    doomed = {a.subject for a in actions}
    others = [m for m, info in observed.machines.items() if m not in doomed and info.state is State.RUNNING]
    if actions and others:
        actions += _names_update(actions, stale=False)
    left = [m for m in observed.machines if m not in doomed] + [o.machine for o in observed.orphans if o.machine not in doomed]
    if actions and not left:
        actions.append(_release_network())
    return Plan(actions=tuple(actions), notes=notes)


def with_triggers(plan: Plan, event: str, machines: list[Machine], observed: Observed,
                  sides: tuple[str, ...] = ("before", "after")) -> Plan:
    """The plan with each machine's `before: EVENT` triggers ahead of its actions and its
    `after: EVENT` ones behind them. A machine the plan doesn't act on triggers nothing; a
    trigger to run in a machine that isn't running before the event is left out, said."""
    by_name = {m.name: m for m in machines}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, action in enumerate(plan.actions):
        if action.kind not in PROJECT_WIDE and action.subject in by_name:
            first.setdefault(action.subject, index)
            last[action.subject] = index
    actions: list[Action] = []
    notes = list(plan.notes)
    for index, action in enumerate(plan.actions):
        machine = by_name.get(action.subject)
        if machine is not None and first.get(action.subject) == index and "before" in sides:
            info = observed.machines.get(machine.name)
            running = info is not None and info.state is State.RUNNING
            for trigger in machine.triggers_for("before", event):
                if trigger.on_host or running:
                    actions.append(_trigger_action(machine, trigger, event))
                else:
                    notes.append(f"`{machine.name}` {trigger.label} runs in the machine, which isn't running: "
                                 f"not run before `{event}`")
        actions.append(action)
        if machine is not None and last.get(action.subject) == index and "after" in sides:
            actions += [_trigger_action(machine, t, event) for t in machine.triggers_for("after", event)]
    return Plan(actions=tuple(actions), notes=tuple(notes))


def _trigger_action(machine: Machine, trigger: Trigger, event: str) -> Action:
    named = f' "{trigger.name}"' if trigger.name else ""
    return Action(Kind.TRIGGER, machine.name, f"{trigger.when} {event}", step=trigger.index,
                  detail=f"{trigger.index}{named} {trigger.where}", event=event)


def _interrupted(info: ContainerInfo) -> bool:
    return info.record is None or not info.record.ready


def _refuse_foreign(machines: list[Machine], observed: Observed) -> None:
    for machine in machines:
        info = observed.foreign.get(machine.name)
        if info is None:
            continue
        if info.record is not None:
            where = f"by the project in `{info.record.project_dir}`"
        elif info.problem:
            where = f"by tapers, but {info.problem}"
        else:
            where = "by something other than tapers (no tapers record)"
        raise StateError(
            f"container `{info.name}` for machine `{machine.name}` already exists, created {where}",
            hint="tapers never touches containers it did not create for this folder: "
            "set a different `name:` in the Taperfile, or remove that container yourself",
        )
