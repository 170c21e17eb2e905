"""The copy of the project a play runs in: exactly the approved files, checked as copied;
nothing else of the project, no link followed, no password script that runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.errors import ProvisionError
from tapers.provision import ansible_inputs, play_copy


def _project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "project"
    (root / "roles" / "app" / "tasks").mkdir(parents=True)
    (root / "roles" / "app" / "tasks" / "main.yml").write_text("- ping:\n")
    (root / "roles" / "app" / "files").mkdir()
    (root / "roles" / "app" / "files" / "run.sh").write_text("#!/bin/sh\n")
    (root / "roles" / "app" / "files" / "run.sh").chmod(0o755)
    (root / "site.yml").write_text("- hosts: all\n  roles: [app]\n")
    (root / "ansible.cfg").write_text("[defaults]\nforks = 2\n")
    return root, ansible_inputs.inputs(root, root / "site.yml", {})


def test_only_the_approved_files_are_copied_with_their_modes(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    (root / "scripts").mkdir()  # files no input names: not in the copy
    (root / "scripts" / "evil.py").write_text("import os; os.system('touch /tmp/owned')\n")
    (root / "notes.txt").write_text("not read by the play\n")
    (root / "roles" / "app" / "files" / "key").symlink_to("/etc/passwd")
    (root / "roles" / "app" / "files" / "shared").symlink_to(tmp_path)  # a link to a folder: not walked
    found = ansible_inputs.inputs(root, root / "site.yml", {})
    work = tmp_path / "work"
    copied = play_copy.copy_inputs(root, found, {"ansible.cfg"}, work)
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file() or p.is_symlink())
    assert files == ["ansible.cfg", "roles/app/files/run.sh", "roles/app/tasks/main.yml", "site.yml"]
    assert "? roles/app/files/key is a link: not followed (not in the play's copy)" in found  # said
    assert "? roles/app/files/shared is a link: not followed (not in the play's copy)" in found
    assert copied == 4
    assert (work / "roles/app/files/run.sh").stat().st_mode & 0o777 == 0o700
    assert (work / "site.yml").stat().st_mode & 0o777 == 0o600
    assert (work / "ansible.cfg").read_text() == "[defaults]\nforks = 2\n"


def test_a_file_changed_since_it_was_hashed_is_refused(tmp_path: Path) -> None:
    root, found = _project(tmp_path)
    (root / "roles" / "app" / "tasks" / "main.yml").write_text("- command: touch /tmp/owned\n  delegate_to: localhost\n")
    with pytest.raises(ProvisionError, match="roles/app/tasks/main.yml changed while the play was being prepared"):
        play_copy.copy_inputs(root, found, {"ansible.cfg"}, tmp_path / "work")


def test_a_file_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    root, found = _project(tmp_path)
    (tmp_path / "elsewhere.yml").write_text("- ping:\n")
    (root / "roles" / "app" / "tasks" / "main.yml").unlink()
    (root / "roles" / "app" / "tasks" / "main.yml").symlink_to(tmp_path / "elsewhere.yml")
    with pytest.raises(ProvisionError):
        play_copy.copy_inputs(root, found, {"ansible.cfg"}, tmp_path / "work")


def test_a_vault_password_file_in_the_project_is_a_plain_private_copy(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    (root / ".vault-pass").write_text("secret\n")
    play_copy.copy_private(root / ".vault-pass", tmp_path / "copy", "the vault password file")
    assert (tmp_path / "copy").read_text() == "secret\n" and (tmp_path / "copy").stat().st_mode & 0o777 == 0o600
    (root / ".vault-pass").write_text("#!/bin/sh\ntouch /tmp/owned\n")
    (root / ".vault-pass").chmod(0o755)  # what a machine could make of it: Ansible would run it
    with pytest.raises(ProvisionError, match="is executable"):
        play_copy.copy_private(root / ".vault-pass", tmp_path / "copy2", "the vault password file")
    assert not (tmp_path / "copy2").exists()


def test_plugin_folders_beside_every_playbook_are_inputs(tmp_path: Path) -> None:
    """Ansible loads plugin folders beside each playbook it reads, imported ones too: they
    are counted (so approved, and in the copy), whatever the plugin kind."""
    root = tmp_path / "project"
    (root / "sub" / "vars_plugins").mkdir(parents=True)
    (root / "sub" / "vars_plugins" / "v.py").write_text("# a vars plugin\n")
    (root / "strategy_plugins").mkdir()
    (root / "strategy_plugins" / "s.py").write_text("# a strategy plugin\n")
    (root / "sub" / "inner.yml").write_text("- hosts: all\n  tasks: []\n")
    (root / "site.yml").write_text("- import_playbook: sub/inner.yml\n")
    found = ansible_inputs.inputs(root, root / "site.yml", {})
    assert {"sub/vars_plugins/v.py", "strategy_plugins/s.py", "sub/inner.yml", "site.yml"} <= set(found)


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="files of other users")
def test_a_file_the_person_could_not_read_is_not_copied_into_what_becomes_theirs(tmp_path: Path) -> None:
    """Under sudo the copy is given to the person the play runs as: a role's file only root
    (or another user) may read would reach them through it. Nothing is copied; not run."""
    import os

    from tapers.host_folders import Sharer

    root, _ = _project(tmp_path)
    os.chmod(tmp_path, 0o755)
    secret = root / "roles" / "app" / "files" / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    found = ansible_inputs.inputs(root, root / "site.yml", {})
    work = tmp_path / "work"
    with pytest.raises(ProvisionError, match="files/secret.*may not read it"):
        play_copy.copy_inputs(root, found, {"ansible.cfg"}, work, Sharer(4242, 4242, root))  # (the project
        # owner, as plain root acts for: the folders above the project are not theirs to pass)
    assert not (work / "roles" / "app" / "files" / "secret").exists()
    assert play_copy.copy_inputs(root, found, {"ansible.cfg"}, tmp_path / "as-root", None) == 5  # root's own: all


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="files of other users")
def test_a_vault_password_file_the_person_could_not_read_is_not_given_to_them(tmp_path: Path) -> None:
    import os

    from tapers.host_folders import Sharer

    root, _ = _project(tmp_path)
    (root / "vault.txt").write_text("root's password\n")
    (root / "vault.txt").chmod(0o600)
    with pytest.raises(ProvisionError, match="may not read it"):
        play_copy.copy_private(root / "vault.txt", tmp_path / "vault-copy", "the vault password file",
                               Sharer(4242, 4242, root))
    assert not (tmp_path / "vault-copy").exists()
    os.chmod(root / "vault.txt", 0o644)
    play_copy.copy_private(root / "vault.txt", tmp_path / "vault-copy", "the vault password file",
                           Sharer(4242, 4242, root))
    assert (tmp_path / "vault-copy").read_text() == "root's password\n"
