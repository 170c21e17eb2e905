"""The Backend protocol: what tapers needs from a container engine, free of engine details.

Contract for every implementation (liblxc, LXD, and the tests' fake):
- Idempotent: creating what exists with the same name is an error, but starting a
  running container, stopping a stopped one and destroying a missing one are no-ops.
- Every failure is a `BackendError` naming the container and the operation.
- What tapers applied to a container is stored *with* the container (`Record`), so
  the host's containers are the only state that matters.
"""

import enum
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tapers.record import Record, RecordError, claims

MACHINE_IDS = 65536  # the ids of one unprivileged machine (0..65535 inside), mapped to as many on the host

# Values are NamedTuples, cheap to define (see tapers/taperfile/machine.py). Annotations here are
# evaluated: below Backend.list, `list` in one is that method, so the builtin's are quoted.


class Check(NamedTuple):
    """One thing `tapers doctor` checks on a backend's host, with the exact fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: a warning, tapers still works


class State(str, enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    FROZEN = "frozen"
    BUSY = "busy"  # starting, stopping, freezing: a transition in progress

    def __str__(self) -> str:
        return self.value


class GuestFile(NamedTuple):
    """A file written into a machine's root filesystem before its first boot."""

    path: str  # absolute path inside the guest
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


class Limits(NamedTuple):
    cpus: float | None = None
    memory: int | None = None  # bytes
    pids: int | None = None


class NetworkConfig(NamedTuple):
    bridge: str
    address: str
    prefix: int
    gateway: str
    mac: str

    def with_broadcast(self) -> str:
        """`address/prefix broadcast`, as LXC's `ipv4.address` wants it (without, it sets a wrong one)."""
        import ipaddress

        interface = ipaddress.IPv4Interface(f"{self.address}/{self.prefix}")
        return f"{interface} {interface.network.broadcast_address}"


class Forward(NamedTuple):
    """A host port forwarded to a machine's port."""

    host_ip: str
    host: int
    protocol: str  # tcp | udp
    guest_ip: str
    guest: int


class Mount(NamedTuple):
    """A host folder bind-mounted into the machine (a synced folder)."""

    source: Path
    target: str  # absolute path in the guest
    readonly: bool = False
    # (guest uid, host uid, guest gid, host gid) swapped through an idmapped mount, so the
    # login user owns the person's (or folder owner's) files; None when already the same ids.
    idmap: tuple[int, int, int, int] | None = None


class MachineSpec(NamedTuple):
    """Everything needed to create one container."""

    container: str
    rootfs: Path  # the box's root filesystem (read-only lower layer)
    hostname: str
    network: NetworkConfig  # the NAT network (eth0, with the default route)
    limits: Limits
    files: tuple[GuestFile, ...] = ()
    private: tuple[NetworkConfig, ...] = ()  # host-only networks (eth1, eth2...; no gateway)
    mounts: tuple[Mount, ...] = ()
    placement: str | None = None  # a cluster member, where the engine has several
    privileged: bool = False  # True: its root is host root (else a host uid of its own range)
    nesting: bool = False  # containers can run inside it
    raw: dict[str, Any] | None = None  # the Taperfile's raw engine keys (`lxc:`, `lxd:`), checked, applied last
    # cached provisioning layers between the box and the machine's own writable layer, the
    # top one first (tapers/layer_cache.py); only where `caches_layers`
    layers: tuple[Path, ...] = ()


class LeaveOut(NamedTuple):
    """What stays out of a cached layer: a machine's own files (relative paths, no leading /)."""

    paths: frozenset[str]
    prefixes: tuple[str, ...] = ()  # e.g. etc/ssh/ssh_host_: every file whose path starts so

    def __call__(self, path: str) -> bool:
        return path in self.paths or path.startswith(self.prefixes)


class Snapshot(NamedTuple):
    name: str
    created: str  # ISO 8601
    size: int  # bytes on disk


