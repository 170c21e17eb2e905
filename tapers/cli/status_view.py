"""`tapers status`: what each machine is. Kept free of the CLI framework: scripts and
prompts call `tapers status` in loops, so `main` runs it without loading typer (see main.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tapers.cli import output
from tapers.engine import status_plan
from tapers.engine.status import status_rows

if TYPE_CHECKING:
    from tapers.backend.api import Backend
    from tapers.engine.plan import Plan
    from tapers.engine.observe import Observed
    from tapers.project import Project


def show_status(project: Project, backend: Backend, observed: Observed, as_json: bool) -> None:
    from tapers.errors import TapersError

    plan: Plan | TapersError
    try:
        plan = status_plan(project, backend, observed)
    except TapersError as exc:  # the machines are still shown; the reason once
        plan = exc
        output.warn(f"can't tell what is out of date: {exc.message}")
    rows = status_rows(project, observed, plan)
    if as_json:
        output.write_raw(json.dumps({"project": project.id, "machines": rows}, indent=2) + "\n")
        return
    with_ports = any(r["ports"] for r in rows)
    output.table(
        ["machine", "state", "address", "box", "config"] + (["ports"] if with_ports else []),
        [
            [r["machine"], r["state"] + (" (privileged)" if r["privileged"] and r["state"] != "not created" else ""),
             ", ".join(r["addresses"]) or "-", r["box"],
             "out of date: " + ", ".join(r["out_of_date"]) if r["out_of_date"] else "up to date"]
            + ([_ports_cell(r["ports"])] if with_ports else [])
            for r in rows
        ],
    )


def _ports_cell(ports: list[dict[str, Any]]) -> str:
    """`127.0.0.1:8080->80`; a stopped machine's as `(inactive)`."""
    text = ", ".join(f"{p['host_ip']}:{p['host']}->{p['guest']}" for p in ports) or "-"
    return text if not ports or ports[0]["active"] else f"{text} (inactive)"
