"""What an admin gave a normal user with `sudo tapers host setup --user NAME`, read by that
user's tapers: a bridge of their own (`tpu<uid>`) on a /24 of their own, NAT to the outside,
a quota of network interfaces in /etc/lxc/lxc-usernet, subordinate ids, and cgroups they may
create machines' cgroups in.

The grant is a root-owned file, /etc/tapers/users/<name>.json; the user reads it and can't
change it. It also records what setup added to the host, so `host teardown` takes exactly
that away.

`host setup --group NAME` records the group too (/etc/tapers/groups/<name>.json): its members
are set up one by one, and `host restore` (at boot, or by hand) sets up those who joined it
since and takes the grant back from those who left it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
from pathlib import Path
from typing import Any, NamedTuple

from tapers.backend.api import MACHINE_IDS
from tapers.errors import HostError

GRANTS_DIR = Path("/etc/tapers/users")
GROUPS_DIR = Path("/etc/tapers/groups")
USER_SUBNETS = ipaddress.IPv4Network("10.98.0.0/16")  # a /24 of it per user
BRIDGE_PREFIX = "tpu"  # + the uid: tpu1001
PRIVATE_PREFIX = "tpv"  # + the /24 in hex: tpvc0a84d is a user's 192.168.77.0/24 (root's are tp + hex)
VERSION = 1


class Grant(NamedTuple):
    user: str
    uid: int
    gid: int
    subnet: str
    nics: int
    added: dict[str, Any]  # what setup added to the host (for teardown)
    private: tuple[str, ...] = ()  # host-only ranges the user may put machines on (/24s of them)
    group: str = ""  # the group whose setup gave it ("": given to the user by name)

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.uid}"

    def private_networks(self) -> list[tuple[str, ipaddress.IPv4Network]]:
        return private_networks(self.private)

    def private_bridges(self) -> list[str]:
        return [bridge for bridge, _ in self.private_networks()]

    def private_range_of(self, address: str) -> str | None:
        ip = ipaddress.IPv4Address(address)
        return next((cidr for cidr in self.private if ip in ipaddress.IPv4Network(cidr)), None)

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.subnet).network_address + 1)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **self._asdict(), "private": list(self.private)}, indent=2,
                          sort_keys=True) + "\n"


def private_networks(ranges: tuple[str, ...]) -> list[tuple[str, ipaddress.IPv4Network]]:
    """(bridge, /24) of each /24 of these private ranges."""
    from tapers.backend.addresses import private_bridge

    return [(private_bridge(str(net.network_address), PRIVATE_PREFIX), net)
            for cidr in ranges for net in ipaddress.IPv4Network(cidr).subnets(new_prefix=24)]


def path_of(user: str) -> Path:
    return GRANTS_DIR / f"{user}.json"


def setup_command(user: str) -> str:
    """What an admin runs to set `user` up: their group's setup when a group of theirs was set up."""
    group = set_up_group_of(user)
    return f"sudo tapers host setup --group {group}" if group else f"sudo tapers host setup --user {user}"


def set_up_group_of(user: str, besides: str = "") -> str | None:
    """A group `host setup --group` was run for (but `besides`) that `user` is a member of."""
    return next((g for g in recorded_groups() if g != besides and user in (group_members(g) or set())), None)


def group_members(group: str) -> set[str] | None:
    """Its members: those it lists and those whose own group it is; None when it can't be
    looked up (no such group, or its directory service isn't answering yet)."""
    import grp

    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return None
    return set(entry.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == entry.gr_gid}


def group_path(group: str) -> Path:
    return GROUPS_DIR / f"{group}.json"


