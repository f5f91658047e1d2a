"""The case report (HTML + PDF) and its DICOM export, on a real strength run of the phantom."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import zlib
from datetime import UTC, datetime
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pytest
from conftest import lesion_phantom_run

from meshing.errors import InputError
from osteofe.cli import main
from osteofe.dicom_export import (
    BASIC_PROFILE_CODE,
    ENCAPSULATED_PDF_STORAGE,
    RETAIN_UIDS_CODE,
    SECONDARY_CAPTURE_STORAGE,
    DicomExportError,
    export_dicom,
)
from osteofe.report import (
    NOT_COMPUTED,
    ReportError,
    _pdf_flow,
    collect_report_data,
    make_report,
    phi_band,
    read_result,
    render_html,
    render_pdf,
    write_report,
)
from risk.mirels import MirelsScore

pytestmark = pytest.mark.skip_in_parallel

GENERATED = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
FAKE_NAME = "DOEJANE^QUINTESSA"
RISK = {
    "mirels": MirelsScore.from_measurements("peritrochanteric", "moderate", "lytic", 0.5),
    "aci_mm": 34.0,
    "ctra": {"rigidity_loss": 0.41, "measure": "bending"},
    "fracture_probability": {
        "probability": 0.31, "lower": 0.12, "upper": 0.58, "level": 0.95,
        "model": {"model_kind": "strength_logistic", "feature_names": ["failure_load_BW"],
                  "coef": [-1.2], "intercept": 1.9,
                  "training": {"n": 39, "events": 9, "auc": 0.84}},
    },
}


def pdf_text(data: bytes) -> str:
    """Text drawn in a matplotlib PDF (Flate content streams, TJ/Tj string pieces)."""
    out = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        head = data[max(0, match.start() - 400):match.start()]
        if b"/Image" in head[head.rfind(b" obj"):]:
            continue  # picture data, not text
        try:
            content = zlib.decompress(match.group(1))
        except zlib.error:
            continue
        for block in re.findall(rb"(?:^|\n)BT\n(.*?)\nET(?=\n|$)", content, re.S):
            for array, single in re.findall(
                    rb"\[((?:\((?:\\.|[^\\)])*\)|[^\]\(])*)\]\s*TJ|\(((?:\\.|[^\\)])*)\)\s*Tj",
                    block):
                pieces = re.findall(rb"\(((?:\\.|[^\\)])*)\)", array) if array else [single]
                out.append(b"".join(re.sub(rb"\\(.)", rb"\1", p) for p in pieces)
                           .decode("latin-1"))
    return "\n".join(out)


def pdf_page_count(data: bytes) -> int:
    pages = len(re.findall(rb"/Type\s*/Page(?![s\w])", data))
    counts = [int(c) for c in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data, re.S)]
    counts += [int(c) for c in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data, re.S)]
    assert counts and max(counts) == pages
    return pages


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real strength run: lesioned phantom, two load cases, a direction sweep, picture."""
    out = lesion_phantom_run(tmp_path_factory.mktemp("report_run"), "rep01",
                             "--load", "stance", "stairs_down", "--sweep", "4")
    assert (out / "femur_risk.png").is_file()
    return out


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("report")
    return write_report(run_dir, out, risk=RISK, page_png=True, generated=GENERATED)


def test_html_holds_the_key_numbers_of_the_result(run_dir, report):
    result = json.loads((run_dir / "result.json").read_text())
    html = report["html"].read_text(encoding="utf-8")
    assert "rep01" in html
    for case in result["cases"]:
        assert case["load_case"] in html
        assert f"{case['failure_load_N']:,.0f} N" in html
        assert f"{case['failure_load_BW']:.2f} × BW" in html
        assert f"{case['load_to_strength_ratio']:.2f}" in html
        assert f"{case['applied_load_N']:,.0f} N" in html
        assert f"{case['direction_sweep']['min_failure_load_N']:,.0f} N" in html
    weakest = min(result["cases"], key=lambda c: c["failure_load_N"])
    summary = html[html.index('class="summary"'):html.index("<h2>1.")]
    assert weakest["load_case"] in summary and f"{weakest['failure_load_N']:,.0f} N" in summary
    # The clinical scores, with the Mirels items and their derivations.
    assert "10 / 12" in html and "size fraction 0.5 of the cortex/diameter" in html
    assert "34 mm" in html and "41 % loss of rigidity, bending" in html
    assert "31 % (95 % CI 12-58 %)" in html
    # Provenance: input hashes, versions, every configuration value, warnings.
    for entry in result["inputs"].values():
        assert entry["sha256"] in html
    assert result["versions"]["numpy"] in html
    for section, values in result["config"].items():
        for key in values:
            assert f"{section}.{key}" in html
    for warning in result["warnings"]:
        assert warning in html
    assert result["material"]["model"]["calibration"]["line"] in html
    # The supports as applied (the pipeline's boundary_conditions record).
    assert html_escape(result["boundary_conditions"]["distal"]) in html
    assert html_escape(result["boundary_conditions"]["load"]) in html
    assert "not validated for clinical decisions" in html


