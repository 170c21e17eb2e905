"""The liblxc backend's networks on this host: tapers' NAT bridge and its masquerade rule,
the host-only bridges of private networks, and the host's own routes (which a private
network must not overlap)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

from tapers.backend import host_routes
from tapers.backend.api import NetworkConfig
from tapers.errors import HostError

BRIDGE = os.environ.get("TAPERS_BRIDGE", "tapersbr0")
SUBNET = ipaddress.IPv4Network(os.environ.get("TAPERS_NAT_SUBNET", "10.97.0.0/16"))
GATEWAY = SUBNET.network_address + 1
NFT_TABLE = "tapers"
PRIVATE_BRIDGE_PREFIX = "tp"  # tp + the /24 in hex: tpc0a821 is 192.168.33.0/24


def ensure_private_bridge(config: NetworkConfig) -> None:
    """Create the /24's bridge with the host at .1 (no NAT: host-only). A /24 the host
    already reaches another way (its LAN, a VPN) is refused: the machines would hide it."""
    host_routes.refuse_overlap(config, own=(BRIDGE,))
    ensure_bridge(config.bridge, f"{config.gateway}/24", f"the bridge for {config.address}/24")


def ensure_bridge(name: str, host_side: str, what: str) -> None:
    """The bridge `name` exists, is up, and the host has the address `host_side` on it (and
    no IPv6 address: see `_without_ipv6`)."""
    if exists(name) and _up(name) and _address(name) == ipaddress.IPv4Interface(host_side) and _ipv6_off(name):
        return  # as it should be: read without starting `ip` three times
    if not exists(name):
        run(["ip", "link", "add", name, "type", "bridge"], f"create {what}")
    _without_ipv6(name, what)
    addresses = run(["ip", "-4", "-o", "addr", "show", "dev", name], f"read the address of {what}")
    if f" {host_side} " not in addresses:
        run(["ip", "addr", "add", host_side, "dev", name], f"give the host {host_side} on {what}")
    run(["ip", "link", "set", name, "up"], f"bring {what} up")


def _ipv6_knob(name: str) -> Path:
    return Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")


def _ipv6_off(name: str) -> bool:
    try:
        return _ipv6_knob(name).read_text().strip() == "1"
    except OSError:  # (no IPv6 on this host)
        return True


def _without_ipv6(name: str, what: str) -> None:
    """Machines are reached over IPv4, where tapers' rules are (a user's machines answer only
    her and root): the host takes no IPv6 address on their bridge, or any host user could
    reach them at their link-local addresses."""
    if _ipv6_off(name):
        return
    try:
        _ipv6_knob(name).write_text("1\n")
    except OSError as exc:
        raise HostError(f"cannot turn IPv6 off on {what}: {exc.strerror}") from None


def enable_forwarding() -> None:
    try:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    except OSError as exc:
        raise HostError(f"cannot enable IPv4 forwarding: {exc.strerror}", hint="run tapers as root") from None


def exists(name: str) -> bool:
    """The network device `name` exists on this host."""
    return Path(f"/sys/class/net/{name}").exists()


def _up(name: str) -> bool:
    try:
        return bool(int(Path(f"/sys/class/net/{name}/flags").read_text(), 16) & 0x1)  # IFF_UP
    except (OSError, ValueError):
        return False


def _address(name: str) -> ipaddress.IPv4Interface | None:
    """The device's (first) IPv4 address and prefix, through the kernel's ioctls."""
    import fcntl
    import socket
    import struct

    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = fcntl.ioctl(sock.fileno(), 0x8915, request)[20:24]  # SIOCGIFADDR
            mask = fcntl.ioctl(sock.fileno(), 0x891B, request)[20:24]  # SIOCGIFNETMASK
        except OSError:
            return None
    return ipaddress.IPv4Interface(f"{socket.inet_ntoa(address)}/{socket.inet_ntoa(mask)}")


def bridge_ready() -> bool:
    return exists(BRIDGE)


def ensure_nat_network() -> None:
    """Bring up the bridge, its gateway address, IP forwarding and the masquerade rule."""
    ensure_bridge(BRIDGE, f"{GATEWAY}/{SUBNET.prefixlen}", "the NAT bridge")
    enable_forwarding()
    _ensure_masquerade()


def _ensure_masquerade() -> None:
    from tapers.backend.liblxc import nft

    listed, text, _ = nft.run(f"list table ip {NFT_TABLE}")
    if listed and f"ip saddr {SUBNET} ip daddr != {SUBNET} masquerade" in text:
        return
    rules = (
        f"table ip {NFT_TABLE} {{\n"
        "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
        "}\n"
        f"add rule ip {NFT_TABLE} postrouting ip saddr {SUBNET} ip daddr != {SUBNET} masquerade\n"
    )
    nft.apply(rules, "install the masquerade rule of the tapers network")


def release_private_bridges() -> None:
    """Take away tapers' host-only bridges that no machine is attached to."""
    import re

    for device in Path("/sys/class/net").iterdir():
        if re.fullmatch(rf"{PRIVATE_BRIDGE_PREFIX}[0-9a-f]{{6}}", device.name) and (device / "bridge").is_dir():
            if not any((device / "brif").iterdir()):
                run(["ip", "link", "delete", device.name], f"remove the unused bridge {device.name}")


def run(argv: list[str], what: str, stdin: str | None = None) -> str:
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
