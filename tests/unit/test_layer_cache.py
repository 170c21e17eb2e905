"""The provisioning cache's store and chains (tapers/layer_cache.py), and how `up` plans with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tapers import layer_cache
from tapers.engine.observe import Observed
from tapers.engine.plan import plan_up
from tapers.taperfile import load_taperfile

STEPS = """\
version: 1
name: shop
machines:
  web:
    provision:
      - name: one
        shell: "echo 1"
      - name: skipped
        run: never
        shell: "echo never"
      - name: two
        shell: "echo 2"
      - name: play
        ansible: {playbook: site.yml}
      - name: every
        run: always
        shell: "echo always"
      - name: after
        shell: "echo after"
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TAPERS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def machine(tmp_path: Path, text: str = STEPS, name: str = "web"):
    (tmp_path / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "Taperfile.yaml").write_text(text)
    return load_taperfile(tmp_path / "Taperfile.yaml").machine(name)


PRINTS = {"one": "a", "skipped": "n", "two": "b", "play": "c", "every": "d", "after": "e"}


def test_a_chain_stops_at_the_first_step_that_cant_be_kept_and_skips_never_steps(tmp_path: Path) -> None:
    links = layer_cache.chain("sha256:box", machine(tmp_path), PRINTS)
    assert [link.step for link in links] == [1, 3, 4]  # `never` left out; `always` ends it
    assert len({link.key for link in links}) == 3


def test_a_changed_step_changes_its_key_and_every_key_after_it(tmp_path: Path) -> None:
    web = machine(tmp_path)
    before = layer_cache.chain("sha256:box", web, PRINTS)
    after = layer_cache.chain("sha256:box", web, {**PRINTS, "two": "B"})
    assert before[0] == after[0] and before[1] != after[1] and before[2] != after[2]
    assert layer_cache.chain("sha256:other", web, PRINTS)[0] != before[0]  # another box: nothing shared


def test_a_play_is_kept_per_machine_name_a_shell_step_is_not(tmp_path: Path) -> None:
    text = STEPS + STEPS.split("machines:\n")[1].replace("  web:", "  db:\n    hostname: web", 1)
    web, db = machine(tmp_path, text, "web"), machine(tmp_path, text, "db")
    ours, theirs = layer_cache.chain("b", web, PRINTS), layer_cache.chain("b", db, PRINTS)
    assert ours[:2] == theirs[:2] and ours[2] != theirs[2]


def test_a_machine_made_otherwise_or_a_step_that_cant_be_told_is_another_chain(tmp_path: Path) -> None:
    web = machine(tmp_path)
    plain = layer_cache.chain("b", web, PRINTS)
    for change in ("    privileged: true\n", "    hostname: other\n", "    nesting: true\n",
                   "    synced_folders: [{host: ., guest: /usr/local/sbin}]\n", "    lxc: {lxc.environment: X=1}\n"):
        other = machine(tmp_path, STEPS.replace("  web:\n", "  web:\n" + change, 1))
        assert layer_cache.chain("b", other, PRINTS)[0] != plain[0], change
    assert [link.step for link in layer_cache.chain("b", web, PRINTS, unresolved=frozenset({"two"}))] == [1]


def test_cache_false_ends_the_chain(tmp_path: Path) -> None:
    text = STEPS.replace('      - name: two\n', '      - name: two\n        cache: false\n')
    assert [link.step for link in layer_cache.chain("b", machine(tmp_path, text), PRINTS)] == [1]


def _fill(text: str):
    def fill(disk: Path) -> int:
        disk.mkdir()
        (disk / "file").write_text(text)
        return len(text) * 1000
    return fill


def test_a_layer_appears_whole_and_is_found_with_what_it_stands_on(home: Path) -> None:
    base, ours = layer_cache.publish("a" * 32, (), ("step 1",), 2.0, "debian/bookworm", _fill("x"))
    top, _ = layer_cache.publish("b" * 32, ("a" * 32,), ("step 1", "step 2"), 5.0, "debian/bookworm", _fill("y"))
    assert base is not None and top is not None and ours
    assert layer_cache.publish("a" * 32, (), ("step 1",), 2.0, "debian/bookworm", _fill("z")) == (base, False)
    assert layer_cache.stack(top) == ("b" * 32, "a" * 32)
    assert (top.disk / "file").read_text() == "y"
    assert layer_cache.longest([layer_cache.Link(1, "a" * 32), layer_cache.Link(2, "b" * 32),
                                layer_cache.Link(3, "c" * 32)]) == (2, layer_cache.find("b" * 32))
    assert oct(os.stat(home / "layers").st_mode & 0o777) == "0o700"
    layer_cache._remove(base.folder, layer_cache._remove_files)  # what it stood on is gone: it can't be used...
    assert layer_cache.find("b" * 32) is None
    again, ours = layer_cache.publish("b" * 32, (), ("step 1", "step 2"), 5.0, "debian/bookworm", _fill("w"))
    assert ours and again is not None and (again.disk / "file").read_text() == "w"  # ...and is made again


