"""The strength pipeline: CT + labels -> mesh -> material -> FE -> failure load -> outputs.

MPI: rank 0 reads, meshes and maps materials (:func:`prepare_model`), the prepared model is
broadcast, every rank takes part in the solve, and rank 0 evaluates the failure criterion and
writes the outputs. An input error found on rank 0 is broadcast and raised on every rank, so
no rank waits forever in a collective.
"""

from __future__ import annotations

import json
import logging
import pickle
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from mpi4py import MPI

from core.atomic import atomic_write_text
from fea.failure import FailureAnalysis, StrainCriterion, StrainLimits
from fea.landmarks import FemurLandmarks, find_landmarks
from fea.loads import (
    DistalCut,
    FallSupport,
    LoadCase,
    LoadPatch,
    body_weight_newton,
    distal_cut,
    fall_support,
    ground_contact_nodes,
    head_load_patch,
)
from fea.regions import critical_region, distal_exclusion_mm, excluded_nodes
from fea.sweep import sweep_directions
from fea.topology import boundary_faces
from material.calibration import LinearCalibration, check_ct_is_rescaled
from material.laws import MaterialModel
from material.mapping import map_material, map_material_qp
from material.types import MaterialField
from meshing.errors import InputError
from meshing.imaging import align_labels, read_ct, read_labels
from meshing.meshio_io import read_mesh, require_one_piece
from meshing.phantom import PhantomParams
from meshing.quality import MeshQuality, check_quality, mesh_quality
from meshing.segmentation import (
    crop_along_axis,
    default_lesion_labels,
    detect_metal,
    femur_side_from_labels,
    mask_touches_border,
    resolve_bone_label,
    select_femur,
)
from meshing.types import CTVolume, LabelMap, TetMesh
from meshing.volume import mesh_from_mask, tag_cells
from osteofe.config import Config
from osteofe.distributed import (
    FIELD_FILES,
    RankShare,
    distribute_model,
    field_data,
    fields_prestage,
    load_from_staging,
    mean_displacement,
    move_fields,
    picture_surface,
    release_freed_memory,
)
from osteofe.guards import (
    ResourceEstimate,
    check_femur_on_bone,
    check_image_sanity,
    check_mesh_on_bone,
    check_model_extent,
    check_resources,
    check_risk_model,
    check_side,
    non_bone_caution,
)
from osteofe.outputs import RESULT_FILES, guarded_output, sha256_file, staged_output
from osteofe.parallel import checkpoint, on_root
from osteofe.preparation_process import isolate_preparation, prepare_in_child
from osteofe.report_page1 import ct_fingerprint
from osteofe.result import (
    CaseResult,
    FractureProbability,
    LesionMeasures,
    NonlinearResult,
    Provenance,
    StrengthResult,
    SweepResult,
    Validity,
)
from risk.lesion import lesion_measures

if TYPE_CHECKING:
    from fea.solver import CaseSolution

__all__ = [
    "PreparedModel",
    "StrengthRequest",
    "default_calibration",
    "prepare_model",
    "run_strength",
]

logger = logging.getLogger(__name__)

#: Cell tag of lesion tissue in the mesh.
LESION_TAG = 2
#: Mesh convergence of the default discretisation measured on the built-in phantom
#: (benchmarks/bench_convergence.py --degree 2, results/convergence_p2.json): a patient's
#: own GCI needs three meshes of that patient, so result.json carries this reference.
DISCRETISATION_REFERENCE: dict[str, Any] = {
    "benchmark": "benchmarks/results/convergence_p2.json (phantom, P2, 4/3/2.5/2 mm)",
    "stance": {"failure_load_N_by_size_mm": {"4": 5219, "3": 5196, "2.5": 5228, "2": 5334},
               "gci_finest_three": 0.017, "site_moves_two_finest_mm": 2.6,
               "same_region_two_finest": True},
    "fall": {"failure_load_N_by_size_mm": {"4": 3746, "3": 3783, "2.5": 3763, "2": 3744},
             "gci_finest_three": 0.017, "site_moves_two_finest_mm": 0.4,
             "same_region_two_finest": True},
    "method": "grid convergence index, Roache 1994 / Celik et al. 2008 (fea.convergence)",
}

#: Plausible adult body mass range, kg.
BODY_MASS_RANGE_KG = (20.0, 300.0)


def default_calibration() -> LinearCalibration:
    """The built-in HU -> rho_QCT line: the one the built-in phantom is synthesised with.

    It is a generic clinical-scanner line, not a patient-specific calibration; results on
    real scans should use a phantom or scanner line given in the configuration.
    """
    phantom = PhantomParams()
    return LinearCalibration(
        slope=phantom.calibration_slope,
        intercept=phantom.calibration_intercept,
        name="osteofe_phantom_line",
        source="osteofe built-in phantom line (generic K2HPO4-equivalent scanner line, "
        "not patient-specific)",
    )


@dataclass(frozen=True)
class StrengthRequest:
    """What to compute.

    Attributes:
        ct_path: CT image (NIfTI/NRRD/MHA file or DICOM folder).
        labels_path: Label map on the CT grid.
        body_mass_kg: Patient body mass, kg (1 BW = mass x 9.81 N).
        bone_label: Label value or name of the femur; None infers it
            (:func:`meshing.segmentation.resolve_bone_label`: the only femur, or the one of
            ``side``; 1 in osteofe's 0/1/2 convention) and refuses a map where it cannot.
        lesion_labels: Label values or names of lesions (part of the bone volume).
        lesion_labels_required: False when the lesion labels are defaults that may be absent.
        case_id: Identifier written into the results (no other patient identifier is).
        pain: Mirels pain item ("mild", "moderate", "functional") when the clinician gives it.
        mirels_given: Mirels items given by hand, e.g. (("size", "3"),): they replace the
            items measured from the scan (site, lesion, size; points or categories).
        mesh_path: A tetrahedral mesh made elsewhere (any format meshio reads) to use instead
            of meshing the labels; in the CT's world coordinates (LPS mm). Cells tagged 2 are
            lesion; labels, when also given, tag lesion cells too.
        side: ``"left"`` or ``"right"`` when the user (or a cohort manifest) states the side:
            the run is refused when the femur's landmarks (or its label name) say otherwise.
        risk_model: A fitted fracture-risk model (JSON), loaded and checked by
            :meth:`validate` before any work (:func:`osteofe.guards.check_risk_model`).
        segmenter: Without labels and mesh: "classical" or "totalsegmentator" segments the
            femurs automatically (:func:`automatic_labels`).
    """

    ct_path: Path
    labels_path: Path | None
    body_mass_kg: float
    bone_label: int | str | None = None
    lesion_labels: tuple[int | str, ...] = (2,)
    lesion_labels_required: bool = False
    case_id: str = "case"
    pain: str | None = None
    mesh_path: Path | None = None
    mirels_given: tuple[tuple[str, str], ...] = ()
    side: str | None = None
    risk_model: Path | None = None
    force_risk_model: bool = False
    segmenter: str | None = None

    def validate(self) -> None:
        """Check the request before any work is done.

        Raises:
            OsteofeError: on a missing file, an implausible body mass, a side that is not
                left or right, or a risk model that is invalid or needs features the
                analysis cannot provide.
        """
        if self.labels_path is None and self.mesh_path is None and self.segmenter is None:
            raise InputError("neither a label map nor a mesh was given",
                             hint="pass --labels (to mesh the femur) or --mesh (your own mesh)")
        for what, path in (("CT", self.ct_path), ("label map", self.labels_path),
                           ("mesh", self.mesh_path)):
            if path is not None and not Path(path).exists():
                raise InputError(f"{what} not found: {path}", hint="check the path")
        mass = self.body_mass_kg
        if not np.isfinite(mass) or mass <= 0.0:
            raise InputError(f"body weight must be a positive number of kg, got {mass}",
                             hint="pass --body-weight in kg, e.g. --body-weight 75")
        low, high = BODY_MASS_RANGE_KG
        if not low <= mass <= high:
            raise InputError(f"body weight {mass} kg is outside the plausible {low}-{high} kg",
                             hint="--body-weight takes kilograms, not N or lb")
        if self.side is not None and self.side not in ("left", "right"):
            raise InputError(f"side {self.side!r} is not left or right",
                             hint="pass --side left or --side right, or leave it out")
        check_risk_model(self.risk_model, pain=self.pain, force=self.force_risk_model)


