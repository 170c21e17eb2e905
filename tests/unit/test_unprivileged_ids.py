"""The id ranges of unprivileged machines: root is given tapers' block in /etc/subuid and
/etc/subgid once, without touching other lines or following a link planted there."""

from __future__ import annotations

import os
from pathlib import Path

from tapers.backend.liblxc import unprivileged

BLOCK = f"root:{unprivileged.FIRST}:{unprivileged.LAST - unprivileged.FIRST}"


def test_the_block_is_added_once_and_other_lines_stay(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("_lxd:100000:10000001\nroot:100000:10000001")  # no final newline
    os.chmod(subuid, 0o640)
    files = (subuid, subgid)
    assert unprivileged.subids_missing(files) == [subuid, subgid]
    unprivileged.ensure_subids(files)
    assert subuid.read_text() == f"_lxd:100000:10000001\nroot:100000:10000001\n{BLOCK}\n"
    assert subgid.read_text() == f"{BLOCK}\n"
    assert subuid.stat().st_mode & 0o777 == 0o640
    unprivileged.ensure_subids(files)
    assert subuid.read_text().count(BLOCK) == 1 and unprivileged.subids_missing(files) == []


def test_a_wider_range_already_given_is_enough(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("root:100000:4294000000\n")
    unprivileged.ensure_subids((subuid,))
    assert subuid.read_text() == "root:100000:4294000000\n"


def test_a_link_planted_in_place_of_the_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0::/root:/bin/sh\n")
    link = tmp_path / "subuid"
    link.symlink_to(target)
    unprivileged.ensure_subids((link,))
    assert target.read_text() == "root:x:0:0::/root:/bin/sh\n"  # untouched
    assert not link.is_symlink() and link.read_text() == f"{BLOCK}\n"


def test_ranges_never_overlap_and_stay_below_two_to_the_31() -> None:
    first = unprivileged.free_range(set())
    second = unprivileged.free_range({first})
    assert first == unprivileged.FIRST and second == first + unprivileged.RANGE
    assert unprivileged.LAST <= 2**31
