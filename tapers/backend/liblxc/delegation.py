"""cgroups a normal user may make their machines' cgroups in.

LXC puts an unprivileged container's cgroups under the cgroup its caller is in, in each
hierarchy it may write to; where it may not, the machine boots without that controller
(without the freezer no suspend, without memory or cpu no limits; without any, systemd in
the guest does not start). `host setup` makes /sys/fs/cgroup/<hierarchy>/tapers/<user> in
every hierarchy and gives it to the user; before a start, the user's tapers moves itself
there in each hierarchy where its current cgroup is not its own (cgroup v1 lets a process
move itself into any cgroup it may write to). A login session that pam_cgfs already put in
a cgroup of the user's is left where it is.

Where systemd is the host's init, it owns the cgroup tree: setup has it delegate the cgroup
v2 controllers to each user's manager (user@.service), and the user's machines start in a
scope of their own (`systemd-run --user --scope -p Delegate=yes`, as LXC documents). It
never delegates a v1 controller: on a hybrid or legacy host, setup also makes the user's
cgroups in the v1 hierarchies machines use, and the machine's start joins them from inside
the scope (`start_prefix`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

from tapers.errors import HostError

SYSTEMD = Path("/run/systemd/system")  # systemd is the host's init: it owns the cgroup tree
DROP_IN = Path("/etc/systemd/system/user@.service.d/tapers-delegate.conf")
PARENT = "tapers"
OWNED_FILES = ("cgroup.procs", "tasks", "cgroup.threads", "cgroup.subtree_control")
V2_CONTROLLERS = ("cpu", "memory", "pids")


class Hierarchy(NamedTuple):
    mount: Path
    keys: frozenset[str]  # its controllers and name= ("" for cgroup2's unified tree)
    v2: bool


def hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies mounted on this host (from /proc/self/mountinfo)."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        controllers = {line.split()[0] for line in Path("/proc/cgroups").read_text().splitlines()[1:] if line.strip()}
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, more = left.split(), right.split()
        if len(more) < 3 or more[0] not in ("cgroup", "cgroup2"):
            continue
        if more[0] == "cgroup2":
            found.append(Hierarchy(Path(fields[4]), frozenset({""}), True))
        else:
            options = {o for o in more[2].split(",") if o.startswith("name=") or o in controllers}
            found.append(Hierarchy(Path(fields[4]), frozenset(options), False))
    return found


def _own_cgroups() -> dict[frozenset[str], str]:
    """hierarchy keys -> the path of this process's cgroup in it."""
    result = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        result[frozenset(controllers.split(",")) if controllers else frozenset({""})] = path
    return result


USED_V1 = frozenset({"freezer", "memory", "cpu", "cpuacct", "pids"})  # suspend, limits, stats


def _ours() -> list[Hierarchy]:
    """The hierarchies tapers makes the user a cgroup in. Without systemd: all of them.
    Where systemd is init, it delegates the unified tree (and its name=systemd tree) to the
    user's manager, but never a cgroup v1 controller ("will not be granted to unprivileged
    services on the legacy hierarchy", systemd.resource-control(5)): on a hybrid or legacy
    host the user gets from tapers the v1 controllers machines use (without them: no limits,
    stats or suspend); LXC does without the others. Only those: systemd removes the empty
    cgroups of the controllers it doesn't account for (blkio, by default) at each
    `daemon-reload`."""
    found = hierarchies()
    if not systemd_manages():
        return found
    return [h for h in found if not h.v2 and h.keys & USED_V1]


def user_cgroup(hierarchy: Hierarchy, user: str) -> Path:
    return hierarchy.mount / PARENT / user


def systemd_manages() -> bool:
    return SYSTEMD.is_dir()


def _delegate_to_user_managers() -> list[str]:
    import subprocess

    from tapers.errors import HostError
    from tapers.rootfs import Root

    DROP_IN.parent.mkdir(parents=True, exist_ok=True)
    with Root(DROP_IN.parent, str(DROP_IN.parent), HostError) as folder:
        folder.write(DROP_IN.name, b"[Service]\nDelegate=cpu cpuset io memory pids\n", 0o644, 0, 0)
    subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    return [str(DROP_IN)]


