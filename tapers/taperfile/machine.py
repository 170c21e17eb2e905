"""A machine with defaults applied: what the rest of tapers works with (no pydantic here)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BOX = "debian/bookworm"


@dataclass(frozen=True)
class Machine:
    name: str
    box: str
    hostname: str
    cpus: float | None
    memory: int | None
    pids: int | None
    primary: bool
    autostart: bool
