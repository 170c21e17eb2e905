"""The provisioning cache on real containers: a new machine starts from the layer kept after
the longest run of its first steps, and runs only what comes after.

Each test's steps carry its project's name, so no other test's layers match them; the cache
is on here only (the suite turns it off elsewhere with TAPERS_CACHE_MAX_SIZE=0).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Project, _sweep, wait_for

STEPS = """
machines:
  web:
{extra}    provision:
      - name: one
        shell: "echo {tag}-1 > /opt/one; rm -rf /usr/share/doc/bash; mkdir -p /etc/made/inside"
      - name: two
        shell: "echo {tag}-{two} > /opt/two; cp /usr/bin/ping /opt/ping2; setcap cap_net_raw+ep /opt/ping2; cp /usr/bin/id /opt/suid-id; chmod 4755 /opt/suid-id"
      - name: three
        shell: "echo {tag}-3 > /opt/three"
"""

MARKERS = "cat /opt/one /opt/two /opt/three; ls /usr/share/doc/bash 2>&1; ls -d /etc/made/inside; /usr/sbin/getcap /opt/ping2; stat -c '%a %U' /opt/suid-id"


def _on(project: Project) -> Project:
    project.env["TAPERS_CACHE_MAX_SIZE"] = "2G"
    return project


@pytest.fixture(autouse=True)
def _cleared(project: Project):
    """After each test: its machines, then the layers no machine stands on."""
    yield
    if (project.root / "Taperfile.yaml").exists():
        project.tapers("destroy", "-f", timeout=120)
    _on(project).tapers("cache", "clear")


def _layers(project: Project) -> list[dict]:
    return json.loads(project.tapers("cache", "list", "--json").ok().out)


def _mine(project: Project) -> list[dict]:
    """The layers whose steps are this test's (the cache is the whole test run's)."""
    home = Path(project.env["TAPERS_HOME"]) / "layers"
    return [layer for layer in _layers(project) if (one := home / layer["layer"] / "disk" / "opt" / "one").is_file()
            and project.name in one.read_text(errors="replace")]


def _ran(out: str) -> list[str]:
    return [line.split('"')[1] for line in out.splitlines() if "| provision step" in line]


@pytest.mark.both_backends
def test_a_new_machine_runs_only_the_steps_the_cache_lacks(project: Project, backend_name: str) -> None:
    _on(project).write(STEPS.format(tag=project.name, two="2", extra=""))
    first = project.tapers("up").ok()
    assert _ran(first.out) == ["one", "two", "three"], first.out
    assert first.out.count("kept in the provisioning cache") == 3, first.out
    assert len(_layers(project)) == 3  # (the cache is this test's: others run with it off, and it is cleared after)
    record = project.record("web")

    # destroy && up: no step runs, the machine is what the steps made
    project.tapers("destroy", "-f").ok()
    plan = project.tapers("plan").ok().out
    assert "steps 1-3 from the provisioning cache" in plan, plan
    again = project.tapers("up").ok()
    assert _ran(again.out) == [], again.out
    seen = project.tapers("ssh", "web", "-c", MARKERS).ok().out
    assert f"{project.name}-1\n{project.name}-2\n{project.name}-3\n" in seen, seen
    assert "No such file or directory" in seen and "/etc/made/inside" in seen, seen
    assert "cap_net_raw=ep" in seen, seen  # a file capability works for another machine's root
    assert "4755 root" in seen, seen  # so does a setuid file
    now = project.record("web")
    assert now["provisioned"].keys() == record["provisioned"].keys() and now["provisioned"] == record["provisioned"]
    assert len(now["layers"]) == 1 and now["host_key"] != record["host_key"]
    machine_id = project.tapers("ssh", "web", "-c", "cat /etc/machine-id").ok().out
    status = project.tapers("status").ok().out
    assert "out of date" not in status, status

    # step 2 changes: steps 2 and 3 run, on the layer after step 1
    project.write(STEPS.format(tag=project.name, two="2b", extra=""))
    project.tapers("destroy", "-f").ok()
    assert "step 1 from the provisioning cache" in project.tapers("plan").ok().out
    changed = project.tapers("up").ok()
    assert _ran(changed.out) == ["two", "three"], changed.out
    seen = project.tapers("ssh", "web", "-c", "cat /opt/one /opt/two /etc/machine-id").ok().out.split()
    assert seen[:2] == [f"{project.name}-1", f"{project.name}-2b"] and seen[2] != machine_id.strip(), seen

    # --no-cache: every step runs
    project.tapers("destroy", "-f").ok()
    assert _ran(project.tapers("up", "--no-cache").ok().out) == ["one", "two", "three"]


def test_machines_of_another_project_share_the_layers_and_nothing_of_their_own(project: Project, tmp_path: Path) -> None:
    _on(project).write(STEPS.format(tag=project.name, two="2", extra=""))
    project.tapers("up").ok()
    other = Project(tmp_path / "other", f"{project.name}x", project.env)
    other.root.mkdir()
    text = STEPS.format(tag=project.name, two="2", extra="")
    # the same steps on a machine made otherwise (privileged, a folder mounted elsewhere): another layer
    text += text.split("machines:\n")[1].replace(
        "  web:\n", "  admin:\n    privileged: true\n    synced_folders: [{host: ., guest: /usr/local/sbin}]\n", 1)
    other.write(text)
    try:
        out = other.tapers("up").ok().out
        ran = [line.split("|")[0].strip() + ":" + line.split('"')[1] for line in out.splitlines() if "| provision step" in line]
        assert ran == ["admin:one", "admin:two", "admin:three"], out
        project.tapers("destroy", "-f").ok()
        assert _ran(project.tapers("up").ok().out) == []  # now two machines made from the same layer
        for where in (project, other):
            seen = where.tapers("ssh", "web", "-c", MARKERS).ok().out
            assert f"{project.name}-1\n{project.name}-2\n{project.name}-3\n" in seen, seen
            assert "cap_net_raw=ep" in seen and "4755 root" in seen, seen
        records = [project.record("web"), other.record("web")]
        assert records[0]["layers"] == records[1]["layers"] != []
        assert records[0]["host_key"] != records[1]["host_key"] and records[0]["address"] != records[1]["address"]
        ids = {p.tapers("ssh", "web", "-c", "cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub").ok().out
               for p in (project, other)}
        assert len(ids) == 2, ids
    finally:
        other.tapers("destroy", "-f")
        _sweep(f"tapers-{other.name}-")


def test_a_layer_holds_no_machine_secrets_and_only_root_reaches_the_cache(project: Project) -> None:
    _on(project).write(STEPS.format(tag=project.name, two="2", extra=""))
    project.tapers("up").ok()
    home = Path(project.env["TAPERS_HOME"]) / "layers"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for layer in _mine(project):
        disk = home / layer["layer"] / "disk"
        kept = {str(p.relative_to(disk)) for p in disk.rglob("*")}
        leaked = [p for p in kept if p.startswith("etc/ssh/ssh_host_") or p.endswith("authorized_keys")
                  or p in ("etc/machine-id", "etc/hostname", "etc/hosts", "etc/resolv.conf")]
        assert not leaked, leaked
        assert "opt/one" in kept
        assert all(st.st_uid < 65536 for st in (os.lstat(disk / p) for p in kept))  # owners as in the box


def test_steps_that_cant_be_kept_run_every_time(project: Project) -> None:
    _on(project).write(f"""
