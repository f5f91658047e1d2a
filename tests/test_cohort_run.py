"""Cohort runs: parallel FE over a manifest, one broken case, resuming without recomputing."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from meshing.phantom import LesionParams, PhantomParams, make_phantom, write_phantom
from osteofe.cli import EXIT_INPUT, main
from osteofe.cohort import (
    CohortRunSummary,
    ManifestCase,
    ManifestError,
    _execute,
    _fingerprint,
    _progress_bar,
    _Task,
    read_manifest,
    run_cohort,
)
from osteofe.config import Config
from risk.cohort import read_cohort

pytestmark = pytest.mark.skip_in_parallel

#: Coarse enough for a test (about 5 s per case): 1.5 mm voxels, 6 mm elements.
COARSE = Config().override("mesh", size_mm=6.0)
PHANTOM = replace(PhantomParams(), voxel_size_mm=1.5, soft_tissue_mm=3.0, distal_cut_mm=150.0)

CohortRun = tuple[Path, Path, CohortRunSummary]

HEADER = ("case_id,patient_id,side,ct,labels,body_mass_kg,mirels_site,mirels_pain,"
          "mirels_lesion,size_fraction,fractured,follow_up_months,cohort_note\n")


def _rows(ct_missing: str) -> str:
    return (
        "A,P1,right,intact/ct.nii.gz,intact/labels.nii.gz,70,peritrochanteric,mild,blastic,"
        "0.1,0,12,first\n"
        "B,P2,right,lesion/ct.nii.gz,lesion/labels.nii.gz,80,peritrochanteric,functional,"
        "lytic,0.7,1,3,second\n"
        f"C,P3,right,{ct_missing},lesion/labels.nii.gz,75,peritrochanteric,moderate,mixed,"
        "0.4,0,10,broken\n"
    )


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory: pytest.TempPathFactory) -> CohortRun:
    root = tmp_path_factory.mktemp("cohort")
    write_phantom(make_phantom(PHANTOM), root / "intact")
    write_phantom(make_phantom(PHANTOM, LesionParams(site="calcar", radius_mm=10.0)),
                  root / "lesion")
    manifest = root / "manifest.csv"
    manifest.write_text(HEADER + _rows("missing/ct.nii.gz"))
    out = root / "run"
    summary = run_cohort(manifest, out, COARSE, workers=2, progress=False)
    return manifest, out, summary


def test_two_cases_run_and_the_broken_one_is_reported(cohort_run: CohortRun) -> None:
    _, out, summary = cohort_run
    assert (summary.n_cases, summary.n_computed, summary.n_skipped, summary.n_failed) == (
        3, 2, 0, 1)
    assert [f.case_id for f in summary.failures] == ["C"]
    assert "CT not found" in summary.failures[0].error
    with summary.failures_csv.open() as fh:
        failures = list(csv.DictReader(fh))
    assert [(r["case_id"], r["error_type"]) for r in failures] == [("C", "InputError")]
    assert "missing/ct.nii.gz" in failures[0]["error"]
    with summary.results_csv.open() as fh:
        states = {r["case_id"]: r["state"] for r in csv.DictReader(fh)}
    assert states == {"A": "done", "B": "done", "C": "failed"}
    for case in ("A", "B"):
        status = json.loads((out / "cases" / case / "status.json").read_text())
        assert status["state"] == "done"
        assert (out / "cases" / case / "result.json").is_file()
    saved = json.loads(summary.summary_json.read_text())
    assert saved["n_failed"] == 1 and saved["failures"][0]["case_id"] == "C"


def test_cohort_table_merges_fe_results_with_the_manifest(cohort_run: CohortRun) -> None:
    _, out, summary = cohort_run
    assert summary.cohort_csv is not None
    cohort = read_cohort(summary.cohort_csv)
    assert list(cohort.patient_id) == ["P1", "P2"]
    assert list(cohort.side) == ["right", "right"]
    assert list(cohort.fractured) == [0, 1]
    assert cohort.mirels_total is not None
    assert list(cohort.mirels_total) == [3 + 1 + 1 + 1, 3 + 3 + 3 + 3]
    for i, case in enumerate(("A", "B")):
        result = json.loads((out / "cases" / case / "result.json").read_text())
        assert cohort.failure_load_N[i] == pytest.approx(result["failure_load_N"], rel=1e-12)
        assert cohort.failure_load_BW[i] == pytest.approx(
            result["failure_load_N"] / (cohort.body_mass_kg[i] * 9.81), rel=1e-9)
    # The lytic calcar lesion weakens the femur clearly.
    assert cohort.failure_load_N[1] < 0.8 * cohort.failure_load_N[0]
    assert cohort.extra["case_id"] == ("A", "B")
    assert cohort.extra["cohort_note"] == ("first", "second")


def test_an_interrupted_run_resumes_without_recomputing_finished_cases(
        cohort_run: CohortRun) -> None:
    manifest, out, _ = cohort_run
    kept = out / "cases" / "A" / "result.json"
    kept_mtime = kept.stat().st_mtime_ns
    kept_status = (out / "cases" / "A" / "status.json").stat().st_mtime_ns
    lost = out / "cases" / "B" / "result.json"
    lost.unlink()  # as if the run had been interrupted while B was being analysed
    summary = run_cohort(manifest, out, COARSE, workers=2, progress=False)
    assert (summary.n_computed, summary.n_skipped, summary.n_failed) == (1, 1, 1)
    assert summary.workers == 1  # one case left to compute
    assert kept.stat().st_mtime_ns == kept_mtime
    assert (out / "cases" / "A" / "status.json").stat().st_mtime_ns == kept_status
    assert lost.is_file()
    with summary.results_csv.open() as fh:
        computed = {r["case_id"]: r["computed"] for r in csv.DictReader(fh)}
    assert computed == {"A": "no", "B": "yes", "C": "no"}


def test_fingerprint_changes_with_inputs_and_options(cohort_run: CohortRun) -> None:
    manifest, _, _ = cohort_run
    case = read_manifest(manifest).cases[0]
    base = _fingerprint(case, COARSE, "a" * 64, "b" * 64)
    assert base == _fingerprint(case, COARSE, "a" * 64, "b" * 64)
    assert base != _fingerprint(case, Config(), "a" * 64, "b" * 64)
    assert base != _fingerprint(case, COARSE, "c" * 64, "b" * 64)
    assert base != _fingerprint(replace(case, body_mass_kg=71.0), COARSE, "a" * 64, "b" * 64)


def test_manifest_paths_are_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("case_id,ct,labels,body_mass_kg,side,lesion_label\n"
                                    "x1,a/ct.nii,a/lab.nii,70,R,2;5\n")
    manifest = read_manifest(tmp_path / "m.csv")
    case = manifest.cases[0]
    assert case.ct == (tmp_path / "a" / "ct.nii").resolve()
    assert (case.side, case.patient_id, case.lesion_labels) == ("right", "x1", (2, 5))
    assert case.lesion_labels_required and not manifest.has_outcomes


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("case_id,ct,labels,side\nx,a,b,left\n", r"missing column\(s\) \['body_mass_kg'\]"),
        ("case_id,ct,labels,body_mass_kg,side\nx,a,b,70,left\nx,a,b,70,right\n",
         "line 3: case_id 'x' already on line 2"),
        ("case_id,ct,labels,body_mass_kg,side\nP01,a,b,70,left\np01,a,b,70,right\n",
         "line 3: case_id 'p01' differs from 'P01' on line 2 only in letter case"),
        ("case_id,ct,labels,body_mass_kg,side\nx/y,a,b,70,left\n", "not a usable identifier"),
        ("case_id,ct,labels,body_mass_kg,side\nx,a,b,70 kg,left\n", "'70 kg' is not a number"),
        ("case_id,ct,labels,body_mass_kg,side,fractured\nx,a,b,70,left,1\n",
         "'fractured' needs 'follow_up_months'"),
        ("case_id,ct,labels,body_mass_kg,side,failure_load_N\nx,a,b,70,left,1\n",
         "output of the run"),
        ("case_id,ct,labels,body_mass_kg,side,fractured,follow_up_months\n\n"
         "x,a,b,70,left,0,12\ny,a,b,70,left,yes,12\n",
         r"m\.csv: line 4 \(patient 'y'\), column 'fractured'"),
        ("case_id,ct,labels,body_mass_kg,side,mirels_site,mirels_pain,mirels_lesion,"
         "mirels_size\nx,a,b,70,left,hip,1,1,1\n", "unknown Mirels site 'hip'"),
    ],
)
def test_manifest_errors_name_the_line_and_column(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_a_manifest_error_stops_the_run_before_any_analysis(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("case_id,ct,labels,body_mass_kg,side\nx,a,b,70,up\n")
    with pytest.raises(ManifestError, match="'up' is not left or right"):
        run_cohort(path, tmp_path / "out", COARSE, progress=False)
    assert not (tmp_path / "out").exists()


def test_workers_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("case_id,ct,labels,body_mass_kg,side\nx,a,b,70,left\n")
    with pytest.raises(Exception, match="workers must be a positive integer"):
        run_cohort(path, tmp_path / "out", COARSE, workers=0, progress=False)



class _KillsItsWorker:
    """Unpickled in the worker, it ends the worker process at once (as a segfault would)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (os._exit, (3,))


