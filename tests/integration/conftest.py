"""Fixtures for tests on real LXC containers.

Every test gets its own project (a unique name per test run, so parallel runs and
leftovers never collide) and a finalizer that destroys what it created, even when
the test fails. Without a usable LXC these tests skip with the reason, unless
TAPERS_REQUIRE_LXC=1 (CI sets it): then they fail.

Tests marked `both_backends` run twice: on liblxc, and on LXD through its HTTPS cluster
endpoint (the tapers config in TAPERS_TEST_LXD_CONFIG, which `scripts/lxd-test start`
writes; without it those runs skip, or fail under TAPERS_REQUIRE_LXC=1).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import pytest

RUN_ID = f"t{uuid.uuid4().hex[:6]}"
_counter = itertools.count(1)
BOX = "debian/bookworm"
LXD_CONFIG = os.environ.get("TAPERS_TEST_LXD_CONFIG")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.lxc)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_backends") and "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", ["liblxc", "lxd"], indirect=True)


@pytest.fixture
def backend_name(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "liblxc")


@pytest.fixture(scope="session")
def lxd_view(box_home):
    """LXD as the tests see it; at the end, this run's machines and images are removed."""
    if not LXD_CONFIG:
        if os.environ.get("TAPERS_REQUIRE_LXC") == "1":
            pytest.fail("LXD is required (TAPERS_REQUIRE_LXC=1) but TAPERS_TEST_LXD_CONFIG is not set: "
                        "run `eval \"$(scripts/lxd-test start)\"` first")
        pytest.skip("no test LXD: `eval \"$(scripts/lxd-test start)\"` starts one")
    from tests.integration.engines import LxdView

    view = LxdView(Path(LXD_CONFIG))
    yield view
    for name in view.names():
        if name.startswith(f"tapers-{RUN_ID}"):
            view.remove(name)
    if not os.environ.get("TAPERS_TEST_BOX_HOME"):
        view.remove_images(box_home.home)


def _lxc_problem() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    try:
        import lxc  # noqa: F401
    except ImportError as exc:
        return f"python-lxc is not importable ({exc})"
    from tapers.doctor import run_checks

    failed = [f"{c.name}: {c.detail}" for c in run_checks(full=True) if c.required and not c.ok]
    return "; ".join(failed) or None


@pytest.fixture(scope="session")
def lxc_ready() -> None:
    problem = _lxc_problem()
    if problem:
        if os.environ.get("TAPERS_REQUIRE_LXC") == "1":
            pytest.fail(f"LXC is required (TAPERS_REQUIRE_LXC=1) but unusable: {problem}")
        pytest.skip(f"LXC is not usable here: {problem}")


@dataclass
class Result:
    code: int
    out: str
    err: str
    args: tuple[str, ...]

    def ok(self) -> Result:
        assert self.code == 0, f"tapers {' '.join(self.args)} exited {self.code}\n--- out\n{self.out}\n--- err\n{self.err}"
        return self


