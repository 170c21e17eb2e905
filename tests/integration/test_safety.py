"""What tapers refuses: unknown host keys, containers it did not create, removing boxes in use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tapers.ssh.keys import generate
from tests.integration.conftest import run_tapers


def test_a_wrong_pinned_host_key_is_refused(project, tmp_path) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    record = project.record("web")
    record["host_key"] = generate("impostor").public  # the machine now presents a key we did not pin
    project.save_record("web", record)

    refused = project.tapers("ssh", "-c", "echo should-not-run")  # through OpenSSH
    assert refused.code == 255
    assert "Host key verification failed" in refused.err
    assert "should-not-run" not in refused.out

    without_openssh = {**project.env, "PATH": str(Path(sys.executable).parent)}  # paramiko, same contract
    refused = run_tapers(("ssh", "-c", "echo should-not-run"), project.root, without_openssh)
    assert refused.code == 255
    assert "presented a host key other than the one tapers pinned" in refused.err
    assert "should-not-run" not in refused.out

    config = tmp_path / "ssh_config"
    config.write_text(project.tapers("ssh-config").ok().out)
    openssh = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "web", "echo should-not-run"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert openssh.returncode == 255
    assert "should-not-run" not in openssh.stdout


def test_a_container_tapers_did_not_create_is_left_alone(project) -> None:
    project.write("machines:\n  web: {}\n")
    folder = Path("/var/lib/lxc") / project.container("web")
    folder.mkdir()
    (folder / "config").write_text("lxc.uts.name = stranger\n")
    result = project.tapers("up")
    assert result.code == 1
    assert "created by something other than tapers" in result.err
    assert (folder / "config").read_text() == "lxc.uts.name = stranger\n"
    destroy = project.tapers("destroy", "-f").ok()
    assert "left alone" in destroy.err
    assert (folder / "config").exists()


def test_a_box_in_use_is_not_removed(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    listed = project.tapers("box", "list").ok().out
    assert "debian/bookworm" in listed and project.container("web") in listed
    refused = project.tapers("box", "remove", "debian/bookworm")
    assert refused.code == 1 and project.container("web") in refused.err
    assert project.tapers("box", "remove", "no/such-box").code == 1


def test_doctor_passes_here(project) -> None:
    doctor = project.tapers("doctor").ok()
    assert "FAIL" not in doctor.out
