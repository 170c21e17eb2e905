"""The content-addressed box store: the same files are kept once, and go with their last name."""

from __future__ import annotations

import json
from pathlib import Path

from tapers.boxes.cache import find_box, remove_box, store_rootfs, tree_digest


def add(home: Path, name: str, version: str, content: str) -> Path:
    work = home / "boxes" / f".add-{name.replace('/', '-')}-{version}"
    (work / "rootfs" / "etc").mkdir(parents=True)
    (work / "rootfs" / "etc" / "os-release").write_text(content)
    tree = tree_digest(work / "rootfs")
    store_rootfs(work, tree)
    (work / "box.json").write_text(json.dumps({"name": name, "version": version, "id": version, "tree": tree}))
    final = home / "boxes" / name.replace("/", "-") / version
    final.parent.mkdir(parents=True, exist_ok=True)
    work.rename(final)
    return final


def test_same_files_are_stored_once_and_removed_with_their_last_box(fake_box_home: Path) -> None:
    home = fake_box_home
    add(home, "team/a", "1", "same\n")
    add(home, "team/b", "1", "same\n")
    add(home, "team/c", "1", "other\n")
    store = home / "boxes" / "store"
    assert len(list(store.iterdir())) == 2
    a, b = find_box("team/a"), find_box("team/b")
    assert (a.rootfs / "etc" / "os-release").read_text() == "same\n"
    assert a.rootfs.resolve() == b.rootfs.resolve()
    remove_box(a)
    assert (b.rootfs / "etc" / "os-release").read_text() == "same\n"  # still used by team/b
    remove_box(b)
    assert len(list(store.iterdir())) == 1  # only team/c's files are left
