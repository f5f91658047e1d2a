"""Diagnosis: why the failure load from automatic labels differs from TotalSegmentator's.

On the TotalSegmentator example CT (3 mm voxels, ~54 mm of proximal femur, a partial model:
``--allow-partial``) the linear stance failure load of the right femur from the automatic
labels (``meshing.autoseg``) differs from the one from TotalSegmentator's labels by about
-25 % although the two label maps agree to Dice 0.95 / 0.8 mm. This script measures, in one
run (each ``osteofe strength`` run takes ~10 s on 1 core):

1. both runs: failure load, mode, critical point (distance to the head centre, height above
   the distal cut and the edge of the criterion's distal exclusion band, angle from the load
   patch's centre), and the material at the critical node (E of its cells, share of cells
   at the modulus floor and median HU within 3 mm);
2. the surfaces: signed distance of the automatic mesh surface to TotalSegmentator's
   (pyvista implicit distance, negative = inside) by region (head: within 1.1 head radii of
   its centre; the distal band: within 14 mm of the cut; the rest: neck and trochanters),
   and the landmarks and load of both runs (head centre and radius, neck axis, frame, load
   patch area, force);
3. voxel swaps between the two label maps, each run as a label map of its own: the
   TotalSegmentator-only voxels within 10 mm of the automatic run's critical point added to
   the automatic labels and removed from TotalSegmentator's, the same for every
   TotalSegmentator-only voxel below 110 HU (soft-tissue density), and both label maps
   with their lowest one or two slices removed (the distal cut moved by 3 and 6 mm).

4. (``--criterion-variants``) the TotalSegmentator and automatic labels and the two
   below-110-HU swaps under three ways of keeping the criterion off cells at the modulus
   floor (benchmarks/diag_bone_surface_criterion.py).

``--max-floor-share S`` runs the criterion with ``failure.max_floor_share = S`` (the
non-bone rule of fea.failure; default: the configuration's 0.5; 1 evaluates every surface
node, the criterion before the rule) and adds ``_S`` to the result's name.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diag_segmentation_strength.py
           [--criterion-variants] [--max-floor-share S]
Writes benchmarks/results/segmentation_strength_diag[_S].json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, save  # noqa: E402

from meshing.autoseg import LESION_CANDIDATE_LABEL, dice, segment_femurs  # noqa: E402
from meshing.imaging import read_ct, read_labels, write_labels  # noqa: E402
from meshing.types import LabelMap  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ct"
CT = DATA / "totalseg_example_ct.nii.gz"
FLOOR_MPA = 5.0


#: Extra ``osteofe strength`` arguments of every run (``--config`` for --max-floor-share).
EXTRA_ARGS: list[str] = []


def _strength(labels: Path, out: Path, surface: str | None = None) -> dict[str, Any]:
    """``osteofe strength`` on the example CT.

    ``surface``: a diag_bone_surface_criterion mode instead of the project's criterion.
    """
    launcher = ["-m", "osteofe"] if surface is None else [
        str(ROOT / "benchmarks" / "diag_bone_surface_criterion.py")]
    env = dict(os.environ) | ({} if surface is None else {"OSTEOFE_DIAG_SURFACE": surface})
    proc = subprocess.run(
        [sys.executable, *launcher, "-q", "strength", "--ct", str(CT), "--labels",
         str(labels), "--bone-label", "76", "--body-weight", "75", "--out", str(out),
         "--no-picture", "--allow-partial", *EXTRA_ARGS], cwd=ROOT, capture_output=True, text=True,
        check=False, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return dict(json.loads((out / "result.json").read_text()))


def _site(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Where the run fails and in what material."""
    import meshio

    case = result["cases"][0]
    lm = result["landmarks"]
    point = np.asarray(result["critical_point_mm"])
    centre = np.asarray(lm["head_centre_mm"])
    mesh = meshio.read(folder / "fields.vtu")
    points = mesh.points
    cells = mesh.cells_dict["tetra"]
    modulus = mesh.cell_data["E_MPa"][0]
    hu = mesh.cell_data["HU"][0]
    node = int(np.argmin(np.linalg.norm(points - point, axis=1)))
    at_node = np.flatnonzero((cells == node).any(axis=1))
    near = np.linalg.norm(points[cells].mean(axis=1) - point, axis=1) < 3.0
    axis = np.asarray(lm["shaft_axis"])
    above_cut = float((point - points[np.argmin(points @ axis)]) @ axis)
    excluded = min(result["config"]["failure"]["exclude_distal_mm"],
                   0.25 * lm["length_along_shaft_mm"])
    force = np.asarray(case["force_world_N"])
    patch_dir = -force / np.linalg.norm(force)
    rel = point - centre
    angle = math.degrees(math.acos(float(np.clip(rel @ patch_dir / np.linalg.norm(rel),
                                                 -1, 1))))
    return {"failure_load_N": round(result["failure_load_N"], 1),
            "mode": result["failure_mode"], "region": result["critical_region"],
            "critical_floor_share": case.get("critical_floor_share"),
            "non_bone_failure_load_N": case.get("non_bone_failure_load_N"),
            "critical_point_mm": result["critical_point_mm"],
            "distance_to_head_centre_mm": round(float(np.linalg.norm(rel)), 1),
            "head_radius_mm": lm["head_radius_mm"],
            "height_above_distal_cut_mm": round(above_cut, 1),
            "above_distal_exclusion_band_mm": round(above_cut - excluded, 1),
            "angle_from_load_patch_centre_deg": round(angle, 1),
            "load_patch_half_angle_deg": result["config"]["load"]["patch_half_angle_deg"],
            "E_of_cells_at_critical_node_MPa": np.round(np.sort(modulus[at_node]), 0).tolist(),
            "share_of_cells_at_modulus_floor_within_3mm": round(
                float(np.mean(modulus[near] <= FLOOR_MPA)), 2),
            "median_cell_HU_within_3mm": round(float(np.median(hu[near])), 0)}


