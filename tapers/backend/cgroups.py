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


def live_items(limits: Limits) -> list[tuple[str, str]]:
    """(cgroup file, value) to apply `limits` to a running container; unset limits are lifted."""
    v2 = unified()
    items: list[tuple[str, str]] = []
    memory = str(limits.memory) if limits.memory is not None else ("max" if v2 else "-1")
    items.append(("memory.max" if v2 else "memory.limit_in_bytes", memory))
    quota = max(1000, int(limits.cpus * CPU_PERIOD_US)) if limits.cpus is not None else None
    if v2:
        items.append(("cpu.max", f"{quota if quota else 'max'} {CPU_PERIOD_US}"))
    else:
        items.append(("cpu.cfs_period_us", str(CPU_PERIOD_US)))
        items.append(("cpu.cfs_quota_us", str(quota) if quota else "-1"))
    items.append(("pids.max", str(limits.pids) if limits.pids is not None else "max"))
    return items


CONFIG_PREFIXES = ("lxc.cgroup.", "lxc.cgroup2.")
