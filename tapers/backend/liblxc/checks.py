"""What `tapers doctor` checks for the liblxc backend: root, python-lxc, LXC's files, the
kernel's namespaces, cgroups and overlayfs, network tools and bridges, inotify limits.
The cheap ones also run before every `tapers up` that changes something."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tapers import paths
from tapers.backend.api import Check


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
    from tapers.backend.liblxc.backend import overlay_supported

    ok = overlay_supported()
    return Check(
        "overlay filesystem",
        ok,
        "machines are copy-on-write clones" if ok else "not available: each machine is a full copy of its box",
        "modprobe overlay",
        required=False,
    )


def _bridge() -> Check:
    from tapers.backend.liblxc import bridges

    ok = Path("/sys/module/bridge").exists() or bridges.bridge_ready()
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
    from tapers.backend.liblxc.host import INOTIFY_LIMITS, inotify_shortfall

    short = inotify_shortfall()
    detail = ", ".join(f"{k.split('/')[-1]} {now} < {want}" for k, (now, want) in short.items())
    return Check(
        "inotify limits (many machines)",
        not short,
        "high enough" if not short else f"{detail}: `tapers up` raises them",
        " && ".join(f"sysctl -w {k.replace('/', '.')}={v}" for k, v in INOTIFY_LIMITS.items()),
        required=False,
    )


def _lxc_path() -> Check:
    path = paths.lxc_path()
    ok = path.is_dir() and os.access(path, os.W_OK)
    return Check("container folder", ok, str(path), f"mkdir -p {path} (as root)")


def _subids() -> Check:
    from tapers.backend.liblxc import unprivileged

    missing = unprivileged.subids_missing()
    block = f"root:{unprivileged.FIRST}:{unprivileged.LAST - unprivileged.FIRST}"
    return Check(
        "ids for unprivileged machines",
        not missing,
        "root has tapers' block" if not missing else f"{', '.join(map(str, missing))} lacks {block}: the first "
        "unprivileged machine adds it",
        " && ".join(f"echo {block} >> {path}" for path in missing),
        required=False,
    )


def checks(full: bool) -> list[Check]:
    cheap = (_root, _bindings, _lxc_config, _lxc_path, _tools)
    more = (_namespaces, _cgroups, _overlay, _bridge, _inotify, _subids) if full else ()
    return [check() for check in cheap + more]
