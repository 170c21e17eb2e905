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


def listening_process(host_ip: str, port: int, protocol: str) -> str | None:
    """The process of this host listening on host_ip:port, if any (who holds it)."""
    import re
    import subprocess

    flag = "-Hltnp" if protocol == "tcp" else "-Hlunp"
    listed = subprocess.run(["ss", flag, f"sport = :{port}"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        fields = line.split()
        local = fields[3] if len(fields) > 3 else ""
        address = local.rsplit(":", 1)[0].split("%")[0].strip("[]")  # (`127.0.0.53%lo`, `[::]%lo`: bound to a device)
        if address in (host_ip, "0.0.0.0", "*", "::") or host_ip == "0.0.0.0":
            users = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
            return f"{users.group(1)} (pid {users.group(2)})" if users else f"a process listening on {local}"
    return None

