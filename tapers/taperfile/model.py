"""The Taperfile model (version 1). Keys are a public contract: see Taperfile.example.yaml.

A Taperfile may come from a cloned repository and tapers runs as root, so every value is
bounded here: names match their pattern in full (a trailing newline too), numbers are
finite and in range, and no string that ends up in a config line, a command, a path or an
inventory carries a control character. Only script-like content (an inline script, its
arguments and environment, Ansible variables) may have tabs and line breaks.
"""

from __future__ import annotations

import math
import re
from ipaddress import IPv4Address
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from tapers.taperfile.machine import (DEFAULT_BOX, PROJECT_MOUNT, TRIGGER_EVENTS, ForwardPort, Machine, Step, Synced,
                                     Trigger)
from tapers.taperfile.units import CONTROL, parse_size, printable, shown

# Matched in full (re.fullmatch) and ASCII only: `$` would let a trailing newline through,
# and re.IGNORECASE alone lets the Kelvin sign pass for a `k`.
MACHINE_NAME = r"[a-z][a-z0-9-]*"
PROJECT_NAME = r"[a-z0-9][a-z0-9-]*"
STEP_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
MEMBER_NAME = r"[A-Za-z0-9][A-Za-z0-9.-]*"
VARIABLE_NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # environment variables, Ansible groups
_HOSTNAME_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE | re.ASCII)
_BOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(@[0-9A-Za-z][0-9A-Za-z._-]*)?", re.ASCII)
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # CONTROL less tab and newline
_CONTROL = re.compile(CONTROL)  # (guest paths too: spaces are fine, the mount line's writer escapes them)

MIN_MEMORY = 32 * 1024**2
MAX_PIDS = 4_194_304  # the kernel's own ceiling (PID_MAX_LIMIT on 64-bit)
MAX_PATH = 4096  # PATH_MAX
MAX_PATH_PART = 255  # NAME_MAX: one part of a path
MAX_URL = 2048


def _size(value: object) -> int:
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError("is too small: a machine needs at least 32M")
    return size


def _none_is_empty(value: object) -> object:
    return {} if value is None else value


def _character(char: str) -> str:
    names = {"\n": "a line break", "\t": "a tab", "\r": "a carriage return", "\0": "a NUL character"}
    return f"{names.get(char, 'a control character')} ({printable(char)})"


def _one_line(value: str) -> str:
    """A value written on one line: no control characters at all."""
    bad = _CONTROL.search(value)
    if bad:
        raise ValueError(
            f"{shown(value)} contains {_character(bad.group())}: write it on one line, without control characters"
        )
    return value


def _text(value: str) -> str:
    """Script-like content: tabs and line breaks are fine, other control characters are not."""
    bad = _TEXT_CONTROL.search(value)
    if bad:
        raise ValueError(f"{shown(value)} contains {_character(bad.group())}, which tapers does not pass on")
    return value


