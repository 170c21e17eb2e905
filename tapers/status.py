"""What each machine of a project is now: the rows `tapers status` prints and the web
panel shows (state, address, box, what is out of date, forwarded ports)."""

from __future__ import annotations

from typing import Any

from tapers.observe import Observed
from tapers.project import Project
from tapers.settings import box_matches, settings_changes


def status_rows(project: Project, observed: Observed) -> list[dict[str, Any]]:
    """One row per machine (then per orphan): what `status --json` prints, and the web panel shows."""
    rows = []
    for machine in project.machines:
        info = observed.machines.get(machine.name)
        record = (info.record if info else None) or {}
        box = record.get("box", {})
        stale = [f"{c.key} ({c.cls})" for c in settings_changes(machine, record)] if info else ["not created (create)"]
        if info and not box_matches(machine.box, record):
            stale.insert(0, "box (recreate)")
        if record.get("provision_failed"):
            stale.append("provisioning failed")
        rows.append(
            {
                "machine": machine.name,
                "container": project.container(machine.name),
                "state": str(info.state) if info else "not created",
                "address": record.get("address") if info else None,
                "box": f"{box['name']}@{box['version']}" if box else machine.box,
                "primary": machine.primary,
                "out_of_date": stale,
                "ports": record.get("ports") or [],
            }
        )
    for orphan in observed.orphans:
        record = orphan.record or {}
        box = record.get("box", {})
        rows.append(
            {
                "machine": orphan.machine,
                "container": orphan.name,
                "state": f"{orphan.state} (orphan: not in the Taperfile)",
                "address": record.get("address"),
                "box": f"{box.get('name')}@{box.get('version')}",
                "primary": False,
                "out_of_date": [],
                "ports": record.get("ports") or [],
            }
        )
    return rows
