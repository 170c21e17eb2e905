"""tapers.digests: the same SHA-256 as hashlib, a keyed digest that depends on its key."""

from __future__ import annotations

import hashlib

from tapers import digests


def test_sha256_is_hashlibs() -> None:
    assert digests.sha256(b"tapers").hexdigest() == hashlib.sha256(b"tapers").hexdigest()
    incremental = digests.sha256()
    incremental.update(b"tap")
    incremental.update(b"ers")
    assert incremental.digest() == hashlib.sha256(b"tapers").digest()


def test_mac_is_keyed_blake2b() -> None:
    key = bytes(range(32))
    assert digests.mac(key, b"body") == hashlib.blake2b(b"body", key=key).hexdigest()
    assert digests.mac(key, b"body") != digests.mac(bytes(32), b"body")
    assert digests.mac(key, b"body") != digests.mac(key, b"Body")


def test_same() -> None:
    assert digests.same("ab", "ab")
    assert not digests.same("ab", "ac")
    assert not digests.same("ab", "abc")
