"""Tests of the SimpleITK adapter: orientation, round trips, errors, real data."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotation

from meshing.errors import ImageReadError, InputError
from meshing.imaging import (
    TOTALSEGMENTATOR_V2_LABELS,
    align_labels,
    label_mask,
    list_dicom_series,
    read_ct,
    read_label_folder,
    read_labels,
    read_totalsegmentator,
    require_same_grid,
    write_ct,
    write_labels,
)
from meshing.types import CTVolume, ImageGrid, LabelMap

ROTATED_GRID = ImageGrid(
    shape=(13, 17, 19),
    spacing=np.array([0.7, 0.9, 1.3]),
    origin=np.array([-12.5, 40.25, 100.0]),
    direction=rotation([1.0, 2.0, 3.0], 30.0),
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
    assert "reading DICOM series 1.2.3.5 (CT, 6 files)" in caplog.text
    assert "1.2.3.4 (CT, 4 files)" in caplog.text
    assert [s.uid for s in list_dicom_series(tmp_path)] == ["1.2.3.5", "1.2.3.4"]
    chosen = read_ct(tmp_path, series_uid="1.2.3.4")
    assert chosen.grid.shape == (4, 3, 4) and chosen.hu[3, 2, 3] == 11
    with pytest.raises(ImageReadError, match=r"no DICOM series with SeriesInstanceUID 9\.9.*"
                       r"1\.2\.3\.5 \(CT, 6 files\)") as err:
        read_ct(tmp_path, series_uid="9.9")
    assert "list_dicom_series" in err.value.hint


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
# DICOM series: choice, modality, sorting, rescale, tilt, spacing
# --------------------------------------------------------------------------------------------

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _write_slices(
    folder: Path,
    positions: list[tuple[float, float, float]],
    planes: list[np.ndarray],
    *,
    uid: str = "1.2.826.0.9",
    iop: tuple[float, ...] = AXIAL,
    pixel: tuple[float, float] = (1.0, 2.0),
    modality: str = "CT",
    rescale: tuple[float, float] = (1.0, 0.0),
    names: list[str] | None = None,
) -> None:
    """One DICOM file per slice; ``planes[k]`` is [row, col] in HU, stored via the rescale."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    slope, intercept = rescale
    for k, (pos, plane) in enumerate(zip(positions, planes, strict=True)):
        image = sitk.GetImageFromArray(np.asarray(plane, dtype=np.int16))
        image.SetSpacing(pixel)
        tags = {
            "0008|0060": modality, "0020|000d": "1.2.826.0", "0020|000e": uid,
            "0008|0018": f"{uid}.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:g}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6g}" for v in iop),
            "0028|1052": f"{intercept:g}", "0028|1053": f"{slope:g}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / (names[k] if names else f"{uid}_{k:03d}.dcm")))
        writer.Execute(image)


def _linear_hu(world: np.ndarray) -> np.ndarray:
    """A linear HU field of world position (mm): every trilinear scheme reproduces it exactly."""
    return 2.0 * world[..., 0] + 3.0 * world[..., 1] + 4.0 * world[..., 2] - 100.0


def _planes_of(positions: list[tuple[float, float, float]], rows: int, cols: int,
               iop: tuple[float, ...] = AXIAL, pixel: tuple[float, float] = (1.0, 2.0),
               ) -> list[np.ndarray]:
    """The linear field sampled at each slice's pixel centres ([row, col])."""
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    jj, ii = np.mgrid[0:rows, 0:cols]
    return [_linear_hu(np.asarray(p) + ii[..., None] * pixel[0] * r
                       + jj[..., None] * pixel[1] * c) for p in positions]


