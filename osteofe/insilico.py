"""SYNTHETIC in-silico cohorts: virtual patients with metastatic femurs and simulated outcomes.

Everything this module writes is labelled SYNTHETIC - synthetic, not evidence (a
``data_origin`` column in every table, ``"data_origin": "SYNTHETIC"`` in every JSON, case
ids ``SYN-0001``..., a README in the output folder). It is a test bed for the benchmark
harness, not evidence about patients.

**Virtual patients** (:func:`sample_patients`) are the built-in phantom
(:mod:`meshing.phantom`) with varied geometry, bone density, body mass and lesion, drawn
from the distributions of :class:`PatientModel` (illustrative adult ranges, inside the valid
ranges of :class:`~meshing.phantom.PhantomParams`; none is fitted to a population).

**Images.** Per patient (:func:`build_patient`): a "clinical" CT (``voxel_mm``, Gaussian
noise ``noise_hu``) on which the predictors are computed, and a noise-free "reference" CT
(``truth_voxel_mm``) for the reference FE model. Measured on the clinical label map and CT:

- Mirels size: the fraction of the bone's diameter occupied by the lesion along the
  diameter through the lesion centre, in the cross-section normal to the host bone's axis
  (neck axis for neck/calcar lesions, shaft axis otherwise);
- ACI: the extent along the host axis of the lesion voxels lying in the cortical shell
  (depth below the periosteal surface <= the phantom's nominal cortical thickness there,
  at least one voxel), for lytic and mixed lesions that reach the shell; 0 otherwise;
- CTRA-like rigidity loss: slabs normal to the host axis through the lesion; per slab the
  axial (EA), minimum bending (EI) and torsional (GJ, polar) rigidity from
  E(HU) (the FE material law), compared with the same slab of the patient's intact twin
  (the contralateral-femur comparison of CTRA); the largest loss over slabs and the three
  rigidities.

Mirels items: site ``peritrochanteric`` for neck, calcar, intertrochanteric and
subtrochanteric lesions and ``lower_limb`` for diaphyseal ones; lesion type as simulated;
size from the measured fraction; pain from an ordered-logistic draw that depends on the
size only: latent ``= pain_slope * fraction + L`` with ``L`` standard logistic, ``mild``
below ``pain_cutpoints[0]``, ``functional`` above ``pain_cutpoints[1]`` (illustrative; real
pain also signals micro-fracture, which this model leaves out, so here the pain item adds
nothing beyond the lesion size). A femur without a lesion (``lesion_fraction < 1``) is scored
by convention as lower limb, blastic, size < 1/3 (Mirels is undefined without a lesion).

**Outcome process** (:class:`OutcomeModel`, :func:`draw_outcome`) - independent of every
predictor being compared by construction: it takes only the reference strengths, the body
mass and random draws of its own stream, never the clinical CT, the Mirels items, ACI or
CTRA:

1. Reference strengths: the linear FE failure loads of the reference model for stance and
   for a sideways fall. The reference is another model family than the predictors (so the
   FE-vs-Mirels comparison is not circular): a finer noise-free CT (``truth_voxel_mm``,
   ``truth_mesh_mm`` mesh), another modulus law (``truth_law``, Keyak 1998 / Keller 1994
   instead of Morgan 2003) and another failure criterion (``truth_strain_limits``,
   femoral-neck yield strains of Morgan & Keaveny 2001 instead of Schileo 2008), while the
   predictors see a clinical CT with noise and a one-voxel segmentation error
   (``segmentation_noise``).
2. True strength = reference strength x ``exp(sigma * z)``, ``z ~ N(0, 1)`` per femur:
   the error of linear strain-based FE against cadaver tests, SEE 814 N with R^2 0.89
   (Schileo et al. 2008, J Biomech 41:356, as quoted in DESIGN.md 4 [R]); a log-SD of 0.20 is
   an SEE of 0.8 kN at 4 kN. (Nonlinear FE of metastatic femurs: RMSE 0.64 kN, R^2 0.93,
   Sas et al. 2020.)
3. Loads: a habitual peak hip load per patient, lognormal with median 3.0 BW and log-SD
   0.12 (2.4-3.8 BW; walking 2.38, stairs 2.51-2.60 BW, Bergmann et al. 2001) against the
   stance strength; stumbles as a Poisson process (``stumble_rate_per_month``) with loads
   lognormal, median 6.5 BW, log-SD 0.15 (Bergmann et al. 1993 measured 7.2 and 8.7 BW),
   in the stance direction (Bergmann 1993: the frontal-plane direction changes little);
   sideways falls as a Poisson process (``fall_rate_per_month``) with impact forces
   lognormal, median 4.0 kN, log-SD 0.40 (in-vivo estimates 4.0 +- 1.7 kN, DESIGN.md 4)
   against the fall strength.
4. Follow-up uniform in ``follow_up_months``; death at an exponential time
   (``death_rate_per_month``) ends it and competes with fracture (``died`` column).
   Fracture when a load reaches the true strength before death and the end of follow-up:
   in the first month if the habitual load does (uniform time), else at the first stumble
   or fall that does; ``follow_up_months`` is then the time of fracture (or of death).

The constants are illustrative choices within the cited ranges, set once so that the
fracture rate is of the order of clinical cohorts (14 of 100 in Van der Wal et al. 2020),
not tuned to favour any predictor.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import io
import json
import math
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from core.types import FloatArray
from fea.loads import body_weight_newton
from meshing.errors import InputError
from meshing.phantom import LesionParams, Phantom, PhantomParams, make_phantom, write_phantom
from osteofe.config import Config
from osteofe.outputs import atomic_write_text, write_json

__all__ = [
    "DATA_ORIGIN",
    "SITES",
    "InsilicoCohort",
    "InsilicoOptions",
    "LesionSpec",
    "Outcome",
    "OutcomeDraws",
    "OutcomeModel",
    "PatientModel",
    "VirtualPatient",
    "build_patient",
    "draw_outcome",
    "format_insilico",
    "generate_cohort",
    "sample_patients",
]


#: The label of every synthetic record.
DATA_ORIGIN = "SYNTHETIC"
#: Lesion sites: the phantom's named sites plus ``"shaft"`` (diaphysis below the
#: subtrochanteric site).
SITES: tuple[str, ...] = ("neck", "calcar", "intertrochanteric", "subtrochanteric", "shaft")
#: Mirels site category of each lesion site.
MIRELS_SITE: Mapping[str, str] = {
    "neck": "peritrochanteric", "calcar": "peritrochanteric",
    "intertrochanteric": "peritrochanteric", "subtrochanteric": "peritrochanteric",
    "shaft": "lower_limb", "none": "lower_limb",
}
_README = """SYNTHETIC DATA - osteofe in-silico cohort
==========================================

