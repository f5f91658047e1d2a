"""Image I/O adapter: CT volumes and label maps in and out of osteofe's frozen records.

This is the only module that imports SimpleITK. It reads NIfTI (``.nii``, ``.nii.gz``),
NRRD (``.nrrd``, including 3D Slicer ``.seg.nrrd`` segmentations), MetaImage (``.mha``,
``.mhd``), DICOM series (a folder), TotalSegmentator output (a multi-label NIfTI file or a
folder of per-structure masks), and writes NIfTI, NRRD and ``.mha``.

Array order: SimpleITK hands out pixel arrays indexed ``[z, y, x]`` (slowest axis first);
osteofe's records are indexed ``[i, j, k]`` along the image axes (``i`` fastest in the file).
Every array is transposed here, once, and nowhere else. The geometry (origin, spacing, direction
cosines) is copied into :class:`~meshing.types.ImageGrid` unchanged, so world coordinates are
ITK's LPS patient coordinates (``+x`` patient left, ``+y`` posterior, ``+z`` superior) and
``ImageGrid.index_to_world`` reproduces ``TransformIndexToPhysicalPoint``.

DICOM folders are scanned file by file (not by file name): the series is chosen by its
SeriesInstanceUID or as the largest CT series, its slices are sorted by their position along the
slice normal (ImagePositionPatient projected on the normal of ImageOrientationPatient), the
rescale slope/intercept of every slice is applied, and a gantry tilt or a non-uniform slice
spacing is detected: refused, or (``resample=True``) resampled onto a uniform orthogonal grid.

Every failure the user can fix raises :class:`~meshing.errors.ImageReadError` (reading) or
:class:`~meshing.errors.InputError` (inconsistent inputs, writing) with a hint.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from core.atomic import atomic_path
from core.lazy import LazyModule
from core.suggest import did_you_mean
from meshing.errors import ImageReadError, InputError
from meshing.types import CTVolume, ImageGrid, LabelMap

if TYPE_CHECKING:
    import SimpleITK as sitk
else:  # imported on first use: a process that reads no image never loads it
    sitk = LazyModule("SimpleITK")

__all__ = [
    "TOTALSEGMENTATOR_V1_LABELS",
    "TOTALSEGMENTATOR_V2_LABELS",
    "WRITABLE_SUFFIXES",
    "DicomSeries",
    "align_labels",
    "label_mask",
    "list_dicom_series",
    "read_ct",
    "read_label_folder",
    "read_labels",
    "read_totalsegmentator",
    "require_same_grid",
    "write_ct",
    "write_labels",
]

_LOG = logging.getLogger(__name__)

#: File name endings :func:`write_ct` and :func:`write_labels` accept. MetaImage with a
#: separate raw file (``.mhd``) is left out because two files cannot be replaced atomically.
WRITABLE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")

#: Femur-relevant part of the TotalSegmentator v2 ``total`` task label table (value -> name):
#: the femurs, the hip bones, the sacrum and lowest vertebrae, and the hip muscles. Source:
#: Wasserthal J, Breit H-C, Meyer MT, et al. TotalSegmentator: robust segmentation of 104
#: anatomic structures in CT images. Radiology: Artificial Intelligence 2023; 5(5):e230024,
#: doi:10.1148/ryai.230024; ids as in the tool's ``map_to_binary.class_map["total"]`` (v2).
TOTALSEGMENTATOR_V2_LABELS: Mapping[int, str] = MappingProxyType({
    25: "sacrum",
    26: "vertebrae_S1",
    27: "vertebrae_L5",
    75: "femur_left",
    76: "femur_right",
    77: "hip_left",
    78: "hip_right",
    80: "gluteus_maximus_left",
    81: "gluteus_maximus_right",
    82: "gluteus_medius_left",
    83: "gluteus_medius_right",
    84: "gluteus_minimus_left",
    85: "gluteus_minimus_right",
    88: "iliopsoas_left",
    89: "iliopsoas_right",
})

#: The same structures in TotalSegmentator v1 (104 classes), whose ids differ: v1's femurs
#: (88, 89) are v2's iliopsoas muscles, so a v1 file read with the v2 table is mislabelled.
#: Source as for :data:`TOTALSEGMENTATOR_V2_LABELS` (``class_map["total_v1"]``).
TOTALSEGMENTATOR_V1_LABELS: Mapping[int, str] = MappingProxyType({
    18: "vertebrae_L5",
    88: "femur_left",
    89: "femur_right",
    90: "hip_left",
    91: "hip_right",
    92: "sacrum",
    94: "gluteus_maximus_left",
    95: "gluteus_maximus_right",
    96: "gluteus_medius_left",
    97: "gluteus_medius_right",
    98: "gluteus_minimus_left",
    99: "gluteus_minimus_right",
    102: "iliopsoas_left",
    103: "iliopsoas_right",
})

_INT16_RANGE = (-32768.0, 32767.0)
_SLICER_NAME_KEY = re.compile(r"^Segment(\d+)_Name$")
_CARET_LABEL = re.compile(
    r'<Label\s+Key="(\d+)"[^>]*>\s*(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))\s*</Label>', re.DOTALL
)
_NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: A slice may sit off the regular lattice (along the normal or sideways) by this fraction of
#: a voxel before the series counts as tilted / non-uniform: DICOM positions are decimal
#: strings, often rounded to 0.01 mm, so an exact test would refuse sound series.
_LATTICE_TOLERANCE = 0.1
#: Two slices closer than this (mm) along the normal are duplicates, not a thin slab.
_DUPLICATE_MM = 0.01

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class _Loaded:
    """An image as read from disk, before it becomes a CT or a label map.

    Attributes:
        values: Pixel array indexed ``[i, j, k]``, or ``[i, j, k, layer]`` for a multi-layer
            3D Slicer segmentation.
        grid: Geometry (LPS world, mm).
        metadata: Header key -> value strings (NRRD fields, DICOM tags ``gggg|eeee``).
        label_names: Label value -> name found in the file (NRRD segment keys, NIfTI label
            table extension); empty when none.
        source: Printable description of where the image came from.
    """

    values: np.ndarray
    grid: ImageGrid
    metadata: dict[str, str]
    label_names: dict[int, str]
    source: str


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder (see :func:`list_dicom_series`).

    Attributes:
        uid: SeriesInstanceUID (0020,000E); ``""`` when the files lack it.
        modality: Modality (0008,0060) in upper case, e.g. ``"CT"``, ``"MR"``; ``""`` if absent.
        description: SeriesDescription (0008,103E); ``""`` when absent.
        files: Paths of the series' image files in file-name order (:func:`read_ct` sorts
            them by position).
    """

    uid: str
    modality: str
    description: str
    files: tuple[str, ...]

    @property
    def num_files(self) -> int:
        """Number of image files (slices, or one multi-frame file) in the series."""
        return len(self.files)

    def describe(self) -> str:
        """``'1.2.3 (CT, 30 files, "Pelvis 1mm")'`` for messages and logs."""
        desc = f', "{self.description}"' if self.description else ""
        return f"{self.uid or '<no uid>'} ({self.modality or 'no modality'}, " \
               f"{self.num_files} files{desc})"


@dataclass(frozen=True)
class _SliceInfo:
    """Header of one DICOM image file (from GDCM, without pixel data)."""

    path: str
    uid: str
    modality: str
    description: str
    image_type: str
    size: tuple[int, ...]
    origin: npt.NDArray[np.float64]
    direction: npt.NDArray[np.float64]
    spacing: npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# reading: public entry points
# --------------------------------------------------------------------------------------------


