"""The public Python API: :func:`analyze` one femur, get a :class:`StrengthResult`.

Example (the built-in phantom; ``docs/example_analyze.py`` is this example, run as a test)::

    import osteofe
    from meshing.phantom import PhantomParams, make_phantom, write_phantom

    paths = write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.0)), "phantom")
    result = osteofe.analyze(paths["ct"], paths["labels"], body_mass_kg=75,
                             loads=("stance", "fall"), mesh_size_mm=5)
    print(result.governing.load_case, round(result.failure_load_N), "N")
    for case in result.cases:
        print(case.load_case, case.failure_load_N, case.load_to_strength_ratio)
    result.to_json()   # what result.json holds
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from osteofe.config import Config
from osteofe.result import StrengthResult

__all__ = ["analyze", "load_result"]


def analyze(
    ct: str | Path,
    labels: str | Path | None = None,
    *,
    body_mass_kg: float,
    out: str | Path | None = None,
    config: Config | str | Path | None = None,
    loads: Sequence[str] | None = None,
    mesh_size_mm: float | None = None,
    degree: int | None = None,
    sweep: int | None = None,
    calibration: tuple[float, float] | None = None,
    bone_label: int | str | None = None,
    lesion_labels: Sequence[int | str] = (),
    side: str | None = None,
    pain: str | None = None,
    mesh: str | Path | None = None,
    case_id: str = "case",
    picture: bool = False,
    report: bool = False,
) -> StrengthResult:
    """Femoral strength of one CT: mesh, material, FE solve per load case, failure load.

    The same analysis as ``osteofe strength`` (:func:`osteofe.pipeline.run_strength`); the
    keyword arguments are its command-line options.

    Args:
        ct: CT image (NIfTI/NRRD/MHA file or DICOM folder), in HU.
        labels: Label map on the CT's grid (or give ``mesh``).
        body_mass_kg: Body mass, kg (1 BW = m x 9.81 N).
        out: Folder for result.json, fields.vtu (and the picture, report); None writes into a
            temporary folder that is removed afterwards (the returned result is kept).
        config: A :class:`~osteofe.config.Config`, or a TOML file; None for the defaults.
        loads: Load cases (``"stance"``, ``"stairs_up"``, ``"stairs_down"``,
            ``"stumbling"``, ``"fall"``); None keeps the configuration's.
        mesh_size_mm: Target element size, mm.
        degree: Displacement degree, 1 or 2 (default 2).
        sweep: Number of load directions to sweep around each case (``--sweep``).
        calibration: Scanner line ``(slope, intercept)``: rho_QCT [g/cm^3] = intercept +
            slope x HU. None uses the configuration's, else a generic line (with a warning).
        bone_label: Femur label value or name; None infers it
            (:func:`meshing.segmentation.resolve_bone_label`).
        lesion_labels: Lesion label values or names (must exist); empty: those named as
            lesions, or 2 in osteofe's 0/1/2 convention.
        side: ``"left"``/``"right"`` when known (checked against the anatomy).
        pain: Mirels pain item (``"mild"``, ``"moderate"``, ``"functional"``).
        mesh: A tetrahedral mesh made elsewhere, instead of meshing ``labels``.
        case_id: Identifier written into the result (no other patient identifier is).
        picture: Also render ``femur_risk.png`` (needs ``out`` to keep it).
        report: Also write ``report.html`` and ``report.pdf``.

    Returns:
        The typed result (:class:`~osteofe.result.StrengthResult`).

    Raises:
        OsteofeError: On invalid input (the message names the problem and the fix); nothing
            is written.
    """
    from material.calibration import LinearCalibration
    from osteofe.config import load_config
    from osteofe.pipeline import StrengthRequest, run_strength

    if config is None:
        cfg = Config()
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = load_config(config)
    cfg = cfg.override("load", cases=tuple(loads) if loads else None, sweep_directions=sweep)
    cfg = cfg.override("mesh", size_mm=mesh_size_mm)
    cfg = cfg.override("solver", degree=degree)
    line = None if calibration is None else LinearCalibration(
        float(calibration[0]), float(calibration[1]), name="api",
        source="scanner line given to osteofe.analyze")
    request = StrengthRequest(
        ct_path=Path(ct), labels_path=None if labels is None else Path(labels),
        mesh_path=None if mesh is None else Path(mesh), body_mass_kg=float(body_mass_kg),
        bone_label=bone_label, lesion_labels=tuple(lesion_labels) or (2,),
        lesion_labels_required=bool(lesion_labels), case_id=case_id, pain=pain, side=side)
    if out is not None:
        return run_strength(request, cfg, out, calibration=line, picture=picture,
                            report=report)
    with tempfile.TemporaryDirectory(prefix="osteofe-analyze-") as tmp:
        return run_strength(request, cfg, Path(tmp) / "result", calibration=line,
                            picture=picture, report=report)


def load_result(path: str | Path) -> StrengthResult:
    """Read a result folder (or its result.json) written by ``osteofe strength``."""
    return StrengthResult.load(path)
