"""play_ns: a play's program sees its copy of the project where the project is, by any path,
and nothing changes outside its namespaces."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def _folders(base: Path) -> tuple[Path, Path]:
    project, copy = base / "project", base / "copy"
    for folder, text in ((project, "the project, which machines can write\n"), (copy, "the approved copy\n")):
        folder.mkdir()
        (folder / "site.yml").write_text(text)
    return project, copy


def _run(project: Path, copy: Path, user: list[str]) -> subprocess.CompletedProcess[str]:
    command = f"cat {project}/site.yml; cat site.yml; pwd; echo $PWD"
    return subprocess.run([*user, sys.executable, "-P", "-m", "tapers.provision.play_ns", str(project), str(copy), "--",
                           "/bin/sh", "-c", command], capture_output=True, text=True, timeout=60, cwd="/",
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, and as a user through runuser")
@pytest.mark.parametrize("user", [[], ["runuser", "-u", "nobody", "--"]], ids=["root", "user"])
def test_the_copy_is_where_the_project_is(user: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="tapers-play-ns-") as base:
        os.chmod(base, 0o755)  # nobody reaches it
        project, copy = _folders(Path(base))
        ran = _run(project, copy, user)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == f"the approved copy\nthe approved copy\n{project}\n{project}\n", ran.stderr
        assert (project / "site.yml").read_text() == "the project, which machines can write\n"
        with open("/proc/self/mountinfo") as mounts:
            assert str(project) not in mounts.read(), "a mount was left in tapers' own namespace"


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as a user in a user namespace without id maps")
def test_where_the_namespaces_are_refused_the_play_still_runs_in_its_copy_and_says_so() -> None:
    """As on Ubuntu's restricted user namespaces: one can be made but given no id map (here:
    the caller is already in a user namespace that maps no one)."""
    with tempfile.TemporaryDirectory(prefix="tapers-play-ns-") as base:
        os.chmod(base, 0o755)
        project, copy = _folders(Path(base))
        ran = _run(project, copy, ["runuser", "-u", "nobody", "--", "unshare", "--user", "--"])
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == f"the project, which machines can write\nthe approved copy\n{copy}\n{copy}\n"
        assert "without a private mount namespace" in ran.stderr


def _run_hiding(project: Path, copy: Path, hidden: list[Path], command: str,
                user: list[str], become: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*user, sys.executable, "-P", "-m", "tapers.provision.play_ns", *([become] if become else []),
                           str(project), str(copy),
                           *map(str, hidden), "--", "/bin/sh", "-c", command], capture_output=True, text=True,
                          timeout=60, cwd="/", env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, and as a user through runuser")
@pytest.mark.parametrize("user", [[], ["runuser", "-u", "nobody", "--"]], ids=["root", "user"])
def test_a_folder_machines_can_write_is_out_of_the_play_s_reach(user: list[str]) -> None:
    """A synced folder elsewhere that machines write (`~/shared`): whatever names a file
    there (an ssh ProxyCommand, a var, a lookup) finds an empty read-only folder, even
    when the project is inside it."""
    with tempfile.TemporaryDirectory(prefix="tapers-play-ns-") as base:
        os.chmod(base, 0o755)
        shared = Path(base) / "shared"
        shared.mkdir(mode=0o777)
        os.chmod(shared, 0o777)
        (shared / "nc").write_text("#!/bin/sh\necho ran the machine's code\n")
        os.chmod(shared / "nc", 0o755)
        project, copy = _folders(Path(base))
        project = project.rename(shared / "project")  # (the project in it: `..` synced)
        command = f"ls -A {shared}; {shared}/nc; cat site.yml; touch {shared}/planted && echo wrote"
        ran = _run_hiding(project, copy, [shared, shared / "project"], command, user)
        assert "ran the machine's code" not in ran.stdout and "wrote" not in ran.stdout, ran
        assert ran.stdout.splitlines() == ["project", "the approved copy"], ran  # the copy alone, in its place
        assert sorted(p.name for p in shared.iterdir()) == ["nc", "project"]
        assert sorted(p.name for p in project.iterdir()) == ["site.yml"]
        with open("/proc/self/mountinfo") as mounts:
            assert str(shared) not in mounts.read(), "a mount was left in tapers' own namespace"


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as a user in a user namespace without id maps")
def test_without_namespaces_a_play_that_must_not_reach_a_folder_does_not_run() -> None:
    with tempfile.TemporaryDirectory(prefix="tapers-play-ns-") as base:
        os.chmod(base, 0o755)
        project, copy = _folders(Path(base))
        shared = Path(base) / "shared"
        shared.mkdir()
        ran = _run_hiding(project, copy, [shared], "echo ran", ["runuser", "-u", "nobody", "--", "unshare", "--user",
                                                                "--"])
        assert ran.returncode == 126 and ran.stdout == "", ran
        assert f"machines can write {shared}" in ran.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="as root")
def test_a_folder_to_hide_that_does_not_exist_is_no_reason_not_to_run() -> None:
    with tempfile.TemporaryDirectory(prefix="tapers-play-ns-") as base:
        project, copy = _folders(Path(base))
        ran = _run_hiding(project, copy, [Path(base) / "not-made-yet"], "cat site.yml", [])
        assert ran.returncode == 0 and ran.stdout == "the approved copy\n", ran
        assert not (Path(base) / "not-made-yet").exists()


@pytest.fixture
def open_folders():
    """A project and its copy in a folder anyone can pass, removed after."""
    with tempfile.TemporaryDirectory(prefix="tapers-play-ns-") as base:
        os.chmod(base, 0o755)
        yield (Path(base), *_folders(Path(base)))


def _nobody() -> str:
    import pwd

    nobody = pwd.getpwnam("nobody")
    return f"--as={nobody.pw_uid}:{nobody.pw_gid}"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, becoming a user")
def test_under_sudo_root_makes_the_namespace_and_the_play_runs_as_the_user_alone(open_folders) -> None:
    """tapers under sudo: the namespace is root's (no user namespace, which Ubuntu's restricted
    ones would refuse the user), the program the user's, with no other group, and the user
    can't take the cover off a folder machines write."""
    base, project, copy = open_folders
    shared = base / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    (shared / "planted").write_text("a machine's\n")
    command = (f"id -u; id -G; cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; grep NoNewPrivs /proc/self/status; "
               f"ls -A {shared}; cat site.yml; umount {shared} 2>/dev/null && echo uncovered; "
               f"cat {shared}/planted 2>/dev/null; touch {shared}/x 2>/dev/null && echo wrote; echo done")
    become = _nobody()
    ran = _run_hiding(project, copy, [shared], command, [], become=become)
    assert ran.returncode == 0, ran
    uid, gid = become.removeprefix("--as=").split(":")
    assert ran.stdout.splitlines() == [uid, gid, "0 0 4294967295", "NoNewPrivs:\t1", "the approved copy", "done"], ran
    assert sorted(p.name for p in shared.iterdir()) == ["planted"]
    with open("/proc/self/mountinfo") as mounts:
        assert str(shared) not in mounts.read(), "a mount was left in tapers' own namespace"


