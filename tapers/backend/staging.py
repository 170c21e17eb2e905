"""Synced folders are staged on the host under /run/tapers/mounts/<container>/<n>
(outside any container folder: deleting a container can never reach into the user's
folder), which the engine then binds into the machine. Staging mounts the recorded real
path of the folder without following any link (a folder swapped for a link to /etc after
it was checked is refused at the next start), read-only when asked, and through an id
mapping when the folder's owner on the host is not the machine's login user. Used by both
backends (for LXD, when it runs on this host)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tapers import paths
from tapers.backend.api import Mount
from tapers.errors import BackendError


def source_of(container: str, index: int, mount: Mount) -> Path:
    """What the engine binds: the staged view."""
    return _staging(container, index)


def as_records(mounts: tuple[Mount, ...], shift: int = 0, staged: bool = True) -> list[dict[str, Any]]:
    """The mounts as kept with the container, for `prepare` at each start. `shift`: the
    host uid of the machine's root when it is unprivileged (0: privileged). Not `staged`:
    the machine binds the folder itself (a normal user's: `prepare` only checks it)."""
    return [{"source": str(m.source), "target": m.target, "readonly": m.readonly,
             "idmap": m.idmap if staged else None, "staged": staged, "shift": shift} for m in mounts]


def _staged(record: dict[str, Any]) -> bool:
    """Machines made by tapers before 0.2 bind unmapped folders directly (not staged)."""
    return bool(record.get("staged") or record["idmap"])


def make_dirs(container: str, records: list[dict[str, Any]]) -> None:
    """The (empty) folders the staged views will be mounted on, for engines that check a
    disk's source when the container is created or changed."""
    for index, mount in enumerate(records):
        if _staged(mount):
            _passable(container, mount.get("shift") or 0)
            _staging(container, index).mkdir(exist_ok=True)


def prepare(container: str, records: list[dict[str, Any]]) -> None:
    """Before a start: an idmapped view of each synced folder that needs one."""
    from tapers.backend import idmap

    from tapers.host_folders import refusal

    for index, mount in enumerate(records):
        source = Path(mount["source"])
        why = refusal(source)
        if why is not None:
            raise BackendError(f"`{container}`: the synced folder {source} can't be shared: {why}",
                               hint="change the Taperfile and run `tapers reload`")
        if not _staged(mount):
            os.close(idmap.open_no_links(source))  # bound by path: at least refuse a link now
            continue
        staging = _staging(container, index)
        shift = mount.get("shift") or 0
        _passable(container, shift)
        if idmap.is_mount(staging):
            continue
        staging.mkdir(exist_ok=True)
        maps = (None, None)
        if mount["idmap"] and shift:
            # Unprivileged: the folder owner's files are the login user's, and only theirs:
            # no other id maps, so guest root can create nothing there (no setuid-root file
            # can land on the host), and the owner's files can't become anyone else's.
            guest_uid, host_uid, guest_gid, host_gid = mount["idmap"]
            maps = ([(host_uid, shift + guest_uid, 1)], [(host_gid, shift + guest_gid, 1)])
        elif mount["idmap"]:
            guest_uid, host_uid, guest_gid, host_gid = mount["idmap"]
            maps = (idmap.swap_map(guest_uid, host_uid), idmap.swap_map(guest_gid, host_gid))
        # nosuid, nodev: a setuid file a machine left in the folder counts for nothing here
        idmap.bind(source, staging, *maps, mount["readonly"], inert=True)


def release(container: str, keep_dirs: bool = False) -> None:
    """After a stop: the staged views go, and their folders unless `keep_dirs` (never
    deleted recursively: a mount left there would be the user's folder)."""
    folder = paths.host_run_dir() / "mounts" / container
    if not folder.is_dir():
        return
    from tapers.backend import idmap

    try:
        for staging in folder.iterdir():
            idmap.unmount(staging)
            if not keep_dirs:
                staging.rmdir()
        if not keep_dirs:
            folder.rmdir()
    except OSError as exc:
        raise BackendError(
            f"cannot release the synced folders of `{container}`: {exc}",
            hint=f"unmount what is under {folder} by hand (`umount -l`), then try again",
        ) from None


def _passable(container: str, shift: int) -> None:
    """The views' folders: `mounts/` passable, not listable; `mounts/<container>/` passable by
    root and the machine's root only (0710 root:SHIFT; 0700 for a privileged machine). A view
    has the mode of the folder it shows: no host user may reach it here (the project of a
    private home, the files a machine wrote as the folder's owner)."""
    folder = paths.host_run_dir() / "mounts" / container
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:  # (a normal user's machines bind their folders themselves: not staged)
        return
    os.chmod(folder.parent, 0o711)
    os.chown(folder, 0, shift)
    os.chmod(folder, 0o710 if shift else 0o700)


def _staging(container: str, index: int) -> Path:
    return paths.host_run_dir() / "mounts" / container / str(index)
