"""Abaqus/CalculiX input decks: read a linear-elastic static model built elsewhere.

:func:`read_inp` turns a ``.inp`` deck into an :class:`AbaqusModel` of plain numpy records
that :mod:`osteofe.solve_tool` hands to the same DOLFINx solver as the femur pipeline. This
module knows nothing of DOLFINx.

What is read (keywords and parameters are case-insensitive; labels are upper-cased as Abaqus
does, unless quoted; ``**`` starts a comment; a keyword line ending in a comma continues on
the next line; element data may run over several lines):

- ``*NODE`` (``NSET=``), ``*ELEMENT, TYPE=C3D4|C3D10`` (``ELSET=``). The Abaqus C3D10 node
  order (corners 1-4, then the mid-nodes of edges 1-2, 2-3, 3-1, 1-4, 2-4, 3-4) is already the
  VTK order of :class:`~meshing.types.TetMesh` (see :data:`C3D10_TO_VTK`);
- ``*NSET``/``*ELSET`` with ids, references to earlier sets and ``GENERATE``; repeating a set
  name adds to it;
- ``*MATERIAL`` with ``*ELASTIC`` (isotropic E > 0, -1 < nu < 0.5), ``*SOLID SECTION,
  ELSET=, MATERIAL=`` (no data line, an empty one or a thickness; anything else under it is
  refused as data that lost its keyword);
- one ``*STEP`` with ``*STATIC``; ``*BOUNDARY`` in the model data or the step (node or node
  set, first and last dof, value; zero when absent; ``ENCASTRE``, ``PINNED``, ``XSYMM``... on
  the translational dofs; ``OP=NEW`` drops the earlier conditions), ``*CLOAD`` (node or set,
  dof, magnitude) and ``*DLOAD`` with uniform face pressure ``P1``-``P4`` on elements or element
  sets. As in Abaqus, a later value for the same node and dof (or element face) replaces the
  earlier one;
- ``*INCLUDE, INPUT=file`` (literal inclusion, relative to the including file). The file
  must lie in the deck's folder or a subfolder (symbolic links followed) unless
  ``allow_include_outside`` is set; an error in an included file names the file and line but
  never quotes its text (an include may be a file the reader of the message must not see).

Keywords that cannot change a linear static solution (output requests, ``*DENSITY``...) are
listed in :attr:`AbaqusModel.notes` (a negative or non-finite ``*DENSITY`` is still refused:
it says the material data are wrong). Every other keyword, and every parameter that would change
the meaning of a supported one, is collected in :attr:`AbaqusModel.unsupported` with its line;
:meth:`AbaqusModel.check_supported` turns them into an error (callers may downgrade them to
warnings). Nothing is ignored silently. Malformed decks raise :class:`AbaqusError` naming the
file and line and how to fix it.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray, IntArray
from meshing.errors import InputError
from meshing.quality import jacobian_determinants
from meshing.types import TetMesh

__all__ = [
    "C3D10_TO_VTK",
    "ELEMENTS_BY_ID",
    "ELEMENT_NODES",
    "MAX_COORDINATE_MM",
    "MAX_ID",
    "NODES_BY_ID",
    "AbaqusError",
    "AbaqusModel",
    "AbaqusUnsupportedError",
    "LoadSet",
    "Material",
    "Unsupported",
    "face_pressure_forces",
    "read_inp",
]


#: Nodes per element of the element types osteofe solves.
ELEMENT_NODES: dict[str, int] = {"C3D4": 4, "C3D10": 10}
#: Column permutation from Abaqus C3D10 to VTK tetra10: the identity (both list the corners,
#: then the mid-nodes of edges 12, 23, 31, 14, 24, 34 in 1-based corner numbers).
C3D10_TO_VTK = np.arange(10, dtype=np.int64)

#: Corners (0-based) of the Abaqus faces S1-S4 of C3D4/C3D10: 1-2-3, 1-4-2, 2-4-3, 3-4-1.
_FACE_CORNERS = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]], dtype=np.int64)
#: Mid-edge node columns (VTK/C3D10 order) of the same faces.
_FACE_MIDS = np.array([[4, 5, 6], [7, 8, 4], [8, 9, 5], [9, 7, 6]], dtype=np.int64)
#: The corner not on each face.
_FACE_OPPOSITE = np.array([3, 2, 0, 1], dtype=np.int64)
#: Vertex pairs of the mid-edge nodes 5-10 (columns 4-9).
_TET_EDGES = np.array([[0, 1], [1, 2], [2, 0], [0, 3], [1, 3], [2, 3]], dtype=np.int64)

#: *BOUNDARY shortcuts -> translational dofs they fix (rotations do not exist on solids).
_BC_SHORTCUTS: dict[str, tuple[int, ...]] = {
    "ENCASTRE": (0, 1, 2), "PINNED": (0, 1, 2), "XSYMM": (0,), "YSYMM": (1,),
    "ZSYMM": (2,), "XASYMM": (1, 2), "YASYMM": (0, 2), "ZASYMM": (0, 1),
}

#: Keywords without effect on a linear static solution of a solid model, and why.
_NO_EFFECT: dict[str, str] = {
    **{key: "output request" for key in (
        "NODE PRINT", "EL PRINT", "NODE FILE", "EL FILE", "NODE OUTPUT", "ELEMENT OUTPUT",
        "OUTPUT", "FIELD OUTPUT", "HISTORY OUTPUT", "ENERGY PRINT", "SECTION PRINT",
        "PREPRINT", "RESTART", "MONITOR", "FILE FORMAT", "CONTACT PRINT", "CONTACT FILE",
        "CONTACT OUTPUT", "NODE RESPONSE", "ELEMENT RESPONSE")},
    "DENSITY": "mass density (no gravity or inertia in a static step)",
    "EXPANSION": "thermal expansion (no temperature load is read)",
    "CONDUCTIVITY": "thermal property", "SPECIFIC HEAT": "thermal property",
    "ORIENTATION": "material orientation (isotropic materials only)",
    "AMPLITUDE": "amplitude definition (referencing one is unsupported)",
}
#: Keywords that belong to the material defined last.
_MATERIAL_OPTIONS = {"ELASTIC", "DENSITY", "EXPANSION", "CONDUCTIVITY", "SPECIFIC HEAT",
                     "PLASTIC", "HYPERELASTIC", "USER MATERIAL", "DEPVAR", "DAMPING",
                     "CREEP", "VISCOELASTIC", "HYPERFOAM", "DEFORMATION PLASTICITY"}
#: Parameters each supported keyword understands (used) or may carry without effect.
_PARAMETERS: dict[str, set[str]] = {
    "HEADING": set(), "INCLUDE": {"INPUT"}, "NODE": {"NSET"}, "ELEMENT": {"TYPE", "ELSET"},
    "NSET": {"NSET", "GENERATE", "INTERNAL", "UNSORTED"},
    "ELSET": {"ELSET", "GENERATE", "INTERNAL", "UNSORTED"},
    "MATERIAL": {"NAME"}, "ELASTIC": {"TYPE"}, "DENSITY": {"DEPENDENCIES", "PORE FLUID"},
    "SOLID SECTION": {"ELSET", "MATERIAL", "ORIENTATION", "CONTROLS", "NAME"},
    "STEP": {"NAME", "INC", "NLGEOM", "PERTURBATION", "DESCRIPTION", "EXTRAPOLATION",
             "AMPLITUDE", "UNSYMM", "CONVERT SDI"},
    "STATIC": {"SOLVER", "DIRECT", "MATRIXSTORAGE", "TIME RESET"},
    "BOUNDARY": {"OP", "TYPE"}, "CLOAD": {"OP"}, "DLOAD": {"OP"}, "END STEP": set(),
}
#: Analysis procedures other than *STATIC (a step with one of them is not solved).
_PROCEDURES = {"FREQUENCY", "BUCKLE", "DYNAMIC", "VISCO", "HEAT TRANSFER",
               "COUPLED TEMPERATURE-DISPLACEMENT", "MODAL DYNAMIC", "STEADY STATE DYNAMICS",
               "COMPLEX FREQUENCY", "GREEN", "SENSITIVITY", "ELECTROMAGNETICS",
               "UNCOUPLED TEMPERATURE-DISPLACEMENT"}
#: Keywords and parameters of other Abaqus/CalculiX features, named in messages even when
#: they come from an included file (see :data:`_KNOWN_NAMES`).
_OTHER_NAMES = {
    "PART", "END PART", "ASSEMBLY", "END ASSEMBLY", "INSTANCE", "END INSTANCE", "SURFACE",
    "EQUATION", "MPC", "TIE", "COUPLING", "KINEMATIC", "DISTRIBUTING", "RIGID BODY",
    "CONTACT PAIR", "SURFACE INTERACTION", "FRICTION", "GAP", "SPRING", "DASHPOT", "MASS",
    "SHELL SECTION", "BEAM SECTION", "MEMBRANE SECTION", "COHESIVE SECTION",
    "INITIAL CONDITIONS", "TEMPERATURE", "DSLOAD", "DFLUX", "CFLUX", "TRANSFORM",
    "NODAL THICKNESS", "USER ELEMENT", "PHYSICAL CONSTANTS", "PARAMETER", "SYSTEM",
    "DEPENDENCIES", "PORE FLUID", "TOTALS", "GLOBAL", "FREQUENCY", "TIME POINTS",
}
#: Upper-cased keyword and parameter names that error messages and warnings may name when
#: they come from an included file (any other text of an included file is never shown).
_KNOWN_NAMES = frozenset(
    set(_PARAMETERS) | {name for names in _PARAMETERS.values() for name in names}
    | set(_NO_EFFECT) | _MATERIAL_OPTIONS | _PROCEDURES | set(_BC_SHORTCUTS) | _OTHER_NAMES
    | {"DENSITY", "ISO", "ISOTROPIC", "ENGINEERING CONSTANTS", "ORTHOTROPIC", "ANISOTROPIC",
       "DISPLACEMENT", "VELOCITY", "ACCELERATION", "NEW", "MOD", "C3D4", "C3D10"})
#: Label under which loads and conditions given on node ids (not sets) are reported.
NODES_BY_ID = "(nodes by id)"
#: Label under which pressures given on element ids (not sets) are reported.
ELEMENTS_BY_ID = "(elements by id)"
#: Relative distance of a C3D10 mid-node from its edge midpoint above which the element is
#: curved (osteofe's geometry is straight-sided).
CURVED_EDGE_TOL = 1e-3
_MAX_INCLUDE_DEPTH = 16
_ID_TOKEN = re.compile(r"\+?[0-9]+")
#: Largest node or element id read (every integer up to it is exact in float64; Abaqus and
#: CalculiX themselves stop at 2^31 - 1).
MAX_ID = 2**53
#: Largest coordinate magnitude accepted, mm (a kilometre: anything beyond is a unit or
#: export error, and volumes and forces computed from it would overflow).
MAX_COORDINATE_MM = 1e6


class AbaqusError(InputError):
    """A deck is malformed or inconsistent (the message names the file and line)."""


class AbaqusUnsupportedError(AbaqusError):
    """A deck uses keywords or parameters that osteofe does not solve (all are listed)."""


@dataclass(frozen=True)
class Unsupported:
    """A keyword or parameter of the deck that osteofe does not solve.

    Attributes:
        keyword: The keyword (e.g. "*PLASTIC") or "*KEYWORD, PARAM".
        location: "file.inp, line N".
        detail: What is not supported and what happens when it is ignored.
    """

    keyword: str
    location: str
    detail: str

    def __str__(self) -> str:
        return f"{self.keyword} ({self.location}): {self.detail}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready record."""
        return {"keyword": self.keyword, "location": self.location, "detail": self.detail}


