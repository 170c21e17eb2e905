"""Taperfile error messages as golden text: each case is a file and the exact report users see.

Regenerate after an intended change with: TAPERS_UPDATE_GOLDEN=1 pytest tests/unit/test_taperfile_errors.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapers.errors import ExitCode, TaperfileError
from tapers.taperfile import load_taperfile

CASES = Path(__file__).parent / "taperfile_cases"


@pytest.mark.parametrize("case", sorted(p.stem for p in CASES.glob("*.yaml")))
def test_error_report(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taperfile = tmp_path / "Taperfile.yaml"
    taperfile.write_text((CASES / f"{case}.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaperfileError) as raised:
        load_taperfile(taperfile)
    assert raised.value.exit_code == ExitCode.INVALID
    expected_file = CASES / f"{case}.expected"
    if os.environ.get("TAPERS_UPDATE_GOLDEN"):
        expected_file.write_text(raised.value.message + "\n")
    assert raised.value.message + "\n" == expected_file.read_text()
