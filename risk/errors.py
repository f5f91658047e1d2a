"""Exceptions of the risk stage (Mirels score, metrics, calibrated models, cohort tables).

Each carries a one-line message naming the problem and a ``hint`` naming the fix, like every
:class:`~meshing.errors.OsteofeError`. All of them are also :class:`ValueError`, so that code
written against the scikit-learn estimator contract (which expects ``ValueError`` for bad input)
catches them too.
"""

from __future__ import annotations

from meshing.errors import InputError, OsteofeError

__all__ = [
    "CohortError",
    "ConvergenceError",
    "FeatureMismatchError",
    "MetricsError",
    "MirelsError",
    "ModelError",
    "NotFittedError",
    "RiskError",
]


class RiskError(OsteofeError, ValueError):
    """Base class of the errors raised by :mod:`risk`."""


class MirelsError(RiskError):
    """A Mirels item (site, pain, lesion, size) is unknown, out of range or ambiguous."""


class MetricsError(RiskError):
    """Inputs of a performance metric are inconsistent (lengths, non-binary outcomes, ...)."""


class ModelError(RiskError):
    """A risk model cannot be built, fitted, applied, saved or loaded."""


class FeatureMismatchError(ModelError):
    """The features given to a fitted model are not the ones it was fitted on."""


class NotFittedError(ModelError, AttributeError):
    """A risk model was used before :meth:`fit` (or :func:`from_json`)."""


class ConvergenceError(ModelError):
    """The logistic maximum-likelihood fit did not converge (e.g. perfectly separated data)."""


class CohortError(RiskError, InputError):
    """A cohort table is malformed: missing columns, bad values, duplicated femurs."""
