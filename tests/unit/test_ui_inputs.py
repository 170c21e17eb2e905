"""How the panel reads what it is given: query values, record fields, project folders, options."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tapers.cli.main import run
from tapers.ui.panel import is_machine_record, project_key, taperfile_in
from tapers.ui.server import _line, _shown, _since, _split


@pytest.mark.parametrize(("text", "expected"), [
    (None, 0.0), ("", 0.0), ("12.5", 12.5), ("inf", 0.0), ("-inf", 0.0), ("nan", 0.0), ("1e999", 0.0),
    ("-3", 0.0), ("abc", 0.0), ("\ufffd", 0.0), ("1e308", 1e308), ("9" * 5000, 0.0),
])
def test_since_is_a_finite_time_or_zero(text: str | None, expected: float) -> None:
    assert _since(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (None, 0), ("", 0), ("7", 7), ("-1", 0), ("1.5", 0), ("inf", 0), ("\u0661", 0), ("1_0", 0),
    ("9" * 30, sys.maxsize), ("00012", 12),
])
def test_from_is_a_line_number_or_zero(text: str | None, expected: int) -> None:
    assert _line(text) == expected


def test_targets_and_quoted_values() -> None:
    assert _split("/api/state?since=1#x?y") == ("/api/state", "since=1")
    assert _split("http://evil.example/?a") == ("http://evil.example/", "a")
    assert _shown("a\x1b[2Jb\x00") == "a?[2Jb?"
    assert _shown("x" * 500) == "x" * 80 + "…"
    assert _shown("x" * 80) == "x" * 80


def test_a_machine_record_names_its_container(tmp_path: Path) -> None:
    """Records come as a backend reads them (text, parsed once); one that can't be parsed, or
    that names another container or a relative folder, is not a machine's."""
    import json

    from tapers.backend.api import State, container_info
    from tests.fakes import make_record

    good = json.loads(make_record("web", project="shop", project_dir=str(tmp_path)).to_json())

    def named(container: str, data: dict | None) -> bool:
        info = container_info(container, State.RUNNING, json.dumps(data) if data is not None else None)
        return info.record is not None and is_machine_record(container, info.record)

    assert named("tapers-shop-web", good)
    assert not named("tapers-shop-db", good)
    assert not named("tapers-shop-web", {**good, "project_dir": "relative/folder"})
    assert not named("tapers-shop-web", {**good, "tapers": None})
    assert not named("tapers-shop-web", {**good, "machine": ""})
    assert not named("tapers-shop-web", {**good, "tapers": 99})
    assert not named("tapers-shop-web", None)


def test_the_taperfile_of_a_folder_is_in_that_folder(tmp_path: Path) -> None:
    (tmp_path / "Taperfile.yaml").write_text("version: 1\n")
    (tmp_path / "child").mkdir()
    assert taperfile_in(str(tmp_path)) == tmp_path / "Taperfile.yaml"
    assert taperfile_in(str(tmp_path / "child")) is None  # never the parent's
    assert taperfile_in(str(tmp_path / "missing")) is None
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "Taperfile.yml").symlink_to(tmp_path / "Taperfile.yaml")
    assert taperfile_in(str(tmp_path / "link")) is None  # a link out of the folder
    os.symlink(tmp_path, tmp_path / "alias")
    assert taperfile_in(str(tmp_path / "alias")) is None  # not the folder's real path
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "Taperfile.yaml").symlink_to(tmp_path / "loop" / "Taperfile.yaml")
    assert taperfile_in(str(tmp_path / "loop")) is None


def test_a_key_is_the_folder_not_the_name(tmp_path: Path) -> None:
    assert project_key(tmp_path / "a" / "Taperfile.yaml") == project_key(tmp_path / "a" / "Taperfile.yml")
    assert project_key(tmp_path / "a" / "Taperfile.yaml") != project_key(tmp_path / "b" / "Taperfile.yaml")
    assert len(project_key(tmp_path / "Taperfile.yaml")) == 16


def test_ui_refuses_a_port_out_of_range(capsys) -> None:
    assert run(["ui", "--port", "70000"]) == 2
    assert run(["ui", "--port", "-1"]) == 2


def test_a_project_cloned_again_in_the_same_place_is_read_anew(tmp_path: Path) -> None:
    """The panel runs for hours; a command refuses a project folder swapped while it runs,
    the panel must not refuse one replaced between two looks."""
    from tapers.ui.panel import _open

    project = tmp_path / "shop"
    for machine in ("web", "db"):
        project.mkdir()
        (project / "Taperfile.yaml").write_text(f"version: 1\nmachines:\n  {machine}: {{}}\n")
        opened = _open(project / "Taperfile.yaml")
        assert [m.name for m in opened.machines] == [machine], opened
        project.rename(tmp_path / f"old-{machine}")  # (kept: a new folder can't have its inode)


def test_a_taperfile_that_is_a_loop_of_links_is_that_project_s_error(tmp_path: Path) -> None:
    """(swapped in by the project's owner while the panel looks: the other projects still show)"""
    from tapers.errors import TapersError
    from tapers.ui.panel import _open

    (tmp_path / "Taperfile.yaml").symlink_to(tmp_path / "Taperfile.yaml")
    assert isinstance(_open(tmp_path / "Taperfile.yaml"), TapersError)
