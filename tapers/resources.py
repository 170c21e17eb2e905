"""Find the data folders shipped with tapers: box recipes and provisioning templates.

In an installed wheel they live in `tapers/_data/`; in a source checkout (or an
editable install) they are the top-level `boxes/` and `provisioners/` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """Return the folder for `kind` ("boxes" or "provisioners")."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tapers is installed without its `{kind}/` data folder")
