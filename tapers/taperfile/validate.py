"""Validate a Taperfile, reporting every problem with file:line:column and its dotted path.

Only imported when a Taperfile changed since it was last validated (see load.py):
YAML parsing with positions and pydantic are the slow part of starting tapers. Reading
the YAML (bounded: a Taperfile may come from anyone) is yaml_source.py's.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tapers.errors import TaperfileError
from tapers.taperfile.model import Taperfile
from tapers.taperfile.units import printable, shown
from tapers.taperfile.yaml_source import Loc, Position
from tapers.taperfile.yaml_source import Source as _Source
from tapers.taperfile.yaml_source import display as _display
from tapers.taperfile.yaml_source import dotted as _dotted
from tapers.taperfile.yaml_source import merge as _merge
from tapers.taperfile.yaml_source import parse as _parse

MAX_SHOWN = 100  # problems listed in one report
_NAME_RULES = {
    "env": "environment variable names use A-Z, a-z, 0-9 and '_' and don't start with a digit",
    "groups": "Ansible group names use A-Z, a-z, 0-9 and '_' and don't start with a digit",
    "extra_vars": "Ansible variable names are written on one line, without control characters",
}


def validate(path: Path, texts: dict[Path, str], unset: list[str] | None = None) -> Taperfile:
    """Parse the Taperfile (and its override, merged on top), resolve its variables and
    validate it.

    `texts` maps each file to its text, the Taperfile first; the names of variables used
    but not set are added to `unset`. Raises TaperfileError listing every problem with
    file:line:column."""
    source = resolved(path, texts, [] if unset is None else unset)
    result = _validate(path, source)
    if isinstance(result, list):
        raise _invalid(path, result)
    semantic = sorted(_check(result, source, path), key=_problem_order)
    if semantic:
        raise _invalid(path, semantic)
    return result


def resolved(path: Path, texts: dict[Path, str], unset: list[str]) -> _Source:
    """The Taperfile and its override merged, with its variables' values (see variables.py)."""
    from tapers.taperfile import variables

    sources = [_parse(file, text) for file, text in texts.items()]
    source = sources[0]
    for top in sources[1:]:
        source = _merge(source, top)
    source.data = without_extensions(source.data)
    if not any("$" in text for text in texts.values()):
        return source
    try:
        get = variables.lookup(path.parent)
    except variables.VariableError as exc:
        raise TaperfileError(str(exc), hint="write one NAME=VALUE per line") from None
    problems: list[str] = []

    def problem(loc: Loc, why: str) -> None:
        problems.append(f"{_where(path, _nearest(source, loc))}{_dotted(loc)}: {why}")

    try:
        source.data = variables.interpolate(source.data, get, unset, problem)
    except variables.VariableError as exc:
        raise TaperfileError(f"{_display(path)}: {exc}", hint="keep big values in files the Taperfile names") from None
    if problems:
        raise _invalid(path, problems, hint=f"set it in the environment or in {variables.ENV_FILE} beside the "
                       "Taperfile (NAME=VALUE); write $$ for a $")
    return source


# Mappings whose keys are names or data, not Taperfile keys: an `x-` key there is kept.
_NAMED = ("machines", "env", "extra_vars", "groups")


def without_extensions(data: Any, parent: object = None) -> Any:
    """`x-` keys are ignored, as in Docker Compose (YAML anchors hang on them: `x-base: &base`)."""
    if isinstance(data, dict):
        return {key: without_extensions(value, key) for key, value in data.items()
                if not (isinstance(key, str) and key.startswith("x-") and parent not in _NAMED)}
    if isinstance(data, list):
        return [without_extensions(value) for value in data]
    return data


def _invalid(path: Path, problems: list[str], hint: str = "see Taperfile.example.yaml for every key") -> TaperfileError:
    problems = [printable(problem) for problem in problems]
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    shown_lines = problems[:MAX_SHOWN] + ([f"... and {count - MAX_SHOWN} more"] if count > MAX_SHOWN else [])
    message = f"{_display(path)} is invalid ({count} {noun}):\n" + "\n".join(f"  {p}" for p in shown_lines)
    return TaperfileError(message, hint=hint, problems=problems)


