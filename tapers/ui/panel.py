"""What the panel shows: each project's machines as `tapers status` sees them, what
`tapers plan` would do to each, and their live use (the numbers of `tapers stats`) with
a short history for the graphs.

A project is known by its folder, never by its `name:` (two folders may say the same
name): the page and its forms name it by its key, a short hash of the folder's path.
With `--all`, the folders come from the records of the tapers machines on this host, and
each is read only if it really is the project of such a machine: the Taperfile in exactly
that folder (no parent's, no link out of it), which gives that machine's container name.
A project that cannot be read or shown is shown with its error; the others still are.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Union

from tapers.backend.api import Backend, ContainerInfo
from tapers.engine import limits
from tapers.engine.observe import Observed, is_ours, observe
from tapers.engine.plan import Plan
from tapers.engine.status import status_rows
from tapers.errors import TapersError
from tapers.paths import TAPERFILE_NAMES
from tapers.project import CONTAINER_PREFIX, Project, open_project
from tapers.record import Record

HISTORY = 120  # samples kept per machine (two minutes at one a second)
PLAN_EVERY = 3.0  # seconds a computed plan is reused
IDLE_AFTER = 15.0  # seconds without a page asking, after which sampling pauses

Opened = Union[Project, TapersError]  # a project, or why it cannot be read


class Panel:
    def __init__(self, backend: Backend, taperfile: Path | None, interval: float = 1.0) -> None:
        self.backend = backend
        self.taperfile = taperfile  # None: every tapers project on the host (`tapers ui --all`)
        self.interval = interval
        self._history: dict[str, collections.deque[dict[str, Any]]] = {}
        self._containers: set[str] = set()  # what the sampler watches
        self._plans: dict[str, tuple[float, str, Plan | TapersError]] = {}  # project key -> plan
        self._asked = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- projects -------------------------------------------------------------------------

    def projects(self, key: str | None = None) -> list[tuple[Path, Opened]]:
        """(Taperfile, the project or why it cannot be read) of each project shown; only the
        one named by `key` when given."""
        shown: list[tuple[Path, Opened]] = []
        for path, machines in self._candidates():
            if key is not None and project_key(path) != key:
                continue
            opened = _open(path)
            if self.taperfile is None and isinstance(opened, Project) and not _made_from(opened, path, machines):
                continue  # that folder's Taperfile does not make the machine that named it
            shown.append((path, opened))
        return shown

    def project(self, key: str) -> Project | None:
        """The project of that key, if this panel shows it and it can be read."""
        for _, opened in self.projects(key):
            if isinstance(opened, Project):
                return opened
        return None

    def _candidates(self) -> list[tuple[Path, list[ContainerInfo]]]:
        """(Taperfile, the tapers machines naming its folder) of each project to show."""
        if self.taperfile is not None:
            return [(self.taperfile, [])]
        folders: dict[str, list[ContainerInfo]] = {}
        for info in self.backend.list(prefix=CONTAINER_PREFIX):
            if info.record is not None and is_machine_record(info.name, info.record):
                folders.setdefault(info.record.project_dir, []).append(info)
        found = []
        for folder, machines in folders.items():
            path = taperfile_in(folder)
            if path is not None:
                found.append((path, machines))
        return found

    # -- the view -------------------------------------------------------------------------

    def state(self, since: float = 0.0) -> dict[str, Any]:
        """Everything the page shows; graph points newer than `since` (a sample time)."""
        self._asked = time.monotonic()
        running: set[str] = set()
        projects = []
        for path, opened in self.projects():
            projects.append(self._view_or_error(path, opened, since, running))
        with self._lock:
            self._containers = running
        return {"projects": projects, "now": time.time(), "interval": self.interval}

    def _view_or_error(self, path: Path, opened: Opened, since: float, running: set[str]) -> dict[str, Any]:
        if isinstance(opened, TapersError):
            return _error_view(path, opened.message, opened.hint)
        try:
            return self._project_view(opened, project_key(path), since, running)
        except TapersError as exc:  # shown on the page, as the CLI would say it
            return _error_view(path, exc.message, exc.hint, opened.id)
        except Exception as exc:  # noqa: BLE001  (one project that breaks must not hide the others)
            return _error_view(path, f"cannot show this project: {type(exc).__name__}: {exc}", None, opened.id)

    def _project_view(self, project: Project, key: str, since: float, running: set[str]) -> dict[str, Any]:
        observed = observe(project, self.backend)
        plan = self._plan(project, observed)
        rows = status_rows(project, observed, plan)
        ours = {info.name for info in (*observed.machines.values(), *observed.orphans)}
        for row in rows:
            info = observed.machines.get(row["machine"])
            machine = next((m for m in project.machines if m.name == row["machine"]), None)
            row["plan"] = ([a.what for a in plan.for_subject(row["machine"])] if isinstance(plan, Plan)
                           else [f"cannot plan: {plan.message}"])
            row["limits"] = {
                "taperfile": limits.wanted(machine)._asdict() if machine else None,
                "applied": limits.applied(info.record)._asdict() if info else None,
            }
            row["history"] = self._points(row["container"], since) if row["container"] in ours else []
            if row["state"] == "running":
                running.add(row["container"])
        return {"id": project.id, "key": key, "taperfile": str(project.loaded.path),
                "root": str(project.root), "machines": rows}

    def _plan(self, project: Project, observed: Observed) -> Plan | TapersError:
        """What `up` would do to the machines (status_plan; the row's `plan` and `out_of_date`
        come from it), or why it can't be planned. Reused for a few seconds
        while the machines and the Taperfile stay as they were (provisioning scripts are
        read again when it expires)."""
        seen = json.dumps(
            [project.machines, [(i.name, str(i.state), i.record and i.record.to_json()) for i in observed.machines.values()]],
            sort_keys=True, default=str,
        )
        plans_key = project_key(project.loaded.path)
        cached = self._plans.get(plans_key)
        if cached and cached[1] == seen and time.monotonic() - cached[0] < PLAN_EVERY:
            return cached[2]
        from tapers.engine import status_plan

        plan: Plan | TapersError
        try:
            plan = status_plan(project, self.backend, observed)
        except TapersError as exc:
            plan = exc
        self._plans[plans_key] = (time.monotonic(), seen, plan)
        return plan

    def forget_plans(self) -> None:
        """After a command ran: the next view plans again."""
        self._plans.clear()

    def _points(self, container: str, since: float) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self._history.get(container, ()) if p["t"] > since]

    # -- live use -------------------------------------------------------------------------

    def run_sampler(self) -> None:
        """Sample running machines every `interval` while a page is watching."""
        from tapers.engine import stats

        before: dict[str, Any] = {}
        while not self._stop.wait(self.interval):
            if time.monotonic() - self._asked > IDLE_AFTER:
                before = {}
                continue
            with self._lock:
                containers = {c: c for c in self._containers}
            try:
                after = stats.sample(self.backend, containers)
            except Exception:  # noqa: BLE001  (a machine gone mid-sample: the next round samples again)
                before = {}
                continue
            now = time.time()
            for row in stats.rates(before, after) if before else ():
                point = {"t": now, "cpu": round(row.cpu_percent, 1), "memory": row.memory,
                         "memory_limit": row.memory_limit, "pids": row.pids,
                         "rx": round(row.rx_rate), "tx": round(row.tx_rate)}
                with self._lock:
                    self._history.setdefault(row.machine, collections.deque(maxlen=HISTORY)).append(point)
            before = after

    def stop(self) -> None:
        self._stop.set()


# -- which projects, read how ------------------------------------------------------------


def project_key(taperfile: Path) -> str:
    """A project's name on the page and in its forms: a short hash of its folder's path."""
    return hashlib.sha256(str(taperfile.parent).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def is_machine_record(container: str, record: Record) -> bool:
    """Whether a container's record names it: the project, its folder (an absolute path) and
    the machine, which together give the container's name."""
    if not all((record.project, record.project_dir, record.machine)):
        return False
    named = f"{CONTAINER_PREFIX}{record.project}-{record.machine}"
    return os.path.isabs(record.project_dir) and container == named


