"""Names: every machine resolves every other machine of its project, by machine name and by
hostname, through an /etc/hosts that tapers writes (private address first, else the NAT one)."""

from __future__ import annotations

from collections.abc import Sequence

from tapers import digests
from tapers.backend.api import State
from tapers.engine.observe import Observed
from tapers.project import Project
from tapers.taperfile import Machine


Peers = Sequence[tuple[str, list[str]]]  # (address, names) of the machines an /etc/hosts lists


def _names(machine: str, hostname: str) -> list[str]:
    short = hostname.split(".")[0]
    return list(dict.fromkeys([hostname, short, machine]))


def table(project: Project, observed: Observed, planned: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """(address, names) of every created machine of the project, in Taperfile order; with
    `planned` (machine: the NAT address chosen for it), the machines about to be made too."""
    rows = []
    for machine in project.machines:
        if planned and machine.name in planned:
            address = (machine.private_ips or [planned[machine.name]])[0]
            rows.append((address, _names(machine.name, machine.hostname)))
            continue
        info = observed.machines.get(machine.name)
        record = info.record if info else None
        if record is None or not record.ready:
            continue
        applied = record.applied
        address = (applied.get("networks") or [record.address])[0]
        rows.append((address, _names(machine.name, applied.get("hostname") or machine.hostname)))
    return rows


def hosts_file(machine: Machine, peers: Peers) -> str:
    from tapers import sinks

    for address, names in [("", _names(machine.name, machine.hostname)), *peers]:
        for value in (address, *names):
            sinks.plain(value, "a name or address", f"/etc/hosts of `{machine.name}`", forbidden=" #")
    own = set(_names(machine.name, machine.hostname))
    lines = [
        "# Written by tapers: every machine of this project by name. Changes here are replaced.",
        "127.0.0.1\tlocalhost",
        f"127.0.1.1\t{' '.join(_names(machine.name, machine.hostname)[:2])}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    lines += [f"{address}\t{' '.join(n for n in names if n not in own)}" for address, names in peers
              if any(n not in own for n in names)]
    return "\n".join(lines) + "\n"


def digest(text: str) -> str:
    return digests.sha256(text.encode()).hexdigest()[:16]


def stale(project: Project, observed: Observed) -> bool:
    """Some running machine's /etc/hosts differs from what it should list now."""
    peers = table(project, observed)
    for machine in project.machines:
        info = observed.machines.get(machine.name)
        if info is None or info.state is not State.RUNNING or info.record is None:
            continue
        if info.record.ready and info.record.hosts != digest(hosts_file(machine, peers)):
            return True
    return False