# -- validation ------------------------------------------------------------------------


def _validate(path: Path, source: _Source) -> Taperfile | list[str]:
    try:
        return Taperfile.model_validate(source.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            problems.append(_describe(path, source, error))
        return sorted(set(problems), key=_problem_order)


def _problem_order(problem: str) -> tuple[int, int, str]:
    match = re.match(r"^.*?:(\d+):(\d+): ", problem)
    if match:
        return int(match.group(1)), int(match.group(2)), problem
    return 0, 0, problem


def _describe(path: Path, source: _Source, error: dict[str, Any]) -> str:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        where = source.keys.get(loc)
        if loc[-2:-1] == ("lxc",) or loc[-3:-1] == ("lxd", "config"):  # a raw engine key, refused for what it does
            return f"{_where(path, where)}{_dotted(loc)}: {_message(error)}"
        return f"{_where(path, where)}{_dotted(loc)}: invalid name {shown(loc[-1])}: {_key_rule(loc)}"
    if kind == "extra_forbidden":
        return f"{_where(path, source.keys.get(loc))}{_dotted(loc)}: {_unknown_key(loc)}"
    if kind == "missing":
        parent = loc[:-1]
        where = source.values.get(parent) if parent else Position(path, 1, 1)
        return f"{_where(path, where)}{_dotted(parent) or 'top level'}: missing required key `{loc[-1]}`"
    return f"{_where(path, _nearest(source, loc))}{_dotted(loc)}: {_message(error)}"


def _nearest(source: _Source, loc: Loc) -> Position | None:
    """Where `loc` is written, or its closest parent (`shell: "..."` stands for `shell.inline`)."""
    for end in range(len(loc), -1, -1):
        where = source.values.get(loc[:end]) or source.keys.get(loc[:end])
        if where is not None:
            return where
    return None


def _where(path: Path, where: Position | None) -> str:
    return f"{where}: " if where else f"{_display(path)}: "


def _key_rule(loc: Loc) -> str:
    if len(loc) >= 2 and loc[-2] in _NAME_RULES:
        return _NAME_RULES[loc[-2]]
    if loc[:1] == ("machines",):
        return "machine names start with a letter and use a-z, 0-9 and '-' (at most 40 characters)"
    return "not a valid name"


def machine_value(key: str, value: Any) -> Any:
    """One machine setting checked by the very rules a Taperfile's is (for `tapers limits`),
    as loaded (memory in bytes); a ValueError says what is wrong, as validation would."""
    from pydantic import ValidationError

    from tapers.taperfile.model import MachineSettings

    try:
        return getattr(MachineSettings.model_validate({key: value}), key)
    except ValidationError as exc:
        raise ValueError(_message(exc.errors()[0])) from None


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error" and error["loc"] == ("version",):
        return f"unsupported version {value!r}: this tapers reads `version: 1`"
    if kind == "too_short" and error["loc"] == ("machines",):
        return "define at least one machine"
    got = "" if isinstance(value, (dict, list)) else f" (got {_short_repr(value)})"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}{got}"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    allowed = _allowed_keys(loc[:-1])
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key `{key}` (did you mean `{close[0]}`?)"
    return f"unknown key `{key}`; valid keys here: {', '.join(sorted(allowed))}"


def _allowed_keys(loc: Loc) -> list[str]:
    """The field names of the model found at `loc`, walking the schema from the top."""
    model: Any = Taperfile
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = _unwrap(model.model_fields[part].annotation)
        elif typing.get_origin(model) is dict:
            model = _unwrap(typing.get_args(model)[1])
        elif typing.get_origin(model) is list and isinstance(part, int):
            model = _unwrap(typing.get_args(model)[0])
        else:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        else:
            return annotation


