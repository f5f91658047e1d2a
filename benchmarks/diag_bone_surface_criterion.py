"""Diagnostic: ``osteofe strength`` with the strain criterion kept off non-bone surface cells.

The linear criterion (``fea.failure.StrainCriterion``) samples the strain of the cells on
the label's outer surface. On the 3 mm TotalSegmentator example CT both the automatic and
TotalSegmentator's labels fail in cells at the modulus floor (no bone: HU ~15-25), whose
strain depends on which partial-volume voxels a segmentation includes
(benchmarks/diag_segmentation_strength.py). This launcher runs the CLI (all arguments pass
through) with one of three ways of leaving cells at the modulus floor out of the surface
(``OSTEOFE_DIAG_SURFACE``), to measure whether the automatic vs TotalSegmentator difference
is a property of the criterion:

* ``drop``: floor cells' outer faces are not bone surface, their faces with bone no walls;
* ``layer``: floor cells with a vertex on the outer boundary are a one-cell layer; the
  bone's faces with that layer are its outer surface;
* ``connected``: floor cells face-connected (through floor cells) to the outer boundary
  are a layer; the bone's faces with it are its outer surface (this includes walls deep
  inside the bone wherever marrow connects to the surface).

Usage: OSTEOFE_DIAG_SURFACE=drop .venv/bin/python benchmarks/diag_bone_surface_criterion.py \
           -q strength --ct CT --labels L --bone-label 76 --body-weight 75 --out OUT \
           --no-picture --allow-partial
Not a fix: none of the three is the project's criterion (see the issue 19 report).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fea.failure as failure
import osteofe.pipeline as pipeline
from fea.topology import TET_FACES, SurfaceFacets
from meshing.types import TetMesh

MODE = os.environ.get("OSTEOFE_DIAG_SURFACE", "drop")
FLOOR_MPA = 5.0
_STATE: dict[str, Any] = {}
_PREPARE = pipeline.prepare_model


def _facets(mesh: TetMesh, soft_tags: tuple[int, ...] = ()) -> SurfaceFacets:
    tets = mesh.vertex_cells()
    m = tets.shape[0]
    faces = tets[:, TET_FACES].reshape(-1, 3)
    owner = np.repeat(np.arange(m, dtype=np.int64), 4)
    local = np.tile(np.arange(4, dtype=np.int64), m)
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True,
                                   return_counts=True)
    inverse = inverse.ravel()
    soft = np.isin(mesh.cell_tags, np.asarray(soft_tags, dtype=mesh.cell_tags.dtype))
    floor = (np.asarray(_STATE["prepared"].material.E_MPa) <= FLOOR_MPA) & ~soft
    boundary_face = counts[inverse] == 1
    if MODE == "drop":
        layer = np.zeros(m, dtype=bool)
    elif MODE == "layer":
        on_boundary = np.zeros(int(tets.max()) + 1, dtype=bool)
        on_boundary[faces[boundary_face].ravel()] = True
        layer = floor & on_boundary[tets].any(axis=1)
    else:
        order = np.argsort(inverse, kind="stable")
        pairs = order[counts[inverse[order]] == 2]
        a, b = owner[pairs[0::2]], owner[pairs[1::2]]
        keep = floor[a] & floor[b]
        graph = sparse.coo_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), (m, m))
        _, component = connected_components(graph, directed=False)
        touching = np.unique(component[owner[boundary_face & floor[owner]]])
        layer = floor & np.isin(component, touching)
    not_bone = soft[owner] | floor[owner]
    soft_count = np.bincount(inverse, weights=soft[owner].astype(float), minlength=counts.size)
    layer_count = np.bincount(inverse, weights=layer[owner].astype(float),
                              minlength=counts.size)
    shared = (counts[inverse] == 2) & ~not_bone
    wall = shared & (soft_count[inverse] == 1)
    outer = (boundary_face & ~not_bone) | (shared & (layer_count[inverse] == 1) & ~wall)
    pick = np.concatenate([np.flatnonzero(outer), np.flatnonzero(wall)])
    return SurfaceFacets(faces=np.ascontiguousarray(faces[pick]), cells=owner[pick],
                         opposite=local[pick],
                         interior=np.concatenate([np.zeros(int(outer.sum()), dtype=bool),
                                                  np.ones(int(wall.sum()), dtype=bool)]))


def _prepare(*args: Any, **kwargs: Any) -> Any:
    prepared = _PREPARE(*args, **kwargs)
    _STATE["prepared"] = prepared
    return prepared


if __name__ == "__main__":
    pipeline.prepare_model = _prepare
    failure.bone_surface_facets = _facets
    print(f"criterion surface: {MODE}", file=sys.stderr)
    from osteofe.cli import main

    sys.exit(main(sys.argv[1:]))
