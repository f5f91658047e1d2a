"""Automatic femur segmentation (meshing.autoseg): accuracy, wall time, and failure load.

Measured in one run:

1. the real TotalSegmentator example CT (../shared/data/ct, 122 x 101 x 112 voxels at 3 mm):
   Dice and symmetric mean surface distance of the automatic femurs against TotalSegmentator's
   own femur_right / femur_left labels, and the wall time of ``segment_femurs`` (best of
   ``--repeat``) with ``--threads`` BLAS/OpenMP threads;
2. the synthetic phantom with noise (30 HU), blur (0.7 mm) and a touching pelvis-like
   acetabular shell (2 mm joint space), 1.0 mm voxels: Dice, surface distance, wall time;
3. the wall time of ``segment_femurs`` on a CT of the size TotalSegmentator quotes for its
   --fast CPU time (57 s for a 512 x 512 x 807 CT; Wasserthal et al. 2023, Radiol Artif
   Intell 5:e230024, and the TotalSegmentator README): the example CT resampled (linear,
   SimpleITK) onto 512 x 512 x 807 voxels over its own field of view (0.72 x 0.59 x 0.42
   mm), so the anatomy and the work per voxel are those of a real scan; segmented through
   the working grid (``AutoSegParams.work_spacing_mm``), with Dice and mean surface distance
   against TotalSegmentator's labels brought onto the same grid (nearest neighbour) and the
   process's peak memory;
4. (``--strength``) the linear stance failure load of the right femur from the automatic
   labels against the one from TotalSegmentator's labels (``osteofe strength``,
   ``--allow-partial``: the CT holds only 54 mm of femur, so neither number is clinically
   valid; the comparison is of the labels' effect on the same model), and the same on the
   built-in 1 mm phantom (automatic vs its true labels, 5 mm elements); on the real CT also
   with both models fixed the same way (the distal 2 mm slab, diag_fixation_segmentation.py):
   ``fea.loads.distal_cut`` finds no cut plane on TotalSegmentator's labels (slab fixed) but
   a partial one (~800 of ~2000 mm^2) on the automatic labels.

Usage: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_segmentation.py [--repeat 3]
           [--strength]
Writes benchmarks/results/segmentation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, save  # noqa: E402

from meshing.autoseg import (  # noqa: E402
    LESION_CANDIDATE_LABEL,
    dice,
    mean_surface_distance,
    segment_femurs,
)
from meshing.imaging import read_ct, read_labels  # noqa: E402
from meshing.phantom import PhantomParams, make_phantom  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ct"
#: TotalSegmentator --fast on CPU for a 512 x 512 x 807 CT (its README / paper), seconds.
TOTALSEG_FAST_CPU_S = 57.0


def _timed(fn: Any, repeat: int) -> tuple[Any, float]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, float(best)


def real_case(repeat: int) -> dict[str, Any]:
    ct = read_ct(DATA / "totalseg_example_ct.nii.gz")
    ref = read_labels(DATA / "totalseg_example_seg.nii.gz")
    seg, wall = _timed(lambda: segment_femurs(ct, refuse=False, keep_refused=True), repeat)
    femurs = {}
    for conf in seg.femurs:
        # lesion candidates are part of the femur they lie in (only one femur here holds any)
        auto = np.isin(seg.labels.labels, (conf.label, LESION_CANDIDATE_LABEL))
        truth = ref.labels == conf.label
        entry = conf.to_dict()
        if conf.accepted and auto.any():
            entry["dice"] = round(dice(auto, truth), 4)
            entry["mean_surface_distance_mm"] = round(
                mean_surface_distance(auto, truth, ct.grid.spacing), 3)
        elif seg.refused is not None:
            # what the refusal kept out of the label map, measured against TotalSegmentator
            candidate = seg.refused.labels == conf.label
            entry["refused_candidate_dice"] = round(dice(candidate, truth), 4)
            entry["refused_candidate_mean_surface_distance_mm"] = round(
                mean_surface_distance(candidate, truth, ct.grid.spacing), 3)
        femurs[conf.side] = entry
    return {"shape": list(ct.grid.shape), "spacing_mm": ct.grid.spacing.tolist(),
            "voxels": int(np.prod(ct.grid.shape)), "wall_s": round(wall, 3), "femurs": femurs,
            "lesion_candidates": [c.to_dict() for c in seg.lesions]}


def phantom_case(repeat: int) -> dict[str, Any]:
    params = PhantomParams(voxel_size_mm=1.0, acetabulum_mm=5.0, joint_space_mm=2.0,
                           noise_sd_hu=30.0, blur_sigma_mm=0.7, distal_cut_mm=120.0)
    phantom = make_phantom(params)
    seg, wall = _timed(lambda: segment_femurs(phantom.ct), repeat)
    auto = np.isin(seg.labels.labels, (76, LESION_CANDIDATE_LABEL))
    truth = np.isin(phantom.labels.labels, (1, 2))
    pelvis = phantom.labels.labels == 3
    femur = seg.femurs[0]
    return {"params": {k: v for k, v in params.to_dict().items()
                       if k in ("voxel_size_mm", "acetabulum_mm", "joint_space_mm",
                                "noise_sd_hu", "blur_sigma_mm", "distal_cut_mm")},
            "shape": list(phantom.ct.grid.shape), "voxels": int(np.prod(phantom.ct.grid.shape)),
            "wall_s": round(wall, 3), "dice": round(dice(auto, truth), 4),
            "mean_surface_distance_mm": round(
                mean_surface_distance(auto, truth, phantom.ct.grid.spacing), 3),
            "pelvis_voxels_taken": int(np.count_nonzero(auto & pelvis)),
            "head_centre_error_mm": round(float(np.linalg.norm(
                femur.head_centre_mm - phantom.truth.head_centre_mm)), 2),
            "femur": femur.to_dict()}


def large_case(repeat: int) -> dict[str, Any]:
    """``segment_femurs`` on the example CT resampled to 512 x 512 x 807 voxels."""
    import resource

    import SimpleITK as sitk

    from meshing.types import CTVolume, ImageGrid

    ct = read_ct(DATA / "totalseg_example_ct.nii.gz")
    ref = read_labels(DATA / "totalseg_example_seg.nii.gz")
    size = (512, 512, 807)
    spacing = np.asarray(ct.grid.shape) * ct.grid.spacing / np.asarray(size)
    direction = np.asarray(ct.grid.direction).reshape(3, 3)
    origin = np.asarray(ct.grid.origin) + direction @ (0.5 * (spacing - ct.grid.spacing))

    def image(array: np.ndarray) -> Any:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        img.SetSpacing(tuple(float(v) for v in ct.grid.spacing))
        img.SetOrigin(tuple(float(v) for v in ct.grid.origin))
        img.SetDirection(tuple(float(v) for v in direction.ravel()))
        return img

    def resample(array: np.ndarray, interpolator: int, default: float, pixel: int
                 ) -> np.ndarray:
        out = sitk.Resample(image(array), list(size), sitk.Transform(), interpolator,
                            tuple(origin), tuple(spacing), tuple(direction.ravel()), default,
                            pixel)
        return np.asarray(sitk.GetArrayFromImage(out)).transpose(2, 1, 0)

    hu = resample(np.asarray(ct.hu, dtype=np.float32), sitk.sitkLinear, -1024.0,
                  sitk.sitkFloat32)
    big = CTVolume(grid=ImageGrid(shape=size, spacing=spacing, origin=origin,
                                  direction=direction), hu=hu)
    del hu
    truth_all = resample(ref.labels.astype(np.int16), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkInt16)
    seg, wall = _timed(lambda: segment_femurs(big, refuse=False), repeat)
    femurs = {}
    for conf in seg.femurs:
        entry = conf.to_dict()
        if conf.accepted:
            auto = np.isin(seg.labels.labels, (conf.label, LESION_CANDIDATE_LABEL))
            truth = truth_all == conf.label
            both = np.argwhere(auto | truth)
            box = tuple(slice(max(int(a) - 2, 0), int(b) + 3)
                        for a, b in zip(both.min(axis=0), both.max(axis=0), strict=True))
            entry["dice"] = round(dice(auto, truth), 4)
            entry["mean_surface_distance_mm"] = round(
                mean_surface_distance(auto[box], truth[box], spacing), 3)
        femurs[conf.side] = entry
    return {"shape": list(size), "spacing_mm": [round(float(v), 4) for v in spacing],
            "voxels": int(np.prod(size)), "wall_s": round(wall, 2),
            "working_grid": seg.extra.get("working_grid"),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "femurs": femurs}


def strength_case(phantom: bool = False, same_fixation: bool = False) -> dict[str, Any]:
    """Failure load from reference vs automatic labels (real CT, or the 1 mm phantom).

    ``same_fixation``: both models fixed by the distal slab (benchmarks/
    diag_fixation_segmentation.py) instead of the cut plane ``fea.loads.distal_cut`` finds,
    which on the 3 mm example CT differs between the two label maps.
    """
    env = dict(os.environ)
    out: dict[str, Any] = {}
    launcher = ([str(ROOT / "benchmarks" / "diag_fixation_segmentation.py")] if same_fixation
                else ["-m", "osteofe"])
    with tempfile.TemporaryDirectory() as tmp:
        if phantom:
            from meshing.phantom import write_phantom

            files = write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.0)), Path(tmp))
            ct = files["ct"]
            runs = (("reference_labels", ["--labels", str(files["labels"])]),
                    ("automatic_labels", []))
            options = ["--mesh-size", "5"]
        else:
            ct = DATA / "totalseg_example_ct.nii.gz"
            runs = (("reference_labels", ["--labels", str(DATA / "totalseg_example_seg.nii.gz"),
                                          "--bone-label", "femur_right"]),
                    ("automatic_labels", ["--side", "right"]))
            options = ["--allow-partial"]
        for name, extra in runs:
            folder = Path(tmp) / name
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, *launcher, "-q", "strength", "--ct", str(ct), *extra,
                 "--body-weight", "75", "--out", str(folder), "--no-picture", *options],
                cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                out[name] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            result = json.loads((folder / "result.json").read_text())
            case = result["cases"][0]
            out[name] = {"failure_load_N": round(result["failure_load_N"], 1),
                         "critical_region": result["critical_region"],
                         "critical_floor_share": case.get("critical_floor_share"),
                         "non_bone_failure_load_N": case.get("non_bone_failure_load_N"),
                         "cautions": result["validity"].get("cautions", []),
                         "segmentation": result.get("segmentation"),
                         "wall_s": round(time.perf_counter() - start, 1)}
    loads = [out[k].get("failure_load_N") for k in ("reference_labels", "automatic_labels")]
    if all(isinstance(v, float) for v in loads):
        out["relative_difference"] = round(abs(loads[1] - loads[0]) / loads[0], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strength", action="store_true",
                        help="also compare the failure loads (two osteofe strength runs)")
    args = parser.parse_args()
    payload: dict[str, Any] = {"provenance": provenance(ranks=1),
                               "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                               "note": "timings on the shared 2-core machine (load average "
                               f"{os.getloadavg()[0]:.1f} at the start)"}
    payload["phantom"] = phantom_case(args.repeat)
    if DATA.is_dir():
        payload["real_example_ct"] = real_case(args.repeat)
        large = large_case(1)
        payload["ct_512x512x807"] = large
        payload["vs_totalsegmentator_fast"] = {
            "published_cpu_s_512x512x807": TOTALSEG_FAST_CPU_S,
            "ours_measured_s_512x512x807": large["wall_s"],
            "ratio": round(large["wall_s"] / TOTALSEG_FAST_CPU_S, 3),
            "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "caveat": "TotalSegmentator's figure is its README's, on its authors' CPU; ours on "
            "this shared 2-core machine (other jobs running), reading the CT not included",
        }
        if args.strength:
            payload["failure_load_real_ct"] = strength_case()
            payload["failure_load_real_ct_same_fixation"] = strength_case(same_fixation=True)
    if args.strength:
        payload["failure_load_phantom"] = strength_case(phantom=True)
    path = save("segmentation", payload)
    print(json.dumps(payload, indent=2, default=str))
    print(f"written {path}")


if __name__ == "__main__":
    main()