@dataclass(frozen=True)
class Material:
    """An isotropic linear-elastic material.

    Attributes:
        name: Upper-cased material name.
        youngs_modulus_mpa: E in MPa (deck units are taken as mm, N, MPa).
        poisson_ratio: nu.
        location: Where the ``*MATERIAL`` card is.
    """

    name: str
    youngs_modulus_mpa: float
    poisson_ratio: float
    location: str


@dataclass(frozen=True)
class LoadSet:
    """The loads applied through one node set, element set or node label.

    Attributes:
        nodes: (k,) int64 mesh nodes that carry the label's loads (face nodes for pressure).
        force_n: (3,) resultant force of the label's loads in effect, N.
    """

    nodes: IntArray
    force_n: FloatArray


@dataclass(frozen=True)
class AbaqusModel:
    """A linear-elastic static model read from a deck, in osteofe's 0-based numbering.

    Attributes:
        path: The deck.
        element_type: "C3D4" or "C3D10".
        mesh: Tetrahedra (VTK node order) over the nodes used by elements; cells sorted by
            element id; nodes sorted by node id; ``cell_tags`` are all 1.
        node_ids: (n,) int64 Abaqus id of each mesh node.
        element_ids: (m,) int64 Abaqus id of each cell.
        material_index: (m,) int64 index into ``materials`` of each cell.
        materials: The materials used by sections, in deck order.
        node_sets: Upper-cased name -> (k,) int64 mesh nodes (nodes outside elements dropped).
        element_sets: Upper-cased name -> (k,) int64 cell indices.
        bc_nodes: (b,) int64 mesh node of each constrained dof (sorted by node, then dof).
        bc_components: (b,) int64 its component (0 = x, 1 = y, 2 = z).
        bc_values: (b,) float64 prescribed displacement, mm (0 = fixed).
        bc_sets: Label of each ``*BOUNDARY`` target in effect (the node set name, or
            :data:`NODES_BY_ID` for all nodes given by id) -> (k,) int64 mesh nodes; the
            reactions are reported per label.
        nodal_forces_n: (n, 3) float64 concentrated and pressure forces on the nodes, N.
        load_sets: Label of each ``*CLOAD``/``*DLOAD`` target in effect (set name,
            :data:`NODES_BY_ID` or :data:`ELEMENTS_BY_ID`) -> its loads.
        step_name: Name of the solved step ("" when unnamed).
        unsupported: Keywords and parameters osteofe does not solve, with their lines.
        notes: Keywords without effect on the solution, and other remarks, with their lines.
        files: The deck and the files it includes.
    """

    path: Path
    element_type: str
    mesh: TetMesh
    node_ids: IntArray
    element_ids: IntArray
    material_index: IntArray
    materials: tuple[Material, ...]
    node_sets: dict[str, IntArray]
    element_sets: dict[str, IntArray]
    bc_nodes: IntArray
    bc_components: IntArray
    bc_values: FloatArray
    bc_sets: dict[str, IntArray]
    nodal_forces_n: FloatArray
    load_sets: dict[str, LoadSet]
    step_name: str = ""
    unsupported: tuple[Unsupported, ...] = ()
    notes: tuple[str, ...] = ()
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def youngs_modulus_mpa(self) -> FloatArray:
        """(m,) float64 Young's modulus per cell, MPa."""
        moduli = np.array([m.youngs_modulus_mpa for m in self.materials], dtype=np.float64)
        return np.asarray(moduli[self.material_index])

    @property
    def poisson_ratio(self) -> FloatArray:
        """(m,) float64 Poisson's ratio per cell."""
        ratios = np.array([m.poisson_ratio for m in self.materials], dtype=np.float64)
        return np.asarray(ratios[self.material_index])

    def check_supported(self) -> None:
        """Raise when the deck uses anything osteofe does not solve.

        Raises:
            AbaqusUnsupportedError: listing every unsupported keyword with its line.
        """
        if self.unsupported:
            listed = "; ".join(str(u) for u in self.unsupported)
            raise AbaqusUnsupportedError(
                f"{self.path.name} uses {len(self.unsupported)} unsupported feature(s): "
                f"{listed}",
                hint="remove them from the deck, or pass --ignore-unsupported to solve "
                "without them (they are listed as warnings in result.json)",
            )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the model."""
        return {
            "path": str(self.path),
            "element_type": self.element_type,
            "num_nodes": self.mesh.num_nodes,
            "num_elements": self.mesh.num_cells,
            "num_materials": len(self.materials),
            "youngs_modulus_range_mpa": [float(self.youngs_modulus_mpa.min()),
                                         float(self.youngs_modulus_mpa.max())],
            "node_sets": sorted(self.node_sets),
            "element_sets": sorted(self.element_sets),
            "num_constrained_dofs": int(self.bc_nodes.size),
            "num_prescribed_nonzero": int(np.count_nonzero(self.bc_values)),
            "boundary_sets": sorted(self.bc_sets),
            "load_sets": {name: load.force_n.tolist() for name, load in self.load_sets.items()},
            "total_applied_force_n": self.nodal_forces_n.sum(axis=0).tolist(),
            "step": self.step_name,
            "files": [str(f) for f in self.files],
        }


def face_pressure_forces(mesh: TetMesh, cells: IntArray, faces: IntArray,
                         pressure_mpa: FloatArray) -> FloatArray:
    """Consistent nodal forces of uniform pressures on element faces (Abaqus P1-P4).

    A positive pressure pushes into the element (against the outward normal). A flat 3-node
    face carries ``A p / 3`` on each corner; a flat 6-node face nothing on its corners and
    ``A p / 3`` on each mid-edge node (the integrals of the quadratic triangle's shape
    functions).

    Args:
        mesh: 4- or 10-node mesh (VTK/C3D10 order).
        cells: (f,) cell of each loaded face.
        faces: (f,) face number 0-3 (Abaqus S1-S4).
        pressure_mpa: (f,) pressure, MPa.

    Returns:
        (n, 3) float64 nodal forces, N.
    """
    forces = np.zeros((mesh.num_nodes, 3))
    if cells.size == 0:
        return forces
    conn = mesh.cells[cells]
    corners = np.take_along_axis(conn, _FACE_CORNERS[faces], axis=1)  # (f, 3)
    p = mesh.points[corners]
    cross = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # 2 A n (either orientation)
    opposite = mesh.points[conn[np.arange(cells.size), _FACE_OPPOSITE[faces]]]
    outward = np.where(np.einsum("ij,ij->i", cross, p[:, 0] - opposite)[:, None] >= 0.0,
                       cross, -cross)
    share = -(pressure_mpa[:, None] * outward) / 6.0  # A p n / 3 per node, against n
    targets = (corners if mesh.order == 1
               else np.take_along_axis(conn, _FACE_MIDS[faces], axis=1))
    np.add.at(forces, targets.reshape(-1), np.repeat(share, 3, axis=0))
    return forces


# -- reading lines and blocks --------------------------------------------------------------


@dataclass
class _Block:
    """One keyword card and its data lines (line indices into the expanded deck)."""

    keyword: str
    params: dict[str, str]
    raw_params: dict[str, str]
    line: int
    data: list[str] = field(default_factory=list)
    data_lines: list[int] = field(default_factory=list)


def _split_params(text: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``*KEY WORD, A=b, FLAG`` -> ("KEY WORD", {"A": "B", "FLAG": ""}, raw values)."""
    parts = [part.strip() for part in text[1:].split(",")]
    keyword = " ".join(parts[0].upper().split())
    params: dict[str, str] = {}
    raw: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        key, _, value = part.partition("=")
        name = " ".join(key.upper().split())
        raw[name] = value.strip()
        params[name] = _label(value)
    return keyword, params, raw


