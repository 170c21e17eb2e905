"""Resource limits as LXC config keys, for cgroup v2 hosts and for v1 (hybrid) hosts."""

from __future__ import annotations

from pathlib import Path

from tapers.backend.api import Limits

CPU_PERIOD_US = 100_000


def unified() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def config_items(limits: Limits) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    v2 = unified()
    if limits.memory is not None:
        items.append(("lxc.cgroup2.memory.max" if v2 else "lxc.cgroup.memory.limit_in_bytes", str(limits.memory)))
    if limits.cpus is not None:
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        if v2:
            items.append(("lxc.cgroup2.cpu.max", f"{quota} {CPU_PERIOD_US}"))
        else:
            items.append(("lxc.cgroup.cpu.cfs_period_us", str(CPU_PERIOD_US)))
            items.append(("lxc.cgroup.cpu.cfs_quota_us", str(quota)))
    if limits.pids is not None:
        items.append(("lxc.cgroup2.pids.max" if v2 else "lxc.cgroup.pids.max", str(limits.pids)))
    return items
