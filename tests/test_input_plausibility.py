"""Inputs that used to give a believable but wrong failure load with exit code 0.

Every attack runs through the command line (``osteofe.cli.main``): exit code 3, an ``error:``
line saying what was found and what is expected, and no ``--out`` folder. Where the refusal
must come before the expensive stages, the stage is replaced by one that fails the test.

Classes: a femur mask that does not sit on bone (the segmentation given as the CT, labels
shifted off the bone, an all-air CT, an int8-clipped CT, a user mesh in other coordinates);
a user mesh of disconnected pieces or with duplicated coincident nodes; a side that
contradicts the anatomy; a femur too short for its load case; a risk model, law or
calibration that is only found invalid after the solve.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import cli_refuses

from meshing.errors import InputError
from meshing.imaging import write_ct, write_labels
from meshing.meshio_io import mesh_pieces, read_mesh, require_one_piece, write_mesh
from meshing.phantom import PhantomParams, make_phantom
from meshing.structured import box_mesh
from meshing.types import CTVolume, ImageGrid, LabelMap, TetMesh
from osteofe.cli import EXIT_INPUT, main

pytestmark = pytest.mark.skip_in_parallel

COARSE = ["--mesh-size", "6", "--no-picture"]


def _no_meshing(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the run was not refused before meshing")


def _no_reading(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the run was not refused before reading the CT")




@pytest.fixture
def no_meshing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as meshing (it must be refused before)."""
    monkeypatch.setattr("osteofe.pipeline.mesh_from_mask", _no_meshing)


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as reading the CT (it must be refused before)."""
    monkeypatch.setattr("osteofe.pipeline.read_ct", _no_reading)


def _strength_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], ct: Path, *extra: str,
                      labels: Path | None = None) -> str:
    """The error line of ``osteofe strength`` on ``ct``, which must be refused.

    ``labels`` and the ``extra`` options are given too; the run writes into
    ``tmp_path / "out"``, which must not be created (:func:`conftest.cli_refuses`).
    """
    out = tmp_path / "out"
    return cli_refuses(_strength(ct, out, *extra, labels=labels), out, capsys)


def _strength(ct: Path, out: Path, *extra: str, labels: Path | None = None) -> list[str]:
    args = ["-q", "strength", "--ct", str(ct), "--body-weight", "75", "--out", str(out)]
    if labels is not None:
        args += ["--labels", str(labels)]
    return args + list(extra) + COARSE


def _shifted(grid: ImageGrid, mm: float, axis: int) -> ImageGrid:
    offset = np.zeros(3)
    offset[axis] = mm
    return ImageGrid(grid.shape, grid.spacing, grid.origin + offset, grid.direction)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1.5 mm phantom and the broken inputs made from it."""
    folder = tmp_path_factory.mktemp("plausibility")
    ph = make_phantom(PhantomParams(voxel_size_mm=1.5))
    grid, hu, labels = ph.ct.grid, ph.ct.hu, ph.labels.labels
    out = {
        "ct": write_ct(ph.ct, folder / "ct.nii.gz"),
        "labels": write_labels(ph.labels, folder / "labels.nii.gz"),
        # the segmentation given as the CT: the values are label numbers
        "labels_as_ct": write_ct(CTVolume(grid, labels.astype(np.float32)),
                                 folder / "labels_as_ct.nii.gz"),
        "air_ct": write_ct(CTVolume(grid, np.full(grid.shape, -1000.0, np.float32)),
                           folder / "air.nii.gz"),
        "int8_ct": write_ct(CTVolume(grid, np.clip(hu, -128.0, 127.0)), folder / "int8.nii.gz"),
        "labels_left": write_labels(LabelMap(grid, labels, {1: "femur_left"}),
                                    folder / "labels_left.nrrd"),
    }
    for axis in range(3):
        for mm in (-50.0, 50.0):
            shifted = LabelMap(_shifted(grid, mm, axis), labels, ph.labels.names)
            out[f"labels_shift_{axis}_{mm:+.0f}"] = write_labels(
                shifted, folder / f"labels_shift_{axis}_{mm:+.0f}.nii.gz")
    # a stub: only the top 80 mm of the image (head, neck, trochanters; no lesser trochanter)
    keep = round(80.0 / 1.5)
    k0 = grid.shape[2] - keep
    stub_grid = ImageGrid((grid.shape[0], grid.shape[1], keep), grid.spacing,
                          grid.index_to_world([0, 0, k0]), grid.direction)
    out["stub_ct"] = write_ct(CTVolume(stub_grid, hu[:, :, k0:]), folder / "stub_ct.nii.gz")
    out["stub_labels"] = write_labels(LabelMap(stub_grid, labels[:, :, k0:], ph.labels.names),
                                      folder / "stub_labels.nii.gz")
    return out


