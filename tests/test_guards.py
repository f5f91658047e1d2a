"""Pre-flight guards: memory estimate and refusal, image sanity (osteofe.guards)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import cli_refuses

from meshing.errors import InputError
from meshing.phantom import Phantom, PhantomParams, make_phantom
from meshing.segmentation import estimate_mesh_memory
from meshing.types import CTVolume, ImageGrid
from osteofe import guards
from osteofe.guards import (
    MAX_IMAGE_VOXELS,
    RUN_MEMORY_MODEL,
    available_memory_bytes,
    check_image_sanity,
    check_resources,
    estimate_resources,
)

GB = 1e9
MIB = 1024.0**2


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(PhantomParams(voxel_size_mm=1.5))


def _block_mask(shape: tuple[int, int, int], spacing: float = 1.0) -> tuple[np.ndarray, ImageGrid]:
    grid = ImageGrid(shape, np.full(3, spacing), np.zeros(3))
    return np.ones(shape, dtype=bool), grid


# -- memory -------------------------------------------------------------------------------------


def test_huge_mask_refused_on_a_small_machine() -> None:
    # a solid 10 x 10 x 10 cm block meshed at 0.5 mm: ~40 million tetrahedra
    mask, grid = _block_mask((100, 100, 100))
    with pytest.raises(InputError) as info:
        check_resources(image_voxels=mask.size, mask=mask, grid=grid, size_mm=0.5,
                        available_bytes=int(8 * GB))
    err = info.value
    assert "would need ~" in err.message and "this machine has 8.0 GB available" in err.message
    assert "to solve ~" in err.message and "degrees of freedom" in err.message
    assert "tetrahedra, P1]" in err.message
    assert "coarser --mesh-size" in err.hint and "crop the image" in err.hint
    assert "bigger machine" in err.hint


def test_phantom_accepted_with_its_estimate(phantom: Phantom) -> None:
    ct, mask = phantom.ct, phantom.labels.labels > 0
    estimate = check_resources(image_voxels=ct.hu.size, mask=mask, grid=ct.grid, size_mm=3.0,
                               available_bytes=int(4 * GB))
    assert estimate.fits and estimate.budget_bytes == math.floor(0.8 * 4 * GB)
    assert estimate.tets is not None and 5_000 < estimate.tets < 200_000
    assert estimate.dofs == math.ceil(3 * estimate.tets / RUN_MEMORY_MODEL.tets_per_node)
    # meshing reuses the segmentation model on top of the resident images
    added = estimate_mesh_memory(mask, ct.grid, 3.0)
    assert estimate.mesh_bytes == math.ceil(RUN_MEMORY_MODEL.baseline_bytes + added
                                            + RUN_MEMORY_MODEL.resident_per_voxel * ct.hu.size)
    assert estimate.mesh_bytes is not None and estimate.solve_bytes is not None
    assert estimate.peak_bytes == max(estimate.read_bytes, estimate.mesh_bytes,
                                      estimate.solve_bytes)
    assert estimate.peak_bytes < 1 * GB
    record = estimate.to_dict()
    assert record["peak_stage"] == estimate.peak_stage and record["ranks"] == 1
    assert "tetrahedra" in estimate.describe() and "available" in estimate.describe()


def test_tet_count_matches_the_mesh_model(phantom: Phantom) -> None:
    """The tetrahedron count is the one estimate_mesh_memory's per-tet term uses."""
    ct, mask = phantom.ct, phantom.labels.labels > 0
    e1 = estimate_resources(image_voxels=ct.hu.size, mask=mask, grid=ct.grid, size_mm=3.0,
                            available_bytes=int(GB))
    e2 = estimate_resources(image_voxels=ct.hu.size, mask=mask, grid=ct.grid, size_mm=3.0,
                            order=2, available_bytes=int(GB))
    model = RUN_MEMORY_MODEL.mesh
    per_tet_extra = model.per_tet * (model.quadratic_factor - 1.0)
    assert e1.tets is not None and e1.mesh_bytes is not None and e2.mesh_bytes is not None
    # tets is rounded up to a whole tetrahedron
    assert e2.mesh_bytes - e1.mesh_bytes == pytest.approx(per_tet_extra * e1.tets,
                                                          abs=per_tet_extra + 2.0)


