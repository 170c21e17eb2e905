"""`sudo tapers host setup --user NAME` and `host teardown`: what a normal user needs from
root once, so they run their machines themselves afterwards (see grants.py).

Setup is idempotent (run it again after a reboot: bridges, nftables rules and cgroups live
in the kernel) and records in the grant every line it added to a shared file; teardown
removes exactly those, the bridge, the rules and the cgroups, and the grant.
"""

from __future__ import annotations

import ipaddress
import json
import re
import os
import pwd
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from tapers.backend import host_routes
from tapers.backend.api import MACHINE_IDS
from tapers.backend.liblxc import boot_hook, bridges, delegation, etc_files, grants, host, nft, unprivileged
from tapers.backend.liblxc.grants import Grant
from tapers.errors import BackendError, HostError, UsageError

USERNET = Path("/etc/lxc/lxc-usernet")
SHARED_FILES = (str(USERNET), "/etc/subuid", "/etc/subgid")  # the files other tools share that setup adds lines to
MADE_FILES = grants.GRANTS_DIR.parent / "made-files"  # those of them setup made (there were none)
NFT_TABLE = "tapers_users"
DEFAULT_NICS = 100  # network interfaces (machines, each with one NIC) the user may have at once
FIRST_SUBORDINATE = 100000
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


def setup(user: str, nics: int = DEFAULT_NICS, private: tuple[str, ...] = (), group: str = "") -> Grant:
    """`private`: host-only ranges to allow (added to those allowed before). `group`: the
    group whose setup this is (a grant given by name stays one). Every change is recorded in
    the grant before the next one is made: an interrupted setup is finished by running it
    again, or undone by `teardown`."""
    _require_root()
    account = _account(user)
    _check_nics(nics)
    with _setup_lock():
        old = grants.load(user)
        added: dict = dict(old.added) if old else {}
        subnet = old.subnet if old else _free_subnet(user)
        ranges = tuple(dict.fromkeys([*(old.private if old else ()), *(_private_range(user, c) for c in private)]))
        given_by = group or (old.group if old else "")  # (a grant given by name stays one; a group's, the group's)
        grant = Grant(user, account.pw_uid, account.pw_gid, subnet, nics, added, ranges, given_by)
        _save(grant)
        start = _free_subordinate_start()  # the same range in both files
        for path, key in ((Path("/etc/subuid"), "subuid"), (Path("/etc/subgid"), "subgid")):
            _ensure_subordinate_ids(user, path, start, lambda line, key=key: _record(grant, key, line))
        wanted = [f"{user} veth {bridge} {nics}" for bridge in (grant.bridge, *grant.private_bridges())]
        previous = _usernet_lines(added)  # what an earlier setup added (another --nics, fewer ranges)
        added["usernet"] = sorted(set(previous) | set(wanted))
        _save(grant)
        _edit_shared(USERNET, lambda lines: [*(line for line in lines if line not in previous + wanted), *wanted])
        added["usernet"] = wanted
        _save(grant)
        host.raise_inotify_limits()
        host.load_overlay()
        _ensure_network(grant)
        boot_hook.install()  # first: its `systemctl daemon-reload` removes empty cgroups (v1 controllers)
        made = delegation.delegate(user, account.pw_uid, account.pw_gid)
        added["cgroups"] = sorted(set(added.get("cgroups", [])) | set(made))
        _save(grant)
        if not delegation.lingers(user):  # their machines outlive their logins (systemd hosts)
            added["linger"] = True
            _save(grant)
            delegation.keep_user_manager(user)
    return grant


def _record(grant: Grant, key: str, line: str) -> None:
    grant.added[key] = line
    _save(grant)


def _usernet_lines(added: dict) -> list[str]:
    return list(added.get("usernet") or [])


def _check_nics(nics: int) -> None:
    if not 1 <= nics <= 10000:
        raise UsageError(f"--nics {nics}: give between 1 and 10000 network interfaces")


