"""Reading gmsh .msh files with gmsh itself, in-process or in a child process.

:func:`read_msh` opens a file with the gmsh API in this process; :func:`read_msh_isolated`
does the same in a child Python process and hands back the arrays. gmsh's readers trust the
file: a malformed user file (e.g. an MSH 4.1 ``$Nodes`` section without its header line) can
make gmsh dereference garbage and kill the whole interpreter with SIGSEGV. Files that come
from users are therefore read by :func:`read_msh_isolated` (:func:`meshing.meshio_io.
read_mesh` does), which turns a crash, a hang or any failure of the child into an
:class:`~meshing.errors.InputError` naming the file.

The child is this module run as a script (``python -m meshing.msh FILE OUT``); it imports
gmsh and numpy only, so it starts in a fraction of a second. It writes the arrays to
``OUT.npz`` (no pickles) and its outcome (error message and hint, the log records it
produced) to ``OUT.json``.

gmsh keeps global state, so every in-process use of it in osteofe runs under
:data:`GMSH_LOCK` (shared with :mod:`meshing.volume`), initialises gmsh without signal
handlers and always finalises it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from meshing.errors import InputError, MeshingError, OsteofeError
from meshing.types import TetMesh

__all__ = ["GMSH_LOCK", "MSH_CHILD_TIMEOUT_S", "read_msh", "read_msh_isolated"]

_LOG = logging.getLogger(__name__)

#: The lock every in-process gmsh session of osteofe runs under (gmsh state is global).
GMSH_LOCK = threading.Lock()
#: Seconds the child process may take to read one file before it counts as hung (a 1e6-tet
#: MSH file reads in well under a minute).
MSH_CHILD_TIMEOUT_S = 1800.0

#: gmsh element type ids: 4-node and 10-node tetrahedron.
GMSH_TET4, GMSH_TET10 = 4, 11
#: Column permutation gmsh tet10 -> VTK tet10 (swap the mid-nodes of edges 13 and 23).
GMSH_TO_VTK_TET10 = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 8])
#: Tag of tetrahedra in no physical group (:data:`meshing.volume.BONE_TAG`).
_UNTAGGED = 1
#: gmsh 3-D element type ids that are not tetrahedra (dropped by :func:`read_msh`): hexahedra,
#: prisms, pyramids of orders 1-2 and the higher-order tetrahedra.
_GMSH_TYPE_NAMES = {4: "tetra", 11: "tetra10", 5: "hexahedron", 6: "wedge", 7: "pyramid",
                    12: "hexahedron27", 13: "wedge18", 14: "pyramid14", 17: "hexahedron20",
                    18: "wedge15", 19: "pyramid13", 29: "tetra20", 30: "tetra35"}
_HINT = "check that it is a valid .msh file (re-export it from gmsh or the mesher)"


def read_msh(path: str | os.PathLike[str]) -> tuple[TetMesh, dict[str, np.ndarray]]:
    """Read the tetrahedra of a gmsh .msh file (MSH 2.x or 4.x, ASCII or binary) with gmsh.

    Tetrahedra (4- and 10-node; 10-node cells converted to the VTK node order) of every
    3-D entity are returned in element-tag order. A cell's tag is the first physical group
    of its entity (tag 1 where an entity has none, logged). Other 3-D elements are dropped
    with a WARNING; surface, curve and point elements are ignored. ``$ElementData`` views
    are returned by name (float64, (m,) or (m, k)), with ``gmsh:physical`` and
    ``gmsh:geometrical`` (the entity tag). The mesh is not checked here (see
    :func:`meshing.meshio_io.read_mesh`, which does): orientation and node order are as
    stored.

    This runs gmsh in this process: a malformed file can crash the interpreter. Read files
    from users with :func:`read_msh_isolated`.

    Args:
        path: The .msh file.

    Returns:
        (mesh, cell arrays by name).

    Raises:
        InputError: Unreadable file, no tetrahedra, or 4- and 10-node tetrahedra mixed.
    """
    import gmsh

    file = Path(path)
    if not file.is_file():
        raise InputError(f"mesh file not found: {file}", hint="check the path")
    with GMSH_LOCK:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        try:
            gmsh.option.setNumber("General.Terminal", 0)
            try:
                gmsh.open(str(file))
            except Exception as exc:  # gmsh raises a bare Exception with its last error
                raise InputError(f"gmsh could not read {file}: {exc}", hint=_HINT) from exc
            return _collect_msh(gmsh, file)
        finally:
            gmsh.finalize()


def _lookup(sorted_tags: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each query tag in the sorted unique ``sorted_tags`` (-1 where absent)."""
    if sorted_tags.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_tags, query), sorted_tags.size - 1)
    return np.where(sorted_tags[pos] == query, pos, -1).astype(np.int64)


