"""How the tests look at containers: through the engine itself (python-lxc or LXD's API),
never through tapers, so a test can tell when tapers says one thing and does another."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LXC_PATH = Path("/var/lib/lxc")


class LiblxcView:
    name = "liblxc"

    def state(self, container: str) -> str:
        import lxc

        c = lxc.Container(container)
        return c.state if c.defined else "MISSING"

    def init_pid(self, container: str) -> int:
        import lxc

        return lxc.Container(container).init_pid

    def cgroup_item(self, container: str, key: str) -> str:
        import lxc

        return lxc.Container(container).get_cgroup_item(key)

    def record(self, container: str) -> dict:
        return json.loads((LXC_PATH / container / "tapers.json").read_text())

    def save_record(self, container: str, record: dict) -> None:
        (LXC_PATH / container / "tapers.json").write_text(json.dumps(record))

    def names(self) -> list[str]:
        import lxc

        return list(lxc.list_containers())

    def stop(self, container: str) -> None:
        import lxc

        lxc.Container(container).stop()

    def remove(self, container: str) -> None:
        import lxc

        from tapers.backend import staging

        c = lxc.Container(container)
        if c.running:
            c.stop()
        c.destroy()
        staging.release(container)  # what a failed test's machine had mounted for its synced folders
        from tapers.backend.liblxc import unprivileged

        unprivileged.unmount_box(container)  # and an unprivileged one's view of its box


class LxdView:
    name = "lxd"

    def __init__(self, config: Path) -> None:
        from tapers.backend.lxd.backend import connect
        from tapers.user_config import lxd_settings

        self.settings = lxd_settings(config)
        self.client = connect(self.settings)

    def _get(self, container: str) -> dict[str, Any] | None:
        from pylxd.exceptions import NotFound

        try:
            return self.client.api.instances[container].get().json()["metadata"]
        except NotFound:
            return None

    def state(self, container: str) -> str:
        data = self._get(container)
        return data["status"].upper() if data else "MISSING"

    def init_pid(self, container: str) -> int:
        return int(self.client.api.instances[container].state.get().json()["metadata"]["pid"])

    def cgroup_item(self, container: str, key: str) -> str:
        """Through LXC's own command socket under LXD's folder (the test LXD runs on this host)."""
        import lxc

        return lxc.Container(container, "/var/lib/lxd/containers").get_cgroup_item(key)

    def record(self, container: str) -> dict:
        return json.loads(self._get(container)["config"]["user.tapers.record"])

    def save_record(self, container: str, record: dict) -> None:
        self.client.api.instances[container].patch(json={"config": {"user.tapers.record": json.dumps(record)}})

    def names(self) -> list[str]:
        return [i.rsplit("/", 1)[-1].split("?")[0] for i in self.client.api.instances.get().json()["metadata"]]

    def stop(self, container: str) -> None:
        self.client.instances.get(container).stop(force=True, wait=True)

    def remove(self, container: str) -> None:
        instance = self.client.instances.get(container)
        if instance.status != "Stopped":
            instance.stop(force=True, wait=True)
        instance.delete(wait=True)

    def remove_images(self, box_home: Path) -> None:
        """The images tapers uploaded from the boxes in `box_home`."""
        from tapers.backend.lxd.backend import image_alias

        aliases = {image_alias(rootfs) for rootfs in box_home.glob("boxes/*/*/rootfs")}
        for image in self.client.images.all():
            if any(alias["name"] in aliases for alias in image.aliases):
                image.delete(wait=True)
