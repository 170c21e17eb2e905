"""`tapers cache list|prune|clear`: the provisioning cache, where new machines start from
the files earlier machines had after the same steps (tapers/layer_cache.py)."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from tapers.cli import output
from tapers.cli.common import JsonFlag

cache_app = typer.Typer(no_args_is_help=True, help="The provisioning cache: list, prune or clear it.")


@cache_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """The cached layers, least recently used first, with the steps each holds."""
    from tapers import layer_cache
    from tapers.taperfile.units import human_size
    from tapers.user_config import cache_max_size

    layers = layer_cache.list_layers()
    rows = [{"layer": layer.key, "box": layer.box, "steps": list(layer.steps), "seconds": layer.seconds,
             "size": layer.size, "below": list(layer.below), "where": layer.scope,
             "used": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(layer.used))} for layer in layers]
    columns = ["LAYER", "BOX", "STEPS", "LAST STEP", "SAVES", "SIZE", "USED"]
    output.listing(rows, as_json, "the provisioning cache is empty", columns, lambda row: [
        row["layer"][:12], row["box"], str(len(row["steps"])), row["steps"][-1] if row["steps"] else "",
        f"{row['seconds']:.0f} s", human_size(row["size"]), row["used"][:16].replace("T", " ")])
    if not as_json:
        total = sum(layer.size for layer in layers)
        output.say(f"{len(layers)} layer(s), {human_size(total)} of at most {human_size(cache_max_size())} "
                   f"({layer_cache.folder()})")


@cache_app.command("prune")
def prune(
    max_size: Annotated[Optional[str], typer.Option("--max-size", help="keep at most this much, e.g. 5G "
                                                    "(default: the configured bound)")] = None,
) -> None:
    """Remove the least recently used layers until the cache fits (machines' layers stay)."""
    from tapers.user_config import cache_max_size

    bound = cache_max_size() if max_size is None else _size(max_size)
    _prune(bound)


@cache_app.command("clear")
def clear() -> None:
    """Remove every layer no machine stands on."""
    _prune(0)


def _prune(bound: int) -> None:
    from tapers import layer_cache
    from tapers.backend import default_backend
    from tapers.engine.caching import in_use
    from tapers.taperfile.units import human_size

    backend = default_backend()
    removed = layer_cache.prune(bound, lambda: in_use(backend), backend.layer_scope(), backend.drop_layer,
                                backend.remove_files)
    layer_cache.remove_abandoned(backend.remove_files)
    left = layer_cache.list_layers()
    output.say(f"removed {len(removed)} layer(s), {human_size(sum(layer.size for layer in removed))}; "
               f"{len(left)} left, {human_size(sum(layer.size for layer in left))}")


def _size(text: str) -> int:
    from tapers.errors import UsageError
    from tapers.taperfile.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--max-size: {exc}", hint="e.g. --max-size 5G") from None
