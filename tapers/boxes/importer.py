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
from pathlib import Path

from tapers import paths
from tapers.boxes import catalog
from tapers.boxes.archive import extract, max_unpacked_bytes, open_archive
from tapers.boxes.build import box_metadata
from tapers.boxes.cache import (
    META_NAME, Box, box_folder, check_box_name, check_version, list_boxes, publish, remove_box, work_dir,
)
from tapers.boxes.prepare import prepare_rootfs
from tapers.errors import BoxError, InvalidBoxError
from tapers.events import Reporter
from tapers.rootfs import Root

CHUNK = 1 << 20
METADATA_LIMIT = 1 << 20  # box.json, metadata.json


def add_box(
    name: str | None,
    source: str,
    reporter: Reporter,
    sha256: str | None = None,
    force: bool = False,
    from_rootfs: bool = False,
    version: str | None = None,
    catalog_ok: bool = True,
) -> Box:
    """Add a box archive, or the newest (or `version`-matching) release of a catalog.
    `version`: for a catalog, a constraint (`~> 1.2`, or a plain version); for an archive,
    the version it is recorded as. `sha256` checks whatever was fetched, catalog or archive;
    a catalog's release must be an archive (`catalog_ok` False)."""
    if name is not None:
        check_box_name(name, "the box name given")
    if source.startswith("http://") and not sha256:
        raise BoxError(
            f"{source} is plain http: whoever can change the download on its way could give you any box; refused",
            hint="use an https URL, or give the archive's checksum: tapers box add NAME URL --sha256 HEX "
            "(for a `box_url` in a Taperfile, run that command once first)",
        )
    with work_dir(paths.boxes_dir(), ".add-") as work:
        archive = _fetch(source, work, reporter, plain_http_ok=bool(sha256))
        digest = _sha256(archive)
        if sha256 and digest != sha256.lower():
            raise InvalidBoxError(
                f"checksum mismatch for {source}: expected sha256 {sha256.lower()}, got {digest}; nothing was added"
            )
        with archive.open("rb") as handle:
            head = handle.read(64)
        if catalog.looks_like_catalog(head):
            if not catalog_ok:
                raise InvalidBoxError(f"{source} is a catalog where a box archive was expected; refused")
            if archive.stat().st_size > METADATA_LIMIT:
                raise InvalidBoxError(f"catalog {source} is larger than {METADATA_LIMIT} bytes; refused")
            if source.startswith("http://") and not sha256:  # its checksums could be anyone's
                raise BoxError(
                    f"catalog {source} is plain http: its checksums could be anyone's; refused",
                    hint="use the catalog's https URL (or give the catalog's own checksum with --sha256)",
                )
            box_name, releases = catalog.parse(archive.read_text(), source)
            if name and name != box_name:
                raise BoxError(f"catalog {source} is for box `{box_name}`, not `{name}`")
            release = catalog.choose(releases, version, source)
            reporter.line("box", f"catalog {source}: `{box_name}` version {release.version}")
            shutil.rmtree(work, ignore_errors=True)  # the release's download needs the room
            return _add_release(release, source, reporter, force)
        if not name:
            raise BoxError(f"{source} is a box archive: give the box a name", hint="tapers box add NAME FILE|URL")
        meta_in_archive, strip, nested = _detect(archive, from_rootfs)
        version = version or str(
            meta_in_archive.get("version") or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d.%H%M%S")
        )
        check_version(version, f"box archive {source}")
        folder = box_folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        from tapers import locks

        with locks.held(paths.box_build_lock(folder.name)):
            existing = [b for b in list_boxes() if b.name == name and b.version == version]
            if existing and not force:
                raise BoxError(f"box `{name}@{version}` is already in the cache", hint="pass --force to replace it")
            reporter.line("box", f"unpacking {Path(source).name} ({archive.stat().st_size >> 20} MB)")
            rootfs = work / "rootfs"
            if nested:
                inner = _nested(archive, nested, work)
                if archive.parent == work:
                    archive.unlink()
                archive = inner
            extract(archive, rootfs, strip)
            if archive.parent == work:
                archive.unlink()
            reporter.status("box", "preparing the guest (user, sshd)")
            with Root(rootfs, f"box `{name}`", InvalidBoxError) as root:
                if root.lstat("/usr/sbin/sshd") is None:
                    raise InvalidBoxError(
                        f"box `{name}` has no OpenSSH server (usr/sbin/sshd) and tapers cannot install one offline",
                        hint="build the box with openssh-server in it",
                    )
                user = prepare_rootfs(root)
            meta = box_metadata(name, version, user, source=f"added from {source}", identity=digest)
            meta["digest"] = f"sha256:{digest}"
            for old in existing:
                remove_box(old)
            box = publish(work, meta, folder / version)
    reporter.line("box", f"added `{name}@{version}`")
    return box


