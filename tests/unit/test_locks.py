"""Locks between tapers processes: one holder at a time, the waiter told once, and a lock
file that is a link refused without touching what it points at."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tapers import locks
from tapers.errors import HostError

HOLD = """
import sys, time
from pathlib import Path
from tapers import locks
with locks.held(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def test_a_second_process_waits_for_the_holder_and_is_told_once(tmp_path) -> None:
    path = tmp_path / "locks" / "network.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        told = []

        def waiting() -> None:
            told.append(time.monotonic())
            holder.stdin.close()  # the holder lets go once we have said we wait

        with locks.held(path, on_wait=waiting):
            assert len(told) == 1
            assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_free_lock_is_taken_without_a_word(tmp_path) -> None:
    told = []
    with locks.held(tmp_path / "box.lock", on_wait=lambda: told.append(1)):
        pass
    assert told == []


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path) -> None:
    victim = tmp_path / "shadow"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "network.lock").symlink_to(victim)
    with pytest.raises(HostError, match="is a link"):
        with locks.held(tmp_path / "run" / "network.lock"):
            pass
    assert not victim.exists()


def test_a_folder_made_for_a_lock_is_0755_even_with_no_umask(tmp_path) -> None:
    import os

    old = os.umask(0)
    try:
        with locks.held(tmp_path / "run" / "network.lock"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755


def test_taking_a_held_lock_again_in_the_same_thread_is_a_bug_not_a_hang(tmp_path) -> None:
    with locks.held(tmp_path / "box.lock"):
        with pytest.raises(RuntimeError, match="already held"):
            with locks.held(tmp_path / "box.lock"):
                pass
        with pytest.raises(RuntimeError, match="already held"):
            with locks.held(tmp_path / "sub" / ".." / "box.lock"):  # the same file, spelled otherwise
                pass
    with locks.held(tmp_path / "box.lock"):  # let go: free again
        pass