def test_only_root_can_ask_to_become_someone(tmp_path: Path) -> None:
    project, copy = _folders(tmp_path)
    marker = tmp_path / "ran"
    user = [] if os.geteuid() != 0 else ["runuser", "-u", "nobody", "--"]
    ran = _run_hiding(project, copy, [], f"touch {marker}", user, become="--as=0:0")
    assert ran.returncode == 2 and "root only" in ran.stderr, ran
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, becoming a user")
def test_a_program_the_user_cannot_run_is_not_run_as_root(open_folders) -> None:
    base, project, copy = open_folders
    private = base / "private"
    private.mkdir(mode=0o700)
    tool = private / "ansible-playbook"
    tool.write_text(f"#!/bin/sh\ntouch {base}/ran\n")
    tool.chmod(0o755)
    ran = subprocess.run([sys.executable, "-P", "-m", "tapers.provision.play_ns", _nobody(), str(project), str(copy),
                          "--", str(tool)], capture_output=True, text=True, timeout=60, cwd="/",
                         env={**os.environ, "USER": "nobody", "PYTHONPATH": str(Path(__file__).parents[2])})
    assert ran.returncode == 127, ran
    assert "as `nobody`" in ran.stderr and "never as root" in ran.stderr, ran
    assert not (base / "ran").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, becoming a user")