machines:
  web:
    provision:
      - name: one
        shell: "echo {project.name} > /opt/one"
      - name: always
        run: always
        shell: "echo run >> /opt/log"
      - name: three
        shell: "echo 3 > /opt/three"
  db:
    provision:
      - name: one
        shell: "echo {project.name} > /opt/one"
      - name: uncached
        cache: false
        shell: "echo run >> /opt/log"
""")
    project.tapers("up").ok()
    project.tapers("destroy", "-f").ok()
    out = project.tapers("up").ok().out
    ran = [line.split("|")[0].strip() + ":" + line.split('"')[1] for line in out.splitlines() if "| provision step" in line]
    assert sorted(ran) == ["db:uncached", "web:always", "web:three"], out
    assert project.tapers("ssh", "web", "-c", "cat /opt/one /opt/log").ok().out.split() == [project.name, "run"]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_a_layer_half_written_when_tapers_is_killed_is_never_used(project: Project, delay: float) -> None:
    _on(project).write(f"""
machines:
  web:
    provision:
      - name: big
        shell: "head -c 150M /dev/urandom > /opt/big; echo {project.name}-{delay} > /opt/one"
""")
    home = Path(project.env["TAPERS_HOME"]) / "layers"
    process = subprocess.Popen([sys.executable, "-P", "-m", "tapers", "up"], cwd=project.root, env=project.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: home.is_dir() and any(p.name.startswith(f".incoming-{process.pid}-") for p in home.iterdir()),
                 240, "tapers starting to write the layer")
        time.sleep(delay)  # the point of this test: somewhere in the middle of the copy
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    whole = bool(_mine(project))  # killed after the layer was published: it is whole, and used
    project.tapers("destroy", "-f").ok()  # the machine may be left frozen mid-copy
    out = project.tapers("up").ok().out
    assert _ran(out) == ([] if whole else ["big"]), out
    assert not [p for p in home.iterdir() if p.name.startswith(f".incoming-{process.pid}-")]  # cleared
    seen = project.tapers("ssh", "web", "-c", "cat /opt/one; stat -c %s /opt/big").ok().out.split()
    assert seen == [f"{project.name}-{delay}", str(150 * 2**20)], seen