def test_dicom_slices_sorted_by_position_not_name(tmp_path: Path) -> None:
    # z descends with the file name, and names sort as 10 < 2 < 3: neither order is right.
    z = [20.0, 18.0, 16.0, 14.0]
    positions = [(5.0, -3.0, zk) for zk in z]
    planes = _planes_of(positions, rows=3, cols=4)
    _write_slices(tmp_path, positions, planes, names=["s2.dcm", "s10.dcm", "s3.dcm", "x.dcm"])
    (tmp_path / "README.txt").write_text("not DICOM")
    ct = read_ct(tmp_path)
    assert ct.grid.shape == (4, 3, 4)
    np.testing.assert_allclose(ct.grid.origin, [5.0, -3.0, 14.0])
    np.testing.assert_allclose(ct.grid.spacing, [1.0, 2.0, 2.0])
    np.testing.assert_allclose(ct.grid.direction, np.eye(3))
    ijk = np.indices(ct.grid.shape).reshape(3, -1).T
    np.testing.assert_array_equal(ct.hu[tuple(ijk.T)],
                                  _linear_hu(ct.grid.index_to_world(ijk)).astype(np.float32))


def test_dicom_oblique_orientation_and_per_slice_rescale(tmp_path: Path) -> None:
    # An oblique (not tilted) series: slices step along their normal r x c.
    iop = (1.0, 0.0, 0.0, 0.0, 0.8, 0.6)
    normal = np.cross(iop[:3], iop[3:])
    positions = [tuple(np.array([1.0, 2.0, 3.0]) + 2.5 * k * normal) for k in range(3)]
    planes = [np.arange(12).reshape(3, 4) * 10 + 100 * k for k in range(3)]
    for k in range(3):  # each slice its own intercept; slope 2
        _write_slices(tmp_path, [positions[k]], [planes[k]], iop=iop, pixel=(0.5, 0.7),
                      rescale=(2.0, -1024.0 - 2 * k), names=[f"f{k}.dcm"])
    raw = np.frombuffer((tmp_path / "f1.dcm").read_bytes()[-24:], dtype="<i2").reshape(3, 4)
    np.testing.assert_array_equal(2 * raw.astype(int) - 1026, planes[1])  # stored != HU
    ct = read_ct(tmp_path)
    np.testing.assert_allclose(ct.grid.direction, np.column_stack([iop[:3], iop[3:], normal]),
                               atol=1e-6)
    np.testing.assert_allclose(ct.grid.spacing, [0.5, 0.7, 2.5], atol=1e-6)
    np.testing.assert_allclose(ct.grid.index_to_world([3, 2, 2]),
                               np.asarray(positions[2]) + 3 * 0.5 * np.asarray(iop[:3])
                               + 2 * 0.7 * np.asarray(iop[3:]), atol=1e-6)
    for k in range(3):
        np.testing.assert_array_equal(ct.hu[:, :, k], planes[k].T)


def test_dicom_modality_and_empty_folder(tmp_path: Path) -> None:
    planes = [np.zeros((3, 4))] * 3
    positions = [(0.0, 0.0, float(k)) for k in range(3)]
    _write_slices(tmp_path / "mr", positions, planes, modality="MR", uid="1.2.3.7")
    with pytest.raises(ImageReadError, match=r"holds no CT.*modality MR is not a CT") as err:
        read_ct(tmp_path / "mr")
    assert "Modality CT" in err.value.hint
    with pytest.raises(ImageReadError, match=r"is not a CT: its modality is MR"):
        read_ct(tmp_path / "mr", series_uid="1.2.3.7")
    # A bigger MR series next to a CT: the CT is read, not the largest series.
    _write_slices(tmp_path / "mr", positions[:2], planes[:2], uid="1.2.3.8")
    assert read_ct(tmp_path / "mr").grid.shape == (4, 3, 2)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 20)
    (tmp_path / "docs" / "b.txt").write_text("hello")
    with pytest.raises(ImageReadError, match=r"no DICOM series \(no DICOM image among its 2 "):
        read_ct(tmp_path / "docs")
    with pytest.raises(InputError, match="is a file, not a DICOM folder"):
        read_ct(tmp_path / "docs" / "b.txt", series_uid="1.2")


