"""``osteofe solve``: solve a linear-elastic static Abaqus/CalculiX deck built elsewhere.

The deck is read by :func:`fea.abaqus.read_inp` and solved by the same
:class:`fea.solver.ElasticModel` (operator, CG + GAMG with the rigid-body near-nullspace) as the
femur pipeline; there is no second solver. C3D4 decks are solved with P1, C3D10 decks with P2
(the deck's nodes are then exactly the dofs), so the answer is the deck's own discretisation.

``result.json`` holds: ``reactions_n`` (per label that carries a ``*BOUNDARY``: the total
force, N, that the supports exert on the body through the constrained dofs of the label's
nodes, like CalculiX's ``RF`` totals, except that a load applied straight on a constrained dof
counts in it), ``applied_force_n`` and the equilibrium imbalance, displacement and principal
strain extremes (with Abaqus node/element ids), the solver record (DOFs, iterations, residual,
PETSc options), ``failure`` (with ``loaded_set``), ``warnings``/``notes`` (ignored keywords
with their lines), timings, the deck's SHA-256 (and its includes'), versions and machine.
``fields.vtu`` holds the displacement at every node, the per-element modulus, strain tensor and
principal strains, and the Abaqus ids.

MPI: collective like :func:`osteofe.pipeline.run_strength`. Rank 0 reads the deck, the model is
broadcast, every rank takes part in the solve, and rank 0 evaluates the failure criterion and
writes ``result.json`` and ``fields.vtu`` atomically (nothing is written on an error, and an
error on rank 0 is raised on every rank).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from mpi4py import MPI

from fea.abaqus import AbaqusError, AbaqusModel, read_inp
from fea.failure import SCHILEO_2008, StrainLimits, principal_strains, strain_failure
from fea.topology import boundary_faces
from osteofe.guards import check_resources
from osteofe.outputs import sha256_file, staged_output, write_json
from osteofe.parallel import on_root

if TYPE_CHECKING:  # fea.solver imports DOLFINx; imported where it is needed
    from fea.solver import CaseSolution, SolverOptions, Support

__all__ = ["SOLVE_STAGES", "run_solve"]

#: Progress stages reported by :func:`run_solve`.
SOLVE_STAGES = ["reading model", "solving", "failure criterion", "writing outputs"]
#: Label of the internal reaction set holding every constrained node (equilibrium check).
_ALL_CONSTRAINED = "(all constrained nodes)"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("osteofe", "dolfinx-solver-real", "fenics-basix", "fenics-ffcx", "numpy",
                 "scipy", "meshio", "petsc4py", "mpi4py"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _loaded_label(model: AbaqusModel, loaded_set: str) -> tuple[str, str]:
    """The model label a ``--loaded-set`` names, and whether it is a load or a support."""
    wanted = loaded_set.strip()
    candidates = [wanted, wanted.upper(), wanted.strip('"')]
    for label in candidates:
        if label in model.load_sets:
            return label, "load"
    for label in candidates:
        if label in model.bc_sets and np.any(model.bc_values[np.isin(
                model.bc_nodes, model.bc_sets[label])] != 0.0):
            return label, "prescribed displacement"
    offered = sorted(model.load_sets) + sorted(
        label for label, nodes in model.bc_sets.items()
        if np.any(model.bc_values[np.isin(model.bc_nodes, nodes)] != 0.0))
    raise AbaqusError(
        f"--loaded-set {loaded_set}: no *CLOAD, *DLOAD or non-zero *BOUNDARY acts on it",
        hint=f"name the set that carries the load: {', '.join(offered) or '(none in the deck)'}",
    )


def _supports(model: AbaqusModel) -> list[Support]:
    """One exact-node support per constrained component (per-node values where non-zero)."""
    from fea.solver import Support

    supports = []
    for comp in range(3):
        mask = model.bc_components == comp
        if not np.any(mask):
            continue
        nodes = model.bc_nodes[mask]
        values = model.bc_values[mask]
        displacement: npt.NDArray[np.float64] | None = None
        if np.any(values != 0.0):
            displacement = np.zeros((nodes.size, 3))
            displacement[:, comp] = values
        supports.append(Support(f"dof_{comp + 1}", nodes, (comp,), displacement, facets=False))
    return supports


def _excluded(model: AbaqusModel, margin_mm: float) -> npt.NDArray[np.bool_]:
    """Nodes within ``margin_mm`` of a node that carries a load or a boundary condition."""
    from scipy.spatial import cKDTree

    loaded = np.flatnonzero(np.any(model.nodal_forces_n != 0.0, axis=1))
    marked = np.union1d(model.bc_nodes, loaded)
    points = model.mesh.points
    dist, _ = cKDTree(points[marked]).query(points, distance_upper_bound=margin_mm + 1e-9)
    return np.asarray(dist <= margin_mm)


def run_solve(
    inp_path: str | Path,
    out_dir: str | Path,
    *,
    options: SolverOptions | None = None,
    loaded_set: str | None = None,
    ignore_unsupported: bool = False,
    allow_include_outside: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
    limits: StrainLimits = SCHILEO_2008,
    exclude_margin_mm: float = 3.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Solve an Abaqus/CalculiX deck and write ``result.json`` and ``fields.vtu`` (collective).

    Args:
        inp_path: The ``.inp`` deck (one static step; see :mod:`fea.abaqus`).
        out_dir: Output folder (written atomically: complete results or none).
        options: :class:`fea.solver.SolverOptions` (Krylov method, preconditioner,
            tolerances). Its ``degree`` is replaced by the deck's: 1 for C3D4, 2 for C3D10.
        loaded_set: Node/element set (or :data:`fea.abaqus.NODES_BY_ID`) that carries the
            load: apply the Schileo strain criterion and report the failure load, i.e. the
            magnitude of the set's resultant load (or support reaction, for a prescribed
            displacement) times the load factor.
        ignore_unsupported: Solve without unsupported keywords (listed as warnings in
            ``result.json``) instead of refusing the deck.
        allow_include_outside: Read ``*INCLUDE`` files outside the deck's folder too
            (refused by default; see :func:`fea.abaqus.read_inp`).
        comm: MPI communicator.
        limits: Strain limits of the failure criterion.
        exclude_margin_mm: Surface within this distance of a node that carries a load or a
            boundary condition is not evaluated by the criterion (artificial concentrations).
        progress: Called with each stage name of :data:`SOLVE_STAGES` (rank 0 reporting).

    Returns:
        The result dictionary (also written as ``result.json``), on every rank.

    Raises:
        OsteofeError: a malformed or unsupported deck (or one that includes a file outside
            its folder without ``allow_include_outside``), an unknown ``loaded_set``, a deck
            whose estimated memory exceeds what is available (:func:`osteofe.guards.
            check_resources`), a support or load that cannot be applied, or a solver that
            does not converge (nothing is written).
    """
    from fea.solver import ElasticModel, NodalForces, SolverOptions

    step = progress or (lambda _name: None)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    deck = Path(inp_path)

    def prepare() -> tuple[AbaqusModel, str | None, str | None]:
        step("reading model")
        t0 = time.perf_counter()
        model = read_inp(deck, allow_include_outside=allow_include_outside)
        if not ignore_unsupported:
            model.check_supported()
        # Refuse a deck too large for this machine before DOLFINx allocates for it.
        check_resources(image_voxels=0, num_tets=max(model.mesh.num_cells, 1),
                        order=model.mesh.order, degree=model.mesh.order, ranks=comm.size)
        label, kind = _loaded_label(model, loaded_set) if loaded_set else (None, None)
        timings["parse"] = round(time.perf_counter() - t0, 4)
        return model, label, kind

    model, label, kind = on_root(comm, prepare)
    timings = comm.bcast(timings, root=0)

    base = options if options is not None else SolverOptions()
    degree = 2 if model.element_type == "C3D10" else 1
    opts = dataclasses.replace(base, degree=degree)
    step("solving")
    t0 = time.perf_counter()
    supports = _supports(model)
    loaded_nodes = np.flatnonzero(np.any(model.nodal_forces_n != 0.0, axis=1))
    loads = ([NodalForces(loaded_nodes, model.nodal_forces_n[loaded_nodes])]
             if loaded_nodes.size else [])
    reaction_sets = {**model.bc_sets, _ALL_CONSTRAINED: np.unique(model.bc_nodes)}
    fe = ElasticModel(model.mesh, model.youngs_modulus_mpa, model.poisson_ratio, supports,
                      opts, comm)
    try:
        solution = fe.solve(loads, reaction_sets=reaction_sets)
        num_dofs = fe.num_dofs
        solver_timings = dict(fe.timings_s)
    finally:
        fe.destroy()
    timings["solve_total"] = round(time.perf_counter() - t0, 4)
    timings.update({f"solver_{k}": round(v, 4) for k, v in solver_timings.items()})
    timings["solver_krylov"] = round(solution.stats.solve_s, 4)

    def finish() -> dict[str, Any]:
        return _report_and_write(model, solution, opts, num_dofs, comm.size, label, kind,
                                 limits, exclude_margin_mm, ignore_unsupported, deck,
                                 Path(out_dir), timings, start, step)

    return on_root(comm, finish)


