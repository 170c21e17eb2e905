"""ed25519 key pairs: one per project (login), one per machine (host key)."""

import os
from typing import NamedTuple
from pathlib import Path

from tapers.errors import SshError


class KeyPair(NamedTuple):
    private: bytes  # OpenSSH private key format
    public: str  # "ssh-ed25519 AAAA... comment"


def generate(comment: str) -> KeyPair:
    """A new key pair: made by OpenSSH's ssh-keygen where it is installed (5 ms, against 25
    ms to load the cryptography library in a command that has no other use for it), else
    by that library."""
    import shutil

    keygen = shutil.which("ssh-keygen", path=SYSTEM_PATH)
    pair = _with_ssh_keygen(keygen, comment) if keygen else None
    return pair or _with_cryptography(comment)


SYSTEM_PATH = "/usr/bin:/bin"  # where ssh-keygen is looked for: never a folder from the caller's PATH


def _with_ssh_keygen(keygen: str, comment: str) -> KeyPair | None:
    """The pair ssh-keygen makes (None when it can't), in a folder of tapers' run folder
    (root's, or the user's own), not $TMPDIR: no one else can put anything in its place."""
    import subprocess
    import tempfile

    from tapers import paths

    run = paths.host_run_dir()
    try:
        run.mkdir(parents=True, exist_ok=True, mode=0o755)
        mine = run.stat()
        if mine.st_uid != os.geteuid() or mine.st_mode & 0o022:  # someone else could swap what it holds
            return None
        with tempfile.TemporaryDirectory(prefix="key-", dir=run) as folder:  # 0700
            path = Path(folder) / "key"
            done = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                                  stdin=subprocess.DEVNULL, capture_output=True, env={"PATH": SYSTEM_PATH})
            if done.returncode != 0:
                return None  # (an OpenSSH without ed25519, say: the library makes it)
            return KeyPair(private=path.read_bytes(), public=path.with_suffix(".pub").read_text().strip())
    except OSError:  # (a full disk, a read-only cache folder)
        return None


def _with_cryptography(comment: str) -> KeyPair:
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
    from tapers import project_files

    project_files.check_dir(private_path.parent, create=True)
    public = project_files.read_text(public_path)
    if os.path.lexists(private_path):
        if public is not None:
            project_files.read_text(private_path)  # only checks it: a link or someone else's file is refused
            return public.strip()
        raise SshError(
            f"`{public_path}` is missing beside the project key `{private_path}`",
            hint=f"delete {private_path} and run `tapers up`: tapers generates a new key and authorizes it",
        )
    pair = generate(comment)
    project_files.write(public_path, pair.public + "\n", 0o644)
    project_files.write(private_path, pair.private, 0o600)
    return pair.public


def same_key(a: str | None, b: str | None) -> bool:
    """Compare two public key lines by type and key material, ignoring comments."""
    if not a or not b:
        return False
    return a.split()[:2] == b.split()[:2]
