"""Run a play's program (ansible-playbook, ansible-galaxy) with the play's copy of the project
where the project is.

    python -P [-s] -m tapers.provision.play_ns [--as=UID:GID] PROJECT COPY [HIDDEN...] -- PROGRAM ARGS...

In a mount namespace of its own (and, when not root, a user namespace of its own that maps
only the caller's ids, to themselves), COPY is bind-mounted over PROJECT and PROGRAM runs
in PROJECT. Root given `--as` (tapers under sudo) makes the mount namespace as root, then
becomes that user (no other groups, and no_new_privs: no setuid program gets root back in
a namespace whose files the user shaped) before PROGRAM starts: no user namespace is
needed, and the user can't undo a mount made there. PROJECT, COPY and the HIDDEN folders
are real paths: each is mounted through a descriptor opened without following links, so
a link swapped in sends no mount elsewhere. Whatever names a project file, relatively or
by its absolute path, through $PWD or an ansible.cfg, gets the approved copy (see
play_copy): the project folder itself, which machines can write, is out of the play's
reach. Each HIDDEN folder (a synced folder
elsewhere that machines can write) is covered by an empty read-only one: however a play
names a file there (an ssh `ProxyCommand`, a variable, a template), it finds nothing to
run, read or write through; one that isn't there is left so only when no one else could
make it during the play (see _someone_else_could_make). Nothing changes outside the new namespaces, and they end with
the program.

Where the kernel refuses the namespaces (unprivileged user namespaces turned off, or their
id maps refused, as on Ubuntu's restricted user namespaces), the program runs in COPY
instead, and says so: paths relative to the project still reach the copy, an absolute path
into the project reaches the project. With HIDDEN folders it does not run at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_MOVE = 1, 2, 4, 8, 32, 8192
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
LIBC = ctypes.CDLL(None, use_errno=True)


USAGE = "usage: python -m tapers.provision.play_ns [--as=UID:GID] PROJECT COPY [HIDDEN...] -- PROGRAM ARGS..."


def main(argv: list[str]) -> int:
    person = None
    if argv and argv[0].startswith("--as="):
        person, argv = _ids(argv[0].removeprefix("--as=")), argv[1:]
        if person is None or os.geteuid() != 0:
            print(f"{USAGE} (--as: root only, a uid and a gid)", file=sys.stderr)
            return 2
    if len(argv) < 4 or "--" not in argv[2:] or argv.index("--", 2) == len(argv) - 1:
        print(USAGE, file=sys.stderr)
        return 2
    end = argv.index("--", 2)
    project, copy, command = argv[0], argv[1], argv[end + 1:]
    if any(not os.path.isabs(path) or path != os.path.normpath(path) for path in argv[:end]):
        print(f"{USAGE} (real paths: absolute, without `..`)", file=sys.stderr)
        return 2
    # (one that doesn't exist was never a machine's to write: nothing is there to hide, as
    # long as no one else can make it while the play runs, or rename it away just now)
    hidden = [folder for folder in _outermost(argv[2:end]) if os.path.isdir(folder)]
    for folder in set(_outermost(argv[2:end])) - set(hidden):
        maker = _someone_else_could_make(folder, {0, os.getuid() if person is None else person[0]})
        if maker is not None:
            print(f"tapers: the play can't run: {folder}, a synced folder machines can write, isn't there, and "
                  f"someone else could put it there while the play runs (they may write in {maker}); make it "
                  f"(`mkdir -p {folder}`), or keep synced folders where only you can write", file=sys.stderr)
            return 126
    why, refused = _tried(project, copy, hidden)
    folder, place = project, None
    if why is None:
        try:
            place = _enter(project, copy, hidden)  # as it just worked in a child
        except Refused as exc:  # (a place swapped since the child looked)
            why, refused = str(exc), True
    if refused:
        print(f"tapers: the play can't run: {why}", file=sys.stderr, flush=True)
        return 126
    if why is not None and hidden:
        print(f"tapers: the play can't run: machines can write {', '.join(hidden)}, and without a private mount "
              f"namespace ({why}) nothing keeps the play from what they put there", file=sys.stderr, flush=True)
        return 126
    if why is not None:
        print(f"tapers: the play runs in a copy of the project without a private mount namespace ({why}): a path "
              "it names absolutely into the project reaches the project folder itself", file=sys.stderr, flush=True)
        folder = copy
    as_whom = ""
    if person is not None:
        _become(*person)
        as_whom = (f" as `{os.environ.get('USER') or person[0]}` (under sudo a play runs as the user who ran sudo, "
                   "never as root)")
    try:
        if place is None:
            os.chdir(folder)
        else:
            os.fchdir(place)  # (the copy, as mounted: not whatever the project's name leads to by now)
        os.execvpe(command[0], command, {**os.environ, "PWD": folder})
    except OSError as exc:
        print(f"tapers: the play can't run {command[0]}{as_whom}: {exc.strerror}", file=sys.stderr, flush=True)
    return 127


def _ids(text: str) -> tuple[int, int] | None:
    uid, _, gid = text.partition(":")
    return (int(uid), int(gid)) if uid.isdigit() and gid.isdigit() else None


def _become(uid: int, gid: int) -> None:
    """This user and group, and no other group, for good (real, effective and saved ids),
    and no way back up: the namespace is root's, so a setuid program run in it (su, sudo)
    would read the play's view of the files as root; with no_new_privs it runs as the user."""
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SystemExit(f"could not set no_new_privs: {os.strerror(ctypes.get_errno())}")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _outermost(folders: list[str]) -> list[str]:
    """The folders, less those inside another of them (covered with it)."""
    return [f for f in folders if not any(f != o and f.startswith(o.rstrip("/") + "/") for o in folders)]


