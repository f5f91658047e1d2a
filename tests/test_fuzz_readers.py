"""Fuzzing the readers: every input file either reads into a valid record or raises OsteofeError.

Readers covered (one name each, used as the prefix of the corpus file names):

========  ==============================================  =======================================
reader    function                                        seeds in ``fuzz_corpus/seeds``
========  ==============================================  =======================================
ct        :func:`meshing.imaging.read_ct`                 NIfTI (.nii, .nii.gz), NRRD, MHA,
                                                          a 3-slice DICOM folder
labels    :func:`meshing.imaging.read_labels`             NIfTI, a 3D Slicer .seg.nrrd (names),
                                                          a two-layer .seg.nrrd
mesh      :func:`meshing.meshio_io.read_mesh`             .vtu (ASCII and zlib), .msh (4.1 ASCII,
                                                          2.2 ASCII), .inp
deck      :func:`fea.abaqus.read_inp`                     an Abaqus deck (C3D4, sets, step)
cohort    :func:`risk.cohort.read_cohort`                 a cohort CSV with Mirels columns
model     :func:`risk.calibration.load_model`             StrengthRiskModel and MirelsBaseline JSON
config    :func:`osteofe.config.load_config`              the default TOML and a sparse one
========  ==============================================  =======================================

The property, for every mutated input: the reader returns a record that passes the checks of
its ``_*_problems`` function (right shapes and dtypes, finite numbers, indices in range, a
model that predicts) or raises an :class:`~meshing.errors.OsteofeError`. Anything else -
another exception type, a crash of the interpreter, a reader still running after ``HANG_S``
seconds, a record that fails its checks - is a bug.

Readers run in a worker subprocess (``python tests/test_fuzz_readers.py --worker``) with an
address-space limit, so a native crash (SimpleITK, GDCM, gmsh), a runaway allocation or a hang
cannot take pytest down; the worker is restarted after each such event.

Mutations (hypothesis, derandomized, no example database): truncation at any offset, byte
flips, inserted and overwritten bytes; header-field corruption (NIfTI dims, datatype, bitpix,
pixdim, vox_offset, scl, qform/sform, magic; NRRD/MHA header values; DICOM element values and
lengths); line-level edits and random text for the text formats; value replacement in the JSON
and TOML trees. ``OSTEOFE_FUZZ_EXAMPLES`` sets the examples per seed of ``test_fuzz_reader``
(default 12, about half a minute for all seeds); ``test_fuzz_reader_long`` (marked ``slow``)
draws :data:`LONG_EXAMPLES` others per seed. ``OSTEOFE_FUZZ_SAVE=<folder>`` turns a test run
into a campaign: failing inputs are saved there and not asserted, so that exploration goes
on; ``OSTEOFE_FUZZ_RANDOM=1`` draws new examples instead of the derandomized ones.

``fuzz_corpus/crashes`` keeps minimal reproducers of the bugs fuzzing found, all fixed:
:data:`REGRESSIONS` names the bug of each and the refusal (or clean read) it gets now, and
``test_corpus_replay`` checks exactly that. A new finding is fixed in the reader, its
minimal input added to ``crashes`` and to :data:`REGRESSIONS`; findings are not parked as
expected failures. ``python tests/test_fuzz_readers.py --write-seeds`` rewrites the seeds.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
CORPUS = HERE / "fuzz_corpus"
SEEDS = CORPUS / "seeds"
CRASHES = CORPUS / "crashes"

#: Seconds a reader may take on one tiny input before it counts as hung (they take < 1 s).
HANG_S = 60.0
#: Seconds the worker may take to start (imports gmsh, SimpleITK, meshio).
START_S = 180.0
#: Address-space limit of the worker above what it holds after its imports.
WORKER_HEADROOM_BYTES = 3 * 1024**3
#: Inputs a worker reads before it is replaced (native libraries leak a little per file, and
#: a worker near its address-space limit would fail for reasons of its own).
WORKER_READS = 100

EXAMPLES = int(os.environ.get("OSTEOFE_FUZZ_EXAMPLES", "12"))
SAVE_DIR = os.environ.get("OSTEOFE_FUZZ_SAVE", "")

#: Examples per seed of the ``slow`` long run.
LONG_EXAMPLES = 150

FUZZ = settings(
    derandomize=not os.environ.get("OSTEOFE_FUZZ_RANDOM"),
    database=None,
    deadline=None,
    max_examples=EXAMPLES,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
FUZZ_LONG = settings(FUZZ, max_examples=LONG_EXAMPLES)

#: Reproducers of bugs found by fuzzing (or derived from a finding), all fixed, kept as
#: regression inputs: file -> (what went wrong, what the reader answers now). The answer is a
#: piece of the refusal's message (the file must be refused with an OsteofeError saying so),
#: or None (the file is read into a valid record).
REGRESSIONS: dict[str, tuple[str, str | None]] = {
    # osteofe/config.py
    "config--section-not-a-table.toml": (
        "TypeError: set(data) of a section that is not a table", "not a table of options"),
    "config--force-not-a-number.toml": (
        "ValueError: float('a') in LoadConfig.__post_init__",
        "load.custom_forces_n = [['a', 0, 0]] is invalid"),
    "config--nested-too-deep.toml": (
        "RecursionError in tomllib", "nested too deeply"),
    "config--petsc-options-not-a-table.toml": (
        "accepted; the solver fails much later on dict(3)", "solver.petsc_options = 3"),
    "config--size-is-a-boolean.toml": (
        "mesh.size_mm = true accepted as a 1 mm element size", "mesh.size_mm = True"),
    "config--law-unknown.toml": (
        "config --check passed; the run failed after meshing", "material.law = 'nosuchlaw'"),
    "config--chain-unknown.toml": (
        "config --check passed; the run failed after meshing",
        "material.chain = 'nosuchchain'"),
    "config--law-not-a-modulus.toml": (
        "a yield-stress law accepted as the modulus law until the material stage",
        "not Young's modulus"),
    "config--nonlinear-case-not-computed.toml": (
        "accepted; the run failed after the FE solve ('not a computed case')",
        "nonlinear.cases = 'fall'"),
    # meshing/imaging.py, meshing/types.py
    "ct--nifti-vox-offset-inf.nii": (
        "OverflowError: int(inf) of vox_offset in _nifti_layout", "vox_offset"),
    "labels--nifti-vox-offset-nan.nii.gz": (
        "ValueError: int(nan) of vox_offset in _nifti_layout", "vox_offset"),
    "ct--nifti-pixdim-zero.nii": (
        "read with ITK's made-up 1 mm voxels (the sform says 0.8 mm)", "pixdim[1]"),
    "ct--nifti-sform-offset-nan.nii": (
        "read with the origin (nan, 5, 30)", "origin must be finite"),
    "ct--mha-offset-nan.mha": (
        "MetaIO silently read 'Offset = nan 5 30' as the origin (0, 0, 0)", "Offset = "),
    "ct--mha-ndims-negative.mha": (
        "SimpleITK's MetaIO killed the interpreter (SIGSEGV/SIGABRT) on 'NDims = -1'",
        "NDims = '-1'"),
    "ct--nrrd-header-key-not-utf8.nrrd": (
        "TypeError: GetMetaData(key) of a header key that is not UTF-8", None),
    "ct--mha-header-key-not-utf8.mha": (
        "TypeError: GetMetaData(key) of a header key that is not UTF-8", None),
    # fea/abaqus.py
    "deck--generate-without-data.inp": (
        "ValueError: zip(strict=True) of *ELSET, GENERATE without a data line",
        "GENERATE without a data line"),
    "deck--generate-range-huge.inp": (
        "MemoryError: *ELSET, GENERATE 11, 4294967297 allocated 32 GB (test_fuzz_reader)",
        "more than the deck defines"),
    "deck--coordinate-overflows.inp": (
        "a -1e308 coordinate overflowed volumes and forces to inf/NaN; NaN Jacobians passed",
        "beyond the 1e+06 mm accepted"),
    "deck--boundary-dof-infinite.inp": (
        "OverflowError: int(inf) of a *BOUNDARY dof", "*BOUNDARY dofs 1, inf are not valid"),
    "deck--cload-nan.inp": ("NaN nodal forces from a NaN *CLOAD", "*CLOAD magnitude nan"),
    "deck--pressure-overflows.inp": (
        "inf nodal forces from a 1e308 MPa *DLOAD", "forces that overflow"),
    "deck--set-id-overflows.inp": (
        "OverflowError: a 20-digit id in an *ELSET", "is outside 1.."),
    "deck--cload-node-id-overflows.inp": (
        "OverflowError: a 20-digit node id in a *CLOAD", "is outside 1.."),
    "deck--density-negative.inp": (
        "a negative *DENSITY accepted (noted as without effect)",
        "*DENSITY: mass density -1.9e-09 is negative"),
    "deck--section-element-data.inp": (
        "an element line under *SOLID SECTION dropped silently",
        "*SOLID SECTION data line '17, 1, 5, 7, 8' is not section data"),
    "deck--section-extra-lines.inp": (
        "extra data lines under *SOLID SECTION dropped silently", "has 2 data lines"),
    "deck--include-parent-path.inp": (
        "*INCLUDE, INPUT=../../etc/passwd read, its lines quoted in the error",
        "points outside the deck's folder"),
    "deck--include-absolute-path.inp": (
        "*INCLUDE, INPUT=/etc/passwd read, its lines quoted in the error",
        "INPUT=/etc/passwd points outside the deck's folder"),
    # meshing/meshio_io.py, meshing/msh.py
    "mesh--inp-element-card-repeated.inp": (
        "ValueError: an empty (0,) cell block of an *ELEMENT card without data", None),
    "mesh--inp-element-card-without-data.inp": (
        "ValueError: an empty (0,) cell block of an *ELEMENT card without data",
        "contains no tetrahedra"),
    "mesh--vtu-cell-node-out-of-range.vtu": (
        "ValueError from TetMesh: cells index missing nodes",
        "reference nodes that do not exist"),
    "mesh--vtu-coordinate-overflows.vtu": (
        "a 1e308 coordinate read (volumes overflow)", "beyond the 1e+06 mm accepted"),
    "mesh--msh-coordinate-infinite.msh": (
        "an inf coordinate read (NaN volumes are not 'degenerate')", "NaN or infinite"),
    "mesh--inp-coordinate-nan.inp": (
        "a NaN coordinate read (NaN volumes are not 'degenerate')", "NaN or infinite"),
    "mesh--msh-nodes-header-missing.msh": (
        "gmsh killed the interpreter (SIGSEGV) on a $Nodes section without its header line",
        "gmsh failed reading"),
    # risk/calibration.py
    "model--not-utf8.json": ("UnicodeDecodeError in load_model", "not UTF-8"),
    "model--nested-too-deep.json": ("RecursionError in json.loads", "nested too deeply"),
    "model--n-iter-infinite.json": ("OverflowError: int(inf) of n_iter", "n_iter is inf"),
    "model--mirels-table-not-an-object.json": (
        "AttributeError: .items() of probabilities_table = 3", "not an object"),
    "model--mirels-param-not-an-object.json": (
        "AttributeError: .items() of params.probabilities = 0.5", "not an object"),
    "model--intercept-nan.json": ("a NaN intercept loaded", "intercept is nan"),
    "model--mean-wrong-length.json": ("a mean of the wrong length loaded", "1 scaler.mean values"),
    "model--scale-zero.json": ("a zero scale loaded", "scale holds a value <= 0"),
    "model--mirels-table-incomplete.json": (
        "a Mirels table without the total 4 loaded (KeyError when predicting)",
        "lacks the total(s) [4]"),
    "model--mirels-probability-above-one.json": (
        "a Mirels probability of 1e308 loaded", "bad entry '10'"),
    "model--coefficient-overflows.json": (
        "a coefficient of 1e308 loaded: p = 1.0 with a numpy overflow warning, after the solve",
        "log-odds reach inf"),
}

# ---------------------------------------------------------------------------------------------
# corpus file names
# ---------------------------------------------------------------------------------------------


def reader_of(path: Path) -> str:
    """The reader a corpus entry is meant for: the part of its name before ``--``."""
    return path.name.split("--", 1)[0]


def corpus_entries(folder: Path) -> list[Path]:
    """Files and DICOM folders of a corpus folder (hidden names and READMEs skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if "--" in p.name and not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# the worker (runs in a subprocess; imports the readers only there)
# ---------------------------------------------------------------------------------------------


def _finite(array: Any) -> bool:
    import numpy as np

    arr = np.asarray(array)
    return bool(arr.dtype.kind not in "fc" or np.all(np.isfinite(arr)))


def _grid_problems(grid: Any) -> list[str]:
    import numpy as np

    problems = []
    if len(grid.shape) != 3 or min(grid.shape) < 1:
        problems.append(f"bad grid shape: {grid.shape}")
    if not (_finite(grid.spacing) and np.all(np.asarray(grid.spacing) > 0)):
        problems.append(f"bad spacing: {grid.spacing}")
    if not _finite(grid.origin):
        problems.append(f"non-finite origin: {grid.origin}")
    direction = np.asarray(grid.direction)
    if not _finite(direction) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        problems.append(f"bad direction: {direction.tolist()}")
    return problems


def _image_problems(image: Any, kind: str, array: str, dtype: Any) -> tuple[list[str], bool]:
    """Problems of an image a reader returned, and whether its values may be checked further.

    Checks its type (``kind``, a :mod:`meshing.types` class name), its grid and the dtype and
    shape of its ``array`` field.
    """
    import meshing.types

    if not isinstance(image, getattr(meshing.types, kind)):
        return [f"not a {kind}: {type(image).__name__}"], False
    problems = _grid_problems(image.grid)
    values = getattr(image, array)
    if values.dtype != dtype or values.shape != image.grid.shape or values.ndim != 3:
        what = {"hu": "HU", "labels": "label"}[array]
        problems.append(f"bad {what} array: {values.dtype} {values.shape} on grid "
                        f"{image.grid.shape}")
        return problems, False
    return problems, True


def _ct_problems(ct: Any) -> list[str]:
    import numpy as np

    problems, ok = _image_problems(ct, "CTVolume", "hu", np.float32)
    if ok and not _finite(ct.hu):
        problems.append(f"non-finite HU: {int((~np.isfinite(ct.hu)).sum())}")
    return problems


def _labels_problems(labels: Any) -> list[str]:
    import numpy as np

    from meshing.types import LabelMap

    problems, ok = _image_problems(labels, "LabelMap", "labels", np.int32)
    if not isinstance(labels, LabelMap):
        return problems
    if ok and labels.labels.size and int(labels.labels.min()) < 0:
        problems.append(f"negative label: {int(labels.labels.min())}")
    if not all(isinstance(k, int) and isinstance(v, str) for k, v in labels.names.items()):
        problems.append(f"bad names: {labels.names!r}")
    return problems


def _tet_problems(mesh: Any) -> list[str]:
    import numpy as np

    from meshing.types import TetMesh

    if not isinstance(mesh, TetMesh):
        return [f"not a TetMesh: {type(mesh).__name__}"]
    problems = []
    if mesh.num_cells == 0:
        problems.append("no cells")
    if not _finite(mesh.points):
        problems.append("non-finite node coordinates")
    elif mesh.num_cells:
        if mesh.cells.min() < 0 or mesh.cells.max() >= mesh.num_nodes:
            problems.append("cells index missing nodes")
        else:
            volumes = mesh.cell_volumes()
            if not np.all(np.isfinite(volumes)) or np.any(volumes <= 0.0):
                problems.append(f"cells with volume <= 0 or NaN: {int(np.sum(~(volumes > 0)))}")
    return problems


def _mesh_problems(result: Any) -> list[str]:
    mesh, arrays = result
    problems = _tet_problems(mesh)
    for name, values in arrays.items():
        if getattr(values, "shape", (None,))[0] != mesh.num_cells:
            problems.append(f"cell array of the wrong length: {name!r} {values.shape}")
    return problems


def _deck_problems(model: Any) -> list[str]:
    import numpy as np

    problems = _tet_problems(model.mesh)
    n, m = model.mesh.num_nodes, model.mesh.num_cells
    if model.node_ids.shape != (n,) or np.unique(model.node_ids).size != n:
        problems.append("node ids not one per node / not unique")
    if model.element_ids.shape != (m,) or model.material_index.shape != (m,):
        problems.append("element ids or material index not one per cell")
    elif m and (model.material_index.min() < 0
                or model.material_index.max() >= len(model.materials)):
        problems.append("material index out of range")
    for mat in model.materials:
        if not (math.isfinite(mat.youngs_modulus_mpa) and mat.youngs_modulus_mpa > 0
                and -1.0 < mat.poisson_ratio < 0.5):
            problems.append(f"implausible material: {mat}")
    if model.nodal_forces_n.shape != (n, 3) or not _finite(model.nodal_forces_n):
        problems.append("nodal forces not (n, 3) finite")
    if not _finite(model.bc_values):
        problems.append("non-finite prescribed displacement")
    for arr in (model.bc_nodes, *model.node_sets.values(), *model.bc_sets.values()):
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            problems.append("a node set or condition indexes missing nodes")
            break
    for arr in model.element_sets.values():
        if arr.size and (arr.min() < 0 or arr.max() >= m):
            problems.append("an element set indexes missing cells")
            break
    if model.bc_components.size and (model.bc_components.min() < 0
                                     or model.bc_components.max() > 2):
        problems.append("boundary component outside 0..2")
    return problems


def _cohort_problems(cohort: Any) -> list[str]:
    import numpy as np

    n = len(cohort)
    problems = []
    columns = {"patient_id": cohort.patient_id, "side": cohort.side,
               "body_mass_kg": cohort.body_mass_kg, "failure_load_N": cohort.failure_load_N,
               "failure_load_BW": cohort.failure_load_BW, "fractured": cohort.fractured,
               "follow_up_months": cohort.follow_up_months}
    for name, values in columns.items():
        if np.asarray(values).shape != (n,):
            problems.append(f"column of the wrong length: {name} "
                            f"{np.asarray(values).shape} for {n} rows")
        elif not _finite(values):
            problems.append(f"non-finite column: {name}")
    if n and not set(np.asarray(cohort.fractured).tolist()) <= {0, 1}:
        problems.append("fractured outside 0/1")
    if n and np.any(np.asarray(cohort.failure_load_N) <= 0):
        problems.append("non-positive failure load")
    for name in ("aci_mm", "ctra_reduction"):
        values = getattr(cohort, name)
        if values is not None and np.asarray(values).shape != (n,):
            problems.append(f"column of the wrong length: {name} {np.asarray(values).shape}")
    if cohort.mirels is not None and len(cohort.mirels) != n:
        problems.append("one Mirels score per row expected")
    return problems


def _model_problems(model: Any) -> list[str]:
    import numpy as np

    from meshing.errors import OsteofeError

    problems = []
    for name in ("coef_", "intercept_", "mean_", "scale_"):
        if hasattr(model, name) and not _finite(getattr(model, name)):
            problems.append(f"non-finite {name}: {getattr(model, name)!r}")
    width = int(getattr(model, "n_features_in_", 1) or 1)
    for name in ("coef_", "mean_", "scale_"):
        if hasattr(model, name) and np.shape(getattr(model, name)) != (width,):
            problems.append(f"{name} of the wrong shape: {np.shape(getattr(model, name))} for "
                            f"{width} features")
    if hasattr(model, "scale_") and np.any(np.asarray(model.scale_) <= 0):
        problems.append(f"non-positive scale_: {model.scale_!r}")
    table = getattr(model, "probabilities_", None)
    if table is not None and not all(0.0 <= p <= 1.0 for p in table.values()):
        problems.append(f"probability table outside 0..1: {table!r}")
    if type(model).__name__ == "MirelsBaseline":
        probe: Any = np.array([4.0, 9.0, 12.0])
    else:
        probe = np.zeros((3, width))
    try:
        proba = np.asarray(model.predict_proba(probe))
    except OsteofeError:
        return problems  # a refused prediction is an honest answer
    except Exception as exc:
        return [*problems, f"predict_proba raised {type(exc).__name__}: {exc}"]
    if proba.shape != (3, 2) or not _finite(proba) or np.any(proba < 0) or np.any(proba > 1):
        problems.append(f"bad probabilities: {proba.tolist()}")
    return problems


def _config_problems(config: Any) -> list[str]:
    from osteofe.config import Config

    return [] if isinstance(config, Config) else [f"returned {type(config).__name__}"]


def _readers() -> dict[str, tuple[Callable[[str], Any], Callable[[Any], list[str]]]]:
    """Reader name -> (read function of a path, checks of its result). Worker side only."""
    from fea.abaqus import read_inp
    from meshing.imaging import read_ct, read_labels
    from meshing.meshio_io import read_mesh
    from osteofe.config import load_config
    from risk.calibration import load_model
    from risk.cohort import read_cohort

    return {
        "ct": (read_ct, _ct_problems),
        "labels": (read_labels, _labels_problems),
        "mesh": (read_mesh, _mesh_problems),
        "deck": (read_inp, _deck_problems),
        "cohort": (read_cohort, _cohort_problems),
        "model": (load_model, _model_problems),
        "config": (load_config, _config_problems),
    }


def _short_traceback(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames[-6:]]
    return " <- ".join(reversed(lines)) + f" :: {type(exc).__name__}: {str(exc)[:300]}"


def _signature(exc: BaseException) -> str:
    """Exception type and the innermost named function inside the repository (line-free, so
    that unrelated edits of a module do not change it)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if str(REPO_ROOT) in f.filename and "/tests/" not in f.filename
              and ".venv" not in f.filename and not f.name.startswith("<")]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
    return f"{type(exc).__name__}@{where}"


def run_reader(reader: str, path: str) -> dict[str, Any]:
    """Read ``path`` with ``reader`` and classify the outcome (worker side)."""
    from meshing.errors import OsteofeError

    read, problems_of = _READERS[reader]
    try:
        result = read(path)
    except OsteofeError as exc:
        return {"status": "error", "type": type(exc).__name__, "message": str(exc)[:1000]}
    except Exception as exc:
        return {"status": "crash", "signature": _signature(exc),
                "detail": _short_traceback(exc)}
    try:
        problems = problems_of(result)
    except Exception as exc:  # the record is too broken to inspect
        problems = [f"checking the result raised: {_short_traceback(exc)}"]
    if problems:
        return {"status": "nonsense", "signature": f"nonsense@{reader}:{problems[0].split(':')[0]}",
                "detail": "; ".join(problems)[:600]}
    return {"status": "ok"}


_READERS: dict[str, tuple[Callable[[str], Any], Callable[[Any], list[str]]]] = {}


def _worker_main() -> None:
    """Serve ``{"reader", "path"}`` JSON lines on stdin; answer one JSON line each."""
    import logging
    import resource
    import warnings

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native libraries print to fd 1: keep it off the protocol channel
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    _READERS.update(_readers())
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    limit = vm + WORKER_HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    protocol.write(json.dumps({"status": "ready"}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = run_reader(request["reader"], request["path"])
        except BaseException as exc:  # MemoryError in the classifier, SystemExit, ...
            answer = {"status": "crash", "signature": _signature(exc),
                      "detail": _short_traceback(exc)}
        protocol.write(json.dumps(answer) + "\n")


class Worker:
    """A reader subprocess with a per-input time limit, restarted after a crash or hang."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.reads = 0

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env.update({"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
                    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                    "MPLBACKEND": "Agg"})
        with self.log.open("a") as err:
            proc = subprocess.Popen([sys.executable, "-u", str(Path(__file__)), "--worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, text=True, cwd=str(REPO_ROOT), env=env)
        first = self._answer(proc, START_S)
        if first != {"status": "ready"}:
            raise RuntimeError(f"fuzz worker did not start ({first}); see {self.log}")
        return proc

    @staticmethod
    def _answer(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            proc.kill()
            proc.wait()
            return {"status": "hang", "signature": "hang", "detail": f"no answer in {timeout} s"}
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            return {"status": "died", "signature": f"died({code})",
                    "detail": f"worker exited with {code} (negative: killed by that signal)"}
        answer: dict[str, Any] = json.loads(line)
        return answer

    def read(self, reader: str, path: Path) -> dict[str, Any]:
        """Outcome of one reader on one path (a fresh worker after a crash or hang)."""
        if self.reads >= WORKER_READS:
            self.close()
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
            self.reads = 0
        self.reads += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"reader": reader, "path": os.path.abspath(path)}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer(self.proc, HANG_S)
        if answer["status"] in ("hang", "died"):
            self.proc = None
        return answer

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(tmp_path_factory.mktemp("fuzz_worker") / "worker.log")
    yield w
    w.close()


# ---------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 127, 128, 255, 256, 4096, 32767, -32768,
                    65535, 2**31 - 1, -(2**31), 2**32 - 1]
INTERESTING_FLOATS = [0.0, -0.0, -1.0, 1e-30, 1e-6, 0.5, 1e6, 1e30, 3.4e38, -3.4e38,
                      math.nan, math.inf, -math.inf]
INTERESTING_TOKENS = ["0", "-1", "1", "2", "3", "4", "1e308", "1e-308", "-1e308", "nan", "NaN",
                      "inf", "-inf", "Infinity", "99999999999999999999", "4294967297",
                      "65536", "0x10", "", " ", "abc", "1,2", "1 2", "1 1 1 1", "(1,0,0)",
                      "\\", "\"", "'", "*", "**", ",", "=", "[", "{", "\x00", "é", "1.5.2",
                      "-0", "+5", "1_000", "1e", "true", "none", "(nan,nan,nan)"]

ByteMutator = Callable[[st.DataObject, bytes], bytes]


def _truncate(data: st.DataObject, raw: bytes) -> bytes:
    return raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)), label="truncate at")]


