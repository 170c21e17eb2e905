"""A machine's resource limits: what the Taperfile asks for, and changing them on a
machine (live when it runs). What was set is recorded as applied, so a value that
differs from the Taperfile shows as drift in `status` until `up` puts the Taperfile's
value back or the Taperfile is changed to match."""

from __future__ import annotations

from tapers.backend.api import Backend, Limits
from tapers.errors import StateError
from tapers.record import Record
from tapers.taperfile import Machine

KEYS = ("cpus", "memory", "pids")


def wanted(machine: Machine) -> Limits:
    return Limits(cpus=machine.cpus, memory=machine.memory, pids=machine.pids)


def applied(record: Record | None) -> Limits:
    values = record.applied if record else {}
    return Limits(cpus=values.get("cpus"), memory=values.get("memory"), pids=values.get("pids"))


def set_limits(backend: Backend, container: str, limits: Limits) -> None:
    """Set and record `limits` (None: no limit)."""
    backend.set_limits(container, limits)
    info = backend.inspect(container)
    if info is None or info.record is None:
        raise StateError(f"container `{container}` disappeared while its limits were changed")
    backend.save_record(container, info.record.replace(applied={**info.record.applied, **limits._asdict()}))
