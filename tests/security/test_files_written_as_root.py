"""Files tapers writes as root: into a root filesystem it doesn't trust (a box, a machine's
writable layer) and into a project folder it doesn't trust. Planted links, `..` and
pre-made files must never redirect a write; each test checks the victim is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapers import project_files
from tapers.errors import StateError, TapersError
from tapers.rootfs import Root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A host folder an attacker would like tapers to write into."""
    folder = tmp_path / "host-etc"
    folder.mkdir()
    (folder / "shadow").write_text("root:secret\n")
    return folder


def _unchanged(victim: Path) -> None:
    assert sorted(p.name for p in victim.iterdir()) == ["shadow"]
    assert (victim / "shadow").read_text() == "root:secret\n"


# -- a root filesystem ------------------------------------------------------------------


@pytest.mark.parametrize("link", ["etc", "etc/ssh"])
def test_a_folder_that_is_a_link_out_of_the_root_is_refused(tmp_path: Path, victim: Path, link: str) -> None:
    root = tmp_path / "rootfs"
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, root / link)  # absolute: a guest path, but on the host it leads out
    with Root(root, "box `x`") as box, pytest.raises(TapersError) as refused:
        box.write("/etc/ssh/sshd_config.d/tapers.conf", b"x")
    assert "refused" in refused.value.message
    _unchanged(victim)


