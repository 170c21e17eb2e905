"""SHA-256 and a keyed digest (a MAC) without loading OpenSSL.

Importing hashlib or hmac loads libcrypto: 4-6 ms, a tenth of a `tapers status`, which hashes
on every run (the project's id, the seal on the validation cache, step fingerprints). CPython
carries its own SHA-256 and BLAKE2, the implementations hashlib itself falls back to; they
are used when they are there, hashlib otherwise. The digests are the same either way.
"""

from __future__ import annotations

from typing import Any, Callable


def sha256(data: bytes = b"") -> Any:
    """A hashlib-style SHA-256 object (update, digest, hexdigest)."""
    return _sha256()(data)


def mac(key: bytes, data: bytes) -> str:
    """The hex digest of `data` keyed with `key` (up to 64 bytes): keyed BLAKE2b, which is a
    MAC by design (what HMAC builds from a plain hash)."""
    return _blake2b()(data, key=key).hexdigest()


def same(a: str, b: str) -> bool:
    """Whether two digests are equal, in time that doesn't depend on where they differ."""
    try:
        from _operator import _compare_digest
    except ImportError:  # not CPython
        from hmac import compare_digest as _compare_digest
    return _compare_digest(a, b)


def _sha256() -> Callable[..., Any]:
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[no-redef]  # CPython 3.12 and later
        except ImportError:
            from hashlib import sha256
    return sha256


def _blake2b() -> Callable[..., Any]:
    try:
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b
    return blake2b