# -- the femur must sit on bone -----------------------------------------------------------------


@pytest.mark.usefixtures("no_meshing")
def test_segmentation_given_as_the_ct_is_refused_before_meshing(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["labels_as_ct"], labels=files["labels"])
    assert "the femur mask does not sit on bone in the CT" in line
    assert "no dense bone: 99th percentile 1 HU, a femur reaches at least 300 HU" in line
    assert "is --ct the segmentation?" in line


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("mm", [-50.0, 50.0])
@pytest.mark.usefixtures("no_meshing")
def test_labels_shifted_by_50_mm_are_refused(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        axis: int, mm: float) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"],
                             labels=files[f"labels_shift_{axis}_{mm:+.0f}"])
    assert "does not sit on bone in the CT" in line
    # along the shaft the mask still overlaps bone: its outline no longer follows it
    assert "boundary does not follow the bone's edge" in line or "of it is air" in line
    assert "labels made on this very scan" in line


@pytest.mark.usefixtures("no_meshing")
def test_an_all_air_ct_is_refused(files: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["air_ct"], labels=files["labels"])
    assert "median -1000 HU, a femur's lies within -100..1000 HU" in line
    assert "100% of it is air" in line and "is it empty or the wrong series?" in line


@pytest.mark.usefixtures("no_meshing")
def test_an_int8_clipped_ct_is_refused(files: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["int8_ct"], labels=files["labels"])
    assert "99th percentile 127 HU, a femur reaches at least 300 HU" in line
    assert "exported as 8-bit (int8)" in line


# -- user meshes: one solid piece, on bone -------------------------------------------------------


@pytest.fixture(scope="module")
def femur_mesh(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Any]:
    """The phantom femur meshed at 6 mm, its run, and broken copies of the mesh."""
    folder = tmp_path_factory.mktemp("meshes")
    out = folder / "run"
    assert main(_strength(files["ct"], out, labels=files["labels"])) == 0
    mesh, _ = read_mesh(out / "fields.vtu")
    # Two halves that touch without sharing nodes (a multi-region export): the nodes of the
    # interface are written once per half.
    upper = mesh.centroids()[:, 2] > np.median(mesh.centroids()[:, 2])
    shared = np.intersect1d(mesh.cells[upper], mesh.cells[~upper])
    copy = np.arange(mesh.num_nodes)
    copy[shared] = mesh.num_nodes + np.arange(shared.size)
    cells = mesh.cells.copy()
    cells[upper] = copy[cells[upper]]
    split = TetMesh(np.vstack([mesh.points, mesh.points[shared]]), cells, mesh.cell_tags)
    assert mesh_pieces(split).max() == 1  # two pieces
    # a stray block of 6 cells beside the femur (an exported fixture, a fragment)
    block = box_mesh(mesh.points.min(axis=0), mesh.points.min(axis=0) + 5.0, (1, 1, 1))
    stray = TetMesh(np.vstack([mesh.points, block.points]),
                    np.vstack([mesh.cells, block.cells + mesh.num_nodes]),
                    np.concatenate([mesh.cell_tags, np.ones(block.num_cells, np.int32)]))
    doubled = TetMesh(np.vstack([mesh.points, mesh.points]),
                      np.vstack([mesh.cells, mesh.cells + mesh.num_nodes]),
                      np.concatenate([mesh.cell_tags, mesh.cell_tags]))
    ras = TetMesh(mesh.points * [-1.0, -1.0, 1.0], mesh.cells[:, [0, 2, 1, 3]], mesh.cell_tags)
    return {
        "result": json.loads((out / "result.json").read_text()),
        "mesh": write_mesh(folder / "femur.vtu", mesh),
        "split": write_mesh(folder / "split.vtu", split),
        "stray": write_mesh(folder / "stray.vtu", stray),
        "doubled": write_mesh(folder / "doubled.vtu", doubled),
        "ras": write_mesh(folder / "ras.vtu", ras),
        "shared": int(shared.size),
    }


