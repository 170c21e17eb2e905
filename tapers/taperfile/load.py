"""Find and load a Taperfile.

Validating (YAML with positions, pydantic) costs more than everything else a quick
command like `tapers status` does, so the result of a successful validation is kept in
`.tapers/taperfile.json`, with the exact text of the Taperfile and its override (and the
tapers version) it was made from. Any change to either file, or a different tapers,
validates again. Deleting the cache is always safe.
"""

import errno
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from tapers import __version__, paths
from tapers.errors import TaperfileError, UsageError
from tapers.taperfile.machine import ForwardPort, Machine, Step, Synced, Trigger

CACHE_NAME = "taperfile.json"
MAX_TEXT_BYTES = 1024**2  # a Taperfile (or its override) past this is refused before it is parsed


class LoadedTaperfile(NamedTuple):
    path: Path
    root: Path
    machines: list[Machine]
    name: str | None  # `name:` as written in the Taperfile, if any
    project: str  # the project name: `name:`, or the folder's name normalised
    unset: tuple[str, ...] = ()  # variables the Taperfile uses that have no value (read as "")

    def machine(self, name: str) -> Machine:
        for machine in self.machines:
            if machine.name == name:
                return machine
        known = ", ".join(f"`{m.name}`" for m in self.machines)
        raise UsageError(
            f"no machine `{name}` in {display(self.path)}",
            hint=f"machines defined there: {known}",
        )


def display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def find_taperfile(start: Path | None = None, explicit: Path | None = None) -> Path:
    """The Taperfile in `start` or its nearest parent (like git finds .git), or `explicit`."""
    if explicit is not None:
        if not explicit.is_file():
            raise TaperfileError(f"no Taperfile at `{explicit}`", hint="check the path given to -f/--file")
        return explicit.resolve()
    here = (start or Path.cwd()).resolve()
    for up, folder in enumerate((here, *here.parents)):
        if folder != here and _open_to_all(folder):
            break  # like /tmp: anyone could have left a Taperfile there
        for name in paths.TAPERFILE_NAMES:
            candidate = folder / name
            if candidate.is_symlink():  # (tapers may run as root: its errors would show what it points to)
                raise TaperfileError(f"{display(candidate)} is a link: tapers reads no Taperfile through a link "
                                     "it finds in a folder", hint=f"pass the real file: -f {candidate.resolve()}")
            if candidate.is_file():
                if start is None:
                    _pin_from_here(folder, up)
                return candidate
    raise TaperfileError(
        f"no Taperfile.yaml in `{here}` or any parent folder",
        hint="run `tapers init` to write one here, or pass -f/--file PATH",
    )


def _pin_from_here(folder: Path, up: int) -> None:
    """The project found from the current folder is the folder `up` levels above it, as
    the kernel has it (not what the name `folder` leads to by the time it is read: someone
    who may rename it could put a link to another project there)."""
    from tapers import project_files

    try:
        st = os.stat("/".join([".."] * up) or ".")
    except OSError as exc:
        raise TaperfileError(f"cannot read the folder {folder}: {exc.strerror}") from None
    project_files.pin_project(folder, st)


def _open_to_all(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & 0o002)
    except OSError:
        return True


