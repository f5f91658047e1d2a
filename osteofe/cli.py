"""The ``osteofe`` command line.

Exit codes:
    0: success.
    1: unexpected internal error (a bug: please report it with the traceback).
    2: command-line usage error.
    3: invalid input, configuration or model (the message names the problem and the fix),
       including a CT with an implausible voxel size or values and a run whose estimated
       peak memory exceeds 80% of the memory available (:mod:`osteofe.guards`; the
       environment variable ``OSTEOFE_MEMORY_LIMIT_GB`` caps the memory counted as available),
       an unusable ``--out`` (an existing file, not writable, less than 200 MB free -
       ``OSTEOFE_MIN_FREE_MB`` - or in use by another run; checked before any analysis) or a
       failed final write, any other file-system error (the message names the file),
       and an ``osteofe cohort run`` in which any case failed.
    130: interrupted (143: a cohort run ended by SIGTERM).

Under ``mpiexec`` every rank returns the same code and the error line is printed once.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from core.suggest import did_you_mean, suggest
from meshing.errors import OsteofeError

if TYPE_CHECKING:
    from osteofe.result import StrengthResult

__all__ = ["main"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3

EXAMPLES = """examples:
  osteofe demo --out demo_out
  osteofe strength --ct ct.nii.gz --labels seg.nii.gz --bone-label femur_right \\
      --body-weight 75 --out results/patient01
  mpiexec -n 4 osteofe strength --ct ct.nii.gz --labels seg.nii.gz --body-weight 80 --out r
  osteofe phantom --out phantom --lesion-site neck --lesion-kind lytic
  osteofe config --print-default > osteofe.toml
