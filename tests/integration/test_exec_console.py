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
def test_exec_runs_as_root_without_ssh(project, backend_name) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("exec", "web", "--", "systemctl", "stop", "ssh.socket", "ssh.service").ok()
    assert project.tapers("ssh", "web", "-c", "true").code != 0
    ran = project.tapers("exec", "web", "--", "sh", "-c", "id -u; cat /etc/hostname; exit 3")
    assert (ran.code, ran.out) == (3, "0\nweb\n")
    shell = project.tapers("exec", "web", stdin="echo from-a-shell $(id -u)\n")
    if backend_name == "liblxc":
        assert shell.ok().out == "from-a-shell 0\n"
    else:  # LXD: no interactive exec yet, said
        assert shell.code == 2 and "tapers exec web -- COMMAND" in shell.err
    project.tapers("halt").ok()
    stopped = project.tapers("exec", "web", "--", "true")
    assert stopped.code == 1 and "is not running" in stopped.err


def test_console_shows_the_login_prompt_and_detaches(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    pid, fd = pty.fork()
    if pid == 0:  # the child: tapers on a terminal of its own
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "-P", "-m", "tapers", "console", "web"], project.env)
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


def test_ssh_passes_openssh_options_through(project) -> None:
    """`tapers ssh web -- -L ...`: a port of the host forwarded to a service in the machine."""
    import socket
    import subprocess
    import urllib.request

    from tests.integration.conftest import wait_for

    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("exec", "web", "--", "sh", "-c",
                   "cd /etc && nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &").ok()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tunnel = subprocess.Popen(
        [sys.executable, "-P", "-m", "tapers", "ssh", "web", "--", "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"{port}:127.0.0.1:8000"], cwd=project.root, env=project.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2) as response:
                return response.read() == b"web\n"
        except OSError:
            return False

    try:
        wait_for(answers, 30, f"the machine's web server through `tapers ssh -- -L {port}:...`")
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=30)
    assert project.tapers("ssh", "-c", "echo $0", "--", "-o", "LogLevel=ERROR").ok().out.strip() in ("bash", "-bash", "sh")


@pytest.mark.both_backends
def test_cp_copies_folders_in_and_files_out(project, tmp_path) -> None:
    (project.root / "dist" / "bin").mkdir(parents=True)
    (project.root / "dist" / "index.html").write_text("<h1>hi</h1>\n")
    (project.root / "dist" / "bin" / "run").write_text("#!/bin/sh\necho ran\n")
    (project.root / "dist" / "bin" / "run").chmod(0o750)
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("cp", "./dist", "web:/srv/app").ok()
    assert project.tapers("ssh", "-c", "cat /srv/app/index.html; sudo /srv/app/bin/run; stat -c %a /srv/app/bin/run").ok().out \
        == "<h1>hi</h1>\nran\n750\n"

    project.tapers("ssh", "-c", "mkdir -p ~/logs/old && echo line > ~/logs/app.log && echo old > ~/logs/old/1.log").ok()
    out = tmp_path / "out"
    out.mkdir()
    project.tapers("cp", "web:/home/tapers/logs/app.log", str(out)).ok()
    project.tapers("cp", "web:/home/tapers/logs", str(out / "all")).ok()
    assert (out / "app.log").read_text() == "line\n" and (out / "all" / "old" / "1.log").read_text() == "old\n"
    missing = project.tapers("cp", "web:/nowhere", str(out))
    assert missing.code == 1 and "web:/nowhere" in missing.err


def test_cp_out_of_a_machine_trusts_nothing_it_sends(project, tmp_path) -> None:
    """A link in the machine is not followed onto the host, a setuid bit doesn't land, and a
    link planted where a file is written is replaced, not written through."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").symlink_to(victim)
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("ssh", "-c", "mkdir d && echo x > d/f && chmod 4755 d/f && ln -s /etc/passwd d/link && "
                   "echo y > g").ok()
    project.tapers("cp", "web:/home/tapers/d", str(tmp_path / "copy")).ok()
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["f"]
    assert (tmp_path / "copy" / "f").stat().st_mode & 0o7777 == 0o755
    project.tapers("cp", "web:/home/tapers/g", str(out / "f")).ok()  # the link is replaced, not written through
    assert victim.read_text() == "untouched\n" and not (out / "f").is_symlink() and (out / "f").read_text() == "y\n"
    assert sorted(p.name for p in out.iterdir()) == ["f"]  # no temporary file left


def _read_until(fd: int, wanted: bytes, seen: bytearray, what: str, timeout: float = 60) -> None:
    """Read the terminal `fd` into `seen` until `wanted` shows (or the end of it)."""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        assert time.monotonic() < deadline, f"{what} never showed; the terminal showed: {bytes(seen)!r}"
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side of the terminal closed
                chunk = b""
            assert chunk, f"the terminal closed before {what} showed; it showed: {bytes(seen)!r}"
            seen += chunk


@pytest.mark.both_backends
def test_ssh_without_openssh_is_a_real_terminal_through_paramiko(project) -> None:
    """No OpenSSH client on the host: `tapers ssh web` still gives a login shell on a terminal of
    the right size and type; Ctrl-C stops the machine's command, not tapers; a window change
    reaches the machine; the exit code is the shell's; the local terminal is put back after."""
    import fcntl
    import struct
    import termios

    from tests.integration.conftest import until_it_ends

    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    env = {**project.env, "PATH": "/nonexistent", "TERM": "xterm-256color"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: tapers on a terminal of its own, 30 lines of 100 columns
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.chdir(project.root)
        os.execve(sys.executable, [sys.executable, "-P", "-m", "tapers", "ssh", "web"], env)
    seen, status = bytearray(), None
    try:
        os.write(fd, b"echo T$((6*7)) $(stty size) $TERM $(tty)\r")
        _read_until(fd, b"T42 30 100 xterm-256color /dev/pts/", seen, "the machine's terminal size and type")
        # The sleeper says so once it runs in the terminal's foreground (bash gave it the terminal).
        os.write(fd, b"python3 -c 'import time; print(\"sleeping-\" + str(2*3), flush=True); time.sleep(60)'"
                     b" && echo not-interrupted\r")
        _read_until(fd, b"sleeping-6", seen, "the sleeper's word that it runs")
        os.write(fd, b"\x03")  # Ctrl-C: the machine's sleep stops, tapers goes on
        os.write(fd, b"echo after-$((1+1))\r")
        _read_until(fd, b"after-2", seen, "a command after Ctrl-C")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 70, 0, 0))  # the window shrinks
        os.write(fd, b"echo S$(stty size | tr ' ' x)\r")
        _read_until(fd, b"S20x70", seen, "the new window size in the machine")
        os.write(fd, b"exit 4\r")
        status = until_it_ends(pid, fd, seen, 30, "`tapers ssh` after `exit 4`")
        attributes = termios.tcgetattr(fd)
    finally:
        if status is None:  # an assertion failed: the child goes too
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 4, bytes(seen)
    assert b"\nnot-interrupted" not in seen  # only the echo of the typed line
    assert attributes[3] & termios.ECHO and attributes[3] & termios.ICANON, "the terminal was left raw"

    from tests.integration.conftest import run_tapers

    piped = run_tapers(("ssh", "web"), project.root, env, timeout=60, stdin="echo piped $(id -un)\nexit 5\n")
    assert piped.code == 5 and "piped tapers" in piped.out
    options = run_tapers(("ssh", "web", "--", "-A"), project.root, env, timeout=60)
    assert options.code == 1 and "OpenSSH client is not installed" in options.err and "Traceback" not in options.err