Every CT, label map, table and result in this folder was generated by osteofe.insilico from a
synthetic phantom with simulated lesions and a simulated outcome process. Nothing here comes
from a patient and nothing here says anything about clinical performance.

manifest.csv    inputs of `osteofe cohort run` (clinical CTs, Mirels, ACI, CTRA, outcomes)
truth.csv       the hidden truth: reference strengths, model error, loads, fracture cause
cohort_info.json  generator options, outcome model, counts
patients/       per patient: clinical CT, labels, phantom.json, patient.json; truth/ CT
truth_fe/       the reference FE runs (run_cohort output)
"""


# --------------------------------------------------------------------------------------------
# Models and options.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeModel:
    """The stochastic outcome process (module docstring, steps 1-4).

    Attributes:
        model_error_sd_log: Log-SD of true / reference strength (0.20: SEE 0.8 kN at 4 kN;
            Schileo et al. 2008 [R]).
        habitual_load_median_bw: Median habitual peak hip load, BW (Bergmann et al. 2001).
        habitual_load_sd_log: Its log-SD between patients.
        stumble_rate_per_month: Stumbles per month (illustrative).
        stumble_load_median_bw: Median stumbling hip load, BW (Bergmann et al. 1993).
        stumble_load_sd_log: Its log-SD.
        fall_rate_per_month: Sideways falls per month (illustrative).
        fall_impact_median_n: Median fall impact force on the hip, N (DESIGN.md 4).
        fall_impact_sd_log: Its log-SD (1.7 / 4.0 kN ~ 0.4).
        follow_up_months: (min, max) of the uniform follow-up.
        death_rate_per_month: Constant death hazard (0.06: median survival 11.6 months,
            illustrative for patients with femoral metastases); death ends follow-up and
            competes with fracture.
    """

    model_error_sd_log: float = 0.20
    habitual_load_median_bw: float = 3.0
    habitual_load_sd_log: float = 0.12
    stumble_rate_per_month: float = 0.04
    stumble_load_median_bw: float = 6.5
    stumble_load_sd_log: float = 0.15
    fall_rate_per_month: float = 0.01
    fall_impact_median_n: float = 4000.0
    fall_impact_sd_log: float = 0.40
    follow_up_months: tuple[float, float] = (3.0, 24.0)
    death_rate_per_month: float = 0.06

    def __post_init__(self) -> None:
        values = asdict(self)
        lo, hi = self.follow_up_months
        for name, value in values.items():
            flat = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in flat):
                raise InputError(f"outcome model {name}={value!r} is invalid",
                                 "give finite, non-negative numbers")
        if not 0 < lo <= hi or self.habitual_load_median_bw <= 0:
            raise InputError(f"outcome model follow_up_months={self.follow_up_months!r} is "
                             "invalid", "give 0 < min <= max months")


@dataclass(frozen=True)
class PatientModel:
    """Distributions of the virtual patients (illustrative adult values).

    Attributes:
        head_radius_mm: Uniform range of the femoral head radius.
        neck_to_head_radius: Uniform range of neck radius / head radius.
        neck_shaft_angle_deg: (mean, SD, min, max) of a clipped normal.
        anteversion_deg: (mean, SD, min, max) of a clipped normal.
        shaft_radius_mm: Uniform range of the shaft radius at the distal cut.
        cortex_shaft_mm: Uniform range of the mid-shaft cortical thickness.
        cortex_proximal_mm: Uniform range of the head/neck cortical thickness.
        density_sd_log: Log-SD of the trabecular density factor (cortex: half the deviation).
        density_range: Clip range of the density factor.
        body_mass_kg: (mean, SD, min, max) of a clipped normal.
        lesion_fraction: Probability that a femur has a lesion.
        site_weights: Relative frequency of each lesion site (:data:`SITES`).
        kind_weights: Relative frequency of lytic, mixed and blastic lesions.
        lesion_radius_mm: Uniform range of the lesion's transverse semi-axes.
        lesion_elongation: Uniform range of the axial / transverse semi-axis ratio.
        shaft_depth_mm: Uniform range of the depth of a diaphyseal lesion below the lesser
            trochanter apex.
        pain_slope: Pain latent per unit size fraction.
        pain_cutpoints: Latent cut points mild | moderate | functional.
    """

    head_radius_mm: tuple[float, float] = (20.5, 25.5)
    neck_to_head_radius: tuple[float, float] = (0.60, 0.70)
    neck_shaft_angle_deg: tuple[float, float, float, float] = (127.0, 5.0, 115.0, 140.0)
    anteversion_deg: tuple[float, float, float, float] = (12.0, 6.0, -5.0, 30.0)
    shaft_radius_mm: tuple[float, float] = (12.5, 15.5)
    cortex_shaft_mm: tuple[float, float] = (3.5, 6.5)
    cortex_proximal_mm: tuple[float, float] = (0.8, 1.4)
    density_sd_log: float = 0.12
    density_range: tuple[float, float] = (0.7, 1.3)
    body_mass_kg: tuple[float, float, float, float] = (72.0, 14.0, 45.0, 120.0)
    lesion_fraction: float = 1.0
    site_weights: tuple[float, float, float, float, float] = (0.15, 0.25, 0.2, 0.2, 0.2)
    kind_weights: tuple[float, float, float] = (0.55, 0.30, 0.15)
    lesion_radius_mm: tuple[float, float] = (5.0, 16.0)
    lesion_elongation: tuple[float, float] = (1.0, 1.8)
    shaft_depth_mm: tuple[float, float] = (35.0, 55.0)
    pain_slope: float = 3.0
    pain_cutpoints: tuple[float, float] = (1.0, 2.2)

    def __post_init__(self) -> None:
        if not 0.0 <= self.lesion_fraction <= 1.0:
            raise InputError(f"lesion_fraction={self.lesion_fraction!r} is not in [0, 1]",
                             "give a probability")
        for name in ("site_weights", "kind_weights"):
            weights = getattr(self, name)
            if min(weights) < 0 or sum(weights) <= 0:
                raise InputError(f"{name}={weights!r} are not valid weights",
                                 "give non-negative weights with a positive sum")
        if self.pain_cutpoints[0] >= self.pain_cutpoints[1]:
            raise InputError(f"pain_cutpoints={self.pain_cutpoints!r} must increase",
                             "give (mild|moderate, moderate|functional)")


@dataclass(frozen=True)
class InsilicoOptions:
    """Images and the reference model of an in-silico cohort.

    Attributes:
        voxel_mm: Voxel size of the clinical CT (predictors are computed on it).
        noise_hu: Gaussian noise SD of the clinical CT, HU.
        truth_voxel_mm: Voxel size of the noise-free reference CT.
        truth_mesh_mm: Element size of the reference FE model.
        soft_tissue_mm: Soft tissue around the bone (smaller = smaller images).
        distal_cut_mm: Length of the femur below the head centre.
        truth_load_cases: Reference load cases: ``stance`` (habitual loads and stumbles)
            and ``fall``.
        truth_law: Density-modulus law of the reference ("truth") model, another family than
            the predictors' default (``morgan2003_neck``): Keyak 1998 after Keller 1994.
        truth_strain_limits: (tension, compression) principal-strain limits of the reference
            model's failure criterion: femoral-neck trabecular yield strains 0.61 % / 0.85 %
            (Morgan & Keaveny 2001, J Biomech 34:569; recalled, not checked here) instead of
            the predictors' Schileo 2008 limits 0.73 % / 1.04 %.
        segmentation_noise: Perturb the clinical label map by one voxel (erosion, none or
            dilation of the bone, one third each, per patient): the predictors see a
            segmentation error the reference model does not.
        patients: Distributions of the virtual patients.
        outcome: The outcome process.
    """

    voxel_mm: float = 1.5
    noise_hu: float = 20.0
    truth_voxel_mm: float = 1.2
    truth_mesh_mm: float = 5.0
    soft_tissue_mm: float = 5.0
    distal_cut_mm: float = 200.0
    truth_load_cases: tuple[str, ...] = ("stance", "fall")
    truth_law: str = "keyak1998_modulus"
    truth_strain_limits: tuple[float, float] = (0.0061, 0.0085)
    segmentation_noise: bool = True
    patients: PatientModel = field(default_factory=PatientModel)
    outcome: OutcomeModel = field(default_factory=OutcomeModel)

    @classmethod
    def cheap(cls) -> InsilicoOptions:
        """Coarse images and mesh for tests: 1.5 mm voxels everywhere, 6 mm reference mesh."""
        return cls(voxel_mm=1.5, noise_hu=0.0, truth_voxel_mm=1.5, truth_mesh_mm=6.0,
                   soft_tissue_mm=3.0, distal_cut_mm=150.0)

    def truth_config(self) -> Config:
        """The reference FE model's configuration: another law and failure criterion."""
        tension, compression = self.truth_strain_limits
        return (Config().override("mesh", size_mm=self.truth_mesh_mm)
                .override("load", cases=tuple(self.truth_load_cases))
                .override("material", law=self.truth_law)
                .override("failure", tension_limit=tension, compression_limit=compression))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Virtual patients.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LesionSpec:
    """A simulated lesion.

    Attributes:
        site: One of :data:`SITES`.
        radius_mm: Transverse semi-axes (frame x and y), mm.
        elongation: Axial (frame z) / transverse semi-axis ratio.
        kind: ``"lytic"``, ``"mixed"`` or ``"blastic"``.
        shaft_depth_mm: Depth of a diaphyseal lesion below the lesser trochanter apex.
        shaft_side: ``"medial"`` or ``"lateral"`` cortex of a diaphyseal lesion.
    """

    site: str
    radius_mm: float
    elongation: float
    kind: Literal["lytic", "mixed", "blastic"]
    shaft_depth_mm: float = 0.0
    shaft_side: Literal["medial", "lateral"] = "medial"

    @property
    def semi_axes_mm(self) -> tuple[float, float, float]:
        """Semi-axes along the anatomical frame's x, y, z."""
        return (self.radius_mm, self.radius_mm, self.radius_mm * self.elongation)