def setup_group(group: str, nics: int = DEFAULT_NICS) -> list[Grant]:
    """Every member of `group` set up, and the group recorded: `restore` sets up those who
    join it later and takes the grant back from those who leave it."""
    _require_root()
    import grp

    if not USER_NAME.fullmatch(group):
        raise UsageError(f"the group name {group!r} has characters tapers does not accept in one")
    try:
        grp.getgrnam(group)
    except KeyError:
        raise UsageError(f"there is no group `{group}` on this host", hint="create it first (addgroup)") from None
    _check_nics(nics)
    from tapers.rootfs import Root

    with _setup_lock():
        grants.GROUPS_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
        with Root(grants.GROUPS_DIR, str(grants.GROUPS_DIR), HostError) as folder:
            text = json.dumps({"version": grants.VERSION, "group": group, "nics": nics}, indent=2) + "\n"
            folder.write(grants.group_path(group).name, text.encode(), 0o644, 0, 0)
        boot_hook.install()  # (members who join later are set up at boot)
    return [setup(member, nics, group=group) for member in _joiners(group, grants.group_members(group) or set())]


def _joiners(group: str, members: set[str]) -> list[str]:
    """The members `group`'s setup gives a grant (again): not root, not an account that is
    gone, not one given by name or by another group (theirs stays as it is)."""
    found = []
    for member in sorted(members):
        grant = grants.load(member)
        try:
            normal = pwd.getpwnam(member).pw_uid != 0
        except KeyError:
            continue  # listed in the group, but no such user
        if normal and (grant is None or grant.group == group):
            found.append(member)
    return found


class Restored(NamedTuple):
    grants: list[Grant]  # set up again (or for the first time: they joined a group)
    revoked: list[str]  # users who left the group their grant came from (and are in no other set up)
    notes: list[str]  # what teardown of those left on the host, and why


def restore() -> Restored:
    """After the host restarted (the boot hook runs this), or a group's members changed:
    every user's setup made again; members who joined a set-up group since are set up, and
    users who left the group their grant came from lose it (or keep it through another
    set-up group of theirs). A group that can't be looked up now (its directory service not
    up yet) takes nothing away. One user's failure is a note; the others are set up."""
    _require_root()
    from tapers.errors import TapersError

    groups = grants.recorded_groups()
    members = {group: grants.group_members(group) for group in groups}
    made, revoked, notes = [], [], []
    granted = grants.all_grants()
    for grant in granted:
        group = grant.group
        try:
            if group and _left(grant, groups, members):
                group = next((g for g in groups if grant.user in (members[g] or set())), "")
                if not group:
                    revoked.append(grant.user)
                    _, kept = teardown(grant.user, force=True, by_group=True)
                    notes.extend(f"kept {line}: the files of {grant.user}'s machines, boxes and cached layers are "
                                 "owned by them" for line in kept)
                    continue
            nics = grant.nics if group == grant.group else groups[group]
            made.append(setup(grant.user, nics, grant.private, group))
        except (TapersError, KeyError, OSError) as exc:
            notes.append(f"user `{grant.user}`: {exc}")
    for group, nics in groups.items():
        for member in _joiners(group, (members[group] or set()) - {grant.user for grant in granted}):
            try:
                made.append(setup(member, nics, group=group))
            except (TapersError, OSError) as exc:
                notes.append(f"user `{member}` (group `{group}`): {exc}")
    return Restored(made, revoked, notes)


def _left(grant: Grant, groups: dict[str, int], members: dict[str, set[str] | None]) -> bool:
    """The user is verifiably no longer in the group their grant came from: it was torn
    down, or it lists them no more (a group that can't be read or looked up now: not)."""
    if grant.group not in groups:
        return not grants.group_path(grant.group).exists()  # (a damaged record: kept)
    found = members[grant.group]
    return found is not None and grant.user not in found


