"""Image I/O adapter: CT volumes and label maps in and out of osteofe's frozen records.

This is the only module that imports SimpleITK. It reads NIfTI (``.nii``, ``.nii.gz``),
NRRD (``.nrrd``, including 3D Slicer ``.seg.nrrd`` label maps with one layer), MetaImage
(``.mha``, ``.mhd``) and DICOM series (a folder), and writes NIfTI, NRRD and ``.mha``.

Array order: SimpleITK hands out pixel arrays indexed ``[z, y, x]`` (slowest axis first);
osteofe's records are indexed ``[i, j, k]`` along the image axes (``i`` fastest in the file).
Every array is transposed here, once, and nowhere else. The geometry (origin, spacing, direction
cosines) is copied into :class:`~meshing.types.ImageGrid` unchanged, so world coordinates are
ITK's LPS patient coordinates (``+x`` patient left, ``+y`` posterior, ``+z`` superior) and
``ImageGrid.index_to_world`` reproduces ``TransformIndexToPhysicalPoint``.

Every failure the user can fix raises :class:`~meshing.errors.ImageReadError` (reading) or
:class:`~meshing.errors.InputError` (inconsistent inputs, writing) with a hint.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import secrets
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from meshing.errors import ImageReadError, InputError
from meshing.types import CTVolume, ImageGrid, LabelMap

__all__ = [
    "WRITABLE_SUFFIXES",
    "label_mask",
    "read_ct",
    "read_labels",
    "require_same_grid",
    "write_ct",
    "write_labels",
]

_LOG = logging.getLogger(__name__)

#: File name endings :func:`write_ct` and :func:`write_labels` accept. MetaImage with a
#: separate raw file (``.mhd``) is left out because two files cannot be replaced atomically.
WRITABLE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")

_INT16_RANGE = (-32768.0, 32767.0)
_SLICER_NAME_KEY = re.compile(r"^Segment(\d+)_Name$")

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_ct(path: PathLike) -> CTVolume:
    """Read a CT volume in Hounsfield units.

    DICOM rescale slope/intercept (and NIfTI ``scl_slope``/``scl_inter``) are applied by
    SimpleITK, so the values returned are HU as stored by the scanner.

    Args:
        path: A NIfTI, NRRD or MetaImage file, or a folder holding a DICOM series (when the
            folder holds several series, the one with the most slices is read and the choice
            is logged).

    Returns:
        The CT: ``hu`` is a C-contiguous float32 array indexed ``[i, j, k]`` (shape
        ``grid.shape``), and ``grid`` carries origin, spacing (mm) and direction cosines in
        ITK's LPS world.

    Raises:
        ImageReadError: The path is missing; the file is not a readable image; its pixel data
            are truncated or corrupt; it is not a 3-D scalar volume; or it holds NaN/inf.
    """
    image, source = _read_image(path, what="CT")
    grid = _grid_of(image, source)
    hu = _array_ijk(image).astype(np.float32, copy=False)
    bad = ~np.isfinite(hu)
    if bad.any():
        raise ImageReadError(
            f"CT {source} holds {int(bad.sum())} NaN/inf voxel(s) out of {hu.size}",
            hint="re-export the CT from the scanner/PACS, or replace invalid voxels (e.g. by "
            "-1000 HU for air) before running osteofe",
        )
    return CTVolume(grid=grid, hu=np.ascontiguousarray(hu))


def read_labels(path: PathLike, names: Mapping[int, str] | None = None) -> LabelMap:
    """Read an integer label map (segmentation).

    Float images are accepted only when every voxel holds a whole number (some tools save
    label maps as float); probability maps and CTs are refused. Segment names stored by
    3D Slicer in a ``.seg.nrrd`` (``SegmentN_Name`` / ``SegmentN_LabelValue``) and by
    :func:`write_labels` in NRRD files are read into ``names``.

    Args:
        path: A label image file (NIfTI, NRRD, MetaImage) or DICOM series folder.
        names: Optional label value -> structure name mapping; it overrides names found in
            the file (e.g. ``{76: "femur_right"}`` for TotalSegmentator output).

    Returns:
        The label map: ``labels`` is an int32 array indexed ``[i, j, k]``.

    Raises:
        ImageReadError: As for :func:`read_ct`, and when the values are not whole numbers,
            are negative, or do not fit in int32.
    """
    image, source = _read_image(path, what="label map")
    grid = _grid_of(image, source)
    values = _array_ijk(image)
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            raise ImageReadError(
                f"label map {source} holds {int((~finite).sum())} NaN/inf voxel(s)",
                hint="re-export the segmentation as an integer label map",
            )
        fractional = values != np.rint(values)
        if fractional.any():
            example = float(values[fractional].flat[0])
            raise ImageReadError(
                f"label map {source} has non-integer values (e.g. {example:g}); it looks like a "
                "CT or a probability map, not a segmentation",
                hint="pass the integer label map, or threshold/round the probability map first",
            )
    if values.size and (values.min() < 0 or values.max() > np.iinfo(np.int32).max):
        raise ImageReadError(
            f"label map {source} has values outside 0..{np.iinfo(np.int32).max} "
            f"(min {values.min()}, max {values.max()})",
            hint="labels must be non-negative integers with 0 as background; check that this "
            "file is a segmentation and not a CT",
        )
    found = _names_from_metadata(image)
    if names:
        found.update({int(k): str(v) for k, v in names.items()})
    return LabelMap(grid=grid, labels=np.ascontiguousarray(values, dtype=np.int32), names=found)


def _read_image(path: PathLike, what: str) -> tuple[sitk.Image, str]:
    """Read a 3-D scalar image from a file or a DICOM series folder.

    Args:
        path: File or DICOM folder.
        what: Human name of the expected content ("CT", "label map") for messages.

    Returns:
        The SimpleITK image (3-D, one component) and a printable description of its source.

    Raises:
        ImageReadError: On any failure, with a hint.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(
            f"{what} not found: {p}",
            hint="check the path; give a DICOM series as the folder that holds its slices",
        )
    if p.is_dir():
        image, source = _read_dicom_series(p, what)
    else:
        image, source = _read_file(p, what)
    return _as_3d_scalar(image, source, what), source


