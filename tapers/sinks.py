"""Where values leave tapers for a file another program parses (an LXC config, an
ssh_config, an Ansible inventory, /etc/hosts, an nftables rule): each format's one
writer checks here first. A control character can start a new line (a new config key,
a new host, a new rule) in every one of these formats, so it is always refused; quoting
and escaping is each format's own and lives with it.
"""

from __future__ import annotations

from tapers.errors import UnsafeValueError


def is_control(char: str) -> bool:
    """C0 and C1 controls, the Unicode line and paragraph separators (Python's `splitlines`
    breaks lines there: a reader of what tapers wrote may) and lone surrogates (bytes that
    weren't UTF-8): as the Taperfile's own check (taperfile/units.py CONTROL)."""
    code = ord(char)
    return code < 32 or 127 <= code <= 159 or code in (0x2028, 0x2029) or 0xD800 <= code <= 0xDFFF


def has_control(value: str) -> bool:
    return any(map(is_control, value))


def plain(value: object, what: str, where: str, forbidden: str = "") -> str:
    """`value` as text, refused when it has a control character or one of `forbidden`."""
    text = str(value)
    bad = next((c for c in text if is_control(c) or c in forbidden), None)
    if bad is not None:
        raise UnsafeValueError(
            f"{where}: {what} {text!r} has the character {bad!r}, which would change the meaning of what tapers "
            "writes there; refused",
            hint="rename or move what has that character (file and folder names included) and try again",
        )
    return text