def test_dicom_gantry_tilt_refused_or_resampled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Axial slices 2 mm apart whose origin moves 1 mm along y per slice: tilt atan(1/2).
    positions = [(0.0, float(k), 2.0 * k) for k in range(5)]
    _write_slices(tmp_path, positions, _planes_of(positions, rows=4, cols=3))
    with pytest.raises(ImageReadError, match=r"gantry tilt of 26\.57 deg") as err:
        read_ct(tmp_path)
    assert "resample=True" in err.value.hint
    with caplog.at_level(logging.WARNING, logger="meshing.imaging"):
        ct = read_ct(tmp_path, resample=True)
    assert "gantry tilt" in caplog.text and "resampled" in caplog.text
    np.testing.assert_allclose(ct.grid.direction, np.eye(3))
    np.testing.assert_allclose(ct.grid.spacing, [1.0, 2.0, 2.0])
    np.testing.assert_allclose(ct.grid.origin, [0.0, 0.0, 0.0])
    # y from 0 to 4 (last slice's origin) + 3 rows * 2 mm = 10 mm -> 6 voxels.
    assert ct.grid.shape == (3, 6, 5)
    world = ct.grid.index_to_world(np.indices(ct.grid.shape).reshape(3, -1).T)
    acquired = (world[:, 1] >= world[:, 2] / 2.0 - 1e-9) & (
        world[:, 1] <= world[:, 2] / 2.0 + 6.0 + 1e-9)
    hu = ct.hu.reshape(-1)
    np.testing.assert_allclose(hu[acquired], _linear_hu(world[acquired]), atol=1e-3)
    assert np.all(hu[~acquired] == hu[acquired].min())  # outside: the series' lowest value
    # Slice k covers y in [k, k + 6] mm; the grid's rows sit at y = 0, 2, ..., 10 mm.
    assert (~acquired).sum() == 3 * (2 + 3 + 2 + 3 + 2)


def test_dicom_nonuniform_spacing_refused_or_resampled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    z = [0.0, 1.0, 2.0, 4.0, 5.0]  # the slice at 3 mm is missing
    positions = [(0.0, 0.0, zk) for zk in z]
    _write_slices(tmp_path, positions, _planes_of(positions, rows=2, cols=3),
                  names=[f"{n}.dcm" for n in "qwert"])
    with pytest.raises(ImageReadError, match=r"non-uniform slice spacing.*from 1 to 2 mm.*"
                       r"between e\.dcm and r\.dcm"):
        read_ct(tmp_path)
    with caplog.at_level(logging.WARNING, logger="meshing.imaging"):
        ct = read_ct(tmp_path, resample=True)
    assert "non-uniform" in caplog.text
    assert ct.grid.shape == (3, 2, 6)
    np.testing.assert_allclose(ct.grid.spacing, [1.0, 2.0, 1.0])
    world = ct.grid.index_to_world(np.indices(ct.grid.shape).reshape(3, -1).T)
    np.testing.assert_allclose(ct.hu.reshape(-1), _linear_hu(world), atol=1e-3)


def test_dicom_duplicate_positions_and_mixed_orientations(tmp_path: Path) -> None:
    planes = [np.zeros((3, 4))] * 3
    _write_slices(tmp_path / "dup", [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)], planes)
    with pytest.raises(ImageReadError, match="1 duplicate slice position"):
        read_ct(tmp_path / "dup")
    mixed = tmp_path / "mixed"
    _write_slices(mixed, [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)], planes[:2], names=["a.dcm", "b.dcm"])
    _write_slices(mixed, [(0.0, 0.0, 2.0)], planes[:1], iop=(1, 0, 0, 0, 0, -1),
                  names=["c.dcm"])
    with pytest.raises(ImageReadError, match="mixes 2 slice orientations"):
        read_ct(mixed)


