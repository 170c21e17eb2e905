"""Variables in a Taperfile, with Compose's rules: the environment, then `.env`; defaults,
required values, `$$`; inline scripts left to the machine's shell; the validation cache
follows the values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.errors import TaperfileError
from tapers.project import open_project
from tapers.taperfile.variables import substitute

VALUES = {"SET": "yes", "EMPTY": ""}


@pytest.mark.parametrize(("text", "expected"), [
    ("${SET}", "yes"), ("$SET/x", "yes/x"), ("${UNSET}", ""),
    ("${SET:-d}", "yes"), ("${EMPTY:-d}", "d"), ("${UNSET:-d}", "d"),
    ("${EMPTY-d}", ""), ("${UNSET-d}", "d"),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("$$SET costs $$5", "$SET costs $5"), ("$5 and $", "$5 and $"), ("${SET:-a b}", "yes"),
])
def test_compose_rules(text: str, expected: str) -> None:
    assert substitute(text, VALUES.get, []) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("${UNSET:?give it}", "the variable UNSET is required: give it"),
    ("${EMPTY:?}", "the variable EMPTY is required but not set"),
    ("${UNSET?}", "the variable UNSET is required but not set"),
    ("${oops", "`${` is not closed by `}`"),
    ("${1X}", "`${1X}` is not a variable reference"),
])
def test_what_cannot_be_resolved_is_named(text: str, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        substitute(text, VALUES.get, [])
    assert str(refused.value).startswith(why)


TAPERFILE = """\
version: 1
name: ${PROJECT:-shop}
machines:
  web:
    memory: ${MEMORY:-256M}
    provision:
      - shell: {inline: "echo $HOME ${USER}", env: {DB: "${DB_PASSWORD:?put it in .env}", PORT: "$PORT"}}
"""


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("PROJECT", "MEMORY", "DB_PASSWORD", "PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".tapers").mkdir(mode=0o700)  # so the validation cache is used
    (tmp_path / "Taperfile.yaml").write_text(TAPERFILE)
    return tmp_path


def load(folder: Path):
    return open_project(explicit=folder / "Taperfile.yaml").loaded


def test_values_come_from_the_environment_then_dot_env(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project_dir / ".env").write_text("# team defaults\nexport DB_PASSWORD='s3cret'\nMEMORY=512M\nPORT=8000\n")
    loaded = load(project_dir)
    (step,) = loaded.machines[0].provision
    assert (loaded.project, loaded.machines[0].memory) == ("shop", 512 * 1024**2)
    assert step.options["env"] == {"DB": "s3cret", "PORT": "8000"}
    assert step.options["inline"] == "echo $HOME ${USER}"  # the machine's shell's, as written
    assert loaded.unset == ()

    monkeypatch.setenv("MEMORY", "1G")  # the environment wins, and the cached validation follows it
    assert load(project_dir).machines[0].memory == 1024**3
    monkeypatch.delenv("MEMORY")
    assert load(project_dir).machines[0].memory == 512 * 1024**2


def test_a_missing_required_variable_names_itself_and_where(project_dir: Path) -> None:
    with pytest.raises(TaperfileError) as refused:
        load(project_dir)
    assert ("Taperfile.yaml:7:" in refused.value.message
            and "machines.web.provision[1].shell.env.DB: the variable DB_PASSWORD is required: put it in .env"
            in refused.value.message)
    assert refused.value.exit_code == 3


def test_unset_variables_are_empty_and_listed(project_dir: Path) -> None:
    (project_dir / ".env").write_text("DB_PASSWORD=x\n")
    loaded = load(project_dir)
    assert loaded.unset == ("PORT",) and loaded.machines[0].provision[0].options["env"]["PORT"] == ""


def test_a_bad_dot_env_line_is_named(project_dir: Path) -> None:
    (project_dir / ".env").write_text("DB_PASSWORD=x\nthis is not an assignment\n")
    with pytest.raises(TaperfileError, match=r"\.env:2: not a NAME=VALUE line"):
        load(project_dir)


def test_x_keys_are_ignored_and_carry_anchors(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "Taperfile.yaml").write_text(
        "version: 1\nname: shop\n"
        "x-small: &small {memory: 128M, cpus: 0.5}\n"
        "machines:\n"
        "  x-web:\n    <<: *small\n    x-note: ignored here\n"
        "  db:\n    <<: *small\n    provision:\n      - {ansible: {playbook: site.yml, extra_vars: {x-kept: data}}, x-why: ignored}\n")
    loaded = open_project(explicit=tmp_path / "Taperfile.yaml").loaded
    assert [m.name for m in loaded.machines] == ["x-web", "db"]  # a machine's name is a name, not a key
    assert loaded.machines[1].memory == 128 * 1024**2 and loaded.machines[1].cpus == 0.5
    assert loaded.machines[1].provision[0].options["extra_vars"] == {"x-kept": "data"}


def test_dot_env_is_read_safely_and_expansion_is_bounded(project_dir: Path) -> None:
    """A .env that is a link (to a root-only file, say) is not followed; one value repeated
    many times can't blow up."""
    secret = project_dir.parent / "secret.env"
    secret.write_text("DB_PASSWORD=from-a-root-only-file\n")
    (project_dir / ".env").symlink_to(secret)
    with pytest.raises(TaperfileError, match=r"\.env: can't be read"):
        load(project_dir)
    (project_dir / ".env").unlink()
    (project_dir / ".env").write_text("DB_PASSWORD=x\nBIG=" + "b" * 200_000 + "\n")
    (project_dir / "Taperfile.yaml").write_text(TAPERFILE.replace('PORT: "$PORT"', 'PORT: "' + "$BIG" * 30 + '"'))
    with pytest.raises(TaperfileError, match="variables expand to more than 4 MiB"):
        load(project_dir)
