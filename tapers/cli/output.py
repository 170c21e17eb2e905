"""Rendering for people: prefixed progress lines, a spinner on terminals, tables.

Plain lines when stdout is not a terminal (rich is then not even imported: quick
commands start faster); NO_COLOR is honoured (by rich).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any


@functools.cache
def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def is_terminal() -> bool:
    return sys.stdout.isatty()


class ConsoleReporter:
    """The engine's Reporter for the terminal: `subject | message` lines, a spinner for progress."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._status: Any = None
        self._width = 8

    def line(self, subject: str, message: str) -> None:
        with self._lock:
            self._width = max(self._width, len(subject))
            if is_terminal():
                _console().print(f"[bold cyan]{_escape(subject):<{self._width}}[/] | {_escape(message)}")
            else:
                say(f"{subject:<{self._width}} | {message}")

    def status(self, subject: str, message: str) -> None:
        if not is_terminal():
            return
        with self._lock:
            text = f"{_escape(subject)} | {_escape(message[:100])}"
            if self._status is None:
                self._status = _console().status(text)
                self._status.start()
            else:
                self._status.update(text)

    def close(self) -> None:
        with self._lock:
            if self._status is not None:
                self._status.stop()
                self._status = None

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def table(columns: list[str], rows: list[list[str]]) -> None:
    if not is_terminal():  # stable, greppable text for scripts and logs
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        for row in [columns, *rows]:
            say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return
    from rich.table import Table

    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column.upper())
    for row in rows:
        grid.add_row(*(_escape(cell) for cell in row))
    _console().print(grid)


def listing(rows: list[dict], as_json: bool, empty: str, columns: list[str], cells: Any) -> None:
    """A list command's output: the rows as JSON, else `empty` when there are none, else a
    table of `cells(row)` under `columns`."""
    if as_json:
        write_raw(json.dumps(rows, indent=2) + "\n")
    elif not rows:
        say(empty)
    else:
        table(columns, [cells(row) for row in rows])


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    if sys.stderr.isatty():
        _console(stderr=True).print(f"[yellow]warning:[/] {_escape(message)}")
    else:
        sys.stderr.write(f"warning: {message}\n")


def error(message: str, hint: str | None = None) -> None:
    if sys.stderr.isatty():
        _console(stderr=True).print(f"[bold red]error:[/] {_escape(message)}")
        if hint:
            _console(stderr=True).print(f"[bold]hint:[/] {_escape(hint)}")
        return
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")


def write_raw(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
