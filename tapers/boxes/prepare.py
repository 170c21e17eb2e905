"""Make a root filesystem a tapers box, from the host, by editing its files.

A box may come from anywhere, so nothing in it is run (no chroot, no `useradd` of the
box's): the login user, sudo, sshd's settings and the clean-up are file edits through
`tapers.rootfs.Root`, which never follows a link out of the box. What is prepared is
described in provisioners/guest-prepare.yaml. Box metadata read from the box (the login
user's uid, gid and home) is checked like Taperfile input.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, NamedTuple

from tapers import sinks
from tapers.errors import InvalidBoxError
from tapers.resources import data_dir
from tapers.rootfs import Root

USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MAX_ID = 2**31 - 1
FIRST_ID = 1000
PASSWD_LIMIT = 4 << 20  # account files bigger than this are not a real system's


class BoxUser(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str

    def as_meta(self) -> dict[str, Any]:
        return self._asdict()


def prepare_rootfs(root: Root, user: str = "tapers", uid: int = 1000) -> BoxUser:
    """The login user (created when missing), passwordless sudo, sshd with public keys only,
    no host keys, no machine identity, apt's caches emptied. Returns the login user."""
    settings = _settings()
    account = ensure_user(root, user, uid)
    root.write(f"/etc/sudoers.d/{account.name}", f"{account.name} ALL=(ALL) NOPASSWD:ALL\n".encode(), 0o440)
    if root.lstat(account.home) is None:
        root.make_dir(account.home, 0o750, account.uid, account.gid)
        _copy_skeleton(root, account)
    root.make_dir(f"{account.home}/.ssh", 0o700, account.uid, account.gid)
    root.remove(f"{account.home}/.ssh/authorized_keys")  # each project authorizes its own key
    root.write("/etc/ssh/sshd_config.d/tapers.conf", settings["sshd_config"].encode(), 0o644)
    for name in root.listdir("/etc/ssh"):
        if name.startswith("ssh_host_"):
            root.remove(f"/etc/ssh/{name}")
    for unit in settings["mask_units"]:
        root.symlink("/dev/null", f"/etc/systemd/system/{unit}")
    root.write("/etc/machine-id", b"", 0o444)
    for path in ("/var/lib/dbus/machine-id", "/etc/hostname"):
        root.remove(path)
    _clean(root)
    return account


def _settings() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((data_dir("provisioners") / "guest-prepare.yaml").read_text())


# -- the login user ---------------------------------------------------------------------


def ensure_user(root: Root, name: str, uid: int) -> BoxUser:
    """The account `name` as the box has it (checked), or added with `uid` (or the next free
    id) and a group of its own, like `useradd --user-group` would."""
    passwd = _lines(root, "/etc/passwd")
    for fields in passwd:
        if fields[0] == name:
            return checked_user(root.what, fields)
    groups = _lines(root, "/etc/group")
    used_uids = {_int(f[2]) for f in passwd if len(f) > 2}
    used_gids = {_int(f[2]) for f in groups if len(f) > 2}
    new_uid = _free(uid, used_uids)
    gid = new_uid if new_uid not in used_gids else _free(FIRST_ID, used_gids)
    shell = "/bin/bash" if root.lstat("/usr/bin/bash") or root.lstat("/bin/bash") else "/bin/sh"
    home = f"/home/{name}"
    _append(root, "/etc/passwd", f"{name}:x:{new_uid}:{gid}::{home}:{shell}", 0o644)
    if not any(f[0] == name for f in groups):
        _append(root, "/etc/group", f"{name}:x:{gid}:", 0o644)
    if root.lstat("/etc/shadow"):
        _append(root, "/etc/shadow", f"{name}:!:19000:0:99999:7:::", 0o640)
    if root.lstat("/etc/gshadow"):
        _append(root, "/etc/gshadow", f"{name}:!::", 0o640)
    return BoxUser(name, new_uid, gid, home)


def checked_user(what: str, fields: list[str]) -> BoxUser:
    """A passwd entry as box metadata: a plain name, ids in range, a normalised absolute
    home without `..` (it becomes a path tapers writes keys into)."""
    if len(fields) < 7:
        raise InvalidBoxError(f"{what}: the passwd entry of `{fields[0]}` is malformed; refused")
    name, uid, gid, home = fields[0], _int(fields[2]), _int(fields[3]), fields[5]
    return checked_meta_user(what, {"name": name, "uid": uid, "gid": gid, "home": home})


def checked_meta_user(what: str, user: Any) -> BoxUser:
    """The `user` of a box's metadata, refused unless every part is what tapers expects."""
    if not isinstance(user, dict):
        raise InvalidBoxError(f"{what}: its login user is not described; refused")
    name, uid, gid, home = user.get("name"), user.get("uid"), user.get("gid"), user.get("home")
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise InvalidBoxError(f"{what}: the login user's name {name!r} is not a plain user name; refused")
    for label, value in (("uid", uid), ("gid", gid)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
            raise InvalidBoxError(
                f"{what}: the login user's {label} {value!r} is not between 1 and {MAX_ID} (root can't be it); refused"
            )
    if (
        not isinstance(home, str)
        or not home.startswith("/")
        or posixpath.normpath(home) != home
        or ".." in home.split("/")
        or home == "/"
        or sinks.has_control(home)
    ):
        raise InvalidBoxError(
            f"{what}: the login user's home {home!r} is not a normalised absolute path without `..`; refused"
        )
    return BoxUser(name, uid, gid, home)


def _lines(root: Root, path: str) -> list[list[str]]:
    data = root.read(path, PASSWD_LIMIT)
    if data is None:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines() if line and not line.startswith("#")]


def _append(root: Root, path: str, line: str, mode: int) -> None:
    """Add a line to an account file, keeping its owner group (shadow's is `shadow`)."""
    before = root.lstat(path)
    data = root.read(path, PASSWD_LIMIT) or b""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    gid = before.st_gid if before is not None else 0
    root.write(path, data + line.encode() + b"\n", mode, 0, gid)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def _free(wanted: int, used: set[int]) -> int:
    candidate = wanted
    while candidate in used:
        candidate += 1
    return candidate


def _copy_skeleton(root: Root, account: BoxUser) -> None:
    """The files of /etc/skel (regular files only, not folders) into a new home."""
    for name in root.listdir("/etc/skel"):
        st = root.lstat(f"/etc/skel/{name}")
        if st is None or not (st.st_mode & 0o170000 == 0o100000):
            continue
        content = root.read(f"/etc/skel/{name}", 1 << 20) or b""
        root.write(f"{account.home}/{name}", content, st.st_mode & 0o644, account.uid, account.gid)


# -- keeping the box small --------------------------------------------------------------

_CLEAN = (
    ("/var/cache/apt/archives", ".deb"),
    ("/var/cache/apt", ".bin"),
    ("/var/lib/apt/lists", ""),
    ("/var/log", ".log"),
)


def _clean(root: Root) -> None:
    """apt's downloaded packages, caches and lists, and the build's logs (files only)."""
    for folder, suffix in _CLEAN:
        for name in root.listdir(folder):
            st = root.lstat(f"{folder}/{name}")
            if st is not None and st.st_mode & 0o170000 != 0o040000 and name.endswith(suffix) and name != "lock":
                root.remove(f"{folder}/{name}")
