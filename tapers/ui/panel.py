"""What the panel shows: each project's machines as `tapers status` sees them, what
`tapers plan` would do to each, and their live use (the numbers of `tapers stats`) with
a short history for the graphs."""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path
from typing import Any

from tapers import limits
from tapers.backend.api import Backend
from tapers.errors import TapersError
from tapers.observe import Observed, observe
from tapers.project import CONTAINER_PREFIX, Project, open_project
from tapers.status import status_rows

HISTORY = 120  # samples kept per machine (two minutes at one a second)
PLAN_EVERY = 3.0  # seconds a computed plan is reused
IDLE_AFTER = 15.0  # seconds without a page asking, after which sampling pauses


class Panel:
    def __init__(self, backend: Backend, taperfile: Path | None, interval: float = 1.0) -> None:
        self.backend = backend
        self.taperfile = taperfile  # None: every tapers project on the host (`tapers ui --all`)
        self.interval = interval
        self._history: dict[str, collections.deque[dict[str, Any]]] = {}
        self._containers: set[str] = set()  # what the sampler watches
        self._plans: dict[str, tuple[float, str, dict[str, list[str]]]] = {}
        self._asked = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- projects -------------------------------------------------------------------------

    def taperfiles(self) -> list[Path]:
        if self.taperfile is not None:
            return [self.taperfile]
        from tapers.taperfile import find_taperfile

        found = []
        for info in self.backend.list(prefix=CONTAINER_PREFIX):
            folder = (info.record or {}).get("project_dir")
            if folder and Path(folder).is_dir():
                try:
                    path = find_taperfile(start=Path(folder))
                except TapersError:
                    continue
                if path not in found:
                    found.append(path)
        return found

    def project(self, project_id: str) -> Project:
        for path in self.taperfiles():
            project = open_project(explicit=path)
            if project.id == project_id:
                return project
        raise KeyError(project_id)

    # -- the view -------------------------------------------------------------------------

    def state(self, since: float = 0.0) -> dict[str, Any]:
        """Everything the page shows; graph points newer than `since` (a sample time)."""
        self._asked = time.monotonic()
        running: set[str] = set()
        projects = []
        for path in self.taperfiles():
            try:
                projects.append(self._project_view(path, since, running))
            except TapersError as exc:  # shown on the page, as the CLI would say it
                projects.append({"id": str(path.parent.name), "taperfile": str(path), "error": exc.message,
                                 "hint": exc.hint, "machines": []})
        with self._lock:
            self._containers = running
        return {"projects": projects, "now": time.time(), "interval": self.interval}

    def _project_view(self, path: Path, since: float, running: set[str]) -> dict[str, Any]:
        project = open_project(explicit=path)
        observed = observe(project, self.backend)
        plan = self._plan(project, observed)
        rows = status_rows(project, observed)
        for row in rows:
            info = observed.machines.get(row["machine"])
            machine = next((m for m in project.machines if m.name == row["machine"]), None)
            row["plan"] = plan.get(row["machine"], [])
            row["limits"] = {
                "taperfile": limits.wanted(machine)._asdict() if machine else None,
                "applied": limits.applied(info.record or {})._asdict() if info else None,
            }
            row["history"] = self._points(row["container"], since)
            if row["state"] == "running":
                running.add(row["container"])
        return {"id": project.id, "taperfile": str(project.loaded.path), "root": str(project.root), "machines": rows}

    def _plan(self, project: Project, observed: Observed) -> dict[str, list[str]]:
        """machine -> what `tapers plan` says `up` would do to it. Reused for a few seconds
        while the machines and the Taperfile stay as they were (provisioning scripts are
        read again when it expires)."""
        seen = json.dumps(
            [project.machines, [(i.name, str(i.state), i.record) for i in observed.machines.values()]],
            sort_keys=True, default=str,
        )
        cached = self._plans.get(project.id)
        if cached and cached[1] == seen and time.monotonic() - cached[0] < PLAN_EVERY:
            return cached[2]
        from tapers.engine import up_plan

        key = project.paths.public_key.read_text().strip() if project.paths.public_key.is_file() else ""
        by_machine: dict[str, list[str]] = {}
        try:
            plan = up_plan(project, self.backend, observed, None, key, provision="auto")
        except TapersError as exc:
            plan = None
            for machine in project.machines:
                by_machine[machine.name] = [f"cannot plan: {exc.message}"]
        for machine in project.machines if plan else ():
            by_machine[machine.name] = [action.what for action in plan.for_subject(machine.name)]
        self._plans[project.id] = (time.monotonic(), seen, by_machine)
        return by_machine

    def forget_plans(self) -> None:
        """After a command ran: the next view plans again."""
        self._plans.clear()

    def _points(self, container: str, since: float) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self._history.get(container, ()) if p["t"] > since]

    # -- live use -------------------------------------------------------------------------

    def run_sampler(self) -> None:
        """Sample running machines every `interval` while a page is watching."""
        from tapers import stats

        before: dict[str, Any] = {}
        while not self._stop.wait(self.interval):
            if time.monotonic() - self._asked > IDLE_AFTER:
                before = {}
                continue
            with self._lock:
                containers = {c: c for c in self._containers}
            after = stats.sample(self.backend, containers)
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
