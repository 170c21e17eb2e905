#!/usr/bin/env python3
"""Forwarded ports against connecting to the guest directly: connection latency (connect +
one round trip) and throughput, and the time from `tapers up` returning to the first
successful connection through the forwarded port.

Run as root with the box built. Usage: python3 bench/bench_network.py [--megabytes N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS, up_project  # noqa: E402  (bench/common.py)


SERVER = r"""
import socketserver
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        first = self.request.recv(1)
        if first == b"p":
            self.request.sendall(b"p")
            return
        total = 1
        while chunk := self.request.recv(1 << 20):
            total += len(chunk)
        self.request.sendall(str(total).encode())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(address: tuple[str, int]) -> float:
    start = time.perf_counter()
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"p")
        assert sock.recv(1) == b"p"
    return time.perf_counter() - start


def throughput(address: tuple[str, int], megabytes: int) -> float:
    block = b"x" * (1 << 20)
    start = time.perf_counter()
    with socket.create_connection(address, timeout=30) as sock:
        for _ in range(megabytes):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        assert int(sock.recv(64)) == megabytes << 20
    return megabytes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--pings", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-"))
    port = free_port()
    (folder / "server.py").write_text(SERVER)
    (folder / "Taperfile.yaml").write_text(
        f"version: 1\nname: bn-{uuid.uuid4().hex[:6]}\nmachines:\n  web:\n"
        f"    networks: [{{forwarded_port: {{guest: 8000, host: {port}}}}}]\n"
        "    provision:\n"
        "      - file: {source: server.py, destination: /opt/server.py}\n"
        "      - shell: systemd-run --quiet --unit bench-server python3 /opt/server.py\n"
    )
    try:
        up_project(folder)
        returned = time.perf_counter()
        while True:
            try:
                ping(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.001)
        first = time.perf_counter() - returned
        status = json.loads(subprocess.run(TAPERS + ["status", "--json"], cwd=folder, check=True,
                                           capture_output=True, text=True).stdout)
        guest = (status["machines"][0]["address"], 8000)
        forwarded = ("127.0.0.1", port)
        rows = []
        for name, target in (("forwarded 127.0.0.1", forwarded), ("guest address directly", guest)):
            pings = [ping(target) for _ in range(args.pings)]
            rates = [throughput(target, args.megabytes) for _ in range(3)]
            rows.append((name, statistics.median(pings) * 1000, statistics.median(rates)))
        print(f"{'':24} {'connect+rtt':>12} {'throughput':>12}")
        for name, latency, rate in rows:
            print(f"{name:24} {latency:9.3f} ms {rate:8.0f} MB/s")
        print(f"ratio forwarded/direct: latency {rows[0][1] / rows[1][1]:.2f}x, throughput {rows[0][2] / rows[1][2]:.2f}x")
        print(f"first forwarded connection {first * 1000:.1f} ms after `tapers up` returned")
    finally:
        subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