def _report_and_write(model: AbaqusModel, solution: CaseSolution, options: SolverOptions,
                      num_dofs: int,
                      ranks: int, label: str | None, kind: str | None, limits: StrainLimits,
                      exclude_margin_mm: float, ignore_unsupported: bool, deck: Path,
                      out_dir: Path, timings: dict[str, float], start: float,
                      step: Callable[[str], None]) -> dict[str, Any]:
    """Rank 0: failure criterion, result dictionary, atomic outputs."""
    mesh = model.mesh
    reactions = {name: value for name, value in solution.set_reactions_n.items()
                 if name != _ALL_CONSTRAINED}
    applied = model.nodal_forces_n.sum(axis=0)
    total_reaction = solution.set_reactions_n[_ALL_CONSTRAINED]
    scale = max(float(np.linalg.norm(applied)), float(np.linalg.norm(total_reaction)), 1e-300)
    disp = solution.displacement_mm
    magnitude = np.linalg.norm(disp, axis=1)
    k_max = int(np.argmax(magnitude))
    eig = principal_strains(solution.strain)
    e_max, e_min = int(np.argmax(eig[:, 2])), int(np.argmin(eig[:, 0]))
    result: dict[str, Any] = {
        "model": model.summary(),
        "reactions_n": {name: np.asarray(value).tolist() for name, value in reactions.items()},
        "applied_force_n": applied.tolist(),
        "equilibrium": {
            "total_reaction_n": total_reaction.tolist(),
            "relative_imbalance": float(np.linalg.norm(applied + total_reaction) / scale),
        },
        "displacement_mm": {
            "max_magnitude": float(magnitude[k_max]),
            "max_magnitude_node_id": int(model.node_ids[k_max]),
            "min": disp.min(axis=0).tolist(),
            "max": disp.max(axis=0).tolist(),
        },
        "principal_strain": {
            "max": float(eig[e_max, 2]),
            "max_element_id": int(model.element_ids[e_max]),
            "min": float(eig[e_min, 0]),
            "min_element_id": int(model.element_ids[e_min]),
            "note": "strain of each element at its centroid",
        },
        "solver": {
            "num_dofs": num_dofs,
            "mpi_ranks": ranks,
            **options.to_dict(),
            "degree_from": model.element_type,
            "iterations": solution.stats.iterations,
            "residual_norm": solution.stats.residual_norm,
            "converged_reason": solution.stats.converged_reason,
        },
        "warnings": [str(u) for u in model.unsupported] if ignore_unsupported else [],
        "unsupported_ignored": [u.to_dict() for u in model.unsupported],
        "notes": list(model.notes),
    }
    loaded = model.nodal_forces_n[model.bc_nodes, model.bc_components] != 0.0
    if np.any(loaded):
        result["notes"].append(
            f"{int(loaded.sum())} constrained dof(s) also carry a load: the support takes it "
            "directly, and it counts in reactions_n (CalculiX's RF totals leave it out)")
    risk = None
    if label is not None:
        step("failure criterion")
        t0 = time.perf_counter()
        boundary = boundary_faces(mesh)
        analysis = strain_failure(mesh, solution.strain, boundary,
                                  excluded_nodes=_excluded(model, exclude_margin_mm),
                                  limits=limits)
        risk = analysis.node_risk_factor
        force = (model.load_sets[label].force_n if kind == "load" else reactions[label])
        applied_n = float(np.linalg.norm(force))
        result["failure"] = {
            "loaded_set": label,
            "load_kind": kind,
            "applied_force_n": np.asarray(force).tolist(),
            "applied_load_n": applied_n,
            "failure_load_n": applied_n * analysis.load_factor,
            **analysis.to_dict(),
            "critical_node_id": int(model.node_ids[analysis.critical_node]),
            "criterion": {"tension_limit": limits.tension,
                          "compression_limit": limits.compression,
                          "averaging_radius_mm": limits.averaging_radius_mm,
                          "source": limits.source,
                          "excluded": f"surface within {exclude_margin_mm} mm of nodes "
                                      "carrying loads or boundary conditions"},
            "linearity": "every load and prescribed displacement of the deck is scaled "
                         "together by the load factor",
        }
        timings["failure"] = round(time.perf_counter() - t0, 4)

    t0 = time.perf_counter()
    files = [Path(f) for f in model.files]
    result["inputs"] = {"path": str(deck), "sha256": sha256_file(deck),
                        "included": [{"path": str(f), "sha256": sha256_file(f)}
                                     for f in files[1:]]}
    timings["inputs_hash"] = round(time.perf_counter() - t0, 4)
    result["versions"] = _versions()
    result["machine"] = {"platform": platform.platform(), "processor": platform.machine()}
    step("writing outputs")
    with staged_output(out_dir) as stage:
        t0 = time.perf_counter()
        _write_fields(stage / "fields.vtu", model, solution, eig, risk)
        timings["write_fields"] = round(time.perf_counter() - t0, 4)
        timings["total"] = round(time.perf_counter() - start, 4)
        result["timings_s"] = timings
        result["outputs"] = [*sorted(p.name for p in stage.iterdir()), "result.json"]
        write_json(stage / "result.json", result)
    return result


def _write_fields(path: Path, model: AbaqusModel, solution: CaseSolution,
                  eig: npt.NDArray[np.float64], risk: npt.NDArray[np.float64] | None) -> None:
    from osteofe.fields import write_vtu

    point_data: dict[str, np.ndarray] = {
        "displacement_mm": solution.displacement_mm,
        "node_id": model.node_ids,
    }
    if risk is not None:
        point_data["risk_factor"] = risk
    cell_data: dict[str, np.ndarray] = {
        "E_MPa": model.youngs_modulus_mpa,
        "poisson_ratio": model.poisson_ratio,
        "material_index": model.material_index.astype(np.int32),
        "element_id": model.element_ids,
        "strain": solution.strain.reshape(-1, 9),
        "max_principal_strain": eig[:, 2],
        "min_principal_strain": eig[:, 0],
    }
    write_vtu(path, model.mesh, point_data, cell_data)
