"""Nonlinear load to failure: displacement-controlled head loading of a softening femur.

Each cell follows an elastic - perfectly plastic - softening curve of an equivalent (von Mises)
strain, the shape used by Keyak et al. (2005) and, after them, the Nijmegen group (Derikx et
al. 2012; Sas et al. 2020). The head patch is pushed along the load direction in increments;
in each increment the cells' secant moduli are updated from the largest equivalent strain
they have reached (damage is irreversible) until the moduli settle, and the reaction force
is recorded. The failure load is the peak of the force-displacement curve.

Simplifications (documented in results): a secant (total-strain) formulation rather than
incremental plasticity, the same curve in tension and compression, and the head patch moved
rigidly as by a stiff cup.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fea.errors import SolverError
from fea.solver import CaseSolution, ElasticModel, SolverOptions, Support
from meshing.types import TetMesh

__all__ = [
    "ForceDisplacementCurve",
    "SofteningMaterial",
    "displacement_controlled_failure",
    "equivalent_strain",
]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]

#: Secant moduli never drop below this fraction of the initial modulus (keeps the operator
#: positive definite once a cell has fully softened).
MIN_SECANT_FRACTION = 1e-3


@dataclass(frozen=True)
class SofteningMaterial:
    """Per-cell elastic - perfectly plastic - softening stress-strain curves.

    sigma(eps) = E eps up to the yield stress S; S up to the plateau end strain eps_AB; then
    S + E_pl (eps - eps_AB) with E_pl <= 0, never below the minimum stress.

    Attributes:
        E_MPa: (m,) initial Young's modulus.
        yield_stress_MPa: (m,) yield (plateau) stress S.
        plateau_end_strain: (m,) strain eps_AB where softening starts (>= S / E).
        softening_modulus_MPa: (m,) slope E_pl of the softening branch (<= 0).
        min_stress_MPa: (m,) residual stress after softening.
        poisson_ratio: Poisson's ratio (constant).
        source: Citation of the parameters.
    """

    E_MPa: FloatArray
    yield_stress_MPa: FloatArray
    plateau_end_strain: FloatArray
    softening_modulus_MPa: FloatArray
    min_stress_MPa: FloatArray
    poisson_ratio: float
    source: str = ""

    def __post_init__(self) -> None:
        arrays = [np.asarray(getattr(self, name), dtype=np.float64) for name in
                  ("E_MPa", "yield_stress_MPa", "plateau_end_strain", "softening_modulus_MPa",
                   "min_stress_MPa")]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise ValueError("softening material arrays must all be (m,)")
        e, s, eps_ab, e_pl, s_min = arrays
        if np.any(~(e > 0)) or np.any(~(s > 0)) or np.any(e_pl > 0) or np.any(s_min < 0):
            raise ValueError("need E > 0, yield stress > 0, softening modulus <= 0, "
                             "minimum stress >= 0")
        object.__setattr__(self, "E_MPa", e)
        object.__setattr__(self, "yield_stress_MPa", s)
        # The plateau cannot end before yield.
        object.__setattr__(self, "plateau_end_strain", np.maximum(eps_ab, s / e))
        object.__setattr__(self, "softening_modulus_MPa", e_pl)
        object.__setattr__(self, "min_stress_MPa", np.minimum(s_min, s))

    def stress(self, strain: FloatArray) -> FloatArray:
        """Equivalent stress (MPa) at equivalent strains (m,) on each cell's curve."""
        eps = np.asarray(strain, dtype=np.float64)
        elastic = self.E_MPa * eps
        softened = np.maximum(
            self.yield_stress_MPa + self.softening_modulus_MPa * (eps - self.plateau_end_strain),
            self.min_stress_MPa)
        plateau_or_soft = np.where(eps <= self.plateau_end_strain, self.yield_stress_MPa,
                                   softened)
        return np.asarray(np.where(elastic <= self.yield_stress_MPa, elastic, plateau_or_soft))

    def secant_modulus(self, strain: FloatArray) -> FloatArray:
        """Secant modulus sigma(eps) / eps (MPa), floored at a fraction of E."""
        eps = np.asarray(strain, dtype=np.float64)
        safe = np.maximum(eps, 1e-12)
        secant = np.where(eps > 0.0, self.stress(safe) / safe, self.E_MPa)
        return np.asarray(np.clip(secant, MIN_SECANT_FRACTION * self.E_MPa, self.E_MPa))


