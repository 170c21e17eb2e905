"""Building the default box: atomic, and safe with two builds at once."""

from __future__ import annotations

import json

import pytest


def test_two_concurrent_builds_make_one_box(box_home) -> None:
    if not box_home.results:
        pytest.skip("box home reused from TAPERS_TEST_BOX_HOME: no build happened in this run")
    for result in box_home.results:
        result.ok()
    outputs = [r.out + r.err for r in box_home.results]
    assert sum("built `debian/bookworm`" in o for o in outputs) == 1
    assert sum("already in the cache" in o for o in outputs) == 1
    folders = list((box_home.home / "boxes" / "debian-bookworm").iterdir())
    assert len(folders) == 1, f"expected one box and no leftovers, found {folders}"
    box = folders[0]
    meta = json.loads((box / "box.json").read_text())
    assert meta["name"] == "debian/bookworm" and meta["user"]["name"] == "tapers"
    rootfs = box / "rootfs"
    assert not list((rootfs / "etc/ssh").glob("ssh_host_*")), "host keys must not be baked into the box"
    assert (rootfs / "usr/bin/python3").exists() and (rootfs / "usr/sbin/sshd").exists()
    assert "NOPASSWD:ALL" in (rootfs / "etc/sudoers.d/tapers").read_text()
