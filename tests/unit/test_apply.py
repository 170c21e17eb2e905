"""The executor against the in-memory fake backend: it does what the plan says and records it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.engine.apply import Context, apply
from tapers.backend.api import State
from tapers.errors import HostError, MachineFailures, SshError
from tapers.events import SilentReporter
from tapers.engine.observe import observe
from tapers.engine.plan import plan_destroy, plan_halt, plan_up
from tapers.project import open_project
from tapers.taperfile.machine import ForwardPort
from tests.fakes import FakeBackend, make_record

KEY = "ssh-ed25519 AAAAprojectkey tapers-shop"
TAPERFILE = """\
version: 1
name: shop
machines:
  db: {memory: 256M, hostname: db.shop.test}
  web: {cpus: 0.5}
"""


@pytest.fixture
def setup(write_project, fake_box_home):
    root = write_project({"Taperfile.yaml": TAPERFILE})
    project = open_project(explicit=root / "Taperfile.yaml")
    checked: list[str] = []
    backend = FakeBackend(events=checked)
    ctx = Context(
        project,
        backend,
        SilentReporter(),
        project_key=KEY,
        ssh_check=lambda target, identity, timeout: checked.append(f"ssh {target.machine} {target.address}"),
    )
    return project, backend, ctx, checked


def up(project, backend, ctx):
    apply(plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"}), ctx)


def test_up_creates_records_and_starts_each_machine(setup) -> None:
    project, backend, ctx, checked = setup
    up(project, backend, ctx)
    db = backend.containers["tapers-shop-db"]
    assert db["state"] is State.RUNNING
    record = backend.record("tapers-shop-db")
    assert record.phase == "ready"
    assert record.project_dir == str(project.root)
    assert record.authorized_key == KEY
    assert record.applied["memory"] == 256 * 1024**2
    files = db["files"]
    assert files["/home/tapers/.ssh/authorized_keys"].content == (KEY + "\n").encode()
    assert files["/home/tapers/.ssh/authorized_keys"].uid == 1000
    assert files["/etc/hostname"].content == b"db.shop.test\n"
    assert b"127.0.1.1\tdb.shop.test db\n" in files["/etc/hosts"].content
    assert files["/etc/ssh/ssh_host_ed25519_key.pub"].content.decode().split()[:2] == record.host_key.split()[:2]
    assert db["spec"].network.mac.startswith("00:16:3e:")
    web = backend.containers["tapers-shop-web"]
    assert backend.record("tapers-shop-web").address != record.address
    assert checked.count("network") == 1
    assert sorted(c for c in checked if c.startswith("ssh")) == sorted(
        [f"ssh db {record.address}", f"ssh web {backend.record('tapers-shop-web').address}"]
    )


def test_new_machines_start_naming_each_other(setup) -> None:
    """Their addresses are chosen before any is made: each /etc/hosts lists the others from
    the first boot, and nothing is written into a machine after it boots."""
    project, backend, ctx, _ = setup
    up(project, backend, ctx)
    db, web = backend.record("tapers-shop-db"), backend.record("tapers-shop-web")
    db_hosts = backend.containers["tapers-shop-db"]["files"]["/etc/hosts"].content.decode()
    web_hosts = backend.containers["tapers-shop-web"]["files"]["/etc/hosts"].content.decode()
    assert f"{web.address}\tweb\n" in db_hosts
    assert f"{db.address}\tdb.shop.test db\n" in web_hosts
    assert not [call for call in backend.calls if call.startswith("run ")]
    assert not plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"})


def test_an_address_taken_meanwhile_is_chosen_again_and_the_names_put_right(setup) -> None:
    """Another tapers claims db's chosen address between the choice and db's creation: db
    gets another, and every machine's /etc/hosts names db where it is once `up` is done."""
    project, backend, ctx, _ = setup
    from tapers.engine import apply as executor

    plan = plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"})
    choose = executor._choose_addresses
    lost = []

    def choose_then_lose_one(plan, ctx) -> None:
        choose(plan, ctx)
        lost.append(ctx._addresses["db"].address)
        taken = make_record("x", project="other", address=lost[0], phase="ready")
        backend.containers["tapers-other-x"] = {"state": State.STOPPED, "record": taken.to_json()}

    executor._choose_addresses = choose_then_lose_one
    try:
        apply(plan, ctx)
    finally:
        executor._choose_addresses = choose
    assert backend.record("tapers-shop-db").address != lost[0]
    assert not plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"})  # names up to date


