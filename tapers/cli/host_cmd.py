"""`sudo tapers host setup|teardown --user NAME`: let a normal user run machines themselves."""

from __future__ import annotations

from typing import Annotated

import typer

from tapers.cli import output

host_app = typer.Typer(no_args_is_help=True, help="Let a normal user run machines without sudo (run as root).")

User = Annotated[str, typer.Option("--user", help="the user's login name", show_default=False)]


@host_app.command("setup")
def setup(
    user: User,
    nics: Annotated[int, typer.Option("--nics", help="how many network interfaces (machines) they may have at once")] = 100,
) -> None:
    """Let USER run machines: ids, a bridge and network of their own, cgroups (again after a reboot)."""
    from tapers.backend.liblxc import host_setup

    grant = host_setup.setup(user, nics)
    output.say(f"user `{user}` may run machines: bridge {grant.bridge}, network {grant.subnet}, "
               f"up to {grant.nics} network interfaces")
    output.say(f"undo with: tapers host teardown --user {user}")


@host_app.command("teardown")
def teardown(
    user: User,
    force: Annotated[bool, typer.Option("--force", help="even while their machines run (they lose their network)")] = False,
) -> None:
    """Take back what `host setup` gave USER (their machines and boxes stay in their home)."""
    from tapers.backend.liblxc import host_setup

    grant = host_setup.teardown(user, force)
    output.say(f"user `{user}` no longer runs machines here: {grant.bridge} and its rules are gone")
