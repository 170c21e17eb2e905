"""What the liblxc backend needs from this host's network, made by tapers itself: the NAT
bridge (bridges.py), host-only bridges, and ports forwarded by nftables rules (ports.py)."""

from __future__ import annotations

from tapers.backend import addresses
from tapers.backend.api import NetworkConfig
from tapers.backend.liblxc import bridges, host, ports


class HostNetworking:
    def prepare(self) -> None:
        host.prepare_host()

    def allocate(self, container: str, used: set[str]) -> NetworkConfig:
        return addresses.allocate(container, used, bridges.SUBNET, bridges.BRIDGE)

    def private(self, address: str) -> NetworkConfig:
        return addresses.private_config(address, bridges.PRIVATE_BRIDGE_PREFIX)

    def ensure_private(self, config: NetworkConfig) -> None:
        bridges.ensure_private_bridge(config)

    def release(self) -> None:
        bridges.release_nat_network()
        bridges.release_private_bridges()

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[ports.Forward]:
        ports.ensure_chains()
        chosen = ports.choose(container, wanted, guest_ip)
        ports.install(container, chosen)
        return chosen

    def unforward(self, container: str) -> None:
        ports.remove(container)

    def forwarded(self) -> set[str]:
        return set(ports.forwarded())
