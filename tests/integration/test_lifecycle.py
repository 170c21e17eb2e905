"""The whole life of a machine, through the real CLI, on real containers."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

ONE_MACHINE = """\
machines:
  web:
    hostname: web.example.test
    memory: 256M
    cpus: 0.5
    pids: 300
"""


@pytest.mark.both_backends
def test_full_lifecycle(project) -> None:
    project.write(ONE_MACHINE)

    up = project.tapers("up").ok()
    assert "web" in up.out and "create (not found)" in up.out and "up in" in up.out
    assert project.lxc_state("web") == "RUNNING"

    status = json.loads(project.tapers("status", "--json").ok().out)
    (web,) = status["machines"]
    assert web["state"] == "running"
    assert web["address"] == project.record("web")["address"]
    assert web["box"].startswith("debian/bookworm@")
    table = project.tapers("status").ok().out
    assert "web" in table and "running" in table and web["address"] in table

    shell = project.tapers("ssh", "-c", "hostname; hostname -f; id -un; sudo -n id -u").ok()
    assert shell.out.split() == ["web.example.test", "web.example.test", "tapers", "0"]

    failing = project.tapers("ssh", "web", "-c", "echo to-out; echo to-err >&2; exit 42")
    assert failing.code == 42
    assert failing.out == "to-out\n"
    assert "to-err" in failing.err

    limits = project.tapers(
        "ssh", "-c",
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
    ).ok()
    assert limits.out.split() == [str(256 * 1024**2), "300"]

    assert project.tapers("plan").ok().out.strip() == "nothing to do"
    again = project.tapers("up").ok()
    assert "up to date" in again.out and "create" not in again.out and "start" not in again.out

    halted = project.tapers("halt").ok()
    assert "web" in halted.out and "halt" in halted.out
    assert project.lxc_state("web") == "STOPPED"
    refused = project.tapers("ssh", "-c", "true")
    assert refused.code == 1 and "not running" in refused.err

    assert "start (stopped)" in project.tapers("up").ok().out
    assert project.tapers("ssh", "-c", "echo back").ok().out == "back\n"

    project.tapers("destroy", "-f").ok()
    assert project.lxc_state("web") == "MISSING"
    assert "nothing to destroy" in project.tapers("destroy", "-f").ok().out
    assert "not created" in project.tapers("status").ok().out


def test_openssh_works_with_the_generated_config(project, tmp_path) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    config = tmp_path / "ssh_config"
    config.write_text(project.tapers("ssh-config").ok().out)
    result = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "web", "echo via-openssh; whoami"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["via-openssh", "tapers"]


@pytest.mark.both_backends
def test_two_machines_come_up_together(project) -> None:
    project.write("machines:\n  db: {memory: 128M}\n  web: {primary: true}\n  tools: {autostart: false}\n")
    up = project.tapers("up").ok()
    assert "db" in up.out and "web" in up.out and "tools" not in up.out
    assert (project.lxc_state("db"), project.lxc_state("web"), project.lxc_state("tools")) == (
        "RUNNING", "RUNNING", "MISSING",
    )
    assert project.record("db")["address"] != project.record("web")["address"]
    assert project.tapers("ssh", "-c", "hostname").ok().out == "web\n"  # the primary
    assert project.tapers("ssh", "db", "-c", "hostname").ok().out == "db\n"
    # a machine with autostart: false starts when named
    project.tapers("up", "tools").ok()
    assert project.lxc_state("tools") == "RUNNING"


@pytest.mark.both_backends
def test_second_up_is_a_no_op(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    record = project.record("web")
    plan = json.loads(project.tapers("plan", "--json").ok().out)
    assert plan["actions"] == []
    assert "up to date" in project.tapers("up").ok().out
    assert project.record("web") == record


@pytest.mark.both_backends
def test_status_loads_only_what_it_needs(project, backend_name) -> None:
    """`status` is run in loops by scripts and prompts: with the Taperfile unchanged it reads
    it from the sealed cache, without YAML, pydantic, typer, paramiko or OpenSSL's hashes
    (on LXD, its client config is YAML and HTTPS loads OpenSSL anyway); on liblxc, without
    subprocess and threading either (python-lxc's own `lxc` module loads them: a sixth of
    a `status`)."""
    import sys

    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    watched = ("yaml", "pydantic", "typer", "paramiko", "_hashlib") + (
        ("subprocess", "threading", "lxc") if backend_name == "liblxc" else ())
    code = ("import sys, io; from tapers.cli.main import run; out, sys.stdout = sys.stdout, io.StringIO(); "
            "code = run(['status']); shown, sys.stdout = sys.stdout.getvalue(), out; "
            f"print(code, 'web' in shown, sorted(m for m in {watched!r} if m in sys.modules))")
    for _ in range(2):  # the first may validate the Taperfile again (a new cache key)
        ran = subprocess.run([sys.executable, "-P", "-c", code], cwd=project.root, env=project.env,
                             capture_output=True, text=True, timeout=60)
    assert ran.stdout == ("0 True []\n" if backend_name == "liblxc" else "0 True ['_hashlib', 'yaml']\n"), ran.stdout + ran.stderr


@pytest.mark.both_backends
def test_deleting_dot_tapers_loses_nothing(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    address = project.record("web")["address"]
    subprocess.run(["rm", "-rf", str(project.root / ".tapers")], check=True)
    assert "web: authorize key" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert project.tapers("ssh", "-c", "echo still-here").ok().out == "still-here\n"
    assert project.record("web")["address"] == address
    assert (project.root / ".tapers" / "ssh_config").is_file()


@pytest.mark.both_backends
def test_destroy_twice_and_destroy_of_nothing(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("destroy", "-f").ok()
    project.tapers("up").ok()
    project.tapers("destroy", "-f").ok()
    project.tapers("destroy", "-f").ok()
    assert project.lxc_state("web") == "MISSING"


def test_destroy_asks_and_refuses_without_a_terminal(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    refused = project.tapers("destroy")
    assert refused.code == 1 and "-f" in refused.err
    assert project.lxc_state("web") == "RUNNING"


def test_invalid_taperfile_creates_nothing(project) -> None:
    project.write("machines:\n  web: {memory: lots}\n  db: {}\n")
    result = project.tapers("up")
    assert result.code == 3
    assert "Taperfile.yaml:4:17: machines.web.memory" in result.err
    assert project.lxc_state("web") == project.lxc_state("db") == "MISSING"
    assert not (project.root / ".tapers").exists()


@pytest.mark.both_backends
def test_interrupted_creation_is_redone(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("halt").ok()
    record = project.record("web")
    record["phase"] = "creating"  # what a `tapers up` killed in the middle of creating leaves
    project.save_record("web", record)
    assert "web: re-create (its creation was interrupted)" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert project.record("web")["phase"] == "ready"
    assert project.tapers("ssh", "-c", "echo repaired").ok().out == "repaired\n"


def test_interactive_ssh_runs_the_system_ssh(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    # Without a terminal, the remote login shell reads its commands from stdin.
    session = project.tapers("ssh", stdin="echo interactive-$((6*7))\nexit 3\n")
    assert session.code == 3
    assert "interactive-42" in session.out


def test_placement_is_ignored_on_liblxc_with_a_warning(project) -> None:
    project.write("machines:\n  web: {placement: {member: node2}}\n")
    up = project.tapers("up").ok()
    assert "`placement: {member: node2}` ignored: the liblxc backend runs machines on this host" in up.out
    assert project.lxc_state("web") == "RUNNING"


@pytest.mark.both_backends
def test_halt_forces_off_a_machine_that_does_not_shut_down_in_time(project) -> None:
    """A service that takes a minute to stop: `halt --timeout 2` says so and forces the
    machines off, without waiting for the service."""
    project.write("machines:\n  web: {}\n  db: {}\n")
    project.tapers("up").ok()
    unit = "[Service]\nExecStart=/bin/sleep infinity\nExecStop=/bin/sleep 60\n[Install]\nWantedBy=multi-user.target\n"
    for machine in ("web", "db"):
        project.tapers("exec", machine, "--", "sh", "-c", f"printf '{unit}' > /etc/systemd/system/slow.service && "
                       "systemctl daemon-reload && systemctl start slow").ok()
    started = time.monotonic()
    halt = project.tapers("halt", "--timeout", "2").ok()
    elapsed = time.monotonic() - started
    forced = [line.split("|")[0].strip() for line in halt.out.splitlines()
              if line.endswith("did not shut down within 2 s: forced off")]
    assert sorted(forced) == ["db", "web"], halt.out
    for machine in ("web", "db"):
        assert project.lxc_state(machine) == "STOPPED"
    assert elapsed < 40, f"halt took {elapsed:.0f} s: the slow service (60 s) was waited for"


def test_starts_and_stops_leave_no_monitor_cgroups_behind(project) -> None:
    """LXC 5.0 leaves its monitor's empty cgroup (lxc.monitor.NAME, -1, -2...) in every
    hierarchy at each stop on a cgroup v1 host; tapers takes them away."""
    from collections import Counter
    from pathlib import Path

    project.write("machines:\n  web: {}\n")
    container = project.container("web")

    def monitors() -> Counter:
        return Counter(path.parent for path in Path("/sys/fs/cgroup").glob(f"*/lxc.monitor.{container}*"))

    for _ in range(3):
        project.tapers("up").ok()
        project.tapers("halt").ok()
    project.tapers("up").ok()
    assert monitors() and max(monitors().values()) == 1, monitors()  # the running machine's monitor's, only
    project.tapers("destroy", "-f").ok()
    assert not monitors(), monitors()
