"""boxes/ and provisioners/ ship inside the wheel, and are found from a source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tapers.boxes.recipe import available_recipes
from tapers.resources import data_dir

ROOT = Path(__file__).resolve().parents[2]


def test_data_folders_are_found_from_the_checkout() -> None:
    assert (data_dir("boxes") / "debian-bookworm.yaml").is_file()
    assert (data_dir("provisioners") / "guest-prepare.yaml").is_file()
    assert "debian/bookworm" in available_recipes()


def test_wheel_contains_the_data_folders(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tapers-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tapers/_data/boxes/debian-bookworm.yaml" in names
    assert "tapers/_data/provisioners/guest-prepare.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
