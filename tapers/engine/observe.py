"""Read reality: the project's containers as they are now, and what tapers recorded on them."""

from __future__ import annotations

from tapers.backend.api import Backend, ContainerInfo
from tapers.profile import phase
from tapers.project import Project


class Observed:
    """The project's containers, as found."""

    __slots__ = ("machines", "orphans", "foreign")

    def __init__(
        self,
        machines: dict[str, ContainerInfo] | None = None,  # machine name -> its container
        orphans: tuple[ContainerInfo, ...] = (),  # ours, but the machine left the Taperfile
        foreign: dict[str, ContainerInfo] | None = None,  # machine name -> a container not ours
    ) -> None:
        self.machines = machines or {}
        self.orphans = orphans
        self.foreign = foreign or {}


def is_ours(project: Project, info: ContainerInfo) -> bool:
    record = info.record
    return record is not None and record.project == project.id and record.project_dir == str(project.root)


def observe(project: Project, backend: Backend, listed: list[ContainerInfo] | None = None) -> Observed:
    """The project's machines as the backend has them (`listed`: every tapers container, as
    just read, for a caller that needed them all anyway)."""
    names = {project.container(m.name): m.name for m in project.machines}
    machines: dict[str, ContainerInfo] = {}
    foreign: dict[str, ContainerInfo] = {}
    orphans = []
    if listed is None:
        with phase("observe the machines"):
            found = backend.list(prefix=project.prefix)
    else:
        found = [info for info in listed if info.name.startswith(project.prefix)]
    for info in found:
        machine = names.get(info.name)
        if is_ours(project, info):
            if machine is not None:
                machines[machine] = info
            else:
                orphans.append(info)
        elif machine is not None:
            foreign[machine] = info
    return Observed(machines=machines, orphans=tuple(orphans), foreign=foreign)