def _read_file(p: Path, what: str) -> tuple[sitk.Image, str]:
    """Read one image file, telling an unreadable header from truncated pixel data."""
    source = str(p)
    if p.stat().st_size == 0:
        raise ImageReadError(
            f"{what} file {p} is empty (0 bytes)",
            hint="the file was not written completely; copy or export it again",
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(source)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageReadError(
            f"{what} file {p} is not a readable image ({_first_line(err)})",
            hint="give a NIfTI (.nii/.nii.gz), NRRD, MetaImage (.mha/.mhd) file or a DICOM "
            "series folder; a truncated download also fails here",
        ) from err
    _check_header_dimension(reader.GetDimension(), tuple(reader.GetSize()), source, what)
    if p.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(p, what)  # ITK's NIfTI reader pads missing data silently
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(
            f"{what} file {p} has a valid header but its pixel data cannot be read; the file "
            f"is truncated or corrupt ({_first_line(err)})",
            hint="copy or export the file again and compare its size with the original",
        ) from err
    return image, source


def _check_nifti_complete(p: Path, what: str) -> None:
    """Check a NIfTI file's pixel data against its header before ITK reads it.

    ITK's NIfTI reader neither reports a truncated file (it pads the data) nor NaN/inf
    voxels (it reads them as 0), so both are checked here on the raw bytes.

    Args:
        p: A ``.nii`` or ``.nii.gz`` file whose header ITK could read.
        what: Human name of the expected content, for messages.

    Raises:
        ImageReadError: The file holds fewer bytes than its header announces, its gzip
            stream is damaged, or it stores NaN/inf floats.
    """
    hint = "copy or export the file again and compare its size with the original"
    try:
        if p.name.lower().endswith(".gz"):
            with gzip.open(p, "rb") as stream:
                raw = stream.read()
        else:
            raw = p.read_bytes()
    except (EOFError, OSError, zlib.error) as err:
        raise ImageReadError(
            f"{what} file {p} is truncated or corrupt: its compressed stream ends early or "
            f"is damaged ({err})",
            hint=hint,
        ) from err
    layout = _nifti_layout(raw)
    if layout is None:
        return
    offset, count, dtype = layout
    expected = offset + count * dtype.itemsize
    if len(raw) < expected:
        raise ImageReadError(
            f"{what} file {p} is truncated: it holds {len(raw)} bytes of the {expected} its "
            "header announces",
            hint=hint,
        )
    if dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(np.frombuffer(raw, dtype, count, offset))))
        if bad:
            raise ImageReadError(
                f"{what} {p} holds {bad} NaN/inf voxel(s) out of {count}",
                hint="re-export the image from its source, or replace invalid voxels (e.g. by "
                "-1000 HU for air) before running osteofe",
            )


#: NIfTI datatype codes -> numpy type characters (integers and floats; others not checked).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2",
                 768: "u4", 1024: "i8", 1280: "u8"}


