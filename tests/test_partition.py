"""Issue 17: a model built from each rank's block of the mesh, no rank holding all of it.

Run serially and under ``mpiexec -n 2 python -m pytest -m mpi tests/test_partition.py``.
The row exchange is checked against plain indexing of the whole array; a model built from
blocks (:func:`fea.partition.scatter_part`, only rank 0 holding the mesh) against the model
of the full mesh on every rank (the path every earlier solver test validates): the same
displacement, strains and reactions to round-off, for 4-node and 10-node meshes, per-cell
and per-quadrature-point moduli, facet, nodal and prescribed-displacement supports.
"""

from __future__ import annotations

import numpy as np
import pytest

from fea.calculix import to_quadratic
from fea.partition import (
    MeshPart,
    block_bounds,
    fetch_rows,
    positions,
    push_rows,
    scatter_part,
    scatter_rows,
)
from fea.topology import boundary_faces
from meshing.structured import box_mesh

pytestmark = pytest.mark.mpi


def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def test_block_bounds_cover_every_row_once_in_blocks_differing_by_at_most_one():
    bounds = block_bounds(10, 4)
    assert bounds.tolist() == [0, 2, 5, 7, 10]
    assert block_bounds(1, 3).tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("shape", [(37,), (37, 4), (37, 4, 3)])
def test_fetched_rows_are_the_rows_of_the_whole_array(shape):
    comm = _world()
    whole = np.random.default_rng(5).normal(size=shape)
    bounds = block_bounds(shape[0], comm.size)
    block = whole[bounds[comm.rank]:bounds[comm.rank + 1]]
    # Each rank asks for other rows, in any order and with repeats.
    wanted = np.random.default_rng(11 + comm.rank).integers(0, shape[0], size=50)
    np.testing.assert_array_equal(fetch_rows(comm, block, shape[0], wanted), whole[wanted])
    assert fetch_rows(comm, block, shape[0], np.zeros(0, dtype=np.int64)).shape == (0,
                                                                                   *shape[1:])


def test_pushed_rows_form_the_blocks_of_the_whole_array_and_missing_rows_take_the_fill():
    comm = _world()
    whole = np.random.default_rng(7).normal(size=(29, 3))
    # Rows dealt round-robin in a shuffled order: rank r holds rows r, r + size, ...
    held = np.random.default_rng(1).permutation(29)[comm.rank::comm.size]
    bounds = block_bounds(29, comm.size)
    block = push_rows(comm, held, whole[held], 29)
    np.testing.assert_array_equal(block, whole[bounds[comm.rank]:bounds[comm.rank + 1]])
    # Only rank 0 holds the even rows; the rest take the fill (a surface result).
    even = np.arange(0, 29, 2) if comm.rank == 0 else np.zeros(0, dtype=np.int64)
    sparse = push_rows(comm, even, whole[even], 29, fill=-1.0)
    expected = np.where((np.arange(29) % 2 == 0)[:, None], whole, -1.0)
    np.testing.assert_array_equal(sparse, expected[bounds[comm.rank]:bounds[comm.rank + 1]])
    with pytest.raises(ValueError, match="held by no rank"):
        push_rows(comm, even, whole[even], 29)


def test_positions_are_those_of_a_dictionary_lookup():
    keys = np.array([40, 7, 19, 3, 88])
    queries = np.array([19, 5, 88, 3, 3, 100, 40])
    lookup = {k: i for i, k in enumerate(keys.tolist())}
    assert positions(keys, queries).tolist() == [lookup.get(q, -1) for q in queries.tolist()]
    assert positions(np.zeros(0, dtype=np.int64), queries).tolist() == [-1] * queries.size
    assert positions(keys, np.zeros(0, dtype=np.int64)).shape == (0,)


def test_fetch_refuses_a_block_of_the_wrong_length_and_rows_out_of_range():
    comm = _world()
    bounds = block_bounds(8, comm.size)
    block = np.arange(8.0)[bounds[comm.rank]:bounds[comm.rank + 1]]
    with pytest.raises(ValueError, match="lie outside"):
        fetch_rows(comm, block, 8, [8])
    with pytest.raises(ValueError, match="holds"):
        fetch_rows(comm, np.zeros(9), 8, [0])


