"""The typed result: result.json of a real phantom run through its schema and the type."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import lesion_phantom_run

from meshing.errors import InputError
from osteofe.cli import _summary_table
from osteofe.result import METHOD_SEE_N, SCHEMA_VERSION, StrengthResult, schema, validate

pytestmark = pytest.mark.skip_in_parallel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Lesioned phantom, stance + sideways fall, a 4-direction sweep, decks exported."""
    return lesion_phantom_run(tmp_path_factory.mktemp("typed_result"), "typed01",
                              "--degree", "1", "--no-picture", "--load", "stance", "fall",
                              "--sweep", "4", "--pain", "moderate", "--export-inp")


def test_result_json_is_valid_against_the_shipped_schema_and_round_trips(run_dir):
    doc = json.loads((run_dir / "result.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION
    validate(doc)
    result = StrengthResult.load(run_dir)
    assert result.to_dict() == doc  # the file is exactly the type's serialisation
    assert StrengthResult.from_json(result.to_json()) == result
    assert (run_dir / "result.json").read_text() == result.to_json()


def test_schema_refuses_what_the_type_cannot_stand_behind(run_dir):
    doc = json.loads((run_dir / "result.json").read_text())
    broken = json.loads(json.dumps(doc))
    broken["cases"][0]["failure_mode"] = "bending"
    with pytest.raises(InputError, match="cases/0/failure_mode"):
        validate(broken)
    broken = {k: v for k, v in doc.items() if k != "cases"}
    with pytest.raises(InputError, match="'cases' is a required property"):
        validate(broken)
    with pytest.raises(InputError, match="has no 'cases'"):
        StrengthResult.from_dict(broken)
    with pytest.raises(InputError, match="not valid JSON"):
        StrengthResult.from_json("{")


def test_derived_values_are_computed_from_the_raw_numbers(run_dir):
    doc = json.loads((run_dir / "result.json").read_text())
    result = StrengthResult.load(run_dir)
    bw = 75.0 * 9.81
    assert result.body_weight_N == pytest.approx(bw, rel=1e-15)
    loads = {c["load_case"]: c["failure_load_N"] for c in doc["cases"]}
    governing = min(loads, key=loads.__getitem__)
    assert result.governing.load_case == governing == doc["load_case"]
    assert result.failure_load_BW == pytest.approx(loads[governing] / bw, rel=1e-14)
    for case in doc["cases"]:
        typed = result.case(case["load_case"])
        assert typed.load_to_strength_ratio == pytest.approx(
            case["applied_load_N"] / case["failure_load_N"], rel=1e-14)
        assert case["failure_load_BW"] == pytest.approx(case["failure_load_N"] / bw, rel=1e-14)
        sweep = case["direction_sweep"]
        assert sweep["min_failure_load_N"] == min(sweep["failure_loads_N"])
        # The nominal direction is the sweep's first: its load is the case's failure load.
        assert sweep["failure_loads_N"][0] == pytest.approx(case["failure_load_N"], rel=1e-9)
    every = [(n, c["load_case"]) for c in doc["cases"]
             for n in [c["failure_load_N"], *c["direction_sweep"]["failure_loads_N"]]]
    lowest, where = min(every)
    assert doc["weakest"]["failure_load_N"] == pytest.approx(lowest)
    assert doc["weakest"]["load_case"] == where
    assert doc["weakest"]["from_sweep"] == (lowest < loads[where])
    assert doc["failure_load_see_N"] == METHOD_SEE_N
    assert result.lesion is not None and result.lesion.mirels_total is not None
    with pytest.raises(InputError, match="computed: \\['stance', 'fall'\\]"):
        result.case("stumbling")


def test_console_summary_shows_sweep_minimum_mirels_and_probability(run_dir):
    result = StrengthResult.load(run_dir)
    table = _summary_table([result])
    for case in result.cases:
        assert case.sweep is not None
        assert f"{case.sweep.min_failure_load_N:.0f}" in table
        assert f"{case.load_to_strength_ratio:.2f}" in table
    assert f"weakest: {result.weakest.failure_load_N:.0f} N" in table
    assert f"Mirels {result.lesion.mirels_total}/12" in table
    assert "probability: no model (--risk-model)" in table


def test_export_inp_writes_every_load_case_and_the_fall_deck_solves_in_calculix(run_dir):
    result = StrengthResult.load(run_dir)
    assert {"model.inp", "model_fall.inp"} <= set(result.provenance.outputs)
    stance_deck = (run_dir / "model.inp").read_text()
    assert stance_deck.count("*STEP") == 1 and "** load case: stance" in stance_deck
    fall_deck = (run_dir / "model_fall.inp").read_text()
    assert fall_deck.count("*STEP") == 1 and "** load case: fall" in fall_deck
    heading = fall_deck.splitlines()[2]
    rotation = np.array(json.loads(heading.split("R rows ", 1)[1]))
    assert rotation @ rotation.T == pytest.approx(np.eye(3), abs=1e-8)
    fall = result.case("fall")
    if shutil.which("ccx") is None:
        pytest.skip("CalculiX (ccx) not installed: apt-get install calculix-ccx")
    from fea.calculix import run_calculix

    solved = run_calculix(run_dir / "model_fall.inp").cases[0]
    # The same P1 model (degree 1) in an independent code: the pad's reaction, in the fall
    # axes, matches osteofe's (world axes, turned); the pad carries only its normal force.
    ground = rotation @ np.asarray(fall.extras["reaction_at_ground_N"])
    assert solved.reactions_n["ground_contact"] == pytest.approx(ground, rel=1e-5, abs=1e-3)
    # Equilibrium in CalculiX: the pad and the distal cut (whose set holds the pin's nodes)
    # carry the whole applied head force.
    applied = rotation @ np.asarray(fall.extras["force_world_N"])
    assert np.linalg.norm(applied) == pytest.approx(fall.applied_load_N, rel=1e-6)
    total = solved.reactions_n["ground_contact"] + solved.reactions_n["distal_cut"]
    assert total == pytest.approx(-applied, abs=1e-3 * fall.applied_load_N)


def test_schema_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "result.schema.json" in config["tool"]["setuptools"]["package-data"]["osteofe"]
    assert "core" in config["tool"]["setuptools"]["packages"]
    assert schema()["properties"]["schema_version"]["pattern"].startswith("^1")
