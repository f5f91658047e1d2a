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
:attr:`StrengthResult.records` / :attr:`CaseResult.extras` and written back unchanged, so that
a field one stage adds survives a round trip without a change here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from core.types import json_plain
from fea.loads import body_weight_newton
from meshing.errors import InputError

__all__ = [
    "METHOD_SEE_N",
    "SCHEMA_VERSION",
    "CaseResult",
    "FractureProbability",
    "LesionMeasures",
    "Provenance",
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
        nonlinear: The case's nonlinear (Keyak 2005 softening) record, or ``None``; owned by
            :mod:`fea.nonlinear` and carried as written.
        extras: Further JSON fields of the case record (load patch, force vector, reactions,
            solver statistics, load definition), written back unchanged.
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
    nonlinear: Mapping[str, Any] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON-plain copies: the object equals its own round trip through result.json.
        object.__setattr__(self, "extras", json_plain(self.extras))
        if self.nonlinear is not None:
            object.__setattr__(self, "nonlinear", json_plain(self.nonlinear))

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
            doc["nonlinear"] = json_plain(self.nonlinear)
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
            nonlinear=None if doc.get("nonlinear") is None else dict(doc["nonlinear"]),
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
class LesionMeasures:
    """Scan-derived lesion measures next to the FE strength (pipeline's ``lesion_risk``).

    Attributes:
        aci_mm: Axial cortical involvement, mm (Van der Wal 2020: >= 30 mm high risk).
        aci_high_risk: ``aci_mm`` at or above the published 30 mm threshold.
        ctra_max_reduction: Largest CT-rigidity loss over the sections and measures, 0-1
            (CTRA; > 0.35 high risk), or ``None`` when not computed.
        mirels_total: Mirels total, 4-12, or ``None`` while the pain item is not given.
        mirels_total_range: (low, high) totals possible without the pain item, or ``None``.
        mirels_recommendation: ``"fix"``, ``"judgement"``, ``"irradiate"`` or ``None``.
        record: The whole record (lesion geometry, Mirels items and their derivation, CTRA
            per section), written back unchanged.
    """

    aci_mm: float
    aci_high_risk: bool
    ctra_max_reduction: float | None
    mirels_total: int | None
    mirels_total_range: tuple[int, int] | None
    mirels_recommendation: str | None
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LesionMeasures:
        """From the ``lesion_risk`` record of result.json."""
        mirels = doc.get("mirels") or {}
        reductions = ((doc.get("ctra") or {}).get("max_reduction") or {})
        rng = mirels.get("total_range")
        total = mirels.get("total")
        return cls(
            aci_mm=float(doc["aci_mm"]), aci_high_risk=bool(doc.get("aci_high_risk")),
            ctra_max_reduction=(float(max(reductions.values())) if reductions else None),
            mirels_total=None if total is None else int(total),
            mirels_total_range=None if rng is None else (int(rng[0]), int(rng[1])),
            mirels_recommendation=mirels.get("recommendation"),
            record=dict(doc))

    def to_dict(self) -> dict[str, Any]:
        """The ``lesion_risk`` record (as it was read or measured)."""
        return json_plain(self.record)


@dataclass(frozen=True)
class FractureProbability:
    """A fitted risk model's fracture probability for this femur.

    Attributes:
        probability: Point estimate, 0-1.
        model: Path or description of the model file.
        interval: (lower, upper) interval when the model carries uncertainty, else ``None``.
        record: The whole record (features, notes, contributions), written back unchanged.
    """

    probability: float
    model: str
    interval: tuple[float, float] | None
    record: Mapping[str, Any] = field(default_factory=dict)

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
        return cls(probability=float(doc["probability"]), model=str(doc.get("model", "")),
                   interval=interval, record=dict(doc))

    def to_dict(self) -> dict[str, Any]:
        """The ``fracture_probability`` record."""
        return json_plain(self.record)


@dataclass(frozen=True)
class Validity:
    """Whether the result may be used (guards of :mod:`osteofe.guards`).

    Attributes:
        valid: ``False`` when a guard let the run through only with ``--allow-partial``.
        banner: Banner text to show with an invalid result, else ``None``.
        reasons: Why the result is not valid.
        record: The whole ``validity`` record, written back unchanged.
    """

    valid: bool = True
    banner: str | None = None
    reasons: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Validity:
        """From the ``validity`` record (absent: valid)."""
        if not doc:
            return cls(record={"valid": True, "banner": None, "reasons": []})
        return cls(valid=bool(doc.get("valid", True)), banner=doc.get("banner"),
                   reasons=tuple(str(r) for r in doc.get("reasons", ())), record=dict(doc))

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
    """

    inputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    machine: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    timings_s: Mapping[str, float] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()


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
            such as ``nonlinear`` or ``segmentation``), written back unchanged.
        schema_version: Layout version of the serialisation (:data:`SCHEMA_VERSION`).
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", json_plain(self.records))
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
