"""Where a cohort's cases run: a Dask cluster (embedded, joined or on SLURM) or a SLURM array.

:func:`osteofe.cohort.run_cohort` plans the run (manifest, fingerprints, finished cases) and
hands the cases left to one *engine*. Every engine calls the same worker function
(:func:`osteofe.cohort._run_case`), which writes the case's outputs and its
``status.json``, so the status files and fingerprints are one format whatever ran them:
a run started with one engine can be resumed with another, and a SLURM array can fill in
the cases an interactive run did not reach.

=====================  ==================================================================
engine                 what runs the cases
=====================  ==================================================================
``dask`` (default)     an embedded :class:`distributed.LocalCluster`: ``workers`` worker
                       processes (spawned), one thread each, started for the run and
                       stopped with it; no set-up
``dask`` + scheduler   an existing cluster (``--scheduler tcp://host:8786``): its workers
                       must import this ``osteofe`` and see the manifest's files (shared
                       file system), one thread each (``dask worker --nthreads 1``)
``dask`` + ``slurm``   a :class:`dask_jobqueue.SLURMCluster` started for the run: one
                       SLURM job per worker, its options from dask's configuration
                       (``~/.config/dask/jobqueue.yaml``; see the README's recipe)
``pool``               the process pool of :func:`osteofe.cohort._execute` (kept for the
                       comparison benchmark ``benchmarks/bench_cohort_engines.py``)
array task             :func:`run_array_task`: this process runs the manifest rows of
                       one SLURM array index (``SLURM_ARRAY_TASK_ID``), for sites without
                       Dask; a final ordinary run collects the tables
=====================  ==================================================================

**Worker deaths.** A case whose worker process dies (segfault, out of memory, killed) is
submitted again, to whichever worker is free (the embedded cluster's nanny replaces the
dead process), at most ``max_tries`` times in all; then it is recorded as failed
(``error_type`` ``WorkerDied``). Unlike the process pool, a death costs only the case on
that worker: the other workers' cases go on. On the embedded cluster the scheduler's own
retries are switched off (``distributed.scheduler.allowed-failures = 0``) so that the
count is exactly ``max_tries``, and each worker holds one case at a time
(``distributed.scheduler.worker-saturation = 1.0``; by default Dask sends a second task
ahead, which a death would count against too). A joined cluster keeps its own settings:
set both in its scheduler's configuration for the same behaviour.

**No orphans.** The embedded cluster's worker processes are children of the cohort
process; each asks the kernel to kill it when that process dies (``PR_SET_PDEATHSIG``) and
watches it from a thread (:func:`osteofe.cohort._worker_init`, installed by a worker
plugin on every worker, restarted ones included). SIGTERM/Ctrl-C close the cluster; the
finished cases are kept. Workers of a joined cluster belong to that cluster and are left
running.

**MPI inside a case.** By default each worker solves its case on ``MPI.COMM_SELF``. With
``ranks_per_case=K`` (``--ranks-per-case K``) a worker runs its case as an ``mpiexec -n K``
subprocess (:func:`osteofe.cohort._run_case_mpi`; launcher ``$OSTEOFE_MPIEXEC``, e.g.
``srun --mpi=pmi2`` inside a SLURM allocation), so give the cluster ``cores / K`` workers.
Without Dask, a SLURM array with one MPI job per index does the same
(``srun -n K osteofe cohort run M --out D --array-task``): the array task then solves its
case on all ``K`` ranks (see :func:`osteofe.cohort.run_array_task`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshing.errors import InputError

__all__ = [
    "ENGINES",
    "ArrayTaskSummary",
    "array_task_cases",
    "execute_dask",
    "slurm_cluster",
]

#: Names of the engines :func:`osteofe.cohort.run_cohort` accepts.
ENGINES: tuple[str, ...] = ("dask", "pool")
#: Default number of tries of a case whose worker dies (the first run included).
DEFAULT_MAX_TRIES = 2
#: How long to wait for an idle worker when no case is in flight (a restarted worker
#: registering), s; then the case is left to the scheduler, which holds it for a worker.
_IDLE_WORKER_WAIT_S = 60.0
#: Environment variable holding the index of a SLURM array task.
ARRAY_TASK_VARIABLE = "SLURM_ARRAY_TASK_ID"


def _died_status(task: Any, tries: int, detail: str) -> dict[str, Any]:
    return {"case_id": task.case.case_id, "state": "failed", "fingerprint": task.fingerprint,
            "error_type": "WorkerDied",
            "error": f"the worker process died while analysing this case {tries} times "
                     f"(crash or out of memory; last: {detail})",
            "tries": tries}


def _check_one_thread(client: Any, where: str) -> int:
    """The cluster's worker count; refuse workers with more than one thread."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threaded = sorted(w["id"] if "id" in w else a for a, w in workers.items()
                      if int(w.get("nthreads", 1)) != 1)
    if threaded:
        raise InputError(f"the Dask workers of {where} run more than one thread each "
                         f"({threaded[0]} and {len(threaded) - 1} more)",
                         "start them with one thread per process (dask worker --nthreads 1, "
                         "SLURMCluster(cores=K, processes=K)): DOLFINx and PETSc cannot "
                         "run two cases in one process")
    return len(workers)


