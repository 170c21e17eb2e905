"""Where LXD put an unprivileged machine's root on the host (the synced folders' views are
shifted to it), read from the instance's volatile id map."""

from __future__ import annotations

import json

import pytest

from tapers.backend.lxd.backend import _root_host_uid
from tapers.errors import BackendError


def idmap(uid_base: int, gid_base: int) -> dict[str, str]:
    return {"volatile.idmap.next": json.dumps([
        {"Isuid": True, "Isgid": False, "Hostid": uid_base, "Nsid": 0, "Maprange": 65536},
        {"Isuid": False, "Isgid": True, "Hostid": gid_base, "Nsid": 0, "Maprange": 65536},
    ])}


def test_the_root_of_an_unprivileged_machine_and_of_a_privileged_one() -> None:
    assert _root_host_uid(idmap(165536, 165536)) == 165536
    assert _root_host_uid({"security.privileged": "true"}) == 0


@pytest.mark.parametrize("config", [idmap(165536, 231072), {"volatile.idmap.next": "[]"}, {}])
def test_a_map_tapers_cannot_follow_is_refused_not_guessed(config: dict) -> None:
    with pytest.raises(BackendError):
        _root_host_uid(config)
