"""What the report's first page adds for a clinician: CT slices, one sentence, the study check.

- :func:`ct_slices_png`: an axial and a coronal CT slice through the failure point, marked,
  with the slice numbers, drawn from the analysed CT (only when its SHA-256 matches the one
  recorded in result.json, so that the picture is of the scan that was analysed);
- :func:`plain_sentence`: the result in one sentence without jargon;
- :func:`ct_fingerprint` / :func:`check_same_scan`: a format-independent record of the
  analysed CT (world bounds, voxel size, HU statistics), written into result.json by the
  pipeline, against which ``osteofe report --dicom-study`` checks that the DICOM study it
  files the report into is the analysed CT (a NIfTI converted from the series matches; a
  different scan or series does not).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from meshing.errors import InputError
from meshing.types import CTVolume
from osteofe.result import CtFingerprint, InputFile

__all__ = ["check_same_scan", "ct_fingerprint", "ct_slices_png", "plain_sentence"]

#: Display window of the slices, HU (a bone window: level 400, width 1800).
_WINDOW_HU = (-500.0, 1300.0)
#: Half width of the field of view around the failure point, mm.
_FOV_MM = 70.0
#: Plain words for the built-in load cases.
_ACTIVITY = {
    "stance": "standing on one leg (walking)",
    "stairs_up": "climbing stairs",
    "stairs_down": "going down stairs",
    "stumbling": "stumbling",
    "fall": "a sideways fall onto the hip",
}


def ct_fingerprint(ct: CTVolume) -> dict[str, Any]:
    """A record of a CT that survives conversion between formats (DICOM <-> NIfTI/NRRD).

    Args:
        ct: The CT as read (HU, world geometry).

    Returns:
        JSON-ready ``{"shape_sorted", "spacing_mm_sorted", "bounds_mm", "hu_mean",
        "hu_std", "hu_percentiles"}``: voxel counts and sizes sorted (a converter may
        reorder the axes), the world bounding box of the voxel centres (mm), the HU mean,
        standard deviation (every voxel; independent of the voxel order) and the 5/50/95 %
        percentiles of a fixed subsample (for the record, not compared).
    """
    lo, hi = ct.grid.world_bounds()
    hu = np.asarray(ct.hu, dtype=np.float64)
    sample = hu.reshape(-1)[::97]  # percentiles only: they need a sort
    return {
        "shape_sorted": sorted(int(n) for n in ct.grid.shape),
        "spacing_mm_sorted": sorted(round(float(s), 5) for s in ct.grid.spacing),
        "bounds_mm": [np.round(lo, 3).tolist(), np.round(hi, 3).tolist()],
        "hu_mean": round(float(hu.mean()), 3),
        "hu_std": round(float(hu.std()), 3),
        "hu_percentiles": np.round(np.percentile(sample, [5, 50, 95]), 2).tolist(),
    }


def check_same_scan(recorded: CtFingerprint | None, ct: CTVolume, where: str) -> None:
    """Refuse a CT that is not the analysed one.

    The geometry must agree (voxel counts exactly, voxel sizes to 0.5 %, the world bounding
    box to one voxel) and the HU distribution closely (mean and standard deviation to 2 %
    of the standard deviation): conversion keeps them, another scan or series does not.

    Args:
        recorded: The result's ``ct_fingerprint`` (None: an older result without it).
        ct: The CT to check, e.g. read from the DICOM study.
        where: How to name that CT in the message.

    Raises:
        InputError: naming what differs, or that the result holds no fingerprint.
    """
    if recorded is None:
        raise InputError(
            f"result.json records no fingerprint of the analysed CT to check {where} against",
            hint="rerun `osteofe strength` with this osteofe version, then the report")
    now = CtFingerprint.from_dict(ct_fingerprint(ct))
    spacing = min(now.spacing_mm_sorted)
    problems = []
    if now.shape_sorted != recorded.shape_sorted:
        problems.append(f"voxel counts {list(now.shape_sorted)} vs "
                        f"{list(recorded.shape_sorted)}")
    if not np.allclose(now.spacing_mm_sorted, recorded.spacing_mm_sorted, rtol=5e-3):
        problems.append(f"voxel sizes {list(now.spacing_mm_sorted)} vs "
                        f"{list(recorded.spacing_mm_sorted)} mm")
    if not np.allclose(now.bounds_mm, recorded.bounds_mm, atol=spacing):
        problems.append("the scanned region (world bounds) differs")
    scale = max(recorded.hu_std, 1.0)
    if (abs(now.hu_mean - recorded.hu_mean) > 0.02 * scale
            or abs(now.hu_std - recorded.hu_std) > 0.02 * scale):
        problems.append(f"HU mean/std {now.hu_mean:.1f}/{now.hu_std:.1f} vs "
                        f"{recorded.hu_mean:.1f}/{recorded.hu_std:.1f}")
    if problems:
        raise InputError(f"{where} is not the CT that was analysed: " + "; ".join(problems),
                         hint="give the DICOM series the strength was computed from")


def _axis_of(direction: np.ndarray, world_axis: int) -> int:
    """The image index axis most aligned with a world axis."""
    return int(np.argmax(np.abs(direction[world_axis, :])))


def ct_slices_png(ct: CTVolume, point_mm: tuple[float, float, float], *, title: str = "",
                  dpi: int = 150) -> tuple[bytes, str]:
    """Axial and coronal CT slices through the failure point, the point marked.

    Shown in the radiological convention (patient's right on the left of the picture,
    anterior up in the axial slice, superior up in the coronal one), in millimetres, bone
    window. The image axes are taken as the scanner's (a tilted acquisition is shown in its
    own axes, its millimetre labels then approximate). Slice numbers are 1-based image
    indices along the image axis normal to the slice (what a viewer shows as the image
    number of a reformatted series may differ).

    Args:
        ct: The analysed CT.
        point_mm: (3,) failure point, scanner (world, LPS) coordinates, mm.
        title: Optional line above the two slices.
        dpi: Resolution of the PNG.

    Returns:
        The PNG bytes and a caption naming the slice numbers.

    Raises:
        InputError: If the point lies outside the CT.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = ct.grid
    point = np.asarray(point_mm, dtype=np.float64)
    index = np.rint(grid.world_to_index(point[None])[0]).astype(int)
    shape = np.asarray(grid.shape)
    if np.any(index < 0) or np.any(index >= shape):
        raise InputError(f"failure point {point.round(1).tolist()} mm lies outside the CT",
                         hint="the CT is not the one the result was computed from")
    direction = np.asarray(grid.direction)
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.5), dpi=dpi)
    captions = []
    for ax, (plane, normal, vertical) in zip(
            axes, (("axial", 2, 1), ("coronal", 1, 2)), strict=True):
        axis = _axis_of(direction, normal)
        k = int(index[axis])
        others = [a for a in range(3) if a != axis]
        # The in-plane image axis along world x (horizontal) and the other one (vertical).
        h_ax = max(others, key=lambda a: abs(direction[0, a]))
        v_ax = others[0] if h_ax == others[1] else others[1]
        plane_hu = np.take(np.asarray(ct.hu), k, axis=axis)  # dims: others, in order
        image = plane_hu.T if h_ax == others[0] else plane_hu  # rows: v_ax, columns: h_ax
        hs = grid.origin[0] + direction[0, h_ax] * grid.spacing[h_ax] * np.arange(shape[h_ax])
        vs = (grid.origin[vertical]
              + direction[vertical, v_ax] * grid.spacing[v_ax] * np.arange(shape[v_ax]))
        # Radiological: x (towards the patient's left, LPS) grows to the right; axial rows
        # top to bottom anterior to posterior (y grows down), coronal superior to inferior.
        if hs[0] > hs[-1]:
            image, hs = image[:, ::-1], hs[::-1]
        up_is_increasing = vertical == 2
        if (vs[0] < vs[-1]) == up_is_increasing:
            image, vs = image[::-1, :], vs[::-1]
        dh = abs(float(hs[-1] - hs[0])) / max(len(hs) - 1, 1)
        dv = abs(float(vs[-1] - vs[0])) / max(len(vs) - 1, 1)
        top, bottom = float(vs[0]), float(vs[-1])
        pad_v = dv / 2 if top > bottom else -dv / 2
        extent = (float(hs[0]) - dh / 2, float(hs[-1]) + dh / 2, bottom - pad_v, top + pad_v)
        ax.imshow(image, cmap="gray", vmin=_WINDOW_HU[0], vmax=_WINDOW_HU[1], extent=extent,
                  origin="upper", interpolation="nearest")
        px, py = point[0], point[vertical]
        ax.plot([px], [py], marker="o", ms=14, mfc="none", mec="#ff00ff", mew=1.8)
        ax.plot([px], [py], marker="+", ms=8, color="#ff00ff", mew=1.2)
        ax.set_xlim(px - _FOV_MM, px + _FOV_MM)
        if up_is_increasing:
            ax.set_ylim(py - _FOV_MM, py + _FOV_MM)
        else:
            ax.set_ylim(py + _FOV_MM, py - _FOV_MM)
        ax.set_aspect("equal")
        ax.set_facecolor("black")  # outside the scanned region
        number = f"slice {k + 1} of {shape[axis]}"
        ax.set_title(f"{plane}, {number}", fontsize=9)
        ax.set_xlabel("R  <-  x (mm)  ->  L", fontsize=7)
        ax.set_ylabel("A  <-  y (mm)  ->  P" if plane == "axial" else "I  <-  z (mm)  ->  S",
                      fontsize=7)
        ax.tick_params(labelsize=6)
        captions.append(f"{plane} {number} (image axis {'ijk'[axis]})")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    caption = ("CT through the failure point (magenta circle): " + "; ".join(captions)
               + f"; bone window {_WINDOW_HU[0]:g} to {_WINDOW_HU[1]:g} HU; "
               "radiological orientation (patient's right on the left).")
    return buf.getvalue(), caption