def test_a_failed_run_puts_the_names_right_in_the_machines_it_made(setup) -> None:
    """web's creation fails: db booted naming web at the address chosen for it, which nothing
    claims now; db's /etc/hosts is written again before the error is reported."""
    project, backend, ctx, _ = setup
    create = backend._create

    def fail_for_web(spec, record):
        if spec.container == "tapers-shop-web":
            raise OSError("disk full")
        create(spec, record)

    backend._create = fail_for_web
    with pytest.raises(Exception, match="disk full"):
        up(project, backend, ctx)
    assert "run tapers-shop-db /bin/sh" in backend.calls  # its /etc/hosts, without web
    assert not plan_up(project.machines[:1], observe(project, backend), KEY, {"debian/bookworm"})


def test_halt_and_destroy_look_for_port_rules_only_where_ports_were_forwarded(setup) -> None:
    """A record without ports means no rule leads to the machine (ports are recorded before
    any rule is made): halt and destroy don't ask the host's firewall about it."""
    project, backend, ctx, checked = setup
    up(project, backend, ctx)
    apply(plan_halt(project.machines, observe(project, backend)), ctx)
    apply(plan_destroy(project.machines, observe(project, backend), None), ctx)
    assert not [event for event in checked if event.startswith("unforward")]


def _with_ports(project, machine: str, *ports: ForwardPort) -> None:
    machines = project.loaded.machines
    machines[machines.index(project.loaded.machine(machine))] = project.loaded.machine(machine)._replace(ports=list(ports))


def _up_failing_to_forward(project, backend, ctx, why: str) -> None:
    """`up`, its port forwarding failing with `why` (the backend's forwarding is put back after)."""
    forward = backend.network.forward

    def fail(container, wanted, guest_ip):
        raise HostError(why)

    backend.network.forward = fail
    try:
        with pytest.raises(HostError, match=why):
            up(project, backend, ctx)
    finally:
        backend.network.forward = forward


def test_ports_are_recorded_before_any_rule_is_made(setup) -> None:
    """Forwarding fails half way (rules may exist): the record already names the ports, so
    destroy takes the rules away."""
    project, backend, ctx, checked = setup
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    _up_failing_to_forward(project, backend, ctx, "nft: out of memory")
    assert [(p.host, p.guest) for p in backend.record("tapers-shop-web").ports] == [(8080, 80)]
    apply(plan_destroy(project.machines, observe(project, backend), None), ctx)
    assert "unforward tapers-shop-web" in checked and "unforward tapers-shop-db" not in checked




def test_a_failed_port_change_keeps_the_ports_made_and_is_tried_again(setup) -> None:
    """web forwards 8080; the Taperfile asks 5432 instead and forwarding fails: the record
    still names 8080 (its rules are still there), and the next `up` tries the change again."""
    project, backend, ctx, checked = setup
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    up(project, backend, ctx)
    _with_ports(project, "web", ForwardPort(guest=5432, host=5432))
    _up_failing_to_forward(project, backend, ctx, "host port 5432 is taken")
    assert [(p.host, p.guest) for p in backend.record("tapers-shop-web").ports] == [(8080, 80)]
    again = plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"})
    assert [a.what for a in again.actions] == ["forward ports (changed: 127.0.0.1:5432 -> 5432/tcp)"]


