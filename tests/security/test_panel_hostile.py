"""`tapers ui` against hostile requests and hostile project folders.

The server runs in-process on the fake backend (nothing is created: machines are simply
"not created", or containers exist only in the fake's memory), with its Jobs replaced by
a recorder, so no button ever runs a command. Malformed requests go over raw sockets.
Every refusal is checked together with what must not have happened: a second request
read out of a body, a job started, a thread left holding a connection, an internal error.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlencode

import pytest

from tapers.backend.api import State
from tapers.ui.jobs import Job, Jobs
from tapers.ui.panel import Panel
from tapers.ui.server import MAX_BODY, PanelServer
from tests.fakes import FakeBackend

TOKEN = "test-token"
TAPERFILE = "version: 1\nmachines:\n  web: {}\n"


# -- the server, in-process ----------------------------------------------------------------


class RecordingJobs(Jobs):
    """Jobs that run nothing: each start is noted, and is at once a finished job of two lines."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[Path, list[str]]] = []

    def start(self, taperfile: Path, title: str, args: list[str]) -> Job:
        self.started.append((taperfile, args))
        with self._lock:
            job = Job(next(self._numbers), title, ["tapers", "-f", str(taperfile), *args])
            self._jobs[job.id] = job
        job.add("first line")
        job.add("second line")
        job.code = 0
        return job


