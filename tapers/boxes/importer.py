"""`tapers box add`: a box archive (a file, or a URL served over HTTP) into the cache.

The archive is fetched (or read) and verified first, then checked member by member and
unpacked into a temporary folder beside the cache, prepared like a built box (the login
user, sshd, no host keys), and renamed into place: a refused box leaves no trace.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
import uuid
from pathlib import Path

from tapers import paths
from tapers.boxes.archive import extract
from tapers.boxes.build import box_metadata, prepare_rootfs
from tapers.boxes.cache import META_NAME, Box, box_folder, list_boxes, remove_box, tree_digest
from tapers.errors import BoxError, InvalidBoxError
from tapers.events import Reporter

CHUNK = 1 << 20


def add_box(
    name: str, source: str, reporter: Reporter, sha256: str | None = None, force: bool = False, from_rootfs: bool = False
) -> Box:
    from filelock import FileLock

    folder = box_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / f".add-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        archive = _fetch(source, work, reporter)
        digest = _sha256(archive)
        if sha256 and digest != sha256.lower():
            raise InvalidBoxError(
                f"checksum mismatch for {source}: expected sha256 {sha256.lower()}, got {digest}; nothing was added"
            )
        meta_in_archive, strip, nested = _detect(archive, from_rootfs)
        version = str(meta_in_archive.get("version") or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d.%H%M%S"))
        with FileLock(str(paths.box_build_lock(folder.name))):
            existing = [b for b in list_boxes() if b.name == name and b.version == version]
            if existing and not force:
                raise BoxError(f"box `{name}@{version}` is already in the cache", hint="pass --force to replace it")
            reporter.line("box", f"unpacking {archive.name} ({archive.stat().st_size >> 20} MB)")
            rootfs = work / "rootfs"
            if nested:
                inner = _nested(archive, nested, work)
                if archive.parent == work:
                    archive.unlink()
                archive = inner
            extract(archive, rootfs, strip)
            if archive.parent == work:
                archive.unlink()
            if not (rootfs / "usr/sbin/sshd").exists():
                raise InvalidBoxError(
                    f"box `{name}` has no OpenSSH server (usr/sbin/sshd) and tapers cannot install one offline",
                    hint="build the box with openssh-server in it",
                )
            reporter.status("box", "preparing the guest (user, sshd)")
            prepare_rootfs(rootfs)
            meta = box_metadata(name, version, rootfs, source=f"added from {source}", identity=digest)
            meta["digest"] = f"sha256:{digest}"
            meta["tree"] = tree_digest(rootfs)
            (work / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            final = folder / version
            for old in existing:
                remove_box(old)
            os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    reporter.line("box", f"added `{name}@{version}`")
    return Box(path=final, meta=meta)


def _fetch(source: str, work: Path, reporter: Reporter) -> Path:
    if source.startswith(("http://", "https://")):
        target = work / "download"
        reporter.line("box", f"downloading {source}")
        try:
            with urllib.request.urlopen(source, timeout=60) as response, target.open("wb") as out:
                size = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    reporter.status("box", f"{done >> 20} MB" + (f" of {size >> 20} MB" if size else ""))
        except OSError as exc:
            raise BoxError(f"could not download {source}: {exc}") from None
        return target
    path = Path(source)
    if not path.is_file():
        raise BoxError(f"no box file at `{source}`", hint="give a box archive file or an http(s) URL")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _detect(archive: Path, from_rootfs: bool) -> tuple[dict, str, str]:
    """What the archive is, by its content: (metadata, folder of the root filesystem inside
    it, member that holds the root filesystem as a nested archive or "")."""
    if from_rootfs:
        return {}, "", ""
    try:
        with tarfile.open(archive) as tar:
            names: dict[str, tarfile.TarInfo] = {}
            for member in tar:
                names[member.name.removeprefix("./").rstrip("/")] = member
                if len(names) > 200:
                    break

            def read_json(name: str) -> dict:
                return json.load(tar.extractfile(names[name]))  # type: ignore[arg-type]

            if "box.json" in names:  # tapers' own
                return read_json("box.json"), "rootfs", ""
            if "metadata.json" in names and "rootfs.tar.gz" in names:  # vagrant-lxc
                meta = read_json("metadata.json")
                if meta.get("provider") != "lxc":
                    raise InvalidBoxError(
                        f"{archive.name} is a Vagrant box for the `{meta.get('provider')}` provider; "
                        "tapers reads lxc boxes"
                    )
                return {}, "rootfs", names["rootfs.tar.gz"].name  # its "version" is the format's
            if "rootfs" in names and ("metadata.yaml" in names or "config" in names):  # LXC/LXD unified image
                return {}, "rootfs", ""
            if {"bin", "etc", "usr"} <= set(n.split("/")[0] for n in names):  # LXC split image's rootfs.tar.xz
                raise InvalidBoxError(
                    f"{archive.name} is a bare root filesystem",
                    hint="add it with --from-rootfs (an LXC image's rootfs.tar.xz is one)",
                )
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise InvalidBoxError(f"{archive.name} is not a box archive (tar): {exc}") from None
    raise InvalidBoxError(
        f"{archive.name} is not a box this tapers can read: no box.json (tapers), metadata.json with "
        "rootfs.tar.gz (vagrant-lxc), or rootfs/ with metadata (LXC image)",
        hint="a plain root filesystem tarball can be added with --from-rootfs",
    )


def _nested(archive: Path, member: str, work: Path) -> Path:
    """Copy a nested archive (vagrant-lxc's rootfs.tar.gz) out of the outer one."""
    target = work / "rootfs-archive"
    with tarfile.open(archive) as tar:
        source = tar.extractfile(member)
        if source is None:
            raise InvalidBoxError(f"{archive.name}: `{member}` is not a file")
        with target.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
    return target