def plain_sentence(side: str | None, case: str, failure_n: float, see_n: float | None,
                   failure_bw: float | None, phi: float | None) -> str:
    """The result in one sentence a patient could follow.

    Args:
        side: ``"left"``/``"right"`` or None.
        case: The governing load case's name.
        failure_n: Its failure load, N.
        see_n: The method's standard error, N, or None.
        failure_bw: The failure load in body weights, or None.
        phi: Its load-to-strength ratio, or None.

    Returns:
        One sentence, ending with a full stop.
    """
    femur = f"this {side} femur" if side in ("left", "right") else "this femur"
    activity = _ACTIVITY.get(case, f"the load case '{case}'")
    load = f"about {failure_n:,.0f} N"
    if see_n:
        load += f" (± {see_n:,.0f} N)"
    if failure_bw:
        load += f", {failure_bw:.1f} times the body weight"
    text = f"The model estimates that {femur} starts to break under {load}, in {activity}"
    if phi is not None:
        if phi >= 1.0:
            text += (f"; the force of that activity is {phi:.1f} times this, so a fracture "
                     "is expected in it")
        else:
            text += (f"; the force of that activity is {100 * phi:.0f} % of this "
                     "strength")
    return text + "."


def analysed_ct(ct_file: InputFile | None) -> CTVolume | None:
    """The analysed CT when its recorded file is still there unchanged, else None."""
    from meshing.imaging import read_ct
    from osteofe.outputs import sha256_file

    if ct_file is None or not ct_file.path or not Path(ct_file.path).exists():
        return None
    try:
        if sha256_file(ct_file.path) != ct_file.sha256:
            return None
        return read_ct(ct_file.path)
    except (OSError, InputError):
        return None
