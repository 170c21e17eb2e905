#!/usr/bin/env python3
"""tapers against raw LXC doing the same work by hand. Prints medians and ratios.

  up:     `tapers up` of one machine (box cached) until SSH answers, versus lxc-copy -s
          (overlay snapshot of the same box), a static address and fixed MAC in its
          config, a host key written in, lxc-start, until the SSH banner arrives (the floor
          is a privileged container: the least work). Once for an unprivileged machine (the
          default) and once for a `privileged: true` one.
  memory: an idle machine's memory once systemd in it has settled: its working set (the cgroup's usage less the page cache not touched lately, as tapers stats and docker stats count it),
          unprivileged and privileged.
  status: `tapers status` versus `python3 -c 'import lxc; lxc.list_containers()'`.
  ssh -c, halt, up of a halted machine, destroy -f: see bench_lifecycle.
  up of 3 new machines: versus raw LXC's up of 3 (cloned one by one, started together, until
          every banner). Beside it, each one's 3 against its 1: three machines booting share
          two cores, so even raw LXC's 3 take about twice its 1; tapers' ratio at or under
          LXC's shows that tapers has no serial step of its own between machines.

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
import time
import uuid
from pathlib import Path

import common  # noqa: E402  (bench/common.py)
from common import TAPERS, discard, timed, up_project  # noqa: E402


from tapers.backend import addresses  # noqa: E402
from tapers.backend.liblxc import bridges as network  # noqa: E402
from tapers.boxes.cache import find_box  # noqa: E402
from tapers.ssh.keys import generate  # noqa: E402

RUN = uuid.uuid4().hex[:6]
FLOOR_STATUS = [sys.executable, "-c", "import lxc; lxc.list_containers()"]
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


def make_base(rootfs: Path) -> str:
    """A plain LXC container over the box's files, for raw overlay clones of it."""
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
    network.ensure_nat_network()
    return base


