#!/usr/bin/env python3
"""Reconcile speed: a no-op `tapers up` on 3 machines (target: at most 0.5 s) and
`tapers plan` on 20 machines, each against the raw floor of listing containers.

Run as root with the box built. Usage: python3 bench/bench_reconcile.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS, timed, up_project  # noqa: E402  (bench/common.py)

RUN = uuid.uuid4().hex[:6]



def project(machines: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-"))
    names = "".join(f"  m{i}: {{memory: 128M, provision: [{{shell: 'true'}}]}}\n" for i in range(machines))
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: br-{RUN}-{machines}\nmachines:\n{names}")
    start = time.perf_counter()
    up_project(folder)
    print(f"(first `up` of {machines} machines, provisioning included: {time.perf_counter() - start:.2f} s)")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    med = statistics.median
    floor = med(timed([sys.executable, "-c", "import lxc; lxc.list_containers()"], Path.cwd()) for _ in range(args.runs))
    rows = []
    for count, command in ((3, "up"), (20, "plan")):
        folder = project(count)
        try:
            times = [timed(TAPERS + [command], folder) for _ in range(args.runs)]
            rows.append((f"no-op `{command}`, {count} machines", med(times)))
        finally:
            subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL)
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{'':30} {'tapers':>9} {'floor':>9} {'ratio':>7}   (medians of {args.runs} runs)")
    for name, ours in rows:
        print(f"{name:30} {ours:8.3f}s {floor:8.3f}s {ours / floor:6.2f}x")


if __name__ == "__main__":
    main()