def _collect_msh(gmsh: Any, file: Path) -> tuple[TetMesh, dict[str, np.ndarray]]:
    """Tetrahedra, tags and element data of the model gmsh has open."""
    node_tags, coords, _ = gmsh.model.mesh.getNodes(-1, -1, False, False)
    node_tags = np.asarray(node_tags, dtype=np.int64)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.size != 3 * node_tags.size:
        raise InputError(f"{file}: gmsh read {node_tags.size} node tags but {coords.size} "
                         "coordinates", hint=_HINT)
    coords = coords.reshape(-1, 3)
    blocks: dict[int, list[tuple[np.ndarray, np.ndarray, int, int]]] = {}
    dropped: dict[str, int] = {}
    untagged = 0
    for _, entity in gmsh.model.getEntities(3):
        physical = list(gmsh.model.getPhysicalGroupsForEntity(3, entity))
        types, element_tags, element_nodes = gmsh.model.mesh.getElements(3, entity)
        for etype, etags, enodes in zip(types, element_tags, element_nodes, strict=True):
            etags = np.asarray(etags, dtype=np.int64)
            if etype not in (GMSH_TET4, GMSH_TET10):
                name = _GMSH_TYPE_NAMES.get(int(etype), f"gmsh type {int(etype)}")
                dropped[name] = dropped.get(name, 0) + etags.shape[0]
                continue
            if not physical:
                untagged += etags.shape[0]
            width = 4 if etype == GMSH_TET4 else 10
            enodes = np.asarray(enodes, dtype=np.int64)
            if enodes.size != width * etags.size:
                raise InputError(f"{file}: {etags.size} {width}-node tetrahedra come with "
                                 f"{enodes.size} node numbers", hint=_HINT)
            blocks.setdefault(int(etype), []).append(
                (etags, enodes.reshape(-1, width),
                 int(physical[0]) if physical else _UNTAGGED, int(entity)))
    if dropped:
        _LOG.warning("read_msh: %s: dropped %s (only tetrahedra are meshed; the mesh has "
                     "holes where they were)", file.name,
                     ", ".join(f"{n} {k} cells" for k, n in dropped.items()))
    if not blocks:
        raise InputError(f"{file} contains no tetrahedra",
                         hint="mesh the volume with tetrahedra (4- or 10-node)")
    if len(blocks) > 1:
        raise InputError(f"{file} mixes 4-node and 10-node tetrahedra",
                         hint="export one element order")
    if untagged:
        _LOG.info("read_msh: %d tetrahedra in no physical group were tagged %d", untagged,
                  _UNTAGGED)
    ((etype, parts),) = blocks.items()
    element_tags = np.concatenate([b[0] for b in parts])
    node_ids = np.concatenate([b[1] for b in parts])
    physical_tags = np.concatenate([np.full(b[0].shape[0], b[2], np.int32) for b in parts])
    entity_tags = np.concatenate([np.full(b[0].shape[0], b[3], np.int32) for b in parts])
    order = np.argsort(element_tags, kind="stable")
    element_tags, node_ids = element_tags[order], node_ids[order]
    physical_tags, entity_tags = physical_tags[order], entity_tags[order]
    if etype == GMSH_TET10:
        node_ids = node_ids[:, GMSH_TO_VTK_TET10]
    # Sorted lookups, not a table indexed by tag: a corrupt file may hold tags near 2^63.
    node_order = np.argsort(node_tags, kind="stable")
    sorted_tags = node_tags[node_order]
    if sorted_tags.size > 1 and np.any(sorted_tags[1:] == sorted_tags[:-1]):
        raise InputError(f"{file}: a node tag is defined twice", hint=_HINT)
    position = _lookup(sorted_tags, node_ids)
    if np.any(position < 0):
        raise InputError(f"{file}: tetrahedra reference undefined nodes",
                         hint="re-export the mesh")
    cells = node_order[position]
    arrays: dict[str, np.ndarray] = {"gmsh:physical": physical_tags,
                                     "gmsh:geometrical": entity_tags}
    arrays.update(_element_views(gmsh, element_tags, file))
    try:
        return TetMesh(coords, cells, physical_tags), arrays
    except ValueError as exc:
        raise InputError(f"{file}: {exc}", hint=_HINT) from exc