def test_coincident_nodes_are_merged_and_reported(
        files: dict[str, Path], femur_mesh: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "split"
    assert main(_strength(files["ct"], out, "--mesh", str(femur_mesh["split"]))) == 0
    result = json.loads((out / "result.json").read_text())
    merged = [w for w in result["warnings"] if "coincident duplicate node" in w]
    assert len(merged) == 1, result["warnings"]
    assert f"merged {femur_mesh['shared']:,} coincident" in merged[0]
    assert "was 2 pieces" in merged[0] and "now one connected piece" in merged[0]
    # the merged mesh is the unsplit one: the same failure load (it was -13% before)
    reference = tmp_path / "whole"
    assert main(_strength(files["ct"], reference, "--mesh", str(femur_mesh["mesh"]))) == 0
    whole = json.loads((reference / "result.json").read_text())
    assert result["mesh"]["num_nodes"] == whole["mesh"]["num_nodes"]
    assert result["failure_load_N"] == pytest.approx(whole["failure_load_N"], rel=1e-9)
    assert whole["failure_load_N"] == pytest.approx(femur_mesh["result"]["failure_load_N"],
                                                    rel=1e-6)


@pytest.mark.parametrize(("mesh", "expected"), [
    pytest.param("stray", ("stray.vtu: the mesh is 2 pieces (", " and 6 cells) that share no node"),
                 id="disconnected pieces"),
    pytest.param("doubled", ("coincident duplicate node(s)", "does not make one valid solid",
                             "shared by more than two cells"),
                 id="coincident nodes that do not make one solid"),
    pytest.param("ras", ("ras.vtu: ", "of its cells lie outside the CT",
                         "RAS meshes have x and y negated"), id="other world axes"),
])
def test_a_bad_mesh_is_refused(files: dict[str, Path], femur_mesh: dict[str, Any],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str], mesh: str,
                               expected: tuple[str, ...]) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"], "--mesh", str(femur_mesh[mesh]))
    for text in expected:
        assert text in line


def test_require_one_piece_on_small_meshes() -> None:
    box = box_mesh([0, 0, 0], [20, 20, 40], (2, 2, 4))
    mesh = TetMesh(box.points, box.cells, np.ones(box.num_cells, np.int32))
    assert require_one_piece(mesh, "box") == (mesh, [])
    # a slit: the cells above z = 20 use their own copies of the z = 20 nodes
    upper = mesh.centroids()[:, 2] > 20.0
    shared = np.intersect1d(mesh.cells[upper], mesh.cells[~upper])
    remap = np.arange(mesh.num_nodes)
    remap[shared] = mesh.num_nodes + np.arange(shared.size)
    cells = mesh.cells.copy()
    cells[upper] = remap[cells[upper]]
    split = TetMesh(np.vstack([mesh.points, mesh.points[shared]]), cells, mesh.cell_tags)
    welded, notes = require_one_piece(split, "split")
    assert welded.num_nodes == mesh.num_nodes and np.array_equal(welded.cells, mesh.cells)
    assert len(notes) == 1 and f"merged {shared.size} coincident" in notes[0]
    # nodes 1 um apart on a 40 mm mesh stay apart: only near-exact duplicates are merged
    nudged = TetMesh(split.points + np.where(np.arange(split.num_nodes) >= mesh.num_nodes,
                                             1e-3, 0.0)[:, None], split.cells, split.cell_tags)
    with pytest.raises(InputError, match="2 pieces"):
        require_one_piece(nudged, "nudged")


# -- the side ----------------------------------------------------------------------------------


def test_side_contradicting_the_anatomy_is_refused(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"], "--side", "left",
                             labels=files["labels"])
    assert "the side given is left, but the femur in the image is a right femur" in line
    assert "manifest's side column" in line


@pytest.mark.usefixtures("no_meshing")
def test_side_contradicting_the_label_name_is_refused_before_meshing(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"], "--side", "right", "--bone-label",
                             "femur_left", labels=files["labels_left"])
    assert "the side given is right, but the selected label is a left femur" in line


