#!/usr/bin/env python3
"""`tapers up` of 1 and 5 machines (box cached, until SSH answers) on liblxc and on LXD,
through its unix socket and through HTTPS, with the ratios to liblxc; and where LXD's
time goes: creating an instance from the (already uploaded) image, and starting it,
timed on LXD directly.

Run as root with the box built and a test LXD running (`eval "$(scripts/lxd-test start)"`
sets TAPERS_TEST_LXD_CONFIG, the HTTPS settings this bench uses).
Usage: python3 bench/bench_lxd.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS  # noqa: E402  (bench/common.py)

RUN = uuid.uuid4().hex[:6]


def timed_up(machines: int, env: dict[str, str], label: str, run: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-lxd-"))
    names = "".join(f"  m{i}: {{}}\n" for i in range(machines))
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: bl{RUN}{label}{run}\nmachines:\n{names}")
    try:
        start = time.perf_counter()
        result = subprocess.run(TAPERS + ["up"], cwd=folder, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"`tapers up` ({label}, {machines} machines) failed:\n{result.stdout}{result.stderr}")
        return elapsed
    finally:
        subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, env=env, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def lxd_floor(config: Path, runs: int) -> tuple[float, float]:
    """Median seconds to create an instance from tapers' image, and to start it (LXD alone)."""
    from tapers.backend.lxd.backend import connect
    from tapers.user_config import lxd_settings

    client = connect(lxd_settings(config))
    image = next(i for i in client.images.all() if any(a["name"].startswith("tapers-") for a in i.aliases))
    creates, starts = [], []
    for run in range(runs):
        name = f"bench-{RUN}-{run}"
        config_ = {"security.privileged": "true"}
        devices = {"root": {"type": "disk", "path": "/", "pool": "default"}}
        t0 = time.perf_counter()
        instance = client.instances.create({"name": name, "source": {"type": "image", "fingerprint": image.fingerprint},
                                            "profiles": [], "config": config_, "devices": devices}, wait=True)
        t1 = time.perf_counter()
        instance.start(wait=True)
        t2 = time.perf_counter()
        instance.stop(force=True, wait=True)
        instance.delete(wait=True)
        creates.append(t1 - t0)
        starts.append(t2 - t1)
    return statistics.median(creates), statistics.median(starts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    https = os.environ.get("TAPERS_TEST_LXD_CONFIG")
    if not https:
        sys.exit('no test LXD: run `eval "$(scripts/lxd-test start)"` first')
    unix = Path(tempfile.mkdtemp(prefix="tapers-bench-lxd-")) / "config.yaml"
    unix.write_text("backend: lxd\nlxd:\n  endpoint: unix:/var/lib/lxd/unix.socket\n")
    base = {k: v for k, v in os.environ.items() if k not in ("TAPERS_BACKEND", "TAPERS_CONFIG")}
    backends = {
        "liblxc": {**base, "TAPERS_BACKEND": "liblxc"},
        "lxd-unix": {**base, "TAPERS_BACKEND": "lxd", "TAPERS_CONFIG": str(unix)},
        "lxd-https": {**base, "TAPERS_BACKEND": "lxd", "TAPERS_CONFIG": https},
    }
    timed_up(1, backends["lxd-unix"], "warm", 0)  # the box's image is uploaded once, not timed
    results: dict[tuple[str, int], float] = {}
    for machines in (1, 5):
        for label, env in backends.items():
            times = [timed_up(machines, env, label.replace("-", ""), run) for run in range(args.runs)]
            results[(label, machines)] = statistics.median(times)
    create, start = lxd_floor(Path(https), args.runs)
    print(f"`tapers up` until SSH answers, box cached (medians of {args.runs} runs)")
    print(f"{'':12} {'1 machine':>10} {'ratio':>7} {'5 machines':>11} {'ratio':>7}")
    for label in backends:
        one, five = results[(label, 1)], results[(label, 5)]
        print(f"{label:12} {one:9.2f}s {one / results[('liblxc', 1)]:6.2f}x {five:10.2f}s "
              f"{five / results[('liblxc', 5)]:6.2f}x")
    print(f"LXD alone: create an instance from the image {create:.2f} s, start it {start:.2f} s")
    shutil.rmtree(unix.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
