"""Sizes as users write them (512M, 1G, 256Mi) and back."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])(i?B?|B)?\s*$", re.IGNORECASE)
_FACTORS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: object) -> int:
    """Parse "512M" / "1G" / "256Mi" into bytes; K, M, G are binary (as in Docker and LXC)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512M or 1G")
    if isinstance(value, int):
        raise ValueError(f"{value} has no unit: write it with K, M or G, e.g. {value}M")
    if not isinstance(value, str):
        raise ValueError("expected a size such as 512M or 1G")
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"`{value}` is not a size: use a number with K, M or G, e.g. 512M or 1G")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * _FACTORS[unit])


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        factor = _FACTORS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit in ("G", "M", "K"):
        if size >= _FACTORS[unit]:
            return f"{size / _FACTORS[unit]:.1f}{unit}"
    return f"{size}B"


def human_size(size: float) -> str:
    """For reading, not for config: 20.2M, 512B."""
    for unit in ("T", "G", "M", "K"):
        if size >= _FACTORS[unit]:
            return f"{size / _FACTORS[unit]:.1f}{unit}"
    return f"{int(size)}B"
