"""The Engine against the in-memory fake backend: what each operation asks and does, in
the order a front end relies on. (tests/integration runs the same operations for real.)"""

from __future__ import annotations

import pytest

from tapers.backend.api import State
from tapers.engine import Engine
from tapers.errors import StateError, TapersError
from tapers.events import SilentReporter
from tapers.project import open_project
from tests.fakes import FakeBackend

TAPERFILE = """\
version: 1
name: shop
machines:
  web:
    networks: [{forwarded_port: {guest: 80, host: 8080}}]
"""


class Prompts:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def confirm(self, question: str, refusal: str, flag: str) -> None:
        self.asked.append(question)
        if not self.answer:
            raise TapersError(refusal, hint=f"pass {flag}")

    def can_ask(self) -> bool:
        return True


@pytest.fixture
def engine(write_project, fake_box_home):
    root = write_project({"Taperfile.yaml": TAPERFILE})
    project = open_project(explicit=root / "Taperfile.yaml")
    checked: list[str] = []
    backend = FakeBackend(events=checked)
    prompts = Prompts()
    made = Engine(project, SilentReporter(), prompts, backend, host_check=lambda: None,
                  ssh_check=lambda target, identity, timeout: checked.append(f"ssh {target.machine}"))
    return made, backend, prompts, checked


def test_up_twice_does_nothing_the_second_time(engine) -> None:
    made, backend, _, checked = engine
    assert made.up(None) is True
    assert backend.containers["tapers-shop-web"]["state"] is State.RUNNING
    assert checked.count("ssh web") == 1
    assert made.up(None) is False
    assert (made.project.root / ".tapers" / "ssh_config").is_file()


def test_snapshot_restore_of_a_running_machine_goes_through_halt_and_start(engine) -> None:
    """Port rules removed with the halt and put back with the start, as `halt` and `up` do."""
    made, backend, _, checked = engine
    made.up(None)
    made.snapshot_save("web", "before")
    assert backend.network.forwards["tapers-shop-web"]
    backend.calls.clear()
    made.snapshot_restore("web", "before")
    assert backend.calls == ["stop tapers-shop-web", "start tapers-shop-web"]
    assert backend.containers["tapers-shop-web"]["state"] is State.RUNNING
    assert [f.host for f in backend.network.forwards["tapers-shop-web"]] == [8080]
    assert checked.count("ssh web") == 2


def test_snapshot_restore_of_a_halted_machine_leaves_it_halted(engine) -> None:
    made, backend, _, _ = engine
    made.up(None)
    made.snapshot_save("web", "before")
    made.halt(None)
    backend.calls.clear()
    made.snapshot_restore("web", "before")
    assert backend.calls == []
    assert backend.containers["tapers-shop-web"]["state"] is State.STOPPED
    with pytest.raises(StateError, match="no snapshot `nope`"):
        made.snapshot_restore("web", "nope")


def test_destroy_asks_unless_forced_and_a_no_changes_nothing(engine) -> None:
    made, backend, prompts, _ = engine
    made.up(None)
    prompts.answer = False
    with pytest.raises(TapersError, match="refusing to destroy"):
        made.destroy(None)
    assert "tapers-shop-web" in backend.containers
    assert prompts.asked == ["Destroy `web` and everything in them?"]
    assert made.destroy(None, force=True) is True
    assert "tapers-shop-web" not in backend.containers


def test_operations_on_a_machine_that_is_not_created_say_so(engine) -> None:
    made, _, _, _ = engine
    with pytest.raises(StateError, match="not created"):
        made.snapshot_save("web", "x")
    assert made.halt(None) is False and made.suspend(None) is False and made.resume(None) is False


def test_status_says_a_machine_that_is_not_created_is_out_of_date(engine) -> None:
    """`up` would create it: `status` must not say "up to date" (as it did for a destroyed machine)."""
    made, backend, _, _ = engine
    (row,) = status_now(made.project, backend)
    assert row["state"] == "not created" and row["out_of_date"] == ["not created (create)"]
    made.up(None)
    (row,) = status_now(made.project, backend)
    assert row["out_of_date"] == []


