"""`up` asks whether a machine still refuses logins by looking for /run/nologin in it from the
host, through /proc/PID/root. The guest owns every name on that path: a link it makes there
must not lead the look into the host's own tree (an absolute link is resolved from the
host's root when followed from outside)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tapers.backend.liblxc.backend import _exists_in_guest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a chroot (a guest's root) needs root")


@contextmanager
def guest(root: Path) -> Iterator[int]:
    """A process whose root is `root` (as a container's init sees its own); its pid."""
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.chroot(root)
            os.write(told, b"in")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(told)
    try:
        assert os.read(ready, 2) == b"in", "the guest process never entered its root"
        yield pid
    finally:
        os.close(ready)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_nologin_is_seen_in_the_guests_own_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    with guest(root) as pid:
        assert _exists_in_guest(pid, "run", "nologin") is False
        (root / "run" / "nologin").write_text("booting\n")
        assert _exists_in_guest(pid, "run", "nologin") is True


def test_a_link_in_the_guest_never_leads_into_the_host(tmp_path: Path) -> None:
    host = tmp_path / "host-folder"  # a folder of the host's with a nologin in it
    host.mkdir()
    (host / "nologin").write_text("the host's\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "run").symlink_to(host)  # absolute: followed from the host, it is the host's folder
    with guest(root) as pid:
        assert _exists_in_guest(pid, "run", "nologin") is None  # can't tell: not "yes" from the host's file
    (root / "run").unlink()
    (root / "run").mkdir()
    (root / "run" / "nologin").symlink_to(host / "nologin")  # the last name a link: it exists, as a link
    with guest(root) as pid:
        assert _exists_in_guest(pid, "run", "nologin") is True
    assert (host / "nologin").read_text() == "the host's\n"  # nothing of the host's was touched


def test_a_process_that_is_gone_cannot_tell() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert _exists_in_guest(pid, "run", "nologin") is None
