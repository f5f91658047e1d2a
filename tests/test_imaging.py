"""Tests of the SimpleITK adapter: orientation, round trips, errors, real data."""

from __future__ import annotations

import gzip
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from meshing.errors import ImageReadError, InputError
from meshing.imaging import (
    label_mask,
    read_ct,
    read_labels,
    require_same_grid,
    write_ct,
    write_labels,
)
from meshing.types import CTVolume, ImageGrid, LabelMap


def _rotation(axis: list[float], angle_deg: float) -> np.ndarray:
    """Rodrigues rotation matrix."""
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    t = math.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


ROTATED_GRID = ImageGrid(
    shape=(13, 17, 19),
    spacing=np.array([0.7, 0.9, 1.3]),
    origin=np.array([-12.5, 40.25, 100.0]),
    direction=_rotation([1.0, 2.0, 3.0], 30.0),
)


def _asymmetric_ct(grid: ImageGrid = ROTATED_GRID) -> CTVolume:
    """Every voxel holds a different whole value: i + 20 j + 400 k - 1000 (int16 range)."""
    i, j, k = np.indices(grid.shape)
    return CTVolume(grid=grid, hu=(i + 20 * j + 400 * k - 1000).astype(np.float32))


# --------------------------------------------------------------------------------------------
# orientation and round trips
# --------------------------------------------------------------------------------------------


def test_ijk_order_matches_simpleitk_index(tmp_path: Path) -> None:
    # A file written by SimpleITK itself (not by us): pixel (x=1, y=2, z=3) is a marker.
    image = sitk.Image([5, 6, 7], sitk.sitkInt16)
    image.SetPixel(1, 2, 3, 777)
    image.SetSpacing([0.5, 0.6, 2.0])
    path = tmp_path / "marker.nii.gz"
    sitk.WriteImage(image, str(path))
    ct = read_ct(path)
    assert ct.grid.shape == (5, 6, 7)
    assert ct.hu.dtype == np.float32 and ct.hu.flags.c_contiguous
    assert np.argwhere(ct.hu == 777).tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(ct.grid.spacing, [0.5, 0.6, 2.0])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_roundtrip_rotated_grid_keeps_voxels_at_their_world_points(
    tmp_path: Path, suffix: str
) -> None:
    ct = _asymmetric_ct()
    path = write_ct(ct, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    assert back.grid.shape == ct.grid.shape
    np.testing.assert_array_equal(back.hu, ct.hu)
    assert back.grid.same_as(ct.grid, tol_mm=1e-4)

    # Voxel (i, j, k) of the original lands on the same world point after write + read, and
    # the value found there is the original one.
    rng = np.random.default_rng(1)
    ijk = np.column_stack([rng.integers(0, n, 25) for n in ct.grid.shape])
    world = ct.grid.index_to_world(ijk)
    np.testing.assert_allclose(back.grid.index_to_world(ijk), world, atol=1e-4)
    found = np.rint(back.grid.world_to_index(world)).astype(int)
    np.testing.assert_array_equal(found, ijk)
    np.testing.assert_array_equal(back.hu[tuple(found.T)], ct.hu[tuple(ijk.T)])

    # ImageGrid.index_to_world agrees with ITK on the file we wrote.
    image = sitk.ReadImage(str(path))
    for idx, xyz in zip(ijk.tolist(), world, strict=True):
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(idx), xyz, atol=1e-4)
    cont = [2.25, 7.5, 11.75]
    np.testing.assert_allclose(image.TransformContinuousIndexToPhysicalPoint(cont),
                               back.grid.index_to_world(cont), atol=1e-4)


def test_ct_storage_type_follows_values(tmp_path: Path) -> None:
    whole = write_ct(_asymmetric_ct(), tmp_path / "whole.nii.gz")
    assert sitk.ReadImage(str(whole)).GetPixelID() == sitk.sitkInt16
    frac = _asymmetric_ct()
    frac = CTVolume(grid=frac.grid, hu=frac.hu + np.float32(0.25))
    path = write_ct(frac, tmp_path / "frac.nii.gz")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(read_ct(path).hu, frac.hu)
    big = CTVolume(grid=frac.grid, hu=np.full(frac.grid.shape, 40000.0, np.float32))
    path = write_ct(big, tmp_path / "big.nii.gz")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkFloat32


