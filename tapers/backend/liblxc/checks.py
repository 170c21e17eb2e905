"""What `tapers doctor` checks for the liblxc backend: root, python-lxc, LXC's files, the
kernel's namespaces, cgroups and overlayfs, network tools and bridges, inotify limits.
The cheap ones also run before every `tapers up` that changes something."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tapers import paths
from tapers.backend.api import Check
from tapers.errors import HostError


def _root() -> Check:
    return Check("running as root", True, "yes: machines of any user's project, every feature")


def _bindings() -> Check:
    try:
        import lxc  # noqa: F401
    except ImportError as exc:
        return Check("python-lxc bindings", False, str(exc), "apt-get install lxc lxc-dev pkg-config && pip install lxc")
    return Check("python-lxc bindings", True, "importable")


def _lxc_config() -> Check:
    common = Path("/usr/share/lxc/config/debian.common.conf")
    ok = common.is_file()
    return Check("LXC common config", ok, str(common) if ok else f"{common} missing", "apt-get install lxc-templates")


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
        _as_root("modprobe overlay"),
        required=False,
    )


def _as_root(fix: str) -> str:
    """A host fix a normal user can't make: the admin's setup makes it for them."""
    if paths.as_user():
        from tapers.backend.liblxc import grants

        return f"an admin runs: {grants.setup_command(grants.current_user())} (or {fix})"
    return fix


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
    if paths.as_user() and not path.exists():
        return Check("container folder", True, f"{path} (made by the first `tapers up`)")
    ok = path.is_dir() and os.access(path, os.W_OK)
    return Check("container folder", ok, str(path), f"mkdir -p {path} (as root)")


def _user_setup() -> list[Check]:
    """As a normal user: each thing an admin's `host setup` gives, and the command that
    gives what is missing."""
    from tapers.backend.liblxc import delegation, grants

    user = grants.current_user()
    fix = grants.setup_command(user)
    grant = grants.load(user)
    if grant is None:
        return [Check(f"host setup for user {user}", False, f"not done (no {grants.path_of(user)})", fix)]
    found = [Check(f"host setup for user {user}", grant.uid == os.geteuid(), f"{grant.subnet} on {grant.bridge}", fix)]
    try:
        sub_uid, sub_gid = grants.subordinate_range(user)
        found.append(Check("subordinate ids", True, f"uids from {sub_uid}, gids from {sub_gid}"))
    except HostError as exc:  # which file lacks them
        found.append(Check("subordinate ids", False, str(exc), fix))
    from tapers.backend.liblxc.bridges import exists

    bridge = exists(grant.bridge)
    found.append(Check("your bridge", bridge, grant.bridge if bridge else f"{grant.bridge} missing (host restarted?)", fix))
    allowed = _usernet_allows(user, grant.bridge)
    found.append(Check("network interfaces allowed", allowed > 0,
                       f"{allowed} on {grant.bridge} (/etc/lxc/lxc-usernet)", fix))
    helper = Path("/usr/libexec/lxc/lxc-user-nic")
    setuid = helper.exists() and helper.stat().st_mode & 0o4000 and helper.stat().st_uid == 0
    found.append(Check("lxc-user-nic (setuid root)", bool(setuid), str(helper), "apt-get install lxc"))
    lingers = delegation.lingers(user)
    found.append(Check("machines outlive your logins", lingers, "yes" if lingers else
                       "no: systemd stops your machines (SIGKILL) ~100 s after your last login ends "
                       "(no linger for you)", fix, required=False))
    missing = delegation.missing(user)
    found.append(Check("cgroups of yours", not missing, "in every hierarchy" if not missing else
                       f"missing: {', '.join(map(str, missing))} ({delegation.why_missing()})", fix))
    return found


def _usernet_allows(user: str, bridge: str) -> int:
    try:
        lines = Path("/etc/lxc/lxc-usernet").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(f[3]) for f in (line.split() for line in lines)
               if len(f) == 4 and f[0] == user and f[1] == "veth" and f[2] == bridge and f[3].isdigit())


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
    if paths.as_user():
        cheap = (_bindings, _lxc_config, _lxc_path)
        more = (_namespaces, _cgroups, _overlay, _inotify) if full else ()
        return [*_user_setup(), *(check() for check in cheap + more)]
    cheap = (_root, _bindings, _lxc_config, _lxc_path, _tools)
    more = (_namespaces, _cgroups, _overlay, _bridge, _inotify, _subids) if full else ()
    return [check() for check in cheap + more]
