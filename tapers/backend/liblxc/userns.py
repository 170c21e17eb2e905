"""A normal user's machines (no root anywhere): every one of them maps its ids the same way,
the "keep-id" map

    guest 0..999      -> the user's subordinate ids (from /etc/subuid, /etc/subgid)
    guest 1000        -> the user themself (the box's login user, `tapers`)
    guest 1001..65535 -> the rest of the user's subordinate ids

so what the login user writes in a synced folder belongs to the user on the host, and root in
a machine is an id nobody has on the host. The user's boxes are unpacked through the same map
(their files are the machines' files as they are, no copy or shift per machine).

The user can't chown files to their subordinate ids, but a process in a user namespace with
this map can: `run` and `call` do the work on machines' and boxes' files there
(`lxc-usernsexec`, which ships with LXC, sets the map through the setuid newuidmap).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any, Callable

from tapers.backend.api import MACHINE_IDS
from tapers.errors import BackendError

GUEST_USER = 1000  # the login user of tapers' boxes


def id_map(uid: int, gid: int, sub_uid: int, sub_gid: int) -> list[tuple[str, int, int, int]]:
    """(kind, inside, outside, count) lines of the keep-id map."""
    lines = []
    for kind, own, sub in (("u", uid, sub_uid), ("g", gid, sub_gid)):
        lines += [
            (kind, 0, sub, GUEST_USER),
            (kind, GUEST_USER, own, 1),
            (kind, GUEST_USER + 1, sub + GUEST_USER + 1, MACHINE_IDS - GUEST_USER - 1),
        ]
    return lines


def mine() -> list[tuple[str, int, int, int]]:
    """The keep-id map of the user running tapers."""
    from tapers.backend.liblxc import grants

    sub_uid, sub_gid = grants.subordinate_range(grants.current_user())
    return id_map(os.geteuid(), os.getegid(), sub_uid, sub_gid)


def config_items(lines: list[tuple[str, int, int, int]]) -> list[tuple[str, str]]:
    return [("lxc.idmap", f"{kind} {inside} {outside} {count}") for kind, inside, outside, count in lines]


def _map_arguments() -> list[str]:
    return [arg for kind, inside, outside, count in mine() for arg in ("-m", f"{kind}:{inside}:{outside}:{count}")]


def _tapers_in_map(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `tapers ARGS` as root of the user's map, with the user's own
    folders (their tapers home, made theirs first: not the machines' root's)."""
    from tapers import paths

    for folder in (paths.tapers_home(), paths.host_run_dir(), paths.box_build_lock("x").parent):
        paths.private_folder(folder)
    env = {**os.environ, "TAPERS_HOME": str(paths.tapers_home()), "TAPERS_RUN_DIR": str(paths.host_run_dir()),
           "TAPERS_LXC_PATH": str(paths.lxc_path())}
    return wrapped([sys.executable, "-P", "-m", "tapers", *args]), env


def _not_installed(what: str) -> BackendError:
    return BackendError(f"cannot {what}: lxc-usernsexec is not installed", hint="apt-get install lxc")


def exec_tapers() -> None:
    """Run this same tapers command again as root of the user's map, in place of this
    process (its exit code is the command's)."""
    argv, env = _tapers_in_map(sys.argv[1:])
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise _not_installed("work on your boxes") from None


def tapers_in_map(args: list[str]) -> int:
    """`tapers ARGS` as root of the user's map, its output on this terminal; its exit code."""
    argv, env = _tapers_in_map(args)
    try:
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode
    except FileNotFoundError:
        raise _not_installed("work on your boxes") from None


def wrapped(argv: list[str]) -> list[str]:
    """`argv` as a command that runs as root of the user's map."""
    return ["lxc-usernsexec", *_map_arguments(), "--", *argv]


def run(argv: list[str], what: str, input: bytes | None = None) -> bytes:
    """Run `argv` as root of the user's map (root of the machines, as far as files go)."""
    try:
        result = subprocess.run(wrapped(argv), input=input, capture_output=True, cwd="/")
    except FileNotFoundError:
        raise _not_installed(what) from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()[-3:]
        raise BackendError(f"cannot {what}: {' '.join(detail) or f'exit code {result.returncode}'}")
    return result.stdout


def call(function: Callable[..., Any], *args: Any, what: str) -> Any:
    """`function(*args)` run in a child process as root of the user's map; its result, or its
    error as the same tapers error. `function` must be a module-level function (it is named,
    not copied, to the child)."""
    payload = pickle.dumps((function, args))
    out = run([sys.executable, "-P", "-m", "tapers.backend.liblxc.userns"], what, input=payload)
    ok, value = pickle.loads(out)
    if ok:
        return value
    raise value


def _serve() -> None:
    """The child's side of `call`: one call from stdin, its outcome to stdout."""
    from tapers.errors import TapersError

    function, args = pickle.loads(sys.stdin.buffer.read())
    try:
        outcome = (True, function(*args))
    except TapersError as exc:
        outcome = (False, exc)
    except OSError as exc:
        outcome = (False, BackendError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")))
    sys.stdout.buffer.write(pickle.dumps(outcome))


if __name__ == "__main__":
    _serve()