def test_a_side_that_agrees_runs(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(_strength(files["ct"], out, "--side", "right", labels=files["labels"])) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["landmarks"]["side"] == "right"
    assert result["validity"] == {"valid": True, "banner": None, "reasons": []}


# -- models too short for the load case ----------------------------------------------------------


def test_a_femur_stub_is_refused_without_allow_partial(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["stub_ct"], labels=files["stub_labels"])
    assert "the femur model is too short for the load case" in line
    assert "the lesser trochanter was not found and the model ends" in line
    assert "--allow-partial" in line


def test_a_femur_stub_with_allow_partial_is_flagged_not_valid(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_strength(files["stub_ct"], out, "--allow-partial",
                          labels=files["stub_labels"])) == 0
    err = capsys.readouterr().err
    # printed even with -q, framed
    assert "! PARTIAL MODEL - the femur is too short for this load case" in err
    result = json.loads((out / "result.json").read_text())
    validity = result["validity"]
    assert validity["valid"] is False and validity["banner"].startswith("PARTIAL MODEL")
    assert any("lesser trochanter was not found" in r for r in validity["reasons"])
    assert result["config"]["mesh"]["allow_partial"] is True


def test_extent_rules(files: dict[str, Path]) -> None:
    from fea.landmarks import find_landmarks
    from fea.loads import LOAD_CASES
    from meshing.imaging import read_ct, read_labels
    from meshing.surface import clean_mask, extract_surface
    from osteofe import guards

    ct = read_ct(files["ct"])
    mask = read_labels(files["labels"]).labels > 0
    lm = find_landmarks(extract_surface(clean_mask(mask), ct.grid).points)
    stance, fall = [LOAD_CASES["stance"]], [LOAD_CASES["fall"]]
    assert guards.model_extent_problems(lm, stance + fall) == []
    assert guards.check_model_extent(lm, fall)["valid"] is True
    # the distal cut 30 mm below the lesser trochanter
    assert lm.lesser_trochanter_mm is not None
    level = float(lm.lesser_trochanter_mm @ lm.shaft_axis)
    near = replace(lm, distal_level_mm=level - 30.0)
    (problem,) = guards.model_extent_problems(near, stance)
    assert "the fixed distal cut is 30 mm below the lesser trochanter" in problem
    assert guards.model_extent_problems(replace(near, distal_level_mm=level - 40.0),
                                        stance) == []
    with pytest.raises(InputError, match="too short for the load case"):
        guards.check_model_extent(near, stance)
    # a sideways fall needs the greater trochanter it rests on
    no_gt = replace(lm, greater_trochanter_lateral_mm=None)
    assert guards.model_extent_problems(no_gt, stance) == []
    (problem,) = guards.model_extent_problems(no_gt, fall)
    assert "fall rest the greater trochanter on the ground" in problem
    validity = guards.check_model_extent(no_gt, fall, allow_partial=True)
    assert validity == {"valid": False, "banner": guards.PARTIAL_BANNER, "reasons": [problem]}


# -- everything validated before meshing --------------------------------------------------------


@pytest.fixture(scope="module")
def risk_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from risk.calibration import StrengthRiskModel, save_model

    folder = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    strength = rng.uniform(1.0, 12.0, 200)
    fractured = (rng.uniform(size=200) < 1.0 / (1.0 + np.exp(strength - 5.0))).astype(int)
    good = save_model(StrengthRiskModel().fit({"failure_load_BW": strength}, fractured),
                      folder / "good.json")
    doc = json.loads(good.read_text())
    out = {"good": good}
    for name, change in (("huge", {"coef": [1e308]}),
                         ("steep", {"coef": [-1000.0]}),
                         ("aci", {"feature_names": ["aci_mm"]}),
                         ("mirels", {"feature_names": ["mirels_total"]}),
                         ("unknown", {"feature_names": ["shoe_size"]})):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(doc | change))
        out[name] = path
    return out


@pytest.mark.parametrize(("model", "message"), [
    ("huge", "risk model huge.json: the model's log-odds reach inf for failure_load_BW "
             "(coefficient 1e+308)"),
    ("steep", "the model's log-odds reach 2.02e+04 for failure_load_BW (coefficient -1000) "
              "over its training mean +-4 SD within the plausible range 0..20.2"),
    ("mirels", "needs the Mirels total, which needs the pain item"),
    ("unknown", "needs feature(s) ['shoe_size'] that osteofe strength does not compute"),
])
@pytest.mark.usefixtures("no_reading")
def test_a_bad_risk_model_is_refused_before_reading_the_ct(
        files: dict[str, Path], risk_models: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], model: str,
        message: str) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"], "--risk-model", str(risk_models[model]),
                             labels=files["labels"])
    assert message in line


@pytest.mark.usefixtures("no_meshing")
def test_a_risk_model_needing_a_lesion_is_refused_before_meshing(
        files: dict[str, Path], risk_models: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"], "--risk-model", str(risk_models["aci"]),
                             labels=files["labels"])
    assert "needs lesion feature(s) ['aci_mm'], but no lesion is labelled" in line