# --------------------------------------------------------------------------------------------
# 3D Slicer segmentations and TotalSegmentator output
# --------------------------------------------------------------------------------------------


def _write_seg_nrrd(path: Path, layers: np.ndarray, segments: list[tuple[str, int, int]]) -> None:
    """A segmentation as 3D Slicer writes it: ``layers`` is [i, j, k, layer] uint8,
    ``segments`` are (name, label value, layer); RAS space, as Slicer's own files."""
    ni, nj, nk, nl = layers.shape
    lines = ["NRRD0004", "type: unsigned char", "space: right-anterior-superior"]
    if nl == 1:
        lines += ["dimension: 3", f"sizes: {ni} {nj} {nk}",
                  "space directions: (-1,0,0) (0,-2,0) (0,0,3)", "kinds: domain domain domain"]
        data = layers[..., 0].transpose(2, 1, 0).tobytes()
    else:
        lines += ["dimension: 4", f"sizes: {nl} {ni} {nj} {nk}",
                  "space directions: none (-1,0,0) (0,-2,0) (0,0,3)",
                  "kinds: list domain domain domain"]
        data = layers.transpose(2, 1, 0, 3).tobytes()
    lines += ["encoding: gzip", "space origin: (10,20,30)"]
    for n, (name, value, layer) in enumerate(segments):
        lines += [f"Segment{n}_ID:=Segment_{n + 1}", f"Segment{n}_Name:={name}",
                  f"Segment{n}_LabelValue:={value}", f"Segment{n}_Layer:={layer}"]
    lines += ["Segmentation_ReferenceImageExtentOffset:=0 0 0", "", ""]
    path.write_bytes("\n".join(lines).encode() + gzip.compress(data))


def test_slicer_seg_nrrd_single_and_flattened_layers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layers = np.zeros((4, 5, 6, 2), np.uint8)
    layers[1, 2, 3, 0] = 1  # femur
    layers[2, 2, 2, 0] = 2  # trochanter
    layers[3, 4, 5, 1] = 1  # lesion: layer 1 restarts at value 1
    one = tmp_path / "one.seg.nrrd"
    _write_seg_nrrd(one, layers[..., :1], [("femur", 1, 0), ("trochanter", 2, 0)])
    single = read_labels(one)
    assert single.names == {1: "femur", 2: "trochanter"}
    assert label_mask(single, "femur")[1, 2, 3]
    # RAS header -> LPS world: voxel (1, 2, 3) at (-(10 - 1), -(20 - 4), 30 + 9).
    np.testing.assert_allclose(single.grid.index_to_world([1, 2, 3]), [-9.0, -16.0, 39.0])
    two = tmp_path / "two.seg.nrrd"
    _write_seg_nrrd(two, layers, [("femur", 1, 0), ("trochanter", 2, 0), ("lesion", 1, 1)])
    with caplog.at_level(logging.INFO, logger="meshing.imaging"):
        flat = read_labels(two)
    assert flat.names == {1: "femur", 2: "trochanter", 3: "lesion"}
    assert "renumbered" in caplog.text
    assert np.argwhere(flat.labels).tolist() == [[1, 2, 3], [2, 2, 2], [3, 4, 5]]
    assert label_mask(flat, "lesion")[3, 4, 5] and label_mask(flat, 2)[2, 2, 2]
    distinct = tmp_path / "distinct.seg.nrrd"
    layers[3, 4, 5, 1] = 7
    _write_seg_nrrd(distinct, layers, [("femur", 1, 0), ("trochanter", 2, 0), ("lesion", 7, 1)])
    assert read_labels(distinct).names == {1: "femur", 2: "trochanter", 7: "lesion"}
    layers[1, 2, 3, 1] = 7  # the lesion now overlaps the femur
    _write_seg_nrrd(distinct, layers, [("femur", 1, 0), ("trochanter", 2, 0), ("lesion", 7, 1)])
    with pytest.raises(ImageReadError, match=r"overlapping segments \('femur' and 'lesion' "
                       r"share voxel \(1, 2, 3\); 1 voxel") as err:
        read_labels(distinct)
    assert "3D Slicer" in err.value.hint