def read_ct(
    path: PathLike, *, series_uid: str | None = None, resample: bool = False
) -> CTVolume:
    """Read a CT volume in Hounsfield units.

    DICOM rescale slope/intercept (each slice's own) and NIfTI ``scl_slope``/``scl_inter`` are
    applied, so the values returned are HU as stored by the scanner.

    Args:
        path: A NIfTI, NRRD or MetaImage file, or a folder holding DICOM files. In a folder,
            the series named by ``series_uid`` is read, otherwise the CT series with the most
            files (the choice and the other series are logged at INFO level). Slices are
            ordered by their position along the slice normal, never by file name.
        series_uid: SeriesInstanceUID of the DICOM series to read (folders only); see
            :func:`list_dicom_series`.
        resample: For a DICOM series acquired with a gantry tilt or with non-uniform slice
            spacing: False refuses it; True resamples it (linear interpolation) onto a uniform
            grid orthogonal to the slices, at the finest acquired slice step, and logs a
            WARNING. Voxels of that grid outside the acquired slices get the series' lowest
            value (its outside-the-field value). Ignored for regular series and files.

    Returns:
        The CT: ``hu`` is a C-contiguous float32 array indexed ``[i, j, k]`` (shape
        ``grid.shape``), and ``grid`` carries origin, spacing (mm) and direction cosines in
        ITK's LPS world.

    Raises:
        ImageReadError: The path is missing; the file is not a readable image; its pixel data
            are truncated or corrupt; it is not a 3-D scalar volume; it holds NaN/inf; a
            folder holds no DICOM image, no series with ``series_uid``, or no CT (the
            modality is named); the series has mixed orientations or sizes, duplicate slice
            positions, or (without ``resample``) a gantry tilt or non-uniform spacing.
        InputError: ``series_uid`` given for a file.
    """
    loaded = _load(path, what="CT", series_uid=series_uid, resample=resample)
    hu = loaded.values.astype(np.float32, copy=False)
    bad = ~np.isfinite(hu)
    if bad.any():
        raise ImageReadError(
            f"CT {loaded.source} holds {int(bad.sum())} NaN/inf voxel(s) out of {hu.size}",
            hint="re-export the CT from the scanner/PACS, or replace invalid voxels (e.g. by "
            "-1000 HU for air) before running osteofe",
        )
    return CTVolume(grid=loaded.grid, hu=np.ascontiguousarray(hu))


def read_labels(
    path: PathLike,
    names: Mapping[int, str] | None = None,
    *,
    series_uid: str | None = None,
) -> LabelMap:
    """Read an integer label map (segmentation).

    Float images are accepted only when every voxel holds a whole number (some tools save
    label maps as float); probability maps and CTs are refused. Structure names are read from:

    * 3D Slicer ``.seg.nrrd`` (``SegmentN_Name`` / ``SegmentN_LabelValue`` /
      ``SegmentN_Layer``) and NRRD files written by :func:`write_labels`. A segmentation
      with several layers (overlapping-capable segments stored as separate components) is
      flattened into one map when no voxel belongs to two segments; label values are kept
      when they are unique across layers, else the segments are renumbered 1..N in file
      order (logged). Overlapping segments are refused.
    * the label table TotalSegmentator stores in a NIfTI header extension.

    A folder holding ``.nii``/``.nii.gz`` files is read as one mask per structure (see
    :func:`read_label_folder`); any other folder as a DICOM series.

    Args:
        path: A label image file (NIfTI, NRRD, MetaImage), a folder of per-structure masks,
            or a DICOM series folder.
        names: Optional label value -> structure name mapping; it overrides names found in
            the file (e.g. ``{76: "femur_right"}``).
        series_uid: SeriesInstanceUID to read from a DICOM folder.

    Returns:
        The label map: ``labels`` is an int32 array indexed ``[i, j, k]``.

    Raises:
        ImageReadError: As for :func:`read_ct`; when the values are not whole numbers, are
            negative, or do not fit in int32; when Slicer segments overlap.
    """
    p = Path(path)
    if p.is_dir() and _nifti_files(p):
        if series_uid is not None:
            raise InputError(
                f"series_uid={series_uid!r} was given but {p} holds NIfTI masks, not DICOM",
                hint="leave series_uid out for a folder of per-structure masks",
            )
        folder_map = read_label_folder(p)
        found = dict(folder_map.names)
        if names:
            found.update({int(k): str(v) for k, v in names.items()})
        return LabelMap(grid=folder_map.grid, labels=folder_map.labels, names=found)
    loaded = _load(p, what="label map", series_uid=series_uid, allow_layers=True)
    values = _checked_label_values(loaded.values, loaded.source)
    if values.ndim == 4:
        values, found = _flatten_layers(values, loaded.metadata, loaded.source)
    else:
        found = dict(loaded.label_names)
    if names:
        found.update({int(k): str(v) for k, v in names.items()})
    return LabelMap(grid=loaded.grid, labels=np.ascontiguousarray(values, dtype=np.int32),
                    names=found)


def read_label_folder(
    folder: PathLike,
    *,
    values: Mapping[str, int] | None = None,
    structures: Sequence[str] | None = None,
) -> LabelMap:
    """Combine a folder of per-structure binary masks into one label map with names.

    Each ``<name>.nii.gz`` (or ``.nii``) file is one structure (TotalSegmentator's default
    output: ``femur_left.nii.gz``, ``femur_right.nii.gz``, ...); its non-zero voxels get the
    structure's label value.

    Args:
        folder: The folder (not searched recursively).
        values: Structure name -> label value. Names not in it are numbered in alphabetical
            order from 1 when ``values`` is None, else from 1001 (so they cannot be mistaken
            for values of the table).
        structures: Names of the structures to read (default: every file). Reading only the
            few needed saves time on TotalSegmentator's 117 files.

    Returns:
        The label map on the masks' common grid, ``names`` = value -> structure name.

    Raises:
        ImageReadError: No mask file; a requested structure has no file; a file is not a
            binary mask; the masks lie on different grids; two masks overlap.
    """
    p = Path(folder)
    files = _nifti_files(p)
    if not files:
        raise ImageReadError(
            f"folder {p} holds no .nii/.nii.gz mask files",
            hint="give the folder TotalSegmentator wrote (one file per structure), or a "
            "multi-label file",
        )
    by_name = {_strip_nifti_suffix(f.name): f for f in files}
    if structures is not None:
        missing = [s for s in structures if s not in by_name]
        if missing:
            raise ImageReadError(
                f"no mask file for {', '.join(map(repr, missing))} in {p} (found: "
                f"{_short_list(sorted(by_name))})",
                hint="check the structure names (TotalSegmentator: femur_left, femur_right, "
                "hip_left, hip_right)",
            )
        by_name = {s: by_name[s] for s in dict.fromkeys(structures)}
    table = dict(values or {})
    next_value = 1 if values is None else 1001
    assigned: dict[str, int] = {}
    for name in sorted(by_name):
        if name in table:
            assigned[name] = int(table[name])
        else:
            while next_value in table.values() or next_value in assigned.values():
                next_value += 1
            assigned[name] = next_value
            next_value += 1
    combined: npt.NDArray[np.int32] | None = None
    grid: ImageGrid | None = None
    first = ""
    names: dict[int, str] = {}
    for name in sorted(by_name, key=lambda n: assigned[n]):
        loaded = _load(by_name[name], what="structure mask")
        arr = _checked_label_values(loaded.values, loaded.source)
        nonzero = np.unique(arr[arr != 0]) if arr.any() else np.zeros(0)
        if nonzero.size > 1:
            raise ImageReadError(
                f"{loaded.source} holds {nonzero.size} different labels "
                f"({_short_list([str(int(v)) for v in nonzero])}); a per-structure folder "
                "needs one binary mask per file",
                hint="read a multi-label file with read_labels/read_totalsegmentator, or move "
                "it out of the mask folder",
            )
        if combined is None or grid is None:
            grid, first = loaded.grid, loaded.source
            combined = np.zeros(grid.shape, dtype=np.int32)
        elif not loaded.grid.same_as(grid):
            raise ImageReadError(
                f"masks in {p} lie on different grids: {loaded.source} "
                f"{_grid_text(loaded.grid)} vs {first} {_grid_text(grid)}",
                hint="every mask of one segmentation must share the CT's grid; resample them "
                "first or re-run the segmentation",
            )
        inside = arr != 0
        clash = inside & (combined != 0)
        if clash.any():
            other = names[int(combined[clash].flat[0])]
            raise ImageReadError(
                f"masks '{other}' and '{name}' in {p} overlap in {int(clash.sum())} voxel(s); "
                "a label map holds one structure per voxel",
                hint="remove the overlap in the segmentation tool, or read only one of them "
                "(structures=...)",
            )
        value = assigned[name]
        combined[inside] = value
        names[value] = name
    assert combined is not None and grid is not None
    return LabelMap(grid=grid, labels=combined, names=names)


