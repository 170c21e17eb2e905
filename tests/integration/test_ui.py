"""`tapers ui`: the panel's API on real containers: the token, CSRF and origin checks,
every button, limits, and the live numbers."""

from __future__ import annotations

import json
import time

import lxc

from tests.integration.conftest import wait_for

MEMORY = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"


def post(ui, path: str, csrf: str, **fields: str) -> tuple[int, dict]:
    status, _, text = ui.request(
        "POST", path, {**fields, "csrf": csrf},
        headers={**ui.bearer(), "Origin": ui.base, "Accept": "application/json"},
    )
    return status, (json.loads(text) if status == 202 else {"text": text})


def key_of(ui, root=None) -> str:
    """How the panel names a project in its forms (its folder, as a key; never its name):
    the only project's, or the one in folder `root`."""
    projects = ui.state()["projects"]
    if root is None:
        (project,) = projects
        return project["key"]
    return next(p["key"] for p in projects if p["root"] == str(root.resolve()))


def run_job(ui, path: str, csrf: str, timeout: float = 180, **fields: str) -> dict:
    """POST, then follow the job until it ends; its whole output and exit code."""
    status, started = post(ui, path, csrf, **fields)
    assert status == 202, started
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        _, _, text = ui.request("GET", f"/api/jobs/{started['job']}?from={len(lines)}", headers=ui.bearer())
        job = json.loads(text)
        lines += job["lines"]
        if job["done"]:
            return {"code": job["code"], "output": "\n".join(lines)}
        assert time.monotonic() < deadline, f"job {fields} did not finish within {timeout} s: {lines}"
        time.sleep(0.2)


def test_without_the_token_nothing_is_served_but_the_token_page(project, panel) -> None:
    project.write("machines:\n  web: {}\n")
    ui = panel()
    for path in ("/", "/api/state", "/api/jobs/1", "/jobs/1", "/assets/panel.js", "/?token=wrong"):
        status, _, body = ui.request("GET", path)
        assert status == 401 and "Token required" in body, path
        assert "web" not in body

    status, headers, _ = ui.request("GET", f"/?token={ui.token}")
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = {"Cookie": cookie.split(";")[0]}
    status, headers, html = ui.request("GET", "/", headers=session)
    assert status == 200 and 'data-machine="web"' in html
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, _, _ = ui.request("GET", "/assets/panel.js", headers=session)
    assert status == 200

    # a page elsewhere whose name points at 127.0.0.1 (DNS rebinding) is refused
    status, _, body = ui.request("GET", "/api/state", headers={**session, "Host": f"evil.example:{ui.port}"})
    assert status == 403 and "web" not in body


def test_a_change_needs_a_post_from_this_origin_with_the_csrf_token(project, panel) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    ui = panel()
    csrf = ui.csrf()
    halt = {"project": key_of(ui), "machine": "web", "action": "halt"}
    origin = {"Origin": ui.base}
    refused = [
        (halt, {**ui.bearer(), **origin}),  # no CSRF token
        ({**halt, "csrf": "not-it"}, {**ui.bearer(), **origin}),
        ({**halt, "csrf": csrf}, {**ui.bearer(), "Origin": "http://evil.example"}),
        ({**halt, "csrf": csrf}, {**ui.bearer(), "Referer": "http://evil.example/"}),
        ({**halt, "csrf": csrf}, ui.bearer()),  # neither Origin nor Referer
        ({**halt, "csrf": csrf}, origin),  # no session
    ]
    for body, headers in refused:
        status, _, text = ui.request("POST", "/action", body, headers=headers)
        assert status in (401, 403), (headers, status, text)
    status, _, _ = ui.request("GET", "/action?" + "&".join(f"{k}={v}" for k, v in {**halt, "csrf": csrf}.items()),
                              headers={**ui.bearer(), **origin})
    assert status == 404  # GET never changes anything
    status, _, _ = ui.request("DELETE", "/action", headers={**ui.bearer(), **origin})
    assert status == 405
    assert project.lxc_state("web") == "RUNNING"
    assert ui.request("GET", "/api/jobs/1", headers=ui.bearer())[0] == 404, "a refused request started a job"

    # the same from the page's origin with its token (a form post, as without JavaScript)
    status, headers, _ = ui.request("POST", "/action", {**halt, "csrf": csrf}, headers={**ui.bearer(), **origin})
    assert status == 303 and headers["Location"] == "/jobs/1"
    wait_for(lambda: project.lxc_state("web") == "STOPPED", 60, "halt from the panel")
    wait_for(lambda: "exit code" not in ui.request("GET", "/jobs/1", headers=ui.bearer())[2]
             and "done" in ui.request("GET", "/jobs/1", headers=ui.bearer())[2], 30, "the job page saying done")


