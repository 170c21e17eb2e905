"""Key pairs: made by ssh-keygen where it is installed, else by the cryptography library;
either way an OpenSSH private key whose public half is the line tapers pins."""

from __future__ import annotations

import shutil

import pytest
from cryptography.hazmat.primitives import serialization

from tapers.errors import SshError
from tapers.ssh import keys


def _public_of(private: bytes) -> str:
    key = serialization.load_ssh_private_key(private, password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("keygen", [True, False], ids=["ssh-keygen", "cryptography"])
def test_a_pair_is_an_openssh_key_and_its_public_line(keygen, monkeypatch) -> None:
    if keygen and shutil.which("ssh-keygen") is None:
        pytest.skip("no ssh-keygen on this host")
    if not keygen:
        monkeypatch.setattr(shutil, "which", lambda name: None)
    pair = keys.generate("tapers-shop-web")
    assert pair.private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pair.public.startswith("ssh-ed25519 ") and pair.public.endswith(" tapers-shop-web")
    assert keys.same_key(_public_of(pair.private), pair.public)
    assert not keys.same_key(keys.generate("tapers-shop-web").public, pair.public)  # a new key each time


def test_a_failing_ssh_keygen_is_an_error(tmp_path, monkeypatch) -> None:
    broken = tmp_path / "ssh-keygen"
    broken.write_text("#!/bin/sh\necho 'no entropy' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(broken))
    with pytest.raises(SshError, match="no entropy"):
        keys.generate("tapers-shop-web")