"""


def _rank() -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.rank)


#: The command line being parsed (for suggestions on usage errors).
_ARGV: list[str] = []


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors suggest the closest option or command."""

    def error(self, message: str) -> NoReturn:
        """Exit 2 with ``message`` and a "did you mean" for a misspelt option or choice."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{self._suggestion(message)}\n"
                  f"(see {self.prog} --help)\n")

    def _options(self) -> list[str]:
        """Every option string of this parser and of its sub-commands."""
        names = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    names += list(sub._option_string_actions)
        return names

    def _suggestion(self, message: str) -> str:
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        # A misspelt option also hides a required one ("required: --body-weight" for
        # --bodyweight): the words of the command line that are no option are checked too.
        words = unknown.group(1).split() if unknown else _ARGV
        known = self._options()
        hints = [f"{word} -> {close}" for word in dict.fromkeys(words)
                 if word.startswith("--") and word.split("=")[0] not in known
                 and (close := suggest(word.split("=")[0], known)) is not None]
        if hints:
            return f" (did you mean: {', '.join(hints)}?)"
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'|([\w.-]+)", choice.group(2))
            names = [a or b for a, b in options]
            return did_you_mean(choice.group(1), names)
        return ""


class _Progress:
    """Stage progress on rank 0: a tqdm bar on a terminal only.

    Silent with --quiet, and when stderr is a file or a pipe (a log), where a bar's carriage
    returns would only clutter it.
    """

    def __init__(self, stages: Sequence[str], enabled: bool, label: str = "") -> None:
        self.stages = list(stages)
        self.enabled = enabled and _rank() == 0 and sys.stderr.isatty()
        self.label = label
        self.bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.stages), desc=label, unit="stage", file=sys.stderr,
                            bar_format="{desc:<40}|{bar:20}| {n}/{total} [{elapsed}]",
                            leave=False)

    def __call__(self, stage: str) -> None:
        if self.bar is not None:
            if stage in self.stages:
                self.bar.n = self.stages.index(stage)
            self.bar.set_description_str(f"{self.label}{stage}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = len(self.stages)
            self.bar.close()


STAGES = ["reading images", "meshing", "mapping material", "landmarks and loads",
          "lesion measures", "solving", "failure criterion", "nonlinear analysis",
          "writing outputs"]


def _echo(text: str) -> None:
    if _rank() == 0:
        print(text, flush=True)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options (override the config file)")
    group.add_argument("--config", type=Path, help="TOML configuration file")
    group.add_argument("--load", nargs="+", metavar="CASE",
                       help="load case(s): stance, stairs_up, stairs_down, stumbling, fall "
                       "(default: stance)")
    group.add_argument("--custom-load", nargs=3, type=float, action="append",
                       metavar=("FX", "FY", "FZ"),
                       help="extra head force in N, right-femur anatomical frame (x lateral, "
                       "y anterior, z proximal), repeatable")
    group.add_argument("--sweep", type=int, metavar="N",
                       help="also sweep N load directions around each case (cone of "
                       "load.sweep_half_angle_deg, default 15 deg) and report the weakest")
    group.add_argument("--mesh-size", type=float, metavar="MM",
                       help="target element size in mm (default 3)")
    group.add_argument("--order", type=int, choices=(1, 2), help="mesh node order")
    group.add_argument("--crop-below-lt", type=float, metavar="MM",
                       help="model only the femur down to MM below the lesser trochanter")
    group.add_argument("--allow-partial", action="store_true",
                       help="compute a femur too short for the load case (less than 40 mm "
                       "of shaft below the lesser trochanter) instead of refusing it; the "
                       "result is flagged not valid")
    group.add_argument("--degree", type=int, choices=(1, 2),
                       help="displacement polynomial degree (P1/P2)")
    group.add_argument("--pc", choices=("gamg", "jacobi", "lu"), help="PETSc preconditioner")
    group.add_argument("--ksp-rtol", type=float, help="relative residual tolerance")
    group.add_argument("--petsc-option", action="append", default=[], metavar="KEY=VALUE",
                       help="extra PETSc option, repeatable (e.g. pc_gamg_threshold=0.05)")
    group.add_argument("--calibration", nargs=2, type=float, metavar=("SLOPE", "INTERCEPT"),
                       help="scanner line rho_QCT [g/cm3] = INTERCEPT + SLOPE * HU")
    group.add_argument("--law", help="density-modulus law (default morgan2003_neck)")
    group.add_argument("--no-picture", action="store_true", help="skip the PNG picture")
    group.add_argument("--nonlinear", action="store_true",
                       help="also run the nonlinear (Keyak 2005) load to failure of the "
                       "weakest case: force-displacement curve, CSV + PNG")


def _config_from_args(args: argparse.Namespace) -> Any:
    from osteofe.config import load_config

    config = load_config(args.config)
    config = config.override("mesh", size_mm=args.mesh_size, order=args.order,
                             crop_below_lesser_trochanter_mm=args.crop_below_lt,
                             allow_partial=True if args.allow_partial else None)
    config = config.override(
        "load", cases=tuple(args.load) if args.load else None,
        custom_forces_n=tuple(tuple(f) for f in args.custom_load) if args.custom_load else None,
        sweep_directions=args.sweep)
    extra = dict(config.solver.petsc_options) | _petsc_extra(args.petsc_option)
    config = config.override("solver", degree=args.degree, pc_type=args.pc,
                             rtol=args.ksp_rtol, petsc_options=extra or None)
    if args.calibration:
        config = config.override("material", calibration_slope=args.calibration[0],
                                 calibration_intercept=args.calibration[1])
    config = config.override("nonlinear", enabled=True if args.nonlinear else None)
    return config.override("material", law=args.law)


def _cmd_strength(args: argparse.Namespace) -> int:
    from osteofe.pipeline import StrengthRequest, run_strength

    config = _config_from_args(args)
    lesion = tuple(args.lesion_label) if args.lesion_label else (2,)
    request = StrengthRequest(
        ct_path=args.ct, labels_path=args.labels, mesh_path=args.mesh,
        body_mass_kg=args.body_weight,
        bone_label=args.bone_label, lesion_labels=lesion,
        lesion_labels_required=bool(args.lesion_label), case_id=args.case_id,
        pain=args.pain, mirels_given=_mirels_items(args.mirels), side=args.side,
        risk_model=args.risk_model, force_risk_model=args.force_risk_model,
        segmenter=args.segmenter if args.labels is None and args.mesh is None else None,
    )
    progress = _Progress(STAGES, not args.quiet, label=f"{args.case_id} ")
    try:
        result = run_strength(request, config, args.out, progress=progress,
                              picture=not args.no_picture, export_inp=args.export_inp,
                              risk_model=args.risk_model, report=args.report)
    finally:
        progress.close()
    _log_warnings(result.warnings)
    _validity_banner(result)
    if not args.quiet:
        _echo(_summary_table([result]))
        _echo(f"results written to {args.out}/ ({', '.join(result.provenance.outputs)})")
    return EXIT_OK


def _log_warnings(warnings: Sequence[str]) -> None:
    """Log a result's warnings (:class:`_Once` drops those the run has logged already)."""
    log = logging.getLogger("osteofe")
    for warning in warnings:
        log.warning(warning)


class _Once(logging.Filter):
    """Pass each WARNING (and above) text once per command.

    A stage that logs a warning and also records it in the result would otherwise print it
    twice (once while it runs, once from the result).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a warning whose text was already printed."""
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def _validity_banner(result: StrengthResult) -> None:
    """Print the result's validity banner and cautions on stderr (rank 0), even with --quiet."""
    validity = result.validity
    if (validity.valid and not validity.cautions) or _rank() != 0:
        return
    lines = [] if validity.valid else [validity.banner or "RESULT NOT VALID",
                                       *(f"- {reason}" for reason in validity.reasons)]
    lines += [f"CAUTION: {caution}" for caution in validity.cautions]
    import textwrap

    lines = [part for line in lines for part in textwrap.wrap(line, 100,
                                                              subsequent_indent="  ")]
    width = min(max(len(line) for line in lines), 100)
    rule = "!" * (width + 4)
    print("\n".join([rule, *(f"! {line}" for line in lines), rule]), file=sys.stderr,
          flush=True)


