"""Writing limits into a Taperfile keeps everything else of the file as it was."""

from __future__ import annotations

import os

import pytest

from tapers.errors import TaperfileError
from tapers.taperfile.edit import set_machine_keys

MIB = 1024**2

FILE = """\
# the team's machines
version: 1
name: shop
defaults:
    memory: 256M   # for every machine

machines:
    web:
        box: debian/bookworm   # pinned later
        provision:
            - shell: echo hi
        # the comment before memory
        memory: 512M
    db: {}
"""


def write(tmp_path, text=FILE):
    path = tmp_path / "Taperfile.yaml"
    path.write_text(text)
    return path


def test_a_value_changes_in_place_and_nothing_else(tmp_path) -> None:
    path = write(tmp_path)
    os.chown(path, 1000, 1000)
    path.chmod(0o640)
    set_machine_keys(path, "web", {"memory": "1G"}, expect={"memory": 1024 * MIB})
    assert path.read_text() == FILE.replace("memory: 512M", "memory: 1G")
    assert (path.stat().st_uid, path.stat().st_gid, path.stat().st_mode & 0o777) == (1000, 1000, 0o640)
    assert [p.name for p in tmp_path.iterdir()] == ["Taperfile.yaml"]


def test_a_new_key_joins_the_machine_and_a_flow_mapping_becomes_a_block(tmp_path) -> None:
    path = write(tmp_path)
    set_machine_keys(path, "db", {"cpus": 2, "pids": 300}, expect={"cpus": 2, "pids": 300})
    assert path.read_text() == FILE.replace("    db: {}\n", "    db:\n        cpus: 2\n        pids: 300\n")


def test_removing_a_key_that_defaults_set_again_is_refused_and_the_file_kept(tmp_path) -> None:
    path = write(tmp_path)
    with pytest.raises(TaperfileError, match="`defaults:` in .* sets memory for every machine"):
        set_machine_keys(path, "web", {"memory": None}, expect={"memory": None})
    assert path.read_text() == FILE


def test_an_override_file_that_sets_the_key_again_is_named(tmp_path) -> None:
    path = write(tmp_path)
    (tmp_path / "Taperfile.override.yaml").write_text("machines:\n  web:\n    memory: 2G\n")
    with pytest.raises(TaperfileError, match="Taperfile.override.yaml sets memory of `web` again"):
        set_machine_keys(path, "web", {"memory": "1G"}, expect={"memory": 1024 * MIB})
    assert path.read_text() == FILE


def test_a_layout_the_round_trip_cannot_keep_is_refused(tmp_path) -> None:
    odd = "version: 1\nmachines:\n  web:   {memory:    512M}\n"
    path = write(tmp_path, odd)
    with pytest.raises(TaperfileError, match="without changing its layout"):
        set_machine_keys(path, "web", {"memory": "1G"}, expect={"memory": 1024 * MIB})
    assert path.read_text() == odd


def test_an_unknown_machine_is_an_error(tmp_path) -> None:
    path = write(tmp_path)
    with pytest.raises(TaperfileError, match="no machine `cache`"):
        set_machine_keys(path, "cache", {"cpus": 1}, expect={"cpus": 1})
