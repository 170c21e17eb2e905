"""What the panel's buttons do: run the very `tapers` command a user would type (same
engine, same project lock, same plan, same messages), and keep its output for the page.

The output may come from a machine (a provisioning script runs there), so what is kept is
bounded: the last MAX_LINES lines, each of at most MAX_LINE characters (a longer line
arrives as several)."""

from __future__ import annotations

import collections
import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path

# button -> the command it runs for a machine
COMMANDS = {
    "up": ["up"],
    "halt": ["halt"],
    "reload": ["reload"],
    "suspend": ["suspend"],
    "resume": ["resume"],
    "provision": ["provision"],
    "destroy": ["destroy", "-f"],
}
KEEP = 50  # finished jobs kept for the page
MAX_LINES = 5000  # output lines kept per job (the oldest go first)
MAX_LINE = 4000  # characters of one output line


class Job:
    def __init__(self, number: int, title: str, argv: list[str]) -> None:
        self.id = str(number)
        self.title = title
        self.argv = argv
        self.code: int | None = None  # the exit code, once it finished
        self._process: subprocess.Popen[str] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=MAX_LINES)
        self._count = 0  # lines of output so far, kept or not
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.code is not None

    @property
    def lines(self) -> list[str]:
        """The output lines kept (the last MAX_LINES)."""
        with self._lock:
            return list(self._lines)

    @property
    def dropped(self) -> int:
        """Lines of output no longer kept."""
        with self._lock:
            return self._count - len(self._lines)

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line[:MAX_LINE])
            self._count += 1

    def view(self, start: int = 0) -> dict[str, object]:
        """The output from line `start` on (counting every line, kept or not)."""
        code = self.code  # read first: once it is set, every line is in
        with self._lock:
            first = self._count - len(self._lines)
            skip = min(max(0, start - first), len(self._lines))
            lines = list(itertools.islice(self._lines, skip, None))
            count = self._count
        if start < first:
            lines.insert(0, f"({first - start} earlier lines are no longer kept)")
        return {"id": self.id, "title": self.title, "lines": lines, "next": count,
                "done": code is not None, "code": code}


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, taperfile: Path, title: str, args: list[str]) -> Job:
        argv = [sys.executable, "-P", "-m", "tapers", "-f", str(taperfile), *args]
        with self._lock:
            job = Job(next(self._numbers), title, argv)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.done]
            for old in finished[: max(0, len(finished) - KEEP)]:
                del self._jobs[old.id]
        env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
        job._process = subprocess.Popen(
            argv, cwd=taperfile.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        threading.Thread(target=self._follow, args=(job,), daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running(self) -> list[Job]:
        return [job for job in list(self._jobs.values()) if not job.done]

    def wait_all(self, timeout: float) -> None:
        """At shutdown: let running commands finish (they hold the project lock)."""
        for job in self.running():
            if job._process is not None:
                try:
                    job._process.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass

    @staticmethod
    def _follow(job: Job) -> None:
        assert job._process is not None and job._process.stdout is not None
        cut = False  # the last piece read was a line cut at MAX_LINE characters
        while piece := job._process.stdout.readline(MAX_LINE):
            if not (cut and piece == "\n"):  # not the end of a line already shown
                job.add(piece.rstrip("\n"))
            cut = not piece.endswith("\n")
        job.code = job._process.wait()
