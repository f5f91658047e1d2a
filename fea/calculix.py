"""CalculiX adapter: export an osteofe model as an Abaqus/CalculiX deck, run ccx, read back.

This is the only module of osteofe that knows CalculiX. It serves the cross-code rung of the
verification ladder (DESIGN.md 5e): the same mesh, moduli, supports and patch loads solved by
an independent FE code must give the same reactions and strains.

Conventions of the deck written by :func:`write_inp`:

- node ``i`` of the mesh is CalculiX node ``i + 1``, cell ``j`` is element ``j + 1``;
- 4-node cells are ``C3D4``, 10-node cells ``C3D10``. The VTK order of
  :class:`~meshing.types.TetMesh` (vertices, then edges 01, 12, 02, 03, 13, 23) is already the
  Abaqus/CalculiX order (corners 1-4, then mid-edges 1-2, 2-3, 3-1, 1-4, 2-4, 3-4), so the
  permutation :data:`VTK_TO_C3D10` is the identity;
- one material (``*MATERIAL``/``*ELASTIC``/``*SOLID SECTION``) per distinct (E, nu) pair, or
  per group of moduli when ``material_groups`` bins them (Bonemat-style);
- a uniform traction ``t = F / A`` over the patch triangles becomes consistent nodal forces:
  ``A_f t / 3`` on each vertex of a 3-node face; ``0`` on the corners and ``A_f t / 3`` on the
  mid-edge nodes of a 6-node face (the integrals of the quadratic triangle's shape functions);
- one ``*STEP`` per load case (``*CLOAD, OP=NEW`` replaces the previous forces), each printing
  reaction totals per support set, nodal displacements and integration-point strains to the
  ``.dat`` file (and, optionally, U and E to the ``.frd`` file for viewing).

CalculiX prints tensor strains (``exy = (du/dy + dv/dx) / 2``), not engineering shear
strains; ``tests/test_calculix.py`` checks this against osteofe.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from core.atomic import atomic_write_text
from core.types import FloatArray, IntArray
from fea.loads import LoadPatch
from fea.topology import face_normals_and_areas
from material.binning import bin_moduli
from meshing import inp
from meshing.errors import OsteofeError
from meshing.types import TetMesh

if TYPE_CHECKING:  # fea.solver imports DOLFINx: this module must work without it
    from fea.solver import Support

__all__ = [
    "SOLVERS",
    "VTK_TO_C3D10",
    "CalculixCase",
    "CalculixError",
    "CalculixResult",
    "InpSummary",
    "run_calculix",
    "to_quadratic",
    "write_inp",
]


#: osteofe solver names -> the ``SOLVER=`` value of CalculiX's ``*STATIC`` card. PARDISO and
#: PaStiX exist only in ccx builds linked against them (Debian's ccx 2.20 is not).
SOLVERS: dict[str, str] = {
    "spooles": "SPOOLES",
    "iterative_scaling": "ITERATIVE SCALING",
    "iterative_cholesky": "ITERATIVE CHOLESKY",
    "pardiso": "PARDISO",
    "pastix": "PASTIX",
}

#: Column permutation from the VTK 10-node tetrahedron to CalculiX/Abaqus C3D10 (identity:
#: both list the mid-edge nodes of 01, 12, 20, 03, 13, 23 after the four corners).
VTK_TO_C3D10 = np.arange(10, dtype=np.int64)

#: Vertex pairs of the six edges of a tetrahedron, in the order of the mid-edge nodes.
_TET_EDGES = np.array([[0, 1], [1, 2], [2, 0], [0, 3], [1, 3], [2, 3]], dtype=np.int64)
#: Vertex pairs of the three edges of a triangle.
_TRI_EDGES = np.array([[0, 1], [1, 2], [2, 0]], dtype=np.int64)

#: First line of the machine-readable deck description written by :func:`write_inp`.
_META_PREFIX = "** osteofe-meta: "
#: Lines of ccx output quoted in error messages.
_TAIL_LINES = 15

_HEADER = re.compile(
    r"^ (total force|displacements|strains) \(([^)]*)\) for set (\S+) and time\s+(\S+)\s*$",
    re.MULTILINE,
)


class CalculixError(OsteofeError):
    """CalculiX is missing, refused the deck, failed, or wrote results that cannot be read."""


@dataclass(frozen=True)
class InpSummary:
    """What :func:`write_inp` wrote.

    Attributes:
        path: The deck (``<job>.inp``).
        element_type: "C3D4" or "C3D10".
        num_nodes: Nodes written.
        num_elements: Elements written.
        num_materials: Materials (element sets) written.
        youngs_modulus_mpa: (m,) float64 modulus each element got in the deck, MPa (equal to
            the input without binning).
        max_binning_rel_error: max |E_deck - E| / E over the elements (0 without binning).
        set_names: Support name -> CalculiX node set name.
        num_cases: Load cases (steps).
        solver: CalculiX ``SOLVER=`` value.
    """

    path: Path
    element_type: str
    num_nodes: int
    num_elements: int
    num_materials: int
    youngs_modulus_mpa: FloatArray
    max_binning_rel_error: float
    set_names: dict[str, str]
    num_cases: int
    solver: str


@dataclass(frozen=True)
class CalculixCase:
    """Results of one CalculiX step (load case), in the mesh's 0-based numbering.

    Attributes:
        reactions_n: Support name -> (3,) float64 total reaction force in N that the support
            exerts on the body (CalculiX RF totals; osteofe's convention too).
        displacement_mm: (n, 3) float64 nodal displacements in mm (every node, mid-edge
            nodes included).
        element_strain: (m, 3, 3) float64 small-strain tensor per element (tensor shear
            components), the mean over the element's integration points (the centroid value
            for C3D4 and for straight-sided C3D10; NaN for elements ccx did not print).
    """

    reactions_n: dict[str, FloatArray]
    displacement_mm: FloatArray
    element_strain: FloatArray


@dataclass(frozen=True)
class CalculixResult:
    """Everything read back from one CalculiX run.

    Attributes:
        cases: One record per ``*STEP`` (load case), in deck order.
        wall_s: Wall time of the ccx process, s.
        parse_s: Time spent reading the ``.dat`` file, s.
        dat_path: The ``.dat`` file that was read.
        frd_path: The ``.frd`` file, or None when ccx wrote none.
        num_threads: Threads ccx was allowed (None: the environment's default).
    """

    cases: tuple[CalculixCase, ...]
    wall_s: float
    parse_s: float
    dat_path: Path
    frd_path: Path | None
    num_threads: int | None = None

    @property
    def reactions_n(self) -> dict[str, FloatArray]:
        """Reaction totals of the first load case (support name -> (3,) N)."""
        return self.cases[0].reactions_n

    @property
    def displacement_mm(self) -> FloatArray:
        """(n, 3) nodal displacements of the first load case, mm."""
        return self.cases[0].displacement_mm

    @property
    def element_strain(self) -> FloatArray:
        """(m, 3, 3) element strains of the first load case."""
        return self.cases[0].element_strain


# -- mesh helpers ------------------------------------------------------------------------


def _edge_table(cells: IntArray) -> tuple[IntArray, IntArray]:
    """Unique edges of 4/10-node tets: sorted vertex pairs (e, 2) and, per cell, edge ids."""
    pairs = np.sort(cells[:, :4][:, _TET_EDGES], axis=2).reshape(-1, 2)
    edges, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return edges, inverse.reshape(-1, 6)


def to_quadratic(mesh: TetMesh) -> TetMesh:
    """Add a node at the midpoint of every edge: 4-node -> straight-sided 10-node tets.

    The new nodes are appended after the existing ones, so node indices of the linear mesh
    (supports, patches) stay valid. This is the geometry of osteofe's P2 space.

    Args:
        mesh: A 4-node mesh (a 10-node mesh is returned unchanged).

    Returns:
        The 10-node mesh, VTK node order, same cell tags.
    """
    if mesh.order == 2:
        return mesh
    edges, cell_edges = _edge_table(mesh.cells)
    mids = 0.5 * (mesh.points[edges[:, 0]] + mesh.points[edges[:, 1]])
    points = np.vstack([mesh.points, mids])
    cells = np.hstack([mesh.cells, mesh.num_nodes + cell_edges])
    return TetMesh(points, cells, mesh.cell_tags)


def _midnode_lookup(mesh: TetMesh) -> tuple[IntArray, IntArray]:
    """Sorted vertex pairs (e, 2) of the edges of a 10-node mesh and their mid-nodes (e,)."""
    pairs = np.sort(mesh.cells[:, _TET_EDGES], axis=2).reshape(-1, 2)
    mids = mesh.cells[:, 4:].reshape(-1)
    edges, first = np.unique(pairs, axis=0, return_index=True)
    return edges, mids[first]


def _find_edges(edges: IntArray, query: IntArray) -> IntArray:
    """Row index in the sorted unique ``edges`` of each sorted pair of ``query``, -1 if absent."""
    base = int(max(edges.max(initial=0), query.max(initial=0))) + 1
    keys = edges[:, 0] * base + edges[:, 1]  # ascending: edges are sorted lexicographically
    wanted = query[:, 0] * base + query[:, 1]
    pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return np.where(keys[pos] == wanted, pos, -1).astype(np.int64)


# -- materials ---------------------------------------------------------------------------


# -- deck writing ------------------------------------------------------------------------


def _set_names(supports: Sequence[Support]) -> dict[str, str]:
    """A unique, CalculiX-safe node set name per support (upper case, [A-Z0-9_])."""
    names: dict[str, str] = {}
    taken = {"NALL", "EALL"}
    for i, support in enumerate(supports):
        base = re.sub(r"[^A-Za-z0-9_]", "_", support.name).upper()[:60] or f"SUPPORT{i}"
        if not base[0].isalpha() or re.fullmatch(r"MAT\d+", base):
            base = f"S_{base}"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        if support.name in names:
            raise ValueError(f"two supports are named {support.name!r}; names must be unique")
        names[support.name] = name
        taken.add(name)
    return names


def _support_nodes(mesh: TetMesh, nodes: IntArray,
                   lookup: tuple[IntArray, IntArray] | None) -> IntArray:
    """Support nodes plus, on a 10-node mesh, the mid-nodes of edges between two of them."""
    nodes = np.unique(np.asarray(nodes, dtype=np.int64))
    if nodes.size and (nodes.min() < 0 or nodes.max() >= mesh.num_nodes):
        raise ValueError("support nodes are not nodes of the mesh")
    if lookup is None:
        return nodes
    edges, mids = lookup
    inside = np.zeros(mesh.num_nodes, dtype=bool)
    inside[nodes] = True
    both = inside[edges[:, 0]] & inside[edges[:, 1]]
    return np.union1d(nodes, mids[both])


def _boundary_text(mesh: TetMesh, support: Support, set_name: str,
                   nodes: IntArray) -> str:
    """``*BOUNDARY`` lines of one support (zero, constant or per-node prescribed values)."""
    components = sorted({int(c) for c in support.components})
    if not components or components[0] < 0 or components[-1] > 2:
        raise ValueError(f"support {support.name!r}: components must be among 0, 1, 2")
    value = support.displacement_mm
    if value is None:
        if components == [0, 1, 2]:
            return f"{set_name}, 1, 3\n"
        return "".join(f"{set_name}, {c + 1}, {c + 1}\n" for c in components)
    if not callable(value):
        vec = np.asarray(value, dtype=np.float64).reshape(3)
        return "".join(f"{set_name}, {c + 1}, {c + 1}, {vec[c]:.17g}\n" for c in components)
    prescribed = np.asarray(value(mesh.points[nodes].T), dtype=np.float64).reshape(3, -1)
    comp = np.asarray(components, dtype=np.int64)
    rows = np.column_stack([
        np.repeat(nodes + 1, comp.size),
        np.tile(comp + 1, nodes.size),
        np.tile(comp + 1, nodes.size),
        prescribed.T[:, comp].reshape(-1),
    ])
    return inp.format_rows(rows, "%d, %d, %d, %.13g")


def _nodal_forces(mesh: TetMesh, patches: Sequence[LoadPatch],
                  lookup: tuple[IntArray, IntArray] | None) -> FloatArray:
    """(n, 3) consistent nodal forces of uniform tractions over the patches, N."""
    forces = np.zeros((mesh.num_nodes, 3))
    for patch in patches:
        faces = np.asarray(patch.faces, dtype=np.int64).reshape(-1, 3)
        if faces.size == 0:
            raise ValueError("a load patch has no faces")
        if faces.min() < 0 or faces.max() >= mesh.num_nodes:
            raise ValueError("load patch faces reference nodes that are not in the mesh")
        _, areas = face_normals_and_areas(mesh.points, faces)
        total = float(areas.sum())
        if total <= 0.0:
            raise ValueError("a load patch has zero area")
        traction = np.asarray(patch.force_n, dtype=np.float64).reshape(3) / total
        share = np.outer(areas / 3.0, traction)  # (f, 3): A_f t / 3
        if lookup is None:
            targets = faces  # corners of 3-node faces
        else:
            edges, mids = lookup
            pairs = np.sort(faces[:, _TRI_EDGES], axis=2).reshape(-1, 2)
            row = _find_edges(edges, pairs)
            if np.any(row < 0):
                raise ValueError("a load patch face is not a face of the 10-node mesh")
            targets = mids[row].reshape(-1, 3)  # mid-edge nodes of 6-node faces
        np.add.at(forces, targets.reshape(-1), np.repeat(share, 3, axis=0))
    return forces


def _cload_text(forces: FloatArray) -> str:
    node, comp = np.nonzero(forces)
    rows = np.column_stack([node + 1, comp + 1, forces[node, comp]])
    return "*CLOAD, OP=NEW\n" + inp.format_rows(rows, "%d, %d, %.13g")


def write_inp(
    path: str | os.PathLike[str],
    mesh: TetMesh,
    youngs_modulus_mpa: npt.ArrayLike,
    poisson_ratio: float | npt.ArrayLike,
    supports: Sequence[Support],
    patches: Sequence[LoadPatch],
    *,
    extra_cases: Sequence[Sequence[LoadPatch]] = (),
    material_groups: int | None = None,
    solver: str = "spooles",
    frd: bool = True,
    heading: str | None = None,
    step_names: Sequence[str] = (),
) -> InpSummary:
    """Write a linear-elastic static CalculiX/Abaqus deck of an osteofe model (atomically).

    Args:
        path: Deck to write; must end in ``.inp`` (the job name is its stem).
        mesh: 4-node (C3D4) or 10-node (C3D10) mesh, VTK node order.
        youngs_modulus_mpa: (m,) Young's modulus per cell, MPa.
        poisson_ratio: Poisson's ratio, scalar or (m,) per cell.
        supports: Dirichlet conditions (zero, constant or callable prescribed displacement).
            On a 10-node mesh the mid-node of every edge whose two ends are support nodes is
            constrained too.
        patches: Forces of the first load case, each spread uniformly over its patch faces.
        extra_cases: Further load cases, one ``*STEP`` each.
        material_groups: None for one material per distinct modulus (exact); else bin the
            moduli into at most this many materials (see :func:`material.binning.bin_moduli`).
        solver: Key of :data:`SOLVERS` ("spooles", "iterative_cholesky", ...).
        frd: Also write U and E to the ``.frd`` file (for viewing; not read back).
        heading: A further line of the ``*HEADING`` (e.g. the coordinate frame), or None.
        step_names: Name of each load case (first, then ``extra_cases``), written as a
            comment before its ``*STEP`` and in the deck's meta line; empty for none.

    Returns:
        What was written, including the moduli used and the binning error.

    Raises:
        ValueError: inconsistent moduli, Poisson ratios, supports, patches or solver name.
        CalculixError: no support, or a path that does not end in ``.inp``.
    """
    deck = Path(path)
    if deck.suffix != ".inp":
        raise CalculixError(f"CalculiX deck name must end in .inp: {deck}",
                            hint="name the file <job>.inp")
    if solver not in SOLVERS:
        raise ValueError(f"unknown CalculiX solver {solver!r}; choose one of {sorted(SOLVERS)}")
    if not supports:
        raise CalculixError("no support given: the CalculiX model can move freely",
                            hint="give at least one Support")
    m = mesh.num_cells
    modulus = np.asarray(youngs_modulus_mpa, dtype=np.float64)
    if modulus.shape != (m,):
        raise ValueError(f"need one modulus per cell ({m}), got shape {modulus.shape}")
    if not np.all(np.isfinite(modulus)) or np.any(modulus <= 0.0):
        raise ValueError("Young's moduli must be finite and positive")
    nu = np.broadcast_to(np.asarray(poisson_ratio, dtype=np.float64), (m,))
    if np.any(nu <= -1.0) or np.any(nu >= 0.5) or not np.all(np.isfinite(nu)):
        raise ValueError("Poisson's ratio must lie in (-1, 0.5)")

    # Materials: one per distinct (E, nu), or per (E bin, nu).
    if material_groups is None:
        written_e, error = modulus, 0.0
    else:
        binned = bin_moduli(modulus, material_groups)
        index, values, error = binned.group, binned.E_MPa, binned.max_rel_error
        written_e = values[index]
    keys, mat_index = np.unique(np.column_stack([written_e, nu]), axis=0, return_inverse=True)
    mat_index = mat_index.reshape(-1)
    num_mat = keys.shape[0]

    order2 = mesh.order == 2
    etype = "C3D10" if order2 else "C3D4"
    lookup = _midnode_lookup(mesh) if order2 else None
    names = _set_names(supports)
    cases = [list(patches), *[list(c) for c in extra_cases]]
    if step_names and len(step_names) != len(cases):
        raise ValueError(f"{len(step_names)} step names for {len(cases)} load cases")
    meta = {"num_nodes": mesh.num_nodes, "num_elements": m, "element_type": etype,
            "supports": {names[s.name]: s.name for s in supports}, "num_cases": len(cases)}
    if step_names:
        meta["step_names"] = list(step_names)

    parts: list[str] = [
        "*HEADING\n",
        f"osteofe linear-elastic model ({etype}, {m} elements, {num_mat} materials)\n",
        *([] if heading is None else [" ".join(heading.split()) + "\n"]),
        _META_PREFIX + json.dumps(meta) + "\n",
        inp.node_block(mesh.points),
    ]
    # Elements grouped by material: one *ELEMENT block (and element set) per material.
    cells = mesh.cells[:, VTK_TO_C3D10] if order2 else mesh.cells
    parts.append(inp.element_blocks(cells, mesh.order, mat_index,
                                    [f"MAT{k}" for k in range(1, num_mat + 1)]))
    parts.append(f"*ELSET, ELSET=EALL, GENERATE\n1, {m}, 1\n")
    ids = np.arange(1, num_mat + 1, dtype=np.float64)
    parts.append(inp.format_rows(
        np.column_stack([ids, keys[:, 0], keys[:, 1], ids, ids]),
        "*MATERIAL, NAME=MAT%d\n*ELASTIC\n%.13g, %.13g\n"
        "*SOLID SECTION, ELSET=MAT%d, MATERIAL=MAT%d",
    ))

    boundary: list[str] = []
    for support in supports:
        nodes = _support_nodes(mesh, support.nodes, lookup)
        if nodes.size == 0:
            raise CalculixError(f"support {support.name!r} has no nodes",
                                hint="support nodes must be nodes of the mesh")
        parts.append(f"*NSET, NSET={names[support.name]}\n" + inp.id_lines(nodes + 1))
        boundary.append(_boundary_text(mesh, support, names[support.name], nodes))

    for k, case in enumerate(cases):
        if step_names:
            parts.append(f"** load case: {step_names[k]}\n")
        parts.append(f"*STEP\n*STATIC, SOLVER={SOLVERS[solver]}\n")
        if k == 0:
            parts.append("*BOUNDARY\n" + "".join(boundary))
        parts.append(_cload_text(_nodal_forces(mesh, case, lookup)))
        for support in supports:
            parts.append(f"*NODE PRINT, NSET={names[support.name]}, TOTALS=ONLY\nRF\n")
        parts.append("*NODE PRINT, NSET=NALL\nU\n*EL PRINT, ELSET=EALL\nE\n")
        if frd:
            parts.append("*NODE FILE\nU\n*EL FILE\nE\n")
        parts.append("*END STEP\n")

    deck.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(deck, "".join(parts))
    return InpSummary(
        path=deck, element_type=etype, num_nodes=mesh.num_nodes, num_elements=m,
        num_materials=num_mat, youngs_modulus_mpa=np.asarray(written_e, dtype=np.float64),
        max_binning_rel_error=error, set_names=names, num_cases=len(cases),
        solver=SOLVERS[solver],
    )


# -- running and reading -----------------------------------------------------------------


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _read_meta(deck: Path) -> dict[str, object]:
    """The ``osteofe-meta`` comment of a deck written by :func:`write_inp` ({} if absent)."""
    with deck.open() as handle:
        for _, line in zip(range(10), handle, strict=False):
            if line.startswith(_META_PREFIX):
                meta: dict[str, object] = json.loads(line[len(_META_PREFIX):])
                return meta
    return {}


def _numbers(block: str, width: int, what: str, dat: Path) -> FloatArray:
    """Whitespace-separated numbers of a ``.dat`` block as a (rows, width) array."""
    try:
        values = np.loadtxt(io.StringIO(block), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise CalculixError(f"unreadable {what} table in {dat}: {exc}",
                            hint="write the deck with write_inp, or print U, RF and E only"
                            ) from exc
    if values.size == 0:
        return np.zeros((0, width))
    if values.shape[1] != width:
        raise CalculixError(f"unexpected {what} table in {dat}: {values.shape[1]} columns",
                            hint="write the deck with write_inp, or print U, RF and E only")
    return values


def _parse_dat(dat: Path, meta: dict[str, object]) -> tuple[CalculixCase, ...]:
    text = dat.read_text()
    headers = list(_HEADER.finditer(text))
    supports = meta.get("supports", {})
    names: dict[str, str] = dict(supports) if isinstance(supports, dict) else {}
    num_nodes = meta.get("num_nodes")
    num_elements = meta.get("num_elements")
    times: list[str] = []
    raw: dict[str, dict[str, list[FloatArray]]] = {}
    for i, header in enumerate(headers):
        kind, _, set_name, step_time = header.groups()
        if step_time not in raw:
            times.append(step_time)
            raw[step_time] = {}
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        block = text[header.end():end]
        width = {"total force": 3, "displacements": 4, "strains": 8}[kind]
        values = _numbers(block, width, kind, dat)
        key = f"{kind}:{set_name}" if kind == "total force" else kind
        raw[step_time].setdefault(key, []).append(values)
    if not times:
        raise CalculixError(f"no results found in {dat}",
                            hint="the deck must print RF totals, U and E (use write_inp)")

    cases = []
    for step_time in times:
        blocks = raw[step_time]
        reactions = {
            names.get(key.split(":", 1)[1], key.split(":", 1)[1]): vals[-1][-1].copy()
            for key, vals in blocks.items() if key.startswith("total force:")
        }
        disp_rows = np.vstack(blocks.get("displacements", [np.zeros((0, 4))]))
        n = int(num_nodes) if isinstance(num_nodes, int) else int(
            disp_rows[:, 0].max(initial=0))
        displacement = np.zeros((n, 3))
        displacement[disp_rows[:, 0].astype(np.int64) - 1] = disp_rows[:, 1:]
        strain_rows = np.vstack(blocks.get("strains", [np.zeros((0, 8))]))
        m = int(num_elements) if isinstance(num_elements, int) else int(
            strain_rows[:, 0].max(initial=0))
        elem = strain_rows[:, 0].astype(np.int64) - 1
        count = np.bincount(elem, minlength=m).astype(np.float64)
        voigt = np.zeros((m, 6))  # exx, eyy, ezz, exy, exz, eyz (ccx's .dat order)
        np.add.at(voigt, elem, strain_rows[:, 2:])
        with np.errstate(invalid="ignore", divide="ignore"):
            voigt /= count[:, None]
        exx, eyy, ezz, exy, exz, eyz = voigt.T
        strain = np.stack([np.stack([exx, exy, exz], axis=-1),
                           np.stack([exy, eyy, eyz], axis=-1),
                           np.stack([exz, eyz, ezz], axis=-1)], axis=-2)
        cases.append(CalculixCase(reactions, displacement, strain))
    return tuple(cases)


def run_calculix(
    inp_path: str | os.PathLike[str],
    *,
    ccx: str = "ccx",
    timeout_s: float = 3600.0,
    num_threads: int | None = 1,
) -> CalculixResult:
    """Run CalculiX on a deck in the deck's folder and read the results back.

    Args:
        inp_path: ``<job>.inp`` (as written by :func:`write_inp`).
        ccx: CalculiX executable (name on PATH or path).
        timeout_s: Wall-clock limit, s.
        num_threads: Threads for ccx (OMP_NUM_THREADS, CCX_NPROC_EQUATION_SOLVER); None
            leaves the environment as it is.

    Returns:
        Reactions per support, nodal displacements and element strains per load case.

    Raises:
        CalculixError: ccx missing, failed (with the tail of its output), timed out, or wrote
            no readable results.
    """
    deck = Path(inp_path).resolve()
    if deck.suffix != ".inp" or not deck.is_file():
        raise CalculixError(f"CalculiX deck not found: {deck}",
                            hint="write it first with write_inp (<job>.inp)")
    exe = shutil.which(ccx)
    if exe is None:
        raise CalculixError(f"CalculiX executable {ccx!r} not found",
                            hint="install it (apt-get install calculix-ccx) or pass ccx=PATH")
    job = deck.stem
    dat, frd = deck.with_suffix(".dat"), deck.with_suffix(".frd")
    for stale in (dat, frd):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    if num_threads is not None:
        env["OMP_NUM_THREADS"] = str(int(num_threads))
        env["CCX_NPROC_EQUATION_SOLVER"] = str(int(num_threads))
        env["CCX_NPROC_RESULTS"] = str(int(num_threads))
    log = deck.with_suffix(".ccx.log")
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            proc = subprocess.run([exe, "-i", job], cwd=deck.parent, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CalculixError(f"CalculiX did not finish {deck.name} within {timeout_s:.0f} s",
                                hint="raise timeout_s, or use solver='iterative_cholesky' "
                                "for large models") from exc
    wall = time.perf_counter() - start
    output = log.read_text(errors="replace")
    errors = [line.strip() for line in output.splitlines() if "*ERROR" in line]
    if proc.returncode != 0 or errors or not dat.is_file():
        first = f"{len(errors)} *ERROR line(s), first: {errors[0]}" if errors else "no .dat"
        raise CalculixError(
            f"CalculiX failed on {deck} (exit status {proc.returncode}; {first}); "
            f"last output:\n{_tail(output)}",
            hint=f"see {log}; fix the deck (sets, materials, solver availability) and rerun",
        )
    start = time.perf_counter()
    cases = _parse_dat(dat, _read_meta(deck))
    parse = time.perf_counter() - start
    return CalculixResult(cases=cases, wall_s=wall, parse_s=parse, dat_path=dat,
                          frd_path=frd if frd.is_file() else None, num_threads=num_threads)
