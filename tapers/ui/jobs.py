"""What the panel's buttons do: run the very `tapers` command a user would type (same
engine, same project lock, same plan, same messages), and keep its output for the page."""

from __future__ import annotations

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


class Job:
    def __init__(self, number: int, title: str, argv: list[str]) -> None:
        self.id = str(number)
        self.title = title
        self.argv = argv
        self.lines: list[str] = []
        self.code: int | None = None  # the exit code, once it finished
        self._process: subprocess.Popen[str] | None = None

    @property
    def done(self) -> bool:
        return self.code is not None

    def view(self, start: int = 0) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "lines": self.lines[start:], "next": len(self.lines),
                "done": self.done, "code": self.code}


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, taperfile: Path, title: str, args: list[str]) -> Job:
        argv = [sys.executable, "-m", "tapers", "-f", str(taperfile), *args]
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
        for line in job._process.stdout:
            job.lines.append(line.rstrip("\n"))
        job.code = job._process.wait()
