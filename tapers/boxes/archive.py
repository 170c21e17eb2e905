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

from tapers import paths
from tapers.errors import InvalidBoxError

DEFAULT_MAX_BYTES = 16 * 1024**3
MAX_MEMBERS = 500_000  # a full Debian desktop has about 200,000 files
MAX_DEPTH = 256  # folders in a member's path
MAX_NAME = 4096  # characters in a member's path or link target (PATH_MAX)
MAX_HEADER = 1024**2  # bytes of a long-name or pax header, which tarfile reads whole


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a GNU long name or a pax header whole, before a member is seen: one
    header claiming 400 MB would be read into memory. Refused past MAX_HEADER instead."""

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._bounded()
        return super()._proc_gnulong(tarfile_)  # type: ignore[misc]

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._bounded()
        return super()._proc_pax(tarfile_)  # type: ignore[misc]

    def _bounded(self) -> None:
        if not 0 <= self.size <= MAX_HEADER:
            raise InvalidBoxError(f"box archive: a header of {self.size} bytes (a long name or pax header); refused")


class _StrictTarFile(tarfile.TarFile):
    """Links made exactly as the archive says, or an error. Python's tarfile, when a link
    can't be made (the name is taken, the target too long for symlink(2), too many links to
    one file), extracts in its place whatever member of the archive has the target's name,
    unchecked: any member, even one beside the root filesystem that was never checked (a
    link to the host's /etc), or a full copy of a file per hard link (past the size bound)."""

    def makelink(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        if tarinfo.issym():
            os.symlink(tarinfo.linkname, targetpath)
        else:
            os.link(tarinfo._link_target, targetpath, follow_symlinks=False)  # type: ignore[attr-defined]

    def makelink_with_filter(self, tarinfo: tarfile.TarInfo, targetpath: str, *rest: object) -> None:
        """What newer Pythons (3.11.13, 3.12.11, 3.13.4 and later) call in place of makelink,
        with the same fallback: the same strict links instead."""
        self.makelink(tarinfo, targetpath)


def open_archive(path: Path) -> tarfile.TarFile:
    return _StrictTarFile.open(path, tarinfo=BoundedTarInfo)


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
    seen: set[str] = set()  # every path but folders': one member each
    members: list[tuple[tarfile.TarInfo, str]] = []
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise InvalidBoxError(f"box archive {archive} has more than {MAX_MEMBERS:,} members; refused")
        if len(member.name) > MAX_NAME or len(member.linkname) > MAX_NAME:
            raise InvalidBoxError(f"box archive {archive}: a member's name is over {MAX_NAME} characters; refused")
        path = _clean(member.name, archive)
        if path.count("/") >= MAX_DEPTH:
            raise InvalidBoxError(f"box archive {archive}: `{member.name[:200]}...` is more than {MAX_DEPTH} folders "
                                  "deep; refused")
        if strip:
            if path == strip:
                path = ""
            elif path.startswith(strip + "/"):
                path = path[len(strip) + 1:]
            else:
                continue  # metadata beside the root filesystem
        if member.size < 0:
            raise InvalidBoxError(f"box archive {archive}: member `{member.name}` has a negative size; refused")
        total += member.size + tarfile.BLOCKSIZE  # a header costs a block to read, whatever its member
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
        if path in seen:  # (a folder may come again: its mode and owner are set again, nothing else)
            raise InvalidBoxError(f"box archive {archive}: `{member.name}` comes twice; refused")
        if not member.isdir():
            seen.add(path)
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


# Members were checked above (check_members); Pythons with extraction filters (3.11.4+)
# must not apply theirs on top (they refuse a box's own device nodes and setuid files).
_CHECKED_ALREADY = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


CAPABILITIES = "SCHILY.xattr.security.capability"  # GNU tar --xattrs, bsdtar: a file's capabilities


def _restore_capabilities(member: tarfile.TarInfo, path: Path) -> None:
    """Python's tarfile drops extended attributes: put back a regular file's capabilities
    (ping's cap_net_raw), after the owner was set (a chown clears them). In a user
    namespace the kernel records them as that namespace's."""
    value = member.pax_headers.get(CAPABILITIES)
    if value is None or not member.isfile() or member.islnk():
        return
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) <= 24:  # VFS_CAP_REVISION_2 is 20 bytes, _3 is 24: anything else is not capabilities
        os.setxattr(path, "security.capability", raw, follow_symlinks=False)


def extract(archive: Path, target: Path, strip: str = "") -> None:
    """Unpack `archive` (its `strip/` folder when given) into the new folder `target`."""
    try:
        with open_archive(archive) as tar:
            members = check_members(tar, archive.name, strip)
            target.mkdir(mode=0o755)
            devices = not paths.in_user_namespace()  # there, no device can be made: LXC makes /dev's at each start
            for member, path in members:
                if member.isdev() and not devices:
                    continue
                member.name = path or "."
                if member.islnk():
                    link = _clean(member.linkname, archive.name)
                    member.linkname = link[len(strip) + 1:] if strip else link
                # A hard link shares its target's inode: its own header must not change that mode.
                tar.extract(member, target, set_attrs=not member.islnk(), numeric_owner=True, **_CHECKED_ALREADY)
                _restore_capabilities(member, target / member.name)
    except OSError as exc:  # (its strerror only: the path may be 4096 characters of the archive's)
        raise InvalidBoxError(f"box archive {archive.name} could not be unpacked: {exc.strerror or exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidBoxError(f"box archive {archive.name} could not be read: {exc}") from None
