"""Planner cases as data: each file in plan_cases/ is a Taperfile, what exists on the host,
and the plan text users would read. Regenerate after an intended change with:
TAPERS_UPDATE_GOLDEN=1 pytest tests/unit/test_plan_cases.py (then read the diff)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tapers.backend.api import ContainerInfo, State
from tapers.record import BoxRef
from tests.fakes import make_record
from tapers.engine import machines_for_up, step_fingerprints
from tapers.errors import TapersError
from tapers.engine.observe import Observed
from tapers.engine.plan import plan_up
from tapers.engine.settings import desired_settings
from tapers.project import open_project
from tapers.taperfile.units import parse_size

CASES = Path(__file__).parent / "plan_cases"
KEY = "ssh-ed25519 AAAAcurrent tapers-shop"


def observed_from(case: dict, project) -> Observed:
    prints = step_fingerprints(project, project.machines)
    machines, orphans = {}, []
    for name, spec in (case.get("observed") or {}).items():
        spec = spec or {}
        machine = next((m for m in project.machines if m.name == name), None)
        applied = {**desired_settings(machine), "privileged": machine.privileged} if machine else {}
        for key, value in (spec.get("applied") or {}).items():
            if value is None:  # not recorded (by an older tapers)
                applied.pop(key, None)
            else:
                applied[key] = parse_size(value) if key == "memory" and isinstance(value, str) else value
        box_name, _, version = spec.get("box", f"{applied.get('box', 'debian/bookworm')}@1").partition("@")
        record = make_record(
            name,
            phase=spec.get("phase", "ready"),
            project=project.id,
            project_dir=str(project.root),
            box=BoxRef(box_name, version or "1", "0" * 64),
            authorized_key=KEY if spec.get("key", "current") == "current" else "ssh-ed25519 AAAAold x",
            applied=applied,
            provisioned=spec.get("provisioned", prints.get(name, {})),
            provision_failed=spec.get("provision_failed"),
        )
        info = ContainerInfo(f"tapers-{project.id}-{name}", State(spec.get("state", "running")), record)
        (machines.__setitem__(name, info) if machine else orphans.append(info))
    foreign = {
        name: ContainerInfo(f"tapers-{project.id}-{name}", State.RUNNING,
                            make_record(name, **record) if record else None)
        for name, record in (case.get("foreign") or {}).items()
    }
    return Observed(machines=machines, orphans=tuple(orphans), foreign=foreign)


@pytest.mark.parametrize("case", sorted(p.stem for p in CASES.glob("*.yaml")))
def test_plan_case(case: str, tmp_path: Path) -> None:
    data = yaml.safe_load((CASES / f"{case}.yaml").read_text())
    (tmp_path / "Taperfile.yaml").write_text(data["taperfile"])
    for name, content in (data.get("files") or {}).items():
        (tmp_path / name).write_text(content)
    project = open_project(explicit=tmp_path / "Taperfile.yaml")
    options = data.get("options") or {}
    seen = observed_from(data, project)
    machines = machines_for_up(project, options.get("names"))
    try:
        text = str(
            plan_up(
                machines,
                seen,
                KEY,
                set(options.get("boxes_cached", ["debian/bookworm"])),
                step_fingerprints(project, machines),
                options.get("provision", "auto"),
                options.get("remove_orphans", False),
                options.get("names_stale", False),
            )
        )
    except TapersError as exc:
        text = f"error: {exc.message}"
    expected = CASES / f"{case}.expected"
    if os.environ.get("TAPERS_UPDATE_GOLDEN"):
        expected.write_text(text + "\n")
    assert text + "\n" == expected.read_text()
