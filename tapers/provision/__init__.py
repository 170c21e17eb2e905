"""Provisioning: the steps that turn a box into a team's environment.

Each kind (shell, file, ansible) is a Provisioner with two methods: `fingerprint`, a
hash of exactly what would run, and `run`. What ran is recorded on the machine by
fingerprint, so `run: once` steps run again only when their content changed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tapers.provision.api import Provisioner
from tapers.taperfile.machine import Step

_MODULES = {"shell": "tapers.provision.shell", "file": "tapers.provision.files", "ansible": "tapers.provision.ansible"}


def provisioner(kind: str) -> Provisioner:
    return importlib.import_module(_MODULES[kind]).PROVISIONER


def fingerprint(step: Step, root: Path) -> str:
    return provisioner(step.kind).fingerprint(step, root)


def check_host_tools(kinds: set[str]) -> None:
    """Fail before anything is created when a step needs a host tool that is missing."""
    for kind in sorted(kinds):
        provisioner(kind).check_host()
