"""Where values leave tapers for a file another program parses (an LXC config, an
ssh_config, an Ansible inventory, /etc/hosts, an nftables rule): each format's one
writer checks here first. A control character can start a new line (a new config key,
a new host, a new rule) in every one of these formats, so it is always refused; quoting
and escaping is each format's own and lives with it.
"""

from __future__ import annotations

from tapers.errors import UnsafeValueError


# Characters that have no business in a value written on one line: C0 and C1 controls
# (newline, tab, NUL, ESC...), DEL, the Unicode line and paragraph separators (Python's
# `splitlines` breaks lines there: a reader of what tapers wrote may), and lone surrogates
# (bytes that weren't UTF-8). A pattern, compiled when first used (re keeps it): compiling
# it costs every command that never checks a value 0.6 ms. The Taperfile's checks use it too.
CONTROL = "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]"


def has_control(value: str) -> bool:
    return _first_control(value) is not None


def _first_control(value: str) -> str | None:
    import re

    found = re.search(CONTROL, value)
    return found.group() if found else None


def plain(value: object, what: str, where: str, forbidden: str = "") -> str:
    """`value` as text, refused when it has a control character or one of `forbidden`."""
    text = str(value)
    bad = _first_control(text)
    if forbidden:
        bad = next((c for c in text if c in forbidden or c == bad), None)
    if bad is not None:
        raise UnsafeValueError(
            f"{where}: {what} {text!r} has the character {bad!r}, which would change the meaning of what tapers "
            "writes there; refused",
            hint="rename or move what has that character (file and folder names included) and try again",
        )
    return text
