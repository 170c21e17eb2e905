"""The record: what tapers made and applied, kept with each container it creates (liblxc: a
`tapers.json` beside the container's config; LXD: the `user.tapers.record` key). The
host's containers and their records are the only state tapers has.

A record is parsed once, where a backend reads it, into a frozen `Record`; changes are
new records (`record.replace(...)`) saved whole. Records written by an older tapers are
read (the fields they lack get the values that tapers used); one written by a newer
tapers, or one that is not a record at all, is a `RecordError`, and the container is then
left alone.
"""

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

VERSION = 1  # the layout written; raise it, and migrate in `_migrate`, when a field changes meaning

# The phases of a machine's life, as recorded: a record is written `creating` before the
# container exists and `ready` once it is whole; `destroying` before it goes. A machine
# found in any phase but `ready` was interrupted: `up` makes it again.
CREATING, READY, DESTROYING = "creating", "ready", "destroying"


class RecordError(ValueError):
    """The record can't be used: not JSON, not a tapers record, or from a newer tapers."""


# NamedTuples, not dataclasses: `tapers status` loads these, and they cost nothing to define.


class BoxRef(NamedTuple):
    name: str
    version: str
    id: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class PortRecord(NamedTuple):
    """A forwarded port as made: `host` is the port chosen (after auto_correct), `requested`
    the one the Taperfile asked for."""

    host_ip: str
    host: int
    protocol: str
    guest: int
    requested: int


class Record(NamedTuple):
    project: str  # the project's id (a digest of its folder)
    project_dir: str
    machine: str
    box: BoxRef
    address: str  # on the NAT network: where tapers reaches the machine
    mac: str
    user: str  # the box's login user, its home and ids
    home: str
    uid: int
    gid: int
    host_key: str  # the machine's SSH host key (public), pinned
    authorized_key: str  # the project key the machine accepts
    applied: Mapping[str, Any]  # the settings applied (see engine/settings.py)
    hosts: str = ""  # digest of the /etc/hosts written into the machine
    created: str = ""  # ISO 8601
    phase: str = CREATING
    ports: tuple[PortRecord, ...] = ()
    provisioned: Mapping[str, str] = {}  # step key -> fingerprint of what ran (never changed in place)
    inputs: Mapping[str, Mapping[str, str]] = {}  # step key -> its inputs when it ran (to tell what changed)
    provision_failed: str | None = None  # the key of the step that failed last
    layers: tuple[str, ...] = ()  # the cached layers it was made from, the top one first (layer_cache.py)
    version: int = VERSION

    @property
    def ready(self) -> bool:
        return self.phase == READY

    def replace(self, **changes: Any) -> "Record":
        return self._replace(**changes)

    def to_json(self) -> str:
        data = self._asdict()
        data["tapers"] = data.pop("version")
        data["box"] = self.box._asdict()
        data["applied"], data["provisioned"] = dict(self.applied), dict(self.provisioned)
        data["inputs"] = {key: dict(found) for key, found in self.inputs.items()}
        data["ports"] = [port._asdict() for port in self.ports]
        data["layers"] = list(self.layers)
        if not self.layers:
            del data["layers"]
        if data["provision_failed"] is None:
            del data["provision_failed"]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "Record":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordError(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("tapers"), int) or isinstance(data["tapers"], bool):
            raise RecordError("not a tapers record")
        if data["tapers"] > VERSION:
            raise RecordError(f"written by a newer tapers (record version {data['tapers']}, this tapers reads "
                              f"up to {VERSION}); use that version")
        try:
            return _parse(_migrate(data))
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a value of the wrong shape
            raise RecordError(f"malformed ({type(exc).__name__}: {exc})") from None


def claims(text: str | bytes) -> tuple[str, str]:
    """(address, box id) that a record names even when it can't be used (a newer tapers',
    a damaged one): an address stays taken and a box stays in use while such a container
    exists. ("", "") when it names none."""
    try:
        data = json.loads(text)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    address, box = data.get("address"), data.get("box")
    box_id = box.get("id") if isinstance(box, dict) else None
    return (address if isinstance(address, str) else ""), (box_id if isinstance(box_id, str) else "")


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 records made before tapers 0.2 lack the login user's home and ids: tapers
    then assumed /home/USER and 1000:1000."""
    data = dict(data)
    user = data.get("user")
    if isinstance(user, str):
        data.setdefault("home", f"/home/{user}")
    data.setdefault("uid", 1000)
    data.setdefault("gid", 1000)
    return data


_TEXTS = ("project", "project_dir", "machine", "address", "mac", "user", "home", "host_key")


def _parse(data: dict[str, Any]) -> "Record":
    def text(key: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise RecordError(f"`{key}` is missing or not text")
        return value

    def number(value: Any, what: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise RecordError(f"{what} is not a whole number")
        return value

    box = data.get("box")
    if not isinstance(box, dict) or not all(isinstance(box.get(k), str) for k in ("name", "version", "id")):
        raise RecordError("`box` is missing or incomplete")
    applied, provisioned = data.get("applied") or {}, data.get("provisioned") or {}
    if not isinstance(applied, dict) or not isinstance(provisioned, dict):
        raise RecordError("`applied` or `provisioned` is not a mapping")
    inputs = data.get("inputs") or {}
    if not isinstance(inputs, dict) or not all(isinstance(found, dict) for found in inputs.values()):
        raise RecordError("`inputs` is not a mapping of mappings")
    ports = []
    for port in data.get("ports") or []:
        if not isinstance(port, dict):
            raise RecordError("a forwarded port is not a mapping")
        ports.append(PortRecord(
            host_ip=str(port.get("host_ip", "0.0.0.0")), host=number(port.get("host"), "a port's `host`"),
            protocol=str(port.get("protocol", "tcp")), guest=number(port.get("guest"), "a port's `guest`"),
            requested=number(port.get("requested", port.get("host")), "a port's `requested`"),
        ))
    failed = data.get("provision_failed")
    layers = data.get("layers") or []
    if not isinstance(layers, list):
        raise RecordError("`layers` is not a list")
    return Record(
        **{key: text(key) for key in _TEXTS},
        box=BoxRef(box["name"], box["version"], box["id"]),
        uid=number(data["uid"], "`uid`"),
        gid=number(data["gid"], "`gid`"),
        authorized_key=text("authorized_key", ""),
        applied=applied,
        hosts=text("hosts", ""),
        created=text("created", ""),
        phase=text("phase", CREATING),
        ports=tuple(ports),
        provisioned={str(k): str(v) for k, v in provisioned.items()},
        inputs={str(k): {str(n): str(d) for n, d in found.items()} for k, found in inputs.items()},
        provision_failed=failed if isinstance(failed, str) else None,
        layers=tuple(str(key) for key in layers),
        version=data["tapers"],
    )