@dataclass(frozen=True)
class PlacedLoad:
    """A load case placed on one femur.

    Attributes:
        case: The load case definition.
        patch: Head patch with the total force (N, world).
        ground_nodes: Nodes resting on the ground (sideways fall), else None.
        fall: The sideways-fall supports (pinned distal end, trochanter pad), else None.
    """

    case: LoadCase
    patch: LoadPatch
    ground_nodes: npt.NDArray[np.int64] | None = None
    fall: FallSupport | None = None

    @property
    def support_key(self) -> str:
        """Cases with equal keys share supports, hence one operator and preconditioner."""
        return "distal" if self.ground_nodes is None else f"fall:{self.case.name}"


@dataclass(frozen=True)
class PreparedModel:
    """Everything the solver needs, built on rank 0 and broadcast.

    Attributes:
        mesh: Tetrahedral mesh (tag 2 = lesion).
        material: Per-cell material.
        landmarks: Head centre, shaft axis, frame.
        boundary: (f, 3) boundary triangles.
        fixed_nodes: Nodes fixed at the distal cut (the whole cut face).
        loads: Load case name -> the case placed on this femur.
        quality: Mesh quality summary.
        calibration: The HU -> density calibration used.
        timings_s: Stage timings so far.
        warnings: Messages worth showing the user.
        lesion_risk: Scan-derived lesion measures (Mirels items, ACI, CTRA), when a lesion
            is labelled.
        modulus_points: (m, q) E at the solver's quadrature points, when asked for.
        resources: The peak memory estimate the run was checked against
            (:meth:`osteofe.guards.ResourceEstimate.to_dict` without the memory available,
            which varies from run to run).
        cut: The distal cut face (plane, centre, nodes).
        validity: Whether the model suits its load cases
            (:func:`osteofe.guards.check_model_extent`): ``valid``, ``banner``, ``reasons``.
        segmentation: Source and confidence of automatic labels (None for given labels).
        ct_fingerprint: Format-independent record of the analysed CT
            (:func:`osteofe.report_page1.ct_fingerprint`), for ``report --dicom-study``.
        process_peak_rss_mb: Peak resident memory of the child process that prepared the
            model (``solver.isolate_preparation``), MB; None when this process did.
    """

    mesh: TetMesh
    material: MaterialField
    landmarks: FemurLandmarks
    boundary: npt.NDArray[np.int64]
    fixed_nodes: npt.NDArray[np.int64]
    loads: dict[str, PlacedLoad]
    quality: MeshQuality
    material_model: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    lesion_risk: dict[str, Any] | None = None
    modulus_points: npt.NDArray[np.float64] | None = None
    resources: dict[str, Any] | None = None
    cut: DistalCut | None = None
    validity: dict[str, Any] | None = None
    segmentation: dict[str, Any] | None = None
    ct_fingerprint: dict[str, Any] | None = None
    process_peak_rss_mb: float | None = None


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 4)


def _label_value(key: int | str) -> int | str:
    """CLI labels arrive as strings: digits mean a value, anything else a name."""
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return key


def prepare_model(
    request: StrengthRequest,
    config: Config,
    calibration: LinearCalibration | None = None,
    progress: Callable[[str], None] | None = None,
    ranks: int = 1,
) -> PreparedModel:
    """Read, mesh, map material, find landmarks and place loads (serial; rank 0).

    Pre-flight guards (:mod:`osteofe.guards`): the CT is checked for an implausible header or
    values right after reading, and the run's peak memory is estimated and checked before
    meshing the labels (from the femur mask) or, for a mesh given by the user, before
    anything is solved on it (from its tetrahedra).

    Args:
        request: What to compute.
        config: The options.
        calibration: HU -> density line (default: config's, else the built-in one).
        progress: Called with each stage name.
        ranks: MPI ranks that will solve (each holds the model; for the memory estimate).

    Raises:
        OsteofeError: on any invalid input, with a hint; InputError when the CT's voxel size
            or values are implausible or the run would need more memory than available.
    """
    step = progress or (lambda _name: None)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    request.validate()
    step("reading images")
    with _timed(timings, "read"):
        # The material stage's law, chain and calibration, refused now rather than after
        # the meshing.
        config.material.material_model(_resolve_calibration(calibration, config.material)[0])
        ct = read_ct(request.ct_path)
        check_image_sanity(ct)
        check_ct_is_rescaled(ct.hu)
        labels = bone = lesion = None
        lesion_values: list[int] = []
        auto: dict[str, Any] | None = None
        auto_bone: int | None = None
        if request.labels_path is None and request.mesh_path is None:
            labels, auto, auto_bone = automatic_labels(ct, request)
            warnings.append(f"labels are automatic ({auto['method']} segmentation, not "
                            "checked by a person): review them (osteofe segment) before "
                            "clinical use")
        if labels is not None or request.labels_path is not None:
            if labels is None and request.labels_path is not None:
                labels = align_labels(read_labels(request.labels_path), ct.grid)
            assert labels is not None
            lesion_keys: list[int | str] = [_label_value(k) for k in request.lesion_labels]
            if auto is not None:  # automatic lesion candidates never enter Mirels silently
                lesion_keys = []
            elif not request.lesion_labels_required:
                # Not given: label 2 only in osteofe's own unnamed 0/1/2 convention, else
                # only structures named as lesions (TotalSegmentator's 2 is an organ, a
                # Slicer segment is a lesion only when so named).
                lesion_keys = list(default_lesion_labels(labels))
            bone_key: int | str = auto_bone if auto_bone is not None else resolve_bone_label(
                labels, None if request.bone_label is None else _label_value(request.bone_label),
                request.side)
            bone, lesion = select_femur(labels, bone_key, lesion_keys)
            lesion_values = sorted(int(v) for v in np.unique(labels.labels[lesion]))
            metal = detect_metal(ct, bone | lesion)
            if metal.flagged:
                raise InputError(
                    f"the selected femur carries a metal implant ({metal.describe()}): its "
                    "strength cannot be computed from CT density",
                    hint="select the intact femur (e.g. --bone-label femur_right)",
                )
            check_femur_on_bone(ct, bone | lesion)
            named_side = femur_side_from_labels(
                [labels.names.get(int(v), "") for v in np.unique(labels.labels[bone])])
            if request.side is not None and named_side not in (None, request.side):
                raise InputError(f"the side given is {request.side}, but the selected label is "
                                 f"a {named_side} femur ({request.bone_label!r})",
                                 hint="check --side (or the manifest's side column) and "
                                 "--bone-label")
            if request.mesh_path is None and mask_touches_border(bone | lesion):
                warnings.append("the femur touches the image border: the cut there is taken "
                                "as the distal end and fixed")
        check_risk_model(request.risk_model, pain=request.pain,
                         lesion=lesion is not None and bool(lesion.any()),
                         cases=[case.name for case in config.load.load_cases()],
                         force=request.force_risk_model)

    step("meshing")
    with _timed(timings, "mesh"):
        if request.mesh_path is not None:
            mesh, _ = read_mesh(request.mesh_path)
            mesh, merged = require_one_piece(mesh, Path(request.mesh_path).name)
            warnings.extend(merged)
            mesh = TetMesh(mesh.points, mesh.cells,
                           np.where(mesh.cell_tags == LESION_TAG, LESION_TAG, 1))
            warnings.append(f"mesh read from {Path(request.mesh_path).name}: it must be in the "
                            "CT's world coordinates (LPS mm)")
            resources = check_resources(image_voxels=ct.hu.size, num_tets=mesh.num_cells,
                                        order=mesh.order, degree=config.solver.degree,
                                        ranks=ranks)
            check_mesh_on_bone(ct, mesh, name=Path(request.mesh_path).name)
        else:
            assert bone is not None and lesion is not None
            if config.mesh.crop_below_lesser_trochanter_mm is not None:
                bone, lesion = _crop_proximal(bone, lesion, ct,
                                              config.mesh.crop_below_lesser_trochanter_mm)
                warnings.append("femur cropped "
                                f"{config.mesh.crop_below_lesser_trochanter_mm:g} mm below the "
                                "lesser trochanter: the cut is the fixed distal end")
            region = bone | lesion
            resources = check_resources(image_voxels=ct.hu.size, mask=region, grid=ct.grid,
                                        size_mm=config.mesh.size_mm, order=config.mesh.order,
                                        degree=config.solver.degree, ranks=ranks)
            mesh = mesh_from_mask(region, ct.grid, size_mm=config.mesh.size_mm,
                                  order=config.mesh.order)
        _log_resources(resources)
        if lesion_values and labels is not None:
            mesh = tag_cells(mesh, labels, lesion_values)
        quality = mesh_quality(mesh)
        check_quality(quality, min_dihedral_deg=config.mesh.min_dihedral_deg)

    step("mapping material")
    with _timed(timings, "material"):
        cfg = config.material
        calibration, calibration_origin = _resolve_calibration(calibration, cfg)
        if calibration_origin == "built-in default":
            warnings.append("no calibration given: used the built-in generic scanner line "
                            "(not patient-specific); give --calibration SLOPE INTERCEPT "
                            "(config material.calibration_slope/intercept) for real scans")
        model = MaterialModel.from_names(calibration, chain=cfg.chain, law=cfg.law,
                                         poisson_ratio=cfg.poisson_ratio,
                                         E_floor_MPa=cfg.modulus_floor_mpa,
                                         bone_threshold_rho_qct=cfg.bone_threshold_rho_qct)
        floor_tags = (LESION_TAG,) if cfg.lesion_at_floor else ()
        material = map_material(mesh, ct, model, mode=cfg.mode,  # type: ignore[arg-type]
                                quadrature_degree=cfg.quadrature_degree, check_rescaled=False,
                                floor_tags=floor_tags)
        modulus_points = None
        if cfg.modulus_at_quadrature_points:
            from fea.solver import SolverOptions, modulus_quadrature_points

            modulus_points = map_material_qp(
                mesh, ct, model, floor_tags=floor_tags, check_rescaled=False,
                reference_points=modulus_quadrature_points(
                    SolverOptions().modulus_quadrature_degree))

    step("landmarks and loads")
    with _timed(timings, "landmarks_loads"):
        boundary = boundary_faces(mesh)
        surface_nodes = np.unique(boundary)
        landmarks = find_landmarks(
            mesh.points[surface_nodes],
            assumed_anteversion_deg=config.load.assumed_anteversion_deg)
        check_side(request.side, landmarks)
        validity = check_model_extent(landmarks, config.load.load_cases(),
                                      allow_partial=config.mesh.allow_partial)
        if not landmarks.shaft_axis_from_geometry:
            warnings.append("the femur in the image is too short to fit a shaft axis: the "
                            "image superior axis was used")
        warnings.extend(landmarks.warnings)
        cut = distal_cut(mesh.points, boundary, landmarks,
                         depth_mm=config.load.distal_fixed_depth_mm)
        if not cut.planar:
            warnings.append("the distal end is no flat cut: the surface within "
                            f"{config.load.distal_fixed_depth_mm:g} mm of its lowest point "
                            "is fixed")
        fixed = cut.nodes
        loads: dict[str, PlacedLoad] = {}
        for case in config.load.load_cases():
            direction = landmarks.frame.to_world_direction(case.direction)
            patch = head_load_patch(
                mesh.points, boundary, landmarks, direction,
                case.force_newton(request.body_mass_kg),
                half_angle_deg=config.load.patch_half_angle_deg,
            )
            ground = fall = None
            if case.support == "fall":
                ground = ground_contact_nodes(mesh.points, boundary, landmarks, direction)
                fall = fall_support(mesh.points, cut, ground, landmarks, direction)
            loads[case.name] = PlacedLoad(case, patch, ground, fall)
    lesion_risk = None
    if bone is not None and lesion is not None and lesion.any():
        step("lesion measures")
        with _timed(timings, "lesion_measures"):
            lesion_risk = lesion_measures(ct, bone, lesion, landmarks, model, request.pain,
                                          dict(request.mirels_given))
    return PreparedModel(mesh, material, landmarks, boundary, fixed, loads, quality,
                         model.to_dict() | {"calibration_origin": calibration_origin},
                         timings, warnings, lesion_risk, modulus_points,
                         _estimate_record(resources), cut, validity=validity,
                         segmentation=auto, ct_fingerprint=ct_fingerprint(ct))


