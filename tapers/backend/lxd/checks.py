"""What `tapers doctor` checks for the LXD backend: the endpoint answers, trusts tapers and
is the pinned server; the storage pool exists; idmapped mounts (unprivileged machines
without shifting files); (full) the default box's image and the cluster members."""

from __future__ import annotations

from typing import Any

from tapers.backend.api import Check


def checks(full: bool) -> list[Check]:
    from tapers.errors import TapersError
    from tapers import paths
    from tapers.user_config import lxd_settings

    try:
        settings = lxd_settings()
    except TapersError as exc:
        return [Check("tapers config", False, exc.message, exc.hint or f"edit {paths.user_config_file()}")]
    try:
        from tapers.backend.lxd.backend import connect

        client = connect(settings)
    except TapersError as exc:
        return [Check(f"LXD endpoint {settings.endpoint}", False, exc.message, exc.hint or "")]
    info = client.host_info
    pin = " (server certificate pinned)" if settings.https and settings.server_cert else ""
    checks = [
        Check(f"LXD endpoint {settings.endpoint}", True, f"LXD {info['environment'].get('server_version')}{pin}"),
        Check("client trusted", bool(client.trusted), "yes" if client.trusted else "no",
              f"on the server: lxc config trust add {settings.client_cert}"),
        _lxd_pool(client, settings.storage_pool),
        _lxd_idmapped(info),
    ]
    if settings.https and not settings.server_cert:
        checks.append(Check("server certificate pinned", False, "no `server_cert`: any server certificate the "
                            "system trusts is accepted", "copy the server's certificate and set `lxd: server_cert:`",
                            required=False))
    if full:
        checks += [_lxd_image(client), _lxd_members(client, info)]
    return checks


def _lxd_idmapped(info: dict) -> Check:
    """Machines are unprivileged: with idmapped mounts LXD shows each one the image's files
    shifted; without them it rewrites the owner of every file of each new machine (slower)."""
    ok = info["environment"].get("kernel_features", {}).get("idmapped_mounts") == "true"
    return Check("idmapped mounts (unprivileged machines)", ok,
                 "the image's files are shared, not shifted per machine" if ok
                 else "LXD shifts every file of each new machine at its first start (slower)",
                 "a kernel with idmapped mounts for the pool's filesystem (Linux 5.12+; btrfs, ext4, xfs)",
                 required=False)


def _lxd_pool(client: Any, pool: str) -> Check:
    names = [p.name for p in client.storage_pools.all()]
    ok = pool in names
    return Check(f"storage pool `{pool}`", ok, "exists" if ok else f"missing (pools: {', '.join(names) or 'none'})",
                 f"lxc storage create {pool} dir, or set `lxd: storage_pool:` in the tapers config")


def _lxd_image(client: Any) -> Check:
    from tapers.backend.lxd.backend import image_alias
    from tapers.boxes.cache import find_box
    from tapers.taperfile.machine import DEFAULT_BOX

    box = find_box(DEFAULT_BOX)
    if box is None:
        return Check(f"image of {DEFAULT_BOX}", False, "the box is not built yet", f"tapers box build {DEFAULT_BOX}",
                     required=False)
    alias = image_alias(box.rootfs)
    aliases = {a["name"] for image in client.images.all() for a in image.aliases}
    ok = alias in aliases
    return Check(f"image of {DEFAULT_BOX}", ok, alias if ok else "not uploaded yet",
                 "the first `tapers up` uploads it", required=False)


def _lxd_members(client: Any, info: dict) -> Check:
    if not info["environment"].get("server_clustered"):
        return Check("cluster", True, "a single server (not clustered)", required=False)
    members = client.api.cluster.members.get(params={"recursion": 1}).json()["metadata"]
    down = [m["server_name"] for m in members if m.get("status") != "Online"]
    return Check("cluster members", not down, f"{len(members)} member(s)" + (f", offline: {', '.join(down)}"
                 if down else ", all online"), "bring the offline members back (lxc cluster list)", required=False)