def run_tapers(args: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float = 300, stdin: str | None = None) -> Result:
    process = subprocess.run(
        [sys.executable, "-P", "-m", "tapers", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return Result(process.returncode, process.stdout, process.stderr, args)


@dataclass
class BoxBuilds:
    home: Path
    build: Result | None  # `tapers box build`, run at the same time as...
    up: Result | None  # ...`tapers up` in a fresh project, which needs the same box
    up_state: str = ""  # the state LXC reported for that project's machine after `up`
    # (both None when a prebuilt home was reused)


@pytest.fixture(scope="session")
def box_home(lxc_ready) -> BoxBuilds:
    """A TAPERS_HOME with the default box, built for this test run by `tapers box build`
    and `tapers up` started together on an empty cache: one builds, the other waits for
    it and reuses the box.

    TAPERS_TEST_BOX_HOME=DIR reuses a box home across runs when developing."""
    reuse = os.environ.get("TAPERS_TEST_BOX_HOME")
    if reuse:
        home = Path(reuse)
        env = _env(home)
        if not any((home / "boxes").glob("*/*/box.json")):
            run_tapers(("box", "build", BOX), Path.cwd(), env, timeout=900).ok()
        yield BoxBuilds(home, None, None)
        _sweep()
        return
    home = Path(tempfile.mkdtemp(prefix=f"tapers-{RUN_ID}-home-", dir="/var/tmp"))
    env = _env(home)
    # not inside the box home: tapers refuses to sync a folder of its own box cache
    first = Project(Path(tempfile.mkdtemp(prefix=f"tapers-{RUN_ID}-first-", dir="/var/tmp")) / "project",
                    f"{RUN_ID}-0", env)
    first.root.mkdir()
    first.write("machines:\n  web: {}\n")
    commands = {"build": ("box", "build", BOX), "up": ("up",)}
    processes = {
        key: subprocess.Popen(
            [sys.executable, "-P", "-m", "tapers", *args], cwd=first.root,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        for key, args in commands.items()
    }
    results = {}
    for key, process in processes.items():
        out, err = process.communicate(timeout=900)
        results[key] = Result(process.returncode, out, err, commands[key])
    state = first.lxc_state("web")
    first.tapers("destroy", "-f")
    yield BoxBuilds(home, results["build"], results["up"], state)
    _sweep()
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(first.root.parent, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TAPERS_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["TAPERS_CACHE_MAX_SIZE"] = "0"  # no provisioning cache, but in the tests of it: steps run as tests expect
    env.pop("TAPERS_TEST_BOX_HOME", None)
    return env


def _sweep(prefix: str = f"tapers-{RUN_ID}", view=None) -> None:
    """Destroy any container this test run left (a failed test's finalizer must not leak)."""
    from tests.integration.engines import LiblxcView

    view = view or LiblxcView()
    for name in view.names():
        if name.startswith(prefix):
            view.remove(name)


USER = 4242  # a developer's uid, for projects that must not be root's


class Project:
    def __init__(self, root: Path, name: str, env: dict[str, str], view=None) -> None:
        from tests.integration.engines import LiblxcView

        self.root = root
        self.name = name
        self.env = env
        self.view = view or LiblxcView()  # the engine its machines run on, seen directly

    def write(self, taperfile: str) -> None:
        (self.root / "Taperfile.yaml").write_text(f"version: 1\nname: {self.name}\n" + taperfile)

    def tapers(self, *args: str, timeout: float = 300, stdin: str | None = None) -> Result:
        return run_tapers(args, self.root, self.env, timeout=timeout, stdin=stdin)

    def give_to_user(self) -> None:
        """Make the project folder and what is in it a developer's (uid USER), not root's: what
        a machine writes in a synced folder belongs to the folder's owner."""
        for path in (self.root, *self.root.rglob("*")):
            os.lchown(path, USER, USER)

    @contextmanager
    def built_box(self, recipe: str, *packages: str) -> Iterator[str]:
        """A box of `recipe` with more Debian packages, built for this test (its name); the
        machines made from it and the box are removed after."""
        name = f"{self.name}/{packages[0].replace('.', '-')}"
        options = [option for package in packages for option in ("--package", package)]
        try:
            self.tapers("box", "build", recipe, *options, "--name", name, timeout=900).ok()
            yield name
        finally:
            self.tapers("destroy", "-f")
            self.tapers("box", "remove", name)

    def container(self, machine: str) -> str:
        return f"tapers-{self.name}-{machine}"

    def lxc_state(self, machine: str) -> str:
        """The container's state as the engine itself reports it (not through tapers):
        RUNNING, STOPPED, FROZEN or MISSING."""
        return self.view.state(self.container(machine))

    def init_pid(self, machine: str) -> int:
        return self.view.init_pid(self.container(machine))

    def record(self, machine: str) -> dict:
        return self.view.record(self.container(machine))

    def save_record(self, machine: str, record: dict) -> None:
        self.view.save_record(self.container(machine), record)


@pytest.fixture
def project(box_home: BoxBuilds, tmp_path: Path, backend_name: str, request: pytest.FixtureRequest) -> Project:
    name = f"{RUN_ID}-{next(_counter)}"
    root = tmp_path / "project"
    root.mkdir()
    env = _env(box_home.home)
    view = None
    if backend_name == "lxd":
        view = request.getfixturevalue("lxd_view")
        env.update(TAPERS_BACKEND="lxd", TAPERS_CONFIG=LXD_CONFIG)
    proj = Project(root, name, env, view)
    yield proj
    if (root / "Taperfile.yaml").exists():
        proj.tapers("destroy", "-f", timeout=120)
    _sweep(f"tapers-{name}-", proj.view)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def until_it_ends(pid: int, fd: int, seen: bytearray, timeout: float, what: str,
                  answers: dict[bytes, bytes] | None = None) -> int:
    """Read the terminal `fd` of process `pid` into `seen` until the process ends, typing
    each answer once after its prompt shows; its exit status (os.waitpid's)."""
    import select

    pending, deadline = dict(answers or {}), time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"{what} never ended; the terminal showed: {bytes(seen)!r}"
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: the other side of the terminal closed
                pass
        for prompt in [p for p in pending if p in seen]:
            os.write(fd, pending.pop(prompt))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status


class Panel:
    """A running `tapers ui --port 0` and a small HTTP client for it."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url  # as printed: http://127.0.0.1:PORT/?token=...
        self.base, _, self.token = url.partition("/?token=")
        self.port = int(self.base.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        import http.client
        from urllib.parse import urlencode

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = urlencode(body).encode() if body is not None else None
            sent = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
            connection.request(method, path, body=data, headers={**sent, **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def state(self) -> dict:
        status, _, text = self.request("GET", "/api/state", headers=self.bearer())
        assert status == 200, text
        return json.loads(text)

    def machine(self, name: str) -> dict:
        (project,) = self.state()["projects"]
        return next(m for m in project["machines"] if m["machine"] == name)

    def csrf(self) -> str:
        """The CSRF token of the scripts' session, as the page embeds it."""
        import re

        status, _, html = self.request("GET", "/", headers=self.bearer())
        assert status == 200, html
        return re.search(r'<meta name="csrf" content="([^"]+)"', html).group(1)


@pytest.fixture
def panel(project: Project) -> Callable[..., Panel]:
    """Start `tapers ui` in the project (after the test wrote its Taperfile); stopped after."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Panel:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "tapers", "ui", "--port", "0", *args], cwd=project.root, env=project.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        started.append(process)
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, f"tapers ui printed {line!r}; stderr: {process.stderr.read()}"
        return Panel(process, line.split("open ", 1)[1].strip())

    yield start
    for process in started:
        process.send_signal(2)  # SIGINT: as Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def readable_code_copy() -> Path:
    """This tapers (its package, data folders and libraries) where any user can read it, in
    /var/tmp (a clone in root's home is not): PYTHONPATH=COPY:COPY/site-packages runs it with
    the host's python3; COPY/bin has ansible-playbook and ansible-galaxy. Removed at the end
    of the run (`tapers-RUN_ID-code-*`)."""
    import tapers
    from tapers import resources

    copy = Path(tempfile.mkdtemp(prefix=f"tapers-{RUN_ID}-code-", dir="/var/tmp"))
    copy.chmod(0o755)
    shutil.copytree(Path(tapers.__file__).parent, copy / "tapers")
    for data in ("boxes", "provisioners"):  # a checkout's data folders, beside the package
        shutil.copytree(resources.data_dir(data), copy / data)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    shutil.copytree(site, copy / "site-packages", symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    python = os.path.realpath(sys.executable)
    (copy / "bin").mkdir()
    for command, module in (("ansible-playbook", "playbook"), ("ansible-galaxy", "galaxy")):
        (copy / "bin" / command).write_text(f"#!/bin/sh\nexec {python} -P -m ansible.cli.{module} \"$@\"\n")
        (copy / "bin" / command).chmod(0o755)
    return copy


def box_archive(home: Path, archive: Path) -> Path:
    """The test run's box (in TAPERS_HOME `home`) as a root filesystem archive any user may
    read, for `tapers box add NAME ARCHIVE --from-rootfs`."""
    rootfs = sorted(home.glob("boxes/debian-bookworm/*/rootfs"))[-1].resolve()
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
                    "-cf", str(archive), "."], check=True)
    archive.chmod(0o644)
    return archive