def slurm_cluster(jobs: int, **options: Any) -> Any:
    """A :class:`dask_jobqueue.SLURMCluster` of one-thread workers, scaled to ``jobs`` jobs.

    The job options (queue, account, memory, walltime, modules to load in
    ``job_script_prologue``) come from dask's configuration
    (``~/.config/dask/jobqueue.yaml``, section ``jobqueue.slurm``) unless given here.
    One worker process of one thread per job core (``processes = cores``), so every
    worker runs one case at a time.

    Args:
        jobs: SLURM jobs to request.
        **options: Passed to ``SLURMCluster`` (e.g. ``cores=4, memory="16GB",
            walltime="04:00:00", queue="compute"``).

    Returns:
        The cluster (close it after the run).
    """
    from dask_jobqueue import SLURMCluster

    cores = int(options.pop("cores", None) or _config_int("jobqueue.slurm.cores", 1))
    options.setdefault("processes", cores)
    options.setdefault("memory", _config_str("jobqueue.slurm.memory", f"{2 * cores}GB"))
    cluster = SLURMCluster(cores=cores, **options)
    cluster.scale(jobs=jobs)
    return cluster


def _config_int(key: str, default: int) -> int:
    import dask

    value = dask.config.get(key, default=None)
    return default if value is None else int(value)


def _config_str(key: str, default: str) -> str:
    import dask

    value = dask.config.get(key, default=None)
    return default if value is None else str(value)


