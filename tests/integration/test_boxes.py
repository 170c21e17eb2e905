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
