"""Which host folders a machine may have as a synced folder.

A synced folder is writable from the machine (whose root may be anyone's `curl | sh`), so
system folders are refused with everything under them, and so are home folders themselves
and their dot-folders (`~/.ssh`, `~/.config`, ...): a project folder inside a home (root's
included) is fine. The check runs on the real path (links resolved), when the Taperfile is
validated and again when a machine's mounts are set up; at each start the mount is made
from the recorded real path without following any link (see backend/staging.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple

from tapers import paths

_MAKING = threading.Lock()  # (see make)

# Refused with everything under them.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin", "/snap",
    "/sys", "/usr", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/var/backups", "/var/run",
    "/var/lock", "/var/snap",
)
# Refused themselves (what is inside them may be a project: /home/ana/shop, /tmp/x).
SYSTEM_FOLDERS = ("/", "/home", "/root", "/var", "/tmp", "/var/tmp", "/srv", "/opt", "/mnt", "/media")


def real_path(root: Path, host: str, machine: str) -> Path:
    """A synced folder's real path (links resolved), or a clear error: a machine can make a
    link in the project that leads nowhere a path can be made (a loop)."""
    from tapers.errors import StateError

    try:
        return (root / host).resolve()
    except (RuntimeError, OSError, ValueError) as exc:
        raise StateError(f"machine `{machine}`: the synced folder `{host}` has no real path ({exc})",
                         hint="put the folder back as it was (a link in it or on its way leads nowhere)") from None


def refusal(folder: Path) -> str | None:
    """Why `folder` (a real path: links resolved) can't be synced, or None."""
    text = str(folder)
    if text in SYSTEM_FOLDERS:
        return f"{text} is a system folder"
    if folder.parent == Path("/") and folder.exists() and not folder.is_dir():
        return f"{text} is a file at the top of the file system (a swap file, an image...)"
    parts = folder.parts
    if len(parts) >= 3 and parts[1] == "home" and (len(parts) == 3 or parts[3].startswith(".")):
        # /home/NAME and its dot-folders, for users this host's passwd may not list (LDAP)
        if len(parts) == 3:
            return f"{text} is a home folder (a project folder inside it is fine)"
        dot = Path(*parts[:4])
        inside = "" if folder == dot else f" in {dot}"
        return f"{text} is{inside} a home's dot-folder (keys and settings live there)"
    for tree in SYSTEM_TREES:
        if text == tree:
            return f"{text} is a system folder"
        if text.startswith(tree + "/"):
            return f"{text} is in a system folder ({tree})"
    for tree in _tapers_trees():
        if text == tree or text.startswith(tree.rstrip("/") + "/"):
            return f"{text} is tapers' own (in {tree})"
    for home in _homes():
        if text == home:
            return f"{text} is a home folder (a project folder inside it is fine)"
        if text.startswith(home + "/."):
            dot = home + "/" + text[len(home) + 1:].split("/")[0]
            inside = "" if text == dot else f" in {dot}"
            return f"{text} is{inside} a home's dot-folder (keys and settings live there)"
    return None


class Sharer(NamedTuple):
    """The person root shares folders for (see `sharer`)."""

    uid: int
    gid: int
    project: Path | None  # (plain root) the project folder they own: what is in it is theirs


def sharer(project_root: Path) -> Sharer | None:
    """Whose folders root may share with a project's machines: under sudo (or doas, pkexec)
    the user who ran it; as plain root, the project folder's owner. None: root's own
    project, run by root (anything root may read), or tapers running as a normal user (the
    kernel checks her rights itself)."""
    from tapers.project_files import invoker, project_stat

    if os.geteuid() != 0:
        return None
    uid, gid = invoker()
    if uid != 0:
        return Sharer(uid, gid, None)
    owner = project_stat(project_root)  # (the folder whose Taperfile was read: not what its name leads to now)
    return None if owner.st_uid == 0 else Sharer(owner.st_uid, owner.st_gid, project_root)