def _element_views(gmsh: Any, element_tags: np.ndarray, file: Path) -> dict[str, np.ndarray]:
    """``$ElementData`` views on the given elements, by view name (first time step)."""
    arrays: dict[str, np.ndarray] = {}
    order = np.argsort(element_tags, kind="stable")
    sorted_tags = element_tags[order]
    for index, view in enumerate(gmsh.view.getTags()):
        name = gmsh.option.getString(f"View[{index}].Name") or f"view{view}"
        try:
            kind, tags, data, _, components = gmsh.view.getModelData(int(view), 0)
        except Exception:  # list-based views (no model data) are not element arrays
            _LOG.info("read_msh: %s: view %r holds no model data; skipped", file.name, name)
            continue
        if kind != "ElementData":
            _LOG.info("read_msh: %s: view %r is %s, not ElementData; skipped", file.name,
                      name, kind)
            continue
        tags = np.asarray(tags, dtype=np.int64)
        width = int(components)
        try:
            values = np.asarray([np.asarray(d, dtype=np.float64) for d in data])
            values = values.reshape(tags.shape[0], width)
        except ValueError:
            _LOG.warning("read_msh: %s: element data %r has ragged or miscounted values; "
                         "skipped", file.name, name)
            continue
        found = _lookup(sorted_tags, tags)
        rows = np.where(found >= 0, order[np.maximum(found, 0)], -1)
        keep = rows >= 0
        if int(np.count_nonzero(keep)) != element_tags.shape[0] or np.unique(
                rows[keep]).shape[0] != element_tags.shape[0]:
            _LOG.warning("read_msh: %s: element data %r does not cover every tetrahedron "
                         "exactly once; skipped", file.name, name)
            continue
        out = np.empty((element_tags.shape[0], width))
        out[rows[keep]] = values[keep]
        arrays[name] = out[:, 0] if width == 1 else out
    return arrays


# ---------------------------------------------------------------------------------------------
# the child process
# ---------------------------------------------------------------------------------------------


def _signal_name(code: int) -> str:
    """'killed by SIGSEGV' for a negative return code, 'exit code N' otherwise."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def read_msh_isolated(
    path: str | os.PathLike[str], *, timeout_s: float = MSH_CHILD_TIMEOUT_S
) -> tuple[TetMesh, dict[str, npt.NDArray[Any]]]:
    """:func:`read_msh` in a child process: a crash of gmsh becomes an InputError.

    The child's log records (dropped cells, untagged tetrahedra...) are re-emitted here.

    Args:
        path: The .msh file.
        timeout_s: Seconds before a child still reading counts as hung (and is killed).

    Returns:
        (mesh, cell arrays by name), as :func:`read_msh` returns them.

    Raises:
        InputError: As :func:`read_msh`; also when gmsh crashes (e.g. SIGSEGV on a malformed
            file), hangs, or fails in any other way on the file.
        MeshingError: The child Python process cannot be started at all.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"mesh file not found: {file}", hint="check the path")
    if not sys.executable:  # an embedded interpreter cannot start a child
        return read_msh(file)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="osteofe-msh-") as tmp:
        out = Path(tmp) / "mesh"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "meshing.msh", str(file.resolve()), str(out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env, cwd=tmp, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise InputError(f"gmsh did not finish reading {file} within {timeout_s:g} s",
                             hint=_HINT) from exc
        except OSError as exc:
            raise MeshingError(f"cannot start a Python process to read {file}: {exc}",
                               hint="check that the Python interpreter "
                               f"{sys.executable} can be run") from exc
        report_file = out.with_suffix(".json")
        if proc.returncode != 0 or not report_file.is_file():
            lines = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
            last = f": {lines[-1][:300]}" if lines else ""
            raise InputError(f"gmsh failed reading {file} ({_signal_name(proc.returncode)}"
                             f"{last}); the file is malformed", hint=_HINT)
        report = json.loads(report_file.read_text())
        for level, message in report["logs"]:
            _LOG.log(int(level), "%s", message)
        if report["error"] is not None:
            raise InputError(report["error"], hint=report["hint"])
        with np.load(out.with_suffix(".npz"), allow_pickle=False) as data:
            mesh = TetMesh(data["points"], data["cells"], data["cell_tags"])
            arrays = {name: np.array(data[f"array{k}"])
                      for k, name in enumerate(report["arrays"])}
    return mesh, arrays


class _Collect(logging.Handler):
    """Keeps (level, message) of the records the child logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def _child_main(source: str, out: str) -> int:
    """Read ``source`` and write ``out``.npz (arrays) and ``out``.json (outcome, logs)."""
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.INFO)
    report: dict[str, Any] = {"error": None, "hint": "", "arrays": [], "logs": []}
    target = Path(out)
    try:
        mesh, arrays = read_msh(source)
    except OsteofeError as exc:
        report.update(error=exc.message, hint=exc.hint)
    else:
        names = list(arrays)
        report["arrays"] = names
        payload: dict[str, np.ndarray] = {"points": mesh.points, "cells": mesh.cells,
                                          "cell_tags": mesh.cell_tags}
        payload.update({f"array{k}": np.asarray(arrays[name]) for k, name in enumerate(names)})
        np.savez(target.with_suffix(".npz"), allow_pickle=False, **payload)
    report["logs"] = collect.records
    target.with_suffix(".json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m meshing.msh FILE.msh OUT (writes OUT.npz and OUT.json)")
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))
