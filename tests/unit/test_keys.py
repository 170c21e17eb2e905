"""Key pairs: made by ssh-keygen where it is installed, else by the cryptography library;
either way an OpenSSH private key whose public half is the line tapers pins."""

from __future__ import annotations

import shutil

import pytest
from cryptography.hazmat.primitives import serialization

from tapers.ssh import keys


def _public_of(private: bytes) -> str:
    key = serialization.load_ssh_private_key(private, password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("keygen", [True, False], ids=["ssh-keygen", "cryptography"])
def test_a_pair_is_an_openssh_key_and_its_public_line(keygen, monkeypatch) -> None:
    if keygen and shutil.which("ssh-keygen") is None:
        pytest.skip("no ssh-keygen on this host")
    if keygen:  # made by ssh-keygen, not by the library it falls back to
        monkeypatch.setattr(keys, "_with_cryptography", lambda comment: pytest.fail("the library made the key"))
    else:
        monkeypatch.setattr(shutil, "which", lambda name, **_: None)
    pair = keys.generate("tapers-shop-web")
    assert pair.private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pair.public.startswith("ssh-ed25519 ") and pair.public.endswith(" tapers-shop-web")
    assert keys.same_key(_public_of(pair.private), pair.public)
    assert not keys.same_key(keys.generate("tapers-shop-web").public, pair.public)  # a new key each time


def test_a_run_folder_others_may_write_leaves_the_key_to_the_library(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o777)
    monkeypatch.setenv("TAPERS_RUN_DIR", str(run))
    pair = keys.generate("tapers-shop-web")
    assert keys.same_key(_public_of(pair.private), pair.public) and list(run.iterdir()) == []


def test_a_failing_ssh_keygen_leaves_it_to_the_library(tmp_path, monkeypatch) -> None:
    broken = tmp_path / "ssh-keygen"
    broken.write_text("#!/bin/sh\necho 'unknown key type ed25519' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name, **_: str(broken))
    pair = keys.generate("tapers-shop-web")
    assert keys.same_key(_public_of(pair.private), pair.public)


def test_ssh_keygen_is_looked_for_in_the_system_folders_only(tmp_path, monkeypatch) -> None:
    """A `ssh-keygen` early in the caller's PATH (a project folder, `.`) is never run."""
    planted = tmp_path / "ssh-keygen"
    planted.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran\nexit 1\n")
    planted.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    keys.generate("tapers-shop-web")
    assert not (tmp_path / "ran").exists()
    assert not list(tmp_path.glob("key-*")) and not list(tmp_path.glob("tmp*"))  # nothing made in $TMPDIR
