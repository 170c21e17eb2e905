"""What makes users' bridges, firewall rules and cgroups again after the host restarts (they
live in the kernel): `tapers host restore`, run at boot by the host's init. A systemd unit
where systemd runs; an init script elsewhere (sysvinit, OpenRC), as LXC's own lxc-net."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path("/etc/systemd/system/tapers-host.service")
SCRIPT = Path("/etc/init.d/tapers-host")


def systemd_runs() -> bool:
    return Path("/run/systemd/system").is_dir()


def _command() -> str:
    return f"{shlex.quote(sys.executable)} -P -m tapers host restore"  # -P: never the modules of the folder it runs in


def install() -> None:
    """Install the hook (again at each setup: the interpreter may have moved)."""
    from tapers.rootfs import Root
    from tapers.errors import HostError

    changeable = changeable_by_others()
    if changeable:
        raise HostError(
            f"the boot hook would run this tapers as root at every boot, but {changeable} can be changed by "
            "someone other than root: they would run their code as root",
            hint="install tapers where only root can change it (as root, in a folder of root's: "
                 "`./scripts/setup` in a root-owned clone), and run setup from there",
        )

    if systemd_runs():
        text = ("[Unit]\nDescription=tapers: bridges, firewall rules and cgroups of users who run machines\n"
                "After=network.target nss-user-lookup.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                f"ExecStart={_command()}\n\n[Install]\nWantedBy=multi-user.target\n")
        with Root(UNIT.parent, str(UNIT.parent), HostError) as folder:
            folder.write(UNIT.name, text.encode(), 0o644, 0, 0)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
        subprocess.run(["systemctl", "enable", UNIT.name], capture_output=True)
        return
    if not SCRIPT.parent.is_dir():
        return
    text = (
        "#!/bin/sh\n"
        "### BEGIN INIT INFO\n# Provides:          tapers-host\n# Required-Start:    $network $remote_fs\n"
        "# Required-Stop:\n# Default-Start:     2 3 4 5\n# Default-Stop:\n"
        "# Short-Description: bridges, firewall rules and cgroups of users who run tapers machines\n"
        "### END INIT INFO\n"
        'case "$1" in\n'
        f"  start|restart|force-reload) exec {_command()} ;;\n"
        "  stop|status) exit 0 ;;\n"
        '  *) echo "usage: $0 start" >&2; exit 3 ;;\n'
        "esac\n"
    )
    with Root(SCRIPT.parent, str(SCRIPT.parent), HostError) as folder:
        folder.write(SCRIPT.name, text.encode(), 0o755, 0, 0)
    if shutil.which("update-rc.d"):
        subprocess.run(["update-rc.d", SCRIPT.name, "defaults"], capture_output=True)
    return str(SCRIPT)


def changeable_by_others() -> str:
    """What of this tapers (its interpreter, its environment, its code, and the folders
    they are in) someone other than root could change, or ""."""
    import os
    import stat

    import tapers

    package = Path(tapers.__file__).resolve().parent
    wanted = [Path(sys.executable), Path(sys.executable).resolve(), Path(sys.prefix), package,
              *(Path(entry) for entry in sys.path if entry.startswith(sys.prefix) and Path(entry).is_dir()),
              *package.rglob("*")]
    fuse = _fuse_mounts()
    for path in wanted:
        for place in (*reversed(path.parents), path):
            if place in fuse:  # (its owners and modes are what its daemon says: whoever runs it decides)
                return str(place)
            try:
                st = os.lstat(place)  # (a read-only mount is no proof: a bind's source is writable where it is)
            except OSError:
                continue
            sticky_folder = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX  # (/tmp: others' names only)
            if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky_folder and not stat.S_ISLNK(st.st_mode)):
                return str(place)
    return ""


def _fuse_mounts() -> set[Path]:
    """Where FUSE file systems are mounted (sshfs, bindfs...)."""
    from tapers.backend.idmap import mounts

    return {Path(point) for point, kind in mounts() if kind == "fuse" or kind.startswith(("fuse.", "fuseblk"))}


def installed() -> str:
    return next((str(path) for path in (UNIT, SCRIPT) if path.exists()), "")


def remove() -> None:
    if UNIT.exists():
        subprocess.run(["systemctl", "disable", UNIT.name], capture_output=True)
        UNIT.unlink()
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    if SCRIPT.exists():
        SCRIPT.unlink()
        if shutil.which("update-rc.d"):
            subprocess.run(["update-rc.d", SCRIPT.name, "remove"], capture_output=True)
