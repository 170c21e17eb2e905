"""Checks that the host can run tapers machines, each with the exact fix.

The cheap checks run before every `tapers up` that changes something, so a
missing piece is an error with advice instead of a stack trace.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tapers import network, paths
from tapers.errors import HostError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: a warning, tapers still works


def _root() -> Check:
    ok = os.geteuid() == 0
    return Check("running as root", ok, "yes" if ok else f"uid {os.geteuid()}", "run tapers as root (sudo tapers ...)")


def _bindings() -> Check:
    try:
        import lxc  # noqa: F401
    except ImportError as exc:
        return Check("python-lxc bindings", False, str(exc), "apt-get install lxc lxc-dev pkg-config && pip install lxc")
    return Check("python-lxc bindings", True, "importable")


def _lxc_config() -> Check:
    common = Path("/usr/share/lxc/config/debian.common.conf")
    ok = common.is_file()
    return Check("LXC common config", ok, str(common) if ok else f"{common} missing", "apt-get install lxc")


def _namespaces() -> Check:
    wanted = ("mnt", "uts", "ipc", "pid", "net", "cgroup")
    missing = [ns for ns in wanted if not Path(f"/proc/self/ns/{ns}").exists()]
    return Check(
        "namespaces",
        not missing,
        ", ".join(wanted) if not missing else f"missing: {', '.join(missing)}",
        "use a kernel with CONFIG_NAMESPACES and these namespaces enabled (see `lxc-checkconfig`)",
    )


def _cgroups() -> Check:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        controllers = (root / "cgroup.controllers").read_text().split()
        missing = [c for c in ("memory", "pids", "cpu") if c not in controllers]
        detail = "cgroup v2" + (f", missing controllers: {', '.join(missing)}" if missing else "")
        return Check("cgroups", not missing, detail, "enable the memory, pids and cpu controllers")
    v1 = [c for c in ("memory", "pids", "cpu") if (root / c).is_dir()]
    ok = len(v1) == 3
    return Check("cgroups", ok, f"cgroup v1: {', '.join(v1) or 'none'}", "mount the memory, pids and cpu cgroup controllers")


def _overlay() -> Check:
    from tapers.backend.liblxc import overlay_supported

    ok = overlay_supported()
    return Check(
        "overlay filesystem",
        ok,
        "machines are copy-on-write clones" if ok else "not available: each machine is a full copy of its box",
        "modprobe overlay",
        required=False,
    )


def _bridge() -> Check:
    ok = Path("/sys/module/bridge").exists() or network.bridge_ready()
    return Check("network bridges", ok, "available" if ok else "bridge module not loaded", "modprobe bridge")


def _tools() -> Check:
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    return Check(
        "network tools",
        not missing,
        "ip, nft" if not missing else f"missing: {', '.join(missing)}",
        "apt-get install iproute2 nftables",
    )


def _inotify() -> Check:
    from tapers.host import INOTIFY_LIMITS, inotify_shortfall

    short = inotify_shortfall()
    detail = ", ".join(f"{k.split('/')[-1]} {now} < {want}" for k, (now, want) in short.items())
    return Check(
        "inotify limits (many machines)",
        not short,
        "high enough" if not short else f"{detail}: `tapers up` raises them",
        " && ".join(f"sysctl -w {k.replace('/', '.')}={v}" for k, v in INOTIFY_LIMITS.items()),
        required=False,
    )


def _debootstrap() -> Check:
    ok = shutil.which("debootstrap") is not None
    return Check("debootstrap (to build boxes)", ok, "installed" if ok else "missing", "apt-get install debootstrap")


def _ssh_client() -> Check:
    ok = shutil.which("ssh") is not None
    return Check(
        "OpenSSH client (interactive `tapers ssh`)", ok, "installed" if ok else "missing",
        "apt-get install openssh-client", required=False,
    )


def _lxc_path() -> Check:
    path = paths.lxc_path()
    ok = path.is_dir() and os.access(path, os.W_OK)
    return Check("container folder", ok, str(path), f"mkdir -p {path} (as root)")


CHEAP: tuple[Callable[[], Check], ...] = (_root, _bindings, _lxc_config, _lxc_path, _tools)
ALL: tuple[Callable[[], Check], ...] = CHEAP + (
    _namespaces, _cgroups, _overlay, _bridge, _inotify, _debootstrap, _ssh_client,
)


def run_checks(full: bool = True) -> list[Check]:
    """The checks of the backend in use (liblxc on this host, or the LXD endpoint)."""
    from tapers.user_config import backend_name

    if backend_name() == "lxd":
        return lxd_checks(full)
    return [check() for check in (ALL if full else CHEAP)]


def lxd_checks(full: bool = True) -> list[Check]:
    """The endpoint answers, trusts tapers, is the pinned server; the storage pool exists;
    (full) the default box's image and the cluster members."""
    from tapers.errors import TapersError
    from tapers.user_config import config_path, lxd_settings

    try:
        settings = lxd_settings()
    except TapersError as exc:
        return [Check("tapers config", False, exc.message, exc.hint or f"edit {config_path()}")]
    try:
        from tapers.backend.lxd import connect

        client = connect(settings)
    except TapersError as exc:
        return [Check(f"LXD endpoint {settings.endpoint}", False, exc.message, exc.hint or "")]
    info = client.host_info
    pin = " (server certificate pinned)" if settings.https and settings.server_cert else ""
    checks = [
        Check(f"LXD endpoint {settings.endpoint}", True, f"LXD {info['environment'].get('server_version')}{pin}"),
        Check("client trusted", bool(client.trusted), "yes" if client.trusted else "no",
              f"on the server: lxc config trust add {settings.client_cert}"),
        _lxd_pool(client, settings.storage_pool),
    ]
    if settings.https and not settings.server_cert:
        checks.append(Check("server certificate pinned", False, "no `server_cert`: any server certificate the "
                            "system trusts is accepted", "copy the server's certificate and set `lxd: server_cert:`",
                            required=False))
    if full:
        checks += [_lxd_image(client), _lxd_members(client, info)]
    return checks


