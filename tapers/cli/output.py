"""Rendering for people: prefixed progress lines, a spinner on terminals, tables.

Plain lines when stdout is not a terminal; NO_COLOR is honoured (by rich).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class ConsoleReporter:
    """The engine's Reporter for the terminal: `subject | message` lines, a spinner for progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: Any = None
        self._width = 8

    def line(self, subject: str, message: str) -> None:
        with self._lock:
            self._width = max(self._width, len(subject))
            console.print(f"[bold cyan]{escape(subject):<{self._width}}[/] | {escape(message)}")

    def status(self, subject: str, message: str) -> None:
        if not console.is_terminal:
            return
        with self._lock:
            text = f"{escape(subject)} | {escape(message[:100])}"
            if self._status is None:
                self._status = console.status(text)
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
    if not console.is_terminal:  # stable, greppable text for scripts and logs
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
        for row in [columns, *rows]:
            console.print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), markup=False)
        return
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column.upper())
    for row in rows:
        grid.add_row(*(escape(cell) for cell in row))
    console.print(grid)


def say(message: str) -> None:
    console.print(message, markup=False)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def error(message: str, hint: str | None = None) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err_console.print(f"[bold]hint:[/] {escape(hint)}")


def write_raw(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