def read_totalsegmentator(
    path: PathLike,
    *,
    structures: Sequence[str] | None = None,
    version: Literal["v2", "v1"] = "v2",
) -> LabelMap:
    """Read TotalSegmentator output with its structure names.

    Two layouts are understood: the multi-label file (``--ml``; label values are the tool's
    ids, names from its NIfTI label-table extension when present, else from
    :data:`TOTALSEGMENTATOR_V2_LABELS`) and the default folder of per-structure masks, which
    is combined into one map whose values are the same ids (structures outside the table are
    numbered from 1001). Either way ``label_mask(labels, 76)`` and
    ``label_mask(labels, "femur_right")`` select the same voxels.

    Args:
        path: The multi-label ``.nii.gz`` file or the output folder.
        structures: Keep only these structures (names); in a folder only their files are
            read. Default: all.
        version: ``"v2"`` (TotalSegmentator >= 2.0, 117 classes; the default) or ``"v1"``
            (104 classes, other ids: :data:`TOTALSEGMENTATOR_V1_LABELS`).

    Returns:
        The label map with ``names`` for every table id and every named structure found.

    Raises:
        ImageReadError: As for :func:`read_labels` / :func:`read_label_folder`.
        InputError: Unknown ``version``, or a requested structure that the map does not name.
    """
    if version not in ("v1", "v2"):
        raise InputError(f"unknown TotalSegmentator version {version!r}",
                         hint="use version='v2' (TotalSegmentator >= 2.0) or 'v1'")
    table = TOTALSEGMENTATOR_V2_LABELS if version == "v2" else TOTALSEGMENTATOR_V1_LABELS
    p = Path(path)
    if p.is_dir():
        return read_label_folder(p, values={n: v for v, n in table.items()},
                                 structures=structures)
    labels = read_labels(p)
    names = dict(table)
    for value, name in labels.names.items():
        if value in table and table[value] != name:
            _LOG.warning(
                "%s names label %d '%s' where TotalSegmentator %s has '%s'; using the file's "
                "name (made with another version? pass version='v1' or 'v2')",
                p, value, name, version, table[value],
            )
        names[value] = name
    arr = labels.labels
    if structures is not None:
        by_name = {n: v for v, n in names.items()}
        unknown = [s for s in structures if s not in by_name]
        if unknown:
            raise InputError(
                f"structure(s) {', '.join(map(repr, unknown))} not named in {p}",
                hint=f"choose among: {_short_list(sorted(by_name))}",
            )
        keep = np.array([by_name[s] for s in structures], dtype=np.int32)
        arr = np.where(np.isin(arr, keep), arr, np.int32(0))
    return LabelMap(grid=labels.grid, labels=arr, names=names)


def list_dicom_series(folder: PathLike) -> tuple[DicomSeries, ...]:
    """The DICOM image series in a folder, largest first.

    Every regular file directly in the folder is tried as DICOM (by content, whatever its
    name); files that are not DICOM images (DICOMDIR, reports, other formats) are skipped.

    Args:
        folder: The folder to scan (not recursively).

    Returns:
        One record per SeriesInstanceUID, ordered by decreasing number of files, then UID.

    Raises:
        ImageReadError: The folder does not exist.
    """
    p = Path(folder)
    if not p.is_dir():
        raise ImageReadError(f"DICOM folder not found: {p}",
                             hint="give the folder that directly contains the slice files")
    slices, _ = _scan_dicom_folder(p)
    return tuple(series for series, _ in _group_series(slices))


# --------------------------------------------------------------------------------------------
# reading: files
# --------------------------------------------------------------------------------------------


