"""A machine writes in its synced folder, the project folder: a `tapers/` package (or a
module with the name of one tapers imports) planted there must never be imported by a tapers
process started in that folder (`python -m` puts the current folder first on sys.path;
tapers starts itself with -P). Nothing of it may run on the host."""

from __future__ import annotations

import time
from pathlib import Path

from tapers.ui.jobs import Jobs


def _plant(project: Path, marker: Path) -> None:
    for package in ("tapers", "typer", "yaml", "pydantic"):
        (project / package).mkdir()
        (project / package / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('{package}\\n')\n")


def test_a_panel_job_never_imports_code_planted_in_the_project_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
    marker = tmp_path / "planted-code-ran"
    _plant(project, marker)
    job = Jobs().start(project / "Taperfile.yaml", "validate", ["validate"])
    deadline = time.monotonic() + 60
    while not job.done:
        assert time.monotonic() < deadline, "the validate job never finished"
        time.sleep(0.05)
    assert not marker.exists(), f"planted code ran on the host: {marker.read_text()}"
    assert job.code == 0 and any("valid" in line for line in job.lines), job.lines
