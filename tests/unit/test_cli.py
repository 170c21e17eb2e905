"""The CLI in-process, for what needs no container: version, init, validate, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers import __version__
from tapers.cli.main import run
from tapers.taperfile import load_taperfile


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_version(capsys) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"tapers {__version__}\n"


def test_init_writes_a_valid_taperfile_and_refuses_to_overwrite(in_tmp: Path, capsys) -> None:
    assert run(["init", "--machine", "web"]) == 0
    loaded = load_taperfile(in_tmp / "Taperfile.yaml")
    assert [m.name for m in loaded.machines] == ["web"]
    assert loaded.machines[0].primary
    assert run(["init"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_validate_ok_and_found_from_a_subfolder(in_tmp: Path, monkeypatch, capsys) -> None:
    (in_tmp / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n  db: {}\n")
    (in_tmp / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(in_tmp / "src" / "deep")
    assert run(["validate"]) == 0
    assert "valid: 2 machine(s): web, db" in capsys.readouterr().out


def test_invalid_taperfile_exits_3_with_every_problem(in_tmp: Path, capsys) -> None:
    (in_tmp / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {memroy: 1G, cpus: -1}\n")
    assert run(["validate"]) == 3
    err = capsys.readouterr().err
    assert "Taperfile.yaml:3:9: machines.web.memroy: unknown key `memroy` (did you mean `memory`?)" in err
    assert "machines.web.cpus" in err
    assert "hint:" in err


def test_no_taperfile_is_a_clear_error(in_tmp: Path, capsys) -> None:
    assert run(["status"]) == 3
    err = capsys.readouterr().err
    assert "no Taperfile.yaml" in err and "tapers init" in err


def test_override_file_is_merged(in_tmp: Path) -> None:
    (in_tmp / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {memory: 1G, cpus: 2}\n")
    (in_tmp / "Taperfile.override.yaml").write_text("machines:\n  web: {memory: 2G}\n")
    web = load_taperfile(in_tmp / "Taperfile.yaml").machines[0]
    assert (web.memory, web.cpus) == (2 * 1024**3, 2)


def test_usage_errors_exit_2(in_tmp: Path, capsys) -> None:
    assert run(["no-such-command"]) == 2
    (in_tmp / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
    assert run(["ssh", "nosuch", "-c", "true"]) == 2
    assert "no machine `nosuch`" in capsys.readouterr().err


@pytest.mark.parametrize("option,value,said", [
    ("--cpus", "0", "greater than 0"), ("--cpus", "2000", "less than or equal to 1024"),
    ("--cpus", "lots", "valid number"), ("--pids", "3", "greater than or equal to 16"),
    ("--pids", "1.5", "valid integer"), ("--memory", "lots", "--memory lots"), ("--memory", "-1G", "--memory -1G"),
])
def test_limits_are_checked_by_the_taperfiles_rules_before_anything_is_read(in_tmp: Path, capsys, option: str,
                                                                             value: str, said: str) -> None:
    """`tapers limits` takes the values a Taperfile may hold, no others: refused with exit 2
    before the backend is even asked (no machine exists here, and none is looked for)."""
    (in_tmp / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
    assert run(["limits", "web", f"{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"{option} {value}" in err and said in err and "not created" not in err


def _tapers(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-P", "-c", "from tapers.cli.main import main; main()", *args]


def test_the_command_leaves_with_its_exit_code_and_all_its_output(in_tmp: Path) -> None:
    """`main` leaves without tearing the interpreter down: what it printed is all there,
    through a pipe, and the exit code is the command's."""
    import subprocess

    (in_tmp / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {memory: lots}\n")
    bad = subprocess.run(_tapers("validate"), cwd=in_tmp, capture_output=True, text=True)
    assert bad.returncode == 3 and "memory" in bad.stderr and "hint" in bad.stderr
    version = subprocess.run(_tapers("--version"), cwd=in_tmp, capture_output=True, text=True)
    assert (version.returncode, version.stdout) == (0, f"tapers {__version__}\n")

