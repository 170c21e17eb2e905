"""A machine's settings: what the Taperfile asks for, what was applied (the record's
`applied`), and how the two differ. `plan` decides what to do about a difference;
`status` only shows it, so this module stays light."""

from typing import TYPE_CHECKING, Any, NamedTuple

from tapers.taperfile import Machine
from tapers.taperfile.machine import split_box_ref
from tapers.taperfile.units import format_size

if TYPE_CHECKING:
    from tapers.record import Record

LIVE_KEYS = ("cpus", "memory", "pids")  # applied to a running machine
RESTART_KEYS = ("hostname", "networks", "synced", "nesting", "raw")  # applied while it is stopped
UNRECORDED = {"nesting": False, "raw": None}  # what a machine of an older tapers, without the key, has


class Change(NamedTuple):
    key: str
    was: object
    now: object
    cls: str  # live | restart

    def __str__(self) -> str:
        return f"{self.key} {_show(self.key, self.was)} -> {_show(self.key, self.now)}"


def desired_settings(machine: Machine) -> dict[str, object]:
    """What a machine's record says was applied, for comparison on later runs."""
    return {
        "box": machine.box,
        "hostname": machine.hostname,
        "cpus": machine.cpus,
        "memory": machine.memory,
        "pids": machine.pids,
        "networks": list(machine.private_ips),
        "synced": [[s.host, s.guest, s.readonly] for s in machine.synced],
        "nesting": machine.nesting,
        "raw": machine.raw,
    }


def privileged_was(record: "Record") -> bool:
    """Whether the machine was made privileged (every machine was before tapers had `privileged:`)."""
    return record.applied.get("privileged", True) is not False


def settings_changes(machine: Machine, record: "Record") -> list[Change]:
    """What differs between the Taperfile and what was applied to the machine (box aside)."""
    applied = record.applied
    if not applied:  # nothing recorded as applied (a record of tapers before 0.1): nothing to compare
        return []
    wanted = desired_settings(machine)
    changes = []
    for key in RESTART_KEYS + LIVE_KEYS:
        was = applied.get(key, UNRECORDED.get(key))
        if was != wanted[key]:
            changes.append(Change(key, was, wanted[key], "restart" if key in RESTART_KEYS else "live"))
    return changes


def box_matches(wanted: str, record: "Record") -> bool:
    """The machine was made from the box the Taperfile names (and version, when pinned)."""
    name, version = split_box_ref(wanted)
    return record.box.name == name and (not version or record.box.version == version)


def _show(key: str, value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()  # as the Taperfile spells it
    if key == "memory" and isinstance(value, int):
        return format_size(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if key == "raw" and isinstance(value, dict):
        return _show_raw(value)
    return str(value)


def _show_raw(raw: dict[str, Any]) -> str:
    """Raw engine keys as `{lxc.environment=A=1, lxd config limits.processes=100, lxd device fuse}`."""
    lxd = raw.get("lxd", {})
    parts = [f"{key}={value}" for key, value in raw.get("lxc", {}).items()]
    parts += [f"lxd config {key}={value}" for key, value in lxd.get("config", {}).items()]
    parts += [f"lxd device {name}" for name in lxd.get("devices", {})]
    return "{" + ", ".join(parts) + "}"
