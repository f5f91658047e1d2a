"""One cohort case on all ranks of ``mpiexec -n K`` (started by a cohort worker).

``python -m osteofe._cohort_mpi_case TASK.pkl``: every rank unpickles the task written by
:func:`osteofe.cohort._run_case_mpi` and runs :func:`osteofe.cohort._run_case` on
``MPI.COMM_WORLD``; rank 0 writes the case's ``status.json``, which the worker reads.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the pickled case; exit 0 when its status file was written (done or failed)."""
    from mpi4py import MPI

    from osteofe.cohort import _run_case

    task = pickle.loads(Path(argv[0]).read_bytes())
    status = _run_case(task, MPI.COMM_WORLD)
    return 0 if status.get("state") in ("done", "failed") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
