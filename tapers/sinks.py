"""Where values leave tapers for a file another program parses (an LXC config, an
ssh_config, an Ansible inventory, /etc/hosts, an nftables rule): each format's one
writer checks here first. A control character can start a new line (a new config key,
a new host, a new rule) in every one of these formats, so it is always refused; quoting
and escaping is each format's own and lives with it.
"""

from __future__ import annotations

from tapers.errors import UnsafeValueError


def is_control(char: str) -> bool:
    return ord(char) < 32 or ord(char) == 127


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
