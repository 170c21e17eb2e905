#!/usr/bin/env python3
"""Importing a box: `tapers box add` (checks every member, unpacks, prepares the guest,
digests the tree) against a plain `tar -x` of the same archive; then `up` from it.

Run as root with debian/bookworm built. Usage: python3 bench/bench_boxes.py
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from common import TAPERS, timed  # noqa: E402  (bench/common.py)

from tapers.boxes.cache import find_box  # noqa: E402


def main() -> None:
    box = find_box("debian/bookworm")
    if box is None:
        raise SystemExit("build the box first: tapers box build debian/bookworm")
    work = Path(tempfile.mkdtemp(prefix="tapers-bench-"))
    name = f"bench/{uuid.uuid4().hex[:6]}"
    try:
        (work / "box.json").write_text('{"name": "bench", "version": "1"}')
        archive = work / "box.tar.gz"
        subprocess.run(["tar", "--numeric-owner", "-I", "gzip -1", "-cf", str(archive), "-C", str(work), "box.json",
                        "-C", str(box.rootfs.resolve().parent), "rootfs"], check=True)
        size = archive.stat().st_size >> 20
        unpack = work / "plain"
        unpack.mkdir()
        plain = timed(["tar", "--numeric-owner", "-xzf", str(archive), "-C", str(unpack)])
        ours = timed(TAPERS + ["box", "add", name, str(archive)])
        project = work / "project"
        project.mkdir()
        (project / "Taperfile.yaml").write_text(f"version: 1\nname: bb-{name.split('/')[1]}\nmachines:\n  web: {{box: {name}}}\n")
        start = time.perf_counter()
        subprocess.run(TAPERS + ["up"], cwd=project, check=True, stdout=subprocess.DEVNULL)
        up = time.perf_counter() - start
        print(f"archive {size} MB (unpacks to {box.meta.get('name')} rootfs)")
        print(f"tar -x        {plain:6.2f} s")
        print(f"tapers box add {ours:6.2f} s   ({ours / plain:.2f}x)")
        print(f"up from it    {up:6.2f} s")
        subprocess.run(TAPERS + ["destroy", "-f"], cwd=project, check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(TAPERS + ["box", "remove", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
