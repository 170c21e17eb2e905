"""Networking for the liblxc backend: bridges, NAT and port forwards on this host, made
by tapers itself (see tapers/network.py, tapers/host.py and tapers/ports.py)."""

from __future__ import annotations

from typing import Any

from tapers.backend.api import NetworkConfig


class HostNetworking:
    def prepare(self) -> None:
        from tapers import host

        host.prepare_host()

    def allocate(self, container: str, used: set[str]) -> NetworkConfig:
        from tapers import network

        return network.allocate(container, used)

    def private(self, address: str) -> NetworkConfig:
        from tapers import network

        return network.private_config(address)

    def ensure_private(self, config: NetworkConfig) -> None:
        from tapers import network

        network.ensure_private_bridge(config)

    def release(self) -> None:
        from tapers import network

        network.release_nat_network()
        network.release_private_bridges()

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Any]:
        from tapers import ports

        ports.ensure_chains()
        chosen = ports.choose(container, wanted, guest_ip)
        ports.install(container, chosen)
        return chosen

    def unforward(self, container: str) -> None:
        from tapers import ports

        ports.remove(container)

    def forwarded(self) -> set[str]:
        from tapers import ports

        return set(ports.forwarded())