@pytest.mark.parametrize("swapped", ["the project", "a folder to hide"])
def test_a_link_swapped_in_sends_no_mount_elsewhere(open_folders, swapped: str) -> None:
    """The person (or a machine, in a folder it writes) renames a folder tapers named and puts
    a link to a system folder in its place: root mounts nothing over that folder; no play runs."""
    base, project, copy = open_folders
    system = base / "etc"  # (a stand-in for /etc or /boot)
    system.mkdir()
    (system / "passwd").write_text("root's\n")
    shared = base / "shared"
    shared.mkdir()
    victim = project if swapped == "the project" else shared
    victim.rename(base / "moved")
    victim.symlink_to(system)
    ran = _run_hiding(project, copy, [shared], f"cat {system}/passwd; ls -A {system}; echo ran", [], become=_nobody())
    assert ran.returncode == 126 and "ran" not in ran.stdout, ran
    assert "the play can't run" in ran.stderr and "a link" in ran.stderr, ran
    assert sorted(p.name for p in system.iterdir()) == ["passwd"] and (system / "passwd").read_text() == "root's\n"
    with open("/proc/self/mountinfo") as mounts:
        assert str(base) not in mounts.read(), "a mount was left in tapers' own namespace"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="as root, a system Python")
def test_the_person_s_own_python_site_folder_is_not_loaded_as_root(open_folders, monkeypatch) -> None:
    """Under sudo the play's environment has the person's HOME; a system Python run as root
    with it would load their ~/.local site folder (a .pth runs code) before play_ns drops."""
    import pwd

    from tapers.provision.runner import play_command

    base, project, copy = open_folders
    home = base / "home"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = home / ".local" / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    marker = base / "pth-ran-as"
    (site / "evil.pth").write_text(f"import os; open({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    nobody = pwd.getpwnam("nobody")
    argv = play_command(project, copy, (), ["/bin/true"], (nobody.pw_uid, nobody.pw_gid))
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/",
                         env={**os.environ, "HOME": str(home), "PYTHONPATH": str(Path(__file__).parents[2])})
    assert ran.returncode == 0, ran
    assert not marker.exists(), "the person's site folder was loaded by root's Python"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, becoming a user")
def test_the_person_s_copy_swapped_for_a_link_shows_them_nothing_of_where_it_leads(open_folders) -> None:
    """Under sudo the play's copy is the person's by the time play_ns runs: swapped for a link
    to a folder they can't reach (inside someone's 0700 home), root would mount it for them.
    Nothing runs, not even without the namespace."""
    base, project, copy = open_folders
    home = base / "carol"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "secret").write_text("carol's\n")
    os.chmod(home, 0o700)
    copy.rename(base / "copy-was-here")
    copy.symlink_to(home / "docs")
    import pwd

    from tapers.provision.runner import play_command

    nobody = pwd.getpwnam("nobody")
    argv = play_command(project, copy, (), ["/bin/sh", "-c", f"cat secret {project}/secret {copy}/secret; echo ran"],
                        (nobody.pw_uid, nobody.pw_gid))
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/",
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert ran.returncode == 126 and "carol's" not in ran.stdout and "ran" not in ran.stdout, ran
    assert "a link" in ran.stderr, ran


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user")
def test_the_play_s_folder_stays_root_s_what_it_holds_is_given(tmp_path: Path) -> None:
    """The person may pass the private folder, not rename in it: they can't swap the copy or a
    folder root walks for a link (to /etc), and root never walks a folder of theirs."""
    from tapers.provision import play_copy

    private = tmp_path / "private"
    (private / "project" / "roles").mkdir(parents=True, mode=0o700)
    (private / "project" / "site.yml").write_text("")
    (private / "inventory").write_text("")
    os.chmod(private, 0o700)
    play_copy.give(private, (4242, 4242))
    assert (private.stat().st_uid, private.stat().st_mode & 0o777) == (0, 0o711)
    for path in ("project", "project/roles", "project/site.yml", "inventory"):
        assert (private / path).stat().st_uid == 4242, path