def execute_dask(tasks: Sequence[Any], workers: int, bar: Any,
                 statuses: dict[str, dict[str, Any]], *, scheduler: str | None = None,
                 cluster: str = "local", max_tries: int = DEFAULT_MAX_TRIES,
                 env: Mapping[str, str] | None = None) -> int:
    """Run ``tasks`` (:class:`osteofe.cohort._Task`) on a Dask cluster; fill ``statuses``.

    Args:
        tasks: The cases to compute.
        workers: Worker processes of an embedded cluster (``cluster="local"``), or SLURM
            jobs (``cluster="slurm"``); ignored with ``scheduler``.
        bar: A tqdm progress bar.
        statuses: Filled with every case's status (also written to its ``status.json``).
        scheduler: Address of an existing scheduler (``tcp://host:8786``) to join.
        cluster: ``"local"`` (embedded LocalCluster) or ``"slurm"`` (dask-jobqueue).
        max_tries: Tries of a case whose worker process dies, the first included.
        env: Environment of an embedded cluster's worker processes (thread limits).

    Returns:
        The number of workers the cluster had when the cases were submitted.

    Raises:
        InputError: If a joined cluster's workers run more than one thread each, or it
            has no workers within 60 s.
    """
    import dask
    from distributed import Client, KilledWorker, LocalCluster, as_completed

    from osteofe._dask_worker import DieWithClient, run_case
    from osteofe.outputs import write_json

    if max_tries < 1:
        raise InputError(f"max_tries must be at least 1, got {max_tries}", "use e.g. 2")
    own: Any = None
    # The thread limits must be set before the worker interpreter starts.
    spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **(env or {})}
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 makes glibc hand every freed block over
    # 64 kB back at once: the analyses' large numpy/PETSc arrays then cost ~10 % more CPU
    # than in the pool's workers (benchmarks/README, cohort engines). Workers keep glibc's
    # default, as the pool's do; the pipeline trims where it matters (release_freed_memory).
    spawn_env.pop("MALLOC_TRIM_THRESHOLD_", None)
    # One case per worker at a time (worker-saturation 1.0): the default 1.1 sends a second
    # task ahead to each worker, and a worker's death would then count against the case
    # waiting there too.
    settings = {"distributed.scheduler.allowed-failures": 0,
                "distributed.scheduler.worker-saturation": 1.0,
                "distributed.nanny.pre-spawn-environ": spawn_env,
                "distributed.worker.daemon": False,  # a case may start subprocesses
                # Each case is one long task: the per-process housekeeping of an embedded
                # cluster (profiler sampling every 10 ms with the GIL, 20 ms ticks, work
                # stealing, 0.1 s memory polls) only costs CPU that the cases need.
                "distributed.worker.profile.enabled": False,
                "distributed.admin.tick.interval": "1s",
                "distributed.admin.system-monitor.interval": "5s",
                "distributed.scheduler.work-stealing": False,
                "distributed.worker.memory.monitor-interval": "1s"}
    with dask.config.set(settings):
        if scheduler is not None:
            client = Client(scheduler, timeout="30s")
            where = f"the cluster at {scheduler}"
        elif cluster == "slurm":
            own = slurm_cluster(workers)
            client = Client(own)
            where = "the SLURM cluster"
        elif cluster == "local":
            own = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR,
                               env=dict(env or {}))
            client = Client(own)
            client.register_plugin(DieWithClient(os.getpid()))
            where = "the embedded cluster"
        else:
            raise InputError(f"unknown cluster {cluster!r}", "use 'local' or 'slurm'")
    try:
        if scheduler is not None or cluster == "slurm":
            try:
                client.wait_for_workers(1, timeout=60 if scheduler is not None else 600)
            except TimeoutError:
                raise InputError(f"{where} has no workers", "start workers (dask worker "
                                 f"{scheduler or ''} --nthreads 1) or check the SLURM "
                                 "queue") from None
        n_workers = _check_one_thread(client, where)
        tries: dict[str, int] = {}
        owner: dict[Any, Any] = {}
        pending = list(reversed(tasks))
        running = as_completed()

        def idle_workers() -> list[str]:
            # Asked of the scheduler itself: its running workers with no task processing.
            # (A worker that has just registered after a restart is not always eligible yet:
            # left to choose, the scheduler was seen to put two cases on the other worker,
            # so that one case's crash was charged to both; tests/test_cohort_engines.py.)
            def idle(dask_scheduler: Any) -> list[str]:
                return sorted(ws.address for ws in dask_scheduler.running
                              if not ws.processing)

            return list(client.run_on_scheduler(idle))

        def fill() -> None:
            # One case per idle worker, sent to that worker: a case waiting on a worker that
            # dies would be counted as involved in the death.
            if not pending:
                return
            free = idle_workers()
            deadline = time.monotonic() + _IDLE_WORKER_WAIT_S
            while not free and not owner and time.monotonic() < deadline:
                time.sleep(0.2)  # nothing in flight: a restarted worker is registering
                free = idle_workers()
            targets: list[str | None] = list(free) if free or owner else [None]
            while pending and targets:
                worker = targets.pop(0)
                task = pending.pop()
                case_id = task.case.case_id
                tries[case_id] = tries.get(case_id, 0) + 1
                # Loose restriction: should that worker die first, any other may take it.
                future = client.submit(run_case, task, pure=False,
                                       key=("osteofe-case", case_id, tries[case_id]),
                                       workers=None if worker is None else [worker],
                                       allow_other_workers=worker is not None)
                owner[future.key] = task
                running.add(future)

        fill()
        failed = sum(1 for s in statuses.values() if s.get("state") == "failed")
        for future in running:
            task = owner.pop(future.key)
            case_id = task.case.case_id
            try:
                status = future.result()
            except KilledWorker as exc:
                if tries[case_id] < max_tries:
                    pending.append(task)  # next, on whichever worker is free
                    fill()
                    continue
                status = _died_status(task, tries[case_id], type(exc).__name__)
                task.case_dir.mkdir(parents=True, exist_ok=True)
                write_json(task.case_dir / "status.json", status)
            except Exception as exc:  # the worker function itself broke (e.g. unpicklable)
                status = {"case_id": case_id, "state": "failed",
                          "fingerprint": task.fingerprint, "error_type": type(exc).__name__,
                          "error": f"internal error: {type(exc).__name__}: {exc}"}
                task.case_dir.mkdir(parents=True, exist_ok=True)
                write_json(task.case_dir / "status.json", status)
            finally:
                future.release()
            if tries[case_id] > 1:
                status = {**status, "tries": tries[case_id]}
            statuses[case_id] = status
            failed += status.get("state") == "failed"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
            fill()
        return n_workers
    finally:
        client.close(timeout=10)
        if own is not None:
            own.close(timeout=10)


