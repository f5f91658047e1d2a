"""The typed result: result.json of a real phantom run through its schema and the type."""

from __future__ import annotations

import ast
import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import lesion_phantom_run

from meshing.errors import InputError
from osteofe.cli import _summary_table
from osteofe.result import (
    METHOD_SEE_N,
    SCHEMA_VERSION,
    CaseResult,
    LesionMeasures,
    StrengthResult,
    schema,
    validate,
)

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


#: Modules that consume a result: they read the typed records, never result.json's dicts.
CONSUMERS = ("osteofe/report.py", "osteofe/report_page1.py", "osteofe/cohort.py",
             "osteofe/benchmark.py", "osteofe/cli.py", "osteofe/api.py", "osteofe/insilico.py")
#: The raw JSON carriers of the typed result (only the serialiser and the producer use them).
RAW_CARRIERS = {"records", "extras", "record"}
RAW_PROVENANCE = {"inputs", "config", "machine", "timings_s"}
#: Calls that give a typed result (its variables must not be serialised or subscripted).
RESULT_SOURCES = {"_typed", "load", "from_dict", "from_json", "run_strength", "load_result",
                  "analyze"}


def _typed_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names that hold a typed result in ``function`` (annotated, or assigned from a call
    that returns one)."""
    typed: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.arg) and node.annotation is not None \
                and "StrengthResult" in ast.unparse(node.annotation):
            typed.add(node.arg)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in RESULT_SOURCES:
                typed.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return typed


def _re_parsing(path: Path) -> list[str]:
    """Where a consumer module reads a result through its JSON form instead of its type."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in RAW_CARRIERS:
            found.add(f"{where} reads .{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr in RAW_PROVENANCE \
                and isinstance(node.value, ast.Attribute) and node.value.attr == "provenance":
            found.add(f"{where} reads provenance.{node.attr}")
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        typed = _typed_names(function)
        for node in ast.walk(function):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("to_dict", "to_json") \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in typed:
                found.add(f"{where} serialises {node.func.value.id}")
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                    and node.value.id in typed:
                found.add(f"{where} subscripts {node.value.id}")
    return sorted(found)


def test_consumers_read_the_typed_records_not_result_json_dicts(tmp_path):
    found = {m: _re_parsing(ROOT / m) for m in CONSUMERS}
    assert {m: f for m, f in found.items() if f} == {}
    # The check sees what it forbids.
    probe = tmp_path / "consumer.py"
    probe.write_text("def f(result: StrengthResult):\n    doc = result.to_dict()\n"
                     "    typed = _typed(doc)\n    return typed['cases'], typed.records,"
                     " typed.provenance.config\n")
    assert [line.split(" ", 1)[1] for line in _re_parsing(probe)] == [
        "serialises result", "reads .records", "reads provenance.config", "subscripts typed"]


def test_report_summary_and_cohort_status_do_not_serialise_the_result(run_dir, monkeypatch):
    from osteofe.cohort import _status_fields
    from osteofe.report import collect_report_data, render_html

    result = StrengthResult.load(run_dir)

    def refuse(*_args, **_kwargs):
        raise AssertionError("a consumer went through result.json's dict")

    for cls in (StrengthResult, CaseResult, LesionMeasures):
        monkeypatch.setattr(cls, "to_dict", refuse)
    data = collect_report_data(result)
    html = render_html(data)
    assert data.side == result.landmarks.side == "right"
    assert f"{result.mesh.num_nodes} / {result.mesh.num_cells}" in html
    assert result.provenance.files["ct"].sha256 in html
    assert f"{100 * result.failure_criterion.tension_limit:.2f} % principal strain" in html
    assert data.mirels is not None and data.mirels.total == result.lesion.mirels_total
    assert _status_fields(result)["failure_load_N"] == result.failure_load_N
    assert "weakest:" in _summary_table([result])
