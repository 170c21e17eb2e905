"""tapers: reproducible development environments in Linux containers."""

from __future__ import annotations

__version__ = "0.1.0"
