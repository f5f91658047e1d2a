"""Incremental elasto-plasticity with softening: the nonlinear load to failure, by Newton.

Constitutive law (per quadrature point, small strain): isotropic elasticity, a pressure-
dependent yield surface of Drucker-Prager form written with the von Mises stress q and the
first stress invariant I1,

    f = q + a I1 - (1 - a) sigma_c(kappa),    a = (1 - r) / (1 + r),

so that uniaxial compression yields at sigma_c and uniaxial tension at r sigma_c (r = the
tension/compression ratio, here the ratio of the linear criterion's strain limits, so that the
nonlinear and the linear model agree on where bone is weaker); a von Mises plastic potential
(isochoric flow, no dilatancy; at the cone's apex, where the hydrostatic tension alone
exceeds the surface, the return stops at a zero deviator and keeps the hydrostatic stress, a
tension cut-off that keeps the committed state consistent), and a piecewise-linear compressive
yield curve sigma_c(kappa) of the equivalent plastic strain kappa with three segments (slopes H0,
H1 and 0; breaks kappa1, kappa2). Keyak et al. 2005's curve is H0 = 0 (perfectly plastic
plateau of length eps_AB), then softening, then the minimum stress as a plateau; a hardening
material is one segment of slope H0 > 0.

The return mapping is written in UFL (closed form per segment, the segment picked with
conditionals), so that ``ufl.derivative`` of the residual gives the consistent (algorithmic)
tangent (points on the yield surface count as loading in it); it is non-symmetric for
r != 1, so the Krylov method inside Newton is GMRES (GAMG preconditioned, rigid-body
near-nullspace). History (plastic strain tensor, kappa) lives in basix quadrature spaces at
the points of the stiffness integral and is updated only after an increment has converged.
PETSc SNES ``newtonls`` solves each increment with the equilibrium criterion
||R|| <= rtol ||F|| (free dofs; ||F|| the applied load, or the internal force under direct
displacement control; default rtol 1e-6); an increment that does not converge is repeated
with half the step, from the last converged state.

Path following (``control``): "load" (a load factor per increment; cannot pass the peak),
"displacement" (a support displaced; tests) and "indirect" (the clinical model: indirect
displacement control, Batoz & Dhatt 1979, Int J Numer Meth Eng 14:1262; de Borst 1987,
Comput Struct 25:211): the linear case's head traction and supports are kept, the load factor
is an unknown, and the mean head-patch displacement along the load is prescribed per
increment. SNES ``newtonls`` solves the bordered system [u; load factor] itself (a shell
Jacobian and a shell preconditioner, :class:`_BorderedNewton`), so the analysis passes the
limit point with every kept increment in equilibrium, and stops soon after the force has
fallen (the peak is bracketed). A snap-back in the head displacement (the path turning back)
cannot be passed: the analysis stops there with a note that the peak is not bracketed.

Regularisation: crack band (Bazant & Oh 1983, Materiaux et Constructions 16:155-177,
doi:10.1007/BF02486267): the softening plastic modulus is scaled by the element size h so
that the energy dissipated by softening per unit crack area, g_f * h, equals its value at the
reference element size l_ref at which the softening law was calibrated (Keyak's models: 3 mm
elements). h is the edge of the regular tetrahedron of the cell's volume, (6 sqrt(2) V)^(1/3).

MPI: every function here is collective (all ranks call it with the same arguments).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fea.backend import load_backend
from fea.errors import SolverError
from fea.loads import LoadPatch
from fea.solver import ElasticModel
from meshing.types import TetMesh

__all__ = [
    "EPS_AB_READING",
    "IncrementRecord",
    "PlasticMaterial",
    "PlasticityResult",
    "crack_band_softening",
    "element_size_mm",
    "incremental_failure",
    "keyak2005_plastic",
]

load_backend()

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402
from basix.ufl import quadrature_element  # noqa: E402
from mpi4py import MPI  # noqa: E402
from petsc4py import PETSc as _PETSc  # noqa: E402

PETSc: Any = _PETSc
logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]

#: Keyak's voxel models used 3 mm cubic elements: the element size at which the softening
#: law was calibrated (Keyak et al. 2005, CORR 437:219; Keyak 2001, Med Eng Phys 23:165).
KEYAK_REFERENCE_LENGTH_MM = 3.0
#: What eps_AB is taken to mean, and how far that was checked (written to result.json).
EPS_AB_READING = (
    "eps_AB is read as the strain interval of the perfectly plastic plateau, from the yield "
    "point A to the onset of softening B (eps_B = eps_A + eps_AB), and so as its length in "
    "plastic strain. NOT verified against Keyak et al. 2005 Fig. 1: the paper's text and "
    "figure could not be found (searched stored pages, docs and code). A third-party "
    "re-implementation of the Keyak 2005 law (A. Sas 2019, ParOSol scripts, found in the code "
    "corpus) uses the same reading (eps_B = eps_A + eps_AB) but other coefficients (trabecular "
    "0.00189 + 0.0241 rho, cortical 0.0184 - 0.0100 rho, each scaled by an element-size "
    "factor) than material.laws' keyak2005_plateau_end_strain (-0.00315 + 0.0728 rho, quoted "
    "from memory there); the coefficients are unverified too.")
#: Yield stress that keeps a cell elastic (floor cells: marrow, fat, lytic lesion).
ELASTIC_YIELD_MPA = 1.0e9
#: Softening plastic moduli are kept above -this x E (element-level snap-back limit).
MAX_SOFTENING_FRACTION = 0.5


@dataclass(frozen=True)
class PlasticMaterial:
    """Per-cell yield curves (compression), piecewise linear in the equivalent plastic strain.

    sigma_c(kappa) = S + H0 kappa (kappa <= kappa1); then slope H1 up to kappa2; then flat.

    Attributes:
        yield_stress_MPa: (m,) initial compressive yield stress S.
        hardening_MPa: (m,) plastic modulus H0 of the first segment (0: perfectly plastic).
        kappa1: (m,) equivalent plastic strain at the end of the first segment.
        softening_MPa: (m,) plastic modulus H1 of the second segment (<= 0: softening).
        kappa2: (m,) equivalent plastic strain where the curve turns flat (>= kappa1).
        tension_ratio: Tensile over compressive yield stress r (0, 1].
        poisson_ratio: Poisson's ratio.
        source: Citation of the laws.
    """

    yield_stress_MPa: FloatArray
    hardening_MPa: FloatArray
    kappa1: FloatArray
    softening_MPa: FloatArray
    kappa2: FloatArray
    tension_ratio: float
    poisson_ratio: float
    source: str = ""

    def __post_init__(self) -> None:
        names = ("yield_stress_MPa", "hardening_MPa", "kappa1", "softening_MPa", "kappa2")
        arrays = [np.asarray(getattr(self, n), dtype=np.float64).reshape(-1) for n in names]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError("plastic material arrays must all be (m,)")
        s, _, k1, _, k2 = arrays
        if np.any(~(s > 0)) or np.any(k1 < 0) or np.any(k2 < k1):
            raise ValueError("need yield stress > 0 and 0 <= kappa1 <= kappa2")
        if not 0.0 < self.tension_ratio <= 1.0:
            raise ValueError(f"tension_ratio must lie in (0, 1], got {self.tension_ratio}")
        for name, a in zip(names, arrays, strict=True):
            object.__setattr__(self, name, a)

    @property
    def num_cells(self) -> int:
        """Number of cells m."""
        return int(self.yield_stress_MPa.size)

    def compressive_stress(self, kappa: FloatArray) -> FloatArray:
        """(m,) yield stress sigma_c at equivalent plastic strains kappa (m,) (numpy)."""
        k = np.asarray(kappa, dtype=np.float64)
        s1 = self.yield_stress_MPa + self.hardening_MPa * self.kappa1
        s2 = s1 + self.softening_MPa * (self.kappa2 - self.kappa1)
        return np.where(k <= self.kappa1, self.yield_stress_MPa + self.hardening_MPa * k,
                        np.where(k <= self.kappa2, s1 + self.softening_MPa * (k - self.kappa1),
                                 s2))


def element_size_mm(mesh: TetMesh) -> FloatArray:
    """(m,) crack-band width per cell: edge of the regular tetrahedron of the cell's volume.

    h = (6 sqrt(2) V)^(1/3), V from the cell's four corners (mm^3).
    """
    corners = mesh.points[mesh.cells[:, :4]]
    edges = corners[:, 1:] - corners[:, :1]
    volume = np.abs(np.linalg.det(edges)) / 6.0
    return np.asarray(np.cbrt(6.0 * math.sqrt(2.0) * volume))


def crack_band_softening(softening_ref_mpa: FloatArray, element_size: FloatArray,
                         youngs_modulus_mpa: FloatArray, reference_length_mm: float
                         ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Crack-band scaling of a softening plastic modulus (Bazant & Oh 1983).

    The plastic strain over which the stress falls is scaled by l_ref / h, so the softening
    energy per unit band area (g_f h) stays that of the reference size:
    H1(h) = H1_ref h / l_ref. The result is kept above -MAX_SOFTENING_FRACTION x E (large
    elements would otherwise snap back).

    Args:
        softening_ref_mpa: (m,) plastic softening modulus at the reference size (<= 0).
        element_size: (m,) band width h, mm.
        youngs_modulus_mpa: (m,) Young's modulus.
        reference_length_mm: l_ref.

    Returns:
        (m,) regularised modulus and (m,) mask of the cells where the limit was applied.
    """
    scaled = np.asarray(softening_ref_mpa) * np.asarray(element_size) / reference_length_mm
    limit = -MAX_SOFTENING_FRACTION * np.asarray(youngs_modulus_mpa)
    capped = scaled < limit
    return np.where(capped, limit, scaled), capped


