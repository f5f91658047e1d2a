"""Plain-text lines that explain a patient's fracture probability (for reports).

Works on the JSON of :func:`risk.calibration.clinical_prediction` (``result.json``
``fracture_probability``), so a report needs no model object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["probability_details"]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def probability_details(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """Horizon risk, per-feature contributions and the training record, one line each.

    Args:
        doc: The ``fracture_probability`` entry of a result.

    Returns:
        Lines (empty when the entry holds none of these).
    """
    lines: list[str] = []
    horizon = doc.get("horizon_risk")
    if isinstance(horizon, Mapping):
        pairs = [f"{100 * r:.0f} % within {h:g} months"
                 for h, r in zip(horizon.get("horizons_months", ()),
                                 horizon.get("fracture_before_death", ()), strict=False)
                 if _num(r) is not None]
        if pairs:
            lines.append("Fracture risk within expected survival (fracture before death): "
                         + ", ".join(pairs) + ".")
    contributions = doc.get("contributions")
    if isinstance(contributions, Mapping) and contributions.get("terms"):
        base = _num(contributions.get("base_probability"))
        terms = sorted(contributions["terms"], key=lambda t: -abs(_num(t.get("log_odds")) or 0))
        parts = []
        for t in terms:
            lo, dp = _num(t.get("log_odds")), _num(t.get("probability_change"))
            value, mean = _num(t.get("value")), _num(t.get("training_mean"))
            if lo is None or value is None or mean is None:
                continue
            parts.append(f"{t.get('feature')} {value:.3g} (training mean {mean:.3g}): "
                         f"{lo:+.2f} log-odds" + ("" if dp is None
                                                  else f", {100 * dp:+.0f} points alone"))
        if parts:
            head = ("What moves the probability (exact additive log-odds contributions "
                    "relative to the training mean"
                    + ("" if base is None else f", where the probability is {100 * base:.0f} %")
                    + "): ")
            lines.append(head + "; ".join(parts) + ".")
    training = doc.get("training")
    if isinstance(training, Mapping) and _num(training.get("n")) is not None:
        lines.append(f"Model trained on {int(training['n'])} femurs of "
                     f"{int(training.get('n_groups') or 0)} patients with "
                     f"{int(training.get('events') or 0)} fractures "
                     f"({training.get('origin', 'origin not recorded')} cohort).")
    return tuple(lines)
