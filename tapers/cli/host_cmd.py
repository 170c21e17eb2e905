"""`sudo tapers host setup|teardown|restore`: let normal users run machines themselves."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tapers.cli import output
from tapers.errors import UsageError

host_app = typer.Typer(no_args_is_help=True, help="Let normal users run machines without sudo (run as root).")

UserOption = Annotated[Optional[str], typer.Option("--user", help="a user's login name", show_default=False)]
GroupOption = Annotated[Optional[str], typer.Option(
    "--group", help="every member of this group (run it again for members who join later)", show_default=False)]


def _users(user: str | None, group: str | None) -> list[str]:
    if (user is None) == (group is None):
        raise UsageError("name one --user or one --group")
    if user is not None:
        return [user]
    import grp
    import pwd

    try:
        entry = grp.getgrnam(group)
    except KeyError:
        raise UsageError(f"there is no group `{group}` on this host") from None
    members = set(entry.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == entry.gr_gid}
    if not members:
        raise UsageError(f"group `{group}` has no members")
    return sorted(members)


@host_app.command("setup")
def setup(
    user: UserOption = None,
    group: GroupOption = None,
    nics: Annotated[int, typer.Option("--nics", help="how many network interfaces (machines) they may have at once")] = 100,
    private: Annotated[Optional[list[str]], typer.Option(
        "--private", help="a host-only range (/20 to /24) their machines' private networks may use (repeat)")] = None,
) -> None:
    """Let a user run machines: ids, a bridge and network of their own, cgroups (again after a reboot)."""
    from tapers.backend.liblxc import boot_hook, host_setup

    names = _users(user, group)
    if private and len(names) > 1:
        raise UsageError("--private ranges are one user's own: give them with --user")
    for name in names:
        grant = host_setup.setup(name, nics, tuple(private or ()))
        output.say(f"user `{name}` may run machines: bridge {grant.bridge}, network {grant.subnet}, "
                   f"up to {grant.nics} network interfaces"
                   + (f"; private networks in {', '.join(grant.private)}" if grant.private else ""))
    hook = boot_hook.installed()
    output.say(f"after a reboot, {hook} makes it again" if hook else
               "nothing on this host runs at boot for tapers: after a reboot, run `sudo tapers host restore`")
    output.say(f"undo with: tapers host teardown {'--user ' + user if user else '--group ' + str(group)}")


@host_app.command("restore")
def restore() -> None:
    """Make every user's setup again (after a reboot; the boot hook `host setup` installs runs it)."""
    from tapers.backend.liblxc import host_setup

    for grant in host_setup.restore():
        output.say(f"user `{grant.user}`: bridge {grant.bridge}, network {grant.subnet}")


@host_app.command("teardown")
def teardown(
    user: UserOption = None,
    group: GroupOption = None,
    force: Annotated[bool, typer.Option("--force", help="even while their machines run (they lose their network)")] = False,
) -> None:
    """Take back what `host setup` gave (their machines and boxes stay in their home)."""
    from tapers.backend.liblxc import grants, host_setup

    names = _users(user, group)
    if group is not None:
        names = [name for name in names if grants.load(name) is not None]
    for name in names:
        grant, kept = host_setup.teardown(name, force)
        output.say(f"user `{name}` no longer runs machines here: {grant.bridge} and its rules are gone")
        if kept:
            output.say(f"kept {', '.join(kept)}: their machines and boxes (in their home) are owned by those ids; "
                       f"once they are gone, `usermod --del-subuids ... --del-subgids ... {name}` frees them")
