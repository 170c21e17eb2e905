"""What a provisioner may do to a machine (Guest), and the Provisioner interface."""

from __future__ import annotations

import json
import os
import stat
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from tapers import digests
from tapers.errors import ProvisionError
from tapers.taperfile.machine import Step

if TYPE_CHECKING:
    from tapers.host_folders import Sharer


class StepFailed(Exception):
    """The step ran and failed (`why`: e.g. "failed with exit code 3")."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class RebootStarted(Exception):
    """The step finished and the guest is going down for a reboot."""


class Guest(Protocol):
    machine: str
    root: Path  # the project folder: step paths are relative to it
    user: str  # the login user
    home: str  # its home folder in the guest
    hidden_from_plays: tuple[Path, ...]  # host folders machines can write elsewhere: out of a play's reach

    def run(self, command: str) -> int:
        """Run a shell command as the login user, streaming its output; return its exit code."""

    def capture(self, command: str) -> tuple[int, str]:
        """Run a command quietly; return its exit code and stdout."""

    def put_bytes(self, data: bytes, remote: str, mode: int) -> None: ...

    def put(self, source: BinaryIO, remote: str, mode: int) -> None: ...

    def mkdir(self, remote: str, mode: int = 0o755) -> None: ...

    def run_play(self, argv: list[str], work: Path, hidden: tuple[Path, ...], env: dict[str, str]) -> int:
        """Run a play's program on the host, streaming its output like a guest command's: with
        the play's copy `work` where the project is and the `hidden` folders out of its reach
        (play_ns), under sudo as the user who ran sudo."""

    def check_play(self, step: Step, inputs: Inputs) -> None:
        """Raise unless the person running tapers approved the step with exactly these
        inputs (an ansible play: it runs on this host)."""

    def play_folder(self) -> AbstractContextManager[tuple[Path, Path]]:
        """A folder of tapers' own (0700, removed after), and in it an Ansible inventory of the
        project's machines (with the known hosts and the key it names)."""


Inputs = dict[str, str]  # what a step reads or is given, by name -> a short hash of it
UNRESOLVED = "?"  # an input name starting so: something a step reads that can't be told statically


class Provisioner(Protocol):
    kind: str

    def inputs(self, step: Step, root: Path) -> Inputs:
        """Exactly what can change what `run` does: files by their path (relative to the
        project when in it), settings by their key."""

    def run(self, step: Step, guest: Guest) -> None:
        """Do the step; raise StepFailed when it fails."""

    def check_host(self) -> None:
        """Raise a TapersError when the host lacks what this kind needs."""


def digest(value: Any) -> str:
    """A stable hash of JSON-able data."""
    return digests.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def short(value: Any) -> str:
    """A hash short enough to keep one per input in a machine's record (to tell what changed)."""
    return digest(value)[:16]


def shown_path(root: Path, path: Path) -> str:
    """A path as an input's name: relative to the project when in it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def tree_inputs(root: Path, path: Path, links: list[str] | None = None) -> Inputs:
    """A file, or every regular file below a folder, as inputs (content and executable bit);
    the links below it, not followed, added to `links` when given (by the same names)."""
    name = shown_path(root, path)
    found: list[str] | None = [] if links is not None else None
    inputs = {(f"{name}/{rel}" if rel else name): ("x" if executable else "-") + content[:15]
              for rel, executable, content in tree_digest(path, found)}
    if links is not None and found:
        links += [f"{name}/{rel}" for rel in found]
    return inputs


def settings_inputs(options: dict[str, Any], keys: tuple[str, ...]) -> Inputs:
    """The step's settings among `keys`, each an input of its own."""
    return {key: short(options[key]) for key in keys if key in options}