def test_totalsegmentator_folder_of_masks(tmp_path: Path) -> None:
    grid = ImageGrid((6, 5, 4), np.array([1.5, 1.5, 3.0]), np.array([-4.0, 2.0, 7.0]),
                     rotation([0.0, 0.0, 1.0], 90.0))
    voxels = {"femur_left": (1, 1, 1), "femur_right": (4, 1, 1), "hip_left": (1, 3, 3),
              "spleen": (2, 2, 2)}
    for name, ijk in voxels.items():
        arr = np.zeros(grid.shape, np.int32)
        arr[ijk] = 1
        write_labels(LabelMap(grid, arr), tmp_path / f"{name}.nii.gz")
    seg = read_totalsegmentator(tmp_path)
    assert seg.grid.same_as(grid, tol_mm=1e-4)
    assert {v: seg.names[v] for v in (75, 76, 77, 1001)} == {
        75: "femur_left", 76: "femur_right", 77: "hip_left", 1001: "spleen"}
    for name, ijk in voxels.items():
        assert np.argwhere(label_mask(seg, name)).tolist() == [list(ijk)]
    assert label_mask(seg, 76)[4, 1, 1]
    only = read_totalsegmentator(tmp_path, structures=["femur_right"])
    assert only.names == {76: "femur_right"} and int(only.labels.sum()) == 76
    generic = read_labels(tmp_path)  # no table: numbered alphabetically
    assert generic.names == {1: "femur_left", 2: "femur_right", 3: "hip_left", 4: "spleen"}
    with pytest.raises(ImageReadError, match="no mask file for 'femur'"):
        read_label_folder(tmp_path, structures=["femur"])
    arr = np.zeros(grid.shape, np.int32)
    arr[1, 1, 1] = 1
    write_labels(LabelMap(grid, arr), tmp_path / "zz_overlap.nii.gz")
    with pytest.raises(ImageReadError, match=r"'femur_left' and 'zz_overlap'.* overlap in 1 "):
        read_totalsegmentator(tmp_path)
    moved = ImageGrid(grid.shape, grid.spacing, grid.origin + 5.0, grid.direction)
    write_labels(LabelMap(moved, arr), tmp_path / "zz_overlap.nii.gz")
    with pytest.raises(ImageReadError, match="lie on different grids"):
        read_totalsegmentator(tmp_path)


def test_totalsegmentator_multilabel_file_without_table(tmp_path: Path) -> None:
    arr = np.zeros((5, 5, 5), np.int32)
    arr[0, 0, 0], arr[4, 4, 4], arr[2, 2, 2] = 75, 76, 5
    path = write_labels(LabelMap(ImageGrid((5, 5, 5), np.ones(3), np.zeros(3)), arr),
                        tmp_path / "seg.nii.gz")
    seg = read_totalsegmentator(path)
    assert seg.names[75] == "femur_left" and seg.names[76] == "femur_right"
    assert label_mask(seg, "femur_right")[4, 4, 4] and label_mask(seg, 75)[0, 0, 0]
    assert set(TOTALSEGMENTATOR_V2_LABELS) <= set(seg.names)
    kept = read_totalsegmentator(path, structures=["femur_left"])
    assert np.argwhere(kept.labels).tolist() == [[0, 0, 0]]
    v1 = read_totalsegmentator(path, version="v1")
    assert v1.names[88] == "femur_left" and 75 not in v1.names
    with pytest.raises(InputError, match="'knee' not named"):
        read_totalsegmentator(path, structures=["knee"])


# --------------------------------------------------------------------------------------------
# labels on another grid
# --------------------------------------------------------------------------------------------


