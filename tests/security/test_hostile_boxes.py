"""Boxes from the internet are data: `tapers box add` never runs anything of a box, never
follows a box's links out of it, checks its metadata like Taperfile input, and needs a
checksum for what plain http brings. Each test asserts the refusal (or the harmless
result) and that nothing changed on the host or in the cache."""

from __future__ import annotations

import functools
import hashlib
import io
import http.server
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from tapers.cli.main import run
from tests.unit.test_box_archives import entry, make_archive

SSHD = (entry("rootfs/usr/sbin/sshd", mode=0o755), b"#!/bin/sh\n")


def box_archive(tmp_path: Path, *members, meta: dict | None = None, name: str = "box.tar.gz") -> Path:
    box_json = (entry("box.json"), json.dumps(meta or {"name": "evil", "version": "1"}).encode())
    return make_archive(tmp_path / name, [box_json, SSHD, *members])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TAPERS_HOME", str(home))
    return home


def cached_files(home: Path) -> list[str]:
    boxes = home / "boxes"
    return sorted(str(p.relative_to(home)) for p in boxes.rglob("*")) if boxes.exists() else []


def no_box_added(home: Path) -> None:
    assert not list((home / "boxes").rglob("box.json")) if (home / "boxes").exists() else True
    leftovers = [p for p in (home / "boxes").rglob("*") if not p.is_dir()] if (home / "boxes").exists() else []
    assert leftovers == [], f"a refused box left {leftovers}"


# -- nothing of a box runs on the host --------------------------------------------------


def test_the_box_shell_never_runs(home: Path, tmp_path: Path, capsys) -> None:
    """The box's /bin/sh would work in a chroot (a real shell with its libraries inside the
    box) and writes a marker when run: preparing the box must not run it."""
    shell = shutil.which("dash") or "/bin/dash"
    libraries = subprocess.run(["ldd", shell], capture_output=True, text=True, check=True).stdout.split()
    members = [(entry("rootfs/usr/bin/dash", mode=0o755), Path(shell).read_bytes())]
    for library in {p for p in libraries if p.startswith("/") and Path(p).is_file()}:
        members.append((entry("rootfs" + library, mode=0o755), Path(library).read_bytes()))
    marker_script = b"#!/usr/bin/dash\necho ran > /box-shell-ran\necho ran > /tmp/box-shell-ran\n"
    members.append((entry("rootfs/bin/sh", mode=0o755), marker_script))
    archive = box_archive(tmp_path, *members)

    assert run(["box", "add", "evil/shell", str(archive)]) == 0, capsys.readouterr().err
    (box,) = (home / "boxes" / "evil-shell").iterdir()
    rootfs = (box / "rootfs").resolve()
    assert not (rootfs / "box-shell-ran").exists() and not (rootfs / "tmp/box-shell-ran").exists()
    assert not Path("/box-shell-ran").exists() and not Path("/tmp/box-shell-ran").exists()
    assert "tapers:x:1000:1000::/home/tapers:/bin/sh" in (rootfs / "etc/passwd").read_text()  # prepared by edits
    assert (rootfs / "etc/sudoers.d/tapers").stat().st_mode & 0o777 == 0o440


# -- a box's links never lead tapers' writes out of it ------------------------------------