def automatic_labels(ct: CTVolume, request: StrengthRequest
                     ) -> tuple[LabelMap, dict[str, Any], int]:
    """Segment the femurs of ``ct`` (no label map given) and choose the one to model.

    Returns:
        The label map, its confidence record (``source: automatic``) and the femur's value.

    Raises:
        InputError: The segmentation refused; both femurs were found and neither
            ``side`` nor a femur ``bone_label`` says which one.
    """
    from meshing.autoseg import (
        FEMUR_LABELS,
        LESION_CANDIDATE_LABEL,
        segment_femurs,
        segment_with_totalsegmentator,
    )

    if request.segmenter == "totalsegmentator":
        seg = segment_with_totalsegmentator(str(request.ct_path))
    else:
        seg = segment_femurs(ct)
    record = seg.confidence()
    present = {FEMUR_LABELS[f.side][0]: f.side for f in seg.femurs if f.accepted} or {
        v: n.split("_")[-1] for v, n in seg.labels.names.items() if n.startswith("femur")}
    key = None if request.bone_label is None else _label_value(request.bone_label)
    wanted = {FEMUR_LABELS["left"][0]: "left", FEMUR_LABELS["right"][0]: "right",
              "femur_left": "left", "femur_right": "right"}.get(key)
    side = request.side or wanted
    if side is None and len(present) == 1:
        side = next(iter(present.values()))
    if side is None:
        raise InputError("the automatic segmentation found both femurs; which one to model "
                         "is ambiguous", hint="pass --side left or --side right")
    value = FEMUR_LABELS[side][0]
    if value not in present:
        refused = [f for f in seg.femurs if f.side == side]
        why = "; ".join(refused[0].reasons) if refused else "not found"
        raise InputError(f"automatic segmentation of the {side} femur is unsure ({why})",
                         hint="pass --labels (TotalSegmentator or manual)")
    # Lesion candidates stay out of the lesion / Mirels path: here they are femur tissue.
    merged = seg.labels.labels.copy()
    candidate = merged == LESION_CANDIDATE_LABEL
    if candidate.any():
        from scipy import ndimage

        pieces, _ = ndimage.label(candidate, structure=np.ones((3, 3, 3), bool))
        near = ndimage.binary_dilation(merged == value, structure=np.ones((3, 3, 3), bool))
        own = np.isin(pieces, np.unique(pieces[near & candidate]))
        merged[candidate & own] = value
        merged[candidate & ~own] = 0
    names = {v: n for v, n in seg.labels.names.items() if v != LESION_CANDIDATE_LABEL}
    return LabelMap(grid=seg.labels.grid, labels=merged, names=names), record, value


def _load_frame_record(landmarks: FemurLandmarks) -> dict[str, Any]:
    """How the anatomical frame the loads are defined in was built (result.json)."""
    how = {
        "posterior_condylar_line": "x parallel to the posterior condylar line (the knee is "
                                   "in the scan), z the shaft axis",
        "neck_axis": "no knee in the scan: the plane of the shaft and neck axes turned back "
                     f"about the shaft by an assumed anteversion of "
                     f"{landmarks.frame_anteversion_deg} deg (mean adult value, "
                     "van der Linden-van der Zwaag et al. 2015)",
        "image_axes": "neither knee nor neck found: the image's anterior axis (the result "
                      "depends on how the leg lay in the scanner)",
    }[landmarks.frame_reference]
    return {"reference": landmarks.frame_reference, "description": how,
            "anteversion_in_frame_deg": landmarks.frame_anteversion_deg,
            "leg_rotation_in_scanner_deg": round(landmarks.leg_rotation_deg, 2),
            "axes_world": landmarks.frame.axes.round(5).tolist()}