def test_a_file_that_is_a_link_is_replaced_not_written_through(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(victim / "shadow", root / "etc/hosts")
    with Root(root, "box `x`") as box:
        box.write("/etc/hosts", b"127.0.0.1 localhost\n")
    assert (root / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n" and not (root / "etc/hosts").is_symlink()
    _unchanged(victim)


def test_a_planted_temporary_name_is_never_reused(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    for name in (".hosts.tapers-tmp", "hosts.tapers-tmp", ".hosts.tmp"):
        os.symlink(victim / "shadow", root / "etc" / name)
    with Root(root, "box `x`") as box:
        box.write("/etc/hosts", b"x\n")
    _unchanged(victim)


@pytest.mark.parametrize("path", ["/../../etc/shadow", "/home/../../x", "/etc/\nx", "/"])
def test_paths_that_climb_out_or_carry_control_characters_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    with Root(root, "box `x`") as box, pytest.raises(TapersError):
        box.write(path, b"x")
    assert list(root.iterdir()) == []


def test_reading_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(victim / "shadow", root / "etc/passwd")
    with Root(root, "box `x`") as box, pytest.raises(TapersError):
        box.read("/etc/passwd")


# -- a project folder -------------------------------------------------------------------


def test_state_folder_that_is_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    os.symlink(victim, tmp_path / ".tapers")
    with pytest.raises(StateError) as refused:
        project_files.check_dir(tmp_path / ".tapers", create=True)
    assert "symbolic link" in refused.value.message
    _unchanged(victim)


def test_state_folder_of_someone_else_or_open_to_others_is_refused(tmp_path: Path) -> None:
    state = tmp_path / ".tapers"
    state.mkdir()
    os.chown(state, 4242, 4242)
    with pytest.raises(StateError) as refused:
        project_files.check_dir(state, create=True)
    assert "uid 4242" in refused.value.message and "chown" in (refused.value.hint or "")
    os.chown(state, 0, 0)
    os.chmod(state, 0o777)
    with pytest.raises(StateError) as refused:
        project_files.check_dir(state, create=True)
    assert "mode 777" in refused.value.message


def test_state_folder_is_made_private_and_belongs_to_the_sudo_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_UID", "4242")
    monkeypatch.setenv("SUDO_GID", "4343")
    os.chown(tmp_path, 4242, 4343)  # (the sudo user's project)
    state = tmp_path / ".tapers"
    project_files.check_dir(state, create=True)
    project_files.write(state / "ssh_config", "Host web\n", 0o644)
    for path in (state, state / "ssh_config"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4343)
    assert state.stat().st_mode & 0o777 == 0o700


def test_writes_in_the_state_folder_never_follow_a_planted_link(tmp_path: Path, victim: Path) -> None:
    state = tmp_path / ".tapers"
    project_files.check_dir(state, create=True)
    os.symlink(victim / "shadow", state / "inventory")
    for name in ("id_ed25519.tmp", ".id_ed25519.tmp", "taperfile.json.tmp"):
        os.symlink(victim / "shadow", state / name)
    project_files.write(state / "inventory", "[all]\n", 0o644)
    project_files.write(state / "id_ed25519", b"PRIVATE", 0o600)
    assert (state / "inventory").read_text() == "[all]\n"
    assert (state / "id_ed25519").stat().st_mode & 0o777 == 0o600
    _unchanged(victim)


def test_a_new_file_is_never_opened_through_a_link(tmp_path: Path, victim: Path) -> None:
    os.symlink(victim / "shadow", tmp_path / "run.log")
    with pytest.raises(FileExistsError):
        project_files.create(tmp_path / "run.log")
    _unchanged(victim)


def test_files_of_someone_else_are_not_read(tmp_path: Path, victim: Path) -> None:
    state = tmp_path / ".tapers"
    project_files.check_dir(state, create=True)
    (state / "taperfile.json").write_text("{}")
    os.chown(state / "taperfile.json", 4242, 4242)
    with pytest.raises(StateError):
        project_files.read_text(state / "taperfile.json")
    os.symlink(victim / "shadow", state / "id_ed25519.pub")
    with pytest.raises(StateError):
        project_files.read_text(state / "id_ed25519.pub")
    lock = state / "lock"
    os.symlink(victim / "shadow", lock)
    with pytest.raises(StateError):
        project_files.open_file(lock, os.O_RDWR)
    _unchanged(victim)


def test_root_may_use_the_dot_tapers_of_the_project_folder_owner(tmp_path: Path, monkeypatch) -> None:
    """Made under `sudo` (it is the developer's), then used by plain root: fine."""
    monkeypatch.delenv("SUDO_UID", raising=False)
    project = tmp_path / "shop"
    state = project / ".tapers"
    state.mkdir(parents=True, mode=0o700)
    (state / "inventory").write_text("[all]\n")
    for path in (project, state, state / "inventory"):
        os.chown(path, 4242, 4242)
    assert project_files.check_dir(state, create=False)
    assert project_files.read_text(state / "inventory") == "[all]\n"
    os.chown(project, 0, 0)  # a folder of root's with someone else's .tapers in it: refused
    with pytest.raises(StateError):
        project_files.check_dir(state, create=False)


def test_a_taperfile_is_not_looked_for_above_a_folder_anyone_can_write(tmp_path: Path) -> None:
    """From /tmp/work/sub, a Taperfile someone left in /tmp must not become your project."""
    from tapers.errors import TaperfileError
    from tapers.taperfile import find_taperfile

    shared = tmp_path / "shared"
    (shared / "mine" / "sub").mkdir(parents=True)
    shared.chmod(0o1777)
    (shared / "Taperfile.yaml").write_text("version: 1\nmachines: {evil: {}}\n")
    with pytest.raises(TaperfileError, match="no Taperfile.yaml"):
        find_taperfile(start=shared / "mine" / "sub")
    (shared / "mine" / "Taperfile.yaml").write_text("version: 1\nmachines: {web: {}}\n")
    assert find_taperfile(start=shared / "mine" / "sub") == shared / "mine" / "Taperfile.yaml"


def test_a_project_inside_a_folder_named_like_the_state_folder_still_works(tmp_path: Path) -> None:
    """(~/.tapers/shop, group-writable as umask 002 makes it: the state is shop/.tapers)"""
    project = tmp_path / ".tapers" / "shop"
    project.mkdir(parents=True)
    os.chmod(project, 0o775)
    state = project / ".tapers"
    assert project_files.check_dir(state, create=True)
    project_files.write(state / "inventory", "[all]\n")
    assert project_files.read_text(state / "inventory") == "[all]\n"


def test_a_project_path_swapped_for_another_project_while_tapers_runs_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Root runs tapers in alice's project; between two of its steps she swaps the project's
    path for a link to bob's. Root trusts `.tapers/` of whoever owns the project folder, so
    it would write its state (and read bob's key) there: refused, bob's state untouched."""
    from tapers.host_folders import sharer
    from tapers.taperfile import load_taperfile
    from tapers.taperfile.variables import env_file_values

    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)
    alices, bobs = tmp_path / "alice-shop", tmp_path / "bob-shop"
    for project, owner in ((alices, 4242), (bobs, 4343)):
        project.mkdir()
        (project / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
        os.chown(project, owner, owner)
    bob_state = bobs / ".tapers"
    bob_state.mkdir(mode=0o700)
    (bob_state / "id_ed25519").write_text("bob's project key\n")
    os.chmod(bob_state / "id_ed25519", 0o600)
    for path in (bob_state, bob_state / "id_ed25519"):
        os.chown(path, 4343, 4343)

    (bobs / ".env").write_text("SECRET=bob's database password\n")
    load_taperfile(alices / "Taperfile.yaml")
    os.rename(alices, tmp_path / "alice-shop.moved")
    alices.symlink_to(bobs)
    state = alices / ".tapers"
    with pytest.raises(StateError, match="no longer the folder whose Taperfile"):
        sharer(alices)  # (whose rights bound what root shares and reads for plain root: alice's, not bob's)
    with pytest.raises(StateError, match="no longer the folder whose Taperfile"):
        env_file_values(alices)
    with pytest.raises(StateError, match="no longer the folder whose Taperfile"):
        project_files.check_dir(state, create=True)
    with pytest.raises(StateError, match="no longer the folder whose Taperfile"):
        project_files.write(state / "inventory", "[all]\n")
    with pytest.raises(StateError, match="no longer the folder whose Taperfile"):
        project_files.read_text(state / "id_ed25519")
    assert sorted(p.name for p in bob_state.iterdir()) == ["id_ed25519"]
    assert (bob_state / "id_ed25519").read_text() == "bob's project key\n"
    assert [(p.stat().st_uid, p.stat().st_mode & 0o777) for p in (bob_state, bob_state / "id_ed25519")] == \
        [(4343, 0o700), (4343, 0o600)]
    assert not (tmp_path / "alice-shop.moved" / ".tapers").exists()


@pytest.mark.parametrize("found", ["from the current folder", "with -f"])
def test_a_project_path_swapped_between_finding_and_reading_its_taperfile_is_refused(tmp_path: Path, monkeypatch,
                                                                                      found: str) -> None:
    """Root runs tapers in alice's project folder: the project is the folder root is in, not
    whatever its name leads to a moment later (bob's project, whose machines root would
    then stop or destroy)."""
    from tapers.taperfile import find_taperfile, load_taperfile

    alices, bobs = tmp_path / "alice-shop", tmp_path / "bob-shop"
    for project, machine in ((alices, "web"), (bobs, "bobs-db")):
        project.mkdir()
        (project / "Taperfile.yaml").write_text(f"version: 1\nmachines:\n  {machine}: {{}}\n")
    monkeypatch.chdir(alices if found == "from the current folder" else tmp_path)
    path = find_taperfile() if found == "from the current folder" else find_taperfile(explicit=Path(
        "alice-shop/Taperfile.yaml"))
    os.rename(alices, tmp_path / "alice-shop.moved")
    alices.symlink_to(bobs)
    with pytest.raises(StateError, match="no longer the folder whose Taperfile"):
        load_taperfile(path)
    assert sorted(p.name for p in bobs.iterdir()) == ["Taperfile.yaml"]


def test_a_synced_folder_is_made_and_given_without_following_a_link_on_its_way(tmp_path: Path, victim: Path) -> None:
    """Root makes `sub/bin` for the person; they swap `sub` for a link to a system folder
    (/usr/local) meanwhile: root must not make nor give anything there."""
    from tapers.host_folders import make

    project = tmp_path / "shop"
    project.mkdir()
    (project / "sub").symlink_to(victim)
    with pytest.raises(StateError, match="changed while tapers made it"):
        make(project / "sub" / "bin", (4242, 4242))
    _unchanged(victim)
    assert victim.stat().st_uid == 0
    make(project / "a" / "b", (4242, 4242))  # what is made is theirs, each folder of it
    assert [((project / p).stat().st_uid, (project / p).is_dir()) for p in ("a", "a/b")] == [(4242, True)] * 2
    assert project.stat().st_uid == 0


def test_a_synced_folder_is_made_through_folders_one_may_pass_but_not_list() -> None:
    """(as `mkdir -p` does: a home of mode 0711 on the way)"""
    import shutil
    import subprocess
    import sys
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="tapers-test-make-", dir="/tmp"))
    try:
        os.chmod(top, 0o711)
        theirs = top / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        code = f"from pathlib import Path; from tapers.host_folders import make; make(Path({str(theirs / 'a' / 'b')!r}), None)"
        ran = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-P", "-c", code], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
        assert ran.returncode == 0, ran.stderr
        assert (theirs / "a" / "b").is_dir() and (theirs / "a" / "b").stat().st_uid == 65534
    finally:
        shutil.rmtree(top)
