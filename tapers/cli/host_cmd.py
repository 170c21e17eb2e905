"""`sudo tapers host setup|teardown|restore`: let normal users run machines themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tapers.cli import output
from tapers.errors import UsageError

if TYPE_CHECKING:
    from tapers.backend.liblxc.grants import Grant

host_app = typer.Typer(no_args_is_help=True, help="Let normal users run machines without sudo (run as root).")

UserOption = Annotated[Optional[str], typer.Option("--user", help="a user's login name", show_default=False)]
GroupOption = Annotated[Optional[str], typer.Option(
    "--group", help="every member of this group (`host restore` sets up those who join later, and takes it "
                    "back from those who leave)", show_default=False)]


def _one_of(user: str | None, group: str | None) -> None:
    if (user is None) == (group is None):
        raise UsageError("name one --user or one --group")


def _say_setup(grant: Grant) -> None:
    output.say(f"user `{grant.user}` may run machines: bridge {grant.bridge}, network {grant.subnet}, "
               f"up to {grant.nics} network interfaces"
               + (f"; private networks in {', '.join(grant.private)}" if grant.private else ""))


def _say_teardown(user: str, grant: Grant, kept: list[str]) -> None:
    output.say(f"user `{user}` no longer runs machines here: {grant.bridge} and its rules are gone")
    if kept:
        output.say(f"kept {', '.join(kept)}: their machines and boxes (in their home) are owned by those ids; "
                   f"once they are gone, `usermod --del-subuids ... --del-subgids ... {user}` frees them")


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

    _one_of(user, group)
    if group is not None:
        if private:
            raise UsageError("--private ranges are one user's own: give them with --user")
        given = host_setup.setup_group(group, nics)
        if not given:
            output.say(f"group `{group}` has no members yet: `host restore` sets up those who join")
    else:
        given = [host_setup.setup(user, nics, tuple(private or ()))]
    for grant in given:
        _say_setup(grant)
    hook = boot_hook.installed()
    output.say(f"after a reboot, {hook} makes it again" if hook else
               "nothing on this host runs at boot for tapers: after a reboot, run `sudo tapers host restore`")
    output.say(f"undo with: sudo tapers host teardown {'--user ' + user if user else '--group ' + str(group)}")


@host_app.command("restore")
def restore() -> None:
    """Make every user's setup again (after a reboot; the boot hook `host setup` installs runs it)."""
    from tapers.backend.liblxc import host_setup

    restored = host_setup.restore()
    for grant in restored.grants:
        output.say(f"user `{grant.user}`: bridge {grant.bridge}, network {grant.subnet}"
                   + (f" (group `{grant.group}`)" if grant.group else ""))
    for name in restored.revoked:
        output.say(f"user `{name}` left the group that set them up: they no longer run machines here")
    for note in restored.notes:
        output.say(note)


@host_app.command("teardown")
def teardown(
    user: UserOption = None,
    group: GroupOption = None,
    force: Annotated[bool, typer.Option("--force", help="even while their machines run (they lose their network)")] = False,
) -> None:
    """Take back what `host setup` gave (their machines and boxes stay in their home)."""
    from tapers.backend.liblxc import host_setup

    _one_of(user, group)
    if group is not None:
        for grant, kept in host_setup.teardown_group(group, force):
            _say_teardown(grant.user, grant, kept)
        output.say(f"group `{group}` is no longer set up for tapers")
        return
    grant, kept = host_setup.teardown(user, force)
    _say_teardown(user, grant, kept)