def _flip(data: st.DataObject, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        pos = data.draw(st.integers(0, len(buf) - 1), label="at")
        buf[pos] ^= data.draw(st.integers(1, 255), label="xor")
    return bytes(buf)


def _insert(data: st.DataObject, raw: bytes) -> bytes:
    pos = data.draw(st.integers(0, len(raw)), label="insert at")
    return raw[:pos] + data.draw(st.binary(min_size=1, max_size=32), label="bytes") + raw[pos:]


def _overwrite_int(data: st.DataObject, raw: bytes) -> bytes:
    fmt = data.draw(st.sampled_from(["<h", "<i", ">h", ">i", "<f", "<H", "B"]), label="as")
    size = struct.calcsize(fmt)
    pos = data.draw(st.integers(0, max(len(raw) - size, 0)), label="at")
    if fmt.endswith("f"):
        packed = struct.pack(fmt, data.draw(st.sampled_from(INTERESTING_FLOATS)))
    else:
        lo, hi = {"h": (-(2**15), 2**15 - 1), "i": (-(2**31), 2**31 - 1), "H": (0, 2**16 - 1),
                  "B": (0, 255)}[fmt[-1]]
        value = data.draw(st.sampled_from([v for v in INTERESTING_INTS if lo <= v <= hi]))
        packed = struct.pack(fmt, value)
    return raw[:pos] + packed + raw[pos + size:]


BYTE_MUTATORS: list[ByteMutator] = [_truncate, _flip, _insert, _overwrite_int]

#: NIfTI-1 header fields: name -> (offset, struct code, count).
NIFTI1_FIELDS: dict[str, tuple[int, str, int]] = {
    "sizeof_hdr": (0, "i", 1), "dim": (40, "h", 8), "intent_code": (68, "h", 1),
    "datatype": (70, "h", 1), "bitpix": (72, "h", 1), "pixdim": (76, "f", 8),
    "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1),
    "qform_code": (252, "h", 1), "sform_code": (254, "h", 1), "quatern": (256, "f", 6),
    "srow": (280, "f", 12), "magic": (344, "4s", 1),
}
NIFTI_DATATYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792,
                   2048, 2304, 17, 3, -4, 32767]