def out_of_reach(folder: Path, writable: bool, person: Sharer) -> str | None:
    """Why `person` couldn't share `folder` themselves (None: they could): read it, and
    write it unless it is shared read-only; a folder to be created, make it. Root mounts it,
    so without this a Taperfile (or a person allowed to run tapers with sudo) would hand a
    machine another user's files. The way there is theirs to walk with all their groups;
    the folder itself must be theirs through their user or main group, the only ones the
    machine has."""
    import pwd
    import subprocess

    from tapers.project_files import mode_allows

    if person.project is not None and folder.is_relative_to(person.project):
        return None
    uid, gid = person.uid, person.gid
    target = folder
    while not target.exists() and target != target.parent:
        target = target.parent  # a folder to create: its parent must be theirs to write
    wanted = ["-r"] + (["-x"] if target.is_dir() else []) + (["-w"] if writable or target != folder else [])
    try:
        account = pwd.getpwuid(uid)
        groups = os.getgrouplist(account.pw_name, account.pw_gid)
    except KeyError:
        groups = [gid]
    test: list[str] = []
    for flag in wanted:
        test += [*(["-a"] if test else []), flag, str(target)]
    can = subprocess.run(["test", *test], user=uid, group=gid, extra_groups=groups, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    what = "create it" if target != folder else ("read and write it" if writable else "read it")
    if not can:
        return f"uid {uid}, for whom tapers shares folders here, may not {what}"
    need = sum({"-r": 4, "-w": 2, "-x": 1}[flag] for flag in wanted)
    if target == folder and not mode_allows(folder.stat(), uid, [gid], need):
        return (f"uid {uid}, for whom tapers shares folders here, may not {what} as their user or main group "
                "(the machine has none of their other groups)")
    return None


def open_no_links(path: Path, folder: bool = False) -> int:
    """An fd of the absolute real path `path`, opened one component at a time without
    following any link (OSError ELOOP or ENOTDIR when a part of it is now a link: it was
    swapped since it was checked). Opened non-blocking: a pipe is never waited on."""
    from tapers.rootfs import open_beneath

    return open_beneath(Path("/"), path.parts[1:], os.O_DIRECTORY if folder else 0)


def _tapers_trees() -> tuple[str, ...]:
    """The box cache, the containers, the host runtime state (as real paths)."""
    return tuple(os.path.realpath(p) for p in (paths.tapers_home(), paths.lxc_path(), paths.host_run_dir()))


def _homes() -> list[str]:
    import pwd

    homes = {"/root"}
    for entry in pwd.getpwall():
        home = os.path.realpath(entry.pw_dir) if entry.pw_dir.startswith("/") else ""
        if home and home not in ("/", "/nonexistent") and not any(home == t or home.startswith(t + "/") for t in SYSTEM_TREES):
            homes.add(home)
    return sorted(homes)


def make(folder: Path, owner: tuple[int, int] | None) -> None:
    """The missing folders of `folder` (a real path) made, each given to `owner` (uid, gid)
    when given; each opened from the one above without following a link, and given through
    its descriptor once it is known to be the empty folder just made: whoever may rename on
    the way (a project's owner, the person, a machine in a synced folder) can't have root
    give them some other folder."""
    import errno
    import stat

    from tapers.errors import StateError

    def changed(where: str) -> StateError:
        return StateError(f"could not make the synced folder {folder}: {where} changed while tapers made it (a link "
                          "put on its way?)", hint="run the command again; if you did not change it, check who may "
                          "write there")

    found = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # (passing through needs no right to list)
    with _MAKING:  # (machines started side by side: one's folder made inside the other's as it is checked)
        fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, name in enumerate(folder.parts[1:], 2):
                here = str(Path(*folder.parts[:index]))
                try:
                    child = os.open(name, found, dir_fd=fd)
                    made = False
                except FileNotFoundError:
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                    except FileExistsError:  # (made meanwhile, by the person or a machine: checked as found)
                        pass
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    made = True
                os.close(fd)
                fd = child
                st = os.fstat(fd)
                if made and owner is not None and st.st_uid != owner[0]:
                    if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode) or os.listdir(fd):
                        raise changed(here)  # (not the empty folder tapers just made; not nlink: btrfs says 1)
                    os.fchown(fd, *owner)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise changed(here) from None
            raise StateError(f"could not make the synced folder {folder}: {exc.strerror} ({here})") from None
        finally:
            os.close(fd)
