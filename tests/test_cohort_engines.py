"""Cohort engines: Dask worker deaths retried, resume across engines, SLURM arrays, joining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meshing.errors import InputError
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from osteofe.cohort import _plan, _progress_bar, read_manifest, run_array_task, run_cohort
from osteofe.cohort_engines import array_task_cases, array_task_index, execute_dask
from osteofe.config import Config

pytestmark = pytest.mark.skip_in_parallel

#: As in test_cohort_run: about 3 s per case.
COARSE = Config().override("mesh", size_mm=6.0)
PHANTOM = replace(PhantomParams(), voxel_size_mm=1.5, soft_tissue_mm=3.0, distal_cut_mm=150.0)
RESULT_KEYS = ("failure_load_N", "failure_load_BW", "load_case", "failure_mode",
               "critical_region")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    write_phantom(make_phantom(PHANTOM), root / "intact")
    return root


def _manifest(root: Path, ids: list[str], name: str = "m.csv") -> Path:
    path = root / name
    path.write_text("case_id,ct,labels,body_mass_kg,side\n" + "".join(
        f"{i},intact/ct.nii.gz,intact/labels.nii.gz,70,right\n" for i in ids))
    return path


def _same_result(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Same numbers: the solver's last digits vary between runs of one process (~1e-13)."""
    for key in RESULT_KEYS:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-9), key
        else:
            assert a[key] == b[key], key


# -- worker deaths -----------------------------------------------------------------------------


#: The embedded cluster's scheduler unpickles (and pickles again) the tasks too, in this,
#: the test's, process: the fault objects below act only in another process.
_TEST_PID = os.getpid()


def _kill_once(marker: str, config: Config, test_pid: int) -> Any:
    """Unpickled in a worker: the first time, SIGKILL this process 1 s into the case."""
    if os.getpid() == test_pid:
        return _KilledMidCase(Path(marker), config)
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return config


class _KilledMidCase:
    def __init__(self, marker: Path, config: Config) -> None:
        self.marker, self.config = str(marker), config

    def __reduce__(self) -> tuple[Any, tuple[str, Config, int]]:
        return (_kill_once, (self.marker, self.config, _TEST_PID))


def _exit_in_worker(test_pid: int) -> Any:
    if os.getpid() == test_pid:
        return _KillsItsWorker()
    os._exit(3)