def _nifti_field(data: st.DataObject, raw: bytes) -> bytes:
    """Corrupt one field of an (uncompressed) NIfTI-1 header."""
    name = data.draw(st.sampled_from(sorted(NIFTI1_FIELDS)), label="field")
    offset, code, count = NIFTI1_FIELDS[name]
    index = data.draw(st.integers(0, count - 1), label="element")
    if code == "4s":
        value: Any = data.draw(st.sampled_from([b"ni1\x00", b"n+2\x00", b"\x00\x00\x00\x00",
                                                b"n+1 ", b"xxxx"]))
    elif code == "f":
        value = data.draw(st.sampled_from(INTERESTING_FLOATS))
    elif name == "datatype":
        value = data.draw(st.sampled_from(NIFTI_DATATYPES))
    else:
        bound = 2**31 if code == "i" else 2**15
        value = data.draw(st.sampled_from([v for v in INTERESTING_INTS if -bound <= v < bound]))
    at = offset + index * struct.calcsize(code)
    packed = struct.pack("<" + code, value)
    return raw[:at] + packed + raw[at + len(packed):]


def _nifti_gz(mutate: ByteMutator) -> ByteMutator:
    """Apply ``mutate`` to the decompressed bytes of a .nii.gz and compress again."""
    import gzip

    def inner(data: st.DataObject, raw: bytes) -> bytes:
        return gzip.compress(mutate(data, gzip.decompress(raw)), mtime=0)

    inner.__name__ = f"gz({mutate.__name__})"
    return inner


