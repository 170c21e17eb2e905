"""Every on-disk name tapers uses, in one place."""

from __future__ import annotations

import os
from pathlib import Path

TAPERFILE_NAMES = ("Taperfile.yaml", "Taperfile.yml", "Taperfile")
OVERRIDE_NAME = "Taperfile.override.yaml"
PROJECT_STATE_DIR = ".tapers"

def tapers_home() -> Path:
    """Where tapers keeps its box cache and build locks.

    `TAPERS_HOME` overrides the user cache directory (tests use it).
    """
    override = os.environ.get("TAPERS_HOME")
    if override:
        return Path(override)
    return _xdg("XDG_CACHE_HOME", ".cache") / "tapers"


def user_config_file() -> Path:
    """The user's settings (`tapers config`'s file): TAPERS_CONFIG, else
    $XDG_CONFIG_HOME/tapers/config.yaml."""
    override = os.environ.get("TAPERS_CONFIG")
    if override:
        return Path(override)
    return _xdg("XDG_CONFIG_HOME", ".config") / "tapers" / "config.yaml"


def _xdg(variable: str, default: str) -> Path:
    """An XDG base folder: the variable when it is an absolute path (the spec ignores any
    other), else its default under the home folder. (What platformdirs computes on Linux,
    without its 5 ms of imports on every command.)"""
    value = os.environ.get(variable, "")
    if os.path.isabs(value):
        return Path(value)
    return Path(os.path.expanduser("~")) / default


def boxes_dir() -> Path:
    return tapers_home() / "boxes"


def box_build_lock(slug: str) -> Path:
    return tapers_home() / "locks" / f"box-{slug}.lock"


def debootstrap_cache_dir() -> Path:
    return tapers_home() / "debs"


def as_user() -> bool:
    """tapers runs as a normal user (its machines, boxes and locks are that user's own)."""
    return os.geteuid() != 0


def private_folder(folder: Path) -> None:
    """`folder` exists and only its owner, the user, may enter it (0700). A normal user's boxes
    and machines are owned by their machines' ids: a host process that got one of those ids
    (a setuid file a machine left in a synced folder) must not reach them. The machines
    themselves pass: the user's own id is mapped in them."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)


def in_user_namespace() -> bool:
    """This process runs in a user namespace: its root is not the host's (no device nodes)."""
    try:
        with open("/proc/self/uid_map") as ids:
            first = ids.read().split()
    except OSError:
        return False
    return first[:3] != ["0", "0", "4294967295"]


def lxc_path() -> Path:
    """The LXC container directory tapers creates machines in: the host's as root, the
    user's own (~/.local/share/tapers/machines) as a normal user."""
    override = os.environ.get("TAPERS_LXC_PATH")
    if override:
        return Path(override)
    if as_user():
        return _xdg("XDG_DATA_HOME", ".local/share") / "tapers" / "machines"
    return Path("/var/lib/lxc")


def host_run_dir() -> Path:
    """Runtime state: locks and mount points shared by every tapers on the host as root;
    a normal user's own."""
    override = os.environ.get("TAPERS_RUN_DIR")
    if override:
        return Path(override)
    return tapers_home() / "run" if as_user() else Path("/run/tapers")


def network_lock() -> Path:
    return host_run_dir() / "network.lock"


class ProjectPaths:
    """Files tapers generates in a project's `.tapers/` folder (all regenerable)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / PROJECT_STATE_DIR

    @property
    def private_key(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.state / "id_ed25519.pub"

    @property
    def ssh_config(self) -> Path:
        return self.state / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.state / "inventory"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def last_error_log(self) -> Path:
        return self.state / "last-error.log"
