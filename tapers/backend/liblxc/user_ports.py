"""Forwarded ports of a normal user's machines: a forwarder process per machine (see
tapers/forwarder.py), its pid and ports kept in <run>/forwards/<container>.json. Ports below
the host's unprivileged port start (1024) are refused: only root may listen there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tapers import paths
from tapers.backend import forwards
from tapers.backend.api import Forward
from tapers.errors import HostError, StateError

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _folder() -> Path:
    return paths.host_run_dir() / "forwards"


def _state(container: str) -> Path:
    return _folder() / f"{container}.json"


def _first_unprivileged_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def refuse_privileged_ports(wanted: list[tuple[str, int, str, int, bool]]) -> None:
    first = _first_unprivileged_port()
    for host_ip, host, protocol, guest, _ in wanted:
        if host < first:
            raise StateError(
                f"host port {host}/{protocol} (forwarded to port {guest}) is below {first}: only root may listen there",
                hint=f"pick a host port of {first} or more in the Taperfile (for example {host + 8000}), "
                     "or run tapers as root",
            )


def choose(container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Forward]:
    refuse_privileged_ports(wanted)
    return forwards.choose(wanted, guest_ip, lambda host_ip, port, protocol: _taken_by(host_ip, port, protocol, container))


def _taken_by(host_ip: str, port: int, protocol: str, ours: str) -> str | None:
    for container, state in _running().items():
        if container == ours:
            continue
        for their_ip, their_port, their_protocol, _, _ in state["forwards"]:
            same_address = their_ip == host_ip or "0.0.0.0" in (their_ip, host_ip)
            if (their_port, their_protocol) == (port, protocol) and same_address:
                return f"machine container `{container}` (a tapers forward)"
    return forwards.listening_process(host_ip, port, protocol)


def install(container: str, chosen: list[Forward]) -> None:
    """Replace the machine's forwarder by one for `chosen` (none: no forwarder)."""
    remove(container)
    if not chosen:
        return
    _folder().mkdir(parents=True, exist_ok=True, mode=0o700)
    log = (_folder() / f"{container}.log").open("ab")
    spec = [[f.host_ip, f.host, f.protocol, f.guest_ip, f.guest] for f in chosen]
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "tapers.forwarder", container],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True, cwd="/",
    )
    log.close()
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(spec).encode())
    process.stdin.close()
    answer = _read_line(process, START_TIMEOUT)
    if answer != "ready":
        process.kill()
        process.wait()
        raise HostError(f"cannot forward ports to `{container}`: {answer or 'the forwarder did not start'}",
                        hint=f"see {_folder() / (container + '.log')}")
    state = _state(container)
    temporary = state.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": process.pid, "forwards": spec}) + "\n")
    os.replace(temporary, state)


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline().decode(errors="replace").strip()


def remove(container: str) -> None:
    state = _state(container)
    data = _read(state)
    if data is not None:
        _stop(int(data["pid"]), container)
    state.unlink(missing_ok=True)


def _stop(pid: int, container: str) -> None:
    """Stop the machine's forwarder: SIGTERM, then SIGKILL if it hasn't gone within
    STOP_TIMEOUT. Signalled through a pidfd, taken before the process is checked to be the
    forwarder: a process that takes its pid meanwhile can't get the signal."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # (gone, or no pid at all: a damaged state file) nothing to stop
        return
    try:
        if not _is_forwarder(pid, container):
            return
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, signum)
            except ProcessLookupError:
                return
            if select.select([pidfd], [], [], STOP_TIMEOUT)[0]:  # (readable once it has exited)
                return
    finally:
        os.close(pidfd)
    raise HostError(f"the port forwarder of `{container}` (pid {pid}) did not stop, even when killed")


def forwarded() -> set[str]:
    return set(_running())


def _running() -> dict[str, dict]:
    found = {}
    folder = _folder()
    for path in folder.glob("*.json") if folder.is_dir() else ():
        data = _read(path)
        if data is not None and _is_forwarder(data["pid"], path.stem):
            found[path.stem] = data
    return found


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        int(data["pid"]), list(data["forwards"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_forwarder(pid: int, container: str) -> bool:
    """`pid` is this user's forwarder of `container` (not a process that took its pid since)."""
    try:
        argv = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
        owner = os.stat(f"/proc/{int(pid)}").st_uid
    except (OSError, ValueError):
        return False
    zombie = False
    try:
        zombie = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        pass
    return owner == os.geteuid() and not zombie and b"tapers.forwarder" in argv and container.encode() in argv
