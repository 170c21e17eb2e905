"""The LXD backend (LXD or Incus, one host or a cluster), over its REST API with pylxd.

The same Taperfile runs here as on liblxc:
- a box becomes an LXD image once (a tarball of its files, uploaded), found again by the
  alias `tapers-<box digest>`; machines are containers made from it;
- the NAT network is an LXD managed bridge tapers creates (`tapers0`, 10.96.0.0/16 unless
  the user config says otherwise); addresses are chosen by tapers and set before init
  starts, as with liblxc; private networks are managed bridges too (`tp` + the /24 in hex);
- limits are `limits.cpu.allowance` (a CPU quota, as `cpus: 0.5` means), `limits.memory`
  and `limits.processes`, changed live; synced folders are `disk` devices (bound from
  the same idmapped views as on liblxc when LXD runs on this host), forwarded ports
  `proxy` devices; machines are unprivileged (`security.idmap.isolated`), as on liblxc;
- what tapers applied is recorded in the instance's `user.tapers.record` config key.

Commands run inside machines through LXD's non-interactive exec with recorded output
(its websocket exec over HTTPS failed about one call in five when we tried it).
The client's requests session ignores the environment (`trust_env = False`), so
REQUESTS_CA_BUNDLE or a proxy can't override the pinned server certificate.
"""

from __future__ import annotations

import sys
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tapers import digests, layer_cache
from tapers.backend import lxc_config, staging
from tapers.backend.base import BackendBase
from tapers.backend.api import (
    ContainerInfo,
    Record,
    container_info,
    GuestFile,
    LeaveOut,
    Limits,
    MachineSpec,
    Mount,
    NetworkConfig,
    Snapshot,
    State,
    Usage,
)
from tapers.errors import BackendError
from tapers.user_config import LxdSettings

RECORD_KEY = "user.tapers.record"
MOUNTS_KEY = "user.tapers.mounts"  # the synced folders, to stage at each start
IMAGE_ALIAS_PREFIX = "tapers-"
MOUNT_DEVICE_PREFIX = "tapers-mount-"
RAW_DEVICE_PREFIX = "raw-"  # the Taperfile's `lxd: devices:`
RAW_KEYS_KEY = "user.tapers.raw-keys"  # which config keys the Taperfile's `lxd: config:` set
_STATES = {"Running": State.RUNNING, "Stopped": State.STOPPED, "Frozen": State.FROZEN}


def connect(settings: LxdSettings) -> Any:
    """A pylxd client for the configured endpoint; errors say what to fix."""
    import pylxd
    from pylxd.client import get_session_for_url
    from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

    endpoint = settings.endpoint
    if endpoint.startswith("unix:"):
        endpoint = endpoint[5:]
    try:
        if settings.https:
            verify: Any = str(settings.server_cert) if settings.server_cert else True
            cert = (str(settings.client_cert), str(settings.client_key))
            session = get_session_for_url(endpoint, verify=verify, cert=cert)
            session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the pinned certificate
            client = pylxd.Client(endpoint=endpoint, session=session, project=settings.project, timeout=60)
        else:
            if not Path(endpoint).exists():
                raise BackendError(
                    f"no LXD socket at {endpoint}",
                    hint="is LXD running (`lxd waitready`)? Set `lxd: endpoint:` in the tapers config for another one",
                )
            client = pylxd.Client(endpoint=endpoint, project=settings.project, timeout=60)
            client.api.session.trust_env = False
    except (ClientConnectionFailed, LXDAPIException, OSError) as exc:
        raise BackendError(
            f"cannot reach LXD at {settings.endpoint}: {exc}",
            hint="check the endpoint, that the server trusts the client certificate "
            "(lxc config trust add), and the pinned server certificate",
        ) from None
    if settings.https and not client.trusted:
        raise BackendError(
            f"LXD at {settings.endpoint} does not trust tapers' client certificate {settings.client_cert}",
            hint=f"on the server: lxc config trust add {settings.client_cert}",
        )
    return client


