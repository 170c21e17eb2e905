"""`tapers box ...`: the local box cache."""

from __future__ import annotations

import subprocess
from typing import Annotated, Optional

import typer

from tapers.cli import output
from tapers.errors import BoxError, StateError
from tapers.taperfile.machine import split_box_ref

box_app = typer.Typer(no_args_is_help=True, help="Build, list and remove cached boxes.")
READ_ONLY = (None, "list", "outdated")


@box_app.callback()
def _as_machines_root(ctx: typer.Context) -> None:
    """A normal user's boxes belong to their machines' ids: whatever changes or reads every
    file of them runs as root of the user's id map (see backend/liblxc/userns.py)."""
    from tapers import paths

    if ctx.invoked_subcommand not in READ_ONLY and paths.as_user():
        from tapers.backend.liblxc import userns

        userns.exec_tapers()


@box_app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="recipe name, e.g. debian/bookworm")],
    force: Annotated[bool, typer.Option("--force", help="build a new version even if one is cached")] = False,
    package: Annotated[
        Optional[list[str]], typer.Option("--package", help="a Debian package to add (repeat the option)")
    ] = None,
    box_name: Annotated[Optional[str], typer.Option("--name", help="the name of the box built (with --package)")] = None,
) -> None:
    """Build a box from one of the recipes shipped with tapers (optionally with more packages)."""
    from tapers.boxes.build import ensure_box
    from tapers.boxes.recipe import load_recipe

    recipe = load_recipe(name)
    if package or box_name:
        if not box_name:
            raise typer.BadParameter("a box with more packages needs its own name", param_hint="--name")
        recipe = recipe.customised(box_name, package or [])
    with output.ConsoleReporter() as reporter:
        box, built = ensure_box(recipe, reporter, force=force)
    if not built:
        output.say(f"box `{box.name}` version {box.version} is already in the cache ({box.path})")
        output.say("pass --force to build a new version")


@box_app.command("add")
def add(
    first: Annotated[str, typer.Argument(metavar="[NAME] SOURCE", help="the box's name, then a file, URL or catalog")],
    source: Annotated[Optional[str], typer.Argument(metavar="", show_default=False)] = None,
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="refuse the archive unless it has this checksum")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="catalogs: a version constraint, e.g. '~> 1.2'")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace the same name and version")] = False,
    from_rootfs: Annotated[bool, typer.Option("--from-rootfs", help="the archive is a plain root filesystem")] = False,
) -> None:
    """Add a box: an archive (tapers, vagrant-lxc, LXC image; a file or a URL) under NAME, or
    the newest release of a Vagrant-style catalog (its name comes from the catalog)."""
    from tapers.boxes.importer import add_box

    name, where = (first, source) if source else (None, first)
    with output.ConsoleReporter() as reporter:
        box = add_box(name, where, reporter, sha256=sha256, force=force, from_rootfs=from_rootfs, version=version)
    output.say(f"box `{box.ref}` is ready: `box: {box.name}` in a Taperfile uses it")


@box_app.command("outdated")
def outdated() -> None:
    """Boxes added from a catalog that has a newer version."""
    for line in _catalog_news():
        output.say(line[1])


@box_app.command("update")
def update(name: Annotated[Optional[str], typer.Argument(help="the box (default: every box from a catalog)")] = None) -> None:
    """Add the newest version of boxes added from a catalog (machines keep theirs until re-created)."""
    from tapers.boxes.importer import add_box

    with output.ConsoleReporter() as reporter:
        for box, _, release in _catalog_news(name):
            if release is not None:
                add_box(box.name, box.meta["catalog"], reporter, version=f"= {release.version}")


def _catalog_news(only: str | None = None) -> list[tuple]:
    """(newest cached box, a line for people, the newer release or None) per catalog box."""
    from tapers.boxes.cache import list_boxes
    from tapers.boxes.catalog import version_key
    from tapers.boxes.importer import newest_release
    from tapers.events import SilentReporter

    newest: dict = {}
    for box in list_boxes():
        if box.meta.get("catalog") and (only is None or box.name == only):
            if box.name not in newest or version_key(box.version) > version_key(newest[box.name].version):
                newest[box.name] = box
    if only and only not in newest:
        raise BoxError(f"no box `{only}` from a catalog in the cache", hint="`tapers box list` shows the cache")
    news = []
    for box in newest.values():
        release = newest_release(box.meta["catalog"], SilentReporter())
        if version_key(release.version) > version_key(box.version):
            news.append((box, f"{box.name}: {box.version} -> {release.version} (`tapers box update {box.name}`)", release))
        else:
            news.append((box, f"{box.name}: {box.version} is the newest", None))
    return news


