"""`TAPERS_PROFILE=1 tapers COMMAND`: where the command's time went, printed on stderr when
it ends. Each phase is one line (when it began, counted from the process's start, and how
long it took; a machine's phases carry its name), so a slow command can be reported with
the numbers that show why."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENABLED = os.environ.get("TAPERS_PROFILE", "") not in ("", "0")
_phases: list[tuple[float, float, str]] = []  # start, duration, what
_origin = time.perf_counter()


def _process_age() -> float:
    """Seconds since this process started (the kernel's clock-tick resolution)."""
    try:
        with open("/proc/self/stat") as stat:
            started = int(stat.read().rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as uptime:
            return float(uptime.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return 0.0


if ENABLED:
    _origin -= _process_age()  # phases count from the process's start: the interpreter's start-up shows


@contextmanager
def phase(what: str, subject: str | None = None) -> Iterator[None]:
    """Time the block as one phase (nothing at all when profiling is off)."""
    if not ENABLED:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        label = f"{subject}: {what}" if subject else what
        _phases.append((start - _origin, time.perf_counter() - start, label))


def report() -> None:
    """Print the phases (when profiling is on), in the order they began."""
    if not ENABLED:
        return
    import threading

    total = time.perf_counter() - _origin
    lines = [f"tapers profile ({threading.active_count()} threads left), seconds since the process started:"]
    first = min((start for start, _, _ in _phases), default=total)
    lines.append(f"  {0:7.3f}  {first:6.3f}  start-up (interpreter, imports)")
    lines += [f"  {start:7.3f}  {duration:6.3f}  {what}" for start, duration, what in sorted(_phases)]
    lines.append(f"  {total:7.3f}          total")
    sys.stderr.write("\n".join(lines) + "\n")
