"""The plainest forms of the most used commands run without typer (quick.py); every other
form goes to typer, which stays the one definition of the command line."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tapers.cli import core_commands, quick


@pytest.mark.parametrize("args, expected", [
    (["status"], ("status", None, {"as_json": False})),
    (["status", "--json"], ("status", None, {"as_json": True})),
    (["-f", "x/Taperfile.yaml", "status"], ("status", Path("x/Taperfile.yaml"), {"as_json": False})),
    (["up"], ("up", None, {"names": None})),
    (["up", "web", "db"], ("up", None, {"names": ["web", "db"]})),
    (["halt", "web"], ("halt", None, {"names": ["web"]})),
    (["destroy", "-f"], ("destroy", None, {"names": None, "force": True})),
    (["destroy", "web", "--force"], ("destroy", None, {"names": ["web"], "force": True})),
    (["ssh", "-c", "make test"], ("ssh", None, {"name": None, "command": "make test", "extra": []})),
    (["ssh", "web", "--command", "-x"], ("ssh", None, {"name": "web", "command": "-x", "extra": []})),
])
def test_the_quick_forms_call_what_their_typer_commands_call(monkeypatch, args, expected) -> None:
    called = []
    for name in ("status", "up", "halt", "destroy", "ssh"):
        real = getattr(core_commands, name)

        def record(*given, name=name, real=real, **options):  # the arguments by name, as the real one binds them
            called.append((name, inspect.signature(real).bind(*given, **options).arguments))
        monkeypatch.setattr(core_commands, name, record)
    call = quick.form(args)
    assert call is not None
    call()
    command, file, wanted = expected
    assert called == [(command, {"file": file, **wanted})]


@pytest.mark.parametrize("args", [
    [], ["--version"], ["status", "--help"], ["status", "web"], ["up", "--no-provision"], ["up", "--", "web"],
    ["halt", "--timeout", "5"], ["destroy"], ["destroy", "web"], ["destroy", "-f", "-f"], ["ssh"], ["ssh", "web"],
    ["ssh", "web", "--", "-A"], ["ssh", "-c"], ["ssh", "-c", "true", "web"], ["--backend", "lxd", "status"],
    ["-f", "--json", "status"], ["plan"], ["provision"],
])
def test_every_other_form_goes_to_typer(args) -> None:
    assert quick.form(args) is None


def test_the_quick_path_loads_no_typer() -> None:
    code = "import sys, tapers.cli.main, tapers.cli.quick, tapers.cli.core_commands; assert 'typer' not in sys.modules"
    subprocess.run([sys.executable, "-P", "-c", code], check=True)