class LxdBackend(BackendBase):
    name = "lxd"
    places_machines = True
    interactive_run = False  # LXD's interactive exec is a websocket (see _run)

    def __init__(self, settings: LxdSettings, client: Any = None) -> None:
        self.settings = settings
        self.client = client if client is not None else connect(settings)
        from tapers.backend.lxd.networking import LxdNetworking

        self.network = LxdNetworking(self)

    @property
    def local(self) -> bool:
        """LXD runs on this host: synced folders can be staged here with their ids swapped."""
        endpoint = self.settings.endpoint
        return not self.settings.https or endpoint.split("//", 1)[1].split(":")[0] in ("127.0.0.1", "localhost", "[::1]")

    # -- the API, raw ------------------------------------------------------------------

    def _api(self, *parts: str) -> Any:
        node = self.client.api
        for part in parts:
            node = node[part]
        return node

    def _call(self, what: str, container: str, method: str, *parts: str, wait: bool = True, **kwargs: Any) -> Any:
        """One API call; an async operation is waited for; failures become BackendErrors."""
        from pylxd.exceptions import LXDAPIException

        try:
            response = getattr(self._api(*parts), method)(**kwargs)
            data = response.json()
            if wait and data.get("type") == "async":
                return self._wait(data["operation"], what, container)
            return data.get("metadata")
        except LXDAPIException as exc:
            raise BackendError(f"container `{container}`: could not {what}: {message(exc)}") from None

    def _wait(self, operation: str, what: str, container: str) -> Any:
        from pylxd.exceptions import LXDAPIException

        op_id = operation.split("?")[0].rsplit("/", 1)[-1]
        try:
            result = self._api("operations", op_id, "wait").get(params={"timeout": 600}).json()["metadata"]
        except LXDAPIException as exc:
            raise BackendError(f"container `{container}`: could not {what}: {message(exc)}") from None
        if result.get("status") != "Success":
            raise BackendError(f"container `{container}`: could not {what}: {result.get('err') or result.get('status')}")
        return result.get("metadata")

    def _instance(self, container: str) -> dict[str, Any] | None:
        from pylxd.exceptions import LXDAPIException, NotFound

        try:
            return self._api("instances", container).get().json()["metadata"]
        except NotFound:
            return None
        except LXDAPIException as exc:
            if exc.response.status_code == 404:
                return None
            raise BackendError(f"container `{container}`: could not read it: {message(exc)}") from None

    def _data(self, container: str, what: str) -> dict[str, Any]:
        data = self._instance(container)
        if data is None:
            raise BackendError(f"cannot {what} container `{container}`: it does not exist")
        return data

    # -- reading -----------------------------------------------------------------------

    def _instances(self) -> list[dict[str, Any]]:
        return self._api("instances").get(params={"recursion": 1}).json()["metadata"]

    def _update(self, container: str, what: str, data: dict[str, Any], **changes: Any) -> None:
        """Replace the instance's settings: `data` as read, with `changes` (config, devices, restore)."""
        body = {"config": data["config"], "devices": data["devices"], "profiles": data["profiles"], **changes}
        self._call(what, container, "put", "instances", container, json=body)

    @property
    def library_errors(self) -> tuple[type[BaseException], ...]:
        from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

        return (*super().library_errors, LXDAPIException, ClientConnectionFailed)

    def _state(self, container: str) -> State | None:
        data = self._instance(container)
        return None if data is None else _STATES.get(data["status"], State.BUSY)

    def _list(self, prefix: str) -> list[ContainerInfo]:
        instances = self._instances()
        return [_info(i) for i in sorted(instances, key=lambda i: i["name"]) if i["name"].startswith(prefix)]

    def _inspect(self, container: str) -> ContainerInfo | None:
        data = self._instance(container)
        return _info(data) if data else None

    def copy_mode(self) -> str:
        return "image"

    # -- writing -----------------------------------------------------------------------

    def _save_record(self, container: str, record: Record) -> None:
        self._call("save its record", container, "patch", "instances", container,
                   json={"config": {RECORD_KEY: record.to_json()}})

    def _create(self, spec: MachineSpec, record: Record) -> None:
        if spec.layers:  # a copy of the cached layer's instance (on btrfs, zfs, lvm: a copy-on-write one)
            source = {"type": "copy", "source": layer_instance(layer_cache.key_of(spec.layers[0])), "instance_only": True}
        else:
            source = {"type": "image", "alias": self._image(spec.rootfs)}
        if self.local:
            staging.make_dirs(spec.container, staging.as_records(spec.mounts))
        body = {
            "name": spec.container,
            "type": "container",
            "source": source,
            "profiles": [],
            "config": {
                **_limit_config(spec.limits),
                **_security_config(spec.privileged, spec.nesting),
                "raw.lxc": _raw_lxc(spec.hostname, _nat_items(spec.network), spec.private),
                RECORD_KEY: record.to_json(),
                MOUNTS_KEY: json.dumps(staging.as_records(spec.mounts)),
                **_raw_config(spec.raw),
            },
            "devices": {
                "root": {"type": "disk", "path": "/", "pool": self.settings.storage_pool},
                **_nic_devices(spec.network, spec.private),
                **self._mount_devices(spec.container, spec.mounts),
                **_raw_devices(spec.raw),
            },
        }
        try:
            params = {"target": self._member(spec.placement)} if spec.placement else {}
            self._call("create it", spec.container, "post", "instances", json=body, params=params)
        except BackendError:
            staging.release(spec.container)
            raise
        for guest_file in spec.files:
            self._push(spec.container, guest_file)

    # -- the provisioning cache: a layer is a stopped instance, copied from the machine ------

    def caches_layers(self) -> bool:
        return True

    def layer_scope(self) -> str:
        return f"lxd {self.settings.endpoint} {self.settings.project} {self.settings.storage_pool}"

    def _save_layer(self, container: str, target: Path, leave_out: LeaveOut, limit: int, previous: Path | None) -> int:
        """The machine (frozen meanwhile) copied into the layer's own stopped instance, with
        nothing of the machine's settings, its own files taken out. The whole machine is in
        it: a layer on LXD stands on nothing."""
        import os

        key = layer_cache.key_of(target)
        layer, work = layer_instance(key), f"{layer_instance(key[:20])}-w{os.getpid()}"
        self._remove_unfinished_layers()
        state = self._state(container)
        frozen = state is State.RUNNING
        if state not in (State.RUNNING, State.STOPPED):
            raise BackendError(f"container `{container}` can't be held still to copy its files")
        if frozen:
            self._freeze(container)
        try:  # under a name of this process's until it is clean: no one uses it half-made
            self._call("copy it into the provisioning cache", container, "post", "instances", json={
                "name": work, "type": "container", "profiles": [], "config": {}, "devices": {
                    "root": {"type": "disk", "path": "/", "pool": self.settings.storage_pool}},
                "source": {"type": "copy", "source": container, "instance_only": True}})
        finally:
            if frozen:
                self._unfreeze(container)
        try:
            data = self._data(work, "clean")
            self._update(work, "clear the settings of", data, config={
                key: value for key, value in data["config"].items() if key.startswith("volatile.")},
                devices={"root": {"type": "disk", "path": "/", "pool": self.settings.storage_pool}})
            self._take_out(work, leave_out)
            measured = self._api("instances", work, "state").get().json()["metadata"]
            size = int(((measured.get("disk") or {}).get("root") or {}).get("usage") or 0)
            if size > limit:
                raise BackendError(f"the machine's files are over {limit // 2**20} MiB: not cached")
            if self._instance(layer) is None:  # (else another tapers made it meanwhile: it is as good)
                self._call("name its layer", work, "post", "instances", work, json={"name": layer})
        finally:
            if self._instance(work) is not None:
                self._call("remove a copy", work, "delete", "instances", work)
        target.mkdir()
        return size

    def _remove_unfinished_layers(self) -> None:
        """Layer copies a tapers killed while it made them left (`tlayer-...-wPID`, PID gone)."""
        import re

        from tapers.processes import alive

        for data in self._instances():
            found = re.fullmatch(r"tlayer-[0-9a-f]{20}-w([0-9]+)", data["name"])
            if found and not alive(int(found.group(1))):
                self._call("remove an unfinished layer", data["name"], "delete", "instances", data["name"])

    def _take_out(self, layer: str, leave_out: LeaveOut) -> None:
        """The machine's own files, out of the layer's instance (a folder that isn't empty stays)."""
        from pylxd.exceptions import LXDAPIException

        files = self._api("instances", layer, "files")
        paths = set(leave_out.paths)
        for prefix in leave_out.prefixes:
            folder, _, start = prefix.rpartition("/")
            try:
                response = files.get(params={"path": f"/{folder}"})
                listed = response.json().get("metadata") if response.headers.get("X-LXD-type") == "directory" else []
            except (LXDAPIException, ValueError, TypeError, AttributeError):
                continue  # not a folder (the guest made it a file, a link): nothing of ours in it
            if isinstance(listed, list):
                paths |= {f"{folder}/{name}" for name in listed if isinstance(name, str) and name.startswith(start)}
        for path in sorted(paths, reverse=True):
            try:
                files.delete(params={"path": f"/{path}"})
            except LXDAPIException:
                pass  # not there (or a folder with files in it)

    def drop_layer(self, key: str) -> None:
        layer = layer_instance(key)
        if self._instance(layer) is not None:
            self._call("remove it from the provisioning cache", layer, "delete", "instances", layer)

    def _member(self, name: str) -> str:
        """`placement: {member: name}`, checked against the cluster's members."""
        if not self.client.host_info["environment"].get("server_clustered"):
            raise BackendError(f"`placement: {{member: {name}}}`: LXD at {self.settings.endpoint} is not a cluster",
                               hint="remove `placement:` from the Taperfile, or use a cluster")
        members = [m.rsplit("/", 1)[-1].split("?")[0] for m in self._api("cluster", "members").get().json()["metadata"]]
        if name not in members:
            raise BackendError(f"`placement: {{member: {name}}}`: no such member in the LXD cluster",
                               hint=f"its members: {', '.join(members)}")
        return name

    def _mount_devices(self, container: str, mounts: tuple[Mount, ...]) -> dict[str, dict[str, str]]:
        """Synced folders as disk devices: the staged idmapped view when LXD is on this host
        (the login user owns the folder owner's files, as on liblxc), else the folder itself
        (unshifted: in an unprivileged machine its files belong to nobody; LXD's `shift`
        would make root in the machine root on that folder)."""
        return {
            f"{MOUNT_DEVICE_PREFIX}{index}": {
                "type": "disk", "path": mount.target, "readonly": "true" if mount.readonly else "false",
                "source": str(staging.source_of(container, index, mount) if self.local else mount.source),
            }
            for index, mount in enumerate(mounts)
        }

    def _push(self, container: str, guest_file: GuestFile) -> None:
        """Write a file into the (stopped) machine; a missing parent folder is made, owned like the file."""
        from pylxd.exceptions import LXDAPIException

        files = self._api("instances", container, "files")
        owner = {"X-LXD-uid": str(guest_file.uid), "X-LXD-gid": str(guest_file.gid)}
        headers = {"X-LXD-type": "file", "X-LXD-write": "overwrite", "X-LXD-mode": f"{guest_file.mode:04o}", **owner}
        try:
            try:
                files.post(params={"path": guest_file.path}, data=guest_file.content, headers=headers)
            except LXDAPIException:
                folder = str(Path(guest_file.path).parent)
                files.post(params={"path": folder}, data=b"",
                           headers={"X-LXD-type": "directory", "X-LXD-mode": "0700", **owner})
                files.post(params={"path": guest_file.path}, data=guest_file.content, headers=headers)
        except LXDAPIException as exc:
            raise BackendError(f"container `{container}`: could not write {guest_file.path}: {message(exc)}") from None

    def _image(self, rootfs: Path) -> str:
        """The alias of the box's image, uploaded on first use."""
        from pylxd.exceptions import LXDAPIException, NotFound

        rootfs = rootfs.resolve()
        alias = image_alias(rootfs)
        digest = alias[len(IMAGE_ALIAS_PREFIX):]
        try:
            self._api("images", "aliases", alias).get()
            return alias
        except NotFound:
            pass
        except LXDAPIException as exc:
            if exc.response.status_code != 404:
                raise BackendError(f"cannot look up the image {alias}: {message(exc)}") from None
        with tempfile.TemporaryDirectory(prefix="tapers-image-") as tmp:
            archive = Path(tmp) / "image.tar"
            (Path(tmp) / "metadata.yaml").write_text(
                f"architecture: x86_64\ncreation_date: {int(time.time())}\n"
                f"properties:\n  description: tapers box {digest[:12]}\n  os: debian\n"
            )
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-cf", str(archive), "-C", tmp, "metadata.yaml",
                 "-C", str(rootfs.parent), rootfs.name],
                check=True, capture_output=True,
            )
            with archive.open("rb") as data:
                response = self._api("images").post(data=data, headers={
                    "Content-Type": "application/octet-stream", "X-LXD-public": "0"})
            result = self._wait(response.json()["operation"], "upload the box as an image", alias)
        self._call("name the box's image", alias, "post", "images", "aliases",
                   json={"name": alias, "target": result["fingerprint"], "description": "a tapers box"})
        return alias

    def _mount_records(self, container: str) -> list[dict[str, Any]]:
        return json.loads(self._data(container, "read the synced folders of")["config"].get(MOUNTS_KEY) or "[]")

    def _start(self, container: str) -> None:
        if self.local:
            data = self._data(container, "start")
            shift = _root_host_uid(data["config"])
            staging.prepare(container, [{**mount, "shift": shift}
                                        for mount in json.loads(data["config"].get(MOUNTS_KEY) or "[]")])
        self._act(container, "start")

    def _act(self, container: str, action: str, wait: bool = True, **more: Any) -> None:
        self._call(f"{action} it", container, "put", "instances", container, "state",
                   json={"action": action, **more}, wait=wait)

    def _shutdown(self, container: str, timeout: float) -> bool:
        try:
            self._act(container, "stop", timeout=int(timeout))
        except BackendError:
            return False
        return True

    def _kill(self, container: str) -> None:
        self._act(container, "stop", force=True)

    def _release(self, container: str) -> None:
        staging.release(container, keep_dirs=True)  # LXD checks that a disk's source exists

    def _freeze(self, container: str) -> None:
        self._act(container, "freeze")

    def _unfreeze(self, container: str) -> None:
        self._act(container, "unfreeze")

    def _set_limits(self, container: str, limits: Limits, running: bool) -> None:
        data = self._data(container, "change the limits of")
        config = {k: v for k, v in data["config"].items() if not k.startswith("limits.")}
        config.update(_limit_config(limits))
        self._update(container, "change its limits", data, config=config)

    def _reconfigure(
        self,
        container: str,
        hostname: str,
        private: tuple[NetworkConfig, ...],
        mounts: tuple[Mount, ...],
        files: tuple[GuestFile, ...],
        nesting: bool,
        raw: dict[str, Any] | None,
    ) -> None:
        data = self._data(container, "reconfigure")
        nat_items = [item for item in lxc_config.parse(data["config"].get("raw.lxc", "")) if item[0].startswith("lxc.net.0.")]
        devices = {k: v for k, v in data["devices"].items()
                   if not (k.startswith((MOUNT_DEVICE_PREFIX, RAW_DEVICE_PREFIX)) or (k.startswith("eth") and k != "eth0"))}
        devices.update(_private_devices(private))
        devices.update(self._mount_devices(container, mounts))
        devices.update(_raw_devices(raw))
        if self.local:
            staging.make_dirs(container, staging.as_records(mounts))
        given_before = json.loads(data["config"].get(RAW_KEYS_KEY, "[]"))  # the Taperfile's raw keys set last time
        config = {key: value for key, value in data["config"].items() if key not in given_before}
        config = {**config, "raw.lxc": _raw_lxc(hostname, nat_items, private),
                  MOUNTS_KEY: json.dumps(staging.as_records(mounts)), "security.nesting": str(nesting).lower(),
                  **_raw_config(raw)}
        self._update(container, "reconfigure it", data, config=config, devices=devices)
        for guest_file in files:
            self._push(container, guest_file)

    @contextmanager
    def _root_view(self, container: str) -> Iterator[Path]:
        raise BackendError(
            f"container `{container}`: packaging a machine is not available on the LXD backend yet",
            hint="`lxc publish` makes an image of it on the LXD side",
        )
        yield Path("/")  # pragma: no cover  (a generator, for @contextmanager)

    def _usage(self, container: str) -> Usage | None:
        data = self._data(container, "read the usage of")
        state = self._api("instances", container, "state").get().json()["metadata"]
        counters = [nic.get("counters") or {} for name, nic in (state.get("network") or {}).items() if name != "lo"]
        limit = data["config"].get("limits.memory")
        return Usage(
            cpu_ns=int((state.get("cpu") or {}).get("usage") or 0),
            memory=int((state.get("memory") or {}).get("usage") or 0),
            memory_limit=int(limit) if limit and limit.isdigit() else None,
            pids=int(state.get("processes") or 0),
            rx_bytes=sum(int(c.get("bytes_received") or 0) for c in counters),
            tx_bytes=sum(int(c.get("bytes_sent") or 0) for c in counters),
        )

    def _snapshot_save(self, container: str, name: str) -> None:
        self._call(f"save snapshot `{name}`", container, "post", "instances", container, "snapshots",
                   json={"name": name, "stateful": False})

    def _snapshot_restore(self, container: str, name: str) -> None:
        self._update(container, f"restore snapshot `{name}`", self._data(container, "restore"), restore=name)

    def _snapshot_list(self, container: str) -> list[Snapshot]:
        found = self._api("instances", container, "snapshots").get(params={"recursion": 1}).json()["metadata"]
        return [Snapshot(s["name"], s.get("created_at", ""), max(0, int(s.get("size") or 0))) for s in found]

    def _snapshot_delete(self, container: str, name: str) -> None:
        self._call(f"delete snapshot `{name}`", container, "delete", "instances", container, "snapshots", name)

    def _delete(self, container: str) -> None:
        self._call("delete it", container, "delete", "instances", container)

    def _remove_leftovers(self, container: str) -> None:
        staging.release(container)  # left by a creation that failed

    def _boot_id(self, container: str) -> str:
        try:
            code, out = self.exec(container, ["cat", "/proc/sys/kernel/random/boot_id"])
        except BackendError:  # stopped between the two questions (a reboot in progress): no boot yet
            return ""
        return out.strip() if code == 0 else ""

    def _logins_refused(self, container: str) -> bool | None:
        from pylxd.exceptions import LXDAPIException

        for path in ("/run/nologin", "/etc/nologin"):
            try:
                self._api("instances", container, "files").get(params={"path": path})
                return True
            except LXDAPIException as exc:
                if exc.response.status_code != 404:
                    return None
        return False

    def _reboot(self, container: str) -> None:
        self._act(container, "restart", wait=False, timeout=30)

    def _run(self, container: str, argv: list[str], env: dict[str, str], terminal: bool) -> int:
        code, out = self.exec(container, argv, env)
        if terminal:  # LXD's interactive exec is a websocket: here, the output once it ended
            sys.stdout.write(out)
            sys.stdout.flush()
        return code

    def _console(self, container: str) -> None:
        raise BackendError(f"container `{container}`: `tapers console` is not available on the LXD backend yet",
                           hint=f"on the LXD host: lxc console {container}")

    def exec(self, container: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a command in the machine as root: its exit code and standard output."""
        body = {"command": argv, "environment": env or {}, "wait-for-websocket": False, "interactive": False,
                "record-output": True}
        result = self._call(f"run {argv[0]}", container, "post", "instances", container, "exec", json=body)
        out = ""
        log = (result.get("output") or {}).get("1")
        if log:
            base = self.client.api._api_endpoint.rsplit("/1.0", 1)[0]
            out = self.client.api.session.get(base + log, params={"project": self.settings.project}, timeout=60).text
        return int(result.get("return", -1)), out


# -- instance configuration ------------------------------------------------------------


def layer_instance(key: str) -> str:
    """The stopped instance holding a cached layer (not `tapers-`: it is no machine)."""
    return f"tlayer-{key}"


def image_alias(rootfs: Path) -> str:
    """The image of a box: named by the digest of its stored files (boxes/store/<digest>)."""
    rootfs = rootfs.resolve()
    digest = rootfs.parent.name if rootfs.parent.parent.name == "store" else digests.sha256(
        str(rootfs).encode()).hexdigest()
    return f"{IMAGE_ALIAS_PREFIX}{digest[:40]}"


def _info(data: dict[str, Any]) -> ContainerInfo:
    raw = (data.get("config") or {}).get(RECORD_KEY)
    return container_info(data["name"], _STATES.get(data["status"], State.BUSY), raw)


def _security_config(privileged: bool, nesting: bool) -> dict[str, str]:
    """A privileged machine, or an unprivileged one with an id range of its own (as on
    liblxc: two machines can't touch each other's files). LXD idmaps the image's files where
    the kernel can, so nothing is copied or shifted."""
    nested = {"security.nesting": str(nesting).lower()}
    if privileged:
        return {"security.privileged": "true", **nested}
    return {"security.privileged": "false", "security.idmap.isolated": "true", **nested}


def _root_host_uid(config: dict[str, str]) -> int:
    """The host uid of the machine's root: 0 when privileged, else from the id map LXD
    gave it (at create; it stays the same at every start)."""
    if config.get("security.privileged") == "true":
        return 0
    entries = json.loads(config.get("volatile.idmap.next") or config.get("volatile.idmap.current") or "[]")
    roots = {kind: int(entry["Hostid"]) for entry in entries for kind in ("Isuid", "Isgid")
             if entry.get(kind) and entry.get("Nsid") == 0}
    if "Isuid" not in roots or "Isgid" not in roots:
        raise BackendError("LXD gave the machine no id map for its root",
                           hint="check `lxc config show NAME` for volatile.idmap.next, and that LXD has subordinate ids")
    if roots["Isuid"] != roots["Isgid"]:  # the synced folders' views shift both by one base
        raise BackendError(f"LXD mapped the machine's root to uid {roots['Isuid']} but gid {roots['Isgid']}: tapers "
                           "can't share synced folders with it", hint="give root the same subuid and subgid ranges")
    return roots["Isuid"]


def _limit_config(limits: Limits) -> dict[str, str]:
    config = {}
    if limits.cpus is not None:
        config["limits.cpu.allowance"] = f"{max(1, round(limits.cpus * 100))}ms/100ms"
    if limits.memory is not None:
        config["limits.memory"] = str(limits.memory)
    if limits.pids is not None:
        config["limits.processes"] = str(limits.pids)
    return config


def _raw_lxc(hostname: str, nat_items: lxc_config.Items, private: tuple[NetworkConfig, ...]) -> str:
    """The address is set before init starts (as liblxc does): no DHCP to wait for. Written
    by the same checked writer as liblxc's config files."""
    items = [("lxc.uts.name", hostname), *nat_items, *_private_items(private)]
    return lxc_config.render(items, Path("raw.lxc"))


def _nat_items(nat: NetworkConfig) -> lxc_config.Items:
    return [("lxc.net.0.ipv4.address", nat.with_broadcast()), ("lxc.net.0.ipv4.gateway", nat.gateway)]


def _private_items(private: tuple[NetworkConfig, ...]) -> lxc_config.Items:
    return [(f"lxc.net.{index}.ipv4.address", net.with_broadcast()) for index, net in enumerate(private, 1)]


def _nic_devices(nat: NetworkConfig, private: tuple[NetworkConfig, ...]) -> dict[str, dict[str, str]]:
    return {"eth0": _nic("eth0", nat), **_private_devices(private)}


def _private_devices(private: tuple[NetworkConfig, ...]) -> dict[str, dict[str, str]]:
    return {f"eth{index}": _nic(f"eth{index}", net) for index, net in enumerate(private, 1)}


def _raw_config(raw: dict[str, Any] | None) -> dict[str, str]:
    """The Taperfile's `lxd: config:` (checked when it was loaded: raw_keys.py), and which
    keys they are, so that the next reconfigure removes the ones no longer given."""
    given = (raw or {}).get("lxd", {}).get("config", {})
    return {**given, RAW_KEYS_KEY: json.dumps(sorted(given))} if given else {RAW_KEYS_KEY: "[]"}


def _raw_devices(raw: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """The Taperfile's `lxd: devices:`, named apart from tapers' own devices."""
    return {f"{RAW_DEVICE_PREFIX}{name}": dict(device)
            for name, device in (raw or {}).get("lxd", {}).get("devices", {}).items()}


def _nic(name: str, net: NetworkConfig) -> dict[str, str]:
    return {"type": "nic", "nictype": "bridged", "parent": net.bridge, "name": name, "hwaddr": net.mac}


def message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    try:
        return response.json().get("error") or str(exc)
    except Exception:
        return str(exc)
