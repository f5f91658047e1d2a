"""End-to-end command line: the pipeline on a coarse phantom, outputs, bad inputs, MPI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meshing.imaging import write_ct, write_labels
from meshing.phantom import PhantomParams, make_phantom, write_phantom
from meshing.types import CTVolume, ImageGrid, LabelMap
from osteofe.cli import EXIT_INPUT, main

COARSE_ARGS = ["--mesh-size", "5", "--no-picture"]


@pytest.fixture(scope="module")
def coarse_phantom(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("phantom")
    return write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.0)), out)


@pytest.fixture(scope="module")
def coarse_result(coarse_phantom, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "result"
    code = main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--labels",
                 str(coarse_phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--case-id", "coarse", *COARSE_ARGS])
    assert code == 0
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.skip_in_parallel
def test_strength_writes_complete_results(coarse_result, coarse_phantom):
    out, result = coarse_result
    assert sorted(p.name for p in out.iterdir()) == ["fields.vtu", "result.json"]
    for key in ("failure_load_N", "failure_load_BW", "load_case", "critical_point_mm", "mesh",
                "solver", "timings_s", "inputs", "versions"):
        assert key in result
    assert result["load_case"] == "stance"
    bw = 75 * 9.81
    assert result["failure_load_BW"] == pytest.approx(result["failure_load_N"] / bw)
    case = result["cases"][0]
    assert case["applied_load_N"] == pytest.approx(2.38 * bw)
    # Linearity: failure load = applied load x limit / peak risk factor.
    assert case["failure_load_N"] == pytest.approx(case["applied_load_N"]
                                                   / case["load_to_strength_ratio"])
    # Equilibrium: the distal cut carries the head load.
    assert np.allclose(case["reaction_at_distal_cut_N"], [-f for f in case["force_world_N"]],
                       rtol=1e-5, atol=1e-3 * case["applied_load_N"])
    import hashlib
    digest = hashlib.sha256(coarse_phantom["ct"].read_bytes()).hexdigest()
    assert result["inputs"]["ct"]["sha256"] == digest
    assert result["mesh"]["num_cells"] > 1000
    assert result["solver"]["iterations"]["stance"] > 0
    assert result["landmarks"]["side"] == "right"
    truth = make_phantom(PhantomParams(voxel_size_mm=1.0)).truth
    assert np.linalg.norm(np.array(result["landmarks"]["head_centre_mm"])
                          - truth.head_centre_mm) < 1.0
    assert result["landmarks"]["head_radius_mm"] == pytest.approx(truth.head_radius_mm, abs=1.0)


@pytest.mark.skip_in_parallel
def test_fields_file_opens_with_the_expected_arrays(coarse_result):
    import meshio

    out, result = coarse_result
    mesh = meshio.read(out / "fields.vtu")
    assert mesh.points.shape[0] == result["mesh"]["num_nodes"]
    for name in ("displacement_mm_stance", "risk_factor_stance"):
        assert name in mesh.point_data
    for name in ("E_MPa", "rho_ash_g_cm3", "HU", "max_principal_strain_stance"):
        assert name in mesh.cell_data
    risk = mesh.point_data["risk_factor_stance"]
    assert risk.max() == pytest.approx(result["cases"][0]["load_to_strength_ratio"], rel=1e-9)


def _run_expect_error(args, capsys, pattern, out: Path) -> None:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], err
    assert "hint:" in lines[0]
    assert not out.exists(), "no result may be written on bad input"


def _base(ct, labels, out):
    return ["-q", "strength", "--ct", str(ct), "--labels", str(labels), "--body-weight", "75",
            "--out", str(out), *COARSE_ARGS]


@pytest.mark.skip_in_parallel
def test_missing_file(coarse_phantom, tmp_path, capsys):
    out = tmp_path / "out"
    _run_expect_error(_base(tmp_path / "nope.nii.gz", coarse_phantom["labels"], out), capsys,
                      "CT not found", out)


@pytest.mark.skip_in_parallel
@pytest.mark.parametrize("weight", ["0", "-70", "nan"])
def test_non_positive_body_weight(coarse_phantom, tmp_path, capsys, weight):
    out = tmp_path / "out"
    args = _base(coarse_phantom["ct"], coarse_phantom["labels"], out)
    args[args.index("--body-weight") + 1] = weight
    _run_expect_error(args, capsys, "body weight", out)


@pytest.mark.skip_in_parallel
def test_absent_label(coarse_phantom, tmp_path, capsys):
    out = tmp_path / "out"
    _run_expect_error([*_base(coarse_phantom["ct"], coarse_phantom["labels"], out),
                       "--bone-label", "7"], capsys, "7", out)


@pytest.mark.skip_in_parallel
def test_empty_label_map(coarse_phantom, tmp_path, capsys):
    from meshing.imaging import read_labels

    labels = read_labels(coarse_phantom["labels"])
    empty = write_labels(LabelMap(labels.grid, np.zeros(labels.grid.shape, np.int32)),
                         tmp_path / "empty.nii.gz")
    out = tmp_path / "out"
    _run_expect_error(_base(coarse_phantom["ct"], empty, out), capsys, "label", out)


@pytest.mark.skip_in_parallel
def test_ct_and_labels_on_disjoint_grids(coarse_phantom, tmp_path, capsys):
    from meshing.imaging import read_labels

    labels = read_labels(coarse_phantom["labels"])
    far = ImageGrid(labels.grid.shape, labels.grid.spacing, labels.grid.origin + 1000.0)
    moved = write_labels(LabelMap(far, labels.labels), tmp_path / "moved.nii.gz")
    out = tmp_path / "out"
    _run_expect_error(_base(coarse_phantom["ct"], moved, out), capsys, "overlap", out)


@pytest.mark.skip_in_parallel
def test_unrescaled_ct_is_refused(coarse_phantom, tmp_path, capsys):
    from meshing.imaging import read_ct

    ct = read_ct(coarse_phantom["ct"])
    raw = write_ct(CTVolume(ct.grid, ct.hu + 1024.0), tmp_path / "raw.nii.gz")
    out = tmp_path / "out"
    _run_expect_error(_base(raw, coarse_phantom["labels"], out), capsys, "rescal", out)


@pytest.mark.skip_in_parallel
def test_config_default_round_trips(tmp_path, capsys):
    assert main(["config", "--print-default"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "osteofe.toml"
    path.write_text(text)
    assert main(["config", "--check", str(path)]) == 0
    path.write_text(text.replace("size_mm = 3.0", "size_mm = -1.0"))
    assert main(["config", "--check", str(path)]) == EXIT_INPUT
    assert "mesh.size_mm" in capsys.readouterr().err


def test_every_config_option_type_has_a_toml_check():
    # load_config looks each option's annotation up in _TYPE_CHECKS: an option of a new type
    # without an entry would crash (KeyError) instead of reading or refusing its value.
    from dataclasses import fields

    from osteofe import config as config_module

    missing = {f"{section}.{option.name}: {option.type}"
               for section, entry in config_module._SECTIONS.items()
               for option in fields(entry.type if isinstance(entry.type, type)
                                    else getattr(config_module, str(entry.type)))
               if str(option.type) not in config_module._TYPE_CHECKS}
    assert not missing


@pytest.mark.skip_in_parallel
def test_mpi_run_gives_the_serial_failure_load(coarse_phantom, coarse_result, tmp_path):
    """`mpiexec -n 2 osteofe strength` reproduces the serial failure load within 1e-5."""
    _, serial = coarse_result
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("mpiexec not found beside the Python interpreter")
    out = tmp_path / "mpi"
    cmd = [str(mpiexec), "-n", "2", sys.executable, "-m", "osteofe", "-q", "strength",
           "--ct", str(coarse_phantom["ct"]), "--labels", str(coarse_phantom["labels"]),
           "--body-weight", "75", "--out", str(out), "--case-id", "coarse", *COARSE_ARGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    parallel = json.loads((out / "result.json").read_text())
    assert parallel["solver"]["mpi_ranks"] == 2
    assert parallel["failure_load_N"] == pytest.approx(serial["failure_load_N"], rel=1e-5)
    assert parallel["critical_point_mm"] == serial["critical_point_mm"]


@pytest.mark.skip_in_parallel
def test_load_cases_fall_custom_and_direction_sweep(coarse_phantom, coarse_result, tmp_path):
    _, stance_only = coarse_result
    out = tmp_path / "cases"
    code = main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--labels",
                 str(coarse_phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--load", "stance", "fall", "--custom-load", "100", "-50", "-1500",
                 "--sweep", "8", *COARSE_ARGS])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    cases = {c["load_case"]: c for c in result["cases"]}
    assert sorted(cases) == ["custom_1", "fall", "stance"]
    # Superposition of three unit solves reproduces the direct stance solve.
    assert cases["stance"]["failure_load_N"] == pytest.approx(stance_only["failure_load_N"],
                                                              rel=1e-6)
    sweep = cases["stance"]["direction_sweep"]
    assert sweep["failure_loads_N"][0] == pytest.approx(cases["stance"]["failure_load_N"],
                                                        rel=1e-4)
    assert sweep["min_failure_load_N"] <= cases["stance"]["failure_load_N"] * (1 + 1e-9)
    assert len(sweep["directions_world"]) == 8
    # The fall is carried by the distal cut and the ground contact together.
    fall = cases["fall"]
    total = np.add(fall["reaction_at_distal_cut_N"], fall["reaction_at_ground_N"])
    assert np.allclose(total, -np.array(fall["force_world_N"]), rtol=1e-5,
                       atol=1e-4 * fall["applied_load_N"])
    assert fall["applied_load_N"] == pytest.approx(4000.0)
    assert fall["load_definition"]["support"] == "fall"
    # A custom force keeps its magnitude; its direction is mapped from the anatomical frame.
    custom = cases["custom_1"]
    assert custom["applied_load_N"] == pytest.approx(np.linalg.norm([100, -50, -1500]))
    axes = np.array(result["landmarks"]["frame_axes_world"])
    local = axes @ np.array(custom["force_world_N"])
    assert local == pytest.approx([100.0, -50.0, -1500.0], abs=1e-2)


@pytest.mark.skip_in_parallel
def test_solve_command_on_an_exported_deck(tmp_path, capsys):
    from fea.calculix import write_inp
    from fea.loads import LoadPatch
    from fea.solver import Support
    from fea.topology import boundary_faces, face_normals_and_areas
    from meshing.structured import box_mesh

    mesh = box_mesh([0, 0, 0], [10, 10, 40], (2, 2, 8))
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > 40 - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(mesh.points, top)
    force = np.array([0.0, 0.0, -800.0])
    patch = LoadPatch(top, np.unique(top), float(areas.sum()), force)
    deck = tmp_path / "bar.inp"
    write_inp(deck, mesh, np.full(mesh.num_cells, 1500.0), 0.3,
              [Support("base", np.flatnonzero(mesh.points[:, 2] < 1e-9))], [patch])
    out = tmp_path / "solved"
    assert main(["-q", "solve", str(deck), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    # Abaqus labels are case-insensitive: osteofe reports them upper-case.
    assert result["reactions_n"]["BASE"] == pytest.approx([0.0, 0.0, 800.0], abs=1e-3)
    broken = tmp_path / "broken.inp"
    broken.write_text(deck.read_text().replace("*ELASTIC", "*PLASTIC", 1))
    assert main(["-q", "solve", str(broken), "--out", str(tmp_path / "no")]) == EXIT_INPUT
    assert "line" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


@pytest.mark.skip_in_parallel
def test_bring_your_own_mesh_gives_the_same_answer(coarse_phantom, coarse_result, tmp_path,
                                                   capsys):
    # The mesh osteofe wrote (fields.vtu) read back as a user mesh, without labels.
    out_first, first = coarse_result
    out = tmp_path / "byo"
    assert main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--mesh",
                 str(out_first / "fields.vtu"), "--body-weight", "75", "--out", str(out),
                 *COARSE_ARGS]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["mesh"]["num_cells"] == first["mesh"]["num_cells"]
    assert result["failure_load_N"] == pytest.approx(first["failure_load_N"], rel=1e-6)
    assert "mesh" in result["inputs"] and "labels" not in result["inputs"]
    # Neither labels nor mesh: the femur is segmented automatically (meshing.autoseg), the
    # result says so and its failure load is that of the true labels (measured -3.3%).
    auto = tmp_path / "auto"
    assert main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--body-weight", "75",
                 "--out", str(auto), *COARSE_ARGS]) == 0
    auto_result = json.loads((auto / "result.json").read_text())
    assert auto_result["segmentation"]["source"] == "automatic"
    assert any("labels are automatic" in w for w in auto_result["warnings"])
    assert auto_result["failure_load_N"] == pytest.approx(first["failure_load_N"], rel=0.05)


@pytest.mark.skip_in_parallel
def test_map_command_writes_material_groups(coarse_phantom, coarse_result, tmp_path):
    out_first, _ = coarse_result
    out = tmp_path / "mapped.inp"
    assert main(["-q", "map", "--ct", str(coarse_phantom["ct"]), "--mesh",
                 str(out_first / "fields.vtu"), "--out", str(out), "--groups", "16",
                 "--calibration", "0.0008", "-0.01"]) == 0
    text = out.read_text()
    assert text.upper().count("*MATERIAL") == 16
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["mesh"]["cells"] > 1000


@pytest.mark.skip_in_parallel
def test_nonlinear_option_writes_the_curve(coarse_phantom, coarse_result, tmp_path):
    _, linear = coarse_result
    out = tmp_path / "nonlinear"
    assert main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--labels",
                 str(coarse_phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--nonlinear", *COARSE_ARGS]) == 0
    result = json.loads((out / "result.json").read_text())
    nonlinear = result["cases"][0]["nonlinear"]
    assert result["failure_load_N"] == pytest.approx(linear["failure_load_N"], rel=1e-9)
    assert nonlinear["nonlinear_to_linear_ratio"] == pytest.approx(
        nonlinear["failure_load_N"] / linear["failure_load_N"])
    # The femur carries loads of the order of the linear estimate; indirect displacement
    # control passes the peak with every kept increment in equilibrium.
    assert 0.3 < nonlinear["nonlinear_to_linear_ratio"] < 3.0
    assert nonlinear["peak_reached"] is True
    assert nonlinear["all_increments_converged"] is True
    rows = (out / "force_displacement_stance.csv").read_text().splitlines()
    assert rows[0].startswith("increment,displacement_mm,force_N")
    forces = [float(r.split(",")[2]) for r in rows[1:]]
    assert max(forces) == pytest.approx(nonlinear["failure_load_N"], rel=1e-5)
    assert (out / "force_displacement_stance.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skip_in_parallel
def test_unsettled_secant_increments_are_a_warning(coarse_phantom, tmp_path):
    # One secant iteration per increment cannot settle the moduli once the bone softens.
    config = tmp_path / "secant.toml"
    config.write_text('[nonlinear]\nmethod = "secant"\nmax_iterations = 1\n'
                      "max_increments = 6\n")
    out = tmp_path / "secant"
    assert main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--labels",
                 str(coarse_phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--nonlinear", "--config", str(config), *COARSE_ARGS]) == 0
    result = json.loads((out / "result.json").read_text())
    unsettled = result["cases"][0]["nonlinear"]["unconverged_increments"]
    assert unsettled > 0
    assert any(w.startswith(f"nonlinear (stance): {unsettled} of ") and "biased high" in w
               for w in result["warnings"]), result["warnings"]


@pytest.mark.skip_in_parallel
@pytest.mark.parametrize("command", [["strength"], ["demo"], ["phantom"], ["mesh"], ["map"],
                                     ["solve"], ["report"], ["cohort", "run"],
                                     ["cohort", "synth"], ["benchmark"], ["config"]])
def test_every_command_documents_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: osteofe" in capsys.readouterr().out


@pytest.mark.skip_in_parallel
def test_crop_below_the_lesser_trochanter(coarse_phantom, tmp_path):
    import meshio

    out = tmp_path / "cropped"
    assert main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--labels",
                 str(coarse_phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--crop-below-lt", "60", *COARSE_ARGS]) == 0
    result = json.loads((out / "result.json").read_text())
    assert any("cropped 60 mm below the lesser trochanter" in w for w in result["warnings"])
    axis = np.array(result["landmarks"]["shaft_axis"])
    lesser = np.array(result["landmarks"]["lesser_trochanter_mm"])
    lowest = (meshio.read(out / "fields.vtu").points @ axis).min()
    # The flat cut sits 60 mm below the lesser trochanter (within a voxel and a mesh size).
    assert lowest == pytest.approx(lesser @ axis - 60.0, abs=5.0)


@pytest.fixture(scope="module")
def coarse_lesion_phantom(tmp_path_factory) -> dict[str, Path]:
    from meshing.phantom import LesionParams

    out = tmp_path_factory.mktemp("lesion_phantom")
    return write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.0),
                                      LesionParams(site="calcar", radius_mm=12.0)), out)


@pytest.mark.skip_in_parallel
def test_export_risk_model_and_mirels_items_by_hand(coarse_lesion_phantom, tmp_path):
    from risk.calibration import StrengthRiskModel, save_model

    rng = np.random.default_rng(0)
    strength_bw = rng.uniform(1.0, 12.0, 200)
    fractured = (rng.uniform(size=200) < 1.0 / (1.0 + np.exp(strength_bw - 4.0))).astype(int)
    model = StrengthRiskModel().fit({"failure_load_BW": strength_bw}, fractured)
    model_path = tmp_path / "model.json"
    save_model(model, model_path)
    out = tmp_path / "run"
    assert main(["-q", "strength", "--ct", str(coarse_lesion_phantom["ct"]), "--labels",
                 str(coarse_lesion_phantom["labels"]), "--body-weight", "75", "--out",
                 str(out), "--export-inp", "--risk-model", str(model_path), "--pain", "mild",
                 "--mirels", "size=3", *COARSE_ARGS]) == 0
    result = json.loads((out / "result.json").read_text())
    # Probability: the saved model applied to this femur's strength in body weights.
    expected = model.predict_proba({"failure_load_BW": [result["failure_load_BW"]]})[0, 1]
    assert result["fracture_probability"]["probability"] == pytest.approx(expected)
    # The hand-given size replaces the measured one; pain is the clinician's.
    items = result["lesion_risk"]["mirels"]["items"]
    assert items["size"]["points"] == 3 and items["pain"]["points"] == 1
    assert result["lesion_risk"]["mirels"]["total"] == sum(i["points"] for i in items.values())
    # The exported deck solves to the same reaction at the distal cut.
    solved = tmp_path / "solved"
    assert main(["-q", "solve", str(out / "model.inp"), "--out", str(solved)]) == 0
    reactions = json.loads((solved / "result.json").read_text())["reactions_n"]
    assert reactions["DISTAL_CUT"] == pytest.approx(
        result["cases"][0]["reaction_at_distal_cut_N"], rel=1e-5, abs=1e-3)


def _rerun_twice(coarse_phantom, tmp_path, extra):
    outs = []
    for run in ("first", "second"):
        out = tmp_path / run
        cmd = [sys.executable, "-m", "osteofe", "-q", "strength", "--ct",
               str(coarse_phantom["ct"]), "--labels", str(coarse_phantom["labels"]),
               "--body-weight", "75", "--out", str(out), *COARSE_ARGS, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    results = [json.loads((o / "result.json").read_text()) for o in outs]
    for result in results:
        result.pop("timings_s")
        for case in result["cases"]:
            case["solver"].pop("solve_s")  # wall time
    return outs, results


@pytest.mark.skip_in_parallel
def test_serial_reruns_with_a_direct_solver_are_bitwise_identical(coarse_phantom, tmp_path):
    """Rerunning the command gives the same bytes (fresh processes, as users rerun)."""
    outs, (first, second) = _rerun_twice(coarse_phantom, tmp_path, ["--pc", "lu"])
    assert first == second
    assert (outs[0] / "fields.vtu").read_bytes() == (outs[1] / "fields.vtu").read_bytes()


@pytest.mark.skip_in_parallel
def test_serial_reruns_with_gamg_agree_to_solver_round_off(coarse_phantom, tmp_path):
    # PETSc's GAMG builds its tentative prolongators with different values (same aggregates)
    # from process to process, so its iterates differ in the last bits; meshes and materials
    # are bitwise identical.
    _, (first, second) = _rerun_twice(coarse_phantom, tmp_path, [])
    assert second["failure_load_N"] == pytest.approx(first["failure_load_N"], rel=1e-10)
    assert first["mesh"] == second["mesh"] and first["material"] == second["material"]


@pytest.mark.skip_in_parallel
def test_moduli_at_quadrature_points_through_the_pipeline(coarse_phantom, coarse_result,
                                                          tmp_path):
    _, per_cell = coarse_result
    config = tmp_path / "qp.toml"
    config.write_text("[material]\nmodulus_at_quadrature_points = true\n")
    out = tmp_path / "qp"
    assert main(["-q", "strength", "--ct", str(coarse_phantom["ct"]), "--labels",
                 str(coarse_phantom["labels"]), "--body-weight", "75", "--out", str(out),
                 "--config", str(config), *COARSE_ARGS]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["material"]["modulus_at_quadrature_points"] is True
    # Same mesh, same CT: the two ways of giving E agree to within the element-scale
    # variation of the density field (and are not identical).
    ratio = result["failure_load_N"] / per_cell["failure_load_N"]
    assert 0.8 < ratio < 1.25 and ratio != 1.0
