"""The public API, through the documented example (docs/example_analyze.py), run as a test."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

import osteofe
from osteofe.result import StrengthResult, validate

pytestmark = pytest.mark.skip_in_parallel

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example_analyze.py"


def test_the_documented_example_runs_and_prints_the_typed_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path)])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    printed = capsys.readouterr().out
    result = StrengthResult.load(tmp_path / "result")
    validate(json.loads((tmp_path / "result" / "result.json").read_text()))
    for case in result.cases:
        assert f"{case.failure_load_N:>11.0f} N" in printed
    assert f"governing: {result.governing.load_case}" in printed
    assert f"Mirels {result.lesion.mirels_total}/12" in printed
    # The phantom's own line was used, so no generic-calibration warning.
    assert not any("no calibration given" in w for w in result.warnings)
    assert result.material.calibration_name == "api"


def test_the_package_exports_the_api_lazily():
    assert osteofe.analyze.__module__ == "osteofe.api"
    assert osteofe.StrengthResult is StrengthResult
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = osteofe.nothing  # type: ignore[attr-defined]
