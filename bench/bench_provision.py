#!/usr/bin/env python3
"""The overhead of provisioning: a no-op shell step (`true`) against a bare paramiko exec.

  whole command: `tapers provision` (one `true` step) on 1 and on 5 machines, versus a
                 fresh Python process that connects with paramiko and runs `true` on each
                 machine (in parallel threads, like tapers).
  in session:    one no-op step on an open connection (upload, run, clean up) versus one
                 exec of `true` on the same connection.

Run as root with the box built. Usage: python3 bench/bench_provision.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
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

BARE = """
import sys, threading, paramiko
key = paramiko.Ed25519Key.from_private_key_file(sys.argv[1])
def one(address):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(address, username="tapers", pkey=key, allow_agent=False, look_for_keys=False)
    channel = client.get_transport().open_session()
    channel.exec_command("true")
    assert channel.recv_exit_status() == 0
    client.close()
threads = [threading.Thread(target=one, args=(a,)) for a in sys.argv[2:]]
[t.start() for t in threads]
[t.join() for t in threads]
"""



def project(machines: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-"))
    names = "".join(f"  m{i}: {{provision: [{{shell: 'true'}}]}}\n" for i in range(machines))
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: bp-{RUN}-{machines}\nmachines:\n{names}")
    up_project(folder)
    return folder


def addresses(folder: Path) -> list[str]:
    status = json.loads(subprocess.run(TAPERS + ["status", "--json"], cwd=folder, check=True,
                                       capture_output=True, text=True).stdout)
    return [m["address"] for m in status["machines"]]


def in_session(folder: Path, runs: int) -> tuple[list[float], list[float]]:
    """One step through tapers' own runner vs one exec, both on an open connection."""
    from tapers.engine.apply import Context, _ssh_guest
    from tapers.backend import default_backend
    from tapers.events import SilentReporter
    from tapers.project import open_project
    from tapers.provision.runner import run_step

    proj = open_project(explicit=folder / "Taperfile.yaml")
    ctx = Context(proj, default_backend(), SilentReporter())
    guest = _ssh_guest("m0", ctx)
    step = proj.loaded.machine("m0").provision[0]
    session = guest._connected()
    steps, execs = [], []
    for _ in range(runs):
        start = time.perf_counter()
        run_step(step, guest, lambda: None)
        steps.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.capture("true")
        execs.append(time.perf_counter() - start)
    guest.close()
    return steps, execs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    med = statistics.median
    rows = []
    raw: dict[str, object] = {}
    for count in (1, 5):
        folder = project(count)
        try:
            key = folder / ".tapers" / "id_ed25519"
            ours = [timed(TAPERS + ["provision"], folder) for _ in range(args.runs)]
            bare = [timed([sys.executable, "-c", BARE, str(key), *addresses(folder)], folder) for _ in range(args.runs)]
            rows.append((f"tapers provision, {count} machine(s)", med(ours), med(bare)))
            raw[f"provision_{count}"] = {"tapers": ours, "bare": bare}
            if count == 1:
                steps, execs = in_session(folder, args.runs * 3)
                rows.append(("one step on an open session", med(steps), med(execs)))
                raw["in_session"] = {"step": steps, "exec": execs}
        finally:
            subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL)
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{'':36} {'tapers':>9} {'paramiko':>9} {'ratio':>7}   (medians of {args.runs}+ runs)")
    for name, ours, floor in rows:
        print(f"{name:36} {ours:8.3f}s {floor:8.3f}s {ours / floor:6.2f}x")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"provision-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