def test_scattered_parts_are_the_blocks_of_rank_0s_mesh():
    comm = _world()
    mesh = box_mesh([0, 0, 0], [4, 4, 8], (2, 2, 4))
    part = scatter_part(comm, mesh if comm.rank == 0 else None)
    expected = MeshPart.of(mesh, comm.rank, comm.size)
    for name in ("points", "cells", "cell_tags"):
        np.testing.assert_array_equal(getattr(part, name), getattr(expected, name))
        assert getattr(part, name).dtype == getattr(expected, name).dtype
    assert (part.node_start, part.cell_start, part.num_nodes, part.num_cells) == (
        expected.node_start, expected.cell_start, mesh.num_nodes, mesh.num_cells)
    np.testing.assert_array_equal(part.cell_ids, np.arange(expected.cell_start,
                                                           expected.cell_start
                                                           + part.cells.shape[0]))
    moduli = np.arange(mesh.num_cells * 4.0).reshape(-1, 4)
    np.testing.assert_array_equal(scatter_rows(comm, moduli if comm.rank == 0 else None),
                                  moduli[part.cell_ids])


def _box_case(order: int):
    from fea.solver import NodalForces, Support

    mesh = box_mesh([0, 0, 0], [10, 10, 30], (3, 3, 9))
    if order == 2:
        mesh = to_quadratic(mesh)
    faces = boundary_faces(mesh)
    base = np.unique(faces[np.all(mesh.points[faces][:, :, 2] < 1e-9, axis=1)])
    side = np.flatnonzero(mesh.points[:, 0] > 10 - 1e-9)
    top = np.flatnonzero(mesh.points[:, 2] > 30 - 1e-9)
    supports = [Support("clamp", base, facets=True),
                Support("side", side[mesh.points[side, 2] < 12], components=(0,),
                        displacement_mm=np.array([-0.01, 0.0, 0.0]))]
    forces = NodalForces(top, np.tile([3.0, -2.0, -40.0], (top.size, 1)))
    return mesh, supports, forces


@pytest.mark.parametrize(("order", "degree", "per_point"),
                         [(1, 1, False), (1, 2, True), (2, 2, False)])
def test_a_model_from_blocks_solves_as_the_model_of_the_whole_mesh(order, degree, per_point):
    from fea.solver import ElasticModel, SolverOptions, modulus_quadrature_points

    comm = _world()
    mesh, supports, forces = _box_case(order)
    options = SolverOptions(degree=degree, rtol=1e-12)
    rng = np.random.default_rng(2)
    points = modulus_quadrature_points(options.modulus_quadrature_degree).shape[0]
    moduli = rng.uniform(800.0, 20000.0, (mesh.num_cells, points) if per_point
                         else mesh.num_cells)
    nu = rng.uniform(0.2, 0.4, mesh.num_cells)
    whole = ElasticModel(mesh, moduli, nu, supports, options, comm)
    reference = whole.solve([forces], reaction_sets={"top": forces.nodes})
    whole.destroy()

    part = scatter_part(comm, mesh if comm.rank == 0 else None)
    block = ElasticModel(part, moduli[part.cell_ids], nu[part.cell_ids], supports, options,
                         comm)
    assert not hasattr(block, "mesh")
    assert block._local_nodes.size <= mesh.num_nodes
    if comm.size > 1:  # each rank's node table is its partition's, not the mesh's
        assert block._local_nodes.size < mesh.num_nodes
    split = block.solve([forces], reaction_sets={"top": forces.nodes})
    local = block.solve([forces], gather=False)
    block.destroy()
    scale = np.abs(reference.displacement_mm).max()
    np.testing.assert_allclose(split.displacement_mm, reference.displacement_mm,
                               atol=1e-9 * scale)
    np.testing.assert_allclose(split.strain, reference.strain,
                               atol=1e-9 * np.abs(reference.strain).max())
    if degree == 2:
        np.testing.assert_allclose(split.vertex_strain, reference.vertex_strain,
                                   atol=1e-9 * np.abs(reference.vertex_strain).max())
    for name in ("clamp", "side"):
        np.testing.assert_allclose(split.reactions_n[name], reference.reactions_n[name],
                                   atol=1e-7 * 360.0)
    np.testing.assert_allclose(split.set_reactions_n["top"], reference.set_reactions_n["top"],
                               atol=1e-7 * 360.0)
    np.testing.assert_allclose(local.displacement_mm,
                               reference.displacement_mm[local.node_ids], atol=1e-9 * scale)
    # The prescribed side displacement is held exactly.
    side = supports[1].nodes
    np.testing.assert_allclose(split.displacement_mm[side, 0], -0.01, atol=1e-14)


def test_bad_moduli_in_one_block_are_refused_on_every_rank():
    from fea.solver import ElasticModel, Support

    comm = _world()
    mesh = box_mesh([0, 0, 0], [4, 4, 8], (2, 2, 4))
    part = scatter_part(comm, mesh if comm.rank == 0 else None)
    moduli = np.full(part.cells.shape[0], 1000.0)
    if comm.rank == comm.size - 1:
        moduli[-1] = -1.0
    with pytest.raises(ValueError, match="finite and positive"):
        ElasticModel(part, moduli, 0.3, [Support("base", np.arange(3))], comm=comm)