def equivalent_strain(strain: FloatArray, poisson_ratio: float) -> FloatArray:
    """Von Mises equivalent strain: the von Mises stress of a unit-modulus material.

    For uniaxial stress it equals the absolute axial strain.

    Args:
        strain: (m, 3, 3) strain tensors.
        poisson_ratio: Poisson's ratio.

    Returns:
        (m,) equivalent strains (>= 0).
    """
    nu = float(poisson_ratio)
    eps = 0.5 * (strain + np.swapaxes(strain, -1, -2))
    trace = np.trace(eps, axis1=-2, axis2=-1)[..., None, None]
    stress = nu / ((1 + nu) * (1 - 2 * nu)) * trace * np.eye(3) + eps / (1 + nu)
    dev = stress - np.trace(stress, axis1=-2, axis2=-1)[..., None, None] / 3.0 * np.eye(3)
    return np.asarray(np.sqrt(1.5 * np.einsum("...ij,...ij->...", dev, dev)))


@dataclass(frozen=True)
class ForceDisplacementCurve:
    """Outcome of a displacement-controlled nonlinear analysis.

    Attributes:
        displacement_mm: (k,) head displacement along the load direction at each increment.
        force_n: (k,) reaction force along the load direction.
        iterations: (k,) secant iterations per increment.
        converged: (k,) whether the secant moduli settled within the tolerance.
        yielded_fraction: (k,) fraction of cells past their yield strain.
        peak_force_n: Peak of the curve (the failure load).
        peak_displacement_mm: Displacement at the peak.
        peak_reached: False when the analysis stopped before the force dropped after a peak.
        critical_cells: Cells softened furthest at the end (indices, most damaged first).
        wall_s: Wall time of the analysis.
        notes: Modelling notes for the report (a description, then :attr:`warnings`).
        warnings: The notes that qualify the number (peak not reached, increments whose
            moduli did not settle): to be shown as warnings.
        preconditioner_setups: Preconditioner set-ups done (secant operators are solved with
            an earlier preconditioner until CG slows down).
        krylov_iterations: Total CG iterations over all secant solves.
    """

    displacement_mm: FloatArray
    force_n: FloatArray
    iterations: npt.NDArray[np.int64]
    converged: npt.NDArray[np.bool_]
    yielded_fraction: FloatArray
    peak_force_n: float
    peak_displacement_mm: float
    peak_reached: bool
    critical_cells: npt.NDArray[np.int64]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    preconditioner_setups: int = 0
    krylov_iterations: int = 0

    def to_csv(self) -> str:
        """The curve as CSV text (one row per increment)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["increment", "displacement_mm", "force_N", "secant_iterations",
                         "converged", "yielded_cell_fraction"])
        for i in range(self.force_n.size):
            writer.writerow([i, f"{self.displacement_mm[i]:.6g}", f"{self.force_n[i]:.6g}",
                             int(self.iterations[i]), int(self.converged[i]),
                             f"{self.yielded_fraction[i]:.6g}"])
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "failure_load_N": self.peak_force_n,
            "peak_displacement_mm": self.peak_displacement_mm,
            "peak_reached": self.peak_reached,
            "increments": int(self.force_n.size),
            "secant_iterations_total": int(self.iterations.sum()),
            "unconverged_increments": int(np.count_nonzero(~self.converged)),
            "wall_s": round(self.wall_s, 3),
            "preconditioner_setups": self.preconditioner_setups,
            "krylov_iterations_total": self.krylov_iterations,
            "notes": self.notes,
        }


@dataclass
class _PreconditionerReuse:
    """Bookkeeping for solving secant operators with an older preconditioner.

    Attributes:
        fresh_iterations: CG iterations of the first solve after the last set-up.
        stale: The operator changed since the preconditioner was built.
        setups: Preconditioner set-ups done (the first, at model creation, included).
        krylov_iterations: CG iterations of all solves.
        setup_s: Wall time of the last set-up (reassembly included), s.
        excess_s: Time spent on CG iterations beyond ``fresh_iterations`` since then, s.
    """

    fresh_iterations: int = 0
    stale: bool = False
    setups: int = 1
    krylov_iterations: int = 0
    setup_s: float = 0.0
    excess_s: float = 0.0

    @property
    def refresh_due(self) -> bool:
        """The extra iterations of the old preconditioner have cost more than a set-up."""
        return self.excess_s > self.setup_s


def _update_secant_moduli(model: ElasticModel, moduli: FloatArray,
                          reuse: _PreconditionerReuse, *, force_refresh: bool = False) -> None:
    """Reassemble with new secant moduli; rebuild the preconditioner only when it has paid.

    Secant moduli only fall, so the preconditioner of stiffer moduli stays symmetric positive
    definite and CG still converges to the same tolerance, in more iterations. It is rebuilt
    once those extra iterations have cost as much time as one set-up (rent-or-buy), so the
    analysis never spends more than about twice the best of the two policies.
    """
    refresh = force_refresh or reuse.refresh_due
    # The times behind refresh_due are each rank's own: the ranks must agree, or one would
    # rebuild the preconditioner (collective) while another solves (found hung under MPI).
    if model.comm.size > 1:
        from mpi4py import MPI

        refresh = bool(model.comm.allreduce(refresh, op=MPI.LOR))
    t0 = time.perf_counter()
    model.update_moduli(moduli, refresh_preconditioner=refresh)
    if refresh:
        reuse.setup_s = time.perf_counter() - t0
        reuse.setups += 1
        reuse.excess_s = 0.0
        reuse.stale = False
    else:
        reuse.stale = True


def _solve_secant(model: ElasticModel, moduli: FloatArray,
                  reuse: _PreconditionerReuse) -> CaseSolution:
    """Solve the head-displacement case; a failure with a stale preconditioner rebuilds it."""
    try:
        solution = model.solve([])
    except SolverError:
        if not reuse.stale:
            raise
        model.reset_solution()  # a diverged iterate is no start for the next solve
        _update_secant_moduli(model, moduli, reuse, force_refresh=True)
        solution = model.solve([])
    iterations = solution.stats.iterations
    reuse.krylov_iterations += iterations
    if not reuse.stale and reuse.excess_s == 0.0:
        reuse.fresh_iterations = iterations
    else:
        extra = max(iterations - reuse.fresh_iterations, 0)
        reuse.excess_s += extra * solution.stats.solve_s / max(iterations, 1)
    return solution


def displacement_controlled_failure(
    mesh: TetMesh,
    material: SofteningMaterial,
    fixed_nodes: npt.NDArray[np.int64],
    head_nodes: npt.NDArray[np.int64],
    direction: npt.ArrayLike,
    *,
    step_mm: float,
    options: SolverOptions | None = None,
    comm: Any = None,
    max_increments: int = 40,
    stop_fraction: float = 0.8,
    tolerance: float = 1e-3,
    max_iterations: int = 25,
    extra_supports: tuple[Support, ...] = (),
    progress: Callable[[int, float, float], None] | None = None,
) -> ForceDisplacementCurve:
    """Push the head patch along ``direction`` until the reaction force has peaked.

    Collective under MPI (every rank calls it with the same arguments).

    Args:
        mesh: The mesh.
        material: Per-cell softening curves.
        fixed_nodes: Nodes fixed in all directions (distal cut).
        head_nodes: Nodes of the head patch, moved rigidly by ``step_mm`` per increment.
        direction: (3,) world direction of the head displacement (the load direction).
        step_mm: Displacement increment.
        options: Linear solver options.
        comm: MPI communicator (default COMM_WORLD).
        max_increments: Increment limit.
        stop_fraction: Stop once the force falls below this fraction of the peak.
        tolerance: Secant iterations stop when no modulus changes by more than this fraction.
        max_iterations: Secant iteration limit per increment.
        extra_supports: Further supports (e.g. a ground contact).
        progress: Called after each increment with (increment, displacement, force).

    Returns:
        The force-displacement curve and its peak.

    Raises:
        SolverError: when the first increment is already non-converging or forces are not
            positive (a wrongly placed load).
    """
    from mpi4py import MPI

    comm = comm if comm is not None else MPI.COMM_WORLD
    if not step_mm > 0.0:
        raise ValueError(f"displacement step must be positive, got {step_mm}")
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    start = time.perf_counter()
    supports = [Support("distal_cut", fixed_nodes), Support("head", head_nodes,
                                                           displacement_mm=(0.0, 0.0, 0.0)),
                *extra_supports]
    model = ElasticModel(mesh, material.E_MPa, material.poisson_ratio, supports, options, comm)
    model.set_warm_start(True)
    reuse = _PreconditionerReuse(setup_s=model.timings_s.get("preconditioner_setup", 0.0))
    kappa = np.zeros(mesh.num_cells)  # largest equivalent strain reached (history)
    secant = material.E_MPa.copy()
    yield_strain = material.yield_stress_MPa / material.E_MPa
    disp, force, iters, conv, yielded = [], [], [], [], []
    peak, peak_reached = 0.0, False
    try:
        for increment in range(1, max_increments + 1):
            delta = increment * step_mm
            model.set_support_displacement("head", delta * d)
            converged = False
            # Damage only grows, also across secant iterations: the moduli fall monotonically
            # and the iteration settles.
            kappa_increment = kappa.copy()
            used_iterations = 0
            for _ in range(max_iterations):
                used_iterations += 1
                solution = _solve_secant(model, secant, reuse)
                kappa_increment = np.maximum(
                    kappa_increment, equivalent_strain(solution.strain, material.poisson_ratio))
                updated = material.secant_modulus(kappa_increment)
                change = float(np.max(np.abs(updated - secant) / secant))
                if change <= tolerance:
                    converged = True
                    break
                secant = updated
                _update_secant_moduli(model, secant, reuse)
            kappa = kappa_increment
            f = float(solution.reactions_n["head"] @ d)
            if increment == 1 and not f > 0.0:
                raise SolverError(f"the head reaction force is {f:.3g} N at the first increment",
                                  hint="check the load direction and the supports")
            disp.append(delta)
            force.append(f)
            iters.append(used_iterations)
            conv.append(converged)
            yielded.append(float(np.mean(kappa > yield_strain)))
            if progress is not None:
                progress(increment, delta, f)
            if f > peak:
                peak = f
            elif f < stop_fraction * peak:
                peak_reached = True
                break
    finally:
        model.destroy()
    force_arr = np.asarray(force)
    k = int(np.argmax(force_arr))
    damage = kappa / np.maximum(yield_strain, 1e-12)
    warnings: list[str] = []
    if not peak_reached:
        warnings.append(f"the force had not dropped below {stop_fraction:.0%} of its peak "
                        f"after {len(force)} increments: the failure load is a lower bound")
    if not all(conv):
        warnings.append(f"{conv.count(False)} of {len(conv)} secant increments stopped at "
                        f"{max_iterations} iterations before their moduli settled, so the "
                        "secant peak may be biased high (the plasticity method converges "
                        "each increment)")
    notes = ["secant (total-strain) softening model, von Mises equivalent strain, the same "
             "curve in tension and compression; head patch displaced rigidly", *warnings]
    return ForceDisplacementCurve(
        displacement_mm=np.asarray(disp), force_n=force_arr,
        iterations=np.asarray(iters, dtype=np.int64), converged=np.asarray(conv),
        yielded_fraction=np.asarray(yielded), peak_force_n=float(force_arr[k]),
        peak_displacement_mm=float(disp[k]), peak_reached=peak_reached,
        critical_cells=np.argsort(-damage)[:20].astype(np.int64),
        wall_s=time.perf_counter() - start, notes=notes, warnings=warnings,
        preconditioner_setups=reuse.setups, krylov_iterations=reuse.krylov_iterations,
    )
