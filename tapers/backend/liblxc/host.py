"""Host settings machines need, made right by tapers before it starts machines.

- The NAT network (see bridges.py).
- inotify limits: every systemd in a container takes several inotify instances from the
  host's per-user budget (128 by default, shared by all root containers); past it, new
  machines hang half-booted without sshd. tapers raises the limits (never lowers them),
  as LXD's production setup does.
"""

from __future__ import annotations

from pathlib import Path

from tapers.backend.liblxc import bridges
from tapers.errors import HostError

INOTIFY_LIMITS = {
    "fs/inotify/max_user_instances": 8192,
    "fs/inotify/max_user_watches": 1048576,
}


def inotify_shortfall() -> dict[str, tuple[int, int]]:
    """sysctl -> (current, wanted) for the limits that are too low."""
    short = {}
    for key, wanted in INOTIFY_LIMITS.items():
        try:
            current = int(Path("/proc/sys", key).read_text())
        except (OSError, ValueError):
            continue
        if current < wanted:
            short[key] = (current, wanted)
    return short


def raise_inotify_limits() -> None:
    for key, (_, wanted) in inotify_shortfall().items():
        try:
            Path("/proc/sys", key).write_text(f"{wanted}\n")
        except OSError as exc:
            raise HostError(
                f"cannot raise {key.replace('/', '.')} to {wanted}: {exc.strerror}",
                hint=f"as root: sysctl -w {key.replace('/', '.')}={wanted}",
            ) from None


def load_overlay() -> None:
    """A normal user's machines are copy-on-write clones only when overlayfs is in the kernel,
    and a user can't load its module (a stock Debian 12 host has it only once something
    mounted one): `host setup`, and so the boot unit's restore, loads it."""
    import subprocess

    if "\toverlay\n" not in Path("/proc/filesystems").read_text():
        subprocess.run(["modprobe", "overlay"], capture_output=True)  # (without it: full copies, doctor says so)


def prepare_host() -> None:
    raise_inotify_limits()
    bridges.ensure_nat_network()
