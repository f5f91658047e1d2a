"""The typed result of one strength analysis: :class:`StrengthResult`.

``result.json`` is the serialisation of this type (:meth:`StrengthResult.to_json`) and nothing
else; every consumer (the CLI's summary, :mod:`osteofe.report`, :mod:`osteofe.cohort`,
:mod:`osteofe.benchmark`, :func:`osteofe.analyze`) reads it back with
:meth:`StrengthResult.from_json` / :meth:`StrengthResult.load` rather than re-parsing the
dictionary. The JSON Schema of the file ships with the package (``result.schema.json``,
:func:`schema`); its ``schema_version`` is :data:`SCHEMA_VERSION`.

Derived values are computed here, once:

- the governing case (lowest failure load of the nominal load directions),
- the load-to-strength ratio ``phi = applied load / failure load`` (Keaveny; DESIGN.md 4),
- body weights in newtons, ``1 BW = m * 9.81 N`` (:func:`fea.loads.body_weight_newton`),
- the weakest direction of a ``--sweep``, lifted to the top level when it is below the
  governing case's nominal failure load (:attr:`StrengthResult.weakest`).

Descriptive records that other stages own and still extend (mesh, material, landmarks,
boundary conditions, solver, resources, configuration; the nonlinear analysis, risk model
intervals and contributions, the segmentation's source) are carried as JSON mappings in
:attr:`StrengthResult.records` / :attr:`CaseResult.extras` / ``record`` and written back
unchanged, so that a field one stage adds survives a round trip without a change here. What
consumers read of them is parsed once, when the result is built, into typed views
(:class:`MaterialRecord`, :class:`LandmarksRecord`, :class:`MeshRecord`, :class:`SolverRecord`,
:class:`FailureCriterionRecord`, :class:`BoundaryRecord`, :class:`CtFingerprint`,
:class:`LoadDefinition`, :class:`NonlinearResult`, :class:`MirelsRecord`, :class:`CtraRecord`,
:class:`InputFile` and :meth:`Provenance.config_values`); consumers use those attributes, never
the mappings (``tests/test_result.py`` checks the consumer modules).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Self

from core.types import json_plain
from fea.loads import body_weight_newton
from meshing.errors import InputError

__all__ = [
    "METHOD_SEE_N",
    "SCHEMA_VERSION",
    "BoundaryRecord",
    "CaseResult",
    "CtFingerprint",
    "CtraRecord",
    "FailureCriterionRecord",
    "FractureProbability",
    "InputFile",
    "LandmarksRecord",
    "LesionMeasures",
    "LoadDefinition",
    "MaterialRecord",
    "MeshRecord",
    "MirelsItemRecord",
    "MirelsRecord",
    "NonlinearResult",
    "Provenance",
    "SolverRecord",
    "StrengthResult",
    "SweepResult",
    "Validity",
    "WeakestLoad",
    "schema",
    "validate",
]

#: Version of result.json's layout; bump the major number when a field changes meaning.
SCHEMA_VERSION = "1.0"

#: Standard error of estimate of the linear strain-based failure load against cadaver tests,
#: N: Schileo E, Taddei F, Cristofolini L, Viceconti M (2008). Subject-specific finite element
#: models implementing a maximum principal strain criterion are able to estimate failure risk
#: and fracture location on human femurs tested in vitro. J Biomech 41(2):356-367.
#: doi:10.1016/j.jbiomech.2007.09.009 (R^2 = 0.89, SEE 814 N; DESIGN.md 4). It is the error
#: of the method on intact cadaver femurs, not of this patient's model.
METHOD_SEE_N = 814.0

#: Top-level keys of result.json that have a typed field (everything else is a record).
_TYPED = frozenset({
    "schema_version", "case_id", "body_mass_kg", "body_weight_N", "cases", "failure_load_N",
    "failure_load_BW", "failure_load_see_N", "load_case", "failure_mode", "critical_point_mm",
    "critical_region", "weakest", "lesion_risk", "fracture_probability", "warnings",
    "validity", "inputs", "versions", "machine", "config", "timings_s", "outputs",
})


def _floats(values: Sequence[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _need(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise InputError(f"result.json: {where} has no {key!r}",
                         hint="it was not written by this osteofe version; rerun the analysis")
    return doc[key]


# -- descriptive records, read once into typed views ----------------------------------------
#
# The records are written back unchanged (``records`` / ``extras`` / ``record``); the views
# below are what every consumer reads. A field a record does not hold reads as None / "".


def _num(value: Any) -> float | None:
    """A finite float, or None (bools, strings and non-finite values are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    """An int, or None (bools and other types are not)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class _CarriesRecord:
    """A typed view that writes its whole JSON record back unchanged (``record``)."""

    record: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The record as it was read or measured (JSON-plain)."""
        return json_plain(self.record)


#: How a field of a typed view is read from its record, by its annotation.
_READERS: dict[str, Any] = {"float | None": _num, "int | None": _int, "str": _text}


def _read_fields(cls: type, doc: Any, **given: Any) -> dict[str, Any]:
    """The fields of the view ``cls`` read from the record ``doc`` by their names.

    A field annotated ``float | None``, ``int | None`` or ``str`` is read as that type (a
    missing or wrong-typed value gives None or ""); the fields in ``given`` are taken as
    given. Returns the keyword arguments of ``cls``.
    """
    d = _map(doc)
    out = {f.name: _READERS[str(f.type)](d.get(f.name)) for f in fields(cls)
           if f.init and str(f.type) in _READERS and f.name not in given}
    return out | given


class _RecordView:
    """A typed view of one record of result.json.

    Its plain fields are read by name (:func:`_read_fields`); :meth:`_derived` gives the
    others (nested or renamed values) from the record.
    """

    @classmethod
    def from_dict(cls, doc: Any) -> Self:
        """From the record (a mapping; anything else reads as empty)."""
        return cls(**_read_fields(cls, doc, **cls._derived(_map(doc))))

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        return {}


def _reference(doc: Any) -> str:
    """The printed reference of a :class:`core.citation.Citation` record (else its key)."""
    src = _map(doc)
    return _text(src.get("reference")) or _text(src.get("key"))


@dataclass(frozen=True)
class NonlinearResult(_CarriesRecord):
    """The nonlinear analysis of one load case (:mod:`fea.plasticity`, :mod:`fea.nonlinear`).

    Attributes:
        failure_load_N: Peak of the force-displacement curve, N (``failure_load_N``, else
            ``peak_force_N``), or None when the record holds no positive load.
        failure_load_BW: The same in body weights, as recorded, or None.
        load_to_strength_ratio: Applied load / nonlinear failure load, as recorded, or None.
        peak_reached: Whether the curve passed its peak, or None when not recorded.
        notes: The analysis' notes (why a peak may not be reached, ...).
        record: The whole record (curve summary, increments, material), written back
            unchanged.
    """

    failure_load_N: float | None
    failure_load_BW: float | None = None
    load_to_strength_ratio: float | None = None
    peak_reached: bool | None = None
    notes: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> NonlinearResult:
        """From a case's ``nonlinear`` record."""
        load = _num(doc.get("failure_load_N")) or _num(doc.get("peak_force_N"))
        peak = doc.get("peak_reached")
        notes = doc.get("notes")
        return cls(
            failure_load_N=load if load is not None and load > 0.0 else None,
            failure_load_BW=_num(doc.get("failure_load_BW")),
            load_to_strength_ratio=_num(doc.get("load_to_strength_ratio")),
            peak_reached=peak if isinstance(peak, bool) else None,
            notes=((notes,) if isinstance(notes, str) else tuple(
                n for n in notes if isinstance(n, str)) if isinstance(notes, list) else ()),
            record=dict(doc))


@dataclass(frozen=True)
class LoadDefinition(_RecordView):
    """How a load case's force was defined (the case's ``load_definition`` record).

    Attributes:
        name: The case's name in the load library.
        magnitude_bw: Magnitude in body weights, or None when given in newtons.
        magnitude_N: Magnitude in newtons, or None when given in body weights.
        source: Where the load comes from (citation text).
    """

    name: str = ""
    magnitude_bw: float | None = None
    magnitude_N: float | None = None
    source: str = ""


@dataclass(frozen=True)
class InputFile:
    """An input file of the analysis and its SHA-256 (provenance ``inputs``)."""

    path: str
    sha256: str


@dataclass(frozen=True)
class MaterialRecord:
    """The CT-to-modulus chain of the run (the ``material`` record).

    Attributes:
        calibration_name: Name of the CT density calibration.
        calibration_line: The calibration line as text.
        calibration_material: Phantom material of the calibration.
        calibration_source: Where the calibration comes from.
        calibration_fit: Numbers of the phantom fit (slope, intercept, r2, ...), if fitted.
        qct_to_ash: CT density to ash density relation, text.
        qct_to_ash_source: Its reference.
        ash_to_app: Ash to apparent density relation, text.
        ash_to_app_source: Its reference.
        law_formula: Density-modulus law, text.
        law_source: Its reference.
        poisson_ratio: Poisson's ratio, or None.
        E_floor_MPa: Modulus floor, MPa, or None.
        fraction_outside_law: Fraction of elements outside the law's density range, or None.
    """

    calibration_name: str = ""
    calibration_line: str = ""
    calibration_material: str = ""
    calibration_source: str = ""
    calibration_fit: Mapping[str, float] = field(default_factory=dict)
    qct_to_ash: str = ""
    qct_to_ash_source: str = ""
    ash_to_app: str = ""
    ash_to_app_source: str = ""
    law_formula: str = ""
    law_source: str = ""
    poisson_ratio: float | None = None
    E_floor_MPa: float | None = None
    fraction_outside_law: float | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> MaterialRecord:
        """From the ``material`` record (``model`` and ``summary``, as the pipeline writes)."""
        model = _map(_map(doc).get("model"))
        cal = _map(model.get("calibration"))
        chain, law = _map(model.get("density_chain")), _map(model.get("law"))
        fit = {k: n for k, v in _map(cal.get("fit")).items() if (n := _num(v)) is not None}
        extrap = _map(_map(_map(_map(doc).get("summary")).get("description"))
                      .get("law_extrapolation"))
        return cls(
            calibration_name=_text(cal.get("name")), calibration_line=_text(cal.get("line")),
            calibration_material=_text(cal.get("material")),
            calibration_source=_text(cal.get("source")), calibration_fit=fit,
            qct_to_ash=_text(chain.get("qct_to_ash")),
            qct_to_ash_source=_reference(chain.get("qct_to_ash_source")),
            ash_to_app=_text(chain.get("ash_to_app")),
            ash_to_app_source=_reference(chain.get("ash_to_app_source")),
            law_formula=_text(law.get("formula")), law_source=_reference(law.get("source")),
            poisson_ratio=_num(model.get("poisson_ratio")),
            E_floor_MPa=_num(model.get("E_floor_MPa")),
            fraction_outside_law=_num(extrap.get("fraction_outside")))


@dataclass(frozen=True)
class LandmarksRecord(_RecordView):
    """The femur's landmarks as the report shows them (the ``landmarks`` record).

    Attributes:
        side: ``"left"`` or ``"right"``, or None when not recorded.
        head_radius_mm: Femoral head radius, mm.
        neck_shaft_angle_deg: Neck-shaft angle, degrees.
        anteversion_deg: Anteversion, degrees.
        length_along_shaft_mm: Femur length in the image along the shaft, mm.
        convention: Coordinate convention of the scanner axes (``"LPS"``).
    """

    side: str | None = None
    head_radius_mm: float | None = None
    neck_shaft_angle_deg: float | None = None
    anteversion_deg: float | None = None
    length_along_shaft_mm: float | None = None
    convention: str | None = None

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        side = doc.get("side")
        return {"side": side if side in ("left", "right") else None,
                "convention": _text(doc.get("convention")) or None}


@dataclass(frozen=True)
class MeshRecord(_RecordView):
    """Size and quality of the mesh (the ``mesh`` record).

    Attributes:
        num_nodes: Nodes.
        num_cells: Tetrahedra.
        num_lesion_cells: Tetrahedra tagged as lesion.
        order: Geometric order (1 linear, 2 quadratic).
        min_dihedral_deg: Smallest dihedral angle, degrees.
    """

    num_nodes: int | None = None
    num_cells: int | None = None
    num_lesion_cells: int | None = None
    order: int | None = None
    min_dihedral_deg: float | None = None

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        return {"min_dihedral_deg": _num(_map(doc.get("quality")).get("min_dihedral_deg"))}


@dataclass(frozen=True)
class SolverRecord(_RecordView):
    """The linear solver of the run (the ``solver`` record).

    Attributes:
        num_dofs: Degrees of freedom.
        mpi_ranks: MPI ranks.
        iterations: Krylov iterations per load case, or None when not recorded.
        petsc_options: The PETSc options used, or None when not recorded.
    """

    num_dofs: int | None = None
    mpi_ranks: int | None = None
    iterations: Mapping[str, int] | None = None
    petsc_options: Mapping[str, Any] | None = None

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        its, options = doc.get("iterations"), doc.get("petsc_options")
        return {"iterations": ({str(k): v for k, v in its.items() if _int(v) is not None}
                               if isinstance(its, Mapping) else None),
                "petsc_options": dict(options) if isinstance(options, Mapping) else None}


@dataclass(frozen=True)
class FailureCriterionRecord(_RecordView):
    """The strain criterion of the run (the ``failure_criterion`` record).

    Attributes:
        tension_limit: Principal-strain limit in tension.
        compression_limit: Principal-strain limit in compression (magnitude).
        patch_area_mm2: Averaging patch area, mm^2, where recorded.
        excluded: Which surface is excluded, text.
        source: Where the limits come from.
    """

    tension_limit: float | None = None
    compression_limit: float | None = None
    patch_area_mm2: float | None = None
    excluded: str = ""
    source: str = ""


@dataclass(frozen=True)
class BoundaryRecord(_RecordView):
    """The fixation and load application of the run (``boundary_conditions`` record).

    Attributes:
        distal: How the distal end is fixed, text (the record's ``distal`` entry).
        load: How the load is applied, text.
        fall_protocol: The sideways-fall supports and their source, text ("" without a fall
            case; the record's ``fall.protocol``).
    """

    distal: str = ""
    load: str = ""
    fall_protocol: str = ""

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        return {"fall_protocol": _text(_map(doc.get("fall")).get("protocol"))}


@dataclass(frozen=True)
class CtFingerprint:
    """What identifies the analysed CT without its pixels (the ``ct_fingerprint`` record).

    Written by :func:`osteofe.report_page1.ct_fingerprint`.

    Attributes:
        shape_sorted: The image's shape, sorted.
        spacing_mm_sorted: Voxel spacing, sorted, mm.
        bounds_mm: (2, 3) lowest and highest world corner, mm.
        hu_mean: Mean HU of the image.
        hu_std: Standard deviation of the HU.
    """

    shape_sorted: tuple[int, ...]
    spacing_mm_sorted: tuple[float, ...]
    bounds_mm: tuple[tuple[float, ...], ...]
    hu_mean: float
    hu_std: float

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CtFingerprint:
        """From a ``ct_fingerprint`` record."""
        return cls(tuple(int(n) for n in doc["shape_sorted"]),
                   _floats(doc["spacing_mm_sorted"]),
                   tuple(_floats(row) for row in doc["bounds_mm"]),
                   float(doc["hu_mean"]), float(doc["hu_std"]))


@dataclass(frozen=True)
class MirelsItemRecord(_RecordView):
    """One item of a Mirels score as recorded (:meth:`risk.mirels.MirelsItem.to_dict`)."""

    name: str
    points: int | None
    category: str = ""
    derivation: str = ""


@dataclass(frozen=True)
class MirelsRecord(_RecordView):
    """A Mirels score as recorded (:meth:`risk.mirels.MirelsScore.to_dict`).

    Attributes:
        items: The items as recorded (a dict by name or a list), in that order.
        total: The total, or None (an item such as pain not given).
        total_range: (lowest, highest) totals possible without the missing items, or None.
        pain: Why the pain item is missing, where recorded.
        recommendation: Mirels' recommendation, or None.
    """

    items: tuple[MirelsItemRecord, ...] = ()
    total: int | None = None
    total_range: tuple[int, int] | None = None
    pain: str = ""
    recommendation: str | None = None

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        raw, rng, rec = doc.get("items"), doc.get("total_range"), doc.get("recommendation")
        listed = list(raw.values()) if isinstance(raw, Mapping) else \
            raw if isinstance(raw, list) else []
        return {
            "items": tuple(MirelsItemRecord.from_dict(item) for item in listed),
            "total_range": ((int(rng[0]), int(rng[1])) if isinstance(rng, list)
                            and len(rng) == 2 and all(_int(v) is not None for v in rng)
                            else None),
            "recommendation": rec if isinstance(rec, str) else None}


@dataclass(frozen=True)
class CtraRecord(_RecordView):
    """A CT-based rigidity analysis as recorded (:mod:`material.rigidity`; or a bare loss).

    Attributes:
        max_reduction: Largest rigidity loss per measure (``EA``, ``EI_min``, ``GJ``), 0-1.
        governing: The measure with the largest loss, or "".
        stated_loss: A loss given directly (``rigidity_loss``, ``reduction``,
            ``ctra_reduction``, ``loss`` or ``value``), fraction or percent, or None.
        measure: Which rigidity a directly given loss is (``measure`` or ``kind``), or "".
        threshold: High-risk threshold, fraction, where recorded.
        high_risk: The analysis' verdict, where recorded.
        derivation: One-line account of the analysis.
        reference_description: What the lesioned bone was compared with.
        threshold_source: Citation of the threshold.
    """

    max_reduction: Mapping[str, float] = field(default_factory=dict)
    governing: str = ""
    stated_loss: float | None = None
    measure: str = ""
    threshold: float | None = None
    high_risk: bool | None = None
    derivation: str = ""
    reference_description: str = ""
    threshold_source: str = ""

    @property
    def governing_loss(self) -> float | None:
        """The loss of the governing measure, or None."""
        return self.max_reduction.get(self.governing)

    @classmethod
    def _derived(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        high = doc.get("high_risk")
        return {
            "max_reduction": {str(k): n for k, v in _map(doc.get("max_reduction")).items()
                              if (n := _num(v)) is not None},
            "stated_loss": next((n for key in ("rigidity_loss", "reduction", "ctra_reduction",
                                               "loss", "value")
                                 if (n := _num(doc.get(key))) is not None), None),
            "measure": _text(doc.get("measure") or doc.get("kind")),
            "high_risk": high if isinstance(high, bool) else None}


@dataclass(frozen=True)
class SweepResult:
    """Failure load over a cone of load directions around a case's nominal direction.

    Attributes:
        num_directions: Number of directions evaluated (the nominal one first).
        half_angle_deg: Half angle of the cone, degrees.
        failure_loads_N: (num_directions,) failure load per direction, N.
        directions_world: (num_directions, 3) unit load directions in scanner axes.
        weakest_direction_world: Unit direction of the lowest failure load, scanner axes.
        weakest_direction_anatomical: The same in the femur's anatomical frame.
    """

    num_directions: int
    half_angle_deg: float
    failure_loads_N: tuple[float, ...]
    directions_world: tuple[tuple[float, float, float], ...]
    weakest_direction_world: tuple[float, float, float]
    weakest_direction_anatomical: tuple[float, float, float]

    @property
    def min_failure_load_N(self) -> float:
        """The lowest failure load over the cone, N."""
        return min(self.failure_loads_N)

    def to_dict(self, body_weight_n: float) -> dict[str, Any]:
        """The ``direction_sweep`` record of result.json."""
        return {
            "num_directions": self.num_directions, "half_angle_deg": self.half_angle_deg,
            "min_failure_load_N": self.min_failure_load_N,
            "min_failure_load_BW": self.min_failure_load_N / body_weight_n,
            "weakest_direction_world": list(self.weakest_direction_world),
            "weakest_direction_anatomical": list(self.weakest_direction_anatomical),
            "failure_loads_N": list(self.failure_loads_N),
            "directions_world": [list(d) for d in self.directions_world],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SweepResult:
        """Inverse of :meth:`to_dict` (derived values are recomputed, not read)."""
        return cls(
            num_directions=int(doc["num_directions"]),
            half_angle_deg=float(doc["half_angle_deg"]),
            failure_loads_N=_floats(doc["failure_loads_N"]),
            directions_world=tuple(tuple(_floats(d)) for d in doc["directions_world"]),  # type: ignore[misc]
            weakest_direction_world=tuple(_floats(doc["weakest_direction_world"])),  # type: ignore[arg-type]
            weakest_direction_anatomical=tuple(  # type: ignore[arg-type]
                _floats(doc["weakest_direction_anatomical"])),
        )


#: Keys of a case record with a typed field (the rest stays in ``CaseResult.extras``).
_CASE_TYPED = frozenset({
    "load_case", "applied_load_N", "applied_load_BW", "failure_load_N", "failure_load_BW",
    "load_to_strength_ratio", "failure_mode", "critical_point_mm",
    "critical_point_anatomical_mm", "critical_region", "peak_tension_strain",
    "peak_compression_strain", "direction_sweep", "nonlinear",
})


@dataclass(frozen=True)
class CaseResult:
    """The linear strength of the femur under one load case.

    Attributes:
        load_case: Name of the load case (``"stance"``, ``"fall"``, ...).
        applied_load_N: Magnitude of the applied head force, N.
        failure_load_N: Head force at which the surface strain reaches its limit, N
            (linearity: applied load x limit / peak strain; Schileo et al. 2008).
        failure_mode: ``"tension"`` or ``"compression"``: the limit reached first.
        critical_point_mm: (3,) where it is reached, scanner (world) coordinates, mm.
        critical_point_anatomical_mm: (3,) the same point in the anatomical frame, mm.
        critical_region: Anatomical region of the critical point (``"femoral neck"``, ...).
        peak_tension_strain: Largest averaged max principal strain under the applied load.
        peak_compression_strain: Most negative averaged min principal strain (negative).
        sweep: Failure load over a cone of directions (``--sweep``), or ``None``.
        nonlinear: The case's nonlinear (Keyak 2005 softening) analysis, or ``None``.
        extras: Further JSON fields of the case record (load patch, force vector, reactions,
            solver statistics, load definition), written back unchanged.
        load_definition: How the case's force was defined (read from ``extras``).
    """

    load_case: str
    applied_load_N: float
    failure_load_N: float
    failure_mode: str
    critical_point_mm: tuple[float, float, float]
    critical_point_anatomical_mm: tuple[float, float, float]
    critical_region: str
    peak_tension_strain: float
    peak_compression_strain: float
    sweep: SweepResult | None = None
    nonlinear: NonlinearResult | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    load_definition: LoadDefinition = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # JSON-plain copies: the object equals its own round trip through result.json.
        object.__setattr__(self, "extras", json_plain(self.extras))
        if self.nonlinear is not None:
            object.__setattr__(self, "nonlinear",
                               replace(self.nonlinear, record=json_plain(self.nonlinear.record)))
        object.__setattr__(self, "load_definition",
                           LoadDefinition.from_dict(self.extras.get("load_definition")))

    @property
    def load_to_strength_ratio(self) -> float:
        """The load-to-strength ratio phi = applied / failure load (> 1: it would break)."""
        return self.applied_load_N / self.failure_load_N

    @property
    def weakest_failure_load_N(self) -> float:
        """The lower of the nominal and the sweep's minimum failure load, N."""
        if self.sweep is None:
            return self.failure_load_N
        return min(self.failure_load_N, self.sweep.min_failure_load_N)

    def to_dict(self, body_weight_n: float) -> dict[str, Any]:
        """The case's record of result.json (the order of the keys as it has always been)."""
        doc: dict[str, Any] = {
            "load_case": self.load_case,
            "applied_load_N": self.applied_load_N,
            "applied_load_BW": self.applied_load_N / body_weight_n,
            "failure_load_N": self.failure_load_N,
            "failure_load_BW": self.failure_load_N / body_weight_n,
            "load_to_strength_ratio": self.load_to_strength_ratio,
            "failure_mode": self.failure_mode,
            "critical_point_mm": list(self.critical_point_mm),
            "critical_point_anatomical_mm": list(self.critical_point_anatomical_mm),
            "critical_region": self.critical_region,
            "peak_tension_strain": self.peak_tension_strain,
            "peak_compression_strain": self.peak_compression_strain,
            **json_plain(self.extras),
        }
        if self.sweep is not None:
            doc["direction_sweep"] = self.sweep.to_dict(body_weight_n)
        if self.nonlinear is not None:
            doc["nonlinear"] = self.nonlinear.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CaseResult:
        """Inverse of :meth:`to_dict`."""
        where = f"case {doc.get('load_case', '?')!r}"
        sweep = doc.get("direction_sweep")
        return cls(
            load_case=str(_need(doc, "load_case", where)),
            applied_load_N=float(_need(doc, "applied_load_N", where)),
            failure_load_N=float(_need(doc, "failure_load_N", where)),
            failure_mode=str(_need(doc, "failure_mode", where)),
            critical_point_mm=tuple(_floats(_need(doc, "critical_point_mm", where))),  # type: ignore[arg-type]
            critical_point_anatomical_mm=tuple(  # type: ignore[arg-type]
                _floats(doc.get("critical_point_anatomical_mm") or (math.nan,) * 3)),
            critical_region=str(_need(doc, "critical_region", where)),
            peak_tension_strain=float(doc.get("peak_tension_strain", math.nan)),
            peak_compression_strain=float(doc.get("peak_compression_strain", math.nan)),
            sweep=None if sweep is None else SweepResult.from_dict(sweep),
            nonlinear=(None if doc.get("nonlinear") is None
                       else NonlinearResult.from_dict(doc["nonlinear"])),
            extras={k: v for k, v in doc.items() if k not in _CASE_TYPED},
        )


@dataclass(frozen=True)
class WeakestLoad:
    """The lowest failure load of the analysis over every case and swept direction.

    Attributes:
        load_case: The case it belongs to.
        failure_load_N: Its failure load, N.
        from_sweep: ``True`` when it is a swept direction, not the case's nominal one.
        direction_world: (3,) unit load direction, scanner axes.
    """

    load_case: str
    failure_load_N: float
    from_sweep: bool
    direction_world: tuple[float, float, float] | None


@dataclass(frozen=True)
class LesionMeasures(_CarriesRecord):
    """Scan-derived lesion measures next to the FE strength (pipeline's ``lesion_risk``).

    Attributes:
        aci_mm: Axial cortical involvement, mm (Van der Wal 2020: >= 30 mm high risk).
        aci_high_risk: ``aci_mm`` at or above the published 30 mm threshold.
        ctra_max_reduction: Largest CT-rigidity loss over the sections and measures, 0-1
            (CTRA; > 0.35 high risk), or ``None`` when not computed.
        mirels_total: Mirels total, 4-12, or ``None`` while the pain item is not given.
        mirels_total_range: (low, high) totals possible without the pain item, or ``None``.
        mirels_recommendation: ``"fix"``, ``"judgement"``, ``"irradiate"`` or ``None``.
        mirels: The Mirels score with its items, or ``None`` when not scored.
        ctra: The CT-based rigidity analysis, or ``None`` when not run.
        kind: Lesion type (``"lytic"``, ``"blastic"``, ``"mixed"``), or "".
        kind_rule: The rule that decided the type.
        site: Lesion site (``"peritrochanteric"``, ...), or "".
        site_rule: The rule that decided the site.
        size_fraction: Lesion size as a fraction of ``size_basis``, or ``None``.
        size_basis: What the size is a fraction of (``"diameter"``, ``"cortex"``).
        circumferential_fraction: Largest circumferential cortical involvement, 0-1.
        record: The whole record (lesion geometry, Mirels items and their derivation, CTRA
            per section), written back unchanged.
    """

    aci_mm: float
    aci_high_risk: bool
    ctra_max_reduction: float | None
    mirels_total: int | None
    mirels_total_range: tuple[int, int] | None
    mirels_recommendation: str | None
    mirels: MirelsRecord | None = None
    ctra: CtraRecord | None = None
    kind: str = ""
    kind_rule: str = ""
    site: str = ""
    site_rule: str = ""
    size_fraction: float | None = None
    size_basis: str = ""
    circumferential_fraction: float | None = None
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LesionMeasures:
        """From the ``lesion_risk`` record of result.json."""
        mirels = doc.get("mirels") or {}
        reductions = ((doc.get("ctra") or {}).get("max_reduction") or {})
        rng = mirels.get("total_range")
        total = mirels.get("total")
        lesion = _map(doc.get("lesion"))
        return cls(
            aci_mm=float(doc["aci_mm"]), aci_high_risk=bool(doc.get("aci_high_risk")),
            ctra_max_reduction=(float(max(reductions.values())) if reductions else None),
            mirels_total=None if total is None else int(total),
            mirels_total_range=None if rng is None else (int(rng[0]), int(rng[1])),
            mirels_recommendation=mirels.get("recommendation"),
            mirels=MirelsRecord.from_dict(mirels) if isinstance(mirels, Mapping) else None,
            ctra=CtraRecord.from_dict(doc["ctra"]) if isinstance(doc.get("ctra"), Mapping)
            else None,
            kind=_text(lesion.get("kind")),
            kind_rule=_text(_map(lesion.get("kind_evidence")).get("rule")),
            site=_text(lesion.get("site")),
            site_rule=_text(_map(lesion.get("site_evidence")).get("rule")),
            size_fraction=_num(lesion.get("size_fraction")),
            size_basis=_text(lesion.get("size_basis")),
            circumferential_fraction=_num(_map(lesion.get("involvement"))
                                          .get("circumferential_fraction")),
            record=dict(doc))


@dataclass(frozen=True)
class FractureProbability(_CarriesRecord):
    """A fitted risk model's fracture probability for this femur.

    Attributes:
        probability: Point estimate, 0-1.
        model: Path or description of the model file.
        interval: (lower, upper) interval when the model carries uncertainty, else ``None``.
        level: Confidence level of the interval, where recorded.
        model_record: The model's own description when the record holds one (name, kind,
            training, coefficients: :mod:`risk.calibration`'s JSON), else empty.
        record: The whole record (features, notes, contributions), written back unchanged.
    """

    probability: float
    model: str
    interval: tuple[float, float] | None
    level: float | None = None
    model_record: Mapping[str, Any] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict)

    def details(self) -> tuple[str, ...]:
        """Horizon risk, per-feature contributions and the training record, one line each.

        Formatted by :func:`risk.presentation.probability_details`.
        """
        from risk.presentation import probability_details

        return probability_details(self.record)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | float) -> FractureProbability:
        """From the ``fracture_probability`` record of result.json (or a bare probability)."""
        if isinstance(doc, int | float) and not isinstance(doc, bool):
            doc = {"probability": float(doc)}
        assert isinstance(doc, Mapping)
        raw = doc.get("interval")
        interval = None
        if isinstance(raw, Mapping) and raw.get("lower") is not None:
            interval = (float(raw["lower"]), float(raw["upper"]))
        elif isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) == 2:
            interval = (float(raw[0]), float(raw[1]))
        elif doc.get("lower") is not None and doc.get("upper") is not None:
            interval = (float(doc["lower"]), float(doc["upper"]))
        described = doc.get("model", doc.get("calibration"))
        return cls(probability=float(doc["probability"]), model=str(doc.get("model", "")),
                   interval=interval, level=_num(doc.get("level")),
                   model_record=dict(_map(described)), record=dict(doc))


