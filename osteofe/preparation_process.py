"""Run the preparation (read, mesh, map, landmarks, loads) in a child process.

Why: the preparation loads libraries that the solve never uses again (SimpleITK, gmsh,
VTK/pyvista, numba's compiler: ~190 MB resident that a process cannot give back), so under
MPI rank 0 would carry them through the whole FE solve that every other rank runs without
them (benchmarks/README, "Memory per MPI rank"). In a child they go when it exits. A crash
inside a meshing library (a signal) then also becomes an error message instead of a dead
rank.

The child is a fresh interpreter (``python -m osteofe.preparation_process IN OUT``, never
a fork of an MPI process); it is given the environment without the MPI launcher's
variables, so its own MPI initialisation is a singleton's, and it dies with its parent
(Linux ``PR_SET_PDEATHSIG``). The prepared model (or the exception, with its hint) comes
back pickled through a private temporary folder; progress comes back line by line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.atomic import atomic_write_bytes
from core.errors import OsteofeError
from osteofe.parallel import pickle_exception

if TYPE_CHECKING:
    from material.calibration import LinearCalibration
    from osteofe.config import Config
    from osteofe.pipeline import PreparedModel, StrengthRequest

__all__ = ["isolate_preparation", "prepare_in_child"]
#: Environment variables of MPI launchers (MPICH/Hydra, PMIx, Open MPI): a child that kept
#: them would try to join the parent's MPI job when it initialises MPI.
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_", "PRTE_")
_STAGE = "osteofe-stage\t"
_PR_SET_PDEATHSIG = 1


def isolate_preparation(choice: str, ranks: int) -> bool:
    """Whether to prepare in a child process, for ``solver.isolate_preparation``.

    Args:
        choice: One of :data:`osteofe.config.ISOLATION_CHOICES`.
        ranks: MPI ranks of the run.
    """
    return choice == "always" or (choice == "mpi" and ranks > 1)


def _child_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}


def prepare_in_child(request: StrengthRequest, config: Config,
                     calibration: LinearCalibration | None = None,
                     progress: Callable[[str], None] | None = None,
                     ranks: int = 1) -> PreparedModel:
    """:func:`osteofe.pipeline.prepare_model` in a fresh child interpreter.

    Same arguments, result and exceptions (re-raised here with their type, text and hint).

    Raises:
        OsteofeError: whatever the preparation raised, or when the child died without an
            answer (killed, out of memory, a crash in a native library).
    """
    step = progress or (lambda _name: None)
    with tempfile.TemporaryDirectory(prefix="osteofe-prepare-") as folder:
        given, answer = Path(folder) / "in.pkl", Path(folder) / "out.pkl"
        given.write_bytes(pickle.dumps((request, config, calibration, ranks),
                                       protocol=pickle.HIGHEST_PROTOCOL))
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "osteofe.preparation_process", str(given), str(answer)],
            stdout=subprocess.PIPE, text=True, env=_child_environment())
        try:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith(_STAGE):
                    step(line[len(_STAGE):].rstrip("\n"))
                else:
                    sys.stdout.write(line)
            code = child.wait()
        finally:
            if child.poll() is None:  # interrupted here (^C, an error): take the child along
                child.kill()
                child.wait()
        if code != 0 or not answer.is_file():
            how = (f"was killed by signal {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            raise OsteofeError(
                f"the preparation process (reading, meshing, material mapping) {how} "
                "without an answer",
                hint="out of memory or a crash in a meshing library: see the messages "
                "above; rerun with solver.isolate_preparation = \"never\" to see the "
                "traceback in this process")
        ok, value = pickle.loads(answer.read_bytes())
    if not ok:
        raise pickle.loads(value)
    prepared: PreparedModel = value
    prepared.timings_s["preparation_process"] = time.perf_counter() - start
    return prepared


def _peak_rss_mb() -> float | None:
    """This process' peak resident memory since exec (Linux VmHWM), MB."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
    return None if line is None else round(int(line.split()[1]) / 1024.0, 1)


def _die_with_parent() -> None:
    name = ctypes.util.find_library("c")
    if name is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(name).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def main(argv: list[str] | None = None) -> int:
    """The child: read the arguments, prepare, write the answer (result or exception)."""
    given, answer = (argv if argv is not None else sys.argv[1:])[:2]
    _die_with_parent()
    from osteofe.pipeline import prepare_model

    request, config, calibration, ranks = pickle.loads(Path(given).read_bytes())

    def report(stage: str) -> None:
        print(_STAGE + stage, flush=True)

    payload: tuple[bool, Any]
    try:
        prepared = prepare_model(request, config, calibration, report, ranks=ranks)
        payload = (True, replace(prepared, process_peak_rss_mb=_peak_rss_mb()))
    except Exception as exc:  # sent to the parent, which raises it
        payload = (False, pickle_exception(exc))
    atomic_write_bytes(answer, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
