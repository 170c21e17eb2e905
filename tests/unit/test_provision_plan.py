"""When provisioning steps run: planner cases as data, and the engine's inputs."""

from __future__ import annotations


import pytest

from tapers.backend.api import ContainerInfo, State
from tapers.engine.settings import desired_settings
from tests.fakes import make_record
from tapers.engine import machines_for_up, step_fingerprints
from tapers.errors import StateError, UsageError
from tapers.engine.observe import Observed
from tapers.engine.plan import plan_provision, plan_up
from tapers.project import open_project

KEY = "ssh-ed25519 AAAAkey tapers-shop"
TAPERFILE = """\
version: 1
name: shop
machines:
  db:
    provision:
      - name: packages
        shell: echo packages
  web:
    depends_on: [db]
    provision:
      - name: setup
        shell: {path: setup.sh}
      - shell: echo every time
        run: always
      - name: seed
        shell: echo seed
        run: never
      - file: {source: app.ini, destination: /etc/app.ini}
  tools:
    autostart: false
    depends_on: [web]
"""


@pytest.fixture
def project(write_project):
    root = write_project({"Taperfile.yaml": TAPERFILE, "setup.sh": "echo setup\n", "app.ini": "[app]\n"})
    return open_project(explicit=root / "Taperfile.yaml")


def running(project, machine: str, provisioned: dict[str, str] | None = None, failed: str | None = None) -> ContainerInfo:
    """A machine made by this tapers from the Taperfile as it is (so only its steps can differ)."""
    settings = {**desired_settings(next(m for m in project.machines if m.name == machine)), "privileged": False}
    record = make_record(machine, authorized_key=KEY, provisioned=provisioned or {}, provision_failed=failed,
                         applied=settings)
    return ContainerInfo(f"tapers-shop-{machine}", State.RUNNING, record)


def plan_for(project, observed, provision="auto", names=None) -> str:
    machines = machines_for_up(project, names)
    return str(plan_up(machines, observed, KEY, {"debian/bookworm"}, step_fingerprints(project, machines), provision))


def test_first_up_runs_every_step_but_never_ones(project) -> None:
    assert plan_for(project, Observed(), names=["web"]) == "\n".join(
        [
            "network: prepare networks (`db`, `web` will boot on the NAT network)",
            "db: create (not found)",
            "db: start (created)",
            "db: wait for ssh (started)",
            'db: provision step 1 "packages" (first up)',
            "web: create (not found)",
            "web: start (created)",
            "web: wait for ssh (started)",
            'web: provision step 1 "setup" (first up)',
            "web: provision step 2 (first up)",
            "web: provision step 4 (first up)",
            "names: update /etc/hosts (machines came, went or changed)",
        ]
    )


def test_later_up_runs_always_and_changed_steps_only(project) -> None:
    prints = step_fingerprints(project, project.machines)
    seen = Observed(
        machines={
            "db": running(project, "db", provisioned=prints["db"]),
            "web": running(project, "web", provisioned={**prints["web"], "setup": "an older fingerprint"}),
        }
    )
    assert plan_for(project, seen) == "\n".join(
        [
            'web: provision step 1 "setup" (changed since the last run)  [reprovision]',
            "web: provision step 2 (run: always)  [reprovision]",
        ]
    )
    (project.root / "app.ini").write_text("[app]\nchanged = yes\n")
    assert "web: provision step 4 (changed since the last run)  [reprovision]" in plan_for(project, seen)


def test_a_failed_step_and_those_after_it_run_again(project) -> None:
    prints = step_fingerprints(project, project.machines)
    seen = Observed(
        machines={
            "db": running(project, "db", provisioned=prints["db"]),
            "web": running(project, "web", provisioned={"setup": prints["web"]["setup"]}, failed="#2"),
        }
    )
    assert plan_for(project, seen) == "\n".join(
        ["web: provision step 2 (run: always)  [reprovision]", "web: provision step 4 (not run yet)  [reprovision]"]
    )
    seen.machines["web"] = running(project, "web", provisioned={}, failed="setup")
    assert plan_for(project, seen).startswith('web: provision step 1 "setup" (failed last time)')


def test_provision_flags(project) -> None:
    prints = step_fingerprints(project, project.machines)
    seen = Observed(machines={"db": running(project, "db", prints["db"]), "web": running(project, "web", prints["web"])})
    assert plan_for(project, seen, provision="skip") == "nothing to do"
    forced = plan_for(project, seen, provision="force")
    assert 'db: provision step 1 "packages" (--provision)' in forced
    assert "step 3" not in forced  # run: never stays out


def test_tapers_provision_with_names_includes_never_steps(project) -> None:
    seen = Observed(machines={"db": running(project, "db"), "web": running(project, "web")})
    web = [m for m in project.machines if m.name == "web"]
    assert str(plan_provision(web, seen, ["seed", "2"])) == (
        'web: provision step 2 (requested)\nweb: provision step 3 "seed" (requested)'
    )
    assert str(plan_provision(web, seen, None)).count("requested") == 3
    with pytest.raises(UsageError, match="no step named `nope`"):
        plan_provision(web, seen, ["nope"])
    stopped = Observed(machines={"web": ContainerInfo("tapers-shop-web", State.STOPPED, {})})
    with pytest.raises(StateError, match="not running"):
        plan_provision(web, stopped, None)


def test_up_of_a_machine_brings_what_it_depends_on(project) -> None:
    assert [m.name for m in machines_for_up(project, ["tools"])] == ["db", "web", "tools"]
    assert [m.name for m in machines_for_up(project, None)] == ["db", "web"]


def test_steps_recorded_by_an_older_tapers_do_not_run_again_unless_changed(project) -> None:
    """Records without inputs hold the fingerprint an older tapers computed: an upgrade
    alone re-runs no `run: once` shell or file step."""
    from tapers.engine import legacy_fingerprints
    from tapers.provision import legacy_fingerprint

    web = next(m for m in project.machines if m.name == "web")
    old = {step.key: legacy_fingerprint(step, project.root) for step in web.provision}
    seen = Observed(machines={"web": running(project, "web", provisioned=old)})
    machines = machines_for_up(project, ["web"])
    legacy = legacy_fingerprints(project, machines, seen)

    def plan() -> str:
        return str(plan_up(machines, seen, KEY, {"debian/bookworm"}, step_fingerprints(project, machines),
                           legacy=legacy_fingerprints(project, machines, seen)))

    assert legacy["web"] == old
    assert [line for line in plan().splitlines() if line.startswith("web:")] == [
        "web: provision step 2 (run: always)  [reprovision]"]
    (project.root / "setup.sh").write_text("echo changed\n")
    assert 'web: provision step 1 "setup" (changed since the last run)  [reprovision]' in plan()