# --------------------------------------------------------------------------------------------
# SLURM job arrays.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayTaskSummary:
    """What one SLURM array task did.

    Attributes:
        index: The array index.
        case_ids: The manifest rows of that index.
        statuses: Their status records (state ``done`` or ``failed``), in manifest order.
        n_resumed: How many were already finished with the same fingerprint.
        summary_json: This record as JSON (``array/task-<index>.json`` in the output).
    """

    index: int
    case_ids: tuple[str, ...]
    statuses: tuple[Mapping[str, Any], ...]
    n_resumed: int
    summary_json: Path

    @property
    def n_failed(self) -> int:
        """Cases of this task that failed."""
        return sum(1 for s in self.statuses if s.get("state") != "done")


def array_task_index(value: int | str | None = None) -> int:
    """The array index: ``value`` or ``$SLURM_ARRAY_TASK_ID``.

    Args:
        value: The index (an integer or its text), or ``None`` for the variable.

    Returns:
        The index, >= 0.

    Raises:
        InputError: If neither is given or the index is not a non-negative integer.
    """
    index: Any = value
    where = "array task index"
    if value is None:
        index = os.environ.get(ARRAY_TASK_VARIABLE)
        where = ARRAY_TASK_VARIABLE
        if index is None:
            raise InputError(f"--array-task without an index and {ARRAY_TASK_VARIABLE} is "
                             "not set", "run it as a SLURM array job (sbatch --array=0-N) "
                             "or give the index (--array-task 3)")
    if isinstance(index, str):
        try:
            index = int(index.strip())
        except ValueError:
            raise InputError(f"{where} {index!r} is not an integer",
                             "use a plain array (sbatch --array=0-N)") from None
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"array task index must be a non-negative integer, got {index!r}",
                         "number the array from 0 (sbatch --array=0-N)")
    return index


def array_task_cases(n_cases: int, index: int, per_task: int = 1) -> range:
    """Manifest row numbers (0-based, header excluded) that array task ``index`` runs.

    Task ``i`` runs rows ``i * per_task`` to ``(i + 1) * per_task - 1``, so an array of
    ``ceil(n_cases / per_task)`` tasks (``sbatch --array=0-<that - 1>``) covers the manifest.

    Raises:
        InputError: If ``per_task`` < 1 or the index is past the manifest's end.
    """
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
        raise InputError(f"cases per array task must be a positive integer, got {per_task!r}",
                         "use e.g. --cases-per-task 1")
    first = index * per_task
    if first >= n_cases:
        n_tasks = -(-n_cases // per_task)
        raise InputError(f"array task {index} is past the manifest's {n_cases} cases "
                         f"({per_task} per task: indices 0-{n_tasks - 1})",
                         f"submit the array as sbatch --array=0-{n_tasks - 1}")
    return range(first, min(first + per_task, n_cases))