def _mirels_items(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    from meshing.errors import InputError

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("site", "lesion", "size"):
            raise InputError(f"--mirels {item!r} is not site=..., lesion=... or size=...",
                             hint="e.g. --mirels size=3 --mirels lesion=mixed (pain: --pain)")
        out.append((key, value))
    return tuple(out)


def _summary_table(results: Sequence[StrengthResult]) -> str:
    """The console summary: one row per load case, then the femur's weakest load and scores.

    A case row has the failure load, the sweep's minimum (``-`` without ``--sweep``), the
    load-to-strength ratio, the mode and the region; the femur line the weakest load over
    every case and swept direction, the Mirels score and the fracture probability.
    """
    header = (f"{'case':<16} {'load case':<12} {'failure load (N)':>17} {'x BW':>7} "
              f"{'sweep min (N)':>14} {'phi':>5} {'mode':<12} region")
    lines = [header, "-" * len(header)]
    for res in results:
        bw = res.body_weight_N
        for case in res.cases:
            sweep = "-" if case.sweep is None else f"{case.sweep.min_failure_load_N:.0f}"
            lines.append(
                f"{res.case_id:<16} {case.load_case:<12} "
                f"{case.failure_load_N:>17.0f} {case.failure_load_N / bw:>7.2f} "
                f"{sweep:>14} {case.load_to_strength_ratio:>5.2f} "
                f"{case.failure_mode:<12} {case.critical_region}"
            )
        lines.append(f"{res.case_id:<16} {_weakest_text(res)}; {_scores_text(res)}")
    return "\n".join(lines)


def _cmd_segment(args: argparse.Namespace) -> int:
    from meshing.autoseg import write_segmentation

    record = write_segmentation(args.ct, args.out, segmenter=args.segmenter)
    if not args.quiet:
        for femur in record["femurs"]:
            state = "accepted" if femur["accepted"] else "refused: " + "; ".join(
                femur["reasons"])
            _echo(f"{femur['side']} femur (label {femur['label']}): {state}; joint-space "
                  f"contrast {femur['gap_contrast_hu']} HU, {femur['volume_cm3']} cm^3")
        _echo(f"labels written to {args.out} (automatic: review before use)")
    return EXIT_OK


def _weakest_text(res: StrengthResult) -> str:
    weakest = res.weakest
    where = "swept direction of " if weakest.from_sweep else ""
    return (f"weakest: {weakest.failure_load_N:.0f} N ({where}{weakest.load_case}, "
            f"+- {res.failure_load_see_N:.0f} N method SEE)")


def _scores_text(res: StrengthResult) -> str:
    lesion = res.lesion
    if lesion is None:
        mirels = "Mirels: no lesion"
    elif lesion.mirels_total is not None:
        mirels = f"Mirels {lesion.mirels_total}/12 ({lesion.mirels_recommendation})"
    elif lesion.mirels_total_range is not None:
        low, high = lesion.mirels_total_range
        mirels = f"Mirels {low}-{high}/12 (pain not given: --pain)"
    else:
        mirels = "Mirels: not scored"
    prob = res.fracture_probability
    if prob is None:
        probability = "probability: no model (--risk-model)"
    elif prob.interval is not None:
        probability = (f"probability {prob.probability:.0%} "
                       f"({prob.interval[0]:.0%}-{prob.interval[1]:.0%})")
    else:
        probability = f"probability {prob.probability:.0%}"
    return f"{mirels}; {probability}"


def _cmd_demo(args: argparse.Namespace) -> int:
    from osteofe.demo import run_demo

    start = time.perf_counter()
    summary = run_demo(args.out, config=_config_from_args(args), body_mass_kg=args.body_weight,
                       lesion_site=args.lesion_site, lesion_radius_mm=args.lesion_radius,
                       lesion_kind=args.lesion_kind, quiet=args.quiet,
                       progress_factory=lambda label: _Progress(STAGES, not args.quiet,
                                                                label=label),
                       picture=not args.no_picture)
    if not args.quiet:
        _echo(_summary_table(summary["results"]))
        ratio = summary["lesion_to_intact_ratio"]
        _echo(f"lesion / intact failure load: {ratio:.2f}   "
              f"({time.perf_counter() - start:.0f} s; summary in {args.out}/summary.json)")
    return EXIT_OK


def _cmd_phantom(args: argparse.Namespace) -> int:
    from osteofe.demo import build_phantom

    paths = build_phantom(args.out, lesion_site=args.lesion_site,
                          lesion_radius_mm=args.lesion_radius, lesion_kind=args.lesion_kind,
                          voxel_mm=args.voxel, noise_hu=args.noise)
    for name, path in paths.items():
        _echo(f"{name}: {path}")
    return EXIT_OK


def _petsc_extra(items: Sequence[str]) -> dict[str, str]:
    from meshing.errors import InputError

    extra: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--petsc-option {item!r} is not KEY=VALUE",
                             hint="e.g. --petsc-option pc_gamg_threshold=0.05")
        extra[key.lstrip("-")] = value
    return extra


