"""The provisioning cache in `up`: which cached layer a new machine starts from (planned
with the rest of `up`), and keeping a layer after each of its steps that can be kept.

Only a machine made in this very `up` adds layers, and only while the steps it runs are
the next ones of its chain: then its files are exactly the box and those steps, nothing a
person did by hand. What is a machine's own (its host keys, machine-id, hostname,
/etc/hosts, authorized keys, the files tapers writes into it at creation) stays out of
the layer and is made anew for each machine.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tapers import layer_cache
from tapers.layer_cache import Layer, Link

if TYPE_CHECKING:
    from tapers.backend.api import Backend, LeaveOut
    from tapers.events import Reporter
    from tapers.taperfile import Machine

# A machine's own files, whatever its steps did to them (relative to its root).
PER_MACHINE = (
    "etc/machine-id", "var/lib/dbus/machine-id", "var/lib/systemd/random-seed", "var/lib/systemd/credential.secret",
    "var/log/journal", "etc/hostname", "etc/hosts", "root/.bash_history",
    # who logged in, from where, what they ran with sudo: the machine's history, not its state
    "var/log/auth.log", "var/log/syslog", "var/log/wtmp", "var/log/btmp", "var/log/lastlog", "var/lib/dhcp",
)
PER_MACHINE_PREFIXES = ("etc/ssh/ssh_host_",)


class Start(NamedTuple):
    """Where a new machine's provisioning starts: its chain, and what the cache has of it."""

    links: tuple[Link, ...]
    count: int = 0  # the chain's first `count` steps come from `layer`
    layer: Layer | None = None

    @property
    def from_cache(self) -> tuple[int, ...]:
        """The steps (by number) a machine made now doesn't run: the cache holds them."""
        return tuple(link.step for link in self.links[:self.count])


class Caching:
    """What one `up` knows of the cache: each machine's chain and where it starts, and the
    chains of the machines made in it that are still adding layers."""

    def __init__(self, starts: dict[str, Start], fingerprints: dict[str, dict[str, str]],
                 inputs: dict[str, dict[str, dict[str, str]]], max_size: int) -> None:
        self.starts = starts
        self.fingerprints = fingerprints
        self.inputs = inputs
        self.max_size = max_size
        self._growing: dict[str, _Growing] = {}

    def made(self, machine: Machine, start: Start, leave_out: LeaveOut) -> None:
        """`machine` was just made from `start`: its next steps may add layers."""
        below = layer_cache.stack(start.layer) if start.layer else ()
        if len(below) >= layer_cache.MAX_STACK:
            return  # it stands on as many layers as a machine may: it adds none
        seconds = start.layer.seconds if start.layer else 0.0
        steps = start.layer.steps if start.layer else ()
        self._growing[machine.name] = _Growing(list(start.links[start.count:]), below, seconds, steps, leave_out)

    def step_done(self, machine: Machine, index: int, took: float, ran: str, container: str, backend: Backend,
                  reporter: Reporter, box: str) -> None:
        """Step `index` of `machine` succeeded, with the inputs whose fingerprint is `ran`:
        keep the machine as a layer when it is its chain's next step and ran what the chain
        says. A layer that can't be kept is said, and `up` goes on."""
        growing = self._growing.get(machine.name)
        if growing is None:
            return
        step = machine.provision[index - 1]
        if not growing.links or growing.links[0].step != index:
            del self._growing[machine.name]  # a step outside the chain ran: no layer after it
            return
        if ran != self.fingerprints.get(machine.name, {}).get(step.key):
            del self._growing[machine.name]  # what it read changed since the plan: not what the key says
            reporter.line(machine.name, f"{step.label} not kept in the provisioning cache: its files changed "
                                        "while `up` ran")
            return
        link = growing.links.pop(0)
        growing.seconds += took
        growing.steps += (step.label,)
        started = time.monotonic()
        leave_out = growing.leave_out
        filled: list[bool] = []

        def fill(disk):  # type: ignore[no-untyped-def]
            filled.append(True)
            return backend.save_layer(container, disk, leave_out, self.max_size, growing.previous)

        from tapers.errors import TapersError
        from tapers.taperfile.units import human_size, printable

        try:
            layer, ours = layer_cache.publish(link.key, growing.below, growing.steps, growing.seconds, box, fill,
                                              backend.layer_scope(), backend.remove_files)
            # the next layer holds this one's files too (the machine's layer grows): those the
            # machine doesn't touch meanwhile are shared with this one (when it is ours), not copied
            growing.previous = layer.disk if layer is not None and ours and filled else None
            if layer is None:
                return
            size = f"{human_size(layer.size)}, " if layer.size else ""  # (LXD's dir pools can't tell)
            reporter.line(machine.name, f"kept in the provisioning cache after {step.label.split(' (')[0]} "
                                        f"({size}{time.monotonic() - started:.1f} s)")
            for gone in layer_cache.prune(self.max_size, lambda: in_use(backend), backend.layer_scope(),
                                          backend.drop_layer, backend.remove_files):
                reporter.line("cache", f"pruned a layer of {gone.box} used least recently ({human_size(gone.size)}): "
                                       f"the cache is bounded to {human_size(self.max_size)}")
        except (TapersError, OSError) as exc:
            self._growing.pop(machine.name, None)
            reporter.line(machine.name, f"{step.label} not kept in the provisioning cache: {printable(str(exc))}")


