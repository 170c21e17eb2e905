"""The `tapers` entry point: the one place that turns errors into messages and exit codes."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (typing's, without loading typing before the collector is set: see main)
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any


def main(argv: list[str] | None = None) -> None:
    """The `tapers` command itself (tests call `run`)."""
    _collect_less_often()
    from tapers import profile

    try:
        code = run(argv)
    finally:
        profile.report()
    _leave(code)


def _collect_less_often() -> None:
    """Python's cycle collector run less often (every 20 000 new objects, not 700): loading
    a command's modules makes tens of thousands of objects that live as long as it does,
    and the collector would walk them all again and again (5 % of a `status`). (No thread
    to turn it back on later: starting one costs a `status` more than that.)"""
    import gc

    gc.set_threshold(20_000, 10, 10)


def _leave(code: int) -> None:
    """Exit once the command is done and its output written, without tearing the
    interpreter down: freeing every module's objects, which no one needs once the process
    ends, costs a command 4-7 ms (a tenth of a `status`). Commands close their files,
    locks, sessions and thread pools themselves; a thread still at work (one a second Ctrl-C
    left behind) is waited for the usual way instead."""
    import os

    threading = sys.modules.get("threading")  # (not loaded: no thread was ever started)
    if threading and any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # (a closed pipe: `tapers status | head -1`) the output has nowhere to go
        pass
    os._exit(code)


def run(argv: list[str] | None = None) -> int:
    from tapers.cli import quick

    args = sys.argv[1:] if argv is None else list(argv)
    call = quick.form(args)
    return _run_app(args) if call is None else _guarded(call)


def _guarded(call: Callable[[], Any]) -> int:
    """Run a command; its errors become a message and an exit code, here and nowhere else."""
    import signal

    from tapers.errors import ExitCode, TapersError

    interrupted = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = call()
    except TapersError as exc:
        result = None
        if not interrupted:  # an error caused by Ctrl-C is reported as the interruption
            from tapers.cli.output import error

            error(exc.message, exc.hint)
            return int(exc.exit_code)
    except KeyboardInterrupt:
        result = None
        interrupted.append(signal.SIGINT)
    except Exception as exc:
        if _is_usage_error(exc):  # click's, or the copy vendored in recent typer
            exc.show()  # type: ignore[attr-defined]
            return int(ExitCode.USAGE)
        return _unexpected()
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:  # typer and click turn Ctrl-C into exit codes: say it once, here
        from tapers.cli.output import error

        error("interrupted", hint="`tapers up` finishes what was left half-done")
        return int(ExitCode.INTERRUPTED)
    return result if isinstance(result, int) else int(ExitCode.OK)


def _run_app(args: list[str]) -> int:
    """Any command, through typer: its Exit and Abort are ours to turn into exit codes."""
    import typer

    from tapers.cli.app import app

    def call() -> Any:
        try:
            return app(args=args, prog_name="tapers", standalone_mode=False)
        except typer.Exit as exc:
            return exc.exit_code
        except typer.Abort:
            raise KeyboardInterrupt from None

    return _guarded(call)


def _is_usage_error(exc: Exception) -> bool:
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and hasattr(exc, "show")


def _unexpected() -> int:
    """A bug in tapers: keep the traceback in a log file, tell the user where it is."""
    import traceback

    from tapers.cli.output import error
    from tapers.errors import ExitCode, TapersError

    log = _error_log_path()
    text = traceback.format_exc()
    try:
        from tapers import project_files
        from tapers.paths import PROJECT_STATE_DIR

        if log.parent.name == PROJECT_STATE_DIR:
            project_files.check_dir(log.parent, create=True)
            project_files.write(log, text, 0o600)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text)
        where = f"the traceback is in {log}"
    except (OSError, TapersError):
        where = "the traceback follows:\n" + text
    exc = sys.exc_info()[1]
    error(
        f"unexpected {type(exc).__name__}: {exc}",
        hint=f"this is a bug in tapers; {where} (please include it when you report it)",
    )
    return int(ExitCode.FAILED)


def _error_log_path() -> Path:
    from tapers import paths
    from tapers.errors import TapersError
    from tapers.taperfile import find_taperfile

    try:
        return paths.ProjectPaths(find_taperfile().parent).last_error_log
    except TapersError:
        return paths.tapers_home() / "last-error.log"