def _matching(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{shown(value)} is not a valid {what}")
        return value

    return AfterValidator(check)


def _host_path(value: str) -> str:
    """A file or folder on the host, relative to the Taperfile's folder (or absolute)."""
    _one_line(value)
    if not value:
        raise ValueError("is empty: give a path relative to the Taperfile's folder")
    _path_lengths(value)
    return value


def _watch_glob(value: str) -> str:
    """A glob of project files (`watch:`): relative, inside the project."""
    _host_path(value)
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or all(part in ("", ".") for part in parts):
        raise ValueError(f"{shown(value)}: give a pattern of files relative to the Taperfile's folder, inside it "
                         "(no `..`)")
    if parts.count("**") > 1:
        raise ValueError(f"{shown(value)}: at most one `**` in a pattern")
    return value


def _guest_path(value: str) -> str:
    """An absolute path in the guest, normalised: no `//`, no `.` parts, no trailing `/`."""
    _one_line(value)
    if not value.startswith("/"):
        raise ValueError(f"{shown(value)} is not an absolute path in the guest (start it with /)")
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{shown(value)} has a `..` part: write the path it leads to")
    _path_lengths(value)
    return "/" + "/".join(parts)


def _path_lengths(value: str) -> None:
    if len(value) >= MAX_PATH:
        raise ValueError(f"{shown(value)} is too long: a path has fewer than {MAX_PATH} characters")
    if any(len(part) > MAX_PATH_PART for part in value.split("/")):
        raise ValueError(f"{shown(value)} has a part longer than {MAX_PATH_PART} characters")


def _scalar(value: object) -> object:
    """An argument or environment value: a string, a finite number or true/false."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if isinstance(value, (bool, int, float)):
        return value
    raise ValueError("expected a string, a number or true/false")


def _plain_data(value: object, where: str = "") -> object:
    """Ansible variables: what JSON can carry (strings, finite numbers, booleans, null, lists, mappings)."""
    at = f"in `{printable(where)}`: " if where else ""
    if isinstance(value, str):
        try:
            return _text(value)
        except ValueError as exc:
            raise ValueError(f"{at}{exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{at}{value} is not a finite number")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, list):
        for index, item in enumerate(value, 1):
            _plain_data(item, f"{where}[{index}]")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or _CONTROL.search(key):
                raise ValueError(f"{at}the key {shown(key)} is not a plain one-line name")
            _plain_data(item, f"{where}.{key}" if where else key)
        return value
    raise ValueError(f"{at}a {type(value).__name__} value can't be passed to Ansible: quote it to make it a string")


def _tags(value: object) -> object:
    """One tag, a comma-separated string of them, or a list."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str):
            raise ValueError("expected a tag name or a list of tag names")
        _one_line(item)
    return value


def _hostname(value: str) -> str:
    _one_line(value)
    labels = value.split(".")
    if len(value) > 253 or any(len(label) > 63 for label in labels):
        raise ValueError(f"{shown(value)} is too long for a hostname: at most 253 characters, 63 between dots")
    if not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{shown(value)} is not a valid hostname: use letters, digits and hyphens, dot-separated")
    return value


def _box_name(value: str) -> str:
    if not _BOX_NAME.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a box name (like debian/bookworm or debian/bookworm@1.2)")
    return value


def _box_url(value: str) -> str:
    """An http(s) URL, or a box file or catalog on this host (relative to the Taperfile's folder)."""
    _one_line(value)
    if not value or len(value) > MAX_URL or any(char.isspace() for char in value):
        raise ValueError(f"{shown(value)} is not a box address: give an http(s) URL or a path (no spaces)")
    if "://" in value:
        try:
            url = urlsplit(value)
        except ValueError:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"{shown(value)} is neither an http(s) URL nor a path: "
                "give one like https://boxes.example.com/web.json or boxes/web.box"
            )
    else:
        _path_lengths(value)
    return value


def _address_text(value: object) -> object:
    """`192.168.77.10`, not the number 3232255242 (nor `true`, which Python reads as 0.0.0.1)."""
    if not isinstance(value, (str, IPv4Address)):
        raise ValueError(f"{shown(value)} is not an IPv4 address: write it like 192.168.77.10")
    return value


def _version(value: object) -> object:
    if type(value) is not int:  # not true, not 1.0
        raise ValueError(f"unsupported version {shown(value)}: this tapers reads `version: 1`")
    return value


