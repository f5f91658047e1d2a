"""Batch strength runs over a cohort manifest: parallel, resumable, failure-tolerant.

A **manifest** is a CSV with one row per femur (header names case-insensitive, blank lines
ignored, paths relative to the manifest's folder):

======================  ========  ========================================================
column                  required  content
======================  ========  ========================================================
case_id                 yes       unique identifier; names the case's output folder
ct                      yes       CT image (NIfTI/NRRD/MHA file or DICOM folder), in HU
labels                  yes       label map on the CT grid
body_mass_kg            yes       body mass, kg
side                    yes       ``left`` or ``right`` (``l``/``r`` accepted)
patient_id              no        patient identifier (default: ``case_id``); both femurs
                                  of one patient share it (the group of cross-validation)
bone_label              no        femur label value or name (default: inferred, see CLI)
lesion_labels           no        lesion label values or names separated by ``;``
                                  (``lesion_label`` accepted); when given they must exist
calibration_slope,      no        per-scan line ``rho_QCT = intercept + slope * HU``
calibration_intercept             (both or neither; default: the configuration's line)
mirels_*, size_fraction no        Mirels items, as in :mod:`risk.cohort`
aci_mm, ctra_reduction  no        axial cortical involvement (mm), CTRA rigidity loss
fractured,              no        outcome and follow-up (both or neither): when present the
follow_up_months                  run ends with a cohort table for ``osteofe benchmark``
anything else           no        carried to the cohort table as a covariate column
======================  ========  ========================================================

:func:`run_cohort` runs :func:`osteofe.pipeline.run_strength` for every case in worker
processes started with the ``spawn`` method (DOLFINx, PETSc and MPI are not safe in forked
children): by default those of an embedded Dask cluster, or of a joined Dask/SLURM cluster,
or of this module's process pool (``engine="pool"``); :func:`run_array_task` runs one SLURM
array index's rows in the calling process (see :mod:`osteofe.cohort_engines`). Each worker
solves its case alone on ``MPI.COMM_SELF``, or on ``ranks_per_case`` MPI ranks
(``mpiexec -n K`` subprocess). Outputs under ``out_dir``::

    cases/<case_id>/result.json ...   run_strength's outputs (written atomically)
    cases/<case_id>/status.json       state, fingerprint, engine, timings or the error
    array/task-<i>.json               what SLURM array task i did (array mode only)

    results.csv                       one row per case: state, failure loads, error
    failures.csv                      the failed cases and their error lines
    cohort.csv                        FE results merged with the manifest (risk.cohort
                                      schema), when the manifest has outcome columns
    run_summary.json                  counts, failures, timings, paths

**Resuming.** A case is skipped, not recomputed, when its ``result.json`` exists, its
``status.json`` says ``done`` with the same *fingerprint* (SHA-256 of the CT and labels
files, body mass, labels, calibration and the whole configuration) and the input hashes
recorded in ``result.json`` match the files. Changing an input or an option therefore
recomputes exactly the cases it affects; failed cases are retried.

**Failures.** A case whose inputs are invalid or whose analysis fails is recorded (its error
line in ``failures.csv``, ``results.csv``, its ``status.json`` and the summary) and the
other cases go on. A worker process that dies (crash, out of memory) is replaced; a case
in flight during two such deaths (``max_tries``) is recorded as failed. ``osteofe cohort
run`` exits with code 3 when any case failed and prints how many (``error: 2 of 10 cases
failed``); the finished cases' results are kept either way. Resuming works across engines:
every engine writes the same status files.

**Identifiers.** ``case_id`` names the case's output folder, so two ids that differ only in
letter case (``P01``, ``p01``) are refused before any work: on a case-insensitive file
system (macOS, Windows) they would share one folder.

**Stopping.** The workers never outlive the run: on Linux each asks the kernel to kill it
when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), and on every system a watchdog
thread ends it once its parent process is gone, so a parent killed by SIGKILL leaves no
orphaned workers. SIGTERM (and Ctrl-C) stop the run at once: the workers are terminated,
the finished cases are kept, and the run can be resumed (exit code 143, resp. 130).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import ctypes
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.textfile import canonical_header, read_utf8
from meshing.errors import InputError, OsteofeError
from osteofe.cohort_engines import ArrayTaskSummary
from osteofe.config import Config
from osteofe.outputs import (
    OutputError,
    atomic_write_text,
    check_output_dir,
    sha256_file,
    write_json,
)
from osteofe.result import StrengthResult

__all__ = [
    "MANIFEST_COLUMNS",
    "CaseFailure",
    "CohortInterrupted",
    "CohortRunSummary",
    "Manifest",
    "ManifestCase",
    "ManifestError",
    "format_run_summary",
    "read_manifest",
    "run_array_task",
    "run_cohort",
]

#: Columns the manifest reserves (everything else is carried to the cohort table).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "patient_id", "side", "ct", "labels", "body_mass_kg", "bone_label",
    "lesion_labels", "calibration_slope", "calibration_intercept",
)
#: Manifest columns copied into the cohort table under the same name (risk.cohort schema).
_COHORT_COLUMNS: tuple[str, ...] = (
    "mirels_site", "mirels_pain", "mirels_lesion", "mirels_size", "size_fraction", "aci_mm",
    "ctra_reduction", "fractured", "follow_up_months",
)
#: Column names that belong to the FE results and must not come from the manifest.
_RESULT_COLUMNS: tuple[str, ...] = (
    "failure_load_N", "failure_load_BW", "fe_load_case", "fe_failure_mode",
    "fe_critical_region",
)
_ALIASES: Mapping[str, str] = MappingProxyType({"lesion_label": "lesion_labels"})
#: Environment variables that cap the threads of numerical libraries in the workers.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMBA_NUM_THREADS")
#: A case in flight when this many worker processes died is recorded as failed.
_MAX_CRASHES = 2


class ManifestError(InputError):
    """A cohort manifest is malformed: missing columns, bad values, duplicated cases."""


# --------------------------------------------------------------------------------------------
# The manifest.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestCase:
    """One femur of a manifest.

    Attributes:
        case_id: Unique case identifier (a safe folder name).
        patient_id: Patient identifier (the group of grouped cross-validation).
        side: ``"left"`` or ``"right"``.
        ct: CT path (absolute, resolved against the manifest's folder).
        labels: Label-map path (absolute).
        body_mass_kg: Body mass, kg.
        bone_label: Femur label value or name.
        lesion_labels: Lesion label values or names (empty: the pipeline default).
        lesion_labels_required: Whether the lesion labels were given (then they must exist).
        calibration: ``(slope, intercept)`` of the scan's HU -> rho_QCT line, or ``None``.
        line: Line of the row in the manifest file.
        cells: The row's raw cells by canonical column name.
    """

    case_id: str
    patient_id: str
    side: str
    ct: Path
    labels: Path
    body_mass_kg: float
    bone_label: int | str | None = None
    lesion_labels: tuple[int | str, ...] = ()
    lesion_labels_required: bool = False
    calibration: tuple[float, float] | None = None
    line: int = 0
    cells: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest.

    Attributes:
        path: The manifest file.
        columns: Canonical column names in file order.
        cases: The femurs, in file order.
    """

    path: Path
    columns: tuple[str, ...]
    cases: tuple[ManifestCase, ...]

    @property
    def has_outcomes(self) -> bool:
        """Whether the manifest carries ``fractured`` and ``follow_up_months``."""
        return "fractured" in self.columns and "follow_up_months" in self.columns

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Columns carried to the cohort table as covariates."""
        return tuple(c for c in self.columns
                     if c not in MANIFEST_COLUMNS and c not in _COHORT_COLUMNS)


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _label(value: str) -> int | str:
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a cohort manifest (schema in the module docstring).

    Outcome and Mirels columns are checked against the :mod:`risk.cohort` schema up front,
    so that a typo is reported before hours of analyses rather than after.

    Args:
        path: The manifest CSV (UTF-8; an Excel byte-order mark is accepted).

    Returns:
        The manifest with absolute input paths.

    Raises:
        ManifestError: On the first problem, naming the line, case and column.
    """
    p = Path(path)
    text = read_utf8(p, what="manifest", error=ManifestError, fix="save it as CSV UTF-8")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{p}: the manifest is empty",
                            "write a header: case_id,ct,labels,body_mass_kg,side") from None
    columns = _manifest_header(p, header)
    base = p.resolve().parent
    cases: list[ManifestCase] = []
    seen: dict[str, tuple[str, int]] = {}  # case_id.casefold() -> (case_id, line)
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise ManifestError(f"{p}: line {line}: {len(cells)} cells for {len(columns)} "
                                "columns", "check for unquoted commas or missing cells")
        row = {c: v.strip() for c, v in zip(columns, cells, strict=True)}
        case = _manifest_case(p, line, row, base)
        key = case.case_id.casefold()
        if key in seen:
            other, other_line = seen[key]
            if other == case.case_id:
                raise ManifestError(f"{p}: line {line}: case_id {case.case_id!r} already on "
                                    f"line {other_line}", "give every femur its own case_id")
            raise ManifestError(
                f"{p}: line {line}: case_id {case.case_id!r} differs from {other!r} on line "
                f"{other_line} only in letter case; both would write one output folder on a "
                "case-insensitive file system",
                "give every femur a case_id that differs from the others in more than "
                "letter case")
        seen[key] = (case.case_id, line)
        cases.append(case)
    if not cases:
        raise ManifestError(f"{p}: the manifest has a header but no rows", "add one row per femur")
    manifest = Manifest(p, tuple(columns), tuple(cases))
    if any(c in columns for c in _COHORT_COLUMNS):
        _check_cohort_columns(manifest)
    return manifest