def remove_raw(base: str) -> None:
    """The raw clones and the base."""
    for name in os.listdir(LXC):
        if name.startswith(f"bench-{RUN}-raw"):
            subprocess.run(["lxc-destroy", "-f", "-n", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(LXC / base, ignore_errors=True)


def bench_raw_up(runs: int, rootfs: Path, count: int = 1) -> list[float]:
    """Times of the raw `up` of `count` machines (cloned one by one, started together, until
    every banner)."""
    base = make_base(rootfs)
    host_key = generate("bench")
    addresses_ = [str(network.SUBNET.network_address + 250 * 256 + 250 - n) for n in range(count)]
    times = []
    try:
        for i in range(runs):
            clones = [f"bench-{RUN}-raw{i}-{n}" for n in range(count)]
            start = time.perf_counter()
            for clone, address in zip(clones, addresses_):
                raw_clone(base, clone, address, host_key.private)
            for clone in clones:
                subprocess.run(["lxc-start", "-n", clone], check=True)
            for address in addresses_:
                wait_banner(address)
            times.append(time.perf_counter() - start)
            for clone in clones:
                subprocess.run(["lxc-destroy", "-f", "-n", clone], check=True)
    finally:
        remove_raw(base)
    return times


def raw_clone(base: str, clone: str, address: str, host_key: bytes) -> None:
    """An overlay clone of `base` with a static address, a fixed MAC and its host key."""
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
    key.write_bytes(host_key)
    key.chmod(0o600)


def bench_tapers(runs: int, privileged: bool = False) -> tuple[list[float], list[float], list[float], list[float], int]:
    """Times of `up`, `up` with nothing to do, `status` and its floor (timed beside it,
    under the same load); the idle memory of the last machine."""
    folder = new_project({"web": "{privileged: true}" if privileged else "{}"})
    ups, noops, statuses, floors = [], [], [], []
    try:
        for i in range(runs):
            ups.append(timed(TAPERS + ["up"], folder))
            noops.append(timed(TAPERS + ["up"], folder))
            # (the machine has just booted, and what it still starts loads the host less and
            # less: status and floor taken in turn, A B B A, so neither gets the quieter end)
            pair = [timed(TAPERS + ["status"], folder), timed(FLOOR_STATUS), timed(FLOOR_STATUS),
                    timed(TAPERS + ["status"], folder)]
            statuses.append((pair[0] + pair[3]) / 2)
            floors.append((pair[1] + pair[2]) / 2)
            if i == runs - 1:
                memory = idle_memory(folder)
            subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    finally:
        discard(folder)
    return ups, noops, statuses, floors, memory


def new_project(machines: dict[str, str]) -> Path:
    return common.new_project(f"bench-{RUN}-{len(machines)}", machines)


def status_json(folder: Path) -> dict:
    return json.loads(subprocess.run(TAPERS + ["status", "--json"], cwd=folder, check=True, capture_output=True,
                                     text=True).stdout)


def bench_lifecycle(runs: int, rootfs: Path) -> dict[str, list[float]]:
    """One machine of a project, through its lifecycle, each command against the same work
    by hand on the same machine: ssh -c (OpenSSH with tapers' config), halt (lxc-stop), up of
    the halted machine (lxc-start until the banner). destroy -f of the halted machine against
    destroying, from Python, a raw overlay clone started and stopped beside it (both timed in
    turn, in the same conditions)."""
    folder = new_project({"web": "{}"})
    times: dict[str, list[float]] = {k: [] for k in ("ssh", "raw_ssh", "halt", "raw_halt", "up_halted",
                                                    "raw_up_halted", "destroy", "raw_destroy")}
    base = make_base(rootfs)
    config = folder / "bench-ssh.conf"
    try:
        up_project(folder)
        machine = status_json(folder)["machines"][0]
        container, address = machine["container"], machine["address"]
        config.write_text(subprocess.run(TAPERS + ["ssh-config"], cwd=folder, check=True, capture_output=True,
                                         text=True).stdout)
        for _ in range(runs):
            times["ssh"].append(timed(TAPERS + ["ssh", "web", "-c", "true"], folder))
            times["raw_ssh"].append(timed(["ssh", "-F", str(config), "web", "true"]))
            times["halt"].append(timed(TAPERS + ["halt"], folder))
            times["up_halted"].append(timed(TAPERS + ["up"], folder))
            times["raw_halt"].append(timed(["lxc-stop", "-P", str(LXC), "-n", container]))
            start = time.perf_counter()
            subprocess.run(["lxc-start", "-P", str(LXC), "-n", container], check=True)
            wait_banner(address)
            times["raw_up_halted"].append(time.perf_counter() - start)
        host_key = generate("bench")
        raw_address = str(network.SUBNET.network_address + 250 * 256 + 250)
        for i in range(runs):
            clone = f"bench-{RUN}-raw-destroy{i}"
            raw_clone(base, clone, raw_address, host_key.private)
            subprocess.run(["lxc-start", "-n", clone], check=True)
            wait_banner(raw_address)
            subprocess.run(["lxc-stop", "-n", clone], check=True)
            subprocess.run(TAPERS + ["halt"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
            ours = ("destroy", TAPERS + ["destroy", "-f"])
            raw = ("raw_destroy", [sys.executable, "-c", f"import lxc; assert lxc.Container({clone!r}).destroy()"])
            for key, argv in (ours, raw) if i % 2 else (raw, ours):
                times[key].append(timed(argv, folder))
            up_project(folder)
    finally:
        discard(folder)
        remove_raw(base)
    return times


def bench_three(runs: int) -> list[float]:
    """`up` of a project of 3 new machines."""
    folder = new_project({"a": "{}", "b": "{}", "c": "{}"})
    ups = []
    try:
        for _ in range(runs):
            ups.append(timed(TAPERS + ["up"], folder))
            subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    finally:
        discard(folder)
    return ups


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
    raw_three = bench_raw_up(args.runs, box.rootfs, count=3)
    up, noop, status, raw_status, memory = bench_tapers(args.runs)
    privileged_up, _, _, _, privileged_memory = bench_tapers(args.runs, privileged=True)
    life = bench_lifecycle(args.runs, box.rootfs)
    three = bench_three(args.runs)
    med = statistics.median
    rows = [  # name, tapers, floor, target ratio
        ("ssh NAME -c true", life["ssh"], life["raw_ssh"], 1.5),
        ("halt", life["halt"], life["raw_halt"], 1.2),
        ("up of a halted machine", life["up_halted"], life["raw_up_halted"], 2.0),
        ("destroy -f of a halted one", life["destroy"], life["raw_destroy"], 2.0),
        ("up, 1 machine, until SSH", up, raw_up, 2.0),
        ("  the same, privileged: true", privileged_up, raw_up, 2.0),
        ("up, 3 machines", three, raw_three, 1.5),
        ("  tapers' 3 against its 1", three, up, med(raw_three) / med(raw_up)),
        ("  raw LXC's 3 against its 1", raw_three, raw_up, None),
        ("status", status, raw_status, 1.5),
        ("up, nothing to do", noop, raw_status, None),
    ]
    print(f"{'':30} {'tapers':>9} {'floor':>9} {'ratio':>7} {'target':>7}   (medians of {args.runs} runs)")
    for name, ours, floor, target in rows:
        ratio = med(ours) / med(floor)
        mark = "" if target is None else f"{target:6.2f}x" + ("" if ratio <= target else "  over")
        print(f"{name:30} {med(ours):8.3f}s {med(floor):8.3f}s {ratio:6.2f}x {mark}")
    print(f"idle machine's memory (working set, as tapers stats counts it): {memory / 2**20:.1f} MiB "
          f"(privileged: true: {privileged_memory / 2**20:.1f} MiB)")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    data = {"runs": args.runs, "up": up, "raw_up": raw_up, "status": status, "raw_status": raw_status, "noop_up": noop,
            "privileged_up": privileged_up, "memory": memory, "privileged_memory": privileged_memory,
            "up_three": three, "raw_up_three": raw_three, **life}
    (results / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