def keyak2005_plastic(rho_ash: FloatArray, youngs_modulus_mpa: FloatArray,
                      elastic_cells: npt.NDArray[np.bool_], element_size: FloatArray, *,
                      tension_ratio: float, poisson_ratio: float,
                      reference_length_mm: float = KEYAK_REFERENCE_LENGTH_MM,
                      regularise: bool = True) -> tuple[PlasticMaterial, dict[str, Any]]:
    """Keyak et al. 2005 elastic - perfectly plastic - softening curves per cell.

    Keyak JH, Kaneko TS, Tehranzadeh J, Skinner HB (2005) Predicting proximal femoral strength
    using structural engineering models. Clin Orthop Relat Res 437:219-228 (laws in
    material.laws LAW_SETS["keyak2005"]): compressive yield S = 102 rho^1.80, a perfectly
    plastic plateau over the strain eps_AB (from yield A to the onset of softening B; the
    stress is constant there, so its length in total strain is its length in plastic strain;
    this reading is not verified against Keyak 2005's Fig. 1, whose text could not be found,
    see :data:`EPS_AB_READING`),
    softening with the total-strain slope E_pl = -2080 rho^1.45 down to the minimum stress
    43.1 rho^1.81, then flat. The plastic modulus of the softening branch is
    H = E E_pl / (E - E_pl). The modulus E is the linear model's (same law, floor and
    calibration); cells given as elastic (at the floor) never yield.

    Args:
        rho_ash: (m,) ash density, g/cm^3.
        youngs_modulus_mpa: (m,) per-cell modulus of the linear model (cell mean if the model
            integrates E per quadrature point).
        elastic_cells: (m,) cells that stay elastic (floor: lesion, marrow).
        element_size: (m,) crack-band width, mm (:func:`element_size_mm`).
        tension_ratio: Tensile / compressive yield (the linear criterion's limit ratio).
        poisson_ratio: Poisson's ratio.
        reference_length_mm: Element size of the softening law's calibration.
        regularise: Apply the crack band (False: the law as published, mesh dependent).

    Returns:
        The material and a JSON-ready record of the regularisation.
    """
    from material.laws import LAW_SETS, LAWS

    laws = {q: LAWS[name] for q, name in LAW_SETS["keyak2005"].items()}
    rho = np.maximum(np.asarray(rho_ash, dtype=np.float64), 1e-3)
    e = np.asarray(youngs_modulus_mpa, dtype=np.float64)
    s = np.asarray(laws["yield_stress"](rho), dtype=np.float64)
    plateau = np.maximum(np.asarray(laws["plateau_end_strain"](rho), dtype=np.float64), 0.0)
    e_pl = np.minimum(np.asarray(laws["softening_modulus"](rho), dtype=np.float64), -1e-6)
    s_min = np.clip(np.asarray(laws["min_stress"](rho), dtype=np.float64), 0.0, s)
    h_ref = e * e_pl / (e - e_pl)
    if regularise:
        h1, capped = crack_band_softening(h_ref, element_size, e, reference_length_mm)
    else:
        h1, capped = h_ref, np.zeros(e.size, dtype=bool)
    elastic = np.asarray(elastic_cells, dtype=bool)
    s = np.where(elastic, ELASTIC_YIELD_MPA, s)
    kappa1 = plateau
    kappa2 = kappa1 + (s - np.where(elastic, s, s_min)) / np.abs(h1)
    material = PlasticMaterial(
        yield_stress_MPa=s, hardening_MPa=np.zeros_like(s), kappa1=kappa1, softening_MPa=h1,
        kappa2=kappa2, tension_ratio=tension_ratio, poisson_ratio=poisson_ratio,
        source="Keyak et al. 2005, CORR 437:219 (material.laws LAW_SETS['keyak2005']); "
               "tension/compression ratio from the linear strain limits")
    record = {
        "type": "crack_band" if regularise else "none",
        "source": "Bazant & Oh 1983, Mater Constr 16:155, doi:10.1007/BF02486267",
        "reference_length_mm": reference_length_mm,
        "element_size_mm": {"min": float(np.min(element_size)),
                            "median": float(np.median(element_size)),
                            "max": float(np.max(element_size))},
        "element_size_definition": "edge of the regular tetrahedron of the cell volume",
        "capped_cells": int(np.count_nonzero(capped & ~elastic)),
        "elastic_cells": int(np.count_nonzero(elastic)),
    }
    return material, record


@dataclass(frozen=True)
class IncrementRecord:
    """One attempted increment.

    Attributes:
        displacement_mm: Control displacement (or mean head displacement) along the load.
        force_N: Force along the load.
        converged: Newton met the residual criterion.
        newton_iterations: Newton iterations used.
        residual: Final ||R|| / ||F|| (applied load, or internal force).
        plastic_fraction: Fraction of quadrature points that have yielded (converged only).
        cut_back: The attempt failed and was repeated with half the step (not part of the
            curve).
        target: The control value attempted (mm, or N under load control).
        krylov_iterations: Inner Krylov iterations of the attempt (indirect control).
        peak_refinement: Indirect control: an extra increment from the converged state
            before the bracketed peak to the vertex of the parabola through the three
            increments around it (the curve's maximum lies between samples).
    """

    displacement_mm: float
    force_N: float
    converged: bool
    newton_iterations: int
    residual: float
    plastic_fraction: float = 0.0
    cut_back: bool = False
    target: float = math.nan
    krylov_iterations: int = 0
    peak_refinement: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {"displacement_mm": finite(self.displacement_mm), "force_N": finite(self.force_N),
                "converged": self.converged, "newton_iterations": self.newton_iterations,
                "residual": finite(self.residual), "plastic_fraction": self.plastic_fraction,
                "cut_back": self.cut_back, "target": finite(self.target),
                "krylov_iterations": self.krylov_iterations,
                "peak_refinement": self.peak_refinement}