class Usage(NamedTuple):
    """Counters of a running container at one moment."""

    cpu_ns: int  # CPU time used since it started
    memory: int  # bytes in use: the working set (usage less inactive page cache) where the backend can tell
    memory_limit: int | None
    pids: int
    rx_bytes: int  # received by the machine
    tx_bytes: int  # sent by the machine


class ContainerInfo(NamedTuple):
    name: str
    state: State
    record: Record | None = None  # what tapers recorded; None: no record, or an unusable one
    problem: str = ""  # why the record found can't be used (not JSON, from a newer tapers...)
    claimed: tuple[str, str] = ("", "")  # (address, box id) an unusable record still names

    @property
    def address(self) -> str:
        """The NAT address the container holds ("" when none is known)."""
        return self.record.address if self.record else self.claimed[0]

    @property
    def box_id(self) -> str:
        """The box it was made from ("" when none is known)."""
        return self.record.box.id if self.record else self.claimed[1]

    @property
    def machine(self) -> str:
        """The machine name tapers recorded (an orphan's, say), else the container's name."""
        return self.record.machine if self.record else self.name


def container_info(name: str, state: State, record_text: str | bytes | None) -> ContainerInfo:
    """A container as a backend found it, with its record parsed (here, for every backend)."""
    if not record_text:
        return ContainerInfo(name, state)
    try:
        return ContainerInfo(name, state, Record.from_json(record_text))
    except RecordError as exc:
        return ContainerInfo(name, state, problem=f"its tapers record can't be used: {exc}",
                             claimed=claims(record_text))


class Networking(Protocol):
    """The machines' networks on one engine: the NAT network (their default route and the
    address tapers reaches them at), host-only networks, and host ports forwarded to them.

    `forwards_outlive_containers`: a forward lives outside its container (a rule in the
    host's firewall, a process), so one a container lost without tapers is left behind."""

    forwards_outlive_containers: bool

    def prepare(self) -> None:
        """Before machines start: the NAT network exists and routes."""

    def allocate(self, container: str, used: set[str]) -> NetworkConfig:
        """A free NAT address for `container`, not in `used` (the caller holds the host's network lock)."""

    def private(self, address: str) -> NetworkConfig:
        """The host-only network a private address is on (nothing is created)."""

    def ensure_private(self, config: NetworkConfig) -> None:
        """The host-only network of `config` exists."""

    def release_unused_private(self) -> None:
        """Host-only networks no machine is on now go (other projects' machines still run;
        one that starts again makes its network again). The NAT network stays, with no
        machine on it too, as LXD's, Docker's and libvirt's do."""

    def check_forwards(self, wanted: list[tuple[str, int, str, int, bool]]) -> None:
        """Before anything is made: refuse forwards this engine can never make (an error)."""

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Forward]:
        """Forward (host_ip, host port, protocol, guest port, auto_correct) to the machine; the
        forwards made, with the host ports chosen (`auto_correct` moves a taken one)."""

    def unforward(self, container: str) -> None:
        """No host port leads to the machine any more."""

    def forwarded(self) -> set[str]:
        """The containers that host ports lead to now."""


