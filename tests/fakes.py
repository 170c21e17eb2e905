"""An in-memory Backend for fast tests of planning and execution logic.

Never the only test of a command: tests/integration runs the same commands on real LXC.
"""

from __future__ import annotations

import copy
from typing import Any

from tapers.backend.api import ContainerInfo, Forward, MachineSpec, State, container_info
from tapers.backend.base import BackendBase
from tapers.record import BoxRef, Record


def make_record(machine: str = "web", **fields: Any) -> Record:
    """A whole record, as `tapers up` writes one, with `fields` changed (for planner tests)."""
    values: dict[str, Any] = {
        "project": "shop", "project_dir": "/srv/shop", "machine": machine,
        "box": BoxRef("debian/bookworm", "1", "0" * 64), "address": "10.97.0.2", "mac": "00:16:3e:61:00:02",
        "user": "tapers", "home": "/home/tapers", "uid": 1000, "gid": 1000, "host_key": "ssh-ed25519 AAAAhost",
        "authorized_key": "", "applied": {}, "phase": "ready",
    }
    values.update(fields)
    return Record(**values)


class FakeNetworking:
    """Addresses as the host's network gives them (pure functions); what would touch the
    host is only noted in `events`."""

    forwards_outlive_containers = True

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.forwards: dict[str, list[Any]] = {}

    def prepare(self) -> None:
        self.events.append("network")

    def allocate(self, container: str, used: set[str]) -> Any:
        from tapers.backend import addresses

        return addresses.allocate(container, used, "10.97.0.0/16", "tapersbr0")

    def private(self, address: str) -> Any:
        from tapers.backend import addresses

        return addresses.private_config(address, "tp")

    def ensure_private(self, config: Any) -> None:
        self.events.append(f"bridge {config.bridge}")

    def release_unused_private(self) -> None:
        self.events.append("unused private networks released")

    def check_forwards(self, wanted: list[tuple[str, int, str, int, bool]]) -> None:
        pass

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Any]:
        self.forwards[container] = [Forward(ip, host, proto, guest_ip, guest) for ip, host, proto, guest, _ in wanted]
        return self.forwards[container]

    def unforward(self, container: str) -> None:
        self.events.append(f"unforward {container}")
        self.forwards.pop(container, None)

    def forwarded(self) -> set[str]:
        return set(self.forwards)