def test_solver_line_reproduces_the_benchmark() -> None:
    model = RUN_MEMORY_MODEL
    for dofs, mib in ((1_004_784, 3009.7), (1_969_275, 5677.6)):
        predicted = model.solver_fixed_bytes + model.solver_per_dof_bytes * dofs
        assert predicted == pytest.approx(mib * MIB, rel=1e-9)
    assert 2.8e3 < model.solver_per_dof_bytes < 3.0e3  # ~2.9 kB per DOF
    # the line stays above the smaller P1 runs of the ladder (it errs on the safe side)
    for dofs, mib in ((11_100, 215.1), (107_163, 466.7), (285_099, 955.0)):
        assert model.solver_fixed_bytes + model.solver_per_dof_bytes * dofs > mib * MIB


def test_degree_ranks_and_mesh_file() -> None:
    p1 = estimate_resources(image_voxels=1000, num_tets=440_000, available_bytes=int(GB))
    p2 = estimate_resources(image_voxels=1000, num_tets=440_000, degree=2,
                            available_bytes=int(GB))
    two = estimate_resources(image_voxels=1000, num_tets=440_000, ranks=2,
                             available_bytes=int(GB))
    assert p1.dofs == 300_000 and p2.dofs == 8 * p1.dofs
    assert p1.mesh_bytes is None and p1.peak_stage == "solving"
    # Each rank pays the fixed part; the per-DOF part is split (the model is distributed).
    fixed = RUN_MEMORY_MODEL.solver_fixed_bytes
    assert two.solve_bytes == pytest.approx((p1.solve_bytes or 0) + fixed, abs=2)
    with pytest.raises(InputError, match="2 ranks"):
        check_resources(image_voxels=1000, num_tets=8_800_000, ranks=2,
                        available_bytes=int(10 * GB))


def test_reading_only_and_unknown_memory() -> None:
    only = estimate_resources(image_voxels=10_000_000, available_bytes=int(GB))
    assert only.tets is None and only.solve_bytes is None and only.peak_stage == "reading"
    assert only.read_bytes == math.ceil(RUN_MEMORY_MODEL.baseline_bytes + 16.0 * 10_000_000)
    # nothing known about the machine: the estimate comes back unchecked
    big = check_resources(image_voxels=10**9, available_bytes=0)
    assert not big.fits


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mask": np.ones((2, 2, 2), bool)}, "grid and the element size"),
    ({"order": 3}, "order must be 1 or 2"),
    ({"degree": 0}, "degree must be 1 or 2"),
    ({"ranks": 0}, "ranks must be a positive integer"),
    ({"num_tets": -5}, "num_tets must be a positive integer"),
])
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        estimate_resources(image_voxels=8, available_bytes=int(GB), **kwargs)


def test_mask_shape_and_size_checked() -> None:
    mask, grid = _block_mask((4, 4, 4))
    with pytest.raises(InputError, match="differs from the grid"):
        estimate_resources(image_voxels=64, mask=mask[:2], grid=grid, size_mm=1.0,
                           available_bytes=int(GB))
    with pytest.raises(InputError, match="element size"):
        estimate_resources(image_voxels=64, mask=mask, grid=grid, size_mm=float("nan"),
                           available_bytes=int(GB))


def test_available_memory_reads_this_machine() -> None:
    assert available_memory_bytes() > 0
    assert check_resources(image_voxels=1000).available_bytes > 0


