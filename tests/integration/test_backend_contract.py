"""The backend contract (tapers/backend/api.py, kept by tapers/backend/base.py), run on
liblxc, on LXD and on the in-memory fake alike: the fake passes the very test the real
engines pass, so the planning and engine tests that use it can trust it.

Each case says what a caller may rely on: what a missing container does, which calls are
no-ops, which states a call needs, that every failure is a BackendError naming the
container, that a record comes back as it was saved, and the networking calls."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapers.backend.api import Backend, Limits, MachineSpec, Mount, State
from tapers.errors import BackendError
from tapers.record import READY
from tests.fakes import FakeBackend, make_record
from tests.integration.conftest import BOX, LXD_CONFIG, RUN_ID, _sweep

BACKENDS = ["fake", "liblxc", "lxd"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "fake":
        yield FakeBackend()
        return
    box_home = request.getfixturevalue("box_home")
    monkeypatch.setenv("TAPERS_HOME", str(box_home.home))
    from tapers.backend import registry

    if request.param == "lxd":
        view = request.getfixturevalue("lxd_view")
        monkeypatch.setenv("TAPERS_CONFIG", str(LXD_CONFIG))
        made = registry.create("lxd")
    else:
        view = None
        made = registry.create("liblxc")
    yield made
    _sweep(f"tapers-{RUN_ID}-contract", view)


def spec_for(backend: Backend, container: str) -> MachineSpec:
    from pathlib import Path

    from tapers.boxes.cache import find_box

    box = find_box(BOX) if backend.name != "fake" else None
    backend.network.prepare()
    net = backend.network.allocate(container, set())
    return MachineSpec(container=container, rootfs=box.rootfs if box else Path("/nonexistent"),
                       hostname="contract", network=net, limits=Limits(memory=256 * 1024**2))


def test_a_missing_container(backend: Backend) -> None:
    """Reading finds nothing, stopping and destroying do nothing, everything else is a
    BackendError saying the container does not exist."""
    missing = f"tapers-{RUN_ID}-contract-missing"
    assert backend.inspect(missing) is None
    assert missing not in {info.name for info in backend.list(prefix=f"tapers-{RUN_ID}-contract")}
    assert backend.stop(missing, 5) is True
    backend.destroy(missing)
    assert backend.usage(missing) is None and backend.boot_id(missing) == ""
    calls = {
        "start": lambda: backend.start(missing),
        "freeze": lambda: backend.freeze(missing),
        "unfreeze": lambda: backend.unfreeze(missing),
        "save_record": lambda: backend.save_record(missing, make_record()),
        "set_limits": lambda: backend.set_limits(missing, Limits()),
        "reconfigure": lambda: backend.reconfigure(missing, "h", (), (), ()),
        "snapshot_list": lambda: backend.snapshot_list(missing),
        "snapshot_restore": lambda: backend.snapshot_restore(missing, "one"),
        "run": lambda: backend.run(missing, ["true"]),
        "reboot": lambda: backend.reboot(missing),
    }
    for what, call in calls.items():
        with pytest.raises(BackendError, match="does not exist") as refused:
            call()
        assert missing in refused.value.message, what
    with pytest.raises(BackendError) as refused:
        backend.run(missing, ["true"])
    assert refused.value.message == f"cannot run a command in container `{missing}`: it does not exist"


def test_the_life_of_a_container(backend: Backend) -> None:
    container = f"tapers-{RUN_ID}-contract-{backend.name}"
    spec = spec_for(backend, container)
    record = make_record("contract", address=spec.network.address, phase="creating",
                         applied={"memory": 256 * 1024**2}, provisioned={"setup": "f" * 64})
    backend.create(spec, record)
    with pytest.raises(BackendError, match="already exists"):
        backend.create(spec, record)
    info = backend.inspect(container)
    assert info is not None and info.state is State.STOPPED and info.record == record  # the record, unchanged
    with pytest.raises(BackendError, match="must be running"):
        backend.run(container, ["true"])

    backend.start(container)
    assert backend.inspect(container).state is State.RUNNING
    boot = backend.boot_id(container)
    assert boot
    backend.start(container)  # running already: nothing happens
    assert backend.boot_id(container) == boot
    with pytest.raises(BackendError, match="must be stopped"):
        backend.reconfigure(container, "other", (), (), ())
    with pytest.raises(BackendError, match="must be stopped"):
        backend.snapshot_restore(container, "one")

    backend.freeze(container)
    backend.freeze(container)  # frozen already: nothing happens
    assert backend.inspect(container).state is State.FROZEN
    assert backend.usage(container) is not None  # a suspended machine still has counters
    backend.start(container)  # a frozen machine is thawed, not booted again
    assert backend.inspect(container).state is State.RUNNING and backend.boot_id(container) == boot
    backend.unfreeze(container)  # running: nothing happens

    ready = record.replace(phase=READY)
    backend.save_record(container, ready)
    assert backend.inspect(container).record == ready
    assert backend.run(container, ["true"]) == 0
    if backend.name != "fake":  # the fake runs nothing
        assert backend.run(container, ["sh", "-c", "exit 3"]) == 3
        assert backend.usage(container).pids > 0

    backend.snapshot_save(container, "one")
    with pytest.raises(BackendError, match="already has a snapshot"):
        backend.snapshot_save(container, "one")
    assert [s.name for s in backend.snapshot_list(container)] == ["one"]

    if backend.name != "fake":  # systemd takes the halt signal once it has set itself up: boot first
        backend.run(container, ["systemctl", "is-system-running", "--wait"])
    assert backend.stop(container, 30) is True  # systemd shuts down cleanly
    assert backend.inspect(container).state is State.STOPPED
    assert backend.stop(container, 30) is True  # stopped already: nothing happens
    assert backend.usage(container) is None and backend.boot_id(container) == ""
    with pytest.raises(BackendError, match="has no snapshot `two`"):
        backend.snapshot_restore(container, "two")
    backend.save_record(container, ready.replace(provisioned={}))
    backend.snapshot_restore(container, "one")
    assert backend.inspect(container).record == ready  # the record as it was when saved
    backend.snapshot_delete(container, "one")
    with pytest.raises(BackendError, match="has no snapshot `one`"):
        backend.snapshot_delete(container, "one")

    # What it has mounted writable, as recorded (a play is kept from those folders).
    assert backend.writable_sources(container) == []
    with tempfile.TemporaryDirectory(prefix=f"tapers-{RUN_ID}-contract-") as folder:
        written, read = Path(folder) / "w", Path(folder) / "r"
        written.mkdir()
        read.mkdir()
        backend.reconfigure(container, "contract", (), (Mount(written, "/w"), Mount(read, "/r", readonly=True)), ())
        assert backend.writable_sources(container) == [written]
        backend.destroy(container)
    assert backend.inspect(container) is None and backend.writable_sources(container) == []
    backend.destroy(container)  # gone already: nothing happens


def test_a_library_error_becomes_a_backend_error(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the engine's library raises reaches the user as a BackendError naming the
    container and what tapers was doing, never as "unexpected error"."""
    container = f"tapers-{RUN_ID}-contract-broken"

    def broken(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(backend, "_state", broken)
    with pytest.raises(BackendError) as failed:
        backend.start(container)
    assert failed.value.message == f"container `{container}`: could not start it: Input/output error"


def test_networking_calls(backend: Backend) -> None:
    """Addresses are stable per name and avoid the used ones; a private address has its
    /24's network; a forward is listed while it exists."""
    net = backend.network
    first = net.allocate("tapers-x-web", set())
    assert net.allocate("tapers-x-web", set()) == first
    moved = net.allocate("tapers-x-web", {first.address})
    assert moved.address != first.address and moved.mac != first.mac and moved.gateway == first.gateway
    private = net.private("192.168.77.10")
    assert private.address == "192.168.77.10" and private.prefix == 24 and private.gateway == "192.168.77.1"
    if backend.name == "fake":
        return
    container = f"tapers-{RUN_ID}-contract-ports-{backend.name}"
    spec = spec_for(backend, container)
    backend.create(spec, make_record("ports", address=spec.network.address))
    backend.start(container)
    port = free_port()
    made = net.forward(container, [("127.0.0.1", port, "tcp", 80, False)], spec.network.address)
    assert [(f.host_ip, f.host, f.protocol, f.guest) for f in made] == [("127.0.0.1", port, "tcp", 80)]
    assert container in net.forwarded()
    net.unforward(container)
    assert container not in net.forwarded()
    backend.destroy(container)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