class _Growing:
    def __init__(self, links: list[Link], below: tuple[str, ...], seconds: float, steps: tuple[str, ...],
                 leave_out: LeaveOut) -> None:
        self.links = links
        self.below = below
        self.seconds = seconds
        self.steps = steps
        self.leave_out = leave_out
        self.previous: Path | None = None  # the last layer saved from this machine (this `up`)


def leave_out(files: tuple[str, ...]) -> LeaveOut:
    """What stays out of a machine's layers: PER_MACHINE and the files tapers wrote at its creation."""
    from tapers.backend.api import LeaveOut

    return LeaveOut(frozenset({*PER_MACHINE, *(path.lstrip("/") for path in files)}), PER_MACHINE_PREFIXES)


def starts(machines: list[Machine], fingerprints: dict[str, dict[str, str]],
           inputs: dict[str, dict[str, dict[str, str]]], scope: str) -> dict[str, Start]:
    """Each machine's chain on the backend of `scope` (its box must be in the box cache) and
    the longest part of it the cache holds."""
    from tapers.boxes.cache import find_box
    from tapers.provision.api import UNRESOLVED

    result = {}
    for machine in machines:
        if not any(layer_cache.cacheable(step) for step in machine.provision):
            continue
        box = find_box(machine.box)
        if box is None:
            continue
        unresolved = frozenset(key for key, found in inputs.get(machine.name, {}).items()
                               if any(name.startswith(UNRESOLVED) for name in found))
        links = tuple(layer_cache.chain(box_identity(box.meta), machine, fingerprints.get(machine.name, {}), scope,
                                        unresolved))
        found = layer_cache.longest(list(links))
        result[machine.name] = Start(links, *found) if found else Start(links)
    return result


def box_identity(meta: dict) -> str:  # type: ignore[type-arg]
    """What the chain starts from: the box's files (their digest), else its id."""
    return str(meta.get("tree") or meta["id"])


def in_use(backend: Backend) -> set[str]:
    """The layers machines on this host stand on (from their records). A machine whose record
    can't be read may stand on any: then all are."""
    from tapers.project import CONTAINER_PREFIX

    machines = backend.list(prefix=CONTAINER_PREFIX)
    if any(info.record is None for info in machines):
        return {layer.key for layer in layer_cache.list_layers()}
    return {key for info in machines if info.record for key in info.record.layers}