LINGER = Path("/var/lib/systemd/linger")  # a user's file here: logind keeps their manager without a login


def lingers(user: str) -> bool:
    """systemd keeps the user's manager when they have no login left (or is not init here):
    their machines run in scopes of that manager, which logind stops ~10 s after the last
    login ends (UserStopDelaySec); the scope's stop then kills the machine (SIGKILL after
    TimeoutStopSec, 90 s: lxc-start doesn't stop on SIGTERM)."""
    return not systemd_manages() or (LINGER / user).exists()


def keep_user_manager(user: str) -> None:
    """`loginctl enable-linger USER` (setup runs it where `lingers` is false, and records it:
    teardown turns off only that)."""
    import subprocess

    result = subprocess.run(["loginctl", "enable-linger", user], capture_output=True, text=True)
    if result.returncode != 0 or not lingers(user):
        raise HostError(f"could not have systemd keep {user}'s manager after their last logout "
                        f"(`loginctl enable-linger {user}`): {result.stderr.strip() or 'no linger file'}")


def release_user_manager(user: str) -> None:
    import subprocess

    subprocess.run(["loginctl", "disable-linger", user], capture_output=True)


def undelegate_from_user_managers() -> None:
    """No user is set up any more: systemd's own delegation again."""
    import subprocess

    if DROP_IN.exists():
        DROP_IN.unlink()
        try:
            DROP_IN.parent.rmdir()
        except OSError:
            pass  # other drop-ins are in it
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)


def delegate(user: str, uid: int, gid: int) -> list[str]:
    """Make (or make right) the user's cgroup in every hierarchy; the folders made."""
    made = _delegate_to_user_managers() if systemd_manages() else []
    for hierarchy in _ours():
        target = user_cgroup(hierarchy, user)
        for folder in (target.parent, target):
            if not folder.is_dir():
                folder.mkdir()
                made.append(str(folder))
            if "cpuset" in hierarchy.keys:  # a cpuset cgroup takes no process until given cpus and mems
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if not (folder / name).read_text().strip():
                        (folder / name).write_text((folder.parent / name).read_text())
            if hierarchy.v2:
                _enable_controllers(folder.parent)
        os.chown(target, uid, gid)
        for name in OWNED_FILES:
            if (target / name).exists():
                os.chown(target / name, uid, gid)
    return made


def _enable_controllers(folder: Path) -> None:
    available = (folder / "cgroup.controllers").read_text().split()
    wanted = [c for c in V2_CONTROLLERS if c in available]
    if wanted:
        try:
            (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        except OSError:
            pass  # a cgroup with processes of its own can't hand controllers down: LXC does without


def undelegate(user: str) -> list[str]:
    """Remove the user's cgroups (and the empty ones LXC left inside them); the folders that
    could not go because something still runs in them."""
    busy = []
    for hierarchy in hierarchies():
        target = user_cgroup(hierarchy, user)
        if not target.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(target), key=lambda item: -len(item[0])):
            try:
                os.rmdir(folder)
            except OSError:
                busy.append(folder)
        try:
            (target.parent).rmdir()
        except OSError:
            pass  # another user's cgroup is in it
    return busy


def busy(user: str) -> bool:
    """Something runs in the user's cgroups (their machines)."""
    for hierarchy in hierarchies():
        target = user_cgroup(hierarchy, user)
        for folder, _, _ in os.walk(target):
            try:
                if Path(folder, "cgroup.procs").read_text().strip():
                    return True
            except OSError:
                continue
    return False


def why_missing() -> str:
    if systemd_manages():
        return "removed by a `systemctl daemon-reload` (systemd removes empty cgroups), or never made"
    return "the host was restarted since the setup, or it was never made"


def missing(user: str) -> list[Path]:
    """The user's cgroups that are not there (or not theirs): `host setup` makes them."""
    lacking = [DROP_IN] if systemd_manages() and not DROP_IN.exists() else []
    return lacking + [user_cgroup(h, user) for h in _ours() if not _usable(h, user)]


