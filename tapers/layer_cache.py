"""The provisioning cache: a new machine's files after each of its first steps, kept so that
the next machine made from the same box with the same steps starts there and runs only
what comes after.

A machine's steps form a chain of keys: the box, then each step's fingerprint in turn (an
ansible step's also names the machine, which the play's inventory calls it by). The chain
stops at the first step that can't be kept (`run: always`, `cache: false`); `run: never`
steps, which `up` doesn't run, are not in it. A layer is what the machine wrote over what
it was made from (the box, or a cached layer), so a layer may stand on others (`below`).

    <TAPERS_HOME>/layers/<key>/meta.json   what it holds, what it stands on, how long it took
    <TAPERS_HOME>/layers/<key>/disk/       the files (owners as in the box)
    <TAPERS_HOME>/layers/.incoming-<pid>-<key>/   being written: never used; removed once its writer is gone

A layer appears whole (a rename) or not at all; one whose writer was killed is never read.
Layers are shared by every project of the same person (root's cache is root's); they are
pruned least recently used first, never while a machine stands on them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from tapers import paths
from tapers.processes import alive

if TYPE_CHECKING:
    from tapers.taperfile.machine import Machine, Step

FORMAT = 1
DEFAULT_MAX_SIZE = 20 * 1024**3
MAX_STACK = 16  # layers a machine stands on: overlayfs' options hold a page (each layer's path is in them)
_KEY_LENGTH = 32  # hex digits of a SHA-256
_INCOMING = ".incoming-"
_TRASH = ".trash-"


def _remove_files(folder: Path) -> None:
    """Layers of root's machines (a backend gives its own way: Backend.remove_files)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


class Link(NamedTuple):
    """One step of a machine's chain: the layer key that holds the machine after it."""

    step: int  # the step's number in `provision:`
    key: str


class Layer(NamedTuple):
    key: str
    folder: Path
    below: tuple[str, ...]  # the layers it stands on, the nearest first
    steps: tuple[str, ...]  # what ran to make it, from the box (as users read them)
    seconds: float  # how long those steps took
    size: int  # bytes of its own files
    box: str
    used: float  # when a machine was last made from it (or it was made)
    scope: str = "liblxc"  # the backend that made it (Backend.layer_scope)

    @property
    def disk(self) -> Path:
        return self.folder / "disk"


def folder() -> Path:
    return paths.tapers_home() / "layers"


@contextmanager
def locked(shared: bool) -> Iterator[None]:
    """Shared while a machine is being made from layers (until its record names them);
    exclusive while layers are pruned."""
    import fcntl

    root = _own_folder()
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cacheable(step: Step) -> bool:
    return step.run == "once" and step.cache


def shape(machine: Machine) -> list[object]:
    """The machine's settings that reach into what its steps do (its hostname, its kind, its
    networks, where folders are mounted in it, raw engine keys): a layer made under other
    ones is another layer. (Not the synced folders' host paths: projects share layers.)"""
    return [machine.hostname, machine.privileged, machine.nesting, list(machine.private_ips),
            [[synced.guest, synced.readonly] for synced in machine.synced], machine.raw]


def chain(box_tree: str, machine: Machine, fingerprints: dict[str, str], scope: str = "liblxc",
          unresolved: frozenset[str] = frozenset()) -> list[Link]:
    """The keys of the layers that would hold `machine` after each of its first steps, made
    by the backend whose layers are in `scope`. It ends before a step that can't be kept,
    and before one whose inputs can't all be told (`unresolved`: their keys)."""
    from tapers.digests import sha256

    root = ["tapers layer", FORMAT, box_tree, scope, shape(machine)]
    key = sha256(json.dumps(root, sort_keys=True, default=str).encode()).hexdigest()[:_KEY_LENGTH]
    links = []
    for step in machine.provision:
        if step.run == "never":
            continue
        if not cacheable(step) or step.key not in fingerprints or step.key in unresolved:
            break
        named = machine.name if step.kind == "ansible" else ""  # a play targets hosts by name
        key = sha256(json.dumps([key, fingerprints[step.key], named]).encode()).hexdigest()[:_KEY_LENGTH]
        links.append(Link(step.index, key))
    return links


def find(key: str) -> Layer | None:
    """The layer `key`, when it is whole and every layer it stands on is there too."""
    layer = _read(folder() / key)
    if layer is None or any(_read(folder() / below) is None for below in layer.below):
        return None
    return layer


def longest(links: list[Link]) -> tuple[int, Layer] | None:
    """How many of the chain's steps the cache holds (the longest prefix), and that layer."""
    for count in range(len(links), 0, -1):
        layer = find(links[count - 1].key)
        if layer is not None:
            return count, layer
    return None


def stack(layer: Layer) -> tuple[str, ...]:
    """The keys a machine made from `layer` stands on, the top one first."""
    return (layer.key, *layer.below)


def touch(keys: tuple[str, ...]) -> None:
    """A machine was made from these: they are the last to be pruned."""
    for key in keys:
        try:
            os.utime(folder() / key / "meta.json")
        except OSError:
            pass


def key_of(disk: Path) -> str:
    """The key of the layer whose files `disk` is (published, or being written by `publish`)."""
    return disk.parent.name.rpartition("-")[2]  # KEY/disk or .incoming-PID-KEY/disk


