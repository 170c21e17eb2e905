"""A normal user's forwarded ports: the forwarder process relays TCP and UDP on loopback, is
found again by a later tapers, stops when asked, and ports below 1024 are refused."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tapers.backend.api import Forward
from tapers.backend.liblxc import user_ports
from tapers.errors import StateError


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_echo() -> int:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            client, _ = server.accept()
            with client:
                client.sendall(b"tcp:" + client.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def _udp_echo() -> int:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            data, peer = server.recvfrom(100)
            server.sendto(b"udp:" + data, peer)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_the_forwarder_relays_tcp_and_udp_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPERS_RUN_DIR", str(tmp_path))
    tcp_host, udp_host = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    forwards = [Forward("127.0.0.1", tcp_host, "tcp", "127.0.0.1", _tcp_echo()),
                Forward("127.0.0.1", udp_host, "udp", "127.0.0.1", _udp_echo())]
    user_ports.install("tapers-test-web", forwards)
    try:
        assert user_ports.forwarded() == {"tapers-test-web"}
        with socket.create_connection(("127.0.0.1", tcp_host), timeout=5) as s:
            s.sendall(b"hi")
            assert s.recv(100) == b"tcp:hi"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"hi", ("127.0.0.1", udp_host))
            assert s.recv(100) == b"udp:hi"
        held = user_ports._taken_by("127.0.0.1", tcp_host, "tcp", "tapers-other-web")
        assert held == "machine container `tapers-test-web` (a tapers forward)"
    finally:
        user_ports.remove("tapers-test-web")
    assert user_ports.forwarded() == set()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", tcp_host), timeout=2).close()


def test_a_port_taken_by_another_process_is_reported_not_half_forwarded(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPERS_RUN_DIR", str(tmp_path))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(Exception, match="cannot listen on 127.0.0.1"):
            user_ports.install("tapers-test-web", [Forward("127.0.0.1", port, "tcp", "127.0.0.1", 1)])
    assert user_ports.forwarded() == set() and not list(tmp_path.glob("forwards/*.json"))


def test_ports_only_root_may_listen_on_are_refused_with_the_fix() -> None:
    with pytest.raises(StateError, match="below 1024") as refused:
        user_ports.refuse_privileged_ports([("127.0.0.1", 80, "tcp", 80, False)])
    assert "8080" in (refused.value.hint or "")
    user_ports.refuse_privileged_ports([("127.0.0.1", 8080, "tcp", 80, False)])


def test_a_forwarder_that_ignores_sigterm_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import subprocess
    import sys

    monkeypatch.setenv("TAPERS_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(user_ports, "STOP_TIMEOUT", 0.5)
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(60)", "tapers.forwarder", "tapers-test-web"],
        stdout=subprocess.PIPE,
    )
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        (tmp_path / "forwards").mkdir()
        (tmp_path / "forwards/tapers-test-web.json").write_text(json.dumps({"pid": stubborn.pid, "forwards": []}))
        assert user_ports.forwarded() == {"tapers-test-web"}
        user_ports.remove("tapers-test-web")
        assert stubborn.wait(timeout=10) == -9
        assert not (tmp_path / "forwards/tapers-test-web.json").exists()
    finally:
        stubborn.kill()
        stubborn.wait()


def test_a_process_that_is_not_the_forwarder_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state file naming the pid of some other process (its forwarder gone, the pid reused):
    nothing is signalled."""
    import json
    import subprocess

    monkeypatch.setenv("TAPERS_RUN_DIR", str(tmp_path))
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "forwards").mkdir()
        (tmp_path / "forwards/tapers-test-web.json").write_text(json.dumps({"pid": other.pid, "forwards": []}))
        user_ports.remove("tapers-test-web")
        assert other.poll() is None
        assert not (tmp_path / "forwards/tapers-test-web.json").exists()
    finally:
        other.kill()
        other.wait()
