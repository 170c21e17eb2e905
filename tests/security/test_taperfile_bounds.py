"""A Taperfile from a cloned repository is hostile input for a tool that runs as root: the
work of reading it is bounded (size, aliases, nesting, numbers), and no value that ends up
in a config line, a command, a path or an inventory keeps a control character.
Each test gives such a file and asserts a clean refusal that names where and why."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapers.errors import ExitCode, TaperfileError
from tapers.taperfile import load_taperfile
from tapers.taperfile.load import MAX_TEXT_BYTES
from tapers.taperfile.model import resolve_machines
from tapers.taperfile.units import parse_size
from tapers.taperfile.validate import validate
from tapers.taperfile.yaml_source import MAX_DEPTH, MAX_VALUES

ROOT = Path(__file__).resolve().parents[2]
PATH = Path("/nonexistent/Taperfile.yaml")  # validate() only reads the text it is given


def refusal(text: str) -> TaperfileError:
    with pytest.raises(TaperfileError) as raised:
        validate(PATH, {PATH: text})
    assert raised.value.exit_code == ExitCode.INVALID
    return raised.value


def valid(text: str):
    return resolve_machines(validate(PATH, {PATH: text}))


def laughs(levels: int, width: int = 9, where: str = "x-lol") -> str:
    """The "billion laughs" document: each level lists the one before `width` times."""
    lines = ["version: 1", f'{where}:', f'  l0: &l0 [{", ".join(["lol"] * width)}]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join([*lines, "machines:", "  web: {}", ""])


def timed(text: str) -> tuple[TaperfileError, float]:
    """The refusal and the seconds it took."""
    started = time.perf_counter()
    error = refusal(text)
    return error, time.perf_counter() - started


def peak_megabytes(text: str) -> float:
    """The most memory allocated while refusing `text` (tracemalloc: slower, so not timed)."""
    tracemalloc.start()
    try:
        refusal(text)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


# -- aliases, nesting, size --------------------------------------------------------------


@pytest.mark.parametrize("levels", [7, 9, 30])
def test_a_billion_laughs_is_refused_at_the_alias_in_well_under_a_second(levels: int) -> None:
    text = laughs(levels)
    assert len(text) < 2000
    error, seconds = timed(text)
    # 9^7 values took 23 s and 1.7 GB before the count; 9^30 would never have finished
    assert seconds < 0.5 and peak_megabytes(text) < 20
    assert f"uses YAML aliases that expand to more than {MAX_VALUES:,} values" in error.message
    # 9 + 81 + ... + 9^5 values: the first alias of l5 crosses 100,000; named by line, column and field
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith("  l5:"))
    assert f"Taperfile.yaml:{line}:12: x-lol.l5[1]: uses YAML aliases" in error.message


def test_aliases_that_stay_small_are_fine_and_every_use_is_counted() -> None:
    shared = "  m0: &common {memory: 256M, cpus: 1, provision: [{shell: echo hi}]}\n"
    machines = "".join(f"  m{i}: *common\n" for i in range(1, 50))
    loaded = valid(f"version: 1\nmachines:\n{shared}{machines}")
    assert len(loaded) == 50 and all(m.memory == 256 * 1024**2 for m in loaded)
    # the same anchor, used often enough, crosses the line although the text stays small
    wide = "x-row: &row [" + ", ".join(["1"] * 1000) + "]\n"
    uses = "x-many: [" + ", ".join(["*row"] * (MAX_VALUES // 1000)) + "]\n"
    assert "expand to more than" in refusal(f"version: 1\n{wide}{uses}machines:\n  web: {{}}\n").message


def test_a_merge_key_alias_counts_too() -> None:
    text = laughs(6) + "x-merge: {<<: [{a: *l5}, {b: *l5}, {c: *l5}]}\n"
    assert "expand to more than" in refusal(text).message


def test_an_alias_inside_the_value_it_names_is_refused_not_a_recursion_error() -> None:
    error = refusal("version: 1\nx-loop: &a [1, *a]\nmachines:\n  web: {}\n")
    assert "2:16: x-loop[2]: the alias `*a` is inside the value it names (a loop)" in error.message


@pytest.mark.parametrize("depth", [MAX_DEPTH, 500, 5000, 100_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int) -> None:
    text = "version: 1\nmachines:\n  web: {}\nx-deep: " + "[" * depth + "]" * depth + "\n"
    error, seconds = timed(text)
    assert ": x-deep" in error.message and f"nests values more than {MAX_DEPTH} levels deep" in error.message
    assert seconds < 0.5
    block = "version: 1\nmachines:\n  web: {}\nx-deep:\n" + "".join(" " * i + "- \n" for i in range(1, 200))
    assert "levels deep" in refusal(block).message


def test_nesting_through_aliases_is_counted_at_its_full_depth() -> None:
    anchor = "x-a: &deep " + "[" * 40 + "]" * 40 + "\n"
    use = "x-b: " + "[" * 30 + "*deep" + "]" * 30 + "\n"
    error = refusal(f"version: 1\n{anchor}{use}machines:\n  web: {{}}\n")
    assert "x-b" in error.message and "levels deep" in error.message


@pytest.mark.parametrize(
    "number",
    ["9" * 5000, "-" + "9" * 200, "0x" + "f" * 200, "1" + ":0" * 100_000, "1." + "5" * 500 + "e+999"],
    ids=["decimal", "negative", "hex", "sexagesimal", "float"],
)
def test_a_number_too_long_to_be_one_is_refused_where_it_is(number: str) -> None:
    error, seconds = timed(f"version: 1\nmachines:\n  web:\n    pids: {number}\n")
    assert "4:11: machines.web.pids: a number" in error.message and "at most 100" in error.message
    assert seconds < 1


def test_a_file_larger_than_1_mib_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    text = "version: 1\nmachines:\n  web: {}\n# " + "x" * MAX_TEXT_BYTES + "\n"
    assert "larger than 1 MiB" in refusal(text).message
    taperfile = tmp_path / "Taperfile.yaml"
    taperfile.write_text(text)
    with pytest.raises(TaperfileError, match="larger than 1 MiB"):
        load_taperfile(taperfile)
    taperfile.write_text(text[: MAX_TEXT_BYTES - 100] + "\n")
    load_taperfile(taperfile)  # just under: read (and it is valid)


def test_a_non_scalar_key_is_a_clean_error() -> None:
    assert "a key must be a name" in refusal("version: 1\nmachines:\n  ? [a, b]\n  : {}\n").message


def test_many_problems_are_listed_up_to_a_hundred() -> None:
    text = "version: 1\nmachines:\n" + "".join(f"  Bad{i}: {{}}\n" for i in range(500))
    error = refusal(text)
    assert "(500 problems)" in error.message and "... and 400 more" in error.message
    assert len(error.problems) == 500


# -- numbers and sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "problem"),
    [
        ("99999999999999999999999T", "is too large: at most 16T"),
        ("17T", "is too large: at most 16T"),
        ("16.5T", "is too large: at most 16T"),
        ("1e999", "is not a size"),
        (".nan", "expected a size"),
        ("nan", "is not a size"),
        ("-1G", "is not a size"),
        ('"512M\\n"', "is not a size"),
        ('"\\u0665\\u0661\\u0662M"', "is not a size"),  # Arabic-Indic digits
        ('"512\\u212a"', "is not a size"),  # the Kelvin sign is not a K
        ("16M", "is too small"),
        ("512", "has no unit"),
    ],
)
def test_memory_is_a_size_within_bounds(memory: str, problem: str) -> None:
    error = refusal(f"version: 1\nmachines:\n  web:\n    memory: {memory}\n")
    assert "machines.web.memory: " in error.message and problem in error.message


def test_the_largest_sizes_still_accepted() -> None:
    assert parse_size("16T") == 16 * 1024**4 and parse_size(" 1.5 GiB ") == 3 * 1024**3 // 2
    assert parse_size("0000000000000000000000000001G") == 1024**3
    assert valid("version: 1\nmachines:\n  web: {memory: 16T, cpus: 1024, pids: 4194304}\n")[0].pids == 4194304


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("cpus", ".nan", "finite number"),
        ("cpus", ".inf", "finite number"),
        ("cpus", "-1", "greater than 0"),
        ("cpus", "1025", "less than or equal to 1024"),
        ("cpus", "true", "valid number"),
        ("cpus", '"2"', "valid number"),
        ("pids", "512.0", "valid integer"),
        ("pids", "512.5", "valid integer"),
        ("pids", '"512"', "valid integer"),
        ("pids", "true", "valid integer"),
        ("pids", "-16", "greater than or equal to 16"),
        ("pids", "4194305", "less than or equal to 4194304"),
        ("version", "true", "unsupported version"),
        ("version", "1.0", "unsupported version"),
    ],
)
def test_numbers_are_finite_whole_where_needed_and_in_range(key: str, value: str, problem: str) -> None:
    if key == "version":
        text = f"version: {value}\nmachines:\n  web: {{}}\n"
        field = "version: "
    else:
        text = f"version: 1\nmachines:\n  web:\n    {key}: {value}\n"
        field = f"machines.web.{key}: "
    error = refusal(text)
    assert field in error.message and problem in error.message


def test_ports_are_whole_numbers() -> None:
    error = refusal("version: 1\nmachines:\n  web:\n    networks:\n      - forwarded_port: {guest: 80.0, host: '8080'}\n")
    assert "forwarded_port.guest: input should be a valid integer" in error.message
    assert "forwarded_port.host: input should be a valid integer" in error.message


def test_addresses_are_written_as_addresses() -> None:
    for ip in ("true", "3232255242", "192.168.077.10", '"192.168.77.10\\n"'):
        error = refusal(f"{WEB}    networks: [{{private: {{ip: {ip}}}}}, {{forwarded_port: {{guest: 1, host: 2, host_ip: {ip}}}}}]\n")
        assert "networks[1].private.ip: " in error.message and "networks[2].forwarded_port.host_ip: " in error.message


# -- names and strings -------------------------------------------------------------------

WEB = "version: 1\nmachines:\n  web:\n"
NAMED = [
    ("name", 'version: 1\nname: "shop\\n"\nmachines:\n  web: {}\n'),
    ("machines.web\\n", 'version: 1\nmachines:\n  "web\\n": {}\n'),
    ("machines.web.hostname", WEB + '    hostname: "web\\n"\n'),
    ("machines.web.box", WEB + '    box: "debian/bookworm\\n"\n'),
    ("machines.web.depends_on[1]", WEB + '    depends_on: ["db\\n"]\n  db: {}\n'),
    ("machines.web.placement.member", WEB + '    placement: {member: "node1\\n"}\n'),
    ("machines.web.provision[1].name", WEB + '    provision: [{name: "setup\\n", shell: echo}]\n'),
]


@pytest.mark.parametrize(("field", "text"), NAMED, ids=[field for field, _ in NAMED])
def test_a_name_with_a_trailing_newline_is_refused(field: str, text: str) -> None:
    error = refusal(text)
    assert f": {field}: " in error.message
    assert "\n" not in error.problems[0]  # the newline is shown escaped, not written


def test_every_field_that_lands_in_a_line_refuses_control_characters() -> None:
    step = "    provision:\n      - "
    cases = {
        "shell.path": step + 'shell: {path: "setup.sh\\e[2J"}',
        "file.source": step + 'file: {source: "conf\\r", destination: /etc/app}',
        "file.destination": step + 'file: {source: conf, destination: "/etc/app\\n"}',
        "ansible.playbook": step + 'ansible: {playbook: "site.yml\\0"}',
        "ansible.limit": step + 'ansible: {playbook: site.yml, limit: "web\\n"}',
        "ansible.tags": step + 'ansible: {playbook: site.yml, tags: [a, "b\\x85"]}',
        "ansible.skip_tags": step + 'ansible: {playbook: site.yml, skip_tags: "slow\\u2028"}',
        "synced_folders[1].host": '    synced_folders: [{host: "./a\\tb", guest: /srv/a}]',
        "synced_folders[1].guest": '    synced_folders: [{host: ./a, guest: "/srv/a\\n"}]',
        "box_url": '    box_url: "https://example.com/b.json\\nX: y"',
    }
    for field, body in cases.items():
        error = refusal(f"{WEB}{body}\n")
        assert f"{field}: " in error.message and "contains a" in error.message, (field, error.message)


def test_scripts_keep_tabs_and_newlines_but_no_other_control_characters() -> None:
    (machine,) = valid(WEB + '    provision:\n      - shell: {inline: "a\\n\\tb\\n", args: ["x\\ny"], env: {K: "v\\tw"}}\n')
    assert machine.provision[0].options == {"inline": "a\n\tb\n", "args": ["x\ny"], "env": {"K": "v\tw"}, "privileged": True}
    for value in ('"\\0"', '"\\e[31m"', '"\\x7f"', '"\\ud800"', '"\\r"'):
        for body in (f"shell: {value}", f"shell: {{inline: x, args: [{value}]}}", f"shell: {{inline: x, env: {{K: {value}}}}}"):
            assert "contains a" in refusal(f"{WEB}    provision:\n      - {body}\n").message, body


@pytest.mark.parametrize("key", ["A B", "A=B", "9A", "-u", "A\\n", "\\u00c9", "\\u212a"])
def test_environment_variable_names_are_names(key: str) -> None:
    error = refusal(f'{WEB}    provision:\n      - shell: {{inline: x, env: {{"{key}": v}}}}\n')
    assert "environment variable names use" in error.message


def test_ansible_groups_are_names_of_machines_and_variables_are_plain_data() -> None:
    step = f"{WEB}    provision:\n      - ansible:\n          playbook: Taperfile.yaml\n"
    error = refusal(step + '          groups: {"web]\\n[all:vars]\\nansible_connection=local": [web]}\n')
    assert "Ansible group names use" in error.message and "\n[all" not in error.message
    assert "no machine `nosuch`" in refusal(step + "          groups: {g: [web, nosuch]}\n").message
    for value in ("2024-01-01", "!!binary aGk=", "!!set {a}", ".nan", '{k: "\\e"}'):
        error = refusal(step + f"          extra_vars: {{v: {value}}}\n")
        assert "machines.web.provision[1].ansible.extra_vars.v: " in error.message, value


def test_guest_paths_are_absolute_normalised_and_without_dot_dot() -> None:
    text = WEB + (
        "    synced_folders: [{host: ., guest: /srv//a/./b/}]\n"
        "    provision: [{file: {source: __init__.py, destination: //etc/./app/}}]\n"
    )
    (machine,) = validate_in(Path(__file__).parent, text)
    assert [f.guest for f in machine.synced][-1] == "/srv/a/b"
    spaced = WEB + '    synced_folders: [{host: ., guest: "/srv/a b"}]\n'
    assert valid(spaced)[0].synced[-1].guest == "/srv/a b"  # the mount line escapes the space
    tabbed = WEB + '    synced_folders: [{host: ., guest: "/srv/a\\tb"}]\n'
    assert "a tab" in refusal(tabbed).message
    assert machine.provision[0].options["destination"] == "/etc/app"
    for guest in ("/srv/../etc", "/..", "relative", "/" + "a" * 256, "/a" * 2100):
        assert "synced_folders[1].guest: " in refusal(f"{WEB}    synced_folders: [{{host: ., guest: '{guest}'}}]\n").message


def validate_in(folder: Path, text: str):
    path = folder / "Taperfile.yaml"
    return resolve_machines(validate(path, {path: text}))


def test_box_url_is_an_http_url_or_a_path() -> None:
    for url in ("https://boxes.example.com/web.json", "boxes/web.box", "/srv/boxes/web.box"):
        assert valid(f"{WEB}    box_url: {url}\n")[0].box_url == url
    for url in ("file:///etc/shadow", "ftp://x/y", "http:///x", '"a b"', '""', "https://" + "a" * 3000):
        assert "machines.web.box_url: " in refusal(f"{WEB}    box_url: {url}\n").message, url


def test_a_hostname_has_labels_of_63_and_at_most_253_characters() -> None:
    assert valid(f"{WEB}    hostname: {'a' * 63}.test\n")[0].hostname == "a" * 63 + ".test"
    for name in ("a" * 64 + ".test", ".".join(["abc"] * 64), "web.", "-web", "web_1", '"w\\u212aeb"'):
        assert "machines.web.hostname: " in refusal(f"{WEB}    hostname: {name}\n").message, name


def test_a_box_version_cannot_climb_out_of_the_box_folder() -> None:
    for box in ("debian/bookworm@..", "debian/bookworm@../x", "../x", "debian/..", '"debian/bookworm\\n"'):
        assert "is not a box name" in refusal(f"{WEB}    box: {box}\n").message, box


def test_messages_quote_hostile_keys_and_values_without_their_control_characters() -> None:
    error = refusal('version: 1\nmachines:\n  "\\e]0;owned\\a": {}\n  web:\n    flavour: "\\e[2J"\n    "\\e[2J": 1\n')
    assert not any(ch in error.message for ch in "\x1b\x07")
    assert "\\x1b]0;owned\\x07" in error.message


def test_the_example_taperfile_still_validates() -> None:
    example = ROOT / "Taperfile.example.yaml"
    machines = resolve_machines(validate(example, {example: example.read_text()}))
    assert [m.name for m in machines] == ["db", "web"]


def test_aliases_of_long_text_are_bounded_by_the_text_they_expand_to() -> None:
    """One 600 KB string repeated by 2,000 aliases is 1.2 GB of text for what comes after."""
    big = "x" * 600_000
    text = ("version: 1\nmachines:\n  web:\n    provision:\n"
            f"      - shell: {{inline: &b {big}, args: [{', '.join(['*b'] * 2000)}]}}\n")
    error, seconds = timed(text)
    assert "expand to more than 4 MiB of text" in error.message and seconds < 2


SECRET = "root:$6$not-a-real-hash:19000:0:99999:7:::\n"


def test_an_override_that_is_a_link_is_refused_and_what_it_points_to_never_shown(tmp_path: Path) -> None:
    """A cloned repository's Taperfile.override.yaml -> /etc/shadow: tapers (as root, in CI)
    would quote each of its lines in an error, in the public log."""
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
    (project / "Taperfile.override.yaml").symlink_to(secret)
    with pytest.raises(TaperfileError) as refused:
        load_taperfile(project / "Taperfile.yaml")
    assert "is a link" in refused.value.message and "not-a-real-hash" not in str(refused.value.message)


def test_a_taperfile_found_in_a_folder_is_never_read_through_a_link(tmp_path: Path, monkeypatch, capsys) -> None:
    from tapers.cli.main import run

    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Taperfile.yaml").symlink_to(secret)
    monkeypatch.chdir(project)
    assert run(["status"]) == ExitCode.INVALID
    err = capsys.readouterr().err
    assert "is a link" in err and "-f " in err and "not-a-real-hash" not in err


def test_a_pipe_for_an_override_is_refused_not_waited_on(tmp_path: Path) -> None:
    import os

    project = tmp_path / "project"
    project.mkdir()
    (project / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
    os.mkfifo(project / "Taperfile.override.yaml")  # nobody ever writes it: a read would wait for good
    with pytest.raises(TaperfileError, match="not a regular file"):
        load_taperfile(project / "Taperfile.yaml")


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder in /tmp any user may pass (pytest's is root's only)."""
    import os
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tapers-test-sudo-read-", dir="/tmp"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="sudo: needs root")
def test_under_sudo_tapers_reads_no_file_the_user_could_not(open_tmp: Path, monkeypatch, capsys) -> None:
    """`sudo tapers -f /etc/shadow`, by someone whose sudo allows only tapers: root reads
    anything, and the error quotes each line it read."""
    import os

    from tapers.cli.main import run

    user = 4242
    secret = open_tmp / "shadow"
    secret.write_text("version: 1\n" + SECRET)
    secret.chmod(0o640)
    mine = open_tmp / "mine"
    mine.mkdir()
    os.chown(mine, user, user)
    (mine / "Taperfile.yaml").write_text("version: 1\nmachines:\n  web: {}\n")
    monkeypatch.setenv("SUDO_UID", str(user))
    monkeypatch.setenv("SUDO_GID", str(user))
    assert run(["-f", str(secret), "status"]) == ExitCode.INVALID
    err = capsys.readouterr().err
    assert "you may not read it" in err and "not-a-real-hash" not in err
    assert secret.read_text() == "version: 1\n" + SECRET
    # Theirs to read (a+r in their folder), it is read; in a folder they can't pass, it isn't.
    assert load_taperfile(mine / "Taperfile.yaml").machines
    mine.chmod(0o700)
    os.chown(mine, 0, 0)
    with pytest.raises(TaperfileError, match="you may not read it"):
        load_taperfile(mine / "Taperfile.yaml")
