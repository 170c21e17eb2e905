"""What each machine of a project is now: the rows `tapers status` prints and the web
panel shows (state, address, box, what is out of date, forwarded ports).

"Out of date" is read off the very plan `tapers up` would run for all the machines (see
`status_plan`): what `up` would create, re-create, reconfigure, set live or provision
again. Starting a stopped machine is its state, not drift, and `run: always` steps are
never out of date.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tapers.backend.api import State
from tapers.engine.observe import Observed
from tapers.engine.plan import Action, Kind, Plan
from tapers.engine.settings import privileged_was
from tapers.errors import TapersError
from tapers.project import Project

if TYPE_CHECKING:
    from tapers.record import Record

_STATE_ONLY = ("start",)  # change classes that are a machine's state, not its config


def out_of_date(plan: Plan, machine: str) -> list[str]:
    """What `up` would change on `machine`: `memory (live)`, `box (recreate)`, `not created
    (create)`, `step 2 "setup" (changed since the last run)`..."""
    found: list[str] = []
    for action in plan.for_subject(machine):
        if action.cls in _STATE_ONLY or action.kind in (Kind.START, Kind.WAIT_SSH, Kind.HALT):
            continue
        for item in _described(action):
            if item not in found:
                found.append(item)
    return found


def _described(action: Action) -> list[str]:
    if action.kind is Kind.CREATE:
        return ["not created (create)"]
    if action.kind is Kind.RECREATE:
        return [f"{key} (recreate)" for key in action.keys] if action.cls == "recreate" else ["interrupted (repair)"]
    if action.kind in (Kind.SET_LIMITS, Kind.RECONFIGURE):
        return [f"{key} ({action.cls})" for key in action.keys]
    if action.kind is Kind.PROVISION:
        return [] if action.cause == "run: always" else [f"{action.detail} ({action.cause})"]
    if action.kind is Kind.AUTHORIZE_KEY:
        return ["project key (repair)"]
    if action.kind is Kind.FORWARD_PORTS and action.cls == "live":
        return ["ports (live)"]
    return []


def status_rows(project: Project, observed: Observed, plan: Plan | TapersError) -> list[dict[str, Any]]:
    """One row per machine (then per orphan): what `status --json` prints, and the web panel
    shows. `plan`: what `up` would do to every machine (`status_plan`), or why that can't be
    told (a step's file unreadable, say): the rest of each row is shown all the same."""
    rows = []
    for machine in project.machines:
        info = observed.machines.get(machine.name)
        record = info.record if info else None
        rows.append(
            {
                "machine": machine.name,
                "container": project.container(machine.name),
                "state": str(info.state) if info else "not created",
                "address": record.address if record else None,
                "addresses": _addresses(record),
                "box": str(record.box) if record else machine.box,
                "primary": machine.primary,
                "privileged": privileged_was(record) if record else machine.privileged,
                "out_of_date": (out_of_date(plan, machine.name) if isinstance(plan, Plan)
                                else [f"can't tell: {plan.message}"]),
                "ports": _ports(record, info.state if info else None),
            }
        )
    for orphan in observed.orphans:
        record = orphan.record
        rows.append(
            {
                "machine": orphan.machine,
                "container": orphan.name,
                "state": f"{orphan.state} (orphan: not in the Taperfile)",
                "address": record.address if record else None,
                "addresses": _addresses(record),
                "box": str(record.box) if record else "?",
                "primary": False,
                "privileged": privileged_was(record) if record else None,
                "out_of_date": [],
                "ports": _ports(record, orphan.state),
            }
        )
    return rows


def _addresses(record: Record | None) -> list[str]:
    """Every address the machine has: the NAT one, then its private ones (as applied)."""
    if record is None:
        return []
    private = record.applied.get("networks", [])
    return [record.address, *(address for address in private if isinstance(address, str))]


def _ports(record: Record | None, state: State | None) -> list[dict[str, Any]]:
    """Its forwarded ports; `active`: forwarded now (a stopped machine's are not)."""
    if record is None:
        return []
    return [{**port._asdict(), "active": state in (State.RUNNING, State.FROZEN)} for port in record.ports]

