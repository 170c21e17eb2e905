#!/usr/bin/env python3
"""The web panel with 10 running machines: how long the page takes to load, and what
each connected page costs the server in CPU.

  load:  a new page in headless Chromium until the page is live (its first refresh of
         the machines arrived), and the server-side render alone (GET / over HTTP).
  cpu:   the `tapers ui` process's CPU time over a window with 0, 1 and 5 pages open
         (each page asks for the state every 2 s; the server samples the machines
         every second while at least one page watches).

Run as root with the box built and Debian's chromium installed.
Usage: python3 bench/bench_ui.py [--runs N] [--window SECONDS]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS, up_project  # noqa: E402  (bench/common.py)

RUN = uuid.uuid4().hex[:6]
MACHINES = 10
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_share(pid: int, window: float) -> float:
    """Percent of one core the process used over `window` seconds."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return (cpu_seconds(pid) - start) / (time.monotonic() - t0) * 100


def render_time(port: int, token: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    connection.request("GET", "/", headers={"Authorization": f"Bearer {token}"})
    body = connection.getresponse().read()
    elapsed = time.perf_counter() - start
    connection.close()
    assert body.count(b'class="machine"') == MACHINES, "the page does not show the bench's machines"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-ui-"))
    names = "".join(f"  m{i}: {{memory: 128M}}\n" for i in range(MACHINES))
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: bu-{RUN}\nmachines:\n{names}")
    server = None
    try:
        up_project(folder)
        server = subprocess.Popen(TAPERS + ["ui", "--port", "0"], cwd=folder, stdout=subprocess.PIPE, text=True)
        url = server.stdout.readline().split("open ", 1)[1].strip()
        base, _, token = url.partition("/?token=")
        port = int(base.rsplit(":", 1)[1])
        renders = [render_time(port, token) for _ in range(args.runs)]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            loads = []
            for _ in range(args.runs):
                page = browser.new_page()
                start = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("#live:not([hidden])")
                loads.append(time.perf_counter() - start)
                page.close()
            time.sleep(16)  # no page watching: the sampler pauses
            idle = cpu_share(server.pid, args.window)
            shares = {}
            pages = []
            for count in (1, 5):
                while len(pages) < count:
                    page = browser.new_page()
                    page.goto(url)
                    pages.append(page)
                time.sleep(3)
                shares[count] = cpu_share(server.pid, args.window)
            browser.close()
        med = statistics.median
        print(f"web panel, {MACHINES} running machines (medians of {args.runs} runs)")
        print(f"  page load in Chromium until live     {med(loads) * 1000:7.1f} ms")
        print(f"  server render of the page (GET /)     {med(renders) * 1000:7.1f} ms")
        print(f"  server CPU, no page open              {idle:7.2f} % of a core")
        print(f"  server CPU, 1 page open               {shares[1]:7.2f} % of a core")
        print(f"  server CPU, 5 pages open              {shares[5]:7.2f} % of a core")
        print(f"  per page beyond the first             {(shares[5] - shares[1]) / 4:7.2f} % of a core")
    finally:
        if server is not None:
            server.send_signal(2)
            server.wait(timeout=60)
        subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