def normalise_project_name(folder_name: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", folder_name.lower()).strip("-")
    return (name or "project")[:30].strip("-") or "project"


def read_texts(path: Path) -> dict[Path, str]:
    """The Taperfile's text and its override's (when there is one), the Taperfile first,
    read from the project folder opened once, following no link: the folder tapers then
    works on (see project_files.project_folder)."""
    from tapers import project_files

    folder = project_files.project_folder(path.parent)  # (a real path: opened following no link, and pinned)
    try:
        texts = {path: _read(path, folder)}
        override = path.parent / paths.OVERRIDE_NAME
        try:
            os.stat(override.name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return texts
        texts[override] = _read(override, folder)
        return texts
    finally:
        os.close(folder)


def load_taperfile(path: Path) -> LoadedTaperfile:
    """Read, merge the override file, validate (or reuse the last validation of the same text).
    `path` as find_taperfile gives it: a real path (resolved again, a link swapped in since
    would lead elsewhere; see project_files.pin_project)."""
    if not path.is_absolute():
        path = path.resolve()
    texts = read_texts(path)
    source = "\0".join([_validator_version(), *(f"{file}\0{text}" for file, text in texts.items()),
                         *_variables_used(path.parent, texts)])
    cache = paths.ProjectPaths(path.parent).state / CACHE_NAME
    cached = _from_cache(cache, source)
    if cached is not None:
        return cached
    from tapers.taperfile.model import resolve_machines
    from tapers.taperfile.validate import validate

    unset: list[str] = []
    taperfile = validate(path, texts, unset)
    loaded = LoadedTaperfile(
        path=path,
        root=path.parent,
        machines=resolve_machines(taperfile),
        name=taperfile.name,
        project=taperfile.name or normalise_project_name(path.parent.name),
        unset=tuple(sorted(set(unset))),
    )
    _to_cache(cache, loaded, source)
    return loaded


def _variables_used(folder: Path, texts: dict[Path, str]) -> list[str]:
    """What the Taperfile's variables resolve from, for the cache: the values of the names
    its text mentions, and the `.env` file (nothing when the text has no `$`)."""
    if not any("$" in text for text in texts.values()):
        return []
    from tapers.taperfile import variables

    names = variables.mentioned(texts)
    if not names:
        return []
    try:
        _, env_text = variables.env_file_values(folder)
    except variables.VariableError:
        env_text = "\0unreadable"
    return [env_text, *(f"{name}={os.environ.get(name, chr(0))}" for name in sorted(names))]


def _validator_version() -> str:
    """The tapers version plus the validator's source times: a new tapers validates again."""
    here = Path(__file__).parent
    sources = ("model.py", "validate.py", "yaml_source.py", "machine.py", "units.py", "variables.py")
    stamps = [str((here / name).stat().st_mtime_ns) for name in sources]
    return ":".join([__version__, *stamps])


def _read(path: Path, folder: int) -> str:
    """The text of `path`, in the folder open at `folder`, newlines as Python reads text
    files; never more than MAX_TEXT_BYTES of it. A regular file, not through a link (tapers
    may run as root, and its errors quote what it read: a link to /etc/shadow would show
    it), never waited on (a pipe)."""
    import stat

    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        with os.fdopen(fd, "rb") as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise TaperfileError(f"{display(path)} is not a regular file: not a Taperfile tapers reads")
            if os.geteuid() == 0:
                from tapers.project_files import invoker_may_read

                if not invoker_may_read(fd, st):
                    raise TaperfileError(f"cannot read {display(path)}: you may not read it (tapers runs as root "
                                         "for you, and reads only what you could)")
            data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TaperfileError(f"{display(path)} is a link: tapers reads no Taperfile through a link",
                                 hint="make it the file itself") from None
        raise TaperfileError(f"cannot read {display(path)}: {exc.strerror}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise TaperfileError(
            f"{display(path)} is larger than {MAX_TEXT_BYTES // 1024**2} MiB: not a Taperfile tapers reads",
            hint="keep scripts and data in files the Taperfile names",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaperfileError(f"{display(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _seal(data: dict) -> str | None:
    """A MAC of the cached validation with a key only this host's tapers can read: `.tapers/`
    is in the project folder, which a machine can write, and a forged cache would skip the
    checks every machine name, hostname and path went through."""
    from tapers import digests

    key = _cache_key()
    if not key:
        return None  # no key to seal with: nothing is cached
    body = json.dumps({k: v for k, v in data.items() if k != "seal"}, sort_keys=True).encode()
    return digests.mac(key, body)


def _cache_key() -> bytes:
    path = paths.tapers_home() / "validation.key"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # made at the same moment by another tapers
            os.write(fd, os.urandom(32))
            os.close(fd)
            continue
        with os.fdopen(fd, "rb") as file:
            key = file.read(64)
        if len(key) == 32:
            return key
    return b""  # unreadable or damaged: nothing cached verifies (tapers validates again)


def _from_cache(cache: Path, source: str) -> LoadedTaperfile | None:
    from tapers import digests, project_files

    if not project_files.check_dir(cache.parent, create=False):
        return None
    try:
        data = json.loads(project_files.read_text(cache) or "null")
        seal = _seal(data) if data["source"] == source else None
        if seal is None or not digests.same(data["seal"], seal):
            return None
        return LoadedTaperfile(
            path=Path(data["path"]),
            root=Path(data["root"]),
            machines=[_machine_from_json(m) for m in data["machines"]],
            name=data["name"],
            project=data["project"],
            unset=tuple(data.get("unset", ())),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _machine_from_json(data: dict) -> Machine:
    return Machine(
        **{
            **data,
            "provision": tuple(Step(**step) for step in data["provision"]),
            "depends_on": tuple(data["depends_on"]),
            "private_ips": tuple(data["private_ips"]),
            "ports": tuple(ForwardPort(**port) for port in data["ports"]),
            "synced": tuple(Synced(**folder) for folder in data["synced"]),
            "triggers": tuple(Trigger(**{**t, "events": tuple(t["events"])}) for t in data.get("triggers", [])),
        }
    )


def _machine_to_json(machine: Machine) -> dict:
    return {
        **machine._asdict(),
        "provision": [step._asdict() for step in machine.provision],
        "ports": [port._asdict() for port in machine.ports],
        "synced": [folder._asdict() for folder in machine.synced],
        "triggers": [trigger._asdict() for trigger in machine.triggers],
    }


def _to_cache(cache: Path, loaded: LoadedTaperfile, source: str) -> None:
    """Only where `.tapers/` exists already: validating never creates files in a project."""
    from tapers import project_files

    if not project_files.check_dir(cache.parent, create=False):
        return
    data = {
        "source": source,
        "path": str(loaded.path),
        "root": str(loaded.root),
        "machines": [_machine_to_json(m) for m in loaded.machines],
        "name": loaded.name,
        "project": loaded.project,
        "unset": list(loaded.unset),
    }
    seal = _seal(data)
    if seal is None:
        return
    data["seal"] = seal
    try:
        project_files.write(cache, json.dumps(data), 0o644)
    except OSError:
        pass