def test_meminfo_and_cgroup_parsing(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684096 kB\nMemAvailable:   1000 kB\n")
    assert guards._meminfo_available(meminfo) == 1000 * 1024
    assert guards._meminfo_available(tmp_path / "missing") is None
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("max\n")
    assert guards._cgroup_room(v2) is None  # no limit
    (v2 / "memory.max").write_text("4000000000\n")
    (v2 / "memory.current").write_text("1000000000\n")
    assert guards._cgroup_room(v2) == 3_000_000_000
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    assert guards._cgroup_room(v1.parent) is None  # v1 "unlimited"
    (v1 / "memory.limit_in_bytes").write_text("2000000000")
    (v1 / "memory.usage_in_bytes").write_text("500000000")
    assert guards._cgroup_room(v1.parent) == 1_500_000_000


# -- image sanity ---------------------------------------------------------------------------------


def _ct(spacing: tuple[float, float, float], hu: float = 0.0) -> CTVolume:
    grid = ImageGrid((3, 3, 3), np.asarray(spacing), np.zeros(3))
    return CTVolume(grid, np.full((3, 3, 3), hu, dtype=np.float32))


def test_phantom_passes_the_image_checks(phantom: Phantom) -> None:
    check_image_sanity(phantom.ct)
    check_image_sanity(_ct((0.3, 0.3, 5.0), hu=-1024.0))  # thick clinical slices


@pytest.mark.parametrize(("spacing", "axis", "guess"), [
    ((0.0007, 0.0007, 0.001), "i", "in metres (0.7 mm?)"),
    ((0.7, 0.7, 1250.0), "k", "in micrometres (1.25 mm?)"),
    ((0.7, 0.01, 0.7), "j", "in metres"),
    ((0.7, 0.7, 12.0), "k", "in micrometres"),
])
def test_absurd_spacing_refused(spacing: tuple[float, float, float], axis: str,
                                guess: str) -> None:
    with pytest.raises(InputError) as info:
        check_image_sanity(_ct(spacing))
    assert f"voxel size along axis {axis}" in info.value.message
    assert guess in info.value.message and "0.05-10 mm" in info.value.message
    assert "pixel spacing and slice thickness" in info.value.hint


def test_spacing_limits_are_inclusive() -> None:
    check_image_sanity(_ct((0.05, 10.0, 1.0)))


def test_huge_image_refused_from_its_grid() -> None:
    grid = ImageGrid((2048, 2048, 500), np.full(3, 0.3), np.zeros(3))
    assert math.prod(grid.shape) > MAX_IMAGE_VOXELS
    with pytest.raises(InputError, match=r"2,097,152,000 voxels \(2048 x 2048 x 500\)") as info:
        check_image_sanity(grid)
    assert "crop the image" in info.value.hint


def test_values_off_the_hounsfield_scale_refused() -> None:
    with pytest.raises(InputError, match="far outside the Hounsfield scale") as info:
        check_image_sanity(_ct((0.7, 0.7, 0.7), hu=1.4e33))
    assert "rescale slope" in info.value.hint
    check_image_sanity(_ct((0.7, 0.7, 0.7), hu=-3024.0))  # outside-the-field padding is fine


def test_meshing_stage_named_when_it_dominates() -> None:
    mask, grid = _block_mask((100, 100, 100))
    mask[:] = False
    mask[40:60, 40:60, 40:60] = True  # a 2 cm cube: the mesh libraries dominate
    estimate = estimate_resources(image_voxels=mask.size, mask=mask, grid=grid, size_mm=3.0,
                                  available_bytes=int(GB))
    assert estimate.peak_stage == "meshing"
    with pytest.raises(InputError, match=r"to mesh at 3\.0 mm, this machine has 0\.35 GB"):
        check_resources(image_voxels=mask.size, mask=mask, grid=grid, size_mm=3.0,
                        available_bytes=int(0.35 * GB))


# -- the guards in the pipeline and the command line -------------------------------------------


def test_memory_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guards.MEMORY_LIMIT_ENV, raising=False)
    assert guards.memory_limit_bytes() is None
    unlimited = available_memory_bytes()
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "0.25")
    assert guards.memory_limit_bytes() == 250_000_000
    assert available_memory_bytes() == min(unlimited, 250_000_000)
    with pytest.raises(InputError, match=r"OSTEOFE_MEMORY_LIMIT_GB=0\.25 allows 0\.25 GB"):
        check_resources(image_voxels=1000, num_tets=4_400_000)
    for bad in ("lots", "-1", "0", "nan", "inf"):
        monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, bad)
        with pytest.raises(InputError, match="is not a positive number of GB") as info:
            available_memory_bytes()
        assert "OSTEOFE_MEMORY_LIMIT_GB=16" in info.value.hint
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, " ")
    assert guards.memory_limit_bytes() is None


