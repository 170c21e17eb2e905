"""The id ranges of unprivileged machines: root is given tapers' block in /etc/subuid and
/etc/subgid once, without touching other lines or following a link planted there."""

from __future__ import annotations

import os
from pathlib import Path

from tapers.backend.api import MACHINE_IDS
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


def test_a_link_in_place_of_the_file_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """Others' ranges live in the file a link points to: neither replaced nor written through."""
    import pytest

    from tapers.errors import BackendError

    target = tmp_path / "elsewhere"
    target.write_text("alice:100000:65536\n")
    link = tmp_path / "subuid"
    link.symlink_to(target)
    with pytest.raises(BackendError, match="is a symbolic link"):
        unprivileged.ensure_subids((link,))
    assert target.read_text() == "alice:100000:65536\n" and link.is_symlink()


def test_ranges_skip_ids_already_given_and_stay_below_two_to_the_31() -> None:
    first = unprivileged.free_range(taken=[])
    assert first == unprivileged.FIRST and unprivileged.LAST <= 2**31 - 2**17
    # a machine mapping the first range (its lxc.idmap)
    assert unprivileged.free_range(taken=[(first, first + MACHINE_IDS)]) == first + MACHINE_IDS
    # a user's uid inside the first range, and someone's subordinate range over the second
    taken = [(first + 500, first + 501), (first + MACHINE_IDS, first + 2 * MACHINE_IDS + 1)]
    assert unprivileged.free_range(taken=taken) == first + 3 * MACHINE_IDS


def test_shadows_lock_is_taken_and_honoured(tmp_path: Path) -> None:
    """useradd and usermod lock /etc/subuid with subuid.lock: tapers waits for a live holder
    (and changes nothing if it doesn't let go), and takes over a stale one."""
    import subprocess

    import pytest

    from tapers.errors import BackendError

    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\n")
    lock = tmp_path / "subuid.lock"
    lock.write_bytes(f"{os.getppid()}\0".encode())  # a live process holds it
    with pytest.raises(BackendError, match="held by another program"):
        unprivileged.ensure_subids((subuid,), lock_timeout=0.2)
    assert subuid.read_text() == "alice:100000:65536\n" and lock.exists()

    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    lock.write_bytes(f"{gone}\0".encode())  # its holder has exited: stale
    unprivileged.ensure_subids((subuid,), lock_timeout=0.2)
    assert subuid.read_text() == f"alice:100000:65536\n{BLOCK}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subuid"]  # the lock and our pid file are gone
