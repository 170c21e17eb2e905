"""The box cache, content-addressed:

    <TAPERS_HOME>/boxes/store/<sha256 of the root filesystem>/rootfs/   the files, once
    <TAPERS_HOME>/boxes/<slug>/<version>/box.json                      a name and version
    <TAPERS_HOME>/boxes/<slug>/<version>/rootfs -> ../../store/<sha256>/rootfs

Two names (or versions) with the same files share them. A box folder appears only by an
atomic rename of a finished build or import, so a box that is listed is whole.
"""

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from tapers import paths
from tapers.errors import BoxError, InvalidBoxError
from tapers.taperfile.machine import split_box_ref

import re

META_NAME = "box.json"
# Patterns are compiled when first used (re keeps them): `status` and `destroy` use none.
BOX_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?"
VERSION = r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}"
STORE = "store"


class Box(NamedTuple):
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def user(self) -> dict[str, Any]:
        return self.meta["user"]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


TREE_DIGEST = "tree2:sha256:"  # how `tree_digest` is written now; a bare "sha256:" is the first way


def tree_digest(rootfs: Path, first_way: bool = False) -> str:
    """A hash of everything in a root filesystem: paths, types, modes, owners, extended
    attributes (file capabilities), link targets, which files are hard links of which, file
    contents (each read once, however many links it has). Recorded when a box enters the
    cache, where it names the box's files in the store; `tapers box verify` recomputes it.
    `first_way`: the digest of boxes cached before it changed (no attributes; a file read
    once per link), which `box verify` still checks them by."""
    import hashlib

    digest = hashlib.sha256()
    rootfs = Path(os.path.realpath(rootfs))  # (a cached box's rootfs is a link into the store)
    top = rootfs.lstat()
    if not first_way:
        digest.update(f"\0{top.st_mode}\0{top.st_uid}\0{top.st_gid}\0{_attributes(rootfs)}\n".encode())
    first_links: dict[tuple[int, int], str] = {}
    for folder, dirs, files in os.walk(rootfs):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(folder) / name
            st = path.lstat()
            relative = str(path.relative_to(rootfs))
            digest.update(f"{relative}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0".encode())
            if not first_way:
                digest.update(f"{_attributes(path)}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                first = first_links.setdefault((st.st_dev, st.st_ino), relative) if st.st_nlink > 1 else relative
                if first != relative and not first_way:
                    digest.update(f"\0link to {first}".encode())
                    continue
                if not first_way:  # (its length first: one file's bytes can't pass for the entries after it)
                    digest.update(f"{st.st_size}\0".encode())
                with path.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                digest.update(f"{st.st_rdev}".encode())
            digest.update(b"\n")
    return ("sha256:" if first_way else TREE_DIGEST) + digest.hexdigest()


def tree_digest_like(rootfs: Path, recorded: str) -> str:
    """The tree's digest, computed the way `recorded` was."""
    return tree_digest(rootfs, first_way=not recorded.startswith(TREE_DIGEST))


def _attributes(path: Path) -> str:
    """Its extended attributes, names and values, in a stable order."""
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:  # (a file system without them)
        return ""
    return ";".join(f"{name}={os.getxattr(path, name, follow_symlinks=False).hex()}" for name in names)


def store_rootfs(work: Path, digest: str) -> None:
    """Move `work/rootfs` into the store under its digest (or drop it: the store has it
    already) and leave a link to it in its place."""
    import shutil

    store = paths.boxes_dir() / STORE / digest.rpartition(":")[2]
    rootfs = work / "rootfs"
    if store.is_dir():
        shutil.rmtree(rootfs)
    else:
        store.parent.mkdir(parents=True, exist_ok=True)
        incoming = store.with_name(f".{store.name}.{os.getpid()}")
        incoming.mkdir()
        os.rename(rootfs, incoming / "rootfs")
        os.rename(incoming, store)
    # Relative, from where the box will live: <boxes>/<slug>/<version>/rootfs
    os.symlink(f"../../{STORE}/{store.name}/rootfs", rootfs)


@contextmanager
def work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder to make a box in (`publish` moves it to its place); whatever is
    left of it at the end, on success or failure, goes."""
    import shutil
    import uuid

    parent.mkdir(parents=True, exist_ok=True)
    work = parent / f"{prefix}{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def slug(box_name: str) -> str:
    """`debian/bookworm` -> `debian-bookworm` (file and folder names); no pydantic, no YAML:
    `status` finds boxes by name."""
    return split_box_ref(box_name)[0].replace("/", "-")


def publish(work: Path, meta: dict[str, Any], final: Path) -> Box:
    """The last step of a build or an import: the files into the store, the metadata written,
    and the box appears at once under its name and version."""
    meta["tree"] = tree_digest(work / "rootfs")
    store_rootfs(work, meta["tree"])
    (work / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.rename(work, final)
    return Box(path=final, meta=meta)


def list_boxes() -> list[Box]:
    root = paths.boxes_dir()
    boxes = []
    if not root.is_dir():
        return boxes
    for meta in sorted(root.glob(f"*/*/{META_NAME}")):
        try:
            boxes.append(Box(path=meta.parent, meta=json.loads(meta.read_text())))
        except (OSError, ValueError):
            continue  # not a box tapers can use; `box list` will not show it
    return sorted(boxes, key=lambda b: (b.name, b.version))


def find_box(reference: str) -> Box | None:
    """The newest cached box named `name`, or the exact `name@version`."""
    name, version = split_box_ref(reference)
    matches = [b for b in list_boxes() if b.name == name and (not version or b.version == version)]
    return matches[-1] if matches else None


def check_box_name(name: object, where: str) -> str:
    """A box name from outside (a command line, a catalog, an archive) becomes a folder name:
    only plain tokens like `debian/bookworm` are accepted."""
    if not isinstance(name, str) or not re.fullmatch(BOX_NAME, name):
        raise InvalidBoxError(
            f"{where}: {name!r} is not a box name; refused",
            hint="box names look like `team/web` (letters, digits, '.', '_', '-', one '/')",
        )
    return name


def check_version(version: object, where: str) -> str:
    """A box version from outside becomes a folder name: plain tokens like 1.2.0 only."""
    if not isinstance(version, str) or not re.fullmatch(VERSION, version):
        raise InvalidBoxError(
            f"{where}: {version!r} is not a box version; refused",
            hint="versions look like 1.2.0 or 20260101.120000 (letters, digits, '.', '_', '+', '-')",
        )
    return version


def box_folder(name: str) -> Path:
    return paths.boxes_dir() / slug(name)


def remove_box(box: Box) -> None:
    import shutil

    trash = box.path.with_name(f".remove-{box.path.name}")
    try:
        box.path.rename(trash)  # atomic: the box is gone for everyone at once
    except OSError as exc:
        raise BoxError(f"cannot remove box `{box.ref}`: {exc.strerror}") from None
    shutil.rmtree(trash, ignore_errors=True)  # the rootfs link goes, not what it points to
    try:
        box.path.parent.rmdir()
    except OSError:
        pass
    digest = str(box.meta.get("tree", "")).rpartition(":")[2]
    stored = paths.boxes_dir() / STORE / digest
    if digest and stored.is_dir() and not any(str(b.meta.get("tree", "")).endswith(digest) for b in list_boxes()):
        shutil.rmtree(stored, ignore_errors=True)  # no name uses these files any more
