"""Forwarded ports: nftables DNAT rules on the host, one set per container.

`host_ip:host` on the host reaches `guest` on the machine's NAT address, from other hosts
(prerouting) and from the host itself (output; 127.0.0.1 needs route_localnet on the
bridge and a masquerade so replies come back). Rules live in the kernel: they outlast the
`tapers` process, go on halt and destroy, and come back on up. Each rule carries its
container's name as a comment.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from tapers.backend import forwards
from tapers.backend.api import Forward
from tapers.backend.liblxc import nft
from tapers.backend.liblxc.bridges import BRIDGE, NFT_TABLE, SUBNET
from tapers.errors import HostError, UnsafeValueError

def ensure_chains() -> None:
    """The nat chains forwards need (idempotent), and the settings for 127.0.0.1."""
    script = (
        f"table ip {NFT_TABLE} {{\n"
        "  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }\n"
        "  chain output { type nat hook output priority -100; policy accept; }\n"
        "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
        "}\n"
    )
    if "127.0.0.0" not in json.dumps(nft.rules(NFT_TABLE)):
        script += (f"add rule ip {NFT_TABLE} postrouting ip saddr 127.0.0.0/8 ip daddr {SUBNET} masquerade "
                   'comment "tapers: replies to forwarded localhost ports"\n')
    nft.apply(script, "create the port forwarding chains")
    try:
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
    except OSError as exc:
        raise HostError(f"cannot allow forwarding from 127.0.0.1 on {BRIDGE}: {exc.strerror}") from None


def forwarded() -> dict[str, list[tuple[str, int]]]:
    """container -> [(chain, handle)] of the rules forwarding ports to it: the DNAT rules
    its name is the comment of (a rule of another kind is never taken for a forward)."""
    result: dict[str, list[tuple[str, int]]] = {}
    for rule in nft.rules(NFT_TABLE):
        comment = rule.get("comment", "")
        if comment.startswith("tapers-") and rule["chain"] in ("prerouting", "output") and _is_dnat(rule):
            result.setdefault(comment, []).append((rule["chain"], rule["handle"]))
    return result


def _is_dnat(rule: dict) -> bool:
    return any("dnat" in expression for expression in rule.get("expr", []))


def remove(container: str) -> None:
    handles = forwarded().get(container, [])
    if handles:
        script = "".join(f"delete rule ip {NFT_TABLE} {chain} handle {handle}\n" for chain, handle in handles)
        nft.apply(script, f"remove the forwarded ports of {container}")


def install(container: str, forwards: list[Forward]) -> None:
    """Replace the container's rules by `forwards`, in one nft transaction."""
    from tapers import sinks

    where = "an nftables rule"
    comment = sinks.plain(container, "the container name", where, forbidden='"\\ ;')
    script = "".join(
        f"delete rule ip {NFT_TABLE} {chain} handle {handle}\n" for chain, handle in forwarded().get(container, [])
    )
    for fw in forwards:
        host_ip, guest_ip = (str(ipaddress.IPv4Address(ip)) for ip in (fw.host_ip, fw.guest_ip))  # nothing else
        if fw.protocol not in ("tcp", "udp"):
            raise UnsafeValueError(f"{where}: the protocol {fw.protocol!r} is neither tcp nor udp; refused")
        match = f"{fw.protocol} dport {int(fw.host)}"
        # Only traffic to this host is forwarded: a host_ip of someone else's (8.8.8.8) must
        # never divert the host's own traffic to that address into a machine.
        destination = "fib daddr type local" + ("" if host_ip == "0.0.0.0" else f" ip daddr {host_ip}")
        for chain in ("prerouting", "output"):
            script += (
                f"add rule ip {NFT_TABLE} {chain} {destination} {match} dnat to {guest_ip}:{int(fw.guest)} "
                f'comment "{comment}"\n'
            )
    if script:
        nft.apply(script, f"forward ports to {container}")


def _forwarded_endpoint(rule: dict) -> tuple[str, int, str] | None:
    """(host address or "0.0.0.0", port, protocol) a forwarding rule listens on."""
    address, port, protocol = "0.0.0.0", None, None
    for expression in rule.get("expr", []):
        match = expression.get("match")
        if not match or "payload" not in match.get("left", {}):
            continue
        payload = match["left"]["payload"]
        if payload.get("field") == "daddr":
            address = str(match["right"])
        elif payload.get("field") == "dport":
            port, protocol = int(match["right"]), payload.get("protocol")
    return (address, port, protocol) if port is not None and protocol else None


def taken_by(host_ip: str, port: int, protocol: str, ours: str) -> str | None:
    """Who holds host_ip:port already: a listening process, or another machine's forward."""
    for rule in nft.rules(NFT_TABLE):
        comment = rule.get("comment", "")
        if rule["chain"] != "prerouting" or not comment.startswith("tapers-") or comment == ours:
            continue
        endpoint = _forwarded_endpoint(rule)
        if endpoint is None:
            continue
        address, their_port, their_protocol = endpoint
        same_address = address == host_ip or "0.0.0.0" in (address, host_ip)
        if (their_port, their_protocol) == (port, protocol) and same_address:
            return f"machine container `{comment}` (a tapers forward)"
    return forwards.listening_process(host_ip, port, protocol)


def choose(container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Forward]:
    """Host ports for the forwards `wanted`; taken means held by a process on this host or
    by another machine's rule."""
    return forwards.choose(wanted, guest_ip, lambda host_ip, port, protocol: taken_by(host_ip, port, protocol, container))