def _nifti_layout(header: bytes) -> tuple[int, int, np.dtype] | None:
    """(data offset, voxel count, numpy dtype) from a NIfTI-1/-2 header, or None."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(f"{endian}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{endian}8h", header[40:56])
            code = struct.unpack(f"{endian}h", header[70:72])[0]
            offset = max(int(struct.unpack(f"{endian}f", header[108:112])[0]), 348)
            break
        if len(header) >= 540 and struct.unpack(f"{endian}i", header[:4])[0] == 540:
            code = struct.unpack(f"{endian}h", header[12:14])[0]
            dims = struct.unpack(f"{endian}8q", header[16:80])
            offset = max(int(struct.unpack(f"{endian}q", header[168:176])[0]), 540)
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or code not in _NIFTI_DTYPES:
        return None
    count = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return offset, count, np.dtype(endian + _NIFTI_DTYPES[code])


def _read_dicom_series(folder: Path, what: str) -> tuple[sitk.Image, str]:
    """Read the largest DICOM series in a folder (rescale slope/intercept applied)."""
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:  # pragma: no cover - GDCM reports unreadable folders this way
        raise ImageReadError(
            f"cannot scan folder {folder} for DICOM files ({_first_line(err)})",
            hint="check the folder exists and is readable",
        ) from err
    if not series_ids:
        raise ImageReadError(
            f"folder {folder} holds no DICOM series",
            hint="give the folder that directly contains the .dcm slices, or an image file",
        )
    files_by_series = {
        sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids
    }
    chosen = max(series_ids, key=lambda sid: (len(files_by_series[sid]), sid))
    files = files_by_series[chosen]
    if len(series_ids) > 1:
        _LOG.info(
            "folder %s holds %d DICOM series; reading the largest, %s (%d slices); others: %s",
            folder, len(series_ids), chosen, len(files),
            ", ".join(f"{sid} ({len(files_by_series[sid])})" for sid in series_ids
                      if sid != chosen),
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(
            f"DICOM series {chosen} in {folder} cannot be read ({_first_line(err)}); a slice "
            "may be truncated or corrupt",
            hint="re-export the series from the PACS, or remove the damaged slice files",
        ) from err
    return image, f"{folder} (DICOM series {chosen}, {len(files)} slices)"


def _check_header_dimension(dim: int, size: tuple[int, ...], source: str, what: str) -> None:
    """Refuse 2-D and true 4-D images from the header, before reading pixels."""
    if dim == 2:
        raise ImageReadError(
            f"{what} {source} is a 2-D image of {size[0]}x{size[1]} pixels, not a volume",
            hint="give the whole 3-D volume (for DICOM, the folder holding every slice)",
        )
    if dim > 4 or (dim == 4 and size[3] != 1):
        raise ImageReadError(
            f"{what} {source} is a {dim}-D image of size {'x'.join(map(str, size))}, not a "
            "3-D volume",
            hint="extract one time point/channel into a 3-D file first (e.g. with SimpleITK "
            "Extract or fslroi); multi-layer Slicer segmentations must be exported as one "
            "labelmap",
        )


def _as_3d_scalar(image: sitk.Image, source: str, what: str) -> sitk.Image:
    """Return ``image`` as a 3-D scalar volume or raise :class:`ImageReadError`."""
    size = tuple(image.GetSize())
    _check_header_dimension(image.GetDimension(), size, source, what)
    if image.GetDimension() == 4:  # a 3-D volume stored with one time point
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{what} {source} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            f"({image.GetPixelIDTypeAsString()}), not one scalar value",
            hint="give a grey-level CT / integer label image, not an RGB or vector image",
        )
    if min(image.GetSize()) < 2:
        raise ImageReadError(
            f"{what} {source} has a single slice (size {'x'.join(map(str, image.GetSize()))}); "
            "it is effectively 2-D",
            hint="give the whole 3-D volume (for DICOM, the folder holding every slice)",
        )
    return image


def _grid_of(image: sitk.Image, source: str) -> ImageGrid:
    """Copy SimpleITK's geometry into an :class:`ImageGrid` (LPS world, mm)."""
    try:
        return ImageGrid(
            shape=(int(image.GetSize()[0]), int(image.GetSize()[1]), int(image.GetSize()[2])),
            spacing=np.asarray(image.GetSpacing(), dtype=np.float64),
            origin=np.asarray(image.GetOrigin(), dtype=np.float64),
            direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        )
    except ValueError as err:
        raise ImageReadError(
            f"image {source} has an invalid geometry: {err}",
            hint="fix the header (positive spacing, orthonormal direction cosines), e.g. by "
            "resampling the image in 3D Slicer or SimpleITK",
        ) from err