class _KillsItsWorker:
    """Unpickled in a worker, it ends the worker process at once (as a segfault would)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_exit_in_worker, (_TEST_PID,))


def test_a_worker_killed_mid_case_is_replaced_and_its_case_retried(
        phantom_dir: Path, tmp_path: Path) -> None:
    """A: undisturbed; B: its worker SIGKILLed 1 s into the analysis; C: kills every worker.

    B is computed again on a fresh worker and gives A's numbers (same inputs); C is
    recorded as failed after two tries; A is not disturbed by either death.
    """
    manifest = read_manifest(_manifest(phantom_dir, ["A", "B", "C"], "kill.csv"))
    statuses: dict[str, dict[str, Any]] = {}
    bar = _progress_bar(3, False)
    tasks = _plan(manifest.cases, COARSE, tmp_path / "cases", False, statuses, bar)
    marker = tmp_path / "killed-B"
    tasks[1] = replace(tasks[1], config=_KilledMidCase(marker, COARSE))  # type: ignore[arg-type]
    tasks[2] = replace(tasks[2], config=_KillsItsWorker())  # type: ignore[arg-type]
    n_workers = execute_dask(tasks, 2, bar, statuses, max_tries=2)
    assert n_workers == 2
    killed_pid = int(marker.read_text())
    a, b, c = statuses["A"], statuses["B"], statuses["C"]
    assert a["state"] == "done" and "tries" not in a
    assert b["state"] == "done" and b["tries"] == 2, b
    assert b["pid"] != killed_pid  # a new worker process computed it
    _same_result(a, b)
    saved = json.loads((tmp_path / "cases" / "B" / "status.json").read_text())
    assert saved["state"] == "done" and saved["failure_load_N"] == b["failure_load_N"]
    result = json.loads((tmp_path / "cases" / "B" / "result.json").read_text())
    assert result["failure_load_N"] == b["failure_load_N"]
    assert c["state"] == "failed" and c["error_type"] == "WorkerDied" and c["tries"] == 2
    assert "died while analysing this case 2 times" in c["error"]
    assert json.loads((tmp_path / "cases" / "C" / "status.json").read_text())["state"] == (
        "failed")


# -- resuming across engines; SLURM array tasks; joining a cluster -------------------------------


def test_resume_across_array_task_pool_and_dask_engines(phantom_dir: Path,
                                                        tmp_path: Path) -> None:
    """An array task computes row 0, the pool row 1, Dask (a joined cluster) nothing, then B.

    Every engine reads and writes the same status files and fingerprints: a finished
    case is never recomputed by another engine, and the tables list both cases.
    """
    from distributed import LocalCluster

    manifest = _manifest(phantom_dir, ["A", "B"], "resume.csv")
    out = tmp_path / "out"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "osteofe", "-q", "cohort", "run",
                           str(manifest), "--out", str(out), "--mesh-size", "6",
                           "--no-picture", "--array-task"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    task = json.loads((out / "array" / "task-0.json").read_text())
    assert task["case_ids"] == ["A"] and task["n_failed"] == 0
    status_a = json.loads((out / "cases" / "A" / "status.json").read_text())
    assert status_a["state"] == "done" and not (out / "cases" / "B").exists()
    mtime_a = (out / "cases" / "A" / "result.json").stat().st_mtime_ns

    pool = run_cohort(manifest, out, COARSE, workers=2, progress=False, engine="pool")
    assert (pool.n_computed, pool.n_skipped, pool.n_failed) == (1, 1, 0)
    assert (out / "cases" / "A" / "result.json").stat().st_mtime_ns == mtime_a
    status_b = json.loads((out / "cases" / "B" / "status.json").read_text())
    _same_result(status_a, status_b)  # same inputs, computed by another engine

    again = run_cohort(manifest, out, COARSE, workers=2, progress=False, engine="dask")
    assert (again.n_computed, again.n_skipped) == (0, 2)

    (out / "cases" / "B" / "result.json").unlink()  # as if lost: B is computed again
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        joined = run_cohort(manifest, out, COARSE, progress=False,
                            scheduler=cluster.scheduler_address)
    assert (joined.n_computed, joined.n_skipped, joined.workers) == (1, 1, 1)
    status_b2 = json.loads((out / "cases" / "B" / "status.json").read_text())
    assert status_b2["engine"] == "dask"
    _same_result(status_b, status_b2)
    assert (out / "cases" / "A" / "result.json").stat().st_mtime_ns == mtime_a


def test_a_joined_cluster_with_threaded_workers_is_refused(phantom_dir: Path,
                                                           tmp_path: Path) -> None:
    from distributed import LocalCluster

    manifest = _manifest(phantom_dir, ["A"], "threads.csv")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        with pytest.raises(InputError, match="run more than one thread each") as info:
            run_cohort(manifest, tmp_path / "out", COARSE, progress=False,
                       scheduler=cluster.scheduler_address)
    assert "--nthreads 1" in str(info.value)
    assert not (tmp_path / "out" / "cases" / "A" / "status.json").exists()


def test_array_task_rows_and_index() -> None:
    assert list(array_task_cases(5, 0)) == [0]
    assert list(array_task_cases(5, 4)) == [4]
    assert list(array_task_cases(5, 1, per_task=2)) == [2, 3]
    assert list(array_task_cases(5, 2, per_task=2)) == [4]  # the last task runs what is left
    covered = [i for t in range(3) for i in array_task_cases(5, t, per_task=2)]
    assert covered == list(range(5))
    with pytest.raises(InputError, match=r"past the manifest's 5 cases \(2 per task: indices "
                       r"0-2\)"):
        array_task_cases(5, 3, per_task=2)
    with pytest.raises(InputError, match="cases per array task must be a positive integer"):
        array_task_cases(5, 0, per_task=0)
    assert array_task_index("7") == 7


def test_array_task_without_an_index_is_refused(phantom_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest(phantom_dir, ["A"], "noindex.csv")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID is not set"):
        run_array_task(manifest, tmp_path / "out", COARSE)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1-3")
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID '1-3' is not an integer"):
        run_array_task(manifest, tmp_path / "out", COARSE)
    with pytest.raises(InputError, match="array task 1 is past the manifest's 1 cases"):
        run_array_task(manifest, tmp_path / "out", COARSE, index=1)
    assert not (tmp_path / "out").exists()


def test_slurm_cluster_recipe_starts_one_thread_workers(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """The SLURMCluster of ``--cluster slurm``: one worker process per core, 1 thread each."""
    pytest.importorskip("dask_jobqueue")
    from osteofe.cohort_engines import slurm_cluster

    cluster = slurm_cluster(0, cores=4, memory="16GB", walltime="02:00:00", queue="compute",
                            scheduler_options={"dashboard_address": None})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p compute" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH -t 02:00:00" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script


# -- MPI ranks inside a case ---------------------------------------------------------------------


@pytest.mark.skipif(not (Path(sys.executable).parent / "mpiexec").exists(),
                    reason="needs the venv's mpiexec")
def test_a_case_on_two_mpi_ranks_matches_the_serial_case(phantom_dir: Path,
                                                         tmp_path: Path) -> None:
    manifest = _manifest(phantom_dir, ["A"], "mpi.csv")
    serial = run_array_task(manifest, tmp_path / "serial", COARSE, index=0)
    assert serial.n_failed == 0 and serial.statuses[0]["mpi_ranks"] == 1
    summary = run_cohort(manifest, tmp_path / "mpi", COARSE, workers=1, progress=False,
                         ranks_per_case=2)
    assert summary.n_computed == 1 and summary.n_failed == 0, summary.failures
    status = json.loads((tmp_path / "mpi" / "cases" / "A" / "status.json").read_text())
    result = json.loads((tmp_path / "mpi" / "cases" / "A" / "result.json").read_text())
    assert status["mpi_ranks"] == 2 and result["solver"]["mpi_ranks"] == 2
    assert status["engine"] == "dask"
    reference = serial.statuses[0]
    for key in ("load_case", "failure_mode", "critical_region"):
        assert status[key] == reference[key]
    # GAMG on 2 ranks is another preconditioner: equal to the solver tolerance (rtol 1e-8).
    assert status["failure_load_N"] == pytest.approx(reference["failure_load_N"], rel=1e-5)
    assert not list((tmp_path / "mpi" / "cases").glob("*.task.pkl"))
