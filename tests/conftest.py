from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def write_project(tmp_path: Path):
    """Write a project folder from {filename: content}; return its path."""

    def write(files: dict[str, str]) -> Path:
        for name, content in files.items():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        return tmp_path

    return write


@pytest.fixture
def fake_box_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TAPERS_HOME holding a (file-less) debian/bookworm box, for tests with the fake backend."""
    home = tmp_path / "home"
    box = home / "boxes" / "debian-bookworm" / "20260101.000000"
    (box / "rootfs").mkdir(parents=True)
    meta = {
        "name": "debian/bookworm",
        "version": "20260101.000000",
        "id": "0123456789abcdef",
        "user": {"name": "tapers", "uid": 1000, "gid": 1000, "home": "/home/tapers"},
    }
    (box / "box.json").write_text(json.dumps(meta))
    monkeypatch.setenv("TAPERS_HOME", str(home))
    monkeypatch.setenv("TAPERS_RUN_DIR", str(tmp_path / "run"))
    return home
