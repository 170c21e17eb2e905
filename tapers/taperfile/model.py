"""The Taperfile model (version 1). Keys are a public contract: see Taperfile.example.yaml."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from tapers.taperfile.machine import DEFAULT_BOX, Machine
from tapers.taperfile.units import parse_size
MACHINE_NAME = r"^[a-z][a-z0-9-]*$"
PROJECT_NAME = r"^[a-z0-9][a-z0-9-]*$"
_HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_BOX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?(@[0-9A-Za-z._-]+)?$")

# Keys of the Taperfile contract that this version of tapers does not implement yet.
NOT_YET_SUPPORTED = ("networks", "synced_folders", "provision", "depends_on")

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


class MachineSettings(_Strict):
    """The keys a machine (or `defaults:`) may set; unset keys inherit."""

    box: str | None = None
    hostname: str | None = None
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: Size | None = None
    pids: int | None = Field(default=None, ge=16, le=4_194_304)
    primary: bool | None = None
    autostart: bool | None = None
    networks: Any = None
    synced_folders: Any = None
    provision: Any = None
    depends_on: Any = None

    @field_validator(*NOT_YET_SUPPORTED)
    @classmethod
    def _not_yet(cls, value: object, info: Any) -> object:
        if value is not None:
            raise ValueError(f"`{info.field_name}` is not supported by this version of tapers yet")
        return value

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
                hostname=pick("hostname", name),
                cpus=pick("cpus", None),
                memory=pick("memory", None),
                pids=pick("pids", None),
                primary=bool(settings.primary),
                autostart=pick("autostart", True),
            )
        )
    return machines
