"""A machine with defaults applied: what the rest of tapers works with (no pydantic here).

Immutable values that `tapers status` loads are NamedTuples, not dataclasses: a dataclass
costs a third of a millisecond to define and its module 6 ms to import, which is a third
of the time a whole `tapers status` may take. Their modules don't postpone annotations
(no `from __future__ import annotations`): a NamedTuple compiles each field's annotation
given as text, which cost a `status` about 5 % of its time.
"""

from typing import Any, NamedTuple

DEFAULT_BOX = "debian/bookworm"
PROJECT_MOUNT = "/tapers"  # where the project folder is in a machine unless its synced folders say otherwise


def split_box_ref(reference: str) -> tuple[str, str]:
    """`debian/bookworm@1.2` -> ("debian/bookworm", "1.2"); no version -> ""."""
    name, _, version = reference.partition("@")
    return name, version


class Step(NamedTuple):
    """One provisioning step of a machine."""

    index: int  # 1-based position in the machine's `provision:` list
    name: str | None
    kind: str  # shell | file | ansible
    run: str  # once | always | never
    reboot: bool
    options: dict[str, Any]  # the kind's keys as written (paths relative to the project)
    watch: tuple[str, ...] = ()  # globs of more project files whose change re-runs the step
    cache: bool = True  # what the machine is after it may be kept in the provisioning cache

    @property
    def key(self) -> str:
        """How its fingerprint is recorded: by name, else by position."""
        return self.name or f"#{self.index}"

    @property
    def label(self) -> str:
        named = f' "{self.name}"' if self.name else ""
        return f"step {self.index}{named} ({self.kind})"


TRIGGER_EVENTS = ("up", "halt", "reload", "destroy", "provision")


class Trigger(NamedTuple):
    """A command run before or after a tapers command acts on a machine: on the host
    (`run:`, in the project folder, as the person running tapers) or in the machine
    (`run_remote:`, over SSH, as a shell step)."""

    index: int  # 1-based position in the machine's `triggers:` list
    when: str  # before | after
    events: tuple[str, ...]  # of TRIGGER_EVENTS
    name: str | None
    on_host: bool  # `run:` (True) or `run_remote:` (False)
    options: dict[str, Any]  # inline or path, args, env (and privileged in the machine)
    on_error: str = "halt"  # halt: the machine's command stops there | continue: said, and go on

    @property
    def label(self) -> str:
        named = f' "{self.name}"' if self.name else ""
        return f"trigger {self.index}{named}"

    @property
    def where(self) -> str:
        return "on the host" if self.on_host else "in the machine"

    def as_step(self) -> Step:
        """A `run_remote:` trigger is run as a shell step is."""
        return Step(index=self.index, name=self.name, kind="shell", run="always", reboot=False, options=self.options)


class ForwardPort(NamedTuple):
    """`forwarded_port:` host_ip:host on the host reaches guest on the machine."""

    guest: int
    host: int
    host_ip: str = "127.0.0.1"
    protocol: str = "tcp"
    auto_correct: bool = False

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host} -> {self.guest}/{self.protocol}"


class Synced(NamedTuple):
    """A host folder (as written: relative to the project, or absolute) mounted in the guest."""

    host: str
    guest: str
    readonly: bool = False
    create: bool = True


class Machine(NamedTuple):
    name: str
    box: str
    hostname: str
    cpus: float | None
    memory: int | None
    pids: int | None
    primary: bool
    autostart: bool
    provision: tuple[Step, ...] = ()
    box_url: str | None = None  # where to get the box when it is not cached (archive or catalog)
    depends_on: tuple[str, ...] = ()
    private_ips: tuple[str, ...] = ()  # `private: {ip: ...}` networks
    ports: tuple[ForwardPort, ...] = ()  # `forwarded_port:` entries
    synced: tuple[Synced, ...] = ()  # synced folders, the project at /tapers included
    placement: str | None = None  # the LXD cluster member to run on (`placement: {member: ...}`)
    privileged: bool = False  # `privileged: true`: root in the machine is root on the host
    nesting: bool = False  # containers (Docker, LXC) can run inside the machine
    triggers: tuple[Trigger, ...] = ()
    raw: dict[str, Any] | None = None  # raw engine keys: {"lxc": {key: value}, "lxd": {"config": ..., "devices": ...}}

    def triggers_for(self, when: str, event: str) -> list[Trigger]:
        return [t for t in self.triggers if t.when == when and event in t.events]

    def step(self, wanted: str) -> Step | None:
        """A step by name, or by its number."""
        for step in self.provision:
            if step.name == wanted or str(step.index) == wanted:
                return step
        return None