def test_a_failed_or_killed_write_leaves_nothing_used(home: Path) -> None:
    def broken(disk: Path) -> int:
        disk.mkdir()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        layer_cache.publish("a" * 32, (), ("s",), 1.0, "box", broken)
    assert layer_cache.find("a" * 32) is None and not [p for p in (home / "layers").iterdir() if p.name != ".lock"]
    # a writer killed mid-way: its folder is never read, and goes once that process is gone
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    (home / "layers" / f".incoming-{dead}-{'b' * 32}" / "disk").mkdir(parents=True)
    (home / "layers" / f".incoming-{dead}-{'b' * 32}" / "meta.json").write_text(json.dumps({"format": 1}))
    assert layer_cache.find("b" * 32) is None and layer_cache.list_layers() == []
    layer_cache.remove_abandoned()
    assert not (home / "layers" / f".incoming-{dead}-{'b' * 32}").exists()


def test_prune_keeps_what_machines_stand_on_and_removes_the_least_recently_used(home: Path) -> None:
    for index, key in enumerate(("a", "b", "c")):
        layer_cache.publish(key * 32, (), (f"step {index}",), 1.0, "box", _fill("z"))
        os.utime(home / "layers" / (key * 32) / "meta.json", (1000 + index, 1000 + index))
    layer_cache.publish("d" * 32, ("b" * 32,), ("s",), 1.0, "box", _fill("z"))  # stands on b
    removed = layer_cache.prune(2000, lambda: {"a" * 32})  # a is in use; b is the oldest other
    assert {layer.key[0] for layer in removed} == {"b", "d"}  # d stood on b: useless without it
    assert {layer.key[0] for layer in layer_cache.list_layers()} == {"a", "c"}
    layer_cache.publish("e" * 32, (), ("s",), 1.0, "box", _fill("z"), scope="lxd https://elsewhere default default")
    dropped: list[str] = []
    assert layer_cache.prune(0, lambda: {"a" * 32}, "liblxc", dropped.append)[0].key == "c" * 32
    assert dropped == ["c" * 32]  # and the other backend's layer stays: its machines can't be seen from here
    assert [layer.key for layer in layer_cache.list_layers()] == ["a" * 32, "e" * 32]


def test_up_plans_the_steps_the_cache_holds(tmp_path: Path) -> None:
    web = machine(tmp_path)
    plan = plan_up([web], Observed(), "key", {"debian/bookworm"}, from_cache={"web": ((1, 3), 41.4)})
    text = str(plan)
    assert "web: create (not found; steps 1, 3 from the provisioning cache, saving about 41 s)" in text, text
    assert 'provision step 1 "one"' not in text and 'provision step 3 "two"' not in text
    assert 'provision step 4 "play"' in text and 'provision step 6 "after"' in text
    skipped = plan_up([web], Observed(), "key", {"debian/bookworm"}, provision="skip", from_cache={"web": ((1,), 1.0)})
    assert "cache" not in str(skipped)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, subject: str, message: str) -> None:
        self.lines.append(f"{subject}: {message}")

    def status(self, subject: str, message: str) -> None:
        pass


class _Saving:
    """A backend that keeps layers: what it was asked to save."""

    def __init__(self) -> None:
        self.saved: list[str] = []

    def save_layer(self, container, target, leave_out, limit, previous=None) -> int:
        self.saved.append(container)
        target.mkdir()
        return 1

    def layer_scope(self) -> str:
        return "liblxc"

    def drop_layer(self, key: str) -> None:
        pass

    def remove_files(self, folder) -> None:
        layer_cache._remove_files(folder)

    def list(self, prefix: str = ""):
        return []


def test_a_step_whose_files_changed_while_up_ran_is_not_kept(home: Path, tmp_path: Path) -> None:
    from tapers.backend.api import LeaveOut
    from tapers.engine.caching import Caching, Start

    web = machine(tmp_path)
    links = tuple(layer_cache.chain("b", web, PRINTS))
    backend, said = _Saving(), _Lines()
    caching = Caching({"web": Start(links)}, {"web": PRINTS}, {}, 2**30)
    caching.made(web, Start(links), LeaveOut(frozenset()))
    caching.step_done(web, 1, 1.0, PRINTS["one"], "c", backend, said, "box")  # ran what the plan said: kept
    assert backend.saved == ["c"] and layer_cache.find(links[0].key) is not None
    caching.step_done(web, 3, 1.0, "something else", "c", backend, said, "box")  # its files changed meanwhile
    assert backend.saved == ["c"] and layer_cache.find(links[1].key) is None
    assert any("its files changed while `up` ran" in line for line in said.lines)
    caching.step_done(web, 4, 1.0, PRINTS["play"], "c", backend, said, "box")  # and nothing after it
    assert backend.saved == ["c"]
