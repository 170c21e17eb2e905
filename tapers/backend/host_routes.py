"""The host's own IPv4 networks (its routes), which a host-only network of tapers must not
overlap: the machines would hide that part of the LAN or VPN from the host. Checked on the
host that makes the network (liblxc; LXD when it runs here), when it is made."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tapers.backend.api import NetworkConfig
from tapers.errors import HostError

def host_networks(own: tuple[str, ...] = ()) -> list[ipaddress.IPv4Network]:
    """Networks the host routes to directly, except through the interfaces `own` and the
    default route."""
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
        if interface in own:
            continue
        net = ipaddress.IPv4Network(
            (int.from_bytes(bytes.fromhex(destination), "little"), bin(int.from_bytes(bytes.fromhex(mask), "little")).count("1")),
            strict=False,
        )
        if net.prefixlen > 0:
            networks.append(net)
    return networks


def refuse_overlap(config: NetworkConfig, own: tuple[str, ...] = ()) -> None:
    """A private network whose /24 the host already reaches another way is refused: its LAN,
    a VPN, or the other backend's bridge for the same /24 (liblxc's `tp...` beside LXD's
    `tl...`). Its own bridge, and the bridges in `own` (the NAT network), don't count."""
    subnet = ipaddress.IPv4Network(f"{config.gateway}/24", strict=False)
    clash = next((net for net in host_networks((config.bridge, *own)) if net.overlaps(subnet)), None)
    if clash is not None:
        raise HostError(
            f"the private network {subnet} (of address {config.address}) overlaps this host's own network {clash}",
            hint="pick another private range in the Taperfile's `networks:`",
        )
