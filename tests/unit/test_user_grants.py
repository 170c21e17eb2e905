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
