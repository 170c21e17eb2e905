"""The LXD backend's networks: LXD managed bridges for the NAT network and the host-only
networks, and `proxy` devices for forwarded ports (no rule on this host: the LXD server,
or the cluster member running the machine, listens)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tapers.backend import addresses, forwards, host_routes
from tapers.backend.api import Forward, NetworkConfig
from tapers.backend.lxd.backend import message
from tapers.errors import BackendError

if TYPE_CHECKING:
    from tapers.backend.lxd.backend import LxdBackend

PORT_DEVICE_PREFIX = "tapers-port-"
PRIVATE_PREFIX = "tl"  # + the /24 in hex, as liblxc's `tp...` (a host may have both kinds of bridges)


class LxdNetworking:
    """Managed bridges in LXD for the NAT and private networks; proxy devices for ports."""

    forwards_outlive_containers = False  # a proxy device goes with its instance

    def __init__(self, backend: LxdBackend) -> None:
        self.backend = backend

    def prepare(self) -> None:
        import ipaddress

        subnet = ipaddress.IPv4Network(self.backend.settings.subnet)
        self._ensure(self.backend.settings.network, {
            "ipv4.address": f"{subnet.network_address + 1}/{subnet.prefixlen}", "ipv4.nat": "true",
            "ipv4.dhcp": "false", "ipv6.address": "none",
        })

    def allocate(self, container: str, used: set[str]) -> NetworkConfig:
        return addresses.allocate(container, used, self.backend.settings.subnet, self.backend.settings.network)

    def private(self, address: str) -> NetworkConfig:
        """As on liblxc, but named `tl...`: a host may have both kinds of bridges."""
        return addresses.private_config(address, PRIVATE_PREFIX)

    def ensure_private(self, config: NetworkConfig) -> None:
        if self.backend.local:  # a remote LXD's routes are its own: LXD itself checks them there
            host_routes.refuse_overlap(config, own=(self.backend.settings.network,))
        self._ensure(config.bridge, {"ipv4.address": f"{config.gateway}/24", "ipv4.nat": "false",
                                     "ipv4.dhcp": "false", "ipv6.address": "none"})

    def release_unused_private(self) -> None:
        """Private networks no instance uses (LXD counts stopped ones) are deleted."""
        import re

        from pylxd.exceptions import LXDAPIException

        for found in self.backend._api("networks").get(params={"recursion": 1}).json()["metadata"]:
            if re.fullmatch(rf"{PRIVATE_PREFIX}[0-9a-f]{{6}}", found["name"]) and not found.get("used_by"):
                try:
                    self.backend._api("networks", found["name"]).delete()
                except LXDAPIException:
                    pass  # in use again by now: it stays


    def check_forwards(self, wanted: list[tuple[str, int, str, int, bool]]) -> None:
        pass  # LXD's proxy devices listen as root

    def forward(self, container: str, wanted: list[tuple[str, int, str, int, bool]], guest_ip: str) -> list[Forward]:
        """Proxy devices listening on the LXD host (the cluster member that runs the machine):
        a port is taken when another instance's proxy device listens on it, or, when LXD runs
        on this host, a process here does. (On a remote LXD a process holding the port is
        reported by LXD when the device starts: `auto_correct` can't see it beforehand.)"""
        listening = self._listening(container)

        def holder(host_ip: str, port: int, protocol: str) -> str | None:
            for (their_ip, their_port, their_protocol), owner in listening.items():
                same_address = their_ip == host_ip or "0.0.0.0" in (their_ip, host_ip)
                if (their_port, their_protocol) == (port, protocol) and same_address:
                    return f"machine container `{owner}` (an LXD proxy device)"
            return forwards.listening_process(host_ip, port, protocol) if self.backend.local else None

        chosen = forwards.choose(wanted, guest_ip, holder)
        data = self.backend._data(container, "forward ports to")
        devices = {k: v for k, v in data["devices"].items() if not k.startswith(PORT_DEVICE_PREFIX)}
        for index, forward in enumerate(chosen):
            devices[f"{PORT_DEVICE_PREFIX}{index}"] = {
                "type": "proxy", "bind": "host",
                "listen": f"{forward.protocol}:{forward.host_ip}:{forward.host}",
                "connect": f"{forward.protocol}:127.0.0.1:{forward.guest}",
            }
        self.backend._update(container, "forward ports", data, devices=devices)
        return chosen

    def unforward(self, container: str) -> None:
        data = self.backend._instance(container)
        if data is None or not any(k.startswith(PORT_DEVICE_PREFIX) for k in data["devices"]):
            return
        devices = {k: v for k, v in data["devices"].items() if not k.startswith(PORT_DEVICE_PREFIX)}
        self.backend._update(container, "stop forwarding ports", data, devices=devices)

    def forwarded(self) -> set[str]:
        return {i["name"] for i in self.backend._instances() if any(k.startswith(PORT_DEVICE_PREFIX) for k in i["devices"])}

    def _listening(self, container: str) -> dict[tuple[str, int, str], str]:
        """(address, port, protocol) -> instance, for the tapers proxy devices of other instances."""
        found = {}
        for instance in self.backend._instances():
            if instance["name"] == container:
                continue
            for name, device in instance["devices"].items():
                if name.startswith(PORT_DEVICE_PREFIX) and device.get("type") == "proxy":
                    protocol, address, port = device["listen"].split(":", 2)
                    found[(address, int(port), protocol)] = instance["name"]
        return found

    def _ensure(self, name: str, config: dict[str, str]) -> None:
        """A managed bridge: on a cluster, defined on every member first, then created.
        One left broken by an earlier attempt is made again."""
        from pylxd.exceptions import LXDAPIException, NotFound

        networks = self.backend._api("networks")
        try:
            status = networks[name].get().json()["metadata"].get("status", "Created")
        except NotFound:
            status = None
        except LXDAPIException as exc:
            if exc.response.status_code != 404:
                raise BackendError(f"cannot read the LXD network {name}: {message(exc)}") from None
            status = None
        if status == "Created":
            return
        try:
            if status == "Errored":
                networks[name].delete()
            if self.backend.client.host_info["environment"].get("server_clustered"):
                for member in self.backend._api("cluster", "members").get().json()["metadata"]:
                    try:
                        networks.post(params={"target": member.rsplit("/", 1)[-1]},
                                      json={"name": name, "type": "bridge"})
                    except LXDAPIException as exc:
                        if "already" not in message(exc):
                            raise
            networks.post(json={"name": name, "type": "bridge", "config": config})
        except LXDAPIException as exc:
            raise BackendError(
                f"cannot create the LXD network {name} ({config['ipv4.address']}): {message(exc)}",
                hint="another network may use that subnet (for the NAT network: set `lxd: subnet:` "
                "in the tapers config)",
            ) from None