def _boundary_record(prepared: PreparedModel, config: Config) -> dict[str, Any]:
    """The supports and loads as applied (result.json)."""
    cut = prepared.cut
    record: dict[str, Any] = {
        "distal": "all displacement components of every node of the distal cut face "
                  + ("(the boundary faces near the distal end within 35 deg of the distal "
                     "shaft direction lying on one plane, whatever its tilt)"
                     if cut is None or cut.planar else
                     f"(no flat cut: the surface within {config.load.distal_fixed_depth_mm} "
                     "mm of the lowest point)"),
        "num_fixed_nodes": int(prepared.fixed_nodes.size),
        "load": "uniform traction over a spherical cap of the head, half angle "
                f"{config.load.patch_half_angle_deg} deg, centred where the force line "
                "through the head centre enters the head",
    }
    if cut is not None:
        record["distal_cut"] = {"planar": cut.planar, "area_mm2": round(cut.area_mm2, 2),
                                "normal_world": cut.normal.round(5).tolist(),
                                "tilt_to_shaft_deg": round(float(np.degrees(np.arccos(
                                    np.clip(-cut.normal @ prepared.landmarks.shaft_axis,
                                            -1.0, 1.0)))), 2)}
    falls = [load for load in prepared.loads.values() if load.fall is not None]
    if falls:
        fall = falls[0].fall
        assert fall is not None
        record["fall"] = {
            "protocol": "Courtney et al. 1994; Dragomir-Daescu et al. 2011: distal end "
                        "pinned (free to turn in the loading plane), greater trochanter on "
                        "a frictionless pad (supported along the load only)",
            "adduction_deg": config.load.fall_adduction_deg,
            "internal_rotation_deg": config.load.fall_internal_rotation_deg,
            "pin_axis_world": fall.rotation[2].round(5).tolist(),
            "num_pin_nodes": int(fall.pin_nodes.size),
            "num_pad_nodes": int(fall.ground_nodes.size),
            "pad": "greater-trochanter surface within 4 mm of the ground (reaching furthest "
                   "along the load direction)",
        }
    return record


def _resolve_calibration(per_case: LinearCalibration | None, cfg: Any
                         ) -> tuple[LinearCalibration, str]:
    """The HU -> rho_QCT line of this case and where it came from.

    Precedence (most specific first): the line given for this case (a cohort manifest row,
    or the ``calibration`` argument of the API), then the configuration's line (TOML or
    ``--calibration``, which overrides the TOML), then the built-in generic line.
    """
    if per_case is not None:
        return per_case, "per-case line (cohort manifest row or calibration argument)"
    if cfg.calibration_slope is not None and cfg.calibration_intercept is not None:
        return (LinearCalibration(cfg.calibration_slope, cfg.calibration_intercept,
                                  name="config", source="scanner line from config"),
                "configuration (material.calibration_slope/intercept or --calibration)")
    return default_calibration(), "built-in default"


def _estimate_record(estimate: ResourceEstimate) -> dict[str, Any]:
    """The memory estimate for result.json: the predicted stages only.

    The memory the machine had available changes from run to run, and result.json must not
    (reruns give the same file but for its timings); it is logged instead.
    """
    record = estimate.to_dict()
    for key in ("available_bytes", "budget_bytes"):
        record.pop(key)
    return record


def _log_resources(estimate: ResourceEstimate) -> None:
    """Log the memory estimate the run passed (INFO; unchecked when memory is unknown)."""
    if estimate.available_bytes <= 0:
        logger.info("memory estimate (available memory unknown, not checked): %s",
                    estimate.describe())
    else:
        logger.info("memory estimate: %s", estimate.describe())