def _load(
    path: PathLike,
    what: str,
    *,
    series_uid: str | None = None,
    resample: bool = False,
    allow_layers: bool = False,
) -> _Loaded:
    """Read a 3-D image from a file or a DICOM series folder.

    Args:
        path: File or DICOM folder.
        what: Human name of the expected content ("CT", "label map") for messages; "CT"
            also makes a DICOM folder accept only CT series.
        series_uid: DICOM series to read (folders only).
        resample: Resample tilted / non-uniform DICOM series instead of refusing them.
        allow_layers: Accept a multi-component image when it is a 3D Slicer segmentation.

    Returns:
        The image as read.

    Raises:
        ImageReadError: On any failure, with a hint.
        InputError: ``series_uid`` given for a file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(
            f"{what} not found: {p}",
            hint="check the path; give a DICOM series as the folder that holds its slices",
        )
    if p.is_dir():
        return _read_dicom_folder(p, what, series_uid=series_uid, resample=resample)
    if series_uid is not None:
        raise InputError(
            f"series_uid={series_uid!r} was given but {p} is a file, not a DICOM folder",
            hint="pass the folder that holds the DICOM series, or leave series_uid out",
        )
    return _read_file(p, what, allow_layers=allow_layers)


def _read_file(p: Path, what: str, *, allow_layers: bool = False) -> _Loaded:
    """Read one image file, telling an unreadable header from truncated pixel data."""
    source = str(p)
    if p.stat().st_size == 0:
        raise ImageReadError(
            f"{what} file {p} is empty (0 bytes)",
            hint="the file was not written completely; copy or export it again",
        )
    if p.name.lower().endswith(_METAIMAGE_SUFFIXES):
        _check_metaimage_header(p, what)  # MetaIO crashes or guesses on a bad header
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
    label_names: dict[int, str] = {}
    if p.name.lower().endswith(_NIFTI_SUFFIXES):
        label_names = _inspect_nifti(p, what)  # ITK's NIfTI reader pads missing data silently
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(
            f"{what} file {p} has a valid header but its pixel data cannot be read; the file "
            f"is truncated or corrupt ({_first_line(err)})",
            hint="copy or export the file again and compare its size with the original",
        ) from err
    metadata = _metadata(image, source)
    layered = allow_layers and any(_SLICER_NAME_KEY.match(key) for key in metadata)
    image = _as_3d(image, source, what, allow_components=layered)
    if not label_names:
        label_names = _names_from_metadata(metadata)
    return _Loaded(values=_array_ijk(image), grid=_grid_of(image, source), metadata=metadata,
                   label_names=label_names, source=source)


def _metadata(image: sitk.Image, source: str) -> dict[str, str]:
    """The header fields ITK kept, without those whose name is not valid UTF-8 (logged)."""
    metadata: dict[str, str] = {}
    skipped = []
    for key in image.GetMetaDataKeys():
        try:
            metadata[key] = image.GetMetaData(key)
        except (TypeError, RuntimeError, UnicodeError):  # a key SWIG cannot pass back
            skipped.append(key.encode("utf-8", errors="surrogateescape").decode(
                "utf-8", errors="replace"))
    if skipped:
        _LOG.warning("%s: header field(s) %s skipped: their names are not valid UTF-8",
                     source, ", ".join(repr(k) for k in skipped))
    return metadata


#: MetaImage header fields checked before ITK reads them: name -> (count, kind), count in
#: multiples of NDims ("n") or its square ("n2"); kind "int+", "int" or "float", "float+".
_METAIMAGE_FIELDS: dict[str, tuple[str, str]] = {
    "dimsize": ("n", "int+"),
    "elementspacing": ("n", "float+"),
    "elementsize": ("n", "float+"),
    "offset": ("n", "float"),
    "origin": ("n", "float"),
    "position": ("n", "float"),
    "centerofrotation": ("n", "float"),
    "transformmatrix": ("n2", "float"),
    "rotation": ("n2", "float"),
    "orientation": ("n2", "float"),
    "elementnumberofchannels": ("1", "int+"),
    "headersize": ("1", "int"),
}
_METAIMAGE_SUFFIXES = (".mha", ".mhd")
_C_INT = re.compile(r"[-+]?[0-9]+")
_C_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
#: Bytes of a MetaImage file searched for the end of its text header.
_METAIMAGE_HEADER_BYTES = 1 << 20


def _check_metaimage_header(p: Path, what: str) -> None:
    """Refuse a MetaImage header whose numbers ITK would crash on or silently replace.

    SimpleITK's MetaIO reader kills the interpreter (SIGSEGV/SIGABRT) on ``NDims = -1`` and
    reads ``Offset = nan 5 30`` as the origin (0, 0, 0), so the text header is parsed here
    first: NDims must be 2-4, DimSize NDims positive integers, the spacing NDims positive
    numbers, the origin NDims and the direction matrix NDims^2 finite numbers (plain decimal
    numbers, as MetaIO writes them).
    """
    hint = ("re-export the image from its source (scanner/PACS, 3D Slicer, ...) or fix the "
            "MetaImage header")
    with p.open("rb") as fh:
        head = fh.read(_METAIMAGE_HEADER_BYTES)
    end = re.search(rb"(?mi)^[ \t]*ElementDataFile[ \t]*=[^\n]*", head)
    if end is None:
        raise ImageReadError(
            f"{what} file {p} is not a MetaImage file: no 'ElementDataFile = ...' line ends "
            f"a text header in its first {_METAIMAGE_HEADER_BYTES // 1024} kB", hint=hint)
    fields: dict[str, str] = {}
    names: dict[str, str] = {}
    for raw in head[: end.start()].decode("latin-1").splitlines():
        key, sep, value = raw.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
            names[key.strip().lower()] = key.strip()
    text = fields.get("ndims")
    if text is None or not _C_INT.fullmatch(text) or not 2 <= int(text) <= 4:
        raise ImageReadError(f"{what} file {p} has a corrupt MetaImage header: NDims = "
                             f"{text!r}, expected 3 (2-4)", hint=hint)
    ndims = int(text)
    if "dimsize" not in fields:
        raise ImageReadError(f"{what} file {p} has a corrupt MetaImage header: no DimSize",
                             hint=hint)
    for name, (count, kind) in _METAIMAGE_FIELDS.items():
        if name not in fields:
            continue
        values = fields[name].split()
        expected = {"n": ndims, "n2": ndims * ndims, "1": 1}[count]
        pattern = _C_INT if kind.startswith("int") else _C_FLOAT
        ok = len(values) == expected and all(pattern.fullmatch(v) for v in values)
        if ok:
            numbers = [float(v) for v in values]
            ok = all(math.isfinite(v) for v in numbers)
            if kind.startswith("int"):  # MetaIO keeps them in C ints
                ok = ok and all(abs(v) < 2**31 for v in numbers)
            if kind.endswith("+"):
                ok = ok and all(v > 0 for v in numbers)
            elif kind == "int":
                ok = ok and all(v >= -1 for v in numbers)
        if not ok:
            what_kind = {"int+": "positive integers", "int": "integers",
                         "float+": "positive numbers", "float": "finite numbers"}[kind]
            raise ImageReadError(
                f"{what} file {p} has a corrupt MetaImage header: "
                f"{names[name]} = {fields[name][:80]!r}, expected {expected} {what_kind}",
                hint=hint)


def _inspect_nifti(p: Path, what: str) -> dict[int, str]:
    """Check a NIfTI file's pixel data against its header and read its label table.

    ITK's NIfTI reader neither reports a truncated file (it pads the data) nor NaN/inf
    voxels (it reads them as 0), so both are checked here on the raw bytes. The label table
    TotalSegmentator writes into a header extension (``<Label Key="76">femur_right</Label>``
    entries of an XML ``CaretExtension``) is parsed with a plain pattern, never an XML parser.

    Args:
        p: A ``.nii`` or ``.nii.gz`` file whose header ITK could read.
        what: Human name of the expected content, for messages.

    Returns:
        Label value -> name from the header extensions (empty when there is none).

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
    problem = _nifti_header_problem(raw)
    if problem is not None:
        raise ImageReadError(
            f"{what} file {p} has a corrupt NIfTI header: {problem}",
            hint="re-export the image from its source (scanner/PACS, 3D Slicer, ...); a header "
            "edited by hand or damaged in transfer is not read with guessed values",
        )
    layout = _nifti_layout(raw)
    if layout is None:
        return {}
    expected = layout.offset + layout.voxels * layout.dtype.itemsize
    if len(raw) < expected:
        raise ImageReadError(
            f"{what} file {p} is truncated: it holds {len(raw)} bytes of the {expected} its "
            "header announces",
            hint=hint,
        )
    if layout.dtype.kind == "f":
        values = np.frombuffer(raw, layout.dtype, layout.voxels, layout.offset)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ImageReadError(
                f"{what} {p} holds {bad} NaN/inf voxel(s) out of {layout.voxels}",
                hint="re-export the image from its source, or replace invalid voxels (e.g. by "
                "-1000 HU for air) before running osteofe",
            )
    return _nifti_label_table(raw, layout)


class _NiftiLayout(NamedTuple):
    """Where a NIfTI file's data and extensions are."""

    endian: str
    header_size: int
    offset: int
    voxels: int
    dtype: np.dtype


#: NIfTI datatype codes -> numpy type characters (integers and floats; others not checked).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2",
                 768: "u4", 1024: "i8", 1280: "u8"}