def test_a_case_that_kills_its_worker_twice_is_reported_not_retried_forever(
        tmp_path: Path) -> None:
    case = ManifestCase("X", "X", "left", tmp_path / "ct.nii", tmp_path / "labels.nii", 70.0)
    task = _Task(case, _KillsItsWorker(), tmp_path / "X", "fp", False)  # type: ignore[arg-type]
    statuses: dict[str, dict[str, object]] = {}
    _execute([task], 1, _progress_bar(1, False), statuses)
    assert statuses["X"]["error_type"] == "WorkerDied"
    saved = json.loads((tmp_path / "X" / "status.json").read_text())
    assert saved["state"] == "failed" and "died" in saved["error"]


# -- the command line: refused ids, failed cases, no orphaned workers --------------------------


def test_case_ids_equal_but_for_letter_case_are_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.csv"
    path.write_text("case_id,ct,labels,body_mass_kg,side\nP01,a,b,70,left\n"
                    "p01,a,b,70,right\n")
    code = main(["-q", "cohort", "run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "'p01' differs from 'P01' on line 2 only in letter case" in line
    assert "(hint: " in line
    assert not (tmp_path / "out").exists()


def test_a_cohort_with_a_failed_case_exits_3_and_says_how_many(
        cohort_run: CohortRun, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, out, _ = cohort_run
    code = main(["-q", "cohort", "run", str(manifest), "--out", str(out), "--mesh-size", "6",
                 "--no-picture"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: 1 of 3 cases failed (hint: see ")
    assert "failures.csv" in line
    saved = json.loads((out / "run_summary.json").read_text())
    assert (saved["n_done"], saved["n_failed"]) == (2, 1)


def _proc_children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("engine", ["dask", "pool"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_cohort_process_leaves_no_worker_behind(
        cohort_run: CohortRun, tmp_path: Path, sig: signal.Signals, engine: str) -> None:
    manifest, _, _ = cohort_run
    root = manifest.parent
    rows = "".join(f"K{i},{side},{root}/{kind}/ct.nii.gz,{root}/{kind}/labels.nii.gz,70\n"
                   for i, (side, kind) in enumerate([("left", "intact"), ("right", "lesion")]
                                                    * 4))
    big = tmp_path / "m.csv"
    big.write_text("case_id,side,ct,labels,body_mass_kg\n" + rows)
    proc = subprocess.Popen([sys.executable, "-m", "osteofe", "-q", "cohort", "run", str(big),
                             "--out", str(tmp_path / "out"), "--workers", "2",
                             "--mesh-size", "6", "--no-picture", "--engine", engine],
                            stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [p for p in _proc_children(proc.pid) if _is_worker(p)]
            time.sleep(0.1)
        assert len(workers) == 2, "the cohort run did not start its two workers"
        time.sleep(1.0)  # the workers are initialised and busy
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not [p for p in workers if _alive(p)], "orphaned worker processes"
        assert proc.stderr is not None
        err = proc.stderr.read()  # EOF only once no worker holds the pipe
        if sig == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM, err
            assert "interrupted: cohort run stopped by SIGTERM" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # a failed run of this test must not leave them either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_cohort_out_that_is_a_file_is_refused_before_any_work(
        cohort_run: CohortRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _, _ = cohort_run
    out = tmp_path / "out"
    out.write_text("my notes")
    code = main(["-q", "cohort", "run", str(manifest), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert f"output folder {out} is an existing file" in line and "(hint: " in line
    assert out.read_text() == "my notes"


def test_manifest_side_contradicting_the_femur_fails_that_case(tmp_path: Path) -> None:
    """A manifest row calling the (right) phantom femur left is refused, not computed."""
    write_phantom(make_phantom(PHANTOM), tmp_path / "intact")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,ct,labels,body_mass_kg,side\n"
                        "W,intact/ct.nii.gz,intact/labels.nii.gz,70,left\n")
    summary = run_cohort(manifest, tmp_path / "out", COARSE, workers=1, progress=False)
    assert summary.n_failed == 1 and summary.n_computed == 0
    status = json.loads((tmp_path / "out" / "cases" / "W" / "status.json").read_text())
    assert status["state"] == "failed" and "left" in status["error"]
