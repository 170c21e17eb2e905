"""A project: a loaded Taperfile, its identity on the host, and its generated files."""

from pathlib import Path
from typing import NamedTuple

from tapers.paths import ProjectPaths
from tapers.taperfile import LoadedTaperfile, Machine, find_taperfile, load_taperfile

CONTAINER_PREFIX = "tapers-"


class Project(NamedTuple):
    loaded: LoadedTaperfile
    id: str  # part of every container name: tapers-<id>-<machine>

    @property
    def root(self) -> Path:
        return self.loaded.root

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths(self.root)

    @property
    def machines(self) -> list[Machine]:
        return self.loaded.machines

    @property
    def prefix(self) -> str:
        return f"{CONTAINER_PREFIX}{self.id}-"

    def container(self, machine: str) -> str:
        return f"{self.prefix}{machine}"

    def select(self, names: list[str] | None, include_manual: bool = True) -> list[Machine]:
        """The machines named (in Taperfile order), or all of them.

        With no names and `include_manual=False`, machines with `autostart: false` are left out.
        """
        if not names:
            return [m for m in self.machines if include_manual or m.autostart]
        for name in names:
            self.loaded.machine(name)  # raises with the list of known machines
        return [m for m in self.machines if m.name in names]

    def default_machine(self) -> Machine:
        """`primary: true`, or the only machine."""
        for machine in self.machines:
            if machine.primary:
                return machine
        if len(self.machines) == 1:
            return self.machines[0]
        from tapers.errors import UsageError

        names = ", ".join(m.name for m in self.machines)
        raise UsageError(
            f"this project has several machines ({names}) and none is `primary: true`",
            hint="name one, e.g. `tapers ssh NAME`, or mark one `primary: true` in the Taperfile",
        )


def project_id(loaded: LoadedTaperfile) -> str:
    """`name:` from the Taperfile; otherwise the folder's name plus a short hash of its path,
    so two folders with the same name never share containers."""
    if loaded.name:
        return loaded.name
    from tapers import digests

    digest = digests.sha256(str(loaded.root).encode()).hexdigest()[:6]
    return f"{loaded.project[:20].strip('-')}-{digest}"


def open_project(explicit: Path | None = None, start: Path | None = None) -> Project:
    """The project of the Taperfile found from `start` (or `explicit`). Its folder's path ends
    up in config files and mounts: one with a control character is refused before anything."""
    from tapers import sinks
    from tapers.profile import phase

    with phase("read the Taperfile"):
        taperfile = find_taperfile(start=start, explicit=explicit)
        sinks.plain(taperfile.parent, "the project folder's path", "this project")
        loaded = load_taperfile(taperfile)
        return Project(loaded=loaded, id=project_id(loaded))