def _nifti_header_problem(header: bytes) -> str | None:
    """What is wrong with a NIfTI-1/-2 header's data offset or voxel size, or None.

    ITK reads a NaN/inf/negative ``vox_offset`` without complaint and replaces a zero, NaN or
    negative ``pixdim`` of a spatial axis by 1 mm: the image would be read from the wrong
    bytes or with a made-up voxel size.
    """
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(f"{endian}i", header[:4])[0] == 348:
            ndim = struct.unpack(f"{endian}h", header[40:42])[0]
            pixdim = struct.unpack(f"{endian}8f", header[76:108])
            vox_offset = float(struct.unpack(f"{endian}f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(f"{endian}i", header[:4])[0] == 540:
            ndim = struct.unpack(f"{endian}q", header[16:24])[0]
            pixdim = struct.unpack(f"{endian}8d", header[104:168])
            vox_offset = float(struct.unpack(f"{endian}q", header[168:176])[0])
            break
    else:
        return None
    if not (math.isfinite(vox_offset) and vox_offset >= 0.0):
        return f"vox_offset (where the voxel data start) is {vox_offset:g}"
    for axis in range(1, min(max(int(ndim), 1), 3) + 1):
        if not (math.isfinite(pixdim[axis]) and pixdim[axis] > 0.0):
            return (f"pixdim[{axis}] (the voxel size along axis {'ijk'[axis - 1]}) is "
                    f"{pixdim[axis]:g} mm")
    return None


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """Endianness, header size, data offset, voxel count and dtype of a NIfTI-1/-2 file."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(f"{endian}i", header[:4])[0] == 348:
            size = 348
            dims = struct.unpack(f"{endian}8h", header[40:56])
            code = struct.unpack(f"{endian}h", header[70:72])[0]
            vox_offset = float(struct.unpack(f"{endian}f", header[108:112])[0])
            if not (math.isfinite(vox_offset) and vox_offset >= 0.0):
                return None  # refused by _nifti_header_problem
            offset = max(int(vox_offset), size)
            break
        if len(header) >= 540 and struct.unpack(f"{endian}i", header[:4])[0] == 540:
            size = 540
            code = struct.unpack(f"{endian}h", header[12:14])[0]
            dims = struct.unpack(f"{endian}8q", header[16:80])
            offset = max(int(struct.unpack(f"{endian}q", header[168:176])[0]), size)
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or code not in _NIFTI_DTYPES:
        return None
    count = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return _NiftiLayout(endian, size, offset, count, np.dtype(endian + _NIFTI_DTYPES[code]))


def _nifti_label_table(raw: bytes, layout: _NiftiLayout) -> dict[int, str]:
    """Label value -> name from the XML label tables in a NIfTI file's header extensions."""
    start = layout.header_size
    if len(raw) < start + 4 or raw[start] == 0:
        return {}
    names: dict[int, str] = {}
    pos = start + 4
    while pos + 8 <= min(layout.offset, len(raw)):
        esize = struct.unpack(f"{layout.endian}i", raw[pos : pos + 4])[0]
        if esize < 8 or pos + esize > len(raw):
            break
        text = raw[pos + 8 : pos + esize].decode("utf-8", errors="replace")
        for match in _CARET_LABEL.finditer(text):
            name = (match.group(2) if match.group(2) is not None else match.group(3)).strip()
            if name:
                names[int(match.group(1))] = name
        pos += esize
    return names


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
            "Extract or fslroi); segmentations saved by 3D Slicer before version 4.11 must "
            "be re-saved or exported as one labelmap",
        )


def _as_3d(image: sitk.Image, source: str, what: str, *, allow_components: bool) -> sitk.Image:
    """Return ``image`` as a 3-D volume (scalar unless ``allow_components``) or raise."""
    size = tuple(image.GetSize())
    _check_header_dimension(image.GetDimension(), size, source, what)
    if image.GetDimension() == 4:  # a 3-D volume stored with one time point
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetNumberOfComponentsPerPixel() != 1 and not allow_components:
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
    return _make_grid(tuple(int(n) for n in image.GetSize()[:3]), image.GetSpacing(),
                      image.GetOrigin(), image.GetDirection(), source)


def _make_grid(
    shape: tuple[int, ...], spacing: npt.ArrayLike, origin: npt.ArrayLike,
    direction: npt.ArrayLike, source: str,
) -> ImageGrid:
    """An :class:`ImageGrid`, with invalid geometry reported as :class:`ImageReadError`."""
    try:
        return ImageGrid(
            shape=(int(shape[0]), int(shape[1]), int(shape[2])),
            spacing=np.asarray(spacing, dtype=np.float64),
            origin=np.asarray(origin, dtype=np.float64),
            direction=np.asarray(direction, dtype=np.float64).reshape(3, 3),
        )
    except ValueError as err:
        raise ImageReadError(
            f"image {source} has an invalid geometry: {err}",
            hint="fix the header (positive spacing, finite origin, orthonormal direction "
            "cosines), e.g. by resampling the image in 3D Slicer or SimpleITK",
        ) from err


def _array_ijk(image: sitk.Image) -> np.ndarray:
    """Pixel array of a 3-D image indexed ``[i, j, k]`` (``[i, j, k, c]`` for vectors)."""
    view = sitk.GetArrayViewFromImage(image)
    axes = (2, 1, 0, 3) if view.ndim == 4 else (2, 1, 0)
    return np.ascontiguousarray(view.transpose(axes))


def _names_from_metadata(metadata: Mapping[str, str]) -> dict[int, str]:
    """Segment names stored as ``SegmentN_Name``/``SegmentN_LabelValue`` (3D Slicer, NRRD)."""
    return {seg.value: seg.name for seg in _slicer_segments(metadata) if seg.value is not None}


class _Segment(NamedTuple):
    """One segment described in a 3D Slicer segmentation header."""

    number: int
    name: str
    value: int | None
    layer: int | None


def _slicer_segments(metadata: Mapping[str, str]) -> list[_Segment]:
    """The ``SegmentN_*`` records of a NRRD header, in segment order."""
    segments = []
    for key, name in metadata.items():
        match = _SLICER_NAME_KEY.match(key)
        if match is None:
            continue
        index = int(match.group(1))
        segments.append(_Segment(index, name.strip(),
                                 _int_or_none(metadata.get(f"Segment{index}_LabelValue")),
                                 _int_or_none(metadata.get(f"Segment{index}_Layer"))))
    return sorted(segments)


def _int_or_none(text: str | None) -> int | None:
    """``int(text)`` or None when absent or not an integer."""
    try:
        return int(str(text).strip()) if text is not None else None
    except ValueError:
        return None


def _checked_label_values(values: np.ndarray, source: str) -> np.ndarray:
    """Refuse non-integral, negative or too large label values; return them unchanged."""
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
    return values


def _flatten_layers(
    values: np.ndarray, metadata: Mapping[str, str], source: str
) -> tuple[npt.NDArray[np.int32], dict[int, str]]:
    """Merge the layers of a 3D Slicer segmentation into one label map.

    Args:
        values: ``[i, j, k, layer]`` integer array.
        metadata: The NRRD header (``SegmentN_Name``/``_LabelValue``/``_Layer``).
        source: File name for messages.

    Returns:
        ``[i, j, k]`` int32 labels and value -> segment name.

    Raises:
        ImageReadError: A segment names a layer that does not exist, or two segments overlap.
    """
    num_layers = values.shape[3]
    segments: list[tuple[str, int, int]] = []  # (name, layer, value) in file order
    for seg in _slicer_segments(metadata):
        layer = 0 if seg.layer is None else seg.layer
        if not 0 <= layer < num_layers or seg.value is None:
            raise ImageReadError(
                f"segmentation {source}: segment '{seg.name}' has layer {layer} / label "
                f"value {seg.value}, but the file holds layers 0..{num_layers - 1}",
                hint="re-save the segmentation in 3D Slicer, or export it as a labelmap",
            )
        segments.append((seg.name, layer, seg.value))
    occupied = values != 0
    overlap = occupied.sum(axis=3) > 1
    if overlap.any():
        where = np.argwhere(overlap)[0]
        voxel = values[tuple(where)]
        clash = [
            next((name for name, lay, val in segments
                  if lay == int(layer) and val == int(voxel[layer])),
                 f"layer {int(layer)} value {int(voxel[layer])}")
            for layer in np.flatnonzero(voxel)
        ]
        raise ImageReadError(
            f"segmentation {source} has overlapping segments ({' and '.join(map(repr, clash))} "
            f"share voxel {tuple(int(x) for x in where)}; {int(overlap.sum())} voxel(s) belong "
            "to more than one segment), so it cannot be one label map",
            hint="remove the overlap in 3D Slicer (Segment Editor, Logical operators > "
            "Subtract) or export the segments you need as a labelmap",
        )
    unique_values = len({val for _, _, val in segments}) == len(segments)
    new_value = {(lay, val): (val if unique_values else n + 1)
                 for n, (_, lay, val) in enumerate(segments)}
    if not unique_values:
        _LOG.info("segmentation %s: label values repeat across layers; segments renumbered %s",
                  source, ", ".join(f"'{name}' -> {new_value[(lay, val)]}"
                                    for name, lay, val in segments))
    flat = np.zeros(values.shape[:3], dtype=np.int32)
    for layer in range(num_layers):
        layer_values = values[..., layer]
        for value in np.unique(layer_values[occupied[..., layer]]).tolist():
            key = (layer, int(value))
            if key not in new_value:
                raise ImageReadError(
                    f"segmentation {source}: layer {layer} holds label {int(value)}, which no "
                    "segment of the header describes",
                    hint="re-save the segmentation in 3D Slicer, or export it as a labelmap",
                )
            flat[layer_values == value] = new_value[key]
    names = {new_value[(lay, val)]: name for name, lay, val in segments}
    return flat, names


# --------------------------------------------------------------------------------------------
# reading: DICOM folders
# --------------------------------------------------------------------------------------------


def _dicom_tag(reader: sitk.ImageFileReader, tag: str) -> str:
    """A DICOM tag's value as a stripped string ('' when absent)."""
    return reader.GetMetaData(tag).strip().strip("\x00").strip() \
        if reader.HasMetaDataKey(tag) else ""


def _scan_dicom_folder(folder: Path) -> tuple[list[_SliceInfo], int]:
    """Read the header of every DICOM image file directly in ``folder``.

    Returns:
        The headers of the readable DICOM images and the number of other files skipped.
    """
    slices: list[_SliceInfo] = []
    skipped = 0
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(entry))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            skipped += 1
            if _looks_like_dicom(entry):
                _LOG.warning("skipping %s: it looks like DICOM but its image header cannot be "
                             "read", entry)
            continue
        size = tuple(int(n) for n in reader.GetSize())
        dim = reader.GetDimension()
        slices.append(_SliceInfo(
            path=str(entry),
            uid=_dicom_tag(reader, "0020|000e"),
            modality=_dicom_tag(reader, "0008|0060").upper(),
            description=_dicom_tag(reader, "0008|103e"),
            image_type=_dicom_tag(reader, "0008|0008").upper(),
            size=size,
            origin=np.asarray(reader.GetOrigin(), dtype=np.float64)[:3],
            direction=np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)[
                :3, :3],
            spacing=np.asarray(reader.GetSpacing(), dtype=np.float64)[:3],
        ))
    return slices, skipped