def test_write_is_atomic_and_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "ct.nii.gz"
    write_ct(_asymmetric_ct(), target)
    ct2 = CTVolume(grid=ROTATED_GRID, hu=np.zeros(ROTATED_GRID.shape, np.float32))
    write_ct(ct2, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ct.nii.gz"]
    assert float(np.abs(read_ct(target).hu).max()) == 0.0


def test_write_refuses_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unsupported file name ending") as err:
        write_ct(_asymmetric_ct(), tmp_path / "ct.png")
    assert ".nii.gz" in err.value.hint
    assert not list(tmp_path.iterdir())


def test_labels_roundtrip_with_names_nrrd(tmp_path: Path) -> None:
    arr = np.zeros(ROTATED_GRID.shape, np.int32)
    arr[2:5, 3:9, 4:6] = 1
    arr[7, 8, 9] = 300  # needs uint16
    labels = LabelMap(grid=ROTATED_GRID, labels=arr, names={1: "bone", 300: "lesion"})
    back = read_labels(write_labels(labels, tmp_path / "seg.nrrd"))
    np.testing.assert_array_equal(back.labels, arr)
    assert back.labels.dtype == np.int32
    assert back.names == {1: "bone", 300: "lesion"}
    assert back.grid.same_as(ROTATED_GRID, tol_mm=1e-4)
    nifti = read_labels(write_labels(labels, tmp_path / "seg.nii.gz"), names={1: "femur"})
    np.testing.assert_array_equal(nifti.labels, arr)
    assert nifti.names == {1: "femur"}


def test_read_labels_accepts_integral_float_and_refuses_fractions(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), np.float32)
    values[1, 2, 3] = 76.0
    sitk.WriteImage(sitk.GetImageFromArray(values.transpose(2, 1, 0)), str(tmp_path / "f.nii"))
    labels = read_labels(tmp_path / "f.nii")
    assert labels.labels.dtype == np.int32 and labels.labels[1, 2, 3] == 76
    values[0, 0, 0] = 0.5
    sitk.WriteImage(sitk.GetImageFromArray(values.transpose(2, 1, 0)), str(tmp_path / "p.nii"))
    with pytest.raises(ImageReadError, match="non-integer values"):
        read_labels(tmp_path / "p.nii")
    neg = np.zeros((4, 5, 6), np.int16)
    neg[0, 0, 0] = -3
    sitk.WriteImage(sitk.GetImageFromArray(neg), str(tmp_path / "n.nii"))
    with pytest.raises(ImageReadError, match="outside 0"):
        read_labels(tmp_path / "n.nii")


def test_singleton_fourth_dimension_is_read_as_volume(tmp_path: Path) -> None:
    image = sitk.Image([5, 6, 7, 1], sitk.sitkInt16)
    image.SetPixel([4, 1, 2, 0], 99)
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    ct = read_ct(tmp_path / "t1.nii.gz")
    assert ct.grid.shape == (5, 6, 7)
    assert np.argwhere(ct.hu == 99).tolist() == [[4, 1, 2]]


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def _expect_read_error(path: Path, match: str) -> ImageReadError:
    with pytest.raises(ImageReadError, match=match) as err:
        read_ct(path)
    assert err.value.hint, "every ImageReadError carries a hint"
    assert "\n" not in err.value.message
    return err.value


def test_missing_file(tmp_path: Path) -> None:
    _expect_read_error(tmp_path / "nope.nii.gz", "not found")


def test_non_image_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "notes.nii.gz").write_text("this is not an image")
    _expect_read_error(tmp_path / "notes.nii.gz", "not a readable image")
    (tmp_path / "empty.nii").write_bytes(b"")
    _expect_read_error(tmp_path / "empty.nii", "empty")
    (tmp_path / "empty_dir").mkdir()
    _expect_read_error(tmp_path / "empty_dir", "no DICOM series")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    full = write_ct(_asymmetric_ct(), tmp_path / f"full{suffix}")
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    _expect_read_error(cut, "truncated")


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    full = write_ct(_asymmetric_ct(), tmp_path / "full.nii.gz")
    raw = gzip.decompress(full.read_bytes())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(raw[:352]) + b"\x00garbage" * 50)
    _expect_read_error(bad, "truncated or corrupt")


def test_2d_and_4d_images(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([5, 6], sitk.sitkInt16), str(tmp_path / "two.nii.gz"))
    _expect_read_error(tmp_path / "two.nii.gz", "2-D image")
    sitk.WriteImage(sitk.Image([5, 6, 1], sitk.sitkInt16), str(tmp_path / "one.nrrd"))
    _expect_read_error(tmp_path / "one.nrrd", "single slice")
    sitk.WriteImage(sitk.Image([5, 6, 7, 3], sitk.sitkInt16), str(tmp_path / "four.nii.gz"))
    _expect_read_error(tmp_path / "four.nii.gz", "4-D image")


def test_nan_and_inf_voxels(tmp_path: Path) -> None:
    values = np.zeros((4, 5, 6), np.float32)
    values[1, 1, 1] = np.nan
    values[2, 2, 2] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "nan.nii.gz"))
    err = _expect_read_error(tmp_path / "nan.nii.gz", "NaN/inf")
    assert "2 NaN/inf voxel(s) out of 120" in err.message


def test_vector_image_refused(tmp_path: Path) -> None:
    image = sitk.Image([5, 6, 7], sitk.sitkVectorFloat32, 3)
    sitk.WriteImage(image, str(tmp_path / "rgb.nrrd"))
    _expect_read_error(tmp_path / "rgb.nrrd", "3 components per voxel")


def _write_dicom_series(folder: Path, uid: str, n: int, offset: int) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        sl = sitk.GetImageFromArray(np.arange(12, dtype=np.int16).reshape(3, 4) + offset)
        sl.SetSpacing([0.5, 0.7])
        tags = {
            "0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": uid, "0020|0013": str(k + 1),
            "0020|0032": f"10\\20\\{2.5 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0008|0018": f"{uid}.{k + 1}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid}_{k}.dcm"))
        writer.Execute(sl)


