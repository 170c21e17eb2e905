"""Change a machine's keys in the Taperfile, keeping its comments and layout.

Used by `tapers limits --save` and the web panel. The file is rewritten only when a
round trip of it, unchanged, gives back the very same text (so nothing but the keys
asked for can change), when the result is a valid Taperfile, and when the machine's
settings then really are the ones asked for (an override file may set them again).
The new text replaces the old one atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tapers.errors import TaperfileError
from tapers.taperfile.load import display

# (mapping indent, sequence indent, sequence dash offset) styles people write
_STYLES = ((2, 4, 2), (2, 2, 0), (4, 6, 4), (4, 4, 0), (4, 4, 2), (2, 4, 0), (3, 5, 3))


def set_machine_keys(path: Path, machine: str, values: dict[str, Any], expect: dict[str, Any]) -> str:
    """Set `machines.<machine>.<key>: value` for each of `values` (None: remove the key) and
    check that the machine's settings are then `expect` (key -> value as loaded); return the new text."""
    text = path.read_text(encoding="utf-8")
    yaml, data = _round_trip(path, text)
    machines = data.get("machines") if hasattr(data, "get") else None
    if not hasattr(machines, "get") or machine not in machines:
        raise TaperfileError(f"no machine `{machine}` under `machines:` in {display(path)}")
    if machines[machine] is None:
        from ruamel.yaml.comments import CommentedMap

        machines[machine] = CommentedMap()
    entry = machines[machine]
    if hasattr(entry, "fa"):
        entry.fa.set_block_style()  # `web: {}` grows into a block of keys
    for key, value in values.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    out = io.StringIO()
    yaml.dump(data, out)
    new_text = out.getvalue()
    _check(path, machine, expect, new_text)
    from tapers import project_files

    before = path.stat()  # tapers may run as root: the file stays its owner's, with its mode
    project_files.write(path, new_text, before.st_mode & 0o7777, owner=(before.st_uid, before.st_gid))
    return new_text


def _round_trip(path: Path, text: str) -> tuple[Any, Any]:
    """A YAML round-tripper with the file's own indentation: one that gives the text back."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    for mapping, sequence, offset in _STYLES:
        yaml = YAML()
        yaml.preserve_quotes = True
        yaml.width = 4096  # never fold a long line
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        try:
            data = yaml.load(text)
        except YAMLError as exc:
            raise TaperfileError(f"{display(path)} is not valid YAML: {exc}") from None
        out = io.StringIO()
        yaml.dump(data, out)
        if out.getvalue() == text:
            return yaml, data
    raise TaperfileError(
        f"cannot rewrite {display(path)} without changing its layout",
        hint="edit the file by hand (tapers would have changed more than the keys asked for)",
    )


def _check(path: Path, machine: str, expect: dict[str, Any], new_text: str) -> None:
    from tapers import paths
    from tapers.taperfile.model import resolve_machines
    from tapers.taperfile.validate import validate

    def settings(texts: dict[Path, str]) -> dict[str, Any]:
        found = next(m for m in resolve_machines(validate(path, texts)) if m.name == machine)
        return {key: getattr(found, key) for key in expect}

    alone = settings({path: new_text})
    override = path.parent / paths.OVERRIDE_NAME
    if alone != expect:
        keys = ", ".join(k for k in expect if alone[k] != expect[k])
        raise TaperfileError(
            f"`defaults:` in {display(path)} sets {keys} for every machine: removing it from `{machine}` gives it those",
            hint=f"set a value for `{machine}`, or change `defaults:`",
        )
    if override.is_file() and settings({path: new_text, override: override.read_text(encoding="utf-8")}) != expect:
        raise TaperfileError(
            f"{display(override)} sets {', '.join(expect)} of `{machine}` again",
            hint=f"change them there, or remove them from {display(override)}",
        )


def as_written(key: str, value: Any) -> Any:
    """How a machine setting's loaded value is written in a Taperfile (memory as a size,
    whole CPUs as an integer; None stays None: the key goes)."""
    from tapers.taperfile.units import format_size

    if value is None:
        return None
    if key == "memory":
        return format_size(value)
    if key == "cpus" and float(value).is_integer():
        return int(value)
    return value
