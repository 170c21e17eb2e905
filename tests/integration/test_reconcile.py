"""`up` makes reality match the Taperfile, whatever happened in between."""

from __future__ import annotations

import json
import shutil
import socket
import signal
import subprocess
import sys

import lxc
import pytest


def init_pid(project, machine: str) -> int:
    return project.init_pid(machine)


def guest(project, machine: str, command: str) -> str:
    return project.tapers("ssh", machine, "-c", command).ok().out


MEMORY = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"


@pytest.mark.both_backends
def test_limits_change_live_and_hostname_with_a_restart(project) -> None:
    project.write("machines:\n  web: {memory: 256M}\n")
    project.tapers("up").ok()
    pid = init_pid(project, "web")

    project.write("machines:\n  web: {memory: 384M, pids: 200}\n")
    assert "web: set limits (memory 256M -> 384M; pids unset -> 200: applied live)  [live]" in project.tapers("plan").ok().out
    assert "out of date: memory (live), pids (live)" in project.tapers("status").ok().out
    project.tapers("up").ok()
    assert init_pid(project, "web") == pid, "a live change must not restart the machine"
    assert guest(project, "web", MEMORY) == f"{384 * 1024**2}\n"
    assert "up to date" in project.tapers("status").ok().out

    project.write("machines:\n  web: {memory: 384M, pids: 200, hostname: web.renamed.test}\n")
    assert "[restart]" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert init_pid(project, "web") != pid
    assert guest(project, "web", "hostname; hostname -f") == "web.renamed.test\nweb.renamed.test\n"
    assert guest(project, "web", MEMORY) == f"{384 * 1024**2}\n"  # limits survive the restart


@pytest.mark.both_backends
def test_limits_command_drifts_until_up_or_saves_into_the_taperfile(project) -> None:
    project.write("machines:\n  web:\n    memory: 256M   # keep this comment\n")
    project.tapers("up").ok()
    pid = init_pid(project, "web")

    changed = project.tapers("limits", "web", "--memory", "320M", "--pids", "150").ok()
    assert "applied now" in changed.out and "tapers up" in changed.err
    assert init_pid(project, "web") == pid
    assert guest(project, "web", MEMORY) == f"{320 * 1024**2}\n"
    assert "out of date: memory (live), pids (live)" in project.tapers("status").ok().out
    project.tapers("up").ok()  # the Taperfile is the truth
    assert guest(project, "web", MEMORY) == f"{256 * 1024**2}\n"
    assert "up to date" in project.tapers("status").ok().out

    project.tapers("limits", "web", "--memory", "384M", "--save").ok()
    assert guest(project, "web", MEMORY) == f"{384 * 1024**2}\n"
    assert "memory: 384M   # keep this comment" in (project.root / "Taperfile.yaml").read_text()
    assert "up to date" in project.tapers("status").ok().out
    assert "nothing to do" in project.tapers("plan").ok().out
    assert init_pid(project, "web") == pid

    refused = project.tapers("limits", "web", "--memory", "lots")
    assert refused.code == 2 and "--memory lots" in refused.err
    assert guest(project, "web", MEMORY) == f"{384 * 1024**2}\n"


def test_a_box_change_recreates_only_when_confirmed(project, box_home) -> None:
    boxes = box_home.home / "boxes" / "debian-bookworm"
    (old,) = [p for p in boxes.iterdir() if not p.name.startswith(".")]
    newer = boxes / f"{old.name}-newer"
    subprocess.run(["cp", "-a", "--reflink=auto", str(old), str(newer)], check=True)
    meta = json.loads((newer / "box.json").read_text())
    meta.update(version=newer.name, id=meta["id"][:8] + "newer000")
    (newer / "box.json").write_text(json.dumps(meta))
    try:
        project.write(f"machines:\n  web: {{box: debian/bookworm@{old.name}}}\n")
        project.tapers("up").ok()
        guest(project, "web", "echo precious > ~/data")
        project.write(f"machines:\n  web: {{box: debian/bookworm@{newer.name}}}\n")
        plan = project.tapers("plan", "--json").ok()
        assert [a["class"] for a in json.loads(plan.out)["actions"] if a["subject"] == "web"][0] == "recreate"
        refused = project.tapers("up")
        assert refused.code == 1 and "--yes" in refused.err
        assert guest(project, "web", "cat ~/data") == "precious\n"
        project.tapers("up", "--yes").ok()
        assert project.record("web")["box"]["version"] == newer.name
        assert project.tapers("ssh", "-c", "cat ~/data").code != 0
    finally:
        project.tapers("destroy", "-f")
        shutil.rmtree(newer, ignore_errors=True)


def test_drift_by_hand_is_repaired(project) -> None:
    project.write("machines:\n  web: {}\n  db: {}\n")
    project.tapers("up").ok()
    lxc.Container(project.container("web")).stop()
    db = lxc.Container(project.container("db"))
    db.stop()
    db.destroy()
    assert project.tapers("plan", "--detailed-exitcode").code == 2
    project.tapers("up").ok()
    assert project.lxc_state("web") == project.lxc_state("db") == "RUNNING"
    assert guest(project, "db", "hostname") == "db\n"
    assert project.tapers("plan", "--detailed-exitcode").code == 0


