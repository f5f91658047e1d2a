"""Multicentre fitting without sharing rows: exact federated Newton for logistic regression.

A logistic model's log-likelihood is a sum over femurs, so its gradient and Hessian are sums
over centres: each centre computes them on its own femurs at the current coefficients and
shares only these (k+1)-vectors and (k+1)x(k+1) matrices; the coordinator adds them and takes
the Newton step. The iterates are those of Newton's method on the pooled data, so the result
equals the pooled fit to the solver tolerance (Wu et al. 2012, "G-Logit", J Am Med Inform
Assoc 19:758; Jones et al. 2013 for distributed Newton-Raphson).

Protocol (every message is a small JSON document, no patient row leaves a centre):

0. ``round 0``: each centre shares ``n``, events, patients and the column sums and sums of
   squares of its features (:func:`centre_moments`); the coordinator derives the pooled mean
   and standard deviation, the scaler of the model (:func:`start_state`).
1. ``round t``: each centre evaluates the gradient, Hessian and log-likelihood of its femurs
   at the state's coefficients (standardised features) and the per-patient score sums
   ``B = sum_patients u_g u_g^T`` (:func:`centre_round`); the coordinator adds them and steps
   (:func:`combine_round`) until the Newton step is below ``tol``.

The final model (:func:`state_to_model`) is a :class:`~risk.calibration.StrengthRiskModel`
whose coefficient covariance is the patient-clustered sandwich ``H^-1 B H^-1`` (exact from
the shared sums; the cluster bootstrap would need the rows). Its training AUC is not known
to the coordinator (recorded as null).

The scaling ``StandardScaler`` uses (population SD, ddof 0) is reproduced from the moments,
so an L2-penalised federated fit equals the pooled ``penalty="l2"`` fit too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from core.types import FloatArray
from risk.clustered import group_codes
from risk.errors import ConvergenceError, ModelError

__all__ = [
    "FederatedState",
    "centre_moments",
    "centre_round",
    "combine_round",
    "federated_fit",
    "start_state",
    "state_to_model",
]


STATE_FORMAT = "osteofe-federated-state"
SUMMARY_FORMAT = "osteofe-centre-summary"


@dataclass(frozen=True)
class FederatedState:
    """The coordinator's state between rounds.

    Attributes:
        feature_names: Features, length k.
        mean: Pooled feature means, shape (k,).
        scale: Pooled population SDs, shape (k,).
        theta: Standardised ``[intercept, w_1..w_k]``, shape (k+1,).
        C: scikit-learn's inverse L2 strength (``inf``: no penalty).
        iteration: Newton steps taken.
        converged: Whether the last step was below ``tol``.
        n: Pooled femurs.
        events: Pooled fractures.
        n_groups: Pooled patients.
        origin: Cohort origin shared by all centres (``"mixed"`` is refused).
        hessian: Last pooled Hessian of the negative penalised log-likelihood, (k+1, k+1).
        meat: Last pooled per-patient score outer-product sum, (k+1, k+1).
        log_likelihood: Last pooled log-likelihood.
        tol: Step tolerance.
    """

    feature_names: tuple[str, ...]
    mean: FloatArray
    scale: FloatArray
    theta: FloatArray
    C: float
    iteration: int
    converged: bool
    n: int
    events: int
    n_groups: int
    origin: str
    hessian: FloatArray | None = None
    meat: FloatArray | None = None
    log_likelihood: float | None = None
    tol: float = 1e-12

    def to_json(self) -> str:
        """JSON text of the state (``C = inf`` stored as null)."""
        def arr(a: FloatArray | None) -> Any:
            return None if a is None else np.asarray(a).tolist()
        return json.dumps({
            "format": STATE_FORMAT, "feature_names": list(self.feature_names),
            "mean": arr(self.mean), "scale": arr(self.scale), "theta": arr(self.theta),
            "C": None if math.isinf(self.C) else self.C, "iteration": self.iteration,
            "converged": self.converged, "n": self.n, "events": self.events,
            "n_groups": self.n_groups, "origin": self.origin, "hessian": arr(self.hessian),
            "meat": arr(self.meat), "log_likelihood": self.log_likelihood, "tol": self.tol,
        }, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> FederatedState:
        """Parse :meth:`to_json` output.

        Raises:
            ModelError: Not a federated state.
        """
        try:
            doc = json.loads(text)
            if doc.get("format") != STATE_FORMAT:
                raise ModelError("not an osteofe federated state file",
                                 "pass the state written by `osteofe federated combine`")
            def arr(v: Any) -> FloatArray | None:
                return None if v is None else np.asarray(v, dtype=np.float64)
            return cls(tuple(doc["feature_names"]), np.asarray(doc["mean"], float),
                       np.asarray(doc["scale"], float), np.asarray(doc["theta"], float),
                       math.inf if doc["C"] is None else float(doc["C"]),
                       int(doc["iteration"]), bool(doc["converged"]), int(doc["n"]),
                       int(doc["events"]), int(doc["n_groups"]), str(doc["origin"]),
                       arr(doc["hessian"]), arr(doc["meat"]), doc["log_likelihood"],
                       float(doc["tol"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"malformed federated state: {type(exc).__name__}: {exc}",
                             "pass the unmodified state file") from exc


def _matrix(X: FloatArray | Sequence[Sequence[float]], y: npt.ArrayLike
            ) -> tuple[FloatArray, FloatArray]:
    data = np.asarray(X, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    yv = np.asarray(y, dtype=np.float64)
    if data.ndim != 2 or yv.shape != (data.shape[0],) or not np.all(np.isin(yv, (0, 1))):
        raise ModelError(f"centre data: X shape {data.shape}, y shape {yv.shape}",
                         "pass an (n, k) feature array and n outcomes 0/1")
    if not np.all(np.isfinite(data)):
        raise ModelError("centre data has missing or infinite features",
                         "drop or impute femurs with missing features")
    return data, yv


def centre_moments(X: FloatArray, y: npt.ArrayLike, groups: Iterable[Hashable] | None,
                   feature_names: Sequence[str], origin: str) -> dict[str, Any]:
    """Round 0 of one centre: counts and feature moments (no rows).

    Args:
        X: The centre's features, shape (n, k), in ``feature_names`` order.
        y: Outcomes, shape (n,), 0/1.
        groups: Patient id per femur (None: one femur per patient).
        feature_names: Feature names, length k.
        origin: ``"measured"`` or ``"synthetic"``.

    Returns:
        JSON-ready summary: ``n``, ``events``, ``n_groups``, ``sum``, ``sum_sq``.
    """
    data, yv = _matrix(X, y)
    codes = group_codes(groups, yv.size)
    return {"format": SUMMARY_FORMAT, "round": 0, "feature_names": list(feature_names),
            "origin": origin, "n": int(yv.size), "events": int(yv.sum()),
            "n_groups": int(codes.max()) + 1, "sum": data.sum(axis=0).tolist(),
            "sum_sq": (data**2).sum(axis=0).tolist()}


def _same(summaries: Sequence[dict[str, Any]], key: str) -> Any:
    values = {json.dumps(s[key]) for s in summaries}
    if len(values) != 1:
        raise ModelError(f"the centre summaries disagree on {key}: {sorted(values)}",
                         "every centre must use the same features, round and origin")
    return summaries[0][key]


def start_state(summaries: Sequence[dict[str, Any]], *, C: float = math.inf,
                tol: float = 1e-12) -> FederatedState:
    """The coordinator's first state from the centres' round-0 summaries.

    Args:
        summaries: :func:`centre_moments` of every centre.
        C: Inverse L2 strength on standardised coefficients (``inf``: none).
        tol: Newton step tolerance (max-norm of the standardised step).

    Returns:
        State with the pooled scaler and ``theta = 0``.

    Raises:
        ModelError: Inconsistent summaries, a constant feature or a one-class pool.
    """
    if not summaries:
        raise ModelError("no centre summaries given", "pass one summary per centre")
    names = tuple(_same(summaries, "feature_names"))
    origin = _same(summaries, "origin")
    if any(s.get("round") != 0 for s in summaries):
        raise ModelError("start needs the centres' round-0 summaries",
                         "export them without a state file")
    n = sum(int(s["n"]) for s in summaries)
    events = sum(int(s["events"]) for s in summaries)
    total = np.sum([s["sum"] for s in summaries], axis=0)
    total_sq = np.sum([s["sum_sq"] for s in summaries], axis=0)
    mean = total / n
    var = np.maximum(total_sq / n - mean**2, 0.0)
    scale = np.sqrt(var)
    if np.any(scale <= 1e-12 * np.maximum(1.0, np.abs(mean))) or not 0 < events < n:
        raise ModelError("the pooled data has a constant feature or only one outcome class",
                         "check the centres' features and outcomes")
    return FederatedState(names, mean, scale, np.zeros(len(names) + 1), float(C), 0, False,
                          n, events, sum(int(s["n_groups"]) for s in summaries), origin,
                          tol=tol)


def centre_round(X: FloatArray, y: npt.ArrayLike, groups: Iterable[Hashable] | None,
                 state: FederatedState) -> dict[str, Any]:
    """One Newton round at a centre: gradient, Hessian, log-likelihood and score meat.

    Args:
        X: The centre's features, shape (n, k), in the state's feature order.
        y: Outcomes, shape (n,).
        groups: Patient id per femur.
        state: The coordinator's current state.

    Returns:
        JSON-ready summary (``gradient`` (k+1,), ``hessian`` and ``meat`` (k+1, k+1),
        ``log_likelihood``) of the unpenalised log-likelihood at ``state.theta``.
    """
    data, yv = _matrix(X, y)
    if data.shape[1] != len(state.feature_names):
        raise ModelError(f"the centre has {data.shape[1]} features, the state "
                         f"{len(state.feature_names)}", "use the state's feature list")
    A = np.column_stack([np.ones(yv.size), (data - state.mean) / state.scale])
    eta = A @ state.theta
    p = special.expit(eta)
    resid = yv - p
    codes = group_codes(groups, yv.size)
    per_patient = np.zeros((int(codes.max()) + 1, A.shape[1]))
    np.add.at(per_patient, codes, A * resid[:, None])
    return {"format": SUMMARY_FORMAT, "round": state.iteration + 1,
            "feature_names": list(state.feature_names), "origin": state.origin,
            "gradient": (A.T @ resid).tolist(),
            "hessian": ((A * (p * (1 - p))[:, None]).T @ A).tolist(),
            "meat": (per_patient.T @ per_patient).tolist(),
            "log_likelihood": float(np.sum(yv * eta - np.logaddexp(0.0, eta)))}


def combine_round(state: FederatedState, summaries: Sequence[dict[str, Any]],
                  max_iter: int = 100) -> FederatedState:
    """Add the centres' round summaries and take the (penalised) Newton step.

    The penalty of scikit-learn's ``LogisticRegression`` (``|w|^2 / (2 C)``, intercept
    unpenalised) is added once, by the coordinator.

    Args:
        state: Current state.
        summaries: :func:`centre_round` of every centre at ``state``.
        max_iter: Refuse to go beyond this many steps.

    Returns:
        The next state (``converged`` when the step's max-norm is below ``tol``).

    Raises:
        ModelError: Summaries of another round or feature set.
        ConvergenceError: Non-convergence (separated pooled data) or a singular Hessian.
    """
    if [s.get("round") for s in summaries] != [state.iteration + 1] * len(summaries):
        raise ModelError(f"the summaries are not all of round {state.iteration + 1}",
                         "export every centre's summary with the current state file")
    if tuple(_same(summaries, "feature_names")) != state.feature_names:
        raise ModelError("the summaries' features differ from the state's",
                         "use the state's feature list at every centre")
    grad = np.sum([s["gradient"] for s in summaries], axis=0)
    hess = np.sum([s["hessian"] for s in summaries], axis=0)
    meat = np.sum([s["meat"] for s in summaries], axis=0)
    loglik = float(sum(s["log_likelihood"] for s in summaries))
    penalty = np.r_[0.0, np.full(len(state.feature_names),
                                 0.0 if math.isinf(state.C) else 1.0 / state.C)]
    grad = grad - penalty * state.theta
    hess = hess + np.diag(penalty)
    try:
        step = np.linalg.solve(hess, grad)
    except np.linalg.LinAlgError as exc:
        raise ConvergenceError("the pooled Hessian is singular (separated data or "
                               "collinear features)", "use an L2 penalty") from exc
    theta = state.theta + step
    if np.max(np.abs(theta[1:])) > 25.0 or state.iteration + 1 > max_iter:
        raise ConvergenceError("the federated Newton iteration diverges (the pooled outcome "
                               "is separated by the features)", "use an L2 penalty (C)")
    converged = bool(np.max(np.abs(step)) <= state.tol * (1.0 + np.max(np.abs(theta))))
    return FederatedState(state.feature_names, state.mean, state.scale, theta, state.C,
                          state.iteration + 1, converged, state.n, state.events,
                          state.n_groups, state.origin, hess, meat, loglik, state.tol)


def state_to_model(state: FederatedState) -> Any:
    """The fitted :class:`~risk.calibration.StrengthRiskModel` of a converged state.

    Covariance: patient-clustered sandwich ``H^-1 B H^-1`` of the standardised parameters at
    the last evaluated point (one Newton step, below ``tol``, before the solution), mapped to
    ``[intercept, coef]`` per original unit.

    Raises:
        ModelError: The state has not converged.
    """
    from risk.calibration import StrengthRiskModel, TrainingSummary, _rebuild_pipeline

    if not state.converged or state.hessian is None or state.meat is None:
        raise ModelError(f"the federated fit has not converged (iteration {state.iteration})",
                         "run more rounds: export at each centre, then combine")
    k = len(state.feature_names)
    h_inv = np.linalg.inv(state.hessian)
    cov_std = h_inv @ state.meat @ h_inv
    # theta_orig = J theta_std: coef = w / scale, intercept = b - sum(w mean / scale)
    J = np.zeros((k + 1, k + 1))
    J[0, 0] = 1.0
    J[0, 1:] = -state.mean / state.scale
    J[1:, 1:] = np.diag(1.0 / state.scale)
    model = StrengthRiskModel(penalty="none" if math.isinf(state.C) else "l2",
                              C=1.0 if math.isinf(state.C) else state.C, n_bootstrap=0)
    model._set_pipeline(_rebuild_pipeline(state.mean, state.scale, state.theta[1:],
                                          float(state.theta[0]), state.n, state.iteration),
                        state.feature_names)
    model.training_summary_ = TrainingSummary(state.n, state.events, None, state.n_groups,
                                              state.origin)
    model.coef_cov_ = J @ cov_std @ J.T
    model.n_bootstrap_ = model.n_failed_ = 0
    model.covariance_method_ = "federated patient-clustered sandwich"
    return model


def federated_fit(centres: Sequence[tuple[FloatArray, npt.ArrayLike,
                                          Iterable[Hashable] | None]],
                  feature_names: Sequence[str], *, origin: str = "measured",
                  C: float = math.inf, tol: float = 1e-12, max_iter: int = 100) -> Any:
    """Run the whole protocol in memory (what the CLI does with files between rounds).

    Args:
        centres: Per centre ``(X, y, groups)``.
        feature_names: Feature names.
        origin: Cohort origin.
        C: Inverse L2 strength (``inf``: none).
        tol: Newton step tolerance.
        max_iter: Newton steps at most.

    Returns:
        The fitted :class:`~risk.calibration.StrengthRiskModel`.
    """
    state = start_state([centre_moments(X, y, g, feature_names, origin)
                         for X, y, g in centres], C=C, tol=tol)
    while not state.converged:
        state = combine_round(state, [centre_round(X, y, g, state) for X, y, g in centres],
                              max_iter)
    # H and B of the last round were evaluated one step (< tol) before the solution
    return state_to_model(state)
