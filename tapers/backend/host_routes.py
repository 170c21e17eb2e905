"""The host's own IPv4 networks (its routes), which a host-only network of tapers must not
overlap: the machines would hide that part of the LAN or VPN from the host. Checked on the
host that makes the network (liblxc; LXD when it runs here), when it is made."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from tapers.backend.api import NetworkConfig
from tapers.errors import HostError

TAPERS_BRIDGES = re.compile(r"(tp|tl)[0-9a-f]{6}")  # host-only bridges of liblxc (tp) and LXD (tl)


def host_networks(own: tuple[str, ...] = ()) -> list[ipaddress.IPv4Network]:
    """Networks the host routes to directly, except tapers' own bridges (`own` and the
    host-only ones) and the default route."""
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
        if interface in own or TAPERS_BRIDGES.fullmatch(interface):
            continue
        net = ipaddress.IPv4Network(
            (int.from_bytes(bytes.fromhex(destination), "little"), bin(int.from_bytes(bytes.fromhex(mask), "little")).count("1")),
            strict=False,
        )
        if net.prefixlen > 0:
            networks.append(net)
    return networks


def refuse_overlap(config: NetworkConfig, own: tuple[str, ...] = ()) -> None:
    """A private network whose /24 the host already reaches another way is refused."""
    subnet = ipaddress.IPv4Network(f"{config.gateway}/24", strict=False)
    clash = next((net for net in host_networks(own) if net.overlaps(subnet)), None)
    if clash is not None:
        raise HostError(
            f"the private network {subnet} (of address {config.address}) overlaps this host's own network {clash}",
            hint="pick another private range in the Taperfile's `networks:`",
        )
