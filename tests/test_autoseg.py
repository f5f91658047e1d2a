"""Automatic femur segmentation (meshing.autoseg) and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meshing.autoseg import (
    LESION_CANDIDATE_LABEL,
    dice,
    mean_surface_distance,
    segment_femurs,
    segment_with_totalsegmentator,
    write_segmentation,
)
from meshing.errors import InputError
from meshing.imaging import read_ct, read_labels, write_ct
from meshing.phantom import LesionParams, PhantomParams, make_phantom
from meshing.types import CTVolume, ImageGrid
from osteofe.cli import main

#: A small noisy phantom with a pelvis-like acetabular shell 2 mm off the head.
PELVIS_PHANTOM = PhantomParams(voxel_size_mm=1.5, acetabulum_mm=5.0, joint_space_mm=2.0,
                               noise_sd_hu=30.0, blur_sigma_mm=0.7, distal_cut_mm=120.0)


@pytest.fixture(scope="module")
def pelvis_phantom():  # type: ignore[no-untyped-def]
    return make_phantom(PELVIS_PHANTOM)


@pytest.fixture(scope="module")
def pelvis_seg(pelvis_phantom):  # type: ignore[no-untyped-def]
    return segment_femurs(pelvis_phantom.ct)


def test_metrics_closed_forms() -> None:
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[2:6, 2:6, 2:6] = True  # 64 voxels
    b[2:6, 2:6, 3:7] = True  # shifted by one voxel: overlap 48
    assert dice(a, b) == pytest.approx(2 * 48 / 128)
    assert mean_surface_distance(a, a, (1.0, 1.0, 1.0)) == 0.0
    # a one-voxel shift along k at 2 mm spacing: the two k-faces are 2 mm off, side faces 0
    msd = mean_surface_distance(a, b, (1.0, 1.0, 2.0))
    assert 0.0 < msd <= 2.0


def test_phantom_with_touching_pelvis(pelvis_phantom, pelvis_seg) -> None:  # type: ignore
    seg = pelvis_seg
    (femur,) = seg.femurs
    assert femur.side == "right" and femur.label == 76 and femur.accepted
    assert femur.joint_space_found
    auto = np.isin(seg.labels.labels, (76, LESION_CANDIDATE_LABEL))
    truth = np.isin(pelvis_phantom.labels.labels, (1, 2))
    # measured 0.985 and 0.29 mm (1.5 mm voxels, 30 HU noise, 0.7 mm blur, 2 mm joint space)
    assert dice(auto, truth) >= 0.97
    assert mean_surface_distance(auto, truth, pelvis_phantom.ct.grid.spacing) < 0.75
    head = pelvis_phantom.truth
    assert np.linalg.norm(femur.head_centre_mm - head.head_centre_mm) < 3.0
    assert abs(femur.head_radius_mm - (head.head_radius_mm + 1.0)) <= 1.0
    # nothing of the pelvis-like shell is taken into the femur
    pelvis = pelvis_phantom.labels.labels == 3
    assert np.count_nonzero(auto & pelvis) <= 0.01 * np.count_nonzero(pelvis)
    assert seg.labels.names[76] == "femur_right"


def test_orientation_flip_gives_the_same_voxels(pelvis_phantom, pelvis_seg) -> None:  # type: ignore
    ct = pelvis_phantom.ct
    seg = pelvis_seg
    flipped_dir = np.diag([-1.0, -1.0, 1.0])
    # the same voxels stored with i and j reversed (the TotalSegmentator example's layout)
    origin = ct.grid.index_to_world(np.array([ct.grid.shape[0] - 1, ct.grid.shape[1] - 1, 0.0]))
    grid = ImageGrid(shape=ct.grid.shape, spacing=ct.grid.spacing, origin=origin,
                     direction=flipped_dir)
    other = segment_femurs(CTVolume(grid=grid, hu=np.ascontiguousarray(ct.hu[::-1, ::-1, :])))
    assert other.femurs[0].side == "right"
    assert np.array_equal(other.labels.labels[::-1, ::-1, :], seg.labels.labels)
    assert np.allclose(other.femurs[0].head_centre_mm, seg.femurs[0].head_centre_mm)


def test_lytic_lesion_candidate_is_a_separate_label() -> None:
    params = PhantomParams(voxel_size_mm=1.5, distal_cut_mm=120.0, noise_sd_hu=10.0)
    phantom = make_phantom(params, LesionParams(site="intertrochanteric", radius_mm=12.0))
    seg = segment_femurs(phantom.ct)
    candidate = seg.labels.labels == LESION_CANDIDATE_LABEL
    lesion = phantom.labels.labels == 2
    assert seg.labels.names[LESION_CANDIDATE_LABEL] == "lesion"
    assert np.count_nonzero(candidate & lesion) >= 0.5 * np.count_nonzero(candidate)
    assert seg.confidence()["lesion_candidates"]["used_for_mirels"] is False


def test_lesion_candidate_breaching_the_cortex_vs_inside_the_marrow() -> None:
    """A lytic lesion through the inferior neck cortex (the phantom's calcar site, centred
    4 mm inside the cortex, radius 10 mm) breaches it; one on the neck axis (radius 8 mm, in
    a neck of ~15 mm radius) is enclosed by bone. The truth comes from the phantom's labels:
    lesion voxels face to face with tissue outside the bone."""
    params = PhantomParams(voxel_size_mm=1.5, distal_cut_mm=120.0, noise_sd_hu=10.0)
    for site, radius, breaches in (("calcar", 10.0, True), ("neck", 8.0, False)):
        phantom = make_phantom(params, LesionParams(site=site, radius_mm=radius))
        lesion = phantom.labels.labels == 2
        outside = phantom.labels.labels == 0
        touching = np.zeros_like(lesion)
        for axis in range(3):
            for step in (1, -1):
                touching |= lesion & np.roll(outside, step, axis=axis)
        assert bool(touching.any()) is breaches  # the phantom is what the test assumes
        seg = segment_femurs(phantom.ct)
        (candidate,) = seg.lesions
        found = seg.labels.labels == LESION_CANDIDATE_LABEL
        # measured: calcar 731 of 734 candidate voxels in the lesion, breach fraction 0.23,
        # 0.79 inside the bone mask; neck 571 of 584, breach 0.0, all inside
        assert np.count_nonzero(found & lesion) >= 0.9 * np.count_nonzero(found)
        assert np.count_nonzero(found & lesion) >= 0.5 * np.count_nonzero(lesion)
        assert candidate.breaches_cortex is breaches
        if breaches:
            assert candidate.breach_fraction >= 0.1 and candidate.inside_fraction < 1.0
        else:
            assert candidate.breach_fraction == 0.0 and candidate.inside_fraction == 1.0
        record = seg.confidence()["lesion_candidates"]["candidates"]
        assert record == [candidate.to_dict()]


def test_working_grid_block_means_keep_world_positions() -> None:
    """A CT finer than ``work_spacing_mm`` is averaged over blocks: a field linear in world
    coordinates averages to its value at each block's centre (exact), and the labels come
    back voxel for voxel."""
    from meshing.autoseg import _block_mean_ct, _block_repeat, _work_factor

    direction = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])
    grid = ImageGrid(shape=(9, 8, 13), spacing=np.array([0.5, 0.7, 0.4]),
                     origin=np.array([10.0, -3.0, 5.0]), direction=direction)
    factor = _work_factor(grid, 1.5)
    assert factor.tolist() == [3, 2, 3]
    world = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T)
    coeff = np.array([2.0, -3.0, 5.0])
    hu = (world @ coeff).reshape(grid.shape).astype(np.float32)
    work = _block_mean_ct(CTVolume(grid=grid, hu=hu), factor)
    assert work.grid.shape == (3, 4, 5)  # 13 voxels in blocks of 3: the last one padded
    centres = work.grid.index_to_world(np.indices(work.grid.shape).reshape(3, -1).T)
    inner = (work.grid.shape[0], work.grid.shape[1], 4)  # blocks without padding
    expected = (centres @ coeff).reshape(work.grid.shape)[:, :, :4]
    assert np.allclose(work.hu[:, :, :4], expected, atol=1e-3)
    assert inner == expected.shape
    labels = np.arange(np.prod(work.grid.shape), dtype=np.int32).reshape(work.grid.shape)
    back = _block_repeat(labels, factor, grid.shape)
    assert back.shape == grid.shape
    assert back[5, 3, 12] == labels[5 // 3, 3 // 2, 12 // 3]


def test_refuses_a_ct_without_bone() -> None:
    grid = ImageGrid(shape=(20, 20, 20), spacing=np.ones(3), origin=np.zeros(3))
    with pytest.raises(InputError, match="no bone"):
        segment_femurs(CTVolume(grid=grid, hu=np.full((20, 20, 20), 40.0, np.float32)))


def test_totalsegmentator_backend_missing_message() -> None:
    pytest.importorskip("numpy")
    try:
        import totalsegmentator  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover
        pytest.skip("TotalSegmentator is installed here")
    with pytest.raises(InputError, match="not installed") as info:
        segment_with_totalsegmentator("ct.nii.gz")
    assert "osteofe[segment]" in (info.value.hint or "")


def test_cli_segment_writes_labels_and_confidence(tmp_path: Path, pelvis_phantom) -> None:  # type: ignore
    ct_path = tmp_path / "ct.nii.gz"
    write_ct(pelvis_phantom.ct, ct_path)
    out = tmp_path / "seg.nii.gz"
    assert main(["-q", "segment", "--ct", str(ct_path), "--out", str(out)]) == 0
    labels = read_labels(out)
    record = json.loads((tmp_path / "seg.confidence.json").read_text())
    assert record["source"] == "automatic" and record["femurs"][0]["side"] == "right"
    assert 76 in np.unique(labels.labels)
    # a refusal writes nothing
    bare = tmp_path / "water.nii.gz"
    grid = ImageGrid(shape=(16, 16, 16), spacing=np.ones(3), origin=np.zeros(3))
    write_ct(CTVolume(grid=grid, hu=np.zeros((16, 16, 16), np.float32)), bare)
    bad = tmp_path / "bad.nii.gz"
    assert main(["-q", "segment", "--ct", str(bare), "--out", str(bad)]) != 0
    assert not bad.exists() and not (tmp_path / "bad.confidence.json").exists()
    with pytest.raises(InputError):
        write_segmentation(ct_path, tmp_path / "seg.txt")


@pytest.mark.data
def test_real_example_ct_against_totalsegmentator(shared_data: Path) -> None:
    ct = read_ct(shared_data / "ct" / "totalseg_example_ct.nii.gz")
    ref = read_labels(shared_data / "ct" / "totalseg_example_seg.nii.gz")
    seg = segment_femurs(ct)
    by_side = {f.side: f for f in seg.femurs}
    # the left femur carries a metal implant: refused rather than segmented through streaks
    assert not by_side["left"].accepted
    assert any("metal" in reason for reason in by_side["left"].reasons)
    assert by_side["right"].accepted
    auto = np.isin(seg.labels.labels, (76, LESION_CANDIDATE_LABEL))
    truth = ref.labels == 76
    # the refusal's reason is real: the metal (> 3000 HU) lies inside TotalSegmentator's
    # femur_left
    metal = np.asarray(ct.hu) > 3000.0
    assert metal.any() and np.all(ref.labels[metal] == 75)
    # measured 0.954 / 0.78 mm (the issue asks >= 0.95 / < 1 mm)
    assert dice(auto, truth) >= 0.95
    assert mean_surface_distance(auto, truth, ct.grid.spacing) < 1.0
    # the joint sphere sits on TotalSegmentator's head: its centre within 5 mm of the
    # centre of TotalSegmentator's femur voxels above the sphere's equator
    centre = by_side["right"].head_centre_mm
    top = np.argwhere(truth)
    world = ct.grid.index_to_world(top.astype(np.float64))
    cap = world[world[:, 2] > centre[2]]
    assert np.linalg.norm(cap[:, :2].mean(axis=0) - centre[:2]) < 5.0
    # the refused femur, kept for measurement, changes nothing in the labels, and it is
    # far from TotalSegmentator's femur_left (measured Dice 0.55, 6.2 mm: the prosthetic
    # head and stem): refusing it is what keeps a wrong label out of the model
    kept = segment_femurs(ct, keep_refused=True)
    assert np.array_equal(kept.labels.labels, seg.labels.labels)
    assert seg.refused is None and kept.refused is not None
    assert kept.refused.names == {75: "femur_left"}
    assert set(np.unique(kept.refused.labels)) == {0, 75}
    left = kept.refused.labels == 75
    assert dice(left, ref.labels == 75) < 0.8


def test_request_without_labels_mesh_or_segmenter_is_refused(tmp_path: Path) -> None:
    from osteofe.pipeline import StrengthRequest

    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"")
    with pytest.raises(InputError, match="neither a label map nor a mesh"):
        StrengthRequest(ct_path=ct, labels_path=None, body_mass_kg=75.0).validate()