def teardown(user: str, force: bool = False, by_group: bool = False) -> tuple[Grant, list[str]]:
    """The grant taken back, and the subordinate ids setup gave that stay: the user still has
    machines, boxes or cached layers, whose files those ids own. A grant a set-up group gave
    is taken back by the group's teardown or by leaving the group (`by_group`), not by name:
    the next restore would give it back."""
    _require_root()
    kept: list[str] = []
    if not USER_NAME.fullmatch(user):
        raise UsageError(f"{user!r} is not a user name tapers sets up")
    with _setup_lock():
        grant = grants.load(user)
        if grant is None:
            raise UsageError(f"user `{user}` has no tapers setup on this host (no {grants.path_of(user)})")
        if not by_group and grant.group in grants.recorded_groups() and \
                user in (grants.group_members(grant.group) or set()):
            raise UsageError(f"user `{user}` is set up as a member of group `{grant.group}`: the next `host restore` "
                             "(at boot) would set them up again",
                             hint=f"take them out of the group (`gpasswd -d {user} {grant.group}`, then `sudo tapers "
                                  f"host restore`), or `sudo tapers host teardown --group {grant.group}`")
        if delegation.busy(user) and not force:
            raise HostError(
                f"machines of user `{user}` are running: tearing down their network now would cut them off",
                hint=f"`{user}` runs `tapers halt` in their projects first, or add --force",
            )
        _remove_rules(user)
        for bridge in (grant.bridge, *grant.private_bridges()):
            if bridges.exists(bridge):
                bridges.run(["ip", "link", "delete", bridge], f"remove the bridge {bridge}")
        added_lines = _usernet_lines(grant.added)
        etc_files.edit(USERNET, lambda lines: [line for line in lines if line not in added_lines])
        files = _tapers_files(user)
        for path, key in ((Path("/etc/subuid"), "subuid"), (Path("/etc/subgid"), "subgid")):
            line = grant.added.get(key)
            if line and files:  # freed, the range could go to someone else: with these files
                kept.append(f"{line} in {path}")
            elif line:
                etc_files.edit(path, lambda lines, line=line: [other for other in lines if other != line])
        leftover = delegation.undelegate(user)
        if grant.added.get("linger"):  # (only when setup turned it on)
            delegation.release_user_manager(user)
        grants.path_of(user).unlink()
        _remove_host_wide_if_unused()
    if leftover:
        raise HostError(f"cgroups still in use were left: {', '.join(leftover)}",
                        hint="they go when the processes in them end; `rmdir` them then")
    return grant, kept


def teardown_group(group: str, force: bool = False) -> list[tuple[Grant, list[str]]]:
    """The group no longer recorded, and the grants its setup gave taken back (see
    `teardown`); a member of another set-up group keeps theirs, as that group's."""
    _require_root()
    groups = grants.recorded_groups()
    if group not in groups:
        raise UsageError(f"group `{group}` has no tapers setup on this host (no {grants.group_path(group)})")
    taken = []
    for grant in (grant for grant in grants.all_grants() if grant.group == group):
        other = grants.set_up_group_of(grant.user, besides=group)
        if other is not None:
            setup(grant.user, groups[other], grant.private, other)
        else:
            taken.append(teardown(grant.user, force, by_group=True))  # (the group stays recorded if one stops)
    with _setup_lock():
        grants.group_path(group).unlink()
        _remove_host_wide_if_unused()
    return taken


