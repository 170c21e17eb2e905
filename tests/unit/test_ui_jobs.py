"""The panel's jobs keep a bounded output, whatever the command (or a machine) prints."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from tapers.ui import jobs
from tapers.ui.jobs import MAX_LINE, MAX_LINES, Job, Jobs


def followed(script: str) -> Job:
    """A job whose process is a Python script, followed to its end (as Jobs does)."""
    job = Job(1, "test", [sys.executable, "-c", script])
    job._process = subprocess.Popen(job.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", stdin=subprocess.DEVNULL)
    Jobs._follow(job)
    return job


def test_only_the_last_lines_are_kept_and_counted_from_the_first() -> None:
    job = followed(f"for i in range({MAX_LINES + 10}): print(i)")
    assert job.code == 0 and job.dropped == 10
    assert job.lines[0] == "10" and job.lines[-1] == str(MAX_LINES + 9) and len(job.lines) == MAX_LINES
    start = job.view(0)
    assert start["next"] == MAX_LINES + 10 and start["done"]
    assert start["lines"][0] == "(10 earlier lines are no longer kept)" and start["lines"][1] == "10"
    assert job.view(MAX_LINES + 9)["lines"] == [str(MAX_LINES + 9)]
    assert job.view(MAX_LINES + 10)["lines"] == []
    assert job.view(10**30)["lines"] == []


def test_a_long_line_arrives_in_pieces_and_nothing_more() -> None:
    job = followed(f"import sys; sys.stdout.write('x' * {3 * MAX_LINE} + '\\n' + 'y' * {MAX_LINE} + '\\nend\\n')")
    assert [len(line) for line in job.lines] == [MAX_LINE, MAX_LINE, MAX_LINE, MAX_LINE, 3]
    assert job.lines[-2] == "y" * MAX_LINE and job.lines[-1] == "end"


def test_output_that_is_not_utf8_is_replaced() -> None:
    job = followed("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe\\n')")
    assert job.lines == ["ok \ufffd\ufffd"]


def test_finished_jobs_are_forgotten_past_keep(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(jobs, "KEEP", 2)
    monkeypatch.setattr(jobs.subprocess, "Popen", lambda *args, **kwargs: _Done())
    runner = Jobs()
    started = []
    for number in range(5):
        started.append(runner.start(tmp_path / "Taperfile.yaml", f"job {number}", ["status"]))
        wait_done(started[-1])
    assert [runner.get(job.id) is not None for job in started] == [False, False, True, True, True]


class _Done:
    """A process that printed nothing and ended."""

    def __init__(self) -> None:
        self.stdout = io.StringIO("")

    def wait(self, timeout: float | None = None) -> int:
        return 0


def wait_done(job: Job) -> None:
    deadline = time.monotonic() + 10
    while not job.done:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.01)
