"""What the bench scripts share: how to run tapers and time a command."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Run from bytecode, as an installed wheel does (pip compiles it, as it did for python-lxc,
# the floor's module): a source checkout run with PYTHONDONTWRITEBYTECODE=1 would
# otherwise compile every module on every run, and the benches would time the compiler.
compileall.compile_dir(ROOT / "tapers", quiet=1)

# The console script beside this Python (a venv's), else the module.
TAPERS = [str(Path(sys.executable).parent / "tapers")]
if not Path(TAPERS[0]).exists():
    TAPERS = [sys.executable, "-P", "-m", "tapers"]


def timed(argv: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def up_project(folder: Path) -> None:
    """`tapers up` in `folder`; on failure destroy what it made and stop with its output."""
    result = subprocess.run(TAPERS + ["up"], cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL)
        sys.exit(f"`tapers up` of the bench project failed:\n{result.stdout}{result.stderr}")


def new_project(name: str, machines: dict[str, str]) -> Path:
    """A project folder (a developer's: the synced folder is writable) with these machines."""
    folder = Path(tempfile.mkdtemp(prefix="tapers-bench-"))
    os.chown(folder, 4242, 4242)
    listed = "".join(f"  {machine}: {spec}\n" for machine, spec in machines.items())
    (folder / "Taperfile.yaml").write_text(f"version: 1\nname: {name}\nmachines:\n{listed}")
    return folder


def discard(folder: Path) -> None:
    """The project's machines destroyed (whatever state they are in) and its folder removed."""
    subprocess.run(TAPERS + ["destroy", "-f"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(folder, ignore_errors=True)
