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
from pathlib import Path

from tapers import paths

# Refused with everything under them.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin", "/snap",
    "/sys", "/usr", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/var/backups", "/var/run",
    "/var/lock", "/var/snap",
)
# Refused themselves (what is inside them may be a project: /home/ana/shop, /tmp/x).
SYSTEM_FOLDERS = ("/", "/home", "/root", "/var", "/tmp", "/var/tmp", "/srv", "/opt", "/mnt", "/media")


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
