"""The panel's HTTP server: 127.0.0.1 only, every route behind the Guard (see auth.py).

  GET  /?token=T            trade the printed token for a session cookie, then /
  GET  /                    the page (readable without JavaScript; the script keeps it live)
  GET  /api/state?since=T   machines, plan, usage points newer than T (JSON)
  GET  /api/jobs/ID?from=N  a command's output from line N (JSON)
  GET  /jobs/ID             the same as a page (for browsers without JavaScript)
  GET  /assets/NAME         the script and the style sheet
  POST /action              project, machine, action (up, halt, ...; destroy needs confirm=machine)
  POST /limits              project, machine, cpus, memory, pids, save

`project` is a project's key (see Panel.key: it names the project's folder, never its
`name:`, which two folders may share).

Whatever arrives is bounded: a request (its line, headers and body) must arrive within
`request_timeout` seconds, a body has a Content-Length of at most MAX_BODY bytes (else it
is refused unread and the connection closed: its bytes are never taken for a request),
at most `max_connections` connections are served at once (the next ones get a 503), and
a query or form has at most MAX_FIELDS fields.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

from tapers.ui import auth
from tapers.ui.connections import MAX_BODY, MAX_CONNECTIONS, REQUEST_TIMEOUT, Arrival, BoundedServer
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
MAX_FIELDS = 50  # fields in a query string or a form


class PanelServer(BoundedServer):
    def __init__(self, port: int, panel: Panel, token: str | None = None, *,
                 request_timeout: float = REQUEST_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        from tapers.project_files import invoker

        # Only the person who started it may even connect: the session cookie goes to every
        # port of 127.0.0.1 (a link to a forwarded port another user listens on would leak it).
        owners = frozenset({os.geteuid(), invoker()[0]})
        super().__init__(("127.0.0.1", port), Handler, request_timeout, max_connections, owners)
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
    timeout = REQUEST_TIMEOUT  # replaced by the server's request_timeout in setup

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet: the terminal shows the URL)
        pass

    def setup(self) -> None:
        self.timeout = self.server.request_timeout
        super().setup()
        self.rfile.close()  # the plain buffered file: read through Arrival instead
        self.arrival = Arrival(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.arrival)

    def handle_one_request(self) -> None:
        self.arrival.restart()
        self.responded = False
        self.body_read = False
        super().handle_one_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.responded = True
        super().send_response(code, message)

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue` with a body that would be refused: refused before it is sent."""
        refused = self._body_refusal() if self.command == "POST" else None
        if refused:
            self._text(*refused, close=True)
            return False
        return super().handle_expect_100()

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def do_PUT(self) -> None:  # noqa: N802
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and POST\n")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _answer(self, route: Callable[[], None]) -> None:
        """Run a route; an unexpected error is reported and answered 500, never left hanging."""
        try:
            route()
        except (ConnectionError, TimeoutError):
            raise  # the client went away or was too slow: the connection is dropped
        except Exception:  # noqa: BLE001
            self.server.report(f"{self.command} {self.path[:200]!r}", traceback.format_exc())
            if not self.responded:
                self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error: see the terminal running tapers ui\n",
                           close=True)
            self.close_connection = True

    def _get(self) -> None:
        path, query = _split(self.path)
        if self._foreign_host():
            return None
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        fields = self._fields(query)
        if fields is None:
            return None
        if path == "/" and "token" in fields:
            return self._trade(fields["token"])
        session = self.server.guard.session(self.headers)
        if session is None:
            return self._token_required()
        if path == "/":
            return self._page(session)
        if path == "/api/state":
            return self._json(self.server.panel.state(_since(fields.get("since"))))
        if path.startswith("/api/jobs/"):
            job = self.server.jobs.get(path.rsplit("/", 1)[1])
            if job is None:
                return self._json({"error": "no such job"}, HTTPStatus.NOT_FOUND)
            return self._json(job.view(_line(fields.get("from"))))
        if path.startswith("/jobs/"):
            return self._job_page(path.rsplit("/", 1)[1])
        if path.startswith("/assets/") and path[8:] in STATIC:
            name = path[8:]
            return self._send(HTTPStatus.OK, (ASSETS / name).read_bytes(), STATIC[name])
        return self._text(HTTPStatus.NOT_FOUND, "not found\n")

    def _post(self) -> None:
        refused = self._body_refusal()
        if refused:  # answered unread, and the connection closed: its bytes are no request
            return self._text(*refused, close=True)
        form = self._form()  # read first: the connection stays usable whatever the answer
        if form is None or self._foreign_host():
            return None
        path, _ = _split(self.path)
        guard = self.server.guard
        session = guard.session(self.headers)
        if session is None:
            return self._token_required()
        refused_change = guard.change_allowed(session, self.headers, form.get("csrf"))
        if refused_change:
            return self._text(HTTPStatus.FORBIDDEN, f"refused: {refused_change}\n")
        if path == "/action":
            return self._action(form)
        if path == "/limits":
            return self._limits(form)
        return self._text(HTTPStatus.NOT_FOUND, "not found\n")

    # -- actions ----------------------------------------------------------------------------

    def _action(self, form: dict[str, str]) -> None:
        action = form.get("action", "")
        if action not in COMMANDS:
            return self._text(HTTPStatus.BAD_REQUEST,
                              f"unknown action `{_shown(action)}`: one of {', '.join(COMMANDS)}\n")
        target = self._target(form)
        if target is None:
            return None
        project, machine = target
        if action == "destroy" and form.get("confirm") != machine:
            return self._confirm_page(project, machine, form)
        job = self.server.jobs.start(project.loaded.path, f"{action} {machine}", [*COMMANDS[action], "--", machine])
        self._started(job)

    def _limits(self, form: dict[str, str]) -> None:
        target = self._target(form)
        if target is None:
            return None
        project, machine = target
        options = [f"--{key}={form[key].strip()}" for key in LIMIT_KEYS if form.get(key, "").strip()]
        if not options:
            return self._text(HTTPStatus.BAD_REQUEST, "give at least one of cpus, memory, pids (or `none`)\n")
        if form.get("save") in ("1", "on", "true"):
            options.append("--save")
        self._started(self.server.jobs.start(project.loaded.path, f"limits {machine}",
                                             ["limits", *options, "--", machine]))

    def _target(self, form: dict[str, str]) -> tuple[Any, str] | None:
        """The project (by its key) and the machine of the form, or None after answering 400."""
        key = form.get("project", "")
        project = self.server.panel.project(key)
        if project is None:
            self._text(HTTPStatus.BAD_REQUEST, f"no project `{_shown(key)}` in this panel (reload the page)\n")
            return None
        machine = form.get("machine", "")
        if machine not in {m.name for m in project.machines}:
            self._text(HTTPStatus.BAD_REQUEST,
                       f"no machine `{_shown(machine)}` in project `{project.id}` ({project.root})\n")
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

    def _confirm_page(self, project: Any, machine: str, form: dict[str, str]) -> None:
        html = self.server.templates.get_template("confirm.html.j2").render(
            project=project.id, key=form.get("project", ""), root=str(project.root),
            machine=machine, csrf=form.get("csrf", ""),
        )
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _token_required(self, why: str = "") -> None:
        html = self.server.templates.get_template("token.html.j2").render(why=why)
        self._send(HTTPStatus.UNAUTHORIZED, html.encode(), "text/html; charset=utf-8")

    # -- what came in -----------------------------------------------------------------------

    def _foreign_host(self) -> bool:
        """A request naming another host (a page elsewhere whose name points here) is refused."""
        if self.server.guard.host_ok(self.headers.get("Host")):
            return False
        self._text(HTTPStatus.FORBIDDEN, "this panel answers only to 127.0.0.1 and localhost\n")
        return True

    def _body_refusal(self) -> tuple[HTTPStatus, str] | None:
        """Why a POST's body is not read (None: its Content-Length is fine)."""
        if "Transfer-Encoding" in self.headers:
            return HTTPStatus.NOT_IMPLEMENTED, "Transfer-Encoding is not accepted: send a Content-Length\n"
        given = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
        if not given:
            return HTTPStatus.BAD_REQUEST, "a POST needs a Content-Length\n"
        if len(given) > 1:
            return HTTPStatus.BAD_REQUEST, "several different Content-Length headers\n"
        (text,) = given
        if not (text.isascii() and text.isdigit()):
            return HTTPStatus.BAD_REQUEST, f"Content-Length must be a number of bytes, not `{_shown(text)}`\n"
        if len(text.lstrip("0")) > len(str(MAX_BODY)) or int(text) > MAX_BODY:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request body may have at most {MAX_BODY} bytes\n"
        return None

    def _form(self) -> dict[str, str] | None:
        """The POST's fields (after _body_refusal found its length fine), or None after answering."""
        length = int(self.headers["Content-Length"].strip())
        body = self.rfile.read(length)
        self.body_read = True
        if len(body) < length:
            self._text(HTTPStatus.BAD_REQUEST, "the body ended before its Content-Length\n", close=True)
            return None
        return self._fields(body.decode("utf-8", "replace"))

    def _fields(self, text: str) -> dict[str, str] | None:
        """name -> value (the last given) of a query string or form, or None after answering 400."""
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            self._text(HTTPStatus.BAD_REQUEST, f"at most {MAX_FIELDS} fields in a query or a form\n")
            return None
        return dict(pairs)

    def _leaves_body_unread(self) -> bool:
        """The request came with a body nobody read: what follows it on the connection is not
        a request of its own."""
        if self.body_read:
            return False
        length = (self.headers.get("Content-Length") or "0").strip()
        return "Transfer-Encoding" in self.headers or length.strip("0") != ""

    # -- answers ----------------------------------------------------------------------------

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _text(self, status: HTTPStatus, text: str, close: bool = False) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", close)

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self._finish_headers(0)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self._finish_headers(len(body), close)
        self.wfile.write(body)

    def _finish_headers(self, length: int, close: bool = False) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        if close or self._leaves_body_unread():
            self.send_header("Connection", "close")  # also ends the connection after this answer
        self.end_headers()


def _split(target: str) -> tuple[str, str]:
    """A request target's path and query (a fragment, which browsers never send, is dropped)."""
    path, _, query = target.partition("#")[0].partition("?")
    return path, query


def _since(text: str | None) -> float:
    """A sample time: a finite number >= 0; anything else is 0 (everything)."""
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _line(text: str | None) -> int:
    """A line number: digits; anything else is 0 (from the first line)."""
    text = (text or "").strip()
    if not (text.isascii() and text.isdigit()):
        return 0
    return int(text) if len(text) <= 18 else sys.maxsize


def _shown(value: str, limit: int = 80) -> str:
    """A value from a request, as quoted back in an answer: short, and printable."""
    shown = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return shown + ("…" if len(value) > limit else "")