def test_status_shows_what_up_would_do_steps_and_settings_alike(engine, write_project) -> None:
    """`status` reads the plan `up` runs: a changed `once` step and a changed limit are out of
    date (status used to say "up to date" while `plan --detailed-exitcode` exited 2); a
    stopped machine or a `run: always` step is not."""
    made, backend, _, _ = engine
    root = made.project.root
    (root / "setup.sh").write_text("echo one\n")
    (root / "Taperfile.yaml").write_text(TAPERFILE + "    provision:\n"
                                         "      - {name: setup, shell: {path: setup.sh}}\n"
                                         "      - {shell: date, run: always}\n")
    made = Engine(open_project(explicit=root / "Taperfile.yaml"), SilentReporter(), Prompts(), backend,
                  host_check=lambda: None, ssh_check=lambda *args: None, guest_factory=fake_guests)
    made.up(None)
    made.halt(None)
    (row,) = status_now(made.project, backend)
    assert row["state"] == "stopped" and row["out_of_date"] == []
    (root / "setup.sh").write_text("echo two\n")
    (root / "Taperfile.yaml").write_text((root / "Taperfile.yaml").read_text().replace("  web:\n", "  web:\n    memory: 1G\n"))
    project = open_project(explicit=root / "Taperfile.yaml")
    (row,) = status_now(project, backend)
    assert row["out_of_date"] == ["memory (live)", 'step 1 "setup" (setup.sh changed)']


def status_now(project, backend) -> list[dict]:
    from tapers.engine import status_plan
    from tapers.engine.observe import observe
    from tapers.engine.status import status_rows

    observed = observe(project, backend)
    return status_rows(project, observed, status_plan(project, backend, observed))


def fake_guests(name: str, ctx) -> object:
    from tests.fakes import FakeGuest

    return FakeGuest(name, ctx.project.root, [])


def test_set_limits_goes_through_the_engine_and_is_recorded(engine) -> None:
    """`tapers limits` asks the Engine: a machine that is not created is an error naming it;
    a running one gets the limits at once, recorded as applied (status shows the drift)."""
    made, backend, _, _ = engine
    with pytest.raises(StateError, match="machine `web` is not created"):
        made.set_limits("web", {"memory": 512 * 1024**2})
    made.up(None)
    assert made.set_limits("web", {"memory": 512 * 1024**2, "pids": None}) is True
    assert backend.containers["tapers-shop-web"]["limits"].memory == 512 * 1024**2
    assert backend.record("tapers-shop-web").applied["memory"] == 512 * 1024**2
    (row,) = status_now(made.project, backend)
    assert row["out_of_date"] == ["memory (live)"]


def test_a_record_from_a_newer_tapers_is_left_alone_and_its_address_stays_taken(engine) -> None:
    """A container whose record this tapers can't use is not touched (up says why), and the
    address and box it names stay taken: no new machine is given its address."""
    import json

    from tapers.backend import addresses
    from tests.fakes import make_record

    made, backend, _, _ = engine
    wanted = addresses.allocate("tapers-shop-web", set(), "10.97.0.0/16", "tapersbr0").address
    newer = json.loads(make_record("db", project="other", address=wanted).to_json()) | {"tapers": 99}
    backend.containers["tapers-other-db"] = {"state": State.RUNNING, "record": json.dumps(newer)}
    info = backend.inspect("tapers-other-db")
    assert info.record is None and "written by a newer tapers" in info.problem and info.address == wanted
    made.up(None)
    assert backend.record("tapers-shop-web").address != wanted
    backend.containers["tapers-shop-web"]["record"] = json.dumps(
        json.loads(backend.containers["tapers-shop-web"]["record"]) | {"tapers": 99})
    with pytest.raises(StateError, match="created by tapers, but its tapers record can't be used: written by a newer"):
        made.up(None)
    assert backend.containers["tapers-shop-web"]["state"] is State.RUNNING


def test_status_still_shows_the_machines_when_the_plan_cant_be_made(engine, capsys) -> None:
    """A step file that can't be read makes the plan impossible: status says so once and
    still prints every machine, its state and address."""
    import json

    from tapers.cli.status_view import show_status
    from tapers.engine.observe import observe

    made, backend, _, _ = engine
    root = made.project.root
    (root / "setup.sh").write_text("echo one\n")
    (root / "Taperfile.yaml").write_text(TAPERFILE + "    provision:\n      - {shell: {path: setup.sh}}\n")
    project = open_project(explicit=root / "Taperfile.yaml")
    (root / "setup.sh").unlink()
    (root / "setup.sh").mkdir()  # the script is now a folder: nothing to hash
    show_status(project, backend, observe(project, backend), as_json=True)
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)["machines"]
    assert row["machine"] == "web" and row["state"] == "not created"
    assert row["out_of_date"][0].startswith("can't tell: ")
    assert "can't tell what is out of date" in captured.err