@dataclass(frozen=True)
class Validity:
    """Whether the result may be used (guards of :mod:`osteofe.guards`).

    Attributes:
        valid: ``False`` when a guard let the run through only with ``--allow-partial``.
        banner: Banner text to show with an invalid result, else ``None``.
        reasons: Why the result is not valid.
        cautions: How to read a valid result (e.g. the label holds non-bone material that
            would fail first): shown with the banner, on the report's first page and on
            the console.
        record: The whole ``validity`` record, written back unchanged.
    """

    valid: bool = True
    banner: str | None = None
    reasons: tuple[str, ...] = ()
    cautions: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Validity:
        """From the ``validity`` record (absent: valid)."""
        if not doc:
            return cls(record={"valid": True, "banner": None, "reasons": []})
        return cls(valid=bool(doc.get("valid", True)), banner=doc.get("banner"),
                   reasons=tuple(str(r) for r in doc.get("reasons", ())),
                   cautions=tuple(str(c) for c in doc.get("cautions", ())), record=dict(doc))

    def to_dict(self) -> dict[str, Any]:
        """The ``validity`` record."""
        return json_plain(self.record) or {"valid": self.valid, "banner": self.banner,
                                       "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Provenance:
    """Where a result comes from: inputs with hashes, versions, machine, configuration.

    Attributes:
        inputs: ``{"ct": {"path", "sha256"}, "labels": ..., "mesh": ...}`` of the given files.
        versions: Package versions (``{"numpy": "2.5.5", ...}``).
        machine: Platform and processor.
        config: Every configuration value, by section.
        timings_s: Wall time per stage, s.
        outputs: Files written with the result.
        files: The inputs as :class:`InputFile` records, by name (read from ``inputs``; an
            entry without a path and hash is left out).
    """

    inputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    machine: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    timings_s: Mapping[str, float] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    files: Mapping[str, InputFile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", {
            name: InputFile(_text(doc.get("path")), _text(doc.get("sha256")))
            for name, doc in self.inputs.items() if isinstance(doc, Mapping)})

    @property
    def platform(self) -> str:
        """The machine's platform string, or ""."""
        return _text(self.machine.get("platform"))

    @property
    def run_time_s(self) -> float | None:
        """Wall time of the whole run, s, or None when not recorded."""
        return _num(self.timings_s.get("total"))

    def config_values(self) -> tuple[tuple[str, Any], ...]:
        """Every configuration value whose key osteofe's configuration defines.

        Returns:
            ``("section.key", value)`` pairs in the order of :class:`osteofe.config.Config`
            (keys the configuration does not define, e.g. a stray patient name, are left out).
        """
        from osteofe.config import Config

        rows: list[tuple[str, Any]] = []
        for section, keys in Config().to_dict().items():
            values = _map(self.config.get(section))
            rows.extend((f"{section}.{key}", values[key]) for key in _map(keys) if key in values)
        return tuple(rows)