@pytest.fixture(scope="module")
def phantom_files(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The phantom on disk, and its CT with the voxel size written in metres."""
    from meshing.imaging import write_ct, write_labels

    folder = tmp_path_factory.mktemp("guard_phantom")
    grid = phantom.ct.grid
    metres = ImageGrid(grid.shape, grid.spacing / 1000.0, grid.origin / 1000.0, grid.direction)
    return {"ct": write_ct(phantom.ct, folder / "ct.nii.gz"),
            "labels": write_labels(phantom.labels, folder / "labels.nii.gz"),
            "ct_in_metres": write_ct(CTVolume(metres, phantom.ct.hu), folder / "ct_m.nii.gz")}




def _no_meshing(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the run was not refused before meshing")


def test_cli_refuses_a_ct_with_its_voxel_size_in_metres(
        phantom_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("osteofe.pipeline.mesh_from_mask", _no_meshing)
    out = tmp_path / "out"
    line = cli_refuses(["-q", "strength", "--ct", str(phantom_files["ct_in_metres"]),
                       "--labels", str(phantom_files["labels"]), "--body-weight", "75",
                       "--out", str(out), "--mesh-size", "5", "--no-picture"], out, capsys)
    assert "voxel size along axis i is 0.0015 mm" in line
    assert "in metres (1.5 mm?)" in line and "pixel spacing and slice thickness" in line


def test_cli_refuses_an_analysis_over_the_memory_limit(
        phantom_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("osteofe.pipeline.mesh_from_mask", _no_meshing)
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "0.1")
    out = tmp_path / "out"
    line = cli_refuses(["-q", "strength", "--ct", str(phantom_files["ct"]), "--labels",
                       str(phantom_files["labels"]), "--body-weight", "75", "--out",
                       str(out), "--mesh-size", "5", "--no-picture"], out, capsys)
    assert "this analysis would need ~" in line
    assert "OSTEOFE_MEMORY_LIMIT_GB=0.1 allows 0.10 GB" in line
    assert "coarser --mesh-size" in line and "raise OSTEOFE_MEMORY_LIMIT_GB" in line


def test_cli_checks_a_user_mesh_before_solving_it(
        phantom_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from meshing.meshio_io import write_mesh
    from meshing.structured import box_mesh
    from meshing.types import TetMesh

    box = box_mesh([0, 0, 0], [40, 40, 80], (4, 4, 8))
    mesh_file = write_mesh(tmp_path / "user.vtu",
                           TetMesh(box.points, box.cells, np.ones(box.num_cells, np.int32)))
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "0.1")
    out = tmp_path / "out"
    line = cli_refuses(["-q", "strength", "--ct", str(phantom_files["ct"]), "--mesh",
                       str(mesh_file), "--body-weight", "75", "--out", str(out),
                       "--no-picture"], out, capsys)
    # the estimate counts the user's tetrahedra (a mask-based one would not know them), at the
    # default P2 discretisation
    assert f"~{box.num_cells:,} tetrahedra, P2]" in line and "to solve ~" in line


def test_cli_checks_a_deck_before_solving_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    deck = Path(__file__).parent / "fuzz_corpus" / "seeds" / "deck--seed.inp"
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "0.1")
    out = tmp_path / "out"
    line = cli_refuses(["-q", "solve", str(deck), "--out", str(out)], out, capsys)
    assert "to solve ~" in line and "~6 tetrahedra, P1]" in line


def test_a_run_records_its_memory_estimate(
        phantom_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the limit the run goes through, and result.json keeps the estimate."""
    import json

    from osteofe.cli import main

    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "64")
    out = tmp_path / "out"
    assert main(["-q", "strength", "--ct", str(phantom_files["ct"]), "--labels",
                 str(phantom_files["labels"]), "--body-weight", "75", "--out", str(out),
                 "--mesh-size", "6", "--no-picture"]) == 0
    resources = json.loads((out / "result.json").read_text())["resources"]
    assert resources["tets"] > 0 and resources["peak_bytes"] > resources["read_bytes"] > 0
    assert resources["peak_stage"] in ("meshing", "solving") and resources["ranks"] == 1
    # what the machine had free varies from run to run: kept out of result.json
    assert "available_bytes" not in resources and "budget_bytes" not in resources


