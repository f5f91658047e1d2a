"""Tests of label semantics: femur selection, side, metal, cropping, borders, memory."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import rotation

from meshing.errors import InputError
from meshing.imaging import label_mask, read_ct, read_totalsegmentator
from meshing.segmentation import (
    MESH_MEMORY_MODEL,
    crop_to_mask,
    detect_metal,
    estimate_mesh_memory,
    femur_side_from_labels,
    mask_touches_border,
    select_femur,
)
from meshing.types import CTVolume, ImageGrid, LabelMap

GRID = ImageGrid((20, 16, 12), np.array([0.8, 1.1, 2.0]), np.array([-30.0, 12.5, 80.0]),
                 rotation([2.0, -1.0, 1.0], 40.0))


def _two_femurs() -> LabelMap:
    arr = np.zeros(GRID.shape, np.int32)
    arr[2:6, 3:9, 2:8] = 75  # femur_left: 4*6*6 = 144 voxels
    arr[12:17, 3:9, 2:8] = 76  # femur_right: 5*6*6 = 180 voxels
    arr[14, 5, 8] = 9  # lesion on the right femur (just above it)
    arr[3, 12, 5] = 9  # a second lesion piece, far from the right femur
    return LabelMap(GRID, arr, names={75: "femur_left", 76: "femur_right", 9: "lesion"})


# --------------------------------------------------------------------------------------------
# femur selection and side
# --------------------------------------------------------------------------------------------


def test_select_femur_by_name_value_and_lesions(caplog: pytest.LogCaptureFixture) -> None:
    labels = _two_femurs()
    bone, lesion = select_femur(labels, "femur_left")
    assert bone.sum() == 144 and not lesion.any()
    bone_r, _ = select_femur(labels, 76)
    assert bone_r.sum() == 180
    with caplog.at_level(logging.WARNING, logger="meshing.segmentation"):
        bone, lesion = select_femur(labels, "femur_right", lesions=["lesion"])
    assert bone.sum() == 180 and np.argwhere(lesion).tolist() == [[14, 5, 8]]
    assert "dropped 1 lesion voxel(s) in 1 piece(s)" in caplog.text
    assert not (bone & lesion).any()
    with pytest.raises(InputError, match="no voxel of lesion label"):
        select_femur(labels, "femur_left", lesions=[9])
    with pytest.raises(InputError, match="'tumour' is not in the label map"):
        select_femur(labels, "femur_right", lesions=["tumour"])
    bone, lesion = select_femur(labels, "femur_right", lesions=["tumour"],
                                lesions_required=False)
    assert not lesion.any()
    with pytest.raises(InputError, match="is the bone label"):
        select_femur(labels, "femur_right", lesions=[76])


def test_select_femur_picks_the_only_femur_or_asks() -> None:
    labels = _two_femurs()
    with pytest.raises(InputError, match="holds 2 femurs") as err:
        select_femur(labels)
    assert "bone='femur_right'" in err.value.hint
    arr = labels.labels.copy()
    arr[arr == 75] = 0
    one = LabelMap(GRID, arr, names=labels.names)  # femur_left named but absent
    assert select_femur(one)[0].sum() == 180
    with pytest.raises(InputError, match="no label named like a femur"):
        select_femur(LabelMap(GRID, arr, names={76: "bone"}))


@pytest.mark.parametrize(("names", "side"), [
    (["femur_right"], "right"), (["FemurLeft", "lesion"], "left"), (["Femur_R"], "right"),
    (["L femur", "metastasis"], "left"), (["femoral head dx"], "right"), (["femur"], None),
    ({1: "bone", 2: "lesion"}, None), ({76: "femur_right", 77: "hip_left"}, "right"),
])
def test_femur_side_from_labels(names: object, side: str | None) -> None:
    assert femur_side_from_labels(names) == side  # type: ignore[arg-type]


def test_femur_side_from_labels_refuses_both_sides() -> None:
    with pytest.raises(InputError, match="both sides") as err:
        femur_side_from_labels({75: "femur_left", 76: "femur_right"})
    assert err.value.hint


# --------------------------------------------------------------------------------------------
# metal
# --------------------------------------------------------------------------------------------


def test_detect_metal_counts_box_and_margin() -> None:
    hu = np.full(GRID.shape, 400.0, np.float32)
    mask = np.zeros(GRID.shape, bool)
    mask[4:14, 4:12, 3:9] = True  # 10*8*6 = 480 voxels
    hu[6:8, 5, 4:7] = 8000.0  # 6 metal voxels inside the mask
    hu[15, 8, 5] = 5000.0  # one outside, 1 voxel (0.8 mm) beyond the mask's i = 13 face...
    hu[16, 8, 5] = 3000.0  # ... and one exactly at the threshold (not metal), 2 voxels beyond
    ct = CTVolume(GRID, hu)
    report = detect_metal(ct, mask)
    assert report.count == 6 and report.searched == 480
    assert report.fraction == pytest.approx(6 / 480) and report.flagged
    assert report.max_hu == 8000.0
    corners = GRID.index_to_world(np.array([[i, 5, k] for i in (6, 7) for k in (4, 5, 6)]))
    assert report.bbox_min_mm is not None and report.bbox_max_mm is not None
    np.testing.assert_allclose(report.bbox_min_mm, corners.min(axis=0))
    np.testing.assert_allclose(report.bbox_max_mm, corners.max(axis=0))
    assert "6 voxels above 3000 HU" in report.describe() and "implant" in report.describe()
    grown = detect_metal(ct, mask, margin_mm=1.7)  # reaches i = 15 (1.6 mm), not i = 16
    assert grown.count == 7 and grown.searched > 480
    assert not detect_metal(ct, mask, threshold_hu=9000.0).flagged
    assert not detect_metal(ct, mask, min_fraction=0.02).flagged
    clean = detect_metal(ct, ~mask & (hu < 3000))
    assert clean.count == 0 and clean.bbox_min_mm is None and not clean.flagged
    assert "no voxel above" in clean.describe()
    with pytest.raises(InputError, match="shape"):
        detect_metal(ct, mask[:-1])
    with pytest.raises(InputError, match="margin"):
        detect_metal(ct, mask, margin_mm=-1.0)


# --------------------------------------------------------------------------------------------
# cropping and borders
# --------------------------------------------------------------------------------------------


def test_crop_to_mask_keeps_world_positions_on_a_rotated_grid() -> None:
    i, j, k = np.indices(GRID.shape)
    ct = CTVolume(GRID, (i + 30 * j + 600 * k - 1000).astype(np.float32))
    labels = _two_femurs()
    mask = label_mask(labels, "femur_right")
    cropped_ct, cropped_labels = crop_to_mask(ct, labels, mask, margin_mm=2.0)
    # Margin in voxels: ceil(2 / (0.8, 1.1, 2.0)) = (3, 2, 1); the i axis is clipped at 19.
    assert cropped_ct.grid.shape == (20 - 9, 6 + 4, 6 + 2)
    assert cropped_labels.grid.same_as(cropped_ct.grid)
    np.testing.assert_allclose(cropped_ct.grid.direction, GRID.direction)
    offset = np.array([9, 1, 1])
    ijk = np.indices(cropped_ct.grid.shape).reshape(3, -1).T
    np.testing.assert_allclose(cropped_ct.grid.index_to_world(ijk),
                               GRID.index_to_world(ijk + offset), atol=1e-9)
    np.testing.assert_array_equal(cropped_ct.hu[tuple(ijk.T)], ct.hu[tuple((ijk + offset).T)])
    assert label_mask(cropped_labels, "femur_right").sum() == 180
    assert cropped_labels.names == labels.names
    tight, _ = crop_to_mask(ct, labels, mask, margin_mm=0.0)
    assert tight.grid.shape == (5, 6, 6)
    with pytest.raises(InputError, match="empty mask"):
        crop_to_mask(ct, labels, np.zeros(GRID.shape, bool))
    other = LabelMap(ImageGrid(GRID.shape, GRID.spacing, GRID.origin + 1.0, GRID.direction),
                     labels.labels)
    with pytest.raises(InputError, match="differs from the CT grid"):
        crop_to_mask(ct, other, mask)


def test_mask_touches_border() -> None:
    mask = np.zeros((5, 6, 7), bool)
    mask[1:4, 1:5, 1:6] = True
    assert mask_touches_border(mask) == []
    mask[0, 2, 3] = True
    mask[2, 2, 6] = True
    assert mask_touches_border(mask) == ["i_min", "k_max"]
    assert mask_touches_border(np.ones((2, 2, 2), np.uint8)) == [
        "i_min", "i_max", "j_min", "j_max", "k_min", "k_max"]
    with pytest.raises(InputError, match="3-D"):
        mask_touches_border(np.ones((3, 3)))


# --------------------------------------------------------------------------------------------
# memory estimate
# --------------------------------------------------------------------------------------------


def test_estimate_mesh_memory_follows_its_formula() -> None:
    grid = ImageGrid((40, 30, 20), np.array([0.5, 0.5, 1.0]), np.zeros(3))
    mask = np.zeros(grid.shape, bool)
    mask[5:25, 5:15, 2:12] = True  # 20 x 10 x 10 voxels = 10 x 5 x 10 mm
    m = MESH_MEMORY_MODEL
    volume, area = 10 * 5 * 10.0, 2 * (10 * 5 + 10 * 10 + 5 * 10.0)
    tets = m.tets_per_volume * volume / 2.0**3 + m.tets_per_area * area / 2.0**2
    expected = (m.fixed + m.per_grid_voxel * 40 * 30 * 20 + m.per_box_voxel * 26 * 16 * 16
                + m.per_tet * tets)
    assert estimate_mesh_memory(mask, grid, 2.0) == math.ceil(expected)
    quadratic = estimate_mesh_memory(mask, grid, 2.0, order=2)
    assert quadratic - estimate_mesh_memory(mask, grid, 2.0) == pytest.approx(
        (m.quadratic_factor - 1.0) * m.per_tet * tets, abs=2)
    assert estimate_mesh_memory(mask, grid, 1.0) > estimate_mesh_memory(mask, grid, 2.0)
    with pytest.raises(InputError, match="element size"):
        estimate_mesh_memory(mask, grid, 0.0)
    with pytest.raises(InputError, match="order"):
        estimate_mesh_memory(mask, grid, 2.0, order=3)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_femurs_selected_and_left_implant_flagged(shared_data: Path) -> None:
    ct = read_ct(shared_data / "ct" / "totalseg_example_ct.nii.gz")
    seg = read_totalsegmentator(shared_data / "ct" / "totalseg_example_seg.nii.gz")
    reports = {}
    for name, value in (("femur_left", 75), ("femur_right", 76)):
        bone, lesion = select_femur(seg, name)
        np.testing.assert_array_equal(bone, select_femur(seg, value)[0])
        assert not lesion.any()
        assert femur_side_from_labels([seg.names[value]]) == name.split("_")[1]
        reports[name] = detect_metal(ct, bone)
        # The scan reaches ~54 mm into the thighs: both femurs are cut by the lowest slice.
        assert mask_touches_border(bone) == ["k_min"]
        small_ct, small_seg = crop_to_mask(ct, seg, bone, margin_mm=6.0)
        assert int(label_mask(small_seg, name).sum()) == int(bone.sum())
        assert small_ct.grid.shape[2] < ct.grid.shape[2] // 4
    left, right = reports["femur_left"], reports["femur_right"]
    assert left.flagged and left.count == 273 and left.max_hu > 3300.0
    assert left.fraction == pytest.approx(273 / 4488)
    assert left.bbox_min_mm is not None and left.bbox_min_mm[0] > 50.0  # LPS +x: the left side
    assert not right.flagged and right.count == 0
    assert not detect_metal(ct, select_femur(seg, "femur_right")[0], margin_mm=6.0).flagged