def test_a_valid_risk_model_gives_a_probability(
        files: dict[str, Path], risk_models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(_strength(files["ct"], out, "--risk-model", str(risk_models["good"]),
                          labels=files["labels"])) == 0
    probability = json.loads((out / "result.json").read_text())["fracture_probability"]
    assert 0.0 < probability["probability"] < 1.0


@pytest.mark.parametrize(("toml", "message"), [
    ('[material]\nlaw = "nosuchlaw"\n',
     "config value material.law = 'nosuchlaw' is invalid: unknown material law"),
    ('[material]\nlaw = "keyak2005_yield"\n', "gives yield_stress, not Young's modulus"),
    ('[material]\nchain = "nosuchchain"\n',
     "config value material.chain = 'nosuchchain' is invalid: unknown density chain"),
    ('[material]\nmode = "nearest"\n', "config value material.mode = 'nearest' is invalid"),
    ('[material]\nchain = "schileo2008"\ncalibration_slope = 0.0008\n'
     'calibration_intercept = 0.0\n', "expects HA-equivalent density"),
    ('[nonlinear]\ncases = ["fall"]\n', "config value nonlinear.cases = 'fall' is invalid"),
])
def test_config_check_refuses_what_the_run_would_fail_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    assert main(["config", "--check", str(path)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "(hint: " in err


@pytest.mark.usefixtures("no_reading")
def test_an_unknown_law_on_the_command_line_is_refused_before_reading(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _strength_refused(tmp_path, capsys, files["ct"], "--law", "nosuchlaw",
                             labels=files["labels"])
    assert "material.law = 'nosuchlaw' is invalid" in line


@pytest.mark.usefixtures("no_reading")
def test_a_chain_the_default_line_cannot_feed_is_refused_before_reading(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ha.toml"
    config.write_text('[material]\nchain = "schileo2008"\n')
    line = _strength_refused(tmp_path, capsys, files["ct"], "--config", str(config),
                             labels=files["labels"])
    assert "do not fit the calibration 'osteofe_phantom_line'" in line
    assert "expects HA-equivalent density" in line


# -- the real example CT (../shared/data) ---------------------------------------------------------


@pytest.fixture(scope="module")
def real_ct(shared_data: Path) -> tuple[Path, Path]:
    return (shared_data / "ct" / "totalseg_example_ct.nii.gz",
            shared_data / "ct" / "totalseg_example_seg.nii.gz")


@pytest.mark.data
def test_real_right_femur_sits_on_bone_and_is_a_stub(
        real_ct: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ct_path, seg_path = real_ct
    args = ["-q", "strength", "--ct", str(ct_path), "--labels", str(seg_path), "--bone-label",
            "femur_right", "--body-weight", "75", "--no-picture"]
    refused = tmp_path / "refused"
    line = cli_refuses([*args, "--out", str(refused)], refused, capsys)
    # the 54 mm piece of the example passes the bone check and fails the extent check
    assert "too short for the load case" in line and "does not sit on bone" not in line
    out = tmp_path / "partial"
    assert main([*args, "--out", str(out), "--allow-partial", "--side", "right"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["validity"]["valid"] is False and np.isfinite(result["failure_load_N"])


@pytest.mark.data
def test_real_labels_shifted_by_50_mm_are_refused(
        real_ct: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from meshing.imaging import read_labels

    monkeypatch.setattr("osteofe.pipeline.mesh_from_mask", _no_meshing)
    ct_path, seg_path = real_ct
    labels = read_labels(seg_path)
    shifted = write_labels(LabelMap(_shifted(labels.grid, 50.0, 0), labels.labels, labels.names),
                           tmp_path / "shifted.nrrd")
    out = tmp_path / "out"
    line = cli_refuses(["-q", "strength", "--ct", str(ct_path), "--labels", str(shifted),
                       "--bone-label", "femur_right", "--body-weight", "75", "--out", str(out)],
                       out, capsys)
    assert "does not sit on bone" in line and "boundary does not follow the bone's edge" in line


@pytest.mark.data
@pytest.mark.usefixtures("no_meshing")
def test_real_side_contradicting_the_label_name_is_refused(
        real_ct: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ct_path, seg_path = real_ct
    out = tmp_path / "out"
    line = cli_refuses(["-q", "strength", "--ct", str(ct_path), "--labels", str(seg_path),
                       "--bone-label", "femur_right", "--side", "left", "--body-weight", "75",
                       "--out", str(out)], out, capsys)
    assert "the side given is left, but the selected label is a right femur" in line
