"""Root mounts synced folders, so a Taperfile (or a person allowed to run tapers with sudo)
could hand a machine another user's files: root shares only what the person it acts for
may read (and write, unless read-only), and creates only where they may. Under sudo that
person is the user who ran sudo; as plain root, the project folder's owner."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapers.engine import machine_setup, trust
from tapers.errors import StateError
from tapers.events import SilentReporter
from tapers.project import open_project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="other users' folders: needs root")

ALICE, CAROL = 4242, 4243


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "tapers-home"))
    for name in ("SUDO_UID", "SUDO_GID", "PKEXEC_UID", "DOAS_USER"):
        monkeypatch.delenv(name, raising=False)
    top = Path(tempfile.mkdtemp(prefix="tapers-test-rights-", dir="/tmp"))  # (pytest's is root's only)
    os.chmod(top, 0o755)
    try:
        yield _homes(top)
    finally:
        shutil.rmtree(top)


def _homes(tmp_path: Path) -> dict[str, Path]:
    project = tmp_path / "alice" / "shop"
    carol = tmp_path / "carol" / "work"
    for folder, owner in ((project, ALICE), (carol, CAROL)):
        folder.mkdir(parents=True)
        os.chown(folder.parent, owner, owner)
        os.chown(folder, owner, owner)
    os.chmod(carol.parent, 0o700)  # carol's home: hers only
    (carol / "secret").write_text("carol's\n")
    return {"project": project, "carol": carol, "root": tmp_path}


def _mounts(project: Path, synced: str, privileged: bool = False) -> tuple:
    (project / "Taperfile.yaml").write_text(f"version: 1\nmachines:\n  web:\n    synced_folders: [{synced}]\n")
    loaded = open_project(project / "Taperfile.yaml")
    trust.approve(loaded, trust.shared_folders(loaded))  # (what test_trust covers: not asked here)
    return machine_setup.mounts(loaded, loaded.machines[0], 1000, 1000, privileged, SilentReporter())


def test_a_taperfile_run_by_root_cant_share_a_folder_its_owner_cant_read(places: dict[str, Path]) -> None:
    with pytest.raises(StateError, match=f"uid {ALICE}, for whom tapers shares folders here, may not read") as refused:
        _mounts(places["project"], f"{{host: {places['carol']}, guest: /w, readonly: true}}")
    assert "readonly: true" in (refused.value.hint or "")
    assert (places["carol"] / "secret").read_text() == "carol's\n"


def test_under_sudo_the_user_who_ran_sudo_is_the_one_checked(places: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(places["carol"].parent, 0o755)
    os.chmod(places["carol"], 0o755)  # readable by all, writable by carol only
    monkeypatch.setenv("SUDO_UID", str(ALICE))
    monkeypatch.setenv("SUDO_GID", str(ALICE))
    with pytest.raises(StateError, match="may not read and write it"):
        _mounts(places["project"], f"{{host: {places['carol']}, guest: /w}}")
    shared = _mounts(places["project"], f"{{host: {places['carol']}, guest: /w, readonly: true}}")
    assert any(m.target == "/w" and m.readonly for m in shared)
    # The project folder (alice's) is hers to share, as is a folder she owns.
    assert any(m.target == "/tapers" and not m.readonly for m in _mounts(places["project"], "{host: ., guest: /tapers}"))


def test_a_folder_to_create_must_be_the_person_s_to_make(places: dict[str, Path]) -> None:
    wanted = places["carol"] / "new"
    os.chmod(places["carol"].parent, 0o755)
    with pytest.raises(StateError, match="may not create it"):
        _mounts(places["project"], f"{{host: {wanted}, guest: /n}}")
    assert not wanted.exists()
    mine = places["project"].parent / "cache"  # in alice's home: hers to make
    assert any(m.target == "/n" for m in _mounts(places["project"], f"{{host: {mine}, guest: /n}}"))
    assert mine.is_dir() and mine.stat().st_uid == ALICE


def test_root_s_own_project_run_by_root_shares_what_root_chose(places: dict[str, Path]) -> None:
    project = places["root"] / "root-project"
    project.mkdir()
    assert any(m.target == "/w" for m in _mounts(project, f"{{host: {places['carol']}, guest: /w, readonly: true}}"))


def test_as_plain_root_the_project_s_own_folders_are_its_owner_s(places: dict[str, Path]) -> None:
    """A project folder of alice's somewhere she can't pass (root put it there): what is in
    it is hers, and shared; what is outside it is checked."""
    hidden = places["root"] / "root-only"
    hidden.mkdir(mode=0o700)
    project = hidden / "shop"
    (project / "data").mkdir(parents=True)
    for path in (project, project / "data"):
        os.chown(path, ALICE, ALICE)
    assert any(m.target == "/d" for m in _mounts(project, "{host: ./data, guest: /d}"))
    with pytest.raises(StateError, match="may not read"):
        _mounts(project, f"{{host: {places['carol']}, guest: /w, readonly: true}}")


def test_what_the_machine_writes_in_someone_else_s_open_folder_is_the_person_s(places: dict[str, Path],
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """carol left her folder open to all: alice may share it, but through the machine she
    writes there as herself, never as carol (carol's 0600 files stay carol's)."""
    os.chmod(places["carol"].parent, 0o755)
    os.chmod(places["carol"], 0o777)
    for sudo in (False, True):
        if sudo:
            monkeypatch.setenv("SUDO_UID", str(ALICE))
            monkeypatch.setenv("SUDO_GID", str(ALICE))
        shared = [m for m in _mounts(places["project"], f"{{host: {places['carol']}, guest: /w}}") if m.target == "/w"]
        assert [m.idmap for m in shared] == [(1000, ALICE, 1000, ALICE)], sudo
        own = [m for m in _mounts(places["project"], "{host: ., guest: /tapers}") if m.target == "/tapers"]
        assert [m.idmap for m in own] == [(1000, ALICE, 1000, ALICE)], sudo
    assert places["carol"].stat().st_uid == CAROL and (places["carol"] / "secret").read_text() == "carol's\n"


def test_under_sudo_a_step_file_the_user_may_not_read_is_not_given_to_the_machine(
        places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """`file: {source: /home/carol/work/secret}` under `sudo tapers up`: root could read it,
    and the machine would hand it to the user who ran sudo."""
    from tapers.errors import ProvisionError
    from tapers.provision.api import step_file

    monkeypatch.setenv("SUDO_UID", str(ALICE))
    monkeypatch.setenv("SUDO_GID", str(ALICE))
    with pytest.raises(ProvisionError, match=f"uid {ALICE}, for whom tapers runs here, may not read it"):
        step_file(places["project"], str(places["carol"] / "secret"), "the source")
    (places["project"] / "app.conf").write_text("x=1\n")
    os.chmod(places["project"] / "app.conf", 0o600)  # hers, in her project: fine
    os.chown(places["project"] / "app.conf", ALICE, ALICE)
    assert step_file(places["project"], "app.conf", "the source") == places["project"] / "app.conf"
    os.chmod(places["carol"].parent, 0o755)
    os.chmod(places["carol"] / "secret", 0o644)  # carol's, but open to all: fine
    assert step_file(places["project"], str(places["carol"] / "secret"), "the source") == places["carol"] / "secret"


def test_a_folder_the_person_reaches_only_through_another_group_is_refused(places: dict[str, Path],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine is the person's user and main group, none of their other groups: a team
    folder open to a group of theirs would fail in the machine (permission denied), so it
    is refused, saying why."""
    import grp
    import pwd
    import subprocess

    name, group = f"tp-rights-{os.getpid()}", f"tp-team-{os.getpid()}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "-G", group, name], check=True)
        try:
            person, team = pwd.getpwnam(name), grp.getgrnam(group)
            team_folder = places["root"] / "team"
            team_folder.mkdir()
            os.chown(team_folder, CAROL, team.gr_gid)
            os.chmod(team_folder, 0o770)
            os.chown(places["project"], person.pw_uid, person.pw_gid)
            monkeypatch.setenv("SUDO_UID", str(person.pw_uid))
            monkeypatch.setenv("SUDO_GID", str(person.pw_gid))
            with pytest.raises(StateError, match="may not read and write it as their user or main group"):
                _mounts(places["project"], f"{{host: {team_folder}, guest: /team}}")
            assert list(team_folder.iterdir()) == []
            own = team_folder / "own"  # theirs, in the team's folder: the way there is walked on the host
            own.mkdir(mode=0o700)
            os.chown(own, person.pw_uid, person.pw_gid)
            assert any(m.target == "/own" for m in _mounts(places["project"], f"{{host: {own}, guest: /own}}"))
        finally:
            subprocess.run(["userdel", name], check=True)
    finally:
        subprocess.run(["groupdel", group], capture_output=True)