def _someone_else_could_make(folder: str, trusted: set[int]) -> str | None:
    """A folder on the way to `folder` (which isn't there, or isn't a folder) where someone
    not `trusted` could make it, or change what leads there; None when there is none: every
    folder on the way is a trusted user's and writable by no one else (in a sticky folder
    like /tmp, the next one on the way being a trusted user's is enough). A folder its group
    may write counts as theirs when that group is one of theirs alone (a user's own group,
    as with a umask of 002)."""
    import stat

    groups = _groups_of(trusted)
    here = "/"
    for name in folder.strip("/").split("/"):
        try:
            st = os.lstat(here)
        except OSError:  # (gone since it was passed: changed by someone)
            return here
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in trusted:
            return here
        try:
            child: os.stat_result | None = os.lstat(os.path.join(here, name))
        except FileNotFoundError:
            child = None
        except OSError:
            return here
        others_write = st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid not in groups)
        if others_write and not (st.st_mode & stat.S_ISVTX and child is not None and child.st_uid in trusted):
            return here
        if child is None or not stat.S_ISDIR(child.st_mode):
            return here if child is not None and stat.S_ISLNK(child.st_mode) else None
        here = os.path.join(here, name)
    return None


def _groups_of(uids: set[int]) -> set[int]:
    """The groups no one but these users is in: each one's own main group, when it has no
    other member and is no one else's main group (a private group, as useradd makes)."""
    import grp
    import pwd

    accounts = pwd.getpwall()
    found = set()
    for uid in uids:
        try:
            account = pwd.getpwuid(uid)
            group = grp.getgrgid(account.pw_gid)
        except KeyError:
            continue
        if set(group.gr_mem) <= {account.pw_name} and all(
                other.pw_uid == uid for other in accounts if other.pw_gid == group.gr_gid):
            found.add(group.gr_gid)
    return found


class Refused(SystemExit):
    """A place isn't what tapers named (a link swapped in): the play doesn't run at all."""