def _crop_proximal(bone: npt.NDArray[np.bool_], lesion: npt.NDArray[np.bool_], ct: CTVolume,
                   below_mm: float) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Keep the femur down to ``below_mm`` under the lesser trochanter (a flat cut).

    Landmarks come from the mask's iso-surface, before meshing; the cut is
    :func:`meshing.segmentation.crop_along_axis`.
    """
    from meshing.surface import clean_mask, extract_surface

    surface = extract_surface(clean_mask(bone | lesion), ct.grid)
    landmarks = find_landmarks(surface.points)
    if landmarks.lesser_trochanter_mm is None:
        raise InputError("cannot crop below the lesser trochanter: it was not found",
                         hint="check the segmentation, or do not set "
                              "mesh.crop_below_lesser_trochanter_mm")
    axis = landmarks.shaft_axis
    level = float(landmarks.lesser_trochanter_mm @ axis) - below_mm
    bone, lesion = crop_along_axis([bone, lesion], ct.grid, axis, level)
    return bone, lesion


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("osteofe", "dolfinx-solver-real", "fenics-basix", "fenics-ffcx", "numpy",
                 "scipy", "numba", "gmsh", "SimpleITK", "meshio", "pyvista", "petsc4py",
                 "mpi4py"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@guarded_output("out_dir", "comm")
def run_strength(
    request: StrengthRequest,
    config: Config,
    out_dir: str | Path,
    *,
    calibration: LinearCalibration | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
    progress: Callable[[str], None] | None = None,
    picture: bool = True,
    export_inp: bool = False,
    risk_model: Path | None = None,
    report: bool = False,
) -> StrengthResult:
    """Compute the femoral strength for every configured load case and write the outputs.

    ``export_inp`` also writes ``model.inp``: the solved model (mesh, per-element material,
    distal fixation, the head loads of every distal-support case as steps) for CalculiX or
    Abaqus. ``risk_model`` is a fitted fracture-risk model (JSON, risk.calibration) that turns
    the strength into a fracture probability. ``report`` also writes ``report.html`` and
    ``report.pdf`` (:func:`osteofe.report.write_report`) with the other outputs.

    ``out_dir`` is checked and locked before any analysis (:func:`osteofe.outputs.
    reserve_output`); a rerun into it replaces the earlier run's files (``RESULT_FILES``).
    An exception on any rank is raised on every rank (:mod:`osteofe.parallel`).

    Collective: call on all ranks. Returns the typed result (also on all ranks); result.json
    is its serialisation (:meth:`osteofe.result.StrengthResult.to_json`).

    Raises:
        OsteofeError: on invalid input (nothing is written); OutputError (a subclass) when
            ``out_dir`` is unusable or the write fails (``out_dir`` is left as it was).
    """
    step = progress or (lambda _name: None)
    total_start = time.perf_counter()
    prepare = (prepare_in_child if isolate_preparation(config.solver.isolate_preparation,
                                                        comm.size) else prepare_model)
    distributed = comm.size > 1  # the model is split across the ranks (osteofe.distributed)
    whole: PreparedModel | None = on_root(
        comm, lambda: prepare(request, config, calibration, step, ranks=comm.size),
        broadcast=not distributed)
    limits = StrainLimits(config.failure.tension_limit, config.failure.compression_limit,
                          config.failure.averaging_radius_mm,
                          source="Schileo et al. 2008, J Biomech 41:356 (limits from config)")
    share: RankShare | None = None
    if distributed:
        t0 = time.perf_counter()
        prepared, share = distribute_model(
            comm, whole, criteria=lambda model: _criteria(model, config, limits),
            volume_record=_volume_record, staging=lambda: fields_prestage(out_dir),
            keep_whole=export_inp or config.nonlinear.enabled)
        prepared.timings_s["distribute"] = round(time.perf_counter() - t0, 4)
    else:
        assert whole is not None
        prepared = whole
    del whole  # under MPI no rank keeps the whole mesh from here on
    release_freed_memory()  # rank 0's reading/meshing arrays, before the FE model
    try:
        return _analyse(request, config, out_dir, prepared, share, limits, comm=comm,
                        step=step, total_start=total_start, picture=picture,
                        export_inp=export_inp, risk_model=risk_model, report=report)
    finally:
        if share is not None and comm.rank == 0:
            shutil.rmtree(share.staging, ignore_errors=True)


def _analyse(request: StrengthRequest, config: Config, out_dir: str | Path,
             prepared: PreparedModel, share: RankShare | None, limits: StrainLimits, *,
             comm: MPI.Comm, step: Callable[[str], None], total_start: float, picture: bool,
             export_inp: bool, risk_model: Path | None, report: bool) -> StrengthResult:
    """The analysis of :func:`run_strength` once the model is prepared (and distributed).

    ``share`` is this rank's block of a distributed model (``prepared`` then has no volume
    data, :func:`osteofe.distributed.distribute_model`), None for a serial run.
    """
    from fea.solver import CaseSolution, SolverOptions

    distributed = share is not None
    fields_model: tuple[Any, Any] | None = None
    timings = dict(prepared.timings_s)

    step("solving")
    solver_cfg = config.solver
    options = SolverOptions(degree=solver_cfg.degree, ksp_type=solver_cfg.ksp_type,
                            pc_type=solver_cfg.pc_type, rtol=solver_cfg.rtol,
                            max_it=solver_cfg.max_it, extra=dict(solver_cfg.petsc_options),
                            p_multigrid=solver_cfg.p_multigrid)
    sweep_count = config.load.sweep_directions
    solutions: dict[str, CaseSolution] = {}
    unit_solutions: dict[str, list[CaseSolution]] = {}
    solver_timings: dict[str, float] = {}
    with _timed(timings, "solve_total"):
        groups: dict[str, list[PlacedLoad]] = {}
        for load in prepared.loads.values():
            groups.setdefault(load.support_key, []).append(load)
        for key, members in groups.items():
            # One operator and one preconditioner set-up per support configuration.
            model, rotation = _elastic_model(prepared, share, members[0], options, comm)
            for load in members:
                name = load.case.name
                magnitude = float(np.linalg.norm(load.patch.force_n))
                # Linearity: with a sweep, three solves along the world axes give every
                # direction (each turned into the solver's axes for a rotated model).
                forces = ([magnitude * axis for axis in np.eye(3)] if sweep_count
                          else [load.patch.force_n])
                to_solver = np.eye(3) if rotation is None else rotation
                units = [_in_world(model.solve([replace(load.patch, force_n=to_solver @ f)],
                                               gather=not distributed),
                                   rotation) for f in forces]
                if sweep_count:
                    unit_solutions[name] = units
                    solutions[name] = CaseSolution.combine(units, load.patch.force_n / magnitude)
                else:
                    solutions[name] = units[0]
            num_dofs = model.num_dofs
            solver_timings.update({f"{key}_{k}": v for k, v in model.timings_s.items()})
            model.destroy()
            if distributed and fields_model is None:  # its mesh and partition for the output
                fields_model = (model, rotation)
            del model
    timings.update({f"solver_{k}": round(v, 4) for k, v in solver_timings.items()})

    step("failure criterion")
    body_weight_n = body_weight_newton(request.body_mass_kg)
    cases: list[CaseResult] = []
    analyses: dict[str, FailureAnalysis] = {}
    with _timed(timings, "failure"):
        for name, load in prepared.loads.items():
            sol = solutions[name]
            # Distributed: built on rank 0 before its mesh was dropped, sent now.
            criterion = (_criterion(prepared, load, config, limits) if share is None
                         else load_from_staging(comm, share, share.criteria[name]))
            analysis = criterion.evaluate(_surface_input(sol), sol.cell_ids, comm)
            analyses[name] = analysis
            sweep = None if not sweep_count else _direction_sweep(
                prepared, load, criterion, unit_solutions[name], sweep_count,
                config.load.sweep_half_angle_deg, comm)
            cases.append(_case_entry(prepared, load, sol, analysis, sweep))
    governing = min(cases, key=lambda c: c.failure_load_N)
    curves: dict[str, Any] = {}
    if config.nonlinear.enabled:
        step("nonlinear analysis")
        with _timed(timings, "nonlinear"):
            names = config.nonlinear.cases or (governing.load_case,)
            for name in names:
                if name not in prepared.loads:
                    raise InputError(f"nonlinear.cases names {name!r}, not a computed case",
                                     hint=f"use one of {sorted(prepared.loads)}")
                index = next(i for i, c in enumerate(cases) if c.load_case == name)
                entry = cases[index]
                # These analyses need the whole mesh on every rank (read back for them).
                model_for_curve = (prepared if share is None or share.whole_model is None
                                   else load_from_staging(comm, share, share.whole_model))
                curve = _nonlinear_case(model_for_curve, prepared.loads[name],
                                        solutions[name], entry.failure_load_N, options,
                                        config, comm)
                del model_for_curve
                if config.nonlinear.method == "plasticity":
                    curves[name] = curve[0]
                    cases[index] = replace(entry, nonlinear=NonlinearResult.from_dict(
                        _plasticity_entry(curve, entry, body_weight_n)))
                    prepared.warnings.extend(f"nonlinear ({name}): {note}"
                                             for note in curve[0].notes)
                    continue
                curves[name] = curve
                prepared.warnings.extend(f"nonlinear ({name}): {warning}"
                                         for warning in curve.warnings)
                cases[index] = replace(entry, nonlinear=NonlinearResult.from_dict(
                    curve.to_dict() | {
                    "failure_load_BW": curve.peak_force_n / body_weight_n,
                    "nonlinear_to_linear_ratio": curve.peak_force_n / entry.failure_load_N,
                    "material": "Keyak et al. 2005 softening curve from rho_ash "
                                "(E, yield, plateau end strain, softening slope, minimum "
                                "stress; LAW_SETS['keyak2005'])",
                }))
    distal_excluded = distal_exclusion_mm(prepared.landmarks, config.failure.exclude_distal_mm)
    volume = _volume_record(prepared) if share is None else share.volume_record
    records: dict[str, Any] = {
        **volume,
        "landmarks": prepared.landmarks.to_dict(),
        "load_frame": _load_frame_record(prepared.landmarks),
        "discretisation": {"element_degree": options.degree,
                           "mesh_size_mm": config.mesh.size_mm,
                           "mesh_order": volume["mesh"]["order"],
                           "convergence_reference": DISCRETISATION_REFERENCE},
        "boundary_conditions": _boundary_record(prepared, config),
        "failure_criterion": {
            "tension_limit": limits.tension, "compression_limit": limits.compression,
            "averaging_radius_mm": limits.averaging_radius_mm, "source": limits.source,
            "strain_evaluation": "on the bone surface: 3 quadrature points per surface "
                                 "triangle, strain of its bone cell (P1 constant, P2 linear "
                                 "from the cell's corner values); tensor averaged over the "
                                 "bone surface within the averaging sphere around each "
                                 "surface node, then principal strains",
            "surfaces": "outer surface and the walls of lesions (faces between bone and "
                        "lesion cells)",
            "max_floor_share": config.failure.max_floor_share,
            "deviation": "Schileo et al. 2008 averaged over ~3 mm^2 of their ~1 mm meshes; "
                         "osteofe averages over a fixed sphere so that the average does not "
                         "change with the element size. Schileo's models were bone only; "
                         "osteofe leaves out the surface nodes whose averaged region lies "
                         "by more than max_floor_share of its area in cells at the modulus "
                         "floor (no bone density inside the label: soft-tissue or partial-"
                         "volume voxels), and reports their lowest load per case "
                         "(non_bone_failure_load_N; a caution when it is lower by > 5 %)",
            "excluded": f"surface within {distal_excluded:.1f} mm of the distal cut and "
                        f"within {config.failure.exclude_load_margin_mm} mm of the load "
                        "patch and the trochanter pad"},
        "solver": {"num_dofs": num_dofs, "mpi_ranks": comm.size, **options.to_dict(),
                   "distribution": DISTRIBUTION_RECORD if distributed else "serial",
                   "iterations": {c.load_case: c.extras["solver"]["iterations"]
                                  for c in cases}},
        "resources": prepared.resources,
        "segmentation": prepared.segmentation or {"source": "given"},
        "ct_fingerprint": prepared.ct_fingerprint,
    }
    validity = _with_cautions(prepared.validity, cases, prepared.landmarks)
    result = StrengthResult(
        case_id=request.case_id, body_mass_kg=request.body_mass_kg, cases=tuple(cases),
        lesion=(None if not prepared.lesion_risk
                else LesionMeasures.from_dict(prepared.lesion_risk)),
        warnings=tuple(prepared.warnings),
        validity=Validity.from_dict(validity),
        provenance=Provenance(config=config.to_dict()), records=records)
    if risk_model is not None:
        prediction = _fracture_probability(risk_model, result, force=request.force_risk_model)
        result = replace(result, fracture_probability=FractureProbability.from_dict(prediction),
                         warnings=(*result.warnings, *prediction.get("warnings", ())))

    def write() -> StrengthResult:
        with _timed(timings, "inputs_hash"):
            inputs = {
                name: {"path": str(path), "sha256": sha256_file(path)}
                for name, path in (("ct", request.ct_path), ("labels", request.labels_path),
                                   ("mesh", request.mesh_path))
                if path is not None
            }
        provenance = replace(result.provenance, inputs=inputs, versions=_versions(),
                             machine={"platform": platform.platform(),
                                      "processor": platform.machine()})
        step("writing outputs")
        with staged_output(out_dir, owned=RESULT_FILES) as stage, _timed(timings, "write"):
            if prestage is None:
                _write_fields(stage / "fields.vtu", prepared, solutions, analyses)
            else:  # written by all ranks (below)
                move_fields(prestage, stage)
            if export_inp:
                # (rank 0 alone runs write(): it reads the whole model back itself)
                _export_inp(stage, prepared if share is None or share.whole_model is None
                            else pickle.loads((share.staging / share.whole_model)
                                              .read_bytes()))
            for name, curve in curves.items():
                (stage / f"force_displacement_{name}.csv").write_text(curve.to_csv())
                _plot_curve(stage / f"force_displacement_{name}.png", curve, name,
                            result.case(name))
            if picture:
                surface = picture_surface(prepared) if share is None else share.surface
                assert surface is not None, "rank 0 keeps the picture's surface"
                _write_picture(stage / "femur_risk.png", prepared, analyses, governing, result,
                               surface)
            timings["total"] = round(time.perf_counter() - total_start, 4)
            reports = ["report.html", "report.pdf"] if report else []
            outputs = (*sorted([*(p.name for p in stage.iterdir()), *reports]), "result.json")
            final = replace(result, provenance=replace(provenance, timings_s=dict(timings),
                                                       outputs=outputs))
            atomic_write_text(stage / "result.json", final.to_json())
            if report:
                from osteofe.report import write_report

                write_report(stage)  # reads stage/result.json: the report of this result
        return final

    prestage: Path | None = None
    if fields_model is not None and share is not None:
        # Every rank writes its part of fields.xdmf/.h5 (into the staging folder, whose
        # name all ranks got from rank 0); run_strength removes the folder.
        prestage = share.staging
        checkpoint(comm)  # a rank that failed since the solve stops every rank here
        with _timed(timings, "write_fields"):
            cells = share.part.cell_ids
            point_data, cell_data = field_data(
                {key: (cells, values) for key, values in share.cell_fields.items()},
                solutions, analyses, comm.rank)
            fields_model[0].write_xdmf(prestage / FIELD_FILES[0], point_data, cell_data,
                                       rotation=fields_model[1])
    # Rank 0 writes; an error there (disk full, read-only) is raised on every rank.
    return on_root(comm, write)


#: result.json's record (``solver.distribution``) of how an MPI run holds the model.
DISTRIBUTION_RECORD = (
    "mesh partitioned by DOLFINx from per-rank blocks sent by rank 0 (fea.partition); no rank "
    "holds the whole mesh, material or solved fields after distribution; the failure "
    "criteria (bone surface) were built on rank 0 before, the nonlinear analyses and "
    "model.inp read the whole model back for their own stage only")


def _volume_record(prepared: PreparedModel) -> dict[str, Any]:
    """result.json's ``mesh`` and ``material`` records (need the whole mesh and material)."""
    mesh = prepared.mesh
    return {
        "mesh": {"num_nodes": mesh.num_nodes, "num_cells": mesh.num_cells,
                 "num_lesion_cells": int(np.count_nonzero(mesh.cell_tags == LESION_TAG)),
                 "order": mesh.order, "quality": prepared.quality.to_dict()},
        "material": {"model": prepared.material_model,
                     "summary": prepared.material.to_dict()},
    }