def _label(text: str) -> str:
    """A label as Abaqus compares it: upper-cased unless quoted."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text.upper()


class _Source:
    """The deck with its includes expanded: lines and where each comes from.

    Args:
        path: The deck (resolved).
        allow_include_outside: Read ``*INCLUDE`` files outside the deck's folder too.
    """

    def __init__(self, path: Path, allow_include_outside: bool = False) -> None:
        self.files: list[Path] = []
        self.lines: list[str] = []
        self.file_of: list[int] = []
        self.number_of: list[int] = []
        #: Folder that ``*INCLUDE`` files must lie in (with its subfolders), or None.
        self.root: Path | None = None if allow_include_outside else path.parent
        self._expand(path, None, 0)
        #: More ids than the deck can define (each needs a digit and a separator).
        self.max_ids = sum(len(line) + 1 for line in self.lines)

    def where(self, index: int) -> str:
        """'name.inp, line N' of an expanded line."""
        return f"{self.files[self.file_of[index]].name}, line {self.number_of[index]}"

    def shown(self, index: int, text: str) -> str:
        """``text`` taken from expanded line ``index``, as an error message may quote it.

        Text of the deck itself is quoted; text of an included file never is (an include may
        be a file the person reading the message must not see), only its name and line.
        """
        if not self.file_of or self.file_of[index] == 0:
            return text
        return f"[text of {self.files[self.file_of[index]].name} not shown]"

    def quoted(self, index: int, text: str) -> str:
        """``'text'`` of expanded line ``index``, or the placeholder of :meth:`shown`."""
        shown = self.shown(index, text)
        return f"'{text}'" if shown == text else shown

    def keyword_shown(self, index: int, keyword: str) -> str:
        """An upper-cased keyword or parameter name of line ``index`` for a message.

        Any name of the deck's own lines; for an included file only names of the Abaqus
        vocabulary osteofe knows (:data:`_KNOWN_NAMES`), the placeholder otherwise.
        """
        return keyword if keyword in _KNOWN_NAMES else self.shown(index, keyword)

    def _expand(self, path: Path, parent: int | None, depth: int) -> None:
        if depth > _MAX_INCLUDE_DEPTH:
            raise AbaqusError(f"*INCLUDE nested deeper than {_MAX_INCLUDE_DEPTH} levels "
                              f"({self.where(parent) if parent is not None else path})",
                              hint="an included file includes itself?")
        try:
            text = path.read_text(errors="replace")
        except (OSError, ValueError) as exc:  # ValueError: a NUL character in the name
            where = f" ({self.where(parent)})" if parent is not None else ""
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise AbaqusError(f"cannot read {path}{where}: {reason}",
                              hint="check the path of the deck / *INCLUDE, INPUT=") from exc
        index = len(self.files)
        self.files.append(path)
        lines = text.splitlines()
        includes = [i for i, line in enumerate(lines)
                    if line[:1] == "*" and line[:8].upper().replace(" ", "") == "*INCLUDE"]
        start = 0
        for i in [*includes, len(lines)]:
            self.lines.extend(lines[start:i])
            self.file_of.extend([index] * (i - start))
            self.number_of.extend(range(start + 1, i + 1))
            if i == len(lines):
                break
            self.lines.append("** " + lines[i])  # keep the line countable, as a comment
            self.file_of.append(index)
            self.number_of.append(i + 1)
            _, _, raw = _split_params(lines[i].strip())
            target = raw.get("INPUT", "").strip().strip('"')
            here = len(self.lines) - 1
            if not target:
                raise AbaqusError(f"*INCLUDE without INPUT= ({self.where(here)})",
                                  hint="write *INCLUDE, INPUT=other.inp")
            if "\x00" in target:
                raise AbaqusError(f"*INCLUDE, INPUT= holds a NUL character "
                                  f"({self.where(here)})",
                                  hint="write *INCLUDE, INPUT=other.inp")
            self._expand(self._include_path(path, target, here), here, depth + 1)
            start = i + 1

    def _include_path(self, including: Path, target: str, line: int) -> Path:
        """The file an ``*INCLUDE, INPUT=target`` of ``including`` reads, once allowed.

        Raises:
            AbaqusError: The file lies outside the deck's folder (symbolic links followed)
                and includes outside it are not allowed, or it exists but is not a regular
                file (a device or a pipe would block or never end).
        """
        try:
            resolved = (including.parent / target).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop
            raise AbaqusError(f"*INCLUDE, INPUT={target}: the path cannot be resolved "
                              f"({self.where(line)})",
                              hint="check the path of *INCLUDE, INPUT=") from exc
        if self.root is not None and not resolved.is_relative_to(self.root):
            # Refused before the file is looked at: the message tells nothing about it.
            raise AbaqusError(
                f"*INCLUDE, INPUT={target} points outside the deck's folder {self.root} "
                f"({self.where(line)})",
                hint="copy the included file into the deck's folder (or a subfolder of it), "
                "or allow includes from anywhere: osteofe solve --allow-include-outside "
                "(read_inp(..., allow_include_outside=True))")
        try:
            mode: int | None = resolved.stat().st_mode
        except (OSError, ValueError):  # missing or unreadable: reading it says why
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise AbaqusError(f"*INCLUDE, INPUT={target} is not a regular file "
                              f"({self.where(line)})",
                              hint="include a deck file, not a folder or a device")
        return resolved

    def blocks(self) -> list[_Block]:
        """Group lines into keyword cards and their data lines."""
        blocks: list[_Block] = []
        current: _Block | None = None
        lines = self.lines
        i, n = 0, len(lines)
        while i < n:
            text = lines[i].strip()
            if not text or text.startswith("**"):
                i += 1
                continue
            if text.startswith("*"):
                start = i
                while text.endswith(",") and i + 1 < n:  # keyword line continues
                    i += 1
                    text += lines[i].strip()
                keyword, params, raw = _split_params(text)
                current = _Block(keyword, params, raw, start)
                blocks.append(current)
            elif current is None:
                raise AbaqusError(f"data before the first keyword ({self.where(i)})",
                                  hint="a deck starts with a keyword such as *HEADING or *NODE")
            else:
                current.data.append(text)
                current.data_lines.append(i)
            i += 1
        return blocks


# -- the parser ------------------------------------------------------------------------------


@dataclass
class _SetPart:
    """Members added to a set by one card: ids and the line that added them."""

    ids: IntArray
    line: int


@dataclass
class _Target:
    """A ``*BOUNDARY``/``*CLOAD``/``*DLOAD`` data line."""

    label: str
    node_id: int | None
    line: int
    components: tuple[int, ...] = ()
    value: float = 0.0
    face: int = -1


class _Parser:
    """Reads the blocks of a deck into model records (one use)."""

    def __init__(self, source: _Source) -> None:
        self.src = source
        self.unsupported: list[Unsupported] = []
        self.notes: list[str] = []
        self.node_ids: list[IntArray] = []
        self.node_xyz: list[FloatArray] = []
        self.node_lines: list[IntArray] = []
        self.elem_type: str | None = None
        self.elem_type_line = -1
        self.elem_ids: list[IntArray] = []
        self.elem_conn: list[IntArray] = []
        self.elem_lines: list[IntArray] = []
        self.nsets: dict[str, list[_SetPart]] = {}
        self.elsets: dict[str, list[_SetPart]] = {}
        self.set_lines: dict[tuple[str, str], int] = {}
        self.materials: dict[str, dict[str, Any]] = {}
        self.sections: list[tuple[str, str, int]] = []
        self.boundaries: list[_Target] = []
        self.cloads: list[_Target] = []
        self.dloads: list[_Target] = []
        self.material: str | None = None
        self.in_step = False
        self.steps = 0
        self.step_name = ""
        self.step_line = -1
        self.static_line = -1
        self.skipping_step = False

    # -- helpers
    def where(self, line: int) -> str:
        return self.src.where(line)

    def error(self, line: int, message: str, hint: str) -> AbaqusError:
        return AbaqusError(f"{message} ({self.where(line)})", hint=hint)

    def shown(self, line: int, text: str) -> str:
        """Text of a line for a message (never text of an included file)."""
        return self.src.shown(line, text)

    def quoted(self, line: int, text: str) -> str:
        """``'text'`` of a line for a message (never text of an included file)."""
        return self.src.quoted(line, text)

    def term(self, line: int, name: str) -> str:
        """A keyword, parameter or value name of a line for a message."""
        return self.src.keyword_shown(line, name)

    def unsupported_here(self, keyword: str, line: int, detail: str) -> None:
        self.unsupported.append(Unsupported(keyword, self.where(line), detail))

    def numbers(self, block: _Block, what: str) -> tuple[FloatArray, IntArray, IntArray]:
        """All numbers of a block's data lines, flattened; tokens per line; line indices."""
        rows = [line.rstrip(", \t").split(",") for line in block.data]
        counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        flat = [t for r in rows for t in r]
        try:
            values = np.array(flat, dtype=np.float64)
        except ValueError:
            values = np.empty(len(flat))
            for k, token in enumerate(flat):
                text = token.strip().upper().replace("D", "E")
                try:
                    values[k] = float(text) if text else 0.0
                except ValueError:
                    row = int(np.searchsorted(np.cumsum(counts), k, side="right"))
                    line = block.data_lines[row]
                    raise self.error(line, f"*{block.keyword}: "
                                     f"{self.quoted(line, token.strip())} is not a number "
                                     f"({what})", hint=f"each data line lists {what}") from None
        return values, counts, np.asarray(block.data_lines, dtype=np.int64)

    def integers(self, values: FloatArray, lines: IntArray, keyword: str,
                 what: str) -> IntArray:
        in_range = np.isfinite(values) & (np.abs(values) <= MAX_ID)
        ints = np.rint(np.where(in_range, values, 0.0)).astype(np.int64)
        bad = np.flatnonzero(~in_range | (ints != values) | (ints <= 0))
        if bad.size:
            raise self.error(int(lines[bad[0]]), f"*{keyword}: {what} must be positive "
                             f"integers up to {MAX_ID}, got {values[bad[0]]:g}",
                             hint=f"check the {what}")
        return ints

    def id_of(self, token: str, line: int, keyword: str) -> int:
        """A node or element id written as digits, checked against :data:`MAX_ID`."""
        value = int(token)
        if value < 1 or value > MAX_ID:
            raise self.error(line, f"*{keyword}: id {token} is outside 1..{MAX_ID}",
                             hint="check the node or element id")
        return value

    def check_params(self, block: _Block) -> None:
        allowed = _PARAMETERS.get(block.keyword, set())
        for name in block.params:
            if name not in allowed:
                shown = self.term(block.line, name)
                self.unsupported_here(f"*{block.keyword}, {shown}", block.line,
                                      f"parameter {shown} is not supported (ignored)")

    # -- dispatch
    def run(self) -> None:
        handlers = {
            "HEADING": self.heading, "NODE": self.node, "ELEMENT": self.element,
            "NSET": self.set_card, "ELSET": self.set_card, "MATERIAL": self.material_card,
            "ELASTIC": self.elastic, "SOLID SECTION": self.section, "STEP": self.step,
            "STATIC": self.static, "BOUNDARY": self.boundary, "CLOAD": self.cload,
            "DLOAD": self.dload, "END STEP": self.end_step, "DENSITY": self.density,
        }
        for block in self.src.blocks():
            keyword = block.keyword
            if self.skipping_step and keyword != "END STEP":
                continue
            if keyword not in _MATERIAL_OPTIONS:
                self.material = None
            elif self.material is None:
                raise self.error(block.line, f"*{keyword} outside a *MATERIAL",
                                 hint="material options follow their *MATERIAL card")
            if keyword in handlers:
                self.check_params(block)
                handlers[keyword](block)
            elif keyword in _NO_EFFECT:
                self.notes.append(f"*{keyword} ({self.where(block.line)}) ignored: "
                                  f"{_NO_EFFECT[keyword]}, no effect on a linear static "
                                  "solution")
            elif keyword in _PROCEDURES and self.in_step:
                self.unsupported_here(f"*{keyword}", block.line,
                                      "only *STATIC steps are solved")
            else:
                self.unsupported_here(f"*{self.term(block.line, keyword)}", block.line,
                                      "keyword not supported (ignored with its data)")
        if self.in_step:
            self.notes.append(f"*STEP ({self.where(self.step_line)}) has no *END STEP")

    # -- model data
    def heading(self, block: _Block) -> None:
        del block

    def node(self, block: _Block) -> None:
        if not block.data:
            return
        values, counts, lines = self.numbers(block, "node id, x, y, z")
        if np.any(counts < 2) or np.any(counts > 4):
            row = int(np.flatnonzero((counts < 2) | (counts > 4))[0])
            raise self.error(int(lines[row]), f"*NODE line has {counts[row]} entries",
                             hint="write: node id, x, y, z")
        table = np.zeros((counts.size, 4))
        if np.all(counts == 4):
            table[:] = values.reshape(-1, 4)
        else:
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            for row, (s, c) in enumerate(zip(starts, counts, strict=True)):
                table[row, :c] = values[s:s + c]
        ids = self.integers(table[:, 0], lines, "NODE", "node ids")
        if not np.all(np.isfinite(table[:, 1:])):
            row = int(np.flatnonzero(~np.all(np.isfinite(table[:, 1:]), axis=1))[0])
            raise self.error(int(lines[row]), "*NODE coordinate is not finite",
                             hint="check the coordinates")
        far = np.abs(table[:, 1:]).max(axis=1) > MAX_COORDINATE_MM
        if np.any(far):
            row = int(np.flatnonzero(far)[0])
            raise self.error(int(lines[row]), "*NODE coordinate of magnitude "
                             f"{np.abs(table[row, 1:]).max():g} is beyond the "
                             f"{MAX_COORDINATE_MM:g} mm accepted",
                             hint="lengths are read as mm: check the deck's units and "
                             "coordinates")
        self.node_ids.append(ids)
        self.node_xyz.append(table[:, 1:])
        self.node_lines.append(lines)
        if "NSET" in block.params:
            self.add_to_set(self.nsets, "nset", block.params["NSET"], ids, block.line)

    def element(self, block: _Block) -> None:
        etype = block.params.get("TYPE", "")
        if not etype:
            raise self.error(block.line, "*ELEMENT without TYPE=",
                             hint="write *ELEMENT, TYPE=C3D10 (or C3D4)")
        if etype not in ELEMENT_NODES:
            raise self.error(block.line, f"element type {self.term(block.line, etype)} is "
                             "not supported",
                             hint="osteofe solves 4- and 10-node tetrahedra: C3D4, C3D10")
        if self.elem_type is not None and etype != self.elem_type:
            raise self.error(block.line, f"element type {etype} mixed with "
                             f"{self.elem_type} ({self.where(self.elem_type_line)})",
                             hint="use one element type in a deck (all C3D4 or all C3D10)")
        self.elem_type, self.elem_type_line = etype, block.line
        if not block.data:
            return
        width = 1 + ELEMENT_NODES[etype]
        values, counts, lines = self.numbers(block, f"element id and {width - 1} node ids")
        first_token_line = np.repeat(lines, counts)
        if values.size % width:
            raise self.error(int(lines[-1]), f"*ELEMENT, TYPE={etype}: {values.size} "
                             f"numbers do not make elements of {width} (id + nodes)",
                             hint="each element is its id and its nodes; a line ending in "
                             "a comma continues on the next line")
        ints = self.integers(values, first_token_line, "ELEMENT", "element and node ids")
        table = ints.reshape(-1, width)
        self.elem_ids.append(table[:, 0])
        self.elem_conn.append(table[:, 1:][:, C3D10_TO_VTK[: width - 1]] if width == 11
                              else table[:, 1:])
        self.elem_lines.append(first_token_line[::width])
        if "ELSET" in block.params:
            self.add_to_set(self.elsets, "elset", block.params["ELSET"], table[:, 0],
                            block.line)

    def add_to_set(self, sets: dict[str, list[_SetPart]], kind: str, name: str,
                   ids: IntArray, line: int) -> None:
        sets.setdefault(name, []).append(_SetPart(ids, line))
        self.set_lines.setdefault((kind, name), line)

    def set_card(self, block: _Block) -> None:
        kind = block.keyword.lower()  # "nset" / "elset"
        sets = self.nsets if kind == "nset" else self.elsets
        name = block.params.get(block.keyword, "")
        if not name:
            raise self.error(block.line, f"*{block.keyword} without {block.keyword}=",
                             hint=f"write *{block.keyword}, {block.keyword}=NAME")
        if "GENERATE" in block.params:
            if not block.data:
                raise self.error(block.line, f"*{block.keyword}, GENERATE without a data line",
                                 hint="write: first, last, increment on the next line")
            values, counts, lines = self.numbers(block, "first, last[, increment]")
            if np.any((counts < 2) | (counts > 3)):
                row = int(np.flatnonzero((counts < 2) | (counts > 3))[0])
                raise self.error(int(lines[row]), f"*{block.keyword}, GENERATE line has "
                                 f"{counts[row]} entries", hint="write: first, last, increment")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            parts = []
            for s, c, line in zip(starts, counts, lines, strict=True):
                first, last = values[s], values[s + 1]
                step = values[s + 2] if c == 3 else 1.0
                trio = np.array([first, last, step])
                self.integers(trio, np.full(3, line), block.keyword, "GENERATE bounds")
                if last < first:
                    raise self.error(int(line), f"*{block.keyword}, GENERATE: last {last:g} "
                                     f"< first {first:g}", hint="write: first, last, increment")
                count = (int(last) - int(first)) // int(step) + 1
                if count > self.src.max_ids:
                    # Every member must be a defined id, and a deck of N characters defines
                    # fewer than N ids: such a range can only list undefined ones.
                    raise self.error(int(line), f"*{block.keyword}, GENERATE: {first:.0f} to "
                                     f"{last:.0f} by {step:.0f} lists {count:,} ids, more than "
                                     "the deck defines",
                                     hint="check the first and last ids of the range")
                parts.append(np.arange(int(first), int(last) + 1, int(step), dtype=np.int64))
            self.add_to_set(sets, kind, name,
                            np.concatenate(parts) if parts else np.zeros(0, np.int64),
                            block.line)
            return
        ids: list[IntArray] = []
        for text, line in zip(block.data, block.data_lines, strict=True):
            tokens = [t.strip() for t in text.rstrip(", \t").split(",")]
            numeric = [t for t in tokens if _is_id(t)]
            if len(numeric) == len(tokens):
                ids.append(np.array([self.id_of(t, line, block.keyword) for t in numeric],
                                    dtype=np.int64))
                continue
            for token in tokens:
                if not token:
                    continue
                if _is_id(token):
                    ids.append(np.array([self.id_of(token, line, block.keyword)],
                                        dtype=np.int64))
                    continue
                ref = _label(token)
                if ref not in sets:
                    raise self.error(line, f"*{block.keyword} {self.shown(block.line, name)} "
                                     f"refers to {kind} {self.quoted(line, ref)}, which is not "
                                     "defined before it",
                                     hint=f"define *{block.keyword}, {block.keyword}="
                                     f"{self.shown(line, ref)} first, or fix the name")
                ids.extend(part.ids for part in sets[ref])
        self.add_to_set(sets, kind, name,
                        np.concatenate(ids) if ids else np.zeros(0, np.int64), block.line)

    def material_card(self, block: _Block) -> None:
        name = block.params.get("NAME", "")
        if not name:
            raise self.error(block.line, "*MATERIAL without NAME=",
                             hint="write *MATERIAL, NAME=BONE")
        if name in self.materials:
            raise self.error(block.line, f"material {self.shown(block.line, name)} is "
                             "defined twice (first at "
                             f"{self.where(self.materials[name]['line'])})",
                             hint="give every material its own name")
        self.materials[name] = {"line": block.line, "elastic": None}
        self.material = name

    def elastic(self, block: _Block) -> None:
        assert self.material is not None
        kind = block.params.get("TYPE", "ISOTROPIC")
        if kind not in ("ISO", "ISOTROPIC"):
            self.unsupported_here(f"*ELASTIC, TYPE={self.term(block.line, kind)}", block.line,
                                  "only isotropic elasticity is solved")
            return
        if not block.data:
            raise self.error(block.line, "*ELASTIC without a data line",
                             hint="write E, nu on the line after *ELASTIC")
        values, counts, lines = self.numbers(block, "E, nu")
        if counts[0] < 2:
            raise self.error(int(lines[0]), "*ELASTIC needs E and nu",
                             hint="write E, nu (MPa, -)")
        if len(block.data) > 1:
            self.unsupported_here("*ELASTIC (temperature table)", block.line,
                                  "temperature-dependent elasticity; the first line is used")
        modulus, nu = float(values[0]), float(values[1])
        if not (np.isfinite(modulus) and modulus > 0.0):
            what = "is not positive" if np.isfinite(modulus) else "is not a finite number"
            raise self.error(int(lines[0]), f"*ELASTIC: Young's modulus {modulus:g} {what}",
                             hint="E is in MPa and must be > 0")
        if not -1.0 < nu < 0.5:
            raise self.error(int(lines[0]), f"*ELASTIC: Poisson's ratio {nu:g} is outside "
                             "(-1, 0.5)", hint="check the order: E first, then nu")
        self.materials[self.material]["elastic"] = (modulus, nu)

    def density(self, block: _Block) -> None:
        """*DENSITY: checked, then noted as without effect on a static step.

        A negative or non-finite mass density says the material data are wrong (a shifted
        column, a unit slip), so it is refused although the solve does not use it.
        """
        if not block.data:
            raise self.error(block.line, "*DENSITY without a data line",
                             hint="write the mass density (t/mm^3, e.g. 1.9e-9) on the line "
                             "after *DENSITY, or remove the card")
        values, counts, lines = self.numbers(block, "density[, temperature]")
        firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for row, start in enumerate(firsts):
            value = float(values[start])
            if not (np.isfinite(value) and value >= 0.0):
                what = "is negative" if np.isfinite(value) else "is not a finite number"
                raise self.error(int(lines[row]), f"*DENSITY: mass density {value:g} {what}",
                                 hint="a mass density is >= 0 (t/mm^3 in mm-N-s units, e.g. "
                                 "1.9e-9 for bone); check the material data")
        self.notes.append(f"*DENSITY ({self.where(block.line)}) ignored: {_NO_EFFECT['DENSITY']}"
                          ", no effect on a linear static solution")

    def section(self, block: _Block) -> None:
        elset, material = block.params.get("ELSET", ""), block.params.get("MATERIAL", "")
        if not elset or not material:
            raise self.error(block.line, "*SOLID SECTION needs ELSET= and MATERIAL=",
                             hint="write *SOLID SECTION, ELSET=BONE, MATERIAL=BONE")
        if "ORIENTATION" in block.params:
            self.notes.append(f"*SOLID SECTION, ORIENTATION ({self.where(block.line)}) "
                              "ignored: no effect on isotropic materials")
        self.section_data(block)
        self.sections.append((elset, material, block.line))

    def section_data(self, block: _Block) -> None:
        """The data of a *SOLID SECTION of tetrahedra: none, an empty line or a thickness.

        Abaqus and CalculiX read one optional data line (the thickness of plane elements,
        without effect on solids). Anything else - a second line, text, several numbers -
        is data that lost its keyword (a deleted or misspelt card above it), and is refused
        rather than dropped.
        """
        hint = ("a *SOLID SECTION of tetrahedra takes no data line (or one empty line or a "
                "thickness); did the keyword line of this data go missing?")
        if len(block.data) > 1:
            line = block.data_lines[1]
            raise self.error(line, f"*SOLID SECTION ({self.where(block.line)}) has "
                             f"{len(block.data)} data lines; line 2 is "
                             f"{self.quoted(line, block.data[1])}, not section data",
                             hint=hint)
        if not block.data:
            return
        text, line = block.data[0], block.data_lines[0]
        tokens = [t.strip() for t in text.rstrip(", \t").split(",")]
        if tokens == [""]:
            return
        try:
            thickness = float(tokens[0].upper().replace("D", "E")) if len(tokens) == 1 else None
        except ValueError:
            thickness = None
        if thickness is None:
            raise self.error(line, f"*SOLID SECTION data line {self.quoted(line, text)} is "
                             "not section data", hint=hint)
        if not (math.isfinite(thickness) and thickness > 0.0):
            raise self.error(line, f"*SOLID SECTION thickness {thickness:g} is not a positive "
                             "number", hint=hint)
        self.notes.append(f"*SOLID SECTION ({self.where(line)}): thickness {thickness:g} "
                          "ignored (no effect on solid elements)")

    # -- history data
    def step(self, block: _Block) -> None:
        if self.in_step:
            raise self.error(block.line, "*STEP inside a step",
                             hint="close the step with *END STEP")
        self.steps += 1
        if self.steps > 1:
            self.unsupported_here("*STEP", block.line,
                                  "only the first step is solved (this one is skipped)")
            self.skipping_step = True
            return
        self.in_step = True
        self.step_name = block.params.get("NAME", "")
        self.step_line = block.line
        if "NLGEOM" in block.params and block.params["NLGEOM"] != "NO":
            self.unsupported_here("*STEP, NLGEOM", block.line,
                                  "geometric nonlinearity; solved as a linear step")

    def end_step(self, block: _Block) -> None:
        del block
        if not self.skipping_step:
            self.in_step = False
        self.skipping_step = False

    def static(self, block: _Block) -> None:
        if not self.in_step:
            raise self.error(block.line, "*STATIC outside a *STEP",
                             hint="write *STEP, then *STATIC")
        self.static_line = block.line

    def targets(self, block: _Block, data: list[str], lines: list[int]
                ) -> list[tuple[str, int | None, list[str], int]]:
        out: list[tuple[str, int | None, list[str], int]] = []
        for text, line in zip(data, lines, strict=True):
            tokens = [t.strip() for t in text.rstrip(", \t").split(",")]
            head = tokens[0]
            if _is_id(head):
                out.append((NODES_BY_ID, self.id_of(head, line, block.keyword), tokens[1:],
                            line))
            elif head:
                out.append((_label(head), None, tokens[1:], line))
            else:
                raise self.error(line, f"*{block.keyword} line without a target",
                                 hint="start the line with a node id or a set name")
        return out

    def op_new(self, block: _Block, records: list[_Target]) -> None:
        op = block.params.get("OP", "MOD")
        if op == "NEW":
            records.clear()
        elif op != "MOD":
            raise self.error(block.line, f"*{block.keyword}, OP={self.term(block.line, op)}",
                             hint="OP is NEW or MOD")

    def boundary(self, block: _Block) -> None:
        kind = block.params.get("TYPE", "DISPLACEMENT")
        if kind != "DISPLACEMENT":
            self.unsupported_here(f"*BOUNDARY, TYPE={self.term(block.line, kind)}", block.line,
                                  "only displacement conditions are solved (ignored)")
            return
        if self.in_step:
            self.op_new(block, self.boundaries)
        for label, node, rest, line in self.targets(block, block.data, block.data_lines):
            if not rest:
                raise self.error(line, "*BOUNDARY line without a dof",
                                 hint="write: node or set, first dof[, last dof[, value]]")
            first_text = rest[0].upper()
            if first_text in _BC_SHORTCUTS:
                self.boundaries.append(_Target(label, node, line, _BC_SHORTCUTS[first_text]))
                continue
            try:
                numbers = [float(t) if t else 0.0 for t in rest[:3]]
            except ValueError:
                raise self.error(line, f"*BOUNDARY: cannot read "
                                 f"{self.quoted(line, ', '.join(rest))}",
                                 hint="write: node or set, first dof[, last dof[, value]] "
                                 "or a shortcut such as ENCASTRE") from None
            dofs = numbers[:2] if len(numbers) > 1 and rest[1] else numbers[:1]
            if not all(1 <= d < 2**31 and d == math.floor(d) for d in dofs):  # NaN/inf fail too
                raise self.error(line, f"*BOUNDARY dofs "
                                 f"{self.shown(line, ', '.join(rest[:len(dofs)]))} are not "
                                 "valid", hint="dofs are 1 (x), 2 (y), 3 (z), first <= last")
            first, last = int(dofs[0]), int(dofs[-1])
            value = numbers[2] if len(numbers) > 2 else 0.0
            if last < first:
                raise self.error(line, f"*BOUNDARY dofs {first}..{last} are not valid",
                                 hint="dofs are 1 (x), 2 (y), 3 (z), first <= last")
            if not abs(value) <= MAX_COORDINATE_MM:
                raise self.error(line, f"*BOUNDARY displacement {value:g} is not a finite "
                                 f"length within {MAX_COORDINATE_MM:g} mm",
                                 hint="write: node or set, first dof, last dof, value (mm)")
            if last > 6:
                self.unsupported_here("*BOUNDARY", line, f"dof {last} is not a displacement "
                                      "(only dofs 1-3 are solved; ignored)")
            elif last > 3:
                self.notes.append(f"*BOUNDARY ({self.where(line)}): rotational dofs 4-6 do "
                                  "not exist on solid elements (ignored)")
            comps = tuple(range(first - 1, min(last, 3)))
            if comps:
                self.boundaries.append(_Target(label, node, line, comps, value))

    def step_loads(self, block: _Block, records: list[_Target]
                   ) -> list[tuple[str, int | None, list[str], int]]:
        """The target lines of a load block (*CLOAD, *DLOAD) of the current step.

        Raises:
            AbaqusError: If the block is outside a *STEP or its OP is not NEW or MOD.
        """
        if not self.in_step:
            raise self.error(block.line, f"*{block.keyword} outside a *STEP",
                             hint="loads belong to a step: write them after *STATIC")
        self.op_new(block, records)
        return self.targets(block, block.data, block.data_lines)

    def cload(self, block: _Block) -> None:
        for label, node, rest, line in self.step_loads(block, self.cloads):
            try:
                dof, magnitude = int(rest[0]), float(rest[1]) if len(rest) > 1 else 0.0
            except (ValueError, IndexError):
                raise self.error(line, f"*CLOAD: cannot read "
                                 f"{self.quoted(line, ', '.join(rest))}",
                                 hint="write: node or set, dof, magnitude") from None
            if dof < 1 or dof > 6:
                raise self.error(line, f"*CLOAD dof {dof} is not valid",
                                 hint="dofs are 1 (x), 2 (y), 3 (z)")
            if not np.isfinite(magnitude):
                raise self.error(line, f"*CLOAD magnitude {magnitude} is not finite",
                                 hint="write: node or set, dof, magnitude (N)")
            if dof > 3:
                self.unsupported_here("*CLOAD", line, f"moment (dof {dof}) on a solid "
                                      "model (ignored)")
                continue
            self.cloads.append(_Target(label, node, line, (dof - 1,), magnitude))

    def dload(self, block: _Block) -> None:
        for label, elem, rest, line in self.step_loads(block, self.dloads):
            kind = rest[0].upper() if rest else ""
            if kind not in ("P1", "P2", "P3", "P4"):
                self.unsupported_here(f"*DLOAD {self.term(line, kind) if kind else '(no type)'}",
                                      line,
                                      "only uniform face pressure P1-P4 is solved (ignored)")
                continue
            try:
                magnitude = float(rest[1])
            except (ValueError, IndexError):
                raise self.error(line, f"*DLOAD: cannot read "
                                 f"{self.quoted(line, ', '.join(rest))}",
                                 hint="write: element or set, P1..P4, pressure") from None
            if not np.isfinite(magnitude):
                raise self.error(line, f"*DLOAD pressure {magnitude} is not finite",
                                 hint="write: element or set, P1..P4, pressure (MPa)")
            label = ELEMENTS_BY_ID if elem is not None else label
            self.dloads.append(_Target(label, elem, line, (), magnitude, int(kind[1]) - 1))

    # -- assembling the model
    def sorted_unique(self, what: str, ids: list[IntArray], rows: list[npt.NDArray[Any]],
                      lines: list[IntArray]) -> tuple[IntArray, npt.NDArray[Any], IntArray]:
        """The ``what`` (node or element) ids, their rows and deck lines, sorted by id.

        Args:
            what: ``"node"`` or ``"element"`` (for the message).
            ids: Blocks of (n_i,) ids as read.
            rows: Blocks of (n_i, k) rows (coordinates or connectivity).
            lines: Blocks of (n_i,) 1-based deck lines of the definitions.

        Raises:
            AbaqusError: At the later definition of the first id defined twice.
        """
        all_ids, all_rows, all_lines = np.concatenate(ids), np.concatenate(rows), \
            np.concatenate(lines)
        order = np.argsort(all_ids, kind="stable")
        all_ids, all_rows, all_lines = all_ids[order], all_rows[order], all_lines[order]
        dup = np.flatnonzero(all_ids[1:] == all_ids[:-1])
        if dup.size:
            k = int(dup[0])
            first, second = sorted((int(all_lines[k]), int(all_lines[k + 1])))
            raise self.error(second, f"{what} {all_ids[k]} is defined twice (also at "
                             f"{self.where(first)})", hint=f"{what} ids must be unique")
        return all_ids, all_rows, all_lines

    def model(self, path: Path) -> AbaqusModel:
        if not self.node_ids:
            raise AbaqusError(f"{path.name} defines no *NODE", hint="is this an Abaqus deck?")
        if not self.elem_ids or self.elem_type is None:
            raise AbaqusError(f"{path.name} defines no *ELEMENT",
                              hint="osteofe solves C3D4/C3D10 tetrahedra")
        ids, xyz, _ = self.sorted_unique("node", self.node_ids, self.node_xyz,
                                         self.node_lines)
        eids, conn, elines = self.sorted_unique("element", self.elem_ids, self.elem_conn,
                                                self.elem_lines)
        position = _lookup(ids, conn)
        if np.any(position < 0):
            row, col = (int(v[0]) for v in np.nonzero(position < 0))
            raise self.error(int(elines[row]), f"element {eids[row]} references node "
                             f"{conn[row, col]}, which is not defined",
                             hint="define the node under *NODE or fix the connectivity")
        used = np.unique(position)
        to_mesh = np.full(ids.size, -1, dtype=np.int64)
        to_mesh[used] = np.arange(used.size)
        orphans = ids.size - used.size
        if orphans:
            self.notes.append(f"{orphans} node(s) belong to no element and are not solved")
        cells = to_mesh[position]
        mesh = TetMesh(xyz[used], cells, np.ones(cells.shape[0], dtype=np.int32))
        self.check_geometry(mesh, eids, elines)

        node_sets = {name: self.resolve_set(name, parts, ids, to_mesh, "nset")
                     for name, parts in self.nsets.items()}
        elem_index = np.arange(eids.size, dtype=np.int64)
        element_sets = {name: self.resolve_set(name, parts, eids, elem_index, "elset")
                        for name, parts in self.elsets.items()}
        material_index, materials = self.assign_materials(element_sets, eids, elines)
        if self.steps == 0 or self.step_line < 0:
            raise AbaqusError(f"{path.name} has no *STEP",
                              hint="add *STEP, *STATIC, the loads and *END STEP")
        if self.static_line < 0:
            raise self.error(self.step_line, "the step has no *STATIC procedure",
                             hint="write *STATIC after *STEP")
        bc_nodes, bc_comps, bc_values, bc_sets = self.resolve_boundaries(ids, to_mesh)
        forces, load_sets = self.resolve_loads(mesh, ids, to_mesh, eids, element_sets)
        if bc_nodes.size == 0:
            raise self.error(self.step_line, "the model has no *BOUNDARY condition",
                             hint="fix some nodes (rigid-body motion cannot be solved)")
        return AbaqusModel(
            path=path, element_type=self.elem_type, mesh=mesh, node_ids=ids[used],
            element_ids=eids, material_index=material_index, materials=materials,
            node_sets=node_sets, element_sets=element_sets, bc_nodes=bc_nodes,
            bc_components=bc_comps, bc_values=bc_values, bc_sets=bc_sets,
            nodal_forces_n=forces, load_sets=load_sets, step_name=self.step_name,
            unsupported=tuple(self.unsupported), notes=tuple(self.notes),
            files=tuple(self.src.files),
        )

    def check_geometry(self, mesh: TetMesh, eids: IntArray, elines: IntArray) -> None:
        det = jacobian_determinants(mesh)
        scale = np.abs(mesh.cell_volumes()).max(initial=0.0) * 6.0
        bad = np.flatnonzero(np.any(~(det > 1e-12 * scale), axis=1))  # NaN is bad too
        if bad.size:
            k = int(bad[0])
            sign = "negative" if det[k].min() < 0.0 else "zero"
            raise self.error(int(elines[k]), f"element {eids[k]} is inverted ({sign} "
                             f"Jacobian; {bad.size} such element(s))",
                             hint="list the corners so that 4 lies on the side where "
                             "(2-1) x (3-1) points, i.e. positive volume")
        if mesh.order == 2:
            p = mesh.points[mesh.cells]
            ends = p[:, _TET_EDGES]  # (m, 6, 2, 3)
            mid = 0.5 * (ends[:, :, 0] + ends[:, :, 1])
            length = np.linalg.norm(ends[:, :, 1] - ends[:, :, 0], axis=2)
            rel = np.linalg.norm(p[:, 4:] - mid, axis=2) / length
            worst = rel.max(axis=1)
            curved = np.flatnonzero(worst > CURVED_EDGE_TOL)
            if curved.size:
                k = int(curved[np.argmax(worst[curved])])
                self.unsupported.append(Unsupported(
                    "*ELEMENT, TYPE=C3D10 (curved)", self.where(int(elines[k])),
                    f"{curved.size} element(s) have curved edges (mid-node up to "
                    f"{worst[k]:.2%} of the edge length off its midpoint, element {eids[k]}); "
                    "osteofe's geometry is straight-sided"))

    def resolve_set(self, name: str, parts: list[_SetPart], ids: IntArray,
                    to_index: IntArray, kind: str) -> IntArray:
        members = []
        for part in parts:
            pos = _lookup(ids, part.ids)
            if np.any(pos < 0):
                missing = int(part.ids[np.flatnonzero(pos < 0)[0]])
                what = "node" if kind == "nset" else "element"
                raise self.error(part.line, f"{kind.upper()} {self.shown(part.line, name)} "
                                 f"lists {what} {missing}, which is not defined",
                                 hint=f"define the {what} or remove it from the set")
            members.append(to_index[pos])
        out = np.unique(np.concatenate(members)) if members else np.zeros(0, np.int64)
        return np.asarray(out[out >= 0], dtype=np.int64)

    def assign_materials(self, element_sets: dict[str, IntArray], eids: IntArray,
                         elines: IntArray) -> tuple[IntArray, tuple[Material, ...]]:
        for name, info in self.materials.items():
            if info["elastic"] is None:
                raise self.error(info["line"], f"material {self.shown(info['line'], name)} "
                                 "has no *ELASTIC",
                                 hint="add *ELASTIC with E, nu under the *MATERIAL card")
        material_index = np.full(eids.size, -1, dtype=np.int64)
        section_line = np.full(eids.size, -1, dtype=np.int64)
        used: dict[str, int] = {}
        for elset, material, line in self.sections:
            if elset not in element_sets:
                raise self.error(line, "*SOLID SECTION uses element set "
                                 f"{self.shown(line, elset)}, which is never defined",
                                 hint="define the *ELSET or fix the name")
            if material not in self.materials:
                raise self.error(line, "*SOLID SECTION uses material "
                                 f"{self.shown(line, material)}, which is never defined",
                                 hint="define the *MATERIAL or fix the name")
            cells = element_sets[elset]
            twice = cells[material_index[cells] >= 0]
            if twice.size:
                k = int(twice[0])
                raise self.error(line, f"element {eids[k]} gets a second section (first at "
                                 f"{self.where(int(section_line[k]))})",
                                 hint="every element belongs to one *SOLID SECTION")
            material_index[cells] = used.setdefault(material, len(used))
            section_line[cells] = line
        missing = np.flatnonzero(material_index < 0)
        if missing.size:
            k = int(missing[0])
            raise self.error(int(elines[k]), f"element {eids[k]} has no *SOLID SECTION "
                             f"({missing.size} element(s) without one)",
                             hint="assign a material to every element with *SOLID SECTION")
        materials = tuple(
            Material(name, float(self.materials[name]["elastic"][0]),
                     float(self.materials[name]["elastic"][1]),
                     self.where(self.materials[name]["line"]))
            for name in used)
        unused = [self.shown(info["line"], name) for name, info in self.materials.items()
                  if name not in used]
        if unused:
            self.notes.append(f"material(s) not used by any section: {', '.join(unused)}")
        return material_index, materials

    def target_nodes(self, record: _Target, ids: IntArray, to_mesh: IntArray,
                     keyword: str) -> IntArray:
        """Mesh nodes of a target (-1 for nodes outside every element)."""
        if record.node_id is not None:
            pos = _lookup(ids, np.array([record.node_id]))
            if pos[0] < 0:
                raise self.error(record.line, f"*{keyword} on node {record.node_id}, which is "
                                 "not defined", hint="define the node or fix the id")
            return np.asarray(to_mesh[pos], dtype=np.int64)
        if record.label not in self.nsets:
            raise self.error(record.line, f"*{keyword} on node set "
                             f"{self.shown(record.line, record.label)}, which is never "
                             "defined", hint="define the *NSET or fix the name")
        raw = np.unique(np.concatenate([_lookup(ids, p.ids) for p in self.nsets[record.label]]))
        return np.asarray(to_mesh[raw], dtype=np.int64)

    def resolve_boundaries(self, ids: IntArray, to_mesh: IntArray
                           ) -> tuple[IntArray, IntArray, FloatArray, dict[str, IntArray]]:
        nodes_list, comps_list, values_list = [], [], []
        members: dict[str, list[IntArray]] = {}
        dropped = 0
        for record in self.boundaries:
            nodes = self.target_nodes(record, ids, to_mesh, "BOUNDARY")
            dropped += int(np.count_nonzero(nodes < 0))
            nodes = nodes[nodes >= 0]
            comps = np.asarray(record.components, dtype=np.int64)
            nodes_list.append(np.repeat(nodes, comps.size))
            comps_list.append(np.tile(comps, nodes.size))
            values_list.append(np.full(nodes.size * comps.size, record.value))
            if nodes.size:
                members.setdefault(record.label, []).append(nodes)
        bc_sets = {label: np.unique(np.concatenate(parts)) for label, parts in members.items()}
        if dropped:
            self.notes.append(f"{dropped} *BOUNDARY node(s) belong to no element "
                              "(no effect)")
        if not nodes_list:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), {}
        nodes, comps = np.concatenate(nodes_list), np.concatenate(comps_list)
        values = np.concatenate(values_list)
        key = nodes * 3 + comps
        # The last condition on a node and dof wins (Abaqus OP=MOD).
        unique, last = np.unique(key[::-1], return_index=True)
        keep = key.size - 1 - last
        inverse = np.searchsorted(unique, key)
        low, high = np.full(unique.size, np.inf), np.full(unique.size, -np.inf)
        np.minimum.at(low, inverse, values)
        np.maximum.at(high, inverse, values)
        if np.any(high > low):
            self.notes.append("some nodes get several *BOUNDARY values for one dof: the last "
                              "one applies (Abaqus semantics)")
        return nodes[keep], comps[keep], values[keep], bc_sets

    def resolve_loads(self, mesh: TetMesh, ids: IntArray, to_mesh: IntArray, eids: IntArray,
                      element_sets: dict[str, IntArray]
                      ) -> tuple[FloatArray, dict[str, LoadSet]]:
        forces = np.zeros((mesh.num_nodes, 3))
        load_sets: dict[str, LoadSet] = {}
        # Concentrated loads: the last value per node and dof applies.
        labels = list(dict.fromkeys(r.label for r in self.cloads))
        entries: list[tuple[IntArray, int, float, int]] = []
        for record in self.cloads:
            nodes = self.target_nodes(record, ids, to_mesh, "CLOAD")
            if np.any(nodes < 0):
                raise self.error(record.line, "*CLOAD on a node that belongs to no element",
                                 hint="load nodes of the mesh")
            entries.append((nodes, record.components[0], record.value,
                            labels.index(record.label)))
        if entries:
            nodes, comps, values, source, keep = _last_per_slot(entries, 3)
            if keep.size < nodes.size:
                self.notes.append("some nodes get several *CLOAD values for one dof: the "
                                  "last one applies (Abaqus semantics)")
            forces[nodes[keep], comps[keep]] = values[keep]
            for index, label in enumerate(labels):
                mine = keep[source[keep] == index]
                total = np.zeros(3)
                np.add.at(total, comps[mine], values[mine])
                load_sets[label] = LoadSet(np.unique(nodes[mine]), total)
        # Face pressures: the last value per element face applies.
        labels = list(dict.fromkeys(r.label for r in self.dloads))
        face_entries: list[tuple[IntArray, int, float, int]] = []
        for record in self.dloads:
            if record.node_id is not None:
                pos = _lookup(eids, np.array([record.node_id]))
                if pos[0] < 0:
                    raise self.error(record.line, f"*DLOAD on element {record.node_id}, "
                                     "which is not defined", hint="fix the element id")
                cells = pos
            elif record.label in element_sets:
                cells = element_sets[record.label]
            else:
                raise self.error(record.line, "*DLOAD on element set "
                                 f"{self.shown(record.line, record.label)}, which is never "
                                 "defined", hint="define the *ELSET or fix the name")
            face_entries.append((cells, record.face, record.value, labels.index(record.label)))
        if face_entries:
            cells, faces, values, source, keep = _last_per_slot(face_entries, 4)
            for index, label in enumerate(labels):
                mine = keep[source[keep] == index]
                part = face_pressure_forces(mesh, cells[mine], faces[mine], values[mine])
                forces += part
                face_nodes = np.take_along_axis(mesh.cells[cells[mine]],
                                                _FACE_CORNERS[faces[mine]], axis=1)
                loaded = np.union1d(face_nodes, np.flatnonzero(np.any(part != 0.0, axis=1)))
                previous = load_sets.get(label)
                if previous is None:
                    load_sets[label] = LoadSet(loaded, part.sum(axis=0))
                else:  # a node set and an element set of the same name
                    load_sets[label] = LoadSet(np.union1d(previous.nodes, loaded),
                                               previous.force_n + part.sum(axis=0))
        totals = [forces.sum(axis=0), *(load.force_n for load in load_sets.values())]
        if not (np.all(np.isfinite(forces)) and np.all(np.isfinite(totals))):
            line = (self.dloads or self.cloads)[0].line
            raise self.error(line, "the loads add up to forces that overflow (inf/NaN)",
                             hint="check the *CLOAD magnitudes (N) and *DLOAD pressures (MPa)")
        return forces, load_sets


