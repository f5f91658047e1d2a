"""The case report: a self-contained HTML page and a PDF a clinician can read.

:func:`write_report` reads one result folder written by ``osteofe strength`` (``result.json``
and, when present, ``femur_risk.png``) and writes

- ``report.html``: one file, every picture embedded as a base64 ``data:`` URI, inline CSS, no
  script, no external resource (a Content-Security-Policy forbids loading any), printable on A4;
- ``report.pdf``: the same content laid out on A4 pages with matplotlib's PDF backend (text,
  tables and pictures), so that no browser is needed to produce it;
- optionally ``report_page_NN.png``: the PDF's pages as pictures (for a DICOM Secondary Capture
  or a quick look), drawn by the same layout code.

Privacy: the report shows the case identifier exactly as given and nothing else that could
identify a patient. It is built from a whitelist of result fields (:func:`collect_report_data`):
input files appear by their SHA-256 only (a path may carry a name), configuration values only
for keys that osteofe's configuration defines, and any field the report does not know is left
out, whatever it contains.

Clinical scores are optional: the Mirels score, the axial cortical involvement (ACI), the
CT-based rigidity analysis (CTRA) and a calibrated fracture probability are shown when passed
in ``risk`` or found in ``result.json`` (top level or under ``"risk"``), and otherwise marked
"not computed".
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from meshing.errors import OsteofeError
from osteofe import __version__
from osteofe.outputs import staged_output
from osteofe.report_page1 import plain_sentence
from osteofe.result import (
    CtraRecord,
    FractureProbability,
    MirelsRecord,
    NonlinearResult,
    StrengthResult,
    SweepResult,
)
from risk.mirels import (
    CITATIONS,
    MIRELS_FIX_MIN,
    MIRELS_JUDGEMENT,
    OPERATING_POINTS,
    THRESHOLDS,
    mirels_recommendation,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "PHI_BORDERLINE",
    "PHI_THRESHOLD",
    "REPORT_HTML",
    "REPORT_PDF",
    "ReportData",
    "ReportError",
    "collect_report_data",
    "make_report",
    "phi_band",
    "render_html",
    "render_pdf",
    "write_report",
]

#: File names written by :func:`write_report`.
REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"

#: Load-to-strength ratio at which a fracture is expected (factor of risk; Keaveny & Bouxsein
#: 2008, :data:`risk.mirels.THRESHOLDS` ``"factor_of_risk"``).
PHI_THRESHOLD = THRESHOLDS["factor_of_risk"].value
#: Lower edge of the amber display band. A presentation aid, not a validated threshold: the
#: linear criterion's cadaver error (SEE 814 N, Schileo et al. 2008) is 10-20 % of a typical
#: failure load, so ratios within 20 % of the threshold cannot be told apart from it.
PHI_BORDERLINE = 0.8
#: Published rigidity-loss threshold quoted beside a CTRA value (fraction). From the CTRA
#: literature as summarised in DESIGN.md (sensitivity ~100 %, specificity ~61 %) and marked
#: there as to be verified; the report says so.
CTRA_THRESHOLD = 0.35

PhiBand = Literal["high", "borderline", "low"]

_COLOURS: dict[str, str] = {
    "high": "#b42318",
    "borderline": "#b54708",
    "low": "#027a48",
    "none": "#475467",
}
_BAND_TEXT: dict[str, str] = {
    "high": f"at or above {PHI_THRESHOLD:g}: the activity's peak hip force reaches the "
    "predicted load to failure",
    "borderline": f"{PHI_BORDERLINE:g} to {PHI_THRESHOLD:g}: within the model's uncertainty "
    "of the failure threshold",
    "low": f"below {PHI_BORDERLINE:g}: the activity's peak hip force stays clearly below the "
    "predicted load to failure",
}
NOT_COMPUTED = "not computed"


class ReportError(OsteofeError):
    """The result folder cannot be reported on (missing or malformed ``result.json``)."""


def phi_band(phi: float) -> PhiBand:
    """Colour band of a load-to-strength ratio.

    Args:
        phi: Applied load / failure load.

    Returns:
        ``"high"`` when ``phi >= PHI_THRESHOLD``, ``"borderline"`` when
        ``PHI_BORDERLINE <= phi < PHI_THRESHOLD``, else ``"low"``.
    """
    if phi >= PHI_THRESHOLD:
        return "high"
    if phi >= PHI_BORDERLINE:
        return "borderline"
    return "low"


# --------------------------------------------------------------------------------------------
# What the report shows (built from a whitelist of result fields).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepView:
    """Direction sweep of one load case: the weakest direction in a cone."""

    num_directions: int | None
    half_angle_deg: float | None
    min_failure_load_N: float
    min_failure_load_BW: float | None
    phi: float | None


@dataclass(frozen=True)
class NonlinearView:
    """Nonlinear (softening) load to failure of one load case."""

    failure_load_N: float
    failure_load_BW: float | None
    phi: float | None
    peak_reached: bool | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseView:
    """One load case's linear result."""

    name: str
    applied_N: float | None
    applied_BW: float | None
    failure_N: float
    failure_BW: float | None
    phi: float | None
    mode: str
    region: str
    peak_tension: float | None
    peak_compression: float | None
    sweep: SweepView | None
    nonlinear: NonlinearView | None


@dataclass(frozen=True)
class MirelsItemView:
    """One Mirels item (points None: not given, e.g. pain without the clinician)."""

    name: str
    points: int | None
    category: str
    derivation: str


@dataclass(frozen=True)
class MirelsView:
    """A Mirels score, complete or with the pain item missing.

    Attributes:
        total: The total, or None when an item (pain) is missing.
        total_range: (lowest, highest) possible total when an item is missing.
        recommendation: Mirels' recommendation, or the range of them.
        items: The items (empty when only the total was given).
        note: What is missing, if anything.
    """

    total: int | None
    total_range: tuple[int, int] | None
    recommendation: str
    items: tuple[MirelsItemView, ...]
    note: str = ""

    @property
    def total_text(self) -> str:
        """``"10 / 12"``, or ``"9-11 / 12"`` when an item is missing."""
        if self.total is not None:
            return f"{self.total} / 12"
        low, high = self.total_range or (4, 12)
        return f"{low}-{high} / 12"


@dataclass(frozen=True)
class CtraView:
    """CT-based rigidity analysis: the largest loss of rigidity at the lesion.

    Attributes:
        loss: Largest rigidity loss, fraction.
        measure: Which rigidity (e.g. "torsional (GJ)"), if known.
        threshold: High-risk threshold, fraction.
        high_risk: Whether the loss exceeds the threshold.
        derivation: One-line account of the analysis, if given.
        reference: What the lesioned bone was compared with, if given.
        threshold_source: Citation of the threshold, if given.
    """

    loss: float
    measure: str | None
    threshold: float = CTRA_THRESHOLD
    high_risk: bool | None = None
    derivation: str = ""
    reference: str = ""
    threshold_source: str = ""

    @property
    def is_high(self) -> bool:
        """The analysis' verdict, or loss > threshold when none was given."""
        return self.high_risk if self.high_risk is not None else self.loss > self.threshold


