"""Live resource use per machine, like `docker stats`: two samples make the rates."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tapers.backend.api import Backend, Usage


@dataclass(frozen=True)
class MachineStats:
    machine: str
    cpu_percent: float  # of one CPU
    memory: int
    memory_limit: int | None
    pids: int
    rx_bytes: int
    tx_bytes: int
    rx_rate: float  # bytes per second
    tx_rate: float


def sample(backend: Backend, containers: dict[str, str]) -> dict[str, tuple[float, Usage]]:
    """machine -> (time, counters) for the running ones (containers: machine -> container)."""
    result = {}
    for machine, container in containers.items():
        usage = backend.usage(container)
        if usage is not None:
            result[machine] = (time.monotonic(), usage)
    return result


def rates(before: dict[str, tuple[float, Usage]], after: dict[str, tuple[float, Usage]]) -> list[MachineStats]:
    stats = []
    for machine, (t1, now) in after.items():
        t0, then = before.get(machine, (t1, now))
        elapsed = max(t1 - t0, 1e-6)
        stats.append(
            MachineStats(
                machine=machine,
                cpu_percent=max(0.0, (now.cpu_ns - then.cpu_ns) / 1e9 / elapsed * 100),
                memory=now.memory,
                memory_limit=now.memory_limit,
                pids=now.pids,
                rx_bytes=now.rx_bytes,
                tx_bytes=now.tx_bytes,
                rx_rate=max(0.0, (now.rx_bytes - then.rx_bytes) / elapsed),
                tx_rate=max(0.0, (now.tx_bytes - then.tx_bytes) / elapsed),
            )
        )
    return stats