def test_orphans_are_listed_then_removed_on_request(project) -> None:
    project.write("machines:\n  web: {}\n  old: {}\n")
    project.tapers("up").ok()
    project.write("machines:\n  web: {}\n")
    assert "orphan" in project.tapers("status").ok().out
    up = project.tapers("up").ok()
    assert "no longer in the Taperfile" in up.err and project.lxc_state("old") == "RUNNING"
    project.tapers("up", "--remove-orphans").ok()
    assert project.lxc_state("old") == "MISSING"


@pytest.mark.both_backends
def test_suspend_and_resume(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    project.tapers("suspend").ok()
    assert project.lxc_state("web") == "FROZEN"
    assert project.tapers("ssh", "-c", "true").code == 1
    project.tapers("resume").ok()
    assert guest(project, "web", "echo awake") == "awake\n"


@pytest.mark.both_backends
def test_snapshots(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    guest(project, "web", "echo before > ~/state")
    project.tapers("snapshot", "save", "web", "clean").ok()
    guest(project, "web", "echo after > ~/state; touch ~/new-file")
    listed = json.loads(project.tapers("snapshot", "list", "--json").ok().out)
    assert [(s["machine"], s["snapshot"]) for s in listed] == [("web", "clean")]
    project.tapers("snapshot", "restore", "web", "clean").ok()
    assert project.lxc_state("web") == "RUNNING"
    assert guest(project, "web", "cat ~/state; ls ~/new-file 2>/dev/null || echo gone") == "before\ngone\n"
    assert project.tapers("snapshot", "restore", "web", "nope").code == 1
    project.tapers("snapshot", "delete", "web", "clean").ok()
    assert "no snapshots" in project.tapers("snapshot", "list").ok().out


def test_global_status_sees_every_project(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    rows = json.loads(project.tapers("global-status", "--json").ok().out)
    mine = [r for r in rows if r["container"] == project.container("web")]
    assert mine and mine[0]["folder"] == str(project.root) and mine[0]["state"] == "running"


def test_global_status_prune_destroys_machines_of_deleted_folders(project, tmp_path) -> None:
    """Pruned as `destroy` would: the container and the host port rules leading to it go
    (they used to stay behind, forwarding a port to an address nobody had)."""
    from tapers.backend.liblxc import ports

    gone = tmp_path / "gone-project"
    gone.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (gone / "Taperfile.yaml").write_text(
        f"version: 1\nname: {project.name}-gone\nmachines:\n  web:\n"
        f"    networks: [{{forwarded_port: {{guest: 80, host: {port}}}}}]\n"
    )
    subprocess.run([sys.executable, "-P", "-m", "tapers", "up"], cwd=gone, env=project.env, check=True, capture_output=True)
    shutil.rmtree(gone)
    container = f"tapers-{project.name}-gone-web"
    assert container in ports.forwarded()
    listed = project.tapers("global-status").ok().out
    assert "gone" in listed
    project.write("machines:\n  web: {}\n")
    pruned = project.tapers("global-status", "--prune", "-f").ok()
    assert f"destroying {container}" in pruned.out
    assert not lxc.Container(container).defined
    assert container not in ports.forwarded()


def spawn(project, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "tapers", *args], cwd=project.root, env=project.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )


def _clean_pair(project) -> None:
    prefix = f"tapers-{project.name}-"
    ours = sorted(n for n in lxc.list_containers() if n.startswith(prefix))
    assert ours == [project.container("db"), project.container("web")], f"stray or missing containers: {ours}"
    for machine in ("db", "web"):
        assert project.lxc_state(machine) == "RUNNING"
        assert project.record(machine)["phase"] == "ready"
        assert guest(project, machine, "cat /var/tmp/provisioned") == f"{machine}\n"


TWO_PROVISIONED = (
    "machines:\n"
    "  db:\n"
    "    provision: [{shell: 'hostname > /var/tmp/provisioned'}]\n"
    "  web:\n"
    "    provision: [{shell: 'hostname > /var/tmp/provisioned'}]\n"
)


def test_kill_9_at_any_moment_then_up_finishes_the_job(project) -> None:
    project.write(TWO_PROVISIONED)
    for lines_before_kill in (0, 1, 2, 3, 4, 6, 8, 10):
        process = spawn(project, "up")
        for _ in range(lines_before_kill):
            if not process.stdout.readline():
                break
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        project.tapers("up").ok()
        _clean_pair(project)
        # and a destroy killed half-way: the next `up` must not reuse a half-destroyed machine
        destroy = spawn(project, "destroy", "-f")
        destroy.stdout.readline()
        destroy.send_signal(signal.SIGKILL)
        destroy.wait()
        destroy.stdout.close()
        project.tapers("up").ok()
        _clean_pair(project)
        project.tapers("destroy", "-f").ok()


@pytest.mark.parametrize("parallel", [2, 4])
def test_concurrent_ups_on_one_project(project, parallel: int) -> None:
    project.write(TWO_PROVISIONED)
    processes = [spawn(project, "up") for _ in range(parallel)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out + err
    assert sum("create (not found)" in out for out, _ in outputs) == 1
    assert any("waiting for" in out for out, _ in outputs)
    _clean_pair(project)


def test_ctrl_c_stops_cleanly_with_130_and_up_finishes(project) -> None:
    project.write("machines:\n  db: {}\n  web: {provision: [{shell: 'sleep 30'}]}\n")
    process = spawn(project, "up")
    for line in process.stdout:
        if "provision step 1" in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in err
    project.write("machines:\n  db: {}\n  web: {provision: [{shell: 'true'}]}\n")
    project.tapers("up").ok()
    assert project.lxc_state("db") == project.lxc_state("web") == "RUNNING"