def _manifest_header(path: Path, header: Sequence[str]) -> list[str]:
    columns = canonical_header(path, header, (*MANIFEST_COLUMNS, *_COHORT_COLUMNS),
                               error=ManifestError, aliases=_ALIASES)
    for name in columns:
        if name in _RESULT_COLUMNS:
            raise ManifestError(f"{path}: line 1: column {name!r} is an output of the run",
                                "remove it from the manifest (the FE analysis computes it)")
    missing = [c for c in ("case_id", "ct", "labels", "body_mass_kg", "side")
               if c not in columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}",
                            "the header needs case_id, ct, labels, body_mass_kg and side")
    pairs = (("calibration_slope", "calibration_intercept"), ("fractured", "follow_up_months"))
    for a, b in pairs:
        if (a in columns) != (b in columns):
            raise ManifestError(f"{path}: column {a!r} needs {b!r} (or neither)",
                                f"add the {b} column or remove {a}")
    return columns


def _manifest_case(path: Path, line: int, row: dict[str, str], base: Path) -> ManifestCase:
    case_id = row["case_id"]

    def error(column: str, problem: str, hint: str) -> ManifestError:
        who = f" (case {case_id!r})" if case_id else ""
        return ManifestError(f"{path}: line {line}{who}, column {column!r}: {problem}", hint)

    if not _SAFE_ID.match(case_id):
        raise error("case_id", f"{case_id!r} is not a usable identifier",
                    "use letters, digits, '.', '_' or '-' (it names the output folder)")
    side = {"l": "left", "r": "right"}.get(row["side"].lower(), row["side"].lower())
    if side not in ("left", "right"):
        raise error("side", f"{row['side']!r} is not left or right", "use 'left' or 'right'")
    for column in ("ct", "labels"):
        if not row[column]:
            raise error(column, "path is missing", f"give the {column} file of the case")
    try:
        mass = float(row["body_mass_kg"])
    except ValueError:
        raise error("body_mass_kg", f"{row['body_mass_kg']!r} is not a number",
                    "give the body mass in kg") from None
    if not math.isfinite(mass):
        raise error("body_mass_kg", f"{row['body_mass_kg']!r} is not finite",
                    "give the body mass in kg")
    lesion_text = row.get("lesion_labels", "")
    lesions = tuple(_label(v) for v in re.split(r"[;\s]+", lesion_text) if v)
    calibration = None
    if "calibration_slope" in row:
        raw = (row["calibration_slope"], row["calibration_intercept"])
        if any(raw) and not all(raw):
            raise error("calibration_slope", "give both slope and intercept or neither",
                        "leave both blank to use the configured line")
        if all(raw):
            try:
                calibration = (float(raw[0]), float(raw[1]))
            except ValueError:
                raise error("calibration_slope", f"{raw} are not numbers",
                            "give the line rho = intercept + slope * HU as numbers") from None
    bone = row.get("bone_label", "") or None
    return ManifestCase(
        case_id=case_id,
        patient_id=row.get("patient_id", "") or case_id,
        side=side,
        ct=(base / row["ct"]).resolve(),
        labels=(base / row["labels"]).resolve(),
        body_mass_kg=mass,
        bone_label=None if bone is None else _label(bone),
        lesion_labels=lesions,
        lesion_labels_required=bool(lesions),
        calibration=calibration,
        line=line,
        cells=dict(row),
    )