@dataclass(frozen=True)
class ProbabilityView:
    """A calibrated fracture probability with its interval and the model behind it."""

    probability: float
    lower: float | None
    upper: float | None
    level: float | None
    model: tuple[tuple[str, str], ...]
    details: tuple[str, ...] = ()  # horizon risk, contributions (risk.presentation)


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, and nothing else.

    Attributes:
        case_id: The case identifier as given to ``osteofe strength``.
        body_mass_kg: Body mass used for the loads, kg.
        cases: Load cases in result order.
        governing: The weakest case (lowest linear failure load).
        critical_point_mm: Failure location of the weakest case, world mm.
        mirels: Mirels score or None (not computed).
        aci_mm: Axial cortical involvement, mm, or None.
        ctra: CTRA rigidity loss or None.
        probability: Calibrated fracture probability or None.
        calibration: CT density calibration rows (label, value).
        provenance: Titled sections of (label, value) rows.
        warnings: Warnings of the run.
        picture_png: ``femur_risk.png`` bytes, or None.
        result_sha256: SHA-256 of the ``result.json`` the report was made from.
        generated_utc: When the report was generated.
        report_version: osteofe version that wrote the report.
        default_calibration: True when the run used osteofe's generic scanner line.
        validity_banner: The run's validity banner (``result.json`` ``validity``) when its
            result is not valid for the load case (e.g. a partial model), shown first.
        cautions: How to read the result (``validity.cautions``), shown on page 1.
        side: Laterality of the analysed femur (``"left"``/``"right"``), or None.
        failure_see_N: Standard error of the failure load (the method's, N), or None.
        slices_png: Axial and coronal CT slices through the failure point, or None.
        slices_caption: Their caption, with the slice numbers.
    """

    case_id: str
    body_mass_kg: float | None
    cases: tuple[CaseView, ...]
    governing: CaseView
    critical_point_mm: tuple[float, ...] | None
    mirels: MirelsView | None
    aci_mm: float | None
    ctra: CtraView | None
    probability: ProbabilityView | None
    calibration: tuple[tuple[str, str], ...]
    provenance: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    warnings: tuple[str, ...]
    picture_png: bytes | None
    result_sha256: str
    generated_utc: str
    report_version: str
    default_calibration: bool = False
    validity_banner: str | None = None
    cautions: tuple[str, ...] = ()
    side: str | None = None
    failure_see_N: float | None = None
    slices_png: bytes | None = None
    slices_caption: str = ""

    @property
    def sentence(self) -> str:
        """The result in one plain-language sentence (page 1)."""
        g = self.governing
        return plain_sentence(self.side, g.name, g.failure_N, self.failure_see_N,
                              g.failure_BW, g.phi)

    @property
    def worst_phi_case(self) -> CaseView | None:
        """The case with the highest load-to-strength ratio (None when none has one)."""
        with_phi = [c for c in self.cases if c.phi is not None]
        return max(with_phi, key=lambda c: c.phi or 0.0) if with_phi else None

    @property
    def sweep_minimum(self) -> tuple[CaseView, SweepView] | None:
        """The lowest direction-sweep failure load over all cases, with its case."""
        swept = [(c, c.sweep) for c in self.cases if c.sweep is not None]
        if not swept:
            return None
        case, sweep = min(swept, key=lambda cs: cs[1].min_failure_load_N)
        return case, sweep

    @property
    def nonlinear_cases(self) -> tuple[CaseView, ...]:
        """Cases with a nonlinear result."""
        return tuple(c for c in self.cases if c.nonlinear is not None)


def _num(value: Any) -> float | None:
    """A finite float, or None (bools, strings and non-finite values are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return NOT_COMPUTED
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def _fmt_n(value: float | None) -> str:
    """A force in N with thousands separators (``1,546 N``)."""
    return _fmt(value, 0, "N")


def _fmt_bw(value: float | None) -> str:
    return NOT_COMPUTED if value is None else f"{value:.2f} × BW"


def _fmt_strain(value: float | None) -> str:
    return NOT_COMPUTED if value is None else f"{100.0 * value:+.2f} %"


def _plain(value: Any) -> str:
    """A configuration/provenance value as short text."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {_plain(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def _nonlinear_view(nl: NonlinearResult | None, applied: float | None,
                    body_n: float | None) -> NonlinearView | None:
    if nl is None or nl.failure_load_N is None:
        return None
    load = nl.failure_load_N
    bw = nl.failure_load_BW
    if bw is None and body_n:
        bw = load / body_n
    phi = nl.load_to_strength_ratio
    if phi is None and applied is not None:
        phi = applied / load
    return NonlinearView(load, bw, phi, nl.peak_reached, nl.notes)


def _sweep_view(sweep: SweepResult | None, applied: float, body_n: float
                ) -> SweepView | None:
    if sweep is None:
        return None
    load = sweep.min_failure_load_N
    return SweepView(sweep.num_directions, sweep.half_angle_deg, load, load / body_n,
                     applied / load)


def _cases(result: StrengthResult) -> list[CaseView]:
    """The load cases of the typed result as the report shows them."""
    body_n = result.body_weight_N
    out: list[CaseView] = []
    for case in result.cases:
        applied = case.applied_load_N
        out.append(CaseView(
            name=case.load_case, applied_N=applied, applied_BW=applied / body_n,
            failure_N=case.failure_load_N, failure_BW=case.failure_load_N / body_n,
            phi=case.load_to_strength_ratio, mode=case.failure_mode,
            region=case.critical_region,
            peak_tension=_num(case.peak_tension_strain),
            peak_compression=_num(case.peak_compression_strain),
            sweep=_sweep_view(case.sweep, applied, body_n),
            nonlinear=_nonlinear_view(case.nonlinear, applied, body_n),
        ))
    return out


def _typed(result: StrengthResult | Mapping[str, Any]) -> StrengthResult:
    """The typed result (a parsed result.json goes through the one serialiser)."""
    if isinstance(result, StrengthResult):
        return result
    if not result.get("cases"):
        raise ReportError("result.json holds no failure load",
                          hint="give the folder written by `osteofe strength` for a completed "
                               "run")
    try:
        return StrengthResult.from_dict(result)
    except OsteofeError as exc:
        raise ReportError(exc.message, hint=exc.hint) from exc


def _as_plain(value: Any) -> Any:
    """Objects with ``to_dict`` (e.g. :class:`risk.mirels.MirelsScore`) become dicts."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def _recommendation_range(low: int, high: int) -> str:
    first, last = mirels_recommendation(low), mirels_recommendation(high)
    return first if first == last else f"{first} to {last}"


def _mirels_view(raw: Any) -> MirelsView | None:
    """A Mirels score given to the report.

    A total, a :class:`risk.mirels.MirelsScore` or its ``to_dict()``.
    """
    raw = _as_plain(raw)
    given = _num(raw)
    if given is not None:
        if given.is_integer() and 4 <= given <= 12:
            return MirelsView(int(given), None, mirels_recommendation(int(given)), ())
        return None
    return _mirels_record_view(MirelsRecord.from_dict(raw))


def _mirels_record_view(record: MirelsRecord) -> MirelsView | None:
    by_name: dict[str, MirelsItemView] = {}
    for item in record.items:
        if item.name in ("site", "pain", "lesion", "size") and item.points in (1, 2, 3):
            by_name[item.name] = MirelsItemView(item.name, item.points, item.category,
                                                item.derivation)
    note = record.pain if "pain" not in by_name else ""
    items = []
    for name in ("site", "pain", "lesion", "size"):
        if name in by_name:
            items.append(by_name[name])
        elif by_name:
            items.append(MirelsItemView(name, None, "not given",
                                        note or "not given"))
    total = record.total
    if len(by_name) == 4:
        total = sum(i.points or 0 for i in by_name.values())
    if total is not None and 4 <= total <= 12:
        return MirelsView(total, None, mirels_recommendation(total),
                          tuple(items) if len(by_name) == 4 else ())
    if not by_name:
        return None
    known = sum(i.points or 0 for i in by_name.values())
    missing = 4 - len(by_name)
    low, high = record.total_range or (known + missing, known + 3 * missing)
    missing_names = [i.name for i in items if i.points is None]
    return MirelsView(None, (low, high), _recommendation_range(low, high), tuple(items),
                      note or f"{', '.join(missing_names)} not given")


_RIGIDITY_NAMES = {"EA": "axial", "EI_min": "bending", "EI": "bending", "GJ": "torsional"}


def _ctra_view(raw: Any) -> CtraView | None:
    """A CTRA given to the report: a loss (fraction or percent) or an analysis' record."""
    raw = _as_plain(raw)
    loss = _num(raw)
    return _ctra_record_view(CtraRecord(stated_loss=loss) if loss is not None
                             else CtraRecord.from_dict(raw))


def _ctra_record_view(record: CtraRecord) -> CtraView | None:
    loss = None
    measure = record.measure or None
    governing = record.governing
    if governing and record.governing_loss is not None:
        loss = record.governing_loss
        measure = (f"{_RIGIDITY_NAMES[governing]} ({governing})"
                   if governing in _RIGIDITY_NAMES else governing)
    if loss is None:
        loss = record.stated_loss
    if loss is None:
        return None
    if 1.0 < loss <= 100.0:  # given in percent
        loss /= 100.0
    if not 0.0 <= loss <= 1.0:
        return None
    threshold = record.threshold
    return CtraView(loss, measure,
                    threshold if threshold is not None and 0 < threshold < 1 else CTRA_THRESHOLD,
                    record.high_risk, record.derivation, record.reference_description,
                    record.threshold_source)


_MODEL_FIELDS = ("name", "model_kind", "kind", "feature_names", "osteofe_version", "sha256",
                 "description", "source")


def _model_rows(raw: Any) -> tuple[tuple[str, str], ...]:
    """Rows of a risk model's description (its path, or :mod:`risk.calibration`'s JSON)."""
    if isinstance(raw, str):
        return (("model", raw),)
    doc = _dict(_as_plain(raw))
    rows = [(key.replace("_", " "), _plain(doc[key])) for key in _MODEL_FIELDS
            if isinstance(doc.get(key), str | list)]
    training = _dict(doc.get("training"))
    n, events, auc = (_num(training.get(k)) for k in ("n", "events", "auc"))
    if n is not None:
        text = f"{n:.0f} femurs" + (f", {events:.0f} fractures" if events is not None else "")
        if auc is not None:
            text += f", apparent AUC {auc:.2f}"
        rows.append(("trained on", text))
    coef, intercept = doc.get("coef"), _num(doc.get("intercept"))
    if isinstance(coef, list) and all(_num(c) is not None for c in coef) and intercept is not None:
        rows.append(("coefficients", ", ".join(f"{c:.4g}" for c in coef)
                     + f"; intercept {intercept:.4g}"))
    return tuple(rows)


def _probability_view(raw: Any) -> ProbabilityView | None:
    """A fracture probability given to the report (``risk``).

    A number, a mapping or a :class:`risk.calibration.PredictionInterval`-like object.
    """
    if _num(raw) is not None:
        p = _num(raw)
        lower = upper = level = None
        model: tuple[tuple[str, str], ...] = ()
    else:
        doc = _dict(raw)
        if not doc and raw is not None:  # a PredictionInterval-like object
            doc = {k: getattr(raw, k) for k in ("probability", "lower", "upper", "level")
                   if hasattr(raw, k)}
            doc = {k: (v.ravel()[0] if hasattr(v, "ravel") else v) for k, v in doc.items()}
            doc = {k: (v.item() if hasattr(v, "item") else v) for k, v in doc.items()}
        p = next((_num(doc.get(k)) for k in ("probability", "p", "value")
                  if _num(doc.get(k)) is not None), None)
        lower, upper = _num(doc.get("lower")), _num(doc.get("upper"))
        interval = doc.get("interval", doc.get("ci"))
        if (lower is None or upper is None) and isinstance(interval, list | tuple) \
                and len(interval) == 2:
            lower, upper = _num(interval[0]), _num(interval[1])
        level = _num(doc.get("level"))
        model = _model_rows(doc.get("model", doc.get("calibration")))
    from risk.presentation import probability_details

    details = probability_details(raw) if isinstance(raw, Mapping) else ()
    return _checked_probability(p, lower, upper, level, model, details)


def _result_probability_view(prob: FractureProbability) -> ProbabilityView | None:
    """The result's own fracture probability."""
    lower, upper = prob.interval or (None, None)
    model = (_model_rows(prob.model_record) if prob.model_record
             else _model_rows(prob.model) if prob.model else ())
    return _checked_probability(_num(prob.probability), _num(lower), _num(upper), prob.level,
                                model, prob.details())


def _checked_probability(p: float | None, lower: float | None, upper: float | None,
                         level: float | None, model: tuple[tuple[str, str], ...],
                         details: tuple[str, ...]) -> ProbabilityView | None:
    if p is None or not 0.0 <= p <= 1.0:
        return None
    if lower is not None and upper is not None and not 0.0 <= lower <= upper <= 1.0:
        lower = upper = None
    return ProbabilityView(p, lower, upper, level, model, details)


def _scores(result: StrengthResult, risk: Mapping[str, Any] | None
            ) -> tuple[MirelsView | None, float | None, CtraView | None,
                       ProbabilityView | None]:
    """Mirels, ACI, CTRA and the fracture probability: the result's, or those given."""
    given = {k: v for k, v in (risk or {}).items() if v is not None}
    lesion = result.lesion
    if "mirels" in given:
        mirels = _mirels_view(given["mirels"])
    else:
        mirels = (None if lesion is None or lesion.mirels is None
                  else _mirels_record_view(lesion.mirels))
    aci = (_num(_as_plain(given["aci_mm"])) if "aci_mm" in given
           else None if lesion is None else _num(lesion.aci_mm))
    if "ctra" in given:
        ctra = _ctra_view(given["ctra"])
    elif lesion is not None and lesion.ctra is not None:
        ctra = _ctra_record_view(lesion.ctra)
    else:
        ctra = _ctra_view(given.get("ctra_reduction"))
    prob = result.fracture_probability
    if "fracture_probability" in given:
        probability = _probability_view(given["fracture_probability"])
    else:
        probability = None if prob is None else _result_probability_view(prob)
    return mirels, aci, ctra, probability


def _calibration_rows(result: StrengthResult) -> tuple[list[tuple[str, str]], bool]:
    m = result.material
    rows = [(label, value) for label, value in (
        ("name", m.calibration_name), ("line", m.calibration_line),
        ("phantom material", m.calibration_material), ("source", m.calibration_source))
        if value]
    if m.calibration_fit:
        rows.append(("phantom fit", ", ".join(f"{k} {v:.4g}"
                                              for k, v in m.calibration_fit.items())))
    default = any("no calibration given" in w for w in result.warnings) \
        or m.calibration_name == "osteofe_phantom_line"
    if not rows:
        rows.append(("calibration", "not recorded in result.json"))
    return rows, default


def _provenance(result: StrengthResult, probability: ProbabilityView | None,
                result_sha: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    sections: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    inputs = [("result.json", result_sha)]
    inputs += [(f"{name} input", file.sha256)
               for name, file in result.provenance.files.items() if file.sha256]
    inputs.append(("note", "SHA-256 of each input file (folders: of their files); paths are "
                           "left out of the report as they may identify the patient"))
    sections.append(("Inputs (SHA-256)", tuple(inputs)))

    m = result.material
    rows = [
        ("CT density to ash density", m.qct_to_ash),
        ("  source", m.qct_to_ash_source),
        ("ash to apparent density", m.ash_to_app),
        ("  source", m.ash_to_app_source),
        ("density-modulus law", m.law_formula),
        ("  source", m.law_source),
        ("Poisson's ratio", _plain(m.poisson_ratio)),
        ("modulus floor", f"{_plain(m.E_floor_MPa)} MPa"),
    ]
    if m.fraction_outside_law is not None:
        rows.append(("elements outside the law's density range",
                     f"{100 * m.fraction_outside_law:.0f} %"))
    sections.append(("Material model", tuple((k, v) for k, v in rows if v)))

    lesion = result.lesion
    if lesion is not None:
        fraction, circ = lesion.size_fraction, lesion.circumferential_fraction
        aci_mm = _num(lesion.aci_mm)
        ctra = lesion.ctra or CtraRecord()
        rows = [
            ("lesion type", lesion.kind),
            ("  rule", lesion.kind_rule),
            ("site", lesion.site),
            ("  rule", lesion.site_rule),
            ("size", f"{fraction:.2f} of the {lesion.size_basis or 'diameter'}"
             if fraction is not None else ""),
            ("axial cortical involvement", f"{aci_mm:.1f} mm" if aci_mm is not None else ""),
            ("largest circumferential involvement", f"{100 * circ:.0f} %"
             if circ is not None else ""),
            ("CTRA", ctra.derivation),
            ("CTRA threshold source", ctra.threshold_source),
        ]
        sections.append(("Lesion measures from the scan (Mirels items, ACI, CTRA)",
                         tuple((k, v) for k, v in rows if v)))

    crit = result.failure_criterion
    t_lim, c_lim = crit.tension_limit, crit.compression_limit
    rows = [
        ("tension limit", f"{100 * t_lim:.2f} % principal strain" if t_lim else ""),
        ("compression limit", f"{100 * c_lim:.2f} % principal strain" if c_lim else ""),
        ("averaging patch", f"{_plain(crit.patch_area_mm2)} mm²"
         if crit.patch_area_mm2 else ""),
        ("excluded", crit.excluded),
        ("source", crit.source),
    ]
    sections.append(("Failure criterion (linear, onset of failure)",
                     tuple((k, v) for k, v in rows if v)))

    bc = result.boundary_conditions
    rows = [("distal fixation", bc.distal), ("load application", bc.load),
            ("sideways fall supports", bc.fall_protocol)]
    sources: list[str] = []
    for case in result.cases:
        definition = case.load_definition
        src, name = definition.source, definition.name
        magnitude, magnitude_n = definition.magnitude_bw, definition.magnitude_N
        size = (f"{magnitude:g} × BW" if magnitude is not None else
                f"{magnitude_n:g} N" if magnitude_n is not None else "")
        if name and f"load case {name}" not in (r[0] for r in rows):
            rows.append((f"load case {name}", size + (f"; {src}" if src and src not in sources
                                                      else "")))
        if src and src not in sources:
            sources.append(src)
    sections.append(("Loads and boundary conditions", tuple((k, v) for k, v in rows if v)))

    mesh, solver = result.mesh, result.solver
    rows = [
        ("nodes / elements", f"{_plain(mesh.num_nodes)} / {_plain(mesh.num_cells)}"),
        ("lesion elements", _plain(mesh.num_lesion_cells)),
        ("element order", _plain(mesh.order)),
        ("smallest dihedral angle", f"{mesh.min_dihedral_deg:.1f} deg"
         if mesh.min_dihedral_deg else ""),
        ("degrees of freedom", _plain(solver.num_dofs)),
        ("MPI ranks", _plain(solver.mpi_ranks)),
        ("solver iterations", _plain(solver.iterations)),
        ("PETSc options", _plain(solver.petsc_options)),
    ]
    sections.append(("Mesh and solver", tuple((k, v) for k, v in rows if v and v != "not set")))

    lm = result.landmarks
    rows = [(label, _plain(value) + unit) for label, value, unit in (
        ("side", lm.side, ""), ("head radius", lm.head_radius_mm, " mm"),
        ("neck-shaft angle", lm.neck_shaft_angle_deg, " deg"),
        ("anteversion", lm.anteversion_deg, " deg"),
        ("femur length in the image", lm.length_along_shaft_mm, " mm"),
        ("coordinate convention", lm.convention, "")) if value is not None]
    if rows:
        sections.append(("Landmarks", tuple(rows)))

    if probability is not None and probability.model:
        sections.append(("Fracture-probability model (risk calibration)", probability.model))

    config = tuple((key, _plain(value)) for key, value in result.provenance.config_values())
    sections.append(("Configuration (every parameter)",
                     config or (("configuration", "not recorded in result.json"),)))

    prov = result.provenance
    rows = [(str(k), str(v)) for k, v in prov.versions.items() if isinstance(v, str)]
    if prov.platform:
        rows.append(("platform", prov.platform))
    if prov.run_time_s is not None:
        rows.append(("run time", f"{prov.run_time_s:.1f} s"))
    sections.append(("Software (versions that computed the result)",
                     tuple(rows) or (("versions", "not recorded in result.json"),)))
    return sections


def collect_report_data(
    result: StrengthResult | Mapping[str, Any],
    risk: Mapping[str, Any] | None = None,
    *,
    picture_png: bytes | None = None,
    result_sha256: str = "",
    generated: datetime | None = None,
    ct_slices: tuple[bytes, str] | None = None,
) -> ReportData:
    """Pick, from a result, the fields the report shows (the privacy whitelist).

    Args:
        result: The typed result, or a parsed ``result.json`` (read through
            :meth:`osteofe.result.StrengthResult.from_dict`).
        risk: Optional clinical scores: ``mirels`` (a :class:`risk.mirels.MirelsScore`, its
            ``to_dict()`` or a total), ``aci_mm`` (mm), ``ctra`` (rigidity loss as a fraction,
            or a dict with ``rigidity_loss``), ``fracture_probability`` (a probability, or a
            dict with ``probability``, ``lower``, ``upper``, ``level`` and ``model``: the
            model's JSON or name). They override the same keys in ``result``.
        picture_png: The femur picture, if any.
        result_sha256: SHA-256 of the ``result.json`` file.
        generated: Report time (default now, UTC).
        ct_slices: Axial and coronal CT slices through the failure point (PNG) and their
            caption (:func:`osteofe.report_page1.ct_slices_png`), or None.

    Returns:
        The report's content.

    Raises:
        ReportError: If the result holds no failure load.
    """
    typed = _typed(result)
    cases = _cases(typed)
    governing = next(c for c in cases if c.name == typed.governing.load_case)
    mirels, aci, ctra, probability = _scores(typed, risk)
    calibration, default_cal = _calibration_rows(typed)
    point = tuple(typed.governing.critical_point_mm)
    when = generated or datetime.now(UTC)
    return ReportData(
        case_id=typed.case_id or "case",
        body_mass_kg=typed.body_mass_kg,
        cases=tuple(cases),
        governing=governing,
        critical_point_mm=point,
        mirels=mirels,
        aci_mm=aci if aci is not None and aci >= 0.0 else None,
        ctra=ctra,
        probability=probability,
        calibration=tuple(calibration),
        provenance=tuple(_provenance(typed, probability, result_sha256)),
        warnings=typed.warnings,
        picture_png=picture_png,
        result_sha256=result_sha256,
        generated_utc=when.strftime("%Y-%m-%d %H:%M UTC"),
        report_version=__version__,
        default_calibration=default_cal,
        validity_banner=_validity_banner(typed),
        cautions=typed.validity.cautions,
        side=typed.landmarks.side,
        failure_see_N=typed.failure_load_see_N,
        slices_png=None if ct_slices is None else ct_slices[0],
        slices_caption="" if ct_slices is None else ct_slices[1],
    )


def _validity_banner(result: StrengthResult) -> str | None:
    """The banner of a result that is not valid as computed (None when it is)."""
    validity = result.validity
    if validity.valid:
        return None
    banner = validity.banner or "NOT VALID"
    return banner + (": " + "; ".join(validity.reasons) if validity.reasons else "")


# --------------------------------------------------------------------------------------------
# Words: what each number means, and the limits.
# --------------------------------------------------------------------------------------------


def _operating(key: str) -> str:
    point = OPERATING_POINTS[key]
    source = CITATIONS[point.citation]
    authors = source.authors.split(",")
    words = authors[0].split()
    if len(words) > 1 and words[-1].isupper():  # drop the initials
        words = words[:-1]
    who = " ".join(words) + (" et al." if len(authors) > 1 else "")
    return (f"sensitivity {100 * point.sensitivity:.0f} %, specificity "
            f"{100 * point.specificity:.0f} % ({who} {source.year})")


def explanations(data: ReportData) -> list[tuple[str, str]]:
    """Plain-language meaning of each number in the report.

    Args:
        data: The report content (for the criterion's limits and what was computed).

    Returns:
        (term, explanation) pairs.
    """
    aci = THRESHOLDS["aci"]
    out = [
        ("Load to failure (linear)",
         "The force on the hip joint, in the direction of the named activity, at which the "
         "model predicts that the bone surface first reaches its strain limit (0.73 % "
         "stretching or 1.04 % shortening, averaged over about 3 mm²; Schileo et al. 2008). "
         "It marks the onset of failure, not a complete fracture: the bone usually carries "
         "somewhat more before it breaks. On cadaver femurs this criterion predicted measured "
         "strength with R² = 0.89 and a standard error of about 0.8 kN."),
        ("× BW",
         "The same force divided by the patient's body weight (body mass × 9.81 m/s²): "
         "2 × BW is twice the body weight."),
        ("Load-to-strength ratio φ",
         "The peak hip force of the activity for an average patient (Bergmann et al. 2001: "
         "walking about 2.4 × BW, stairs about 2.5-2.6 × BW) divided by the load to failure. "
         f"φ ≥ {PHI_THRESHOLD:g} means that this everyday load already reaches the predicted "
         "load to failure; the smaller φ, the larger the margin. Colours: red "
         f"φ ≥ {PHI_THRESHOLD:g}, amber {PHI_BORDERLINE:g} ≤ φ < {PHI_THRESHOLD:g} (within "
         "the model's uncertainty), green below. The bands are a reading aid, not a "
         "validated treatment threshold."),
        ("Critical region",
         "Where on the bone surface the strain limit is reached first (magenta in the picture); "
         "the colours show how close each point is to its limit at the activity's load "
         "(risk factor = strain / limit)."),
        ("Direction sweep",
         "Real hip forces vary in direction. The sweep repeats the analysis for load "
         "directions spread over a cone around the nominal one and reports the lowest load to "
         "failure found."),
        ("Nonlinear load to failure",
         "A second model that lets bone yield and soften and pushes the femoral head until "
         "the force peaks; it estimates the load that actually breaks the bone rather than "
         "the onset of failure, and is therefore usually higher than the linear value "
         "(Keyak et al. 2005; on metastatic cadaver femurs Sas et al. 2020 report R² = 0.93)."),
        ("Mirels score",
         "A clinical score from site, pain, lesion type and size (1-3 points each, total "
         f"4-12; Mirels 1989): ≥ {MIRELS_FIX_MIN} suggests prophylactic fixation, "
         f"{MIRELS_JUDGEMENT} clinical judgement, lower radiotherapy. It is sensitive but "
         f"unspecific: {_operating('damron2003_mirels')}."),
        ("Axial cortical involvement (ACI)",
         "The length of cortex, along the femur, destroyed by the lesion; "
         f"≥ {aci.value:g} {aci.unit} is considered high risk: "
         f"{_operating('vanderwal2020_aci')}."),
        ("CTRA",
         "CT-based rigidity analysis: the loss of the bone's axial, bending or torsional "
         "rigidity at the lesion compared with healthy bone. Studies flag a loss above "
         f"{100 * CTRA_THRESHOLD:.0f} % as high risk (figure quoted from the literature, not "
         "verified by osteofe)."),
        ("Fracture probability",
         "The probability of a pathological fracture predicted by a logistic (sigmoid) model "
         "calibrated on a cohort of patients, with its confidence interval. Published cohorts "
         "have at most about 15 fractures, so intervals are wide; the probability applies only "
         "to patients like those of the calibration cohort."),
    ]
    return out


def limitations(data: ReportData) -> list[str]:
    """The limits a reader must know, specific to this result where possible.

    Args:
        data: The report content.

    Returns:
        Sentences, most important first.
    """
    items = [
        "osteofe is research software. Its numbers are not a diagnosis and have not been "
        "validated for clinical decisions; read them together with clinical judgement and "
        "imaging.",
        "The linear criterion gives the onset of failure, not the fracture load; it ignores "
        "yielding, so it errs on the cautious side.",
        "Loads are average-patient peak hip forces (Bergmann et al. 2001), not this patient's "
        "gait; muscles are not modelled and the distal femur is fixed.",
        "Bone stiffness comes from CT density through published laws derived on cadaver bone; "
        "lesion tissue is modelled by its CT density like bone.",
    ]
    if data.default_calibration:
        items.insert(1, "No scanner calibration was given: CT numbers were converted to "
                        "density with a generic scanner line, not a phantom in the scan. "
                        "Absolute loads may be off by tens of percent.")
    else:
        cal = dict(data.calibration)
        items.insert(1, "CT density calibration used: "
                        f"{cal.get('line') or cal.get('name') or 'see provenance'}"
                        f" ({cal.get('source') or 'source not recorded'}).")
    if data.probability is None:
        items.append("No calibrated fracture probability was computed: the failure load is a "
                     "mechanical quantity, not a probability of fracture.")
    return items


# --------------------------------------------------------------------------------------------
# Figures.
# --------------------------------------------------------------------------------------------


def phi_chart_png(data: ReportData, *, width_in: float = 7.0, dpi: int = 200) -> bytes:
    """Horizontal bar chart of the load-to-strength ratio per load case.

    Args:
        data: Report content.
        width_in: Figure width, inches.
        dpi: Resolution.

    Returns:
        PNG bytes.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cases = [c for c in data.cases if c.phi is not None]
    height = 0.9 + 0.42 * max(len(cases), 1)
    fig = Figure(figsize=(width_in, height), dpi=dpi)
    ax = fig.add_axes((0.2, 0.45 / height + 0.1, 0.76, 1 - (0.45 / height + 0.1) - 0.08))
    names = [c.name for c in cases]
    phis = [c.phi or 0.0 for c in cases]
    xmax = max([*phis, PHI_THRESHOLD * 1.25] + [c.sweep.phi or 0.0 for c in cases if c.sweep]
               + [c.nonlinear.phi or 0.0 for c in cases if c.nonlinear]) * 1.12
    ax.axvspan(0, PHI_BORDERLINE, color=_COLOURS["low"], alpha=0.06, lw=0)
    ax.axvspan(PHI_BORDERLINE, PHI_THRESHOLD, color=_COLOURS["borderline"], alpha=0.08, lw=0)
    ax.axvspan(PHI_THRESHOLD, xmax, color=_COLOURS["high"], alpha=0.06, lw=0)
    ys = list(range(len(cases)))[::-1]
    ax.barh(ys, phis, height=0.55, color=[_COLOURS[phi_band(p)] for p in phis])
    for y, p in zip(ys, phis, strict=True):
        ax.text(p + xmax * 0.01, y, f"{p:.2f}", va="center", fontsize=8, parse_math=False)
    handles: list[Any] = []
    if any(c.sweep and c.sweep.phi for c in cases):
        ax.scatter([c.sweep.phi for c in cases if c.sweep and c.sweep.phi],
                   [y for c, y in zip(cases, ys, strict=True) if c.sweep and c.sweep.phi],
                   marker="|", s=260, color="#101828", zorder=3)
        handles.append(Line2D([], [], marker="|", ls="", color="#101828", markersize=12,
                              label="weakest swept direction"))
    if any(c.nonlinear and c.nonlinear.phi for c in cases):
        ax.scatter([c.nonlinear.phi for c in cases if c.nonlinear and c.nonlinear.phi],
                   [y for c, y in zip(cases, ys, strict=True)
                    if c.nonlinear and c.nonlinear.phi],
                   marker="D", s=22, color="white", edgecolor="#101828", zorder=3)
        handles.append(Line2D([], [], marker="D", ls="", color="white",
                              markeredgecolor="#101828", label="nonlinear"))
    ax.axvline(PHI_THRESHOLD, color=_COLOURS["high"], lw=1.2, ls="--")
    ax.set_yticks(ys, names, fontsize=9)
    ax.set_xlim(0, xmax)
    ax.set_ylim(-0.6, len(cases) - 0.4)
    ax.set_xlabel("load-to-strength ratio φ = peak activity load / load to failure", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
                  ncol=len(handles), frameon=False, borderaxespad=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# HTML.
# --------------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1d2939; --muted:#667085; --line:#d0d5dd; --accent:#1f4e79; --soft:#f2f4f7; }
* { box-sizing: border-box; }
html { background: #e4e7ec; }
body { font-family: "Segoe UI", "Helvetica Neue", Arial, "DejaVu Sans", sans-serif;
  color: var(--ink); font-size: 14px; line-height: 1.45; margin: 0 auto; max-width: 980px;
  background: #fff; padding: 28px 40px 36px; }
h1 { font-size: 26px; margin: 0; color: var(--accent); letter-spacing: .2px; }
h2 { font-size: 17px; color: var(--accent); border-bottom: 2px solid var(--accent);
  padding-bottom: 3px; margin: 28px 0 10px; break-after: avoid; }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--ink); break-after: avoid; }
p { margin: 6px 0; }
.masthead { display: flex; justify-content: space-between; align-items: flex-end;
  border-bottom: 4px solid var(--accent); padding-bottom: 10px; }
.kicker { font-size: 11px; text-transform: uppercase; letter-spacing: 1.2px;
  color: var(--muted); margin-bottom: 2px; }
.ident { display: grid; grid-template-columns: auto auto; gap: 1px 12px; margin: 0;
  font-size: 13px; }
.ident dt { color: var(--muted); text-align: right; }
.ident dd { margin: 0; font-weight: 600; }
.banner.validity { background: #fef3f2; border-color: #b42318; color: #b42318; }
.banner { margin: 12px 0 0; padding: 8px 12px; background: #fffaeb; border: 1px solid #fec84b;
  border-left: 5px solid #dc6803; font-size: 13px; }
.summary { margin-top: 16px; border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden; break-inside: avoid; }
.summary-head { background: var(--accent); color: #fff; padding: 7px 14px; font-weight: 600;
  font-size: 14px; letter-spacing: .3px; }
.summary-grid { display: grid; grid-template-columns: 1.5fr 1fr; }
.headline { padding: 12px 16px; }
.label { font-size: 11px; text-transform: uppercase; letter-spacing: .8px; color: var(--muted); }
.big { font-size: 24px; font-weight: 700; line-height: 1.2; margin-bottom: 6px; }
.big .sub { font-size: 16px; font-weight: 600; color: var(--muted); margin-left: 6px; }
.sentence { font-size: 16px; font-weight: 600; margin: 10px 0 12px; }
.phi-card { color: #fff; padding: 12px 16px; }
.phi-card .label { color: rgba(255,255,255,.85); }
.phi-value { font-size: 40px; font-weight: 800; line-height: 1.1; }
.phi-text { font-size: 12.5px; margin-top: 4px; }
.phi-second { margin-top: 8px; padding-top: 6px; border-top: 1px solid rgba(255,255,255,.4);
  font-size: 12.5px; }
.scores { width: 100%; border-collapse: collapse; font-size: 13px; }
.scores td { padding: 5px 16px; border-top: 1px solid var(--line); }
.scores td:first-child { color: var(--muted); width: 34%; }
table.data { width: 100%; border-collapse: collapse; font-size: 13px; margin: 6px 0; }
table.data th { background: var(--soft); text-align: left; font-weight: 600; padding: 6px 8px;
  border-bottom: 2px solid var(--line); font-size: 12px; }
table.data td { padding: 5px 8px; border-bottom: 1px solid #eaecf0; vertical-align: top; }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
table.data tr { break-inside: avoid; }
table.kv td:first-child { width: 32%; color: var(--muted); }
table.kv td { word-break: break-word; }
table.kv2 td:nth-child(odd) { width: 25%; color: var(--muted); }
table.kv2 td:nth-child(even) { width: 25%; }
.mono { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: 12px;
  word-break: break-all; }
.chip { display: inline-block; min-width: 44px; text-align: center; color: #fff;
  font-weight: 700; border-radius: 4px; padding: 1px 7px; }
.nc { color: var(--muted); font-style: italic; }
.keep { text-transform: none; }
figure { margin: 8px 0; break-inside: avoid; }
figure img { width: 100%; border-radius: 4px; display: block; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
dl.terms dt { font-weight: 600; margin-top: 8px; }
dl.terms dd { margin: 2px 0 0 0; }
ul.limits li { margin: 4px 0; }
.warn { background: #fef3f2; border-left: 4px solid #d92d20; padding: 6px 10px; margin: 4px 0;
  font-size: 13px; }
footer { margin-top: 26px; border-top: 1px solid var(--line); padding-top: 8px; font-size: 11px;
  color: var(--muted); }
@page { size: A4; margin: 12mm; }
@media print {
  html { background: #fff; }
  body { max-width: none; padding: 0; font-size: 11.5px; }
  .summary, figure, table.data tr { break-inside: avoid; }
  h2.newpage { break-before: page; }
  figure img { width: auto; max-width: 100%; max-height: 105mm; margin: 0 auto; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _chip(phi: float | None) -> str:
    if phi is None:
        return f'<span class="nc">{NOT_COMPUTED}</span>'
    return f'<span class="chip" style="background:{_COLOURS[phi_band(phi)]}">{phi:.2f}</span>'


def _nc(text: str) -> str:
    return f'<span class="nc">{_e(text)}</span>' if text == NOT_COMPUTED else _e(text)


#: Provenance sections of short values, laid out two pairs per row.
_PAIRED_SECTIONS = ("Configuration", "Software", "Landmarks")


def _paired(rows: Sequence[tuple[str, str]]) -> list[list[str]]:
    """(key, value) rows as rows of two pairs, filled column by column."""
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:]
    return [[*a, *(right[i] if i < len(right) else ("", ""))] for i, a in enumerate(left)]


def _paired_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><td>{_e(a)}</td><td>{_e(b)}</td><td>{_e(c)}</td><td>{_e(d)}</td></tr>"
        for a, b, c, d in _paired(rows))
    return f'<table class="data kv2">{body}</table>'


def _kv_table(rows: Iterable[tuple[str, str]], mono: Callable[[str], bool] | None = None) -> str:
    body = []
    for key, value in rows:
        cls = ' class="mono"' if mono is not None and mono(key) else ""
        body.append(f"<tr><td>{_e(key)}</td><td{cls}>{_nc(value)}</td></tr>")
    return f'<table class="data kv">{"".join(body)}</table>'


def _is_hash_row(key: str) -> bool:
    return key.endswith("input") or key == "result.json"


def _summary_scores(data: ReportData) -> list[tuple[str, str]]:
    """(label, plain text) rows of the summary box below the headline."""
    rows: list[tuple[str, str]] = []
    nonlinear = data.governing.nonlinear
    if nonlinear is not None:
        rows.append(("Nonlinear load to failure",
                     f"{_fmt_n(nonlinear.failure_load_N)} ({_fmt_bw(nonlinear.failure_load_BW)})"
                     + (f", φ {nonlinear.phi:.2f}" if nonlinear.phi is not None else "")))
    elif data.nonlinear_cases:
        case = min(data.nonlinear_cases, key=lambda c: c.nonlinear.failure_load_N  # type: ignore[union-attr]
                   )
        nl = case.nonlinear
        assert nl is not None
        rows.append(("Nonlinear load to failure",
                     f"{_fmt_n(nl.failure_load_N)} ({case.name})"))
    else:
        rows.append(("Nonlinear load to failure", NOT_COMPUTED))
    sweep = data.sweep_minimum
    if sweep is not None:
        case, sv = sweep
        rows.append(("Direction-sweep minimum",
                     f"{_fmt_n(sv.min_failure_load_N)} ({_fmt_bw(sv.min_failure_load_BW)}), "
                     f"{case.name}" + (f", φ {sv.phi:.2f}" if sv.phi is not None else "")))
    else:
        rows.append(("Direction-sweep minimum", NOT_COMPUTED))
    mirels = data.mirels
    rows.append(("Mirels score", NOT_COMPUTED if mirels is None else
                 f"{mirels.total_text} ({mirels.recommendation})"
                 + ("" if mirels.total is not None else "; pain not given")))
    rows.append(("Axial cortical involvement", _aci_text(data.aci_mm)))
    rows.append(("CTRA rigidity loss", NOT_COMPUTED if data.ctra is None else
                 f"{100 * data.ctra.loss:.0f} %"
                 + (f", {data.ctra.measure}" if data.ctra.measure else "")
                 + ("; high risk" if data.ctra.is_high else "")))
    rows.append(("Fracture probability", _probability_text(data.probability)))
    return rows


def _aci_text(aci_mm: float | None) -> str:
    if aci_mm is None:
        return NOT_COMPUTED
    aci = THRESHOLDS["aci"]
    side = "at or above" if aci_mm >= aci.value else "below"
    return f"{aci_mm:.0f} mm ({side} the {aci.value:g} {aci.unit} threshold)"


def _ctra_text(ctra: CtraView | None) -> str:
    if ctra is None:
        return NOT_COMPUTED
    text = f"{100 * ctra.loss:.0f} % loss of rigidity" + (f", {ctra.measure}"
                                                          if ctra.measure else "")
    verdict = "above" if ctra.is_high else "not above"
    text += f"; {verdict} the {100 * ctra.threshold:.0f} % threshold"
    if ctra.reference:
        text += f"; compared with: {ctra.reference}"
    return text


def _mirels_rows(m: MirelsView) -> list[list[str]]:
    return [[i.name, i.category, "-" if i.points is None else str(i.points), i.derivation]
            for i in m.items]


def _mirels_total_text(m: MirelsView) -> str:
    rule = f"≥ {MIRELS_FIX_MIN} fix, {MIRELS_JUDGEMENT} judgement, lower irradiate"
    if m.total is not None:
        return f"Total {m.total_text}: Mirels' recommendation {m.recommendation} ({rule})."
    missing = " and ".join(i.name for i in m.items if i.points is None) or "missing"
    return (f"Total {m.total_text} depending on the {missing} item, not given: Mirels' "
            f"recommendation {m.recommendation} ({rule}).")


def _probability_text(prob: ProbabilityView | None) -> str:
    if prob is None:
        return NOT_COMPUTED
    text = f"{100 * prob.probability:.0f} %"
    if prob.lower is not None and prob.upper is not None:
        level = f"{100 * prob.level:.0f} % CI" if prob.level else "interval"
        text += f" ({level} {100 * prob.lower:.0f}-{100 * prob.upper:.0f} %)"
    else:
        text += " (no interval given)"
    return text


def _model_line(prob: ProbabilityView) -> str:
    if not prob.model:
        return "Model: not recorded (no model description was given with the probability)."
    fields = dict(prob.model)
    kind = fields.get("model kind") or fields.get("kind") or fields.get("name") \
        or fields.get("model") or "model"
    text = f"Model: {kind}"
    if fields.get("feature names"):
        text += f" on {fields['feature names']}"
    if fields.get("trained on"):
        text += f", trained on {fields['trained on']}"
    return text + " (details under Provenance)."


def _side_text(data: ReportData) -> str:
    return f"{data.side} femur" if data.side else "not recorded"


def _see_text(data: ReportData) -> str:
    """``± 814 N`` (the method's standard error), or an empty string."""
    return f"± {data.failure_see_N:,.0f} N" if data.failure_see_N else ""


def _headline(data: ReportData) -> tuple[str, str, str]:
    g = data.governing
    return (g.name, f"{_fmt_n(g.failure_N)}", f"{g.mode} failure in the {g.region}")


def _second_phi(data: ReportData) -> CaseView | None:
    worst = data.worst_phi_case
    if worst is None or worst is data.governing or worst.name == data.governing.name:
        return None
    return worst


def render_html(data: ReportData) -> str:
    """The self-contained HTML report.

    Args:
        data: Report content.

    Returns:
        The HTML text (no external resource: pictures are ``data:`` URIs).
    """
    g = data.governing
    name, load, where = _headline(data)
    band = phi_band(g.phi) if g.phi is not None else "none"
    parts: list[str] = []
    parts.append(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'img-src data:; style-src \'unsafe-inline\'">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Femoral strength report - {_e(data.case_id)}</title>"
        f"<style>{_CSS}</style></head><body>")
    mass = f"{data.body_mass_kg:g} kg" if data.body_mass_kg else NOT_COMPUTED
    parts.append(
        '<header class="masthead"><div><div class="kicker">osteofe - CT-based finite-element '
        'analysis</div><h1>Femoral strength report</h1></div><dl class="ident">'
        f"<dt>Case</dt><dd>{_e(data.case_id)}</dd>"
        f"<dt>Side</dt><dd>{_e(_side_text(data))}</dd>"
        f"<dt>Body mass</dt><dd>{_e(mass)}</dd>"
        f"<dt>Report</dt><dd>{_e(data.generated_utc)}</dd></dl></header>")
    parts.append(
        '<p class="banner"><strong>Research software - not validated for clinical '
        "decisions.</strong> The numbers below are model estimates; read them with the "
        "explanations and limitations in this report.</p>")
    if data.validity_banner:
        parts.append('<p class="banner validity"><strong>'
                     f"{_e(data.validity_banner)}</strong></p>")
    parts.extend(f'<p class="banner"><strong>Caution:</strong> {_e(caution)}</p>'
                 for caution in data.cautions)
    parts.append(f'<p class="sentence">{_e(data.sentence)}</p>')
    # Summary box.
    phi_html = (f'<div class="phi-value">{g.phi:.2f}</div>'
                f'<div class="phi-text">{_e(_BAND_TEXT[band])}</div>'
                if g.phi is not None else
                '<div class="phi-value">-</div><div class="phi-text">applied load not '
                "recorded</div>")
    second = _second_phi(data)
    if second is not None and second.phi is not None:
        phi_html += (f'<div class="phi-second">Highest ratio: <strong>{second.phi:.2f}</strong>'
                     f" ({_e(second.name)}, {_e(phi_band(second.phi))})</div>")
    card_colour = _COLOURS[band if second is None or second.phi is None
                           else phi_band(max(second.phi, g.phi or 0.0))]
    score_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_nc(v)}</td></tr>"
                         for k, v in _summary_scores(data))
    parts.append(
        '<section class="summary"><div class="summary-head">Summary</div>'
        '<div class="summary-grid"><div class="headline">'
        f'<div class="label">Weakest load case</div><div class="big">{_e(name)}</div>'
        '<div class="label">Load to failure (linear, onset of failure)</div>'
        f'<div class="big">{_e(load)}<span class="sub">{_e(_see_text(data))}</span>'
        f'<span class="sub">{_e(_fmt_bw(g.failure_BW))}</span></div>'
        f"<div>{_e(where[0].upper() + where[1:])}.</div></div>"
        f'<div class="phi-card" style="background:{card_colour}">'
        f'<div class="label">Load-to-strength ratio <span class="keep">φ</span> ({_e(name)})'
        f"</div>{phi_html}</div></div>"
        f'<table class="scores">{score_rows}</table></section>')
    # CT slices through the failure point.
    if data.slices_png:
        b64 = base64.b64encode(data.slices_png).decode("ascii")
        parts.append(f'<figure><img alt="CT slices through the failure point" '
                     f'src="data:image/png;base64,{b64}" style="max-width:760px">'
                     f"<figcaption>{_e(data.slices_caption)}</figcaption></figure>")
    else:
        parts.append('<p class="nc">CT slices not shown: the analysed CT was not found '
                     "unchanged where result.json records it.</p>")
    # Picture.
    parts.append("<h2>1. Femur, risk factor and critical region</h2>")
    if data.picture_png:
        b64 = base64.b64encode(data.picture_png).decode("ascii")
        parts.append(
            f'<figure><img alt="Femur coloured by risk factor" src="data:image/png;base64,{b64}">'
            "<figcaption>Anterior and medial views of the femur, coloured by the risk factor "
            "(peak surface strain divided by its limit) under the weakest load case; magenta: "
            "where failure starts; white arrow: the hip force; grey dots: the fixed distal cut."
            "</figcaption></figure>")
    else:
        parts.append('<p class="nc">No picture in the result folder (the run was made with '
                     "--no-picture).</p>")
    if data.critical_point_mm is not None:
        x, y, z = data.critical_point_mm
        parts.append(f"<p>Failure location (scanner coordinates): ({x:.1f}, {y:.1f}, {z:.1f}) "
                     f"mm, {_e(g.region)}.</p>")
    # Load cases.
    parts.append("<h2>2. Load to failure per load case</h2>")
    rows = []
    for c in data.cases:
        rows.append(
            f"<tr><td>{_e(c.name)}</td><td class=\"num\">{_nc(_fmt_n(c.applied_N))}</td>"
            f"<td class=\"num\">{_nc(_fmt_bw(c.applied_BW))}</td>"
            f"<td class=\"num\"><strong>{_e(_fmt_n(c.failure_N))}</strong></td>"
            f"<td class=\"num\">{_nc(_fmt_bw(c.failure_BW))}</td>"
            f"<td class=\"num\">{_chip(c.phi)}</td><td>{_e(c.mode)}</td><td>{_e(c.region)}</td>"
            "</tr>")
    parts.append(
        '<table class="data"><thead><tr><th>load case</th><th class="num">peak activity '
        'load</th><th class="num">(× BW)</th><th class="num">load to failure</th>'
        '<th class="num">(× BW)</th><th class="num">φ</th><th>mode</th><th>region</th></tr>'
        f'</thead><tbody>{"".join(rows)}</tbody></table>')
    chart = base64.b64encode(phi_chart_png(data)).decode("ascii")
    parts.append(f'<figure><img alt="Load-to-strength ratio per load case" '
                 f'src="data:image/png;base64,{chart}" style="max-width:720px">'
                 "<figcaption>Load-to-strength ratio per load case; dashed line: φ = "
                 f"{PHI_THRESHOLD:g}.</figcaption></figure>")
    parts.append("<h3>Peak surface strains at the activity's load</h3>")
    strain_rows = "".join(
        f"<tr><td>{_e(c.name)}</td><td class=\"num\">{_nc(_fmt_strain(c.peak_tension))}</td>"
        f"<td class=\"num\">{_nc(_fmt_strain(c.peak_compression))}</td></tr>"
        for c in data.cases)
    parts.append('<table class="data"><thead><tr><th>load case</th><th class="num">peak '
                 'tension strain</th><th class="num">peak compression strain</th></tr></thead>'
                 f"<tbody>{strain_rows}</tbody></table>")
    parts.append("<h3>Nonlinear load to failure and direction sweep</h3>")
    extra_rows = []
    for c in data.cases:
        nl, sw = c.nonlinear, c.sweep
        nl_text = (f"{_fmt_n(nl.failure_load_N)} ({_fmt_bw(nl.failure_load_BW)})"
                   + ("" if nl.peak_reached in (None, True) else ", peak not reached")
                   if nl else NOT_COMPUTED)
        sw_text = (f"{_fmt_n(sw.min_failure_load_N)} ({_fmt_bw(sw.min_failure_load_BW)})"
                   + (f" over {sw.num_directions} directions" if sw.num_directions else "")
                   + (f" within {sw.half_angle_deg:g} deg" if sw.half_angle_deg else "")
                   if sw else NOT_COMPUTED)
        extra_rows.append(
            f"<tr><td>{_e(c.name)}</td><td>{_nc(nl_text)}</td>"
            f"<td class=\"num\">{_chip(nl.phi) if nl else _nc(NOT_COMPUTED)}</td>"
            f"<td>{_nc(sw_text)}</td>"
            f"<td class=\"num\">{_chip(sw.phi) if sw else _nc(NOT_COMPUTED)}</td></tr>")
    parts.append('<table class="data"><thead><tr><th>load case</th><th>nonlinear load to '
                 'failure</th><th class="num">φ</th><th>direction-sweep minimum</th>'
                 '<th class="num">φ</th></tr></thead>'
                 f'<tbody>{"".join(extra_rows)}</tbody></table>')
    # Clinical scores.
    parts.append("<h2>3. Clinical risk scores</h2>")
    parts.append("<h3>Mirels score</h3>")
    if data.mirels is None:
        parts.append(f'<p class="nc">{NOT_COMPUTED}</p>')
    else:
        m = data.mirels
        if m.items:
            item_rows = "".join(
                f"<tr><td>{_e(a)}</td><td>"
                + (f'<span class="nc">{_e(b)}</span>' if b == "not given" else _e(b))
                + f"</td><td class=\"num\">{_e(c)}</td><td>{_e(d)}</td></tr>"
                for a, b, c, d in _mirels_rows(m))
            parts.append('<table class="data"><thead><tr><th>item</th><th>category</th>'
                         '<th class="num">points</th><th>how it was obtained</th></tr></thead>'
                         f"<tbody>{item_rows}</tbody></table>")
        parts.append(f"<p><strong>{_e(_mirels_total_text(m))}</strong></p>")
    parts.append("<h3>Axial cortical involvement, CTRA and fracture probability</h3>")
    parts.append(_kv_table([("Axial cortical involvement", _aci_text(data.aci_mm)),
                            ("CTRA rigidity loss", _ctra_text(data.ctra)),
                            ("Calibrated fracture probability",
                             _probability_text(data.probability))]))
    if data.probability is not None:
        parts.append(f"<p>{_e(_model_line(data.probability))}</p>")
        parts.extend(f"<p>{_e(line)}</p>" for line in data.probability.details)
    # Limitations and meaning.
    parts.append('<h2>4. Limitations</h2><ul class="limits">')
    parts.extend(f"<li>{_e(text)}</li>" for text in limitations(data))
    parts.append('</ul><h2>5. What the numbers mean</h2><dl class="terms">')
    for term, text in explanations(data):
        parts.append(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>")
    parts.append("</dl>")
    # Provenance.
    parts.append('<h2 class="newpage">Appendix: provenance</h2>')
    parts.append("<h3>Warnings of the run</h3>")
    if data.warnings:
        parts.extend(f'<div class="warn">{_e(w)}</div>' for w in data.warnings)
    else:
        parts.append("<p>None.</p>")
    parts.append("<h3>CT density calibration</h3>")
    parts.append(_kv_table(data.calibration))
    for title, rows_ in data.provenance:
        parts.append(f"<h3>{_e(title)}</h3>")
        if title.startswith(_PAIRED_SECTIONS):
            parts.append(_paired_table(rows_))
        else:
            parts.append(_kv_table(rows_, mono=_is_hash_row if title.startswith("Inputs")
                                   else None))
    parts.append(
        f"<footer>Report written by osteofe {_e(data.report_version)} on "
        f"{_e(data.generated_utc)} from result.json (SHA-256 {_e(data.result_sha256)}). "
        "Case identifier as given; no other patient identifier is reported.</footer>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# PDF: a small flow layout on A4 pages drawn with matplotlib.
# --------------------------------------------------------------------------------------------

_PAGE_W, _PAGE_H = 595.0, 842.0  # A4 in points
_MARGIN_X, _TOP, _BOTTOM = 46.0, 62.0, 58.0
_INK, _MUTED, _ACCENT, _SOFT, _LINE = "#1d2939", "#667085", "#1f4e79", "#f2f4f7", "#d0d5dd"

_Op = Callable[["Figure", "Axes"], None]


def _width(text: str, size: float, bold: bool = False) -> float:
    """Width of a text in points, DejaVu Sans: the sum of the glyph advances, kerning left out.

    Kerning only narrows DejaVu text slightly, so this errs on the wide side (safe for wrap).
    """
    advance = _advance_table(bold)
    return size * sum(advance(ch) for ch in text)


@lru_cache(maxsize=2)
def _advance_table(bold: bool) -> Callable[[str], float]:
    """Advance width per character, in em (cached per character)."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    # A private font object: matplotlib's cached ones change size while they draw.
    font = FT2Font(findfont(FontProperties(family="DejaVu Sans",
                                           weight="bold" if bold else "normal")))
    font.set_size(100.0, 72)

    @lru_cache(maxsize=4096)
    def advance(ch: str) -> float:
        glyph = font.load_char(ord(ch))
        return float(glyph.linearHoriAdvance) / 65536.0 / 100.0

    return advance


def _wrap(text: str, width: float, size: float, bold: bool = False) -> list[str]:
    """Greedy word wrap to a width in points; over-long words are broken."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ")
        line = ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if _width(candidate, size, bold) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while _width(word, size, bold) > width and len(word) > 1:
                cut = len(word)
                while cut > 1 and _width(word[:cut], size, bold) > width:
                    cut = max(1, int(cut * 0.9) if cut > 20 else cut - 1)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


class _PdfFlow:
    """Blocks placed top to bottom on A4 pages; drawn once the page count is known."""

    def __init__(self) -> None:
        self.pages: list[list[_Op]] = [[]]
        self.y = _TOP
        self.width = _PAGE_W - 2 * _MARGIN_X

    def _add(self, op: _Op) -> None:
        self.pages[-1].append(op)

    def new_page(self) -> None:
        if self.pages[-1]:
            self.pages.append([])
        self.y = _TOP

    def need(self, height: float) -> None:
        if self.y + height > _PAGE_H - _BOTTOM:
            self.new_page()

    def space(self, height: float) -> None:
        self.y += height

    def text(self, text: str, *, size: float = 9.0, bold: bool = False, colour: str = _INK,
             x: float = 0.0, width: float | None = None, leading: float = 1.35,
             italic: bool = False) -> None:
        avail = (width or self.width) - x
        lines = _wrap(text, avail, size, bold)
        step = size * leading
        for line in lines:
            self.need(step)
            self._add(_text_op(_MARGIN_X + x, self.y, line, fontsize=size, color=colour,
                               fontweight="bold" if bold else "normal",
                               fontstyle="italic" if italic else "normal"))
            self.y += step

    def heading(self, text: str, level: int = 2) -> None:
        size = 13.0 if level == 2 else 10.5
        self.need(size * 1.6 + 40)
        self.space(10 if level == 2 else 6)
        self._add(_text_op(_MARGIN_X, self.y, text, fontsize=size, fontweight="bold",
                           color=_ACCENT if level == 2 else _INK))
        self.y += size * 1.35
        if level == 2:
            self._add(_hline_op(self.y, _ACCENT, 1.2))
            self.y += 6
        else:
            self.y += 2

    def table(self, header: Sequence[str] | None, rows: Sequence[Sequence[str]],
              fractions: Sequence[float], *, size: float = 8.0,
              align: Sequence[str] | None = None,
              colours: Sequence[Sequence[str | None]] | None = None,
              muted_first: bool = False, muted_cols: Sequence[int] = ()) -> None:
        muted = set(muted_cols) | ({0} if muted_first else set())
        widths = [f * self.width for f in fractions]
        aligns = list(align or ["left"] * len(fractions))
        pad = 3.0
        step = size * 1.3

        def row_height(cells: Sequence[str], bold: bool) -> tuple[list[list[str]], float]:
            wrapped = [_wrap(c, w - 2 * pad, size, bold) for c, w in zip(cells, widths,
                                                                         strict=True)]
            return wrapped, max(len(w) for w in wrapped) * step + 2 * pad

        def draw_row(cells: list[list[str]], height: float, *, bold: bool, fill: str | None,
                     chips: Sequence[str | None] | None, mute: bool) -> None:
            y = self.y
            if fill:
                self._add(_rect_op(_MARGIN_X, y, self.width, height, fill))
            x = _MARGIN_X
            for j, (lines, w) in enumerate(zip(cells, widths, strict=True)):
                chip = chips[j] if chips else None
                for k, line in enumerate(lines):
                    right = aligns[j] == "right"
                    tx = x + w - pad if right else x + pad
                    colour = "white" if chip else (_MUTED if mute and j in muted else _INK)
                    box = ({"boxstyle": "round,pad=0.25", "fc": chip, "ec": "none"}
                           if chip else None)
                    self._add(_text_op(tx, y + pad + k * step, line, fontsize=size,
                                       ha="right" if right else "left", color=colour,
                                       fontweight="bold" if (bold or box) else "normal",
                                       bbox=box))
                x += w
            self._add(_hline_op(y + height, _LINE, 1.0 if bold else 0.4))
            self.y += height

        head = row_height(header, True) if header else None
        for i, cells in enumerate(rows):
            wrapped, height = row_height(cells, False)
            first_on_page = self.y == _TOP
            if self.y + height > _PAGE_H - _BOTTOM:
                self.new_page()
                first_on_page = True
            if head is not None and (i == 0 or first_on_page):
                self.need(head[1] + height)
                draw_row(head[0], head[1], bold=True, fill=_SOFT, chips=None, mute=False)
            draw_row(wrapped, height, bold=False, fill=None,
                     chips=colours[i] if colours else None, mute=True)
        self.space(6)

    def image(self, png: bytes, *, width: float | None = None, max_height: float = 300.0,
              caption: str = "") -> None:
        from matplotlib import image as mpimg

        pixels = mpimg.imread(io.BytesIO(png), format="png")
        h_px, w_px = pixels.shape[:2]
        w = min(width or self.width, self.width)
        h = w * h_px / w_px
        if h > max_height:
            h = max_height
            w = h * w_px / h_px
        self.need(h + 4)
        x0 = _MARGIN_X + (self.width - w) / 2
        y0 = self.y

        def draw(fig: Figure, _ax: Axes, x0: float = x0, y0: float = y0) -> None:
            axes = fig.add_axes((x0 / _PAGE_W, 1 - (y0 + h) / _PAGE_H, w / _PAGE_W, h / _PAGE_H))
            axes.imshow(pixels, interpolation="none", aspect="auto")
            axes.set_axis_off()

        self._add(draw)
        self.y += h + 4
        if caption:
            self.text(caption, size=7.5, colour=_MUTED)
        self.space(4)

    def box(self, height: float, draw: Callable[[Axes, float], None]) -> None:
        """A block of fixed height drawn by ``draw(ax, top_y)``."""
        self.need(height)
        y = self.y

        def op(_fig: Figure, ax: Axes) -> None:
            draw(ax, y)

        self._add(op)
        self.y += height

    def render(self, header: str, footer: str) -> list[Figure]:
        from matplotlib.figure import Figure

        figures = []
        total = len(self.pages)
        for number, ops in enumerate(self.pages, start=1):
            fig = Figure(figsize=(_PAGE_W / 72.0, _PAGE_H / 72.0))
            ax = fig.add_axes((0, 0, 1, 1))
            ax.set_xlim(0, _PAGE_W)
            ax.set_ylim(_PAGE_H, 0)
            ax.set_axis_off()
            ax.text(_MARGIN_X, 30, header, fontsize=8, color=_MUTED, va="top", parse_math=False)
            ax.plot([_MARGIN_X, _PAGE_W - _MARGIN_X], [44, 44], color=_ACCENT, lw=1.5)
            ax.plot([_MARGIN_X, _PAGE_W - _MARGIN_X], [_PAGE_H - 42] * 2, color=_LINE, lw=0.6)
            ax.text(_MARGIN_X, _PAGE_H - 36, footer, fontsize=6.5, color=_MUTED, va="top",
                    parse_math=False)
            ax.text(_PAGE_W - _MARGIN_X, _PAGE_H - 36, f"page {number} of {total}",
                    fontsize=7, color=_MUTED, va="top", ha="right", parse_math=False)
            for op in ops:
                op(fig, ax)
            figures.append(fig)
        return figures


def _text_op(x: float, y: float, text: str, **kw: Any) -> _Op:
    """Draw ``text`` with its top-left (or top-right) corner at (x, y)."""

    def op(_fig: Figure, ax: Axes) -> None:
        ax.text(x, y, text, va="top", parse_math=False, **kw)

    return op


def _hline_op(y: float, colour: str, lw: float) -> _Op:
    """A horizontal rule across the text width."""

    def op(_fig: Figure, ax: Axes) -> None:
        ax.plot([_MARGIN_X, _PAGE_W - _MARGIN_X], [y, y], color=colour, lw=lw)

    return op


def _rect_op(x: float, y: float, w: float, h: float, colour: str) -> _Op:
    """A filled rectangle."""

    def op(_fig: Figure, ax: Axes) -> None:
        ax.add_patch(_rect(x, y, w, h, colour))

    return op


def _rect(x: float, y: float, w: float, h: float, colour: str, **kw: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=colour, edgecolor=kw.pop("edge", "none"), **kw)


def _summary_box(flow: _PdfFlow, data: ReportData) -> None:
    g = data.governing
    name, load, where = _headline(data)
    band = phi_band(g.phi) if g.phi is not None else "none"
    second = _second_phi(data)
    card = _COLOURS[band if second is None or second.phi is None
                    else phi_band(max(second.phi, g.phi or 0.0))]
    scores = _summary_scores(data)
    phi_lines = _wrap(_BAND_TEXT.get(band, "applied load not recorded"), 0.36 * flow.width - 20,
                      8.0)
    score_h = 15.0 * len(scores)
    head_h = 20.0
    top_h = max(118.0, 66.0 + 11.0 * len(phi_lines) + (26 if second else 0))
    height = head_h + top_h + score_h + 6

    def draw(ax: Axes, y: float) -> None:
        x0, w = _MARGIN_X, flow.width
        ax.add_patch(_rect(x0, y, w, height, "white", edge=_LINE, lw=0.8))
        ax.add_patch(_rect(x0, y, w, head_h, _ACCENT))
        ax.text(x0 + 10, y + 5, "Summary", color="white", fontsize=10, fontweight="bold",
                va="top", parse_math=False)
        top = y + head_h
        cw = 0.36 * w
        ax.add_patch(_rect(x0 + w - cw, top, cw, top_h, card))
        ty = top + 10
        ax.text(x0 + 12, ty, "WEAKEST LOAD CASE", fontsize=7, color=_MUTED, va="top")
        ax.text(x0 + 12, ty + 10, name, fontsize=16, fontweight="bold", color=_INK, va="top",
                parse_math=False)
        ax.text(x0 + 12, ty + 36, "LOAD TO FAILURE (LINEAR, ONSET OF FAILURE)", fontsize=7,
                color=_MUTED, va="top")
        ax.text(x0 + 12, ty + 46, f"{load} {_see_text(data)}   {_fmt_bw(g.failure_BW)}",
                fontsize=15, fontweight="bold", color=_INK, va="top", parse_math=False)
        for k, line in enumerate(_wrap(where[0].upper() + where[1:] + ".", w - cw - 24, 9.0)):
            ax.text(x0 + 12, ty + 72 + 12 * k, line, fontsize=9, color=_INK, va="top",
                    parse_math=False)
        cx = x0 + w - cw + 12
        ax.text(cx, ty, f"LOAD-TO-STRENGTH RATIO φ ({name.upper()})", fontsize=7,
                color="white", va="top", parse_math=False)
        ax.text(cx, ty + 10, f"{g.phi:.2f}" if g.phi is not None else "-", fontsize=28,
                fontweight="bold", color="white", va="top", parse_math=False)
        for k, line in enumerate(phi_lines):
            ax.text(cx, ty + 48 + 11 * k, line, fontsize=8, color="white", va="top",
                    parse_math=False)
        if second is not None and second.phi is not None:
            sy = ty + 54 + 11 * len(phi_lines)
            ax.plot([cx, x0 + w - 12], [sy - 3, sy - 3], color="white", lw=0.5, alpha=0.6)
            ax.text(cx, sy, f"Highest ratio: {second.phi:.2f} ({second.name})", fontsize=8,
                    color="white", va="top", fontweight="bold", parse_math=False)
        sy = top + top_h
        for k, (label, value) in enumerate(scores):
            ry = sy + 15.0 * k
            ax.plot([x0, x0 + w], [ry, ry], color=_LINE, lw=0.5)
            ax.text(x0 + 12, ry + 4, label, fontsize=8, color=_MUTED, va="top",
                    parse_math=False)
            ax.text(x0 + 0.36 * w, ry + 4, value, fontsize=8, va="top", parse_math=False,
                    color=_MUTED if value == NOT_COMPUTED else _INK,
                    fontstyle="italic" if value == NOT_COMPUTED else "normal")

    flow.box(height + 8, draw)


def _pdf_flow(data: ReportData) -> _PdfFlow:
    flow = _PdfFlow()
    g = data.governing
    flow.text("OSTEOFE - CT-BASED FINITE-ELEMENT ANALYSIS", size=7.5, colour=_MUTED)
    flow.text("Femoral strength report", size=20, bold=True, colour=_ACCENT)
    mass = f"{data.body_mass_kg:g} kg" if data.body_mass_kg else NOT_COMPUTED
    flow.text(f"Case {data.case_id}    {_side_text(data).capitalize()}    Body mass {mass}    "
              f"Report {data.generated_utc}", size=9, bold=True)
    flow.space(6)

    def banner(ax: Axes, y: float) -> None:
        ax.add_patch(_rect(_MARGIN_X, y, flow.width, 26, "#fffaeb", edge="#fec84b", lw=0.6))
        ax.add_patch(_rect(_MARGIN_X, y, 4, 26, "#dc6803"))
        ax.text(_MARGIN_X + 10, y + 5, "Research software - not validated for clinical "
                "decisions.", fontsize=8, fontweight="bold", va="top", parse_math=False)
        ax.text(_MARGIN_X + 10, y + 15, "The numbers are model estimates; read them with the "
                "explanations and limitations in this report.", fontsize=7.5, va="top",
                parse_math=False)

    flow.box(34, banner)
    if data.validity_banner:
        flow.text(data.validity_banner, size=9, bold=True, colour="#b42318")
        flow.space(4)
    for caution in data.cautions:
        flow.text(f"Caution: {caution}", size=8.5, bold=True, colour="#b54708")
        flow.space(3)
    flow.text(data.sentence, size=10, bold=True)
    flow.space(4)
    _summary_box(flow, data)
    if data.slices_png:
        flow.image(data.slices_png, max_height=240, caption=data.slices_caption)
    else:
        flow.text("CT slices not shown: the analysed CT was not found unchanged where "
                  "result.json records it.", colour=_MUTED, italic=True)
    flow.new_page()  # page 1 is the summary; the details follow
    flow.heading("1. Femur, risk factor and critical region")
    if data.picture_png:
        flow.image(data.picture_png, max_height=290,
                   caption="Anterior and medial views coloured by the risk factor (peak "
                           "surface strain / limit) under the weakest load case; magenta: where "
                           "failure starts; white arrow: the hip force; grey: fixed distal cut.")
    else:
        flow.text("No picture in the result folder (run made with --no-picture).",
                  colour=_MUTED, italic=True)
    if data.critical_point_mm is not None:
        x, y, z = data.critical_point_mm
        flow.text(f"Failure location (scanner coordinates): ({x:.1f}, {y:.1f}, {z:.1f}) mm, "
                  f"{g.region}.", size=8)

    if data.picture_png:
        flow.new_page()
    flow.heading("2. Load to failure per load case")
    rows: list[list[str]] = []
    chips: list[list[str | None]] = []
    for c in data.cases:
        rows.append([c.name, _fmt_n(c.applied_N), _fmt_bw(c.applied_BW), _fmt_n(c.failure_N),
                     _fmt_bw(c.failure_BW), f"{c.phi:.2f}" if c.phi is not None else "-",
                     c.mode, c.region])
        chip: list[str | None] = [None] * 8
        chip[5] = _COLOURS[phi_band(c.phi)] if c.phi is not None else None
        chips.append(chip)
    flow.table(["load case", "activity load", "(× BW)", "load to failure", "(× BW)", "φ",
                "mode", "region"], rows, [0.14, 0.12, 0.1, 0.13, 0.1, 0.08, 0.13, 0.2],
               align=["left", "right", "right", "right", "right", "right", "left", "left"],
               colours=chips)
    flow.image(phi_chart_png(data, width_in=6.8), max_height=150,
               caption=f"Load-to-strength ratio per load case; dashed line φ = "
                       f"{PHI_THRESHOLD:g}.")
    flow.heading("Peak surface strains at the activity's load", level=3)
    flow.table(["load case", "peak tension strain", "peak compression strain"],
               [[c.name, _fmt_strain(c.peak_tension), _fmt_strain(c.peak_compression)]
                for c in data.cases], [0.4, 0.3, 0.3], align=["left", "right", "right"])
    flow.heading("Nonlinear load to failure and direction sweep", level=3)
    rows = []
    for c in data.cases:
        nl, sw = c.nonlinear, c.sweep
        rows.append([
            c.name,
            f"{_fmt_n(nl.failure_load_N)} ({_fmt_bw(nl.failure_load_BW)})" if nl
            else NOT_COMPUTED,
            f"{nl.phi:.2f}" if nl and nl.phi is not None else "-",
            (f"{_fmt_n(sw.min_failure_load_N)} ({_fmt_bw(sw.min_failure_load_BW)})"
             + (f", {sw.num_directions} directions" if sw.num_directions else "")
             + (f" within {sw.half_angle_deg:g} deg" if sw.half_angle_deg else ""))
            if sw else NOT_COMPUTED,
            f"{sw.phi:.2f}" if sw and sw.phi is not None else "-"])
    flow.table(["load case", "nonlinear load to failure", "φ", "direction-sweep minimum", "φ"],
               rows, [0.16, 0.27, 0.08, 0.41, 0.08],
               align=["left", "left", "right", "left", "right"])

    flow.heading("3. Clinical risk scores")
    flow.heading("Mirels score", level=3)
    if data.mirels is None:
        flow.text(NOT_COMPUTED, colour=_MUTED, italic=True)
    else:
        m = data.mirels
        if m.items:
            flow.table(["item", "category", "points", "how it was obtained"],
                       _mirels_rows(m), [0.14, 0.22, 0.1, 0.54],
                       align=["left", "left", "right", "left"])
        flow.text(_mirels_total_text(m), size=9, bold=True)
    flow.heading("Axial cortical involvement, CTRA and fracture probability", level=3)
    flow.table(None, [["Axial cortical involvement", _aci_text(data.aci_mm)],
                      ["CTRA rigidity loss", _ctra_text(data.ctra)],
                      ["Calibrated fracture probability", _probability_text(data.probability)]],
               [0.36, 0.64], muted_first=True, size=8.5)
    if data.probability is not None:
        flow.text(_model_line(data.probability), size=8)
        for line in data.probability.details:
            flow.text(line, size=8)

    flow.heading("4. Limitations")
    for text in limitations(data):
        flow.need(24)
        flow.text("•", size=8.5, x=0)
        flow.y -= 8.5 * 1.35
        flow.text(text, size=8.5, x=10)
        flow.space(2)
    flow.heading("5. What the numbers mean")
    for term, text in explanations(data):
        flow.need(30)
        flow.text(term, size=9, bold=True)
        flow.text(text, size=8.5)
        flow.space(3)

    flow.heading("Appendix: provenance")
    flow.heading("Warnings of the run", level=3)
    if data.warnings:
        for warning in data.warnings:
            flow.text(f"! {warning}", size=8.5, colour="#b42318")
    else:
        flow.text("None.", size=8.5)
    flow.heading("CT density calibration", level=3)
    flow.table(None, [list(r) for r in data.calibration], [0.3, 0.7], muted_first=True)
    for title, prov_rows in data.provenance:
        flow.heading(title, level=3)
        if title.startswith(_PAIRED_SECTIONS):
            flow.table(None, _paired(prov_rows), [0.25, 0.25, 0.25, 0.25], muted_cols=(0, 2),
                       size=7.5)
        else:
            flow.table(None, [list(r) for r in prov_rows], [0.3, 0.7], muted_first=True,
                       size=7.5)
    flow.text(f"Report written by osteofe {data.report_version} on {data.generated_utc} from "
              f"result.json (SHA-256 {data.result_sha256}). Case identifier as given; no other "
              "patient identifier is reported.", size=7, colour=_MUTED)
    return flow


def render_pdf(data: ReportData, path: str | Path, *,
               page_png_dir: str | Path | None = None, page_dpi: int = 110) -> list[Path]:
    """Write the PDF report (and optionally its pages as PNG pictures).

    Args:
        data: Report content.
        path: PDF path (written as given; :func:`write_report` stages it).
        page_png_dir: Folder for ``report_page_NN.png`` pictures of the pages, or None.
        page_dpi: Resolution of the page pictures.

    Returns:
        Paths of the page pictures written (empty without ``page_png_dir``).
    """
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    flow = _pdf_flow(data)
    header = f"osteofe femoral strength report  |  case {data.case_id}"
    footer = ("Research software - not validated for clinical decisions.  "
              f"osteofe {data.report_version}, {data.generated_utc}")
    pngs: list[Path] = []
    with matplotlib.rc_context({"pdf.fonttype": 3, "font.family": "DejaVu Sans"}):
        figures = flow.render(header, footer)
        metadata_ = {"Title": f"Femoral strength report - {data.case_id}",
                     "Subject": "osteofe CT-based finite-element femoral strength",
                     "Creator": f"osteofe {data.report_version}", "Author": "osteofe",
                     "Keywords": "research software; not validated for clinical decisions"}
        with PdfPages(path, metadata=metadata_) as pdf:
            for fig in figures:
                pdf.savefig(fig)
        if page_png_dir is not None:
            folder = Path(page_png_dir)
            for number, fig in enumerate(figures, start=1):
                target = folder / f"report_page_{number:02d}.png"
                fig.savefig(target, format="png", dpi=page_dpi)
                pngs.append(target)
    return pngs


# --------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------


def read_result(result_dir: str | Path) -> tuple[dict[str, Any], str]:
    """Read ``result.json`` of a result folder.

    Args:
        result_dir: Folder written by ``osteofe strength``.

    Returns:
        The parsed result and the SHA-256 of its bytes.

    Raises:
        ReportError: If the folder or its ``result.json`` is missing or not valid JSON.
    """
    folder = Path(result_dir)
    path = folder / "result.json"
    if not folder.is_dir():
        raise ReportError(f"result folder not found: {folder}",
                          hint="give the --out folder of `osteofe strength`")
    if not path.is_file():
        raise ReportError(f"no result.json in {folder}",
                          hint="result.json is written last, only by a completed `osteofe "
                               "strength` run: rerun it or check the folder")
    raw = path.read_bytes()
    try:
        result = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON ({exc})",
                          hint="rerun `osteofe strength` to rewrite it") from exc
    if not isinstance(result, dict):
        raise ReportError(f"{path} does not hold a result object",
                          hint="give the folder written by `osteofe strength`")
    return result, hashlib.sha256(raw).hexdigest()


def _slices(result: StrengthResult) -> tuple[bytes, str] | None:
    """CT slices through the failure point, when the analysed CT is still there unchanged."""
    from osteofe.report_page1 import analysed_ct, ct_slices_png

    ct = analysed_ct(result.provenance.files.get("ct"))
    if ct is None:
        return None
    try:
        return ct_slices_png(ct, result.governing.critical_point_mm)
    except OsteofeError:
        return None


def write_report(
    result_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    risk: Mapping[str, Any] | None = None,
    page_png: bool = False,
    generated: datetime | None = None,
) -> dict[str, Path]:
    """Write ``report.html`` and ``report.pdf`` for one result folder.

    Both files are written to a staging folder and moved into ``out_dir`` only when both
    are complete (``report.html`` last).

    Args:
        result_dir: Folder written by ``osteofe strength`` (``result.json``, optionally
            ``femur_risk.png``).
        out_dir: Where to write (default: ``result_dir``).
        risk: Optional clinical scores (see :func:`collect_report_data`): ``mirels``,
            ``aci_mm``, ``ctra``, ``fracture_probability``; absent ones are shown as
            "not computed".
        page_png: Also write the PDF's pages as ``report_page_NN.png``.
        generated: Report time (default now, UTC); fix it for reproducible files.

    Returns:
        ``{"html": ..., "pdf": ...}`` and, with ``page_png``, ``"page_01"``, ... paths.

    Raises:
        ReportError: If ``result.json`` is missing or malformed.
    """
    folder = Path(result_dir)
    result, sha = read_result(folder)
    typed = _typed(result)
    picture_path = folder / "femur_risk.png"
    picture = picture_path.read_bytes() if picture_path.is_file() else None
    data = collect_report_data(typed, risk, picture_png=picture, result_sha256=sha,
                               generated=generated, ct_slices=_slices(typed))
    out = Path(out_dir) if out_dir is not None else folder
    with staged_output(out, final_last=REPORT_HTML) as stage:
        pages = render_pdf(data, stage / REPORT_PDF, page_png_dir=stage if page_png else None)
        (stage / REPORT_HTML).write_text(render_html(data), encoding="utf-8")
        names = [p.name for p in pages]
    paths = {"html": out / REPORT_HTML, "pdf": out / REPORT_PDF}
    paths.update({f"page_{i:02d}": out / name for i, name in enumerate(names, start=1)})
    return paths


def make_report(
    result_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    dicom_study: str | Path | None = None,
    include_patient_identifiers: bool = False,
    retain_uids: bool = False,
    risk: Mapping[str, Any] | None = None,
    check_study: bool = True,
) -> dict[str, Path]:
    """``osteofe report``: the HTML and PDF report, and optionally the PDF as DICOM.

    Args:
        result_dir: Folder written by ``osteofe strength``.
        out_dir: Where to write (default: ``result_dir``).
        dicom_study: The CT's DICOM folder: also write ``report.dcm``, an Encapsulated PDF
            (de-identified with new UIDs by default; in that study with ``retain_uids`` or
            ``include_patient_identifiers``; see :func:`osteofe.dicom_export.export_dicom`).
        include_patient_identifiers: Copy the patient's name and ID from ``dicom_study`` into
            ``report.dcm`` (off by default: the case identifier is used instead).
        retain_uids: Keep the study's UIDs (and references to the CT) in a de-identified
            ``report.dcm`` instead of new ones (see :func:`osteofe.dicom_export.export_dicom`).
        risk: Optional clinical scores (see :func:`collect_report_data`).
        check_study: Refuse a ``dicom_study`` that is not the analysed CT (geometry and HU
            distribution against result.json's ``ct_fingerprint``,
            :func:`osteofe.report_page1.check_same_scan`) before anything is written. Off
            only to file a report elsewhere on purpose.

    Returns:
        ``{"html": ..., "pdf": ...}`` plus ``"dicom"`` when ``dicom_study`` is given.

    Raises:
        ReportError: If ``result.json`` is missing or malformed.
        InputError: If ``dicom_study`` holds no readable DICOM study, or is not the CT that
            was analysed (nothing is written).
    """
    if dicom_study is not None and check_study:
        from meshing.imaging import read_ct
        from osteofe.report_page1 import check_same_scan

        typed = _typed(read_result(result_dir)[0])
        check_same_scan(typed.ct_fingerprint, read_ct(dicom_study),
                        f"--dicom-study {dicom_study}")
    paths = write_report(result_dir, out_dir, risk=risk)
    if dicom_study is not None:
        from osteofe.dicom_export import export_dicom

        case_id = _typed(read_result(result_dir)[0]).case_id
        paths["dicom"] = export_dicom(
            paths["pdf"], dicom_study, paths["pdf"].with_name("report.dcm"),
            case_id=case_id or "case",
            include_patient_identifiers=include_patient_identifiers, retain_uids=retain_uids)
    return paths
