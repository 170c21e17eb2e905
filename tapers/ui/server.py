"""The panel's HTTP server: 127.0.0.1 only, every route behind the Guard (see auth.py).

  GET  /?token=T            trade the printed token for a session cookie, then /
  GET  /                    the page (readable without JavaScript; the script keeps it live)
  GET  /api/state?since=T   machines, plan, usage points newer than T (JSON)
  GET  /api/jobs/ID?from=N  a command's output from line N (JSON)
  GET  /jobs/ID             the same as a page (for browsers without JavaScript)
  GET  /assets/NAME         the script and the style sheet
  POST /action              project, machine, action (up, halt, ...; destroy needs confirm=machine)
  POST /limits              project, machine, cpus, memory, pids, save
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tapers.ui import auth
from tapers.ui.jobs import COMMANDS, Jobs
from tapers.ui.panel import Panel

ASSETS = Path(__file__).parent / "assets"
STATIC = {"panel.js": "text/javascript", "panel.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LIMIT_KEYS = ("cpus", "memory", "pids")


class PanelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, panel: Panel, token: str | None = None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.panel = panel
        self.jobs = Jobs()
        self.guard = auth.Guard(self.server_address[1], token)
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        self.templates = Environment(loader=FileSystemLoader(ASSETS), autoescape=select_autoescape(["j2"]))
        self.sampler = threading.Thread(target=panel.run_sampler, daemon=True)

    def serve(self) -> None:
        self.sampler.start()
        try:
            self.serve_forever(poll_interval=0.2)
        finally:
            self.panel.stop()


class Handler(BaseHTTPRequestHandler):
    server: PanelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet: the terminal shows the URL)
        pass

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self._foreign_host():
            return None
        if url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if url.path == "/" and "token" in query:
            return self._trade(query["token"])
        session = self.server.guard.session(self.headers)
        if session is None:
            return self._token_required()
        if url.path == "/":
            return self._page(session)
        if url.path == "/api/state":
            return self._json(self.server.panel.state(_number(query.get("since"))))
        if url.path.startswith("/api/jobs/"):
            job = self.server.jobs.get(url.path.rsplit("/", 1)[1])
            if job is None:
                return self._json({"error": "no such job"}, HTTPStatus.NOT_FOUND)
            return self._json(job.view(int(_number(query.get("from")))))
        if url.path.startswith("/jobs/"):
            return self._job_page(url.path.rsplit("/", 1)[1])
        if url.path.startswith("/assets/") and url.path[8:] in STATIC:
            name = url.path[8:]
            return self._send(HTTPStatus.OK, (ASSETS / name).read_bytes(), STATIC[name])
        return self._text(HTTPStatus.NOT_FOUND, "not found\n")

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        guard = self.server.guard
        form = self._form()  # read first: the connection stays usable whatever the answer
        if self._foreign_host():
            return None
        session = guard.session(self.headers)
        if session is None:
            return self._token_required()
        refused = guard.change_allowed(session, self.headers, form.get("csrf"))
        if refused:
            return self._text(HTTPStatus.FORBIDDEN, f"refused: {refused}\n")
        if url.path == "/action":
            return self._action(form)
        if url.path == "/limits":
            return self._limits(form)
        return self._text(HTTPStatus.NOT_FOUND, "not found\n")

    def do_PUT(self) -> None:  # noqa: N802
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and POST\n")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    # -- actions ----------------------------------------------------------------------------

    def _action(self, form: dict[str, str]) -> None:
        action = form.get("action", "")
        if action not in COMMANDS:
            return self._text(HTTPStatus.BAD_REQUEST, f"unknown action `{action}`: one of {', '.join(COMMANDS)}\n")
        target = self._target(form)
        if target is None:
            return None
        project, machine = target
        if action == "destroy" and form.get("confirm") != machine:
            return self._confirm_page(project.id, machine, form)
        job = self.server.jobs.start(project.loaded.path, f"{action} {machine}", [*COMMANDS[action], machine])
        self._started(job)

    def _limits(self, form: dict[str, str]) -> None:
        target = self._target(form)
        if target is None:
            return None
        project, machine = target
        args = ["limits", machine]
        for key in LIMIT_KEYS:
            value = form.get(key, "").strip()
            if value:
                args += [f"--{key}", value]
        if len(args) == 2:
            return self._text(HTTPStatus.BAD_REQUEST, "give at least one of cpus, memory, pids (or `none`)\n")
        if form.get("save") in ("1", "on", "true"):
            args.append("--save")
        self._started(self.server.jobs.start(project.loaded.path, f"limits {machine}", args))

    def _target(self, form: dict[str, str]) -> tuple[Any, str] | None:
        try:
            project = self.server.panel.project(form.get("project", ""))
        except KeyError:
            self._text(HTTPStatus.BAD_REQUEST, f"no project `{form.get('project', '')}` in this panel\n")
            return None
        machine = form.get("machine", "")
        if machine not in {m.name for m in project.machines}:
            self._text(HTTPStatus.BAD_REQUEST, f"no machine `{machine}` in project `{project.id}`\n")
            return None
        return project, machine

    def _started(self, job: Any) -> None:
        self.server.panel.forget_plans()
        if "application/json" in self.headers.get("Accept", ""):
            return self._json({"job": job.id}, HTTPStatus.ACCEPTED)
        self._redirect(f"/jobs/{job.id}")

    # -- pages ------------------------------------------------------------------------------

    def _trade(self, token: str) -> None:
        session = self.server.guard.trade(token)
        if session is None:
            return self._token_required("that token is not this panel's")
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{auth.COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/")
        self._finish_headers(0)

    def _page(self, session: str) -> None:
        state = self.server.panel.state()
        html = self.server.templates.get_template("page.html.j2").render(
            state=state, csrf=self.server.guard.csrf(session), jobs=self.server.jobs.running(),
            all_projects=self.server.panel.taperfile is None,
        )
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _job_page(self, job_id: str) -> None:
        job = self.server.jobs.get(job_id)
        if job is None:
            return self._text(HTTPStatus.NOT_FOUND, "no such job\n")
        html = self.server.templates.get_template("job.html.j2").render(job=job)
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _confirm_page(self, project: str, machine: str, form: dict[str, str]) -> None:
        html = self.server.templates.get_template("confirm.html.j2").render(
            project=project, machine=machine, csrf=form.get("csrf", "")
        )
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _token_required(self, why: str = "") -> None:
        html = self.server.templates.get_template("token.html.j2").render(why=why)
        self._send(HTTPStatus.UNAUTHORIZED, html.encode(), "text/html; charset=utf-8")

    # -- plumbing ---------------------------------------------------------------------------

    def _foreign_host(self) -> bool:
        """A request naming another host (a page elsewhere whose name points here) is refused."""
        if self.server.guard.host_ok(self.headers.get("Host")):
            return False
        self._text(HTTPStatus.FORBIDDEN, "this panel answers only to 127.0.0.1 and localhost\n")
        return True

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 65536)).decode("utf-8", "replace")
        return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self._finish_headers(0)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self._finish_headers(len(body))
        self.wfile.write(body)

    def _finish_headers(self, length: int) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()


def _number(text: str | None) -> float:
    try:
        return max(0.0, float(text or 0))
    except ValueError:
        return 0.0
