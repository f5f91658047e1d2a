"""Command-line usability: suggestions, label inference, hints in CLI syntax, quiet logs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from core.suggest import suggest
from meshing.errors import InputError
from meshing.imaging import label_mask
from meshing.segmentation import default_lesion_labels, resolve_bone_label
from meshing.types import ImageGrid, LabelMap
from osteofe.cli import STAGES, _Progress, main
from osteofe.config import Config

pytestmark = pytest.mark.skip_in_parallel


def _map(values: dict[int, tuple[slice, ...]], names: dict[int, str]) -> LabelMap:
    labels = np.zeros((12, 12, 12), dtype=np.int16)
    for value, where in values.items():
        labels[where] = value
    grid = ImageGrid((12, 12, 12), np.ones(3), np.zeros(3), np.eye(3))
    return LabelMap(grid=grid, labels=labels, names=names)


#: A TotalSegmentator-like map: spleen 1, kidney 2, both femurs (v2 ids 75, 76).
TOTALSEG = _map({1: np.s_[0:2], 2: np.s_[2:4], 75: np.s_[4:8], 76: np.s_[8:12]},
                {1: "spleen", 2: "kidney_right", 75: "femur_left", 76: "femur_right"})


def test_suggest_finds_misspellings_and_contained_names():
    assert suggest("--bodyweight", ["--body-weight", "--out"]) == "--body-weight"
    assert suggest("sideways_fall", ["fall", "stance", "stairs_up"]) == "fall"
    assert suggest("femur_rigth", ["femur_left", "femur_right"]) == "femur_right"
    assert suggest("zzzz", ["fall", "stance"]) is None


@pytest.mark.parametrize(("argv", "expected"), [
    (["strenght"], "did you mean 'strength'?"),
    (["strength", "--ct", "a", "--labels", "b", "--bodyweight", "70", "--out", "o"],
     "--bodyweight -> --body-weight"),
    (["strength", "--ct", "a", "--labels", "b", "--body-weight", "70", "--out", "o",
      "--mesh-sise", "3"], "--mesh-sise -> --mesh-size"),
    (["strength", "--ct", "a", "--labels", "b", "--body-weight", "70", "--out", "o",
      "--pc", "gmg"], "did you mean 'gamg'?"),
])
def test_usage_errors_suggest_the_closest_command_option_or_choice(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_load_case_typo_names_the_flag_and_the_closest_case(capsys, tmp_path):
    assert main(["strength", "--ct", str(tmp_path / "ct.nii.gz"), "--labels", "x",
                 "--body-weight", "70", "--out", str(tmp_path / "o"),
                 "--load", "sideways_fall"]) == 3
    err = capsys.readouterr().err
    assert "did you mean 'fall'?" in err and "with --load" in err
    with pytest.raises(InputError, match="did you mean 'stance'"):
        Config().override("load", cases=("stanse",))


def test_label_name_typo_suggests_the_label():
    with pytest.raises(InputError, match="did you mean 'femur_right'"):
        label_mask(TOTALSEG, "femur_rigth")


def test_a_totalsegmentator_map_never_defaults_to_label_1():
    with pytest.raises(InputError, match="--bone-label is required") as err:
        resolve_bone_label(TOTALSEG, None)
    assert "75 femur_left, 76 femur_right" in str(err.value) and "--side" in str(err.value)
    assert resolve_bone_label(TOTALSEG, None, side="right") == 76
    assert resolve_bone_label(TOTALSEG, None, side="left") == 75
    assert resolve_bone_label(TOTALSEG, "femur_left") == "femur_left"  # given: kept
    one = _map({1: np.s_[0:2], 76: np.s_[4:8]}, {1: "spleen", 76: "femur_right"})
    assert resolve_bone_label(one, None) == 76
    # osteofe's own convention (unnamed, or named without a femur) is label 1.
    assert resolve_bone_label(_map({1: np.s_[0:6], 2: np.s_[6:8]}, {}), None) == 1
    assert resolve_bone_label(_map({1: np.s_[0:6]}, {1: "bone"}), None) == 1
    with pytest.raises(InputError, match="--bone-label is required"):
        resolve_bone_label(_map({1: np.s_[0:2], 5: np.s_[2:6]}, {}), None)


def test_segments_are_lesions_only_when_named_so():
    slicer = _map({1: np.s_[0:6], 2: np.s_[6:8]}, {1: "Femur", 2: "Muscle"})
    assert default_lesion_labels(slicer) == []
    slicer = _map({1: np.s_[0:6], 2: np.s_[6:8], 3: np.s_[8:9]},
                  {1: "Femur", 2: "Metastasis", 3: "lytic lesion"})
    assert default_lesion_labels(slicer) == [2, 3]
    assert default_lesion_labels(_map({1: np.s_[0:6], 2: np.s_[6:8]}, {})) == [2]
    assert default_lesion_labels(TOTALSEG) == []


def test_warnings_are_printed_once(caplog, capsys, tmp_path):
    from osteofe.cli import _log_warnings, _Once

    once = _Once()
    logger = logging.getLogger("osteofe.test_once")
    logger.addFilter(once)
    try:
        with caplog.at_level(logging.WARNING, logger="osteofe.test_once"):
            for _ in range(3):
                logger.warning("no calibration given")
            logger.warning("another")
    finally:
        logger.removeFilter(once)
    assert [r.getMessage() for r in caplog.records] == ["no calibration given", "another"]
    assert callable(_log_warnings)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _Progress(STAGES, True).bar is None


def test_manifest_schema_is_in_cohort_help_and_in_the_readme(capsys):
    from pathlib import Path

    with pytest.raises(SystemExit):
        main(["cohort", "run", "--help"])
    shown = capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for column in ("case_id", "body_mass_kg", "bone_label", "lesion_labels",
                   "calibration_slope", "follow_up_months"):
        assert column in shown and column in readme
    assert "femur label value or name (default: inferred, see CLI)" in readme