_PLACEHOLDER_LOAD_N = 1000.0


def _cohort_rows(manifest: Manifest, results: Mapping[str, Mapping[str, Any]] | None
                 ) -> tuple[list[str], list[list[str]], list[ManifestCase]]:
    """Header and rows of the cohort table (placeholder loads when ``results`` is None)."""
    present = [c for c in _COHORT_COLUMNS if c in manifest.columns]
    extra = list(manifest.extra_columns)
    header = ["patient_id", "side", "body_mass_kg", "failure_load_N", "failure_load_BW",
              *present, "case_id"]
    if results is not None:
        header += ["fe_load_case", "fe_failure_mode", "fe_critical_region"]
    header += extra
    rows: list[list[str]] = []
    cases: list[ManifestCase] = []
    for case in manifest.cases:
        if results is not None and case.case_id not in results:
            continue
        result = results[case.case_id] if results is not None else None
        load = _PLACEHOLDER_LOAD_N if result is None else float(result["failure_load_N"])
        load_bw = "" if result is None else repr(float(result["failure_load_BW"]))
        row = [case.patient_id, case.side, repr(case.body_mass_kg), repr(load), load_bw]
        row += [case.cells.get(c, "") for c in present]
        row.append(case.case_id)
        if result is not None:
            row += [str(result.get("load_case", "")), str(result.get("failure_mode", "")),
                    str(result.get("critical_region", ""))]
        row += [case.cells.get(c, "") for c in extra]
        rows.append(row)
        cases.append(case)
    return header, rows, cases


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _check_cohort_columns(manifest: Manifest) -> None:
    """Validate the Mirels/outcome columns with the risk.cohort reader (placeholder loads)."""
    from risk.cohort import read_cohort
    from risk.errors import CohortError

    header, rows, cases = _cohort_rows(manifest, None)
    if not manifest.has_outcomes:
        # Mirels/ACI columns alone: give them a dummy outcome so that the reader checks them.
        header = [*header, "fractured", "follow_up_months"]
        rows = [[*r, "0", "0"] for r in rows]
    with tempfile.TemporaryDirectory(prefix="osteofe-manifest-") as tmp:
        check = Path(tmp) / "cohort_check.csv"
        check.write_text(_csv_text(header, rows), encoding="utf-8")
        try:
            read_cohort(check)
        except CohortError as exc:
            message = exc.message
            match = re.match(rf"^{re.escape(str(check))}: line (\d+)", message)
            if match:
                case = cases[int(match.group(1)) - 2]
                message = f"{manifest.path}: line {case.line}" + message[match.end():]
            else:
                message = message.replace(str(check), str(manifest.path))
            raise ManifestError(message, exc.hint) from None


