"""A project folder (and its Taperfile) is someone else's input: on real containers, each
attempt is refused with a message naming what and why, and the host is unchanged: no file
written outside the project, no mount of what the attacker pointed at, no config line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def mounts_of(target: Path) -> list[str]:
    wanted = str(target)
    return [line for line in open("/proc/self/mountinfo") if line.split()[3] == wanted or line.split()[4] == wanted]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "secret").write_text("root only\n")
    return folder


def unchanged(victim: Path) -> None:
    assert sorted(os.listdir(victim)) == ["secret"] and (victim / "secret").read_text() == "root only\n"


def test_a_synced_folder_swapped_for_a_link_after_validation_is_never_mounted(project, victim) -> None:
    """The Taperfile's text doesn't change (its validation is reused): the check that matters
    is the one made when the machine starts."""
    (project.root / "data").mkdir()
    project.give_to_user()
    project.write("machines:\n  web:\n    synced_folders: [{host: ./data, guest: /srv/data}]\n")
    project.tapers("up").ok()
    project.tapers("halt").ok()
    shutil.rmtree(project.root / "data")
    os.symlink(victim, project.root / "data")

    refused = project.tapers("up")
    assert refused.code != 0 and "data" in refused.err
    assert project.lxc_state("web") == "STOPPED"
    assert not [line for line in open("/proc/self/mountinfo") if str(victim) in line.split()[3]]
    unchanged(victim)

    os.unlink(project.root / "data")
    (project.root / "data").mkdir()
    project.give_to_user()
    project.tapers("up").ok()  # the real folder again: it starts
    assert project.tapers("ssh", "-c", "test -d /srv/data && echo ok").ok().out == "ok\n"


@pytest.mark.parametrize("host", ["/etc/sudoers.d", "/root", "/root/.ssh", "/usr/local/bin", "/var/lib/lxc"])
def test_system_folders_and_home_dot_folders_are_refused(project, host: str) -> None:
    project.write(f"machines:\n  web:\n    synced_folders: [{{host: {host}, guest: /srv/x}}]\n")
    refused = project.tapers("up")
    assert refused.code == 3 and "machines.web.synced_folders[1]" in refused.err and host in refused.err
    assert project.lxc_state("web") == "MISSING"


def test_a_project_folder_with_spaces_works(project, tmp_path) -> None:
    spaced = tmp_path / "my project (copy)"
    spaced.mkdir()
    (spaced / "note.txt").write_text("hello\n")
    project.root = spaced
    project.give_to_user()
    project.write("machines:\n  web:\n    synced_folders: [{host: ./a b, guest: /srv/a b}]\n")
    project.tapers("up").ok()
    out = project.tapers("ssh", "-c", "cat /tapers/note.txt; echo x > '/srv/a b/f'").ok().out
    assert out == "hello\n" and (spaced / "a b" / "f").read_text() == "x\n"
    config = (Path("/var/lib/lxc") / project.container("web") / "config").read_text()
    assert "srv/a\\040b" in config
    project.tapers("destroy", "-f").ok()


def test_a_project_folder_with_a_newline_is_refused_before_any_config_line(project, tmp_path) -> None:
    hostile = tmp_path / "proj\nlxc.uts.name = pwned"  # a harmless key: had it landed, the next line could be a hook
    hostile.mkdir()
    project.root = hostile
    project.write("machines:\n  web: {}\n")
    refused = project.tapers("up")
    assert refused.code == 3 and "the project folder's path" in refused.err and "refused" in refused.err
    assert project.lxc_state("web") == "MISSING"  # refused before anything was made
    assert not (Path("/var/lib/lxc") / project.container("web")).exists()


def test_planted_links_in_dot_tapers_never_redirect_a_write(project, victim) -> None:
    project.write("machines:\n  web: {}\n")
    state = project.root / ".tapers"
    state.mkdir(mode=0o700)
    for name in ("id_ed25519.tmp", ".id_ed25519.tmp", "ssh_config.tmp", "taperfile.json.tmp", "lock.owner.tmp"):
        os.symlink(victim / "secret", state / name)
    project.tapers("up").ok()
    unchanged(victim)
    assert (state / "id_ed25519").stat().st_mode & 0o777 == 0o600

    os.symlink(victim / "secret", state / "lock.owner.new")
    os.unlink(state / "lock")
    os.symlink(victim / "secret", state / "lock")
    refused = project.tapers("halt")
    assert refused.code == 1 and "symbolic link" in refused.err and str(state / "lock") in refused.err
    unchanged(victim)
    assert project.lxc_state("web") == "RUNNING"
    os.unlink(state / "lock")  # gone: the project works again
    project.tapers("destroy", "-f").ok()
    unchanged(victim)


def test_a_dot_tapers_of_someone_else_is_refused(project) -> None:
    project.write("machines:\n  web: {}\n")
    state = project.root / ".tapers"
    state.mkdir()
    os.chown(state, 4242, 4242)
    refused = project.tapers("up")
    assert refused.code == 1 and "uid 4242" in refused.err and "chown" in refused.err
    assert project.lxc_state("web") == "MISSING"
    assert os.listdir(state) == []
    os.chown(state, 0, 0)
    os.chmod(state, 0o777)
    refused = project.tapers("up")
    assert refused.code == 1 and "chmod 700" in refused.err
    assert project.lxc_state("web") == "MISSING"


def test_a_validation_cache_planted_by_someone_else_is_refused(project) -> None:
    """A forged `.tapers/taperfile.json` would skip validation (a synced /etc, say)."""
    project.write("machines:\n  web: {}\n")
    project.tapers("validate").ok()
    project.tapers("status").ok()
    cache = project.root / ".tapers" / "taperfile.json"
    if not cache.exists():  # validate writes it only where .tapers exists
        project.tapers("up", "--no-provision").ok()
        project.tapers("destroy", "-f").ok()
    os.chown(cache, 4242, 4242)
    refused = project.tapers("status")
    assert refused.code == 1 and "taperfile.json" in refused.err


def test_a_box_url_over_plain_http_without_checksum_is_refused_on_up(project) -> None:
    project.write("machines:\n  web:\n    box: team/nowhere\n    box_url: http://127.0.0.1:9/web.box\n")
    refused = project.tapers("up")
    assert refused.code == 1 and "plain http" in refused.err and "--sha256" in refused.err
    assert project.lxc_state("web") == "MISSING"


def test_under_sudo_a_playbook_never_runs_as_root(project, tmp_path) -> None:
    """ansible-playbook runs on the host, and a playbook can run anything there (lookups,
    `delegate_to: localhost`): under sudo it gets the developer's rights, not root's. Where
    the developer cannot run this tapers' ansible-playbook (here: its Python lives under
    /root), the step fails saying so, and nothing of the playbook ran."""
    import pwd
    import subprocess
    import sys

    user = f"tp{project.name.replace('-', '')}"[:30]
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", user], check=True)
    try:
        account = pwd.getpwnam(user)
        root = Path(account.pw_dir) / "shop"
        root.mkdir()
        project.root = root
        marker = Path(account.pw_dir) / "playbook-ran-as"  # writable by the user (and by root)
        (root / "site.yml").write_text(
            "- hosts: all\n  gather_facts: false\n  tasks:\n"
            f"    - debug: {{msg: \"host uid {{{{ lookup('pipe', 'id -u | tee {marker}') }}}}\"}}\n"
        )
        project.write("machines:\n  web:\n    provision:\n      - ansible: {playbook: site.yml}\n")
        subprocess.run(["chown", "-R", f"{user}:{user}", str(root)], check=True)
        project.env = {**project.env, "SUDO_UID": str(account.pw_uid), "SUDO_GID": str(account.pw_gid),
                       "SUDO_USER": user}
        project.tapers("trust", "--yes").ok()  # the developer's approval (SUDO_UID's)
        result = project.tapers("up")
        runnable = subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "pass"],
                                  capture_output=True).returncode == 0
        if runnable:
            assert result.code == 0 and f"host uid {account.pw_uid}" in result.out, result.err
            assert marker.read_text().strip() == str(account.pw_uid)
        else:
            assert result.code == 1 and f"as `{user}`" in result.err and "never as root" in result.err
            assert not marker.exists()
        state = root / ".tapers"
        for path in (state, state / "id_ed25519", state / "inventory"):
            assert path.stat().st_uid == account.pw_uid, f"{path} should be the sudo user's"
        project.tapers("destroy", "-f").ok()
    finally:
        subprocess.run(["userdel", "--remove", user], capture_output=True)


def test_a_machine_cannot_change_what_ansible_runs_on_the_host(project) -> None:
    """The project folder is /tapers in the machine (writable: it is a developer's), and
    ansible-playbook runs on the host. A guest (or `curl | sh` in it) that rewrites the
    approved playbook to run a command on the host, between two runs or while a run is
    under way, gets it refused before it runs."""
    on_host = Path(f"/tmp/{project.name}-ran-on-the-host")
    in_machine = f"/tmp/{project.name}-ran-in-the-machine"
    # By its absolute path too, the play sees only its approved copy of the project.
    seen = f"{{{{ lookup('pipe', 'cat {project.root}/hostile.yml || echo not in the copy') }}}}"
    approved = ("- hosts: all\n  gather_facts: false\n  tasks:\n"
                f"    - command: touch {in_machine}\n"
                f"    - copy: {{dest: /tmp/seen, content: \"{seen}\"}}\n")
    hostile = approved + f"    - command: touch {on_host}\n      delegate_to: localhost\n"
    (project.root / "hostile.yml").write_text(hostile)  # what the guest copies over the playbook
    (project.root / "site.yml").write_text(approved)
    project.write("machines:\n  web:\n    provision:\n"
                  "      - name: swap\n        shell: {inline: 'cp /tapers/hostile.yml /tapers/site.yml', "
                  "privileged: false}\n        run: never\n"
                  "      - {name: play, ansible: {playbook: site.yml}}\n")
    project.give_to_user()
    unapproved = project.tapers("up")
    assert unapproved.code == 1 and '`web` step 2 "play" (ansible): ansible-playbook site.yml' in unapproved.err
    assert project.lxc_state("web") == "MISSING", "nothing is made before the play is approved"
    project.tapers("trust", "--yes").ok()
    try:
        project.tapers("up").ok()
        assert project.tapers("ssh", "web", "-c", f"test -e {in_machine} && echo yes").ok().out == "yes\n"
        assert project.tapers("ssh", "web", "-c", "cat /tmp/seen").ok().out == "not in the copy"

        # Rewritten between runs: refused before anything runs.
        project.tapers("ssh", "web", "-c", "cp /tapers/hostile.yml /tapers/site.yml").ok()
        refused = project.tapers("up")
        assert refused.code == 1 and "haven't approved (or that changed since)" in refused.err
        assert "it would run now because: site.yml changed" in refused.err
        refused = project.tapers("provision")
        assert refused.code == 1 and "haven't approved (or that changed since)" in refused.err
        assert not on_host.exists()

        # Rewritten while a run is under way (by the step before it): refused as the step starts.
        (project.root / "site.yml").write_text(approved)
        refused = project.tapers("provision", "--with", "swap,play")
        assert refused.code == 1 and "changed since you approved it" in refused.err, refused.err
        assert (project.root / "site.yml").read_text() == hostile, "the step before it did rewrite it"
        assert not on_host.exists()
    finally:
        on_host.unlink(missing_ok=True)
