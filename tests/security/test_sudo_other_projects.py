"""Under sudo, tapers acts for the user who ran it, on their projects: another user's project
state (`.tapers/`, with the key that logs in to that user's machines) is never used, nor
handed over, even when that user's Taperfile is readable by all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapers import project_files
from tapers.errors import StateError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="other users' files: needs root")

ALICE, BOB = 4242, 4343


@pytest.fixture
def bobs_project(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("PKEXEC_UID", "DOAS_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUDO_UID", str(ALICE))
    monkeypatch.setenv("SUDO_GID", str(ALICE))
    top = Path(tempfile.mkdtemp(prefix="tapers-test-sudo-", dir="/tmp"))
    os.chmod(top, 0o755)
    project = top / "bob-shop"
    project.mkdir()
    (project / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")  # readable by all
    os.chown(project, BOB, BOB)
    try:
        yield project
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("owner", [BOB, 0], ids=["bob's", "root's"])
def test_another_user_s_project_state_is_neither_used_nor_given(bobs_project: Path, owner: int) -> None:
    state = bobs_project / ".tapers"
    state.mkdir(mode=0o700)
    (state / "id_ed25519").write_text("bob's project key\n")
    os.chmod(state / "id_ed25519", 0o600)
    for path in (state, state / "id_ed25519"):
        os.chown(path, owner, owner)
    with pytest.raises(StateError, match="not to you"):
        project_files.check_dir(state, create=False)
    with pytest.raises(StateError, match="not to you"):
        project_files.read_text(state / "id_ed25519")
    assert [(p.stat().st_uid, p.stat().st_mode & 0o777) for p in (state, state / "id_ed25519")] == \
        [(owner, 0o700), (owner, 0o600)], "bob's (or root's) project state was handed over"


def test_root_s_state_in_the_user_s_own_project_becomes_theirs(bobs_project: Path) -> None:
    """(an older tapers', or plain root's, in the project of the user who now runs sudo)"""
    os.chown(bobs_project, ALICE, ALICE)
    state = bobs_project / ".tapers"
    state.mkdir(mode=0o700)
    assert project_files.check_dir(state, create=False)
    assert state.stat().st_uid == ALICE


def test_no_state_is_made_for_the_sudo_user_in_another_user_s_project(bobs_project: Path) -> None:
    """(root could make `.tapers/` where the user can't write, and give it to them)"""
    with pytest.raises(StateError, match="project folder is"):
        project_files.check_dir(bobs_project / ".tapers", create=True)
    assert not (bobs_project / ".tapers").exists()


def test_a_state_file_with_other_names_is_not_used(bobs_project: Path, tmp_path: Path) -> None:
    """(a hard link to a root file, where protected_hardlinks is off)"""
    os.chown(bobs_project, ALICE, ALICE)
    state = bobs_project / ".tapers"
    project_files.check_dir(state, create=True)
    project_files.write(state / "inventory", "[all]\n")
    os.link(state / "inventory", bobs_project / "second-name")
    with pytest.raises(StateError, match="other names"):
        project_files.read_text(state / "inventory")


def test_the_state_folder_is_given_whole_without_following_what_is_in_it(bobs_project: Path, tmp_path: Path) -> None:
    """A root-made `.tapers/` in the user's own project becomes theirs, folders first walked
    from their descriptors: a link in it is given as a link, never followed."""
    os.chown(bobs_project, ALICE, ALICE)
    system = tmp_path / "system"
    system.mkdir()
    (system / "passwd").write_text("root's\n")
    state = bobs_project / ".tapers"
    (state / "ansible" / "roles").mkdir(parents=True, mode=0o700)
    os.chmod(state, 0o700)
    (state / "ansible" / "etc").symlink_to(system)
    os.mkfifo(state / "ansible" / "fifo")
    assert project_files.check_dir(state, create=False)
    for path in (state, state / "ansible", state / "ansible" / "roles", state / "ansible" / "fifo"):
        assert path.stat().st_uid == ALICE, path
    assert os.lstat(state / "ansible" / "etc").st_uid == ALICE
    assert system.stat().st_uid == 0 and (system / "passwd").stat().st_uid == 0