def _usable(hierarchy: Hierarchy, user: str) -> bool:
    target = user_cgroup(hierarchy, user)
    try:
        return target.stat().st_uid == os.geteuid() or os.geteuid() == 0 and target.is_dir()
    except OSError:
        return False


def join(user: str) -> None:
    """Before this process starts a machine as a normal user: be in a cgroup of one's own in
    every cgroup v1 hierarchy (cgroup v2 forbids moving oneself out of a cgroup one doesn't
    own; LXC then does without that hierarchy)."""
    own = _own_cgroups()
    lacking = []
    for hierarchy in _ours():
        if hierarchy.v2:
            continue
        current = hierarchy.mount / own.get(hierarchy.keys, "/").lstrip("/")
        if os.access(current, os.W_OK) and os.access(current / "cgroup.procs", os.W_OK):
            continue  # a cgroup of ours already (a login session's, or the user cgroup itself)
        target = user_cgroup(hierarchy, user)
        try:
            (target / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError:
            lacking.append(str(target))
    if lacking:
        from tapers.backend.liblxc.grants import setup_command

        raise HostError(
            f"no cgroup of yours to start machines in: {', '.join(lacking)} ({why_missing()})",
            hint=f"an admin runs: {setup_command(user)}",
        )


JOIN_THEN_EXEC = ("import os, sys; from tapers.backend.liblxc import delegation, grants; "
                  "delegation.join(grants.current_user()); os.execvp(sys.argv[1], sys.argv[1:])")


def start_prefix() -> list[str]:
    """What a normal user's `lxc-start` runs under where systemd owns the cgroups: a scope
    of their own, delegated. Elsewhere nothing (a cgroup `join` made this process's ours).
    On a hybrid or legacy host the scope's process is joined to the user's v1 cgroups once
    in the scope: the system manager puts a scope's process in user@UID.service's cgroup in
    every v1 hierarchy it manages (memory, pids, devices...), which are root's, undoing a
    join made before."""
    if not systemd_manages():
        return []
    import sys

    scope = ["systemd-run", "--user", "--scope", "--quiet", "-p", "Delegate=yes", "--"]
    if not _ours():
        return scope  # cgroup v2 only: the scope is all it takes
    return [*scope, sys.executable, "-P", "-c", JOIN_THEN_EXEC]  # -P: never the project folder's modules


def remove_monitor_cgroups(container: str, user: str | None, others: Callable[[], set[str]],
                           patience: float = 0.0) -> int:
    """LXC 5.0 leaves its monitor's cgroup (`lxc.monitor.NAME`, then `-1`, `-2`...) behind
    when a machine stops on a host with cgroup v1 hierarchies (the monitor is still in it
    when it tries), one more every start, in every hierarchy. Remove the empty ones, where
    this process (or, as a user, their tapers cgroup) starts machines: rmdir takes only an
    empty cgroup, so a running machine's monitor keeps its own. `others`: the containers
    that exist now: `lxc.monitor.web-1` may be container `web-1`'s own, being made at this
    very moment. `patience`: seconds to wait for a monitor that is still exiting (a destroyed
    machine starts no more to tidy up). How many are left (in use)."""
    import time

    own = _own_cgroups()
    prefix = f"lxc.monitor.{container}"
    deadline = time.monotonic() + patience
    while True:
        left = 0
        existing = others()
        for hierarchy in hierarchies():
            bases = {hierarchy.mount / own.get(hierarchy.keys, "/").lstrip("/")}
            if user is not None:
                bases.add(user_cgroup(hierarchy, user))
            for base in bases:
                try:
                    names = os.listdir(base)
                except OSError:
                    continue  # no such cgroup (a user's, before setup)
                for name in names:
                    suffix = name[len(prefix):] if name.startswith(prefix) else None
                    numbered = suffix and suffix.startswith("-") and suffix[1:].isdigit() and container + suffix not in existing
                    if suffix == "" or numbered:
                        try:
                            os.rmdir(base / name)
                        except OSError:
                            left += 1  # in use (the running machine's monitor, or one still exiting)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)
