"""Choosing the host ports of forwards, the same way on every backend: a taken port is an
error naming its holder, or, with `auto_correct`, the next free port from 2200 (as Vagrant
does). Each backend says what "taken" means where its ports live."""

from __future__ import annotations

from typing import Callable

from tapers.backend.api import Forward
from tapers.errors import StateError

AUTO_RANGE = range(2200, 2300)  # where `auto_correct: true` looks for a free port, like Vagrant

Holder = Callable[[str, int, str], "str | None"]  # (host_ip, port, protocol) -> who holds it, or None


def choose(wanted: list[tuple[str, int, str, int, bool]], guest_ip: str, holder: Holder) -> list[Forward]:
    """Forwards for (host_ip, host, protocol, guest, auto_correct) entries."""
    chosen: list[Forward] = []
    for host_ip, host, protocol, guest, auto_correct in wanted:
        held_by = holder(host_ip, host, protocol)
        if held_by and auto_correct:
            used = {f.host for f in chosen}
            host = next((p for p in AUTO_RANGE if p not in used and not holder(host_ip, p, protocol)), 0)
            if not host:
                raise StateError(f"no free port in {AUTO_RANGE.start}-{AUTO_RANGE.stop - 1} for auto_correct")
        elif held_by:
            raise StateError(
                f"host port {host_ip}:{host}/{protocol} is already taken by {held_by}",
                hint="stop it, pick another `host:` port, or set `auto_correct: true` on the forwarded_port",
            )
        chosen.append(Forward(host_ip, host, protocol, guest_ip, guest))
    return chosen


def as_record(forward: Forward, requested: int) -> dict[str, object]:
    """How a forward is kept in the machine's record (with the port the Taperfile asked for)."""
    return {"host_ip": forward.host_ip, "host": forward.host, "protocol": forward.protocol, "guest": forward.guest,
            "requested": requested}