# -- the femur sits on bone ----------------------------------------------------------------------


@pytest.mark.parametrize(("voxel", "noise", "kind"), [
    (1.5, 0.0, None), (1.5, 40.0, "lytic"), (1.0, 20.0, "mixed"), (0.8, 40.0, "blastic")])
def test_phantoms_sit_on_bone(voxel: float, noise: float, kind: str | None) -> None:
    from meshing.phantom import LesionParams

    lesion = None if kind is None else LesionParams(site="calcar", kind=kind, radius_mm=15.0)
    ph = make_phantom(PhantomParams(voxel_size_mm=voxel, noise_sd_hu=noise), lesion)
    profile = guards.check_femur_on_bone(ph.ct, ph.labels.labels > 0)
    assert profile.p99_hu > 1500.0 and 150.0 < profile.median_hu < 300.0
    assert profile.air_fraction == 0.0 and profile.cortical_fraction > 0.25
    assert profile.boundary_step_hu is not None and profile.boundary_step_hu > 700.0
    assert profile.boundary_offset_mm == 0.0


def test_one_voxel_segmentation_errors_still_sit_on_bone(phantom: Phantom) -> None:
    from scipy import ndimage

    mask = phantom.labels.labels > 0
    for changed, offset in ((ndimage.binary_dilation(mask, iterations=2), -3.0),
                            (ndimage.binary_erosion(mask), 1.5)):
        profile = guards.check_femur_on_bone(phantom.ct, changed)
        # the best outline is the one the mask was grown or shrunk from
        assert profile.boundary_offset_mm == offset and profile.boundary_step_hu > 700.0


@pytest.mark.parametrize("mm", [-50.0, -25.0, -10.0, 10.0, 25.0, 50.0])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_masks_moved_off_the_bone_are_refused(phantom: Phantom, axis: int, mm: float) -> None:
    steps = round(mm / 1.5)
    moved = np.roll(phantom.labels.labels > 0, steps, axis=axis)
    edge = [slice(None)] * 3
    edge[axis] = slice(0, steps) if steps > 0 else slice(steps, None)
    moved[tuple(edge)] = False
    profile = guards.femur_hu_profile(phantom.ct, moved)
    assert profile.boundary_step_hu is not None and profile.boundary_step_hu < 30.0
    with pytest.raises(InputError, match="does not sit on bone in the CT"):
        guards.check_femur_on_bone(phantom.ct, moved)


def test_bone_profile_of_the_real_right_femur(shared_data: Path) -> None:
    from meshing.imaging import align_labels, read_ct, read_labels
    from meshing.segmentation import select_femur

    ct = read_ct(shared_data / "ct" / "totalseg_example_ct.nii.gz")
    labels = align_labels(read_labels(shared_data / "ct" / "totalseg_example_seg.nii.gz"),
                          ct.grid)
    bone, _ = select_femur(labels, "femur_right")
    profile = guards.check_femur_on_bone(ct, bone)
    # 3 mm voxels: almost no voxel above 700 HU, yet dense bone and a clear outline
    assert profile.median_hu == pytest.approx(168.0, abs=1.0)
    assert profile.p99_hu == pytest.approx(629.0, abs=1.0)
    assert profile.cortical_fraction < 0.01 and profile.air_fraction == 0.0
    assert profile.boundary_step_hu == pytest.approx(127.0, abs=1.0)
    # the same mask 9 mm off (three voxels) along each axis is refused
    for axis in range(3):
        with pytest.raises(InputError, match="boundary does not follow the bone's edge"):
            guards.check_femur_on_bone(ct, np.roll(bone, 3, axis=axis))


