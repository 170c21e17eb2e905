#!/usr/bin/env python3
"""tapers against raw LXC doing the same work by hand. Prints medians and ratios.

  up:     `tapers up` of one machine (box cached) until SSH answers, versus lxc-copy -s
          (overlay snapshot of the same box), a static address and fixed MAC in its
          config, a host key written in, lxc-start, until the SSH banner arrives (the floor
          is a privileged container: the least work). Once for an unprivileged machine (the
          default) and once for a `privileged: true` one.
  memory: an idle machine's memory (its cgroup's usage once systemd in it has settled),
          unprivileged and privileged.
  status: `tapers status` versus `python3 -c 'import lxc; lxc.list_containers()'`.

Run as root on a host where `tapers box build debian/bookworm` has been done
(TAPERS_HOME is honoured). Usage: python3 bench/bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS, timed  # noqa: E402  (bench/common.py)


from tapers.backend import addresses  # noqa: E402
from tapers.backend.liblxc import bridges as network  # noqa: E402
from tapers.boxes.cache import find_box  # noqa: E402
from tapers.ssh.keys import generate  # noqa: E402

RUN = uuid.uuid4().hex[:6]
LXC = Path("/var/lib/lxc")



def wait_banner(address: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=0.5) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"no SSH banner from {address} within {timeout} s")


def bench_raw_up(runs: int, rootfs: Path) -> list[float]:
    base = f"bench-{RUN}-base"
    (LXC / base).mkdir()
    (LXC / base / "rootfs").symlink_to(rootfs)  # lxc-copy wants the base's name in its rootfs path
    (LXC / base / "config").write_text(
        "lxc.include = /usr/share/lxc/config/debian.common.conf\n"
        "lxc.arch = linux64\n"
        f"lxc.rootfs.path = dir:{LXC / base / 'rootfs'}\n"
        "lxc.signal.halt = SIGRTMIN+3\n"
        "lxc.apparmor.profile = unconfined\n"
    )
    host_key = generate("bench")
    network.ensure_nat_network()
    address = str(network.SUBNET.network_address + 250 * 256 + 250)
    times = []
    try:
        for i in range(runs):
            clone = f"bench-{RUN}-raw{i}"
            start = time.perf_counter()
            subprocess.run(["lxc-copy", "-n", base, "-N", clone, "-s", "-B", "overlayfs"], check=True)
            with open(LXC / clone / "config", "a") as config:
                config.write(
                    "lxc.net.0.type = veth\n"
                    f"lxc.net.0.link = {network.BRIDGE}\n"
                    "lxc.net.0.flags = up\n"
                    "lxc.net.0.name = eth0\n"
                    f"lxc.net.0.hwaddr = {addresses.mac_for(address)}\n"
                    f"lxc.net.0.ipv4.address = {address}/{network.SUBNET.prefixlen}\n"
                    f"lxc.net.0.ipv4.gateway = {network.GATEWAY}\n"
                )
            delta = LXC / clone / "overlay" / "delta"
            (delta / "etc/ssh").mkdir(parents=True, exist_ok=True)
            key = delta / "etc/ssh/ssh_host_ed25519_key"
            key.write_bytes(host_key.private)
            key.chmod(0o600)
            subprocess.run(["lxc-start", "-n", clone], check=True)
            wait_banner(address)
            times.append(time.perf_counter() - start)
            subprocess.run(["lxc-stop", "-k", "-n", clone], check=True)
            subprocess.run(["lxc-destroy", "-n", clone], check=True, stdout=subprocess.DEVNULL)
    finally:
        for name in os.listdir(LXC):
            if name.startswith(f"bench-{RUN}-raw"):
                subprocess.run(["lxc-destroy", "-f", "-n", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(LXC / base, ignore_errors=True)
    return times


def bench_tapers(runs: int, privileged: bool = False) -> tuple[list[float], list[float], list[float], int]:
    """Times of `up`, `up` with nothing to do and `status`; the idle memory of the last machine."""
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-"))
    os.chown(folder, 4242, 4242)  # a developer's project folder (the synced folder is writable)
    machine = "{privileged: true}" if privileged else "{}"
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: bench-{RUN}\nmachines:\n  web: {machine}\n")
    ups, noops, statuses = [], [], []
    try:
        for i in range(runs):
            ups.append(timed(TAPERS + ["up"], folder))
            noops.append(timed(TAPERS + ["up"], folder))
            statuses.append(timed(TAPERS + ["status"], folder))
            if i == runs - 1:
                memory = idle_memory(folder)
            subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)
    return ups, noops, statuses, memory


def idle_memory(folder: Path, timeout: float = 60) -> int:
    """The machine's memory once systemd in it says it has finished starting (bytes)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(TAPERS + ["ssh", "-c", "systemctl is-system-running --wait >/dev/null; true"], cwd=folder,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the machine never finished starting")
    stats = json.loads(subprocess.run(TAPERS + ["stats", "--no-stream", "--json"], cwd=folder, check=True,
                                      capture_output=True, text=True).stdout)
    return stats[0]["memory"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    box = find_box("debian/bookworm")
    if box is None:
        sys.exit("build the box first: tapers box build debian/bookworm")
    raw_up = bench_raw_up(args.runs, box.rootfs)
    up, noop, status, memory = bench_tapers(args.runs)
    privileged_up, _, _, privileged_memory = bench_tapers(args.runs, privileged=True)
    raw_status = [timed([sys.executable, "-c", "import lxc; lxc.list_containers()"]) for _ in range(args.runs)]
    med = statistics.median
    rows = [
        ("up, 1 machine, until SSH", med(up), med(raw_up)),
        ("  the same, privileged: true", med(privileged_up), med(raw_up)),
        ("status", med(status), med(raw_status)),
        ("up, nothing to do", med(noop), med(raw_status)),
    ]
    print(f"{'':28} {'tapers':>9} {'raw LXC':>9} {'ratio':>7}   (medians of {args.runs} runs)")
    for name, ours, floor in rows:
        print(f"{name:28} {ours:8.3f}s {floor:8.3f}s {ours / floor:6.2f}x")
    print(f"idle machine's memory: {memory / 2**20:.1f} MiB (privileged: true: {privileged_memory / 2**20:.1f} MiB)")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    data = {"runs": args.runs, "up": up, "raw_up": raw_up, "status": status, "raw_status": raw_status, "noop_up": noop,
            "privileged_up": privileged_up, "memory": memory, "privileged_memory": privileged_memory}
    (results / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
