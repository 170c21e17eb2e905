"""Planner cases for halt and destroy (`up` cases are data files: test_plan_cases.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.backend.api import ContainerInfo, State
from tests.fakes import make_record
from tapers.errors import StateError
from tapers.engine.observe import Observed
from tapers.engine.plan import plan_destroy, plan_halt, plan_up
from tapers.taperfile import load_taperfile

KEY = "ssh-ed25519 AAAAkey tapers-shop"
OTHER_KEY = "ssh-ed25519 AAAAold tapers-shop"
BOX = "debian/bookworm"

TAPERFILE = """\
version: 1
name: shop
machines:
  db: {memory: 256M}
  web: {primary: true}
  tools: {autostart: false}
"""


def machines(tmp_path: Path, text: str = TAPERFILE):
    path = tmp_path / "Taperfile.yaml"
    path.write_text(text)
    return load_taperfile(path).machines


def container(name: str, state: State, phase: str = "ready", key: str = KEY, **applied: object) -> ContainerInfo:
    record = make_record(name, phase=phase, authorized_key=key, applied=dict(applied))
    return ContainerInfo(name=f"tapers-shop-{name}", state=state, record=record)


def observed(*infos: ContainerInfo, orphans: tuple[ContainerInfo, ...] = ()) -> Observed:
    return Observed(machines={i.machine: i for i in infos}, orphans=orphans)


def test_a_container_of_another_project_is_refused(tmp_path: Path) -> None:
    db, web, _ = machines(tmp_path)
    stranger = ContainerInfo("tapers-shop-web", State.RUNNING, make_record("web", project_dir="/elsewhere"))
    seen = Observed(foreign={"web": stranger})
    with pytest.raises(StateError, match="created by the project in `/elsewhere`"):
        plan_up([db, web], seen, KEY, {BOX})


def test_halt_only_what_runs(tmp_path: Path) -> None:
    db, web, tools = machines(tmp_path)
    seen = observed(container("db", State.RUNNING), container("web", State.STOPPED), container("tools", State.FROZEN))
    assert str(plan_halt([db, web, tools], seen)) == "db: halt (running)\ntools: halt (frozen)"


def test_destroy_includes_orphans_only_when_destroying_everything(tmp_path: Path) -> None:
    db, web, tools = machines(tmp_path)
    orphan = container("old", State.STOPPED)
    seen = observed(container("db", State.RUNNING), orphans=(orphan,))
    assert str(plan_destroy([db, web, tools], seen, orphans=True)) == (
        "db: destroy (running)\nold: destroy (no longer in the Taperfile)\n"
        "network: release networks (no machine of this project is left: its host-only networks go; the NAT "
        "network stays)"
    )
    assert str(plan_destroy([web], seen, orphans=False)) == "nothing to do"