class Running:
    def __init__(self, server: PanelServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread
        self.port = server.server_address[1]
        self.jobs: RecordingJobs = server.jobs  # type: ignore[assignment]
        self.host = f"127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: dict[str, str] | bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """A well-formed request, as a browser or script would send it (with the token)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = urlencode(body).encode() if isinstance(body, dict) else body
            sent = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
            connection.request(method, path, body=data,
                               headers={"Authorization": f"Bearer {TOKEN}", **sent, **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()

    def state(self) -> dict:
        status, _, text = self.request("GET", "/api/state")
        assert status == 200, text
        return json.loads(text)

    def csrf(self) -> str:
        status, _, html = self.request("GET", "/")
        assert status == 200, html
        return re.search(r'<meta name="csrf" content="([^"]+)"', html).group(1)

    def post(self, path: str, **fields: str) -> tuple[int, dict[str, str], str]:
        """A POST from the page itself (Origin and CSRF token right)."""
        return self.request("POST", path, {**fields, "csrf": self.csrf()},
                            headers={"Origin": f"http://{self.host}", "Accept": "application/json"})

    def still_answers(self) -> None:
        """The panel answers a normal request, and no request so far broke it."""
        assert self.state()["projects"], "the panel no longer shows its project"
        assert self.server.errors == [], self.server.errors
        assert self.thread.is_alive()


@pytest.fixture
def project_dir(tmp_path: Path, fake_box_home: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "Taperfile.yaml").write_text(TAPERFILE)
    return folder


@pytest.fixture
def serve(project_dir: Path) -> Iterator[Callable[..., Running]]:
    """Start a panel (its project, or `panel=` one); stopped after the test."""
    started: list[Running] = []

    def start(panel: Panel | None = None, **options: float) -> Running:
        panel = panel or Panel(FakeBackend(), (project_dir / "Taperfile.yaml").resolve())
        server = PanelServer(0, panel, TOKEN, **options)  # type: ignore[arg-type]
        server.jobs = RecordingJobs()
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        started.append(Running(server, thread))
        return started[-1]

    yield start
    for running in started:
        running.server.shutdown()
        running.server.server_close()
        running.thread.join(10)
        assert not running.thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


# -- raw HTTP ------------------------------------------------------------------------------


def connect(ui: Running) -> socket.socket:
    return socket.create_connection(("127.0.0.1", ui.port), timeout=10)


def until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"the server kept the connection open; it sent {data[:300]!r}") from None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def exchange(ui: Running, raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes; the responses read until the server closed the connection."""
    with connect(ui) as sock:
        sock.sendall(raw)
        return responses(until_closed(sock))


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        found.append((int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return found


def raw_request(ui: Running, method: str, path: str, headers: dict[str, str] | list[tuple[str, str]],
                body: bytes = b"") -> bytes:
    pairs = headers.items() if isinstance(headers, dict) else headers
    head = [f"{method} {path} HTTP/1.1", f"Host: {ui.host}", f"Authorization: Bearer {TOKEN}",
            f"Origin: http://{ui.host}", *(f"{k}: {v}" for k, v in pairs)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def smuggled(ui: Running) -> bytes:
    """A whole second request, as a body would carry it: must never be answered."""
    return f"GET /api/state HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()


def form(ui: Running, **fields: str) -> bytes:
    return urlencode({"project": ui.state()["projects"][0]["key"], "machine": "web", "action": "up",
                      "csrf": ui.csrf(), **fields}).encode()


def refused_once(answers: list[tuple[int, dict[str, str], bytes]], status: int) -> bytes:
    """Exactly one answer (nothing smuggled was answered), with `status`, closing the connection."""
    assert [a[0] for a in answers] == [status], answers
    (_, headers, body), = answers
    assert headers.get("connection") == "close", headers
    return body


# -- 1. Content-Length ---------------------------------------------------------------------


@pytest.mark.parametrize("length", ["abc", "-1", "+5", "1e3", "0x10", "5, 5", "", "\xb3", "1_0"])
def test_a_bad_content_length_is_refused_unread_and_the_connection_closed(serve, length: str) -> None:
    ui = serve()
    body = form(ui) + smuggled(ui)
    answers = exchange(ui, raw_request(ui, "POST", "/action", {"Content-Length": length}, body))
    text = refused_once(answers, 400)
    assert b"Content-Length" in text
    assert ui.jobs.started == []
    ui.still_answers()


def test_a_post_without_content_length_is_refused(serve) -> None:
    ui = serve()
    answers = exchange(ui, raw_request(ui, "POST", "/action", {}, form(ui) + smuggled(ui)))
    assert b"needs a Content-Length" in refused_once(answers, 400)
    assert ui.jobs.started == []
    ui.still_answers()


@pytest.mark.parametrize("length", [str(MAX_BODY + 1), "70000", "99999999999999999999999999999999"])
def test_a_too_large_body_is_refused_and_never_read_as_a_request(serve, length: str) -> None:
    ui = serve()
    padding = form(ui) + b"&x=" + b"a" * MAX_BODY  # what the old server cut at 64 KiB...
    body = padding[:MAX_BODY] + smuggled(ui)  # ...and then read as a request of its own
    answers = exchange(ui, raw_request(ui, "POST", "/action", {"Content-Length": length}, body))
    assert b"at most 65536 bytes" in refused_once(answers, 413)
    assert ui.jobs.started == []
    ui.still_answers()


def test_conflicting_lengths_and_chunked_bodies_are_refused(serve) -> None:
    ui = serve()
    body = form(ui)
    two = [("Content-Length", str(len(body))), ("Content-Length", "5")]
    answers = exchange(ui, raw_request(ui, "POST", "/action", two, body + smuggled(ui)))
    assert b"several different" in refused_once(answers, 400)
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answers = exchange(ui, raw_request(ui, "POST", "/action", {"Transfer-Encoding": "chunked"}, chunk + smuggled(ui)))
    assert b"Transfer-Encoding" in refused_once(answers, 501)
    assert ui.jobs.started == []
    ui.still_answers()


def test_expect_continue_with_a_too_large_body_is_refused_before_it_is_sent(serve) -> None:
    ui = serve()
    with connect(ui) as sock:
        sock.sendall(raw_request(ui, "POST", "/action", {"Content-Length": "1000000", "Expect": "100-continue"}))
        answers = responses(until_closed(sock))  # no "100 Continue": the refusal, and the end
    refused_once(answers, 413)
    ui.still_answers()


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_a_body_nobody_reads_ends_the_connection(serve, method: str) -> None:
    """A GET (or a refused method) with a body: answered, and the connection closed, so
    the body is never taken for the next request."""
    ui = serve()
    inner = raw_request(ui, "POST", "/action", {"Content-Length": str(len(form(ui)))}, form(ui))
    answers = exchange(ui, raw_request(ui, method, "/api/state", {"Content-Length": str(len(inner))}, inner))
    assert len(answers) == 1 and answers[0][1].get("connection") == "close", answers
    assert answers[0][0] == (200 if method == "GET" else 405)
    assert ui.jobs.started == []
    ui.still_answers()


def test_well_formed_requests_keep_the_connection_usable(serve) -> None:
    """The refusals above close the connection; good requests on one connection still work."""
    ui = serve()
    connection = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Origin": f"http://{ui.host}", "Accept": "application/json",
                   "Content-Type": "application/x-www-form-urlencoded"}
        for machine, expected in (("nope", 400), ("web", 202)):
            connection.request("POST", "/action", body=form(ui, machine=machine), headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == expected and response.getheader("Connection") != "close"
        connection.request("GET", "/api/state", headers=headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert [args for _, args in ui.jobs.started] == [["up", "--", "web"]]
    ui.still_answers()


# -- 2. slow, half-sent and too many connections --------------------------------------------


def test_a_half_sent_request_is_dropped_after_the_timeout(serve) -> None:
    ui = serve(request_timeout=0.5)
    with connect(ui) as sock:
        sock.sendall(f"GET /api/state HTTP/1.1\r\nHost: {ui.host}\r\n".encode())  # never ends
        began = time.monotonic()
        assert until_closed(sock, timeout=10) == b""
        assert time.monotonic() - began >= 0.3
    wait_for(lambda: ui.server.open_connections == 0, 10, "the connection's thread ending")
    ui.still_answers()


def test_a_body_shorter_than_its_length_is_dropped(serve) -> None:
    ui = serve(request_timeout=0.5)
    body = form(ui)
    with connect(ui) as sock:
        sock.sendall(raw_request(ui, "POST", "/action", {"Content-Length": str(len(body) + 100)}, body))
        assert until_closed(sock, timeout=10) == b""
    wait_for(lambda: ui.server.open_connections == 0, 10, "the connection's thread ending")
    assert ui.jobs.started == []
    ui.still_answers()


def test_a_trickled_request_is_dropped_at_its_deadline(serve) -> None:
    """Each byte comes well within the timeout, but the request as a whole does not."""
    ui = serve(request_timeout=1.0)
    with connect(ui) as sock:
        sock.sendall(f"GET /api/state HTTP/1.1\r\nHost: {ui.host}\r\nX-Slow: ".encode())
        began = time.monotonic()
        sock.settimeout(0.2)  # the pause between bytes: a fifth of the timeout
        while True:
            assert time.monotonic() - began < 10, "a trickled request held its connection for 10 s"
            try:
                if sock.recv(1024) == b"":
                    break  # the server dropped it
            except socket.timeout:
                pass
            except ConnectionResetError:
                break
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
    wait_for(lambda: ui.server.open_connections == 0, 10, "the connection's thread ending")
    ui.still_answers()


def test_connections_past_the_limit_get_503_and_their_slots_come_back(serve) -> None:
    ui = serve(max_connections=3, request_timeout=30)
    idle = [connect(ui) for _ in range(3)]
    try:
        wait_for(lambda: ui.server.open_connections == 3, 10, "three connections being served")
        with connect(ui) as extra:
            answers = responses(until_closed(extra))
        assert [a[0] for a in answers] == [503] and b"too many connections" in answers[0][2]
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: ui.server.open_connections == 0, 10, "the closed connections' threads ending")
    ui.still_answers()


OTHER_USER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET /?token=" + sys.argv[2].encode() + b" HTTP/1.1\\r\\nHost: 127.0.0.1:" + sys.argv[1].encode() + b"\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.decode("latin-1"))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="connects as another user: needs root")
def test_another_user_of_the_host_is_not_served_even_with_the_token(serve) -> None:
    """The session cookie goes to every port of 127.0.0.1 (a forwarded port's link, a service
    another user runs): with the cookie or the token, another user still gets nothing."""
    ui = serve(max_connections=2)
    for _ in range(4):  # (nor do their connections take the owner's slots)
        theirs = subprocess.run(["/usr/bin/python3", "-I", "-c", OTHER_USER, str(ui.port), TOKEN], user=65534,
                                group=65534, extra_groups=[], capture_output=True, text=True, timeout=30)
        assert theirs.stdout.startswith("HTTP/1.1 403 "), theirs
        assert "answers only the user who started it" in theirs.stdout and "Set-Cookie" not in theirs.stdout
    status, _, _ = ui.request("GET", "/api/state")
    assert status == 200


def test_half_open_connections_do_not_keep_their_threads(serve) -> None:
    ui = serve(request_timeout=0.5)
    idle = [connect(ui) for _ in range(20)]
    try:
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        wait_for(lambda: ui.server.open_connections == 0, 15, "every half-sent connection dropped")
        ui.still_answers()
    finally:
        for sock in idle:
            sock.close()


# -- 3. any query value ---------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "since=inf", "since=nan", "since=-inf", "since=-1", "since=1e999", "since=%ff%fe", "since=1&since=2",
    "since=" + "9" * 5000, "since=%00", "since", "since=0x10", "=&&=", "since=1e308",
])
def test_any_since_gets_the_state(serve, query: str) -> None:
    ui = serve()
    status, _, text = ui.request("GET", f"/api/state?{query}")
    assert status == 200, text
    assert json.loads(text)["projects"][0]["machines"][0]["machine"] == "web"
    ui.still_answers()


@pytest.mark.parametrize(("query", "lines"), [
    ("from=inf", 2), ("from=nan", 2), ("from=-1", 2), ("from=1e999", 2), ("from=%ff", 2), ("from=1.5", 2),
    ("from=1", 1), ("from=2", 0), ("from=1&from=2", 0), ("from=" + "9" * 5000, 0), ("from=99999999999999999999", 0),
    ("from=%D9%A1", 2),
])
def test_any_from_gets_the_jobs_output(serve, query: str, lines: int) -> None:
    ui = serve()
    assert ui.post("/action", project=ui.state()["projects"][0]["key"], machine="web", action="up")[0] == 202
    status, _, text = ui.request("GET", f"/api/jobs/1?{query}")
    assert status == 200, text
    job = json.loads(text)
    assert len(job["lines"]) == lines and job["next"] == 2 and job["done"]
    ui.still_answers()


def test_too_many_fields_are_refused(serve) -> None:
    ui = serve()
    status, _, text = ui.request("GET", "/api/state?" + "&".join(["a=1"] * 200))
    assert status == 400 and "at most" in text
    status, _, text = ui.post("/action", **{f"f{i}": "x" for i in range(200)})
    assert status == 400 and "at most" in text
    assert ui.jobs.started == []
    ui.still_answers()


@pytest.mark.parametrize("path", ["/?token=%ff", "/?token=%C3%A9", "/?token=a&token=b", "/?token=", "/?token=%00"])
def test_any_token_value_gets_the_token_page(serve, path: str) -> None:
    ui = serve()
    with connect(ui) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ui.host}\r\nConnection: close\r\n\r\n".encode())
        answers = responses(until_closed(sock))
    assert answers[0][0] == 401 and b"Token required" in answers[0][2]
    ui.still_answers()


def test_odd_headers_and_targets_get_an_answer(serve) -> None:
    ui = serve()
    odd = [
        (f"GET /api/state HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer \xe9\xff\r\n", 401),
        (f"GET /api/state HTTP/1.1\r\nHost: {ui.host}\r\nCookie: tapers_ui=\xe9; =; ;;\r\n", 401),
        (f"GET /api/state HTTP/1.1\r\nHost: \xe9:{ui.port}\r\n", 403),
        ("GET /api/state HTTP/1.1\r\n", 403),  # no Host at all
        (f"GET //[ HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer {TOKEN}\r\n", 404),
        (f"GET http://evil.example/ HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer {TOKEN}\r\n", 404),
        (f"GET /jobs/%ff%00 HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer {TOKEN}\r\n", 404),
        (f"GET /api/jobs/ HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer {TOKEN}\r\n", 404),
        (f"GET /assets/../server.py HTTP/1.1\r\nHost: {ui.host}\r\nAuthorization: Bearer {TOKEN}\r\n", 404),
    ]
    for head, status in odd:
        answers = exchange(ui, (head + "Connection: close\r\n\r\n").encode("latin-1"))
        assert [a[0] for a in answers] == [status], (head, answers)
    ui.still_answers()


def test_a_csrf_token_of_any_text_is_refused_not_a_crash(serve) -> None:
    ui = serve()
    key = ui.state()["projects"][0]["key"]
    for csrf in ("%C3%A9", "%ff", "%ED%B3%BF", "%00", "a" * 10000, "%E2%80%AE"):
        body = f"project={key}&machine=web&action=up&csrf={csrf}".encode()
        status, _, text = ui.request("POST", "/action", body, headers={"Origin": f"http://{ui.host}"})
        assert status == 403 and "CSRF" in text
    assert ui.jobs.started == []
    ui.still_answers()


# -- 4. projects are their folders ----------------------------------------------------------


def machine_record(project: str, folder: Path, machine: str) -> dict:
    """A whole record, as `tapers up` writes it, as JSON data."""
    from tests.fakes import make_record

    return json.loads(make_record(machine, project=project, project_dir=str(folder)).to_json())


def add_container(backend: FakeBackend, name: str, record: object, state: State = State.RUNNING) -> None:
    """A container whose stored record is `record` as JSON text (None: no record)."""
    backend.containers[name] = {"state": state, "record": None if record is None else json.dumps(record)}


def up_in(backend: FakeBackend, folder: Path, machines: list[str]) -> None:
    """What `tapers up MACHINE...` in that folder leaves (on the fake backend): real records."""
    from tapers.engine.apply import Context, apply
    from tapers.events import SilentReporter
    from tapers.engine.observe import observe
    from tapers.engine.plan import plan_up
    from tapers.project import open_project

    project = open_project(explicit=folder / "Taperfile.yaml")
    key = "ssh-ed25519 AAAAprojectkey"
    ctx = Context(project, backend, SilentReporter(), project_key=key, ssh_check=lambda *args: None)
    apply(plan_up(project.select(machines), observe(project, backend), key, {"debian/bookworm"}), ctx)


def folder_with(root: Path, name: str, taperfile: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Taperfile.yaml").write_text(taperfile)
    return folder.resolve()


def test_two_folders_with_the_same_name_are_told_apart(serve, tmp_path: Path, fake_box_home: Path) -> None:
    same = "version: 1\nname: shop\nmachines:\n  web: {}\n  api: {}\n"
    first, second = folder_with(tmp_path, "first", same), folder_with(tmp_path, "second", same)
    backend = FakeBackend()
    up_in(backend, first, ["web"])
    up_in(backend, second, ["api"])
    ui = serve(Panel(backend, None))

    shown = {p["root"]: p for p in ui.state()["projects"]}
    assert set(shown) == {str(first), str(second)} and {p["id"] for p in shown.values()} == {"shop"}
    key_first, key_second = shown[str(first)]["key"], shown[str(second)]["key"]
    assert key_first != key_second
    states = {m["machine"]: m["state"] for m in shown[str(second)]["machines"]}
    assert states == {"web": "not created", "api": "running"}  # its web is the other folder's

    # the button of the second folder's web acts on the second folder, not the first
    assert ui.post("/action", project=key_second, machine="web", action="halt")[0] == 202
    assert ui.post("/action", project=key_first, machine="web", action="halt")[0] == 202
    assert ui.jobs.started == [(second / "Taperfile.yaml", ["halt", "--", "web"]),
                               (first / "Taperfile.yaml", ["halt", "--", "web"])]
    status, _, text = ui.post("/action", project="shop", machine="web", action="halt")  # a name is no key
    assert status == 400 and "no project `shop`" in text
    assert len(ui.jobs.started) == 2

    # the page and the destroy question name the folder by its key
    _, _, html = ui.request("GET", "/")
    assert html.count(f'name="project" value="{key_second}"') == 4  # two machines, two forms each
    assert 'name="project" value="shop"' not in html
    status, _, page = ui.request("POST", "/action", {"project": key_second, "machine": "api", "action": "destroy",
                                                    "csrf": ui.csrf()}, headers={"Origin": f"http://{ui.host}"})
    assert status == 200 and f'name="project" value="{key_second}"' in page and str(second) in page
    assert len(ui.jobs.started) == 2
    ui.still_answers()


def test_limits_options_cannot_become_other_options(serve) -> None:
    ui = serve()
    key = ui.state()["projects"][0]["key"]
    assert ui.post("/limits", project=key, machine="web", memory="--save", cpus=" 2 ")[0] == 202
    assert ui.jobs.started[0][1] == ["limits", "--cpus=2", "--memory=--save", "--", "web"]


# -- 5. which folders `--all` reads ---------------------------------------------------------


def test_all_reads_only_the_taperfile_of_the_recorded_folder_itself(serve, tmp_path: Path, fake_box_home: Path) -> None:
    backend = FakeBackend()
    good = folder_with(tmp_path, "good", "version: 1\nname: good\nmachines:\n  web: {}\n")
    up_in(backend, good, ["web"])

    parent = folder_with(tmp_path, "parent", "version: 1\nname: walk\nmachines:\n  web: {}\n")
    (parent / "child").mkdir()  # no Taperfile of its own: its parent's must not be read
    add_container(backend, "tapers-walk-web", machine_record("walk", parent / "child", "web"))

    other = folder_with(tmp_path, "other", "version: 1\nname: link\nmachines:\n  web: {}\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "Taperfile.yaml").symlink_to(other / "Taperfile.yaml")  # a link out of its folder
    add_container(backend, "tapers-link-web", machine_record("link", linked.resolve(), "web"))

    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "Taperfile.yaml")  # reading it would wait for ever
    add_container(backend, "tapers-fifo-web", machine_record("fifo", fifo.resolve(), "web"))

    ui = serve(Panel(backend, None))
    assert [p["root"] for p in ui.state()["projects"]] == [str(good)]
    refused_keys = [project_key_of(folder) for folder in (parent, parent / "child", other, linked, fifo)]
    for key in refused_keys:
        status, _, text = ui.post("/action", project=key, machine="web", action="up")
        assert status == 400 and "no project" in text
    assert ui.jobs.started == []
    ui.still_answers()


def project_key_of(folder: Path) -> str:
    from tapers.ui.panel import project_key

    return project_key(folder / "Taperfile.yaml")


GONE = object()  # a key the hostile record lacks


@pytest.mark.parametrize("changes", [
    None, {}, "tapers", ["project_dir"],
    {"tapers": GONE},  # no record version
    {"tapers": "1"},
    {"tapers": 99},  # a newer tapers
    {"machine": 7},
    {"machine": GONE},
    {"project_dir": "bad"},  # relative: where tapers ui runs
    {"project_dir": ["{folder}"]},
    {"project": "other"},  # not this container's name
    {"machine": "db"},
])
def test_all_reads_folders_of_tapers_machine_records_only(serve, tmp_path: Path, fake_box_home: Path,
                                                           monkeypatch, changes: object) -> None:
    """A whole record of project `bad` with one thing wrong (or no record at all)."""
    folder = folder_with(tmp_path, "bad", "version: 1\nname: bad\nmachines:\n  web: {}\n")
    monkeypatch.chdir(tmp_path)
    record: object = changes
    if isinstance(changes, dict) and changes:
        record = {**machine_record("bad", folder, "web"), **changes}
        record = {k: v for k, v in record.items() if v is not GONE}
    text = json.dumps(record).replace("{folder}", str(folder))
    backend = FakeBackend()
    add_container(backend, "tapers-bad-web", json.loads(text))
    ui = serve(Panel(backend, None))
    assert ui.state()["projects"] == []
    status, _, _ = ui.post("/action", project=project_key_of(folder), machine="web", action="up")
    assert status == 400 and ui.jobs.started == []


def test_the_same_record_unchanged_is_read(serve, tmp_path: Path, fake_box_home: Path) -> None:
    """The hostile records above fail for what they change, not for what the base lacks."""
    from tapers.project import open_project

    folder = folder_with(tmp_path, "bad", "version: 1\nname: bad\nmachines:\n  web: {}\n")
    backend = FakeBackend()
    add_container(backend, "tapers-bad-web", machine_record("bad", folder, "web"))
    ui = serve(Panel(backend, None))
    assert [p["id"] for p in ui.state()["projects"]] == [open_project(explicit=folder / "Taperfile.yaml").id]


@pytest.mark.parametrize("taperfile", [
    "version: 1\nname: beta\nmachines:\n  web: {}\n",  # another name: other containers
    "version: 1\nname: alpha\nmachines:\n  db: {}\n",  # not that machine
    "version: 1\nmachines:\n  web: {}\n",  # no name: the folder's, with a hash
])
def test_all_offers_a_folder_only_if_its_taperfile_makes_that_machine(serve, tmp_path: Path, fake_box_home: Path,
                                                                        taperfile: str) -> None:
    folder = folder_with(tmp_path, "alpha", taperfile)
    backend = FakeBackend()
    add_container(backend, "tapers-alpha-web", machine_record("alpha", folder, "web"))
    ui = serve(Panel(backend, None))
    assert ui.state()["projects"] == []
    assert ui.post("/action", project=project_key_of(folder), machine="web", action="up")[0] == 400


def test_all_shows_a_broken_project_folder_with_its_error_and_no_buttons(serve, tmp_path: Path,
                                                                       fake_box_home: Path) -> None:
    folder = folder_with(tmp_path, "broken", "version: 1\nname: broken\nmachines:\n  web: {memroy: 1G}\n")
    backend = FakeBackend()
    add_container(backend, "tapers-broken-web", machine_record("broken", folder, "web"))
    ui = serve(Panel(backend, None))
    (shown,) = ui.state()["projects"]
    assert "memory" in shown["error"] and shown["machines"] == []
    assert ui.post("/action", project=shown["key"], machine="web", action="up")[0] == 400
    assert ui.jobs.started == []


# -- hostile Taperfiles --------------------------------------------------------------------


def alias_bomb() -> str:
    lines = ["version: 1", "x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\nmachines:\n  web: {}\n"


@pytest.mark.parametrize("text", [
    alias_bomb(),
    "version: 1\nmachines:\n  web: {}\nx: " + "[" * 3000 + "]" * 3000 + "\n",
    "version: 1\nmachines:\n  web: {}\n# " + "x" * 1_100_000 + "\n",
])
def test_a_taperfile_too_costly_to_read_is_shown_as_an_error(serve, project_dir: Path, text: str) -> None:
    ui = serve()
    (project_dir / "Taperfile.yaml").write_text(text)
    result: list[dict] = []
    reader = threading.Thread(target=lambda: result.append(ui.state()), daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), "reading the Taperfile did not end"
    (shown,) = result[0]["projects"]
    assert shown["error"] and shown["machines"] == []
    assert ui.post("/action", project=shown["key"], machine="web", action="up")[0] == 400
    (project_dir / "Taperfile.yaml").write_text(TAPERFILE)
    ui.still_answers()


def test_anchors_and_merge_keys_of_a_real_taperfile_are_fine(serve, project_dir: Path) -> None:
    ui = serve()
    (project_dir / "Taperfile.yaml").write_text(
        "version: 1\nmachines:\n  web: &small {memory: 256M, cpus: 1}\n  db: *small\n  api: {<<: *small, cpus: 2}\n"
    )
    (shown,) = ui.state()["projects"]
    assert "error" not in shown and [m["machine"] for m in shown["machines"]] == ["web", "db", "api"]


# -- the real command ----------------------------------------------------------------------


def test_tapers_ui_survives_hostile_requests_and_stops_cleanly(project_dir: Path, tmp_path: Path) -> None:
    """`tapers ui` as a user starts it (its backend lists containers; none is created)."""
    (project_dir / "Taperfile.yaml").write_text(f"version: 1\nname: hostile-{os.getpid()}\nmachines:\n  web: {{}}\n")
    env = {**os.environ, "TAPERS_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "tapers", "ui", "--port", "0"], cwd=project_dir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, f"tapers ui printed {line!r}; stderr: {process.stderr.read()}"
        url = line.split("open ", 1)[1].strip()
        port = int(url.split(":")[2].split("/")[0])
        token = url.rsplit("=", 1)[1]
        host = f"127.0.0.1:{port}"
        hostile = [
            f"POST /action HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\nx",
            f"POST /action HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n",
            f"POST /action HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n" + "a" * 70000,
            f"GET /api/jobs/1?from=inf HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n",
            f"GET /?token=%C3%A9 HTTP/1.1\r\nHost: {host}\r\n\r\n",
            f"GET /api/state?since=nan&since=1e999 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n",
            f"GET //[ HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer \xe9\r\n\r\n",
        ]
        for raw in hostile:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(raw.encode("latin-1"))
                sock.shutdown(socket.SHUT_WR)
                answer = until_closed(sock, timeout=30)
            assert answer.startswith(b"HTTP/1.1 ") and not answer.startswith(b"HTTP/1.1 500"), (raw[:60], answer[:200])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/state", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        state = json.loads(response.read())
        connection.close()
        assert response.status == 200 and state["projects"][0]["machines"][0]["state"] == "not created"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 0, err
    assert "tapers ui stopped" in out and "Traceback" not in err and "internal error" not in err, err
