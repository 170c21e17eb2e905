"""Other processes, as tapers asks about them."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether a process `pid` exists (another user's counts: it exists)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