def _cmd_solve(args: argparse.Namespace) -> int:
    from fea.solver import SolverOptions
    from osteofe.solve_tool import SOLVE_STAGES, run_solve

    default = SolverOptions()
    options = SolverOptions(pc_type=args.pc or default.pc_type,
                            rtol=args.ksp_rtol or default.rtol,
                            extra=_petsc_extra(args.petsc_option))
    progress = _Progress(SOLVE_STAGES, not args.quiet, label=f"{args.model.name} ")
    try:
        result = run_solve(args.model, args.out, options=options, loaded_set=args.loaded_set,
                           ignore_unsupported=args.ignore_unsupported,
                           allow_include_outside=args.allow_include_outside, progress=progress)
    finally:
        progress.close()
    _log_warnings(result["warnings"])
    if not args.quiet:
        for name, force in result["reactions_n"].items():
            _echo(f"reaction at {name}: [{force[0]:.6g}, {force[1]:.6g}, {force[2]:.6g}] N")
        if result.get("failure"):
            failure = result["failure"]
            _echo(f"failure load (Schileo): {failure['failure_load_N']:.0f} N "
                  f"({failure['mode']})")
        _echo(f"results written to {args.out}/ (result.json, fields.vtu)")
    return EXIT_OK


def _cmd_mesh(args: argparse.Namespace) -> int:
    from osteofe.mesh_tool import run_mesh

    summary = run_mesh(args.out, labels_path=args.labels, surface_path=args.surface,
                       ct_path=args.ct, bone_label=args.bone_label,
                       lesion_labels=tuple(args.lesion_label or ()), size_mm=args.mesh_size,
                       order=args.order, convention=args.convention)
    if not args.quiet:
        lm = summary["landmarks"]
        _echo(f"{summary['num_cells']} tetrahedra (order {summary['order']}), min dihedral "
              f"{summary['quality']['min_dihedral_deg']:.1f} deg -> {args.out}")
        _echo(f"{lm['side']} femur, head radius {lm['head_radius_mm']:.1f} mm, neck-shaft "
              f"angle {lm.get('neck_shaft_angle_deg')} deg (details in {args.out}.json)")
    return EXIT_OK


