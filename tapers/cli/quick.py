"""The commands run most often, in their plainest forms, served without loading typer.

Importing typer and building the command line costs about 60 ms: a third or more of a
`status`, a `destroy -f`, an `up` of a halted machine or an `ssh NAME -c CMD`. These exact
forms run here, through the very functions their typer commands call (core_commands.py);
any other form, option or spelling (and every mistake, with its usage message) goes
through typer, which stays the one definition of the command line.

  [-f FILE] status [--json]
  [-f FILE] up [NAME...]
  [-f FILE] halt [NAME...]
  [-f FILE] destroy -f|--force [NAME...]
  [-f FILE] ssh [NAME] -c|--command CMD
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def form(args: list[str]) -> Callable[[], Any] | None:
    """What to call for `args` when they are one of the quick forms; None otherwise."""
    file = None
    if len(args) >= 2 and args[0] in ("-f", "--file") and not args[1].startswith("-"):
        file, args = Path(args[1]), args[2:]
    if not args:
        return None
    from tapers.cli import core_commands as run

    command, rest = args[0], args[1:]
    if command == "status" and rest in ([], ["--json"]):
        return lambda: run.status(file, as_json=bool(rest))
    if command == "ssh":
        return _ssh(file, rest)
    names = [arg for arg in rest if arg not in ("-f", "--force")]
    if command == "destroy" and len(rest) - len(names) == 1 and _plain(names):
        return lambda: run.destroy(file, names or None, force=True)
    if command == "up" and _plain(rest):
        return lambda: run.up(file, rest or None)
    if command == "halt" and _plain(rest):
        return lambda: run.halt(file, rest or None)
    return None


def _ssh(file: Path | None, rest: list[str]) -> Callable[[], int] | None:
    from tapers.cli import core_commands as run

    name = rest[0] if len(rest) == 3 else None
    if len(rest) - (name is not None) != 2 or rest[-2] not in ("-c", "--command") or not _plain(rest[:-2]):
        return None
    command = rest[-1]
    return lambda: run.ssh(file, name, command, [])


def _plain(names: list[str]) -> bool:
    """Machine names only: nothing typer would read as an option (or `--`)."""
    return not any(name.startswith("-") for name in names)