def _criterion(prepared: PreparedModel, load: PlacedLoad, config: Config,
               limits: StrainLimits) -> StrainCriterion:
    """The failure criterion of one load case (needs the whole mesh and material).

    The surface is the bone's outer surface and lesion walls; left out are the zones of
    :func:`_excluded_nodes` and surface nodes mostly on cells without bone density that
    the label calls bone (a labelled lesion is soft: its walls are evaluated).
    """
    floor_cells = ((np.asarray(prepared.material.E_MPa)
                    <= config.material.modulus_floor_mpa * (1.0 + 1e-9))
                   & (prepared.mesh.cell_tags != LESION_TAG))
    return StrainCriterion(
        prepared.mesh, excluded_nodes=_excluded_nodes(prepared, load, config),
        limits=limits, soft_tags=(LESION_TAG,), floor_cells=floor_cells,
        max_floor_share=config.failure.max_floor_share)


def _criteria(prepared: PreparedModel, config: Config, limits: StrainLimits
              ) -> dict[str, StrainCriterion]:
    """The failure criterion of every load case (:func:`_criterion`)."""
    return {name: _criterion(prepared, load, config, limits)
            for name, load in prepared.loads.items()}


def _excluded_nodes(prepared: PreparedModel, load: PlacedLoad, config: Config
                    ) -> npt.NDArray[np.bool_]:
    """Where the criterion is not evaluated in one load case (fea.regions.excluded_nodes)."""
    near = load.patch.nodes if load.ground_nodes is None else np.concatenate(
        [load.patch.nodes, load.ground_nodes])
    return excluded_nodes(prepared.mesh, prepared.landmarks, near,
                          exclude_distal_mm=config.failure.exclude_distal_mm,
                          exclude_load_margin_mm=config.failure.exclude_load_margin_mm,
                          soft_tag=LESION_TAG)


def _surface_input(solution: CaseSolution) -> npt.NDArray[np.float64]:
    """The strain the criterion samples: per corner for P2 (linear in cells), else per cell."""
    return solution.strain if solution.vertex_strain is None else solution.vertex_strain


def _elastic_model(prepared: PreparedModel, share: RankShare | None, load: PlacedLoad,
                   options: Any, comm: MPI.Comm) -> tuple[Any, npt.NDArray[np.float64] | None]:
    """The elastic model of one support configuration, and its rotation (fall) or None.

    A sideways fall's supports act along the load and normal to the loading plane, not
    along the world axes: its model is solved on a copy of the mesh rotated into those axes
    (:class:`fea.loads.FallSupport`), so that each constraint is an exact Dirichlet condition
    on one displacement component. ``share``: this rank's block of a distributed model
    (``prepared`` then has no volume data); None: the whole mesh, as on every rank.
    """
    from fea.solver import ElasticModel

    supports, rotation = _supports(prepared, load)
    if share is not None:
        part = share.part if rotation is None else share.part.rotated(rotation)
        return ElasticModel(part, share.moduli, share.poisson_ratio, supports, options,
                            comm), rotation
    moduli = (prepared.material.E_MPa if prepared.modulus_points is None
              else prepared.modulus_points)
    mesh = _rotated(prepared.mesh, rotation)
    return ElasticModel(mesh, moduli, prepared.material.poisson_ratio, supports, options,
                        comm), rotation


def _rotated(mesh: TetMesh, rotation: npt.NDArray[np.float64] | None) -> TetMesh:
    """The mesh turned into a fall's axes (``points @ rotation.T``), or itself."""
    if rotation is None:
        return mesh
    return TetMesh(mesh.points @ rotation.T, mesh.cells, mesh.cell_tags)


def _supports(prepared: PreparedModel, load: PlacedLoad
              ) -> tuple[list[Any], npt.NDArray[np.float64] | None]:
    """The supports and the rotation (or None) of one support configuration.

    Distal-support cases: in world axes, the distal cut fixed. A sideways fall: in the
    fall's axes (:class:`fea.loads.FallSupport`), the cut held along the shaft, the pin in
    the loading plane, the trochanter pad along the load.
    """
    from fea.solver import Support

    if load.fall is None:
        return [Support("distal_cut", prepared.fixed_nodes)], None
    fall = load.fall
    supports = [Support("distal_cut", fall.cut_nodes, components=(2,)),
                Support("distal_pin", fall.pin_nodes, components=(0, 1)),
                Support("ground_contact", fall.ground_nodes, components=(1,))]
    return supports, fall.rotation


