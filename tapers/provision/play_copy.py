"""The copy of the project an ansible step runs in: exactly the files the person approved.

ansible-playbook runs on this host, and machines can write the project folder. Run in the
project folder itself, a play would also load what no fingerprint covers (a plugin folder
Ansible finds on its own, a file behind a link, a task file named with `{{ }}`) and read
files while it runs, after they were checked: a machine could swap a template or a task
file mid-play. So the play runs with a private copy of the step's inputs that are in the
project, each read once without following links and checked against the hash that was
approved, mounted where the project is (play_ns); anything else of the project is not
there. Files outside the project (roles in ~/.ansible, an absolute roles_path) are read
where they are (engine/trust.py refuses them in a folder a machine can write).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from tapers import digests
from tapers.errors import ProvisionError
from tapers.provision.api import UNRESOLVED, Inputs, open_step_file, short, unreadable_by

if TYPE_CHECKING:
    from tapers.host_folders import Sharer

CHUNK = 1 << 20
MAX_COPY = 4 * 1024**3  # bytes of a play's files (a machine can grow a file while it is copied)


def copy_inputs(root: Path, found: Inputs, texts: set[str], target: Path, person: Sharer | None = None) -> int:
    """Copy the files of `found` that are in the project `root` into `target` (private, made
    here), each checked against its hash in `found`; `texts`: inputs hashed by their text
    (an ansible.cfg), the others by content and executable bit. Raises ProvisionError when
    one changed since it was hashed, when they add up to more than MAX_COPY, or when
    `person` (whom root acts for: the copy becomes theirs) could not read one themselves.
    The number of files copied."""
    copied, total = 0, 0
    for name, expected in sorted(found.items()):
        if name.startswith(UNRESOLVED) or name.startswith("/") or not expected:
            continue  # what can't be told, and files outside the project: read where they are
        if name in texts:
            data = _read(root / name, name, person)
            actual = short(data.decode(errors="surrogateescape"))
            write_new(target / name, data, 0o600)
            total += len(data)
        elif expected[:1] in ("x", "-"):  # a file by content and executable bit (tree_inputs)
            executable, content, size = _copy(root / name, target / name, MAX_COPY - total, person)
            actual = ("x" if executable else "-") + content[:15]
            total += size
        else:
            continue  # a setting of the step, or a collection outside the project
        if actual != expected:
            raise ProvisionError(f"{name} changed while the play was being prepared (a machine wrote the project "
                                 "folder?); not run", hint="`tapers plan` names what changed; read it, then `tapers trust`")
        copied += 1
    return copied


def copy_private(source: Path, target: Path, what: str, person: Sharer | None = None) -> None:
    """A project file the play is given by path (a vault password file) as a private, plain
    file: never one that runs (Ansible runs an executable password file, and this one is in
    a folder machines can write), nor one `person` couldn't read (the copy becomes theirs)."""
    fd = open_step_file(source, what)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ProvisionError(f"{what} {source} is not a regular file; refused")
        why = unreadable_by(person, source, handle.fileno()) if person is not None else None
        if why is not None:
            raise ProvisionError(f"{what} {source}: {why}; refused")
        if st.st_mode & 0o111:
            raise ProvisionError(
                f"{what} {source} is executable: ansible-playbook would run it on this host, and it is in the project "
                "folder, which machines can write; refused",
                hint="keep an executable password script outside the project folder (an absolute path), or make "
                "this one a plain file (chmod -x)")
        data = handle.read(CHUNK + 1)
    if len(data) > CHUNK:
        raise ProvisionError(f"{what} {source} is larger than 1 MiB; refused")
    write_new(target, data, 0o600)


def give(folder: Path, owner: tuple[int, int]) -> None:
    """What the private folder, made by root and now complete, holds, to the person the play
    runs as (nothing in it is followed: it holds no links, and no one else could write it).
    The folder itself stays root's, which they may only pass (0711): they can't rename what
    is in it (swap the copy for a link), and root never walks a folder of theirs."""
    for parent, dirs, files in os.walk(folder, topdown=False):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), *owner, follow_symlinks=False)
    os.chmod(folder, 0o711)


def _read(path: Path, name: str, person: Sharer | None) -> bytes:
    with os.fdopen(_open(path, name, person), "rb") as handle:
        return handle.read()


def _copy(source: Path, target: Path, room: int, person: Sharer | None) -> tuple[bool, str, int]:
    """Copy a regular file (opened without following links), hashing what is copied; at
    most `room` bytes. (executable?, hash, size)."""
    with os.fdopen(_open(source, str(source), person), "rb") as handle:
        executable = bool(os.fstat(handle.fileno()).st_mode & 0o111)
        digest, size = digests.sha256(), 0
        with os.fdopen(_create(target, 0o700 if executable else 0o600), "wb") as out:
            while chunk := handle.read(CHUNK):
                size += len(chunk)
                if size > room:
                    raise ProvisionError(f"the files of the play add up to more than {MAX_COPY // 1024**3} GiB "
                                         f"(at {source}); not copied, not run")
                digest.update(chunk)
                out.write(chunk)
    return executable, digest.hexdigest(), size


def _open(path: Path, name: str, person: Sharer | None) -> int:
    fd = open_step_file(path, f"a file of the play ({name})")
    why = "is not a regular file now" if not stat.S_ISREG(os.fstat(fd).st_mode) else None
    if why is None and person is not None:
        why = unreadable_by(person, path, fd)
    if why is not None:
        os.close(fd)
        raise ProvisionError(f"a file of the play ({name}): {why}; not run")
    return fd


def write_new(target: Path, data: bytes, mode: int) -> None:
    """A new file in the play's private folder (never one already there, nor through a link)."""
    with os.fdopen(_create(target, mode), "wb") as out:
        out.write(data)


def _create(target: Path, mode: int) -> int:
    """A new file in the private copy (its folders made as needed)."""
    for folder in [p for p in reversed(target.parents) if not p.exists()]:
        folder.mkdir(mode=0o700)
    return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