class Backend(Protocol):
    name: str
    network: Networking
    places_machines: bool  # honours MachineSpec.placement (a cluster); otherwise it is ignored

    def list(self, prefix: str = "") -> list[ContainerInfo]:
        """Containers whose names start with `prefix`, sorted by name."""

    def inspect(self, container: str) -> ContainerInfo | None:
        """One container, or None when it does not exist."""

    def create(self, spec: MachineSpec, record: Record) -> None:
        """Create a stopped container from a box; `record` is saved with it first."""

    def save_record(self, container: str, record: Record) -> None:
        """Replace what tapers recorded on the container (atomically)."""

    def writable_sources(self, container: str) -> "list[Path]":
        """The host folders the container has mounted writable, as recorded when its mounts
        were set up (where the machine can't change it); [] when it has none or is gone."""

    def start(self, container: str) -> None: ...

    def stop(self, container: str, timeout: float) -> bool:
        """Clean shutdown; after `timeout` seconds force it. True when it shut down cleanly."""

    def freeze(self, container: str) -> None: ...

    def unfreeze(self, container: str) -> None: ...

    def set_limits(self, container: str, limits: Limits) -> None:
        """Record new limits for the next boot and, when running, apply them at once."""

    def reconfigure(
        self,
        container: str,
        hostname: str,
        private: tuple[NetworkConfig, ...],
        mounts: tuple[Mount, ...],
        files: tuple[GuestFile, ...],
        nesting: bool = False,
        raw: dict[str, Any] | None = None,
    ) -> None:
        """A stopped container gets a new hostname, private networks, mounts, nesting, raw
        engine keys and rewritten files."""

    def root_view(self, container: str) -> AbstractContextManager[Path]:
        """The machine's whole root filesystem (box and changes) as a folder to read, while
        the machine is held still (frozen if running); its state is restored afterwards."""

    def files_command(self, argv: "list[str]") -> "list[str]":
        """`argv`, a command reading the folder root_view gives, as one that may read it (a
        normal user's machines are read as their own root)."""

    def usage(self, container: str) -> Usage | None:
        """Resource counters of a running container (None when it is not running)."""

    def snapshot_save(self, container: str, name: str) -> None:
        """Keep the machine's disk as `name` (a running machine is frozen while copying)."""

    def snapshot_restore(self, container: str, name: str) -> None:
        """A stopped container's disk becomes snapshot `name` again."""

    def snapshot_list(self, container: str) -> "list[Snapshot]": ...

    def snapshot_delete(self, container: str, name: str) -> None: ...

    def destroy(self, container: str) -> None:
        """Stop (forcefully) and delete; deleting a missing container succeeds."""

    def boot_id(self, container: str) -> str:
        """A value that changes every time the container boots ("" when it is not running)."""

    def reboot(self, container: str) -> None:
        """Ask the running container's init to reboot (returns at once)."""

    def logins_refused(self, container: str) -> bool | None:
        """Whether the running guest still refuses logins because it is booting (its
        /run/nologin, which pam_nologin reads, exists); None when the backend can't tell."""

    interactive_run: bool  # `run(terminal=True)` reads this process's stdin (else: output only, once it ended)

    def run(self, container: str, argv: "list[str]", env: dict[str, str] | None = None, terminal: bool = False) -> int:
        """Run a command as root in a running container, without SSH; return its exit code.
        `terminal`: with this process's standard input and output (interactive where the
        engine can; else its output is printed when it ends)."""

    def console(self, container: str) -> None:
        """Attach this terminal to the running container's console until the user detaches."""

    def copy_mode(self) -> str:
        """How machines share the box: "overlay" (copy-on-write) or "copy"."""

    def caches_layers(self) -> bool:
        """Whether machines can stand on cached provisioning layers (MachineSpec.layers) and
        `save_layer` can make them."""

    def layer_scope(self) -> str:
        """Where this backend's layers live ("liblxc": in the cache's folders alone; an LXD
        server's: instances there too): a layer is used only where it was made."""

    def drop_layer(self, key: str) -> None:
        """The cache removed layer `key`: what this backend keeps of it goes too."""

    def remove_files(self, folder: Path) -> None:
        """Remove a folder of machine files this backend wrote outside a machine (a cached
        layer): a normal user's are owned by their machines' ids. What can't go is left."""

    def save_layer(self, container: str, target: Path, leave_out: LeaveOut, limit: int,
                   previous: Path | None = None) -> int:
        """Copy what the machine changed over its box and layers into the new folder `target`
        (held still meanwhile: frozen if running), owners as in the box, leaving out the paths
        `leave_out` names (relative, no leading /); the bytes copied. Over `limit` bytes it
        stops with a BackendError. `previous`: where the last layer saved from this machine
        now is; what the machine hasn't changed since may be shared with it."""