def taperfile_in(folder: str) -> Path | None:
    """The Taperfile in exactly this folder, as `tapers` run there would read it (never a
    parent's), or None: none there, or it is a link out of the folder, or the folder's
    path is not its real one."""
    here = Path(folder)
    try:
        for name in TAPERFILE_NAMES:
            candidate = here / name
            if candidate.is_file():
                real = candidate.resolve()
                return real if real.parent == here else None
    except (OSError, RuntimeError):  # a folder this user may not read, a loop of links
        return None
    return None


def _made_from(project: Project, path: Path, machines: list[ContainerInfo]) -> bool:
    """Whether this project, read from `path`, is the one that made one of these machines."""
    if project.loaded.path != path or project.root != path.parent:
        return False
    containers = {project.container(m.name) for m in project.machines}
    return any(info.name in containers and is_ours(project, info) for info in machines)


def _open(path: Path) -> Opened:
    """The project of a Taperfile, or why it cannot be read (the loader bounds what it
    reads: size, YAML aliases, nesting)."""
    from tapers import project_files

    try:
        project_files.forget_project(path.resolve().parent)  # (the folder there now, not the one of the last look)
        return open_project(explicit=path)
    except TapersError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001  (a Taperfile the loader chokes on is that project's problem)
        return TapersError(f"cannot read {path}: {type(exc).__name__}: {exc}")


def _error_view(path: Path, message: str, hint: str | None, name: str | None = None) -> dict[str, Any]:
    return {"id": name or path.parent.name, "key": project_key(path), "taperfile": str(path),
            "root": str(path.parent), "error": message, "hint": hint, "machines": []}
