"""The inputs of a plan, gathered from disk (boxes, step fingerprints), then the pure planner.

Commands call these; `plan.py` stays free of I/O.
"""

from __future__ import annotations

from tapers.backend.api import Backend
from tapers.errors import TaperfileError
from tapers.observe import Observed
from tapers.plan import Kind, Plan, plan_up
from tapers.project import Project
from tapers.taperfile import Machine


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


def step_fingerprints(project: Project, machines: list[Machine]) -> dict[str, dict[str, str]]:
    from tapers.provision import fingerprint

    result: dict[str, dict[str, str]] = {}
    for machine in machines:
        for step in machine.provision:
            try:
                result.setdefault(machine.name, {})[step.key] = fingerprint(step, project.root)
            except OSError as exc:
                raise TaperfileError(
                    f"machine `{machine.name}`, {step.label}: cannot read {exc.filename}: {exc.strerror}",
                    hint="paths in steps are relative to the Taperfile's folder",
                ) from None
    return result


def up_plan(
    project: Project,
    backend: Backend,
    observed: Observed,
    names: list[str] | None,
    key: str,
    provision: str,
    remove_orphans: bool = False,
) -> Plan:
    from tapers.boxes.cache import find_box

    machines = machines_for_up(project, names)
    cached = {m.box for m in machines if find_box(m.box)}
    from tapers import names as hosts

    prints = step_fingerprints(project, machines)
    stale = hosts.stale(project, observed)
    forwarding = backend.network.forwarded() if any(m.ports for m in machines) else None
    return plan_up(machines, observed, key, cached, prints, provision, remove_orphans and not names, stale, forwarding)


def check_tools(plan: Plan, project: Project) -> None:
    """Before anything changes: the host has what the planned steps need (e.g. ansible)."""
    from tapers.provision import check_host_tools

    kinds = {
        project.loaded.machine(a.subject).provision[a.step - 1].kind for a in plan.actions if a.kind is Kind.PROVISION
    }
    check_host_tools(kinds)
