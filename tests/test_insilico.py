"""SYNTHETIC in-silico cohorts: determinism, labels, measurements, the outcome process.

How independence of the outcome from the predictors is checked: the outcome is a pure
function (``draw_outcome``) of the reference strengths, the body mass and the outcome
stream's draws; its signature admits nothing else, and changing every model behind the
predictors (pain, lesion sites, kinds and sizes) with the same seed leaves the outcome
draws, the body masses and therefore the outcomes of given strengths bit-identical while
the Mirels items change.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meshing.phantom import LesionParams, Phantom, PhantomParams, make_phantom
from osteofe.cohort import read_manifest
from osteofe.insilico import (
    DATA_ORIGIN,
    SITES,
    InsilicoOptions,
    LesionSpec,
    OutcomeDraws,
    OutcomeModel,
    PatientModel,
    _material,
    axial_cortical_involvement,
    build_patient,
    draw_outcome,
    format_insilico,
    generate_cohort,
    rigidity_loss,
    sample_patients,
    size_fraction,
)

pytestmark = pytest.mark.skip_in_parallel

CHEAP = InsilicoOptions.cheap()
Phantoms = tuple[Phantom, Phantom, Phantom, Phantom]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sampling_is_deterministic_by_seed() -> None:
    a = sample_patients(8, 5, CHEAP)
    assert a == sample_patients(8, 5, CHEAP)
    b = sample_patients(8, 6, CHEAP)
    assert [p.params for p in a] != [p.params for p in b]
    assert [p.case_id for p in a] == [f"SYN-{i:04d}" for i in range(1, 9)]


def test_sampled_patients_vary_within_the_phantoms_valid_ranges() -> None:
    model = PatientModel(lesion_fraction=0.7)
    patients = sample_patients(60, 2, replace(CHEAP, patients=model))
    heads = [p.params.head_radius_mm for p in patients]
    assert 20.5 <= min(heads) < max(heads) <= 25.5
    angles = [p.params.neck_shaft_angle_deg for p in patients]
    assert 115 <= min(angles) < max(angles) <= 140
    assert len({p.density_factor for p in patients}) == 60
    assert all(0.7 <= p.density_factor <= 1.3 for p in patients)
    assert all(45 <= p.body_mass_kg <= 120 for p in patients)
    lesions = [p.lesion for p in patients]
    assert 5 < sum(les is None for les in lesions) < 35
    assert {les.site for les in lesions if les} <= set(SITES)
    assert {les.kind for les in lesions if les} == {"lytic", "mixed", "blastic"}
    # Every sampled geometry is a valid phantom (PhantomParams validates on construction).
    for p in patients:
        assert replace(p.params) == p.params


def test_outcome_draws_do_not_depend_on_the_predictor_models() -> None:
    other = PatientModel(pain_slope=0.0, pain_cutpoints=(-1.0, 0.0),
                         site_weights=(1, 0, 0, 0, 0), kind_weights=(0, 0, 1),
                         lesion_radius_mm=(3.0, 4.0))
    a = sample_patients(30, 11, CHEAP)
    b = sample_patients(30, 11, replace(CHEAP, patients=other))
    assert [p.outcome for p in a] == [p.outcome for p in b]
    assert [p.body_mass_kg for p in a] == [p.body_mass_kg for p in b]
    assert [p.lesion for p in a] != [p.lesion for p in b]
    # The outcome function cannot see a predictor: its only inputs are these.
    assert list(inspect.signature(draw_outcome).parameters) == [
        "reference_stance_N", "reference_fall_N", "body_mass_kg", "draws", "model"]
    for pa, pb in zip(a, b, strict=True):
        assert draw_outcome(3000.0, 3500.0, pa.body_mass_kg, pa.outcome) == draw_outcome(
            3000.0, 3500.0, pb.body_mass_kg, pb.outcome)


def _draws(**kw: Any) -> OutcomeDraws:
    base = {"follow_up_months": 12.0, "model_error_z": 0.0, "habitual_z": 0.0,
            "habitual_time_u": 0.5, "stumble_times": (), "stumble_z": (), "fall_times": (),
            "fall_z": ()}
    return OutcomeDraws(**{**base, **kw})


def test_outcome_process_follows_its_documented_rules() -> None:
    model = OutcomeModel()
    bw = 70 * 9.81
    # Model error: true strength = reference x exp(0.2 z), exactly.
    out = draw_outcome(5000.0, 4000.0, 70.0, _draws(model_error_z=1.5))
    assert out.true_strength_stance_N == pytest.approx(5000.0 * math.exp(0.2 * 1.5))
    assert out.true_strength_fall_N == pytest.approx(4000.0 * math.exp(0.2 * 1.5))
    assert out.habitual_load_N == pytest.approx(3.0 * bw)
    assert not out.fractured and out.follow_up_months == 12.0 and out.cause == ""
    # A femur weaker than the habitual load breaks in the first month.
    out = draw_outcome(2.9 * bw, None, 70.0, _draws())
    assert (out.fractured, out.cause, out.follow_up_months) == (True, "habitual", 0.5)
    # A stumble at 6.5 BW breaks a 6 BW femur, at its time; a later one beyond follow-up
    # or a weaker one does not count.
    stumble = _draws(stumble_times=(2.0, 7.0), stumble_z=(-3.0, 0.0))
    out = draw_outcome(6.0 * bw, None, 70.0, stumble)
    assert (out.fractured, out.cause, out.follow_up_months) == (True, "stumble", 7.0)
    assert out.max_stumble_load_N == pytest.approx(model.stumble_load_median_bw * bw)
    assert not draw_outcome(6.0 * bw, None, 70.0, replace(stumble, follow_up_months=6.0)
                            ).fractured
    # Falls load the fall strength (4 kN median impact), and only when it is modelled.
    fall = _draws(fall_times=(3.0,), fall_z=(0.0,))
    assert draw_outcome(9000.0, 3900.0, 70.0, fall).cause == "fall"
    assert not draw_outcome(9000.0, 4100.0, 70.0, fall).fractured
    assert not draw_outcome(9000.0, None, 70.0, fall).fractured


@pytest.fixture(scope="module")
def phantoms() -> Phantoms:
    params = replace(PhantomParams(), voxel_size_mm=1.5, soft_tissue_mm=3.0,
                     distal_cut_mm=150.0)
    intact = make_phantom(params)
    small = make_phantom(params, LesionParams("subtrochanteric", (6.0, 6.0, 9.0), "lytic"))
    large = make_phantom(params, LesionParams("subtrochanteric", (12.0, 12.0, 20.0), "lytic"))
    blastic = make_phantom(params, LesionParams("subtrochanteric", (12.0, 12.0, 20.0),
                                                "blastic"))
    return intact, small, large, blastic


def test_measurements_grow_with_the_lesion(phantoms: Phantoms) -> None:
    intact, small, large, blastic = phantoms
    site = "subtrochanteric"
    f_small, f_large = size_fraction(small, site), size_fraction(large, site)
    assert 0.1 < f_small < f_large <= 1.0
    # The lesion is centred 4 mm inside the medial surface of a ~15.5 mm radius shaft: its
    # chord across the diameter is (4 + r) mm of ~31 mm (r = 6: ~0.32, r = 12: ~0.52).
    assert f_small == pytest.approx(10 / 31, abs=0.08)
    assert f_large == pytest.approx(16 / 31, abs=0.08)
    aci_small, aci_large = (axial_cortical_involvement(p, site) for p in (small, large))
    # The breach of the cortex spans most of the lesion's axial length (2 x 9 and 2 x 20 mm).
    assert 8.0 < aci_small < 18.0 + 1.5
    assert 25.0 < aci_large < 40.0 + 1.5
    assert axial_cortical_involvement(blastic, site) == 0.0
    material = _material()
    loss_small = rigidity_loss(small, intact, site, material)
    loss_large = rigidity_loss(large, intact, site, material)
    assert 0.0 < loss_small < loss_large < 1.0
    assert rigidity_loss(blastic, intact, site, material) == 0.0  # sclerotic: no loss


def test_build_patient_is_deterministic_labelled_and_resumable(tmp_path: Path) -> None:
    patient = replace(sample_patients(1, 4, CHEAP)[0],
                      lesion=LesionSpec("shaft", 9.0, 1.5, "lytic", shaft_depth_mm=40.0))
    a = build_patient(patient, tmp_path / "a", CHEAP)
    b = build_patient(patient, tmp_path / "b", CHEAP)
    for name in ("ct.nii.gz", "labels.nii.gz"):
        assert _sha(tmp_path / "a" / name) == _sha(tmp_path / "b" / name)
    assert {k: v for k, v in a.items() if k not in ("build_s", "clinical_ct", "truth_ct")} == {
        k: v for k, v in b.items() if k not in ("build_s", "clinical_ct", "truth_ct")}
    assert a["data_origin"] == DATA_ORIGIN == "SYNTHETIC"
    assert json.loads((tmp_path / "a" / "patient.json").read_text())["data_origin"] == (
        "SYNTHETIC")
    assert a["mirels"]["site"] == "lower_limb"  # a diaphyseal lesion
    assert a["mirels"]["lesion"] == "lytic"
    assert 0.0 < a["mirels"]["size_fraction"] < 1.0 and a["aci_mm"] > 0.0
    mtime = (tmp_path / "a" / "ct.nii.gz").stat().st_mtime_ns
    assert build_patient(patient, tmp_path / "a", CHEAP) == a
    assert (tmp_path / "a" / "ct.nii.gz").stat().st_mtime_ns == mtime


def test_generated_cohort_is_synthetic_everywhere(tmp_path: Path) -> None:
    cohort = generate_cohort(3, tmp_path / "syn", seed=1, options=CHEAP, workers=2,
                             progress=False)
    root = tmp_path / "syn"
    assert cohort.n_patients == 3 and not cohort.excluded
    assert "SYNTHETIC" in (root / "README_SYNTHETIC.txt").read_text()
    assert "SYNTHETIC" in format_insilico(cohort)
    info = json.loads(cohort.info.read_text())
    assert info["data_origin"] == "SYNTHETIC" and info["n_patients"] == 3
    with cohort.manifest.open() as fh:
        rows = list(csv.DictReader(fh))
    with cohort.truth.open() as fh:
        truth = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert [r["data_origin"] for r in rows] == ["SYNTHETIC"] * 3
    assert all(r["data_origin"] == "SYNTHETIC" for r in truth.values())
    assert all(r["case_id"].startswith("SYN-") for r in rows)
    manifest = read_manifest(cohort.manifest)  # valid input of `osteofe cohort run`
    assert manifest.has_outcomes and manifest.cases[0].ct.is_file()
    assert sum(int(r["fractured"]) for r in rows) == cohort.n_fractured
    # The outcomes are those of draw_outcome on the reference FE results and the seed's draws.
    patients = {p.case_id: p for p in sample_patients(3, 1, CHEAP)}
    for row in rows:
        result = json.loads((root / "truth_fe" / "cases" / row["case_id"] / "result.json")
                            .read_text())
        loads = {c["load_case"]: c["failure_load_N"] for c in result["cases"]}
        assert set(loads) == {"stance", "fall"}
        p = patients[row["case_id"]]
        expected = draw_outcome(loads["stance"], loads["fall"], p.body_mass_kg, p.outcome)
        assert int(row["fractured"]) == int(expected.fractured)
        assert float(row["follow_up_months"]) == pytest.approx(expected.follow_up_months,
                                                               rel=1e-5)
        assert float(truth[row["case_id"]]["reference_stance_N"]) == pytest.approx(
            loads["stance"], rel=1e-5)
