"""Build a box from a recipe: debootstrap, then the guest preparation (file edits, see prepare.py).

The build happens in a temporary folder beside the cache and is renamed into
place only when finished (a crash leaves no half box), under a per-box lock (two
builds at once: the second waits and then finds the box ready).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import shutil
import subprocess
import time
from pathlib import Path

from tapers import paths
from tapers.boxes.cache import Box, box_folder, find_box, publish, slug, work_dir
from tapers.boxes.prepare import BoxUser, prepare_rootfs
from tapers.boxes.recipe import Recipe
from tapers.errors import BoxError, HostError, InvalidBoxError
from tapers.events import Reporter
from tapers.rootfs import Root


def ensure_box(recipe: Recipe, reporter: Reporter, force: bool = False) -> tuple[Box, bool]:
    """The cached box for `recipe`, building it when missing (or when `force`).
    Returns (box, built_now)."""
    from tapers import locks

    existing = find_box(recipe.name)
    if existing and not force:
        return existing, False
    def waiting() -> None:
        reporter.line("box", f"another tapers is building `{recipe.name}`; waiting for it")

    with locks.held(paths.box_build_lock(slug(recipe.name)), on_wait=waiting):
        existing = find_box(recipe.name)
        if existing and not force:  # built by the tapers we waited for
            return existing, False
        return _build(recipe, reporter), True


def _build(recipe: Recipe, reporter: Reporter) -> Box:
    target_parent = box_folder(recipe.name)
    target_parent.mkdir(parents=True, exist_ok=True)
    for stale in target_parent.glob(".build-*"):  # left by a crashed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d.%H%M%S")
    with work_dir(target_parent, f".build-{version}-") as work:
        rootfs = work / "rootfs"
        _debootstrap(recipe, rootfs, reporter)
        reporter.status("box", "preparing the guest (user, sshd, systemd units)")
        with Root(rootfs, f"box `{recipe.name}`", InvalidBoxError) as root:
            user = prepare_rootfs(root, recipe.model.user.name, recipe.model.user.uid)
        identity = hashlib.sha256(f"{recipe.text}\0{version}".encode()).hexdigest()
        meta = box_metadata(recipe.name, version, user, f"recipe {recipe.path.name}", identity)
        box = publish(work, meta, target_parent / version)
    reporter.line("box", f"built `{recipe.name}` version {version} in {time.monotonic() - started:.0f} s")
    return box


def _bootstrap_command(recipe: Recipe, rootfs: Path) -> list[str]:
    """debootstrap as root; as a normal user's box (in their id map, where no device node
    can be made and nothing mounted), mmdebstrap, which can skip both."""
    spec = recipe.model.debootstrap
    if paths.in_user_namespace():
        if shutil.which("mmdebstrap") is None:
            raise HostError("mmdebstrap is not installed: a normal user's boxes are built with it",
                            hint="an admin runs: apt-get install mmdebstrap")
        return ["mmdebstrap", "--mode=root", "--skip=output/mknod,chroot/mount", f"--variant={spec.variant}",
                f"--include={','.join(spec.packages)}", spec.suite, str(rootfs), spec.mirror]
    if shutil.which("debootstrap") is None:
        raise HostError("debootstrap is not installed: it is needed to build boxes", hint="apt-get install debootstrap")
    cache = paths.debootstrap_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    return ["debootstrap", f"--variant={spec.variant}", f"--include={','.join(spec.packages)}", f"--cache-dir={cache}",
            spec.suite, str(rootfs), spec.mirror]


def _debootstrap(recipe: Recipe, rootfs: Path, reporter: Reporter) -> None:
    spec = recipe.model.debootstrap
    argv = _bootstrap_command(recipe, rootfs)
    reporter.line("box", f"building `{recipe.name}`: {argv[0]} {spec.suite} from {spec.mirror} (about a minute)")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.rstrip()
        if not line:
            continue
        tail = (tail + [line])[-15:]
        reporter.status("box", line)
    if process.wait() != 0:
        log = "\n".join(f"    {line}" for line in tail)
        raise BoxError(
            f"{argv[0]} failed for box `{recipe.name}` (exit code {process.returncode}):\n{log}",
            hint=f"is {spec.mirror} reachable? Try again; nothing was added to the cache",
        )


def box_metadata(name: str, version: str, user: BoxUser, source: str, identity: str) -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "id": identity[:16],
        "architecture": platform.machine(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "user": user.as_meta(),
    }
