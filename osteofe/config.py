"""Configuration as data: TOML -> frozen dataclasses, validated on load.

Every option has a default; a TOML file overrides defaults, and CLI flags override the file.
Unknown sections or keys are errors (a typo must never silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.suggest import did_you_mean
from fea.types import SolverOptions
from meshing.errors import InputError

__all__ = [
    "Config",
    "FailureConfig",
    "LoadConfig",
    "MaterialConfig",
    "MeshConfig",
    "NonlinearConfig",
    "SolverConfig",
    "default_toml",
    "load_config",
]


#: The command-line option of each configuration value that has one: messages name it in
#: the syntax the user typed (``--calibration``, not ``material.calibration_slope``).
CLI_FLAGS: dict[str, str] = {
    "mesh.size_mm": "--mesh-size MM",
    "mesh.order": "--order",
    "mesh.crop_below_lesser_trochanter_mm": "--crop-below-lt MM",
    "mesh.allow_partial": "--allow-partial",
    "material.calibration_slope": "--calibration SLOPE INTERCEPT",
    "material.calibration_intercept": "--calibration SLOPE INTERCEPT",
    "material.calibration_slope/intercept": "--calibration SLOPE INTERCEPT",
    "material.law": "--law",
    "load.cases": "--load",
    "load.custom_forces_n": "--custom-load FX FY FZ",
    "load.sweep_directions": "--sweep N",
    "solver.degree": "--degree",
    "solver.pc_type": "--pc",
    "solver.rtol": "--ksp-rtol",
    "solver.petsc_options": "--petsc-option KEY=VALUE",
    "nonlinear.enabled": "--nonlinear",
}


def cli_name(key: str) -> str:
    """How the user sets ``key``: ``"--calibration SLOPE INTERCEPT (config material.x)"``.

    Keys without a command-line option are named as in the TOML file (``[section] name``).
    """
    flag = CLI_FLAGS.get(key)
    return f"{flag} (config {key})" if flag else f"config {key}"


def _check(condition: bool, key: str, value: object, expected: str,
           choices: Sequence[str] = ()) -> None:
    if not condition:
        guess = did_you_mean(str(value), choices)
        flag = CLI_FLAGS.get(key)
        raise InputError(f"config value {key} = {value!r} is invalid{guess}",
                         hint=f"use {expected}" + (f", with {flag}" if flag else ""))


#: ``solver.isolate_preparation``: prepare in a child process under MPI only, always, never.
ISOLATION_CHOICES = ("mpi", "always", "never")


@dataclass(frozen=True)
class MeshConfig:
    """Meshing options.

    Attributes:
        size_mm: Target tetrahedron edge length, mm.
        order: 1 for 4-node, 2 for 10-node tetrahedra.
        min_dihedral_deg: Refuse meshes whose smallest dihedral angle is below this.
        crop_below_lesser_trochanter_mm: If set, keep only the femur down to this distance
            below the lesser trochanter (a whole-femur scan becomes a proximal-femur model
            with a flat distal cut).
        allow_partial: Compute a femur too short for its load cases (less than 40 mm of
            shaft below the lesser trochanter, no greater trochanter for a sideways fall)
            instead of refusing it; result.json's ``validity`` then flags the result as not
            valid (:func:`osteofe.guards.check_model_extent`).
    """

    size_mm: float = 3.0
    order: int = 1
    min_dihedral_deg: float = 1.0
    crop_below_lesser_trochanter_mm: float | None = None
    allow_partial: bool = False

    def __post_init__(self) -> None:
        _check(0.3 <= self.size_mm <= 20.0, "mesh.size_mm", self.size_mm, "0.3-20 mm")
        _check(self.order in (1, 2), "mesh.order", self.order, "1 or 2")
        _check(0.0 <= self.min_dihedral_deg < 30.0, "mesh.min_dihedral_deg",
               self.min_dihedral_deg, "0-30 deg")
        crop = self.crop_below_lesser_trochanter_mm
        _check(crop is None or 20.0 <= crop <= 400.0, "mesh.crop_below_lesser_trochanter_mm",
               crop, "20-400 mm")


@dataclass(frozen=True)
class MaterialConfig:
    """Density calibration and modulus law.

    Attributes:
        calibration_slope: rho_QCT per HU, g/cm^3/HU (None = the built-in default line).
        calibration_intercept: rho_QCT at 0 HU, g/cm^3 (None = the built-in default line).
        law: Name of the density-modulus law (material.laws.LAWS).
        chain: rho_QCT -> rho_ash -> rho_app chain (material.laws.DENSITY_CHAINS).
        mode: Mapping mode (Bonemat's three): modulus_average (E integrated over the
            element, Taddei et al. 2007, Bonemat V3), hu_average (HU integrated, then
            converted: Bonemat V2-style) or centroid.
        lesion_at_floor: Give lesion cells the floor modulus instead of their CT value (a
            lytic lesion carries no load; its CT density is tumour, not bone).
        bone_threshold_rho_qct: CT samples below this equivalent mineral density (g/cm^3)
            are no bone (marrow, fat, soft tissue, lytic tissue: about -100..+60 HU) and get
            the floor modulus (0 = only negative densities).
        modulus_at_quadrature_points: Give the solver E at its quadrature points (sampled
            from the CT at each point) instead of one value per element.
        poisson_ratio: Poisson's ratio of bone.
        modulus_floor_mpa: Lower bound of E for marrow/lesion/soft tissue, MPa.
        quadrature_degree: Quadrature degree used to average HU over each element.
    """

    calibration_slope: float | None = None
    calibration_intercept: float | None = None
    law: str = "morgan2003_neck"
    chain: str = "mayo_schileo"
    mode: str = "modulus_average"
    lesion_at_floor: bool = True
    bone_threshold_rho_qct: float = 0.05
    modulus_at_quadrature_points: bool = False
    poisson_ratio: float = 0.3
    modulus_floor_mpa: float = 5.0
    quadrature_degree: int = 2

    def __post_init__(self) -> None:
        _check((self.calibration_slope is None) == (self.calibration_intercept is None),
               "material.calibration_slope/intercept", self.calibration_slope,
               "both slope and intercept, or neither")
        _check(self.mode in ("hu_average", "modulus_average", "centroid"), "material.mode",
               self.mode, "hu_average, modulus_average or centroid")
        _check(0.0 < self.poisson_ratio < 0.5, "material.poisson_ratio", self.poisson_ratio,
               "a value in (0, 0.5)")
        _check(0.0 < self.modulus_floor_mpa < 1000.0, "material.modulus_floor_mpa",
               self.modulus_floor_mpa, "0-1000 MPa")
        _check(1 <= self.quadrature_degree <= 5, "material.quadrature_degree",
               self.quadrature_degree, "1-5")
        _check(0.0 <= self.bone_threshold_rho_qct <= 0.3, "material.bone_threshold_rho_qct",
               self.bone_threshold_rho_qct, "0-0.3 g/cm^3")
        self._check_model()

    def _check_model(self) -> None:
        """Refuse an unknown law or chain, or a scanner line the chain cannot use, now.

        Otherwise they surface only when the material is mapped, after the meshing.
        """
        from material.laws import get_density_chain, get_law
        from meshing.errors import OsteofeError

        def look_up(key: str, value: str, finder: Any) -> Any:
            try:
                return finder(value)
            except OsteofeError as exc:
                raise InputError(f"config value material.{key} = {value!r} is invalid: "
                                 f"{exc.message}", hint=exc.hint) from None

        look_up("chain", self.chain, get_density_chain)
        law = look_up("law", self.law, get_law)
        if law.quantity != "E":
            raise InputError(f"config value material.law = {self.law!r} is invalid: it gives "
                             f"{law.quantity}, not Young's modulus",
                             hint="pick a modulus law, e.g. morgan2003_neck or "
                             "keyak2005_modulus")
        if self.calibration_slope is not None:
            self.material_model(None)

    def material_model(self, calibration: Any | None) -> Any:
        """The HU -> modulus model of these options (:class:`material.laws.MaterialModel`).

        Args:
            calibration: The HU -> density line (:class:`material.calibration.
                LinearCalibration`); None: the options' scanner line
                (``calibration_slope``/``calibration_intercept``).

        Returns:
            The model.

        Raises:
            InputError: The options' scanner line is implausible, or the law, the chain and
                the line do not fit together (e.g. a hydroxyapatite chain with a K2HPO4
                line); the message names the option.
        """
        from material.calibration import LinearCalibration
        from material.laws import MaterialModel
        from meshing.errors import OsteofeError

        if (calibration is None and self.calibration_slope is not None
                and self.calibration_intercept is not None):
            try:
                calibration = LinearCalibration(self.calibration_slope,
                                                self.calibration_intercept, name="config",
                                                source="scanner line from config")
            except OsteofeError as exc:
                raise InputError("config value material.calibration_slope/intercept = "
                                 f"{self.calibration_slope!r}, {self.calibration_intercept!r} "
                                 f"is invalid: {exc.message}", hint=exc.hint) from None
        if calibration is None:
            raise InputError("no HU -> density calibration to build the material model with",
                             hint=f"give {cli_name('material.calibration_slope/intercept')}")
        try:
            return MaterialModel.from_names(calibration, chain=self.chain, law=self.law,
                                            poisson_ratio=self.poisson_ratio,
                                            E_floor_MPa=self.modulus_floor_mpa,
                                            bone_threshold_rho_qct=self.bone_threshold_rho_qct)
        except OsteofeError as exc:
            raise InputError(f"config values material.law = {self.law!r} / material.chain = "
                             f"{self.chain!r} do not fit the calibration "
                             f"'{calibration.name}': {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True)
class LoadConfig:
    """Load cases and supports.

    Attributes:
        cases: Load case names: stance, stairs_up, stairs_down, stumbling, fall.
        custom_forces_n: Extra forces on the head [[fx, fy, fz], ...] in N, in the anatomical
            frame of a right femur (x lateral, y anterior, z proximal), distal cut fixed.
        patch_half_angle_deg: Half opening angle of the head cap the force is spread over.
        distal_fixed_depth_mm: Thickness of the fixed slab at the distal cut.
        sweep_directions: 0, or the number of load directions swept around each case's
            direction (on the same patch, by superposition of three unit loads).
        sweep_half_angle_deg: Half opening angle of the cone of swept directions.
        fall_adduction_deg: Sideways fall: angle of the shaft to the ground (Courtney 1994:
            10 deg), knee higher than the trochanter.
        fall_internal_rotation_deg: Sideways fall: internal rotation of the femur about its
            shaft (Courtney 1994: 15 deg; 10-15 deg in the literature).
        assumed_anteversion_deg: Anteversion that places the frontal plane of the load frame
            when the scan does not reach the knee (mean adult value, see
            :data:`fea.landmarks.ASSUMED_ANTEVERSION_DEG`).
    """

    cases: tuple[str, ...] = ("stance",)
    custom_forces_n: tuple[tuple[float, float, float], ...] = ()
    patch_half_angle_deg: float = 30.0
    distal_fixed_depth_mm: float = 2.0
    sweep_directions: int = 0
    sweep_half_angle_deg: float = 15.0
    fall_adduction_deg: float = 10.0
    fall_internal_rotation_deg: float = 15.0
    assumed_anteversion_deg: float = 11.7

    def __post_init__(self) -> None:
        from fea.loads import LOAD_CASES

        object.__setattr__(self, "cases", tuple(self.cases))
        forces = tuple(tuple(float(v) for v in f) for f in self.custom_forces_n)
        object.__setattr__(self, "custom_forces_n", forces)
        _check(len(self.cases) + len(forces) > 0, "load.cases", self.cases,
               "at least one load case")
        for name in self.cases:
            _check(name in LOAD_CASES, "load.cases", name, f"one of {sorted(LOAD_CASES)}",
                   choices=sorted(LOAD_CASES))
        for force in forces:
            _check(len(force) == 3 and sum(v * v for v in force) > 0.0,
                   "load.custom_forces_n", force, "non-zero [fx, fy, fz] in N")
        _check(5.0 <= self.patch_half_angle_deg <= 80.0, "load.patch_half_angle_deg",
               self.patch_half_angle_deg, "5-80 deg")
        _check(0.1 <= self.distal_fixed_depth_mm <= 30.0, "load.distal_fixed_depth_mm",
               self.distal_fixed_depth_mm, "0.1-30 mm")
        _check(self.sweep_directions == 0 or 2 <= self.sweep_directions <= 1000,
               "load.sweep_directions", self.sweep_directions, "0 or 2-1000")
        _check(0.0 < self.sweep_half_angle_deg <= 90.0, "load.sweep_half_angle_deg",
               self.sweep_half_angle_deg, "0-90 deg")
        _check(0.0 <= self.fall_adduction_deg <= 45.0, "load.fall_adduction_deg",
               self.fall_adduction_deg, "0-45 deg")
        _check(-45.0 <= self.fall_internal_rotation_deg <= 45.0,
               "load.fall_internal_rotation_deg", self.fall_internal_rotation_deg,
               "-45-45 deg")
        _check(-30.0 <= self.assumed_anteversion_deg <= 60.0, "load.assumed_anteversion_deg",
               self.assumed_anteversion_deg, "-30-60 deg")

    def load_cases(self) -> list[Any]:
        """The configured :class:`fea.loads.LoadCase` objects, named cases then custom ones."""
        from fea.loads import LOAD_CASES, custom_load_case, fall_case

        fall = fall_case(self.fall_adduction_deg, self.fall_internal_rotation_deg)
        return [fall if name == "fall" else LOAD_CASES[name] for name in self.cases] + [
            custom_load_case(f"custom_{i + 1}", force)
            for i, force in enumerate(self.custom_forces_n)
        ]


@dataclass(frozen=True)
class FailureConfig:
    """Linear strain criterion (defaults: Schileo et al. 2008).

    Attributes:
        tension_limit: Max principal strain at failure.
        compression_limit: Magnitude of min principal strain at failure.
        averaging_radius_mm: Strains are averaged over the bone surface within a sphere of
            this radius around each surface node (a fixed region, so the average does not
            change with the mesh; fea.failure.SCHILEO_2008).
        exclude_distal_mm: Surface within this distance of the distal cut is not evaluated
            (artificial strains at the fixation).
        exclude_load_margin_mm: Surface within this distance of a load patch is not evaluated.
        max_floor_share: Surface nodes whose averaged region lies in cells at the modulus
            floor (no bone density inside the label) by more than this share of its area
            are not bone surface and are not evaluated (fea.failure.MAX_FLOOR_SHARE); 1
            evaluates every node.
    """

    tension_limit: float = 0.0073
    compression_limit: float = 0.0104
    averaging_radius_mm: float = 3.0
    exclude_distal_mm: float = 40.0
    exclude_load_margin_mm: float = 3.0
    max_floor_share: float = 0.5

    def __post_init__(self) -> None:
        _check(0.0 < self.max_floor_share <= 1.0, "failure.max_floor_share",
               self.max_floor_share, "a share in (0, 1]")
        _check(0.0 < self.tension_limit < 0.1, "failure.tension_limit", self.tension_limit,
               "a strain in (0, 0.1)")
        _check(0.0 < self.compression_limit < 0.1, "failure.compression_limit",
               self.compression_limit, "a strain in (0, 0.1)")
        _check(0.5 <= self.averaging_radius_mm <= 10.0, "failure.averaging_radius_mm",
               self.averaging_radius_mm, "0.5-10 mm")
        _check(self.exclude_distal_mm >= 0.0, "failure.exclude_distal_mm",
               self.exclude_distal_mm, "a length >= 0 mm")
        _check(self.exclude_load_margin_mm >= 0.0, "failure.exclude_load_margin_mm",
               self.exclude_load_margin_mm, "a length >= 0 mm")


@dataclass(frozen=True)
class SolverConfig:
    """Finite-element solver options.

    Attributes:
        degree: Displacement polynomial degree (1 or 2). P2 is the default: on the phantom
            its failure load changes by < 2 % between 4, 3, 2.5 and 2 mm elements (GCI
            1.7 %, same region; benchmarks/results/convergence_p2.json), while P1 at 3 mm is
            ~9 % stiffer-weaker and puts the site elsewhere.
        ksp_type: PETSc Krylov method.
        pc_type: PETSc preconditioner (gamg, jacobi, lu).
        rtol: Relative residual tolerance.
        max_it: Iteration limit.
        petsc_options: Further PETSc options (name -> value), override everything.
        p_multigrid: P2 models: precondition with the two-level p-multigrid (GAMG on the
            P1 stiffness of the same mesh, :mod:`fea.pmultigrid`); false: GAMG on P2.
        isolate_preparation: Run the preparation (read, mesh, map, landmarks) in a child
            process: "mpi" (under MPI only, the default: rank 0 then enters the solve
            without the meshing libraries' ~190 MB), "always" (serial runs too: same
            memory saving, ~2 s of interpreter start), "never".

    The Krylov method, preconditioner, tolerance and iteration limit default to
    :class:`fea.types.SolverOptions`' (their one definition); the degree is the pipeline's
    own choice (P2, see above), where the solver's default is the element's (P1).
    """

    degree: int = 2
    ksp_type: str = SolverOptions.ksp_type
    pc_type: str = SolverOptions.pc_type
    rtol: float = SolverOptions.rtol
    max_it: int = SolverOptions.max_it
    petsc_options: dict[str, str] = field(default_factory=dict)
    p_multigrid: bool = SolverOptions.p_multigrid
    isolate_preparation: str = "mpi"

    def __post_init__(self) -> None:
        _check(self.degree in (1, 2), "solver.degree", self.degree, "1 or 2")
        _check(self.isolate_preparation in ISOLATION_CHOICES, "solver.isolate_preparation",
               self.isolate_preparation, " or ".join(f'"{c}"' for c in ISOLATION_CHOICES),
               ISOLATION_CHOICES)
        _check(0.0 < self.rtol < 1e-2, "solver.rtol", self.rtol, "a tolerance in (0, 1e-2)")
        _check(self.max_it >= 1, "solver.max_it", self.max_it, "a positive integer")


@dataclass(frozen=True)
class NonlinearConfig:
    """Nonlinear load to failure (Keyak 2005 law; the linear case's head traction, scaled).

    The plasticity method passes the peak under indirect displacement control (the mean
    head-patch displacement along the load is prescribed per increment; the elastic GAMG
    preconditions every Newton step and Krylov tolerances follow Eisenstat-Walker).

    Attributes:
        enabled: Run the nonlinear analysis after the linear one.
        cases: Load cases to analyse (empty: the weakest linear case).
        max_increments: Increment limit.
        step_fraction: Head displacement step as a fraction of the displacement at the linear
            failure load.
        tolerance: Secant moduli tolerance per increment (relative).
        max_iterations: Secant iterations per increment.
        krylov_rtol: CG relative tolerance of the solves inside the secant iterations (the
            secant tolerance, not this one, limits their accuracy; the linear analysis keeps
            solver.rtol).
        stop_fraction: Stop once the force has fallen below this fraction of its peak.
        method: "plasticity" (incremental Newton, fea.plasticity, the default) or "secant"
            (the earlier secant damage model, fea.nonlinear, kept for comparison).
        residual_rtol: Plasticity: equilibrium criterion ||R|| / ||F|| per increment.
        max_cutbacks: Plasticity: halvings of the step before the analysis gives up (a
            warning says so; indirect displacement control of the head-patch displacement).
        regularise: Plasticity: crack-band scaling of the softening modulus.
        reference_length_mm: Plasticity: element size of the softening law's calibration.
        max_step_growth: Plasticity: steps adapt to the Newton iterations, up to this
            multiple of the first step.
    """

    enabled: bool = False
    cases: tuple[str, ...] = ()
    max_increments: int = 40
    step_fraction: float = 0.12
    tolerance: float = 1e-3
    max_iterations: int = 25
    krylov_rtol: float = 1e-6
    stop_fraction: float = 0.9
    method: str = "plasticity"
    residual_rtol: float = 1e-6
    max_cutbacks: int = 4
    regularise: bool = True
    reference_length_mm: float = 3.0
    max_step_growth: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))
        _check(self.method in ("plasticity", "secant"), "nonlinear.method", self.method,
               "'plasticity' or 'secant'")
        _check(1e-12 <= self.residual_rtol <= 1e-2, "nonlinear.residual_rtol",
               self.residual_rtol, "1e-12 - 1e-2")
        _check(0 <= self.max_cutbacks <= 20, "nonlinear.max_cutbacks", self.max_cutbacks,
               "0-20")
        _check(1.0 <= self.max_step_growth <= 16.0, "nonlinear.max_step_growth",
               self.max_step_growth, "1-16")
        _check(0.0 < self.reference_length_mm <= 20.0, "nonlinear.reference_length_mm",
               self.reference_length_mm, "(0, 20] mm")
        _check(0.0 < self.stop_fraction < 1.0, "nonlinear.stop_fraction", self.stop_fraction,
               "a fraction in (0, 1)")
        _check(2 <= self.max_increments <= 500, "nonlinear.max_increments",
               self.max_increments, "2-500")
        _check(0.0 < self.step_fraction <= 1.0, "nonlinear.step_fraction", self.step_fraction,
               "a fraction in (0, 1]")
        _check(0.0 < self.tolerance < 0.5, "nonlinear.tolerance", self.tolerance, "(0, 0.5)")
        _check(1 <= self.max_iterations <= 200, "nonlinear.max_iterations",
               self.max_iterations, "1-200")
        _check(1e-14 <= self.krylov_rtol <= 1e-3, "nonlinear.krylov_rtol", self.krylov_rtol,
               "1e-14 - 1e-3")


@dataclass(frozen=True)
class Config:
    """All options of an osteofe run."""

    mesh: MeshConfig = field(default_factory=MeshConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    failure: FailureConfig = field(default_factory=FailureConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    nonlinear: NonlinearConfig = field(default_factory=NonlinearConfig)

    def __post_init__(self) -> None:
        names = {*self.load.cases,
                 *(f"custom_{i + 1}" for i in range(len(self.load.custom_forces_n)))}
        for name in self.nonlinear.cases:
            _check(name in names, "nonlinear.cases", name,
                   f"a load case the run computes: one of {sorted(names)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of every option (for provenance)."""
        return dataclasses.asdict(self)

    def override(self, section: str, **values: Any) -> Config:
        """Return a copy with some options of one section replaced (None values ignored)."""
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return self
        return replace(self, **{section: replace(getattr(self, section), **given)})


_SECTIONS = {f.name: f for f in fields(Config)}


def _is_number(value: object) -> bool:
    """An int or a finite float (TOML's nan and inf are no option values)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


#: What a TOML value of each option type must be: (test, words for the message).
_TYPE_CHECKS: dict[str, tuple[Any, str]] = {
    "float": (_is_number, "a finite number"),
    "float | None": (_is_number, "a finite number"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[str, ...]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                        "a list of strings"),
    "tuple[tuple[float, float, float], ...]": (
        lambda v: isinstance(v, list) and all(
            isinstance(f, list) and all(_is_number(x) for x in f) for f in v),
        "a list of [fx, fy, fz] triples of finite numbers"),
    "dict[str, str]": (lambda v: isinstance(v, dict) and all(_is_scalar(x) for x in v.values()),
                       "a table of option = value"),
}


def _section_from_dict(section: str, data: object) -> Any:
    cls = {"mesh": MeshConfig, "material": MaterialConfig, "load": LoadConfig,
           "failure": FailureConfig, "solver": SolverConfig,
           "nonlinear": NonlinearConfig}[section]
    if not isinstance(data, dict):
        raise InputError(f"config section [{section}] is {data!r}, not a table of options",
                         hint=f"write the options under a [{section}] header, or see "
                         "`osteofe config --print-default`")
    types = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} in config section [{section}]",
                         hint=f"valid options: {sorted(types)}")
    for name, value in data.items():
        test, words = _TYPE_CHECKS[types[name]]
        if not test(value):
            raise InputError(f"config value {section}.{name} = {value!r} is invalid",
                             hint=f"use {words}")
    if "petsc_options" in data:
        data = {**data, "petsc_options": {str(k): str(v).lower() if isinstance(v, bool)
                                          else str(v) for k, v in data["petsc_options"].items()}}
    try:
        return cls(**data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"bad value in config section [{section}]: {exc}",
                         hint="see `osteofe config --print-default`") from exc


def load_config(path: str | Path | None) -> Config:
    """Read a TOML configuration file (None -> all defaults).

    Raises:
        InputError: missing or malformed file, unknown section/option, invalid value.
    """
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}", hint="check the --config path")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror or exc}",
                         hint="check the --config path and its permissions") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"config file {path} is not UTF-8 text: {exc}",
                         hint="save it as UTF-8; see `osteofe config --print-default`") from exc
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError(f"config file {path} is not valid TOML: {reason}",
                         hint="see `osteofe config --print-default` for the format") from exc
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise InputError(f"unknown config section(s) {unknown} in {path}",
                         hint=f"valid sections: {sorted(_SECTIONS)}")
    sections = {name: _section_from_dict(name, value) for name, value in data.items()}
    return Config(**sections)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    return repr(value)


def default_toml() -> str:
    """The default configuration as documented TOML text."""
    lines = ["# osteofe configuration (all values shown are the defaults)"]
    for section in fields(Config):
        cls_instance = getattr(Config(), section.name)
        doc = (type(cls_instance).__doc__ or "").strip()
        attributes = _attribute_docs(doc)
        lines.append("")
        lines.append(f"[{section.name}]")
        for f in fields(cls_instance):
            value = getattr(cls_instance, f.name)
            comment = attributes.get(f.name, "")
            if comment:
                lines.append(f"# {comment}")
            if value is None:
                lines.append(f"# {f.name} = (not set)")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _attribute_docs(doc: str) -> dict[str, str]:
    """Parse the 'Attributes:' block of a Google-style docstring."""
    out: dict[str, str] = {}
    current = None
    in_block = False
    for raw in doc.splitlines():
        line = raw.strip()
        if line == "Attributes:":
            in_block = True
            continue
        if not in_block or not line:
            continue
        head, sep, rest = line.partition(":")
        if sep and " " not in head:
            current = head
            out[current] = rest.strip()
        elif current:
            out[current] += " " + line
    return out
