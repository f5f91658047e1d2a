"""Issue 17: one model split across ranks, no gathered fields, collective XDMF/HDF5 output.

Run serially and under ``mpiexec -n 2 python -m pytest -m mpi tests/test_distributed.py``.
The distributed criterion and writer are checked against the gathered solution of the same
model (the reference every earlier test validates); the whole analysis on 2 ranks against
a serial run of it in the same job (``MPI.COMM_SELF``): failure loads, and the fields read
back from ``fields.h5`` against the serial run's ``fields.vtu`` (meshio), node by node.
"""

from __future__ import annotations

import numpy as np
import pytest

from fea.failure import StrainCriterion, StrainLimits
from fea.topology import boundary_faces
from meshing.structured import box_mesh

pytestmark = pytest.mark.mpi

LIMITS = StrainLimits(0.0073, 0.0104, 3.0, "test")


def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _bent_box(degree: int):
    """A 10 x 10 x 40 mm box clamped at z = 0, a shear + axial load on the top face."""
    from fea.loads import LoadPatch
    from fea.solver import ElasticModel, SolverOptions, Support

    mesh = box_mesh([0, 0, 0], [10, 10, 40], (4, 4, 16))
    rng = np.random.default_rng(3)
    moduli = rng.uniform(500.0, 5000.0, mesh.num_cells)
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > 40 - 1e-9, axis=1)]
    base = np.flatnonzero(mesh.points[:, 2] < 1e-9)
    model = ElasticModel(mesh, moduli, 0.3, [Support("clamp", base)],
                         SolverOptions(degree=degree, pc_type="lu"), _world())
    patch = LoadPatch(nodes=np.unique(top), faces=top, force_n=np.array([80.0, -30.0, -500.0]),
                      area_mm2=100.0)
    return mesh, model, patch


@pytest.mark.parametrize("degree", [1, 2])
def test_distributed_criterion_equals_the_gathered_one(degree):
    mesh, model, patch = _bent_box(degree)
    gathered = model.solve([patch])
    local = model.solve([patch], gather=False)
    model.destroy()
    comm = _world()
    assert local.distributed and not gathered.distributed
    # Each rank holds only its own rows; together they are every cell/node once.
    assert comm.allreduce(local.cell_ids.size) == mesh.num_cells
    assert comm.allreduce(local.node_ids.size) == mesh.num_nodes
    if comm.size > 1:
        assert local.cell_ids.size < mesh.num_cells
    np.testing.assert_allclose(local.strain, gathered.strain[local.cell_ids], atol=1e-14)
    np.testing.assert_allclose(local.displacement_mm, gathered.displacement_mm[local.node_ids],
                               atol=1e-14)
    excluded = mesh.points[:, 2] < 8.0
    criterion = StrainCriterion(mesh, excluded_nodes=excluded, limits=LIMITS)
    field = gathered.strain if degree == 1 else gathered.vertex_strain
    part = local.strain if degree == 1 else local.vertex_strain
    reference = criterion.evaluate(field)
    split = criterion.evaluate(part, local.cell_ids, comm)
    assert split.load_factor == pytest.approx(reference.load_factor, rel=1e-12)
    assert (split.mode, split.critical_node) == (reference.mode, reference.critical_node)
    np.testing.assert_allclose(split.node_risk_factor, reference.node_risk_factor,
                               rtol=1e-12, atol=1e-15)