Line = Annotated[str, AfterValidator(_one_line)]
Text = Annotated[str, AfterValidator(_text)]
HostPath = Annotated[str, AfterValidator(_host_path)]
WatchGlob = Annotated[str, AfterValidator(_watch_glob)]
GuestPath = Annotated[str, AfterValidator(_guest_path)]
Size = Annotated[int, BeforeValidator(_size)]
Scalar = Annotated[str | int | float | bool, PlainValidator(_scalar)]
Tags = Annotated[list[str] | str, PlainValidator(_tags)]
MachineName = Annotated[
    str, Field(max_length=40), _matching(MACHINE_NAME, "machine name (a letter, then a-z, 0-9 and '-')")
]
VariableName = Annotated[str, Field(max_length=100), _matching(VARIABLE_NAME, "variable name")]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Address = Annotated[IPv4Address, BeforeValidator(_address_text)]
StepName = Annotated[
    str, Field(max_length=60), _matching(STEP_NAME, "step name: use letters, digits, '_', '.' and '-'")
]
MemberName = Annotated[
    str, Field(max_length=63), _matching(MEMBER_NAME, "cluster member name: use letters, digits, '.' and '-'")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _inline_script(value: object) -> object:
    return {"inline": value} if isinstance(value, str) else value


class Script(_Strict):
    """A script to run: `inline` text or a `path` in the project, with its arguments and
    environment (a trigger's `run:` on the host)."""

    inline: Text | None = None
    path: HostPath | None = None
    args: list[Scalar] = Field(default_factory=list)
    env: dict[VariableName, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> Script:
        if (self.inline is None) == (self.path is None):
            raise ValueError("give the script as `inline` or as `path` (exactly one of them)")
        return self


class ShellStep(Script):
    """A script run in the machine: a `shell:` step, a trigger's `run_remote:`."""

    privileged: bool = True


class FileStep(_Strict):
    source: HostPath
    destination: GuestPath


class AnsibleStep(_Strict):
    playbook: HostPath
    extra_vars: dict[Line, Annotated[Any, AfterValidator(_plain_data)]] = Field(default_factory=dict)
    groups: dict[VariableName, list[MachineName]] = Field(default_factory=dict)
    limit: Line | None = None
    tags: Tags | None = None
    skip_tags: Tags | None = None
    become: bool = False
    config_file: HostPath | None = None  # the ansible.cfg to use (ANSIBLE_CONFIG)
    vault_password_file: HostPath | None = None
    verbose: Annotated[int, Field(ge=0, le=4)] | bool = False  # true or 1-4: -v to -vvvv
    raw_arguments: list[Line] = Field(default_factory=list)  # more ansible-playbook arguments, as given
    requirements: HostPath | None = None  # a requirements.yml, installed into .tapers/ansible/ first


class PrivateNetwork(_Strict):
    ip: Address

    @field_validator("ip")
    @classmethod
    def _host_address(cls, value: IPv4Address) -> IPv4Address:
        last = int(value) & 0xFF
        if last in (0, 1, 255):
            raise ValueError(
                f"{value} can't be a machine's address: in its /24, .0 is the network, .1 the host and .255 broadcast"
            )
        return value


class ForwardedPort(_Strict):
    guest: Port
    host: Port
    host_ip: Address = IPv4Address("127.0.0.1")
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
    host: HostPath
    guest: str
    readonly: bool = False
    disabled: bool = False
    create: bool = True  # a missing host folder is created (false: an error)

    @field_validator("guest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        _one_line(value)
        if not value.startswith("/") or _guest_path(value) == "/":
            raise ValueError(f"{shown(value)} is not an absolute path in the guest (and not /)")
        return _guest_path(value)


STEP_KINDS = ("shell", "file", "ansible")


class ProvisionStep(_Strict):
    name: StepName | None = None
    run: Literal["once", "always", "never"] = "once"
    reboot: bool = False
    watch: list[WatchGlob] = Field(default_factory=list, max_length=100)  # more files whose change re-runs it
    cache: bool = True  # false: a new machine never starts from the cache at or after this step
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


def _listed(value: object) -> object:
    return [value] if isinstance(value, str) else value


Events = Annotated[list[Literal[TRIGGER_EVENTS]], BeforeValidator(_listed), Field(min_length=1)]  # type: ignore[valid-type]
# A trigger in the machine needs it running: not before it is up, not after it halted or went.
NO_MACHINE = {("before", "up"), ("after", "halt"), ("after", "destroy")}


class TriggerSettings(_Strict):
    name: StepName | None = None
    before: Events | None = None
    after: Events | None = None
    run: Annotated[Script, BeforeValidator(_inline_script)] | None = None
    run_remote: Annotated[ShellStep, BeforeValidator(_inline_script)] | None = None
    on_error: Literal["halt", "continue"] = "halt"

    @model_validator(mode="after")
    def _one_of_each(self) -> TriggerSettings:
        if (self.before is None) == (self.after is None):
            raise ValueError("say when with `before: EVENT` or `after: EVENT` (exactly one of them; EVENT is one of "
                             f"{', '.join(TRIGGER_EVENTS)}, or a list of them)")
        if (self.run is None) == (self.run_remote is None):
            raise ValueError("give what to run as `run:` (on the host) or `run_remote:` (in the machine), exactly one")
        when = "before" if self.before else "after"
        if self.run_remote is not None:
            for event in self.before or self.after or []:
                if (when, event) in NO_MACHINE:
                    raise ValueError(f"`run_remote:` can't run {when} `{event}`: the machine isn't running then "
                                     "(use `run:` on the host)")
        return self


def _refused_unless(why: str | None, what: str) -> None:
    if why is not None:
        raise ValueError(f"{what} {why}; refused")


def _lxc_key(key: str) -> str:
    from tapers.taperfile.raw_keys import lxc_refusal

    _refused_unless(lxc_refusal(key), shown(key))
    return key


def _lxd_config_key(key: str) -> str:
    from tapers.taperfile.raw_keys import lxd_config_refusal

    _refused_unless(lxd_config_refusal(key), shown(key))
    return key


def _lxd_device(device: dict[str, str]) -> dict[str, str]:
    from tapers.taperfile.raw_keys import lxd_device_refusal

    _refused_unless(lxd_device_refusal(device), "the device")
    return device


def _raw_text(value: object) -> object:
    """A raw key's value as the engine reads it: text (true/false, numbers as written)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


RawValue = Annotated[str, BeforeValidator(_raw_text), AfterValidator(_one_line), Field(max_length=4096)]


class LxdRaw(_Strict):
    """Raw LXD instance settings, applied after tapers' own (only keys that act inside the machine)."""

    config: dict[Annotated[str, AfterValidator(_lxd_config_key)], RawValue] = Field(default_factory=dict, max_length=100)
    devices: dict[Annotated[str, Field(max_length=40), _matching(MACHINE_NAME, "device name: a-z, 0-9 and '-'")],
                  Annotated[dict[str, RawValue], AfterValidator(_lxd_device)]] = Field(default_factory=dict,
                                                                                       max_length=20)


class Placement(_Strict):
    """Where a machine runs on an LXD cluster (liblxc ignores it, with a warning)."""

    member: MemberName


class MachineSettings(_Strict):
    """The keys a machine (or `defaults:`) may set; unset keys inherit."""

    box: Annotated[str, Field(max_length=200), AfterValidator(_box_name)] | None = None
    box_url: Annotated[str, AfterValidator(_box_url)] | None = None
    hostname: Annotated[str, AfterValidator(_hostname)] | None = None
    cpus: Annotated[float, Field(gt=0, le=1024, strict=True, allow_inf_nan=False)] | None = None
    memory: Size | None = None
    pids: Annotated[int, Field(ge=16, le=MAX_PIDS, strict=True)] | None = None
    primary: bool | None = None
    autostart: bool | None = None
    provision: list[ProvisionStep] | None = None
    depends_on: list[MachineName] | None = None
    networks: list[NetworkEntry] | None = None
    synced_folders: list[SyncedFolder] | None = None
    placement: Placement | None = None
    privileged: bool | None = None
    nesting: bool | None = None
    triggers: list[TriggerSettings] | None = None
    lxc: dict[Annotated[str, AfterValidator(_lxc_key)], RawValue] | None = Field(default=None, max_length=100)
    lxd: LxdRaw | None = None


ProjectName = Annotated[
    str,
    Field(max_length=30),
    _matching(PROJECT_NAME, "project name: use a-z, 0-9 and '-' (start with a letter or digit)"),
]


class Taperfile(_Strict):
    version: Annotated[Literal[1], BeforeValidator(_version)]
    name: ProjectName | None = None
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
                privileged=pick("privileged", False),
                nesting=pick("nesting", False),
                triggers=tuple(_trigger(index, t) for index, t in enumerate(pick("triggers", []), 1)),
                raw=_raw(pick("lxc", None), pick("lxd", None)),
            )
        )
    return machines


def _step(index: int, step: ProvisionStep) -> Step:
    options = getattr(step, step.kind).model_dump(exclude_none=True)
    return Step(index=index, name=step.name, kind=step.kind, run=step.run, reboot=step.reboot, options=options,
                watch=tuple(step.watch), cache=step.cache)




def _trigger(index: int, trigger: TriggerSettings) -> Trigger:
    script = trigger.run or trigger.run_remote
    assert script is not None
    return Trigger(index=index, when="before" if trigger.before else "after",
                   events=tuple(trigger.before or trigger.after or ()), name=trigger.name, on_host=trigger.run is not None,
                   options=script.model_dump(exclude_none=True), on_error=trigger.on_error)


def _raw(lxc: dict[str, str] | None, lxd: LxdRaw | None) -> dict[str, Any] | None:
    """The raw engine keys, only those given: {"lxc": {...}, "lxd": {"config": ..., "devices": ...}}."""
    raw: dict[str, Any] = {}
    if lxc:
        raw["lxc"] = dict(lxc)
    if lxd is not None and (lxd.config or lxd.devices):
        raw["lxd"] = lxd.model_dump()
    return raw or None


def _synced(folders: list[SyncedFolder]) -> tuple[Synced, ...]:
    """The folders to mount: the project at /tapers unless that guest path is given, then the rest."""
    given = {f.guest for f in folders}
    result = [] if PROJECT_MOUNT in given else [Synced(host=".", guest=PROJECT_MOUNT)]
    for folder in folders:
        if not folder.disabled:
            result.append(Synced(folder.host, folder.guest, folder.readonly, folder.create))
    return tuple(result)