class FakeBackend(BackendBase):
    """The backend contract of BackendBase (state rules, errors) over dicts: the same
    guards as liblxc and LXD, so planning and engine tests can trust it (see
    tests/integration/test_backend_contract.py, which runs it beside the real ones)."""

    name = "fake"
    places_machines = False
    unprivileged_machines = True

    def __init__(self, events: list[str] | None = None) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.network = FakeNetworking(events if events is not None else [])

    def record(self, container: str) -> Record:
        """What tapers recorded on the container, parsed as a real backend's reader does."""
        found = container_info(container, State.STOPPED, self.containers[container]["record"]).record
        assert found is not None, f"{container} has no usable record"
        return found

    def _state(self, container: str) -> State | None:
        c = self.containers.get(container)
        return None if c is None else c["state"]

    def _list(self, prefix: str) -> list[ContainerInfo]:
        return [info for name in sorted(self.containers) if name.startswith(prefix) if (info := self._inspect(name))]

    def _inspect(self, container: str) -> ContainerInfo | None:
        c = self.containers.get(container)
        return None if c is None else container_info(container, c["state"], c["record"])

    def _create(self, spec: MachineSpec, record: Record) -> None:
        self.calls.append(f"create {spec.container}")
        self.containers[spec.container] = {
            "state": State.STOPPED,
            "record": record.to_json(),  # kept as text, as real backends do
            "spec": spec,
            "files": {f.path: f for f in spec.files},
        }

    def _save_record(self, container: str, record: Record) -> None:
        self.containers[container]["record"] = record.to_json()

    def _mount_records(self, container: str) -> list[dict[str, Any]]:
        from tapers.backend import staging

        c = self.containers[container]
        return staging.as_records(c["mounts"] if "mounts" in c else c["spec"].mounts if "spec" in c else ())

    def _start(self, container: str) -> None:
        self.calls.append(f"start {container}")
        self.containers[container]["state"] = State.RUNNING

    def _shutdown(self, container: str, timeout: float) -> bool:
        self.calls.append(f"stop {container}")
        self.containers[container]["state"] = State.STOPPED
        return True

    def _kill(self, container: str) -> None:
        self.calls.append(f"kill {container}")
        self.containers[container]["state"] = State.STOPPED

    def _freeze(self, container: str) -> None:
        self.calls.append(f"freeze {container}")
        self.containers[container]["state"] = State.FROZEN

    def _unfreeze(self, container: str) -> None:
        self.calls.append(f"unfreeze {container}")
        self.containers[container]["state"] = State.RUNNING

    def _set_limits(self, container: str, limits: Any, running: bool) -> None:
        self.calls.append(f"set limits {container}")
        self.containers[container]["limits"] = limits

    def _reconfigure(self, container: str, hostname: str, private: Any, mounts: Any, files: Any, nesting: bool,
                     raw: Any = None) -> None:
        self.calls.append(f"reconfigure {container}")
        self.containers[container]["files"].update({f.path: f for f in files})
        self.containers[container]["mounts"] = mounts

    def _usage(self, container: str) -> Any:
        from tapers.backend.api import Usage

        return Usage(cpu_ns=1, memory=1, memory_limit=None, pids=1, rx_bytes=0, tx_bytes=0)

    def _snapshot_save(self, container: str, name: str) -> None:
        c = self.containers[container]
        c.setdefault("snapshots", {})[name] = (copy.deepcopy(c["files"]), c["record"])

    def _snapshot_restore(self, container: str, name: str) -> None:
        c = self.containers[container]
        files, record = c["snapshots"][name]
        c["files"], c["record"] = copy.deepcopy(files), record

    def _snapshot_list(self, container: str) -> list:
        from tapers.backend.api import Snapshot

        return [Snapshot(name, "2026-01-01T00:00:00+00:00", 0) for name in sorted(self.containers[container].get("snapshots", {}))]

    def _snapshot_delete(self, container: str, name: str) -> None:
        del self.containers[container]["snapshots"][name]

    def _delete(self, container: str) -> None:
        self.calls.append(f"destroy {container}")
        del self.containers[container]

    def _boot_id(self, container: str) -> str:
        return str(self.containers[container].get("boots", 1))

    def _reboot(self, container: str) -> None:
        self.calls.append(f"reboot {container}")
        self.containers[container]["boots"] = self.containers[container].get("boots", 1) + 1

    def _run(self, container: str, argv: list[str], env: dict[str, str], terminal: bool) -> int:
        self.calls.append(f"run {container} {argv[0]}")
        if "KEY" in env:
            self.containers[container]["authorized"] = env["KEY"]
        return 0


class FakeGuest:
    """A machine as provisioners see it, in memory: scripts "run" by their content.

    A script containing `exit N` fails with N; every run is appended to `events`."""

    def __init__(self, machine: str, root, events: list[str]) -> None:
        import collections
        from pathlib import Path

        self.machine = machine
        self.root = root
        self.user = "tapers"
        self.home = "/home/tapers"
        self.hidden_from_plays: tuple = ()
        self.inventory = Path(root) / ".tapers" / "inventory"
        self.log_path = Path(root) / ".tapers" / "logs" / f"{machine}.log"
        self.tail = collections.deque(maxlen=15)
        self.files: dict[str, bytes] = {}
        self.events = events

    def begin(self, step) -> None:
        self.tail.clear()

    def put_bytes(self, data: bytes, remote: str, mode: int) -> None:
        self.files[remote] = data

    def put(self, source, remote: str, mode: int) -> None:
        self.files[remote] = source.read()

    def mkdir(self, remote: str, mode: int = 0o755) -> None:
        pass

    def run(self, command: str) -> int:
        import re

        script = next((data for path, data in self.files.items() if path in command), b"").decode()
        self.events.append(f"{self.machine}: {script.strip() or command}")
        self.tail.append(script.strip())
        match = re.search(r"exit (\d+)", script)
        return int(match.group(1)) if match else 0

    def capture(self, command: str) -> tuple[int, str]:
        return 0, "running\n"

    def run_play(self, argv, work, hidden, env) -> int:
        self.events.append(f"{self.machine}: host {argv[0]}")
        return 0

    def wait_for_reboot(self) -> None:
        self.events.append(f"{self.machine}: rebooted")

    def reboot(self) -> None:
        self.events.append(f"{self.machine}: reboot")

    def close(self) -> None:
        pass