def _split_text_header(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header lines and the rest of a NRRD (blank line) or MetaImage (ElementDataFile) file."""
    end = raw.find(b"\n\n")
    if raw.startswith(b"NRRD") and end >= 0:
        return raw[:end].split(b"\n"), raw[end:]
    match = re.search(rb"ElementDataFile = [^\n]*\n", raw)
    if match:
        return raw[: match.end() - 1].split(b"\n"), raw[match.end() - 1:]
    return raw.split(b"\n"), b""


def _text_header_field(data: st.DataObject, raw: bytes) -> bytes:
    """Corrupt the value of one NRRD/MetaImage header line, or drop/duplicate a line."""
    lines, rest = _split_text_header(raw)
    index = data.draw(st.integers(0, len(lines) - 1), label="line")
    action = data.draw(st.sampled_from(["value", "number", "drop", "duplicate"]), label="edit")
    line = lines[index]
    if action == "drop":
        del lines[index]
    elif action == "duplicate":
        lines.insert(index, line)
    else:
        sep = b":=" if b":=" in line else b":" if b":" in line else b"="
        key, _, value = line.partition(sep)
        if action == "number" and re.search(rb"-?\d+(\.\d+)?(e-?\d+)?", value):
            spans = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?(e-?\d+)?", value)]
            a, b = data.draw(st.sampled_from(spans), label="number")
            token = data.draw(st.sampled_from(INTERESTING_TOKENS), label="token").encode()
            value = value[:a] + token + value[b:]
        else:
            value = b" " + data.draw(st.sampled_from(INTERESTING_TOKENS), label="value").encode()
        lines[index] = key + sep + value
    return b"\n".join(lines) + rest


def _dicom_elements(raw: bytes) -> list[tuple[int, int, int]]:
    """(tag offset, value offset, value length) of the explicit-VR elements of a DICOM file."""
    pos, found = 132, []
    long_vrs = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV"}
    while pos + 8 <= len(raw):
        vr = raw[pos + 4: pos + 6]
        if not re.fullmatch(rb"[A-Z]{2}", vr):
            break
        if vr in long_vrs:
            length = struct.unpack("<I", raw[pos + 8: pos + 12])[0]
            start = pos + 12
        else:
            length = struct.unpack("<H", raw[pos + 6: pos + 8])[0]
            start = pos + 8
        if length == 0xFFFFFFFF or start + length > len(raw):
            break
        found.append((pos, start, length))
        pos = start + length
    return found


def _dicom_element(data: st.DataObject, raw: bytes) -> bytes:
    """Corrupt one DICOM element: its value (same length) or its length field."""
    elements = _dicom_elements(raw)
    if not elements:
        return _flip(data, raw)
    tag_at, start, length = data.draw(st.sampled_from(elements), label="element")
    if data.draw(st.booleans(), label="length field") or length == 0:
        width = 4 if start - tag_at == 12 else 2
        at = start - width
        new = data.draw(st.sampled_from([0, 1, 2, 3, 5, 255, 2**width * 8 - 1]), label="length")
        return raw[:at] + new.to_bytes(width, "little") + raw[at + width:]
    if length <= 8:
        value = data.draw(st.binary(min_size=length, max_size=length), label="value")
    else:
        token = data.draw(st.sampled_from(INTERESTING_TOKENS), label="token").encode("utf-8")
        value = (token + b"\\" + token + b"\\" + token)[:length].ljust(length, b" ")
    return raw[:start] + value + raw[start + length:]


# -- text formats ------------------------------------------------------------------------------

LINE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                    max_size=60)


def _lines_edit(data: st.DataObject, raw: bytes) -> bytes:
    """Delete, duplicate, swap, replace or insert lines; swap a token for an odd one."""
    lines = raw.decode("utf-8", errors="surrogateescape").split("\n")
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        if not lines:
            lines = [""]
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        action = data.draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert",
                                            "token", "token", "token"]), label="edit")
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = data.draw(st.integers(0, len(lines) - 1), label="with")
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "replace":
            lines[i] = data.draw(LINE_TEXT, label="text")
        elif action == "insert":
            lines.insert(i, data.draw(LINE_TEXT, label="text"))
        else:
            tokens = list(re.finditer(r"[^\s,=*\[\]{}\"']+", lines[i]))
            if tokens:
                m = data.draw(st.sampled_from(tokens), label="token")
                new = data.draw(st.sampled_from(INTERESTING_TOKENS), label="as")
                lines[i] = lines[i][: m.start()] + new + lines[i][m.end():]
    return "\n".join(lines).encode("utf-8", errors="surrogateescape")


def _random_text(data: st.DataObject, raw: bytes) -> bytes:
    del raw
    return data.draw(st.text(max_size=400), label="text").encode("utf-8", errors="replace")


JSON_ODDITIES: list[Any] = [None, True, "", "x", "nan", 0, -1, 1, 2**70, 1e308, -1e308,
                            math.nan, math.inf, -math.inf, [], [1], [[1, 2]], {}, {"a": 1},
                            {"1": "x"}, [None], 0.5]


def _tree_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _tree_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for k, value in enumerate(node):
            paths += _tree_paths(value, (*prefix, k))
    return paths


def _tree_edit(data: st.DataObject, tree: Any, oddities: list[Any]) -> Any:
    """Replace or delete the node at a random path of a JSON/TOML tree (in place)."""
    for _ in range(data.draw(st.integers(1, 2), label="edits")):
        paths = [p for p in _tree_paths(tree) if p]
        if not paths:
            return tree
        path = data.draw(st.sampled_from(paths), label="path")
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.integers(0, 4), label="delete?") == 0:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(oddities), label="value"))
    return tree


def _json_edit(data: st.DataObject, raw: bytes) -> bytes:
    tree = _tree_edit(data, json.loads(raw), JSON_ODDITIES)
    return json.dumps(tree, indent=1).encode()


TOML_ODDITIES: list[Any] = [True, "", "x", "nan", 0, -1, 1, 2**62, 1e308, -1e308, math.nan,
                            math.inf, -math.inf, [], [1], ["x", 1.5], {}, {"a": 1}, 0.5, 1e-300]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(value)


def _toml_dump(tree: dict[str, Any]) -> str:
    """Top-level scalars first, then one [table] per dict (enough for the config layout)."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in tree.items()
             if not isinstance(v, dict)]
    for key, table in tree.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_edit(data: st.DataObject, raw: bytes) -> bytes:
    import tomllib

    tree = _tree_edit(data, tomllib.loads(raw.decode()), TOML_ODDITIES)
    return _toml_dump(tree).encode()


