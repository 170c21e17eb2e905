"""What running machines are doing: `tapers stats` and `tapers port`."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tapers.cli import output
from tapers.cli.common import JsonFlag, Names, engine


def stats(
    ctx: typer.Context,
    names: Names = None,
    as_json: JsonFlag = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="print one sample and exit")] = False,
    interval: Annotated[float, typer.Option(help="seconds between samples")] = 1.0,
) -> None:
    """Live CPU, memory, processes and network of running machines (like `docker stats`)."""
    from tapers import stats as live

    project, backend, observed = engine(ctx)
    containers = {m.name: project.container(m.name) for m in project.select(names) if m.name in observed.machines}
    before = live.sample(backend, containers)
    time.sleep(min(interval, 0.5))  # the measuring window of the first sample
    rows = live.rates(before, live.sample(backend, containers))
    if as_json:
        output.write_raw(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        return
    if no_stream or not sys.stdout.isatty():
        output.table(*_table(rows))
        return
    from rich.live import Live
    from rich.table import Table

    def render(rows: list[Any]) -> Table:
        columns, cells = _table(rows)
        grid = Table(box=None, header_style="bold")
        for column in columns:
            grid.add_column(column.upper())
        for row in cells:
            grid.add_row(*row)
        return grid

    with Live(render(rows), auto_refresh=False) as screen:
        while True:
            before = live.sample(backend, containers)
            time.sleep(interval)
            screen.update(render(live.rates(before, live.sample(backend, containers))), refresh=True)


def _table(rows: list[Any]) -> tuple[list[str], list[list[str]]]:
    from tapers.taperfile.units import human_size as size

    columns = ["machine", "cpu %", "memory", "limit", "pids", "net in", "net out"]
    cells = [
        [
            r.machine,
            f"{r.cpu_percent:.1f}",
            size(r.memory),
            size(r.memory_limit) if r.memory_limit else "-",
            str(r.pids),
            f"{size(r.rx_bytes)} ({size(r.rx_rate)}/s)",
            f"{size(r.tx_bytes)} ({size(r.tx_rate)}/s)",
        ]
        for r in rows
    ]
    return columns, cells


def port(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="machine (default: all)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The host ports forwarded to machines (after `auto_correct`)."""
    project, _, observed = engine(ctx)
    chosen = [project.loaded.machine(name)] if name else project.machines
    rows = []
    for machine in chosen:
        info = observed.machines.get(machine.name)
        for forward in ((info.record or {}).get("ports") or []) if info else []:
            rows.append({"machine": machine.name, **forward, "active": str(info.state) == "running"})
    output.listing(
        rows,
        as_json,
        "no forwarded ports",
        ["machine", "guest", "host", "requested"],
        lambda r: [
            r["machine"], f"{r['guest']}/{r['protocol']}",
            f"{r['host_ip']}:{r['host']}" + ("" if r["active"] else " (halted)"), str(r["requested"]),
        ],
    )


def package(
    ctx: typer.Context,
    machine: Annotated[str, typer.Argument(help="the machine to package")],
    output_file: Annotated[Path, typer.Option("--output", "-o", help="the box archive to write (.tar.gz)")],
    name: Annotated[Optional[str], typer.Option(help="the box name written in it (default: the machine's box)")] = None,
) -> None:
    """Export a machine as a box archive (the machine is held still while it is read)."""
    from tapers.boxes.package import package as package_machine
    from tapers.errors import StateError

    project, backend, observed = engine(ctx)
    info = observed.machines.get(project.loaded.machine(machine).name)
    if info is None:
        raise StateError(f"machine `{machine}` is not created", hint=f"tapers up {machine}")
    with output.ConsoleReporter() as reporter:
        meta = package_machine(backend, info.name, info.record or {}, output_file.resolve(), name, reporter)
    output.say(f"wrote {output_file} (`{meta['name']}` version {meta['version']}); add it with "
               f"`tapers box add {meta['name']} {output_file}`")
