"""The report as a DICOM object that a PACS can file beside the CT it was computed from.

:func:`export_dicom` wraps

- a PDF (``report.pdf``) as an **Encapsulated PDF** (SOP class 1.2.840.10008.5.1.4.1.1.104.1,
  modality ``DOC``), or
- a PNG picture (e.g. a report page, ``report_page_01.png``) as a **Secondary Capture** image
  (1.2.840.10008.5.1.4.1.1.7, RGB, modality ``OT``),

Three modes, from the most private (the default) to filing in the hospital's own PACS:

================================  ==========================================================
mode                              what the object holds
================================  ==========================================================
de-identified (default)           PatientName and PatientID = the case identifier; no date,
                                  accession number, study ID or description, referring
                                  physician, sex or birth date of the source. **New** Study,
                                  Series and SOP Instance UIDs, and no reference to the CT's
                                  instances: nothing in the file names the source study (a
                                  UID is a pseudonym a PACS or a log can resolve). Coded as
                                  DICOM PS3.15 Basic Application Confidentiality Profile
                                  (CID 7050 ``113100``).
``retain_uids=True``              The same, but in the source CT's study: its
                                  StudyInstanceUID is kept and the CT slices are referenced
                                  (Source Instance Sequence for the PDF, Source Image
                                  Sequence for the picture), so that a research PACS that
                                  holds the de-identified CT under its original UIDs files the
                                  report beside it. Coded ``113100`` + ``113110`` Retain UIDs
                                  Option.
``include_patient_identifiers``   The source's patient name, ID, birth date, sex and age and
                                  its identifying study attributes are copied, in the source
                                  study with references (the hospital's own PACS); no
                                  de-identification attributes.
================================  ==========================================================

De-identified objects carry PatientIdentityRemoved ``YES``, DeidentificationMethod (text) and
the DeidentificationMethodCodeSequence. Patient characteristics and the CT's device identity
are never copied into them (no ``113108``/``113109``); the creation, content and series
dates and times are those of the export itself, not of the scan. Neither IOD has a Frame of
Reference module (a document and a picture have no patient coordinates), so the CT's
FrameOfReferenceUID is never copied.

UIDs of the new objects are derived (:func:`pydicom.uid.generate_uid` with entropy sources)
from the document's SHA-256, the case identifier and the mode - plus the source study UID
where the object joins that study -, so exporting the same report twice in one mode gives the
same object, the three modes give different objects, and a de-identified object's UIDs are
not computable from the source's UIDs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.atomic import atomic_path
from meshing.errors import InputError, OsteofeError
from osteofe import __version__

__all__ = [
    "BASIC_PROFILE_CODE",
    "ENCAPSULATED_PDF_STORAGE",
    "IDENTIFYING_STUDY_ATTRIBUTES",
    "PATIENT_ATTRIBUTES",
    "RETAIN_UIDS_CODE",
    "SECONDARY_CAPTURE_STORAGE",
    "DicomExportError",
    "SourceStudy",
    "export_dicom",
    "read_source_study",
]

#: SOP class UIDs (DICOM PS3.4 Annex B).
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

#: Patient module attributes copied only with ``include_patient_identifiers=True``.
PATIENT_ATTRIBUTES = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                      "PatientSex", "PatientAge")
#: Study attributes that can identify a patient or visit, copied only on request.
IDENTIFYING_STUDY_ATTRIBUTES = ("StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                                "StudyDescription", "ReferringPhysicianName")

#: De-identification methods (DICOM PS3.16 CID 7050, coding scheme DCM): code, meaning.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
RETAIN_UIDS_CODE = ("113110", "Retain UIDs Option")

#: Series number of the exported report series (high, to sort after the acquired series).
REPORT_SERIES_NUMBER = 9701
_SERIES_DESCRIPTION = "osteofe femoral strength report (research software)"
_DOCUMENT_TITLE = "osteofe femoral strength report"


class DicomExportError(OsteofeError):
    """The report could not be exported to DICOM (unsupported or unreadable input)."""


@dataclass(frozen=True)
class SourceStudy:
    """What is taken from the source CT series.

    Attributes:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID of the CT series.
        frame_of_reference_uid: FrameOfReferenceUID of the CT (kept for callers; not written
            into the report objects, whose IODs have no Frame of Reference module).
        instances: (SOPClassUID, SOPInstanceUID) of every slice of the series.
        header: The first slice's header (pydicom Dataset, no pixel data).
    """

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    instances: tuple[tuple[str, str], ...]
    header: Any


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - pydicom is a dependency
        raise DicomExportError("pydicom is not installed",
                               hint="pip install pydicom (an osteofe dependency)") from exc
    return pydicom


def read_source_study(source: str | Path) -> SourceStudy:
    """Read the study and series identity of a CT: a DICOM folder or one DICOM file.

    For a folder, the series is the one :func:`meshing.imaging.read_ct` would read (the CT
    series with the most files).

    Args:
        source: DICOM folder or file.

    Returns:
        The source study.

    Raises:
        InputError: If the path does not exist or holds no DICOM image with a
            StudyInstanceUID.
    """
    pydicom = _pydicom()
    path = Path(source)
    if not path.exists():
        raise InputError(f"source DICOM not found: {path}",
                         hint="give the CT's DICOM folder (the one passed to --ct)")
    if path.is_dir():
        from meshing.imaging import list_dicom_series

        series = list_dicom_series(path)
        ct = [s for s in series if s.modality == "CT"] or list(series)
        if not ct:
            raise InputError(f"no DICOM image series in {path}",
                             hint="give the folder that directly holds the CT slices")
        files = list(ct[0].files)
    else:
        files = [str(path)]
    instances: list[tuple[str, str]] = []
    header = None
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for non-DICOM files
            raise InputError(f"{name} is not a readable DICOM file ({exc})",
                             hint="give a DICOM CT folder or file") from exc
        if header is None:
            header = ds
        sop_class, sop_uid = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
        if sop_class and sop_uid:
            instances.append((str(sop_class), str(sop_uid)))
    study_uid = str(header.get("StudyInstanceUID", "")) if header is not None else ""
    if header is None or not study_uid:
        raise InputError(f"{path} has no StudyInstanceUID",
                         hint="give the original DICOM CT (not a converted NIfTI/NRRD)")
    frame = header.get("FrameOfReferenceUID")
    return SourceStudy(study_uid, str(header.get("SeriesInstanceUID", "")),
                       str(frame) if frame else None, tuple(instances), header)


def _rgb_pixels(path: Path) -> Any:
    """A PNG as (rows, cols, 3) uint8 RGB, transparency composited on white."""
    import numpy as np
    from matplotlib import image as mpimg

    try:
        pixels = mpimg.imread(path, format="png")
    except (OSError, ValueError, SyntaxError) as exc:
        raise DicomExportError(f"{path} is not a readable PNG ({exc})",
                               hint="give report.pdf or a PNG page of the report") from exc
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4]
        arr = arr[:, :, :3] * alpha + (1.0 - alpha)
    elif arr.shape[2] == 2:  # grey + alpha
        alpha = arr[:, :, 1:2]
        arr = np.repeat(arr[:, :, :1] * alpha + (1.0 - alpha), 3, axis=2)
    return np.ascontiguousarray(np.clip(np.rint(arr[:, :, :3] * 255.0), 0, 255)
                                .astype(np.uint8))


def _method_code_sequence(pydicom: Any, codes: Sequence[tuple[str, str]]) -> Any:
    """DeidentificationMethodCodeSequence items of (code value, meaning), scheme DCM."""
    items = []
    for value, meaning in codes:
        item = pydicom.Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return pydicom.Sequence(items)


def _reference_sequence(pydicom: Any, instances: Sequence[tuple[str, str]]) -> Any:
    items = []
    for sop_class, sop_uid in instances:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    return pydicom.Sequence(items)


def export_dicom(
    report_pdf_or_png: str | Path,
    source_ct_dicom_folder: str | Path | None,
    out_path: str | Path,
    *,
    case_id: str,
    include_patient_identifiers: bool = False,
    retain_uids: bool = False,
    laterality: str | None = None,
    now: datetime | None = None,
) -> Path:
    """Write the report as an Encapsulated PDF or Secondary Capture DICOM file.

    Args:
        report_pdf_or_png: ``report.pdf`` (Encapsulated PDF) or a PNG page (Secondary
            Capture).
        source_ct_dicom_folder: The CT's DICOM folder (or one of its files) the report is
            computed from: the study it joins with ``retain_uids`` or
            ``include_patient_identifiers``; None starts a new study (the report then links
            to nothing).
        out_path: DICOM file to write (atomically).
        case_id: The case identifier: the PatientName and PatientID of the object unless
            ``include_patient_identifiers`` is set.
        include_patient_identifiers: Copy the patient's name, ID, birth date, sex and age and
            the identifying study attributes (date, time, accession number, study ID and
            description, referring physician) from the source, in the source study with
            references to the CT instances. Off by default.
        retain_uids: With the identity removed, keep the source's StudyInstanceUID and
            reference the CT instances (DICOM PS3.15 Retain UIDs Option, coded ``113110``)
            instead of new UIDs and no references. Implied by ``include_patient_identifiers``.
        laterality: ``"R"`` or ``"L"``: the femur's side, written as the Laterality of a
            Secondary Capture (the femur is a paired structure); None leaves it empty.
        now: Creation time (default now, UTC).

    Returns:
        The written path.

    Raises:
        DicomExportError: If the report is neither a PDF nor a PNG, or unreadable.
        InputError: If the source DICOM is missing or has no StudyInstanceUID.
    """
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        UID,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    report = Path(report_pdf_or_png)
    if not report.is_file():
        raise DicomExportError(f"report not found: {report}",
                               hint="write it first with `osteofe report RESULT_DIR`")
    if not case_id or not case_id.strip():
        raise DicomExportError("case_id is empty",
                               hint="give the case identifier used for the strength run")
    if len(case_id) > 64 or any(ch in case_id for ch in "\\^=\r\n"):
        raise DicomExportError(
            f"case_id {case_id!r} cannot be a DICOM patient ID (at most 64 characters, no "
            "backslash, caret, equals sign or line break)",
            hint="use a short pseudonymous case identifier such as 'case017'")
    if laterality not in (None, "R", "L"):
        raise DicomExportError(f"laterality must be 'R', 'L' or None, got {laterality!r}",
                               hint="pass 'R' for a right femur, 'L' for a left one")
    payload = report.read_bytes()
    suffix = report.suffix.lower()
    if suffix == ".pdf" or payload[:5] == b"%PDF-":
        if payload[:5] != b"%PDF-":
            raise DicomExportError(f"{report} does not start with %PDF- (not a PDF)",
                                   hint="give report.pdf as written by `osteofe report`")
        kind = "pdf"
    elif suffix == ".png" or payload[:8] == b"\x89PNG\r\n\x1a\n":
        kind = "png"
    else:
        raise DicomExportError(f"cannot export {report.name}: only PDF and PNG are supported",
                               hint="give report.pdf or a report page PNG")
    source = read_source_study(source_ct_dicom_folder) if source_ct_dicom_folder else None

    when = now or datetime.now(UTC)
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    digest = hashlib.sha256(payload).hexdigest()
    identified = source is not None and include_patient_identifiers
    # Only these two modes let anything of the source's identity (its UIDs) into the object.
    joins_source = source is not None and (include_patient_identifiers or retain_uids)
    mode = "identified" if identified else "retain-uids" if joins_source else "deidentified"
    if joins_source:
        assert source is not None
        study_uid = source.study_uid
        entropy = [digest, study_uid, case_id, mode]
    else:  # nothing derived from the source: its UIDs cannot be matched to this object
        study_uid = str(generate_uid(entropy_srcs=[digest, case_id, mode, "study"]))
        entropy = [digest, study_uid, case_id, mode]
    series_uid = generate_uid(entropy_srcs=[*entropy, "series"])
    instance_uid = generate_uid(entropy_srcs=[*entropy, "instance"])
    sop_class = ENCAPSULATED_PDF_STORAGE if kind == "pdf" else SECONDARY_CAPTURE_STORAGE

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: case identifiers may be any text
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient module.
    ds.PatientName = case_id
    ds.PatientID = case_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study module.
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    if identified:
        assert source is not None
        for keyword in (*PATIENT_ATTRIBUTES, *IDENTIFYING_STUDY_ATTRIBUTES):
            if keyword in source.header:
                setattr(ds, keyword, source.header[keyword].value)
    else:
        ds.PatientIdentityRemoved = "YES"
        methods = [f"osteofe {__version__}"[:64], "no identifier copied; name/ID = case id"]
        codes = [BASIC_PROFILE_CODE]
        if joins_source:
            methods.append("UIDs retained: source study, CT instances referenced")
            codes.append(RETAIN_UIDS_CODE)
        else:
            methods.append("new UIDs; source instances not referenced")
        ds.DeidentificationMethod = methods
        ds.DeidentificationMethodCodeSequence = _method_code_sequence(pydicom, codes)
    # Series and equipment.
    ds.Modality = "DOC" if kind == "pdf" else "OT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = REPORT_SERIES_NUMBER
    ds.SeriesDescription = _SERIES_DESCRIPTION
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.Manufacturer = "osteofe"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.BurnedInAnnotation = "YES"  # the case identifier is printed on the report
    references = (_reference_sequence(pydicom, source.instances)
                  if source is not None and joins_source else None)
    if kind == "pdf":
        ds.AcquisitionDateTime = ""
        ds.RecognizableVisualFeatures = "NO"
        ds.DocumentTitle = _DOCUMENT_TITLE
        ds.ConceptNameCodeSequence = pydicom.Sequence()
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        if references is not None and len(references):
            ds.SourceInstanceSequence = references
        ds.EncapsulatedDocumentLength = len(payload)
        ds.EncapsulatedDocument = payload + (b"\0" if len(payload) % 2 else b"")
    else:
        pixels = _rgb_pixels(report)
        ds.PatientOrientation = ""
        ds.Laterality = laterality or ""  # type 2C: the femur is a paired structure
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.DerivationDescription = "osteofe report page rendered as a picture"
        if references is not None and len(references):
            ds.SourceImageSequence = references
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"OSTEOFE_{__version__}"[:16]
    ds.file_meta = meta

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out
