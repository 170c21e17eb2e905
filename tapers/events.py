"""How the engine tells the user what it is doing, without knowing how it is shown."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def line(self, subject: str, message: str) -> None:
        """A line worth keeping: `subject | message` (subject: a machine, `box`, ...)."""

    def status(self, subject: str, message: str) -> None:
        """Transient progress (the latest line of a long step); may be dropped."""


class SilentReporter:
    def line(self, subject: str, message: str) -> None:
        pass

    def status(self, subject: str, message: str) -> None:
        pass