LINKS_OUT = {
    "etc is the host's /etc": [(entry("rootfs/etc", tarfile.SYMTYPE, "/etc"), None)],
    "sudoers.d is the host's": [
        (entry("rootfs/etc/sudoers.d", tarfile.SYMTYPE, "/etc/sudoers.d"), None),
    ],
    "home .ssh is root's": [
        (entry("rootfs/etc/passwd"), b"root:x:0:0::/root:/bin/sh\ntapers:x:1000:1000::/home/tapers:/bin/sh\n"),
        (entry("rootfs/home/tapers", tarfile.DIRTYPE, mode=0o755), None),
        (entry("rootfs/home/tapers/.ssh", tarfile.SYMTYPE, "/root/.ssh"), None),
    ],
    "passwd is the host's": [(entry("rootfs/etc/passwd", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "home climbs out": [
        (entry("rootfs/etc/passwd"), b"tapers:x:1000:1000::/../../../../root:/bin/sh\n"),
    ],
    "login user is root": [(entry("rootfs/etc/passwd"), b"tapers:x:0:0::/root:/bin/sh\n")],
    "sshd config folder is the host's": [
        (entry("rootfs/etc/ssh/sshd_config.d", tarfile.SYMTYPE, "/etc/ssh/sshd_config.d"), None),
    ],
}


@pytest.mark.parametrize("case", list(LINKS_OUT))
def test_a_box_whose_files_lead_out_is_refused_and_the_host_is_unchanged(case: str, home: Path, tmp_path: Path,
                                                                          capsys) -> None:
    watched = [Path("/etc/sudoers.d"), Path("/root/.ssh"), Path("/etc/ssh/sshd_config.d"), Path("/etc")]
    before = {p: sorted(os.listdir(p)) if p.is_dir() else None for p in watched}
    passwd = Path("/etc/passwd").read_text()
    archive = box_archive(tmp_path, *LINKS_OUT[case])
    assert run(["box", "add", "evil/links", str(archive)]) == 3
    err = capsys.readouterr().err
    assert "refused" in err
    assert {p: sorted(os.listdir(p)) if p.is_dir() else None for p in watched} == before
    assert Path("/etc/passwd").read_text() == passwd
    no_box_added(home)


# -- box metadata is input --------------------------------------------------------------


@pytest.mark.parametrize("version", ["../../../escaped", "1.0/../../x", "1\n2", ".hidden", "1 2"])
def test_a_version_from_box_json_must_be_a_plain_token(version: str, home: Path, tmp_path: Path, capsys) -> None:
    archive = box_archive(tmp_path, meta={"name": "evil", "version": version})
    assert run(["box", "add", "evil/version", str(archive)]) == 3
    assert "not a box version" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (home / "escaped").exists()
    no_box_added(home)


@pytest.mark.parametrize("name", ["../../escaped", "team/../../x", "a/b/c", ".hidden/x", "x\ny"])
def test_a_box_name_must_be_a_plain_token(name: str, home: Path, tmp_path: Path, capsys) -> None:
    archive = box_archive(tmp_path)
    assert run(["box", "add", name, str(archive)]) == 3
    assert "not a box name" in capsys.readouterr().err
    no_box_added(home)


@pytest.mark.parametrize("field,value", [("name", "../../escaped"), ("version", "../../../escaped"),
                                         ("checksum", "not-hex")])
def test_a_catalog_is_checked_like_any_input(field: str, value: str, home: Path, tmp_path: Path, capsys) -> None:
    archive = box_archive(tmp_path)
    release = {"version": "1.0", "providers": [{"name": "lxc", "url": f"https://127.0.0.1:9/{archive.name}",
                                                 "checksum_type": "sha256", "checksum": "0" * 64}]}
    catalog = {"name": "team/web", "versions": [release]}
    if field == "name":
        catalog["name"] = value
    elif field == "version":
        release["version"] = value
    else:
        release["providers"][0]["checksum"] = value
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    assert run(["box", "add", str(tmp_path / "catalog.json")]) == 3
    assert "refused" in capsys.readouterr().err
    no_box_added(home)


# -- plain http needs a checksum --------------------------------------------------------


@pytest.fixture
def http_server(tmp_path: Path):
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_plain_http_without_a_checksum_is_refused_before_downloading(home: Path, tmp_path: Path, http_server,
                                                                      capsys) -> None:
    base, requests = http_server
    archive = box_archive(tmp_path)
    assert run(["box", "add", "team/web", f"{base}/{archive.name}"]) == 1
    err = capsys.readouterr().err
    assert "plain http" in err and "--sha256" in err
    assert requests == []
    no_box_added(home)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert run(["box", "add", "team/web", f"{base}/{archive.name}", "--sha256", digest]) == 0
    assert len(list((home / "boxes").rglob("box.json"))) == 1


def test_a_catalog_over_plain_http_is_refused(home: Path, tmp_path: Path, http_server, capsys) -> None:
    base, _ = http_server
    archive = box_archive(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    release = {"version": "1.0", "providers": [{"name": "lxc", "url": f"{base}/{archive.name}",
                                                 "checksum_type": "sha256", "checksum": digest}]}
    (tmp_path / "catalog.json").write_text(json.dumps({"name": "team/web", "versions": [release]}))
    assert run(["box", "add", f"{base}/catalog.json"]) == 1
    assert "plain http" in capsys.readouterr().err
    no_box_added(home)


# -- archive members ----------------------------------------------------------------------


def gnu_box(path: Path, last: str) -> Path:
    """An uncompressed GNU tar box whose last member is the empty file `last` (to be doctored)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in [(entry("box.json"), b'{"name": "evil", "version": "1"}'), SSHD]:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(entry(last))
    return path


def test_a_member_with_a_negative_size_is_refused(home: Path, tmp_path: Path, capsys) -> None:
    """GNU tar's base-256 size field can say -1: it must not slip under the size limit."""
    plain = gnu_box(tmp_path / "negative.tar", "rootfs/big")
    raw = bytearray(plain.read_bytes())
    header = raw.rfind(b"rootfs/big")
    raw[header + 124: header + 136] = b"\xff" * 12  # the size field in base-256: -1
    raw[header + 148: header + 156] = b" " * 8
    raw[header + 148: header + 156] = b"%06o\0 " % sum(raw[header: header + 512])  # the header's checksum
    plain.write_bytes(bytes(raw))
    with tarfile.open(plain) as tar:
        assert [m.size for m in tar if m.name == "rootfs/big"] == [-1]  # what tarfile makes of it
    assert run(["box", "add", "evil/size", str(plain)]) == 3
    assert "negative size" in capsys.readouterr().err
    no_box_added(home)


def test_a_hard_link_to_a_missing_member_is_refused(home: Path, tmp_path: Path, capsys) -> None:
    archive = box_archive(tmp_path, (entry("rootfs/usr/bin/x", tarfile.LNKTYPE, "rootfs/usr/bin/missing"), None))
    assert run(["box", "add", "evil/hardlink", str(archive)]) == 3
    assert "names no file" in capsys.readouterr().err
    no_box_added(home)


def test_a_link_that_cant_be_made_is_never_replaced_by_another_member(home: Path, tmp_path: Path, capsys) -> None:
    """Python's tarfile, when a link can't be made, extracts in its place the member named
    like its target: here `x` beside the root filesystem (never checked), a link to a host
    folder, and the next member written through it."""
    victim = tmp_path / "victim"  # stands for the host's /etc
    victim.mkdir()
    archive = box_archive(
        tmp_path,
        (entry("rootfs/x"), b"x"),
        (entry("rootfs/h"), b"h"),  # taken: the hard link below can't be made
        (entry("x", tarfile.SYMTYPE, str(victim)), None),
        (entry("rootfs/h", tarfile.LNKTYPE, "rootfs/x"), None),
        (entry("rootfs/h/pwned", mode=0o4755), b"written on the host\n"),
    )
    assert run(["box", "add", "evil/fallback", str(archive)]) == 3
    assert "comes twice; refused" in capsys.readouterr().err
    assert list(victim.iterdir()) == []
    no_box_added(home)


def test_a_symbolic_link_too_long_to_make_is_an_error_not_a_copy_of_another_member(home: Path, tmp_path: Path,
                                                                                    capsys) -> None:
    """Its target (4096 characters, `x/././...`) passes the name bound and names `x`, a member
    beside the root filesystem: tarfile put that at its place, a link leading out of it."""
    long_target = "x" + "/." * 2047 + "/"
    archive = box_archive(
        tmp_path,
        (entry("rootfs/s", tarfile.SYMTYPE, long_target), None),
        (entry("x", tarfile.SYMTYPE, "../../../../../../../../etc"), None),  # never checked: not in rootfs/
    )
    assert run(["box", "add", "evil/long-link", str(archive)]) == 3
    assert "could not be unpacked: File name too long" in capsys.readouterr().err
    no_box_added(home)


def test_hard_links_cost_what_they_say_not_a_copy_each(home: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Taken names made tarfile write a full copy of a file for each hard link: a 3 KB archive
    filled 100 MB. A name that comes twice is refused; links are links."""
    monkeypatch.setenv("TAPERS_BOX_MAX_BYTES", str(8 * 1024 * 1024))
    big = (entry("rootfs/big"), b"\0" * (2 * 1024 * 1024))
    taken = [(entry(f"rootfs/h{i}"), b"") for i in range(20)]
    links = [(entry(f"rootfs/h{i}", tarfile.LNKTYPE, "rootfs/big"), None) for i in range(20)]
    assert run(["box", "add", "evil/links", str(box_archive(tmp_path, big, *taken, *links))]) == 3
    assert "comes twice; refused" in capsys.readouterr().err
    no_box_added(home)
    plain = [(entry(f"rootfs/l{i}", tarfile.LNKTYPE, "rootfs/big"), None) for i in range(20)]
    assert run(["box", "add", "fine/links", str(box_archive(tmp_path, big, *plain, name="ok.tar.gz"))]) == 0
    rootfs = (home / "boxes" / "fine-links").resolve()
    (version,) = rootfs.iterdir()
    files = (version / "rootfs").resolve()
    assert (files / "big").stat().st_nlink == 21 and (files / "l7").stat().st_ino == (files / "big").stat().st_ino


def test_a_nested_rootfs_must_be_a_file_not_a_link_to_a_bigger_one(home: Path, tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    monkeypatch.setenv("TAPERS_BOX_MAX_BYTES", str(1024 * 1024))
    archive = make_archive(tmp_path / "vagrant.box", [
        (entry("metadata.json"), b'{"provider": "lxc"}'),
        (entry("big"), b"\0" * (4 * 1024 * 1024)),
        (entry("rootfs.tar.gz", tarfile.LNKTYPE, "big"), None),  # its size says 0
    ])
    assert run(["box", "add", "evil/nested-link", str(archive)]) == 3
    assert "not a plain file in the archive; refused" in capsys.readouterr().err
    no_box_added(home)


# -- bounded work -------------------------------------------------------------------------


def test_a_huge_long_name_header_is_refused_before_it_is_read(home: Path, tmp_path: Path, capsys) -> None:
    plain = gnu_box(tmp_path / "longname.tar", "rootfs/" + "a" * 2_000_000)  # a GNU long-name header of 2 MB
    assert run(["box", "add", "evil/longname", str(plain)]) == 3
    assert "header of" in capsys.readouterr().err
    no_box_added(home)


def test_a_member_too_deep_is_refused_cleanly(home: Path, tmp_path: Path, capsys) -> None:
    archive = box_archive(tmp_path, (entry("rootfs/" + "d/" * 300 + "f"), b"x"))
    assert run(["box", "add", "evil/deep", str(archive)]) == 3
    assert "folders deep" in capsys.readouterr().err
    no_box_added(home)


def test_a_nested_rootfs_over_the_limit_is_refused_before_it_is_copied(home: Path, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    monkeypatch.setenv("TAPERS_BOX_MAX_BYTES", str(1024 * 1024))
    archive = make_archive(tmp_path / "vagrant.box", [  # the outer gzip makes 4 MB of zeros tiny
        (entry("metadata.json"), b'{"provider": "lxc"}'),
        (entry("rootfs.tar.gz"), b"\0" * (4 * 1024 * 1024)),
    ])
    assert run(["box", "add", "evil/nested", str(archive)]) == 3
    assert "more than 1048576; refused" in capsys.readouterr().err
    no_box_added(home)


def test_a_catalog_cannot_hide_behind_a_checksum_or_a_release(home: Path, tmp_path: Path, capsys) -> None:
    archive = box_archive(tmp_path)
    inner = tmp_path / "inner.json"
    inner.write_text(json.dumps({"name": "team/web", "versions": [
        {"version": "1.0", "providers": [{"name": "lxc", "url": f"file://{archive}"}]}]}))
    digest = hashlib.sha256(inner.read_bytes()).hexdigest()
    assert run(["box", "add", str(inner), "--sha256", "0" * 64]) == 3  # the checksum is the catalog's too
    assert "checksum mismatch" in capsys.readouterr().err
    deep = tmp_path / "deep.json"
    deep.write_text("{\"name\": " + "[" * 200_000)
    assert run(["box", "add", str(deep)]) == 3
    assert "not a box catalog" in capsys.readouterr().err
    no_box_added(home)
    assert digest  # (a well-formed catalog with a wrong checksum was refused above)


def test_a_redirect_to_plain_http_is_refused_without_a_checksum(tmp_path: Path) -> None:
    """An https download that a server (or someone on the way) redirects to http:// would lose
    what https gave: refused unless the content is checked by its sha256."""
    from tapers.boxes.importer import _opener
    from tapers.errors import BoxError

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/box":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/plain")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/box"
        with pytest.raises(BoxError, match="not https; refused"):
            _opener(plain_http_ok=False).open(url, timeout=10)
        with _opener(plain_http_ok=True).open(url, timeout=10) as response:  # checked by its sha256 later
            assert response.read() == b"ok"
    finally:
        server.shutdown()