@box_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """The boxes in the cache."""
    from tapers.boxes.cache import list_boxes

    boxes = list_boxes()
    used = _users()
    rows = [
        {
            "name": b.name,
            "version": b.version,
            "id": b.id,
            "digest": b.meta.get("digest", ""),
            "size": _size(b.rootfs),
            "source": b.meta.get("source", ""),
            "path": str(b.path),
            "used_by": used.get(b.id, []),
        }
        for b in boxes
    ]
    output.listing(
        rows,
        as_json,
        "no boxes cached; `tapers box build debian/bookworm` builds one (`tapers up` does it too)",
        ["name", "version", "size", "used by"],
        lambda r: [r["name"], r["version"], r["size"], ", ".join(r["used_by"]) or "-"],
    )


@box_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (NAME alone: every version)")],
    force: Annotated[bool, typer.Option("--force", help="remove even if machines use it")] = False,
) -> None:
    """Remove a box from the cache (refused while machines are made from it)."""
    from tapers.boxes.cache import list_boxes, remove_box

    box_name, version = split_box_ref(name)
    boxes = [b for b in list_boxes() if b.name == box_name and (not version or b.version == version)]
    if not boxes:
        raise BoxError(f"no box `{name}` in the cache", hint="`tapers box list` shows what is cached")
    used = _users()
    for box in boxes:
        users = used.get(box.id, [])
        if users and not force:
            raise StateError(
                f"box `{box.ref}` is used by {len(users)} machine(s): {', '.join(users)}",
                hint="destroy those machines first (their files live on top of the box), or pass --force",
            )
    for box in boxes:
        remove_box(box)
        output.say(f"removed box `{box.ref}`")


@box_app.command("prune")
def prune(dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go, remove nothing")] = False) -> None:
    """Remove old versions of boxes that no machine uses (the newest of each name stays)."""
    from tapers.boxes.cache import list_boxes, remove_box

    boxes = list_boxes()
    used = _users()
    newest = {b.name: b.version for b in boxes}  # list_boxes sorts by name, then version
    doomed = [b for b in boxes if b.version != newest[b.name] and not used.get(b.id)]
    for box in doomed:
        if dry_run:
            output.say(f"would remove `{box.ref}` ({_size(box.rootfs)})")
        else:
            remove_box(box)
            output.say(f"removed `{box.ref}`")
    if not doomed:
        output.say("nothing to prune: every cached box is the newest of its name or in use")


@box_app.command("verify")
def verify(name: Annotated[Optional[str], typer.Argument(help="NAME or NAME@VERSION (default: every box)")] = None) -> int:
    """Check cached boxes against the digest recorded when they entered the cache."""
    from tapers.boxes.cache import list_boxes, tree_digest_like
    from tapers.errors import ExitCode

    box_name, version = split_box_ref(name or "")
    boxes = [b for b in list_boxes() if not name or (b.name == box_name and (not version or b.version == version))]
    if name and not boxes:
        raise BoxError(f"no box `{name}` in the cache", hint="`tapers box list` shows what is cached")
    bad = 0
    for box in boxes:
        recorded = box.meta.get("tree")
        if not recorded:
            output.say(f"?    {box.ref}: no digest recorded (cached by an older tapers)")
            continue
        ok = tree_digest_like(box.rootfs, recorded) == recorded
        bad += not ok
        output.say(f"{'ok  ' if ok else 'BAD '} {box.ref}" + ("" if ok else ": its files changed since it was cached"))
    return int(ExitCode.INVALID) if bad else int(ExitCode.OK)


def _users() -> dict[str, list[str]]:
    """box id -> containers created from it (they need its files)."""
    from tapers.backend import default_backend
    from tapers.project import CONTAINER_PREFIX

    users: dict[str, list[str]] = {}
    for info in default_backend().list(prefix=CONTAINER_PREFIX):
        if info.box_id:  # also from a record this tapers can't use: the box stays
            users.setdefault(info.box_id, []).append(info.name)
    return users


def _size(path) -> str:
    """What the box's files take (`rootfs` is a link into the store: followed)."""
    result = subprocess.run(["du", "-shD", str(path)], capture_output=True, text=True)
    return result.stdout.split()[0] if result.returncode == 0 and result.stdout else "?"
