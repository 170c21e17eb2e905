"""The Taperfile `tapers init` writes."""

from __future__ import annotations

INIT_TAPERFILE = """\
# Taperfile: the machines of this project. Commit it; `tapers up` makes reality match it.
# Every key is documented in Taperfile.example.yaml of the tapers repository.
version: 1

# name: myproject            # project name; default: this folder's name

defaults:                    # keys every machine inherits (each machine may override them)
  box: debian/bookworm       # built from the Debian mirror on first `tapers up`
  memory: 512M               # K, M, G suffixes
  # cpus: 1                  # may be fractional: 0.5
  # pids: 1024               # process limit

machines:
  {machine}:
    # hostname: {machine}.local  # default: the machine name
    primary: true            # `tapers ssh` with no name opens this one
"""


def init_taperfile(machine: str = "default") -> str:
    return INIT_TAPERFILE.format(machine=machine)