# --------------------------------------------------------------------------------------------
# Running the cases.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFailure:
    """A case that could not be analysed.

    Attributes:
        case_id: The case.
        error_type: Exception class name (e.g. ``InputError``).
        error: The one-line error message with its hint.
        status_file: The case's ``status.json`` (with a traceback for internal errors), or
            ``None`` when the case failed before it had an output folder.
    """

    case_id: str
    error_type: str
    error: str
    status_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"case_id": self.case_id, "error_type": self.error_type, "error": self.error,
                "status_file": None if self.status_file is None else str(self.status_file)}


@dataclass(frozen=True)
class CohortRunSummary:
    """What :func:`run_cohort` did.

    Attributes:
        n_cases: Cases in the manifest.
        n_computed: Cases analysed in this run.
        n_skipped: Cases already finished with the same fingerprint (resumed, not rerun).
        n_failed: Cases that failed (see ``failures``).
        failures: The failed cases, in manifest order.
        workers: Worker processes used.
        wall_s: Wall-clock time of the run, s.
        out_dir: The output folder.
        results_csv: Per-case results table.
        failures_csv: Failed cases table.
        cohort_csv: Cohort table (risk.cohort schema), or ``None`` without outcome columns
            or without any successful case.
        summary_json: This summary as JSON.
    """

    n_cases: int
    n_computed: int
    n_skipped: int
    n_failed: int
    failures: tuple[CaseFailure, ...]
    workers: int
    wall_s: float
    out_dir: Path
    results_csv: Path
    failures_csv: Path
    cohort_csv: Path | None
    summary_json: Path

    @property
    def n_done(self) -> int:
        """Cases with a result (computed now or earlier)."""
        return self.n_computed + self.n_skipped

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "n_cases": self.n_cases, "n_done": self.n_done, "n_computed": self.n_computed,
            "n_skipped": self.n_skipped, "n_failed": self.n_failed,
            "failures": [f.to_dict() for f in self.failures], "workers": self.workers,
            "wall_s": self.wall_s, "out_dir": str(self.out_dir),
            "results_csv": str(self.results_csv), "failures_csv": str(self.failures_csv),
            "cohort_csv": None if self.cohort_csv is None else str(self.cohort_csv),
            "summary_json": str(self.summary_json),
        }


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs for one case (picklable)."""

    case: ManifestCase
    config: Config
    case_dir: Path
    fingerprint: str
    picture: bool
    engine: str = "pool"
    ranks: int = 1


def _fingerprint(case: ManifestCase, config: Config, ct_sha: str, labels_sha: str) -> str:
    """SHA-256 of everything a case's result depends on."""
    doc = {
        "ct_sha256": ct_sha, "labels_sha256": labels_sha, "body_mass_kg": case.body_mass_kg,
        "bone_label": case.bone_label, "lesion_labels": list(case.lesion_labels),
        "lesion_labels_required": case.lesion_labels_required,
        "calibration": case.calibration, "config": config.to_dict(),
    }
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finished_result(case: ManifestCase, case_dir: Path, fingerprint: str, ct_sha: str,
                     labels_sha: str) -> StrengthResult | None:
    """The case's earlier result when it can be reused, else ``None``."""
    status = _read_json(case_dir / "status.json")
    if status is None or status.get("state") != "done" or status.get("fingerprint") != fingerprint:
        return None
    try:
        result = StrengthResult.load(case_dir / "result.json")
    except OsteofeError:
        return None
    files = result.provenance.files
    recorded = {name: files[name].sha256 if name in files else None for name in ("ct", "labels")}
    if recorded != {"ct": ct_sha, "labels": labels_sha}:
        return None
    return result


def _status_fields(result: StrengthResult) -> dict[str, Any]:
    """What status.json records of a finished case (its governing case)."""
    governing = result.governing
    return {"failure_load_N": result.failure_load_N, "failure_load_BW": result.failure_load_BW,
            "load_case": governing.load_case, "failure_mode": governing.failure_mode,
            "critical_region": governing.critical_region}


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


#: Environment variable naming the MPI launcher of ``ranks_per_case`` > 1 (default: the
#: ``mpiexec`` beside the Python interpreter, else ``mpiexec`` on the PATH).
MPIEXEC_VARIABLE = "OSTEOFE_MPIEXEC"


def _mpiexec() -> list[str]:
    import shlex
    import shutil

    if os.environ.get(MPIEXEC_VARIABLE):
        return shlex.split(os.environ[MPIEXEC_VARIABLE])
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mpiexec")
    if found is None:
        raise InputError("ranks_per_case > 1 needs an MPI launcher and none was found",
                         f"install MPI or set {MPIEXEC_VARIABLE} (e.g. 'srun --mpi=pmi2')")
    return [found]


