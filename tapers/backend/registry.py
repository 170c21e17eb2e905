"""The backends by name: which one the user chose, how to make it, and what `tapers doctor`
checks for it. Each backend package is imported only when it is used."""

from __future__ import annotations

import os

from tapers.backend.api import Backend, Check

NAMES = ("liblxc", "lxd")  # liblxc first: the default


def chosen() -> str:
    """`--backend` (which sets TAPERS_BACKEND), TAPERS_BACKEND, the user config; liblxc by default."""
    if not os.environ.get("TAPERS_BACKEND") and not _has_user_config():
        return "liblxc"  # the common case, without reading YAML
    from tapers import user_config

    return user_config.backend_name()


def create(name: str | None = None) -> Backend:
    """The backend `name` (the chosen one by default), ready to use."""
    name = name or chosen()
    if name == "lxd":
        from tapers import user_config
        from tapers.backend.lxd.backend import LxdBackend

        return LxdBackend(user_config.lxd_settings())
    from tapers.backend.liblxc.backend import LiblxcBackend

    return LiblxcBackend()


def checks(name: str, full: bool) -> list[Check]:
    """What `tapers doctor` checks for backend `name` (`full`: all; else the cheap ones)."""
    if name == "lxd":
        from tapers.backend.lxd import checks as lxd_checks

        return lxd_checks.checks(full)
    from tapers.backend.liblxc import checks as liblxc_checks

    return liblxc_checks.checks(full)


def _has_user_config() -> bool:
    from tapers import paths

    return paths.user_config_file().is_file()