@pytest.mark.parametrize("bad", ["relative", "with ..", "with //"])
def test_only_real_paths_are_taken(tmp_path: Path, bad: str) -> None:
    """A `..` in a path root mounts on or makes folders in could lead anywhere: tapers gives
    real paths, and anything else is refused before a namespace is made."""
    project, copy = _folders(tmp_path)
    marker = tmp_path / "ran"
    given = {"relative": "project", "with ..": f"{tmp_path}/copy/../project", "with //": f"{tmp_path}//project"}[bad]
    ran = subprocess.run([sys.executable, "-P", "-m", "tapers.provision.play_ns", given, str(copy), "--", "/bin/sh",
                          "-c", f"touch {marker}"], capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert ran.returncode == 2 and "real paths" in ran.stderr, ran
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, for a user")
def test_the_play_s_folder_is_removed_without_root_walking_what_is_the_person_s(tmp_path: Path, monkeypatch) -> None:
    """What the private folder holds is the person's after the play: they remove it, so a name
    they swap for a link (to a device, a system folder) or a FIFO never reaches root's hands."""
    import pwd

    from tapers.provision import play_copy
    from tapers.provision.runner import _remove_play_folder

    nobody = pwd.getpwnam("nobody")
    for name in ("PKEXEC_UID", "DOAS_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUDO_UID", str(nobody.pw_uid))
    monkeypatch.setenv("SUDO_GID", str(nobody.pw_gid))
    system = tmp_path / "system"
    system.mkdir()
    (system / "passwd").write_text("root's\n")
    private = Path(tempfile.mkdtemp(prefix="tapers-play-test-", dir="/tmp"))
    (private / "project" / "roles").mkdir(parents=True)
    (private / "inventory").write_text("")
    play_copy.give(private, (nobody.pw_uid, nobody.pw_gid))
    (private / "project" / "roles" / "etc").symlink_to(system)  # what the person may plant once it is theirs
    os.mkfifo(private / "project" / "fifo")
    for path in (private / "project" / "roles" / "etc", private / "project" / "fifo"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
    _remove_play_folder(private)
    assert not private.exists()
    assert (system / "passwd").read_text() == "root's\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, for a user")
def test_a_play_s_folder_never_given_is_removed_whole(monkeypatch) -> None:
    """(a play refused before its folder was given: its copy, up to 4 GiB, is not left in /tmp)"""
    import pwd

    from tapers.provision.runner import _remove_play_folder

    nobody = pwd.getpwnam("nobody")
    for name in ("PKEXEC_UID", "DOAS_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUDO_UID", str(nobody.pw_uid))
    monkeypatch.setenv("SUDO_GID", str(nobody.pw_gid))
    private = Path(tempfile.mkdtemp(prefix="tapers-play-test-", dir="/tmp"))
    (private / "project" / "roles").mkdir(parents=True)
    (private / "project" / "roles" / "big").write_bytes(b"x" * 4096)
    _remove_play_folder(private)
    assert not private.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, becoming a user")
@pytest.mark.parametrize("where", ["another user's folder", "a folder anyone may write", "a sticky one like /tmp",
                                   "a folder another group may write"])
def test_a_folder_to_hide_that_someone_else_could_make_during_the_play_stops_it(open_folders, where: str) -> None:
    """Missing now, so not covered: whoever can write where it would be could make it (or
    have renamed it away just while play_ns looked) and the play would read what is there."""
    base, project, copy = open_folders
    parent = base / "theirs"
    parent.mkdir()
    if where == "another user's folder":
        os.chown(parent, 4242, 4242)
    elif where == "a folder another group may write":
        os.chown(parent, 0, 4242)
        os.chmod(parent, 0o775)
    else:
        os.chmod(parent, 0o777 if where == "a folder anyone may write" else 0o1777)
    shared = parent / "shared"
    ran = _run_hiding(project, copy, [shared], f"touch {base}/ran; echo ran", [], become=_nobody())
    assert ran.returncode == 126 and ran.stdout == "", ran
    assert f"{shared}, a synced folder machines can write, isn't there" in ran.stderr, ran
    assert f"they may write in {parent}" in ran.stderr and f"mkdir -p {shared}" in ran.stderr, ran
    assert not (base / "ran").exists() and not shared.exists()
    shared.mkdir()  # made by the person (root, here): covered, and the play runs
    ran = _run_hiding(project, copy, [shared], "ls -A " + str(shared) + "; echo ran", [], become=_nobody())
    assert ran.returncode == 0 and ran.stdout == "ran\n", ran


@pytest.mark.skipif(os.geteuid() != 0, reason="as root")
def test_a_missing_folder_to_hide_in_a_folder_of_one_s_own_group_is_no_reason_not_to_run(open_folders) -> None:
    """(a umask of 002 makes folders writable by the user's own group, which only they are in)"""
    import grp

    base, project, copy = open_folders
    if grp.getgrgid(0).gr_mem:
        pytest.skip("this host's group root has members")
    parent = base / "ours"
    parent.mkdir()
    os.chmod(parent, 0o775)
    ran = _run_hiding(project, copy, [parent / "not-made-yet"], "cat site.yml", [])
    assert ran.returncode == 0 and ran.stdout == "the approved copy\n", ran
    assert sorted(parent.iterdir()) == []