def _pdeathsig_hook() -> Any:
    """A ``preexec_fn`` that makes the child die with this thread's process (Linux), or None.

    libc is looked up here, in the parent, so that the forked child only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    kill = int(signal.SIGKILL)

    def hook() -> None:  # pragma: no cover - runs in the forked child
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)

    return hook


def _run_case_mpi(task: _Task) -> dict[str, Any]:
    """Worker: analyse one case on ``task.ranks`` MPI ranks (``mpiexec -n K`` subprocess).

    The launcher dies with the worker (``PR_SET_PDEATHSIG``); rank 0 of the subprocess
    writes the status file, which is returned. A launcher that ends without one (a rank
    crashed, out of memory) gives a failed status with its last error line.
    """
    import pickle
    import subprocess

    start = time.perf_counter()
    task.case_dir.parent.mkdir(parents=True, exist_ok=True)
    status_file = task.case_dir / "status.json"
    with suppress(FileNotFoundError):
        status_file.unlink()  # an earlier run's status must not pass for this one's
    fd, name = tempfile.mkstemp(prefix=f".{task.case.case_id}.", suffix=".task.pkl",
                                dir=task.case_dir.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(task, handle)
        command = [*_mpiexec(), "-n", str(task.ranks), sys.executable, "-m",
                   "osteofe._cohort_mpi_case", name]
        proc = subprocess.run(command, capture_output=True, text=True, check=False,
                              preexec_fn=_pdeathsig_hook())
    finally:
        with suppress(OSError):
            os.unlink(name)
    status = _read_json(status_file)
    if status is not None and status.get("fingerprint") == task.fingerprint:
        return status
    lines = [x for x in (proc.stderr or "").splitlines() if x.strip()]
    status = {"case_id": task.case.case_id, "fingerprint": task.fingerprint,
              "engine": task.engine, "mpi_ranks": task.ranks, "state": "failed",
              "error_type": "MPIRunFailed",
              "error": f"mpiexec -n {task.ranks} ended with code {proc.returncode} without "
                       f"a result: {lines[-1] if lines else 'no output'}",
              "wall_s": round(time.perf_counter() - start, 3)}
    task.case_dir.mkdir(parents=True, exist_ok=True)
    write_json(status_file, status)
    return status


def _run_case(task: _Task, comm: Any = None) -> dict[str, Any]:
    """Worker: analyse one case on ``comm`` (default ``MPI.COMM_SELF``); write its status.

    Under a communicator of several ranks every rank calls this; rank 0 writes the file.
    A task of ``ranks`` > 1 without ``comm`` is run by :func:`_run_case_mpi`.
    """
    from mpi4py import MPI

    if comm is None and task.ranks > 1:
        return _run_case_mpi(task)

    from material.calibration import LinearCalibration
    from osteofe.pipeline import StrengthRequest, run_strength

    case = task.case
    start = time.perf_counter()
    status: dict[str, Any] = {"case_id": case.case_id, "fingerprint": task.fingerprint,
                              "engine": task.engine, "pid": os.getpid()}
    try:
        calibration = None
        if case.calibration is not None:
            calibration = LinearCalibration(case.calibration[0], case.calibration[1],
                                            name=f"manifest:{case.case_id}",
                                            source="scanner line from the cohort manifest")
        request = StrengthRequest(
            ct_path=case.ct, labels_path=case.labels, body_mass_kg=case.body_mass_kg,
            bone_label=case.bone_label, lesion_labels=case.lesion_labels or (2,),
            lesion_labels_required=case.lesion_labels_required, case_id=case.case_id,
            side=case.side)
        comm = MPI.COMM_SELF if comm is None else comm
        status["mpi_ranks"] = comm.size
        result = run_strength(request, task.config, task.case_dir, calibration=calibration,
                              comm=comm, picture=task.picture)
    except Exception as exc:  # every failure is reported; none stops the run
        status.update(state="failed", error_type=type(exc).__name__, error=_error_line(exc))
        if not isinstance(exc, OsteofeError):
            status["error"] = f"internal error: {type(exc).__name__}: {_error_line(exc)}"
            status["traceback"] = traceback.format_exc()
    else:
        status.update(state="done", **_status_fields(result), warnings=list(result.warnings))
    status["wall_s"] = round(time.perf_counter() - start, 3)
    if comm is None or comm.rank == 0:
        task.case_dir.mkdir(parents=True, exist_ok=True)
        write_json(task.case_dir / "status.json", status)
    return status


@contextmanager
def _thread_limits(threads: int) -> Iterator[None]:
    """Cap numerical-library threads of the worker processes spawned inside the block."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    try:
        for name in _THREAD_VARIABLES:
            os.environ[name] = str(threads)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _progress_bar(total: int, enabled: bool) -> Any:
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="cohort", unit="case", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


_PR_SET_PDEATHSIG = 1
#: Seconds between the worker watchdog's checks that its parent process still exists.
_PARENT_POLL_S = 1.0


class CohortInterrupted(KeyboardInterrupt):
    """The cohort run was stopped by a signal; finished cases are kept (rerun to resume).

    Attributes:
        exit_code: The command line's exit code (128 + the signal number).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(1)  # the run is gone: nobody will read this worker's result


def _worker_init(parent_pid: int) -> None:
    """Worker start-up: make sure the worker ends when the cohort process ends.

    Linux: the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``). Everywhere:
    a daemon thread exits the worker once it has been re-parented. A parent that died
    before this ran is noticed at once.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog still works
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="osteofe-parent-watch",
                     daemon=True).start()


