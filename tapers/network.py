"""The NAT network tapers manages: its bridge, masquerade rule and static addresses.

Addresses are assigned by tapers before a machine first boots (no DHCP wait): each
container gets a stable address derived from its name, moved on only when taken,
and a MAC derived from the address (a re-used address never meets a stale
neighbour entry for another MAC on the host).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from pathlib import Path

from tapers.backend.api import NetworkConfig
from tapers.errors import HostError

BRIDGE = os.environ.get("TAPERS_BRIDGE", "tapersbr0")
SUBNET = ipaddress.IPv4Network(os.environ.get("TAPERS_NAT_SUBNET", "10.97.0.0/16"))
GATEWAY = SUBNET.network_address + 1
NFT_TABLE = "tapers"
PRIVATE_BRIDGE_PREFIX = "tp"  # tp + the /24 in hex: tpc0a821 is 192.168.33.0/24
LXD_PRIVATE_PREFIX = "tl"  # the same, as an LXD managed network (both may exist on one host)


def mac_for(address: str) -> str:
    packed = ipaddress.IPv4Address(address).packed
    return "00:16:3e:" + ":".join(f"{byte:02x}" for byte in packed[1:])


def allocate(container: str, used: set[str], subnet: str | None = None, bridge: str = BRIDGE) -> NetworkConfig:
    """A free address for `container` in `subnet` (tapers' own by default): the one its
    name hashes to, or the next free one."""
    net = ipaddress.IPv4Network(subnet) if subnet else SUBNET
    hosts = net.num_addresses - 3  # minus network, gateway and broadcast
    start = int.from_bytes(hashlib.sha256(container.encode()).digest()[:4], "big") % hosts
    for step in range(hosts):
        address = str(net.network_address + 2 + (start + step) % hosts)
        if address not in used:
            return NetworkConfig(
                bridge=bridge, address=address, prefix=net.prefixlen, gateway=str(net.network_address + 1),
                mac=mac_for(address),
            )
    raise HostError(f"no free address left in the tapers network {net}")


def private_bridge(address: str) -> str:
    """The host-only bridge tapers owns for the /24 of `address` (shared by every project)."""
    a, b, c, _ = ipaddress.IPv4Address(address).packed
    return f"{PRIVATE_BRIDGE_PREFIX}{a:02x}{b:02x}{c:02x}"


def private_config(address: str) -> NetworkConfig:
    """A private address on its /24 bridge; the MAC is the address itself, locally administered."""
    packed = ipaddress.IPv4Address(address).packed
    mac = "0a:16:" + ":".join(f"{byte:02x}" for byte in packed)
    gateway = str(ipaddress.IPv4Network(f"{address}/24", strict=False).network_address + 1)
    return NetworkConfig(bridge=private_bridge(address), address=address, prefix=24, gateway=gateway, mac=mac)


def ensure_private_bridge(config: NetworkConfig) -> None:
    """Create the /24's bridge with the host at .1 (no NAT: host-only)."""
    if not Path(f"/sys/class/net/{config.bridge}").exists():
        _run(["ip", "link", "add", config.bridge, "type", "bridge"], f"create the bridge for {config.address}/24")
    host_side = f"{config.gateway}/24"
    addresses = _run(["ip", "-4", "-o", "addr", "show", "dev", config.bridge], "read the bridge address")
    if f" {host_side} " not in addresses:
        _run(["ip", "addr", "add", host_side, "dev", config.bridge], f"give the host {host_side}")
    _run(["ip", "link", "set", config.bridge, "up"], "bring the private bridge up")


def bridge_ready() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def ensure_nat_network() -> None:
    """Bring up the bridge, its gateway address, IP forwarding and the masquerade rule."""
    if not bridge_ready():
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"], "create the bridge")
    gateway = f"{GATEWAY}/{SUBNET.prefixlen}"
    addresses = _run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE], "read the bridge address")
    if f" {gateway} " not in addresses:
        _run(["ip", "addr", "add", gateway, "dev", BRIDGE], "give the bridge its address")
    _run(["ip", "link", "set", BRIDGE, "up"], "bring the bridge up")
    try:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    except OSError as exc:
        raise HostError(f"cannot enable IPv4 forwarding: {exc.strerror}", hint="run tapers as root") from None
    _ensure_masquerade()


def _ensure_masquerade() -> None:
    listed = subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], capture_output=True, text=True)
    if listed.returncode == 0 and f"ip saddr {SUBNET} ip daddr != {SUBNET} masquerade" in listed.stdout:
        return
    rules = (
        f"table ip {NFT_TABLE} {{\n"
        "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
        "}\n"
        f"add rule ip {NFT_TABLE} postrouting ip saddr {SUBNET} ip daddr != {SUBNET} masquerade\n"
    )
    _run(["nft", "-f", "-"], "install the masquerade rule", stdin=rules)


def release_nat_network() -> None:
    """No tapers machine left on the host: take tapers' nftables rules away (masquerade, forwards)."""
    listed = subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], capture_output=True, text=True)
    if listed.returncode == 0:
        _run(["nft", "delete", "table", "ip", NFT_TABLE], "remove the tapers nftables rules")


def release_private_bridges() -> None:
    """Take away tapers' host-only bridges that no machine is attached to."""
    import re

    for device in Path("/sys/class/net").iterdir():
        if re.fullmatch(rf"{PRIVATE_BRIDGE_PREFIX}[0-9a-f]{{6}}", device.name) and (device / "bridge").is_dir():
            if not any((device / "brif").iterdir()):
                _run(["ip", "link", "delete", device.name], f"remove the unused bridge {device.name}")


def host_nameservers() -> list[str]:
    """The host's DNS servers that a container can reach (loopback ones can't be)."""
    servers = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                address = ipaddress.ip_address(parts[1].split("%")[0])
                if not address.is_loopback:
                    servers.append(parts[1])
    except (OSError, ValueError):
        pass
    return servers


def _run(argv: list[str], what: str, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, input=stdin)
    except FileNotFoundError:
        raise HostError(
            f"cannot {what}: `{argv[0]}` is not installed",
            hint="apt-get install iproute2 nftables",
        ) from None
    if result.returncode != 0:
        raise HostError(
            f"cannot {what} for the tapers network ({BRIDGE}, {SUBNET}): {result.stderr.strip()}",
            hint="run `tapers doctor`; tapers needs root to manage its network",
        )
    return result.stdout


def host_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the host routes to directly, except the ones tapers made (its bridges,
    and LXD's `tl...` private networks) and the default route."""
    import re

    networks = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return networks
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        interface, destination, mask = fields[0], fields[1], fields[7]
        if interface == BRIDGE or re.fullmatch(rf"({PRIVATE_BRIDGE_PREFIX}|{LXD_PRIVATE_PREFIX})[0-9a-f]{{6}}", interface):
            continue
        net = ipaddress.IPv4Network(
            (int.from_bytes(bytes.fromhex(destination), "little"), bin(int.from_bytes(bytes.fromhex(mask), "little")).count("1")),
            strict=False,
        )
        if net.prefixlen > 0:
            networks.append(net)
    return networks