def test_every_button_runs_its_tapers_command(project, panel) -> None:
    project.write(
        "machines:\n  web:\n    provision:\n      - shell: echo ran >> /var/tmp/runs\n        run: always\n  db: {}\n"
    )
    project.tapers("up").ok()
    ui = panel()
    csrf = ui.csrf()
    key = key_of(ui)

    def press(action: str, machine: str = "web", **more: str) -> dict:
        return run_job(ui, "/action", csrf, project=key, machine=machine, action=action, **more)

    def runs() -> str:
        return project.tapers("ssh", "web", "-c", "wc -l < /var/tmp/runs").ok().out.strip()

    assert press("suspend")["code"] == 0 and project.lxc_state("web") == "FROZEN"
    assert ui.machine("web")["state"] == "frozen"
    assert press("resume")["code"] == 0 and project.lxc_state("web") == "RUNNING"
    assert press("provision")["code"] == 0 and runs() == "2"
    pid = lxc.Container(project.container("web")).init_pid
    assert press("reload")["code"] == 0 and lxc.Container(project.container("web")).init_pid != pid
    assert press("halt")["code"] == 0 and project.lxc_state("web") == "STOPPED"
    assert project.lxc_state("db") == "RUNNING", "a button acts on its own machine only"

    failed = press("provision")  # the CLI's own message, and its exit code
    assert failed["code"] == 1 and "machine `web` is not running" in failed["output"]

    assert press("up")["code"] == 0 and project.lxc_state("web") == "RUNNING"
    assert ui.machine("web")["plan"] == ["provision step 1 (run: always)"]  # what `tapers plan` says
    assert ui.machine("db")["plan"] == []

    status, _, text = ui.request("POST", "/action", {"project": key, "machine": "db", "action": "destroy",
                                                     "csrf": csrf}, headers={**ui.bearer(), "Origin": ui.base})
    assert status == 200 and "Destroy machine <code>db</code>" in text  # asks first
    assert project.lxc_state("db") == "RUNNING"
    assert press("destroy", machine="db", confirm="db")["code"] == 0
    assert project.lxc_state("db") == "MISSING"
    assert ui.machine("db")["state"] == "not created"
    assert any("create" in line for line in ui.machine("db")["plan"])

    status, answer = post(ui, "/action", csrf, project=key, machine="nope", action="up")
    assert status == 400 and "no machine `nope`" in answer["text"]
    status, answer = post(ui, "/action", csrf, project=key, machine="web", action="rm -rf")
    assert status == 400 and "unknown action" in answer["text"]
    status, answer = post(ui, "/action", csrf, project=project.name, machine="web", action="halt")
    assert status == 400 and "no project" in answer["text"], "a project is named by its folder's key, not its name"


def test_limits_from_the_panel_drift_until_saved_into_the_taperfile(project, panel) -> None:
    project.write("machines:\n  web:\n    memory: 256M   # the team's choice\n")
    project.tapers("up").ok()
    ui = panel()
    csrf = ui.csrf()
    key = key_of(ui)

    job = run_job(ui, "/limits", csrf, project=key, machine="web", memory="320M", save="0")
    assert job["code"] == 0
    assert project.tapers("ssh", "web", "-c", MEMORY).ok().out == f"{320 * 1024**2}\n"
    web = ui.machine("web")
    assert web["out_of_date"] == ["memory (live)"] and web["limits"]["applied"]["memory"] == 320 * 1024**2
    assert "memory: 256M   # the team's choice" in (project.root / "Taperfile.yaml").read_text()

    job = run_job(ui, "/limits", csrf, project=key, machine="web", memory="384M", save="1")
    assert job["code"] == 0
    assert "memory: 384M   # the team's choice" in (project.root / "Taperfile.yaml").read_text()
    assert project.tapers("ssh", "web", "-c", MEMORY).ok().out == f"{384 * 1024**2}\n"
    assert ui.machine("web")["out_of_date"] == []

    status, answer = post(ui, "/limits", csrf, project=key, machine="web")
    assert status == 400 and "at least one" in answer["text"]
    job = run_job(ui, "/limits", csrf, project=key, machine="web", memory="lots", save="0")
    assert job["code"] == 2 and "--memory lots" in job["output"]


def test_live_numbers_arrive_and_only_new_points_are_sent(project, panel) -> None:
    project.write(
        "machines:\n  web:\n    networks:\n"
        "      - forwarded_port: {guest: 8000, host: 2250, auto_correct: true}\n"
    )
    project.tapers("up").ok()
    ui = panel()
    (port,) = project.record("web")["ports"]
    status, _, html = ui.request("GET", "/", headers=ui.bearer())
    assert f'<a href="http://127.0.0.1:{port["host"]}/"' in html, "a forwarded port is a link"
    wait_for(lambda: len(ui.machine("web")["history"]) >= 2, 30, "two usage samples of the running machine")
    points = ui.machine("web")["history"]
    assert points[-1]["memory"] > 0 and points[-1]["pids"] > 0
    newest = points[-1]["t"]
    status, _, text = ui.request("GET", f"/api/state?since={newest}", headers=ui.bearer())
    later = json.loads(text)["projects"][0]["machines"][0]["history"]
    assert all(p["t"] > newest for p in later)


def test_all_shows_every_tapers_project_on_the_host(project, panel, tmp_path) -> None:
    from tests.integration.conftest import Project

    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    other = Project(tmp_path / "other", f"{project.name}x", project.env)
    other.root.mkdir()
    other.write("machines:\n  api: {autostart: true}\n")
    try:
        other.tapers("up").ok()
        ui = panel("--all")
        shown = {p["id"]: [m["machine"] for m in p["machines"]] for p in ui.state()["projects"]}
        assert shown[project.name] == ["web"] and shown[other.name] == ["api"]
        csrf = ui.csrf()
        job = run_job(ui, "/action", csrf, project=key_of(ui, other.root), machine="api", action="halt")
        assert job["code"] == 0 and other.lxc_state("api") == "STOPPED"
        assert project.lxc_state("web") == "RUNNING"
    finally:
        other.tapers("destroy", "-f")


def test_an_invalid_taperfile_is_shown_as_the_cli_says_it(project, panel) -> None:
    project.write("machines:\n  web: {}\n")
    ui = panel()
    (project.root / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {memroy: 1G}\n")
    (shown,) = ui.state()["projects"]
    assert "invalid" in shown["error"] and "memory" in shown["error"] and shown["machines"] == []
    status, _, html = ui.request("GET", "/", headers=ui.bearer())
    assert status == 200 and "error:" in html and "did you mean" in html
    project.write("machines:\n  web: {}\n")
    assert [m["machine"] for m in ui.state()["projects"][0]["machines"]] == ["web"]