def _looks_like_dicom(path: Path) -> bool:
    """Whether a file carries the DICOM Part 10 preamble marker ``DICM`` at byte 128."""
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _group_series(slices: Sequence[_SliceInfo]) -> list[tuple[DicomSeries, list[_SliceInfo]]]:
    """Group headers by SeriesInstanceUID, largest series first."""
    groups: dict[str, list[_SliceInfo]] = {}
    for info in slices:
        groups.setdefault(info.uid, []).append(info)
    result = []
    for uid, members in groups.items():
        modalities = sorted({m.modality for m in members if m.modality})
        descriptions = sorted({m.description for m in members if m.description})
        series = DicomSeries(uid=uid, modality="/".join(modalities),
                             description=descriptions[0] if descriptions else "",
                             files=tuple(m.path for m in members))
        result.append((series, members))
    result.sort(key=lambda item: (-item[0].num_files, item[0].uid))
    return result


def _read_dicom_folder(
    folder: Path, what: str, *, series_uid: str | None, resample: bool
) -> _Loaded:
    """Choose a series in a DICOM folder, check its geometry and read it."""
    slices, skipped = _scan_dicom_folder(folder)
    if not slices:
        raise ImageReadError(
            f"folder {folder} holds no DICOM series (no DICOM image among its {skipped} "
            "file(s))",
            hint="give the folder that directly contains the .dcm slices, or an image file",
        )
    groups = _group_series(slices)
    listing = "; ".join(series.describe() for series, _ in groups)
    want_ct = what == "CT"
    if series_uid is not None:
        chosen = [g for g in groups if g[0].uid == series_uid.strip()]
        if not chosen:
            raise ImageReadError(
                f"folder {folder} holds no DICOM series with SeriesInstanceUID {series_uid} "
                f"(series found: {listing})",
                hint="pick one of the UIDs listed (list_dicom_series shows them)",
            )
        series, members = chosen[0]
    else:
        candidates = [g for g in groups if not want_ct or g[0].modality in ("CT", "")]
        if not candidates:
            raise ImageReadError(
                f"folder {folder} holds no CT: its DICOM series are {listing}; modality "
                f"{groups[0][0].modality} is not a CT and has no Hounsfield units",
                hint="give the CT series of the patient (Modality CT); MR/PET images cannot "
                "be converted to bone density",
            )
        series, members = candidates[0]
    if want_ct and series.modality != "CT":
        if series.modality:
            raise ImageReadError(
                f"DICOM series {series.describe()} in {folder} is not a CT: its modality is "
                f"{series.modality}, which has no Hounsfield units",
                hint="give the CT series of the patient (Modality CT); MR/PET images cannot be "
                "converted to bone density",
            )
        _LOG.warning("DICOM series %s in %s has no Modality tag; reading it as a CT",
                     series.uid, folder)
    others = [s.describe() for s, _ in groups if s.uid != series.uid]
    _LOG.info("reading DICOM series %s from %s%s", series.describe(), folder,
              f"; other series there: {'; '.join(others)}" if others else "")
    values, grid = _dicom_volume(members, series, folder, what, resample=resample)
    source = f"{folder} (DICOM series {series.uid}, {values.shape[2]} slices)"
    return _Loaded(values=values, grid=grid, metadata={}, label_names={}, source=source)