def _is_id(token: str) -> bool:
    """Whether a token is a node/element id: ASCII digits, optionally after a '+'."""
    return _ID_TOKEN.fullmatch(token) is not None


def _last_per_slot(entries: list[tuple[IntArray, int, float, int]], slots: int
                   ) -> tuple[IntArray, IntArray, FloatArray, IntArray, IntArray]:
    """Flatten load entries and find the one that applies to each (target, slot).

    Args:
        entries: ``(targets, slot, value, source)`` per load line, in deck order: node or cell
            indices, the dof (0-2) or face (0-3), the value and the index of its set name.
        slots: Slots per target (3 dofs, 4 faces).

    Returns:
        Targets, slots, values and sources of every entry, one per target, and the indices of
        the last entry of each (target, slot) (Abaqus: the last definition applies).
    """
    targets = np.concatenate([e[0] for e in entries])
    slot = np.concatenate([np.full(e[0].size, e[1]) for e in entries])
    values = np.concatenate([np.full(e[0].size, e[2]) for e in entries])
    source = np.concatenate([np.full(e[0].size, e[3]) for e in entries])
    key = targets * slots + slot
    _, last = np.unique(key[::-1], return_index=True)
    return targets, slot, values, source, key.size - 1 - last


def _lookup(sorted_ids: IntArray, query: npt.ArrayLike) -> IntArray:
    """Position of each query id in the sorted unique ``sorted_ids`` (-1 where absent)."""
    q = np.asarray(query, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.full(q.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, q), sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == q, pos, -1).astype(np.int64)


