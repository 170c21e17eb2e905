"""The Taperfile model (version 1). Keys are a public contract: see Taperfile.example.yaml."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from tapers.taperfile.machine import DEFAULT_BOX, ForwardPort, Machine, Step, Synced
from tapers.taperfile.units import parse_size

MACHINE_NAME = r"^[a-z][a-z0-9-]*$"
PROJECT_NAME = r"^[a-z0-9][a-z0-9-]*$"
_HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_BOX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?(@[0-9A-Za-z._-]+)?$")

# Keys of the Taperfile contract that this version of tapers does not implement yet.
NOT_YET_SUPPORTED: tuple[str, ...] = ()

MIN_MEMORY = 32 * 1024**2


def _size(value: object) -> int:
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError("is too small: a machine needs at least 32M")
    return size


def _none_is_empty(value: object) -> object:
    return {} if value is None else value


Size = Annotated[int, BeforeValidator(_size)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Scalar = str | int | float | bool


def _inline_script(value: object) -> object:
    return {"inline": value} if isinstance(value, str) else value


class ShellStep(_Strict):
    inline: str | None = None
    path: str | None = None
    args: list[Scalar] = Field(default_factory=list)
    env: dict[str, Scalar] = Field(default_factory=dict)
    privileged: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> ShellStep:
        if (self.inline is None) == (self.path is None):
            raise ValueError("give the script as `inline` or as `path` (exactly one of them)")
        return self


class FileStep(_Strict):
    source: str
    destination: str

    @field_validator("destination")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"`{value}` is not an absolute path in the guest (start it with /)")
        return value


class AnsibleStep(_Strict):
    playbook: str
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    limit: str | None = None
    tags: list[str] | str | None = None
    skip_tags: list[str] | str | None = None
    become: bool = False


class PrivateNetwork(_Strict):
    ip: IPv4Address

    @field_validator("ip")
    @classmethod
    def _host_address(cls, value: IPv4Address) -> IPv4Address:
        last = int(value) & 0xFF
        if last in (0, 1, 255):
            raise ValueError(
                f"{value} can't be a machine's address: in its /24, .0 is the network, .1 the host and .255 broadcast"
            )
        return value


Port = Annotated[int, Field(ge=1, le=65535)]


class ForwardedPort(_Strict):
    guest: Port
    host: Port
    host_ip: IPv4Address = IPv4Address("127.0.0.1")
    protocol: Literal["tcp", "udp"] = "tcp"
    auto_correct: bool = False


class NetworkEntry(_Strict):
    private: PrivateNetwork | None = None
    forwarded_port: ForwardedPort | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkEntry:
        if (self.private is None) == (self.forwarded_port is None):
            raise ValueError("each entry is either `private: {ip: ...}` or `forwarded_port: {guest: ..., host: ...}`")
        return self


class SyncedFolder(_Strict):
    host: str
    guest: str
    readonly: bool = False
    disabled: bool = False
    create: bool = True  # a missing host folder is created (false: an error)

    @field_validator("guest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError(f"`{value}` is not an absolute path in the guest (and not /)")
        return value.rstrip("/")


STEP_KINDS = ("shell", "file", "ansible")


class ProvisionStep(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=60)] | None = None
    run: Literal["once", "always", "never"] = "once"
    reboot: bool = False
    shell: Annotated[ShellStep, BeforeValidator(_inline_script)] | None = None
    file: FileStep | None = None
    ansible: AnsibleStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ProvisionStep:
        kinds = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError("each step has exactly one of `shell`, `file` or `ansible`")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)


class Placement(_Strict):
    """Where a machine runs on an LXD cluster (liblxc ignores it, with a warning)."""

    member: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$", max_length=63)


class MachineSettings(_Strict):
    """The keys a machine (or `defaults:`) may set; unset keys inherit."""

    box: str | None = None
    box_url: str | None = None
    hostname: str | None = None
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: Size | None = None
    pids: int | None = Field(default=None, ge=16, le=4_194_304)
    primary: bool | None = None
    autostart: bool | None = None
    provision: list[ProvisionStep] | None = None
    depends_on: list[Annotated[str, Field(pattern=MACHINE_NAME, max_length=40)]] | None = None
    networks: list[NetworkEntry] | None = None
    synced_folders: list[SyncedFolder] | None = None
    placement: Placement | None = None


    @field_validator("box")
    @classmethod
    def _box_name(cls, value: str | None) -> str | None:
        if value is not None and not _BOX_NAME.match(value):
            raise ValueError(f"`{value}` is not a box name (like debian/bookworm or debian/bookworm@1.2)")
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is None:
            return value
        labels = value.split(".")
        if len(value) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
            raise ValueError(
                f"`{value}` is not a valid hostname: use letters, digits and hyphens, dot-separated"
            )
        return value


MachineName = Annotated[str, Field(pattern=MACHINE_NAME, max_length=40)]


class Taperfile(_Strict):
    version: Literal[1]
    name: Annotated[str, Field(pattern=PROJECT_NAME, max_length=30)] | None = None
    defaults: MachineSettings = MachineSettings()
    machines: dict[MachineName, Annotated[MachineSettings, BeforeValidator(_none_is_empty)]] = Field(
        min_length=1
    )


def resolve_machines(taperfile: Taperfile) -> list[Machine]:
    """Apply `defaults:` and built-in defaults to every machine, in definition order."""
    machines = []
    for name, settings in taperfile.machines.items():

        def pick(key: str, fallback: Any, settings: MachineSettings = settings) -> Any:
            for source in (settings, taperfile.defaults):
                value = getattr(source, key)
                if value is not None:
                    return value
            return fallback

        machines.append(
            Machine(
                name=name,
                box=pick("box", DEFAULT_BOX),
                box_url=pick("box_url", None),
                hostname=pick("hostname", name),
                cpus=pick("cpus", None),
                memory=pick("memory", None),
                pids=pick("pids", None),
                primary=bool(settings.primary),
                autostart=pick("autostart", True),
                provision=tuple(_step(index, step) for index, step in enumerate(pick("provision", []), 1)),
                depends_on=tuple(pick("depends_on", [])),
                private_ips=tuple(str(n.private.ip) for n in pick("networks", []) if n.private),
                ports=tuple(
                    ForwardPort(p.guest, p.host, str(p.host_ip), p.protocol, p.auto_correct)
                    for n in pick("networks", [])
                    if (p := n.forwarded_port)
                ),
                synced=_synced(pick("synced_folders", [])),
                placement=placement.member if (placement := pick("placement", None)) else None,
            )
        )
    return machines


def _step(index: int, step: ProvisionStep) -> Step:
    options = getattr(step, step.kind).model_dump(exclude_none=True)
    return Step(index=index, name=step.name, kind=step.kind, run=step.run, reboot=step.reboot, options=options)


PROJECT_MOUNT = "/tapers"


def _synced(folders: list[SyncedFolder]) -> tuple[Synced, ...]:
    """The folders to mount: the project at /tapers unless that guest path is given, then the rest."""
    given = {f.guest for f in folders}
    result = [] if PROJECT_MOUNT in given else [Synced(host=".", guest=PROJECT_MOUNT)]
    for folder in folders:
        if not folder.disabled:
            result.append(Synced(folder.host, folder.guest, folder.readonly, folder.create))
    return tuple(result)