@dataclass(frozen=True)
class OutcomeDraws:
    """The outcome stream's random numbers of one patient (drawn before any FE).

    Attributes:
        follow_up_months: Follow-up without fracture.
        model_error_z: Standard normal of the model error (true / reference strength).
        habitual_z: Standard normal of the habitual load.
        habitual_time_u: Uniform(0, 1): time in the first month of a habitual-load fracture.
        stumble_times: Months of the stumbles within follow-up, increasing.
        stumble_z: Standard normals of the stumble loads.
        fall_times: Months of the falls within follow-up, increasing.
        fall_z: Standard normals of the fall impact forces.
        death_month: Month of death (exponential, ``death_rate_per_month``; inf: never).
    """

    follow_up_months: float
    model_error_z: float
    habitual_z: float
    habitual_time_u: float
    stumble_times: tuple[float, ...]
    stumble_z: tuple[float, ...]
    fall_times: tuple[float, ...]
    fall_z: tuple[float, ...]
    death_month: float = math.inf


@dataclass(frozen=True)
class VirtualPatient:
    """One SYNTHETIC patient (one right femur).

    Attributes:
        case_id: ``SYN-0001``...
        index: 0-based position in the cohort.
        params: Phantom geometry and density (clinical voxel size and noise).
        density_factor: Trabecular density factor applied to the default phantom.
        body_mass_kg: Body mass, kg.
        lesion: The lesion, or ``None``.
        pain_logistic: Standard-logistic draw of the pain latent.
        outcome: The outcome stream's draws.
    """

    case_id: str
    index: int
    params: PhantomParams
    density_factor: float
    body_mass_kg: float
    lesion: LesionSpec | None
    pain_logistic: float
    outcome: OutcomeDraws

    def fingerprint(self, options: InsilicoOptions) -> str:
        """SHA-256 of everything the patient's images and measurements depend on."""
        doc = {"patient": asdict(self), "options": {
            k: v for k, v in options.to_dict().items()
            if k not in ("outcome", "truth_mesh_mm", "truth_load_cases")}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> FloatArray:
    return rng.uniform(bounds[0], bounds[1], n)


def _clipped_normal(rng: np.random.Generator, spec: tuple[float, float, float, float],
                    n: int) -> FloatArray:
    mean, sd, lo, hi = spec
    return np.clip(rng.normal(mean, sd, n), lo, hi)


def _scaled_density(p: PhantomParams, d: float) -> dict[str, Any]:
    """Density fields scaled by ``d`` (trabecular) and ``1 + (d - 1) / 2`` (cortex)."""
    c = 1.0 + 0.5 * (d - 1.0)
    low, high = (float(v) for v in p.rho_of(p.trabecular_hu_range))
    hu_range = tuple(float(v) for v in p.hu_of([d * low, d * high]))
    return {
        "rho_cortex_proximal": c * p.rho_cortex_proximal,
        "rho_cortex_shaft": c * p.rho_cortex_shaft,
        "rho_trabecular_base": d * p.rho_trabecular_base,
        "rho_head_extra": d * p.rho_head_extra,
        "rho_compressive_extra": d * p.rho_compressive_extra,
        "rho_tensile_extra": d * p.rho_tensile_extra,
        "rho_ward_deficit": d * p.rho_ward_deficit,
        "rho_greater_trochanter_deficit": d * p.rho_greater_trochanter_deficit,
        "trabecular_hu_range": hu_range,
    }


def _poisson_times(rng: np.random.Generator, rate: float, months: float) -> FloatArray:
    count = int(rng.poisson(rate * months))
    return np.sort(rng.uniform(0.0, months, count))


def sample_patients(n: int, seed: int, options: InsilicoOptions | None = None
                    ) -> tuple[VirtualPatient, ...]:
    """Draw ``n`` SYNTHETIC virtual patients (cheap: no image is made).

    Five independent random streams (``numpy.random.SeedSequence(seed).spawn(5)``): geometry
    and density, body mass, lesion, pain, outcome. Patient ``i`` takes element ``i`` of
    each stream's arrays, so changing one stream's model (e.g. the pain model) leaves every
    other draw unchanged; in particular the outcome draws never depend on anything the
    predictors see.

    Args:
        n: Number of patients, >= 1.
        seed: Seed (same seed and options: identical patients).
        options: Generator options (default :class:`InsilicoOptions`).

    Returns:
        The patients, ``SYN-0001``, ``SYN-0002``...

    Raises:
        InputError: If ``n`` or ``seed`` is invalid.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"number of patients must be a positive integer, got {n!r}",
                         "e.g. n=200")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", "e.g. seed=0")
    opts = options or InsilicoOptions()
    pm, om = opts.patients, opts.outcome
    geometry, body, lesion, pain, outcome = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))

    head = _uniform(geometry, pm.head_radius_mm, n)
    neck_ratio = _uniform(geometry, pm.neck_to_head_radius, n)
    neck_base_extra = geometry.uniform(3.0, 5.0, n)
    neck_length_factor = geometry.uniform(0.95, 1.05, n)
    nsa = _clipped_normal(geometry, pm.neck_shaft_angle_deg, n)
    ante = _clipped_normal(geometry, pm.anteversion_deg, n)
    shaft = _uniform(geometry, pm.shaft_radius_mm, n)
    cortex_shaft = _uniform(geometry, pm.cortex_shaft_mm, n)
    cortex_prox = _uniform(geometry, pm.cortex_proximal_mm, n)
    density = np.clip(np.exp(geometry.normal(0.0, pm.density_sd_log, n)), *pm.density_range)
    noise_seeds = geometry.integers(0, 2**31 - 1, n)

    mass = _clipped_normal(body, pm.body_mass_kg, n)

    has_lesion = lesion.uniform(size=n) < pm.lesion_fraction
    site_p = np.asarray(pm.site_weights) / sum(pm.site_weights)
    kind_p = np.asarray(pm.kind_weights) / sum(pm.kind_weights)
    sites = lesion.choice(len(SITES), n, p=site_p)
    kinds = lesion.choice(3, n, p=kind_p)
    radius = _uniform(lesion, pm.lesion_radius_mm, n)
    elongation = _uniform(lesion, pm.lesion_elongation, n)
    depth = _uniform(lesion, pm.shaft_depth_mm, n)
    side_u = lesion.uniform(size=n)

    pain_u = pain.uniform(size=n)
    pain_logistic = np.log(pain_u) - np.log1p(-pain_u)

    base = PhantomParams()
    out = []
    lo_fu, hi_fu = om.follow_up_months
    for i in range(n):
        follow = float(outcome.uniform(lo_fu, hi_fu))
        error_z, habitual_z = (float(v) for v in outcome.standard_normal(2))
        habitual_u = float(outcome.uniform())
        stumbles = _poisson_times(outcome, om.stumble_rate_per_month, follow)
        stumble_z = outcome.standard_normal(stumbles.size)
        falls = _poisson_times(outcome, om.fall_rate_per_month, follow)
        fall_z = outcome.standard_normal(falls.size)
        death = (float(outcome.exponential(1.0 / om.death_rate_per_month))
                 if om.death_rate_per_month > 0 else math.inf)
        draws = OutcomeDraws(
            follow_up_months=follow, model_error_z=error_z, habitual_z=habitual_z,
            habitual_time_u=habitual_u,
            stumble_times=tuple(float(t) for t in stumbles),
            stumble_z=tuple(float(z) for z in stumble_z),
            fall_times=tuple(float(t) for t in falls),
            fall_z=tuple(float(z) for z in fall_z),
            death_month=death,
        )
        r = float(head[i])
        neck_radius = float(neck_ratio[i]) * r
        params = replace(
            base,
            voxel_size_mm=opts.voxel_mm,
            head_radius_mm=r,
            neck_radius_mm=neck_radius,
            neck_base_radius_mm=neck_radius + float(neck_base_extra[i]),
            neck_length_mm=base.neck_length_mm * r / base.head_radius_mm
            * float(neck_length_factor[i]),
            neck_shaft_angle_deg=float(nsa[i]),
            anteversion_deg=float(ante[i]),
            shaft_radius_mm=float(shaft[i]),
            subtrochanteric_radius_mm=float(shaft[i]) + 1.5,
            metaphysis_radius_mm=max(base.metaphysis_radius_mm * r / base.head_radius_mm,
                                     float(shaft[i]) + 3.5),
            cortex_shaft_mm=float(cortex_shaft[i]),
            cortex_proximal_mm=float(cortex_prox[i]),
            distal_cut_mm=opts.distal_cut_mm,
            soft_tissue_mm=opts.soft_tissue_mm,
            noise_sd_hu=opts.noise_hu,
            seed=int(noise_seeds[i]),
            **_scaled_density(base, float(density[i])),
        )
        spec = None
        if has_lesion[i]:
            kinds_: tuple[Literal["lytic", "mixed", "blastic"], ...] = (
                "lytic", "mixed", "blastic")
            kind = kinds_[int(kinds[i])]
            spec = LesionSpec(site=SITES[int(sites[i])], radius_mm=float(radius[i]),
                              elongation=float(elongation[i]), kind=kind,
                              shaft_depth_mm=float(depth[i]),
                              shaft_side="medial" if side_u[i] < 0.5 else "lateral")
        out.append(VirtualPatient(
            case_id=f"SYN-{i + 1:04d}", index=i, params=params,
            density_factor=float(density[i]), body_mass_kg=float(mass[i]), lesion=spec,
            pain_logistic=float(pain_logistic[i]), outcome=draws))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Images and measurements.
# --------------------------------------------------------------------------------------------


def _lesion_params(spec: LesionSpec, intact: Phantom) -> LesionParams:
    """Phantom lesion parameters; a diaphyseal lesion is placed from the intact twin."""
    if spec.site != "shaft":
        return LesionParams(site=spec.site, radius_mm=spec.semi_axes_mm, kind=spec.kind)
    truth = intact.truth
    axes = truth.frame_axes
    s = axes @ (truth.neck_shaft_intersection_mm - truth.head_centre_mm)
    lt_z = float(axes[2] @ (truth.lesser_trochanter_mm - truth.head_centre_mm))
    p = intact.params or PhantomParams()
    radius = 0.5 * (p.shaft_radius_mm + p.subtrochanteric_radius_mm)
    offset = radius - 4.0  # centred 4 mm inside the periosteal surface, like the phantom's
    x = float(s[0]) + (-offset if spec.shaft_side == "medial" else offset)  # frame x: lateral
    centre = (x, float(s[1]), lt_z - spec.shaft_depth_mm)
    return LesionParams(site=centre, radius_mm=spec.semi_axes_mm, kind=spec.kind)


def _host_axis(phantom: Phantom, site: str) -> tuple[FloatArray, FloatArray]:
    """A point on and the unit direction of the host bone's axis (world, mm)."""
    truth = phantom.truth
    if site in ("neck", "calcar"):
        return truth.head_centre_mm, truth.neck_axis
    return truth.neck_shaft_intersection_mm, truth.shaft_axis


def _world_points(phantom: Phantom, index: tuple[npt.NDArray[np.intp], ...]) -> FloatArray:
    return phantom.ct.grid.index_to_world(np.column_stack(index).astype(np.float64))


def size_fraction(phantom: Phantom, site: str) -> float:
    """Fraction of the bone diameter occupied by the lesion (Mirels size, approximated).

    Along the diameter through the lesion centre in the cross-section normal to the host
    axis (towards the lesion centre; medial when the centre is on the axis), sampled every
    quarter voxel with nearest-voxel lookup: lesion length / length of the bone run that
    contains the axis.

    Args:
        phantom: A phantom with a lesion.
        site: The lesion site (selects the host axis).

    Returns:
        The fraction in [0, 1].
    """
    lesion = phantom.truth.lesion
    if lesion is None:
        return 0.0
    point, axis = _host_axis(phantom, site)
    centre = np.asarray(lesion["centre_mm"], dtype=np.float64)
    foot = point + ((centre - point) @ axis) * axis
    radial = centre - foot
    if np.linalg.norm(radial) < 1.0:
        medial = -phantom.truth.frame_axes[0]  # frame x is lateral for this right femur
        radial = medial - (medial @ axis) * axis
    direction = radial / np.linalg.norm(radial)
    grid = phantom.ct.grid
    h = float(grid.spacing.min())
    step = 0.25 * h
    t = np.arange(-80.0, 80.0 + step, step)
    ijk = np.rint(grid.world_to_index(foot[None, :] + t[:, None] * direction)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(grid.shape)), axis=1)
    labels = np.zeros(t.size, dtype=np.int32)
    labels[inside] = phantom.labels.labels[tuple(ijk[inside].T)]
    bone = labels > 0
    zero = int(np.argmin(np.abs(t)))
    if not bone[zero]:
        return 0.0
    lo = zero
    while lo > 0 and bone[lo - 1]:
        lo -= 1
    hi = zero
    while hi < t.size - 1 and bone[hi + 1]:
        hi += 1
    run = labels[lo:hi + 1]
    return float(np.count_nonzero(run == 2) / run.size)


