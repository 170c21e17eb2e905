"""Sizes as users write them (512M, 1G, 256Mi) and back; values as messages quote them."""

from __future__ import annotations

import re

from tapers.sinks import CONTROL

# ASCII only: with re.IGNORECASE alone, [KMGT] would also match the Kelvin sign (U+212A).
_SIZE = r" *([0-9]+(?:\.[0-9]+)?) *([KMGT])(i?B?|B)? *"  # compiled when first used (re keeps it)
_FACTORS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

# No host tapers runs on has more; cgroup v1 keeps limits in a signed 64-bit count of bytes
# (rounded to pages), so nonsense sizes would wrap or be clamped. No limit: leave the key out.
MAX_SIZE = 16 * 1024**4

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def parse_size(value: object, maximum: int = MAX_SIZE) -> int:
    """Parse "512M" / "1G" / "256Mi" into bytes; K, M, G are binary (as in Docker and LXC)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512M or 1G")
    if isinstance(value, int):
        if 0 < value < 10**9:
            raise ValueError(f"{value} has no unit: write it with K, M or G, e.g. {value}M")
        raise ValueError(f"{shown(value)} is not a size: use a number with K, M or G, e.g. 512M or 1G")
    if not isinstance(value, str):
        raise ValueError("expected a size such as 512M or 1G")
    match = re.fullmatch(_SIZE, value, re.IGNORECASE | re.ASCII)
    if not match:
        raise ValueError(f"{shown(value)} is not a size: use a number with K, M or G, e.g. 512M or 1G")
    digits, unit = match.group(1), match.group(2).upper()
    if len(digits.partition(".")[0].lstrip("0")) > 15:  # more than any maximum, in any unit
        raise ValueError(f"{shown(value)} is too large: at most {format_size(maximum)}")
    from decimal import Decimal  # here: `tapers status` loads this module and never parses a size

    size = int(Decimal(digits) * _FACTORS[unit])
    if size > maximum:
        raise ValueError(f"{shown(value)} is too large: at most {format_size(maximum)}")
    return size


def shown(value: object, limit: int = 60) -> str:
    """A value quoted for a message: `like this`, control characters escaped, long ones cut."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"`{re.sub(CONTROL, _escape, text)}`"


def printable(text: str) -> str:
    """A message line with any control character in it escaped (nothing reaches a terminal raw)."""
    return re.sub(CONTROL, _escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


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