def test_mean_displacement_of_a_node_set_is_the_gathered_one():
    """The secant nonlinear method's head displacement, from a distributed solution."""
    from osteofe.distributed import mean_displacement

    _, model, patch = _bent_box(1)
    gathered = model.solve([patch])
    local = model.solve([patch], gather=False)
    model.destroy()
    nodes = np.concatenate([patch.nodes, patch.nodes[:3]])  # repeats count twice
    expected = gathered.displacement_mm[nodes].mean(axis=0)
    np.testing.assert_allclose(mean_displacement(local, nodes, _world()), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(mean_displacement(gathered, nodes, _world()), expected,
                               rtol=1e-14)


def test_rows_for_redistributes_any_partition():
    """Rows held in one distribution arrive where another wants them (Alltoallv path)."""
    from fea.solver import _rows_for

    comm = _world()
    n = 101
    values = np.arange(n * 3, dtype=np.float64).reshape(n, 3) ** 1.5
    held = np.arange(comm.rank, n, comm.size)  # round robin
    bounds = np.linspace(0, n, comm.size + 1).astype(np.int64)
    wanted = np.arange(bounds[comm.rank], bounds[comm.rank + 1])[::-1]  # blocks, reversed
    got = _rows_for(comm, held, values[held], wanted, n)
    np.testing.assert_array_equal(got, values[wanted])
    same = _rows_for(comm, held[::-1], values[held[::-1]], held, n)  # same partition
    np.testing.assert_array_equal(same, values[held])
    # Rows no rank wants (mid-edge nodes of a 10-node mesh) are dropped, not an error.
    corners = wanted[wanted % 7 != 0]
    got = _rows_for(comm, held, values[held], corners, n)
    np.testing.assert_array_equal(got, values[corners])


def test_xdmf_written_by_all_ranks_reads_back_the_solution(mpi_tmp_path):
    h5py = pytest.importorskip("h5py")
    from fea.failure import principal_strains

    mesh, model, patch = _bent_box(2)
    gathered = model.solve([patch])
    local = model.solve([patch], gather=False)
    model.destroy()
    path = mpi_tmp_path / "fields.xdmf"
    tags = np.arange(mesh.num_cells, dtype=np.float64)
    model.write_xdmf(path, {"u": (local.node_ids, local.displacement_mm)},
                     {"strain": (local.cell_ids, local.strain), "tag": tags,
                      "eps_max": (local.cell_ids, principal_strains(local.strain)[:, 2])})
    comm = _world()
    comm.barrier()
    if comm.rank == 0:
        with h5py.File(path.with_suffix(".h5"), "r") as h5:
            points = h5["Mesh/mesh/geometry"][...]
            cells = h5["Mesh/mesh/topology"][...]
            u = h5["Function/u/0"][...]
            strain = h5["Function/strain/0"][...].reshape(-1, 3, 3)
            tag = h5["Function/tag/0"][...].ravel()
        assert points.shape == (mesh.num_nodes, 3) and cells.shape == (mesh.num_cells, 4)
        # Written node/cell order is DOLFINx's: match nodes by position, cells by tag.
        order = np.lexsort(points.T)
        reference = np.lexsort(mesh.points.T)
        np.testing.assert_allclose(points[order], mesh.points[reference], atol=1e-12)
        np.testing.assert_allclose(u[order], gathered.displacement_mm[reference], atol=1e-13)
        original = tag.astype(np.int64)
        np.testing.assert_array_equal(np.sort(original), np.arange(mesh.num_cells))
        np.testing.assert_allclose(strain, gathered.strain[original], atol=1e-14)
        # Each written cell is the original cell of that tag (same corner positions).
        np.testing.assert_allclose(np.sort(points[cells].sum(axis=1), axis=0),
                                   np.sort(mesh.points[mesh.cells].sum(axis=1), axis=0),
                                   atol=1e-10)


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    from meshing.phantom import PhantomParams, make_phantom, write_phantom
    from osteofe.parallel import on_root

    def write() -> dict:
        root = tmp_path_factory.mktemp("phantom")
        return write_phantom(make_phantom(PhantomParams(voxel_size_mm=1.5)), root)

    return on_root(_world(), write)  # an error on rank 0 is raised on every rank


@pytest.mark.skipif(_world().size < 2,
                    reason="needs mpiexec -n 2 (compares a 2-rank run with a serial one)")
def test_two_ranks_write_the_serial_fields_and_failure_loads(small_phantom, mpi_tmp_path):
    """fall + stance on 2 ranks vs the same analysis serially (COMM_SELF, rank 0)."""
    comm = _world()
    h5py = pytest.importorskip("h5py")
    import meshio
    from mpi4py import MPI

    from osteofe.config import Config
    from osteofe.pipeline import StrengthRequest, run_strength

    config = (Config().override("mesh", size_mm=8.0)
              .override("load", cases=("fall", "stance")))
    request = StrengthRequest(small_phantom["ct"], small_phantom["labels"], body_mass_kg=75.0)
    parallel = run_strength(request, config, mpi_tmp_path / "mpi", comm=comm, picture=False)
    names = sorted(p.name for p in (mpi_tmp_path / "mpi").iterdir())
    assert names == ["fields.h5", "fields.xdmf", "result.json"]
    if comm.rank != 0:
        comm.barrier()
        return
    serial = run_strength(request, config, mpi_tmp_path / "serial", comm=MPI.COMM_SELF,
                          picture=False)
    comm.barrier()
    for a, b in zip(parallel.cases, serial.cases, strict=True):
        assert a.failure_load_N == pytest.approx(b.failure_load_N, rel=1e-6)
        assert (a.failure_mode, a.critical_point_mm) == (b.failure_mode, b.critical_point_mm)
    vtu = meshio.read(mpi_tmp_path / "serial" / "fields.vtu")
    with h5py.File(mpi_tmp_path / "mpi" / "fields.h5", "r") as h5:
        points = h5["Mesh/mesh/geometry"][...]
        data = {k: h5[f"Function/{k}/0"][...] for k in h5["Function"]}
    # The fall model (solved rotated, the first: its mesh is the output mesh) is written in
    # world axes; the stance fields come from the other model's partition.
    order, reference = np.lexsort(points.T), np.lexsort(vtu.points.T)
    np.testing.assert_allclose(points[order], vtu.points[reference], atol=1e-9)
    for case in ("stance", "fall"):
        for name in (f"displacement_mm_{case}", f"risk_factor_{case}"):
            got = data[name].reshape(points.shape[0], -1)[order]
            want = vtu.point_data[name].reshape(points.shape[0], -1)[reference]
            scale = np.abs(want).max()
            np.testing.assert_allclose(got, want, atol=1e-6 * scale)
    # Cells: compare the sorted per-cell values (the cell order differs).
    cell = {k: v[0] for k, v in vtu.cell_data.items()}
    for name in ("E_MPa", "max_principal_strain_fall", "min_principal_strain_stance"):
        got, want = np.sort(data[name].ravel()), np.sort(cell[name].ravel())
        np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max())


