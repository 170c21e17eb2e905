"""`tapers ui`: the web panel (see tapers/ui/)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from tapers.cli import output
from tapers.cli.common import open_project

DEFAULT_PORT = 8419


def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)", min=0, max=65535)] = DEFAULT_PORT,
    all_projects: Annotated[bool, typer.Option("--all", help="every tapers project on this host")] = False,
) -> None:
    """A web panel on 127.0.0.1: machines, their use, and buttons to up, halt, destroy..."""
    from tapers.backend import default_backend
    from tapers.errors import HostError
    from tapers.ui.panel import Panel
    from tapers.ui.server import PanelServer

    taperfile = None if all_projects else open_project(ctx).loaded.path
    try:
        server = PanelServer(port, Panel(default_backend(), taperfile))
    except OSError as exc:
        raise HostError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}",
            hint="another program uses that port: pick another with --port N (0: any free port)",
        ) from None
    output.say(f"tapers ui: open {server.guard.url()}")
    output.say("(the token in it is the key to this panel; Ctrl-C stops it)")

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    import gc

    gc.set_threshold(700, 10, 10)  # (Python's own: it runs for hours; a command's start collects less, see main)
    try:
        server.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
        running = server.jobs.running()
        if running:
            output.say(f"waiting for {', '.join(j.title for j in running)} to finish")
            server.jobs.wait_all(timeout=600)
    output.say("tapers ui stopped")
