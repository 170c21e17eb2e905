"""Run a play's program (ansible-playbook, ansible-galaxy) with the play's copy of the project
where the project is.

    python -P -m tapers.provision.play_ns PROJECT COPY -- PROGRAM ARGS...

In a mount namespace of its own (and, when not root, a user namespace of its own that maps
only the caller's ids, to themselves), COPY is bind-mounted over PROJECT and PROGRAM runs
in PROJECT. Whatever names a project file, relatively or by its absolute path, through
$PWD or an ansible.cfg, gets the approved copy (see play_copy): the project folder itself,
which machines can write, is out of the play's reach. Nothing changes outside the new
namespaces, and they end with the program.

Where the kernel refuses the namespaces (unprivileged user namespaces turned off, or their
id maps refused, as on Ubuntu's restricted user namespaces), the program runs in COPY
instead, and says so: paths relative to the project still reach the copy, an absolute path
into the project reaches the project.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m tapers.provision.play_ns PROJECT COPY -- PROGRAM ARGS...", file=sys.stderr)
        return 2
    project, copy, command = argv[0], argv[1], argv[3:]
    why = _tried(project, copy)
    folder = project
    if why is None:
        _enter(project, copy)  # as it just worked in a child
    else:
        print(f"tapers: the play runs in a copy of the project without a private mount namespace ({why}): a path "
              "it names absolutely into the project reaches the project folder itself", file=sys.stderr, flush=True)
        folder = copy
    os.chdir(folder)
    os.execvpe(command[0], command, {**os.environ, "PWD": folder})
    return 127  # not reached


def _tried(project: str, copy: str) -> str | None:
    """Why the namespaces can't be made here (None: they can), found in a child that makes
    them and goes: some kernels let a user namespace be made but not given its id maps."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            _enter(project, copy)
            code = 0
        except (OSError, SystemExit) as exc:
            os.write(write, str(exc.strerror if isinstance(exc, OSError) else exc).encode()[:500])
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        why = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return None if os.waitstatus_to_exitcode(status) == 0 else (why or "refused")


def _enter(project: str, copy: str) -> None:
    """Make the namespaces and mount the copy over the project."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWNS | (0 if uid == 0 else CLONE_NEWUSER)) != 0:
        raise SystemExit(os.strerror(ctypes.get_errno()))
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    for source, target, flags in ((None, "/", MS_REC | MS_PRIVATE), (copy, project, MS_BIND | MS_REC)):
        if libc.mount(source and source.encode(), target.encode(), None, flags, None) != 0:
            raise SystemExit(f"could not mount the play's copy over {project}: {os.strerror(ctypes.get_errno())}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
