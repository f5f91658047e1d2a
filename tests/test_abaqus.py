"""Abaqus/CalculiX decks built elsewhere: reader, ``osteofe solve``, CalculiX cross-checks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_ccx
from mpi4py import MPI

from fea.abaqus import (
    C3D10_TO_VTK,
    NODES_BY_ID,
    AbaqusError,
    AbaqusUnsupportedError,
    read_inp,
)
from fea.calculix import run_calculix, to_quadratic, write_inp
from fea.loads import LoadPatch
from fea.solver import ElasticModel, NodalForces, SolverOptions, Support
from fea.topology import boundary_faces, face_normals_and_areas
from meshing.structured import box_mesh
from meshing.types import TetMesh
from osteofe.cli import main
from osteofe.solve_tool import run_solve

#: Abaqus faces S1-S4 of a tetrahedron (0-based corners).
FACES = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
TIGHT = SolverOptions(rtol=1e-11, atol=1e-30)


# -- deck writing for the tests ------------------------------------------------------------


def _distorted_box(upper: list[float], divisions: tuple[int, int, int], seed: int = 7,
                   amount: float = 0.3) -> TetMesh:
    mesh = box_mesh([0, 0, 0], upper, divisions)
    pts = mesh.points.copy()
    inside = np.all((pts > 1e-9) & (pts < np.asarray(upper) - 1e-9), axis=1)
    pts[inside] += np.random.default_rng(seed).uniform(-amount, amount, (inside.sum(), 3))
    return TetMesh(pts, mesh.cells, mesh.cell_tags)


def _id_lines(ids: np.ndarray, per_line: int = 8) -> str:
    text = [str(int(i)) for i in ids]
    return "".join(", ".join(text[k:k + per_line]) + "\n"
                   for k in range(0, len(text), per_line))


def _deck(mesh: TetMesh, moduli: np.ndarray, nu: float, nsets: dict[str, np.ndarray],
          boundary: str, loads: str = "", print_sets: tuple[str, ...] = ()) -> str:
    """A deck: one *ELEMENT block, one element set, material and section per modulus."""
    etype = "C3D4" if mesh.order == 1 else "C3D10"
    node_rows = "".join(f"{i + 1}, {x:.17g}, {y:.17g}, {z:.17g}\n"
                        for i, (x, y, z) in enumerate(mesh.points))
    elem_rows = "".join(", ".join(str(v) for v in [k + 1, *(row + 1)]) + "\n"
                        for k, row in enumerate(mesh.cells))
    values, index = np.unique(moduli, return_inverse=True)
    parts = ["*HEADING\nosteofe test deck\n", "*NODE, NSET=NALL\n", node_rows,
             f"*ELEMENT, TYPE={etype}, ELSET=EALL\n", elem_rows]
    for k, value in enumerate(values):
        parts.append(f"*ELSET, ELSET=M{k}\n" + _id_lines(np.flatnonzero(index == k) + 1))
        parts.append(f"*MATERIAL, NAME=M{k}\n*ELASTIC\n{value:.17g}, {nu}\n"
                     f"*SOLID SECTION, ELSET=M{k}, MATERIAL=M{k}\n")
    for name, nodes in nsets.items():
        parts.append(f"*NSET, NSET={name}\n" + _id_lines(np.asarray(nodes) + 1))
    parts.append("*STEP\n*STATIC\n*BOUNDARY\n" + boundary + loads)
    for name in print_sets:
        parts.append(f"*NODE PRINT, NSET={name}, TOTALS=ONLY\nRF\n")
    parts.append("*NODE PRINT, NSET=NALL\nU\n*END STEP\n")
    return "".join(parts)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rel(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.staging-*"))


# -- the reader ----------------------------------------------------------------------------


def _feature_deck(tmp_path: Path) -> tuple[Path, TetMesh, np.ndarray]:
    """A C3D10 deck using comments, lower case, continuations, GENERATE, set refs, *INCLUDE."""
    quad = to_quadratic(box_mesh([0, 0, 0], [2, 2, 2], (1, 1, 1)))
    node_ids = 101 + np.arange(quad.num_nodes)
    order = np.random.default_rng(0).permutation(quad.num_nodes)  # nodes in any order
    lines = ["** a comment line", "*heading", "cube of six C3D10", "", "*node, nset=Nall"]
    lines += [f"{node_ids[i]}, {p[0]}, {p[1]}, {p[2]}" for i, p in zip(order, quad.points[order],
                                                                      strict=True)]
    lines += ["*Element, type=c3d10, elset=Eall  "]
    for k, row in enumerate(quad.cells):
        ids = [str(1001 + k), *(str(v) for v in node_ids[row])]
        lines += [", ".join(ids[:6]) + ",", "   " + ", ".join(ids[6:])]  # continued line
    lines += ["*Elset, elset=first, generate", "1001, 1005, 2",
              "*ELSET, ELSET=Second", "first, 1002,", "**", "*nset, nset=RANGE, GENERATE",
              "101, 110, 3", "*NSET, NSET=bottom"]
    bottom = np.flatnonzero(quad.points[:, 2] < 1e-9)
    lines += [", ".join(str(v) for v in node_ids[bottom])]
    lines += ["*NSET,NSET=both", "bottom, RANGE", "*material, name=Bone", "*elastic",
              "1.5e3, 0.3", "*density", "1.9e-9", "*Solid Section, elset=EALL,",
              "  material=bone", "*include, input=bc.inc", "*step, name=Walk", "*static",
              "*cload", "range, 3, -1.0", "*end step"]
    (tmp_path / "bc.inc").write_text("** included\n*boundary\nbottom, ENCASTRE\n")
    return _write(tmp_path / "features.inp", "\n".join(lines) + "\n"), quad, node_ids


def test_reader_understands_the_abaqus_syntax(tmp_path: Path) -> None:
    deck, quad, node_ids = _feature_deck(tmp_path)
    model = read_inp(deck)
    assert model.unsupported == ()
    assert model.element_type == "C3D10" and model.step_name == "WALK"
    assert np.array_equal(model.node_ids, node_ids)  # sorted by id = our order
    assert np.array_equal(model.mesh.points, quad.points)
    assert np.array_equal(model.mesh.cells, quad.cells)
    assert np.array_equal(model.element_ids, 1001 + np.arange(6))
    assert model.element_sets["FIRST"].tolist() == [0, 2, 4]  # GENERATE 1001..1005 step 2
    assert model.element_sets["SECOND"].tolist() == [0, 1, 2, 4]  # set reference + id
    assert model.node_sets["RANGE"].tolist() == [0, 3, 6, 9]  # ids 101, 104, 107, 110
    bottom = np.flatnonzero(quad.points[:, 2] < 1e-9)
    assert model.node_sets["BOTH"].tolist() == sorted(set(bottom) | {0, 3, 6, 9})
    assert [(m.name, m.youngs_modulus_mpa, m.poisson_ratio) for m in model.materials] == [
        ("BONE", 1.5e3, 0.3)]
    # ENCASTRE in the included file: all three translations of every bottom node, zero.
    assert model.bc_sets["BOTTOM"].tolist() == bottom.tolist()
    assert model.bc_nodes.tolist() == np.repeat(bottom, 3).tolist()
    assert model.bc_components.tolist() == [0, 1, 2] * bottom.size
    assert not np.any(model.bc_values)
    assert model.load_sets["RANGE"].force_n.tolist() == [0.0, 0.0, -4.0]
    assert model.files[1].name == "bc.inc"
    assert any("*DENSITY" in note for note in model.notes)


def test_c3d10_node_order_is_the_vtk_order(tmp_path: Path) -> None:
    """Abaqus C3D10: corners, then mid-nodes of edges 1-2, 2-3, 3-1, 1-4, 2-4, 3-4."""
    assert np.array_equal(C3D10_TO_VTK, np.arange(10))
    quad = to_quadratic(_distorted_box([4, 4, 4], (2, 2, 2)))
    abaqus_edges = [(0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3)]
    deck = _write(tmp_path / "order.inp", _deck(
        quad, np.full(quad.num_cells, 1e3), 0.3,
        {"FIX": np.flatnonzero(quad.points[:, 2] < 1e-9)}, "FIX, 1, 3\n"))
    model = read_inp(deck)
    p = model.mesh.points[model.mesh.cells]
    for k, (a, b) in enumerate(abaqus_edges):
        assert np.abs(p[:, 4 + k] - 0.5 * (p[:, a] + p[:, b])).max() < 1e-12


def test_curved_c3d10_edges_are_reported(tmp_path: Path) -> None:
    quad = to_quadratic(box_mesh([0, 0, 0], [2, 2, 2], (1, 1, 1)))
    points = quad.points.copy()
    points[quad.cells[0, 4]] += [0.0, 0.0, 0.1]  # a mid-node 0.1 mm off a straight edge
    curved = TetMesh(points, quad.cells, quad.cell_tags)
    deck = _write(tmp_path / "curved.inp", _deck(
        curved, np.full(quad.num_cells, 1e3), 0.3,
        {"FIX": np.flatnonzero(points[:, 2] < 1e-9)}, "FIX, 1, 3\n"))
    (issue,) = read_inp(deck).unsupported
    assert issue.keyword == "*ELEMENT, TYPE=C3D10 (curved)"
    assert "straight-sided" in issue.detail and "curved.inp, line" in issue.location


def _small_deck() -> str:
    mesh = box_mesh([0, 0, 0], [1, 1, 4], (1, 1, 4))
    return _deck(mesh, np.where(mesh.centroids()[:, 2] < 2.0, 100.0, 200.0), 0.3,
                 {"BASE": np.flatnonzero(mesh.points[:, 2] < 1e-9),
                  "TOP": np.flatnonzero(mesh.points[:, 2] > 4 - 1e-9)},
                 "BASE, 1, 3\n", "*CLOAD\nTOP, 3, -1.0\n")


def _edit_element(text: str, k: int, new: str | None = None, after: str | None = None
                  ) -> tuple[str, str]:
    """Replace element line ``k`` (0-based) or insert a line after it; returns the new line."""
    lines = text.splitlines()
    row = lines.index(next(t for t in lines if t.startswith("*ELEMENT"))) + 1 + k
    if new is not None:
        lines[row] = new
    else:
        assert after is not None
        lines.insert(row + 1, after)
    return "\n".join(lines) + "\n", new if new is not None else str(after)


def _element(text: str, k: int) -> list[str]:
    lines = text.splitlines()
    row = lines.index(next(t for t in lines if t.startswith("*ELEMENT"))) + 1 + k
    return lines[row].split(", ")


def _swap_corners(text: str) -> tuple[str, str]:
    ids = _element(text, 0)
    return _edit_element(text, 0, ", ".join([ids[0], ids[2], ids[1], *ids[3:]]))


def _node_line(text: str, node: int, new: str) -> tuple[str, str]:
    lines = text.splitlines()
    row = lines.index("*NODE, NSET=NALL") + node
    lines[row] = new
    return "\n".join(lines) + "\n", new


def _sub(old: str, new: str, marker: str | None) -> Callable[[str], tuple[str, str | None]]:
    return lambda t: (t.replace(old, new, 1), marker)


BAD_DECKS = {
    "unknown element type": (
        _sub("TYPE=C3D4", "TYPE=C3D8", "*ELEMENT, TYPE=C3D8"),
        r"element type C3D8 is not supported"),
    "set never defined": (
        _sub("BASE, 1, 3\n", "BASE, 1, 3\nNOSUCH, 2, 2\n", "NOSUCH"),
        r"node set NOSUCH, which is never defined"),
    "element with a missing node": (
        lambda t: _edit_element(t, 0, ", ".join([*_element(t, 0)[:4], "99"])),
        r"element 1 references node 99, which is not defined"),
    "material without *ELASTIC": (
        _sub("*MATERIAL, NAME=M1\n*ELASTIC\n200, 0.3\n", "*MATERIAL, NAME=M1\n",
             "*MATERIAL, NAME=M1"), r"material M1 has no \*ELASTIC"),
    "inverted element": (_swap_corners, r"element 1 is inverted \(negative Jacobian"),
    "duplicate node id": (
        lambda t: _node_line(t, 5, "3, 5, 5, 5"),
        r"node 3 is defined twice \(also at deck.inp, line 6\)"),
    "duplicate element id": (
        lambda t: _edit_element(t, 5, after="2, " + ", ".join(_element(t, 5)[1:])),
        r"element 2 is defined twice"),
    "undefined set inside a set": (
        _sub("*STEP", "*NSET, NSET=MORE\nBASE, ELSEWHERE\n*STEP", "BASE, ELSEWHERE"),
        r"refers to nset 'ELSEWHERE', which is not defined before it"),
    "set listing a missing element": (
        _sub("*STEP", "*ELSET, ELSET=GHOST\n77\n*STEP", "*ELSET, ELSET=GHOST"),
        r"ELSET GHOST lists element 77, which is not defined"),
    "section on an undefined element set": (
        _sub("ELSET=M0, MATERIAL=M0", "ELSET=NOPE, MATERIAL=M0", "*SOLID SECTION, ELSET=NOPE"),
        r"element set NOPE, which is never defined"),
    "not a number": (lambda t: _node_line(t, 4, "4, 1, 1x, 0"), r"'1x' is not a number"),
    "load on an undefined node": (
        _sub("TOP, 3, -1.0", "TOP, 3, -1.0\n42, 1, 5.0", "42, 1, 5.0"),
        r"\*CLOAD on node 42, which is not defined"),
    "no step": (lambda t: (t.split("*STEP")[0], None), r"has no \*STEP"),
}


@pytest.mark.parametrize("case", sorted(BAD_DECKS))
def test_bad_decks_name_the_line_and_write_nothing(case: str, tmp_path: Path) -> None:
    edit, message = BAD_DECKS[case]
    text, marker = edit(_small_deck())
    deck = _write(tmp_path / "deck.inp", text)
    with pytest.raises(AbaqusError, match=message) as info:
        read_inp(deck)
    assert "hint:" in str(info.value)
    if marker is not None:
        line = 1 + next(i for i, t in enumerate(text.splitlines()) if t.startswith(marker))
        assert f"deck.inp, line {line})" in str(info.value)
    out = tmp_path / "out"
    with pytest.raises(AbaqusError):
        run_solve(deck, out, options=TIGHT, loaded_set=None, ignore_unsupported=True,
                  comm=MPI.COMM_SELF)
    assert _nothing_written(out)


def test_errors_in_an_included_file_name_that_file(tmp_path: Path) -> None:
    text = _small_deck().replace("*NODE, NSET=NALL\n", "*NODE, NSET=NALL\n*INCLUDE, INPUT=n.inc\n")
    (tmp_path / "n.inc").write_text("** nodes\n9, 0, 0, abc\n")
    deck = _write(tmp_path / "main.inp", text)
    # The file and line are named; the included file's text is not quoted.
    with pytest.raises(AbaqusError, match=r"\[text of n\.inc not shown\] is not a number "
                       r".*\(n\.inc, line 2\)") as info:
        read_inp(deck)
    assert "abc" not in str(info.value)
    own = _write(tmp_path / "own.inp", text.replace("*INCLUDE, INPUT=n.inc\n", "9, 0, 0, abc\n"))
    with pytest.raises(AbaqusError, match=r"'abc' is not a number"):  # the deck's own text
        read_inp(own)
    missing = _write(tmp_path / "m.inp", "*INCLUDE, INPUT=absent.inp\n")
    with pytest.raises(AbaqusError, match=r"cannot read .*absent\.inp \(m\.inp, line 1\)"):
        read_inp(missing)


def test_unsupported_features_are_listed_refused_or_downgraded(tmp_path: Path) -> None:
    text = _small_deck()
    text = text.replace("*MATERIAL, NAME=M0\n*ELASTIC\n100, 0.3\n",
                        "*MATERIAL, NAME=M0\n*ELASTIC\n100, 0.3\n*PLASTIC\n5, 0\n")
    text = text.replace("*STEP\n", "*EQUATION\n2\n1, 1, 1.0, 2, 1, -1.0\n*STEP, NLGEOM\n")
    text = text.replace("*CLOAD\n", "*DLOAD\nEALL, GRAV, 9810, 0, 0, -1\n*CLOAD\n")
    text = text.replace("*BOUNDARY\n", "*BOUNDARY, AMPLITUDE=RAMP\n")
    text += "*STEP\n*FREQUENCY\n5\n*END STEP\n"
    deck = _write(tmp_path / "deck.inp", text)
    model = read_inp(deck)
    found = {u.keyword: u.location for u in model.unsupported}
    lines = text.splitlines()

    def line_of(prefix: str, nth: int = 0) -> str:
        hits = [i + 1 for i, t in enumerate(lines) if t.startswith(prefix)]
        return f"deck.inp, line {hits[nth]}"

    assert found == {
        "*PLASTIC": line_of("*PLASTIC"), "*EQUATION": line_of("*EQUATION"),
        "*STEP, NLGEOM": line_of("*STEP, NLGEOM"), "*DLOAD GRAV": line_of("EALL, GRAV"),
        "*BOUNDARY, AMPLITUDE": line_of("*BOUNDARY"), "*STEP": line_of("*STEP", 1),
    }
    with pytest.raises(AbaqusUnsupportedError, match="6 unsupported") as info:
        model.check_supported()
    assert "--ignore-unsupported" in str(info.value)
    out = tmp_path / "out"
    with pytest.raises(AbaqusUnsupportedError):
        run_solve(deck, out, options=TIGHT, loaded_set=None, ignore_unsupported=False,
                  comm=MPI.COMM_SELF)
    assert _nothing_written(out)
    result = run_solve(deck, out, options=TIGHT, loaded_set=None, ignore_unsupported=True,
                       comm=MPI.COMM_SELF)
    saved = json.loads((out / "result.json").read_text())
    assert len(saved["warnings"]) == 6 and saved["warnings"] == result["warnings"]
    assert any(w.startswith("*PLASTIC (deck.inp, line") for w in saved["warnings"])
    # The first step is still solved: the base carries the 4 x 1 N on the top.
    assert saved["reactions_n"]["BASE"] == pytest.approx([0.0, 0.0, 4.0], abs=1e-8)


# -- hostile decks (issue 15): refused at the CLI with exit 3, a message, nothing written ----

#: Text of a file outside the deck's folder that a deck tries to make osteofe read and echo.
SECRET = "hunter2-TOPSECRET"


def _solve_cli(deck: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
               ) -> tuple[int, str]:
    """``osteofe solve DECK --out OUT``: exit code and stderr."""
    capsys.readouterr()
    code = main(["-q", "solve", str(deck), "--out", str(out), *extra])
    return code, capsys.readouterr().err


def _line_of(text: str, marker: str, nth: int = 0) -> int:
    return [i + 1 for i, t in enumerate(text.splitlines()) if t.startswith(marker)][nth]


_M0 = "*MATERIAL, NAME=M0\n*ELASTIC\n100, 0.3\n"
_SECTION = "*SOLID SECTION, ELSET=M0, MATERIAL=M0\n"

#: case -> (replaced text, replacement, marker of the line named, message).
HOSTILE_DECKS: dict[str, tuple[str, str, str, str]] = {
    "negative density": (_M0, _M0 + "*DENSITY\n-1.9e-9\n", "-1.9e-9",
                         "*DENSITY: mass density -1.9e-09 is negative"),
    "NaN density": (_M0, _M0 + "*DENSITY\nnan\n", "nan",
                    "*DENSITY: mass density nan is not a finite number"),
    "infinite density, second table line": (
        _M0, _M0 + "*DENSITY\n1.9e-9, 20\n-inf, 40\n", "-inf",
        "*DENSITY: mass density -inf is not a finite number"),
    "density without data": (_M0, _M0 + "*DENSITY\n", "*DENSITY",
                             "*DENSITY without a data line"),
    "zero Young's modulus": (_M0, _M0.replace("100, 0.3", "0, 0.3"), "0, 0.3",
                             "*ELASTIC: Young's modulus 0 is not positive"),
    "negative Young's modulus": (_M0, _M0.replace("100, 0.3", "-100, 0.3"), "-100, 0.3",
                                 "*ELASTIC: Young's modulus -100 is not positive"),
    "NaN Young's modulus": (_M0, _M0.replace("100, 0.3", "nan, 0.3"), "nan, 0.3",
                            "*ELASTIC: Young's modulus nan is not a finite number"),
    "Poisson's ratio 0.5": (_M0, _M0.replace("100, 0.3", "100, 0.5"), "100, 0.5",
                            "*ELASTIC: Poisson's ratio 0.5 is outside (-1, 0.5)"),
    "Poisson's ratio -1": (_M0, _M0.replace("100, 0.3", "100, -1"), "100, -1",
                           "*ELASTIC: Poisson's ratio -1 is outside (-1, 0.5)"),
    "NaN Poisson's ratio": (_M0, _M0.replace("100, 0.3", "100, nan"), "100, nan",
                            "*ELASTIC: Poisson's ratio nan is outside (-1, 0.5)"),
    "element data under *SOLID SECTION": (
        _SECTION, _SECTION + "1, 2, 3, 4, 5\n", "1, 2, 3, 4, 5",
        "*SOLID SECTION data line '1, 2, 3, 4, 5' is not section data"),
    "a word under *SOLID SECTION": (
        _SECTION, _SECTION + "BONE\n", "BONE",
        "*SOLID SECTION data line 'BONE' is not section data"),
    "two lines under *SOLID SECTION": (
        _SECTION, _SECTION + ",\n7.5\n", "7.5",
        "has 2 data lines; line 2 is '7.5', not section data"),
    "negative section thickness": (
        _SECTION, _SECTION + "-1.0\n", "-1.0",
        "*SOLID SECTION thickness -1 is not a positive number"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DECKS))
def test_implausible_material_and_section_data_are_refused_at_the_cli(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, marker, message = HOSTILE_DECKS[case]
    text = _small_deck()
    assert text.count(old) == 1
    text = text.replace(old, new)
    deck = _write(tmp_path / "deck.inp", text)
    out = tmp_path / "out"
    code, err = _solve_cli(deck, out, capsys, "--ignore-unsupported")
    assert code == 3, err
    assert message in err and f"(deck.inp, line {_line_of(text, marker)})" in err, err
    assert "hint:" in err
    assert _nothing_written(out)


@pytest.mark.parametrize("data", ["", ",\n", "1.\n", "2.5D0,\n"])
def test_section_data_abaqus_writes_is_read(data: str, tmp_path: Path) -> None:
    """No data line, Abaqus/CAE's empty line, or a thickness (noted as without effect)."""
    deck = _write(tmp_path / "deck.inp", _small_deck().replace(_SECTION, _SECTION + data))
    model = read_inp(deck)
    assert [m.name for m in model.materials] == ["M0", "M1"] and model.unsupported == ()
    assert any("thickness" in note for note in model.notes) == any(c.isdigit() for c in data)