def step_file(root: Path, written: str, what: str) -> Path:
    """A step's file (`path`, `source`, `playbook`) as the host path to read, checked: it must
    be a regular file or a folder, and not in a folder no machine may see (the same rule as
    synced folders: system folders, homes' dot-folders...). tapers reads it as root, and
    what it reads goes into a machine."""
    path = refuse_hidden(root, written, what)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ProvisionError(f"{what} `{written}` can't be read: {exc.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ProvisionError(f"{what} `{written}` is not a regular file or a folder (a device, a pipe...); refused")
    return path


def refuse_hidden(root: Path, written: str, what: str) -> Path:
    """The step file's real path, refused when it is in a folder no machine may see (whether
    or not the file exists), or (root acting for someone: sudo) one that person may not
    read: root reads it, and the machine gets it."""
    from tapers.host_folders import refusal, sharer

    try:
        path = (root / written).resolve()
    except (RuntimeError, OSError, ValueError) as exc:  # (a loop of links)
        raise ProvisionError(f"{what} `{written}` has no real path ({exc})") from None
    why = refusal(path)
    person = sharer(root) if why is None and os.geteuid() == 0 and path.exists() and root.is_dir() else None
    if person is not None:
        why = unreadable_by(person, path)
    if why is not None:
        raise ProvisionError(f"{what} `{written}` can't be given to a machine: {why}",
                             hint="keep provisioning files in the project folder")
    return path


def unreadable_by(person: Sharer, path: Path, fd: int | None = None) -> str | None:
    """Why `person`, for whom root acts, couldn't read the file or folder at `path` (open at
    `fd`, when given) themselves; None: they could. Root reads it, and the machine gets it."""
    from tapers.project_files import may_read

    opened = os.open(path, os.O_PATH | os.O_CLOEXEC) if fd is None else fd
    try:
        if may_read(opened, os.fstat(opened), person.uid, person.gid, top=person.project):
            return None
    finally:
        if fd is None:
            os.close(opened)
    return f"uid {person.uid}, for whom tapers runs here, may not read it"


MAX_SCRIPT = 16 * 1024**2  # bytes of a shell step's script


def open_step_file(path: Path, what: str) -> int:
    """An fd of a step file checked by `step_file`, opened without following any link: a
    part of its path swapped for a link since the check is refused, not read."""
    from tapers.host_folders import open_no_links

    try:
        return open_no_links(path)
    except OSError as exc:
        raise ProvisionError(
            f"{what} {path} changed since it was checked (a part of its path is now a link, or it is gone): "
            f"{exc.strerror}; refused"
        ) from None


def read_step_file(path: Path, what: str, limit: int = MAX_SCRIPT) -> bytes:
    with os.fdopen(open_step_file(path, what), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ProvisionError(f"{what} {path} is not a regular file; refused")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ProvisionError(f"{what} {path} is larger than {limit // 1024**2} MiB; refused")
    return data


def file_digest(path: Path) -> str:
    """The hash of a regular file's content, opened without following a link at its name or
    blocking on a FIFO (something swapped in since it was listed is not read)."""
    digest = digests.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ProvisionError(f"{path} is not a regular file; refused")
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(path: Path, links: list[str] | None = None) -> list[tuple[str, bool, str]]:
    """(relative path, executable?, content hash) of a file or of every regular file below a
    folder (links and special files are not followed or read; the links' relative paths are
    added to `links` when given)."""
    if path.is_file():
        return [("", bool(path.stat().st_mode & 0o111), file_digest(path))]
    entries = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        if links is not None:  # a link to a folder is listed with the folders, not walked
            links += [str((Path(folder) / name).relative_to(path)) for name in dirs
                      if os.path.islink(Path(folder) / name)]
        for name in sorted(files):
            item = Path(folder) / name
            st = item.lstat()
            if stat.S_ISREG(st.st_mode):
                entries.append((str(item.relative_to(path)), bool(st.st_mode & 0o111), file_digest(item)))
            elif links is not None and stat.S_ISLNK(st.st_mode):
                links.append(str(item.relative_to(path)))
    return entries
