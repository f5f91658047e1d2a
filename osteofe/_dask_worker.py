"""Code that runs inside the Dask workers of a cohort (imports :mod:`distributed`)."""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin


class DieWithClient(WorkerPlugin):
    """An embedded cluster's workers end when the cohort process ends.

    Installed on every worker, restarted ones included: PDEATHSIG and the parent
    watchdog of :func:`osteofe.cohort._worker_init`, with the cohort process as parent.

    Args:
        client_pid: Process id of the cohort process (the worker processes' parent).
    """

    name = "osteofe-die-with-client"

    def __init__(self, client_pid: int) -> None:
        self.client_pid = client_pid

    def setup(self, worker: Any) -> None:
        """Install PDEATHSIG and the parent watchdog in this worker process."""
        from osteofe.cohort import _worker_init

        _worker_init(self.client_pid)


def run_case(task: Any) -> dict[str, Any]:
    """Dask task: :func:`osteofe.cohort._run_case` (imported in the worker)."""
    from dataclasses import replace

    from osteofe.cohort import _run_case

    return _run_case(replace(task, engine="dask"))