def test_zero_density_is_read_and_noted(tmp_path: Path) -> None:
    deck = _write(tmp_path / "deck.inp", _small_deck().replace(_M0, _M0 + "*DENSITY\n0.\n"))
    assert any(n.startswith("*DENSITY (deck.inp, line") for n in read_inp(deck).notes)


def _include_deck(folder: Path, target: str, before: str = "*STEP\n",
                  after: str | None = None) -> tuple[Path, str]:
    """The small deck with ``*INCLUDE, INPUT=target`` inserted before ``before`` (or after
    ``after``: the included lines are then that card's data)."""
    folder.mkdir(parents=True, exist_ok=True)
    include = f"*INCLUDE, INPUT={target}\n"
    text = _small_deck()
    assert text.count(after or before) == 1
    text = (text.replace(after, after + include) if after is not None
            else text.replace(before, include + before))
    return _write(folder / "deck.inp", text), text


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "etc-passwd"])
def test_include_outside_the_deck_folder_is_refused(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = _write(tmp_path / "secret.inc", f"{SECRET}, 1, 3\n")
    folder = tmp_path / "case"
    folder.mkdir()
    target = {"parent": "../secret.inc", "absolute": str(secret), "symlink": "link.inc",
              "etc-passwd": "../../../../../../../../etc/passwd"}[kind]
    if kind == "symlink":  # a link in the deck's folder to a file outside it
        (folder / "link.inc").symlink_to(secret)
    deck, text = _include_deck(folder, target)
    out = folder / "out"
    code, err = _solve_cli(deck, out, capsys)
    assert code == 3, err
    line = _line_of(text, "*INCLUDE")
    assert (f"*INCLUDE, INPUT={target} points outside the deck's folder {folder.resolve()} "
            f"(deck.inp, line {line})") in err, err
    assert "--allow-include-outside" in err
    assert SECRET.upper() not in err.upper() and "root:" not in err
    assert _nothing_written(out)
    with pytest.raises(AbaqusError, match="points outside the deck's folder"):
        read_inp(deck)


def test_allowed_include_outside_is_read_but_never_quoted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--allow-include-outside reads the file; its text still never reaches a message."""
    bc = _write(tmp_path / "bc.inc", "*BOUNDARY\nBASE, 1, 3\n")
    folder = tmp_path / "case"
    deck, _ = _include_deck(folder, f"../{bc.name}", "*CLOAD\n")
    model = read_inp(deck, allow_include_outside=True)
    assert model.files[1] == bc.resolve() and "BASE" in model.bc_sets
    # A secret of any shape where a label, a number, a keyword or a parameter is expected:
    # the included lines are data of the card named first, or cards of their own.
    attacks = {
        "label": ("*BOUNDARY\n", f"{SECRET}, 1, 3\n", "*BOUNDARY on node set [text of"),
        "number": ("*NODE, NSET=NALL\n", f"1, 2, {SECRET}\n", "[text of secret.inc not shown] "
                   "is not a number"),
        "keyword": ("*END STEP\n", f"*{SECRET}\n", "*[text of secret.inc not shown] "
                    "(secret.inc, line 1): keyword not supported"),
        "parameter": ("*END STEP\n", f"*BOUNDARY, {SECRET}=1\nBASE, 1, 3\n",
                      "*BOUNDARY, [text of secret.inc not shown] (secret.inc, line 1)"),
        "set reference": ("*END STEP\n", f"*NSET, NSET=X\n{SECRET}\n",
                          "refers to nset [text of"),
        "unreadable dofs": ("*BOUNDARY\n", f"BASE, {SECRET}\n", "*BOUNDARY: cannot read [text"),
        "text under a section": (_SECTION, f"{SECRET}\n", "*SOLID SECTION data line [text of"),
    }
    for name, (after, secret_text, message) in attacks.items():
        _write(tmp_path / "secret.inc", secret_text)
        deck, _ = _include_deck(tmp_path / name, "../secret.inc", after=after)
        out = tmp_path / name / "out"
        code, err = _solve_cli(deck, out, capsys, "--allow-include-outside")
        assert code == 3, (name, err)
        assert message in err and "(secret.inc, line" in err, (name, err)
        assert SECRET.upper() not in err.upper(), (name, err)
        assert _nothing_written(out)


def test_include_in_a_subfolder_or_by_absolute_path_inside_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    (folder / "parts").mkdir(parents=True)
    _write(folder / "parts" / "bc.inc", "*BOUNDARY\nBASE, 1, 3\n")
    for target in ("parts/bc.inc", str(folder / "parts" / "bc.inc"), "parts/../parts/bc.inc"):
        deck, _ = _include_deck(folder, target, "*CLOAD\n")
        model = read_inp(deck)
        assert model.files[1] == (folder / "parts" / "bc.inc").resolve()


def test_include_of_a_folder_or_a_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import threading

    (tmp_path / "parts").mkdir()
    os.mkfifo(tmp_path / "pipe.inc")
    def read(path: Path, outcome: list[BaseException | None]) -> None:
        try:
            read_inp(path)
            outcome.append(None)
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)

    for target in ("parts", "pipe.inc"):
        deck, text = _include_deck(tmp_path, target)
        outcome: list[BaseException | None] = []
        thread = threading.Thread(target=read, args=(deck, outcome), daemon=True)
        thread.start()
        thread.join(20.0)
        if thread.is_alive():  # release the reader blocked on the pipe, then fail
            with open(tmp_path / "pipe.inc", "w") as pipe:
                pipe.write("")
            thread.join(5.0)
            pytest.fail(f"read_inp blocked on *INCLUDE, INPUT={target}")
        (error,) = outcome
        assert isinstance(error, AbaqusError), error
        assert (f"*INCLUDE, INPUT={target} is not a regular file "
                f"(deck.inp, line {_line_of(text, '*INCLUDE')})") in str(error)


# -- the solver extensions the decks need --------------------------------------------------

GRADIENT = np.array([[1.0e-3, 2.0e-4, -3.0e-4], [5.0e-4, -2.0e-3, 1.0e-4], [0.0, 7.0e-4, 1.5e-3]])


@pytest.mark.mpi
@pytest.mark.parametrize("facets", [False, True])
def test_per_node_prescribed_values_reproduce_a_linear_field(facets: bool) -> None:
    """Per-node values on every boundary node (mid-edge nodes included) of a 10-node mesh."""
    quad = to_quadratic(_distorted_box([10, 8, 12], (4, 3, 4), seed=2))
    corner_boundary = np.unique(boundary_faces(quad))
    field = (GRADIENT @ quad.points.T).T + np.array([0.01, -0.02, 0.03])
    if facets:  # corners only: the mid-edge values are interpolated on the boundary facets
        nodes = corner_boundary
    else:  # the deck's node set: corners and the mid-nodes between them
        on_boundary = np.zeros(quad.num_nodes, dtype=bool)
        on_boundary[corner_boundary] = True
        mids = quad.cells[:, 4:][on_boundary[quad.cells[:, [0, 1, 2, 0, 1, 2]]]
                                 & on_boundary[quad.cells[:, [1, 2, 0, 3, 3, 3]]]]
        nodes = np.union1d(corner_boundary, mids)
    supports = [Support(f"c{c}", nodes, (c,), field[nodes] * (np.arange(3) == c),
                        facets=facets) for c in range(3)]
    model = ElasticModel(quad, np.full(quad.num_cells, 5000.0), 0.3, supports,
                         SolverOptions(degree=2, rtol=1e-12))
    sol = model.solve([], reaction_sets={"all": nodes})
    # Every node of the 10-node mesh, mid-edge nodes included, carries the exact field.
    assert np.abs(sol.displacement_mm - field).max() < 1e-9
    assert np.abs(sol.strain - 0.5 * (GRADIENT + GRADIENT.T)).max() < 1e-9
    assert np.linalg.norm(sol.set_reactions_n["all"]) < 1e-6
    model.destroy()


@pytest.mark.mpi
def test_nodal_forces_equal_the_patch_load_they_are_consistent_with() -> None:
    mesh = _distorted_box([10, 8, 20], (3, 3, 6))
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > 20 - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(mesh.points, top)
    force = np.array([30.0, -10.0, -200.0])
    patch = LoadPatch(top, np.unique(top), float(areas.sum()), force)
    nodal = np.zeros((mesh.num_nodes, 3))
    np.add.at(nodal, top.ravel(), np.repeat(np.outer(areas / 3.0, force / areas.sum()), 3, 0))
    loaded = np.flatnonzero(np.any(nodal != 0.0, axis=1))
    base = np.flatnonzero(mesh.points[:, 2] < 1e-9)
    model = ElasticModel(mesh, np.full(mesh.num_cells, 3000.0), 0.3,
                         [Support("base", base, facets=False)], TIGHT)
    by_patch = model.solve([patch])
    by_nodes = model.solve([NodalForces(loaded, nodal[loaded])], reaction_sets={"b": base})
    assert np.abs(by_nodes.displacement_mm - by_patch.displacement_mm).max() < 1e-9
    assert by_nodes.reactions_n["base"] == pytest.approx(-force, rel=1e-8)
    assert by_nodes.set_reactions_n["b"] == pytest.approx(-force, rel=1e-8)
    with pytest.raises(ValueError, match="one"):
        NodalForces(loaded, nodal[loaded][:-1])
    model.destroy()


# -- round trip and CalculiX ---------------------------------------------------------------


def _graded(mesh: TetMesh) -> np.ndarray:
    c = mesh.centroids()
    return 400.0 + 12000.0 * (c[:, 2] / c[:, 2].max()) ** 2 + 3000.0 * (c[:, 0] > 5.0)


@pytest.mark.parametrize("degree", [1, 2])
def test_exported_model_reimports_to_the_same_answer(degree: int, tmp_path: Path) -> None:
    mesh = _distorted_box([10, 8, 30], (4, 3, 10))
    moduli = _graded(mesh)
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > 30 - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(mesh.points, top)
    patch = LoadPatch(top, np.unique(top), float(areas.sum()), np.array([25.0, -10.0, -150.0]))
    pts = mesh.points
    supports = [Support("clamp", np.flatnonzero(pts[:, 2] < 1e-9)),
                Support("side", np.flatnonzero((pts[:, 0] < 1e-9) & (pts[:, 2] > 20.0)), (0,),
                        (0.004, 0.0, 0.0))]
    direct = ElasticModel(mesh, moduli, 0.3, supports,
                          SolverOptions(degree=degree, rtol=1e-12)).solve([patch])
    exported = mesh if degree == 1 else to_quadratic(mesh)
    summary = write_inp(tmp_path / f"rt{degree}.inp", exported, moduli, 0.3, supports, [patch])
    result = run_solve(summary.path, tmp_path / "out", options=SolverOptions(rtol=1e-12),
                       loaded_set=None, ignore_unsupported=False, comm=MPI.COMM_SELF)
    for name, set_name in summary.set_names.items():
        assert _rel(result["reactions_n"][set_name], direct.reactions_n[name]) < 1e-8
    assert result["solver"]["degree"] == degree
    assert result["equilibrium"]["relative_imbalance"] < 1e-8
    import meshio

    fields = meshio.read(tmp_path / "out" / "fields.vtu")
    corners = slice(0, mesh.num_nodes)
    ours = fields.point_data["displacement_mm"][corners]
    assert np.abs(ours - direct.displacement_mm).max() < 1e-8 * np.abs(
        direct.displacement_mm).max()
    # The deck stores 13 significant digits (CalculiX reads numbers from 20-character fields).
    assert fields.cell_data["E_MPa"][0] == pytest.approx(moduli, rel=1e-12)


@needs_ccx
def test_c3d10_cantilever_with_prescribed_tip_agrees_with_calculix(tmp_path: Path) -> None:
    """Many materials (one per element), clamped root, tip moved by per-node values."""
    quad = to_quadratic(_distorted_box([10, 8, 40], (3, 3, 12)))
    moduli = np.round(np.exp(np.random.default_rng(4).uniform(np.log(300.0), np.log(2e4),
                                                              quad.num_cells)), 3)
    assert np.unique(moduli).size == quad.num_cells  # one material per element
    pts = quad.points
    root, tip = np.flatnonzero(pts[:, 2] < 1e-9), np.flatnonzero(pts[:, 2] > 40 - 1e-9)
    per_node = "".join(f"{n + 1}, 1, 1, {0.01 + 0.002 * pts[n, 1]:.17g}\n" for n in tip)
    text = _deck(quad, moduli, 0.3, {"ROOT": root, "TIP": tip},
                 "ROOT, 1, 3\nTIP, 3, 3, -0.05\n" + per_node, print_sets=("ROOT", "TIP"))
    deck = _write(tmp_path / "cantilever.inp", text)
    ccx = run_calculix(deck)
    result = run_solve(deck, tmp_path / "out", options=TIGHT, loaded_set="tip",
                       ignore_unsupported=False, comm=MPI.COMM_SELF)
    assert result["model"]["num_materials"] == quad.num_cells
    for name in ("ROOT", "TIP"):
        ours, theirs = result["reactions_n"][name], ccx.reactions_n[name]
        assert _rel(ours, theirs) < 5e-3  # the issue's bar
        assert _rel(ours, theirs) < 2e-6  # what agreement looks like (.dat has 7 digits)
    assert _rel(result["reactions_n"]["ROOT"], -np.asarray(result["reactions_n"]["TIP"])) < 1e-8
    # Displacements at every node, mid-edge nodes included.
    import meshio

    u = meshio.read(tmp_path / "out" / "fields.vtu").point_data["displacement_mm"]
    assert np.abs(u - ccx.displacement_mm).max() < 1e-5 * np.abs(ccx.displacement_mm).max()
    assert np.abs(u[tip, 2] + 0.05).max() < 1e-9
    # The criterion: failure load = |tip reaction| x load factor.
    failure = result["failure"]
    assert failure["load_kind"] == "prescribed displacement" and failure["loaded_set"] == "TIP"
    assert failure["failure_load_n"] == pytest.approx(
        np.linalg.norm(result["reactions_n"]["TIP"]) * failure["load_factor"], rel=1e-12)


@needs_ccx
def test_c3d4_block_under_cload_and_pressure_agrees_with_calculix(tmp_path: Path) -> None:
    mesh = _distorted_box([10, 10, 10], (4, 4, 4), seed=3)
    moduli = np.where(mesh.centroids()[:, 1] > 5.0, 8000.0, 2500.0)
    pts = mesh.points
    bottom, top = np.flatnonzero(pts[:, 2] < 1e-9), np.flatnonzero(pts[:, 2] > 10 - 1e-9)
    corners = pts[mesh.cells[:, FACES]]  # (m, 4, 3, 3)
    # Faces on x = 10, away from the supported bottom: CalculiX's RF totals leave out loads
    # applied straight on constrained nodes, osteofe's reactions include them.
    on_side = np.all(corners[..., 0] > 10 - 1e-9, axis=2) & np.all(corners[..., 2] > 2.4,
                                                                   axis=2)
    cells, faces = np.nonzero(on_side)
    pressure = "".join(f"{c + 1}, P{f + 1}, 0.8\n" for c, f in zip(cells, faces, strict=True))
    loads = f"*CLOAD\nTOP, 3, -2.5\n{top[0] + 1}, 1, 4.0\n*DLOAD\n{pressure}"
    deck = _write(tmp_path / "block.inp", _deck(mesh, moduli, 0.28, {"BOTTOM": bottom,
                                                                     "TOP": top},
                                                "BOTTOM, 1, 3\n", loads, ("BOTTOM",)))
    model = read_inp(deck)
    # 0.8 MPa on 10 x 7.5 mm of the face x = 10, pushing in -x; 2.5 N down per top node;
    # 4 N in x on one node.
    assert model.load_sets["(elements by id)"].force_n == pytest.approx([-60.0, 0, 0], abs=1e-9)
    assert model.load_sets[NODES_BY_ID].force_n.tolist() == [4.0, 0.0, 0.0]
    expected = np.array([-56.0, 0.0, -2.5 * top.size])
    assert model.nodal_forces_n.sum(axis=0) == pytest.approx(expected, abs=1e-9)
    ccx = run_calculix(deck)
    result = run_solve(deck, tmp_path / "out", options=TIGHT, loaded_set="TOP",
                       ignore_unsupported=False, comm=MPI.COMM_SELF)
    assert _rel(result["reactions_n"]["BOTTOM"], ccx.reactions_n["BOTTOM"]) < 2e-6
    assert result["reactions_n"]["BOTTOM"] == pytest.approx(-expected, abs=1e-7)
    assert np.abs(np.asarray(
        json.loads((tmp_path / "out" / "result.json").read_text())["displacement_mm"]["max"])
        ).max() > 0.0
    assert result["failure"]["applied_load_n"] == pytest.approx(2.5 * top.size)


def test_loaded_set_must_carry_a_load(tmp_path: Path) -> None:
    deck = _write(tmp_path / "deck.inp", _small_deck())
    out = tmp_path / "out"
    with pytest.raises(AbaqusError, match=r"--loaded-set BASE: no .* acts on it.*hint: .*TOP"):
        run_solve(deck, out, options=TIGHT, loaded_set="BASE", ignore_unsupported=False,
                  comm=MPI.COMM_SELF, exclude_margin_mm=0.5)
    assert _nothing_written(out)
    result = run_solve(deck, out, options=TIGHT, loaded_set="top", ignore_unsupported=False,
                       comm=MPI.COMM_SELF, exclude_margin_mm=0.5)
    doubled = _write(tmp_path / "double.inp", _small_deck().replace("TOP, 3, -1.0",
                                                                    "TOP, 3, -2.0"))
    twice = run_solve(doubled, tmp_path / "out2", options=TIGHT, loaded_set="TOP",
                      ignore_unsupported=False, comm=MPI.COMM_SELF, exclude_margin_mm=0.5)
    # Linear: twice the load, half the load factor, the same failure load.
    assert twice["failure"]["load_factor"] == pytest.approx(
        result["failure"]["load_factor"] / 2, rel=1e-8)
    assert twice["failure"]["failure_load_n"] == pytest.approx(
        result["failure"]["failure_load_n"], rel=1e-8)
    assert sorted(p.name for p in out.iterdir()) == ["fields.vtu", "result.json"]


# -- MPI -----------------------------------------------------------------------------------


@pytest.mark.mpi
def test_parallel_reactions_equal_serial(mpi_tmp_path: Path) -> None:
    comm = MPI.COMM_WORLD
    deck = mpi_tmp_path / "mpi.inp"
    if comm.rank == 0:
        quad = to_quadratic(_distorted_box([10, 8, 30], (3, 3, 8), seed=11))
        pts = quad.points
        root, tip = np.flatnonzero(pts[:, 2] < 1e-9), np.flatnonzero(pts[:, 2] > 30 - 1e-9)
        side = np.flatnonzero((pts[:, 0] > 10 - 1e-9) & (pts[:, 2] > 10.0))
        per_node = "".join(f"{n + 1}, 2, 2, {0.003 * pts[n, 0]:.17g}\n" for n in tip)
        _write(deck, _deck(quad, np.round(_graded(quad), 1), 0.3,
                           {"ROOT": root, "TIP": tip, "SIDE": side},
                           "ROOT, ENCASTRE\nTIP, 3, 3, -0.02\n" + per_node,
                           "*CLOAD\nSIDE, 1, -1.5\n"))
    comm.barrier()
    parallel = run_solve(deck, mpi_tmp_path / "par", options=TIGHT, loaded_set="SIDE",
                         ignore_unsupported=False, comm=comm)
    serial = run_solve(deck, mpi_tmp_path / f"serial{comm.rank}", options=TIGHT,
                       loaded_set="SIDE", ignore_unsupported=False, comm=MPI.COMM_SELF)
    assert parallel["solver"]["mpi_ranks"] == comm.size
    for name in ("ROOT", "TIP", NODES_BY_ID):
        assert _rel(parallel["reactions_n"][name], serial["reactions_n"][name]) < 1e-6
    assert parallel["displacement_mm"]["max_magnitude"] == pytest.approx(
        serial["displacement_mm"]["max_magnitude"], rel=1e-6)
    assert parallel["failure"]["load_factor"] == pytest.approx(
        serial["failure"]["load_factor"], rel=1e-6)


def test_result_json_records_provenance(tmp_path: Path) -> None:
    deck = _write(tmp_path / "deck.inp", _small_deck())
    run_solve(deck, tmp_path / "out", options=TIGHT, loaded_set=None, ignore_unsupported=False,
              comm=MPI.COMM_SELF)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    import hashlib

    assert saved["inputs"]["sha256"] == hashlib.sha256(deck.read_bytes()).hexdigest()
    assert {"parse", "solve_total", "write_fields", "total"} <= set(saved["timings_s"])
    assert re.match(r"\d+\.\d+", saved["versions"]["dolfinx-solver-real"])
    assert saved["solver"]["iterations"] >= 1 and saved["solver"]["converged_reason"] > 0
    assert saved["outputs"] == ["fields.vtu", "result.json"]
