"""Address maths every backend shares: which NAT address a new machine gets, the MAC that
goes with an address, and the host-only network a private address is on. No I/O.

Addresses are chosen by tapers before a machine first boots (no DHCP wait): each container
gets a stable address derived from its name, moved on only when taken, and a MAC derived
from the address (a re-used address never meets a stale neighbour entry for another MAC).
"""

from __future__ import annotations

import ipaddress

from tapers import digests
from tapers.backend.api import NetworkConfig
from tapers.errors import HostError


def mac_for(address: str) -> str:
    packed = ipaddress.IPv4Address(address).packed
    return "00:16:3e:" + ":".join(f"{byte:02x}" for byte in packed[1:])


def allocate(container: str, used: set[str], subnet: str | ipaddress.IPv4Network, bridge: str) -> NetworkConfig:
    """A free address for `container` in `subnet`: the one its name hashes to, or the next free one."""
    net = ipaddress.IPv4Network(subnet)
    hosts = net.num_addresses - 3  # minus network, gateway and broadcast
    start = int.from_bytes(digests.sha256(container.encode()).digest()[:4], "big") % hosts
    for step in range(hosts):
        address = str(net.network_address + 2 + (start + step) % hosts)
        if address not in used:
            return NetworkConfig(
                bridge=bridge, address=address, prefix=net.prefixlen, gateway=str(net.network_address + 1),
                mac=mac_for(address),
            )
    raise HostError(f"no free address left in the tapers network {net}")


def private_bridge(address: str, prefix: str) -> str:
    """The host-only bridge for the /24 of `address`: `prefix` + the /24 in hex (tp +
    c0a821 is 192.168.33.0/24 on liblxc), shared by every project."""
    a, b, c, _ = ipaddress.IPv4Address(address).packed
    return f"{prefix}{a:02x}{b:02x}{c:02x}"


def private_config(address: str, prefix: str) -> NetworkConfig:
    """A private address on its /24 bridge; the MAC is the address itself, locally administered."""
    packed = ipaddress.IPv4Address(address).packed
    mac = "0a:16:" + ":".join(f"{byte:02x}" for byte in packed)
    gateway = str(ipaddress.IPv4Network(f"{address}/24", strict=False).network_address + 1)
    return NetworkConfig(bridge=private_bridge(address, prefix), address=address, prefix=24, gateway=gateway, mac=mac)