@dataclass(frozen=True)
class StrengthResult:
    """Femoral strength of one analysis: every load case, the governing one, and its record.

    Build it with the pipeline (:func:`osteofe.pipeline.run_strength`,
    :func:`osteofe.analyze`) or read it with :meth:`load`. Frozen; the mappings it carries
    are copies made at construction and serialisation.

    Attributes:
        case_id: Identifier of the case as given.
        body_mass_kg: Body mass, kg (1 BW = ``body_mass_kg`` x 9.81 N).
        cases: One :class:`CaseResult` per computed load case, in the configured order.
        lesion: Scan-derived lesion measures (Mirels items, ACI, CTRA), or ``None``.
        fracture_probability: A risk model's probability, or ``None``.
        warnings: Warnings of the run, each once.
        validity: Whether the result may be used.
        provenance: Inputs, versions, configuration, timings, outputs.
        records: The descriptive records (``mesh``, ``material``, ``landmarks``,
            ``load_frame``, ``discretisation``, ``boundary_conditions``,
            ``failure_criterion``, ``solver``, ``resources``, and any a later stage adds,
            such as ``nonlinear`` or ``segmentation``), written back unchanged; consumers
            read the typed views below instead.
        schema_version: Layout version of the serialisation (:data:`SCHEMA_VERSION`).
        material: The CT-to-modulus chain (read from ``records``, like the views below).
        landmarks: Side and the landmarks the report shows.
        mesh: Mesh size and quality.
        solver: Degrees of freedom, ranks, iterations, PETSc options.
        failure_criterion: Strain limits and the excluded surface.
        boundary_conditions: Fixation and load application.
        ct_fingerprint: What identifies the analysed CT, or ``None`` when not recorded.
    """

    case_id: str
    body_mass_kg: float
    cases: tuple[CaseResult, ...]
    lesion: LesionMeasures | None = None
    fracture_probability: FractureProbability | None = None
    warnings: tuple[str, ...] = ()
    validity: Validity = field(default_factory=Validity)
    provenance: Provenance = field(default_factory=Provenance)
    records: Mapping[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    material: MaterialRecord = field(init=False, repr=False, compare=False)
    landmarks: LandmarksRecord = field(init=False, repr=False, compare=False)
    mesh: MeshRecord = field(init=False, repr=False, compare=False)
    solver: SolverRecord = field(init=False, repr=False, compare=False)
    failure_criterion: FailureCriterionRecord = field(init=False, repr=False, compare=False)
    boundary_conditions: BoundaryRecord = field(init=False, repr=False, compare=False)
    ct_fingerprint: CtFingerprint | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", json_plain(self.records))
        records = self.records
        views: dict[str, Any] = {
            "material": MaterialRecord, "landmarks": LandmarksRecord, "mesh": MeshRecord,
            "solver": SolverRecord, "failure_criterion": FailureCriterionRecord,
            "boundary_conditions": BoundaryRecord}
        for name, view in views.items():  # read once, here
            object.__setattr__(self, name, view.from_dict(records.get(name)))
        fingerprint = records.get("ct_fingerprint")
        object.__setattr__(self, "ct_fingerprint", CtFingerprint.from_dict(fingerprint)
                           if isinstance(fingerprint, Mapping) else None)
        object.__setattr__(self, "provenance", Provenance(
            inputs=json_plain(self.provenance.inputs),
            versions=json_plain(self.provenance.versions),
            machine=json_plain(self.provenance.machine),
            config=json_plain(self.provenance.config),
            timings_s=json_plain(self.provenance.timings_s),
            outputs=tuple(self.provenance.outputs)))
        for name in ("lesion", "fracture_probability", "validity"):
            part = getattr(self, name)
            if part is not None:
                object.__setattr__(self, name, replace(part, record=json_plain(part.record)))
        if not self.cases:
            raise InputError("a strength result needs at least one load case",
                             hint="configure load.cases (e.g. --load stance fall)")
        names = [c.load_case for c in self.cases]
        if len(set(names)) != len(names):
            raise InputError(f"load cases {names} are not unique", hint="name each case once")
        # Each warning once, in the order first given.
        object.__setattr__(self, "warnings", tuple(dict.fromkeys(self.warnings)))

    # -- derived values, computed in this one place ----------------------------------------

    @property
    def body_weight_N(self) -> float:
        """One body weight in newtons (m x 9.81 N; :func:`fea.loads.body_weight_newton`)."""
        return body_weight_newton(self.body_mass_kg)

    @property
    def governing(self) -> CaseResult:
        """The case with the lowest failure load (nominal directions)."""
        return min(self.cases, key=lambda c: c.failure_load_N)

    @property
    def failure_load_N(self) -> float:
        """Failure load of the governing case, N."""
        return self.governing.failure_load_N

    @property
    def failure_load_BW(self) -> float:
        """Failure load of the governing case in body weights."""
        return self.failure_load_N / self.body_weight_N

    @property
    def failure_load_see_N(self) -> float:
        """Standard error of the failure load: the method's cadaver SEE (:data:`METHOD_SEE_N`)."""
        return METHOD_SEE_N

    @property
    def load_to_strength(self) -> dict[str, float]:
        """The load-to-strength ratio phi = applied / failure load, per case."""
        return {c.load_case: c.load_to_strength_ratio for c in self.cases}

    @property
    def weakest(self) -> WeakestLoad:
        """The lowest failure load over every case and every swept direction."""
        best = WeakestLoad(self.governing.load_case, self.governing.failure_load_N, False,
                           None)
        for case in self.cases:
            if case.sweep is not None and case.sweep.min_failure_load_N < best.failure_load_N:
                best = WeakestLoad(case.load_case, case.sweep.min_failure_load_N, True,
                                   case.sweep.weakest_direction_world)
        return best

    def case(self, name: str) -> CaseResult:
        """The result of load case ``name``.

        Raises:
            InputError: naming the computed cases when ``name`` is not one of them.
        """
        for c in self.cases:
            if c.load_case == name:
                return c
        raise InputError(f"no load case {name!r} in this result",
                         hint=f"computed: {[c.load_case for c in self.cases]}")

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of result.json (plain dicts, lists, numbers, strings)."""
        bw = self.body_weight_N
        gov = self.governing
        weakest = self.weakest
        doc: dict[str, Any] = {
            "schema_version": self.schema_version,
            "case_id": self.case_id,
            "failure_load_N": gov.failure_load_N,
            "failure_load_BW": gov.failure_load_N / bw,
            "failure_load_see_N": self.failure_load_see_N,
            "load_case": gov.load_case,
            "failure_mode": gov.failure_mode,
            "critical_point_mm": list(gov.critical_point_mm),
            "critical_region": gov.critical_region,
            "weakest": {"load_case": weakest.load_case,
                        "failure_load_N": weakest.failure_load_N,
                        "failure_load_BW": weakest.failure_load_N / bw,
                        "from_sweep": weakest.from_sweep,
                        "direction_world": (None if weakest.direction_world is None
                                            else list(weakest.direction_world))},
            "body_mass_kg": self.body_mass_kg,
            "body_weight_N": bw,
            "cases": [c.to_dict(bw) for c in self.cases],
        }
        doc.update(json_plain(self.records))
        doc["lesion_risk"] = None if self.lesion is None else self.lesion.to_dict()
        doc["fracture_probability"] = (None if self.fracture_probability is None
                                       else self.fracture_probability.to_dict())
        doc["warnings"] = list(self.warnings)
        doc["validity"] = self.validity.to_dict()
        prov = self.provenance
        doc["config"] = json_plain(prov.config)
        if prov.inputs:
            doc["inputs"] = json_plain(prov.inputs)
        if prov.versions:
            doc["versions"] = dict(prov.versions)
        if prov.machine:
            doc["machine"] = dict(prov.machine)
        if prov.timings_s:
            doc["timings_s"] = dict(prov.timings_s)
        if prov.outputs:
            doc["outputs"] = list(prov.outputs)
        return doc

    def to_json(self) -> str:
        """result.json's text (indented, one trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> StrengthResult:
        """Inverse of :meth:`to_dict`; derived values are recomputed, not read.

        Raises:
            InputError: If a required field is missing or of the wrong kind.
        """
        try:
            lesion = doc.get("lesion_risk")
            prob = doc.get("fracture_probability")
            return cls(
                case_id=str(_need(doc, "case_id", "the result")),
                body_mass_kg=float(_need(doc, "body_mass_kg", "the result")),
                cases=tuple(CaseResult.from_dict(c) for c in _need(doc, "cases", "the result")),
                lesion=None if not lesion else LesionMeasures.from_dict(lesion),
                fracture_probability=None if not prob else FractureProbability.from_dict(prob),
                warnings=tuple(str(w) for w in doc.get("warnings", ())),
                validity=Validity.from_dict(doc.get("validity")),
                provenance=Provenance(
                    inputs=dict(doc.get("inputs") or {}),
                    versions=dict(doc.get("versions") or {}),
                    machine=dict(doc.get("machine") or {}),
                    config=dict(doc.get("config") or {}),
                    timings_s=dict(doc.get("timings_s") or {}),
                    outputs=tuple(doc.get("outputs") or ())),
                records={k: v for k, v in doc.items() if k not in _TYPED},
                schema_version=str(doc.get("schema_version", SCHEMA_VERSION)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"result.json is malformed ({type(err).__name__}: {err})",
                             hint="rerun the analysis that wrote it") from err

    @classmethod
    def from_json(cls, text: str) -> StrengthResult:
        """Parse result.json's text.

        Raises:
            InputError: If it is not JSON or not a result.
        """
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise InputError(f"result.json is not valid JSON ({err})",
                             hint="rerun the analysis that wrote it") from err
        if not isinstance(doc, dict):
            raise InputError("result.json does not hold a JSON object",
                             hint="rerun the analysis that wrote it")
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path: str | Path) -> StrengthResult:
        """Read ``path`` (a result.json, or the folder holding one).

        Raises:
            InputError: If the file is missing, unreadable or not a result.
        """
        file = Path(path)
        if file.is_dir():
            file = file / "result.json"
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(f"cannot read {file} ({err.strerror or err})",
                             hint="give the folder written by `osteofe strength`") from err
        return cls.from_json(text)


def schema() -> dict[str, Any]:
    """The JSON Schema of result.json shipped with the package (``result.schema.json``)."""
    text = resources.files("osteofe").joinpath("result.schema.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def validate(doc: Mapping[str, Any]) -> None:
    """Check a result.json document against :func:`schema` (needs ``jsonschema``).

    Raises:
        InputError: naming the first violation and where it is.
    """
    import jsonschema

    try:
        jsonschema.validate(dict(doc), schema(),
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise InputError(f"result.json does not match its schema at {where}: {err.message}",
                         hint="it was written by another osteofe version; rerun it") from err
