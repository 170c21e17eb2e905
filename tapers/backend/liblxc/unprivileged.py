"""Unprivileged liblxc machines: the machine's root is a host uid of its own range, so root
in a machine is nobody on the host, and two machines can't touch each other's files.

The box is not copied or shifted: the overlay's lower layer is a read-only idmapped view of
the box's files (/run/tapers/lower/<container>/box, made at each start), in which the box's
root is the machine's root; what the machine writes lands in its writable layer owned by
its own range. `lxc.rootfs.options = userxattr` lets the machine delete folders that come
from the box (overlayfs in a user namespace).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tapers import paths
from tapers.errors import BackendError

RANGE = 65536  # ids per machine: 0..65535 inside
# tapers' block: above systemd's container range (524288-1879048191, nspawn, nsresourced) and
# LXD's (100000 up), below 2^31 - 2^17 (systemd's own "nobody" and special ids). Ranges that
# another /etc/subuid entry, a user or a group already has are skipped (see free_range).
FIRST = 0x70000000
MACHINES = 4094
LAST = FIRST + MACHINES * RANGE
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
STATE = "tapers-unprivileged.json"  # in the container's folder: its range and its box


def config_items(shift: int, overlay: bool) -> list[tuple[str, str]]:
    return [
        ("lxc.include", "/usr/share/lxc/config/debian.userns.conf"),  # LXC's unprivileged defaults
        ("lxc.idmap", f"u 0 {shift} {RANGE}"),
        ("lxc.idmap", f"g 0 {shift} {RANGE}"),
        *([("lxc.rootfs.options", "userxattr")] if overlay else []),
    ]


def subids_missing(files: tuple[Path, ...] = SUBID_FILES) -> list[Path]:
    """Which of /etc/subuid and /etc/subgid don't give root tapers' block (LXC's newuidmap
    refuses to map ids root was not given)."""
    return [path for path in files if not _covers(path)]


def ensure_subids(files: tuple[Path, ...] = SUBID_FILES, lock_timeout: float = 15) -> None:
    """Give root tapers' block in /etc/subuid and /etc/subgid (a line added; nothing else
    changes), holding the lock shadow's tools (useradd, usermod) take on them. The file is
    replaced atomically, keeping its mode and owner; a link there is refused (others' ranges
    are in what it points to)."""
    import os

    from tapers.rootfs import Root

    block = f"root:{FIRST}:{LAST - FIRST}"
    for path in subids_missing(files):
        if path.is_symlink():
            raise BackendError(f"{path} is a symbolic link: tapers won't replace it (others' ranges are in it)",
                               hint=f"as root: echo {block} >> {path}")
        try:
            with _shadow_lock(path, lock_timeout):
                if _covers(path):  # added while we waited
                    continue
                current = os.lstat(path) if path.exists() else None
                old = path.read_text() if current else ""
                text = old + ("" if old.endswith("\n") or not old else "\n") + block + "\n"
                owner = (current.st_mode & 0o777, current.st_uid, current.st_gid) if current else (0o644, 0, 0)
                with Root(path.parent, str(path.parent), BackendError) as folder:
                    folder.write(path.name, text.encode(), *owner)
        except OSError as exc:
            raise BackendError(f"cannot give root the ids of unprivileged machines in {path}: {exc.strerror}",
                               hint=f"as root: echo {block} >> {path}") from None


@contextmanager
def _shadow_lock(path: Path, timeout: float) -> Iterator[None]:
    """PATH.lock as shadow's tools take it: a file holding our pid, linked to that name (a
    link that exists means another program holds it, unless its pid is gone: stale)."""
    import os
    import time

    lock = path.with_name(f"{path.name}.lock")
    mine = path.with_name(f"{path.name}.{os.getpid()}")
    mine.unlink(missing_ok=True)
    fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.write(fd, f"{os.getpid()}\0".encode())
    os.close(fd)
    held = False
    try:
        deadline = time.monotonic() + timeout
        while not held:
            try:
                os.link(mine, lock)
                held = True
            except FileExistsError:
                if _stale(lock):
                    lock.unlink(missing_ok=True)
                elif time.monotonic() > deadline:
                    raise BackendError(f"{lock} is held by another program (useradd or usermod?) for {timeout:g} s",
                                       hint=f"try again; if no such program runs, remove {lock}") from None
                else:
                    time.sleep(0.05)
        yield
    finally:
        if held:
            lock.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)


def _stale(lock: Path) -> bool:
    """The lock's holder is gone (the pid it names doesn't exist)."""
    import os

    try:
        pid = int(lock.read_bytes().split(b"\0")[0].strip() or b"0")
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _covers(path: Path) -> bool:
    return any(name in ("root", "0") and start <= FIRST and end >= LAST for name, start, end in _subids(path))


def free_range(taken: list[tuple[int, int]] | None = None) -> int:
    """The first range of tapers' block that overlaps no id already given out (`taken`:
    [start, end) intervals; by default `others_ids()`)."""
    taken = others_ids() if taken is None else taken
    for shift in range(FIRST, LAST, RANGE):
        if not any(start < shift + RANGE and shift < end for start, end in taken):
            return shift
    raise BackendError("no free id range left for unprivileged machines on this host")


def others_ids() -> list[tuple[int, int]]:
    """Ids this host has already given out: subordinate ranges other than tapers' own block,
    and the ids of its users and groups."""
    taken = [(start, end) for path in SUBID_FILES for _, start, end in _subids(path) if (start, end) != (FIRST, LAST)]
    for path in (Path("/etc/passwd"), Path("/etc/group")):
        for line in _lines(path):
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                taken.append((int(fields[2]), int(fields[2]) + 1))
    return taken


def _subids(path: Path) -> list[tuple[str, int, int]]:
    """(name, start, end) of each well-formed line of an /etc/subuid-style file."""
    entries = []
    for line in _lines(path):
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            entries.append((fields[0], int(fields[1]), int(fields[1]) + int(fields[2])))
    return entries


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def prepare(folder: Path, container: str, box: Path, shift: int, overlay: bool) -> Path:
    """Record the machine's range and box; for an overlay machine, give its writable layer
    (and overlay's work folder) to its root. The path of the box's view, which `mount_box`
    mounts at each start (overlay machines)."""
    import os

    # Only root and the machine's own root may pass through its folder (0710 root:SHIFT):
    # no host user reaches its files, snapshots or a setuid file the machine made.
    os.chown(folder, 0, shift)
    os.chmod(folder, 0o710)
    state = folder / STATE
    temporary = state.with_suffix(".tmp")
    temporary.write_text(json.dumps({"shift": shift, "box": str(box), "overlay": overlay}) + "\n")
    os.replace(temporary, state)
    for name in ("delta0", "work") if overlay else ():
        (folder / name).mkdir(mode=0o755, exist_ok=True)
        os.chown(folder / name, shift, shift)
    return _view(container)


def shift_tree(root: Path, shift: int) -> None:
    """A copied box made the machine's own (no overlayfs on this host): every owner moved up
    by `shift`. chown clears setuid/setgid bits and file capabilities: both are put back."""
    import os
    import stat

    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""] if folder == str(root) else [*dirs, *files]:
            path = os.path.join(folder, name) if name else folder
            st = os.lstat(path)
            caps = None
            if stat.S_ISREG(st.st_mode):
                try:
                    caps = os.getxattr(path, "security.capability", follow_symlinks=False)
                except OSError:
                    caps = None
            os.lchown(path, st.st_uid + shift, st.st_gid + shift)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))
            if caps is not None:
                os.setxattr(path, "security.capability", caps, follow_symlinks=False)


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

    import os

    state = _state(folder)
    if state is None or not state.get("overlay", True):
        return
    shift = int(state["shift"])
    view = _view(container)
    # /run/tapers/lower: passable, not listable; <container>/: root and the machine's root only.
    view.parent.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(view.parent.parent, 0o711)
    view.parent.mkdir(exist_ok=True)
    os.chown(view.parent, 0, shift)
    os.chmod(view.parent, 0o710)
    view.mkdir(exist_ok=True)
    if not idmap.is_mount(view):
        idmap.bind(Path(state["box"]), view, [(0, shift, RANGE)], [(0, shift, RANGE)], readonly=True, inert=True)


def unmount_box(container: str) -> None:
    """After a stop: the view goes (and its folder)."""
    from tapers.backend import idmap

    view = _view(container)
    if view.is_dir():
        idmap.unmount(view)
        view.rmdir()
    if view.parent.is_dir():
        view.parent.rmdir()


def _state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {folder / STATE}: {exc}",
                           hint="it is tapers' own file: `tapers destroy` and `up` make the machine again") from None


def _view(container: str) -> Path:
    return paths.host_run_dir() / "lower" / container / "box"
