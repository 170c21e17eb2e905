"""Shell completion (`tapers --install-completion`) knows the Taperfile's machines and steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TAPERFILE = """\
version: 1
machines:
  web:
    provision:
      - {name: setup, shell: "true"}
      - {name: seed, shell: "true"}
  worker: {}
"""


@pytest.mark.parametrize(("words", "expected"), [
    ("tapers ssh w", ["web", "worker"]),
    ("tapers halt wo", ["worker"]),
    ("tapers snapshot save ", ["web", "worker"]),
    ("tapers provision --with se", ["seed", "setup"]),
    ("tapers provision --with setup,", ["setup,seed"]),
])
def test_machine_and_step_names_complete(tmp_path: Path, words: str, expected: list[str]) -> None:
    (tmp_path / "Taperfile.yaml").write_text(TAPERFILE)
    env = {**os.environ, "_TAPERS_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    result = subprocess.run([sys.executable, "-P", "-m", "tapers"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert [line.removeprefix("plain,") for line in result.stdout.split()] == expected, result.stderr