def _in_world(solution: CaseSolution, rotation: npt.NDArray[np.float64] | None
              ) -> CaseSolution:
    """A solution of a rotated model in world axes; the pin's reaction counts at the cut."""
    if rotation is None:
        return solution
    world = solution.rotated_back(rotation)
    reactions = dict(world.reactions_n)
    reactions["distal_cut"] = reactions["distal_cut"] + reactions.pop("distal_pin")
    return replace(world, reactions_n=reactions)


def _with_cautions(validity: dict[str, Any] | None, cases: list[CaseResult],
                   landmarks: Any) -> dict[str, Any] | None:
    """The validity record with the cases' non-bone cautions (``cautions``: page 1, console).

    A caution does not make the result invalid: the failure load is the bone surface's.
    """
    cautions = []
    for c in cases:
        point = c.extras.get("non_bone_point_mm")
        caution = non_bone_caution(
            c.load_case, c.failure_load_N, c.extras.get("non_bone_failure_load_N"),
            critical_region(landmarks, np.asarray(point)) if point is not None else "")
        if caution:
            cautions.append(caution)
    if not cautions:
        return validity
    record = dict(validity or {"valid": True, "banner": None, "reasons": []})
    record["cautions"] = [*record.get("cautions", []), *cautions]
    return record


def _case_entry(prepared: PreparedModel, load: PlacedLoad, sol: CaseSolution,
                analysis: FailureAnalysis, sweep: SweepResult | None) -> CaseResult:
    """The typed result of one load case."""
    applied = float(np.linalg.norm(load.patch.force_n))
    entry: dict[str, Any] = {
        "load_patch_area_mm2": float(load.patch.area_mm2),
        "force_world_N": load.patch.force_n.round(4).tolist(),
        "load_definition": load.case.to_dict(),
        "solver": {"iterations": sol.stats.iterations,
                   "residual_norm": sol.stats.residual_norm,
                   "solve_s": round(sol.stats.solve_s, 4)},
        "reaction_at_distal_cut_N": sol.reactions_n["distal_cut"].round(4).tolist(),
        "critical_floor_share": round(analysis.critical_floor_share, 4),
    }
    if analysis.non_bone_load_factor is not None and analysis.non_bone_point_mm is not None:
        entry["non_bone_failure_load_N"] = round(applied * analysis.non_bone_load_factor, 2)
        entry["non_bone_point_mm"] = analysis.non_bone_point_mm.round(3).tolist()
    if "ground_contact" in sol.reactions_n:
        entry["reaction_at_ground_N"] = sol.reactions_n["ground_contact"].round(4).tolist()
    return CaseResult(
        load_case=load.case.name, applied_load_N=applied,
        failure_load_N=applied * analysis.load_factor, failure_mode=analysis.mode,
        critical_point_mm=tuple(analysis.critical_point_mm.round(3).tolist()),
        critical_point_anatomical_mm=tuple(prepared.landmarks.frame.to_local(
            analysis.critical_point_mm[None])[0].round(3).tolist()),
        critical_region=critical_region(prepared.landmarks, analysis.critical_point_mm),
        peak_tension_strain=float(analysis.peak_tension_strain),
        peak_compression_strain=float(analysis.peak_compression_strain),
        sweep=sweep, extras=entry)


def _direction_sweep(prepared: PreparedModel, load: PlacedLoad, criterion: StrainCriterion,
                     units: list[CaseSolution], count: int, half_angle_deg: float,
                     comm: MPI.Comm) -> SweepResult:
    """Failure load over a cone of load directions on the same patch (superposition)."""
    magnitude = float(np.linalg.norm(load.patch.force_n))
    surface = [criterion.surface_strain(_surface_input(u), u.cell_ids, comm) for u in units]
    directions = sweep_directions(load.patch.force_n / magnitude, count, half_angle_deg)
    loads_n = np.empty(count)
    for i, direction in enumerate(directions):
        node_strain = sum(d * s for d, s in zip(direction, surface, strict=True))
        loads_n[i] = magnitude * criterion.evaluate_surface(np.asarray(node_strain)).load_factor
    weakest = int(np.argmin(loads_n))
    local = prepared.landmarks.frame.axes @ directions[weakest]
    return SweepResult(
        num_directions=count, half_angle_deg=float(half_angle_deg),
        failure_loads_N=tuple(loads_n.tolist()),
        directions_world=tuple(tuple(d) for d in directions.round(5).tolist()),
        weakest_direction_world=tuple(directions[weakest].round(5).tolist()),
        weakest_direction_anatomical=tuple(local.round(5).tolist()))


def _export_inp(folder: Path, prepared: PreparedModel) -> list[str]:
    """The solved model as CalculiX/Abaqus decks: every load case, one deck per support set.

    ``model.inp`` holds the distal-support cases (stance, stairs, ...) as load steps on the
    mesh in scanner axes; each sideways fall is ``model_<case>.inp``, on the mesh rotated into
    the fall's axes (as it is solved: its supports act along those axes; the rotation is in
    the deck's heading). Returns the names written.
    """
    from fea.calculix import write_inp

    groups: dict[str, list[PlacedLoad]] = {}
    for load in prepared.loads.values():
        groups.setdefault(load.support_key, []).append(load)
    written = []
    for key, members in groups.items():
        supports, rotation = _supports(prepared, members[0])
        mesh = _rotated(prepared.mesh, rotation)
        turn = np.eye(3) if rotation is None else rotation
        patches = [replace(m.patch, force_n=turn @ m.patch.force_n) for m in members]
        name = "model.inp" if key == "distal" else f"model_{members[0].case.name}.inp"
        write_inp(folder / name, mesh, prepared.material.E_MPa,
                  prepared.material.poisson_ratio, supports, [patches[0]],
                  extra_cases=[[p] for p in patches[1:]], frd=False,
                  heading=(None if rotation is None else
                           "coordinates: scanner axes (mm) turned into the sideways-fall "
                           "axes, x' = R x with R rows " + json.dumps(rotation.round(9).tolist())),
                  step_names=[m.case.name for m in members])
        written.append(name)
    return written


def _fracture_probability(model_path: Path, result: StrengthResult, *,
                          force: bool = False) -> dict[str, Any]:
    """Fracture probability from a fitted risk model and this femur's results.

    Features offered to the model (it uses those it was trained on, and refuses a model
    needing one that is missing): failure_load_BW, failure_load_N, body_mass_kg, aci_mm,
    ctra_reduction, mirels_total, and per load case ``<case>_load_to_strength`` and
    ``<case>_failure_load_BW`` (a stance and a fall strength are different quantities: the
    governing case's newtons alone mix them). The probability comes with its interval,
    per-feature contributions and the model's warnings
    (:func:`risk.calibration.clinical_prediction`; ``force`` accepts a model that is refused
    for clinical use, banner-marked).
    """
    from risk.calibration import clinical_prediction, load_model

    model = load_model(model_path)
    features: dict[str, float] = {
        "failure_load_BW": result.failure_load_BW,
        "failure_load_N": result.failure_load_N,
        "body_mass_kg": result.body_mass_kg,
    }
    for case in result.cases:
        features[f"{case.load_case}_load_to_strength"] = case.load_to_strength_ratio
        features[f"{case.load_case}_failure_load_BW"] = case.failure_load_N / result.body_weight_N
    lesion = result.lesion
    if lesion is not None:
        features["aci_mm"] = lesion.aci_mm
        if lesion.ctra_max_reduction is not None:
            features["ctra_reduction"] = lesion.ctra_max_reduction
        if lesion.mirels_total is not None:
            features["mirels_total"] = float(lesion.mirels_total)
    names = list(getattr(model, "feature_names_in_", ()))
    missing = [n for n in names if n not in features]
    if missing:
        raise InputError(f"the risk model needs feature(s) {missing} that this analysis does "
                         "not provide", hint=f"available: {sorted(features)}")
    out = clinical_prediction(model, {n: features[n] for n in names}, force=force)
    out["model"] = str(model_path)
    return out