def read_inp(path: str | os.PathLike[str], *,
             allow_include_outside: bool = False) -> AbaqusModel:
    """Read a linear-elastic static Abaqus/CalculiX deck.

    Args:
        path: The ``.inp`` file (``*INCLUDE`` paths are relative to the including file).
        allow_include_outside: Also read ``*INCLUDE`` files outside the deck's folder and
            its subfolders (refused by default: a deck from elsewhere must not make osteofe
            read, say, ``../../etc/passwd``). Error messages never quote an included file's
            text, whatever this says.

    Returns:
        The model. Unsupported keywords do not raise here: they are listed in
        ``model.unsupported`` (call :meth:`AbaqusModel.check_supported` to refuse them).

    Raises:
        AbaqusError: a malformed or inconsistent deck, naming the file and line (unknown
            element type, undefined set or node, duplicate ids, a material without
            ``*ELASTIC``, E <= 0 or nu outside (-1, 0.5), a negative ``*DENSITY``, data under
            ``*SOLID SECTION`` that is not section data, an inverted element, no step, an
            ``*INCLUDE`` outside the deck's folder...).
    """
    deck = Path(path)
    if not deck.is_file():
        raise AbaqusError(f"Abaqus deck not found: {deck}", hint="check the path")
    parser = _Parser(_Source(deck.resolve(), allow_include_outside))
    parser.run()
    return parser.model(deck)