@dataclass(frozen=True)
class PlasticityResult:
    """Outcome of an incremental analysis.

    Attributes:
        increments: Every attempted increment, in order (failed attempts included).
        peak_force_n: Largest force of a converged increment.
        peak_displacement_mm: Its displacement.
        peak_bracketed: The analysis ended past the peak (displacement control: force fell
            below the stop fraction; indirect control: a converged increment after the peak
            has a lower force; load control: the step was cut to its minimum at a tangent
            below ``flat_fraction`` of the initial stiffness).
        all_increments_converged: No increment ended unconverged at the minimum step.
        control: "displacement", "load" or "indirect".
        wall_s: Wall time, s.
        notes: Messages (shown as warnings where they qualify the number).
        plastic_strain_eq: (m,) cell mean equivalent plastic strain at the end (on all ranks).
        peak_resolution: Smallest step tried (N under load control, mm under displacement
            control; indirect control: the larger step next to the peak, mm).
        peak_interpolated_n: Indirect control: the maximum of the parabola through the peak
            increment and its two neighbours (how far the sampled peak may lie below the
            curve's; NaN when not bracketed).
        solver_stats: Totals (Newton and Krylov iterations, preconditioner builds).
    """

    increments: tuple[IncrementRecord, ...]
    peak_force_n: float
    peak_displacement_mm: float
    peak_bracketed: bool
    all_increments_converged: bool
    control: str
    wall_s: float
    notes: list[str] = field(default_factory=list)
    plastic_strain_eq: FloatArray = field(default_factory=lambda: np.zeros(0))
    peak_resolution: float = math.nan
    peak_interpolated_n: float = math.nan
    solver_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def converged_curve(self) -> tuple[FloatArray, FloatArray]:
        """(k,) displacement and (k,) force of the converged increments (origin first)."""
        # Sorted by displacement: a peak refinement restarts from an earlier state.
        ok = sorted((r for r in self.increments if r.converged),
                    key=lambda r: r.displacement_mm)
        return (np.array([0.0] + [r.displacement_mm for r in ok]),
                np.array([0.0] + [r.force_N for r in ok]))

    @property
    def displacement_mm(self) -> FloatArray:
        """(k,) displacements of the converged curve (origin first)."""
        return self.converged_curve[0]

    @property
    def force_n(self) -> FloatArray:
        """(k,) forces of the converged curve (origin first)."""
        return self.converged_curve[1]

    def to_csv(self) -> str:
        """The converged increments as CSV text (one row each; attempts are in to_dict)."""
        rows = ["increment,displacement_mm,force_N,newton_iterations,residual,"
                "plastic_fraction"]
        rows += [f"{i},{r.displacement_mm:.6g},{r.force_N:.6g},{r.newton_iterations},"
                 f"{r.residual:.3e},{r.plastic_fraction:.6g}"
                 for i, r in enumerate(self.increments) if r.converged]
        return "\n".join(rows) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the result.json ``nonlinear`` object, without the material)."""
        return {
            "method": "incremental_plasticity",
            "peak_load_N": self.peak_force_n,
            "failure_load_N": self.peak_force_n,
            "peak_reached": self.peak_bracketed,
            "peak_displacement_mm": self.peak_displacement_mm,
            "peak_bracketed": self.peak_bracketed,
            "all_increments_converged": self.all_increments_converged,
            "control": self.control,
            "peak_resolution": (self.peak_resolution if math.isfinite(self.peak_resolution)
                                else None),
            "peak_resolution_units": "N" if self.control == "load" else "mm",
            "increments": [r.to_dict() for r in self.increments],
            "wall_s": round(self.wall_s, 3),
            "notes": self.notes,
        } | ({} if self.control != "indirect" else {
            "control_measure": "mean displacement of the head patch's nodes along the load "
                               "(mm); the load keeps the linear case's traction distribution, "
                               "scaled by the load factor (an unknown)",
            "peak_interpolated_N": (self.peak_interpolated_n
                                    if math.isfinite(self.peak_interpolated_n) else None),
            "solver": "PETSc SNES newtonls on the bordered system [u; load factor] (shell "
                      "Jacobian, shell PC: block elimination with two GMRES solves sharing "
                      "one GAMG preconditioner)",
            "solver_stats": self.solver_stats,
        })


class _Formulation:
    """UFL forms, history spaces and the SNES of one model (internal)."""

    def __init__(self, model: ElasticModel, material: PlasticMaterial,
                 patch: LoadPatch | None, krylov_rtol: float, *,
                 lag_preconditioner: bool = False, max_newton: int = 15,
                 inexact: bool = False) -> None:
        if material.num_cells != model.num_cells:
            raise ValueError(f"material has {material.num_cells} cells, mesh "
                             f"{model.num_cells}")
        self.model = model
        domain = model.domain
        degree = model.options.modulus_quadrature_degree
        self.dx = ufl.dx(domain=domain, metadata={"quadrature_degree": degree,
                                                   "quadrature_scheme": "default"})
        q_scalar = quadrature_element("tetrahedron", value_shape=(), degree=degree)
        q_tensor = quadrature_element("tetrahedron", value_shape=(3, 3), degree=degree)
        self.Q = dolfinx.fem.functionspace(domain, q_scalar)
        self.QT = dolfinx.fem.functionspace(domain, q_tensor)
        self.eps_p = dolfinx.fem.Function(self.QT, name="plastic_strain")
        self.kappa = dolfinx.fem.Function(self.Q, name="equivalent_plastic_strain")
        dg0 = dolfinx.fem.functionspace(domain, ("DG", 0))
        cell_map = np.asarray(domain.topology.original_cell_index, dtype=np.int64)

        def cellwise(values: FloatArray) -> Any:
            f = dolfinx.fem.Function(dg0)
            f.x.array[:] = np.asarray(values, dtype=np.float64)[cell_map]
            return f

        s0 = cellwise(material.yield_stress_MPa)
        h0 = cellwise(material.hardening_MPa)
        k1 = cellwise(material.kappa1)
        h1 = cellwise(material.softening_MPa)
        k2 = cellwise(material.kappa2)
        self._fields = (s0, h0, k1, h1, k2)
        r = material.tension_ratio
        a = (1.0 - r) / (1.0 + r)
        E, nu = model._E, model._nu
        mu = E / (2.0 * (1.0 + nu))
        lmbda = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
        u = model.u
        v = ufl.TestFunction(model.V)
        I3 = ufl.Identity(3)
        eps = ufl.sym(ufl.grad(u))
        eps_e = eps - self.eps_p
        sig_tr = 2.0 * mu * eps_e + lmbda * ufl.tr(eps_e) * I3
        s_tr = ufl.dev(sig_tr)
        # A tiny floor keeps q differentiable at a zero deviator (elastic there anyway).
        q_tr = ufl.sqrt(1.5 * ufl.inner(s_tr, s_tr) + 1e-24)
        i1 = ufl.tr(sig_tr)
        kap = self.kappa
        s1 = s0 + h0 * k1
        s2 = s1 + h1 * (k2 - k1)
        drive = q_tr + a * i1
        sc_old = ufl.conditional(ufl.le(kap, k1), s0 + h0 * kap,
                                 ufl.conditional(ufl.le(kap, k2), s1 + h1 * (kap - k1), s2))
        f_tr = drive - (1.0 - a) * sc_old
        # Closed-form return on each straight segment; the yield curve is monotone in
        # Delta gamma (3 mu + (1 - a) H > 0), so exactly one segment's answer lies in it.
        dg0_ = (drive - (1.0 - a) * (s0 + h0 * kap)) / (3.0 * mu + (1.0 - a) * h0)
        dg1_ = (drive - (1.0 - a) * (s1 + h1 * (kap - k1))) / (3.0 * mu + (1.0 - a) * h1)
        in0 = ufl.And(ufl.le(kap, k1), ufl.le(kap + dg0_, k1))
        in1 = ufl.And(ufl.le(kap, k2), ufl.le(kap + dg1_, k2))
        # The active segment's constants, picked by conditions that are piecewise constant
        # in u: the derivative (the consistent tangent) then goes through one formula only.
        zero = 0.0 * h0
        h_act = ufl.conditional(in0, h0, ufl.conditional(in1, h1, zero))
        s_act = ufl.conditional(in0, s0, ufl.conditional(in1, s1, s2))
        k_act = ufl.conditional(in0, zero, ufl.conditional(in1, k1, k2))
        dg_act = (drive - (1.0 - a) * (s_act + h_act * (kap - k_act))) / (
            3.0 * mu + (1.0 - a) * h_act)
        # Apex: where the hydrostatic tension alone exceeds the surface (a I1 > (1 - a)
        # sigma_c), the isochoric return would carry the deviator through zero; it stops
        # there (the deviator is fully relaxed, the hydrostatic stress kept), so that the
        # committed state reproduces its stress (a tension cut-off at the cone's apex).
        dg_act = ufl.min_value(dg_act, q_tr / (3.0 * mu))
        dgamma = ufl.conditional(ufl.gt(f_tr, 0.0), dg_act, 0.0)
        normal = 1.5 * s_tr / q_tr
        sigma = sig_tr - 2.0 * mu * dgamma * normal
        self.sigma = sigma
        # The tangent counts points on the yield surface (to round-off: the converged state
        # that starts an increment) as loading: the first Newton iteration of an increment
        # then uses the elasto-plastic tangent, not the elastic one (the residual is exact).
        on_surface = -1e-8 * (1.0 - a) * sc_old
        sigma_tangent = sig_tr - 2.0 * mu * ufl.conditional(
            ufl.gt(f_tr, on_surface), dg_act, 0.0) * normal
        self._eps_p_new = dolfinx.fem.Expression(self.eps_p + dgamma * normal,
                                                 self.QT.element.interpolation_points)
        self._kappa_new = dolfinx.fem.Expression(kap + dgamma,
                                                 self.Q.element.interpolation_points)
        self._yielded = dolfinx.fem.Expression(ufl.conditional(ufl.gt(kap, 0.0), 1.0, 0.0),
                                               self.Q.element.interpolation_points)
        # Trial yield ratio (drive over the current yield stress): an elastic state scales
        # linearly with the load, so 1 / its maximum is the load multiple of first yield.
        self._yield_ratio = dolfinx.fem.Expression(drive / ((1.0 - a) * sc_old),
                                                   self.Q.element.interpolation_points)
        self.load_factor: Any = dolfinx.fem.Constant(domain, PETSc.ScalarType(0.0))
        internal = ufl.inner(sigma, ufl.sym(ufl.grad(v))) * self.dx
        internal_tangent = ufl.inner(sigma_tangent, ufl.sym(ufl.grad(v))) * self.dx
        self.internal_form = dolfinx.fem.form(internal)
        residual = internal
        self.patch_force = 0.0
        self.ext_vector: Any = None
        if patch is not None:
            tags = model._patch_tags(patch)
            ds = ufl.Measure("ds", domain=domain, subdomain_data=tags)
            area = model.comm.allreduce(
                dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * ds(1))), op=MPI.SUM)
            traction = dolfinx.fem.Constant(
                domain, np.asarray(patch.force_n / area, dtype=PETSc.ScalarType))
            external = ufl.dot(traction, v) * ds(1)
            residual = internal - self.load_factor * external
            self.ext_vector = dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(external))
            self.ext_vector.ghostUpdate(addv=PETSc.InsertMode.ADD,
                                        mode=PETSc.ScatterMode.REVERSE)
        jacobian = ufl.derivative(internal_tangent, u, ufl.TrialFunction(model.V))
        options = model.options.petsc_options(algebraic=True)  # the tangent has no P1 level
        options.update({"snes_type": "newtonls", "snes_linesearch_type": "basic",
                        "snes_max_it": 25, "ksp_type": "gmres", "ksp_rtol": krylov_rtol,
                        "ksp_gmres_restart": 60, "ksp_max_it": 300,
                        "ksp_norm_type": "unpreconditioned",
                        "snes_error_if_not_converged": False})
        if options.get("pc_type") in ("lu", "cholesky"):
            options["ksp_type"] = "preonly"
            for key in ("ksp_rtol", "ksp_atol", "ksp_max_it", "ksp_gmres_restart",
                        "ksp_norm_type"):
                options.pop(key, None)
        if lag_preconditioner:
            # PETSc rebuilds the preconditioner at Newton iterations that are multiples of
            # the lag, counted from 0 in each solve: once per increment. The tangent itself
            # is reassembled every iteration (exact Newton, inexact preconditioner).
            options["snes_lag_preconditioner"] = 1000
        options["snes_max_it"] = max_newton
        if inexact:
            # Eisenstat-Walker: loose Krylov tolerances while Newton is far from converged
            # (the equilibrium criterion, not the Krylov one, decides convergence).
            # The first solve of an increment is tight (an elastic increment then converges
            # in one Newton step); the later ones at most 1e-2 (PETSc's default cap, 0.9,
            # doubled the Newton iterations near the peak).
            options.update({"snes_ksp_ew": True, "snes_ksp_ew_rtol0": 1e-7,
                            "snes_ksp_ew_rtolmax": 1e-2})
        prefix = f"osteofe_plastic_{id(self)}_"
        self.problem = dolfinx.fem.petsc.NonlinearProblem(
            residual, u, bcs=model._bcs, J=jacobian, petsc_options_prefix=prefix)
        snes: Any = self.problem.solver
        # GAMG reads its level options when it first builds the hierarchy (in the first
        # Newton solve), so they stay in PETSc's database until destroy().
        self._options = {prefix + key: value for key, value in options.items()}
        database = PETSc.Options()
        for key, value in self._options.items():
            database[key] = value
        snes.setFromOptions()
        if model.options.near_nullspace and options.get("pc_type") == "gamg":
            self.problem.A.setNearNullSpace(model.rigid_body_modes())
        self.rtol = 1e-6
        self.krylov_iterations = 0
        self.last_ratio = math.inf
        snes.setConvergenceTest(self._converged)

    # The equilibrium criterion: ||R_free|| / ||F||.
    def _converged(self, snes: Any, it: int, norms: tuple[float, float, float]) -> int:
        fnorm = norms[2]
        if self.ext_vector is not None:  # load control: ||F|| is the applied load's
            ref = float(self.load_factor.value) * float(self.ext_vector.norm())
        else:  # displacement control: the internal force (the reactions) sets the scale
            internal: Any = dolfinx.fem.petsc.assemble_vector(self.internal_form)
            internal.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
            ref = float(internal.norm())
            internal.destroy()
        self.last_ratio = fnorm / max(ref, 1e-300)
        if not math.isfinite(fnorm):
            return -4  # SNES_DIVERGED_FNORM_NAN
        if it >= 1 and self.last_ratio <= self.rtol:
            return 3  # SNES_CONVERGED_FNORM_ABS (our criterion)
        if it >= 4 and self.last_ratio > 0.1:
            return -6  # SNES_DIVERGED_LINE_SEARCH-like: Newton is not contracting, cut back
        if it >= snes.getTolerances()[3]:
            return -5  # SNES_DIVERGED_MAX_IT
        return 0

    def reaction(self, support: str, direction: FloatArray) -> float:
        """Force the bone exerts against a support's constrained dofs, along ``direction``."""
        model = self.model
        internal = dolfinx.fem.petsc.assemble_vector(self.internal_form)
        internal.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        values = internal.array
        size_local = model.V.dofmap.index_map.size_local * 3
        total = np.zeros(3)
        for sup in model.supports:
            if sup.name != support:
                continue
            for comp, dofs in zip(sup.components, model._support_dofs[sup.name], strict=True):
                owned = dofs[dofs < size_local]
                total[comp] = values[owned].sum()
        internal.destroy()
        return float(model.comm.allreduce(total, op=MPI.SUM) @ direction)

    def commit(self) -> float:
        """Accept the converged state as history; returns the yielded point fraction."""
        eps_p = dolfinx.fem.Function(self.QT)
        eps_p.interpolate(self._eps_p_new)
        kappa = dolfinx.fem.Function(self.Q)
        kappa.interpolate(self._kappa_new)
        self.eps_p.x.array[:] = eps_p.x.array
        self.kappa.x.array[:] = kappa.x.array
        flag = dolfinx.fem.Function(self.Q)
        flag.interpolate(self._yielded)
        size = self.Q.dofmap.index_map.size_local
        local = np.array([flag.x.array[:size].sum(), size], dtype=np.float64)
        total = self.model.comm.allreduce(local, op=MPI.SUM)
        return float(total[0] / max(total[1], 1.0))

    def yield_ratio(self) -> float:
        """Largest trial yield ratio (drive / (1 - a) sigma_c) over the quadrature points."""
        ratio = dolfinx.fem.Function(self.Q)
        ratio.interpolate(self._yield_ratio)
        size = self.Q.dofmap.index_map.size_local
        local = float(np.max(ratio.x.array[:size], initial=0.0))
        return float(self.model.comm.allreduce(local, op=MPI.MAX))

    def cell_kappa(self) -> FloatArray:
        """(m,) cell mean equivalent plastic strain, gathered on every rank."""
        model = self.model
        nq = self.Q.dofmap.list.shape[1]
        dofs = np.asarray(self.Q.dofmap.list)[: model.num_local_cells]
        local = self.kappa.x.array[dofs].reshape(-1, nq).mean(axis=1)
        parts = model.comm.allgather((model.original_cells, local))
        out = np.zeros(model.num_cells)
        for cells, vals in parts:
            out[cells] = vals
        return out

    def solve(self) -> tuple[bool, int, float]:
        """One Newton solve from the current iterate: (converged, iterations, residual)."""
        snes: Any = self.problem.solver
        self.last_ratio = math.inf
        self.model.u.x.petsc_vec.copy(self.problem.x)
        try:
            snes.solve(None, self.problem.x)
        except PETSc.Error as exc:  # PETSc leaves the iterate locked: no retry possible
            raise SolverError(f"the linear solve inside Newton failed ({exc})",
                              hint="a singular tangent (a mechanism): the structure has "
                              "failed; use a smaller step") from exc
        # NonlinearProblem.solve copies x back into u; do the same by hand.
        self.problem.x.copy(self.model.u.x.petsc_vec)
        self.model.u.x.scatter_forward()
        reason = int(snes.getConvergedReason())
        self.krylov_iterations = int(snes.getLinearSolveIterations())
        return reason > 0, int(snes.getIterationNumber()), float(self.last_ratio)

    def destroy(self) -> None:
        """Free the SNES objects."""
        if self.ext_vector is not None:
            self.ext_vector.destroy()
        database = PETSc.Options()
        for key in self._options:
            database.delValue(key)
        del self.problem