def test_dicom_folder_with_two_series_reads_the_largest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_dicom_series(tmp_path, "1.2.3.4", 4, 0)
    _write_dicom_series(tmp_path, "1.2.3.5", 6, 1000)
    with caplog.at_level(logging.INFO, logger="meshing.imaging"):
        ct = read_ct(tmp_path)
    assert ct.grid.shape == (4, 3, 6)
    np.testing.assert_allclose(ct.grid.spacing, [0.5, 0.7, 2.5])
    np.testing.assert_allclose(ct.grid.origin, [10.0, 20.0, 0.0])
    assert ct.hu[3, 2, 5] == 1000 + 11  # pixel (x=3, y=2) of the 6-slice series
    assert "1.2.3.5 (6 slices)" in caplog.text and "1.2.3.4 (4)" in caplog.text


# --------------------------------------------------------------------------------------------
# label handling and grid checks
# --------------------------------------------------------------------------------------------


def _labels() -> LabelMap:
    arr = np.zeros((6, 7, 8), np.int32)
    arr[1:3, 1:4, 2:5] = 1  # 2*3*3 = 18 voxels
    arr[4, 5, 6] = 76
    return LabelMap(grid=ImageGrid((6, 7, 8), np.ones(3), np.zeros(3)), labels=arr,
                    names={1: "bone", 76: "femur_right"})


def test_label_mask_by_value_and_name() -> None:
    labels = _labels()
    assert label_mask(labels, 1).sum() == 18
    assert label_mask(labels, np.int64(76)).sum() == 1
    assert label_mask(labels, "femur_right")[4, 5, 6]
    assert label_mask(labels, "FEMUR_RIGHT").sum() == 1
    assert label_mask(labels, "bone").dtype == np.bool_


def test_label_mask_errors_list_present_labels() -> None:
    labels = _labels()
    with pytest.raises(InputError, match=r"label 75 is absent.*1 \(bone\), 76 \(femur_right\)"):
        label_mask(labels, 75)
    with pytest.raises(InputError, match="'femur_left' is not in the label map"):
        label_mask(labels, "femur_left")
    with pytest.raises(InputError, match="background"):
        label_mask(labels, 0)
    empty = LabelMap(grid=labels.grid, labels=np.zeros(labels.grid.shape, np.int32))
    with pytest.raises(InputError, match="empty") as err:
        label_mask(empty, 1)
    assert err.value.hint


def test_require_same_grid() -> None:
    g = ROTATED_GRID
    require_same_grid(g, ImageGrid(g.shape, g.spacing, g.origin + 1e-5, g.direction))
    other = ImageGrid((13, 17, 20), np.array([0.7, 0.9, 1.5]), g.origin + 2.0, g.direction)
    with pytest.raises(InputError) as err:
        require_same_grid(g, other)
    msg = err.value.message
    assert "(13, 17, 19)" in msg and "(13, 17, 20)" in msg
    assert "(0.7, 0.9, 1.3)" in msg and "(0.7, 0.9, 1.5)" in msg
    assert "(-12.5, 40.25, 100)" in msg and "(-10.5, 42.25, 102)" in msg
    assert "resample" in err.value.hint
    rotated = ImageGrid(g.shape, g.spacing, g.origin, np.eye(3))
    with pytest.raises(InputError, match="direction"):
        require_same_grid(g, rotated)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_totalsegmentator_ct_and_labels(shared_data: Path) -> None:
    ct = read_ct(shared_data / "ct" / "totalseg_example_ct.nii.gz")
    seg = read_labels(shared_data / "ct" / "totalseg_example_seg.nii.gz",
                      names={75: "femur_left", 76: "femur_right"})
    assert ct.grid.shape == (122, 101, 112)
    np.testing.assert_allclose(ct.grid.spacing, 3.0, atol=1e-3)
    require_same_grid(ct.grid, seg.grid)
    outside = ct.hu[ct.hu < -900]
    assert abs(float(np.median(outside)) + 1000.0) < 30.0  # air
    right = label_mask(seg, "femur_right")
    left = label_mask(seg, 75)
    assert right.sum() > 1000 and left.sum() > 1000
    assert float(ct.hu[right].max()) > 700.0  # cortical bone
    assert 50.0 < float(np.median(ct.hu[right])) < 400.0
    # LPS orientation check on real anatomy: the patient's right is -x.
    centroid = {side: seg.grid.index_to_world(np.argwhere(mask).mean(axis=0))
                for side, mask in (("right", right), ("left", left))}
    assert centroid["right"][0] < centroid["left"][0] - 100.0


@pytest.mark.data
def test_real_dicom_series(shared_data: Path) -> None:
    ct = read_ct(shared_data / "dicom_pelvis")
    assert ct.grid.shape == (512, 512, 30)
    np.testing.assert_allclose(ct.grid.spacing, 1.0, atol=0.05)
    assert abs(float(np.median(ct.hu[ct.hu < -900])) + 1000.0) < 30.0  # rescale applied
    assert float(np.percentile(ct.hu, 99.9)) > 700.0
