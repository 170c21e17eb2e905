"""Container engines behind one small protocol (see api.py)."""

from __future__ import annotations

from tapers.backend.api import Backend


def default_backend() -> Backend:
    """The liblxc backend (imported only when a command needs containers)."""
    from tapers.backend.liblxc import LiblxcBackend

    return LiblxcBackend()