class _BorderedNewton:
    """SNES newtonls on the bordered system of indirect displacement control (internal).

    Unknowns X = [u; lambda] (lambda: the load factor of the patch's traction, owned by rank
    0), residual [R_u; k0 g] with R_u = F_int(u) - lambda f and g = c(u) - c_target, where
    c(u) = w . u is the mean head-patch displacement along the load (indirect displacement
    control: Batoz & Dhatt 1979, Int J Numer Meth Eng 14:1262; de Borst 1987, Comput Struct
    25:211) and k0 = ||f|| / c_ref (c_ref: the elastic c per unit lambda) puts the constraint
    row in force units. The Jacobian is a shell [[K, -f], [k0 w^T, 0]] (K: the consistent
    tangent, assembled each Newton iteration); it stays regular at the limit point, where K
    is singular. The SNES's KSP is GMRES on this augmented operator, right-preconditioned by
    a shell PC: the same bordered matrix with K replaced by the elastic stiffness's GAMG
    (the model's own preconditioner, built once for the whole analysis), inverted by block
    elimination (one V-cycle a = M^-1 r_u, dlambda = (g - w.a) / (w.b~), du = a +
    dlambda b~, b~ = M^-1 f computed once). The Krylov tolerance of each Newton iteration is
    tied to the residual (Eisenstat & Walker 1996, SIAM J Sci Comput 17:16, choice 2, with a
    floor just tight enough for the equilibrium criterion).
    """

    def __init__(self, form: _Formulation, weights: FloatArray, *, rtol: float,
                 max_newton: int, krylov_max_it: int = 300) -> None:
        model = form.model
        self.form, self.model, self.comm = form, model, model.comm
        self.A: Any = form.problem.A
        bs = model.V.dofmap.index_map_bs
        self.n = model.V.dofmap.index_map.size_local * bs
        self.root = self.comm.rank == 0
        self.X: Any = PETSc.Vec().createMPI((self.n + int(self.root), PETSc.DETERMINE),
                                            comm=self.comm)
        self.F: Any = self.X.duplicate()
        self.f: Any = self.A.createVecRight()
        self.f.array[:] = form.ext_vector.array_r[: self.n]
        self.f.array[model._constrained[: self.n]] = 0.0
        self.w: Any = self.A.createVecRight()
        self.w.array[:] = weights
        self.tu: Any = self.A.createVecRight()
        self.tv: Any = self.A.createVecRight()
        self.b: Any = self.A.createVecRight()
        f_vec: Any = self.f
        self.fnorm = float(f_vec.norm())
        # The elastic preconditioner M (GAMG of the model's stiffness, already built).
        self.pc: Any = model.ksp.getPC()
        self.pc.apply(self.f, self.b)
        w_vec: Any = self.w
        self.wb = float(w_vec.dot(self.b))
        if not self.wb > 0.0:
            raise SolverError("the control displacement does not grow with the load",
                              hint="check the load direction and the control patch")
        self.k0 = self.fnorm / self.wb
        self.rtol = rtol
        self.target = 0.0
        self.lam = 0.0
        self.elastic = True  # no point has yielded yet: the first Krylov solve is tight
        self.ratio = math.inf
        self.constraint = math.inf
        self.norms: list[float] = []
        self.krylov_its = 0

        outer = self
        snes: Any = PETSc.SNES().create(self.comm)
        snes.setType("newtonls")
        snes.getLineSearch().setType("basic")
        snes.setFunction(self._residual, self.F)
        size = (self.X.getLocalSize(), self.X.getSize())

        class _Jacobian:
            def mult(self, _mat: Any, x: Any, y: Any) -> None:
                outer._mult(x, y)

        class _Preconditioner:
            def apply(self, _pc: Any, x: Any, y: Any) -> None:
                outer._apply(x, y)

        jac: Any = PETSc.Mat().createPython((size, size), context=_Jacobian(), comm=self.comm)
        jac.setUp()
        self.J = jac
        snes.setJacobian(self._jacobian, jac, jac)
        ksp = snes.getKSP()
        ksp.setType("gmres")
        ksp.setGMRESRestart(100)
        ksp.setPCSide(PETSc.PC.Side.RIGHT)  # GMRES then minimises the true residual
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
        ksp.setTolerances(rtol=1e-2, atol=0.0, max_it=krylov_max_it)
        pc = ksp.getPC()
        pc.setType("python")
        pc.setPythonContext(_Preconditioner())
        snes.setTolerances(max_it=max_newton)
        snes.setConvergenceTest(self._converged)
        if logger.isEnabledFor(logging.DEBUG) and self.root:
            snes.setMonitor(lambda s, it, norm: logger.debug(
                "  Newton %d: ||R||/||F|| %.3e, constraint %.3e mm, lambda %.6g, Krylov %d",
                it, self.ratio, self.constraint, self.lam, s.getLinearSolveIterations()))
        self.snes = snes

    # -- the augmented vector --------------------------------------------------------------
    def _lambda_of(self, x: Any) -> float:
        value = float(x.array_r[self.n]) if self.root else 0.0
        return float(self.comm.bcast(value, root=0))

    def _unpack(self, x: Any) -> None:
        u = self.model.u
        u.x.petsc_vec.array[:] = x.array_r[: self.n]
        u.x.scatter_forward()
        self.lam = self._lambda_of(x)
        self.form.load_factor.value = self.lam

    def pack(self) -> None:
        """X <- [model.u; lambda]."""
        self.X.array[: self.n] = self.model.u.x.petsc_vec.array_r
        if self.root:
            self.X.array[self.n] = self.lam

    def measure(self) -> float:
        """c(u): the control displacement of the model's current displacement."""
        return float(self.w.dot(self.model.u.x.petsc_vec))

    # -- SNES callbacks ---------------------------------------------------------------------
    def _residual(self, _snes: Any, x: Any, out: Any) -> None:
        self._unpack(x)
        form, model = self.form, self.model
        b: Any = form.problem.b
        assemble: Any = dolfinx.fem.petsc.assemble_residual
        assemble(None, model.u.x.petsc_vec, b, model.u, form.problem.F, form.problem.J,
                 model._bcs)
        out.array[: self.n] = b.array_r
        self.constraint = self.measure() - self.target
        if self.root:
            out.array[self.n] = self.k0 * self.constraint
        unorm: float = b.norm()
        self.ratio = unorm / max(abs(self.lam) * self.fnorm, 1e-300)
        self.norms.append(math.hypot(unorm, self.k0 * self.constraint))

    def _jacobian(self, snes: Any, x: Any, _J: Any, _P: Any) -> None:
        self._unpack(x)
        A = self.A
        A.zeroEntries()
        assemble: Any = dolfinx.fem.petsc.assemble_matrix
        assemble(A, self.form.problem.J, self.model._bcs, diag=1.0)
        A.assemble()
        # Krylov tolerance: Eisenstat-Walker choice 2 (gamma 0.9, alpha 2), capped at 1e-2,
        # floored where the Krylov error would be a third of the equilibrium criterion
        # (looser on the first iteration of a plastic increment: Newton needs more anyway).
        norm = self.norms[-1]
        floor = self.rtol * abs(self.lam) * self.fnorm / (3.0 * max(norm, 1e-300))
        if len(self.norms) < 2:
            eta = floor if self.elastic else max(floor, 1e-3)
        else:
            eta = max(floor, 0.9 * (norm / max(self.norms[-2], 1e-300)) ** 2)
        snes.getKSP().setTolerances(rtol=min(1e-2, max(eta, 1e-12)))

    def _mult(self, x: Any, y: Any) -> None:
        self.tu.array[:] = x.array_r[: self.n]
        dl = self._lambda_of(x)
        self.A.mult(self.tu, self.tv)
        self.tv.axpy(-dl, self.f)
        wx = float(self.w.dot(self.tu))
        y.array[: self.n] = self.tv.array_r
        if self.root:
            y.array[self.n] = self.k0 * wx

    def _apply(self, r: Any, y: Any) -> None:
        """Apply P^-1 (P: the bordered matrix with K replaced by the elastic GAMG)."""
        self.tu.array[:] = r.array_r[: self.n]
        g = self._lambda_of(r) / self.k0
        self.pc.apply(self.tu, self.tv)
        dl = (g - float(self.w.dot(self.tv))) / self.wb
        self.tv.axpy(dl, self.b)
        y.array[: self.n] = self.tv.array_r
        if self.root:
            y.array[self.n] = dl

    def _converged(self, snes: Any, it: int, _norms: tuple[float, float, float]) -> int:
        if not math.isfinite(self.ratio):
            return -4  # SNES_DIVERGED_FNORM_NAN
        tight = abs(self.constraint) <= max(self.rtol * abs(self.target), 1e-14)
        if it >= 1 and self.ratio <= self.rtol and tight:
            return 3  # SNES_CONVERGED_FNORM_ABS (our criterion)
        if (it >= 2 and self.ratio > 1.0) or (it >= 4 and self.ratio > 0.1):
            return -6  # diverging or not contracting: cut back
        if it >= snes.getTolerances()[3]:
            return -5  # SNES_DIVERGED_MAX_IT
        return 0

    def solve(self, target: float) -> tuple[bool, int, float]:
        """Newton from the current state to c(u) = target: (converged, its, residual)."""
        self.target = target
        self.ratio = math.inf
        self.norms = []
        self.pack()
        try:
            self.snes.solve(None, self.X)
        except PETSc.Error as exc:
            raise SolverError(f"the bordered Newton solve failed ({exc})",
                              hint="a singular tangent: a smaller step") from exc
        self._unpack(self.X)
        self.krylov_its += int(self.snes.getLinearSolveIterations())
        reason = int(self.snes.getConvergedReason())
        return reason > 0, int(self.snes.getIterationNumber()), float(self.ratio)

    def destroy(self) -> None:
        """Free the PETSc objects (the model's preconditioner stays the model's)."""
        for obj in (self.snes, self.J, self.X, self.F, self.f, self.w, self.b, self.tu,
                    self.tv):
            obj.destroy()


