"""The one writer of liblxc config lines (`key = value`, one per line).

LXC runs some keys (hooks) as root on the host, so a value that could start a line of
its own is the most dangerous thing tapers can write: every value is checked here, and
mount entries (fstab syntax) are escaped as LXC reads them (getmntent: `\\040` for a
space, `\\011` for a tab, `\\134` for a backslash).
"""

from __future__ import annotations

import re
from pathlib import Path

from tapers import sinks
from tapers.errors import UnsafeValueError

_KEY = r"lxc(\.[a-z0-9_-]+)+"  # compiled when first used (re keeps it)
Items = list[tuple[str, str]]


def render(items: Items, config: Path, header: tuple[str, ...] = ()) -> str:
    """The config text for `items`; `config` names the file in errors (with the line)."""
    lines = list(header)
    for key, value in items:
        where = f"{config}:{len(lines) + 1}"
        if not re.fullmatch(_KEY, key):
            raise UnsafeValueError(f"{where}: {key!r} is not an LXC config key; refused")
        lines.append(f"{key} = {sinks.plain(value, f'the value of `{key}`', where)}")
    return "\n".join(lines) + "\n"


def mount_entry(source: Path | str, target: str, options: str) -> str:
    """An `lxc.mount.entry` value: a bind of `source` at `target` (relative to the rootfs)."""
    for value, what in ((str(source), "the synced folder"), (target, "the guest path")):
        sinks.plain(value, what, "lxc.mount.entry")
    return f"{_escape(str(source))} {_escape(target.lstrip('/'))} none {options} 0 0"


def _escape(field: str) -> str:
    return field.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def lines(text: str) -> list[str]:
    """Config text's lines as LXC reads them: split at newlines only (Python's `splitlines`
    also splits at characters LXC keeps in a value, U+2028 say)."""
    return text.removesuffix("\n").split("\n") if text else []


def parse(text: str) -> Items:
    """(key, value) of every line that sets a key (comments and blank lines skipped)."""
    items = []
    for line in lines(text):
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            items.append((key.strip(), value.strip()))
    return items
