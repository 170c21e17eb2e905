"""`tapers status`: what each machine is. Kept free of the CLI framework: scripts and
prompts call `tapers status` in loops, so `main` runs it without loading typer (see main.py)."""

from __future__ import annotations

import json
from typing import Any

from tapers.cli import output
from tapers.settings import box_matches, settings_changes


def show_status(project: Any, observed: Any, as_json: bool) -> None:
    rows = []
    for machine in project.machines:
        info = observed.machines.get(machine.name)
        record = (info.record if info else None) or {}
        box = record.get("box", {})
        stale = [f"{c.key} ({c.cls})" for c in settings_changes(machine, record)]
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
                "machine": record.get("machine", orphan.name),
                "container": orphan.name,
                "state": f"{orphan.state} (orphan: not in the Taperfile)",
                "address": record.get("address"),
                "box": f"{box.get('name')}@{box.get('version')}",
                "primary": False,
                "out_of_date": [],
                "ports": record.get("ports") or [],
            }
        )
    if as_json:
        output.write_raw(json.dumps({"project": project.id, "machines": rows}, indent=2) + "\n")
        return
    with_ports = any(r["ports"] for r in rows)
    output.table(
        ["machine", "state", "address", "box", "config"] + (["ports"] if with_ports else []),
        [
            [r["machine"], r["state"], r["address"] or "-", r["box"], "out of date: " + ", ".join(r["out_of_date"])
             if r["out_of_date"] else "up to date"]
            + ([", ".join(f"{p['host_ip']}:{p['host']}->{p['guest']}" for p in r["ports"]) or "-"] if with_ports else [])
            for r in rows
        ],
    )