def test_html_is_self_contained(report):
    html = report["html"].read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html  # the browser may load nothing from outside
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 3  # the CT slices, the femur picture and the ratio chart
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.findall(r'href="', html) == []


def test_pdf_has_the_expected_pages_and_text(run_dir, report):
    data = report["pdf"].read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    result, sha = read_result(run_dir)
    expected = len(_pdf_flow(collect_report_data(
        result, RISK, picture_png=(run_dir / "femur_risk.png").read_bytes(),
        result_sha256=sha, generated=GENERATED)).pages)
    assert pdf_page_count(data) == expected
    assert 4 <= expected <= 8  # summary + picture, load cases, scores/explanations, provenance
    text = pdf_text(data)
    assert "page 1 of" in text and f"page {expected} of {expected}" in text
    weakest = min(result["cases"], key=lambda c: c["failure_load_N"])
    assert f"{weakest['failure_load_N']:,.0f} N" in text
    assert "rep01" in text and "10 / 12" in text


def test_page_pictures_match_the_pdf(report):
    pages = sorted(k for k in report if k.startswith("page_"))
    assert len(pages) == pdf_page_count(report["pdf"].read_bytes())
    assert report[pages[0]].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scan_derived_lesion_measures_are_shown(run_dir, report):
    result = json.loads((run_dir / "result.json").read_text())
    lesion_risk = result.get("lesion_risk")
    if not lesion_risk:
        pytest.skip("this pipeline writes no lesion_risk")
    data = collect_report_data(result, None, generated=GENERATED)
    assert data.mirels is not None and data.aci_mm == lesion_risk["aci_mm"]
    ctra = lesion_risk["ctra"]
    assert data.ctra is not None
    assert data.ctra.loss == ctra["max_reduction"][ctra["governing"]]
    assert data.ctra.is_high == ctra["high_risk"]
    mirels = lesion_risk["mirels"]
    if mirels.get("total") is None:  # pain not given: the range of totals
        assert data.mirels.total is None
        assert data.mirels.total_range == tuple(mirels["total_range"])
        assert [i.name for i in data.mirels.items if i.points is None] == ["pain"]
    else:
        assert data.mirels.total == mirels["total"]
    html = write_report(run_dir, report["html"].parent / "scan")["html"].read_text("utf-8")
    assert data.mirels.total_text in html
    assert f"{data.aci_mm:.0f} mm" in html and f"{100 * data.ctra.loss:.0f} %" in html
    assert html_escape(ctra["derivation"]) in html