def test_a_machine_made_again_loses_its_old_port_rules(setup) -> None:
    """web forwards 8080, then is made again (here: it turns privileged) without ports: its
    old rules go with its old container; nothing is left for a later destroy to miss."""
    project, backend, ctx, checked = setup
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    up(project, backend, ctx)
    assert backend.network.forwards["tapers-shop-web"]
    machines = project.loaded.machines
    machines[machines.index(project.loaded.machine("web"))] = project.loaded.machine("web")._replace(
        ports=[], privileged=True)
    up(project, backend, ctx)
    assert "tapers-shop-web" not in backend.network.forwards


class _Lines(SilentReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, subject: str, message: str) -> None:
        self.lines.append(f"{subject} | {message}")


def test_stray_port_forwards_are_closed_before_a_machine_is_made(setup) -> None:
    """Forwards no machine's record lists (a container deleted by hand, then made again by
    tapers under its name; another gone for good) could lead into the new machine given
    their address: they are closed first, and said so. A live machine's stay."""
    project, backend, ctx, checked = setup
    ctx.reporter = _Lines()
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    up(project, backend, ctx)
    web_rules = backend.network.forwards["tapers-shop-web"]
    backend.network.forwards["tapers-shop-db"] = ["db's, left by its container deleted by hand"]
    backend.network.forwards["tapers-gone-x"] = ["a container gone for good"]
    apply(plan_destroy(project.machines[:1], observe(project, backend), None), ctx)
    assert "tapers-shop-db" in backend.network.forwards  # (its record listed no ports: not looked for)
    up(project, backend, ctx)
    assert backend.network.forwards == {"tapers-shop-web": web_rules}
    assert [line for line in ctx.reporter.lines if line.startswith("ports")] == [
        "ports | closed the host ports of `tapers-gone-x`, which no machine forwards now",
        "ports | closed the host ports of `tapers-shop-db`, which no machine forwards now",
    ]


def test_forwards_of_a_machine_whose_record_cant_be_read_are_kept(setup) -> None:
    """A record this tapers can't read (damaged, or written by a newer tapers) may list
    ports: that machine's forwards are not taken for strays."""
    project, backend, ctx, checked = setup
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    up(project, backend, ctx)
    web_rules = backend.network.forwards["tapers-shop-web"]
    backend.containers["tapers-shop-web"]["record"] = '{"version": 999}'
    backend.network.forwards["tapers-gone-x"] = ["a container gone for good"]
    _with_ports(project, "db", ForwardPort(guest=5432, host=5432))
    apply(plan_up(project.machines[:1], observe(project, backend), KEY, {"debian/bookworm"}), ctx)
    assert "tapers-gone-x" not in backend.network.forwards
    assert backend.network.forwards["tapers-shop-web"] == web_rules


def _a_stray_that_cant_be_closed(backend) -> None:
    backend.network.forwards["tapers-gone-a"] = ["stuck"]
    backend.network.forwards["tapers-gone-b"] = ["a container gone for good"]
    closing = backend.network.unforward

    def unforward(container: str) -> None:
        if container == "tapers-gone-a":
            raise HostError("nft: Operation not permitted")
        closing(container)

    backend.network.unforward = unforward


def test_a_stray_forward_that_cant_be_closed_stops_an_up_that_makes_machines(setup) -> None:
    """A new machine could get the stray's address, and its host ports would lead into it:
    the others are closed, and no machine is made."""
    project, backend, ctx, checked = setup
    ctx.reporter = _Lines()
    _a_stray_that_cant_be_closed(backend)
    with pytest.raises(HostError, match=r"`tapers-gone-a`: nft: Operation not permitted.*none is made"):
        up(project, backend, ctx)
    assert not any(name.startswith("tapers-shop") for name in backend.containers)
    assert backend.network.forwards == {"tapers-gone-a": ["stuck"]}
    assert [line for line in ctx.reporter.lines if line.startswith("ports")] == [
        "ports | closed the host ports of `tapers-gone-b`, which no machine forwards now"]


