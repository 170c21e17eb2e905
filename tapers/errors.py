"""The one exception hierarchy of tapers, and the exit codes users rely on.

Every error a user can cause or meet is a `TapersError` with a message for
people and an optional hint saying what to do next. Only the CLI turns them
into output and an exit code (see `tapers.cli.main`).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INVALID = 3  # an invalid Taperfile or box
    SSH = 255  # `tapers ssh`: SSH itself failed (as OpenSSH says it)
    INTERRUPTED = 130


class TapersError(Exception):
    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(TapersError):
    """The command line asks for something that does not exist (e.g. an unknown machine)."""

    exit_code = ExitCode.USAGE


class TaperfileError(TapersError):
    """The Taperfile is missing, unreadable or invalid."""

    exit_code = ExitCode.INVALID

    def __init__(self, message: str, hint: str | None = None, problems: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems or []


class BoxError(TapersError):
    """A box is missing, broken, or could not be built."""


class CacheError(TapersError):
    """The provisioning cache can't give what was planned (a layer pruned meanwhile)."""


class InvalidBoxError(BoxError):
    exit_code = ExitCode.INVALID


class UnsafeValueError(TapersError):
    """A value that would change the meaning of the file or command it is written into
    (a newline in a config line, a quote in an inventory): refused where it is written."""

    exit_code = ExitCode.INVALID


class BackendError(TapersError):
    """The container engine refused or failed an operation."""


class SshError(TapersError):
    """A machine could not be reached or used over SSH."""


class SshFailed(SshError):
    """`tapers ssh -c` could not run the command: an exit code the command itself can't be
    taken for, as OpenSSH's."""

    exit_code = ExitCode.SSH


class HostKeyMismatch(SshError):
    """The machine presented a host key other than the pinned one."""


class ProvisionError(TapersError):
    """A provisioning step failed."""


class TriggerError(TapersError):
    """A trigger failed, or runs on the host without the person's approval (`tapers trust`)."""


class StateError(TapersError):
    """What is on the host does not allow the requested operation."""


class HostError(TapersError):
    """The host lacks something tapers needs (see `tapers doctor`)."""


class MachineFailures(TapersError):
    """Several machines failed in one run; the message lists each one's error."""


class Interrupted(TapersError):
    exit_code = ExitCode.INTERRUPTED