def _landmarks(result: dict[str, Any]) -> dict[str, Any]:
    lm, case = result["landmarks"], result["cases"][0]
    return {"head_centre_mm": lm["head_centre_mm"], "head_radius_mm": lm["head_radius_mm"],
            "neck_axis": lm["neck_axis"], "frame_axes_world": lm["frame_axes_world"],
            "length_along_shaft_mm": lm["length_along_shaft_mm"],
            "load_patch_area_mm2": round(case["load_patch_area_mm2"], 1),
            "force_world_N": case["force_world_N"],
            "distal_cut": result["boundary_conditions"]["distal_cut"],
            "fixed_nodes": result["boundary_conditions"]["num_fixed_nodes"]}


def _surface_difference(auto_dir: Path, ts_dir: Path, centre: np.ndarray, radius: float
                        ) -> dict[str, Any]:
    import pyvista as pv

    auto = pv.read(auto_dir / "fields.vtu").extract_surface(algorithm="dataset_surface")
    ts = pv.read(ts_dir / "fields.vtu").extract_surface(algorithm="dataset_surface")
    signed = np.asarray(auto.compute_implicit_distance(ts)["implicit_distance"])
    pts = np.asarray(auto.points)
    dist = np.linalg.norm(pts - centre, axis=1)
    low = pts[:, 2].min()
    regions = {"head": dist < 1.1 * radius, "distal_band_14mm": pts[:, 2] < low + 14.0}
    regions["neck_trochanters"] = ~regions["head"] & ~regions["distal_band_14mm"]
    regions["all"] = np.ones(len(pts), dtype=bool)
    out = {}
    for name, keep in regions.items():
        s = signed[keep & ~(regions["head"] & (name == "distal_band_14mm"))]
        out[name] = {"points": int(s.size), "mean_signed_mm": round(float(s.mean()), 2),
                     "mean_abs_mm": round(float(np.abs(s).mean()), 2),
                     "share_inside_by_more_than_1mm": round(float(np.mean(s < -1.0)), 2),
                     "share_outside_by_more_than_1mm": round(float(np.mean(s > 1.0)), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion-variants", action="store_true",
                        help="also run the TotalSegmentator and automatic labels and the "
                        "below-110-HU swaps under the three surface variants of "
                        "diag_bone_surface_criterion.py (12 more runs)")
    parser.add_argument("--max-floor-share", type=float, default=None,
                        help="failure.max_floor_share of every run (default: the config's)")
    args = parser.parse_args()
    ct = read_ct(CT)
    ref = read_labels(DATA / "totalseg_example_seg.nii.gz")
    seg = segment_femurs(ct, refuse=False)
    auto = np.isin(seg.labels.labels, (76, LESION_CANDIDATE_LABEL))
    ts = ref.labels == 76
    world = ct.grid.index_to_world(np.indices(ct.grid.shape).reshape(3, -1).T).reshape(
        *ct.grid.shape, 3)
    payload: dict[str, Any] = {"provenance": provenance(ranks=1),
                               "dice_auto_vs_ts": round(dice(auto, ts), 4)}
    payload["max_floor_share"] = args.max_floor_share
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.max_floor_share is not None:
            config = tmp / "floor.toml"
            config.write_text(f"[failure]\nmax_floor_share = {args.max_floor_share}\n")
            EXTRA_ARGS[:] = ["--config", str(config)]

        def run(name: str, mask: np.ndarray, surface: str | None = None
                ) -> tuple[dict[str, Any], Path]:
            path = tmp / f"{name}.nii.gz"
            write_labels(LabelMap(grid=ct.grid, labels=np.where(mask, 76, 0).astype(np.int32),
                                  names={76: "femur_right"}), path)
            folder = tmp / f"{name}_{surface}"
            return _strength(path, folder, surface), folder

        ts_result, ts_dir = run("totalsegmentator", ts)
        auto_result, auto_dir = run("automatic", auto)
        payload["runs"] = {"totalsegmentator": _site(ts_result, ts_dir),
                           "automatic": _site(auto_result, auto_dir)}
        payload["landmarks_and_load"] = {"totalsegmentator": _landmarks(ts_result),
                                         "automatic": _landmarks(auto_result)}
        payload["surface_auto_vs_ts"] = _surface_difference(
            auto_dir, ts_dir, np.asarray(ts_result["landmarks"]["head_centre_mm"]),
            float(ts_result["landmarks"]["head_radius_mm"]))
        site = np.asarray(auto_result["critical_point_mm"])
        near = np.linalg.norm(world - site, axis=-1) < 10.0
        soft = np.asarray(ct.hu) < 110.0
        ts_only = ts & ~auto
        swaps = {
            "auto_plus_ts_only_within_10mm_of_auto_site": (auto | (ts_only & near), auto),
            "ts_minus_ts_only_within_10mm_of_auto_site": (ts & ~(ts_only & near), ts),
            "auto_plus_ts_only_below_110HU": (auto | (ts_only & soft), auto),
            "ts_minus_ts_only_below_110HU": (ts & ~(ts_only & soft), ts),
        }
        for cut in (1, 2):
            for name, mask in (("ts", ts), ("auto", auto)):
                moved = mask.copy()
                moved[:, :, :cut] = False  # the image's k axis is world +z (inferior first)
                swaps[f"{name}_distal_cut_moved_{3 * cut}mm"] = (moved, mask)
        payload["voxel_swaps"] = {}
        for name, (mask, base) in swaps.items():
            result, folder = run(name, mask)
            entry = {"voxels_changed": int(np.count_nonzero(mask != base)),
                     "dice_to_ts": round(dice(mask, ts), 4)}
            entry |= (_site(result, folder) if "error" not in result else result)
            payload["voxel_swaps"][name] = entry
        if args.criterion_variants:
            payload["criterion_surface_variants"] = {}
            masks = {"totalsegmentator": ts, "automatic": auto,
                     "auto_plus_ts_only_below_110HU": auto | (ts_only & soft),
                     "ts_minus_ts_only_below_110HU": ts & ~(ts_only & soft)}
            for surface in ("drop", "layer", "connected"):
                rows: dict[str, Any] = {}
                for name, mask in masks.items():
                    result, folder = run(name, mask, surface)
                    rows[name] = _site(result, folder) if "error" not in result else result
                loads = {k: v.get("failure_load_N") for k, v in rows.items()}
                rows["auto_vs_ts"] = round(loads["automatic"] / loads["totalsegmentator"] - 1,
                                           4)
                rows["auto_plus_soft_vs_auto"] = round(
                    loads["auto_plus_ts_only_below_110HU"] / loads["automatic"] - 1, 4)
                rows["ts_minus_soft_vs_ts"] = round(
                    loads["ts_minus_ts_only_below_110HU"] / loads["totalsegmentator"] - 1, 4)
                payload["criterion_surface_variants"][surface] = rows
    loads = payload["runs"]
    payload["relative_difference_auto_vs_ts"] = round(
        loads["automatic"]["failure_load_N"] / loads["totalsegmentator"]["failure_load_N"] - 1,
        4)
    name = "segmentation_strength_diag" + (
        "" if args.max_floor_share is None else f"_{args.max_floor_share:g}")
    path = save(name, payload)
    print(json.dumps(payload, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
