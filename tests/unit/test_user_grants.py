"""What `host setup` gives a user, as data: the keep-id map, their bridges' names and their
firewall rules (the real setup is exercised as root in tests/integration/test_as_user.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.backend.liblxc import host_setup, userns
from tapers.backend.liblxc.grants import Grant
from tapers.errors import UsageError


def test_the_keep_id_map_gives_the_login_user_the_users_own_id() -> None:
    lines = userns.id_map(uid=1001, gid=1002, sub_uid=200000, sub_gid=300000)
    assert lines == [("u", 0, 200000, 1000), ("u", 1000, 1001, 1), ("u", 1001, 201001, 64535),
                     ("g", 0, 300000, 1000), ("g", 1000, 1002, 1), ("g", 1001, 301001, 64535)]
    # every id inside 0..65535 is mapped once, nothing of the user's range twice
    for kind in "ug":
        inside = sorted(i for k, start, _, count in lines if k == kind for i in range(start, start + count))
        assert inside == list(range(65536))


def test_a_users_rules_keep_their_networks_theirs() -> None:
    grant = Grant("alice", 1001, 1001, "10.98.3.0/24", 10, {}, ("192.168.213.0/24",))
    assert grant.private_bridges() == ["tpvc0a8d5"]
    rules = host_setup._rules(grant)
    assert "ip saddr 10.98.3.0/24 ip daddr != 10.98.3.0/24 masquerade" in rules
    assert "iifname tpu1001 ip saddr != 10.98.3.0/24 drop" in rules
    assert "oifname tpu1001 ct state new meta skuid != { 0, 1001 } drop" in rules
    assert "oifname tpvc0a8d5 ct state new meta skuid != { 0, 1001 } drop" in rules
    assert "iifname tpvc0a8d5 oifname != tpvc0a8d5 drop" in rules and "masquerade" not in rules.split("tpvc0a8d5")[1]
    assert all(line.endswith('comment "tapers-user alice"') for line in rules.splitlines())


@pytest.mark.parametrize("name", ['bob"; flush ruleset', "../etc", "a b", "", "x\nadd rule"])
def test_a_user_name_that_would_land_raw_in_a_rule_or_a_path_is_refused(name: str) -> None:
    with pytest.raises(UsageError):
        host_setup.teardown(name)


def test_tapers_folders_follow_xdg_as_platformdirs_did(monkeypatch) -> None:
    from pathlib import Path

    from tapers import paths

    monkeypatch.delenv("TAPERS_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/dev")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert paths.tapers_home() == Path("/home/dev/.cache/tapers")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the spec: only absolute paths count
    assert paths.tapers_home() == Path("/home/dev/.cache/tapers")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg/cache")
    assert paths.tapers_home() == Path("/xdg/cache/tapers")
    assert paths._xdg("XDG_DATA_HOME", ".local/share") == Path("/home/dev/.local/share")


@pytest.mark.parametrize("name", ["../../etc/cron.d/x", "a/b", "x\ny", "-rf", ""])
def test_a_group_name_that_would_land_raw_in_a_path_is_refused(name: str, tmp_path, monkeypatch) -> None:
    from tapers.backend.liblxc import grants

    if host_setup.os.geteuid() != 0:
        pytest.skip("host setup refuses non-root before it reads the name")
    monkeypatch.setattr(grants, "GROUPS_DIR", tmp_path / "groups")
    with pytest.raises(UsageError, match="group name"):
        host_setup.setup_group(name)
    assert not (tmp_path / "groups").exists() and not Path("/etc/cron.d/x.json").exists()


class _Host:
    """What restore reads (grants, recorded groups, members) and what it did."""

    def __init__(self, monkeypatch, tmp_path, grants_: list, groups: dict, members: dict, uids: dict) -> None:
        from tapers.backend.liblxc import grants

        self.done: list[tuple] = []
        monkeypatch.setattr(grants, "GROUPS_DIR", tmp_path)
        monkeypatch.setattr(grants, "all_grants", lambda: grants_)
        monkeypatch.setattr(grants, "recorded_groups", lambda: groups)
        monkeypatch.setattr(grants, "group_members", lambda group: members.get(group))
        monkeypatch.setattr(grants, "load", lambda user: next((g for g in grants_ if g.user == user), None))
        monkeypatch.setattr(host_setup.pwd, "getpwnam", lambda user: _account(uids[user]))
        monkeypatch.setattr(host_setup, "_require_root", lambda: None)

        def setup(user, nics=100, private=(), group=""):
            if user == "broken":
                raise UsageError("no such user")
            self.done.append(("setup", user, nics, group))
            return Grant(user, uids.get(user, 1), 1, "10.98.0.0/24", nics, {}, tuple(private), group)

        def teardown(user, force=False, by_group=False):
            self.done.append(("teardown", user, by_group))
            return Grant(user, 1, 1, "10.98.0.0/24", 1, {}), []

        monkeypatch.setattr(host_setup, "setup", setup)
        monkeypatch.setattr(host_setup, "teardown", teardown)


def _account(uid: int):
    import pwd

    return pwd.struct_passwd(("x", "x", uid, uid, "", "/", "/bin/sh"))


def _grant(user: str, group: str = "", nics: int = 100) -> Grant:
    return Grant(user, 1001, 1001, "10.98.0.0/24", nics, {}, (), group)


def test_restore_sets_up_joiners_keeps_members_and_by_name_grants_and_revokes_leavers(monkeypatch, tmp_path) -> None:
    grants_ = [_grant("ann", "devs"), _grant("bob", "devs"), _grant("cat", "devs"), _grant("dan", "", 7),
               _grant("eve", "gone"), _grant("broken", "devs")]
    host = _Host(monkeypatch, tmp_path, grants_, {"devs": 10, "ops": 20},
                 {"devs": {"ann", "dan", "new", "root", "broken"}, "ops": {"cat", "zed"}},
                 {"ann": 1001, "bob": 1002, "cat": 1003, "dan": 1004, "new": 1005, "root": 0, "zed": 1006,
                  "broken": 1007})
    restored = host_setup.restore()
    assert ("setup", "ann", 100, "devs") in host.done  # still a member: as before
    assert ("teardown", "bob", True) in host.done and "bob" in restored.revoked  # left, in no other group
    assert ("setup", "cat", 20, "ops") in host.done  # left devs, in ops: now ops', with its nics
    assert ("setup", "dan", 7, "") in host.done  # given by name: kept, whatever the groups
    assert ("teardown", "eve", True) in host.done  # the group was torn down (no record left)
    assert ("setup", "new", 10, "devs") in host.done and ("setup", "zed", 20, "ops") in host.done  # joined
    assert not any(step[1] == "root" for step in host.done)
    assert any("broken" in note for note in restored.notes)  # one user's failure: a note, the others done


def test_restore_takes_nothing_away_when_a_group_cant_be_read_or_looked_up(monkeypatch, tmp_path) -> None:
    (tmp_path / "damaged.json").write_text("{")  # a record recorded_groups can't read
    grants_ = [_grant("ann", "devs"), _grant("bob", "damaged")]
    host = _Host(monkeypatch, tmp_path, grants_, {"devs": 10}, {"devs": None}, {"ann": 1001, "bob": 1002})
    restored = host_setup.restore()
    assert not restored.revoked and not any(step[0] == "teardown" for step in host.done)


def test_a_group_members_grant_is_not_taken_back_by_name(monkeypatch, tmp_path) -> None:
    from tapers.backend.liblxc import grants

    monkeypatch.setattr(grants, "load", lambda user: _grant(user, "devs"))
    monkeypatch.setattr(grants, "recorded_groups", lambda: {"devs": 10})
    monkeypatch.setattr(grants, "group_members", lambda group: {"ann"})
    monkeypatch.setattr(host_setup, "_require_root", lambda: None)
    monkeypatch.setattr(host_setup, "_setup_lock", lambda: __import__("contextlib").nullcontext())
    with pytest.raises(UsageError, match="member of group `devs`") as refused:
        host_setup.teardown("ann")
    assert "teardown --group devs" in refused.value.hint