def _check(taperfile: Taperfile, source: _Source, path: Path) -> list[str]:
    """Rules across keys that pydantic does not see."""
    problems = []
    if taperfile.defaults.primary is not None:
        loc = ("defaults", "primary")
        problems.append(f"{_where(path, source.keys.get(loc))}defaults.primary: set `primary` on one machine, not in defaults")
    primaries = [name for name, m in taperfile.machines.items() if m.primary]
    if len(primaries) > 1:
        for name in primaries[1:]:
            loc = ("machines", name, "primary")
            problems.append(
                f"{_where(path, source.keys.get(loc))}{_dotted(loc)}: only one machine can be primary "
                f"(`{primaries[0]}` already is)"
            )
    problems += _check_depends_on(taperfile, source, path)
    problems += _check_groups(taperfile, source, path)
    problems += _check_networks(taperfile, source, path)
    problems += _check_synced_folders(taperfile, source, path)
    for loc, settings in _settings_with_loc(taperfile):
        problems += _check_steps(loc, settings.provision or [], source, path)
        problems += _check_triggers(loc, settings.triggers or [], source, path)
    return problems


def _settings_with_loc(taperfile: Taperfile) -> list[tuple[Loc, Any]]:
    return [(("defaults",), taperfile.defaults)] + [(("machines", n), m) for n, m in taperfile.machines.items()]


def _check_depends_on(taperfile: Taperfile, source: _Source, path: Path) -> list[str]:
    problems = []
    graph: dict[str, list[str]] = {}
    for name, settings in taperfile.machines.items():
        wanted = settings.depends_on if settings.depends_on is not None else taperfile.defaults.depends_on
        graph[name] = [d for d in wanted or [] if d != name]
        for index, dependency in enumerate(settings.depends_on or []):
            loc = ("machines", name, "depends_on", index)
            if dependency == name:
                problems.append(f"{_where(path, source.values.get(loc))}{_dotted(loc)}: `{name}` cannot depend on itself")
            elif dependency not in taperfile.machines:
                known = ", ".join(taperfile.machines)
                problems.append(
                    f"{_where(path, source.values.get(loc))}{_dotted(loc)}: no machine `{dependency}` "
                    f"(machines: {known})"
                )
    cycle = _find_cycle({n: [d for d in deps if d in graph] for n, deps in graph.items()})
    if cycle:
        loc = ("machines", cycle[0], "depends_on")
        problems.append(
            f"{_where(path, source.keys.get(loc))}{_dotted(loc)}: dependency cycle: {' -> '.join(cycle)}"
        )
    return problems


def _check_groups(taperfile: Taperfile, source: _Source, path: Path) -> list[str]:
    """Members of Ansible `groups:` are machines of this file."""
    problems = []
    for loc, settings in _settings_with_loc(taperfile):
        for index, step in enumerate(settings.provision or []):
            for group, members in (step.ansible.groups if step.ansible else {}).items():
                for position, member in enumerate(members):
                    if member not in taperfile.machines:
                        here = loc + ("provision", index, "ansible", "groups", group, position)
                        problems.append(
                            f"{_where(path, source.values.get(here))}{_dotted(here)}: no machine `{member}` "
                            f"(machines: {', '.join(taperfile.machines)})"
                        )
    return problems


def _check_networks(taperfile: Taperfile, source: _Source, path: Path) -> list[str]:
    """No address or host port used twice. (Whether a private network is clear of the
    host's own is the backend's to say, when it makes the network.)"""
    problems = []
    addresses: dict[str, tuple[str, Loc]] = {}
    ports: dict[tuple[str, int, str], str] = {}
    for name, settings in taperfile.machines.items():
        entries = settings.networks if settings.networks is not None else taperfile.defaults.networks or []
        subnets: dict[str, str] = {}
        for index, entry in enumerate(entries):
            loc = ("machines", name, "networks", index)
            where = _where(path, source.values.get(loc))
            if entry.private:
                ip = str(entry.private.ip)
                subnet = str(ip_network(f"{ip}/24", strict=False))
                if ip in addresses:
                    problems.append(
                        f"{where}{_dotted(loc)}: {ip} is also the address of machine `{addresses[ip][0]}`"
                    )
                addresses.setdefault(ip, (name, loc))
                if subnet in subnets:
                    problems.append(f"{where}{_dotted(loc)}: `{name}` already has {subnets[subnet]} in {subnet}")
                subnets[subnet] = ip
            if entry.forwarded_port:
                port = entry.forwarded_port
                key = (str(port.host_ip), port.host, port.protocol)
                if key in ports:
                    problems.append(
                        f"{where}{_dotted(loc)}: host port {port.host_ip}:{port.host}/{port.protocol} is "
                        f"already forwarded to machine `{ports[key]}`"
                    )
                ports.setdefault(key, name)
    return problems