def test_a_stray_forward_that_cant_be_closed_only_warns_when_no_machine_is_made(setup) -> None:
    """Forwarding the ports of machines that exist gives no address away: the stray is
    said, and the ports are forwarded; the next run tries it again."""
    project, backend, ctx, checked = setup
    up(project, backend, ctx)
    ctx.reporter = _Lines()
    _a_stray_that_cant_be_closed(backend)
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    up(project, backend, ctx)
    assert set(backend.network.forwards) == {"tapers-gone-a", "tapers-shop-web"}
    assert [line for line in ctx.reporter.lines if line.startswith("ports")] == [
        "ports | closed the host ports of `tapers-gone-b`, which no machine forwards now",
        "ports | warning: could not close the host ports that lead to no machine now, of `tapers-gone-a`: "
        "nft: Operation not permitted",
    ]


def test_stray_forwards_are_not_looked_for_when_no_machine_is_made_nor_forwarded(setup) -> None:
    project, backend, ctx, checked = setup
    up(project, backend, ctx)
    apply(plan_halt(project.machines, observe(project, backend)), ctx)
    asked = []
    backend.network.forwarded = lambda: asked.append("forwarded") or set()
    up(project, backend, ctx)
    assert asked == []
    _with_ports(project, "web", ForwardPort(guest=80, host=8080))
    up(project, backend, ctx)
    assert asked == ["forwarded"]


def test_second_up_changes_nothing(setup) -> None:
    project, backend, ctx, _ = setup
    up(project, backend, ctx)
    calls = list(backend.calls)
    plan = plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"})
    assert not plan
    apply(plan, ctx)
    assert backend.calls == calls


def test_halt_then_destroy(setup) -> None:
    project, backend, ctx, checked = setup
    up(project, backend, ctx)
    apply(plan_halt(project.machines, observe(project, backend)), ctx)
    assert {c["state"] for c in backend.containers.values()} == {State.STOPPED}
    apply(plan_destroy(project.machines, observe(project, backend), orphans=True), ctx)
    assert backend.containers == {}
    assert checked[-1] == "unused private networks released"  # the NAT network stays, as LXD's and Docker's


def test_new_project_key_is_authorized_in_running_machines(setup) -> None:
    project, backend, ctx, _ = setup
    up(project, backend, ctx)
    ctx.project_key = "ssh-ed25519 AAAAnewkey tapers-shop"
    plan = plan_up(project.machines, observe(project, backend), ctx.project_key, {"debian/bookworm"})
    apply(plan, ctx)
    assert backend.containers["tapers-shop-web"]["authorized"] == ctx.project_key
    assert backend.record("tapers-shop-web").authorized_key == ctx.project_key


def test_failures_of_several_machines_are_all_reported(setup) -> None:
    project, backend, ctx, _ = setup

    def refuse(target, identity, timeout):
        raise SshError(f"{target.machine} never answered")

    ctx.ssh_check = refuse
    with pytest.raises(MachineFailures, match=r"2 of 2 machines failed:\n  db: db never answered\n  web: web never answered"):
        up(project, backend, ctx)


def test_addresses_differ_across_projects(setup, write_project, tmp_path: Path) -> None:
    project, backend, ctx, _ = setup
    up(project, backend, ctx)
    other_root = tmp_path / "other"
    other_root.mkdir()
    (other_root / "Taperfile.yaml").write_text(TAPERFILE.replace("name: shop", "name: blog"))
    other = open_project(explicit=other_root / "Taperfile.yaml")
    ctx2 = Context(other, backend, SilentReporter(), project_key=KEY, ssh_check=lambda *a: None)
    apply(plan_up(other.machines, observe(other, backend), KEY, {"debian/bookworm"}), ctx2)
    addresses = [backend.record(name).address for name in backend.containers]
    assert len(addresses) == 4 and len(set(addresses)) == 4


