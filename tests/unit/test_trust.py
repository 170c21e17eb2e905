"""`tapers trust` for ansible plays: a play runs on this host only as approved, by the
fingerprint of everything it reads; a change anywhere in that (a machine writing a role in
the project folder) asks again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.engine import trust
from tapers.errors import TriggerError
from tapers.project import open_project

TAPERFILE = """\
version: 1
machines:
  web:
    provision:
      - ansible: {playbook: site.yml, extra_vars: {port: 80}}
      - shell: {inline: "true"}
"""
PLAYBOOK = "- hosts: all\n  roles: [app]\n"


def _project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "project"
    (folder / "roles" / "app" / "tasks").mkdir(parents=True)
    (folder / "roles" / "app" / "tasks" / "main.yml").write_text("- ping:\n")
    (folder / "site.yml").write_text(PLAYBOOK)
    (folder / "Taperfile.yaml").write_text(TAPERFILE)
    return folder


def test_a_play_needs_approval_and_any_change_to_what_it_reads_asks_again(tmp_path: Path, monkeypatch) -> None:
    folder = _project(tmp_path, monkeypatch)
    project = open_project(folder / "Taperfile.yaml")
    (play,) = trust.plays(project)  # the shell step runs in the machine: nothing to approve
    with pytest.raises(TriggerError) as refused:
        trust.require(project, [play])
    message = refused.value.message
    assert "`web` step 1 (ansible): ansible-playbook site.yml" in message
    assert "roles/app/tasks/main.yml" in message and "site.yml" in message
    assert "with extra_vars: {'port': 80}" in message  # the settings, shown as approved
    assert "tapers trust" in (refused.value.hint or "")

    trust.approve(project, trust.plays(project))
    trust.require(project, trust.plays(project))
    assert (tmp_path / "home" / trust.TRUSTED).stat().st_mode & 0o777 == 0o600

    # what a machine could write through /tapers: a role's tasks
    (folder / "roles" / "app" / "tasks" / "main.yml").write_text("- command: touch /tmp/owned\n  delegate_to: localhost\n")
    with pytest.raises(TriggerError, match="haven't approved"):
        trust.require(project, trust.plays(project))
    (folder / "roles" / "app" / "tasks" / "main.yml").write_text("- ping:\n")
    trust.require(project, trust.plays(project))  # back as approved

    # and a new file the play picks up on its own (group_vars beside the playbook)
    (folder / "group_vars").mkdir()
    (folder / "group_vars" / "all.yml").write_text("ansible_connection: local\n")
    with pytest.raises(TriggerError):
        trust.require(project, trust.plays(project))


def test_a_changed_setting_asks_again(tmp_path: Path, monkeypatch) -> None:
    folder = _project(tmp_path, monkeypatch)
    project = open_project(folder / "Taperfile.yaml")
    trust.approve(project, trust.plays(project))
    (folder / "Taperfile.yaml").write_text(TAPERFILE.replace("port: 80", "port: 8080"))
    changed = open_project(folder / "Taperfile.yaml")
    with pytest.raises(TriggerError):
        trust.require(changed, trust.plays(changed))


def test_approvals_are_per_person(tmp_path: Path, monkeypatch) -> None:
    folder = _project(tmp_path, monkeypatch)
    project = open_project(folder / "Taperfile.yaml")
    played = trust.plays(project)
    trust.approve(project, played)
    monkeypatch.setattr("tapers.project_files.invoker", lambda: (12345, 12345))
    with pytest.raises(TriggerError):
        trust.require(project, played)


def test_a_play_file_in_a_writable_synced_folder_outside_the_project_is_refused(tmp_path: Path, monkeypatch) -> None:
    from tapers.errors import ProvisionError

    folder = _project(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    (shared / "app" / "tasks").mkdir(parents=True)
    (shared / "app" / "tasks" / "main.yml").write_text("- ping:\n")
    (folder / "ansible.cfg").write_text(f"[defaults]\nroles_path = {shared}\n")
    (folder / "roles" / "app" / "tasks" / "main.yml").unlink()
    (folder / "roles" / "app" / "tasks").rmdir()
    (folder / "roles" / "app").rmdir()
    taperfile = TAPERFILE.replace("    provision:", f"    synced_folders: [{{host: {shared}, guest: /shared}}]\n    provision:")
    (folder / "Taperfile.yaml").write_text(taperfile)
    project = open_project(folder / "Taperfile.yaml")
    (play,) = trust.plays(project)
    with pytest.raises(ProvisionError, match="reads or runs .*shared.* is a synced folder machines can write"):
        trust.require_out_of_reach(project, play)
    (folder / "Taperfile.yaml").write_text(taperfile.replace("guest: /shared}", "guest: /shared, readonly: true}"))
    project = open_project(folder / "Taperfile.yaml")
    trust.require_out_of_reach(project, trust.plays(project)[0])  # read-only in the machines: fine


@pytest.mark.parametrize("how", ["callback_plugins", "vault_password_file", "ssh_executable", "the step's vault file"])
def test_what_a_play_runs_from_a_writable_synced_folder_outside_the_project_is_refused(
        how: str, tmp_path: Path, monkeypatch) -> None:
    """ansible-playbook loads plugins and runs the vault password program and ssh from where
    they are: in a folder machines can write, a machine would change them after approval."""
    from tapers.errors import ProvisionError

    folder = _project(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "pw.sh").write_text("#!/bin/sh\necho secret\n")
    settings = {"callback_plugins": f"[defaults]\ncallback_plugins = {shared}\n",
                "vault_password_file": f"[defaults]\nvault_password_file = {shared}/pw.sh\n",
                "ssh_executable": f"[ssh_connection]\nssh_executable = {shared}/ssh\n"}
    step = "{playbook: site.yml, extra_vars: {port: 80}}"
    if how in settings:
        (folder / "ansible.cfg").write_text(settings[how])
    else:
        step = f"{{playbook: site.yml, vault_password_file: {shared}/pw.sh}}"
    taperfile = (f"version: 1\nmachines:\n  web:\n    synced_folders: [{{host: {shared}, guest: /shared}}]\n"
                 f"    provision:\n      - ansible: {step}\n")
    (folder / "Taperfile.yaml").write_text(taperfile)
    project = open_project(folder / "Taperfile.yaml")
    (play,) = trust.plays(project)
    with pytest.raises(ProvisionError, match="reads or runs .*shared.* is a synced folder machines can write"):
        trust.require_out_of_reach(project, play)
    (folder / "Taperfile.yaml").write_text(taperfile.replace("guest: /shared}", "guest: /shared, readonly: true}"))
    project = open_project(folder / "Taperfile.yaml")
    trust.require_out_of_reach(project, trust.plays(project)[0])  # read-only in the machines: fine


class _Asked:
    def __init__(self, answer: bool, terminal: bool = True) -> None:
        self.answer, self.terminal, self.shown = answer, terminal, []

    def warn(self, text: str) -> None:
        self.shown.append(text)

    def confirm(self, question: str, refusal: str, flag: str) -> None:
        from tapers.errors import TapersError

        if not self.answer:
            raise TapersError(refusal, hint=f"pass {flag}")

    def can_ask(self) -> bool:
        return self.terminal


def test_on_a_terminal_the_person_is_shown_what_runs_and_asked(tmp_path: Path, monkeypatch) -> None:
    from tapers.errors import TapersError

    folder = _project(tmp_path, monkeypatch)
    project = open_project(folder / "Taperfile.yaml")
    with pytest.raises(TriggerError, match="haven't approved"):  # no terminal: refused, said
        trust.require(project, trust.plays(project), _Asked(answer=True, terminal=False))
    no = _Asked(answer=False)
    with pytest.raises(TapersError, match="nothing approved, nothing done"):
        trust.require(project, trust.plays(project), no)
    assert "ansible-playbook site.yml" in no.shown[0]
    assert not trust.approved(project)
    trust.require(project, trust.plays(project), _Asked(answer=True))  # yes: approved, and kept
    trust.require(project, trust.plays(project))


def test_a_synced_folder_inside_dot_tapers_is_refused(tmp_path: Path, monkeypatch) -> None:
    """`.tapers/` holds the project key: no machine gets it, or a folder of it, as a synced folder."""
    from tapers.engine import machine_setup
    from tapers.errors import StateError
    from tapers.events import SilentReporter

    folder = _project(tmp_path, monkeypatch)
    (folder / ".tapers" / "logs").mkdir(parents=True)
    (folder / "Taperfile.yaml").write_text(TAPERFILE.replace(
        "    provision:", "    synced_folders: [{host: .tapers/logs, guest: /logs}]\n    provision:"))
    project = open_project(folder / "Taperfile.yaml")
    with pytest.raises(StateError, match="is in the project's .tapers/"):
        machine_setup.mounts(project, project.machines[0], 1000, 1000, False, SilentReporter())
    (folder / "Taperfile.yaml").write_text(TAPERFILE)  # the project folder itself: fine, `.tapers/` covered
    project = open_project(folder / "Taperfile.yaml")
    mounts = machine_setup.mounts(project, project.machines[0], 1000, 1000, False, SilentReporter())
    assert [(m.target, m.readonly) for m in mounts][-1] == ("/tapers/.tapers", True)


def test_a_new_approval_replaces_the_last_one_of_the_same_play(tmp_path: Path, monkeypatch) -> None:
    """Approved on the prompt after an edit: the version before is no longer approved (a
    machine putting it back, say from before a fix, is asked about again)."""
    folder = _project(tmp_path, monkeypatch)
    project = open_project(folder / "Taperfile.yaml")
    trust.require(project, trust.plays(project), _Asked(answer=True))
    (folder / "site.yml").write_text(PLAYBOOK + "  tags: [fixed]\n")
    trust.require(project, trust.plays(project), _Asked(answer=True))
    (folder / "site.yml").write_text(PLAYBOOK)
    with pytest.raises(TriggerError):
        trust.require(project, trust.plays(project))


def test_approvals_kept_by_an_older_tapers_still_count(tmp_path: Path, monkeypatch) -> None:
    import json

    folder = _project(tmp_path, monkeypatch)
    project = open_project(folder / "Taperfile.yaml")
    (play,) = trust.plays(project)
    store = tmp_path / "home" / trust.TRUSTED
    store.parent.mkdir(mode=0o700)
    store.write_text(json.dumps({trust._key(project): [play.digest]}))
    store.chmod(0o600)
    trust.require(project, [play])


def test_a_folder_outside_the_project_that_machines_may_write_needs_approval(tmp_path: Path, monkeypatch) -> None:
    """`~/bin` shared writable: a machine could put a `sudo` there that the person runs next.
    Read-only, or inside the project, it needs none."""
    from tapers.engine import check_steps
    from tapers.engine.plan import Action, Kind, Plan

    folder = _project(tmp_path, monkeypatch)
    outside = tmp_path / "bin"
    outside.mkdir()
    (folder / "Taperfile.yaml").write_text(
        f"version: 1\nmachines:\n  web:\n    synced_folders:\n      - {{host: {outside}, guest: /b}}\n"
        "      - {host: ./src, guest: /src}\n")
    project = open_project(folder / "Taperfile.yaml")
    plan = Plan((Action(Kind.CREATE, "web", "not created"),))
    with pytest.raises(TriggerError, match="haven't approved") as refused:
        check_steps(plan, project)
    assert f"`web` may write {outside} on this host (at /b)" in refused.value.message
    assert "/src" not in refused.value.message
    with pytest.raises(TriggerError, match="haven't approved"):  # a machine made before approvals, started
        check_steps(Plan((Action(Kind.START, "web", "stopped"),)), project)
    trust.approve(project, trust.shared_folders(project))
    check_steps(plan, project)
    check_steps(Plan((Action(Kind.START, "web", "stopped"),)), project)
    (folder / "Taperfile.yaml").write_text(
        f"version: 1\nmachines:\n  web:\n    synced_folders: [{{host: {outside}, guest: /b, readonly: true}}]\n")
    check_steps(plan, open_project(folder / "Taperfile.yaml"))


def test_a_link_in_the_project_that_now_leads_outside_is_not_mounted(tmp_path: Path, monkeypatch) -> None:
    """Planned, `./data` was the project's; a machine (which writes the project folder) made
    it a link to `~/bin` before the mounts were made: they check the path they mount."""
    from tapers.engine import check_steps, machine_setup
    from tapers.engine.plan import Action, Kind, Plan
    from tapers.events import SilentReporter

    folder = _project(tmp_path, monkeypatch)
    outside = tmp_path / "bin"
    outside.mkdir()
    (folder / "data").mkdir()
    (folder / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web:\n    synced_folders: [{host: ./data, guest: /d}]\n")
    project = open_project(folder / "Taperfile.yaml")
    check_steps(Plan((Action(Kind.CREATE, "web", "not created"),)), project)  # nothing to approve
    (folder / "data").rmdir()
    (folder / "data").symlink_to(outside)
    with pytest.raises(TriggerError, match=f"may write {outside} on this host.*not mounted"):
        machine_setup.mounts(project, project.machines[0], 1000, 1000, False, SilentReporter())
    assert list(outside.iterdir()) == []


def test_an_unapproved_folder_outside_the_project_is_not_even_created(tmp_path: Path, monkeypatch) -> None:
    from tapers.engine import machine_setup
    from tapers.events import SilentReporter

    folder = _project(tmp_path, monkeypatch)
    wanted = tmp_path / "elsewhere" / "cache"
    (folder / "Taperfile.yaml").write_text(
        f"version: 1\nmachines:\n  web:\n    synced_folders: [{{host: {wanted}, guest: /c}}]\n")
    project = open_project(folder / "Taperfile.yaml")
    with pytest.raises(TriggerError, match="haven't approved"):
        machine_setup.host_folders(project, project.machines[0], SilentReporter())
    assert not (tmp_path / "elsewhere").exists()
    trust.approve(project, trust.shared_folders(project))
    assert wanted in machine_setup.host_folders(project, project.machines[0], SilentReporter())  # (after the project)
    assert wanted.is_dir()


def test_paths_ansible_could_not_make_do_not_break_the_check(tmp_path: Path, monkeypatch) -> None:
    """`~nobody-here`, a NUL, a link to itself (a guest can make one in the project): no path,
    nothing to refuse, and no crash (the play says so itself when it runs)."""
    folder = _project(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    shared.mkdir()
    (folder / "loop").symlink_to("loop")
    (folder / "ansible.cfg").write_text("[defaults]\nroles_path = ~no-such-user-here/roles:./loop/roles\n"
                                        "library = ./lo\x00op\n")
    (folder / "Taperfile.yaml").write_text(
        f"version: 1\nmachines:\n  web:\n    synced_folders: [{{host: {shared}, guest: /shared}}]\n"
        "    provision:\n      - ansible: {playbook: site.yml, vault_password_file: ~no-such-user-here/pw}\n")
    project = open_project(folder / "Taperfile.yaml")
    trust.require_out_of_reach(project, trust.plays(project)[0])


def test_a_synced_folder_that_is_a_link_loop_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    """A machine can make one in the project: every command would end in a traceback."""
    from tapers.errors import StateError, TaperfileError

    folder = _project(tmp_path, monkeypatch)
    (folder / "data").symlink_to("data")
    (folder / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web:\n    synced_folders: [{host: data, guest: /d}]\n")
    with pytest.raises(TaperfileError, match="`data` has no real path"):
        open_project(folder / "Taperfile.yaml")
    (folder / "data").unlink()
    (folder / "data").mkdir()
    project = open_project(folder / "Taperfile.yaml")  # made a loop after it was read
    (folder / "data").rmdir()
    (folder / "data").symlink_to("data")
    with pytest.raises(StateError, match="the synced folder `data` has no real path"):
        trust.shared_folders(project)