def _add_release(release: catalog.Release, catalog_url: str, reporter: Reporter, force: bool) -> Box:
    box = add_box(release.name, release.url, reporter, sha256=release.sha256, force=force, version=release.version,
                  catalog_ok=False)
    box.meta["catalog"] = catalog_url
    (box.path / META_NAME).write_text(json.dumps(box.meta, indent=2, sort_keys=True) + "\n")
    return box


def newest_release(catalog_url: str, reporter: Reporter) -> catalog.Release:
    with work_dir(paths.boxes_dir(), ".catalog-") as work:
        fetched = _fetch(catalog_url, work, reporter, plain_http_ok=False)
        if fetched.stat().st_size > METADATA_LIMIT:  # (before it is read into memory)
            raise InvalidBoxError(f"catalog {catalog_url} is larger than {METADATA_LIMIT} bytes; refused")
        text = fetched.read_text()
    _, releases = catalog.parse(text, catalog_url)
    return catalog.choose(releases, None, catalog_url)


def _fetch(source: str, work: Path, reporter: Reporter, plain_http_ok: bool) -> Path:
    """A local file as it is; a URL downloaded (resumed when an earlier try stopped half-way
    and the server takes ranges) and moved into `work`. A redirect to plain http is refused
    unless the content is checked by its checksum (`plain_http_ok`)."""
    if not source.startswith(("http://", "https://")):
        path = Path(source)
        if not path.is_file():
            raise BoxError(f"no box file at `{source}`", hint="give a box archive file, a catalog, or an http(s) URL")
        return path
    downloads = paths.boxes_dir() / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    partial = downloads / (hashlib.sha256(source.encode()).hexdigest()[:24] + ".part")
    done = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(source, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with _opener(plain_http_ok).open(request, timeout=60) as response:
            resumed = done and response.status == 206
            if done and not resumed:
                done = 0  # the server sends it all again
            size = int(response.headers.get("Content-Length") or 0) + done
            reporter.line("box", f"downloading {source}" + (f" (resuming at {done >> 20} MB)" if resumed else ""))
            with partial.open("ab" if resumed else "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if done > max_unpacked_bytes():
                        out.close()
                        partial.unlink(missing_ok=True)
                        raise InvalidBoxError(
                            f"{source} is larger than {max_unpacked_bytes()} bytes; refused",
                            hint="raise TAPERS_BOX_MAX_BYTES if this box is really that big",
                        )
                    reporter.status("box", f"{done >> 20} MB" + (f" of {size >> 20} MB" if size else ""))
    except OSError as exc:
        raise BoxError(
            f"could not download {source}: {exc}",
            hint="run the same command again: the download resumes where it stopped",
        ) from None
    target = work / "download"
    os.replace(partial, target)
    return target


def _opener(plain_http_ok: bool) -> urllib.request.OpenerDirector:
    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            if not newurl.startswith("https://") and not plain_http_ok:
                raise BoxError(
                    f"{req.full_url} redirects to {newurl}, which is not https; refused",
                    hint="give the archive's checksum with --sha256 HEX to allow it",
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(Redirects)


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
        with open_archive(archive) as tar:
            names: dict[str, tarfile.TarInfo] = {}
            for member in tar:
                names[member.name.removeprefix("./").rstrip("/")] = member
                if len(names) > 200:
                    break

            def read_json(name: str) -> dict:
                member = names[name]
                if not member.isfile() or member.size > METADATA_LIMIT:
                    raise InvalidBoxError(f"{archive.name}: `{name}` is not a small file; refused")
                data = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                if not isinstance(data, dict):
                    raise InvalidBoxError(f"{archive.name}: `{name}` is not a JSON object; refused")
                return data

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
    except (tarfile.TarError, EOFError, OSError, ValueError, RecursionError) as exc:
        raise InvalidBoxError(f"{archive.name} is not a box archive (tar): {type(exc).__name__}") from None
    raise InvalidBoxError(
        f"{archive.name} is not a box this tapers can read: no box.json (tapers), metadata.json with "
        "rootfs.tar.gz (vagrant-lxc), or rootfs/ with metadata (LXC image)",
        hint="a plain root filesystem tarball can be added with --from-rootfs",
    )


def _nested(archive: Path, member: str, work: Path) -> Path:
    """Copy a nested archive (vagrant-lxc's rootfs.tar.gz) out of the outer one."""
    target = work / "rootfs-archive"
    with open_archive(archive) as tar:
        info = tar.getmember(member)
        if not info.isreg():  # (a hard link's size is 0, and tarfile would read the file it names)
            raise InvalidBoxError(f"{archive.name}: `{member}` is not a plain file in the archive; refused")
        if not 0 <= info.size <= max_unpacked_bytes():
            raise InvalidBoxError(
                f"{archive.name}: `{member}` is {info.size} bytes, more than {max_unpacked_bytes()}; refused",
                hint="raise TAPERS_BOX_MAX_BYTES if this box is really that big",
            )
        source = tar.extractfile(info)
        if source is None:
            raise InvalidBoxError(f"{archive.name}: `{member}` is not a file")
        with target.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
    return target