def test_mesh_cells_on_bone(phantom: Phantom) -> None:
    from meshing.structured import box_mesh
    from meshing.types import TetMesh

    lower, upper = phantom.ct.grid.world_bounds()
    # a block in the soft tissue and air beside the femur: no dense bone
    box = box_mesh(lower + 2.0, lower + 12.0, (2, 2, 2))
    with pytest.raises(InputError, match="its cells do not lie on bone in the CT"):
        guards.check_mesh_on_bone(phantom.ct, TetMesh(box.points, box.cells,
                                                      np.ones(box.num_cells, np.int32)))
    far = box_mesh(upper + 100.0, upper + 110.0, (1, 1, 1))
    with pytest.raises(InputError, match="100% of its cells lie outside the CT"):
        guards.check_mesh_on_bone(phantom.ct, TetMesh(far.points, far.cells,
                                                      np.ones(far.num_cells, np.int32)))


def test_check_side(phantom: Phantom) -> None:
    from fea.landmarks import find_landmarks
    from meshing.surface import clean_mask, extract_surface

    lm = find_landmarks(extract_surface(clean_mask(phantom.labels.labels > 0),
                                        phantom.ct.grid).points)
    assert lm.side == "right"
    guards.check_side(None, lm)
    guards.check_side("right", lm)
    guards.check_side("R", lm)
    with pytest.raises(InputError, match="the side given is left, but the femur in the image"):
        guards.check_side("left", lm)
    with pytest.raises(InputError, match="'middle' is not left or right"):
        guards.check_side("middle", lm)


def test_check_risk_model_features(tmp_path: Path) -> None:
    from risk.calibration import StrengthRiskModel, save_model

    rng = np.random.default_rng(3)
    x = rng.uniform(1.0, 12.0, 80)
    y = (rng.uniform(size=80) < 1.0 / (1.0 + np.exp(x - 5.0))).astype(int)
    aci = rng.uniform(0.0, 60.0, 80)
    lesion_model = save_model(StrengthRiskModel().fit({"failure_load_BW": x, "aci_mm": aci},
                                                      y), tmp_path / "m.json")
    assert guards.check_risk_model(None) == ()
    names = ("failure_load_BW", "aci_mm")
    assert guards.check_risk_model(lesion_model) == names  # lesion not known yet
    assert guards.check_risk_model(lesion_model, lesion=True) == names
    with pytest.raises(InputError, match=r"needs lesion feature\(s\) \['aci_mm'\]"):
        guards.check_risk_model(lesion_model, lesion=False)


def test_check_risk_model_per_case_features(tmp_path: Path) -> None:
    from risk.calibration import StrengthRiskModel, save_model

    rng = np.random.default_rng(4)
    x = rng.uniform(0.1, 1.5, 80)
    y = (rng.uniform(size=80) < x / 1.6).astype(int)
    fall = save_model(StrengthRiskModel().fit({"fall_load_to_strength": x}, y),
                      tmp_path / "fall.json")
    assert guards.check_risk_model(fall) == ("fall_load_to_strength",)
    assert guards.check_risk_model(fall, cases=["stance", "fall"]) == ("fall_load_to_strength",)
    with pytest.raises(InputError, match=r"needs load case\(s\) \['fall'\].*--load fall"):
        guards.check_risk_model(fall, cases=["stance"])
    odd = save_model(StrengthRiskModel().fit({"jump_load_to_strength": x}, y),
                     tmp_path / "odd.json")
    with pytest.raises(InputError, match="osteofe strength does not compute"):
        guards.check_risk_model(odd)
