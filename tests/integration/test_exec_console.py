"""`tapers exec` and `tapers console`: into a machine through the container engine, for when
SSH is broken (here: sshd stopped)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

import pytest


@pytest.mark.both_backends
def test_exec_runs_as_root_without_ssh(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("exec", "web", "--", "systemctl", "stop", "ssh.socket", "ssh.service").ok()
    assert project.tapers("ssh", "web", "-c", "true").code != 0
    ran = project.tapers("exec", "web", "--", "sh", "-c", "id -u; cat /etc/hostname; exit 3")
    assert (ran.code, ran.out) == (3, "0\nweb\n")
    assert project.tapers("exec", "web", stdin="echo from-a-shell $(id -u)\n").ok().out == "from-a-shell 0\n"
    project.tapers("halt").ok()
    stopped = project.tapers("exec", "web", "--", "true")
    assert stopped.code == 1 and "is not running" in stopped.err


def test_console_shows_the_login_prompt_and_detaches(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    pid, fd = pty.fork()
    if pid == 0:  # the child: tapers on a terminal of its own
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "-m", "tapers", "console", "web"], project.env)
    seen, deadline, entered = b"", time.monotonic() + 60, False
    try:
        while b"login:" not in seen:
            assert time.monotonic() < deadline, f"no login prompt on the console; it showed: {seen!r}"
            if select.select([fd], [], [], 0.5)[0]:
                seen += os.read(fd, 4096)
            if b"Ctrl+a q" in seen and not entered:
                os.write(fd, b"\r")
                entered = True
        os.write(fd, b"\x01q")  # detach
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert project.lxc_state("web") == "RUNNING"