def _array_ijk(image: sitk.Image) -> np.ndarray:
    """Pixel array of a 3-D image as a C-contiguous ``[i, j, k]`` array (SimpleITK: [k, j, i])."""
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))


def _names_from_metadata(image: sitk.Image) -> dict[int, str]:
    """Segment names stored as ``SegmentN_Name``/``SegmentN_LabelValue`` (3D Slicer, NRRD)."""
    names: dict[int, str] = {}
    keys = set(image.GetMetaDataKeys())
    for key in keys:
        match = _SLICER_NAME_KEY.match(key)
        if match is None:
            continue
        value_key = f"Segment{match.group(1)}_LabelValue"
        try:
            value = int(image.GetMetaData(value_key)) if value_key in keys else None
        except ValueError:
            value = None
        if value is not None:
            names[value] = image.GetMetaData(key)
    return names


def _first_line(err: Exception) -> str:
    """The most informative single line of a SimpleITK exception message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if "Description:" in line or "ERROR" in line.upper():
            return line.replace("Description:", "").strip()[:200]
    return lines[-1][:200] if lines else type(err).__name__


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_ct(ct: CTVolume, path: PathLike) -> Path:
    """Write a CT atomically; the format follows the file name ending.

    The HU are stored as int16 when every value is a whole number in -32768..32767 (as
    scanners store them), otherwise as float32.

    Args:
        ct: The CT volume.
        path: Target file ending in one of :data:`WRITABLE_SUFFIXES` (``.nii.gz`` usual).
            Missing parent folders are created.

    Returns:
        The path written.

    Raises:
        InputError: Unsupported file ending, or the file cannot be written.
    """
    hu = ct.hu
    integral = bool(np.all(hu == np.rint(hu)))
    in_range = bool(hu.size == 0 or (hu.min() >= _INT16_RANGE[0] and hu.max() <= _INT16_RANGE[1]))
    values = hu.astype(np.int16) if integral and in_range else hu.astype(np.float32)
    return _write_image(values, ct.grid, path, metadata={})


def write_labels(labels: LabelMap, path: PathLike) -> Path:
    """Write a label map atomically; the format follows the file name ending.

    Stored as uint8 when the labels fit (0..255), else uint16 or int32. Names are stored as
    ``SegmentN_Name``/``SegmentN_LabelValue`` keys in NRRD/MetaImage headers (NIfTI has no
    place for them; keep them in a side file).

    Args:
        labels: The label map.
        path: Target file ending in one of :data:`WRITABLE_SUFFIXES`.

    Returns:
        The path written.

    Raises:
        InputError: Unsupported file ending, or the file cannot be written.
    """
    arr = labels.labels
    low = int(arr.min()) if arr.size else 0
    high = int(arr.max()) if arr.size else 0
    if low >= 0 and high <= np.iinfo(np.uint8).max:
        values: np.ndarray = arr.astype(np.uint8)
    elif low >= 0 and high <= np.iinfo(np.uint16).max:
        values = arr.astype(np.uint16)
    else:
        values = arr.astype(np.int32)
    metadata: dict[str, str] = {}
    for n, (value, name) in enumerate(sorted(labels.names.items())):
        metadata[f"Segment{n}_Name"] = str(name)
        metadata[f"Segment{n}_LabelValue"] = str(int(value))
    return _write_image(values, labels.grid, path, metadata=metadata)


def _suffix_of(path: Path) -> str:
    """The recognised file ending of ``path`` (lower case) or raise InputError."""
    name = path.name.lower()
    for suffix in WRITABLE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise InputError(
        f"cannot choose an image format for {path}: unsupported file name ending",
        hint=f"name the output with one of {', '.join(WRITABLE_SUFFIXES)} (NIfTI .nii.gz usual)",
    )


def _write_image(
    values: npt.NDArray[np.generic], grid: ImageGrid, path: PathLike, metadata: dict[str, str]
) -> Path:
    """Write an ``[i, j, k]`` array with ``grid``'s geometry atomically (temp file + replace)."""
    target = Path(path)
    suffix = _suffix_of(target)
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in grid.spacing])
    image.SetOrigin([float(o) for o in grid.origin])
    image.SetDirection([float(d) for d in grid.direction.reshape(9)])
    for key, value in metadata.items():
        image.SetMetaData(key, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name in the target's folder (so os.replace is atomic); the real ending is kept
    # because ITK picks the writer from it. Created with the user's umask, unlike mkstemp.
    tmp_name = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp{suffix}")
    os.close(os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        sitk.WriteImage(image, tmp_name, useCompression=suffix != ".nii")
        os.replace(tmp_name, target)
    except (RuntimeError, OSError) as err:
        raise InputError(
            f"cannot write image {target} ({_first_line(err)})",
            hint="check that the folder is writable and the disk has space",
        ) from err
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


# --------------------------------------------------------------------------------------------
# label handling and consistency checks
# --------------------------------------------------------------------------------------------


def _present_labels(labels: LabelMap) -> npt.NDArray[np.int64]:
    """Sorted non-zero label values present in the map."""
    arr = labels.labels
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = int(arr.min()), int(arr.max())
    if low >= 0 and high < 1 << 20:
        counts = np.bincount(arr.ravel(), minlength=1)
        present = np.flatnonzero(counts)
    else:
        present = np.unique(arr)
    return np.asarray(present[present != 0], dtype=np.int64)


def _describe(values: npt.NDArray[np.int64], names: Mapping[int, str], limit: int = 30) -> str:
    """'75 (femur_left), 76 (femur_right), ...' for error messages."""
    parts = [f"{v} ({names[int(v)]})" if int(v) in names else str(int(v)) for v in values[:limit]]
    if values.size > limit:
        parts.append(f"... {values.size - limit} more")
    return ", ".join(parts)


def label_mask(
    labels: LabelMap, value_or_name: int | np.integer | str
) -> npt.NDArray[np.bool_]:
    """Boolean mask of one structure of a label map.

    Args:
        labels: The label map.
        value_or_name: The label value (non-zero integer) or its name in ``labels.names``
            (exact match first, then case-insensitive).

    Returns:
        bool array of shape ``labels.grid.shape``, True inside the structure.

    Raises:
        InputError: The map has no non-zero voxel, the value is 0, the name is unknown, or
            the label is absent (the message lists the labels present).
    """
    present = _present_labels(labels)
    if present.size == 0:
        raise InputError(
            "label map is empty: it has no non-zero voxel",
            hint="check that the segmentation belongs to this CT and was saved with its labels",
        )
    listing = _describe(present, labels.names)
    if isinstance(value_or_name, str):
        name = value_or_name
        matches = [v for v, n in labels.names.items() if n == name]
        if not matches:
            matches = [v for v, n in labels.names.items() if n.lower() == name.lower()]
        if not matches:
            known = ", ".join(f"{v}={n}" for v, n in sorted(labels.names.items())) or "none"
            raise InputError(
                f"label name '{name}' is not in the label map (named labels: {known}; "
                f"values present: {listing})",
                hint="give the label by its integer value, or pass names= to read_labels",
            )
        value = int(matches[0])
        shown = f"'{name}' (value {value})"
    else:
        if isinstance(value_or_name, bool) or not isinstance(value_or_name, int | np.integer):
            raise InputError(
                f"label must be an integer value or a name, got {value_or_name!r}",
                hint="pass e.g. 1 or 'femur_right'",
            )
        value = int(value_or_name)
        shown = str(value)
        if value == 0:
            raise InputError(
                "label 0 is the background, not a structure",
                hint=f"choose one of the labels present: {listing}",
            )
    if value not in set(present.tolist()):
        raise InputError(
            f"label {shown} is absent from the label map; labels present: {listing}",
            hint="choose one of the labels present (TotalSegmentator: 75 femur_left, "
            "76 femur_right)",
        )
    return np.asarray(labels.labels == value)


def require_same_grid(ct_grid: ImageGrid, label_grid: ImageGrid) -> None:
    """Check that a label map lies on the CT's voxel grid.

    Args:
        ct_grid: Grid of the CT.
        label_grid: Grid of the label map.

    Raises:
        InputError: The grids differ in shape, spacing, origin or direction (all are named).
    """
    if ct_grid.same_as(label_grid):
        return

    def fmt(a: npt.ArrayLike) -> str:
        return "(" + ", ".join(f"{float(x):.4g}" for x in np.ravel(a)) + ")"

    direction = ""
    if not np.allclose(ct_grid.direction, label_grid.direction, atol=1e-5):
        direction = (f"; direction CT {fmt(ct_grid.direction)} vs labels "
                     f"{fmt(label_grid.direction)}")
    raise InputError(
        f"label map grid differs from the CT grid: shape CT {ct_grid.shape} vs labels "
        f"{label_grid.shape}; spacing CT {fmt(ct_grid.spacing)} vs labels "
        f"{fmt(label_grid.spacing)} mm; origin CT {fmt(ct_grid.origin)} vs labels "
        f"{fmt(label_grid.origin)} mm{direction}",
        hint="use the segmentation made from this very CT, or resample the label map onto the "
        "CT grid with nearest-neighbour interpolation",
    )
