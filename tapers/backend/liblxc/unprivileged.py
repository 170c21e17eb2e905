"""Unprivileged liblxc machines: the machine's root is a host uid of its own range, so root
in a machine is nobody on the host, and two machines can't touch each other's files.

The box is not copied or shifted: the overlay's lower layer is a read-only idmapped view of
the box's files (/run/tapers/lower/<container>, made at each start), in which the box's
root is the machine's root; what the machine writes lands in its writable layer owned by
its own range. `lxc.rootfs.options = userxattr` lets the machine delete folders that come
from the box (overlayfs in a user namespace).
"""

from __future__ import annotations

import json
from pathlib import Path

from tapers import paths
from tapers.errors import BackendError

RANGE = 65536  # ids per machine: 0..65535 inside
FIRST = 1_000_000_000  # the first range tapers hands out (far above LXD's and the usual /etc/subuid ones)
MACHINES = 16384  # ranges in tapers' block: FIRST + MACHINES * RANGE stays below 2^31
LAST = FIRST + MACHINES * RANGE
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
STATE = "tapers-unprivileged.json"  # in the container's folder: its range and its box


def config_items(shift: int) -> list[tuple[str, str]]:
    return [
        ("lxc.include", "/usr/share/lxc/config/debian.userns.conf"),  # LXC's unprivileged defaults
        ("lxc.idmap", f"u 0 {shift} {RANGE}"),
        ("lxc.idmap", f"g 0 {shift} {RANGE}"),
        ("lxc.rootfs.options", "userxattr"),
    ]


def subids_missing(files: tuple[Path, ...] = SUBID_FILES) -> list[Path]:
    """Which of /etc/subuid and /etc/subgid don't give root tapers' block (LXC's newuidmap
    refuses to map ids root was not given)."""
    return [path for path in files if not _covers(path)]


def ensure_subids(files: tuple[Path, ...] = SUBID_FILES) -> None:
    """Give root tapers' block in /etc/subuid and /etc/subgid (a line added; nothing else
    changes). The file is replaced atomically: a link there is replaced, never written through."""
    import os

    for path in subids_missing(files):
        try:
            current = os.lstat(path) if os.path.lexists(path) else None
            regular = current is not None and not os.path.islink(path)
            old = path.read_text() if regular else ""
            mode = current.st_mode & 0o777 if regular and current else 0o644
            temporary = path.with_name(f".{path.name}.tapers-{os.urandom(4).hex()}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "w") as out:
                out.write(old + ("" if old.endswith("\n") or not old else "\n") + f"root:{FIRST}:{LAST - FIRST}\n")
            os.replace(temporary, path)
        except OSError as exc:
            raise BackendError(f"cannot give root the ids of unprivileged machines in {path}: {exc.strerror}",
                               hint=f"as root: echo root:{FIRST}:{LAST - FIRST} >> {path}") from None


def _covers(path: Path) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in ("root", "0") and fields[1].isdigit() and fields[2].isdigit():
            start, count = int(fields[1]), int(fields[2])
            if start <= FIRST and start + count >= LAST:
                return True
    return False


def free_range(used: set[int]) -> int:
    for shift in range(FIRST, LAST, RANGE):
        if shift not in used:
            return shift
    raise BackendError("no free id range left for unprivileged machines on this host")


def prepare(folder: Path, container: str, box: Path, shift: int) -> Path:
    """Record the machine's range and box, give its writable layer (and overlay's work folder)
    to its root; the path of the box's view, which `mount_box` mounts at each start."""
    import os

    (folder / STATE).write_text(json.dumps({"shift": shift, "box": str(box)}) + "\n")
    for name in ("delta0", "work"):
        (folder / name).mkdir(mode=0o755, exist_ok=True)
        os.chown(folder / name, shift, shift)
    return _view(container)


def shift_of(folder: Path) -> int:
    """The first host uid of the machine's range; 0 for a privileged machine."""
    state = _state(folder)
    return int(state["shift"]) if state else 0


def box_of(folder: Path) -> Path | None:
    state = _state(folder)
    return Path(state["box"]) if state else None


def mount_box(folder: Path, container: str) -> None:
    """Before a start: the box's files, read-only, seen through the machine's range."""
    from tapers.backend import idmap

    state = _state(folder)
    if state is None:
        return
    view = _view(container)
    view.mkdir(parents=True, exist_ok=True)
    if not idmap.is_mount(view):
        shift = int(state["shift"])
        idmap.bind(Path(state["box"]), view, [(0, shift, RANGE)], [(0, shift, RANGE)], readonly=True)


def unmount_box(container: str) -> None:
    """After a stop: the view goes (and its folder)."""
    from tapers.backend import idmap

    view = _view(container)
    if view.is_dir():
        idmap.unmount(view)
        view.rmdir()


def _state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        return None


def _view(container: str) -> Path:
    return paths.host_run_dir() / "lower" / container
