"""The project's `.tapers/` folder, and every file tapers writes in a project folder.

A project folder may be writable by someone other than whoever runs tapers (who may be
root), so nothing found there is trusted: `.tapers/` must be a real folder, 0700, owned by
the user who invoked tapers (the `SUDO_UID` user under sudo, the user who ran doas or
pkexec, so a developer's folder keeps working with `sudo tapers up`) or by root; a file in it must be theirs too and writable by
nobody else. Files are created under a new temporary name (O_CREAT|O_EXCL|O_NOFOLLOW, mode
set on the open, owned by the invoking user) and renamed into place: a planted link or a
pre-made file is never written through. Reads never follow a link either.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from tapers.errors import StateError
from tapers.paths import PROJECT_STATE_DIR

# A project folder's path -> the folder (device, inode) it led to when tapers read its
# Taperfile, or first used its `.tapers/`: a path swapped since, for a link to another
# project (whose owner root would then trust), is refused.
_projects: dict[Path, tuple[int, int]] = {}


def pin_project(root: Path, st: os.stat_result) -> None:
    """The project at `root` is the folder `st` describes (the one whose Taperfile is read),
    for as long as tapers runs: refused if tapers met another folder at that path before."""
    if _projects.setdefault(root, (st.st_dev, st.st_ino)) != (st.st_dev, st.st_ino):
        raise _moved(root)


def project_folder(root: Path) -> int:
    """An O_PATH descriptor of the project folder at `root` (a real path), opened from `/`
    following no link, and refused unless it is the folder pinned when the Taperfile was
    read: what tapers then reads there by name is that project's, whoever may rename what."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in root.parts[1:]:
            child = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        pin_project(root, os.fstat(fd))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise _moved(root) from None
        raise StateError(f"cannot open the project folder {root}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def project_stat(root: Path) -> os.stat_result:
    """The project folder's stat (its owner: whose rights bound what root shares and reads
    for plain root), from the folder pinned (see project_folder), never by its name."""
    fd = project_folder(root)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _moved(root: Path) -> StateError:
    return _untrusted(root / PROJECT_STATE_DIR, f"{root} is no longer the folder whose Taperfile tapers read (it "
                      "was moved, or replaced)", f"run the command again; if you did not move it, check who may "
                      f"write in {root.parent}")


def forget_project(root: Path) -> None:
    """Let the folder at `root` be read anew (the web panel, which lists projects for hours:
    one may be cloned again in the same place)."""
    _projects.pop(root, None)


def invoker() -> tuple[int, int]:
    """(uid, gid) of the person running tapers: under sudo, doas or pkexec, the user who ran it."""
    if os.geteuid() == 0:
        by_sudo = _sudo_ids()
        by_other = _elevated_by() if os.environ.get("PKEXEC_UID") or os.environ.get("DOAS_USER") else None
        if by_sudo and by_other and by_sudo[0] != by_other[0]:
            # (each tool sets its own variable; the other's came through it, from whoever ran it)
            other = "PKEXEC_UID" if os.environ.get("PKEXEC_UID", "").isdigit() else "DOAS_USER"
            raise StateError(f"tapers runs as root for two different users: SUDO_UID says uid {by_sudo[0]}, "
                             f"{other} says uid {by_other[0]}",
                             hint="run it through sudo, doas or pkexec alone, without the others' variables set")
        found = by_other or by_sudo  # (doas's or pkexec's: its account's group, not a SUDO_GID passed through)
        if found:
            return found
    return os.geteuid(), os.getegid()


def _sudo_ids() -> tuple[int, int] | None:
    """(SUDO_UID, SUDO_GID), which sudo sets both; refused when they are there but not ids."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if uid is None and gid is None:
        return None
    if not all(value and value.isascii() and value.isdigit() for value in (uid, gid)):
        raise StateError(f"tapers runs under sudo, but SUDO_UID ({uid!r}) and SUDO_GID ({gid!r}) are not both ids",
                         hint="run tapers with sudo itself, which sets them")
    return int(uid), int(gid)  # type: ignore[arg-type]


def invoker_may_read(fd: int, st: os.stat_result, need: int = 0) -> bool:
    """Whether the person running tapers could read the open file `fd` (whose stat is `st`)
    themselves, or do `need` (see may_read). Always, unless root runs it for someone (sudo):
    root reads anything, and tapers' errors quote what it read (`sudo tapers -f /etc/shadow`
    would show the hashes)."""
    if os.geteuid() != 0:
        return True
    uid, gid = invoker()
    return uid == 0 or may_read(fd, st, uid, gid, need)


def may_read(fd: int, st: os.stat_result, uid: int, gid: int, need: int = 0, top: Path | None = None) -> bool:
    """Whether the user `uid` (main group `gid`) could read the open file or folder `fd`
    (whose stat is `st`), or do `need` (mode bits: 3 is to write in a folder), by its mode
    bits and those of the folders on its real path (ACLs aside): where it was opened, so
    no link swapped in since counts. `top`: a folder of theirs the path is in, wherever
    it is (a project root put somewhere they can't pass): the folders above it don't count."""
    import pwd

    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    folders = [f for f in real.parents if top is None or not real.is_relative_to(top) or f.is_relative_to(top)]
    return (mode_allows(st, uid, groups, need or (5 if stat.S_ISDIR(st.st_mode) else 4))
            and all(mode_allows(os.stat(f), uid, groups, 1) for f in folders))


def mode_allows(st: os.stat_result, uid: int, groups: list[int], need: int) -> bool:
    """Whether the mode bits of `st` let `uid` (in `groups`) do `need` (4 read, 2 write,
    1 search or run): its owner's bits, else its group's, else others'."""
    shift = 6 if st.st_uid == uid else 3 if st.st_gid in groups else 0
    return st.st_mode >> shift & need == need


def _elevated_by() -> tuple[int, int]:
    """Who ran pkexec (PKEXEC_UID) or doas (DOAS_USER), as their account says; refused when
    it can't be told (tapers would otherwise take root for them)."""
    import pwd

    uid, name = os.environ.get("PKEXEC_UID", ""), os.environ.get("DOAS_USER", "")
    try:
        account = pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise StateError(f"tapers runs under pkexec or doas, but the user who ran it ({uid or name!r}) has no "
                         "account here", hint="run tapers as that user, or with sudo") from None
    return account.pw_uid, account.pw_gid


def as_invoker(env: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """How to start a program of the project's on the host as the person running tapers:
    subprocess options and its environment. Under sudo that is the user who ran sudo, never
    root (what it runs is the project's: ansible-playbook, a trigger's script)."""
    uid, gid = invoker()
    if os.geteuid() != 0 or uid == 0:
        return {}, env
    import pwd

    try:
        account = pwd.getpwuid(uid)
        home, name = account.pw_dir, account.pw_name
    except KeyError:
        home, name = "/nonexistent", str(uid)
    env = {key: value for key, value in env.items() if key != "SUDO_COMMAND"}
    return {"user": uid, "group": gid, "extra_groups": []}, {**env, "HOME": home, "USER": name, "LOGNAME": name}


def _trusted_owners(path: Path, at: int) -> set[int]:
    """Whose files tapers uses at `path`, whose folder is open at `at`. In a project's
    `.tapers/`: as plain root, root's and the project folder's owner's (root running tapers
    in a developer's folder: the developer's `.tapers/`, made under sudo, is fine); under
    sudo, the user's, and root's in a project of theirs (it becomes theirs), never another
    user's nor root's in another's project: those hold the key to that user's machines.
    Elsewhere: yours, root's, and the owner of the folder it is in. The project folder is
    found from `at` going up (`..`), never by its name again, and must be the folder whose
    Taperfile was read (see pin_project): a link swapped into its path since can't change
    whose it is."""
    uid = invoker()[0]
    if PROJECT_STATE_DIR not in path.parts:
        return {uid, 0, os.fstat(at).st_uid}
    project_owner = _project_owner(path, at)
    if uid == 0:
        return {0} if project_owner is None else {0, project_owner}
    return {uid, 0} if project_owner == uid else {uid}


def _project_owner(path: Path, at: int) -> int | None:
    """Who owns the project folder whose `.tapers/` holds `path`, from `at` (a descriptor of
    `path`'s folder) going up: the folders it names, whatever their names lead to now."""
    index = _state_index(path.parts)
    try:
        st = os.stat("/".join([".."] * (len(path.parent.parts) - index)) or ".", dir_fd=at)
    except OSError:
        return None
    pin_project(Path(*path.parts[:index]), st)
    return st.st_uid


def _state_index(parts: tuple[str, ...]) -> int:
    """Where a project's `.tapers` is in a path: the last one (a project may be inside a
    folder of that name); len(parts) when there is none."""
    return len(parts) - 1 - parts[::-1].index(PROJECT_STATE_DIR) if PROJECT_STATE_DIR in parts else len(parts)


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _untrusted(path: Path, why: str, fix: str) -> StateError:
    return StateError(f"refusing to use {path}: {why}; someone else could change what tapers reads or writes there",
                      hint=fix)


def check_dir(path: Path, create: bool) -> bool:
    """`path` (`.tapers/` or a folder in it) is safe to use, creating it when `create`.
    False when it is missing (and not created). Checked and changed through descriptors,
    never by its name again."""
    try:
        parent, _ = _open_folder(path.parent)
    except FileNotFoundError:
        if not create:
            return False
        raise
    made = False
    try:
        try:
            st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                return False
            uid = invoker()[0]
            owner = _project_owner(path, parent)
            if os.geteuid() == 0 and uid != 0 and owner != uid:  # (root would make it for them in another's)
                raise _untrusted(path, f"the project folder is {_owner_name(owner) if owner is not None else 'gone'}'s",
                                 "under sudo tapers acts for you, on your projects: run it as the project's owner")
            try:
                os.mkdir(path.name, 0o700, dir_fd=parent)
                made = True
            except FileExistsError:  # made at the same moment by another tapers: check it below
                pass
            st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            raise _untrusted(path, f"it is {kind}", f"remove it (`rm {path}`): tapers makes the folder again")
        if st.st_uid not in _trusted_owners(path, parent):  # (those of `.tapers/` itself, not of its folder)
            uid = invoker()[0]
            theirs = uid != 0 and os.geteuid() == 0  # (under sudo: another's project state holds their project key)
            raise _untrusted(
                path, f"it belongs to {_owner_name(st.st_uid)}, not to you",
                f"under sudo tapers acts for you, on your projects: this one is {_owner_name(st.st_uid)}'s"
                if theirs else f"if it is yours, `sudo chown -R {uid} {path}`; or delete it (`sudo rm -r {path}`): "
                "tapers makes everything in it again",
            )
        if st.st_mode & 0o022:
            raise _untrusted(path, f"others can write in it (mode {stat.S_IMODE(st.st_mode):o})",
                             f"`chmod 700 {path}` (tapers keeps it that way)")
        folder = os.open(path.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        if (os.fstat(folder).st_dev, os.fstat(folder).st_ino) != (st.st_dev, st.st_ino):
            raise _untrusted(path, "it changed while it was checked", "run the command again")
        if made and os.geteuid() == 0:
            os.fchown(folder, *invoker())
        if st.st_mode & 0o077:  # made readable by an older tapers: nobody else needs to read it
            os.fchmod(folder, 0o700)
        if os.geteuid() == 0 and st.st_uid == 0 and invoker()[0] != 0:  # (in their own project: see _trusted_owners)
            _give_to_invoker(folder)
    finally:
        os.close(folder)
    return True


def _give_to_invoker(folder: int) -> None:
    """A `.tapers/` made by root (an older tapers, or plain root), open at `folder`, used
    under sudo: it becomes the sudo user's, with what is in it (walked from its descriptor,
    following no link)."""
    _give_tree(folder, *invoker())


def _give_tree(folder: int, uid: int, gid: int) -> None:
    """What the folder open at `folder` holds, then the folder itself (while it is still
    root's, no one else can put anything in it): folders opened from their parent's
    descriptor, never following a link nor waiting on what isn't a folder."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            inner = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                            dir_fd=folder)
            try:
                _give_tree(inner, uid, gid)
            finally:
                os.close(inner)
        elif entry.stat(follow_symlinks=False).st_nlink == 1:  # (a file with other names stays root's)
            os.chown(entry.name, uid, gid, dir_fd=folder, follow_symlinks=False)
    os.fchown(folder, uid, gid)


def _check_file(path: Path, st: os.stat_result, owners: set[int]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _untrusted(path, "it is not a regular file", f"remove it (`rm {path}`)")
    if st.st_nlink != 1:
        raise _untrusted(path, "it has other names (hard links)", f"remove it (`rm {path}`)")
    if st.st_uid not in owners:
        raise _untrusted(path, f"it belongs to {_owner_name(st.st_uid)}, not to you", f"remove it (`sudo rm {path}`)")
    if st.st_mode & 0o022:
        raise _untrusted(path, f"others can write it (mode {stat.S_IMODE(st.st_mode):o})", f"remove it (`rm {path}`)")


def read_text(path: Path) -> str | None:
    """A file's text, None when it (or its folder) is missing; refused when it is a link,
    or someone else's, or writable by others."""
    try:
        fd, owners = _open_in_folder(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as handle:
        _check_file(path, os.fstat(fd), owners)
        return handle.read()


def _open_in_folder(path: Path, flags: int, mode: int = 0o600) -> tuple[int, set[int]]:
    """os.open of `path` relative to its folder's fd, never following a link; with whose
    files may be used there (see _trusted_owners)."""
    folder, owners = _open_folder(path.parent)
    try:
        return os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=folder), owners
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _untrusted(path, "it is a symbolic link", f"remove it (`rm {path}`)") from None
        raise
    finally:
        os.close(folder)


def _open_folder(folder: Path) -> tuple[int, set[int]]:
    """An fd of `folder`, and whose files may be used in it (see _trusted_owners); from
    `.tapers` on, no component may be a link."""
    from tapers.rootfs import open_beneath

    parts = folder.parts
    start = _state_index(parts)
    try:
        fd = open_beneath(Path(*parts[:start]) if start else Path("."), parts[start:])
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _untrusted(folder, "a part of it is a symbolic link or a file", "remove the link") from None
        raise
    try:
        owners = _trusted_owners(folder / "-", fd)
        owner = os.fstat(fd).st_uid
        if start < len(parts) and owner not in owners:  # in a project's `.tapers/`: checked on what was opened
            raise _untrusted(folder, f"it belongs to {_owner_name(owner)}, not to you",
                             f"run tapers here as {_owner_name(owner)}, whose project it is")
    except BaseException:
        os.close(fd)
        raise
    return fd, owners


def write(path: Path, content: str | bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Create or replace `path` in a checked folder of the project (see the module's doc),
    owned by `owner` (default: the invoking user)."""
    data = content.encode() if isinstance(content, str) else content
    folder, _ = _open_folder(path.parent)
    try:
        temporary = f".{path.name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=folder)
        try:
            try:
                if os.geteuid() == 0:
                    os.fchown(fd, *(owner or invoker()))
                os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=folder)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(folder)


def create(path: Path, mode: int = 0o600) -> int:
    """A new file that must not exist yet (a log, `tapers init`'s Taperfile): its fd."""
    fd, _ = _open_in_folder(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    if os.geteuid() == 0:
        os.fchown(fd, *invoker())
    os.fchmod(fd, mode)
    return fd


def open_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """The fd of a file to use in place (`lock`: os.O_RDWR, a run's log, which two runs in one
    second share: os.O_WRONLY | os.O_APPEND), made when missing, checked like any file in
    `.tapers/` and given to the invoking user."""
    fd, owners = _open_in_folder(path, flags | os.O_CREAT, mode)
    try:
        st = os.fstat(fd)
        _check_file(path, st, owners)
        if os.geteuid() == 0 and st.st_uid == 0 and invoker()[0] != 0:
            os.fchown(fd, *invoker())
    except BaseException:
        os.close(fd)
        raise
    return fd
