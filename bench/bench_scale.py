#!/usr/bin/env python3
"""One project of many machines (100 by default): `up` of them all, `status`, their idle
memory, `halt`, `up` of the halted ones and `destroy -f`. Targets: `up` grows linearly
(the time per machine at 100 no worse than at 10 by more than half), an idle machine's
working set at most 15 MiB (median), and `destroy -f` of them all no slower than bringing
them up.

Run as root with the box built (TAPERS_HOME is honoured). Usage:
python3 bench/bench_scale.py [--machines N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import uuid
from pathlib import Path

from common import TAPERS, discard, new_project, timed  # noqa: E402  (bench/common.py)

RUN = uuid.uuid4().hex[:6]


def settled(folder: Path, machines: int, sample: int = 5) -> None:
    """Until systemd has finished starting in a few of the machines (spread over the project)."""
    for i in range(0, machines, max(1, machines // sample)):
        subprocess.run(TAPERS + ["ssh", f"m{i}", "-c", "systemctl is-system-running --wait >/dev/null; true"],
                       cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


def idle_memory(folder: Path) -> float:
    """The median working set of the project's machines, in MiB (as `tapers stats` counts it)."""
    stats = json.loads(subprocess.run(TAPERS + ["stats", "--no-stream", "--json"], cwd=folder, check=True,
                                      capture_output=True, text=True).stdout)
    return statistics.median(entry["memory"] for entry in stats) / 2**20


def run(machines: int) -> dict[str, float]:
    folder = new_project(f"scale-{RUN}-{machines}", {f"m{i}": "{}" for i in range(machines)})
    times: dict[str, float] = {}
    try:
        times["up"] = timed(TAPERS + ["up"], folder)
        times["status"] = min(timed(TAPERS + ["status"], folder) for _ in range(5))
        settled(folder, machines)
        times["memory"] = idle_memory(folder)
        times["halt"] = timed(TAPERS + ["halt"], folder)
        times["up_halted"] = timed(TAPERS + ["up"], folder)
        times["destroy"] = timed(TAPERS + ["destroy", "-f"], folder)
    finally:
        discard(folder)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=100)
    args = parser.parse_args()
    small = run(10)
    large = run(args.machines)
    n = args.machines
    print(f"{'':28} {'10 machines':>12} {f'{n} machines':>12}")
    for key, label in (("up", "up"), ("status", "status"), ("halt", "halt"), ("up_halted", "up of the halted ones"),
                       ("destroy", "destroy -f")):
        print(f"{label:28} {small[key]:11.2f}s {large[key]:11.2f}s")
    print(f"{'idle memory (median)':28} {small['memory']:9.1f}MiB {large['memory']:9.1f}MiB")
    per_small, per_large = small["up"] / 10, large["up"] / n
    checks = [
        (f"up per machine at {n} ({per_large:.2f} s) within 1.5x of at 10 ({per_small:.2f} s)", per_large <= 1.5 * per_small),
        (f"idle memory {large['memory']:.1f} MiB <= 15 MiB", large["memory"] <= 15),
        (f"destroy -f of {n} ({large['destroy']:.1f} s) <= their up ({large['up']:.1f} s)", large["destroy"] <= large["up"]),
    ]
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'OVER'} {text}")


if __name__ == "__main__":
    main()
