"""Checks that the host can run tapers machines, each with the exact fix: the checks of the
backend in use (see its checks.py), then what every backend needs on this host.

The cheap checks run before every `tapers up` that changes something, so a missing piece
is an error with advice instead of a stack trace.
"""

from __future__ import annotations

import shutil

from tapers.backend.api import Check
from tapers.errors import HostError

__all__ = ["Check", "require_host", "run_checks"]


def _debootstrap() -> Check:
    """What builds boxes: debootstrap as root; mmdebstrap as a normal user (in their id map)."""
    from tapers import paths

    if paths.as_user():
        ok = shutil.which("mmdebstrap") is not None
        return Check("mmdebstrap (to build boxes)", ok, "installed" if ok else "missing",
                     "an admin runs: apt-get install mmdebstrap")
    ok = shutil.which("debootstrap") is not None
    return Check("debootstrap (to build boxes)", ok, "installed" if ok else "missing", "apt-get install debootstrap")


def _ssh_client() -> Check:
    ok = shutil.which("ssh") is not None
    return Check(
        "OpenSSH client (interactive `tapers ssh`)", ok, "installed" if ok else "missing",
        "apt-get install openssh-client", required=False,
    )


def _provisioning_cache() -> Check:
    """Where the cache is, how full against its bound (informational: it is never required)."""
    from tapers import layer_cache
    from tapers.taperfile.units import human_size
    from tapers.user_config import cache_max_size

    bound = cache_max_size()
    if not bound:
        return Check("provisioning cache", True, "off (cache_max_size: 0)", required=False)
    layers = layer_cache.list_layers()
    used = sum(layer.size for layer in layers)
    return Check("provisioning cache", True, f"{len(layers)} layer(s), {human_size(used)} of at most "
                 f"{human_size(bound)} in {layer_cache.folder()}", "tapers cache prune --max-size SIZE", required=False)


def run_checks(full: bool = True) -> list[Check]:
    """The checks of the backend in use (liblxc on this host, or the LXD endpoint), then (full)
    the tools every backend uses here."""
    from tapers.backend import registry

    found = registry.checks(registry.chosen(), full)
    return found + ([_debootstrap(), _ssh_client(), _provisioning_cache()] if full else [])


def require_host() -> None:
    """Fail early, with the fix, when the host cannot run machines at all."""
    for check in run_checks(full=False):
        if check.required and not check.ok:
            raise HostError(f"this host cannot run tapers machines: {check.name}: {check.detail}", hint=check.fix)