def recorded_groups() -> dict[str, int]:
    """The groups `host setup --group` was run for: name -> the network interfaces each member may have."""
    found = {}
    for path in sorted(GROUPS_DIR.glob("*.json")) if GROUPS_DIR.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if data["group"] == path.stem:
                found[path.stem] = int(data["nics"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours: `host setup --group` writes it again
    return found


def current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise HostError(f"uid {os.geteuid()} has no name in /etc/passwd: tapers can't find what it may use",
                        hint="run tapers as a user with an account on this host") from None


def load(user: str) -> Grant | None:
    """The user's grant, or None when setup was never run for them."""
    try:
        data = json.loads(path_of(user).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HostError(f"cannot read {path_of(user)}: {exc}",
                        hint=f"run `{setup_command(user)}` again") from None
    try:
        return Grant(str(data["user"]), int(data["uid"]), int(data["gid"]), str(ipaddress.IPv4Network(data["subnet"])),
                     int(data["nics"]), dict(data.get("added") or {}),
                     tuple(str(ipaddress.IPv4Network(cidr)) for cidr in data.get("private") or ()), str(data.get("group") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise HostError(f"{path_of(user)} is not a tapers grant ({exc})", hint=f"run `{setup_command(user)}` again") from None


def mine() -> Grant:
    """The grant of the user running tapers; a clear error with the fix when there is none."""
    user = current_user()
    grant = load(user)
    if grant is None or grant.uid != os.geteuid():
        raise HostError(
            f"user `{user}` may not run machines on this host yet (no {path_of(user)})",
            hint=f"an admin runs, once: {setup_command(user)}",
        )
    return grant


def machines_folder(user: str) -> Path:
    """Where the user's tapers keeps their machines (the XDG data folder, by default)."""
    return Path(pwd.getpwnam(user).pw_dir) / ".local" / "share" / "tapers" / "machines"


def boxes_folder(user: str) -> Path:
    """Where the user's tapers keeps their boxes (the XDG cache folder, by default)."""
    return Path(pwd.getpwnam(user).pw_dir) / ".cache" / "tapers" / "boxes"


def all_grants() -> list[Grant]:
    if not GRANTS_DIR.is_dir():
        return []
    found = []
    for path in sorted(GRANTS_DIR.glob("*.json")):
        grant = load(path.stem)
        if grant is not None:
            found.append(grant)
    return found


def subordinate_range(user: str, files: tuple[Path, Path] = (Path("/etc/subuid"), Path("/etc/subgid"))) -> tuple[int, int]:
    """(first subordinate uid, first subordinate gid) of a range of at least MACHINE_IDS ids the
    user was given in /etc/subuid and /etc/subgid."""
    starts = []
    for path in files:
        start = None
        try:
            lines = path.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == user and fields[1].isdigit() and fields[2].isdigit():
                if int(fields[2]) >= MACHINE_IDS:
                    start = int(fields[1])
                    break
        if start is None:
            raise HostError(f"user `{user}` has no range of {MACHINE_IDS} ids in {path}",
                            hint=f"an admin runs: {setup_command(user)}")
        starts.append(start)
    return starts[0], starts[1]


LISTING_LIMIT = 1 << 20
LISTED_FIELDS = {"container": str, "project": str, "machine": str, "state": str, "address": (str, type(None)),
                 "folder": (str, type(None)), "folder_gone": bool, "tapers_record": bool}


def listing_of(user: str) -> list[dict[str, Any]]:
    """As root: `tapers global-status --json` run as `user` (their tapers sees their machines;
    root reads nothing of theirs), each row checked and its text made printable."""
    import subprocess
    import sys

    from tapers.taperfile.units import printable

    account = pwd.getpwnam(user)
    env = {"HOME": account.pw_dir, "USER": user, "LOGNAME": user, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    argv = ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
            sys.executable, "-I", "-m", "tapers", "global-status", "--json"]
    failed = {"user": user, "container": "?", "project": "?", "machine": "?", "address": None, "folder": None,
              "folder_gone": False, "tapers_record": False}
    try:
        result = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/")
        rows = json.loads(result.stdout[:LISTING_LIMIT]) if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        rows = None
    if not isinstance(rows, list):
        return [{**failed, "state": "(their machines could not be listed)"}]
    checked = []
    for row in rows:
        if not isinstance(row, dict) or not all(isinstance(row.get(k), t) for k, t in LISTED_FIELDS.items()):
            return [{**failed, "state": "(their listing was not understood)"}]
        row = {k: printable(v) if isinstance(v, str) else v for k, v in row.items() if k in LISTED_FIELDS}
        checked.append({"user": user, **row})
    return checked
