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
from tapers.cli.common import JsonFlag, Machine, Names, complete_machine, engine_for, observed_project


def stats(
    ctx: typer.Context,
    names: Names = None,
    as_json: JsonFlag = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="print one sample and exit")] = False,
    interval: Annotated[float, typer.Option(help="seconds between samples")] = 1.0,
) -> None:
    """Live CPU, memory, processes and network of running machines (like `docker stats`)."""
    from tapers.engine import stats as live

    project, backend, observed = observed_project(ctx)
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
    name: Annotated[Optional[str], typer.Argument(help="machine (default: all)", autocompletion=complete_machine)] = None,
    as_json: JsonFlag = False,
) -> None:
    """The host ports forwarded to machines (after `auto_correct`)."""
    project, _, observed = observed_project(ctx)
    chosen = [project.loaded.machine(name)] if name else project.machines
    rows = []
    for machine in chosen:
        info = observed.machines.get(machine.name)
        for forward in info.record.ports if info and info.record else ():
            rows.append({"machine": machine.name, **forward._asdict(), "active": str(info.state) == "running"})
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
    machine: Annotated[str, typer.Argument(help="the machine to package", autocompletion=complete_machine)],
    output_file: Annotated[Path, typer.Option("--output", "-o", help="the box archive to write (.tar.gz)")],
    name: Annotated[Optional[str], typer.Option(help="the box name written in it (default: the machine's box)")] = None,
) -> None:
    """Export a machine as a box archive (the machine is held still while it is read)."""
    with engine_for(ctx) as engine:
        meta = engine.package(machine, output_file.absolute(), name)
    output.say(f"wrote {output_file} (`{meta['name']}` version {meta['version']}); add it with "
               f"`tapers box add {meta['name']} {output_file}`")


def limits(
    ctx: typer.Context,
    machine: Machine,
    cpus: Annotated[Optional[str], typer.Option(help="CPUs it may use (0.5, 2), or `none`")] = None,
    memory: Annotated[Optional[str], typer.Option(help="memory limit (512M, 1G), or `none`")] = None,
    pids: Annotated[Optional[str], typer.Option(help="process limit, or `none`")] = None,
    save: Annotated[bool, typer.Option("--save", help="also write the new values into the Taperfile")] = False,
) -> None:
    """Show or change a machine's CPU, memory and process limits (live when it runs).

    Without --save the machine differs from the Taperfile (`status` says so) until
    `tapers up` puts the Taperfile's values back."""
    from tapers.taperfile.units import format_size

    given = _limit_options(cpus, memory, pids)  # refused before anything is read or changed
    if not given:
        _show_limits(ctx, machine)
        return
    with engine_for(ctx) as engine:
        running = engine.set_limits(machine, given, save=save)
        wanted = engine.project.loaded.machine(machine)
    changed = ", ".join(f"{k} {'none' if v is None else format_size(v) if k == 'memory' else v}" for k, v in given.items())
    output.say(f"{machine}: {changed} ({'applied now' if running else 'from its next start'})")
    if save:
        output.say(f"written into {engine.project.loaded.path.name}")
    elif any(getattr(wanted, k) != v for k, v in given.items()):
        output.warn(
            f"the Taperfile says otherwise: `tapers status` shows {machine} as out of date and `tapers up` "
            "puts the Taperfile's values back (use --save to keep these)"
        )


def _show_limits(ctx: typer.Context, machine: str) -> None:
    from tapers.engine import limits as machine_limits
    from tapers.taperfile.units import format_size

    project, _, observed = observed_project(ctx)
    wanted = machine_limits.wanted(project.loaded.machine(machine))
    info = observed.machines.get(machine)
    now = machine_limits.applied(info.record) if info else None
    show = {"memory": lambda v: format_size(v), "cpus": lambda v: f"{v:g}", "pids": str}
    output.table(
        ["limit", "Taperfile", "machine"],
        [[key, show[key](getattr(wanted, key)) if getattr(wanted, key) is not None else "none",
          "-" if now is None else show[key](getattr(now, key)) if getattr(now, key) is not None else "none"]
         for key in machine_limits.KEYS],
    )


def _limit_options(cpus: str | None, memory: str | None, pids: str | None) -> dict[str, Any]:
    """The limits given on the command line (key -> value as loaded; None: no limit)."""
    given = {"cpus": cpus, "memory": memory, "pids": pids}
    return {key: _parse_limit(key, raw) for key, raw in given.items() if raw is not None}


def _parse_limit(key: str, raw: str) -> Any:
    """By the Taperfile's own rules (tapers/taperfile/model.py): same units, same bounds."""
    from tapers.errors import UsageError
    from tapers.taperfile.validate import machine_value

    if raw.strip().lower() == "none":
        return None
    value: Any = raw
    if key != "memory":
        for number in (int, float):
            try:
                value = number(raw)
                break
            except ValueError:
                continue
    try:
        return machine_value(key, value)
    except ValueError as exc:
        raise UsageError(f"--{key} {raw}: {exc}", hint="`none` removes the limit") from None