def _edit_shared(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    """`etc_files.edit` of a file setup adds to; one there is none of is noted first (a setup
    killed meanwhile leaves it noted): the last teardown removes it again once it is empty."""
    made = _made_files()
    if not os.path.lexists(path) and str(path) not in made:
        from tapers.rootfs import Root

        MADE_FILES.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        with Root(MADE_FILES.parent, str(MADE_FILES.parent), HostError) as folder:
            folder.write(MADE_FILES.name, "".join(f"{name}\n" for name in [*made, str(path)]).encode(), 0o644, 0, 0)
    etc_files.edit(path, change)


def _made_files() -> list[str]:
    """The shared files setup made (only those it may make: the record is never taken for more)."""
    try:
        listed = MADE_FILES.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [made for made in listed if made in SHARED_FILES]


def _remove_host_wide_if_unused() -> None:
    """No user or group is set up any more: the boot hook, systemd's delegation, the shared
    files setup made (when nothing is left in them) and tapers' folders in /etc go."""
    if grants.all_grants() or grants.recorded_groups():
        return
    boot_hook.remove()
    delegation.undelegate_from_user_managers()
    for made in _made_files():
        try:
            etc_files.remove_if_empty(Path(made))
        except (BackendError, OSError):
            continue  # (kept, as a file with lines in it is: the rest of the teardown goes on)
    MADE_FILES.unlink(missing_ok=True)
    for folder in (grants.GRANTS_DIR, grants.GROUPS_DIR, grants.GRANTS_DIR.parent):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break  # other files are in it


def _tapers_files(user: str) -> list[Path]:
    """The user's folders of machines, boxes and cached layers that have something in them."""
    found = []
    try:
        folders = (grants.machines_folder(user), grants.boxes_folder(user), grants.boxes_folder(user).parent / "layers")
    except KeyError:
        return []  # no such account any more: its home went with it (userdel -r) or is no one's to find
    for folder in folders:
        try:
            if any(folder.iterdir()):
                found.append(folder)
        except OSError:
            continue
    return found


def _setup_lock() -> AbstractContextManager[None]:
    """One setup or teardown at a time on the host (they choose subnets, edit shared files)."""
    from tapers import locks, paths

    return locks.held(paths.host_run_dir() / "host-setup.lock")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HostError("this changes the host for other users: it needs root", hint="run it with sudo")


def _account(user: str) -> pwd.struct_passwd:
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"there is no user `{user}` on this host", hint="create it first (adduser)") from None
    if account.pw_uid == 0:
        raise UsageError("root runs tapers without a setup: --user names a normal user")
    if not USER_NAME.fullmatch(user):  # it lands in paths, nftables comments and /etc files
        raise UsageError(f"the user name {user!r} has characters tapers does not accept in one",
                         hint="letters, digits, '_', '-' and '.', not first")
    return account


def _private_range(user: str, cidr: str) -> str:
    """A host-only range for `user`: /20 to /24, private, overlapping nobody else's and none
    of the host's own networks."""
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise UsageError(f"--private {cidr}: {exc}", hint="give a network like 192.168.56.0/24") from None
    if not 20 <= network.prefixlen <= 24 or not network.is_private:
        raise UsageError(f"--private {cidr}: give a private IPv4 network from /20 to /24 (e.g. 192.168.56.0/24)")
    for other in grants.all_grants():
        clash = [r for r in (other.subnet, *other.private) if ipaddress.IPv4Network(r).overlaps(network)]
        if other.user != user and clash:
            raise UsageError(f"--private {cidr} overlaps {clash[0]}, user {other.user}'s")
    if network.overlaps(grants.USER_SUBNETS) or network.overlaps(bridges.SUBNET):
        raise UsageError(f"--private {cidr} overlaps tapers' own NAT networks ({grants.USER_SUBNETS}, {bridges.SUBNET})")
    own = tuple(bridge for bridge, _ in grants.private_networks((str(network),)))
    clash = next((net for net in host_routes.host_networks(own) if net.overlaps(network)), None)
    if clash is not None:
        raise UsageError(f"--private {cidr} overlaps this host's network {clash}")
    return str(network)


def _free_subnet(user: str) -> str:
    taken = {ipaddress.IPv4Network(g.subnet) for g in grants.all_grants() if g.user != user}
    host = host_routes.host_networks()
    for subnet in grants.USER_SUBNETS.subnets(new_prefix=24):
        if subnet not in taken and not any(net.overlaps(subnet) for net in host):
            return str(subnet)
    raise HostError(f"no /24 left in {grants.USER_SUBNETS} for another user's machines")


def _free_subordinate_start() -> int:
    """The first range of ids no one has: no user, group or subordinate range, not tapers'."""
    taken = unprivileged.others_ids() + [(unprivileged.FIRST, unprivileged.LAST)]
    return unprivileged.free_range(taken, first=FIRST_SUBORDINATE, last=2**32 - MACHINE_IDS)


def _ensure_subordinate_ids(user: str, path: Path, start: int, recorded) -> None:  # type: ignore[no-untyped-def]
    """Give `user` the range from `start` when they have none; `recorded` is told the line
    before the file changes."""
    try:
        grants.subordinate_range(user, (path, path))
        return
    except HostError:
        pass
    line = f"{user}:{start}:{MACHINE_IDS}"
    recorded(line)
    _edit_shared(path, lambda lines: [*lines, line])


