"""Privacy of the report's DICOM export: new UIDs unless asked otherwise, coded de-identification.

Fast tests on a synthetic two-slice CT series (with a made-up patient) and a stand-in PDF and
PNG; the CLI-level tests of ``osteofe report --dicom-study`` on a real strength run are in
``tests/test_report.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osteofe.dicom_export import (
    BASIC_PROFILE_CODE,
    ENCAPSULATED_PDF_STORAGE,
    RETAIN_UIDS_CODE,
    SECONDARY_CAPTURE_STORAGE,
    export_dicom,
    read_source_study,
)

pydicom = pytest.importorskip("pydicom")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # SOP class (PS3.4 B.5)
PATIENT = {"PatientName": "DOE^JANE^Q", "PatientID": "PID-0042-7731",
           "PatientBirthDate": "19470312", "PatientSex": "F", "PatientAge": "077Y"}
STUDY = {"StudyDate": "20240229", "StudyTime": "101112", "AccessionNumber": "ACC-998877",
         "StudyID": "ST-55", "StudyDescription": "CT PELVIS DOE", "ReferringPhysicianName":
         "HOUSE^GREGORY"}
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
#: Identifying text of the source that must not be in a de-identified file (long enough not
#: to occur by chance in the bytes; the sex "F" is checked as an element instead).
IDENTIFYING = [v for v in (*PATIENT.values(), *STUDY.values()) if len(v) > 3] + [
    "ACME", "SN-31337", "St. Elsewhere"]


@dataclass(frozen=True)
class SourceUids:
    """UIDs of the synthetic CT series."""

    study: str
    series: str
    frame: str
    instances: tuple[str, ...]

    def all(self) -> list[str]:
        return [self.study, self.series, self.frame, *self.instances]


def write_ct_series(folder: Path, slices: int = 2, ct: Any = None) -> SourceUids:
    """A small CT series of a made-up patient; returns its UIDs.

    With ``ct`` (a :class:`meshing.types.CTVolume` on an axis-aligned LPS grid) the series
    holds that volume, one slice per k (HU stored as int16 with intercept -1024).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    instances: list[str] = []
    if ct is not None:
        slices = ct.grid.shape[2]
        stored = np.rint(np.asarray(ct.hu) + 1024.0).astype(np.int16)
    for k in range(slices):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        sop_uid = generate_uid()
        ds.SOPInstanceUID = sop_uid
        instances.append(str(sop_uid))
        for keyword, value in {**PATIENT, **STUDY}.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.Manufacturer, ds.DeviceSerialNumber = "ACME", "SN-31337"
        ds.InstitutionName = "St. Elsewhere"
        if ct is None:
            ds.ImagePositionPatient = [0.0, 0.0, 1.25 * k]
            ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 1.25
            ds.Rows = ds.Columns = 4
        else:
            sx, sy, sz = (float(s) for s in ct.grid.spacing)
            position = np.asarray(ct.grid.origin) + np.array([0.0, 0.0, sz * k])
            ds.ImagePositionPatient = [float(v) for v in position]
            ds.PixelSpacing, ds.SliceThickness = [sy, sx], sz
            ds.Rows, ds.Columns = ct.grid.shape[1], ct.grid.shape[0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (np.full((4, 4), 1024 + 100 * k, dtype=np.int16) if ct is None
                        else np.ascontiguousarray(stored[:, :, k].T)).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"slice{k}.dcm", enforce_file_format=True)
    return SourceUids(str(study), str(series), str(frame), tuple(instances))


Source = tuple[Path, SourceUids]


@pytest.fixture
def source(tmp_path: Path) -> Source:
    folder = tmp_path / "ct"
    return folder, write_ct_series(folder)


@pytest.fixture
def documents(tmp_path: Path) -> dict[str, Path]:
    """A stand-in report.pdf and a 3 x 2 PNG page."""
    from PIL import Image

    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n% osteofe test report of case017\n%%EOF\n")
    png = tmp_path / "page.png"
    Image.fromarray(np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 10).save(png)
    return {"pdf": pdf, "png": png}