@pytest.mark.skipif(_world().size < 2,
                    reason="needs mpiexec -n 2 (compares a 2-rank run with a serial one)")
def test_two_ranks_give_the_serial_nonlinear_peak(small_phantom, mpi_tmp_path):
    """Plasticity under indirect control on 2 ranks vs serially: the linear solution it
    starts from is distributed (each rank owns part of its rows)."""
    comm = _world()
    from mpi4py import MPI

    from osteofe.config import Config
    from osteofe.pipeline import StrengthRequest, run_strength

    config = (Config().override("mesh", size_mm=8.0).override("load", cases=("stance",))
              .override("nonlinear", enabled=True))
    request = StrengthRequest(small_phantom["ct"], small_phantom["labels"], body_mass_kg=75.0)
    parallel = run_strength(request, config, mpi_tmp_path / "mpi_nl", comm=comm,
                            picture=False).cases[0].nonlinear
    if comm.rank != 0:
        comm.barrier()
        return
    serial = run_strength(request, config, mpi_tmp_path / "serial_nl", comm=MPI.COMM_SELF,
                          picture=False).cases[0].nonlinear
    comm.barrier()
    assert parallel is not None and serial is not None
    assert parallel.peak_reached and serial.peak_reached
    assert parallel.record["all_increments_converged"] is True
    assert parallel.failure_load_N == pytest.approx(serial.failure_load_N, rel=1e-6)
    assert len(parallel.record["increments"]) == len(serial.record["increments"])