PROVISIONED = """\
version: 1
name: shop
machines:
  db:
    provision:
      - {name: schema, shell: "echo schema"}
  web:
    depends_on: [db]
    provision:
      - {name: app, shell: "echo app"}
      - {name: restart, shell: "echo restart", reboot: true}
  cache:
    provision:
      - {name: broken, shell: "exit 3"}
      - {name: after, shell: "echo after"}
"""


@pytest.fixture
def provisioned(write_project, fake_box_home):
    from tests.fakes import FakeGuest

    root = write_project({"Taperfile.yaml": PROVISIONED})
    project = open_project(explicit=root / "Taperfile.yaml")
    backend = FakeBackend()
    events: list[str] = []
    ctx = Context(
        project, backend, SilentReporter(), project_key=KEY,
        ssh_check=lambda *a: None,
        guest_factory=lambda name, ctx: FakeGuest(name, root, events),
    )
    return project, backend, ctx, events


def plan_with_steps(project, backend):
    from tapers.engine import step_fingerprints

    prints = step_fingerprints(project, project.machines)
    return plan_up(project.machines, observe(project, backend), KEY, {"debian/bookworm"}, prints)


def test_steps_run_in_order_after_dependencies_and_failures_are_recorded(provisioned) -> None:
    from tapers.errors import ProvisionError

    project, backend, ctx, events = provisioned
    with pytest.raises(ProvisionError, match=r'cache: step 1 "broken" \(shell\) failed with exit code 3'):
        apply(plan_with_steps(project, backend), ctx)
    assert events.index("db: echo schema") < events.index("web: echo app")
    assert [e for e in events if e.startswith("web")] == ["web: echo app", "web: echo restart", "web: reboot"]
    assert "cache: echo after" not in events
    db = backend.record("tapers-shop-db")
    assert set(db.provisioned) == {"schema"}
    cache = backend.record("tapers-shop-cache")
    assert cache.provision_failed == "broken" and not cache.provisioned
    assert str(plan_with_steps(project, backend)) == (
        'cache: provision step 1 "broken" (failed last time)  [reprovision]\n'
        'cache: provision step 2 "after" (not run yet)  [reprovision]'
    )


def test_a_failed_dependency_stops_the_dependent_machine(provisioned, write_project) -> None:
    from tapers.errors import MachineFailures

    project, backend, ctx, events = provisioned
    (project.root / "Taperfile.yaml").write_text(PROVISIONED.replace('shell: "echo schema"', 'shell: "exit 1"'))
    project = open_project(explicit=project.root / "Taperfile.yaml")
    ctx.project = project
    with pytest.raises(MachineFailures) as failure:
        apply(plan_with_steps(project, backend), ctx)
    assert "web: not provisioned, because `db` (which it depends on) failed" in failure.value.message
    assert not any(e.startswith("web: echo") for e in events)


BESIDE_A_PLAY = """\
version: 1
name: shop
machines:
  web:
    provision:
      - ansible: {playbook: site.yml}
  db:
    synced_folders:
      - {host: ./db-data, guest: /srv/data}
"""


def test_the_synced_folders_of_machines_started_beside_a_play_are_made_before_any_machine(
        write_project, fake_box_home, monkeypatch) -> None:
    """A play keeps out of the folders machines can write by covering them; one made while it
    runs, for a machine started beside it, would not be covered."""
    from tapers.engine import apply as executor

    root = write_project({"Taperfile.yaml": BESIDE_A_PLAY, "site.yml": "- hosts: all\n  tasks: []\n"})
    project = open_project(explicit=root / "Taperfile.yaml")
    backend = FakeBackend()
    ctx = Context(project, backend, SilentReporter(), project_key=KEY, ssh_check=lambda *a: None)
    seen: dict[str, bool] = {}
    monkeypatch.setattr(executor, "_run_machine",
                        lambda name, actions, ctx: seen.update({name: (root / "db-data").is_dir()}))
    apply(plan_with_steps(project, backend), ctx)
    assert seen == {"web": True, "db": True}
