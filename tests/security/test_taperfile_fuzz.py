"""Fuzzing the Taperfile validator: hostile documents in every field of the model.

Documents are generated as data (then written with yaml.safe_dump, in block and flow
style) and as raw text (a valid Taperfile with hostile pieces spliced in, alias chains,
arbitrary bytes). Whatever the input, loading it either raises TaperfileError with a
non-empty message free of control characters, or returns machines in which no string has a
control character (except tabs and line breaks in script-like values: an inline script, its
arguments and environment, Ansible variables), whose numbers are in range, and which the
validation cache can store. Never any other exception.

Each generated document draws how hostile it is (from none to most fields), so that many
get through the whole validator, odd but valid values included. TAPERS_FUZZ_EXAMPLES
sets the number of examples per test (default 500); CI runs the same examples every time.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapers.errors import TaperfileError
from tapers.taperfile import Machine, load_taperfile
from tapers.taperfile.load import _machine_to_json
from tapers.taperfile.model import resolve_machines
from tapers.taperfile.validate import validate

EXAMPLES = int(os.environ.get("TAPERS_FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the work tree
    derandomize=bool(os.environ.get("CI")),  # CI: the same examples every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # tab and newline allowed
CONTROL_IN_PATH = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # tab allowed
TEXT_OPTIONS = ("inline", "args", "env", "extra_vars")  # step options that may span lines

# -- hostile pieces ----------------------------------------------------------------------

HOSTILE_STRINGS = [
    "", " ", "web\n", "web\r\n", "\nweb", "we\x00b", "\x1b[31mred", "\x1b]0;title\x07", "a\tb", "\x7f", "\x85",
    "\u2028", "\ud800", "\u212a", "\u0665\u0661\u0662M", "\u202egnp.exe", "ｗｅｂ", "web\u200b", "..", "../..",
    "/..", "/", "//", "/srv/../etc", "a" * 64, "a" * 300, "/" + "a" * 256, "a/" * 2100, "x" * 5000,
    "99999999999999999999999T", "1e999", "nan", "-inf", "-1G", "512M\n", " 512M ", "17T", "0x10", "1_000",
    "web]\n[all:vars]\nansible_connection=local", "PATH=/tmp:$PATH", "-u", "$(reboot)", "`id`", "a;b",
    "lxc.hook.pre-start = /tmp/x", "file:///etc/shadow", "http://", "https://a b/", "~root", "*", "&a",
    "{{ lookup('pipe', 'id') }}", "%(x)s", "\\", "'", '"', "#", "yes", "no", "null", "~",
]
ALPHABET = st.one_of(
    st.characters(exclude_categories=()),  # lone surrogates too
    st.sampled_from("\x00\t\n\r\x1b\x7f\x85\u2028\u212a./-_ :[]{}&*!%@`'\"#|>,=$\\"),
)
NUMBERS = [0, -1, 1, 15, 16, 512, 1024, 1025, 65535, 65536, 4_194_304, 4_194_305, 2**63, 10**30, -(10**30)]

HOSTILE_SCALAR = st.one_of(  # hashable: also for keys
    st.sampled_from(HOSTILE_STRINGS),
    st.text(ALPHABET, max_size=16),
    st.sampled_from(NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
HOSTILE = st.one_of(
    HOSTILE_SCALAR,
    st.lists(st.sampled_from(HOSTILE_STRINGS), max_size=2),
    st.dictionaries(st.sampled_from(HOSTILE_STRINGS), st.sampled_from(HOSTILE_STRINGS), max_size=2),
)
# How hostile one document is: the percentage of its values drawn from HOSTILE. Drawn once
# per example (st.shared), so some documents are clean throughout and get all the way through.
HOSTILITY = st.shared(st.sampled_from([0, 0, 2, 10, 40, 90]), key="hostility")


def sometimes(clean: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = HOSTILE) -> st.SearchStrategy[Any]:
    return HOSTILITY.flatmap(lambda rate: st.integers(0, 99).flatmap(lambda n: hostile if n < rate else clean))


def field(*valid: Any) -> st.SearchStrategy[Any]:
    return sometimes(st.sampled_from(valid))


def key(*valid: str) -> st.SearchStrategy[Any]:
    return sometimes(st.sampled_from(valid), HOSTILE_SCALAR)


def mapping(keys: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """The required keys, some of the others, in a hostile document an unknown key or none at all."""
    fixed = {key: keys[key] for key in required}
    optional = {key: value for key, value in keys.items() if key not in required}
    clean = st.fixed_dictionaries(fixed, optional=optional)
    return sometimes(clean, st.one_of(clean.map(lambda found: {**found, "flavour": 1}), HOSTILE))


NAMES = key("web", "db", "web", "db", "cache", "a" * 40)
VARIABLES = key("APP_ENV", "_x", "role", "Z9")
SCALARS = sometimes(
    st.one_of(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12), st.integers(-(10**6), 10**6), st.booleans())
)
SCRIPTS = sometimes(
    st.one_of(st.sampled_from(["echo hi\n", "echo 'a\tb'\ntrue\n", "echo ünï cödé ✓\n"]), st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30)),
    st.text(ALPHABET, max_size=40),
)
PLAIN = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(VARIABLES, inner, max_size=3)),
    max_leaves=8,
)
HOST_PATHS = field("setup.sh", "site.yml", "conf", "./site", "ünï cödé.sh")
GUEST_PATHS = field("/srv/site", "/etc/app", "/srv//a/./b/", "/home/tapers/x", "/srv/a b", "/srv/a\tb", "/srv/ünï")
TAGS = st.one_of(field("config", "a,b"), st.lists(field("config", "slow"), max_size=3))

SHELL = st.one_of(
    SCRIPTS,
    mapping(
        {
            "inline": SCRIPTS,
            "args": st.lists(SCALARS, max_size=4),
            "env": st.dictionaries(VARIABLES, SCALARS, max_size=3),
            "privileged": field(True, False),
        },
        required=("inline",),
    ),
    mapping({"path": HOST_PATHS, "args": st.lists(SCALARS, max_size=2)}, required=("path",)),
)
FILE = mapping({"source": HOST_PATHS, "destination": GUEST_PATHS}, required=("source", "destination"))
ANSIBLE = mapping(
    {
        "playbook": field("site.yml"),
        "extra_vars": st.dictionaries(VARIABLES, PLAIN, max_size=3),
        "groups": st.dictionaries(key("webservers", "all", "db_1"), st.lists(NAMES, max_size=3), max_size=2),
        "limit": field("webservers", "web:&db"),
        "tags": TAGS,
        "skip_tags": TAGS,
        "become": field(True, False),
    },
    required=("playbook",),
)
KINDS = {"shell": SHELL, "file": FILE, "ansible": ANSIBLE}
STEP = st.tuples(
    mapping({"name": field("setup", "a.b-c_1"), "run": field("once", "always", "never"), "reboot": field(False)}),
    st.sampled_from(sorted(KINDS)),
).flatmap(lambda pair: KINDS[pair[1]].map(lambda body: {**pair[0], pair[1]: body} if isinstance(pair[0], dict) else pair[0]))
NETWORK = st.one_of(
    st.fixed_dictionaries({"private": mapping({"ip": field("192.168.77.10", "192.168.78.11", "10.99.2.3")}, ("ip",))}),
    st.fixed_dictionaries(
        {
            "forwarded_port": mapping(
                {
                    "guest": field(80, 8000),
                    "host": field(8080, 18080),
                    "host_ip": field("127.0.0.1", "0.0.0.0"),
                    "protocol": field("tcp", "udp"),
                    "auto_correct": field(True, False),
                },
                ("guest", "host"),
            )
        }
    ),
)
SYNCED = mapping(
    {"host": st.one_of(HOST_PATHS, field("/srv/shared")), "guest": GUEST_PATHS, "readonly": field(True), "disabled": field(True), "create": field(False)},
    required=("host", "guest"),
)
SETTINGS = mapping(
    {
        "box": field("debian/bookworm", "debian/bookworm@1.2", "team/web"),
        "box_url": field("https://boxes.example.com/web.json", "boxes/web.box", "/srv/boxes/web.box"),
        "hostname": field("web.example.test", "a" * 63 + ".test", "db"),
        "cpus": field(0.5, 1, 1024),
        "memory": field("512M", "1G", "16T", "32M", "1.5 GiB"),
        "pids": field(16, 512, 4_194_304),
        "autostart": field(True, False),
        "provision": st.lists(STEP, max_size=3),
        "depends_on": st.lists(NAMES, max_size=1),
        "networks": st.lists(NETWORK, max_size=1),
        "synced_folders": st.lists(SYNCED, max_size=2),
        "placement": mapping({"member": field("node1", "n-2.lan")}, ("member",)),
    }
)
MACHINE = st.one_of(SETTINGS, st.none(), SETTINGS.map(lambda found: {**found, "primary": True} if isinstance(found, dict) else found))
MACHINES = st.fixed_dictionaries({"web": MACHINE}, optional={"db": MACHINE, "cache": MACHINE, "a" * 40: MACHINE})
DOCUMENTS = st.fixed_dictionaries(
    {"version": field(1), "machines": sometimes(MACHINES, st.dictionaries(NAMES, MACHINE, max_size=3))},
    optional={"name": field("shop", "my-shop-2"), "defaults": SETTINGS},
)

# -- raw text ----------------------------------------------------------------------------

BASE = """\
version: 1
name: shop
defaults:
  memory: 512M