def _tried(project: str, copy: str, hidden: list[str]) -> tuple[str | None, bool]:
    """Why the namespaces can't be made here (None: they can), found in a child that makes
    them and goes: some kernels let a user namespace be made but not given its id maps;
    and whether that is a refusal (Refused) rather than something the kernel won't do."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 1
        try:
            _enter(project, copy, hidden)
            code = 0
        except (OSError, SystemExit) as exc:
            os.write(write, str(exc.strerror if isinstance(exc, OSError) else exc).encode()[:500])
            code = 2 if isinstance(exc, Refused) else 1
        finally:  # (whatever happened, the child goes here: never on into main)
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        why = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return (None, False) if code == 0 else (why or "refused", code == 2)


def _enter(project: str, copy: str, hidden: list[str]) -> int:
    """Make the namespaces, cover the hidden folders and mount the copy over the project; a
    descriptor of the copy where it is mounted (to run the program in)."""
    uid, gid = os.getuid(), os.getgid()
    if LIBC.unshare(CLONE_NEWNS | (0 if uid == 0 else CLONE_NEWUSER)) != 0:
        raise SystemExit(os.strerror(ctypes.get_errno()))
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None, "make private")
    try:
        return _mounted(project, copy, hidden)
    except (OSError, SystemExit) as exc:  # the namespace is there: no failure from here on is the kernel's to excuse
        raise Refused(exc.code if isinstance(exc, SystemExit) else f"{exc.filename or ''}: {exc.strerror}") from None


def _mounted(project: str, copy: str, hidden: list[str]) -> int:
    """In the new namespace, the covers and the copy mounted; the copy's descriptor."""
    # Whoever can rename in these folders (the person; the project's owner when root runs
    # the play) may swap a link in at any moment. So each place is opened without following
    # one and mounted on through that descriptor; a cover is made whole, read-only, in a
    # folder of tapers' own and only then moved into place; nothing is made, changed or
    # entered there by name afterwards.
    for folder in hidden:
        inside = os.path.relpath(project, folder) if project.startswith(folder.rstrip("/") + "/") else None
        _cover(folder, inside)
    with _pinned(copy) as source, _pinned(project) as place:
        copied = os.stat(source)
        _mount(source, place, None, MS_BIND | MS_REC, None, f"mount the play's copy over {project}")
    fd = os.open(project, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    found = os.fstat(fd)
    if (found.st_dev, found.st_ino) != (copied.st_dev, copied.st_ino) or os.readlink(f"/proc/self/fd/{fd}") != project:
        os.close(fd)
        raise Refused(f"{project} is not where the play's copy was mounted: a link in its way leads elsewhere")
    return fd


def _cover(folder: str, inside: str | None) -> None:
    """An empty read-only tmpfs over `folder`, with the folders of `inside` (the project's
    place in it) made in it first."""
    import tempfile

    inert = MS_NOSUID | MS_NODEV | MS_NOEXEC
    stage = tempfile.mkdtemp(prefix="tapers-cover-", dir="/tmp")  # (0700 in a sticky folder: no one else
    # reaches into it or renames it; not in a TMPDIR the person may have given)
    try:
        _mount("tapers-hidden", stage, "tmpfs", inert, "size=64k,mode=0755", f"make a cover for {folder}")
        if inside is not None:
            os.makedirs(os.path.join(stage, inside))
        _mount(None, stage, None, MS_BIND | MS_REMOUNT | MS_RDONLY | inert, None,
               f"make read-only the cover of {folder}")
        with _pinned(folder) as place:
            _mount(stage, place, None, MS_MOVE, None, f"cover the synced folder {folder}")
    finally:
        LIBC.umount2(stage.encode(), MNT_DETACH)  # (after a failure: the cover is still here)
        with contextlib.suppress(OSError):
            os.rmdir(stage)


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None, what: str) -> None:
    if LIBC.mount(source and source.encode(), target.encode(), kind and kind.encode(), flags,
                  data and data.encode()) != 0:
        raise SystemExit(f"could not {what}: {os.strerror(ctypes.get_errno())}")


@contextlib.contextmanager
def _pinned(path: str) -> Iterator[str]:
    """`path`, a folder, as a name that reaches exactly it (/proc/self/fd/N), opened without
    following a link in its last part; refused when it isn't where `path` says (a link in
    an earlier part: tapers gives real paths)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise Refused(f"{path} can't be used: {exc.strerror} (a link where a folder was?)") from None
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != path:
            raise Refused(f"{path} is not where it was: a link in its way leads elsewhere")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