def _check_synced_folders(taperfile: Taperfile, source: _Source, path: Path) -> list[str]:
    """Host folders stay where the Taperfile says; guest paths are unique."""
    from tapers.host_folders import refusal

    problems = []
    root = path.parent.resolve()
    for loc, settings in _settings_with_loc(taperfile):
        seen: set[str] = set()
        for index, folder in enumerate(settings.synced_folders or []):
            here = loc + ("synced_folders", index)
            where = _where(path, source.values.get(here))
            if folder.guest in seen:
                problems.append(f"{where}{_dotted(here)}: `{folder.guest}` is synced twice")
            seen.add(folder.guest)
            if folder.disabled:
                continue
            written = Path(folder.host)
            try:
                resolved = (root / written).resolve()
            except (RuntimeError, OSError, ValueError) as exc:  # (a loop of links)
                problems.append(f"{where}{_dotted(here)}: `{folder.host}` has no real path ({exc})")
                continue
            if not written.is_absolute() and not resolved.is_relative_to(root):
                problems.append(
                    f"{where}{_dotted(here)}: `{folder.host}` leads outside the project folder (to {_display(resolved)}) "
                    "through a symbolic link or `..`; write the absolute path if that is what you mean"
                )
            elif (why := refusal(resolved)) is not None:
                problems.append(f"{where}{_dotted(here)}: `{folder.host}` can't be shared with a machine: {why}")
            elif not folder.create and not resolved.is_dir():
                problems.append(
                    f"{where}{_dotted(here)}: host folder {_display(resolved)} does not exist (and `create: false`)"
                )
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return None
        visiting.append(node)
        for child in graph[node]:
            found = visit(child)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return None

    for node in graph:
        found = visit(node)
        if found:
            return found
    return None


_STEP_FILES = {"shell": "path", "file": "source", "ansible": "playbook"}


def _check_steps(loc: Loc, steps: list[Any], source: _Source, path: Path) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for index, step in enumerate(steps):
        step_loc = loc + ("provision", index)
        if step.name is not None:
            if step.name in seen:
                where = source.values.get(step_loc + ("name",))
                problems.append(
                    f"{_where(path, where)}{_dotted(step_loc)}.name: two steps are named `{step.name}` "
                    f"(the other is step {seen[step.name] + 1}); names must be unique per machine"
                )
            seen[step.name] = index
        key = _STEP_FILES[step.kind]
        problems += _check_file(getattr(getattr(step, step.kind), key), step_loc + (step.kind, key), source, path)
    return problems


def _check_triggers(loc: Loc, triggers: list[Any], source: _Source, path: Path) -> list[str]:
    problems = []
    for index, trigger in enumerate(triggers):
        kind = "run" if trigger.run is not None else "run_remote"
        script = trigger.run or trigger.run_remote
        problems += _check_file(script.path, loc + ("triggers", index, kind, "path"), source, path)
    return problems


def _check_file(relative: str | None, file_loc: Loc, source: _Source, path: Path) -> list[str]:
    """A file a step or a trigger reads from the project (None: it reads none)."""
    if relative is None:
        return []
    where = f"{_where(path, source.values.get(file_loc))}{_dotted(file_loc)}"
    # A folder no machine may see is refused whether or not the file is there (first).
    denied = _step_file_problem(path.parent, relative)
    if denied is None and not _exists(path.parent / relative):
        return [f"{where}: `{relative}` does not exist (paths are relative to {_display(path.parent)}/)"]
    return [f"{where}: {denied}"] if denied is not None else []


def _step_file_problem(root: Path, relative: str) -> str | None:
    """What is wrong with a step's file, or None: a hidden folder first, then a missing file
    (None: the caller says so, with the folder paths are relative to), then its type."""
    from tapers.errors import TapersError
    from tapers.provision.api import refuse_hidden, step_file

    try:
        refuse_hidden(root, relative, "the file")
        if _exists(root / relative):
            step_file(root, relative, "the file")
    except TapersError as exc:
        return exc.message
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, say
        return False


__all__ = ["Position", "validate"]