TEXT_MUTATORS: list[ByteMutator] = [_lines_edit, _lines_edit, _truncate, _flip, _random_text]


def mutators_for(name: str) -> list[ByteMutator]:
    """The mutations that fit a seed file."""
    lower = name.lower()
    if lower.endswith(".nii"):
        return [*BYTE_MUTATORS, _nifti_field, _nifti_field, _nifti_field]
    if lower.endswith(".nii.gz"):
        return [_truncate, _flip, _nifti_gz(_nifti_field), _nifti_gz(_nifti_field),
                _nifti_gz(_truncate), _nifti_gz(_flip)]
    if lower.endswith((".nrrd", ".mha")):
        return [*BYTE_MUTATORS, _text_header_field, _text_header_field, _text_header_field]
    if lower.endswith(".dcm"):
        return [*BYTE_MUTATORS, _dicom_element, _dicom_element, _dicom_element]
    if lower.endswith(".json"):
        return [*TEXT_MUTATORS, _json_edit, _json_edit, _json_edit]
    if lower.endswith(".toml"):
        return [*TEXT_MUTATORS, _toml_edit, _toml_edit, _toml_edit]
    if lower.endswith(".vtu") and b"binary" in (SEEDS / name).read_bytes()[:2000]:
        return [*BYTE_MUTATORS, _lines_edit]
    if lower.endswith(".msh") and not (SEEDS / name).read_bytes()[:400].isascii():
        return BYTE_MUTATORS
    return [*TEXT_MUTATORS, *BYTE_MUTATORS[:2]]


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------

