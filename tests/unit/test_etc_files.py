"""Lines tapers adds to files other tools share (/etc/subuid, /etc/lxc/lxc-usernet), and a
file setup made going again once nothing is left in it: the host as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.backend.liblxc import boot_hook, delegation, etc_files, grants, host_setup
from tapers.errors import BackendError


def test_only_an_empty_plain_file_is_removed(tmp_path: Path) -> None:
    kept, emptied = tmp_path / "subuid", tmp_path / "subgid"
    kept.write_text("root:100000:65536\n")
    emptied.write_text("")
    for path in (kept, emptied, tmp_path / "none"):
        etc_files.remove_if_empty(path)
    assert kept.read_text() == "root:100000:65536\n"
    assert not emptied.exists()


def test_a_link_is_never_removed_nor_its_target(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("")
    link = tmp_path / "lxc-usernet"
    link.symlink_to(target)
    etc_files.remove_if_empty(link)
    assert link.is_symlink() and target.exists()


@pytest.fixture
def host(monkeypatch, tmp_path: Path):
    """Setup's shared files and its record of those it made, in a folder of the test's."""
    usernet, subuid = tmp_path / "lxc" / "lxc-usernet", tmp_path / "subuid"
    usernet.parent.mkdir()
    subuid.write_text("root:100000:65536\n")  # there before setup
    monkeypatch.setattr(host_setup, "SHARED_FILES", (str(usernet), str(subuid)))
    monkeypatch.setattr(host_setup, "MADE_FILES", tmp_path / "etc-tapers" / "made-files")
    monkeypatch.setattr(grants, "GRANTS_DIR", tmp_path / "etc-tapers" / "users")
    monkeypatch.setattr(grants, "GROUPS_DIR", tmp_path / "etc-tapers" / "groups")
    monkeypatch.setattr(grants, "all_grants", lambda: [])
    monkeypatch.setattr(grants, "recorded_groups", lambda: {})
    monkeypatch.setattr(boot_hook, "remove", lambda: None)
    monkeypatch.setattr(delegation, "undelegate_from_user_managers", lambda: None)
    return usernet, subuid


def test_the_last_teardown_removes_the_shared_files_setup_made_and_only_those(host) -> None:
    usernet, subuid = host
    host_setup._edit_shared(usernet, lambda lines: [*lines, "ann veth tpu1001 10"])
    host_setup._edit_shared(subuid, lambda lines: [*lines, "ann:1000000:65536"])
    assert host_setup._made_files() == [str(usernet)]
    etc_files.edit(usernet, lambda lines: [])  # (teardown takes its lines back)
    etc_files.edit(subuid, lambda lines: [line for line in lines if not line.startswith("ann:")])
    host_setup._remove_host_wide_if_unused()
    assert not usernet.exists()
    assert subuid.read_text() == "root:100000:65536\n"
    assert not host_setup.MADE_FILES.exists() and not host_setup.MADE_FILES.parent.exists()


def test_a_made_file_someone_wrote_in_since_is_kept(host) -> None:
    usernet, _ = host
    host_setup._edit_shared(usernet, lambda lines: [*lines, "ann veth tpu1001 10"])
    etc_files.edit(usernet, lambda lines: ["lxc-user veth lxcbr0 2"])  # an admin's own line
    host_setup._remove_host_wide_if_unused()
    assert usernet.read_text() == "lxc-user veth lxcbr0 2\n"


def test_a_file_is_noted_before_setup_makes_it(host, monkeypatch) -> None:
    """A setup killed between making the file and noting it would leave it for good (the
    next setup finds its lines there): it is noted first."""
    usernet, _ = host

    def killed(path, change):  # type: ignore[no-untyped-def]
        path.write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(etc_files, "edit", killed)
    with pytest.raises(KeyboardInterrupt):
        host_setup._edit_shared(usernet, lambda lines: [*lines, "ann veth tpu1001 10"])
    assert host_setup._made_files() == [str(usernet)]


def test_a_made_file_that_cant_be_removed_leaves_the_rest_of_the_teardown_going(host, monkeypatch) -> None:
    """(useradd holding the file's lock past the wait, say): the file stays, the others
    made go, and so do tapers' folders in /etc."""
    usernet, _ = host
    subuid_made = usernet.parent / "subgid"
    monkeypatch.setattr(host_setup, "SHARED_FILES", (*host_setup.SHARED_FILES, str(subuid_made)))
    host_setup._edit_shared(usernet, lambda lines: [*lines, "ann veth tpu1001 10"])
    host_setup._edit_shared(subuid_made, lambda lines: [*lines, "ann:1000000:65536"])
    etc_files.edit(usernet, lambda lines: [])
    etc_files.edit(subuid_made, lambda lines: [])
    removing = etc_files.remove_if_empty

    def held(path: Path, lock_timeout: float = 15) -> None:
        if path == usernet:
            raise BackendError(f"{path}.lock is held by another program (useradd or usermod?) for 15 s")
        removing(path)

    monkeypatch.setattr(etc_files, "remove_if_empty", held)
    host_setup._remove_host_wide_if_unused()
    assert usernet.exists() and not subuid_made.exists()
    assert not host_setup.MADE_FILES.parent.exists()


def test_a_record_naming_another_file_removes_nothing(host, tmp_path: Path) -> None:
    """Only the shared files setup adds to may go, whatever the record says."""
    other = tmp_path / "passwd"
    other.write_text("")
    host_setup.MADE_FILES.parent.mkdir(parents=True)
    host_setup.MADE_FILES.write_text(f"{other}\n")
    host_setup._remove_host_wide_if_unused()
    assert other.exists()