def _nonlinear_case(prepared: PreparedModel, load: PlacedLoad, linear: CaseSolution,
                    linear_failure_n: float, options: Any, config: Config,
                    comm: MPI.Comm) -> Any:
    """Displacement-controlled softening analysis of one load case."""
    from fea.nonlinear import displacement_controlled_failure
    from fea.softening import keyak2005_softening
    from fea.solver import Support

    if config.nonlinear.method == "plasticity":
        return _plasticity_case(prepared, load, linear, linear_failure_n, options, config,
                                comm)

    force = load.patch.force_n
    direction = force / np.linalg.norm(force)
    # Linear head stiffness along the load gives the scale of the displacement increments.
    head_disp = float(mean_displacement(linear, load.patch.nodes, comm) @ direction)
    stiffness = float(np.linalg.norm(force)) / max(head_disp, 1e-12)
    step_mm = config.nonlinear.step_fraction * linear_failure_n / stiffness
    extra = (() if load.ground_nodes is None
             else (Support("ground_contact", load.ground_nodes),))
    material = keyak2005_softening(prepared.material.rho_ash_g_cm3,
                                   prepared.material.poisson_ratio,
                                   config.material.modulus_floor_mpa)
    return displacement_controlled_failure(
        prepared.mesh, material, prepared.fixed_nodes, load.patch.nodes, direction,
        step_mm=step_mm, options=replace(options, rtol=config.nonlinear.krylov_rtol),
        comm=comm, max_increments=config.nonlinear.max_increments,
        tolerance=config.nonlinear.tolerance, max_iterations=config.nonlinear.max_iterations,
        stop_fraction=config.nonlinear.stop_fraction, extra_supports=extra)


def _plasticity_case(prepared: PreparedModel, load: PlacedLoad, linear: CaseSolution,
                     linear_failure_n: float, options: Any, config: Config,
                     comm: MPI.Comm) -> Any:
    """Incremental plasticity (fea.plasticity) of one load case on the linear model's set-up.

    The model is the linear one (:func:`_elastic_model`: same E per cell or per quadrature
    point, floor, Poisson ratio, supports, fall rotation); the load is the linear case's
    traction on the same head patch, scaled by a load factor that is an unknown under
    indirect displacement control: the mean head-patch displacement along the load grows by
    step_fraction x its linear value at the linear failure load per increment (adaptive),
    through the peak, until the force has fallen (the peak is the largest converged force).
    """
    from fea.plasticity import element_size_mm, incremental_failure, keyak2005_plastic

    cfg = config.nonlinear
    cell_e = np.asarray(prepared.material.E_MPa, dtype=np.float64)
    elastic = cell_e <= config.material.modulus_floor_mpa * (1.0 + 1e-9)
    material, regularisation = keyak2005_plastic(
        prepared.material.rho_ash_g_cm3, cell_e, elastic, element_size_mm(prepared.mesh),
        tension_ratio=config.failure.tension_limit / config.failure.compression_limit,
        poisson_ratio=prepared.material.poisson_ratio,
        reference_length_mm=cfg.reference_length_mm, regularise=cfg.regularise)
    model, rotation = _elastic_model(prepared, None, load, options, comm)
    to_solver = np.eye(3) if rotation is None else rotation
    force = load.patch.force_n
    magnitude = float(np.linalg.norm(force))
    patch = replace(load.patch, force_n=to_solver @ force)
    direction = force / magnitude
    # The control displacement the linear model reaches at its failure load sets the step.
    # (Collective: under MPI the linear solution holds only this rank's rows.)
    linear_head = float(mean_displacement(linear, np.unique(load.patch.nodes), comm)
                        @ direction) * linear_failure_n / magnitude
    try:
        result = incremental_failure(
            model, material, to_solver @ direction, control="indirect",
            step=cfg.step_fraction * linear_head, patch=patch,
            patch_nodes=load.patch.nodes, rtol=cfg.residual_rtol,
            max_increments=cfg.max_increments, max_cutbacks=cfg.max_cutbacks,
            stop_fraction=cfg.stop_fraction, max_step_growth=cfg.max_step_growth)
    finally:
        model.destroy()
    return result, regularisation


def _plasticity_entry(curve: Any, entry: CaseResult, body_weight_n: float
                      ) -> dict[str, Any]:
    """The result.json ``nonlinear`` object of an incremental-plasticity case."""
    from fea.plasticity import EPS_AB_READING

    result, regularisation = curve
    record = result.to_dict()
    record.update({
        "failure_load_BW": result.peak_force_n / body_weight_n,
        "nonlinear_to_linear_ratio": result.peak_force_n / entry.failure_load_N,
        "regularisation": regularisation,
        "material": "Keyak et al. 2005 compressive yield, plateau eps_AB, softening and "
                    "minimum stress from rho_ash (LAW_SETS['keyak2005']); E, floor and "
                    "Poisson ratio of the linear model; tension/compression yield ratio = "
                    "the linear criterion's strain-limit ratio; Drucker-Prager-type yield "
                    "with von Mises flow",
        "eps_AB": EPS_AB_READING,
    })
    return record


def _plot_curve(path: Path, curve: Any, name: str, entry: CaseResult) -> None:
    """Force-displacement curve with the peak and the linear failure load (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(curve.displacement_mm, curve.force_n / 1000.0, "o-", ms=3, label="nonlinear")
    ax.axhline(entry.failure_load_N / 1000.0, color="tab:red", ls="--",
               label=f"linear (Schileo) {entry.failure_load_N / 1000:.2f} kN")
    ax.plot([curve.peak_displacement_mm], [curve.peak_force_n / 1000.0], "k*", ms=12,
            label=f"peak {curve.peak_force_n / 1000:.2f} kN")
    ax.set_xlabel("head displacement along the load (mm)")
    ax.set_ylabel("head reaction force (kN)")
    ax.set_title(f"{name}: force-displacement (Keyak 2005 softening)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_fields(path: Path, prepared: PreparedModel, solutions: dict[str, Any],
                  analyses: dict[str, FailureAnalysis]) -> None:
    from fea.failure import principal_strains
    from osteofe.fields import write_vtu

    point_data: dict[str, np.ndarray] = {}
    cell_data: dict[str, np.ndarray] = {
        "E_MPa": prepared.material.E_MPa,
        "rho_ash_g_cm3": prepared.material.rho_ash_g_cm3,
        "HU": prepared.material.hu,
        "region_tag": prepared.mesh.cell_tags.astype(np.int32),
    }
    for name, sol in solutions.items():
        point_data[f"displacement_mm_{name}"] = sol.displacement_mm
        point_data[f"risk_factor_{name}"] = analyses[name].node_risk_factor
        eig = principal_strains(sol.strain)
        cell_data[f"max_principal_strain_{name}"] = eig[:, 2]
        cell_data[f"min_principal_strain_{name}"] = eig[:, 0]
        cell_data[f"strain_{name}"] = sol.strain.reshape(-1, 9)
    write_vtu(path, prepared.mesh, point_data, cell_data)


def _write_picture(path: Path, prepared: PreparedModel, analyses: dict[str, FailureAnalysis],
                   governing: CaseResult, result: StrengthResult,
                   surface: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]) -> None:
    """The risk picture on the bone surface.

    ``surface``: :func:`osteofe.distributed.picture_surface` of the model (rank 0 keeps it
    on a distributed run, whose ranks have no whole mesh).
    """
    from osteofe.render import render_risk_picture

    nodes, points = surface
    name = governing.load_case
    patch = prepared.loads[name].patch
    direction = patch.force_n / np.linalg.norm(patch.force_n)
    lm = prepared.landmarks
    entry = lm.head_centre_mm - lm.head_radius_mm * direction
    title = (f"{name}: failure load {governing.failure_load_N:.0f} N "
             f"({governing.failure_load_N / result.body_weight_N:.2f} x BW), "
             f"{governing.failure_mode} in the {governing.critical_region} (magenta)")
    # The picture's mesh is the surface alone, its nodes renumbered 0..s-1.
    render_risk_picture(path, points, np.searchsorted(nodes, prepared.boundary),
                        analyses[name].node_risk_factor[nodes],
                        analyses[name].critical_point_mm, entry, direction, lm.frame.axes,
                        title, np.searchsorted(nodes, prepared.fixed_nodes))