@pytest.mark.skipif(_world().size < 2,
                    reason="needs mpiexec -n 2 (compares a 2-rank run with a serial one)")
def test_no_rank_holds_the_whole_mesh_and_the_deck_is_the_serial_one(small_phantom,
                                                                      mpi_tmp_path,
                                                                      monkeypatch):
    """Every model of a 2-rank run is built from one rank's block of the mesh; model.inp
    (read back for the export) is the serial run's deck; the staging folder is removed."""
    comm = _world()
    from mpi4py import MPI

    import fea.solver
    from fea.partition import MeshPart
    from osteofe.config import Config
    from osteofe.pipeline import StrengthRequest, run_strength

    seen = []
    build = fea.solver.ElasticModel.__init__

    def spy(self, mesh, *args, **kwargs):
        seen.append((type(mesh).__name__, mesh.cells.shape[0],
                     mesh.num_cells))
        build(self, mesh, *args, **kwargs)

    config = (Config().override("mesh", size_mm=8.0)
              .override("load", cases=("fall", "stance")))
    request = StrengthRequest(small_phantom["ct"], small_phantom["labels"], body_mass_kg=75.0)
    with monkeypatch.context() as patch:
        patch.setattr(fea.solver.ElasticModel, "__init__", spy)
        parallel = run_strength(request, config, mpi_tmp_path / "deck_mpi", comm=comm,
                                picture=True, export_inp=True)
    # One model per support configuration (fall, distal), each from this rank's block.
    assert len(seen) == 2
    for kind, block_cells, num_cells in seen:
        assert kind == MeshPart.__name__
        assert 0 < block_cells < num_cells
    assert comm.allreduce(seen[0][1]) == seen[0][2]
    assert parallel.records["solver"]["distribution"].startswith("mesh partitioned")
    left = sorted(p.name for p in mpi_tmp_path.iterdir() if "staging" in p.name)
    assert left == []
    names = sorted(p.name for p in (mpi_tmp_path / "deck_mpi").iterdir())
    assert {"femur_risk.png", "model.inp", "model_fall.inp", "fields.h5"} <= set(names)
    if comm.rank != 0:
        comm.barrier()
        return
    serial = run_strength(request, config, mpi_tmp_path / "deck_serial", comm=MPI.COMM_SELF,
                          picture=False, export_inp=True)
    comm.barrier()
    assert serial.records["solver"]["distribution"] == "serial"
    for deck in ("model.inp", "model_fall.inp"):
        assert ((mpi_tmp_path / "deck_mpi" / deck).read_text()
                == (mpi_tmp_path / "deck_serial" / deck).read_text())
    assert parallel.records["mesh"] == serial.records["mesh"]
    assert parallel.records["material"] == serial.records["material"]


@pytest.mark.skipif(_world().size < 2,
                    reason="needs mpiexec -n 2 (compares a 2-rank run with a serial one)")
def test_two_ranks_with_moduli_at_quadrature_points_give_the_serial_failure_load(
        small_phantom, mpi_tmp_path):
    """Per-point moduli (m, q) travel to the ranks as blocks of rows like per-cell ones."""
    comm = _world()
    from mpi4py import MPI

    from osteofe.config import Config
    from osteofe.pipeline import StrengthRequest, run_strength

    config = (Config().override("mesh", size_mm=8.0).override("load", cases=("stance",))
              .override("material", modulus_at_quadrature_points=True))
    request = StrengthRequest(small_phantom["ct"], small_phantom["labels"], body_mass_kg=75.0)
    parallel = run_strength(request, config, mpi_tmp_path / "qp_mpi", comm=comm,
                            picture=False).cases[0]
    if comm.rank != 0:
        comm.barrier()
        return
    serial = run_strength(request, config, mpi_tmp_path / "qp_serial", comm=MPI.COMM_SELF,
                          picture=False).cases[0]
    comm.barrier()
    assert parallel.failure_load_N == pytest.approx(serial.failure_load_N, rel=1e-6)
    assert parallel.critical_point_mm == serial.critical_point_mm