def _cortex_thickness(p: PhantomParams, site: str, depth_mm: float) -> float:
    """Nominal cortical thickness at a site (linear between the transition depths)."""
    if site in ("neck", "intertrochanteric"):
        return p.cortex_proximal_mm
    if site == "calcar":
        return p.cortex_proximal_mm + p.calcar_extra_mm
    lo, hi = p.cortex_transition_mm
    f = min(max((depth_mm - lo) / (hi - lo), 0.0), 1.0)
    return p.cortex_proximal_mm + f * (p.cortex_shaft_mm - p.cortex_proximal_mm)


def axial_cortical_involvement(phantom: Phantom, site: str) -> float:
    """Axial extent (mm) of the lesion's breach of the cortex (0 if it does not breach it).

    Lesion voxels whose depth below the periosteal surface (Euclidean distance transform of
    the bone mask) is at most the nominal cortical thickness at the site (at least one
    voxel) form the breach; its extent along the host axis plus one voxel is the ACI.
    Blastic lesions destroy no cortex: 0.

    Args:
        phantom: A phantom with a lesion.
        site: The lesion site.

    Returns:
        ACI in mm.
    """
    lesion = phantom.truth.lesion
    if lesion is None or lesion["kind"] == "blastic" or phantom.params is None:
        return 0.0
    labels = phantom.labels.labels
    spacing = phantom.ct.grid.spacing
    h = float(spacing.min())
    les = np.nonzero(labels == 2)
    if les[0].size == 0:
        return 0.0
    pad = 12
    lo = [max(int(a.min()) - pad, 0) for a in les]
    hi = [min(int(a.max()) + pad + 1, s) for a, s in zip(les, labels.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub = labels[box]
    depth = ndimage.distance_transform_edt(sub > 0, sampling=spacing)
    point, axis = _host_axis(phantom, site)
    centre = np.asarray(lesion["centre_mm"], dtype=np.float64)
    truth = phantom.truth
    depth_below_head = float(-(truth.frame_axes[2] @ (centre - truth.head_centre_mm)))
    limit = max(_cortex_thickness(phantom.params, site, depth_below_head), h)
    shell = (sub == 2) & (depth <= limit + 1e-9)
    idx = np.nonzero(shell)
    if idx[0].size == 0:
        return 0.0
    index = tuple(a + o for a, o in zip(idx, lo, strict=True))
    along = (_world_points(phantom, index) - point) @ axis
    return float(along.max() - along.min() + h)


def rigidity_loss(lesioned: Phantom, intact: Phantom, site: str, material: Any) -> float:
    """CTRA-like loss of rigidity of the lesioned femur against its intact twin.

    Slabs one voxel thick normal to the host axis, from one lesion radius above to one
    below the centre; in each, voxels of the bone mask within a cylinder around the axis
    (the neck's base radius + 5 mm for neck/calcar, 35 mm at the intertrochanteric site,
    the subtrochanteric radius + 5 mm below); EA = sum(E dV)/t, EI_min from the E-weighted
    second moments about the E-weighted centroid, GJ ~ the polar moment (the shear modulus
    factor cancels in the ratio). Loss = max over slabs and the three of 1 - lesioned/intact.

    Args:
        lesioned: Phantom with the lesion.
        intact: The same femur without it (same grid).
        site: The lesion site.
        material: A :class:`material.laws.MaterialModel` (HU -> E).

    Returns:
        Loss in [0, 1].
    """
    lesion = lesioned.truth.lesion
    if lesion is None or lesioned.params is None:
        return 0.0
    p = lesioned.params
    point, axis = _host_axis(lesioned, site)
    centre = np.asarray(lesion["centre_mm"], dtype=np.float64)
    reach = float(max(lesion["semi_axes_mm"]))
    cap = {"neck": p.neck_base_radius_mm + 5.0, "calcar": p.neck_base_radius_mm + 5.0,
           "intertrochanteric": 35.0}.get(site, p.subtrochanteric_radius_mm + 5.0)
    h = float(lesioned.ct.grid.spacing.min())
    c_along = float((centre - point) @ axis)

    def slab_rigidities(phantom: Phantom) -> FloatArray:
        index = np.nonzero(phantom.labels.labels > 0)
        xyz = _world_points(phantom, index) - point
        along = xyz @ axis
        radial = xyz - along[:, None] * axis
        keep = (np.abs(along - c_along) <= reach + h) & (np.linalg.norm(radial, axis=1) <= cap)
        e_mod = material.modulus(phantom.ct.hu[tuple(a[keep] for a in index)])
        along, radial = along[keep], radial[keep]
        helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
        u = np.cross(axis, helper)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        pu, pv = radial @ u, radial @ v
        bins = np.floor((along - c_along) / h).astype(int)
        out = []
        volume = float(np.prod(phantom.ct.grid.spacing))
        for b in range(int(bins.min()), int(bins.max()) + 1):
            sel = bins == b
            if np.count_nonzero(sel) < 3:
                out.append((b, 0.0, 0.0, 0.0))
                continue
            w = e_mod[sel] * volume / h
            cu, cv = np.average(pu[sel], weights=w), np.average(pv[sel], weights=w)
            du, dv = pu[sel] - cu, pv[sel] - cv
            iuu, ivv, iuv = np.sum(w * dv * dv), np.sum(w * du * du), np.sum(w * du * dv)
            ei_min = 0.5 * (iuu + ivv) - math.hypot(0.5 * (iuu - ivv), iuv)
            out.append((b, float(w.sum()), float(ei_min), float(iuu + ivv)))
        return np.asarray(out, dtype=np.float64)

    les, ref = slab_rigidities(lesioned), slab_rigidities(intact)
    common = {int(row[0]): row[1:] for row in ref}
    loss = 0.0
    for row in les:
        base = common.get(int(row[0]))
        if base is None or np.any(base <= 0):
            continue
        loss = max(loss, float(np.max(1.0 - row[1:] / base)))
    return float(min(max(loss, 0.0), 1.0))


def _pain(patient: VirtualPatient, fraction: float, model: PatientModel) -> str:
    latent = model.pain_slope * fraction + patient.pain_logistic
    lo, hi = model.pain_cutpoints
    return "mild" if latent < lo else "moderate" if latent < hi else "functional"


def _material() -> Any:
    from material.laws import MaterialModel
    from osteofe.pipeline import default_calibration

    cfg = Config().material
    return MaterialModel.from_names(default_calibration(), law=cfg.law,
                                    poisson_ratio=cfg.poisson_ratio,
                                    E_floor_MPa=cfg.modulus_floor_mpa)


def _segmentation_error(phantom: Phantom, seed: int) -> tuple[Phantom, int]:
    """The clinical label map with a one-voxel segmentation error of the bone outline.

    Per patient (seeded by its noise seed) one of: erosion (-1), none (0) or dilation (+1)
    of the bone-plus-lesion mask by one voxel (6-connected); dilated voxels become bone,
    eroded ones background. The CT is unchanged.
    """
    shift = int(np.random.default_rng([seed, 7]).integers(-1, 2))
    if shift == 0:
        return phantom, 0
    labels = phantom.labels.labels.copy()
    mask = labels > 0
    if shift > 0:
        labels[ndimage.binary_dilation(mask) & ~mask] = 1
    else:
        labels[mask & ~ndimage.binary_erosion(mask)] = 0
    return replace(phantom, labels=replace(phantom.labels, labels=labels)), shift


def build_patient(patient: VirtualPatient, folder: str | Path,
                  options: InsilicoOptions | None = None) -> dict[str, Any]:
    """Write one patient's clinical and reference CTs and measure Mirels, ACI and CTRA.

    Skipped (the record is read back) when ``folder/patient.json`` holds the same
    fingerprint, so an interrupted generation resumes.

    Args:
        patient: The virtual patient.
        folder: Its folder (created): ``ct.nii.gz``, ``labels.nii.gz``, ``phantom.json``,
            ``patient.json`` and ``truth/`` with the reference CT.
        options: Generator options (default :class:`InsilicoOptions`).

    Returns:
        The record written to ``patient.json``.
    """
    opts = options or InsilicoOptions()
    out = Path(folder)
    fingerprint = patient.fingerprint(opts)
    record_path = out / "patient.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = {}
        if record.get("fingerprint") == fingerprint and (out / "ct.nii.gz").is_file():
            return dict(record)
    start = time.perf_counter()
    # The intact twin (another noise draw: a scan of the same femur without the lesion)
    # places a diaphyseal lesion and is the reference of the rigidity loss.
    twin = make_phantom(replace(patient.params, seed=patient.params.seed + 1))
    lesion = None if patient.lesion is None else _lesion_params(patient.lesion, twin)
    clinical = make_phantom(patient.params, lesion)
    shift = 0
    if opts.segmentation_noise:
        clinical, shift = _segmentation_error(clinical, patient.params.seed)
    paths = write_phantom(clinical, out)
    same_truth = (opts.truth_voxel_mm == opts.voxel_mm and opts.noise_hu == 0.0)
    if same_truth:
        truth_paths = paths
    else:
        truth_params = replace(patient.params, voxel_size_mm=opts.truth_voxel_mm,
                               noise_sd_hu=0.0)
        truth_paths = write_phantom(make_phantom(truth_params, lesion), out / "truth")
    site = "none" if patient.lesion is None else patient.lesion.site
    fraction = size_fraction(clinical, site) if lesion is not None else 0.0
    aci = axial_cortical_involvement(clinical, site) if lesion is not None else 0.0
    ctra = rigidity_loss(clinical, twin, site, _material()) if lesion is not None else 0.0
    kind = "blastic" if patient.lesion is None else patient.lesion.kind
    lesion_info = clinical.truth.lesion or {}
    record = {
        "data_origin": DATA_ORIGIN,
        "case_id": patient.case_id,
        "fingerprint": fingerprint,
        "body_mass_kg": patient.body_mass_kg,
        "density_factor": patient.density_factor,
        "lesion": None if patient.lesion is None else {
            **asdict(patient.lesion), "centre_mm": lesion_info.get("centre_mm"),
            "volume_mm3": lesion_info.get("volume_mm3")},
        "mirels": {"site": MIRELS_SITE[site], "pain": _pain(patient, fraction, opts.patients),
                   "lesion": kind, "size_fraction": round(fraction, 4)},
        "aci_mm": round(aci, 2),
        "ctra_reduction": round(ctra, 4),
        "segmentation_error_voxels": shift,
        "clinical_ct": {k: str(v) for k, v in paths.items()},
        "truth_ct": {k: str(v) for k, v in truth_paths.items()},
        "build_s": round(time.perf_counter() - start, 3),
    }
    write_json(record_path, record)
    return record


# --------------------------------------------------------------------------------------------
# Outcomes.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A simulated outcome (SYNTHETIC).

    Attributes:
        fractured: Whether the femur fractured within follow-up.
        follow_up_months: Time of fracture, or the whole follow-up.
        cause: ``"habitual"``, ``"stumble"``, ``"fall"`` or ``""``.
        true_strength_stance_N: Reference stance strength x model error, N.
        true_strength_fall_N: Reference fall strength x model error, N (NaN without a fall
            reference).
        habitual_load_N: The patient's habitual peak hip load, N.
        max_stumble_load_N: Largest stumble load in follow-up (0 without stumbles), N.
        max_fall_load_N: Largest fall impact in follow-up (0 without falls), N.
        died: Death before any fracture, within follow-up (``follow_up_months`` is then the
            time of death).
    """

    fractured: bool
    follow_up_months: float
    cause: str
    true_strength_stance_N: float
    true_strength_fall_N: float
    habitual_load_N: float
    max_stumble_load_N: float
    max_fall_load_N: float
    died: bool = False


def draw_outcome(reference_stance_N: float, reference_fall_N: float | None,
                 body_mass_kg: float, draws: OutcomeDraws,
                 model: OutcomeModel | None = None) -> Outcome:
    """The outcome of one femur from its reference strengths and its outcome draws.

    A deterministic function of its arguments: it sees no predictor (not the clinical CT,
    not the Mirels items, ACI or CTRA), which makes the outcome independent of them given
    the true strength, by construction.

    Args:
        reference_stance_N: Reference FE failure load in stance, N.
        reference_fall_N: Reference FE failure load in a sideways fall, N (``None``: falls
            never fracture).
        body_mass_kg: Body mass, kg.
        draws: The patient's outcome draws.
        model: The outcome process (default :class:`OutcomeModel`).

    Returns:
        The outcome.
    """
    m = model or OutcomeModel()
    bw = body_weight_newton(body_mass_kg)
    factor = math.exp(m.model_error_sd_log * draws.model_error_z)
    stance = reference_stance_N * factor
    fall = math.nan if reference_fall_N is None else reference_fall_N * factor
    habitual = bw * m.habitual_load_median_bw * math.exp(m.habitual_load_sd_log
                                                          * draws.habitual_z)
    stumbles = [bw * m.stumble_load_median_bw * math.exp(m.stumble_load_sd_log * z)
                for z in draws.stumble_z]
    falls = [m.fall_impact_median_n * math.exp(m.fall_impact_sd_log * z) for z in draws.fall_z]
    events: list[tuple[float, str]] = []
    if habitual >= stance:
        events.append((min(draws.habitual_time_u, 1.0) * min(1.0, draws.follow_up_months),
                       "habitual"))
    events += [(t, "stumble") for t, load in zip(draws.stumble_times, stumbles, strict=True)
               if load >= stance]
    if reference_fall_N is not None:
        events += [(t, "fall") for t, load in zip(draws.fall_times, falls, strict=True)
                   if load >= fall]
    end = min(draws.follow_up_months, draws.death_month)
    events = [e for e in events if e[0] <= end]
    first = min(events) if events else None
    died = first is None and draws.death_month <= draws.follow_up_months
    return Outcome(
        fractured=first is not None,
        follow_up_months=end if first is None else first[0],
        cause="" if first is None else first[1],
        died=died,
        true_strength_stance_N=stance,
        true_strength_fall_N=fall,
        habitual_load_N=habitual,
        max_stumble_load_N=max(stumbles, default=0.0),
        max_fall_load_N=max(falls, default=0.0),
    )


# --------------------------------------------------------------------------------------------
# The cohort.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InsilicoCohort:
    """A generated SYNTHETIC cohort.

    Attributes:
        out_dir: Its folder.
        manifest: ``manifest.csv``: inputs of :func:`osteofe.cohort.run_cohort` with Mirels,
            ACI, CTRA and the simulated outcome.
        truth: ``truth.csv``: reference strengths, model error, loads, fracture cause.
        info: ``cohort_info.json``.
        n_patients: Patients in the manifest.
        n_fractured: Fractured femurs.
        excluded: Case ids left out because their reference FE run failed, with the error.
        wall_s: Wall-clock time, s.
    """

    out_dir: Path
    manifest: Path
    truth: Path
    info: Path
    n_patients: int
    n_fractured: int
    excluded: tuple[tuple[str, str], ...]
    wall_s: float


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_fmt(v) for v in row] for row in rows])
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _build_all(patients: Sequence[VirtualPatient], root: Path, options: InsilicoOptions,
               workers: int, progress: bool) -> list[dict[str, Any]]:
    import sys

    from tqdm import tqdm

    folders = [root / "patients" / p.case_id for p in patients]
    records: list[dict[str, Any] | None] = [None] * len(patients)
    bar = tqdm(total=len(patients), desc="phantoms", unit="patient", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        if workers <= 1:
            for i, (p, f) in enumerate(zip(patients, folders, strict=True)):
                records[i] = build_patient(p, f, options)
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {pool.submit(build_patient, p, f, options): i
                           for i, (p, f) in enumerate(zip(patients, folders, strict=True))}
                for future in cf.as_completed(futures):
                    records[futures[future]] = future.result()
                    bar.update(1)
    finally:
        bar.close()
    return [r for r in records if r is not None]


def _reference_strengths(result_json: Path) -> tuple[float, float | None]:
    from osteofe.result import StrengthResult

    cases = {c.load_case: c.failure_load_N for c in StrengthResult.load(result_json).cases}
    return cases["stance"], cases.get("fall")


def generate_cohort(
    n: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    options: InsilicoOptions | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> InsilicoCohort:
    """Generate a SYNTHETIC cohort: images, reference FE, outcomes, a manifest.

    Steps: :func:`sample_patients`; :func:`build_patient` for each (in a process pool);
    the reference FE model (finer, noise-free CT; stance and fall) for each through
    :func:`osteofe.cohort.run_cohort` into ``out_dir/truth_fe``; :func:`draw_outcome`; then
    ``manifest.csv``, ``truth.csv``, ``cohort_info.json`` and ``README_SYNTHETIC.txt``.
    Every stage resumes after an interruption. The predictors are not computed here: run
    :func:`osteofe.cohort.run_cohort` on the manifest (with any configuration), then
    :func:`osteofe.benchmark.run_benchmark` on its cohort table.

    Args:
        n: Number of patients.
        out_dir: Output folder.
        seed: Seed of every random draw.
        options: Images, reference model and distributions (default
            :class:`InsilicoOptions`; :meth:`InsilicoOptions.cheap` for tests).
        workers: Worker processes (default: the CPU count).
        progress: Progress bars on stderr.

    Returns:
        Paths and counts.

    Raises:
        InputError: On invalid arguments, or when every reference FE run fails.
    """
    from osteofe.cohort import run_cohort

    start = time.perf_counter()
    opts = options or InsilicoOptions()
    patients = sample_patients(n, seed, opts)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "README_SYNTHETIC.txt", _README)
    n_workers = workers or os.cpu_count() or 1
    records = _build_all(patients, root, opts, n_workers, progress)
    by_id = {r["case_id"]: r for r in records}

    truth_manifest = root / "truth_manifest.csv"
    atomic_write_text(truth_manifest, _csv(
        ["case_id", "ct", "labels", "body_mass_kg", "side", "data_origin"],
        [[p.case_id, by_id[p.case_id]["truth_ct"]["ct"], by_id[p.case_id]["truth_ct"]["labels"],
          repr(p.body_mass_kg), "right", DATA_ORIGIN] for p in patients]))
    run = run_cohort(truth_manifest, root / "truth_fe", opts.truth_config(),
                     workers=n_workers, progress=progress)
    failed = {f.case_id: f.error for f in run.failures}
    if len(failed) == len(patients):
        raise InputError(f"every reference FE run failed (first: {next(iter(failed.values()))})",
                         "see truth_fe/failures.csv")

    manifest_rows, truth_rows = [], []
    for p in patients:
        if p.case_id in failed:
            continue
        record = by_id[p.case_id]
        stance, fall = _reference_strengths(root / "truth_fe" / "cases" / p.case_id
                                            / "result.json")
        outcome = draw_outcome(stance, fall, p.body_mass_kg, p.outcome, opts.outcome)
        folder = root / "patients" / p.case_id
        lesion = p.lesion
        mirels = record["mirels"]
        manifest_rows.append([
            p.case_id, p.case_id, "right",
            str((folder / "ct.nii.gz").relative_to(root)),
            str((folder / "labels.nii.gz").relative_to(root)),
            p.body_mass_kg, mirels["site"], mirels["pain"], mirels["lesion"],
            mirels["size_fraction"], record["aci_mm"], record["ctra_reduction"],
            int(outcome.fractured), outcome.follow_up_months, int(outcome.died),
            "none" if lesion is None else lesion.site,
            "none" if lesion is None else lesion.kind,
            0.0 if lesion is None else lesion.radius_mm, DATA_ORIGIN])
        truth_rows.append([
            p.case_id, stance, math.nan if fall is None else fall, p.outcome.model_error_z,
            outcome.true_strength_stance_N, outcome.true_strength_fall_N,
            outcome.habitual_load_N, outcome.max_stumble_load_N, len(p.outcome.stumble_times),
            outcome.max_fall_load_N, len(p.outcome.fall_times), int(outcome.fractured),
            outcome.cause, outcome.follow_up_months, int(outcome.died), p.outcome.death_month,
            record.get("segmentation_error_voxels", 0), p.density_factor, DATA_ORIGIN])
    manifest = root / "manifest.csv"
    atomic_write_text(manifest, _csv(
        ["case_id", "patient_id", "side", "ct", "labels", "body_mass_kg", "mirels_site",
         "mirels_pain", "mirels_lesion", "size_fraction", "aci_mm", "ctra_reduction",
         "fractured", "follow_up_months", "died", "lesion_site", "lesion_kind",
         "lesion_radius_mm", "data_origin"], manifest_rows))
    truth = root / "truth.csv"
    atomic_write_text(truth, _csv(
        ["case_id", "reference_stance_N", "reference_fall_N", "model_error_z",
         "true_strength_stance_N", "true_strength_fall_N", "habitual_load_N",
         "max_stumble_load_N", "n_stumbles", "max_fall_load_N", "n_falls", "fractured",
         "cause", "follow_up_months", "died", "death_month", "segmentation_error_voxels",
         "density_factor", "data_origin"], truth_rows))
    n_fractured = sum(int(r[12]) for r in manifest_rows)
    causes = [r[12] for r in truth_rows if r[11]]
    wall = round(time.perf_counter() - start, 3)
    info = root / "cohort_info.json"
    write_json(info, {
        "data_origin": DATA_ORIGIN,
        "warning": "SYNTHETIC in-silico cohort generated by osteofe.insilico; not patient "
                   "data: synthetic, not evidence",
        "n_died": sum(int(r[14]) for r in manifest_rows),
        "seed": seed, "n_requested": n, "n_patients": len(manifest_rows),
        "n_fractured": n_fractured,
        "fracture_causes": {c: causes.count(c) for c in ("habitual", "stumble", "fall")},
        "excluded": [{"case_id": k, "error": v} for k, v in failed.items()],
        "options": opts.to_dict(),
        "reference_model": opts.truth_config().to_dict(),
        "outcome_process": __doc__.split("**Outcome process**")[1].split("The constants")[0]
        .strip() if __doc__ else "",
        "wall_s": wall,
    })
    return InsilicoCohort(root, manifest, truth, info, len(manifest_rows), n_fractured,
                          tuple(failed.items()), wall)


def format_insilico(cohort: InsilicoCohort) -> str:
    """A few lines for the command line.

    Args:
        cohort: The result of :func:`generate_cohort`.

    Returns:
        Counts and paths, labelled SYNTHETIC.
    """
    lines = [f"SYNTHETIC cohort (synthetic, not evidence): {cohort.n_patients} virtual "
             f"patients, {cohort.n_fractured} fractured ({cohort.wall_s:.0f} s)"]
    lines += [f"  excluded {case}: {error}" for case, error in cohort.excluded]
    lines += [f"manifest: {cohort.manifest}", f"truth: {cohort.truth}"]
    return "\n".join(lines)