def publish(key: str, below: tuple[str, ...], steps: tuple[str, ...], seconds: float, box: str,
            fill: Callable[[Path], int], scope: str = "liblxc",
            remove_files: Callable[[Path], None] = _remove_files) -> tuple[Layer | None, bool]:
    """Make layer `key`: `fill(disk)` writes its files into the new folder `disk` and returns
    their size. It appears whole (written to disk first) or not at all. The layer, and
    whether it is the one written here (not another tapers' made meanwhile).
    `remove_files`: the backend's way to remove machine files (Backend.remove_files)."""
    root = _own_folder()
    if (root / key).is_dir():
        found = find(key)
        if found is not None:
            return found, False
        _remove(root / key, remove_files)  # what it stood on is gone (a prune killed half-way): made again
    remove_abandoned(remove_files)
    work = root / f"{_INCOMING}{os.getpid()}-{key}"
    _remove(work, remove_files)
    work.mkdir(mode=0o700)
    try:
        size = fill(work / "disk")
        meta = {"format": FORMAT, "key": key, "below": list(below), "steps": list(steps), "seconds": round(seconds, 1),
                "size": size, "box": box, "scope": scope, "made": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _sync(work)
        try:
            os.rename(work, root / key)
        except OSError:  # made by another tapers at the same time: theirs is as good
            _remove(work, remove_files)
            return find(key), False
    except BaseException:
        _remove(work, remove_files)
        raise
    return find(key), True


def _sync(item: Path) -> None:
    """What the layer holds is on disk before it is published (a power cut can't leave a
    layer that looks whole with empty files)."""
    import ctypes

    fd = os.open(item, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


def list_layers() -> list[Layer]:
    root = folder()
    if not root.is_dir():
        return []
    found = [_read(item) for item in root.iterdir() if not item.name.startswith(".")]
    return sorted((layer for layer in found if layer is not None), key=lambda layer: layer.used)


def prune(max_size: int, in_use: Callable[[], set[str]], scope: str = "liblxc",
          drop: Callable[[str], None] = lambda key: None,
          remove_files: Callable[[Path], None] = _remove_files) -> list[Layer]:
    """Remove the least recently used layers of `scope` (the backend in use: another's
    machines may stand on its own) that no machine stands on (`in_use`, asked once no
    machine is being made from layers) until the cache holds at most `max_size` bytes, and
    the layers that stood on a removed one; 0 removes all. `drop(key)` removes what the
    backend keeps of a layer, once it is out of sight (Backend.drop_layer). The removed."""
    if max_size and sum(layer.size for layer in list_layers()) <= max_size:
        return []
    with locked(shared=False):
        return _prune(max_size, in_use(), scope, drop, remove_files)


def _prune(max_size: int, in_use: set[str], scope: str, drop: Callable[[str], None],
           remove_files: Callable[[Path], None]) -> list[Layer]:
    remove_abandoned(remove_files)
    layers = list_layers()
    total = sum(layer.size for layer in layers)
    removed: list[Layer] = []

    def remove(layer: Layer) -> None:
        nonlocal total
        _remove(layer.folder, remove_files)  # out of sight first: a tapers killed now leaves nothing usable
        removed.append(layer)
        total -= layer.size
        from tapers.errors import TapersError

        try:
            drop(layer.key)
        except (TapersError, OSError):  # what the backend keeps of it stays: never used again
            pass

    for layer in layers:
        if max_size and total <= max_size:  # (0: all of them, sizes a backend can't tell included)
            break
        if layer.key in in_use or layer in removed or layer.scope != scope:
            continue
        remove(layer)
        for other in layers:  # nothing can stand on them any more
            if layer.key in other.below and other.key not in in_use and other not in removed and other.scope == scope:
                remove(other)
    return removed


def remove_abandoned(remove_files: Callable[[Path], None] = _remove_files) -> None:
    """Folders left by a tapers that was killed while writing a layer (or removing one)."""
    root = folder()
    if not root.is_dir():
        return
    for item in root.iterdir():
        if item.name.startswith(_TRASH):
            _remove(item, remove_files)
        elif item.name.startswith(_INCOMING):
            pid = item.name.removeprefix(_INCOMING).partition("-")[0]
            if pid.isdigit() and not alive(int(pid)):
                _remove(item, remove_files)


def _read(item: Path) -> Layer | None:
    name = item.name
    if len(name) != _KEY_LENGTH or any(c not in "0123456789abcdef" for c in name):
        return None
    try:
        meta_path = item / "meta.json"
        meta = json.loads(meta_path.read_text())
        used = meta_path.stat().st_mtime
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != name \
                or not (item / "disk").is_dir() or not all(isinstance(meta.get(k), list) for k in ("below", "steps")):
            return None
        return Layer(name, item, tuple(str(k) for k in meta["below"]), tuple(str(s) for s in meta["steps"]),
                     float(meta["seconds"]), int(meta["size"]), str(meta["box"]), used, str(meta.get("scope", "liblxc")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
        return None


def _own_folder() -> Path:
    """The cache's folder, reachable by its owner only: its files keep the machines' owners
    and modes (setuid programs among them), which no one else on the host may run."""
    import stat

    from tapers.errors import CacheError

    root = folder()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise CacheError(f"{root} is not a folder of yours (a link, or someone else's): the provisioning cache "
                         "is not kept there", hint="remove it, or set TAPERS_HOME to a folder of yours")
    os.chmod(root, 0o700)
    return root


def _remove(item: Path, remove_files: Callable[[Path], None]) -> None:
    """Out of sight at once (a rename), then deleted."""
    if not item.exists() and not item.is_symlink():
        return
    trash = item
    if not item.name.startswith(_TRASH):
        trash = item.with_name(f"{_TRASH}{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(item, trash)
        except OSError:
            trash = item
    remove_files(trash)  # what can't go now is out of sight, never used, and tried again by the next prune
