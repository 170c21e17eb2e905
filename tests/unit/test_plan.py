"""Planner cases as data: a Taperfile, what exists, and the plan text users would read."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from tapers.backend.api import ContainerInfo, State
from tapers.errors import StateError
from tapers.observe import Observed
from tapers.plan import desired_settings, plan_destroy, plan_halt, plan_up
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
    record = {"phase": phase, "machine": name, "authorized_key": key, "project": "shop"}
    if applied:
        record["applied"] = applied
    return ContainerInfo(name=f"tapers-shop-{name}", state=state, record=record)


def observed(*infos: ContainerInfo, orphans: tuple[ContainerInfo, ...] = ()) -> Observed:
    return Observed(machines={i.record["machine"]: i for i in infos}, orphans=orphans)


UP_CASES = {
    "nothing exists, box not cached": (
        observed(),
        set(),
        """\
        debian/bookworm: build box (not in the box cache)
        db: create (not found)
        db: start (created)
        db: wait for ssh (started)
        web: create (not found)
        web: start (created)
        web: wait for ssh (started)""",
    ),
    "all running: nothing to do": (
        observed(container("db", State.RUNNING), container("web", State.RUNNING)),
        {BOX},
        "nothing to do",
    ),
    "one stopped, one frozen": (
        observed(container("db", State.STOPPED), container("web", State.FROZEN)),
        {BOX},
        """\
        db: start (stopped)
        db: wait for ssh (started)
        web: unfreeze (frozen)
        web: wait for ssh (started)""",
    ),
    "interrupted creation is redone": (
        observed(container("db", State.STOPPED, phase="creating"), container("web", State.RUNNING)),
        {BOX},
        """\
        db: re-create (its creation was interrupted)
        db: start (created)
        db: wait for ssh (started)""",
    ),
    "project key changed": (
        observed(container("db", State.RUNNING, key=OTHER_KEY), container("web", State.STOPPED, key=OTHER_KEY)),
        {BOX},
        """\
        db: authorize key (the project key changed (.tapers/ was deleted?))
        web: start (stopped)
        web: authorize key (the project key changed (.tapers/ was deleted?))
        web: wait for ssh (started)""",
    ),
}


@pytest.mark.parametrize("case", list(UP_CASES))
def test_plan_up(case: str, tmp_path: Path) -> None:
    seen, cached, expected = UP_CASES[case]
    selected = [m for m in machines(tmp_path) if m.autostart]
    assert str(plan_up(selected, seen, KEY, cached)) == dedent(expected)


def test_changed_settings_are_reported_not_hidden(tmp_path: Path) -> None:
    db, web, _ = machines(tmp_path)
    applied_db = {**desired_settings(db), "memory": 512 * 1024**2}
    seen = observed(container("db", State.RUNNING, **applied_db), container("web", State.RUNNING, **desired_settings(web)))
    plan = plan_up([db, web], seen, KEY, {BOX})
    assert str(plan) == (
        "nothing to do\n"
        "note: db: memory changed (512M -> 256M); not applied to the existing machine yet: "
        "`tapers destroy db` then `tapers up` re-creates it"
    )


def test_a_container_of_another_project_is_refused(tmp_path: Path) -> None:
    db, web, _ = machines(tmp_path)
    stranger = ContainerInfo("tapers-shop-web", State.RUNNING, {"project": "shop", "project_dir": "/elsewhere"})
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
        "db: destroy (running)\nold: destroy (no longer in the Taperfile)"
    )
    assert str(plan_destroy([web], seen, orphans=False)) == "nothing to do"
