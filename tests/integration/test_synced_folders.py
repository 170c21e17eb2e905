"""Synced folders on real containers, as vagrant-spec checks them, plus ownership and safety."""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import wait_for


def guest(project, machine: str, command: str) -> str:
    return project.tapers("ssh", machine, "-c", command).ok().out


@pytest.mark.both_backends
def test_synced_folders_read_write_readonly_disabled_and_reboot(project) -> None:
    (project.root / "README").write_text("from the host\n")
    (project.root / "ro").mkdir()
    (project.root / "ro" / "data").write_text("read me\n")
    project.give_to_user()  # a developer's folder (a root-owned one can only be shared read-only)
    project.write(
        "machines:\n"
        "  web:\n"
        "    synced_folders:\n"
        "      - {host: ./site, guest: /srv/site}\n"
        "      - {host: ./ro, guest: /srv/ro, readonly: true}\n"
    )
    project.tapers("up").ok()
    assert (project.root / "site").is_dir()  # a missing host folder is created
    assert guest(project, "web", "cat /tapers/README /srv/ro/data") == "from the host\nread me\n"

    guest(project, "web", "echo from-guest > /tapers/written; mkdir -p /srv/site/sub && echo x > /srv/site/sub/f")
    owner = project.root.stat()
    for path in (project.root / "written", project.root / "site" / "sub" / "f"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (owner.st_uid, owner.st_gid), f"{path} should belong to the folder owner"
    assert (project.root / "written").read_text() == "from-guest\n"
    assert guest(project, "web", "stat -c %U /tapers/README") == "tapers\n"  # the login user owns the files

    refused = project.tapers("ssh", "-c", "touch /srv/ro/new")
    assert refused.code != 0 and "Read-only" in refused.err
    assert not (project.root / "ro" / "new").exists()

    # `.tapers/` is not the machine's: an empty read-only folder in its place (the project
    # key there logs in to every machine of the project).
    assert (project.root / ".tapers" / "id_ed25519").is_file()
    assert guest(project, "web", "ls -A /tapers/.tapers; test -e /tapers/.tapers/id_ed25519 || echo no key") == "no key\n"
    refused = project.tapers("ssh", "-c", "mkdir /tapers/.tapers/group_vars")
    assert refused.code != 0 and "Read-only" in refused.err
    assert not (project.root / ".tapers" / "group_vars").exists()

    project.tapers("ssh", "-c", "sudo systemctl reboot")
    wait_for(lambda: project.tapers("ssh", "-c", "test -e /tapers/README").code == 0, 60, "the synced folder after a reboot")
    assert guest(project, "web", "cat /srv/site/sub/f") == "x\n"


@pytest.mark.both_backends
def test_the_project_folder_can_be_disabled(project) -> None:
    project.write("machines:\n  web:\n    synced_folders:\n      - {host: ., guest: /tapers, disabled: true}\n")
    project.tapers("up").ok()
    assert guest(project, "web", "test -e /tapers && echo present || echo absent") == "absent\n"


@pytest.mark.both_backends
def test_destroy_and_halt_never_touch_the_host_folder(project) -> None:
    (project.root / "keep").write_text("precious\n")
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    staging = [line.split()[4] for line in open("/proc/self/mountinfo") if project.container("web") in line]
    assert staging, "the synced folder is mounted through a staging mount on the host"
    project.tapers("halt").ok()
    assert not [line for line in open("/proc/self/mountinfo") if project.container("web") in line]
    project.tapers("up").ok()
    project.tapers("destroy", "-f").ok()
    assert (project.root / "keep").read_text() == "precious\n"
    assert (project.root / "Taperfile.yaml").exists()
    assert not [line for line in open("/proc/self/mountinfo") if project.container("web") in line]


@pytest.mark.both_backends
def test_a_synced_folder_change_restarts_the_machine(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    os.makedirs(project.root / "extra")
    (project.root / "extra" / "f").write_text("new\n")
    project.give_to_user()
    project.write("machines:\n  web:\n    synced_folders: [{host: ./extra, guest: /extra}]\n")
    assert "[restart]" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert guest(project, "web", "cat /extra/f") == "new\n"