def _dicom_volume(
    members: Sequence[_SliceInfo], series: DicomSeries, folder: Path, what: str,
    *, resample: bool,
) -> tuple[np.ndarray, ImageGrid]:
    """Sort, check and stack the slices of one series (or read its multi-frame file)."""
    name = f"DICOM series {series.uid} in {folder}"
    images = [m for m in members if "LOCALIZER" not in m.image_type]
    if 0 < len(images) < len(members):
        _LOG.info("%s: ignoring %d localizer image(s)", name, len(members) - len(images))
        members = images
    if len(members) == 1:
        return _dicom_multiframe(members[0], name, what)
    first = members[0]
    if any(len(m.size) > 2 and m.size[2] > 1 for m in members):
        raise ImageReadError(
            f"{name} mixes multi-frame and single-frame files",
            hint="choose another series (series_uid=...) or export the series again",
        )
    if any(m.size[:2] != first.size[:2] for m in members):
        sizes = sorted({f"{m.size[0]}x{m.size[1]}" for m in members})
        raise ImageReadError(
            f"{name} holds slices of different sizes ({', '.join(sizes)} pixels)",
            hint="the folder mixes images of several reconstructions; choose one series or "
            "keep one reconstruction's files",
        )
    if any(not np.allclose(m.direction, first.direction, atol=1e-4) for m in members):
        count = len({tuple(np.round(m.direction[:, :2].ravel(), 4)) for m in members})
        raise ImageReadError(
            f"{name} mixes {count} slice orientations (ImageOrientationPatient differs)",
            hint="the series holds localizer or reformatted images; keep only the axial "
            "slices or choose another series",
        )
    if any(not np.allclose(m.spacing[:2], first.spacing[:2], rtol=1e-4) for m in members):
        raise ImageReadError(
            f"{name} holds slices with different pixel spacings",
            hint="keep the slices of one reconstruction only",
        )
    if min(first.size[:2]) < 2:
        raise ImageReadError(f"{name} has slices of {first.size[0]}x{first.size[1]} pixels",
                             hint="give a CT volume, not a line or point image")
    direction = first.direction
    normal = direction[:, 2]
    positions = np.array([m.origin for m in members])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    members = [members[i] for i in order]
    positions, along = positions[order], along[order]
    steps = np.diff(along)
    if np.any(steps < _DUPLICATE_MM):
        at = int(np.argmax(steps < _DUPLICATE_MM))
        raise ImageReadError(
            f"{name} has {int(np.sum(steps < _DUPLICATE_MM))} duplicate slice position(s) "
            f"(e.g. {Path(members[at].path).name} and {Path(members[at + 1].path).name} both "
            f"at {along[at]:.3f} mm along the slice normal)",
            hint="the series holds several acquisitions or phases; separate them (choose "
            "another series) or remove the duplicate files",
        )
    pixel = first.spacing[:2]
    rel = positions - positions[0]
    sideways = rel - np.outer(rel @ normal, normal)
    drift = float(np.linalg.norm(sideways, axis=1).max())
    tilted = drift > _LATTICE_TOLERANCE * float(pixel.min())
    length = float(along[-1] - along[0])
    mean_step = length / (len(members) - 1)
    lattice = along[0] + mean_step * np.arange(len(members))
    irregular = float(np.abs(along - lattice).max()) > _LATTICE_TOLERANCE * mean_step
    problems = []
    if tilted:
        angle = math.degrees(math.atan2(float(np.linalg.norm(sideways[-1])), length))
        problems.append(f"was acquired with a gantry tilt of {angle:.2f} deg (its slices drift "
                        f"{drift:.2f} mm sideways over {len(members)} slices instead of being "
                        "stacked along their normal)")
    if irregular:
        big = int(np.argmax(steps))
        problems.append(f"has non-uniform slice spacing (steps between slices from "
                        f"{steps.min():.3g} to {steps.max():.3g} mm; the largest lies between "
                        f"{Path(members[big].path).name} and {Path(members[big + 1].path).name}"
                        ", a slice may be missing)")
    stack = _stack_slices(members, name, np.float32 if what == "CT" else np.float64)
    if problems:
        if not resample or what != "CT":
            raise ImageReadError(
                f"{name} " + " and ".join(problems),
                hint="read it with resample=True to resample it onto a uniform orthogonal grid"
                if what == "CT" else "resample the segmentation onto its CT's grid first",
            )
        values, grid = _regularise(stack, positions, direction, pixel, name)
        _LOG.warning("%s %s; resampled onto a uniform orthogonal grid of shape %s at "
                     "%.4g x %.4g x %.4g mm (linear interpolation)", name,
                     " and ".join(problems), grid.shape, *grid.spacing)
        return values, grid
    grid = _make_grid(stack.shape, (pixel[0], pixel[1], mean_step), positions[0], direction,
                      name)
    return stack, grid


def _dicom_multiframe(info: _SliceInfo, name: str, what: str) -> tuple[np.ndarray, ImageGrid]:
    """Read a one-file series (a multi-frame image) with GDCM's own geometry."""
    if len(info.size) < 3 or info.size[2] < 2:
        raise ImageReadError(
            f"{name} has a single slice ({Path(info.path).name}); it is effectively 2-D",
            hint="give the folder holding every slice of the series",
        )
    image = _read_dicom_file(info.path, name)
    image = _as_3d(image, name, what, allow_components=False)
    return _array_ijk(image), _grid_of(image, name)


def _read_dicom_file(path: str, name: str) -> sitk.Image:
    """Read one DICOM file's pixels (rescale slope/intercept applied by GDCM)."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(
            f"{name}: slice {Path(path).name} cannot be read ({_first_line(err)}); it may be "
            "truncated or corrupt",
            hint="re-export the series from the PACS, or remove the damaged slice file",
        ) from err


def _stack_slices(
    members: Sequence[_SliceInfo], name: str, dtype: type[np.floating]
) -> np.ndarray:
    """Pixel values of sorted single-frame slices as an ``[i, j, k]`` array of ``dtype``."""
    cols, rows = members[0].size[:2]
    stack = np.empty((cols, rows, len(members)), dtype=dtype)
    for k, info in enumerate(members):
        image = _read_dicom_file(info.path, name)
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ImageReadError(
                f"{name}: slice {Path(info.path).name} is a colour image, not a CT slice",
                hint="give the grey-level CT series",
            )
        view = sitk.GetArrayViewFromImage(image)
        stack[:, :, k] = view.reshape(rows, cols).T
    return stack


def _regularise(
    stack: np.ndarray,
    positions: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    pixel: npt.NDArray[np.float64],
    name: str,
) -> tuple[np.ndarray, ImageGrid]:
    """Resample parallel slices at arbitrary positions onto a uniform orthogonal grid.

    The slices share one orientation (row direction ``r``, column direction ``c``, normal
    ``n = r x c``) but their origins may step unevenly along ``n`` and drift within the slice
    plane (a gantry tilt). Between two neighbouring slices the origin is interpolated linearly,
    so the value at a world point is the linear blend, along ``n``, of the bilinear values of
    the two slices around it: trilinear interpolation in the sheared acquisition lattice.

    The output grid has directions ``(r, c, n)``, the in-plane pixel spacing, the finest
    acquired step along ``n``, covers every acquired pixel in the slice plane and runs from
    the first to (at most) the last slice; its voxels outside the acquired slices get the
    lowest value of the series.

    Args:
        stack: ``[i, j, k]`` slice values, ``k`` in ascending position along ``n``.
        positions: (nk, 3) world positions (mm) of each slice's pixel (0, 0).
        direction: (3, 3) direction cosines, columns ``r, c, n``.
        pixel: (2,) pixel spacing along ``r`` and ``c`` in mm.
        name: Series description for messages.

    Returns:
        The resampled ``[i, j, k]`` values (``stack``'s dtype) and their grid.
    """
    cols, rows, nsl = stack.shape
    r, c, n = direction[:, 0], direction[:, 1], direction[:, 2]
    rel = positions - positions[0]
    along, u_off, v_off = rel @ n, rel @ r, rel @ c
    dz = float(np.diff(along).min())
    u0, u1 = float(u_off.min()), float(u_off.max()) + (cols - 1) * pixel[0]
    v0, v1 = float(v_off.min()), float(v_off.max()) + (rows - 1) * pixel[1]
    ni = math.ceil((u1 - u0) / pixel[0] - 1e-6) + 1
    nj = math.ceil((v1 - v0) / pixel[1] - 1e-6) + 1
    nk = math.floor(float(along[-1]) / dz + 1e-6) + 1
    fill = stack.dtype.type(stack.min())
    out = np.empty((ni, nj, nk), dtype=stack.dtype)
    u_out = u0 + pixel[0] * np.arange(ni)
    v_out = v0 + pixel[1] * np.arange(nj)
    index = np.arange(nsl, dtype=np.float64)
    for kt in range(nk):
        kf = float(np.interp(kt * dz, along, index))
        k0 = min(math.floor(kf), nsl - 2)
        frac = kf - k0
        u_shift = u_off[k0] + frac * (u_off[k0 + 1] - u_off[k0])
        v_shift = v_off[k0] + frac * (v_off[k0 + 1] - v_off[k0])
        ia, wa, ok_a = _linear_weights((u_out - u_shift) / pixel[0], cols)
        jb, wb, ok_b = _linear_weights((v_out - v_shift) / pixel[1], rows)
        blended = np.zeros((ni, nj), dtype=np.float64)
        for kk, weight in ((k0, 1.0 - frac), (k0 + 1, frac)):
            if weight == 0.0:
                continue
            plane = stack[:, :, kk].astype(np.float64)
            along_i = plane[ia] * (1.0 - wa)[:, None] + plane[ia + 1] * wa[:, None]
            both = along_i[:, jb] * (1.0 - wb)[None, :] + along_i[:, jb + 1] * wb[None, :]
            blended += weight * both
        blended[~ok_a, :] = fill
        blended[:, ~ok_b] = fill
        out[:, :, kt] = blended
    origin = positions[0] + u0 * r + v0 * c
    return out, _make_grid((ni, nj, nk), (pixel[0], pixel[1], dz), origin, direction, name)


def _linear_weights(
    coords: npt.NDArray[np.float64], size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Lower neighbour, weight of the upper one, and in-range flag for 1-D linear lookup."""
    inside = (coords >= -1e-6) & (coords <= size - 1 + 1e-6)
    clipped = np.clip(coords, 0.0, size - 1.0)
    lower = np.minimum(np.floor(clipped).astype(np.int64), size - 2)
    return lower, clipped - lower, inside


# --------------------------------------------------------------------------------------------
# reading: helpers
# --------------------------------------------------------------------------------------------


def _first_line(err: Exception) -> str:
    """The most informative single line of a SimpleITK exception message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if "Description:" in line or "ERROR" in line.upper():
            return line.replace("Description:", "").strip()[:200]
    return lines[-1][:200] if lines else type(err).__name__




def _nifti_files(folder: Path) -> list[Path]:
    """The ``.nii``/``.nii.gz`` files directly in ``folder`` (sorted)."""
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.name.lower().endswith(_NIFTI_SUFFIXES)
                  and not f.name.startswith("."))


def _strip_nifti_suffix(name: str) -> str:
    """``femur_left.nii.gz`` -> ``femur_left``."""
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _short_list(items: Sequence[str], limit: int = 12) -> str:
    """'a, b, c, ... 5 more' for messages."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _fmt(values: npt.ArrayLike) -> str:
    """'(0.7, 0.9, 1.3)' with 4 significant digits."""
    return "(" + ", ".join(f"{float(x):.4g}" for x in np.ravel(values)) + ")"


def _grid_text(grid: ImageGrid) -> str:
    """One-line description of a grid for messages and logs."""
    text = f"shape {grid.shape}, spacing {_fmt(grid.spacing)} mm, origin {_fmt(grid.origin)} mm"
    if not np.allclose(grid.direction, np.eye(3), atol=1e-6):
        text += f", direction {_fmt(grid.direction)}"
    return text


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
    # The real ending is kept in the temporary name because ITK picks the writer from it.
    try:
        with atomic_path(target, suffix=suffix) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=suffix != ".nii")
    except (RuntimeError, OSError) as err:
        raise InputError(
            f"cannot write image {target} ({_first_line(err)})",
            hint="check that the folder is writable and the disk has space",
        ) from err
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
                f"label name '{name}' is not in the label map"
                f"{did_you_mean(name, labels.names.values())} (named labels: {known}; "
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
    direction = ""
    if not np.allclose(ct_grid.direction, label_grid.direction, atol=1e-5):
        direction = (f"; direction CT {_fmt(ct_grid.direction)} vs labels "
                     f"{_fmt(label_grid.direction)}")
    raise InputError(
        f"label map grid differs from the CT grid: shape CT {ct_grid.shape} vs labels "
        f"{label_grid.shape}; spacing CT {_fmt(ct_grid.spacing)} vs labels "
        f"{_fmt(label_grid.spacing)} mm; origin CT {_fmt(ct_grid.origin)} vs labels "
        f"{_fmt(label_grid.origin)} mm{direction}",
        hint="use the segmentation made from this very CT, or resample the label map onto the "
        "CT grid with align_labels (nearest-neighbour interpolation)",
    )


