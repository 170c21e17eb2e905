"""A normal user runs tapers on a pure cgroup v2 host whose init is systemd (Debian 12,
Ubuntu 22.04 and later, Fedora: most hosts today), after `sudo tapers host setup`.

Such a host can't be a container here (this host binds every controller to a cgroup v1
hierarchy), so it is a virtual machine (tests/integration/vm.py). Without KVM for a stock
kernel, qemu emulates it: this test takes several minutes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration import vm as machine
from tests.integration.conftest import BOX, RUN_ID, box_archive, readable_code_copy, wait_for

USER = machine.USER
ENV = f"export PYTHONPATH={machine.PYTHONPATH} NO_COLOR=1"
TAPERS = "python3 -P -m tapers"
CONTAINER = "tapers-v2-web"


@pytest.fixture
def vm(box_home):
    if not shutil.which("qemu-system-x86_64"):
        if os.environ.get("TAPERS_REQUIRE_LXC") == "1":
            pytest.fail("qemu is required (TAPERS_REQUIRE_LXC=1): `scripts/setup --test` installs qemu-system-x86")
        pytest.skip("qemu-system-x86 is not installed (`scripts/setup --test` installs it)")
    folder = Path(tempfile.mkdtemp(prefix=f"tapers-{RUN_ID}-vm-", dir="/var/tmp"))
    code = readable_code_copy()
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "key")], check=True)
        box = box_archive(box_home.home, folder / "box.tar")
        machine.build_image(folder, code, box, (folder / "key.pub").read_text())
        shutil.rmtree(code)
        box.unlink()
        guest = machine.boot(folder, folder / "key")
        try:
            yield guest
        finally:
            machine.shutdown(guest)
    finally:
        shutil.rmtree(code, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def run(guest: machine.VM, who: str, command: str) -> subprocess.CompletedProcess:
    result = guest.ssh(who, f"{ENV}; {command}")
    assert result.returncode == 0, f"{who}: {command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def tapers(guest: machine.VM, *args: str) -> str:
    return run(guest, USER, f"cd ~/p && {TAPERS} {shlex.join(args)}").stdout


def state(guest: machine.VM) -> str:
    return json.loads(tapers(guest, "status", "--json"))["machines"][0]["state"]


def test_a_user_runs_machines_on_a_pure_cgroup_v2_systemd_host(vm: machine.VM) -> None:
    host = run(vm, "root", "stat -fc %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers; ps -p 1 -o comm=; "
               "systemctl is-system-running --wait || true").stdout.split("\n")
    assert host[0] == "cgroup2fs" and {"cpu", "memory", "pids"} <= set(host[1].split()), host
    assert host[2] == "systemd" and host[3] in ("running", "degraded"), host

    setup = run(vm, "root", f"{TAPERS} host setup --user {USER}").stdout
    assert "tapers-host.service makes it again" in setup, setup
    assert "Delegate=cpu cpuset io memory pids" in run(vm, "root", "systemctl cat user@.service").stdout
    assert run(vm, "root", f"loginctl show-user {USER} -p Linger").stdout == "Linger=yes\n"
    uid = run(vm, USER, "id -u").stdout.strip()
    session = run(vm, USER, "echo $XDG_RUNTIME_DIR; systemctl --user is-system-running || true").stdout.split()
    assert session[0] == f"/run/user/{uid}", session
    run(vm, USER, f"{TAPERS} doctor")
    run(vm, USER, f"{TAPERS} box add {BOX} {machine.DATA}/box.tar --from-rootfs")
    run(vm, USER, "mkdir -p ~/p && printf 'version: 1\\nname: v2\\nmachines:\\n  web: {memory: 256M, pids: 512}\\n' "
                  "> ~/p/Taperfile.yaml")

    tapers(vm, "up")
    assert tapers(vm, "ssh", "web", "-c", "echo hi") == "hi\n"
    # In a scope of the user's own systemd manager, with the machine's limits.
    pid = run(vm, USER, f"lxc-info -P ~/.local/share/tapers/machines -n {CONTAINER} -p -H").stdout.strip()
    cgroup = run(vm, "root", f"cat /proc/{pid}/cgroup").stdout.strip()  # 0::/.../lxc.payload.NAME/init.scope
    assert cgroup.startswith(f"0::/user.slice/user-{uid}.slice/user@{uid}.service/"), cgroup
    payload = "/sys/fs/cgroup" + cgroup[3:cgroup.index(f"/lxc.payload.{CONTAINER}")] + f"/lxc.payload.{CONTAINER}"
    assert run(vm, "root", f"cat {payload}/memory.max {payload}/pids.max").stdout.split() == [str(256 << 20), "512"]
    tapers(vm, "suspend")
    assert state(vm) == "frozen" and run(vm, "root", f"cat {payload}/cgroup.freeze").stdout == "1\n"
    tapers(vm, "resume")
    assert tapers(vm, "ssh", "web", "-c", "echo again") == "again\n"

    # Their last login ends: systemd keeps their manager (setup made them linger), so their
    # machine runs on; without it, logind stopped the manager and killed the machine.
    wait_for(lambda: run(vm, "root", f"loginctl show-user {USER} -p State").stdout == "State=lingering\n", 60,
             f"{USER} to have no login left")
    assert run(vm, "root", f"systemctl is-active user@{uid}.service").stdout == "active\n"
    assert "populated 1" in run(vm, "root", f"cat {payload}/cgroup.events").stdout, "the machine was stopped at logout"

    tapers(vm, "halt")
    assert state(vm) == "stopped"
    run(vm, "root", "systemctl daemon-reload")
    tapers(vm, "up")
    assert tapers(vm, "ssh", "web", "-c", "echo back") == "back\n"
    tapers(vm, "halt")
    # What a reboot takes (the bridge, the rules), made again by the boot unit setup installed.
    run(vm, "root", f"ip link delete tpu{uid} && nft delete table ip tapers_users && "
                    f"systemctl set-environment PYTHONPATH={machine.PYTHONPATH} && "  # (this test's code copy)
                    "systemctl restart tapers-host.service")
    run(vm, USER, f"{TAPERS} doctor")
    tapers(vm, "up")
    assert tapers(vm, "ssh", "web", "-c", "echo restored") == "restored\n"
    tapers(vm, "destroy", "-f")

    run(vm, "root", f"{TAPERS} host teardown --user {USER}")
    left = vm.ssh("root", "ls -d /etc/systemd/system/user@.service.d /etc/systemd/system/tapers-host.service "
                          "/etc/tapers /sys/class/net/tpu* /var/lib/systemd/linger/* 2>/dev/null; nft list tables; "
                          "cat /etc/lxc/lxc-usernet").stdout
    assert USER not in left and "tapers" not in left and "tpu" not in left, left
