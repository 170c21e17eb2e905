"""A trigger's host command is the Taperfile's code: under sudo it runs as the user who ran
sudo, never as root (as ansible-playbook does)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tapers.engine import triggers, trust
from tapers.events import SilentReporter
from tapers.project import open_project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
DEVELOPER = 4242


@pytest.mark.parametrize("run", ['"id -u > ran-as"', "{path: who.sh}"])
def test_under_sudo_a_host_trigger_runs_as_the_user_who_ran_sudo(monkeypatch, run: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tapers-trigger-test-", dir="/var/tmp"))
    try:
        (folder / "who.sh").write_text("#!/bin/sh\nid -u > ran-as\n")
        (folder / "Taperfile.yaml").write_text(
            f"version: 1\nmachines:\n  db:\n    triggers:\n      - {{after: up, run: {run}}}\n")
        os.chown(folder, DEVELOPER, DEVELOPER)  # the developer's project, where the output goes
        monkeypatch.setenv("TAPERS_HOME", str(folder / ".home"))
        monkeypatch.setenv("SUDO_UID", str(DEVELOPER))
        monkeypatch.setenv("SUDO_GID", str(DEVELOPER))
        project = open_project(folder / "Taperfile.yaml")
        trust.approve(project, triggers.host_commands(project))
        (db,) = project.machines
        triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
        assert (folder / "ran-as").read_text() == f"{DEVELOPER}\n"
        assert (folder / "ran-as").stat().st_uid == DEVELOPER
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("variable", ["PKEXEC_UID", "DOAS_USER"])
def test_under_doas_or_pkexec_a_host_trigger_runs_as_the_user_who_ran_it(monkeypatch, variable: str) -> None:
    """doas and pkexec say who ran them in their own way; host code still never runs as root."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="tapers-trigger-test-", dir="/var/tmp"))
    try:
        (folder / "Taperfile.yaml").write_text(
            "version: 1\nmachines:\n  db:\n    triggers:\n      - {after: up, run: \"id -u > ran-as\"}\n")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        monkeypatch.setenv("TAPERS_HOME", str(folder / ".home"))
        for name in ("SUDO_UID", "SUDO_GID", "PKEXEC_UID", "DOAS_USER"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(variable, str(nobody.pw_uid) if variable == "PKEXEC_UID" else "nobody")
        project = open_project(folder / "Taperfile.yaml")
        trust.approve(project, triggers.host_commands(project))
        (db,) = project.machines
        triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
        assert (folder / "ran-as").read_text() == f"{nobody.pw_uid}\n"
    finally:
        shutil.rmtree(folder)


def test_under_doas_for_a_user_with_no_account_nothing_runs_as_root(monkeypatch) -> None:
    from tapers import project_files
    from tapers.errors import StateError

    for name in ("SUDO_UID", "SUDO_GID", "PKEXEC_UID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOAS_USER", "no-such-user-here")
    with pytest.raises(StateError, match="has no account here"):
        project_files.invoker()


@pytest.mark.parametrize("variable", ["PKEXEC_UID", "DOAS_USER"])
def test_a_sudo_variable_passed_through_doas_or_pkexec_does_not_say_who_runs_tapers(monkeypatch, tmp_path,
                                                                                     variable: str) -> None:
    """doas (with keepenv) passes on the caller's environment: a SUDO_UID set there names
    someone else than the user who ran doas. Neither is believed; nothing is made or run."""
    import pwd

    from tapers import project_files
    from tapers.errors import StateError

    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("SUDO_UID", "0")
    monkeypatch.setenv("SUDO_GID", "0")
    monkeypatch.delenv("PKEXEC_UID", raising=False)
    monkeypatch.delenv("DOAS_USER", raising=False)
    monkeypatch.setenv(variable, str(nobody.pw_uid) if variable == "PKEXEC_UID" else "nobody")
    with pytest.raises(StateError, match="two different users"):
        project_files.invoker()
    monkeypatch.setenv("SUDO_UID", str(nobody.pw_uid))  # the same user: sudo inside doas
    monkeypatch.setenv("SUDO_GID", str(nobody.pw_gid))
    assert project_files.invoker() == (nobody.pw_uid, nobody.pw_gid)


@pytest.mark.parametrize("uid, gid", [("1000", ""), ("1000", None), ("²", "1000"), ("x", "1000")])
def test_sudo_variables_that_are_not_ids_are_refused_not_read_as_root(monkeypatch, uid, gid) -> None:
    """sudo sets both SUDO_UID and SUDO_GID, as numbers; anything else came from elsewhere, and
    falling back to root (whom host code must never run as) would be the worst guess."""
    from tapers import project_files
    from tapers.errors import StateError

    for name in ("PKEXEC_UID", "DOAS_USER", "SUDO_GID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUDO_UID", uid)
    if gid is not None:
        monkeypatch.setenv("SUDO_GID", gid)
    with pytest.raises(StateError, match="not both ids"):
        project_files.invoker()


def test_under_doas_the_group_is_the_account_s_not_a_sudo_gid_passed_through(monkeypatch) -> None:
    import pwd

    from tapers import project_files

    nobody = pwd.getpwnam("nobody")
    monkeypatch.delenv("PKEXEC_UID", raising=False)
    monkeypatch.setenv("DOAS_USER", "nobody")
    monkeypatch.setenv("SUDO_UID", str(nobody.pw_uid))
    monkeypatch.setenv("SUDO_GID", "0")
    assert project_files.invoker() == (nobody.pw_uid, nobody.pw_gid)


def test_under_sudo_a_trigger_script_s_copy_is_theirs_its_folder_root_s(monkeypatch) -> None:
    """Root gave the copy's folder, then the copy by name: the user could swap in a link to
    any file (/etc/shadow) between the two, and root gave them that. The folder stays root's
    (nothing in it can change), the copy alone is theirs, given through its descriptor."""
    folder = Path(tempfile.mkdtemp(prefix="tapers-trigger-test-", dir="/var/tmp"))
    try:
        (folder / "look.sh").write_text('#!/bin/sh\nd=$(dirname "$0")\nstat -c "%u %a" "$d" > seen\n'
                                        'stat -c "%u %a" "$0" >> seen\n'
                                        'ln -s /etc/hostname "$d/planted" 2>/dev/null && echo planted >> seen\ntrue\n')
        (folder / "Taperfile.yaml").write_text(
            "version: 1\nmachines:\n  db:\n    triggers:\n      - {after: up, run: {path: look.sh}}\n")
        os.chown(folder, DEVELOPER, DEVELOPER)
        monkeypatch.setenv("TAPERS_HOME", str(folder / ".home"))
        monkeypatch.setenv("SUDO_UID", str(DEVELOPER))
        monkeypatch.setenv("SUDO_GID", str(DEVELOPER))
        monkeypatch.setenv("TMPDIR", str(folder))  # (kept by sudo: the user's folder; not used)
        project = open_project(folder / "Taperfile.yaml")
        trust.approve(project, triggers.host_commands(project))
        (db,) = project.machines
        triggers.run_on_host(project, "db", db.triggers[0], "up", SilentReporter())
        assert (folder / "seen").read_text() == f"0 711\n{DEVELOPER} 700\n"
        assert not [p for p in folder.iterdir() if p.name.startswith("tapers-trigger-")]
    finally:
        shutil.rmtree(folder)
