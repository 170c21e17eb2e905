"""Raw engine keys: which pass, which are refused (with why), how a change is planned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.backend.api import State
from tapers.errors import TaperfileError
from tapers.taperfile.raw_keys import lxc_refusal, lxd_config_refusal, lxd_device_refusal
from tests.unit.test_plan import KEY, BOX, container, machines, observed


@pytest.mark.parametrize("key", ["lxc.environment", "lxc.sysctl.net.ipv4.ip_forward", "lxc.prlimit.nofile",
                                 "lxc.cgroup2.devices.allow", "lxc.cgroup2.memory.high", "lxc.cap.drop",
                                 "lxc.signal.halt", "lxc.tty.max", "lxc.environment.runtime", "lxc.autodev",
                                 "lxc.autodev.tmpfs.size"])
def test_keys_that_act_inside_the_machine_pass(key: str) -> None:
    assert lxc_refusal(key) is None


@pytest.mark.parametrize("key, why", [
    ("lxc.hook.pre-start", "runs a program on the host, as root"),
    ("lxc.hook.start-host", "runs a program on the host, as root"),
    ("lxc.mount.entry", "synced_folders"),
    ("lxc.mount.auto", "synced_folders"),
    ("lxc.include", "reads a file of the host"),
    ("lxc.rootfs.path", "root filesystem"),
    ("lxc.net.0.link", "networks"),
    ("lxc.idmap", "id map"),
    ("lxc.log.file", "writes a file"),
    ("lxc.console.logfile", "writes a file"),
    ("lxc.apparmor.profile", "confinement"),
    ("lxc.seccomp.profile", "confinement"),
    ("lxc.cap.keep", "confinement"),
    ("lxc.cgroup.dir.container", "host cgroups"),
    ("lxc.ephemeral", "not among the keys tapers passes through"),
    ("lxc.cgroup2.cgroup.procs", "moves host processes"),
    ("lxc.cgroup.cgroup.procs", "moves host processes"),
    ("lxc.cgroup2.cgroup.subtree_control", "changes the cgroup tree"),
    ("lxc.cgroup.tasks", "moves host processes"),
    ("lxc.cgroup.cpuset.tasks", "moves host processes"),
    ("lxc.keyring.session", "session keyring"),
    ("lxc.environment.hooks", "not among the keys tapers passes through"),
    ("LXC.environment", "not an LXC config key"),
])
def test_keys_that_act_on_the_host_are_refused_with_why(key: str, why: str) -> None:
    assert why in (lxc_refusal(key) or "")


def test_lxd_keys_and_devices() -> None:
    assert lxd_config_refusal("limits.processes") is None and lxd_config_refusal("environment.FOO") is None
    assert "unchecked" in (lxd_config_refusal("raw.lxc") or "")
    assert "use `privileged:`" in (lxd_config_refusal("security.privileged") or "")
    assert "record" in (lxd_config_refusal("user.tapers.record") or "")
    assert "host's kernel" in (lxd_config_refusal("linux.kernel_modules") or "")
    assert "tapers snapshot save" in (lxd_config_refusal("snapshots.schedule") or "")
    assert "no bound on the disk" in (lxd_config_refusal("snapshots.schedule.stopped") or "")
    assert lxd_config_refusal("snapshots.expiry") is None
    assert lxd_device_refusal({"type": "unix-char", "source": "/dev/fuse"}) is None
    assert "host's /dev/sda" in (lxd_device_refusal({"type": "unix-char", "source": "/dev/sda"}) or "")
    assert "`disk` device" in (lxd_device_refusal({"type": "disk", "source": "/", "path": "/host"}) or "")
    assert "`proxy` device" in (lxd_device_refusal({"type": "proxy", "listen": "tcp:0.0.0.0:22"}) or "")


def test_a_value_that_would_start_a_line_of_its_own_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaperfileError, match="line break"):
        machines(tmp_path, 'version: 1\nmachines:\n  web:\n    lxc: {lxc.environment: "A=1\\nlxc.hook.pre-start = /x"}\n')


def test_a_change_of_raw_keys_restarts_the_machine(tmp_path: Path) -> None:
    from tapers.engine.plan import plan_up
    from tapers.engine.settings import desired_settings

    (web,) = machines(tmp_path, "version: 1\nname: shop\nmachines:\n  web:\n    lxc: {lxc.environment: A=2}\n")
    applied = {**desired_settings(web), "privileged": False, "raw": {"lxc": {"lxc.environment": "A=1"}}}
    seen = observed(container("web", State.RUNNING, **applied))
    planned = [str(a) for a in plan_up([web], seen, KEY, {BOX}).actions]
    assert "web: reconfigure (raw {lxc.environment=A=1} -> {lxc.environment=A=2})  [restart]" in planned


def test_a_taperfile_that_schedules_lxd_snapshots_is_refused_when_read(tmp_path: Path) -> None:
    with pytest.raises(TaperfileError, match="snapshots.schedule.*no bound on the disk"):
        machines(tmp_path, "version: 1\nmachines:\n  web:\n    lxd: {config: {snapshots.schedule: '* * * * *'}}\n")