def test_align_labels_nearest_neighbour_on_rotated_grids(
    caplog: pytest.LogCaptureFixture
) -> None:
    ct_grid = ImageGrid((20, 18, 16), np.array([1.0, 1.1, 1.2]), np.array([0.3, -0.2, 0.1]))
    label_grid = ImageGrid((9, 8, 7), np.array([2.3, 2.1, 2.9]), np.array([1.7, 2.2, 3.9]),
                           rotation([1.0, -1.0, 2.0], 17.0))
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 4, size=label_grid.shape).astype(np.int32)
    labels = LabelMap(label_grid, arr, names={1: "a", 2: "b", 3: "c"})
    with caplog.at_level(logging.WARNING, logger="meshing.imaging"):
        aligned = align_labels(labels, ct_grid)
    assert "shape (9, 8, 7)" in caplog.text and "shape (20, 18, 16)" in caplog.text
    assert aligned.grid is ct_grid and aligned.names == labels.names
    ijk = np.indices(ct_grid.shape).reshape(3, -1).T
    src = label_grid.world_to_index(ct_grid.index_to_world(ijk))
    nearest = np.floor(src + 0.5).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.asarray(label_grid.shape)), axis=1)
    away = np.all(np.abs(src - np.rint(src)) < 0.49, axis=1)  # not on a rounding tie
    expected = np.zeros(len(ijk), np.int32)
    expected[inside] = arr[tuple(nearest[inside].T)]
    got = aligned.labels[tuple(ijk.T)]
    assert inside.sum() > 500 and (~inside).sum() > 500
    np.testing.assert_array_equal(got[away], expected[away])
    assert align_labels(aligned, ct_grid) is aligned  # already on the grid


def test_align_labels_refuses_disjoint_boxes() -> None:
    ct_grid = ImageGrid((10, 10, 10), np.ones(3), np.zeros(3))
    far = ImageGrid((4, 4, 4), np.full(3, 2.0), np.array([0.0, 0.0, 50.0]))
    labels = LabelMap(far, np.ones(far.shape, np.int32))
    with pytest.raises(InputError, match=r"do not overlap in space: the labels cover x -1\.0"
                       r"\.\.7\.0, y -1\.0\.\.7\.0, z 49\.0\.\.57\.0 mm, the CT covers x -0\.5"
                       r"\.\.9\.5, y -0\.5\.\.9\.5, z -0\.5\.\.9\.5 mm") as err:
        align_labels(labels, ct_grid)
    assert "RAS/LPS" in err.value.hint
    # Boxes overlap but every labelled voxel lies outside the CT.
    arr = np.zeros(far.shape, np.int32)
    arr[3, 3, 3] = 1
    near = ImageGrid(far.shape, far.spacing, np.array([6.0, 6.0, 6.0]))
    with pytest.raises(InputError, match="no labelled voxel"):
        align_labels(LabelMap(near, arr), ct_grid)


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


@pytest.mark.data
def test_real_totalsegmentator_names_from_file_and_table(shared_data: Path) -> None:
    path = shared_data / "ct" / "totalseg_example_seg.nii.gz"
    plain = read_labels(path)  # names from the file's own label-table extension
    assert plain.names[76] == "femur_right" and plain.names[75] == "femur_left"
    assert len(plain.names) == 117
    seg = read_totalsegmentator(path)
    for value, name in ((75, "femur_left"), (76, "femur_right"), (77, "hip_left"),
                        (78, "hip_right")):
        by_value, by_name = label_mask(seg, value), label_mask(seg, name)
        assert by_value.sum() > 1000
        np.testing.assert_array_equal(by_value, by_name)
    assert int(label_mask(seg, "femur_right").sum()) == 4396
    assert int(label_mask(seg, "femur_left").sum()) == 4488