def _secant_slope(prev: tuple[float, float], x: float, f: float) -> float:
    """Slope (N/mm) of the curve from the last converged point ``prev`` to ``(x, f)``.

    Raises:
        SolverError: The first increment did not load the femur (``f <= 0``): a load
            direction or support that cannot carry the load.
    """
    if prev == (0.0, 0.0) and not f > 0.0:
        raise SolverError(f"the force is {f:.3g} N after the first increment",
                          hint="check the load direction and the supports")
    return (f - prev[1]) / max(x - prev[0], 1e-300)


def incremental_failure(
    model: ElasticModel,
    material: PlasticMaterial,
    direction: npt.ArrayLike,
    *,
    control: Literal["displacement", "load", "indirect"],
    step: float,
    support: str | None = None,
    patch: LoadPatch | None = None,
    patch_nodes: npt.NDArray[np.int64] | None = None,
    rtol: float = 1e-6,
    krylov_rtol: float = 1e-8,
    max_increments: int = 60,
    max_cutbacks: int = 6,
    stop_fraction: float = 0.9,
    flat_fraction: float = 0.2,
    max_displacement: float | None = None,
    lag_preconditioner: bool = False,
    max_newton: int = 15,
    inexact_newton: bool = False,
    max_step_growth: float = 1.0,
    progress: Callable[[IncrementRecord], None] | None = None,
    post_peak_increments: int = 1,
    target_newton: int = 5,
    refine_peak: float = 0.002,
) -> PlasticityResult:
    """Incremental Newton analysis to the peak of the force-displacement curve (collective).

    Args:
        model: Elastic model whose mesh, moduli (per cell or per quadrature point), Poisson
            ratio and supports are used; its displacement is the iterate. With displacement
            control, ``support`` names one of its supports with a constant displacement.
        material: Per-cell yield curves.
        direction: (3,) unit direction, in the model's axes, of the load / displacement.
        control: "displacement": the support is moved by ``step`` per increment along
            ``direction``; the force is its reaction. "load": the patch's traction is scaled
            by a load factor that grows by ``step`` per increment; the displacement is the
            mean of ``patch_nodes`` along ``direction``. "indirect" (indirect displacement
            control, Batoz & Dhatt 1979; de Borst 1987): the patch's traction (the linear
            case's force distribution and supports, unchanged) is scaled by a load factor
            that is an unknown, and the mean displacement of ``patch_nodes`` along
            ``direction`` grows by a prescribed step per increment; the solution passes the
            limit point (SNES newtonls on the bordered system, see :class:`_BorderedNewton`),
            the step adapts to the Newton iterations (target ``target_newton``, at most
            ``max_step_growth`` x ``step``; an elastic first increment jumps to just below
            first yield), and the analysis stops once the force fell below
            ``stop_fraction`` x the peak or ``post_peak_increments`` converged increments in
            a row lay below it (the peak is then bracketed).
        step: First increment (mm, or load factor).
        support: Displaced support (displacement control).
        patch: Load patch whose force is the unit of the load factor (load control).
        patch_nodes: Nodes whose mean displacement is recorded (load control).
        rtol: Equilibrium criterion ||R|| / ||F|| (F: applied load; internal force under
            displacement control).
        krylov_rtol: GMRES relative tolerance inside Newton.
        max_increments: Attempted increments limit (cut-backs included).
        max_cutbacks: Halvings of the step before giving up (the minimum step is
            step / 2^max_cutbacks).
        stop_fraction: Displacement control: stop once the force fell below this fraction of
            the peak.
        flat_fraction: Load control: the peak counts as reached when the minimum step fails
            and the last converged tangent is below this fraction of the initial one.
        max_displacement: Stop once the control displacement reaches this value (tests).
        lag_preconditioner: Build the preconditioner once per increment instead of at every
            Newton iteration.
        max_newton: Newton iterations per increment; an increment whose residual is still
            above 0.1 after 4 iterations counts as diverging (cut back at once).
        inexact_newton: Eisenstat-Walker Krylov tolerances inside Newton.
        max_step_growth: After increments that converge in <= 2 Newton iterations the step
            doubles, up to this multiple of ``step`` (1: never above the first step). The
            minimum step, and so the peak's resolution, stays ``step / 2^max_cutbacks``.
        progress: Called after each attempt.
        post_peak_increments: Indirect control: converged increments in a row below the
            peak after which the analysis stops (the peak is bracketed).
        target_newton: Indirect control: Newton iterations per increment the step size
            aims at.
        refine_peak: Indirect control: once bracketed, one extra increment to the vertex of
            the parabola through the peak and its neighbours (from the state before it),
            when that parabola's maximum exceeds the sampled peak by more than this fraction
            (0: always; a negative value: never).

    Returns:
        Increments and peak (from converged increments only).
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    if control == "displacement" and support is None:
        raise ValueError("displacement control needs the displaced support's name")
    if control in ("load", "indirect") and (patch is None or patch_nodes is None):
        raise ValueError(f"{control} control needs the load patch and the nodes to follow")
    if not step > 0.0:
        raise ValueError(f"step must be positive, got {step}")
    start = time.perf_counter()
    if control == "indirect":
        assert patch is not None and patch_nodes is not None
        indirect = _Formulation(model, material, patch, krylov_rtol, max_newton=max_newton)
        return _indirect_control(
            indirect, model, d, patch, np.asarray(patch_nodes), step=step, rtol=rtol,
            max_increments=max_increments, max_cutbacks=max_cutbacks,
            stop_fraction=stop_fraction, post_peak_increments=post_peak_increments,
            max_displacement=max_displacement, max_step_growth=max_step_growth,
            max_newton=max_newton, target_newton=target_newton, refine_peak=refine_peak,
            progress=progress, start=start)
    form = _Formulation(model, material, patch if control == "load" else None, krylov_rtol,
                        lag_preconditioner=lag_preconditioner, max_newton=max_newton,
                        inexact=inexact_newton)
    form.rtol = rtol
    unit_force = float(np.linalg.norm(patch.force_n)) if patch is not None else 1.0
    records: list[IncrementRecord] = []
    level, h = 0.0, float(step)
    min_step = step / 2.0 ** max_cutbacks
    last_u = model.u.x.array.copy()
    peak_f, peak_x, bracketed, all_ok = 0.0, 0.0, False, True
    prev = (0.0, 0.0)
    initial_slope = math.nan
    last_slope = math.nan
    notes: list[str] = []

    def measure() -> tuple[float, float]:
        if control == "displacement":
            return level + h, form.reaction(str(support), d)
        disp = model._gather_displacement()[np.asarray(patch_nodes)] @ d
        return float(np.mean(disp)), (level + h) * unit_force

    try:
        while len(records) < max_increments:
            if max_displacement is not None and control == "displacement":
                h = min(h, max_displacement - level)
            target = level + h
            if control == "displacement":
                model.set_support_displacement(str(support), target * d)
            else:
                form.load_factor.value = target
            ok, its, res = form.solve()
            x: float
            f: float
            # An unconverged state is no equilibrium: it gets no displacement and no force.
            x, f = measure() if ok else (math.nan, math.nan)
            plastic = form.commit() if ok else 0.0
            retry = not ok and h / 2.0 >= min_step * (1.0 - 1e-9)
            rec = IncrementRecord(float(x), float(f), ok, its, res, plastic, cut_back=retry,
                                  target=target * (unit_force if control == "load" else 1.0))
            records.append(rec)
            if model.comm.rank == 0:
                logger.info("increment %d: target %.5g, converged %s in %d Newton its "
                            "(%d Krylov, residual %.2e), force %.5g N, %.1f s", len(records),
                            rec.target, ok, its, form.krylov_iterations, res, f,
                            time.perf_counter() - start)
            if progress is not None:
                progress(rec)
            if not ok:
                model.u.x.array[:] = last_u
                model.u.x.scatter_forward()
                if not retry:
                    if control == "load" and last_slope < flat_fraction * initial_slope:
                        bracketed = True
                    else:
                        all_ok = False
                        notes.append(
                            f"Newton did not converge at the minimum step after the increment "
                            f"at {prev[0]:.4g} mm, {prev[1]:.4g} N (slope "
                            f"{last_slope / initial_slope:.0%} of the initial one): the "
                            "peak is the last converged force and may be a lower bound")
                    break
                h /= 2.0
                continue
            last_slope = _secant_slope(prev, x, f)
            if math.isnan(initial_slope):
                initial_slope = last_slope
            last_u = model.u.x.array.copy()
            level = target
            prev = (x, f)
            if f > peak_f:
                peak_f, peak_x = f, x
            elif control == "displacement" and f < stop_fraction * peak_f:
                bracketed = True
                break
            if max_displacement is not None and x >= max_displacement * (1 - 1e-12):
                break
            if its <= 2:
                h = min(2.0 * h, max_step_growth * float(step))
            elif its <= 4 and h < step:
                h = min(2.0 * h, float(step))
            elif its > 4:  # yielding has started: back to the first step at most
                h = min(h, float(step))
        else:
            notes.append(f"stopped after {max_increments} increments before the peak was "
                         "bracketed: the failure load is a lower bound")
        kappa = form.cell_kappa()
    finally:
        form.destroy()
    if not any(r.converged for r in records):
        raise SolverError("no load increment converged", hint="reduce the first step")
    return PlasticityResult(
        increments=tuple(records), peak_force_n=peak_f, peak_displacement_mm=peak_x,
        peak_bracketed=bracketed, all_increments_converged=all_ok, control=control,
        wall_s=time.perf_counter() - start, notes=notes, plastic_strain_eq=kappa,
        peak_resolution=min_step * (unit_force if control == "load" else 1.0))


def _patch_weights(model: ElasticModel, patch_nodes: npt.NDArray[np.int64],
                   direction: FloatArray) -> FloatArray:
    """(n_owned_dofs,) w with w . u = mean over the patch's dof nodes of u . direction."""
    nodes = np.unique(np.asarray(patch_nodes, dtype=np.int64))
    count = model._count_owned_nodes(nodes)
    if count == 0:
        raise ValueError("the control patch has no node with displacement dofs")
    owned, blocks = model._node_dof_map
    here = np.isin(owned, nodes)
    size_local = model.V.dofmap.index_map.size_local
    w = np.zeros((size_local, 3))
    w[blocks[here]] = direction / count
    return w.reshape(-1)


