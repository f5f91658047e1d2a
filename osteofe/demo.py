"""The demo: the built-in phantom intact and with a lesion, run through the whole pipeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast

from mpi4py import MPI

from material.calibration import LinearCalibration
from meshing.phantom import LesionParams, PhantomParams, make_phantom, write_phantom
from osteofe.config import Config
from osteofe.outputs import check_output_dir, write_json
from osteofe.parallel import on_root
from osteofe.pipeline import StrengthRequest, run_strength
from osteofe.result import StrengthResult

__all__ = ["build_phantom", "run_demo"]

LesionKind = Literal["lytic", "blastic", "mixed"]


def _lesion(site: str | None, radius_mm: float, kind: str) -> LesionParams | None:
    if site is None:
        return None
    return LesionParams(site=site, radius_mm=radius_mm, kind=cast(LesionKind, kind))


def build_phantom(
    out_dir: str | Path,
    *,
    lesion_site: str | None = None,
    lesion_radius_mm: float = 12.0,
    lesion_kind: str = "lytic",
    voxel_mm: float | None = None,
    noise_hu: float | None = None,
) -> dict[str, Path]:
    """Write the phantom CT, labels and truth JSON into ``out_dir`` (rank 0 only).

    Raises:
        OutputError: ``out_dir`` cannot be written (checked before the phantom is built).
    """
    check_output_dir(out_dir)
    params = PhantomParams()
    if voxel_mm is not None:
        params = replace(params, voxel_size_mm=voxel_mm)
    if noise_hu is not None:
        params = replace(params, noise_sd_hu=noise_hu)
    phantom = make_phantom(params, _lesion(lesion_site, lesion_radius_mm, lesion_kind))
    return write_phantom(phantom, out_dir)


def run_demo(
    out_dir: str | Path,
    *,
    config: Config | None = None,
    body_mass_kg: float = 75.0,
    lesion_site: str = "calcar",
    lesion_radius_mm: float = 12.0,
    lesion_kind: str = "lytic",
    quiet: bool = False,
    progress_factory: Callable[[str], Any] | None = None,
    picture: bool = True,
) -> dict[str, Any]:
    """Build the phantom intact and lesioned, compute both strengths, write summary.json.

    Collective under MPI (phantoms are built on rank 0). Returns the summary dictionary.

    Raises:
        OutputError: ``out_dir`` cannot be written (checked on rank 0 before any work, on
            every rank).
    """
    comm = MPI.COMM_WORLD
    out = Path(out_dir)
    on_root(comm, lambda: check_output_dir(out), broadcast=False)
    config = config or Config()
    results: list[StrengthResult] = []
    truths: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    lesions = {"intact": None, "lesion": (lesion_site, lesion_radius_mm, lesion_kind)}
    for name, lesion in lesions.items():
        start = time.perf_counter()
        input_dir = out / f"phantom_{name}"
        paths: dict[str, Path] | None = None
        truth: dict[str, Any] | None = None
        if comm.rank == 0:
            phantom = make_phantom(PhantomParams(), _lesion(*lesion) if lesion else None)
            paths = write_phantom(phantom, input_dir)
            truth = phantom.truth.to_dict()
        paths, truth = comm.bcast((paths, truth), root=0)
        assert paths is not None and truth is not None
        calibration = LinearCalibration(
            truth["calibration_slope"], truth["calibration_intercept"],
            name="phantom_line", source="the built-in phantom's own HU-density line",
        )
        request = StrengthRequest(ct_path=paths["ct"], labels_path=paths["labels"],
                                  body_mass_kg=body_mass_kg, case_id=f"phantom_{name}")
        progress = progress_factory(f"phantom_{name} ") if progress_factory else None
        try:
            result = run_strength(request, config, out / name, calibration=calibration,
                                  progress=progress, picture=picture)
        finally:
            if progress is not None:
                progress.close()
        truths.append(truth)
        results.append(result)
        timings[name] = round(time.perf_counter() - start, 3)
    intact, lesioned = results
    summary = {
        "body_mass_kg": body_mass_kg,
        "lesion": {"site": lesion_site, "radius_mm": lesion_radius_mm, "kind": lesion_kind},
        "cases": [
            {"case_id": res.case_id, "failure_load_N": res.failure_load_N,
             "failure_load_BW": res.failure_load_BW, "load_case": res.governing.load_case,
             "failure_mode": res.governing.failure_mode,
             "critical_point_mm": list(res.governing.critical_point_mm),
             "critical_region": res.governing.critical_region,
             "output_dir": str(out / name), "phantom_truth": truth}
            for name, res, truth in zip(lesions, results, truths, strict=True)
        ],
        "lesion_to_intact_ratio": lesioned.failure_load_N / intact.failure_load_N,
        "timings_s": timings,
    }
    if comm.rank == 0:
        write_json(out / "summary.json", summary)
    summary["results"] = results
    return summary
