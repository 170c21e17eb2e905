"""Building the default box: on first `up`, atomic, and safe with two builds at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_first_up_and_box_build_at_once_make_one_box(box_home) -> None:
    if box_home.build is None:
        pytest.skip("box home reused from TAPERS_TEST_BOX_HOME: no build happened in this run")
    box_home.build.ok()
    box_home.up.ok()
    assert box_home.up_state == "RUNNING"
    assert "build box (not in the box cache)" in box_home.up.out
    outputs = [box_home.build.out + box_home.build.err, box_home.up.out + box_home.up.err]
    built = [o for o in outputs if "built `debian/bookworm`" in o]
    assert len(built) == 1, "exactly one of the two must have built the box"
    waited = [o for o in outputs if "already in the cache" in o or "waiting for it" in o or "built" not in o]
    assert len(waited) == 1
    folders = list((box_home.home / "boxes" / "debian-bookworm").iterdir())
    assert len(folders) == 1, f"expected one box and no leftovers, found {folders}"
    box = folders[0]
    meta = json.loads((box / "box.json").read_text())
    assert meta["name"] == "debian/bookworm" and meta["user"]["name"] == "tapers"
    rootfs = box / "rootfs"
    assert not list((rootfs / "etc/ssh").glob("ssh_host_*")), "host keys must not be baked into the box"
    assert (rootfs / "usr/bin/python3").exists() and (rootfs / "usr/sbin/sshd").exists()
    assert "NOPASSWD:ALL" in (rootfs / "etc/sudoers.d/tapers").read_text()


def test_machines_are_copies_where_overlay_is_unavailable(project) -> None:
    project.env["TAPERS_COPY_MODE"] = "copy"
    project.write("machines:\n  web: {}\n")
    up = project.tapers("up").ok()
    assert "copying the box" in up.out
    assert project.tapers("ssh", "-c", "echo works > /tmp/f; cat /tmp/f").ok().out == "works\n"
    text = (Path("/var/lib/lxc") / project.container("web") / "config").read_text()
    assert "lxc.rootfs.path = dir:" in text


def test_package_round_trip_twice_and_add_over_http(project, tmp_path) -> None:
    import functools
    import hashlib
    import http.server
    import threading

    project.write("machines:\n  web:\n    provision: [{shell: 'echo first > /etc/layer1'}]\n")
    project.tapers("up").ok()
    first = tmp_path / "first.box.tar.gz"
    project.tapers("package", "web", "--output", str(first), "--name", f"{project.name}/one").ok()
    assert project.lxc_state("web") == "RUNNING"  # held still while read, then as before

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{first.name}"
        digest = hashlib.sha256(first.read_bytes()).hexdigest()
        project.tapers("box", "add", f"{project.name}/one", url, "--sha256", digest).ok()
        again = project.tapers("box", "add", f"{project.name}/one", url, "--sha256", digest)
        assert again.code == 1 and "already in the cache" in again.err
        unchecked = project.tapers("box", "add", f"{project.name}/other", url)  # plain http needs the checksum
        assert unchecked.code == 1 and "plain http" in unchecked.err and "--sha256" in unchecked.err
    finally:
        server.shutdown()
    try:
        project.write(
            f"machines:\n  web:\n    box: {project.name}/one\n    provision: [{{shell: 'echo second > /etc/layer2'}}]\n"
        )
        project.tapers("up", "--yes").ok()
        assert project.tapers("ssh", "-c", "cat /etc/layer1 /etc/layer2").ok().out == "first\nsecond\n"
        second = tmp_path / "second.box.tar.gz"
        project.tapers("halt").ok()
        project.tapers("package", "web", "-o", str(second), "--name", f"{project.name}/two").ok()
        assert project.lxc_state("web") == "STOPPED"
        project.tapers("box", "add", f"{project.name}/two", str(second)).ok()
        assert second.is_file(), "adding a box must leave the user's archive where it was"
        project.write(f"machines:\n  web: {{box: {project.name}/two}}\n")
        project.tapers("up", "--yes").ok()
        out = project.tapers("ssh", "-c", "cat /etc/layer1 /etc/layer2; ls /etc/ssh | grep -c host_ed25519").ok().out
        assert out == "first\nsecond\n2\n"  # its own fresh host key pair, none carried over
        listed = json.loads(project.tapers("box", "list", "--json").ok().out)
        mine = {b["name"]: b for b in listed if b["name"].startswith(project.name)}
        assert mine[f"{project.name}/two"]["used_by"] == [project.container("web")]
        assert mine[f"{project.name}/one"]["digest"].startswith("sha256:")
    finally:
        project.tapers("destroy", "-f")
        for box in (f"{project.name}/one", f"{project.name}/two"):
            project.tapers("box", "remove", box)


@pytest.mark.parametrize("kind", ["vagrant-lxc", "lxc-image", "rootfs"])
def test_boxes_people_already_have(project, box_home, tmp_path, kind: str) -> None:
    """Made in the test from the built box: the formats of vagrant-lxc, LXC images, a bare rootfs."""
    import subprocess

    (box,) = [p for p in (box_home.home / "boxes" / "debian-bookworm").iterdir() if not p.name.startswith(".")]
    rootfs = (box / "rootfs").resolve()  # the files, in the content-addressed store
    box = rootfs.parent
    work = tmp_path / "make"
    work.mkdir()
    if kind == "vagrant-lxc":
        subprocess.run(["tar", "--numeric-owner", "-I", "gzip -1", "-cf", str(work / "rootfs.tar.gz"), "-C", str(box),
                        "./rootfs"], check=True)
        (work / "metadata.json").write_text('{"provider": "lxc", "version": "1.0.0"}')
        (work / "lxc-config").write_text("")
        archive = tmp_path / "vagrant.box"
        subprocess.run(["tar", "-czf", str(archive), "-C", str(work), "metadata.json", "rootfs.tar.gz", "lxc-config"], check=True)
        extra = []
    elif kind == "lxc-image":
        (work / "metadata.yaml").write_text("architecture: x86_64\n")
        archive = tmp_path / "image.tar.xz"
        subprocess.run(["tar", "--numeric-owner", "-I", "xz -0 -T0", "-cf", str(archive), "-C", str(work),
                        "metadata.yaml", "-C", str(box), "rootfs"], check=True)
        extra = []
    else:
        archive = tmp_path / "rootfs.tar.gz"
        subprocess.run(["tar", "--numeric-owner", "-I", "gzip -1", "-cf", str(archive), "-C", str(rootfs), "."],
                       check=True)
        extra = ["--from-rootfs"]
    name = f"{project.name}/{kind}"
    try:
        project.tapers("box", "add", name, str(archive), *extra).ok()
        assert archive.is_file()
        project.write(f"machines:\n  web: {{box: {name}}}\n")
        project.tapers("up").ok()
        assert project.tapers("ssh", "-c", "whoami; test -x /usr/sbin/sshd && echo sshd").ok().out == "tapers\nsshd\n"
    finally:
        project.tapers("destroy", "-f")
        project.tapers("box", "remove", name)


def test_verify_and_prune(project, box_home) -> None:
    import subprocess

    folder = box_home.home / "boxes" / "debian-bookworm"
    (current,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
    meta = json.loads((current / "box.json").read_text())
    if "tree" not in meta:
        pytest.skip("the reused box home was built by a tapers that recorded no digest")
    old = folder / "19990101.000000"
    old.mkdir()  # a real copy of the files (tampering with the shared store would break the others)
    subprocess.run(["cp", "-a", "--reflink=auto", str((current / "rootfs").resolve()), str(old / "rootfs")], check=True)
    (old / "box.json").write_text(json.dumps({**meta, "version": old.name, "id": "0ld0ld0ld0ld0ld0"}))
    try:
        assert "ok" in project.tapers("box", "verify", f"debian/bookworm@{old.name}").ok().out
        with open(old / "rootfs" / "etc" / "os-release", "a") as handle:
            handle.write("TAMPERED=1\n")
        tampered = project.tapers("box", "verify")
        assert tampered.code == 3
        assert f"BAD  debian/bookworm@{old.name}" in tampered.out
        assert f"ok   debian/bookworm@{current.name}" in tampered.out
        dry = project.tapers("box", "prune", "--dry-run").ok()
        assert f"would remove `debian/bookworm@{old.name}`" in dry.out and old.is_dir()
        project.tapers("box", "prune").ok()
        assert not old.exists() and current.is_dir()  # the newest stays
    finally:
        subprocess.run(["rm", "-rf", str(old)], check=True)


def test_a_trixie_box_with_an_extra_package(project) -> None:
    with project.built_box("debian/trixie", "tree") as name:
        project.write(f"machines:\n  web: {{box: {name}}}\n")
        project.tapers("up").ok()
        out = project.tapers("ssh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; tree --version | cut -c1-4").ok().out
        assert out == "trixie\ntree\n"


def test_catalogs_outdated_update_box_url_and_resumed_downloads(project, box_home, tmp_path) -> None:
    import hashlib
    import http.server
    import subprocess
    import threading

    (box,) = [p for p in (box_home.home / "boxes" / "debian-bookworm").iterdir() if not p.name.startswith(".")]
    box = (box / "rootfs").resolve().parent  # the files, in the content-addressed store
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "box.json").write_text('{"name": "x", "version": "0"}')
    archive = tmp_path / "web.box"
    subprocess.run(["tar", "--numeric-owner", "-I", "gzip -1", "-cf", str(archive), "-C", str(staging), "box.json",
                    "-C", str(box), "rootfs"], check=True)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    name = f"{project.name}/web"
    ranges: list[str] = []

    def catalog(*versions: str) -> None:
        releases = [
            {"version": v, "providers": [{"name": "lxc", "url": f"{base}/web.box?v={v}", "checksum_type": "sha256",
                                          "checksum": digest}]}
            for v in versions
        ]
        (tmp_path / "catalog.json").write_text(json.dumps({"name": name, "versions": releases}))

    class RangeHandler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            wanted = self.headers.get("Range")
            path = tmp_path / self.path.split("?")[0].lstrip("/")
            if not wanted or not path.is_file():
                return super().do_GET()
            ranges.append(wanted)
            start = int(wanted.split("=")[1].split("-")[0])
            data = path.read_bytes()[start:]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{path.stat().st_size}")
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        catalog("1.0.0", "1.1.0")
        # a catalog over plain http could hand out any checksum: refused; a local (or https) one is trusted
        refused = project.tapers("box", "add", f"{base}/catalog.json")
        assert refused.code == 1 and "plain http" in refused.err
        added = project.tapers("box", "add", str(tmp_path / "catalog.json")).ok()
        assert f"`{name}@1.1.0`" in added.out
        assert "is the newest" in project.tapers("box", "outdated").ok().out
        catalog("1.0.0", "1.1.0", "1.2.0")
        assert f"{name}: 1.1.0 -> 1.2.0" in project.tapers("box", "outdated").ok().out

        # an interrupted download of 1.2.0 is resumed where it stopped
        url = f"{base}/web.box?v=1.2.0"
        downloads = box_home.home / "boxes" / ".downloads"
        downloads.mkdir(exist_ok=True)
        half = archive.read_bytes()[: archive.stat().st_size // 2]
        (downloads / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".part")).write_bytes(half)
        updated = project.tapers("box", "update", name).ok()
        assert ranges == [f"bytes={len(half)}-"] and "resuming" in updated.out
        versions = {b["version"] for b in json.loads(project.tapers("box", "list", "--json").ok().out) if b["name"] == name}
        assert versions == {"1.1.0", "1.2.0"}

        # a Taperfile names a version the cache lacks, and where to get it
        project.write(f"machines:\n  web:\n    box: {name}@1.0.0\n    box_url: {tmp_path / 'catalog.json'}\n")
        assert "from box_url" in project.tapers("plan").ok().out
        project.tapers("up").ok()
        assert project.record("web")["box"]["version"] == "1.0.0"
        assert project.tapers("ssh", "-c", "whoami").ok().out == "tapers\n"
    finally:
        server.shutdown()
        project.tapers("destroy", "-f")
        project.tapers("box", "remove", name, "--force")