SEED_ENTRIES = corpus_entries(SEEDS)
CRASH_ENTRIES = corpus_entries(CRASHES)


def _fuzz_targets() -> list[tuple[str, str]]:
    """(seed entry, file inside it to mutate): DICOM folders are fuzzed one slice at a time."""
    targets = []
    for entry in SEED_ENTRIES:
        if entry.is_dir():
            targets += [(entry.name, f.name) for f in sorted(entry.iterdir())][:2]
        else:
            targets.append((entry.name, ""))
    return targets


def _describe(answer: dict[str, Any]) -> str:
    return (f"{answer['status']}: {answer.get('signature', answer.get('type', ''))} "
            f"{answer.get('detail', answer.get('message', ''))}")


def _save_finding(path: Path, answer: dict[str, Any], reader: str, suffix: str) -> None:
    """Keep a failing input for triage (campaign mode)."""
    folder = Path(SAVE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else \
        path.stat().st_size
    tag = re.sub(r"[^A-Za-z0-9_.@-]+", "_", answer.get("signature", answer["status"]))[:80]
    name = f"{reader}--{tag}--{size:07d}-{zlib.crc32(str(answer).encode()) & 0xFFFF:04x}"
    target = folder / (name + suffix)
    if not target.exists():
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copyfile(path, target)
        (folder / (name + ".txt")).write_text(_describe(answer) + "\n")


@pytest.mark.parametrize("entry", SEED_ENTRIES, ids=lambda p: p.name)
def test_seeds_read_cleanly(entry: Path, worker: Worker) -> None:
    answer = worker.read(reader_of(entry), entry)
    assert answer["status"] == "ok", _describe(answer)


@pytest.mark.parametrize("entry", CRASH_ENTRIES, ids=lambda p: p.name)
def test_corpus_replay(entry: Path, worker: Worker) -> None:
    """Each saved reproducer is refused with the OsteofeError of its fix, or read cleanly."""
    assert entry.name in REGRESSIONS, f"{entry.name}: add it to REGRESSIONS (bug, answer)"
    bug, refusal = REGRESSIONS[entry.name]
    answer = worker.read(reader_of(entry), entry)
    if refusal is None:
        assert answer["status"] == "ok", f"{bug}: {_describe(answer)}"
    else:
        assert answer["status"] == "error", f"{bug}: {_describe(answer)}"
        assert refusal in answer["message"], f"expected {refusal!r} in: {answer['message']}"


def test_regressions_have_files() -> None:
    missing = sorted(set(REGRESSIONS) - {p.name for p in CRASH_ENTRIES})
    assert not missing, f"REGRESSIONS names files not in {CRASHES}: {missing}"


def _fuzz_one(entry: str, member: str, data: st.DataObject, worker: Worker,
              tmp_path_factory: pytest.TempPathFactory) -> None:
    """Mutate one seed, read it, and check the outcome (or save it in campaign mode)."""
    seed = SEEDS / entry
    reader = reader_of(seed)
    work = tmp_path_factory.mktemp("fuzz", numbered=True)
    if member:  # one slice of a DICOM folder
        target_dir = work / entry
        shutil.copytree(seed, target_dir)
        victim = target_dir / member
        read_path = target_dir
    else:
        victim = work / entry
        read_path = victim
    raw = (seed / member).read_bytes() if member else seed.read_bytes()
    mutate = data.draw(st.sampled_from(mutators_for(member or entry)), label="mutation")
    mutated = mutate(data, raw)
    victim.write_bytes(mutated)
    answer = worker.read(reader, read_path)
    if SAVE_DIR and answer["status"] not in ("ok", "error"):
        _save_finding(read_path, answer, reader, "" if member else entry.split("--", 1)[1]
                      .partition(".")[1] + entry.split("--", 1)[1].partition(".")[2])
        return
    shutil.rmtree(work, ignore_errors=True)
    assert answer["status"] in ("ok", "error"), (
        f"{mutate.__name__} of {entry}{'/' + member if member else ''}: {_describe(answer)}")


_TARGET_IDS = {"ids": lambda v: v if isinstance(v, str) and v else "file"}


@pytest.mark.parametrize(("entry", "member"), _fuzz_targets(), **_TARGET_IDS)
@FUZZ
@given(data=st.data())
def test_fuzz_reader(entry: str, member: str, data: st.DataObject, worker: Worker,
                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """A mutated seed is read into a valid record or refused with an OsteofeError."""
    _fuzz_one(entry, member, data, worker, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "member"), _fuzz_targets(), **_TARGET_IDS)
@FUZZ_LONG
@given(data=st.data())
def test_fuzz_reader_long(entry: str, member: str, data: st.DataObject, worker: Worker,
                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same property on LONG_EXAMPLES further mutations per seed (minutes)."""
    _fuzz_one(entry, member, data, worker, tmp_path_factory)


# ---------------------------------------------------------------------------------------------
# seeds (rewritten with --write-seeds; the committed files are what the tests use)
# ---------------------------------------------------------------------------------------------


def write_seeds(folder: Path) -> None:
    """Write the small valid seed files, one or more per reader."""
    import numpy as np
    import SimpleITK as sitk

    from meshing.imaging import write_ct, write_labels
    from meshing.meshio_io import write_mesh
    from meshing.structured import box_mesh
    from meshing.types import CTVolume, ImageGrid, LabelMap, TetMesh
    from meshing.volume import write_msh
    from osteofe.config import default_toml
    from risk.calibration import MirelsBaseline, StrengthRiskModel, save_model

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240601)
    grid = ImageGrid((4, 3, 3), np.array([0.8, 0.9, 1.25]), np.array([-10.0, 5.0, 30.0]))
    hu = rng.integers(-1000, 1500, size=grid.shape).astype(np.float32)
    ct = CTVolume(grid, hu)
    labels = LabelMap(grid, (hu > 300).astype(np.int32) + (hu > 1200).astype(np.int32),
                      {1: "femur_right", 2: "lesion"})
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        write_ct(ct, folder / f"ct--seed{suffix}")
    write_labels(labels, folder / "labels--seed.nii.gz")
    write_labels(labels, folder / "labels--seed.seg.nrrd")
    # plain-text NRRD/MHA headers with raw data, so header corruption hits text
    for suffix in (".nrrd", ".mha"):
        image = sitk.ReadImage(str(folder / f"ct--seed{suffix}"))
        sitk.WriteImage(image, str(folder / f"ct--seed{suffix}"), useCompression=False)
    # a two-layer 3D Slicer segmentation (vector pixels, one component per layer)
    layers = np.stack([labels.labels == 1, (labels.labels == 2) * 3], axis=-1).astype(np.uint8)
    seg = sitk.GetImageFromArray(np.ascontiguousarray(layers.transpose(2, 1, 0, 3)),
                                 isVector=True)
    seg.SetSpacing(grid.spacing.tolist())
    seg.SetOrigin(grid.origin.tolist())
    for n, (name, layer, value) in enumerate([("bone", 0, 1), ("lesion", 1, 3)]):
        seg.SetMetaData(f"Segment{n}_Name", name)
        seg.SetMetaData(f"Segment{n}_Layer", str(layer))
        seg.SetMetaData(f"Segment{n}_LabelValue", str(value))
    sitk.WriteImage(seg, str(folder / "labels--seed-layers.seg.nrrd"), useCompression=False)
    # a DICOM series of three 4x3 slices
    dicom = folder / "ct--seed-dicom"
    dicom.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(3):
        plane = sitk.GetImageFromArray(hu[:, :, k].T.astype(np.int16))  # stored via the rescale
        plane.SetSpacing([0.8, 0.9])
        for tag, text in {"0008|0060": "CT", "0020|000d": "1.2.826.0.1",
                           "0020|000e": "1.2.826.0.1.7", "0008|0018": f"1.2.826.0.1.7.{k + 1}",
                           "0020|0013": str(k + 1), "0020|0032": f"-10\\5\\{30 + 1.25 * k:g}",
                           "0020|0037": "1\\0\\0\\0\\1\\0", "0028|1052": "-1024",
                           "0028|1053": "1"}.items():
            plane.SetMetaData(tag, text)
        writer.SetFileName(str(dicom / f"slice{k}.dcm"))
        writer.Execute(plane)
    # meshes: one cube of six tetrahedra, 2 tags, one cell array
    box = box_mesh([0, 0, 0], [10, 12, 14], (1, 1, 1))
    tags = np.array([1, 1, 1, 2, 2, 1], dtype=np.int32)
    mesh = TetMesh(box.points, box.cells, tags)
    modulus = np.linspace(100.0, 600.0, 6)
    write_mesh(folder / "mesh--seed.vtu", mesh, {"E": modulus})
    write_mesh(folder / "mesh--seed.inp", mesh)
    write_msh(folder / "mesh--seed-ascii.msh", mesh, {"E": modulus}, binary=False)
    write_msh(folder / "mesh--seed-v22.msh", mesh, version=2.2, binary=False)
    import meshio

    meshio.write(folder / "mesh--seed-ascii.vtu",
                 meshio.Mesh(mesh.points, [("tetra", mesh.cells)],
                             cell_data={"cell_tags": [tags]}), binary=False)
    # an Abaqus deck: the cube, clamped at z = 0, loads on the top (C3D4, sets, two materials)
    nodes = "".join(f"{i + 1}, {x:g}, {y:g}, {z:g}\n" for i, (x, y, z) in enumerate(mesh.points))
    elements = "".join(f"{k + 11}, " + ", ".join(str(v + 1) for v in row) + "\n"
                       for k, row in enumerate(mesh.cells))
    bottom = ", ".join(str(i + 1) for i in np.flatnonzero(mesh.points[:, 2] == 0.0))
    top = ", ".join(str(i + 1) for i in np.flatnonzero(mesh.points[:, 2] > 1.0))
    (folder / "deck--seed.inp").write_text(
        "** osteofe fuzz seed\n*HEADING\ncube\n*NODE, NSET=NALL\n" + nodes
        + "*ELEMENT, TYPE=C3D4, ELSET=EALL\n" + elements
        + "*ELSET, ELSET=SOFT, GENERATE\n11, 13, 1\n*ELSET, ELSET=HARD\n14, 15, 16\n"
        f"*NSET, NSET=BOTTOM\n{bottom}\n*NSET, NSET=TOP\n{top}\n"
        "*MATERIAL, NAME=SOFT\n*ELASTIC\n500., 0.3\n*DENSITY\n1.9e-9\n"
        "*MATERIAL, NAME=HARD\n*ELASTIC\n2.0e3, 0.25\n"
        "*SOLID SECTION, ELSET=SOFT, MATERIAL=SOFT\n*SOLID SECTION, ELSET=HARD, MATERIAL=HARD\n"
        "*BOUNDARY\nBOTTOM, ENCASTRE\n*STEP, NAME=LOAD\n*STATIC\n*CLOAD\nTOP, 3, -25.\n"
        "*DLOAD\n14, P1, 0.5\n*NODE PRINT, NSET=BOTTOM, TOTALS=ONLY\nRF\n*END STEP\n")
    # a cohort table, risk models, configs
    (folder / "cohort--seed.csv").write_text(
        "patient_id,side,body_mass_kg,failure_load_N,mirels_site,mirels_pain,mirels_lesion,"
        "mirels_size,size_fraction,aci_mm,fractured,follow_up_months,primary\n"
        "P01,left,50,4905,peritrochanteric,functional,lytic,,0.5,42,1,3.5,breast\n"
        "P02,right,80,3924,2,1,1,1,,12.5,0,24,prostate\n"
        "P02,left,80,7848,lower_limb,mild,mixed,2,,,0,24,prostate\n")
    x = np.array([[4.0, 10.0], [6.0, 20.0], [8.0, 15.0], [5.0, 40.0], [9.0, 5.0], [3.0, 30.0]])
    y = np.array([1, 0, 0, 1, 0, 1])
    save_model(StrengthRiskModel(penalty="l2").fit({"failure_load_BW": x[:, 0],
                                                     "aci_mm": x[:, 1]}, y),
               folder / "model--seed-strength.json")
    table = {t: min(1.0, 0.02 * (t - 3) ** 2) for t in range(4, 13)}
    save_model(MirelsBaseline(mapping="fixed", probabilities=table)
               .fit(np.array([5, 9, 12, 7]), np.array([0, 1, 1, 0])),
               folder / "model--seed-mirels.json")
    (folder / "config--seed-default.toml").write_text(default_toml())
    (folder / "config--seed-sparse.toml").write_text(
        "[mesh]\nsize_mm = 2.5\norder = 2\n\n[solver]\ndegree = 2\n\n[material]\n"
        "calibration_slope = 0.0008\ncalibration_intercept = 0.002\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker_main()
    elif sys.argv[1:] == ["--write-seeds"]:
        write_seeds(SEEDS)
    else:
        sys.exit("usage: test_fuzz_readers.py --worker | --write-seeds")