def _voxel_box(grid: ImageGrid) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Axis-aligned world box (mm) enclosing every voxel of ``grid`` (voxel faces included)."""
    corners = np.array([[i, j, k] for i in (-0.5, grid.shape[0] - 0.5)
                        for j in (-0.5, grid.shape[1] - 0.5)
                        for k in (-0.5, grid.shape[2] - 0.5)], dtype=np.float64)
    world = grid.index_to_world(corners)
    return world.min(axis=0), world.max(axis=0)


def _box_text(box: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> str:
    """'x -10..20, y 0..5, z 3..9 mm'."""
    low, high = box
    return ", ".join(f"{axis} {lo:.1f}..{hi:.1f}"
                     for axis, lo, hi in zip("xyz", low, high, strict=True)) + " mm"


def align_labels(labels: LabelMap, ct_grid: ImageGrid) -> LabelMap:
    """Bring a label map onto the CT's voxel grid.

    A label map already on ``ct_grid`` is returned as it is. Otherwise, when the world boxes
    of the two images overlap, the labels are resampled onto the CT grid with nearest-neighbour
    interpolation (SimpleITK ``ResampleImageFilter``, identity transform, the labels' own
    origin, spacing and direction), so every CT voxel takes the label found at its centre and
    CT voxels outside the label image get 0. A WARNING names both grids; another one reports
    labelled volume lost outside the CT (more than 1%). Use :func:`require_same_grid` instead
    to refuse any mismatch.

    Args:
        labels: The label map, on any grid.
        ct_grid: Grid of the CT.

    Returns:
        The label map on ``ct_grid`` (names kept).

    Raises:
        InputError: The world boxes do not overlap (both are named), or no labelled voxel
            of a non-empty label map lands inside the CT.
    """
    if labels.grid.same_as(ct_grid):
        return labels
    label_box, ct_box = _voxel_box(labels.grid), _voxel_box(ct_grid)
    if np.any(label_box[1] <= ct_box[0]) or np.any(ct_box[1] <= label_box[0]):
        raise InputError(
            f"label map and CT do not overlap in space: the labels cover "
            f"{_box_text(label_box)}, the CT covers {_box_text(ct_box)}",
            hint="use the segmentation made from this CT; if it is, its header geometry was "
            "lost or changed (e.g. a RAS/LPS flip or a reset origin) - re-export it with the "
            "CT's geometry",
        )
    _LOG.warning("label map grid differs from the CT grid (labels: %s; CT: %s); resampling "
                 "the labels onto the CT grid with nearest-neighbour interpolation",
                 _grid_text(labels.grid), _grid_text(ct_grid))
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.labels.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in labels.grid.spacing])
    image.SetOrigin([float(o) for o in labels.grid.origin])
    image.SetDirection([float(d) for d in labels.grid.direction.reshape(9)])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in ct_grid.shape])
    resampler.SetOutputSpacing([float(s) for s in ct_grid.spacing])
    resampler.SetOutputOrigin([float(o) for o in ct_grid.origin])
    resampler.SetOutputDirection([float(d) for d in ct_grid.direction.reshape(9)])
    resampler.SetTransform(sitk.Transform())
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(sitk.sitkInt32)
    resampled = _array_ijk(resampler.Execute(image)).astype(np.int32, copy=False)
    before = float(np.count_nonzero(labels.labels)) * float(np.prod(labels.grid.spacing))
    after = float(np.count_nonzero(resampled)) * float(np.prod(ct_grid.spacing))
    if before > 0.0 and after == 0.0:
        raise InputError(
            f"no labelled voxel of the label map lies inside the CT (labels cover "
            f"{_box_text(label_box)}, CT covers {_box_text(ct_box)}; labelled volume "
            f"{before:.0f} mm^3)",
            hint="use the segmentation made from this CT, or check its header geometry",
        )
    if before > 0.0 and after < 0.99 * before:
        _LOG.warning("after resampling onto the CT grid the labelled volume is %.0f mm^3 of "
                     "%.0f mm^3: part of the segmentation lies outside the CT", after, before)
    return LabelMap(grid=ct_grid, labels=resampled, names=dict(labels.names))
