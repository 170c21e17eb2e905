"""The `tapers` command line: the app, its global options, and every command in one list.

Each command lives in a module by theme; heavy modules (the backend, paramiko, the
apply engine) are imported inside the commands that use them, so quick commands start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tapers import __version__
from tapers.cli import access_cmd, lifecycle_cmd, output, project_cmd, runtime_cmd, ui_cmd
from tapers.cli.box_cmd import box_app
from tapers.cli.cache_cmd import cache_app
from tapers.cli.host_cmd import host_app
from tapers.cli.common import Options
from tapers.cli.snapshot_cmd import snapshot_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible development environments in Linux containers.",
)


def _version(value: bool) -> None:
    if value:
        output.say(f"tapers {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="the Taperfile to use")] = None,
    backend: Annotated[
        Optional[str],
        typer.Option("--backend", help="liblxc or lxd (default: TAPERS_BACKEND, then ~/.config/tapers/config.yaml)"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    if backend is not None:
        import os

        from tapers.user_config import BACKENDS

        if backend not in BACKENDS:
            raise typer.BadParameter(f"one of: {', '.join(BACKENDS)}", param_hint="--backend")
        os.environ["TAPERS_BACKEND"] = backend  # and so for the commands tapers runs itself (`tapers ui`)
    ctx.obj = Options(file=file)


app.command()(project_cmd.init)
app.command()(project_cmd.validate)
app.command()(project_cmd.config)
app.command()(project_cmd.schema)
app.command()(project_cmd.plan)
app.command()(project_cmd.trust)
app.command()(lifecycle_cmd.up)
app.command()(lifecycle_cmd.provision)
app.command()(project_cmd.status)
app.command()(access_cmd.ssh)
app.command("ssh-config")(access_cmd.ssh_config)
app.command("exec")(access_cmd.exec_)
app.command()(access_cmd.console)
app.command()(access_cmd.cp)
app.command()(runtime_cmd.port)
app.command()(runtime_cmd.stats)
app.command()(runtime_cmd.limits)
app.command()(runtime_cmd.package)
app.command()(lifecycle_cmd.reload)
app.command()(lifecycle_cmd.halt)
app.command()(lifecycle_cmd.suspend)
app.command()(lifecycle_cmd.resume)
app.command()(lifecycle_cmd.destroy)
app.add_typer(snapshot_app, name="snapshot")
app.command("global-status")(project_cmd.global_status)
app.command()(project_cmd.doctor)
app.command()(ui_cmd.ui)
app.add_typer(box_app, name="box")
app.add_typer(cache_app, name="cache")
app.add_typer(host_app, name="host")
