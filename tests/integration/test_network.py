"""Networks, names and limits on real containers: the host talks to guests only through
loopback and the project's own addresses."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for

SERVE = (
    "sudo mkdir -p /srv && echo hello-from-$(hostname) | sudo tee /srv/index.html >/dev/null && "
    "sudo systemd-run --quiet --unit web-{port} python3 -m http.server {port} --bind 0.0.0.0 --directory /srv && "
    # (the unit starts on its own: the step ends once the server listens, not before)
    "timeout 30 sh -c \"until ss -ltn | grep -q :{port}; do sleep 0.05; done\""
)


def guest(project, machine: str, command: str) -> str:
    return project.tapers("ssh", machine, "-c", command).ok().out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _answers(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:
        return False


@pytest.mark.both_backends
def test_forwarded_port_and_private_address_reach_a_guest_server(project, backend_name) -> None:
    host_port = free_port()
    project.write(
        "machines:\n"
        "  web:\n"
        "    networks:\n"
        "      - private: {ip: 192.168.61.10}\n"
        f"      - forwarded_port: {{guest: 8000, host: {host_port}}}\n"
        "    provision:\n"
        f"      - shell: '{SERVE.format(port=8000)}'\n"
    )
    project.tapers("up").ok()
    assert http_get(f"http://127.0.0.1:{host_port}/") == (200, "hello-from-web\n")
    assert http_get("http://192.168.61.10:8000/") == (200, "hello-from-web\n")
    assert json.loads(project.tapers("port", "--json").ok().out)[0]["host"] == host_port

    project.tapers("halt").ok()
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{host_port}/")
    project.tapers("up").ok()
    guest(project, "web", SERVE.format(port=8000))  # a transient unit: gone with the reboot
    wait_for(lambda: _answers(f"http://127.0.0.1:{host_port}/"), 30, "the restarted server answering on the forwarded port")

    project.tapers("destroy", "-f").ok()
    if backend_name == "liblxc":
        from tapers.backend.liblxc import bridges, nft, ports

        assert project.container("web") not in ports.forwarded()  # its forwards go with it...
        assert nft.run(f"list table ip {bridges.NFT_TABLE}")[0]  # ...the NAT network stays, as LXD's and Docker's
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{host_port}/")


def test_machines_are_not_reached_over_ipv6_around_the_ipv4_rules(project, backend_name) -> None:
    """The host takes no IPv6 address on tapers' bridges: a link-local one would let any host
    user reach the machines around the IPv4 rules (a user's machines answer only her)."""
    if backend_name != "liblxc":
        pytest.skip("LXD makes and configures its own networks")
    from tapers.backend.liblxc import bridges

    if not Path("/proc/sys/net/ipv6").exists():
        pytest.skip("this host has no IPv6")
    project.write("machines:\n  web:\n    networks:\n      - private: {ip: 192.168.63.10}\n")
    project.tapers("up").ok()
    for bridge in (bridges.BRIDGE, "tpc0a83f"):  # (192.168.63.0/24's)
        assert Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").read_text().strip() == "1"
        assert "inet6" not in subprocess.run(["ip", "-6", "addr", "show", "dev", bridge], capture_output=True,
                                             text=True, check=True).stdout
    link_local = guest(project, "web", "ip -6 -o addr show dev eth0 scope link | awk '{print $4}' | cut -d/ -f1").strip()
    if link_local:  # (a box with IPv6 on in the machine)
        with pytest.raises(OSError):
            socket.create_connection((f"{link_local}%{bridges.BRIDGE}", 22), timeout=3).close()


@pytest.mark.both_backends
def test_a_taken_host_port_is_an_error_naming_its_holder_or_auto_corrected(project) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        project.write(f"machines:\n  web:\n    networks:\n      - forwarded_port: {{guest: 80, host: {taken}}}\n")
        refused = project.tapers("up")
        assert refused.code == 1
        assert f"127.0.0.1:{taken}/tcp is already taken by python" in refused.err
        project.write(
            f"machines:\n  web:\n    networks:\n      - forwarded_port: {{guest: 80, host: {taken}, auto_correct: true}}\n"
        )
        up = project.tapers("up").ok()
        assert f"host port {taken} is taken" in up.out
        (forward,) = json.loads(project.tapers("port", "--json").ok().out)
        assert forward["requested"] == taken and forward["host"] != taken
        assert f"127.0.0.1:{forward['host']}->80" in project.tapers("status").ok().out


def test_host_ports_a_container_deleted_by_hand_left_are_closed_before_its_address_goes_again(project) -> None:
    """An admin deletes a machine with LXC's own tools: its forwarding rules stay in the host's
    firewall, leading host ports to its address. The next machine tapers makes may get that
    address: the rules are closed first. Only forwards: another rule of the table, even one
    named like a container, stays."""
    import lxc

    from tapers.backend.liblxc import bridges, nft, ports

    port = free_port()
    project.write(f"machines:\n  web:\n    networks: [{{forwarded_port: {{guest: 80, host: {port}}}}}]\n")
    project.tapers("up").ok()
    container = project.container("web")
    by_hand = lxc.Container(container)
    assert by_hand.stop() and by_hand.destroy(), "lxc could not delete the container"
    assert container in ports.forwarded()
    probe = f"{container}-not-a-forward"
    nft.apply(f'add rule ip {bridges.NFT_TABLE} output oifname "tpprobe0" drop comment "{probe}"\n', "add a probe rule")
    try:
        project.write("machines:\n  web: {}\n")
        up = project.tapers("up").ok()
        assert f"closed the host ports of `{container}`, which no machine forwards now" in up.out
        assert container not in ports.forwarded()
        assert not [r for r in nft.rules(bridges.NFT_TABLE) if r.get("comment") == container]
        assert [r for r in nft.rules(bridges.NFT_TABLE) if r.get("comment") == probe], "a rule that is no forward was taken away"
    finally:
        ports.remove(container)  # (left if tapers failed to)
        for rule in nft.rules(bridges.NFT_TABLE):
            if rule.get("comment") == probe:
                nft.apply(f"delete rule ip {bridges.NFT_TABLE} {rule['chain']} handle {rule['handle']}\n", "remove the probe")


@pytest.mark.both_backends
def test_machines_resolve_each_other_by_name(project) -> None:
    project.write(
        "machines:\n"
        "  web:\n"
        "    hostname: web.example.test\n"
        "    networks: [{private: {ip: 192.168.62.10}}]\n"
        "  db:\n"
        "    networks: [{private: {ip: 192.168.62.11}}]\n"
        "  cache: {}\n"
    )
    up = project.tapers("up").ok()
    assert "update /etc/hosts" not in up.out + up.err  # their addresses were chosen first: they boot knowing each other
    cache_address = project.record("cache")["address"]
    assert guest(project, "web", "hostname; hostname -f") == "web.example.test\nweb.example.test\n"
    assert guest(project, "db", "getent hosts web web.example.test cache").split() == [
        "192.168.62.10", "web.example.test", "web",
        "192.168.62.10", "web.example.test", "web",
        cache_address, "cache",
    ]
    assert guest(project, "web", "getent hosts db").split() == ["192.168.62.11", "db"]
    # a machine that goes away is forgotten by the others
    destroyed = project.tapers("destroy", "-f", "cache").ok()
    assert "updated /etc/hosts in web, db" in destroyed.out + destroyed.err
    assert project.tapers("ssh", "web", "-c", "getent hosts cache").code == 2


def test_two_projects_share_one_private_network(project, tmp_path) -> None:
    import subprocess
    import sys

    other = tmp_path / "other"
    other.mkdir()
    (other / "Taperfile.yaml").write_text(
        f"version: 1\nname: {project.name}-b\nmachines:\n  b:\n    networks: [{{private: {{ip: 192.168.63.20}}}}]\n"
    )
    project.write("machines:\n  a:\n    networks: [{private: {ip: 192.168.63.10}}]\n")
    try:
        project.tapers("up").ok()
        subprocess.run([sys.executable, "-P", "-m", "tapers", "up"], cwd=other, env=project.env, check=True,
                       capture_output=True)
        # the machines of both projects reach each other on the shared /24, and the host reaches both
        assert guest(project, "a", "python3 -c \"import socket; socket.create_connection(('192.168.63.20', 22), 5); print('ok')\"") == "ok\n"
        for address in ("192.168.63.10", "192.168.63.20"):
            with socket.create_connection((address, 22), timeout=5) as sock:
                assert sock.recv(4) == b"SSH-"
    finally:
        subprocess.run([sys.executable, "-P", "-m", "tapers", "destroy", "-f"], cwd=other, env=project.env,
                       capture_output=True)


@pytest.mark.both_backends
def test_a_private_network_goes_with_its_last_machine_while_other_projects_run(project, tmp_path, backend_name) -> None:
    import subprocess
    import sys

    other = tmp_path / "other"
    other.mkdir()
    (other / "Taperfile.yaml").write_text(f"version: 1\nname: {project.name}-b\nmachines:\n  b: {{}}\n")
    project.write("machines:\n  a:\n    networks: [{private: {ip: 192.168.62.10}}]\n")

    def private_network_exists() -> bool:
        if backend_name == "lxd":
            return subprocess.run(["lxc", "network", "show", "tlc0a83e"], capture_output=True).returncode == 0
        return Path("/sys/class/net/tpc0a83e").exists()

    def other_tapers(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-P", "-m", "tapers", *args], cwd=other, env=project.env,
                              capture_output=True, text=True)

    try:
        assert other_tapers("up").returncode == 0
        project.tapers("up").ok()
        assert private_network_exists()
        project.tapers("destroy", "-f").ok()
        assert not private_network_exists()  # another project's machine still runs: this network went all the same
        assert other_tapers("ssh", "b", "-c", "true").returncode == 0
    finally:
        other_tapers("destroy", "-f")


@pytest.mark.both_backends
def test_memory_and_pids_limits_hold_inside_the_guest(project) -> None:
    project.write("machines:\n  web: {memory: 96M, pids: 64, cpus: 0.5}\n")
    project.tapers("up").ok()
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    quota = project.view.cgroup_item(project.container("web"), "cpu.max" if v2 else "cpu.cfs_quota_us")
    assert quota.split()[0] == "50000"  # half of each 100 ms period
    busy = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\nprint(time.process_time())\n"
    used = float(project.tapers("ssh", "-c", "python3", stdin=busy).ok().out)
    assert used < 1.5 * 0.75, f"1.5 s of spinning used {used:.2f} s of CPU with cpus: 0.5"
    hog = project.tapers("ssh", "-c", "python3 -c 'x = bytearray(400 * 1024 * 1024); print(\"survived\")'")
    assert hog.code != 0 and "survived" not in hog.out  # the OOM killer acted inside the machine
    fork_bomb = (
        "import os, time\n"
        "forked = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    forked += 1\n"
        "print(forked)\n"
    )
    bomb = project.tapers("ssh", "-c", "python3", stdin=fork_bomb)
    assert bomb.code == 0 and 0 < int(bomb.out) < 64, bomb.out + bomb.err  # stopped by `pids: 64`
    wait_for(lambda: project.tapers("ssh", "-c", "true").code == 0, 30, "the machine answering after the fork bomb")


@pytest.mark.both_backends
def test_stats_report_running_machines(project) -> None:
    project.write("machines:\n  web: {memory: 256M}\n  db: {}\n")
    project.tapers("up").ok()
    project.tapers("halt", "db").ok()
    rows = json.loads(project.tapers("stats", "--json").ok().out)
    assert [r["machine"] for r in rows] == ["web"]
    (web,) = rows
    assert web["memory"] > 1024**2 and web["memory_limit"] == 256 * 1024**2
    assert web["pids"] >= 1 and web["rx_bytes"] > 0
    assert "web" in project.tapers("stats", "--no-stream").ok().out


def test_a_port_forwarded_by_another_project_is_named(project, tmp_path) -> None:
    import subprocess
    import sys

    port = free_port()
    other = tmp_path / "other"
    other.mkdir()
    (other / "Taperfile.yaml").write_text(
        f"version: 1\nname: {project.name}-o\nmachines:\n  a:\n    networks: [{{forwarded_port: {{guest: 80, host: {port}}}}}]\n"
    )
    project.write(f"machines:\n  b:\n    networks: [{{forwarded_port: {{guest: 80, host: {port}}}}}]\n")
    try:
        subprocess.run([sys.executable, "-P", "-m", "tapers", "up"], cwd=other, env=project.env, check=True, capture_output=True)
        refused = project.tapers("up")
        assert refused.code == 1
        assert f"taken by machine container `tapers-{project.name}-o-a`" in refused.err
    finally:
        subprocess.run([sys.executable, "-P", "-m", "tapers", "destroy", "-f"], cwd=other, env=project.env, capture_output=True)


@pytest.mark.both_backends
def test_a_private_network_the_host_already_routes_is_refused(project) -> None:
    """A /24 the host reaches another way (its LAN, a VPN: here a bridge this test
    makes) would be hidden by a host-only bridge: `up` refuses it before any machine or
    bridge is made. Checked when the network is made, not when the Taperfile is read (the
    host's routes change; a Taperfile is shared)."""
    import subprocess

    from tests.integration.conftest import RUN_ID

    link = f"tt{RUN_ID[1:]}"  # an interface name: at most 15 characters
    subprocess.run(["ip", "link", "add", link, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "192.168.251.1/24", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        project.write("machines:\n  web:\n    networks: [{private: {ip: 192.168.251.10}}]\n")
        assert project.tapers("validate").code == 0  # the file itself is fine
        refused = project.tapers("up")
        assert refused.code != 0
        assert "192.168.251.0/24 (of address 192.168.251.10) overlaps this host's own network 192.168.251.0/24" in refused.err
        assert project.lxc_state("web") == "MISSING"
        assert not any(Path(f"/sys/class/net/{kind}c0a8fb").exists() for kind in ("tp", "tl"))  # no bridge made
    finally:
        subprocess.run(["ip", "link", "delete", link], check=False)
