#!/usr/bin/env python3
"""The provisioning cache: `destroy && up` of a provisioned machine, warm (every step in the
cache) against cold (the steps run, and their layers are kept) and against the floor (`up`
of the same machine with no provisioning at all). Also the cost of keeping the layers
(cold with the cache against `up --no-cache`) and the disk per layer.

The steps take about 30 s in all and download nothing: each sleeps, writes 30 MB and a
thousand small files. Their scripts carry this run's id, so no earlier layer matches;
this run's layers are removed at the end.

Run as root with the box built (TAPERS_HOME is honoured). Usage: python3 bench/bench_cache.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS, discard, timed  # noqa: E402  (bench/common.py)

RUN = uuid.uuid4().hex[:6]
STEP = ('sleep 9; head -c 30M /dev/urandom > /opt/{name}; mkdir -p /opt/{name}.d; '
        'for i in $(seq 1000); do echo $i > /opt/{name}.d/$i; done; echo {run} > /opt/{name}.run')


def project(steps: bool) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"tapers-bench-cache-{RUN}-"))
    lines = ["version: 1", f"name: bc{RUN}{'s' if steps else 'n'}", "machines:", "  web:"]
    if steps:
        lines.append("    provision:")
        for name in ("one", "two", "three"):
            lines += [f"      - name: {name}", f"        shell: \"{STEP.format(name=name, run=RUN)}\""]
    (folder / "Taperfile.yaml").write_text("\n".join(lines) + "\n")
    return folder


def run(folder: Path, *args: str) -> str:
    result = subprocess.run(TAPERS + list(args), cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"tapers {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    os.environ.setdefault("TAPERS_CACHE_MAX_SIZE", "20G")
    steps, bare = project(True), project(False)
    try:
        uncached = timed(TAPERS + ["up", "--no-cache"], steps)
        run(steps, "destroy", "-f")
        cold = timed(TAPERS + ["up"], steps)
        warm, floor = [], []
        for _ in range(runs):
            run(steps, "destroy", "-f")
            warm.append(timed(TAPERS + ["up"], steps))
            ran = run(steps, "ssh", "web", "-c", "cat /opt/one.run /opt/two.run /opt/three.run").split()
            assert ran == [RUN] * 3, ran
            run(bare, "destroy", "-f")
            floor.append(timed(TAPERS + ["up"], bare))
        layers = [layer for layer in json.loads(run(steps, "cache", "list", "--json"))
                  if any(RUN in step for step in layer["steps"]) or _ours(layer)]
        result = {
            "cold_uncached_s": round(uncached, 2),
            "cold_s": round(cold, 2),
            "keeping_layers_s": round(cold - uncached, 2),
            "warm_s": round(statistics.median(warm), 3),
            "floor_s": round(statistics.median(floor), 3),
            "warm_over_floor": round(statistics.median(warm) / statistics.median(floor), 2),
            "cold_over_warm": round(cold / statistics.median(warm), 1),
            "layer_sizes_mb": [round(layer["size"] / 2**20, 1) for layer in layers],
        }
        print(json.dumps(result, indent=2))
    finally:
        for folder in (steps, bare):
            discard(folder)
        _remove_ours()


def _ours(layer: dict) -> bool:
    from tapers import layer_cache

    marker = layer_cache.folder() / layer["layer"] / "disk" / "opt" / "one.run"
    return marker.is_file() and marker.read_text().strip() == RUN


def _remove_ours() -> None:
    from tapers import layer_cache

    for layer in layer_cache.list_layers():
        if _ours({"layer": layer.key}):
            layer_cache._remove(layer.folder)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"(bench took {time.monotonic() - started:.0f} s)", file=sys.stderr)
