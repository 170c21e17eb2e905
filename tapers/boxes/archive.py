"""Unpacking box archives safely. The box cache runs as root, so an archive is hostile
until proven otherwise: every member is checked before a single byte is written.

Refused: absolute paths, `..`, links (symbolic or hard) that lead outside the root
filesystem, members written through a symbolic link the archive made, device nodes
outside /dev, FIFOs and sockets outside the usual places, and archives that would unpack to
more than the size limit. Kept exactly: numeric ownership, permissions (setuid too),
device nodes under /dev, symbolic links inside the root filesystem (absolute targets are
the guest's, never the host's).
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path

from tapers.errors import InvalidBoxError

DEFAULT_MAX_BYTES = 16 * 1024**3


def max_unpacked_bytes() -> int:
    return int(os.environ.get("TAPERS_BOX_MAX_BYTES", DEFAULT_MAX_BYTES))


def _clean(name: str, archive: str) -> str:
    """The member's path inside the archive, normalised; refuse absolute paths and `..`."""
    if name.startswith("/"):
        raise InvalidBoxError(f"box archive {archive}: member `{name}` has an absolute path; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidBoxError(f"box archive {archive}: member `{name}` climbs out with `..`; refused")
    return "/".join(parts)


def _escapes(base_dir: str, target: str) -> bool:
    """A relative link target that climbs above the root filesystem (as laid out on the host)."""
    joined = posixpath.normpath(posixpath.join(base_dir, target))
    return joined == ".." or joined.startswith("../")


def check_members(tar: tarfile.TarFile, archive: str, strip: str = "") -> list[tuple[tarfile.TarInfo, str]]:
    """Every member with its path relative to the root filesystem, or InvalidBoxError.
    `strip`: the folder inside the archive that holds the root filesystem ("rootfs")."""
    limit = max_unpacked_bytes()
    total = 0
    links: set[str] = set()
    files: set[str] = set()  # regular files so far: what a hard link may name
    members: list[tuple[tarfile.TarInfo, str]] = []
    for member in tar:
        path = _clean(member.name, archive)
        if strip:
            if path == strip:
                path = ""
            elif path.startswith(strip + "/"):
                path = path[len(strip) + 1:]
            else:
                continue  # metadata beside the root filesystem
        if member.size < 0:
            raise InvalidBoxError(f"box archive {archive}: member `{member.name}` has a negative size; refused")
        total += member.size
        if total > limit:
            raise InvalidBoxError(
                f"box archive {archive} unpacks to more than {limit} bytes (at `{member.name}`); refused",
                hint="raise TAPERS_BOX_MAX_BYTES if this box is really that big",
            )
        if path in links:
            raise InvalidBoxError(
                f"box archive {archive}: member `{member.name}` would be written through the symbolic link of "
                "the same name; refused"
            )
        parents = path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in links:
                raise InvalidBoxError(
                    f"box archive {archive}: member `{member.name}` would be written through the symbolic link "
                    f"`{'/'.join(parents[:depth])}`; refused"
                )
        if member.issym():
            # Absolute targets are the guest's (resolved inside its root) and never followed here.
            if not member.linkname.startswith("/") and _escapes(posixpath.dirname(path), member.linkname):
                raise InvalidBoxError(
                    f"box archive {archive}: symbolic link `{member.name}` -> `{member.linkname}` leads outside "
                    "the root filesystem; refused"
                )
            links.add(path)
        elif member.islnk():
            target = _clean(member.linkname, archive)
            if strip:
                if not target.startswith(strip + "/"):
                    raise InvalidBoxError(
                        f"box archive {archive}: hard link `{member.name}` -> `{member.linkname}` leads outside "
                        "the root filesystem; refused"
                    )
                target = target[len(strip) + 1:]
            if any(target == link or target.startswith(link + "/") for link in links):
                raise InvalidBoxError(
                    f"box archive {archive}: hard link `{member.name}` goes through a symbolic link; refused"
                )
            if target not in files:
                raise InvalidBoxError(
                    f"box archive {archive}: hard link `{member.name}` -> `{member.linkname}` names no file "
                    "that comes before it in the archive; refused"
                )
        elif member.isdev() and not (path.startswith("dev/") or path == "dev"):
            raise InvalidBoxError(f"box archive {archive}: device node `{member.name}` outside /dev; refused")
        elif not (member.isfile() or member.isdir() or member.isdev() or member.isfifo()):
            raise InvalidBoxError(f"box archive {archive}: member `{member.name}` has an unsupported type; refused")
        if member.isfile():
            files.add(path)
        members.append((member, path))
    return members


def extract(archive: Path, target: Path, strip: str = "") -> None:
    """Unpack `archive` (its `strip/` folder when given) into the new folder `target`."""
    try:
        with tarfile.open(archive) as tar:
            members = check_members(tar, archive.name, strip)
            target.mkdir(mode=0o755)
            for member, path in members:
                member.name = path or "."
                if member.islnk():
                    link = _clean(member.linkname, archive.name)
                    member.linkname = link[len(strip) + 1:] if strip else link
                # A hard link shares its target's inode: its own header must not change that mode.
                tar.extract(member, target, set_attrs=not member.islnk(), numeric_owner=True, filter="fully_trusted")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidBoxError(f"box archive {archive.name} could not be read: {exc}") from None
