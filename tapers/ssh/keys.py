"""ed25519 key pairs: one per project (login), one per machine (host key)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tapers.errors import SshError


@dataclass(frozen=True)
class KeyPair:
    private: bytes  # OpenSSH private key format
    public: str  # "ssh-ed25519 AAAA... comment"


def generate(comment: str) -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private=private, public=f"{public.decode()} {comment}")


def ensure_project_key(private_path: Path, public_path: Path, comment: str) -> str:
    """The project's login key (public line), generated on first use."""
    if private_path.is_file() and public_path.is_file():
        return public_path.read_text().strip()
    if private_path.exists():
        raise SshError(
            f"`{public_path}` is missing beside the project key `{private_path}`",
            hint=f"delete {private_path} and run `tapers up`: tapers generates a new key and authorizes it",
        )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pair = generate(comment)
    tmp = private_path.with_name(private_path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pair.private)
    public_path.write_text(pair.public + "\n")
    os.replace(tmp, private_path)
    return pair.public


def same_key(a: str | None, b: str | None) -> bool:
    """Compare two public key lines by type and key material, ignoring comments."""
    if not a or not b:
        return False
    return a.split()[:2] == b.split()[:2]
