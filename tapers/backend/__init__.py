"""Container engines behind one small protocol (api.py), chosen by name (registry.py):
liblxc on this host (liblxc/), or LXD (lxd/). Helpers every backend shares: addresses.py,
forwards.py, staging.py and idmap.py (synced folders), cgroups.py, lxc_config.py."""

from __future__ import annotations

from tapers.backend.api import Backend


def default_backend() -> Backend:
    """The backend the user chose (`--backend`, TAPERS_BACKEND, the user config; liblxc by
    default), imported only when a command needs containers."""
    from tapers.backend import registry

    return registry.create()