machines:
  db:
    hostname: db.shop.test
    networks:
      - private: {ip: 192.168.77.11}
    provision:
      - name: schema
        shell: |
          echo hi
  web:
    depends_on: [db]
    cpus: 1
    pids: 512
    synced_folders:
      - {host: ./site, guest: /srv/site}
    provision:
      - shell: {path: setup.sh, args: [a, "two words"], env: {APP_ENV: dev}}
      - file: {source: conf, destination: /etc/app}
      - ansible: {playbook: site.yml, extra_vars: {role: web}, groups: {webservers: [web]}, tags: [config]}
"""
SNIPPETS = st.one_of(
    st.sampled_from(
        [
            "&a ", "*a", "*a ", "&b [*a, *a, *a]", "<<: *a\n", "[", "]", "{", "}", ": ", "\n  ", "\n- ", "? ", "- ",
            "!!binary aGk=", "!!set {a}", "!!python/object/apply:os.system ['id']", "!!float .nan", "!!int 1", "!!str ",
            "9" * 5000, "1" + ":0" * 2000, "0x" + "f" * 200, '"\\e[31m"', '"\\0"', '"\\ud800"', "'\n'", "|\n  x\n",
            "\t", "\r", "#", "%YAML 1.1\n---\n", "---\n", "...\n", "[" * 100, "{a: " * 70, "\ufeff", "\x85", "\u2028",
        ]
    ),
    st.sampled_from(HOSTILE_STRINGS),
    st.text(ALPHABET, max_size=16),
)


@st.composite
def spliced(draw: st.DrawFn) -> str:
    """The base Taperfile with hostile pieces inserted (or replacing a few characters) anywhere."""
    text = BASE
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.sampled_from([0, 0, 1, 5]))
        text = text[:at] + draw(SNIPPETS) + text[at + cut :]
    return text


@st.composite
def alias_chains(draw: st.DrawFn) -> str:
    """Anchors in `extra_vars` that list the one before `width` times (billion laughs and
    milder ones), then used again in fields of the same step."""
    width, levels = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    leaf = draw(st.sampled_from(["lol", "1", ".nan", '"\\e"', "{a: b}", "[]"]))
    lines = [f"            x0: &l0 [{', '.join([leaf] * width)}]"]
    for i in range(1, levels):
        if draw(st.booleans()):
            lines.append(f"            x{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
        else:
            lines.append(f"            x{i}: &l{i}")
            lines += [f"              - *l{i - 1}"] * width
    last = f"*l{levels - 1}"
    use = draw(st.sampled_from(["", f"tags: {last}", f"groups: {{g: {last}}}", f"limit: {last}", f"become: {last}"]))
    return (
        "version: 1\nmachines:\n  web:\n    provision:\n      - ansible:\n          playbook: site.yml\n"
        "          extra_vars:\n" + "\n".join(lines) + "\n" + (f"          {use}\n" if use else "")
    )


# -- the property ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with the files the valid values name."""
    root = tmp_path_factory.mktemp("fuzz")
    for name in ("setup.sh", "site.yml", "ünï cödé.sh", "boxes/web.box"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("#!/bin/sh\n")
    for folder in ("conf", "site"):
        (root / folder).mkdir()
    return root


TRIED = {"refused": 0, "accepted": 0}


def outcome(project: Path, text: str) -> None:
    path = project / "Taperfile.yaml"
    try:
        machines = resolve_machines(validate(path, {path: text}))
    except TaperfileError as error:
        TRIED["refused"] += 1
        assert_clean_refusal(error)
        return
    TRIED["accepted"] += 1
    for machine in machines:
        assert_clean_machine(machine)


def assert_clean_refusal(error: TaperfileError) -> None:
    assert error.message.strip()
    assert not CONTROL.search(error.message.replace("\n", "")), error.message
    assert not CONTROL.search(error.hint or "")
    for problem in error.problems:
        assert not CONTROL.search(problem), problem


def assert_clean_machine(machine: Machine) -> None:
    json.dumps(_machine_to_json(machine), allow_nan=False)  # what the validation cache writes
    assert machine.memory is None or 32 * 1024**2 <= machine.memory <= 16 * 1024**4
    assert machine.cpus is None or (math.isfinite(machine.cpus) and 0 < machine.cpus <= 1024)
    assert machine.pids is None or (type(machine.pids) is int and 16 <= machine.pids <= 4_194_304)
    for port in machine.ports:
        assert type(port.guest) is int and type(port.host) is int
    guests = [f.guest for f in machine.synced]
    guests += [s.options["destination"] for s in machine.provision if s.kind == "file"]
    for guest in guests:
        assert guest.startswith("/") and "//" not in guest and ".." not in guest.split("/"), guest
    for key, value in machine._asdict().items():
        if key not in ("provision", "synced"):
            assert_no_control(value, CONTROL, (key,))
    for folder in machine.synced:
        assert_no_control(folder.host, CONTROL, ("synced", "host"))
        assert_no_control(folder.guest, CONTROL_IN_PATH, ("synced", "guest"))  # the mount line escapes tabs
    for step in machine.provision:
        assert_no_control([step.name, step.kind, step.run], CONTROL, ("provision", step.index))
        for option, value in step.options.items():
            pattern = {"destination": CONTROL_IN_PATH}.get(option, CONTROL_IN_TEXT if option in TEXT_OPTIONS else CONTROL)
            assert_no_control(value, pattern, ("provision", step.index, option))


def assert_no_control(value: Any, pattern: re.Pattern[str], where: tuple[Any, ...]) -> None:
    for text, is_key in strings(value):
        assert not (CONTROL if is_key else pattern).search(text), (where, text)


def strings(value: Any) -> Iterator[tuple[str, bool]]:
    """Every string in a value, with whether it is a mapping's key."""
    if isinstance(value, str):
        yield value, False
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield key, True
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


@FUZZ
@given(document=DOCUMENTS, flow=st.sampled_from([None, True, False]), unicode=st.booleans())
def test_generated_documents_load_cleanly_or_are_refused_cleanly(
    project: Path, document: dict, flow: bool | None, unicode: bool
) -> None:
    outcome(project, yaml.safe_dump(document, default_flow_style=flow, allow_unicode=unicode, sort_keys=False))


@FUZZ
@given(text=spliced())
def test_a_valid_file_with_hostile_pieces_spliced_in(project: Path, text: str) -> None:
    outcome(project, text)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 10))
@given(text=alias_chains())
def test_alias_chains_of_any_size_are_counted(project: Path, text: str) -> None:
    outcome(project, text)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 10))
@given(
    data=st.one_of(st.binary(max_size=200), spliced().map(lambda text: text.encode("utf-8", "surrogatepass"))),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_raw_bytes_through_load_taperfile(project: Path, data: bytes, crlf: bool, bom: bool) -> None:
    taperfile = project / "Taperfile.yaml"
    taperfile.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (data.replace(b"\n", b"\r\n") if crlf else data))
    try:
        loaded = load_taperfile(taperfile)
    except TaperfileError as error:
        assert_clean_refusal(error)
        return
    for machine in loaded.machines:
        assert_clean_machine(machine)


def test_the_fuzzing_got_documents_through_as_well_as_refused() -> None:
    """After the tests above (file order): a fuzzer whose documents never get through the
    validator only tests its refusals."""
    if TRIED["refused"] + TRIED["accepted"] < 50:
        pytest.skip("runs after the fuzz tests")
    assert TRIED["refused"] > 0 and TRIED["accepted"] > TRIED["refused"] // 50, TRIED
