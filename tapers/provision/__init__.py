"""Provisioning: the steps that turn a box into a team's environment.

Each kind (shell, file, ansible) is a Provisioner with two methods: `inputs`, exactly what
can change what it does (files by path, settings by key, each hashed), and `run`. What ran
is recorded on the machine: the hash of all its inputs (its fingerprint), so `run: once`
steps run again only when one of them changed, and the inputs, so `plan` can say which.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from tapers.provision.api import UNRESOLVED, Inputs, Provisioner, digest, refuse_hidden, tree_inputs
from tapers.taperfile.machine import Step

MAX_WATCHED = 10000  # files one `watch:` pattern may add
_MODULES = {"shell": "tapers.provision.shell", "file": "tapers.provision.files", "ansible": "tapers.provision.ansible"}


def provisioner(kind: str) -> Provisioner:
    import importlib

    return importlib.import_module(_MODULES[kind]).PROVISIONER


def inputs(step: Step, root: Path) -> Inputs:
    """The step's inputs: its kind's, and the files its `watch:` globs match."""
    found = provisioner(step.kind).inputs(step, root)
    for pattern in step.watch:
        matched = sorted(itertools.islice(root.glob(pattern), MAX_WATCHED))
        if not matched:
            found[f"{UNRESOLVED} `watch: {pattern}` matches nothing"] = ""
        for path in matched:
            watched = tree_inputs(root, refuse_hidden(root, str(path.relative_to(root)), "a `watch:` file"))
            # what the step counts already stays as it counted it (a file named like a
            # setting, `extra_vars`, doesn't stand in for the setting)
            found.update({name: value for name, value in watched.items() if name not in found})
    return found


def legacy_fingerprint(step: Step, root: Path) -> str | None:
    """What tapers recorded for the step before it recorded inputs (shell and file steps;
    an ansible step's inputs were too broad and too narrow then: it runs again)."""
    kind = provisioner(step.kind)
    return kind.legacy_fingerprint(step, root) if hasattr(kind, "legacy_fingerprint") else None


def fingerprint_of(inputs: Inputs) -> str:
    return digest(inputs)


def fingerprint(step: Step, root: Path) -> str:
    return fingerprint_of(inputs(step, root))


def check_host_tools(kinds: set[str]) -> None:
    """Fail before anything is created when a step needs a host tool that is missing."""
    for kind in sorted(kinds):
        provisioner(kind).check_host()
