"""Container engines behind one small protocol (see api.py): liblxc on this host, or LXD."""

from __future__ import annotations

from tapers.backend.api import Backend


def default_backend() -> Backend:
    """The backend the user chose (`--backend`, TAPERS_BACKEND, the user config; liblxc by
    default), imported only when a command needs containers."""
    import os

    if not os.environ.get("TAPERS_BACKEND") and not _has_user_config():
        from tapers.backend.liblxc import LiblxcBackend  # the common case, without reading YAML

        return LiblxcBackend()
    from tapers import user_config

    if user_config.backend_name() == "lxd":
        from tapers.backend.lxd import LxdBackend

        return LxdBackend(user_config.lxd_settings())
    from tapers.backend.liblxc import LiblxcBackend

    return LiblxcBackend()


def _has_user_config() -> bool:
    from tapers.user_config import config_path

    return config_path().is_file()