def _lxd_pool(client: object, pool: str) -> Check:
    names = [p.name for p in client.storage_pools.all()]  # type: ignore[attr-defined]
    ok = pool in names
    return Check(f"storage pool `{pool}`", ok, "exists" if ok else f"missing (pools: {', '.join(names) or 'none'})",
                 f"lxc storage create {pool} dir, or set `lxd: storage_pool:` in the tapers config")


def _lxd_image(client: object) -> Check:
    from tapers.backend.lxd import image_alias
    from tapers.boxes.cache import find_box
    from tapers.taperfile.machine import DEFAULT_BOX

    box = find_box(DEFAULT_BOX)
    if box is None:
        return Check(f"image of {DEFAULT_BOX}", False, "the box is not built yet", f"tapers box build {DEFAULT_BOX}",
                     required=False)
    alias = image_alias(box.rootfs)
    aliases = {a["name"] for image in client.images.all() for a in image.aliases}  # type: ignore[attr-defined]
    ok = alias in aliases
    return Check(f"image of {DEFAULT_BOX}", ok, alias if ok else "not uploaded yet",
                 "the first `tapers up` uploads it", required=False)


def _lxd_members(client: object, info: dict) -> Check:
    if not info["environment"].get("server_clustered"):
        return Check("cluster", True, "a single server (not clustered)", required=False)
    members = client.api.cluster.members.get(params={"recursion": 1}).json()["metadata"]  # type: ignore[attr-defined]
    down = [m["server_name"] for m in members if m.get("status") != "Online"]
    return Check("cluster members", not down, f"{len(members)} member(s)" + (f", offline: {', '.join(down)}"
                 if down else ", all online"), "bring the offline members back (lxc cluster list)", required=False)


def require_host() -> None:
    """Fail early, with the fix, when the host cannot run machines at all."""
    for check in run_checks(full=False):
        if check.required and not check.ok:
            raise HostError(f"this host cannot run tapers machines: {check.name}: {check.detail}", hint=check.fix)