OTHER_NETWORKS = ("tp*", "tapers*", "lxcbr*", "lxdbr*", "virbr*", "docker*", "br-*")  # machines' bridges


def _ensure_network(grant: Grant) -> None:
    """The user's bridges (NAT, and each private /24) with the host at .1, forwarding on, and
    their nftables rules, replaced in one transaction (see _rules)."""
    network = ipaddress.IPv4Network(grant.subnet)
    bridges.ensure_bridge(grant.bridge, f"{grant.gateway}/{network.prefixlen}", f"the bridge of user {grant.user}")
    for bridge, subnet in grant.private_networks():
        bridges.ensure_bridge(bridge, f"{subnet.network_address + 1}/24", f"the private bridge {bridge} of user {grant.user}")
    bridges.enable_forwarding()
    script = (
        f"table ip {NFT_TABLE} {{\n"
        "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
        "  chain forward { type filter hook forward priority filter; policy accept; }\n"
        "  chain output { type filter hook output priority filter; policy accept; }\n"
        "}\n"
    )
    script += _removal(grant.user, whole_table=False) + _rules(grant)
    nft.apply(script, f"install the network rules of user {grant.user}")


def _rules(grant: Grant) -> str:
    """The user's machines reach the outside world (NAT), the host, and each other; nothing
    else on the host: no other machines' network (tapers', other users', LXC's, LXD's...), no
    source address but their own, no connection into their networks but from the host's root
    and the user themself (another user's shell can't open one), and their private networks
    route nowhere."""
    comment = f'comment "tapers-user {grant.user}"'
    network = ipaddress.IPv4Network(grant.subnet)
    bridge = grant.bridge
    rule = f"add rule ip {NFT_TABLE}"
    # With br_netfilter (Docker, LXD load it), traffic between two machines on one bridge
    # passes the forward hook too, in and out of that bridge: it is always let through.
    lines = [
        f"{rule} postrouting ip saddr {network} ip daddr != {network} masquerade {comment}",
        f"{rule} forward iifname {bridge} ip saddr != {network} drop {comment}",
        *(f'{rule} forward iifname {bridge} oifname != {bridge} oifname "{other}" drop {comment}'
          for other in OTHER_NETWORKS),
        f"{rule} forward oifname {bridge} iifname != {bridge} ct state != {{ established, related }} drop {comment}",
    ]
    for private, own in grant.private_networks():
        lines += [f"{rule} forward iifname {private} ip saddr != {own} drop {comment}",
                  f"{rule} forward iifname {private} oifname != {private} drop {comment}",
                  f"{rule} forward oifname {private} iifname != {private} drop {comment}"]
    for own in (bridge, *grant.private_bridges()):
        lines.append(f"{rule} output oifname {own} ct state new meta skuid != {{ 0, {grant.uid} }} drop {comment}")
    return "".join(f"{line}\n" for line in lines)


def _removal(user: str, whole_table: bool) -> str:
    """nft commands that take the user's rules away (`whole_table`: the table too, when no
    other user's rule is in it)."""
    rules = nft.rules(NFT_TABLE)
    if not rules and not nft.run(f"list table ip {NFT_TABLE}")[0]:
        return ""
    mine = [r for r in rules if r.get("comment") == f"tapers-user {user}"]
    if whole_table and len(mine) == len(rules):
        return f"delete table ip {NFT_TABLE}\n"
    return "".join(f"delete rule ip {NFT_TABLE} {r['chain']} handle {r['handle']}\n" for r in mine)


def _remove_rules(user: str) -> None:
    script = _removal(user, whole_table=True)
    if script:
        nft.apply(script, f"remove the network rules of user {user}")


def _save(grant: Grant) -> None:
    from tapers.rootfs import Root

    grants.GRANTS_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    with Root(grants.GRANTS_DIR, str(grants.GRANTS_DIR), HostError) as folder:
        folder.write(grants.path_of(grant.user).name, grant.to_json().encode(), 0o644, 0, 0)