def _stop_pool(pool: cf.ProcessPoolExecutor, grace_s: float = 3.0) -> None:
    """Terminate the pool's workers now (SIGTERM, then SIGKILL after ``grace_s``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with suppress(OSError, ValueError):  # already gone
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            with suppress(OSError, ValueError):  # already gone
                process.kill()
            process.join(1.0)


@contextmanager
def _stop_on_sigterm(out: Path) -> Iterator[None]:
    """Turn SIGTERM into :class:`CohortInterrupted` while the run lasts (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise CohortInterrupted(f"cohort run stopped by {signal.Signals(signum).name}; the "
                                f"finished cases are kept in {out} (rerun to resume)",
                                128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(tasks: list[_Task], workers: int, bar: Any,
             statuses: dict[str, dict[str, Any]]) -> None:
    """Run ``tasks`` in a spawn pool, at most ``workers`` in flight; fill ``statuses``."""
    pending = list(reversed(tasks))
    crashes: dict[str, int] = {}
    context = multiprocessing.get_context("spawn")
    failed = sum(1 for s in statuses.values() if s.get("state") == "failed")

    def may_submit(task: _Task, in_flight: Mapping[Any, _Task]) -> bool:
        # A case that was in flight when a worker died runs alone, so that a second death
        # convicts the case that causes it and not a bystander.
        if any(crashes.get(t.case.case_id) for t in in_flight.values()):
            return False
        return not in_flight if crashes.get(task.case.case_id) else True

    while pending:
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                      initializer=_worker_init, initargs=(os.getpid(),))
        in_flight: dict[cf.Future[dict[str, Any]], _Task] = {}
        broken = False
        try:
            while pending or in_flight:
                while (pending and len(in_flight) < workers and not broken
                       and may_submit(pending[-1], in_flight)):
                    task = pending.pop()
                    try:
                        in_flight[pool.submit(_run_case, task)] = task
                    except cf.process.BrokenProcessPool:
                        pending.append(task)
                        broken = True
                if not in_flight:
                    break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task = in_flight.pop(future)
                    try:
                        status = future.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        crashes[task.case.case_id] = crashes.get(task.case.case_id, 0) + 1
                        if crashes[task.case.case_id] < _MAX_CRASHES:
                            pending.append(task)
                            continue
                        status = {"case_id": task.case.case_id, "state": "failed",
                                  "fingerprint": task.fingerprint,
                                  "error_type": "WorkerDied",
                                  "error": "the worker process died while analysing this case "
                                           f"{_MAX_CRASHES} times (crash or out of memory)"}
                        task.case_dir.mkdir(parents=True, exist_ok=True)
                        write_json(task.case_dir / "status.json", status)
                    statuses[task.case.case_id] = status
                    failed += status.get("state") == "failed"
                    bar.set_postfix(failed=failed, refresh=False)
                    bar.update(1)
                if broken and not in_flight:
                    break
        except BaseException:  # SIGTERM, Ctrl-C, a bug: no worker may outlive the run
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _validate_request(case: ManifestCase) -> None:
    from osteofe.pipeline import StrengthRequest

    StrengthRequest(ct_path=case.ct, labels_path=case.labels,
                    body_mass_kg=case.body_mass_kg, case_id=case.case_id).validate()


def _plan(cases: Sequence[ManifestCase], config: Config, cases_dir: Path, picture: bool,
          statuses: dict[str, dict[str, Any]], bar: Any, ranks: int = 1) -> list[_Task]:
    """The cases left to compute; invalid and already finished ones go to ``statuses``."""
    tasks: list[_Task] = []
    for case in cases:
        case_dir = cases_dir / case.case_id
        try:
            _validate_request(case)
        except OsteofeError as exc:
            status = {"case_id": case.case_id, "state": "failed",
                      "error_type": type(exc).__name__, "error": _error_line(exc)}
            case_dir.mkdir(parents=True, exist_ok=True)
            write_json(case_dir / "status.json", status)
            statuses[case.case_id] = status
            bar.update(1)
            continue
        ct_sha, labels_sha = sha256_file(case.ct), sha256_file(case.labels)
        fingerprint = _fingerprint(case, config, ct_sha, labels_sha)
        previous = _finished_result(case, case_dir, fingerprint, ct_sha, labels_sha)
        if previous is not None:
            statuses[case.case_id] = {
                "case_id": case.case_id, "state": "done", "resumed": True,
                **_status_fields(previous)}
            bar.update(1)
            continue
        tasks.append(_Task(case, config, case_dir, fingerprint, picture, ranks=ranks))
    return tasks


def run_cohort(
    manifest: str | Path | Manifest,
    out_dir: str | Path,
    config: Config | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    picture: bool = False,
    engine: str = "dask",
    scheduler: str | None = None,
    cluster: str = "local",
    max_tries: int = 2,
    ranks_per_case: int = 1,
) -> CohortRunSummary:
    """Analyse every femur of a manifest in parallel; resumable; failures do not stop it.

    Serial driver: call it from one process (not under ``mpiexec -n >1``); the parallelism
    is its pool of ``workers`` processes (spawned, each on ``MPI.COMM_SELF``). Each worker
    uses at most ``cpu_count // workers`` threads in OpenMP/BLAS/numba. Memory: about 1-2 GB
    per worker at the default mesh size.

    Args:
        manifest: The manifest CSV (or a :class:`Manifest` from :func:`read_manifest`).
        out_dir: Output folder (created; reusing it resumes an interrupted run).
        config: Model options of every case (default :class:`Config()`); a manifest's
            calibration columns override the configured line per case.
        workers: Worker processes (default: the CPU count, at most the number of cases to
            run); with ``cluster="slurm"`` the number of SLURM jobs.
        progress: Show a tqdm progress bar on stderr.
        picture: Also render each case's PNG picture (slower).
        engine: ``"dask"`` (default; :mod:`osteofe.cohort_engines`) or ``"pool"`` (the
            process pool of this module).
        scheduler: With ``engine="dask"``: join the Dask scheduler at this address
            (``tcp://host:8786``) instead of starting a cluster.
        cluster: With ``engine="dask"`` and no ``scheduler``: ``"local"`` (an embedded
            LocalCluster) or ``"slurm"`` (a dask-jobqueue SLURMCluster).
        max_tries: Tries of a case whose worker process dies (Dask engine).
        ranks_per_case: MPI ranks of each case: a worker runs its case as an
            ``mpiexec -n ranks_per_case`` subprocess (launcher: ``$OSTEOFE_MPIEXEC`` or
            the ``mpiexec`` beside Python), so a run uses ``workers * ranks_per_case``
            cores; 1 (default) solves each case in its worker on ``MPI.COMM_SELF``.

    Returns:
        The run summary; also written to ``out_dir/run_summary.json``.

    Raises:
        ManifestError: If the manifest is malformed (nothing is run).
        OutputError: If ``out_dir`` is a file, not writable or on a nearly full disk
            (:func:`osteofe.outputs.check_output_dir`; nothing is run).
        InputError: If ``workers`` is not a positive integer or the run is started under
            MPI with more than one rank.
        CohortInterrupted: On SIGTERM (the workers are terminated; finished cases kept).
    """
    from mpi4py import MPI

    start = time.perf_counter()
    if MPI.COMM_WORLD.size > 1:
        raise InputError("run_cohort was started under MPI with "
                         f"{MPI.COMM_WORLD.size} ranks",
                         "run it as one process; it starts its own worker processes "
                         "(use workers=N)")
    parsed = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    config = config or Config()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}",
                         "use e.g. workers=2")
    if engine not in ("dask", "pool"):
        raise InputError(f"unknown cohort engine {engine!r}", "use 'dask' or 'pool'")
    if engine == "pool" and (scheduler is not None or cluster != "local"):
        raise InputError("the process pool runs on this machine only",
                         "use engine 'dask' with a scheduler or a SLURM cluster")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise InputError(f"max_tries must be a positive integer, got {max_tries!r}",
                         "use e.g. max_tries=2")
    if (isinstance(ranks_per_case, bool) or not isinstance(ranks_per_case, int)
            or ranks_per_case < 1):
        raise InputError(f"ranks_per_case must be a positive integer, got {ranks_per_case!r}",
                         "use e.g. ranks_per_case=4")
    out = Path(out_dir)
    check_output_dir(out)  # a file, not writable, a full disk: refused before any work
    cases_dir = out / "cases"
    try:
        cases_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the cohort's output folder {cases_dir}: "
                          f"{exc.strerror or exc}", hint="choose a writable --out") from exc

    statuses: dict[str, dict[str, Any]] = {}
    computed: set[str] = set()
    n_workers = 0
    bar = _progress_bar(len(parsed.cases), progress)
    try:
        tasks = _plan(parsed.cases, config, cases_dir, picture, statuses, bar, ranks_per_case)
        default_workers = max(1, (os.cpu_count() or 1) // ranks_per_case)
        n_workers = min(workers or default_workers, max(len(tasks), 1))
        if tasks:
            threads = max(1, (os.cpu_count() or 1) // (n_workers * ranks_per_case))
            with _thread_limits(threads), _stop_on_sigterm(out):
                if engine == "pool":
                    _execute(tasks, n_workers, bar, statuses)
                else:
                    from osteofe.cohort_engines import execute_dask

                    n_workers = execute_dask(
                        tasks, n_workers, bar, statuses, scheduler=scheduler,
                        cluster=cluster, max_tries=max_tries,
                        env={name: str(threads) for name in _THREAD_VARIABLES})
            computed = {t.case.case_id for t in tasks}
    finally:
        bar.close()
    return _write_outputs(parsed, out, statuses, computed, n_workers,
                          round(time.perf_counter() - start, 3))


def run_array_task(
    manifest: str | Path | Manifest,
    out_dir: str | Path,
    config: Config | None = None,
    *,
    index: int | None = None,
    per_task: int = 1,
    picture: bool = False,
) -> ArrayTaskSummary:
    """Run the manifest row(s) of one SLURM array task in this process (no Dask needed).

    Task ``i`` (``index`` or ``$SLURM_ARRAY_TASK_ID``) runs rows ``i * per_task`` to
    ``(i + 1) * per_task - 1`` (0-based, in file order), with the same status files and
    fingerprints as :func:`run_cohort`: finished cases are skipped, and the cohort tables
    (results.csv, cohort.csv, ...) are written by an ordinary :func:`run_cohort` on the
    same folder after the array (it resumes every finished case). Started under
    ``mpiexec``/``srun -n K`` the task solves its case(s) on all ``K`` ranks (rank 0
    writes); otherwise on one process.

    Args:
        manifest: The manifest CSV or a parsed :class:`Manifest` (the whole manifest: the
            rows are selected here, so every task reads the same file).
        out_dir: The cohort's output folder (shared by all tasks).
        config: Model options (default :class:`Config()`).
        index: The array index (default: ``$SLURM_ARRAY_TASK_ID``).
        per_task: Manifest rows per array task.
        picture: Also render each case's PNG picture.

    Returns:
        The task's summary, also written to ``out_dir/array/task-<index>.json``.

    Raises:
        ManifestError: If the manifest is malformed.
        InputError: If the index is missing, not an integer or past the manifest's end.
        OutputError: If ``out_dir`` cannot be written.
    """
    from mpi4py import MPI

    from osteofe.cohort_engines import array_task_cases, array_task_index

    comm = MPI.COMM_WORLD
    parsed = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    config = config or Config()
    task_index = array_task_index(index)
    rows = array_task_cases(len(parsed.cases), task_index, per_task)
    out = Path(out_dir)
    if comm.rank == 0:
        check_output_dir(out)
        (out / "cases").mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    cases = [parsed.cases[i] for i in rows]
    statuses: dict[str, dict[str, Any]] = {}
    bar = _progress_bar(len(cases), False)
    with _stop_on_sigterm(out):
        if comm.rank == 0:
            tasks = _plan(cases, config, out / "cases", picture, statuses, bar)
        else:  # rank 0 alone writes the status files of invalid cases
            tasks = []
        tasks = comm.bcast(tasks, root=0)
        statuses = comm.bcast(statuses, root=0)
        for task in tasks:
            statuses[task.case.case_id] = _run_case(replace(task, engine="array"), comm)
    ordered = tuple(statuses[c.case_id] for c in cases)
    summary = ArrayTaskSummary(index=task_index, case_ids=tuple(c.case_id for c in cases),
                               statuses=ordered,
                               n_resumed=sum(1 for s in ordered if s.get("resumed")),
                               summary_json=out / "array" / f"task-{task_index}.json")
    if comm.rank == 0:
        summary.summary_json.parent.mkdir(parents=True, exist_ok=True)
        write_json(summary.summary_json, {
            "manifest": str(parsed.path), "index": task_index, "per_task": per_task,
            "case_ids": list(summary.case_ids), "n_failed": summary.n_failed,
            "n_resumed": summary.n_resumed, "mpi_ranks": comm.size,
            "statuses": [dict(s) for s in ordered]})
    return summary


def _write_outputs(manifest: Manifest, out: Path, statuses: Mapping[str, Mapping[str, Any]],
                   computed: set[str], workers: int, wall_s: float) -> CohortRunSummary:
    """results.csv, failures.csv, cohort.csv and run_summary.json, each atomically."""
    from risk.cohort import read_cohort

    header = ["case_id", "patient_id", "side", "state", "computed", "failure_load_N",
              "failure_load_BW", "load_case", "failure_mode", "critical_region", "wall_s",
              "error"]
    rows = []
    failures: list[CaseFailure] = []
    done: dict[str, Mapping[str, Any]] = {}
    for case in manifest.cases:
        status = statuses.get(case.case_id, {"state": "not run"})
        state = str(status.get("state"))
        rows.append([case.case_id, case.patient_id, case.side, state,
                     "yes" if case.case_id in computed else "no",
                     *(_cell(status.get(k)) for k in ("failure_load_N", "failure_load_BW",
                                                       "load_case", "failure_mode",
                                                       "critical_region", "wall_s")),
                     str(status.get("error", ""))])
        if state == "done":
            done[case.case_id] = status
        else:
            status_file = out / "cases" / case.case_id / "status.json"
            failures.append(CaseFailure(case.case_id, str(status.get("error_type", "")),
                                        str(status.get("error", state)),
                                        status_file if status_file.is_file() else None))
    results_csv = out / "results.csv"
    atomic_write_text(results_csv, _csv_text(header, rows))
    failures_csv = out / "failures.csv"
    atomic_write_text(failures_csv, _csv_text(
        ["case_id", "error_type", "error", "status_file"],
        [[f.case_id, f.error_type, f.error, "" if f.status_file is None else str(f.status_file)]
         for f in failures]))
    cohort_csv: Path | None = None
    if manifest.has_outcomes and done:
        cohort_header, cohort_rows, _ = _cohort_rows(manifest, done)
        cohort_csv = out / "cohort.csv"
        atomic_write_text(cohort_csv, _csv_text(cohort_header, cohort_rows))
        read_cohort(cohort_csv)  # the table must satisfy the schema the benchmark reads
    summary = CohortRunSummary(
        n_cases=len(manifest.cases),
        n_computed=sum(1 for c in computed if c in done),
        n_skipped=sum(1 for c in done if c not in computed),
        n_failed=len(failures),
        failures=tuple(failures),
        workers=workers,
        wall_s=wall_s,
        out_dir=out,
        results_csv=results_csv,
        failures_csv=failures_csv,
        cohort_csv=cohort_csv,
        summary_json=out / "run_summary.json",
    )
    write_json(summary.summary_json, {"manifest": str(manifest.path), **summary.to_dict()})
    return summary


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_run_summary(summary: CohortRunSummary) -> str:
    """A few human-readable lines for the command line.

    Args:
        summary: The result of :func:`run_cohort`.

    Returns:
        Text: counts, then one line per failed case, then where the tables are.
    """
    lines = [f"{summary.n_cases} cases: {summary.n_computed} computed, {summary.n_skipped} "
             f"resumed, {summary.n_failed} failed ({summary.wall_s:.0f} s, "
             f"{summary.workers} workers)"]
    lines += [f"  FAILED {f.case_id}: {f.error}" for f in summary.failures]
    lines.append(f"results: {summary.results_csv}")
    if summary.failures:
        lines.append(f"failures: {summary.failures_csv}")
    if summary.cohort_csv is not None:
        lines.append(f"cohort table: {summary.cohort_csv}")
    return "\n".join(lines)