def _indirect_control(form: _Formulation, model: ElasticModel, d: FloatArray,
                      patch: LoadPatch, patch_nodes: npt.NDArray[np.int64], *, step: float,
                      rtol: float, max_increments: int, max_cutbacks: int,
                      stop_fraction: float, post_peak_increments: int,
                      max_displacement: float | None, max_step_growth: float,
                      max_newton: int, target_newton: int, refine_peak: float,
                      progress: Callable[[IncrementRecord], None] | None,
                      start: float) -> PlasticityResult:
    """The increment loop of indirect displacement control (see :func:`incremental_failure`)."""
    unit_force = float(np.linalg.norm(patch.force_n))
    bordered = _BorderedNewton(form, _patch_weights(model, patch_nodes, d), rtol=rtol,
                               max_newton=max_newton)
    records: list[IncrementRecord] = []
    level, h = 0.0, float(step)
    min_step = step / 2.0 ** max_cutbacks
    last_u, last_lam = model.u.x.array.copy(), 0.0
    peak_f, peak_x, bracketed, all_ok = 0.0, 0.0, False, True
    prev = (0.0, 0.0)
    initial_slope, last_slope = math.nan, math.nan
    below = 0  # converged increments in a row below the peak
    jumped = False

    def snapshot(force: float) -> tuple[float, float, FloatArray, float, FloatArray,
                                        FloatArray]:
        return (level, force, np.array(model.u.x.array, dtype=np.float64), bordered.lam,
                np.array(form.eps_p.x.array, dtype=np.float64),
                np.array(form.kappa.x.array, dtype=np.float64))

    last_state = snapshot(0.0)
    before_peak = peak_state = last_state
    after_peak = (math.nan, math.nan)
    notes: list[str] = []
    kappa = np.zeros(0)
    try:
        while len(records) < max_increments:
            if max_displacement is not None:
                h = min(h, max_displacement - level)
            target = level + h
            krylov_before = bordered.krylov_its
            ok, its, res = bordered.solve(target)
            x, f = (bordered.measure(), bordered.lam * unit_force) if ok else (math.nan,
                                                                               math.nan)
            plastic = form.commit() if ok else 0.0
            retry = not ok and h / 2.0 >= min_step * (1.0 - 1e-9)
            rec = IncrementRecord(float(x), float(f), ok, its, res, plastic, cut_back=retry,
                                  target=target,
                                  krylov_iterations=bordered.krylov_its - krylov_before)
            records.append(rec)
            if model.comm.rank == 0:
                logger.info("increment %d: target %.5g mm, converged %s in %d Newton its "
                            "(%d Krylov), residual %.2e, force %.5g N, yielded %.3f, %.1f s",
                            len(records), target, ok, its, rec.krylov_iterations, res, f,
                            plastic, time.perf_counter() - start)
            if progress is not None:
                progress(rec)
            if not ok:
                model.u.x.array[:] = last_u
                model.u.x.scatter_forward()
                bordered.lam = last_lam
                form.load_factor.value = last_lam
                if retry:
                    h /= 2.0
                    continue
                all_ok = False
                slope = last_slope / initial_slope if math.isfinite(initial_slope) else math.nan
                if below > 0:
                    bracketed = True
                    notes.append(
                        f"Newton did not converge at the minimum step ({min_step:.3g} mm) "
                        f"after {below} converged increment(s) past the peak (last at "
                        f"{prev[0]:.4g} mm, {prev[1]:.4g} N, slope {slope:.0%} of the "
                        "initial one): the peak is bracketed; the post-peak path may snap "
                        "back in the head displacement (not followed)")
                else:
                    notes.append(
                        f"Newton did not converge at the minimum step ({min_step:.3g} mm) "
                        f"after the increment at {prev[0]:.4g} mm, {prev[1]:.4g} N (slope "
                        f"{slope:.0%} of the initial one) before the force fell: the peak is "
                        "not bracketed (possible snap-back in the head displacement, which "
                        "indirect displacement control cannot pass); the failure load is "
                        "the last converged force, a lower bound")
                break
            last_slope = _secant_slope(prev, x, f)
            if math.isnan(initial_slope):
                initial_slope = last_slope
            last_u, last_lam = model.u.x.array.copy(), bordered.lam
            bordered.elastic = plastic == 0.0
            level = target
            prev = (x, f)
            state = snapshot(f)
            if f > peak_f:
                peak_f, peak_x, below = f, x, 0
                before_peak, peak_state = last_state, state
            else:
                below += 1
                if below == 1:
                    after_peak = (x, f)
                if f < stop_fraction * peak_f or below >= post_peak_increments:
                    bracketed = True
                    break
            last_state = state
            if max_displacement is not None and x >= max_displacement * (1 - 1e-12):
                break
            if plastic == 0.0 and not jumped:
                # Elastic so far: the state scales with the load; jump to just below first
                # yield in one (linear) increment.
                jumped = True
                ratio = form.yield_ratio()
                if 0.0 < ratio < 0.98:
                    h = max(target * (0.98 / ratio - 1.0), float(step))
                    continue
            # Adaptive size (Crisfield 1991, Vol. 1 Sec. 9.5: h ~ sqrt(target / its)).
            factor = min(2.0, max(0.5, math.sqrt(target_newton / max(its, 1))))
            h = min(max(h * factor, min_step), max_step_growth * float(step))
        else:
            all_ok = False
            notes.append(f"stopped after {max_increments} increments before the peak was "
                         "bracketed: the failure load is a lower bound")
        if bracketed and refine_peak >= 0.0:
            # The curve's maximum lies between samples: one increment to the vertex of the
            # parabola through the peak and its neighbours, from the state before it.
            xs = np.array([before_peak[0], peak_state[0], after_peak[0]])
            fs = np.array([before_peak[1], peak_state[1], after_peak[1]])
            coef = np.polyfit(xs, fs, 2) if np.all(np.isfinite(xs)) else np.zeros(3)
            vertex = -coef[1] / (2.0 * coef[0]) if coef[0] < 0.0 else math.nan
            gain = (float(np.polyval(coef, vertex)) / peak_f - 1.0 if math.isfinite(vertex)
                    else 0.0)
            gap = 0.1 * min(xs[1] - xs[0], xs[2] - xs[1])
            if xs[0] < vertex < xs[2] and abs(vertex - xs[1]) > gap and gain > refine_peak:
                origin = peak_state if vertex > xs[1] else before_peak
                level, _, u0, lam0, ep0, k0 = origin
                model.u.x.array[:] = u0
                bordered.lam = lam0
                form.load_factor.value = lam0
                form.eps_p.x.array[:] = ep0
                form.kappa.x.array[:] = k0
                krylov_before = bordered.krylov_its
                ok, its, res = bordered.solve(float(vertex))
                x, f = (bordered.measure(), bordered.lam * unit_force) if ok else (
                    math.nan, math.nan)
                plastic = form.commit() if ok else 0.0
                rec = IncrementRecord(float(x), float(f), ok, its, res, plastic,
                                      target=float(vertex), peak_refinement=True,
                                      krylov_iterations=bordered.krylov_its - krylov_before)
                records.append(rec)
                if model.comm.rank == 0:
                    logger.info("peak refinement: target %.5g mm, converged %s in %d Newton "
                                "its, force %.5g N (sampled peak %.5g N)", vertex, ok, its,
                                f, peak_f)
                if progress is not None:
                    progress(rec)
                if ok and f > peak_f:
                    peak_f, peak_x = f, x
                elif not ok:
                    notes.append("the peak refinement increment did not converge (not part "
                                 "of the curve); the peak is the largest sampled force")
        kappa = form.cell_kappa()
        stats = {"newton_iterations": sum(r.newton_iterations for r in records),
                 "krylov_iterations": bordered.krylov_its,
                 "preconditioner_builds": 0,
                 "preconditioner": "the linear model's GAMG of the elastic stiffness (built "
                                   "once, before the analysis), bordered"}
    finally:
        bordered.destroy()
        form.destroy()
    if not any(r.converged for r in records):
        raise SolverError("no increment converged", hint="reduce the first step")
    curve = [(r.displacement_mm, r.force_N) for r in records if r.converged]
    resolution = _peak_resolution(curve, peak_x)
    return PlasticityResult(
        increments=tuple(records), peak_force_n=peak_f, peak_displacement_mm=peak_x,
        peak_bracketed=bracketed, all_increments_converged=all_ok, control="indirect",
        wall_s=time.perf_counter() - start, notes=notes, plastic_strain_eq=kappa,
        peak_resolution=resolution[0], peak_interpolated_n=resolution[1], solver_stats=stats)


def _peak_resolution(curve: list[tuple[float, float]], peak_x: float) -> tuple[float, float]:
    """(larger neighbouring step at the peak, mm; parabola-through-3-points peak force, N)."""
    curve = sorted(curve)
    xs = np.array([0.0] + [c[0] for c in curve])
    fs = np.array([0.0] + [c[1] for c in curve])
    i = int(np.argmin(np.abs(xs - peak_x)))
    if i == 0 or i == xs.size - 1:
        return math.nan, math.nan
    step = float(max(xs[i] - xs[i - 1], xs[i + 1] - xs[i]))
    coef = np.polyfit(xs[i - 1:i + 2], fs[i - 1:i + 2], 2)
    if coef[0] >= 0.0:
        return step, math.nan
    top = float(np.polyval(coef, -coef[1] / (2.0 * coef[0])))
    return step, top
