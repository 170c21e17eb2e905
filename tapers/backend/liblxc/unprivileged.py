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
from pathlib import Path

from tapers import paths
from tapers.backend.api import MACHINE_IDS
from tapers.errors import BackendError

# tapers' block: above systemd's container range (524288-1879048191, nspawn, nsresourced) and
# LXD's (100000 up), below 2^31 - 2^17 (systemd's own "nobody" and special ids). Ranges that
# another /etc/subuid entry, a user or a group already has are skipped (see free_range).
FIRST = 0x70000000
MACHINES = 4094
LAST = FIRST + MACHINES * MACHINE_IDS
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
STATE = "tapers-unprivileged.json"  # in the container's folder: its range and its box


def idmap_items(shift: int) -> list[tuple[str, str]]:
    return [("lxc.idmap", f"u 0 {shift} {MACHINE_IDS}"), ("lxc.idmap", f"g 0 {shift} {MACHINE_IDS}")]


def config_items(idmap: list[tuple[str, str]], overlay: bool) -> list[tuple[str, str]]:
    return [
        ("lxc.include", "/usr/share/lxc/config/debian.userns.conf"),  # LXC's unprivileged defaults
        *idmap,
        *([("lxc.rootfs.options", "userxattr")] if overlay else []),
    ]


def subids_missing(files: tuple[Path, ...] = SUBID_FILES) -> list[Path]:
    """Which of /etc/subuid and /etc/subgid don't give root tapers' block (LXC's newuidmap
    refuses to map ids root was not given)."""
    return [path for path in files if not _covers(path)]


def ensure_subids(files: tuple[Path, ...] = SUBID_FILES, lock_timeout: float = 15) -> None:
    """Give root tapers' block in /etc/subuid and /etc/subgid (a line added; nothing else
    changes), as shadow's tools (useradd, usermod) change them (see etc_files)."""
    from tapers.backend.liblxc import etc_files

    block = f"root:{FIRST}:{LAST - FIRST}"
    for path in subids_missing(files):
        try:
            etc_files.edit(path, lambda lines: lines if _covers(path) else [*lines, block], lock_timeout)
        except OSError as exc:
            raise BackendError(f"cannot give root the ids of unprivileged machines in {path}: {exc.strerror}",
                               hint=f"as root: echo {block} >> {path}") from None


def _covers(path: Path) -> bool:
    return any(name in ("root", "0") and start <= FIRST and end >= LAST for name, start, end in _subids(path))


def free_range(taken: list[tuple[int, int]] | None = None, first: int = FIRST, last: int = LAST) -> int:
    """The first range of MACHINE_IDS ids from `first` (tapers' block by default) that overlaps no
    id already given out (`taken`: [start, end) intervals; by default `others_ids()`)."""
    taken = others_ids() if taken is None else taken
    for shift in range(first, last, MACHINE_IDS):
        if not any(start < shift + MACHINE_IDS and shift < end for start, end in taken):
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


def prepare(folder: Path, container: str, box: Path, shift: int, overlay: bool, layers: list[Path] | None = None,
            ) -> list[Path]:
    """Record the machine's range, box and cached layers (top first); for an overlay machine,
    give its writable layer (and overlay's work folder) to its root. The paths of the
    layers' views and the box's, which `mount_box` mounts at each start (overlay machines)."""
    import os

    # Only root and the machine's own root may pass through its folder (0710 root:SHIFT):
    # no host user reaches its files, snapshots or a setuid file the machine made.
    os.chown(folder, 0, shift)
    os.chmod(folder, 0o710)
    state = folder / STATE
    temporary = state.with_suffix(".tmp")
    layers = layers or []
    temporary.write_text(json.dumps({"shift": shift, "box": str(box), "overlay": overlay,
                                     "layers": [str(layer) for layer in layers]}) + "\n")
    os.replace(temporary, state)
    for name in ("delta0", "work") if overlay else ():
        (folder / name).mkdir(mode=0o755, exist_ok=True)
        os.chown(folder / name, shift, shift)
    return [*(_view(container, f"layer{index}") for index in range(len(layers))), _view(container)]


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


def layers_of(folder: Path) -> list[Path]:
    """The cached layers the machine stands on, top first (as the box's owners have them)."""
    state = _state(folder)
    return [Path(layer) for layer in state.get("layers", [])] if state else []


def mount_box(folder: Path, container: str) -> None:
    """Before a start: the box's files and the cached layers over it, read-only, seen
    through the machine's range."""
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
    sources = {f"layer{index}": Path(layer) for index, layer in enumerate(state.get("layers", []))}
    for name, source in {**sources, "box": Path(state["box"])}.items():
        seen = _view(container, name)
        seen.mkdir(exist_ok=True)
        if not idmap.is_mount(seen):
            idmap.bind(source, seen, [(0, shift, MACHINE_IDS)], [(0, shift, MACHINE_IDS)], readonly=True, inert=True)


def unmount_box(container: str) -> None:
    """After a stop: the views go (and their folder)."""
    folder = _view(container).parent
    if not folder.is_dir():
        return
    from tapers.backend import idmap

    for seen in folder.iterdir():
        idmap.unmount(seen)
        seen.rmdir()
    folder.rmdir()


def _state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {folder / STATE}: {exc}",
                           hint="it is tapers' own file: `tapers destroy` and `up` make the machine again") from None


def _view(container: str, name: str = "box") -> Path:
    return paths.host_run_dir() / "lower" / container / name
