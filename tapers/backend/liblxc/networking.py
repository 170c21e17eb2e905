"""What the liblxc backend needs from this host's network, made by tapers itself: the NAT
bridge (bridges.py), host-only bridges, and ports forwarded by nftables rules (ports.py)."""

from __future__ import annotations

from tapers.backend import addresses
from tapers.backend.api import Forward, NetworkConfig
from tapers.backend.liblxc import bridges


class HostNetworking:
    """Root's machines. The port rules (ports.py, with the nftables library) are loaded
    only by what forwards ports: `destroy` and `halt` of a machine without any never do."""

    forwards_outlive_containers = True

    def prepare(self) -> None:
        from tapers.backend.liblxc import host

        host.prepare_host()

    def allocate(self, container: str, used: set[str]) -> NetworkConfig:
        return addresses.allocate(container, used, bridges.SUBNET, bridges.BRIDGE)

    def private(self, address: str) -> NetworkConfig:
        return addresses.private_config(address, bridges.PRIVATE_BRIDGE_PREFIX)

    def ensure_private(self, config: NetworkConfig) -> None:
        bridges.ensure_private_bridge(config)

    def release_unused_private(self) -> None:
        bridges.release_private_bridges()

    def check_forwards(self, wanted: list[tuple[str, int, str, int, bool]]) -> None:
        pass  # root may listen on any port

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Forward]:
        from tapers.backend.liblxc import ports

        ports.ensure_chains()
        chosen = ports.choose(container, wanted, guest_ip)
        ports.install(container, chosen)
        return chosen

    def unforward(self, container: str) -> None:
        from tapers.backend.liblxc import ports

        ports.remove(container)

    def forwarded(self) -> set[str]:
        from tapers.backend.liblxc import ports

        return set(ports.forwarded())


class UserNetworking:
    """A normal user's machines: on the bridge and subnet an admin gave them (grants.py);
    ports forwarded by a process of theirs; no private networks yet."""

    forwards_outlive_containers = True

    def __init__(self) -> None:
        from tapers.backend.liblxc import grants

        self.grant = grants.mine()

    def prepare(self) -> None:
        from tapers.backend.liblxc import delegation, grants
        from tapers.errors import HostError

        missing = [] if bridges.exists(self.grant.bridge) else [f"the bridge {self.grant.bridge}"]
        missing += [str(path) for path in delegation.missing(self.grant.user)]
        if missing:
            raise HostError(f"the host is not ready for your machines: {', '.join(missing)} missing "
                            "(the host was restarted since the setup?)",
                            hint=f"an admin runs: {grants.setup_command(self.grant.user)}")

    def allocate(self, container: str, used: set[str]) -> NetworkConfig:
        return addresses.allocate(container, used, self.grant.subnet, self.grant.bridge)

    def private(self, address: str) -> NetworkConfig:
        from tapers.backend.liblxc import grants
        from tapers.errors import HostError

        if self.grant.private_range_of(address) is None:
            allowed = ", ".join(self.grant.private) or "none"
            raise HostError(f"the private network address {address} is not in a range you may use (yours: {allowed})",
                            hint=f"pick an address in your ranges, or an admin runs: {grants.setup_command(self.grant.user)} "
                                 f"--private {'.'.join(address.split('.')[:3])}.0/24")
        return addresses.private_config(address, grants.PRIVATE_PREFIX)

    def ensure_private(self, config: NetworkConfig) -> None:
        from tapers.backend.liblxc import grants
        from tapers.errors import HostError

        if not bridges.exists(config.bridge):
            raise HostError(f"the bridge {config.bridge} of your private network is missing (the host was restarted?)",
                            hint=f"an admin runs: {grants.setup_command(self.grant.user)}")

    def release_unused_private(self) -> None:
        pass  # the admin's too

    def check_forwards(self, wanted: list[tuple[str, int, str, int, bool]]) -> None:
        from tapers.backend.liblxc import user_ports

        user_ports.refuse_privileged_ports(wanted)

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Forward]:
        from tapers.backend.liblxc import user_ports

        chosen = user_ports.choose(container, wanted, guest_ip)
        user_ports.install(container, chosen)
        return chosen

    def unforward(self, container: str) -> None:
        from tapers.backend.liblxc import user_ports

        user_ports.remove(container)

    def forwarded(self) -> set[str]:
        from tapers.backend.liblxc import user_ports

        return user_ports.forwarded()