@pytest.mark.data
def test_real_dicom_shuffled_names_hu_and_geometry(shared_data: Path, tmp_path: Path) -> None:
    source = sorted((shared_data / "dicom_pelvis").glob("*.dcm"))
    assert len(source) == 30
    rng = np.random.default_rng(7)
    for n, index in enumerate(rng.permutation(len(source))):
        (tmp_path / f"img{n:02d}").write_bytes(source[index].read_bytes())  # no .dcm either
    ct = read_ct(tmp_path)
    assert ct.grid.shape == (512, 512, 30)
    np.testing.assert_allclose(ct.grid.origin, [0.0, 0.0, 900.0])
    np.testing.assert_allclose(ct.grid.spacing, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(ct.grid.direction, np.eye(3))
    # HU from the raw bytes, independently of SimpleITK: int16 pixels (PixelRepresentation 1,
    # uncompressed, at the end of each file), HU = stored * 1 - 1024 (RescaleIntercept).
    for k in (0, 13, 29):
        raw = source[k].read_bytes()[-512 * 512 * 2:]
        stored = np.frombuffer(raw, dtype="<i2").reshape(512, 512)  # [row, column]
        np.testing.assert_array_equal(ct.hu[:, :, k], stored.T.astype(np.float32) - 1024.0)
    assert float(ct.hu.min()) == -1024.0
    np.testing.assert_array_equal(ct.hu, read_ct(shared_data / "dicom_pelvis").hu)


@pytest.mark.data
def test_real_labels_on_a_coarser_grid_are_aligned(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ct = read_ct(shared_data / "ct" / "totalseg_example_ct.nii.gz")
    seg = read_totalsegmentator(shared_data / "ct" / "totalseg_example_seg.nii.gz")
    # The segmentation resampled (nearest neighbour) onto a coarser, shifted grid, as a
    # segmentation made on another reconstruction of the scan would be.
    image = sitk.GetImageFromArray(seg.labels.transpose(2, 1, 0).copy())
    image.SetSpacing([3.0, 3.0, 3.0])
    image.SetOrigin([float(v) for v in seg.grid.origin])
    image.SetDirection([float(v) for v in seg.grid.direction.ravel()])
    coarse = sitk.Resample(image, [82, 68, 75], sitk.Transform(), sitk.sitkNearestNeighbor,
                           [float(v) for v in seg.grid.origin + np.array([-1.0, 0.7, 1.3])],
                           [4.5, 4.5, 4.5], [float(v) for v in seg.grid.direction.ravel()], 0,
                           sitk.sitkInt32)
    coarse_map = LabelMap(
        ImageGrid(tuple(coarse.GetSize()), np.array(coarse.GetSpacing()),
                  np.array(coarse.GetOrigin()), np.array(coarse.GetDirection())),
        sitk.GetArrayFromImage(coarse).transpose(2, 1, 0), names=seg.names)
    with pytest.raises(InputError, match="differs from the CT grid"):
        require_same_grid(ct.grid, coarse_map.grid)
    with caplog.at_level(logging.WARNING, logger="meshing.imaging"):
        aligned = align_labels(coarse_map, ct.grid)
    assert "resampling the labels onto the CT grid" in caplog.text
    for name in ("femur_right", "femur_left"):
        a, b = label_mask(aligned, name), label_mask(seg, name)
        dice = 2.0 * np.count_nonzero(a & b) / (a.sum() + b.sum())
        assert dice > 0.75, (name, dice)
        assert abs(int(a.sum()) - int(b.sum())) < 0.15 * b.sum()
    shifted = LabelMap(
        ImageGrid(coarse_map.grid.shape, coarse_map.grid.spacing,
                  coarse_map.grid.origin + np.array([0.0, 0.0, 600.0]),
                  coarse_map.grid.direction),
        coarse_map.labels, names=seg.names)
    with pytest.raises(InputError, match="do not overlap in space") as err:
        align_labels(shifted, ct.grid)
    low_z = coarse_map.grid.origin[2] + 600.0 - 2.25  # the shifted labels' box is named
    assert f"z {low_z:.1f}.." in err.value.message
