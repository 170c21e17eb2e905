"""The content-addressed box store: the same files are kept once, and go with their last name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tapers.boxes.cache import find_box, remove_box, store_rootfs, tree_digest, tree_digest_like


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


def _tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").write_bytes(b"\x7fELF" + b"\0" * 4096)
    return root


def test_files_that_differ_only_in_what_the_first_digest_left_out_differ(tmp_path: Path) -> None:
    """A box copying another's files with one more capability, or a hard link where the other
    has a copy, or its root open to all, must not share the other's files in the store."""
    plain = tree_digest(_tree(tmp_path / "a"))
    assert tree_digest(_tree(tmp_path / "b")) == plain
    capable = _tree(tmp_path / "c")
    os.setxattr(capable / "usr/bin/python3", "user.tapers-test", b"cap_setuid+ep")
    linked = _tree(tmp_path / "d")
    os.link(linked / "usr/bin/python3", linked / "usr/bin/python")
    copied = _tree(tmp_path / "e")
    (copied / "usr/bin/python").write_bytes((copied / "usr/bin/python3").read_bytes())
    open_root = _tree(tmp_path / "f")
    os.chmod(open_root, 0o777)
    digests = {plain, tree_digest(capable), tree_digest(linked), tree_digest(copied), tree_digest(open_root)}
    assert len(digests) == 5
    assert plain.startswith("tree2:sha256:")


def test_a_file_with_many_hard_links_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "a")
    for i in range(50):
        os.link(root / "usr/bin/python3", root / f"usr/bin/link{i}")
    opened: list[str] = []
    real_open = Path.open

    def counting_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    tree_digest(root)
    assert len(opened) == 1


def test_a_box_cached_with_the_first_digest_still_verifies(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    recorded = tree_digest(root, first_way=True)
    assert recorded.startswith("sha256:")
    assert tree_digest_like(root, recorded) == recorded
    (root / "usr/bin/python3").write_bytes(b"changed")
    assert tree_digest_like(root, recorded) != recorded


def test_a_box_verifies_through_its_link_into_the_store(fake_box_home: Path) -> None:
    """`tapers box verify` reads the files where a cached box's rootfs link leads: the digest
    is the one made before the files moved into the store."""
    box = add(fake_box_home, "team/a", "1", "same\n")
    found = find_box("team/a")
    assert (box / "rootfs").is_symlink()
    assert tree_digest_like(found.rootfs, found.meta["tree"]) == found.meta["tree"]


def test_one_file_cant_pass_for_the_entries_after_it(tmp_path: Path) -> None:
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    (two / "a").write_bytes(b"x")
    (two / "b").write_bytes(b"y")
    st = (two / "b").stat()
    (one / "a").write_bytes(b"x\n" + f"b\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0\0".encode() + b"y")
    os.chmod(one, (two).stat().st_mode)
    assert tree_digest(one) != tree_digest(two)