def test_absent_scores_read_not_computed(run_dir, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(run_dir, folder)
    result = json.loads((folder / "result.json").read_text())
    result.pop("lesion_risk", None)
    (folder / "result.json").write_text(json.dumps(result))
    paths = write_report(folder, tmp_path / "out", generated=GENERATED)
    html = paths["html"].read_text(encoding="utf-8")
    summary = html[html.index('class="summary"'):html.index("<h2>1.")]
    for label in ("Nonlinear load to failure", "Mirels score", "Axial cortical involvement",
                  "CTRA rigidity loss", "Fracture probability"):
        row = summary[summary.index(label):]
        row = row[:row.index("</tr>")]
        assert NOT_COMPUTED in row, label
    # The direction sweep was computed in this run.
    sweep = summary[summary.index("Direction-sweep minimum"):]
    assert NOT_COMPUTED not in sweep[:sweep.index("</tr>")]


def test_scores_and_nonlinear_in_result_json_are_shown(run_dir, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(run_dir, folder)
    result = json.loads((folder / "result.json").read_text())
    result["cases"][0]["nonlinear"] = {"failure_load_N": 8123.0, "peak_reached": True}
    result["lesion_risk"]["mirels"] = {"total": 8}  # where the pipeline writes the scores
    result["lesion_risk"]["aci_mm"] = 12.0
    result["fracture_probability"] = 0.07
    (folder / "result.json").write_text(json.dumps(result))
    html = write_report(folder, tmp_path / "out")["html"].read_text(encoding="utf-8")
    applied = result["cases"][0]["applied_load_N"]
    assert "8,123 N" in html and f"{applied / 8123.0:.2f}" in html
    assert "8 / 12 (judgement)" in html and "12 mm" in html
    assert "7 % (no interval given)" in html


def test_identifiers_outside_the_whitelist_do_not_leak(run_dir, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(run_dir, folder)
    result = json.loads((folder / "result.json").read_text())
    result["patient_name"] = FAKE_NAME
    result["PatientName"] = FAKE_NAME
    result["inputs"]["ct"]["path"] = f"/data/{FAKE_NAME}/ct.nii.gz"
    result["landmarks"]["patient"] = FAKE_NAME
    result["config"]["material"]["patient_name"] = FAKE_NAME
    result["cases"][0]["patient"] = FAKE_NAME
    result["lesion_risk"]["mirels"] = {
        "items": {n: {"name": n, "points": 2, "category": "x", "derivation": "given by user",
                      "patient": FAKE_NAME} for n in ("site", "pain", "lesion", "size")},
        "total": 8, "patient": FAKE_NAME}
    result["fracture_probability"] = {"probability": 0.2, "patient": FAKE_NAME,
                                      "model": {"model_kind": "logistic",
                                                "path": f"/home/{FAKE_NAME}/model.json"}}
    (folder / "result.json").write_text(json.dumps(result))
    paths = write_report(folder, tmp_path / "out", page_png=False, generated=GENERATED)
    html = paths["html"].read_text(encoding="utf-8")
    text = pdf_text(paths["pdf"].read_bytes())
    assert "rep01" in html and "rep01" in text  # the case id, and the text is readable
    assert "8 / 12" in html
    for needle in ("DOEJANE", "QUINTESSA"):
        assert needle not in html
        assert needle not in text
        assert needle.encode() not in paths["pdf"].read_bytes()


def test_phi_bands():
    assert phi_band(1.0) == "high" and phi_band(1.4) == "high"
    assert phi_band(0.8) == "borderline" and phi_band(0.99) == "borderline"
    assert phi_band(0.79) == "low"


def test_missing_or_broken_result_is_a_domain_error(tmp_path):
    with pytest.raises(ReportError, match=r"no result\.json") as info:
        write_report(tmp_path)
    assert info.value.hint
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        write_report(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"case_id": "x", "cases": []}))
    with pytest.raises(ReportError, match="no failure load"):
        write_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # nothing written


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_a_headless_browser(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium/chrome on PATH (apt-get install chromium) to render the HTML")
    from PIL import Image

    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         f"--screenshot={shot}", "--window-size=1200,3000", report["html"].as_uri()],
        check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert rgb.shape[:2] == (3000, 1200)
    grey = rgb.mean(axis=2)
    assert grey.std() > 30.0  # not a blank page
    assert np.mean(grey < 128) > 0.05  # text and the dark femur picture
    # The summary's ratio card is painted in one of the band colours (red/amber/green).
    bands = np.array([[180, 35, 24], [181, 71, 8], [2, 122, 72]], dtype=np.float64)
    top = rgb[:700].reshape(-1, 3)
    near = np.min(np.linalg.norm(top[:, None, :] - bands[None], axis=2), axis=1) < 10
    assert near.sum() > 5_000


# --------------------------------------------------------------------------------------------
# DICOM export.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def dicom_source(shared_data) -> Path:
    folder = shared_data / "dicom_pelvis"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (real DICOM test data)")
    return folder


def _source_uids(folder: Path) -> list[str]:
    """Study, series, frame of reference and SOP instance UIDs of a DICOM folder."""
    import pydicom

    uids: set[str] = set()
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids |= {str(ds.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                          "FrameOfReferenceUID", "SOPInstanceUID") if k in ds}
    return sorted(uids)


def _codes(ds) -> list[tuple[str, str, str]]:
    return [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
            for c in ds.DeidentificationMethodCodeSequence]


def test_encapsulated_pdf_without_patient_identifiers_has_new_uids(report, dicom_source,
                                                                   tmp_path):
    import pydicom

    source = pydicom.dcmread(sorted(dicom_source.iterdir())[0], stop_before_pixels=True)
    out = export_dicom(report["pdf"], dicom_source, tmp_path / "report.dcm", case_id="rep01")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE and ds.Modality == "DOC"
    assert ds.StudyInstanceUID != source.StudyInstanceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert "SourceInstanceSequence" not in ds
    assert str(ds.PatientName) == "rep01" and ds.PatientID == "rep01"
    assert str(ds.PatientName) != str(source.PatientName)
    assert ds.PatientIdentityRemoved == "YES"
    assert _codes(ds) == [(BASIC_PROFILE_CODE[0], "DCM", BASIC_PROFILE_CODE[1])]
    raw = out.read_bytes()
    for value in (str(source.PatientName), source.PatientID, source.PatientBirthDate,
                  *_source_uids(dicom_source)):
        assert value.encode() not in raw
    pdf = report["pdf"].read_bytes()
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert bytes(ds.EncapsulatedDocument)[:len(pdf)] == pdf
    # Exporting the same report again gives the same object (UIDs from its content).
    again = pydicom.dcmread(export_dicom(report["pdf"], dicom_source, tmp_path / "again.dcm",
                                         case_id="rep01"))
    assert again.SOPInstanceUID == ds.SOPInstanceUID


def test_encapsulated_pdf_retaining_uids_joins_the_study(report, dicom_source, tmp_path):
    import pydicom

    source = pydicom.dcmread(sorted(dicom_source.iterdir())[0], stop_before_pixels=True)
    out = export_dicom(report["pdf"], dicom_source, tmp_path / "report.dcm", case_id="rep01",
                       retain_uids=True)
    ds = pydicom.dcmread(out)
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == "rep01"
    assert _codes(ds) == [(BASIC_PROFILE_CODE[0], "DCM", BASIC_PROFILE_CODE[1]),
                          (RETAIN_UIDS_CODE[0], "DCM", RETAIN_UIDS_CODE[1])]
    references = {item.ReferencedSOPInstanceUID for item in ds.SourceInstanceSequence}
    assert source.SOPInstanceUID in references and len(references) == len(
        list(dicom_source.glob("*.dcm")))
    raw = out.read_bytes()
    for value in (str(source.PatientName), source.PatientID, source.PatientBirthDate):
        assert value.encode() not in raw


def test_patient_identifiers_only_on_request(report, dicom_source, tmp_path):
    import pydicom

    source = pydicom.dcmread(sorted(dicom_source.iterdir())[0], stop_before_pixels=True)
    ds = pydicom.dcmread(export_dicom(report["pdf"], dicom_source, tmp_path / "r.dcm",
                                      case_id="rep01", include_patient_identifiers=True))
    assert str(ds.PatientName) == str(source.PatientName)
    assert ds.PatientID == source.PatientID
    assert ds.StudyDate == source.StudyDate
    assert "PatientIdentityRemoved" not in ds


def test_secondary_capture_reads_in_simpleitk(report, dicom_source, tmp_path):
    import pydicom
    import SimpleITK as sitk
    from PIL import Image

    page = report["page_01"]
    out = export_dicom(page, dicom_source, tmp_path / "page.dcm", case_id="rep01",
                       laterality="R", retain_uids=True)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SECONDARY_CAPTURE_STORAGE
    with Image.open(page) as image:
        expected = np.asarray(image.convert("RGB"))
    assert np.array_equal(ds.pixel_array, expected)
    image = sitk.ReadImage(str(out))
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetSize()[:2] == (expected.shape[1], expected.shape[0])
    source = pydicom.dcmread(sorted(dicom_source.iterdir())[0], stop_before_pixels=True)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0020|000d").strip() == source.StudyInstanceUID
    assert reader.GetMetaData("0010|0010").strip() == "rep01"


def _analysed_series(run_dir: Path, folder: Path):
    """The CT that run_dir analysed, written as a DICOM series (as a scanner would)."""
    from test_dicom_privacy import write_ct_series

    from meshing.imaging import read_ct

    result = json.loads((run_dir / "result.json").read_text())
    return write_ct_series(folder, ct=read_ct(result["inputs"]["ct"]["path"]))


def test_report_dicom_study_must_be_the_analysed_ct(run_dir, dicom_source, tmp_path):
    # Another patient's study: refused before anything is written.
    with pytest.raises(InputError, match="is not the CT that was analysed") as info:
        make_report(run_dir, tmp_path / "out", dicom_study=dicom_source)
    assert "voxel counts" in str(info.value) and info.value.hint
    assert not (tmp_path / "out").exists()
    # The analysed CT as a DICOM series (NIfTI -> DICOM keeps geometry and HU): accepted.
    _analysed_series(run_dir, tmp_path / "series")
    paths = make_report(run_dir, tmp_path / "ok", dicom_study=tmp_path / "series")
    assert paths["dicom"].is_file()


def test_make_report_writes_the_dicom_beside_the_report(run_dir, tmp_path):
    import pydicom

    _analysed_series(run_dir, tmp_path / "series")
    paths = make_report(run_dir, tmp_path / "out", dicom_study=tmp_path / "series")
    assert sorted(paths) == ["dicom", "html", "pdf"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.dcm", "report.html", "report.pdf"]
    ds = pydicom.dcmread(paths["dicom"])
    assert str(ds.PatientName) == "rep01"
    assert bytes(ds.EncapsulatedDocument).startswith(paths["pdf"].read_bytes()[:64])


def _report_cli(run_dir: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-q", "report", str(run_dir), "--out", str(out), *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("mode", ["default", "retain-uids", "include-patient-identifiers"])
def test_report_cli_dicom_privacy_modes(mode, run_dir, tmp_path, capsys):
    """`osteofe report --dicom-study`: new UIDs unless --retain-uids / identifiers are asked."""
    import pydicom
    from test_dicom_privacy import PATIENT

    uids = _analysed_series(run_dir, tmp_path / "ct")
    out = tmp_path / "out"
    extra = [] if mode == "default" else [f"--{mode}"]
    code, err = _report_cli(run_dir, out, capsys, "--dicom-study", str(tmp_path / "ct"),
                            *extra)
    assert code == 0, err
    ds = pydicom.dcmread(out / "report.dcm")
    raw = (out / "report.dcm").read_bytes()
    assert uids.frame.encode() not in raw
    if mode == "default":
        assert not {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID} & set(
            uids.all())
        assert "SourceInstanceSequence" not in ds
        for uid in uids.all():
            assert uid.encode() not in raw, uid
        assert _codes(ds) == [(BASIC_PROFILE_CODE[0], "DCM", BASIC_PROFILE_CODE[1])]
    else:
        assert ds.StudyInstanceUID == uids.study
        assert sorted(i.ReferencedSOPInstanceUID for i in ds.SourceInstanceSequence) == sorted(
            uids.instances)
    if mode == "retain-uids":
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == "rep01"
        assert [c[0] for c in _codes(ds)] == [BASIC_PROFILE_CODE[0], RETAIN_UIDS_CODE[0]]
    if mode == "include-patient-identifiers":
        assert str(ds.PatientName) == PATIENT["PatientName"]
        assert "PatientIdentityRemoved" not in ds
    else:
        assert PATIENT["PatientID"].encode() not in raw


def test_report_cli_retain_uids_needs_a_dicom_study(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _report_cli(run_dir, out, capsys, "--retain-uids")
    assert code == 3
    assert "--retain-uids needs --dicom-study" in err and "hint:" in err
    assert not out.exists()


def test_export_without_source_and_bad_inputs(report, tmp_path):
    import pydicom

    ds = pydicom.dcmread(export_dicom(report["pdf"], None, tmp_path / "r.dcm", case_id="rep01"))
    assert ds.StudyInstanceUID and "SourceInstanceSequence" not in ds
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DicomExportError, match="only PDF and PNG"):
        export_dicom(text, None, tmp_path / "x.dcm", case_id="rep01")
    with pytest.raises(DicomExportError, match="case_id"):
        export_dicom(report["pdf"], None, tmp_path / "x.dcm", case_id="a\\b")
    with pytest.raises(InputError, match="not found"):
        export_dicom(report["pdf"], tmp_path / "missing", tmp_path / "x.dcm", case_id="rep01")
    assert not (tmp_path / "x.dcm").exists()


def test_report_data_holds_no_unknown_field(run_dir):
    result, sha = read_result(run_dir)
    result = dict(result, surprise={"name": FAKE_NAME})
    data = collect_report_data(result, None, result_sha256=sha, generated=GENERATED)
    assert FAKE_NAME not in repr(data)
    assert data.governing.failure_N == min(c["failure_load_N"] for c in result["cases"])


def test_a_result_that_is_not_valid_carries_its_banner_on_page_one(run_dir, tmp_path):
    result = json.loads((run_dir / "result.json").read_text())
    banner = "PARTIAL MODEL: not valid for the load case"
    result["validity"] = {"valid": False, "banner": banner,
                          "reasons": ["the model ends 32 mm below the head centre"]}
    data = collect_report_data(result, None, generated=GENERATED)
    assert data.validity_banner is not None and data.validity_banner.startswith(banner)
    html = render_html(data)
    # Right after the research-software notice, before the summary of the numbers.
    assert html.index(html_escape(banner)) < html.index('class="phi-value"')
    pdf = tmp_path / "report.pdf"
    render_pdf(data, pdf)
    text = pdf_text(pdf.read_bytes())
    # Before the summary's first number on page 1.
    assert "PARTIAL MODEL" in text and text.index("PARTIAL MODEL") < text.index("Femur, risk")
    valid = collect_report_data(result | {"validity": {"valid": True, "banner": None,
                                                       "reasons": []}}, None,
                                generated=GENERATED)
    assert valid.validity_banner is None and banner not in render_html(valid)
