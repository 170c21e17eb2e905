#!/usr/bin/env python3
"""tapers run by a normal user (after `sudo tapers host setup --user NAME`) against tapers run
by root and against raw LXC. Prints medians and ratios.

  up:          `tapers up` of one new machine until SSH answers: as the user, as root, and
               raw LXC's floor (bench.py's: an overlay clone started by hand, privileged).
  up (halted): `tapers up` of a halted machine, as the user.
  exec:        `tapers exec web -- true` as the user (lxc-attach under it).
  ssh -c:      `tapers ssh web -c true` as the user.

Run as root, for a user who was set up and has the box (`tapers box add` or `box build` run
as them): python3 bench/bench_user.py --user NAME [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import TAPERS, discard, timed  # noqa: E402  (bench/common.py)


def as_user(runs: int) -> dict[str, list[float]]:
    """The timings, taken by this script running as the user (`--inner`)."""
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-", dir=Path.home()))
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: bench-{os.getpid()}\nmachines:\n  web: {{}}\n")
    times: dict[str, list[float]] = {"up": [], "up_halted": [], "exec": [], "ssh": []}
    try:
        for _ in range(runs):
            times["up"].append(timed(TAPERS + ["up"], folder))
            times["exec"].append(timed(TAPERS + ["exec", "web", "--", "true"], folder))
            times["ssh"].append(timed(TAPERS + ["ssh", "web", "-c", "true"], folder))
            subprocess.run(TAPERS + ["halt"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
            times["up_halted"].append(timed(TAPERS + ["up"], folder))
            subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    finally:
        discard(folder)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(as_user(args.runs)))
        return
    import bench  # bench/bench.py: the raw floor and root's own runs

    account = pwd.getpwnam(args.user)
    env = ["env", "-i", f"HOME={account.pw_dir}", f"USER={args.user}", "PATH=/usr/local/bin:/usr/bin:/bin"]
    inner = subprocess.run(["runuser", "-u", args.user, "--", *env, sys.executable, str(Path(__file__).resolve()),
                            "--user", args.user, "--runs", str(args.runs), "--inner"],
                           capture_output=True, text=True, cwd="/")
    if inner.returncode != 0:
        sys.exit(f"the runs as {args.user} failed:\n{inner.stderr}")
    user = json.loads(inner.stdout)
    box = bench.find_box("debian/bookworm")
    if box is None:
        sys.exit("build root's box first: tapers box build debian/bookworm")
    raw_up = bench.bench_raw_up(args.runs, box.rootfs)[0]
    root_up = bench.bench_tapers(args.runs)[0]
    med = statistics.median
    rows = [
        ("up, 1 machine, as the user", med(user["up"]), med(raw_up)),
        ("up, 1 machine, as root", med(root_up), med(raw_up)),
        ("up of a halted machine, user", med(user["up_halted"]), None),
        ("exec web -- true, user", med(user["exec"]), None),
        ("ssh web -c true, user", med(user["ssh"]), None),
    ]
    print(f"{'':32} {'tapers':>9} {'raw LXC':>9} {'ratio':>7}   (medians of {args.runs} runs)")
    for name, ours, floor in rows:
        tail = f" {floor:8.3f}s {ours / floor:6.2f}x" if floor else ""
        print(f"{name:32} {ours:8.3f}s{tail}")


if __name__ == "__main__":
    main()