class _Sftp:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def stat(self, remote: str):
        import paramiko

        self.calls.append(f"stat {remote}")
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = 0o100644
        return attrs

    def __getattr__(self, name: str):
        raise AssertionError(f"nothing more is read from the machine ({name})")


class _Session:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def sftp(self) -> _Sftp:
        return _Sftp(self.calls)

    def __getattr__(self, name: str):
        raise AssertionError(f"the machine is not used ({name})")


def test_under_sudo_tapers_cp_copies_only_what_the_user_could(places: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`sudo tapers cp /root/notes web:` would hand root's file to the machine (and so to the
    user); `sudo tapers cp web:/x /etc/profile.d/` would put the machine's file where root
    runs it."""
    from tapers.engine import transfer
    from tapers.errors import UsageError

    monkeypatch.setenv("SUDO_UID", str(ALICE))
    monkeypatch.setenv("SUDO_GID", str(ALICE))
    session = _Session()
    with pytest.raises(UsageError, match="you may not read it"):
        transfer.copy_in(session, "/home/u", places["carol"] / "secret", "/tmp/")  # type: ignore[arg-type]
    closed = places["root"] / "etc"
    closed.mkdir()
    with pytest.raises(UsageError, match="you may not write there"):
        transfer.copy_out(session, "/tmp/x", closed)  # type: ignore[arg-type]
    assert session.calls == ["stat /tmp/x"] and list(closed.iterdir()) == []


def test_under_sudo_a_file_step_copies_no_file_the_user_could_not_read(places: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of hers, holding a file she may not read (root's, 0600): not copied."""
    from tapers.provision.api import StepFailed
    from tapers.provision.files import PROVISIONER
    from tapers.taperfile.machine import Step
    from tests.fakes import FakeGuest

    monkeypatch.setenv("SUDO_UID", str(ALICE))
    monkeypatch.setenv("SUDO_GID", str(ALICE))
    conf = places["project"] / "conf"
    conf.mkdir()
    os.chown(conf, ALICE, ALICE)
    (conf / "app.ini").write_text("x=1\n")
    (conf / "root-only").write_text("root's\n")
    os.chmod(conf / "root-only", 0o600)
    guest = FakeGuest("web", places["project"], [])
    step = Step(1, None, "file", "once", False, {"source": "conf", "destination": "/etc/app"})
    with pytest.raises(StepFailed, match="root-only: uid .* may not read it; not copied"):
        PROVISIONER.run(step, guest)
    assert not any(data == b"root's\n" for data in guest.files.values())


def test_as_plain_root_a_step_file_in_the_owner_s_project_is_theirs_wherever_the_project_is(
        places: dict[str, Path]) -> None:
    """alice's project somewhere she can't pass (root put it there): its files are hers to
    give to her machines; one in it she couldn't read (root's, 0600) is not."""
    from tapers.errors import ProvisionError
    from tapers.provision.api import step_file

    hidden = places["root"] / "root-only"
    hidden.mkdir(mode=0o700)
    project = hidden / "shop"
    project.mkdir()
    os.chown(project, ALICE, ALICE)
    (project / "site.yml").write_text("- hosts: all\n")
    os.chown(project / "site.yml", ALICE, ALICE)
    (project / "root.key").write_text("root's\n")
    os.chmod(project / "root.key", 0o600)
    assert step_file(project, "site.yml", "the playbook") == project / "site.yml"
    with pytest.raises(ProvisionError, match=f"uid {ALICE}, for whom tapers runs here, may not read it"):
        step_file(project, "root.key", "the source")
