"""``osteofe federated``: fit one fracture-risk model across centres without sharing rows.

Each centre runs ``osteofe federated export`` on its own cohort table and sends the small
JSON summary it writes (counts, feature moments, or gradient and Hessian: no patient row,
no image); the coordinator runs ``osteofe federated combine`` on all summaries, which writes
the next state. Rounds::

    # round 0, at every centre
    osteofe federated export centre_a.csv --out a0.json
    # coordinator
    osteofe federated combine a0.json b0.json --out state.json
    # round t, at every centre (with the coordinator's state.json)
    osteofe federated export centre_a.csv --state state.json --out a1.json
    # coordinator: next state; when converged it also writes the model
    osteofe federated combine a1.json b1.json --state state.json --out state.json
        --model fe_model.json

The method is :mod:`risk.federated` (exact federated Newton; equal to the pooled fit).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from meshing.errors import InputError

__all__ = ["add_federated_parser"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint="check the path") from exc
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}",
                         hint="pass the files written by osteofe federated") from exc


def _centre_data(cohort_path: Path, features: list[str]) -> tuple[Any, Any, Any, str]:
    import numpy as np

    from risk.cohort import read_cohort

    cohort = read_cohort(cohort_path)
    cols = cohort.features(*features)
    X = np.column_stack([cols[f] for f in features])
    origin_col = cohort.extra.get("data_origin", ())
    synthetic = any(str(v).strip().upper().startswith("SYNTHETIC") for v in origin_col)
    return X, cohort.fractured, cohort.patient_id.tolist(), \
        "synthetic" if synthetic else "measured"


def _cmd_export(args: argparse.Namespace) -> int:
    from osteofe.outputs import write_json
    from risk.federated import FederatedState, centre_moments, centre_round

    if args.state is None:
        X, y, groups, origin = _centre_data(args.cohort, args.features)
        summary = centre_moments(X, y, groups, args.features, origin)
    else:
        state = FederatedState.from_json(args.state.read_text(encoding="utf-8"))
        X, y, groups, _ = _centre_data(args.cohort, list(state.feature_names))
        summary = centre_round(X, y, groups, state)
    write_json(args.out, summary)
    if not args.quiet:
        print(f"centre summary, round {summary['round']}: {args.out} (no patient rows)")
    return 0


def _cmd_combine(args: argparse.Namespace) -> int:
    from osteofe.outputs import write_json
    from risk.calibration import save_model
    from risk.federated import FederatedState, combine_round, start_state, state_to_model

    summaries = [_read_json(p) for p in args.summaries]
    if args.state is None:
        state = start_state(summaries, C=math.inf if args.C is None else args.C)
    else:
        state = combine_round(FederatedState.from_json(args.state.read_text(encoding="utf-8")),
                              summaries)
    write_json(args.out, json.loads(state.to_json()))
    if state.converged and args.model is not None:
        save_model(state_to_model(state), args.model)
    if not args.quiet:
        status = "converged" if state.converged else "not converged: run another round"
        print(f"federated state, iteration {state.iteration} ({status}), "
              f"{state.n} femurs / {state.events} fractures: {args.out}")
        if state.converged and args.model is not None:
            print(f"model: {args.model}")
    return 0


def add_federated_parser(sub: Any) -> None:
    """Register ``osteofe federated export|combine`` on the CLI's subparsers."""
    fed = sub.add_parser("federated", help="multicentre fit from per-centre summaries",
                         description=__doc__.split("\n\n")[0] if __doc__ else None)
    fed_sub = fed.add_subparsers(dest="federated_command", required=True)
    export = fed_sub.add_parser("export", help="a centre's summary for one round")
    export.add_argument("cohort", type=Path, help="the centre's cohort table (CSV)")
    export.add_argument("--out", type=Path, required=True, help="summary JSON to send")
    export.add_argument("--state", type=Path, help="the coordinator's state (rounds >= 1)")
    export.add_argument("--features", nargs="+", default=["failure_load_BW"],
                        help="model features (round 0; default failure_load_BW)")
    export.set_defaults(func=_cmd_export)
    combine = fed_sub.add_parser("combine", help="combine the centres' summaries")
    combine.add_argument("summaries", type=Path, nargs="+", help="centre summaries (JSON)")
    combine.add_argument("--out", type=Path, required=True, help="next state (JSON)")
    combine.add_argument("--state", type=Path, help="current state (rounds >= 1)")
    combine.add_argument("--model", type=Path, help="write the model here once converged")
    combine.add_argument("--C", type=float, help="L2: inverse strength (default: none)")
    combine.set_defaults(func=_cmd_combine)