def test_reload_runs_its_triggers_around_both_halves(write_project, fake_box_home, monkeypatch, tmp_path) -> None:
    """Before-reload triggers run ahead of the halt, or, for a machine the halt leaves alone
    (stopped), ahead of its start; after-reload ones once it is up again. Up's own don't run."""
    from tapers.engine import triggers, trust

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    log = tmp_path / "log"

    def on_host(when: str, event: str) -> str:
        return f'{{{when}: {event}, run: "echo {when}-{event}-$TAPERS_MACHINE >> {log}"}}'

    text = "version: 1\nname: shop\nmachines:\n" + "".join(
        f"  {name}:\n    triggers: [{on_host('before', 'reload')}, {on_host('after', 'reload')}, "
        f"{on_host('after', 'up')}]\n" for name in ("web", "db"))
    root = write_project({"Taperfile.yaml": text})
    project = open_project(explicit=root / "Taperfile.yaml")
    trust.approve(project, triggers.host_commands(project))
    made = Engine(project, SilentReporter(), Prompts(), FakeBackend(events=[]), host_check=lambda: None,
                  ssh_check=lambda *args: None)
    made.up(None)
    made.halt(["db"])
    log.write_text("")
    made.reload(None)
    assert sorted(log.read_text().split()) == ["after-reload-db", "after-reload-web", "before-reload-db",
                                               "before-reload-web"]


def test_reload_asks_its_approvals_before_it_halts_anything(write_project, fake_box_home, monkeypatch,
                                                            tmp_path) -> None:
    """Where nothing can ask (the panel), a reload that would need a new approval is refused
    with the machines still running, not left halted."""
    from tapers.engine import trust
    from tapers.errors import TriggerError

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    shared = [tmp_path / "a", tmp_path / "b"]
    for folder in shared:
        folder.mkdir()

    def taperfile(*folders) -> str:
        return ("version: 1\nname: shop\nmachines:\n  web:\n    synced_folders:\n"
                + "".join(f"      - {{host: {f}, guest: /{f.name}}}\n" for f in folders) + "    privileged: true\n")

    root = write_project({"p/Taperfile.yaml": taperfile(shared[0])}) / "p"
    project = open_project(explicit=root / "Taperfile.yaml")
    trust.approve(project, trust.shared_folders(project))
    backend = FakeBackend(events=[])
    mute = Prompts()
    mute.can_ask = lambda: False  # type: ignore[method-assign]
    Engine(project, SilentReporter(), mute, backend, host_check=lambda: None, ssh_check=lambda *a: None).up(None)
    (root / "Taperfile.yaml").write_text(taperfile(*shared))
    project = open_project(explicit=root / "Taperfile.yaml")
    backend.calls.clear()
    with pytest.raises(TriggerError, match=f"may write {shared[1]}"):
        Engine(project, SilentReporter(), mute, backend, host_check=lambda: None,
               ssh_check=lambda *a: None).reload(None)
    assert backend.containers["tapers-shop-web"]["state"] is State.RUNNING
    assert not any(call.startswith("stop") for call in backend.calls), backend.calls


def test_a_play_is_kept_from_what_machines_have_mounted_whatever_the_taperfile_says_now(
        write_project, fake_box_home, monkeypatch, tmp_path) -> None:
    """A machine can edit the Taperfile (`readonly: true`, the entry gone) or a link in the
    project; not what its mounts were made of: a play still can't reach the folder."""
    from tapers.engine import trust
    from tapers.provision.runner import play_command

    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    shared.mkdir()
    root = write_project({"p/Taperfile.yaml": "version: 1\nname: shop\nmachines:\n  web:\n    privileged: true\n"
                          f"    synced_folders: [{{host: {shared}, guest: /s}}]\n"}) / "p"
    project = open_project(explicit=root / "Taperfile.yaml")
    trust.approve(project, trust.shared_folders(project))
    backend = FakeBackend(events=[])
    Engine(project, SilentReporter(), Prompts(), backend, host_check=lambda: None, ssh_check=lambda *a: None).up(None)
    (root / "Taperfile.yaml").write_text("version: 1\nname: shop\nmachines:\n  web:\n    privileged: true\n"
                                         f"    synced_folders: [{{host: {shared}, guest: /s, readonly: true}}]\n")
    project = open_project(explicit=root / "Taperfile.yaml")
    assert trust.hidden_from_plays(project) == ()
    assert trust.hidden_from_plays(project, backend) == (shared,)
    argv = play_command(root, tmp_path / "copy", trust.hidden_from_plays(project, backend),
                        ["ansible-playbook", "site.yml"], None)
    assert argv[argv.index("--") - 1] == str(shared) and argv[-2:] == ["ansible-playbook", "site.yml"]