def _cmd_map(args: argparse.Namespace) -> int:
    from material.calibration import LinearCalibration
    from osteofe.mapping_tool import load_table, run_map

    calibration: Any = None
    if args.calibration:
        calibration = LinearCalibration(args.calibration[0], args.calibration[1],
                                        name="cli", source="scanner line from the command line")
    elif args.calibration_file:
        calibration = load_table(args.calibration_file)
    law: Any = load_table(args.law_file) if args.law_file else args.law
    summary = run_map(args.ct, args.mesh, args.out, calibration=calibration, law=law,
                      mode=args.mode, quadrature_degree=args.quadrature_degree,
                      groups=args.groups, chain=args.chain, poisson_ratio=args.poisson,
                      E_floor_MPa=args.e_floor, floor_tags=tuple(args.floor_tag or ()),
                      labels_path=args.labels)
    _log_warnings(summary.get("warnings", []))
    if not args.quiet:
        _echo(f"mapped {summary['mesh']['cells']} cells -> {args.out} "
              f"(summary in {args.out.with_suffix('.json')})")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from meshing.errors import InputError
    from osteofe.report import make_report

    if args.retain_uids and args.dicom_study is None:
        raise InputError("--retain-uids needs --dicom-study", hint="name the CT's DICOM folder "
                         "whose study UIDs report.dcm keeps, or leave out --retain-uids")
    paths = make_report(args.result_dir, args.out, dicom_study=args.dicom_study,
                        include_patient_identifiers=args.include_patient_identifiers,
                        retain_uids=args.retain_uids)
    if not args.quiet:
        _echo("report written: " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK


def _cmd_cohort_run(args: argparse.Namespace) -> int:
    from osteofe.cohort import format_run_summary, run_array_task, run_cohort

    if args.array_task is not None:
        task = run_array_task(args.manifest, args.out, _config_from_args(args),
                              index=None if args.array_task == "env" else args.array_task,
                              per_task=args.cases_per_task, picture=not args.no_picture)
        if not args.quiet and _rank() == 0:
            _echo(f"array task {task.index}: " + ", ".join(
                f"{c} {s.get('state')}" for c, s in zip(task.case_ids, task.statuses,
                                                        strict=True)))
        if task.n_failed:
            if _rank() == 0:
                print(f"error: {task.n_failed} of {len(task.case_ids)} cases of array task "
                      f"{task.index} failed (hint: see {task.summary_json})", file=sys.stderr,
                      flush=True)
            return EXIT_INPUT
        return EXIT_OK
    summary = run_cohort(args.manifest, args.out, _config_from_args(args),
                         workers=args.workers, progress=not args.quiet,
                         picture=not args.no_picture, engine=args.engine,
                         scheduler=args.scheduler, cluster=args.cluster,
                         max_tries=args.max_tries, ranks_per_case=args.ranks_per_case)
    if not args.quiet:
        _echo(format_run_summary(summary))
    if summary.n_failed:
        print(f"error: {summary.n_failed} of {summary.n_cases} cases failed (hint: see "
              f"{summary.failures_csv}; the other cases' results are kept, and a rerun "
              "retries only the failed ones)", file=sys.stderr, flush=True)
        return EXIT_INPUT
    return EXIT_OK


def _cmd_cohort_synth(args: argparse.Namespace) -> int:
    from osteofe.insilico import InsilicoOptions, format_insilico, generate_cohort

    options = InsilicoOptions.cheap() if args.cheap else InsilicoOptions()
    cohort = generate_cohort(args.n, args.out, seed=args.seed, options=options,
                             workers=args.workers, progress=not args.quiet)
    if not args.quiet:
        _echo(format_insilico(cohort))
    return EXIT_OK


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from osteofe.benchmark import format_benchmark, read_economics, run_benchmark

    summary = run_benchmark(args.cohort, args.out, seed=args.seed, n_boot=args.n_boot,
                            n_splits=args.folds, title=args.title,
                            economics=read_economics(args.economics))
    if not args.quiet:
        _echo(format_benchmark(summary))
    return EXIT_OK


def _cmd_config(args: argparse.Namespace) -> int:
    from osteofe.config import default_toml, load_config

    if args.check:
        load_config(args.check)
        _echo(f"{args.check}: valid")
        return EXIT_OK
    _echo(default_toml().rstrip("\n"))
    return EXIT_OK


def _lesion_options(parser: argparse.ArgumentParser, default_site: str | None) -> None:
    parser.add_argument("--lesion-site", default=default_site,
                        choices=("neck", "calcar", "intertrochanteric", "subtrochanteric"),
                        help=f"lesion site (default {default_site})")
    parser.add_argument("--lesion-radius", type=float, default=12.0, metavar="MM",
                        help="lesion radius in mm (default 12)")
    parser.add_argument("--lesion-kind", default="lytic", choices=("lytic", "blastic", "mixed"),
                        help="lesion type (default lytic)")


def _manifest_schema() -> str:
    """The manifest's column table, from :mod:`osteofe.cohort`'s docstring.

    The module is parsed, not imported: building the parser must stay fast.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("osteofe.cohort")
    try:
        assert spec is not None and spec.origin is not None
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
        lines = (doc or "").splitlines()
        rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
        return "\n".join(lines[rules[0]:rules[-1] + 1])
    except (AssertionError, IndexError, OSError, SyntaxError):
        return "see the documentation of osteofe.cohort"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="osteofe",
        description="CT-based finite-element femoral strength and fracture risk.",
        epilog=EXAMPLES + "\nexit codes: 0 ok, 1 internal error, 2 usage error, "
        "3 invalid input/configuration/model (also: a run that would not fit in memory)\n"
        "environment: OSTEOFE_MEMORY_LIMIT_GB caps the memory a run may plan on (GB)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="print debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    strength = sub.add_parser(
        "strength", help="failure load of a femur from a CT and its label map",
        description="Mesh the labelled femur, map CT density to Young's modulus, solve the "
        "load cases and report the linear (Schileo) load to failure.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    strength.add_argument("--ct", type=Path, required=True,
                          help="CT image (.nii/.nii.gz/.nrrd/.mha or a DICOM folder), in HU")
    strength.add_argument("--labels", type=Path,
                          help="label map (NIfTI/NRRD, Slicer .seg.nrrd, TotalSegmentator)")
    strength.add_argument("--mesh", type=Path,
                          help="use your own tetrahedral mesh (.msh/.vtu/.inp/.xdmf, CT world "
                          "coordinates) instead of meshing the labels")
    strength.add_argument("--body-weight", type=float, required=True, metavar="KG",
                          help="body mass in kg (1 BW = KG x 9.81 N)")
    strength.add_argument("--out", type=Path, required=True, help="output folder")
    strength.add_argument("--bone-label", default=None,
                          help="femur label value or name, e.g. 76 or femur_right (default: "
                          "the only femur of a named map, the one of --side, or 1 in osteofe's "
                          "0/1/2 convention; required otherwise)")
    strength.add_argument("--lesion-label", action="append", metavar="LABEL",
                          help="lesion label value or name, repeatable (default: 2 if present)")
    strength.add_argument("--case-id", default="case",
                          help="identifier written into the results (default 'case')")
    strength.add_argument("--report", action="store_true",
                          help="also write report.html and report.pdf into --out")
    strength.add_argument("--pain", choices=("mild", "moderate", "functional"),
                          help="Mirels pain item (the other items are measured from the scan)")
    strength.add_argument("--mirels", action="append", metavar="ITEM=VALUE", default=[],
                          help="give a Mirels item by hand instead of measuring it, e.g. "
                          "size=3, lesion=mixed, site=peritrochanteric (repeatable)")
    strength.add_argument("--export-inp", action="store_true",
                          help="also write model.inp: the solved model for CalculiX/Abaqus")
    strength.add_argument("--side", choices=("left", "right"),
                          help="the femur's side, when known: the run is refused if the "
                          "femur's anatomy (or its label name) says otherwise")
    strength.add_argument("--risk-model", type=Path, metavar="JSON",
                          help="fitted fracture-risk model (osteofe benchmark's fe_model.json) "
                          "-> fracture probability")
    strength.add_argument("--force-risk-model", action="store_true",
                          help="use a risk model refused for clinical reports (synthetic "
                          "cohort, < 10 fractures per feature); the result is banner-marked")
    strength.add_argument("--segmenter", choices=("classical", "totalsegmentator"),
                          default="classical",
                          help="without --labels/--mesh: segment the femurs automatically "
                          "(default classical; totalsegmentator needs osteofe[segment])")
    _add_model_options(strength)
    strength.set_defaults(func=_cmd_strength)

    segment = sub.add_parser("segment", help="automatic femur segmentation of a CT (labels "
                             "75 femur_left, 76 femur_right, 200 lesion candidates)")
    segment.add_argument("--ct", type=Path, required=True, help="CT image, in HU")
    segment.add_argument("--out", type=Path, required=True,
                         help="label map to write (.nii.gz/.nii/.nrrd/.mha); the confidence "
                         "report goes beside it as <name>.confidence.json")
    segment.add_argument("--segmenter", choices=("classical", "totalsegmentator"),
                         default="classical", help="method (default classical)")
    segment.set_defaults(func=_cmd_segment)

    demo = sub.add_parser("demo", help="run intact and lesioned built-in phantoms",
                          description="Build the synthetic femur phantom intact and with a "
                          "lesion, compute both failure loads and compare them.")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    demo.add_argument("--body-weight", type=float, default=75.0, metavar="KG",
                      help="body mass in kg (default 75)")
    _lesion_options(demo, "calcar")
    _add_model_options(demo)
    demo.set_defaults(func=_cmd_demo)

    phantom = sub.add_parser("phantom", help="write the synthetic femur CT and labels")
    phantom.add_argument("--out", type=Path, required=True, help="output folder")
    phantom.add_argument("--voxel", type=float, default=None, metavar="MM",
                         help="voxel size in mm (default 0.8)")
    phantom.add_argument("--noise", type=float, default=None, metavar="HU",
                         help="Gaussian noise standard deviation in HU")
    _lesion_options(phantom, None)
    phantom.set_defaults(func=_cmd_phantom)

    mesh = sub.add_parser(
        "mesh", help="mesh a femur segmentation or surface into tetrahedra",
        description="Label map or closed surface -> tetrahedral mesh (format by extension: "
        ".vtu, .msh, .inp, .xdmf) plus OUT.json with quality and landmarks.")
    source = mesh.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="label map")
    source.add_argument("--surface", type=Path, help="closed surface (.stl/.ply/.obj)")
    mesh.add_argument("--ct", type=Path, help="CT whose grid the labels are aligned to")
    mesh.add_argument("--out", type=Path, required=True, help="mesh file to write")
    mesh.add_argument("--bone-label", default=None,
                      help="femur label value or name (default: inferred as for strength)")
    mesh.add_argument("--lesion-label", action="append", metavar="LABEL",
                      help="lesion label value or name, repeatable")
    mesh.add_argument("--mesh-size", type=float, default=3.0, metavar="MM",
                      help="element size in mm (default 3)")
    mesh.add_argument("--order", type=int, choices=(1, 2), default=1, help="node order")
    mesh.add_argument("--convention", choices=("LPS", "RAS", "ISB"), default="LPS",
                      help="world axes of a surface (ISB: x anterior, y superior, z right)")
    mesh.set_defaults(func=_cmd_mesh)

    cohort = sub.add_parser("cohort", help="batch runs over a cohort manifest; synthetic "
                            "cohorts")
    cohort_sub = cohort.add_subparsers(dest="cohort_command", required=True,
                                       metavar="ACTION")
    cohort_run = cohort_sub.add_parser(
        "run", help="run the FE pipeline for every case of a manifest (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Finished cases are skipped on a rerun; a failed case is reported "
        "without stopping the others.\n\nThe manifest (CSV, one row per femur):\n\n"
        + _manifest_schema())
    cohort_run.add_argument("manifest", type=Path, help="cohort manifest (CSV)")
    cohort_run.add_argument("--out", type=Path, required=True, help="output folder")
    cohort_run.add_argument("--workers", "--jobs", type=int, dest="workers",
                            help="parallel worker processes (default: cores); SLURM jobs "
                            "with --cluster slurm")
    cohort_run.add_argument("--engine", choices=("dask", "pool"), default="dask",
                            help="dask: a Dask cluster (default); pool: a local process pool")
    cohort_run.add_argument("--scheduler", metavar="ADDRESS",
                            help="join a running Dask scheduler (tcp://host:8786)")
    cohort_run.add_argument("--cluster", choices=("local", "slurm"), default="local",
                            help="without --scheduler: an embedded cluster (local) or a "
                            "dask-jobqueue SLURMCluster (options from jobqueue.yaml)")
    cohort_run.add_argument("--max-tries", type=int, default=2, metavar="N",
                            help="tries of a case whose worker process dies (default 2)")
    cohort_run.add_argument("--ranks-per-case", type=int, default=1, metavar="K",
                            help="MPI ranks of each case (mpiexec -n K per case; default 1)")
    cohort_run.add_argument("--array-task", nargs="?", const="env", metavar="INDEX",
                            help="run only the row(s) of this SLURM array index (default "
                            "$SLURM_ARRAY_TASK_ID), in this process; tables: rerun without")
    cohort_run.add_argument("--cases-per-task", type=int, default=1, metavar="K",
                            help="manifest rows per array task (default 1)")
    _add_model_options(cohort_run)
    cohort_run.set_defaults(func=_cmd_cohort_run)
    synth = cohort_sub.add_parser(
        "synth", help="generate a SYNTHETIC in-silico cohort from the phantom",
        description="Virtual patients (varied geometry, density, body weight, lesions) with "
        "outcomes drawn from a documented stochastic process independent of the predictors.")
    synth.add_argument("--n", type=int, required=True, help="number of femurs")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--workers", type=int, help="parallel processes")
    synth.add_argument("--cheap", action="store_true", help="coarse, fast mode (tests)")
    synth.set_defaults(func=_cmd_cohort_synth)

    bench = sub.add_parser(
        "benchmark", help="compare FE-based risk with Mirels, ACI and CTRA on a cohort",
        description="ROC AUC with confidence intervals and DeLong tests, sensitivity and "
        "specificity at the published thresholds, Brier score, calibration, decision curves; "
        "PNG plots, summary.md and summary.html.")
    bench.add_argument("cohort", type=Path, help="cohort table (CSV, risk.cohort schema)")
    bench.add_argument("--out", type=Path, required=True, help="output folder")
    bench.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    bench.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    bench.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds")
    bench.add_argument("--title", help="title of the report")
    bench.add_argument("--economics", type=Path, metavar="TOML",
                       help="cost/utility table overriding the cited defaults "
                       "(risk.economics.EconomicInputs fields, top level or [economics])")
    bench.set_defaults(func=_cmd_benchmark)

    report = sub.add_parser("report", help="HTML + PDF report of a strength result",
                            description="A self-contained HTML report and a PDF for "
                            "clinicians, optionally a DICOM Encapsulated PDF for the PACS.")
    report.add_argument("result_dir", type=Path, help="folder written by `osteofe strength`")
    report.add_argument("--out", type=Path, default=None,
                        help="output folder (default: RESULT_DIR)")
    report.add_argument("--dicom-study", type=Path, metavar="CT_DICOM_FOLDER",
                        help="also write report.dcm (Encapsulated PDF) of this CT: "
                        "de-identified with new UIDs unless --retain-uids or "
                        "--include-patient-identifiers")
    report.add_argument("--include-patient-identifiers", action="store_true",
                        help="copy patient name/ID from the DICOM study (default: case id "
                        "only)")
    report.add_argument("--retain-uids", action="store_true",
                        help="de-identified report.dcm in the CT's study: keep its study UID "
                        "and reference the CT slices (default: new UIDs, no references)")
    report.set_defaults(func=_cmd_report)

    mapper = sub.add_parser(
        "map", help="map CT density to Young's modulus on any tetrahedral mesh",
        description="Bonemat-style mapping: writes the mesh with per-element E_MPa, "
        "rho_ash_g_cm3 and HU; the extension of --out picks the format (.vtu, .xdmf, or an "
        "Abaqus/CalculiX .inp with material groups).")
    mapper.add_argument("--ct", type=Path, required=True, help="CT in HU")
    mapper.add_argument("--mesh", type=Path, required=True,
                        help="tetrahedral mesh in the CT's world coordinates (any meshio format)")
    mapper.add_argument("--out", type=Path, required=True, help="output mesh (.vtu/.xdmf/.inp)")
    cal = mapper.add_mutually_exclusive_group()
    cal.add_argument("--calibration", nargs=2, type=float, metavar=("SLOPE", "INTERCEPT"),
                     help="scanner line rho_QCT [g/cm3] = INTERCEPT + SLOPE * HU")
    cal.add_argument("--calibration-file", type=Path, metavar="TOML",
                     help="calibration table: scanner line, phantom rods, rod labels or "
                     "phantomless references")
    law_group = mapper.add_mutually_exclusive_group()
    law_group.add_argument("--law", default="morgan2003_neck", help="density-modulus law name")
    law_group.add_argument("--law-file", type=Path, metavar="TOML",
                           help="user-defined power/piecewise law")
    mapper.add_argument("--chain", default="mayo_schileo", help="rho_QCT -> ash -> app chain")
    mapper.add_argument("--mode", default="hu_average",
                        choices=("hu_average", "modulus_average", "centroid"),
                        help="HU averaged then converted, E averaged, or centroid lookup")
    mapper.add_argument("--quadrature-degree", type=int, default=2, help="1-9 (default 2)")
    mapper.add_argument("--groups", type=int, metavar="N",
                        help="bin E into N material groups (gap value) for other solvers")
    mapper.add_argument("--labels", type=Path, help="label map (for rod ROIs / references)")
    mapper.add_argument("--floor-tag", type=int, action="append", metavar="TAG",
                        help="cells with this region tag get the E floor (e.g. 2 = lesion)")
    mapper.add_argument("--e-floor", type=float, default=5.0, metavar="MPA",
                        help="lower bound of E (default 5 MPa)")
    mapper.add_argument("--poisson", type=float, default=0.3, help="Poisson's ratio")
    mapper.set_defaults(func=_cmd_map)

    solve = sub.add_parser(
        "solve", help="solve an Abaqus/CalculiX input deck with the osteofe solver",
        description="Read MODEL.inp (*NODE, *ELEMENT C3D4/C3D10, sets, *MATERIAL/*ELASTIC, "
        "*SOLID SECTION, one *STEP/*STATIC with *BOUNDARY, *CLOAD, *DLOAD) and solve it; "
        "unsupported keywords are reported by name and line.")
    solve.add_argument("model", type=Path, metavar="MODEL.inp", help="input deck")
    solve.add_argument("--out", type=Path, required=True, help="output folder")
    solve.add_argument("--loaded-set", metavar="NAME",
                       help="node set carrying the load: apply the Schileo criterion")
    solve.add_argument("--ignore-unsupported", action="store_true",
                       help="warn about unsupported keywords instead of refusing the deck")
    solve.add_argument("--allow-include-outside", action="store_true",
                       help="read *INCLUDE files outside the deck's folder too (refused by "
                       "default)")
    solve.add_argument("--pc", choices=("gamg", "jacobi", "lu"), help="PETSc preconditioner")
    solve.add_argument("--ksp-rtol", type=float, help="relative residual tolerance")
    solve.add_argument("--petsc-option", action="append", default=[], metavar="KEY=VALUE",
                       help="extra PETSc option, repeatable")
    solve.set_defaults(func=_cmd_solve)

    from osteofe.federated_tool import add_federated_parser

    add_federated_parser(sub)

    config = sub.add_parser("config", help="print or check the configuration")
    group = config.add_mutually_exclusive_group(required=True)
    group.add_argument("--print-default", action="store_true",
                       help="print the default configuration as documented TOML")
    group.add_argument("--check", type=Path, metavar="TOML", help="validate a config file")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = build_parser()
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", force=True)
    once = _Once()
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except OsteofeError as exc:
        if _rank() == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    except OSError as exc:  # a file-system fault outside the checked paths: no traceback
        if _rank() == 0:
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"error: {exc.strerror or exc}{where} (hint: check that the path exists "
                  "and is writable and that the disk has free space)", file=sys.stderr,
                  flush=True)
        return EXIT_INPUT
    except KeyboardInterrupt as exc:
        if _rank() == 0:
            print(f"interrupted: {str(exc) or 'no results were written'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except Exception:
        from mpi4py import MPI

        if MPI.COMM_WORLD.size == 1:
            raise
        # Under MPI every rank raises the same error (osteofe.parallel): one traceback.
        if _rank() == 0:
            import traceback

            traceback.print_exc()
            print("internal error: a bug, please report it with the traceback above",
                  file=sys.stderr, flush=True)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
