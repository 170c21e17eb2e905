"""Variables in a Taperfile, with Docker Compose's rules, so one file serves a whole team and CI.

In any string value: `${NAME}` or `$NAME`; `${NAME:-default}` (when unset or empty),
`${NAME-default}` (when unset); `${NAME:?message}` / `${NAME?message}` (required: an error
naming it when unset or empty / unset); `${NAME:+other}` / `${NAME+other}` (`other` when set);
`$$` is a `$`. Values come from the environment, then from a `.env` file beside the Taperfile
(the environment wins). An inline shell script (`shell: "..."`, `shell: {inline: ...}`, a
trigger's `run` and `run_remote` alike) is left as written: its `$` belong to the shell
that runs it (give it values through `env:`).
A `$` that starts no reference (`$5`) stays as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_FILE = ".env"
MAX_ENV_BYTES = 256 * 1024
MAX_EXPANDED = 4 * 1024**2  # characters all substituted values may add up to (as YAML aliases may)
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Compiled when first used (re keeps them): a Taperfile read from its cache uses none.
_REFERENCE = r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>" + NAME + r")|(?P<open>\{))"
_BRACED = r"(?P<name>" + NAME + r")(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?"
_MENTIONED = r"\$\{?(" + NAME + r")"


class VariableError(ValueError):
    """A reference that can't be resolved: the message says which and why."""


def env_file_values(folder: Path) -> tuple[dict[str, str], str]:
    """The `.env` beside the Taperfile: its values and its text ("" when there is none).
    Lines are NAME=VALUE (an `export ` before it is allowed), `#` comments and blank lines;
    a value in matching quotes loses them."""
    path = folder / ENV_FILE
    try:
        text = _read_bounded(path)
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError) as exc:
        raise VariableError(f"{path}: can't be read ({exc})") from None
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not re.fullmatch(NAME, name):
            raise VariableError(f"{path}:{number}: not a NAME=VALUE line")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values, text


def _read_bounded(path: Path) -> str:
    """A regular file of at most MAX_ENV_BYTES, opened without following a link in the
    project folder whose Taperfile was read (tapers may run as root, in a folder someone
    else may rename: see project_files.project_folder)."""
    import stat

    from tapers.project_files import project_folder

    folder = project_folder(path.parent)
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        if os.geteuid() == 0:
            from tapers.project_files import invoker_may_read

            if not invoker_may_read(fd, st):
                raise OSError("you may not read it (tapers runs as root for you, and reads only what you could)")
        data = file.read(MAX_ENV_BYTES + 1)
    if len(data) > MAX_ENV_BYTES:
        raise OSError(f"larger than {MAX_ENV_BYTES // 1024} KiB")
    return data.decode("utf-8")


def lookup(folder: Path) -> Callable[[str], str | None]:
    """NAME -> its value: the environment's, else the `.env` file's, else None."""
    from_file, _ = env_file_values(folder)
    return lambda name: os.environ.get(name, from_file.get(name))


def mentioned(texts: Mapping[Path, str]) -> set[str]:
    """The names a Taperfile's text may refer to (for its validation cache)."""
    return {name for text in texts.values() if "$" in text for name in re.findall(_MENTIONED, text)}


def substitute(value: str, get: Callable[[str], str | None], unset: list[str]) -> str:
    """`value` with its references replaced. Names read but not set are added to `unset`."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["open"]:
            raise VariableError("`${` is not closed by `}`")
        if match["named"]:
            return _value(match["named"], get, unset)
        braced = re.fullmatch(_BRACED, match["braced"], re.S)
        if braced is None:
            raise VariableError(f"`${{{match['braced']}}}` is not a variable reference (`${{NAME}}`, `${{NAME:-default}}`...)")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        current = get(name)
        if op is None:
            return _value(name, get, unset)
        if op in (":-", "-"):
            return arg if current is None or (op == ":-" and current == "") else current
        if op in (":+", "+"):
            return arg if current is not None and (op == "+" or current != "") else ""
        if current is None or (op == ":?" and current == ""):
            raise VariableError(f"the variable {name} is required" + (f": {arg}" if arg else " but not set"))
        return current

    return re.sub(_REFERENCE, replace, value)


def _value(name: str, get: Callable[[str], str | None], unset: list[str]) -> str:
    current = get(name)
    if current is None:
        unset.append(name)
        return ""
    return current


_SCRIPTS = {"provision": ("shell",), "triggers": ("run", "run_remote")}  # list key -> its script keys


def is_inline_script(loc: tuple[Any, ...]) -> bool:
    """Shell text: `...provision[i].shell` (a string) or `...provision[i].shell.inline`, and a
    trigger's `run` or `run_remote` the same way."""
    if loc[-1:] == ("inline",):
        loc = loc[:-1]
    return len(loc) >= 3 and loc[-1] in _SCRIPTS.get(loc[-3], ())


def interpolate(data: Any, get: Callable[[str], str | None], unset: list[str],
                problem: Callable[[tuple[Any, ...], str], None]) -> Any:
    """`data` with every string value's references replaced (keys and inline scripts as
    written); each reference that can't be resolved is reported to `problem(loc, why)`.
    The text substitution adds is bounded (MAX_EXPANDED), like what YAML aliases expand to."""
    budget = [MAX_EXPANDED]

    def walk(value: Any, loc: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, (*loc, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(value)]
        if isinstance(value, str) and "$" in value and not is_inline_script(loc):
            try:
                result = substitute(value, get, unset)
            except VariableError as exc:
                problem(loc, str(exc))
                return value
            budget[0] -= len(result)
            if budget[0] < 0:
                raise VariableError(f"variables expand to more than {MAX_EXPANDED // 1024**2} MiB of text")
            return result
        return value

    return walk(data, ())