def method_codes(ds: Any) -> list[tuple[str, str, str]]:
    return [(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)
            for item in ds.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize("kind", ["pdf", "png"])
def test_default_export_has_new_uids_and_names_nothing_of_the_source(
        kind: str, source: Source, documents: dict[str, Path], tmp_path: Path) -> None:
    folder, uids = source
    out = export_dicom(documents[kind], folder, tmp_path / "r.dcm", case_id="case017",
                       laterality="R", now=NOW)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == (ENCAPSULATED_PDF_STORAGE if kind == "pdf"
                              else SECONDARY_CAPTURE_STORAGE)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    new = {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    assert len(new) == 3 and not new & set(uids.all())
    assert "SourceInstanceSequence" not in ds and "SourceImageSequence" not in ds
    assert "FrameOfReferenceUID" not in ds
    assert ds.PatientIdentityRemoved == "YES"
    assert "new UIDs; source instances not referenced" in list(ds.DeidentificationMethod)
    assert method_codes(ds) == [(*BASIC_PROFILE_CODE[:1], "DCM", BASIC_PROFILE_CODE[1])]
    assert str(ds.PatientName) == "case017" and ds.PatientID == "case017"
    raw = out.read_bytes()
    for uid in uids.all():  # in no element, sequence or the file meta
        assert uid.encode() not in raw, uid
    for value in IDENTIFYING:
        assert value.encode() not in raw, value
    assert ds.PatientSex == "" and ds.PatientBirthDate == "" and "PatientAge" not in ds


def test_export_is_reproducible_per_mode_and_the_modes_differ(
        source: Source, documents: dict[str, Path], tmp_path: Path) -> None:
    folder, _ = source
    modes = {"deidentified": (False, False), "retain": (True, False),
             "identified": (False, True)}
    first: dict[str, Any] = {}
    again: dict[str, Any] = {}
    for name, (retain, identified) in modes.items():
        first[name] = pydicom.dcmread(export_dicom(
            documents["pdf"], folder, tmp_path / f"{name}.dcm", case_id="case017", now=NOW,
            retain_uids=retain, include_patient_identifiers=identified))
        again[name] = pydicom.dcmread(export_dicom(
            documents["pdf"], folder, tmp_path / f"{name}-2.dcm", case_id="case017", now=NOW,
            retain_uids=retain, include_patient_identifiers=identified))
        assert again[name].SOPInstanceUID == first[name].SOPInstanceUID
        assert again[name].StudyInstanceUID == first[name].StudyInstanceUID
    assert len({ds.SOPInstanceUID for ds in first.values()}) == 3
    assert len({ds.SeriesInstanceUID for ds in first.values()}) == 3
    # Without a source, the de-identified object is the same as with one: nothing of the
    # source went into it.
    alone = pydicom.dcmread(export_dicom(documents["pdf"], None, tmp_path / "alone.dcm",
                                         case_id="case017", now=NOW))
    assert alone.SOPInstanceUID == first["deidentified"].SOPInstanceUID
    assert (tmp_path / "alone.dcm").read_bytes() == (tmp_path / "deidentified.dcm").read_bytes()
    # Another case id, another object.
    other = pydicom.dcmread(export_dicom(documents["pdf"], folder, tmp_path / "other.dcm",
                                         case_id="case018", now=NOW))
    assert other.StudyInstanceUID != first["deidentified"].StudyInstanceUID


@pytest.mark.parametrize("kind", ["pdf", "png"])
def test_retain_uids_keeps_the_study_and_references_and_says_so(
        kind: str, source: Source, documents: dict[str, Path], tmp_path: Path) -> None:
    folder, uids = source
    out = export_dicom(documents[kind], folder, tmp_path / "r.dcm", case_id="case017",
                       retain_uids=True, now=NOW)
    ds = pydicom.dcmread(out)
    assert ds.StudyInstanceUID == uids.study
    assert ds.SeriesInstanceUID != uids.series
    assert ds.SOPInstanceUID not in uids.instances
    sequence = ds.SourceInstanceSequence if kind == "pdf" else ds.SourceImageSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in sequence) == sorted(
        uids.instances)
    assert {item.ReferencedSOPClassUID for item in sequence} == {CT_IMAGE_STORAGE}
    assert ds.PatientIdentityRemoved == "YES"
    assert method_codes(ds) == [(BASIC_PROFILE_CODE[0], "DCM", BASIC_PROFILE_CODE[1]),
                                (RETAIN_UIDS_CODE[0], "DCM", RETAIN_UIDS_CODE[1])]
    assert any("UIDs retained" in v for v in ds.DeidentificationMethod)
    assert "FrameOfReferenceUID" not in ds and uids.frame.encode() not in out.read_bytes()
    raw = out.read_bytes()
    for value in IDENTIFYING:
        assert value.encode() not in raw, value


def test_patient_identifiers_keep_the_original_behaviour(
        source: Source, documents: dict[str, Path], tmp_path: Path) -> None:
    folder, uids = source
    ds = pydicom.dcmread(export_dicom(documents["pdf"], folder, tmp_path / "r.dcm",
                                      case_id="case017", include_patient_identifiers=True,
                                      now=NOW))
    assert ds.StudyInstanceUID == uids.study
    assert str(ds.PatientName) == PATIENT["PatientName"] and ds.StudyDate == STUDY["StudyDate"]
    assert len(ds.SourceInstanceSequence) == len(uids.instances)
    assert "PatientIdentityRemoved" not in ds
    assert "DeidentificationMethodCodeSequence" not in ds


def test_the_synthetic_series_reads_as_the_source(source: Source) -> None:
    """The fixture is a series the exporter reads (else the tests above prove nothing)."""
    folder, uids = source
    study = read_source_study(folder)
    assert study.study_uid == uids.study and len(study.instances) == 2
