"""The user's own settings, apart from the team's Taperfile: which container engine
runs the machines, and how to reach LXD.

`~/.config/tapers/config.yaml` (TAPERS_CONFIG overrides the path):

    backend: lxd                      # liblxc (the default) or lxd
    cache_max_size: 20G               # the provisioning cache's bound (`tapers cache`)
    lxd:
      endpoint: https://10.0.0.5:8443 # or unix:/var/lib/lxd/unix.socket (the default)
      client_cert: ~/.config/tapers/lxd.crt
      client_key: ~/.config/tapers/lxd.key
      server_cert: ~/.config/tapers/lxd-server.crt   # pinned: another server is refused
      project: default
      storage_pool: default
      network: tapers0                # the NAT network tapers creates in LXD...
      subnet: 10.96.0.0/16            # ...with this subnet

`--backend` and TAPERS_BACKEND choose the backend over the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from tapers import paths
from tapers.errors import UsageError

from tapers.backend.registry import NAMES as BACKENDS
LXD_SOCKET = "unix:/var/lib/lxd/unix.socket"


class LxdSettings(NamedTuple):
    endpoint: str = LXD_SOCKET
    client_cert: Path | None = None
    client_key: Path | None = None
    server_cert: Path | None = None
    project: str = "default"
    storage_pool: str = "default"
    network: str = "tapers0"
    subnet: str = "10.96.0.0/16"

    @property
    def https(self) -> bool:
        return self.endpoint.startswith("https://")


def backend_name() -> str:
    """TAPERS_BACKEND (which `--backend` sets), else the config file, else liblxc."""
    name = os.environ.get("TAPERS_BACKEND") or _read(paths.user_config_file()).get("backend") or "liblxc"
    if name not in BACKENDS:
        raise UsageError(
            f"unknown backend `{name}`",
            hint=f"one of: {', '.join(BACKENDS)} (from --backend, TAPERS_BACKEND or {paths.user_config_file()})",
        )
    return name


def cache_max_size(path: Path | None = None) -> int:
    """How large the provisioning cache may grow: TAPERS_CACHE_MAX_SIZE, else the config's
    `cache_max_size:` (20G by default); 0 turns the cache off."""
    from tapers.layer_cache import DEFAULT_MAX_SIZE
    from tapers.taperfile.units import parse_size

    path = path or paths.user_config_file()
    value = os.environ.get("TAPERS_CACHE_MAX_SIZE") or _read(path).get("cache_max_size")
    if value is None:
        return DEFAULT_MAX_SIZE
    if str(value).strip() == "0":
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"the provisioning cache's maximum size (TAPERS_CACHE_MAX_SIZE or `cache_max_size:` in "
                         f"{path}): {exc}", hint="e.g. 20G") from None


def lxd_settings(path: Path | None = None) -> LxdSettings:
    """The `lxd:` settings of the user config (or of the config file at `path`)."""
    path = path or paths.user_config_file()
    raw = _read(path).get("lxd") or {}
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: `lxd:` must be a mapping of settings")
    unknown = sorted(set(raw) - set(LxdSettings._fields))
    if unknown:
        raise UsageError(
            f"{path}: unknown `lxd:` setting {', '.join(f'`{k}`' for k in unknown)}",
            hint=f"known: {', '.join(LxdSettings._fields)}",
        )
    files = ("client_cert", "client_key", "server_cert")
    values = {k: (Path(os.path.expanduser(str(v))) if k in files and v else v) for k, v in raw.items()}
    settings = LxdSettings(**{k: v for k, v in values.items() if v is not None})
    if settings.https and not (settings.client_cert and settings.client_key):
        raise UsageError(
            f"{path}: an https endpoint needs `client_cert` and `client_key`",
            hint="generate a pair (openssl req -x509 ...) and trust it on the server: lxc config trust add FILE",
        )
    return settings


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping (backend:, lxd:)")
    return data
