"""Which raw engine keys a Taperfile may pass through (`lxc:` for liblxc, `lxd:` for LXD),
and why the others are refused.

The raw keys are the escape hatch for what tapers doesn't model, but many engine keys act
on the host (a liblxc hook runs a program there as root; a mount entry or an LXD disk
device exposes a host folder; a log file is written where the key says) or take apart
what tapers manages (network, root filesystem, id map, confinement). A Taperfile may come
from anyone, so only keys that act inside the machine pass: an allowlist, each refusal
with its reason and what to use instead.
"""

from __future__ import annotations

import re

# liblxc: a key is allowed when it is one of these, or starts with one ending in a dot (and
# no refusal below matches first).
LXC_ALLOWED = ("lxc.environment", "lxc.environment.runtime", "lxc.sysctl.", "lxc.prlimit.", "lxc.cgroup.",
               "lxc.cgroup2.", "lxc.cap.drop", "lxc.tty.", "lxc.pty.", "lxc.signal.", "lxc.init.", "lxc.time.",
               "lxc.autodev", "lxc.autodev.")
LXC_REFUSED = (  # (prefix, why), checked first
    ("lxc.cgroup.dir", "places the machine in host cgroups tapers chooses"),
    ("lxc.cgroup.relative", "places the machine in host cgroups tapers chooses"),
    ("lxc.cgroup.cgroup.", "moves host processes into the machine's cgroup, or changes the cgroup tree"),
    ("lxc.cgroup2.cgroup.", "moves host processes into the machine's cgroup, or changes the cgroup tree"),
    ("lxc.keyring.", "would give the machine the host caller's session keyring (its keys)"),
    ("lxc.hook.", "runs a program on the host, as root"),
    ("lxc.mount", "mounts host paths into the machine: use `synced_folders:`"),
    ("lxc.include", "reads a file of the host as config"),
    ("lxc.rootfs", "tapers manages the machine's root filesystem"),
    ("lxc.net", "tapers manages the machine's networks: use `networks:`"),
    ("lxc.idmap", "tapers manages the machine's id map: use `privileged:`"),
    ("lxc.uts", "use `hostname:`"),
    ("lxc.log", "writes a file where the key says, on the host"),
    ("lxc.console", "writes a file where the key says, on the host"),
    ("lxc.apparmor", "lowers the machine's confinement (`privileged: true` says so openly)"),
    ("lxc.seccomp", "lowers the machine's confinement (`privileged: true` says so openly)"),
    ("lxc.selinux", "lowers the machine's confinement (`privileged: true` says so openly)"),
    ("lxc.cap.keep", "lowers the machine's confinement (`privileged: true` says so openly)"),
)
LXC_KEY = re.compile(r"lxc(\.[a-z0-9_-]+)+")

LXD_CONFIG_ALLOWED = ("limits.", "linux.sysctl.", "environment.", "boot.", "snapshots.", "user.", "cloud-init.")
LXD_CONFIG_REFUSED = (
    ("user.tapers.", "is where tapers keeps its record of the machine"),
    ("raw.", "passes config to LXC unchecked (`raw.lxc`, `raw.idmap`, ...)"),
    ("security.", "tapers manages the machine's security: use `privileged:` and `nesting:`"),
    ("linux.kernel_modules", "loads modules into the host's kernel"),
    ("snapshots.schedule", "has LXD take snapshots on its own, each one kept until `snapshots.expiry` (forever "
                           "without it), with no bound on the disk they fill: take them with `tapers snapshot save`"),
    ("volatile.", "is LXD's own state"),
    ("image.", "is LXD's own record of the image"),
)
LXD_CONFIG_KEY = re.compile(r"[a-z0-9_-]+(\.[A-Za-z0-9_.-]+)+")
# Devices: only these host character devices, which give the machine a kernel feature, not host data.
LXD_DEVICE_SOURCES = ("/dev/fuse", "/dev/net/tun", "/dev/kvm")
LXD_DEVICE_KEYS = {"type", "source", "path", "mode", "required", "uid", "gid"}


def lxc_refusal(key: str) -> str | None:
    """Why a liblxc key may not be given in a Taperfile (None: it may)."""
    for prefix, why in LXC_REFUSED:
        if key.startswith(prefix):
            return why
    if not LXC_KEY.fullmatch(key):
        return "is not an LXC config key (lxc.a.b, lowercase)"
    if key.startswith(("lxc.cgroup.", "lxc.cgroup2.")) and key.rpartition(".")[2] in ("procs", "tasks", "threads"):
        return "moves host processes into the machine's cgroup"
    if any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in LXC_ALLOWED):
        return None
    return f"is not among the keys tapers passes through ({_listed(LXC_ALLOWED)})"


def lxd_config_refusal(key: str) -> str | None:
    """Why an LXD instance config key may not be given in a Taperfile (None: it may)."""
    if not LXD_CONFIG_KEY.fullmatch(key):
        return "is not an LXD config key"
    for prefix, why in LXD_CONFIG_REFUSED:
        if key.startswith(prefix):
            return why
    if key.startswith(LXD_CONFIG_ALLOWED):
        return None
    return f"is not among the keys tapers passes through ({_listed(LXD_CONFIG_ALLOWED)})"


def lxd_device_refusal(device: dict[str, str]) -> str | None:
    """Why an LXD device may not be given in a Taperfile (None: it may)."""
    kind = device.get("type")
    if kind != "unix-char":
        return (f"is a `{kind}` device, which reaches the host (host folders: `synced_folders:`; ports: "
                f"`forwarded_port`; networks: `networks:`); only `unix-char` devices of {_listed(LXD_DEVICE_SOURCES)} "
                "pass")
    unknown = set(device) - LXD_DEVICE_KEYS
    if unknown:
        return f"has keys tapers doesn't pass through: {', '.join(sorted(unknown))}"
    source = device.get("source") or device.get("path")
    if source not in LXD_DEVICE_SOURCES:
        return f"would give the machine the host's {source}: only {_listed(LXD_DEVICE_SOURCES)} pass"
    return None


def _listed(items: tuple[str, ...]) -> str:
    return ", ".join(item.rstrip(".") + ("*" if item.endswith(".") else "") for item in items)
