"""LXC's leftover monitor cgroups: only a machine's own empty ones go."""

from __future__ import annotations

from pathlib import Path

from tapers.backend.liblxc import delegation


def test_only_the_machines_own_empty_monitor_cgroups_go(tmp_path: Path, monkeypatch) -> None:
    memory = tmp_path / "memory"
    monkeypatch.setattr(delegation, "hierarchies",
                        lambda: [delegation.Hierarchy(memory, frozenset({"memory"}), False)])
    monkeypatch.setattr(delegation, "_own_cgroups", lambda: {})
    names = ["lxc.monitor.tapers-p-web", "lxc.monitor.tapers-p-web-1", "lxc.monitor.tapers-p-web-2",
             "lxc.monitor.tapers-p-web-3", "lxc.monitor.tapers-p-webshop", "lxc.payload.tapers-p-web"]
    for name in names:
        (memory / name).mkdir(parents=True)
    (memory / "lxc.monitor.tapers-p-web-3" / "cgroup.procs").write_text("4242\n")  # the running monitor's: not empty
    # `tapers-p-web-2` is a container of its own (machine `web-2`): its monitor's cgroup is its own.
    delegation.remove_monitor_cgroups("tapers-p-web", None, others=lambda: {"tapers-p-web", "tapers-p-web-2"})
    assert sorted(p.name for p in memory.iterdir()) == [
        "lxc.monitor.tapers-p-web-2", "lxc.monitor.tapers-p-web-3", "lxc.monitor.tapers-p-webshop",
        "lxc.payload.tapers-p-web"]
