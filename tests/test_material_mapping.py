"""CT -> mesh mapping: quadrature, numba vs numpy, mapping invariants (DESIGN.md 5(d)), errors."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest
from numpy.typing import ArrayLike
from scipy.special import erf

from material import (
    LAWS,
    CalibrationError,
    LinearCalibration,
    MappingError,
    MaterialModel,
    map_material,
    map_material_qp,
    quadrature_rule,
    sample_cells_centroid_hu,
    sample_cells_hu,
    sample_cells_hu_reference,
    sample_cells_modulus,
)
from material.mapping import MAX_QUADRATURE_DEGREE, world_to_index_affine
from meshing.types import CTVolume, ImageGrid, TetMesh


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _grid(shape: tuple[int, int, int] = (30, 26, 22)) -> ImageGrid:
    """Anisotropic spacing, oblique direction cosines, offset origin."""
    return ImageGrid(
        shape,
        spacing=np.array([0.7, 0.9, 1.3]),
        origin=np.array([-12.0, 35.5, 140.0]),
        direction=_rotation((0.3, -0.2, 0.5)),
    )


def _box_mesh(
    grid: ImageGrid, lower_ijk: ArrayLike, upper_ijk: ArrayLike, cubes: tuple[int, int, int]
) -> TetMesh:
    """Structured tets (6 per cube, Kuhn split) filling an index-space box, in world mm."""
    lower, upper = np.asarray(lower_ijk, dtype=float), np.asarray(upper_ijk, dtype=float)
    axes = [np.linspace(lo, hi, n + 1) for lo, hi, n in zip(lower, upper, cubes, strict=True)]
    ii, jj, kk = np.meshgrid(*axes, indexing="ij")
    points = grid.index_to_world(np.stack([ii, jj, kk], axis=-1).reshape(-1, 3))
    nx, ny, nz = cubes
    ci, cj, ck = (a.ravel() for a in np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz),
                                                 indexing="ij"))

    def node(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        return (i * (ny + 1) + j) * (nz + 1) + k

    tets = []
    for perm in itertools.permutations(range(3)):
        step = [0, 0, 0]
        corners = [node(ci, cj, ck)]
        for axis in perm:
            step[axis] += 1
            corners.append(node(ci + step[0], cj + step[1], ck + step[2]))
        tets.append(np.stack(corners, axis=1))
    cells = np.concatenate(tets)
    mesh = TetMesh(points, cells, np.ones(len(cells), np.int32))
    flip = mesh.cell_volumes() < 0
    cells = mesh.cells.copy()  # TetMesh froze the array it was given
    cells[flip] = cells[flip][:, [0, 1, 3, 2]]
    return TetMesh(points, cells, np.ones(len(cells), np.int32))


def _random_mesh(
    grid: ImageGrid, rng: np.random.Generator, cells: int = 300, nodes: int = 200,
    margin: float = 1.0,
) -> TetMesh:
    hi = np.asarray(grid.shape) - 1.0 - margin
    points = grid.index_to_world(rng.uniform(margin, hi, size=(nodes, 3)))
    tets = np.array([rng.choice(nodes, 4, replace=False) for _ in range(cells)])
    return TetMesh(points, tets, np.ones(cells, np.int32))


def _quadratic(mesh: TetMesh) -> TetMesh:
    """10-node version of a 4-node mesh (midside nodes appended, gmsh/VTK edge order)."""
    edges = [(0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)]
    m, n = mesh.num_cells, mesh.num_nodes
    mids = np.concatenate([(mesh.points[mesh.cells[:, a]] + mesh.points[mesh.cells[:, b]]) / 2
                           for a, b in edges])
    mid_ids = n + np.arange(6 * m).reshape(6, m).T
    return TetMesh(np.vstack([mesh.points, mids]), np.hstack([mesh.cells, mid_ids]),
                   mesh.cell_tags)


MODEL = MaterialModel(LinearCalibration(0.0008, -0.01, "test", "unit test"))


# ---------------------------------------------------------------------------------------------
# Quadrature
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", range(1, MAX_QUADRATURE_DEGREE + 1))
def test_quadrature_exact_on_barycentric_monomials(degree: int) -> None:
    bary, weights = quadrature_rule(degree)
    assert np.all(weights > 0) and weights.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all(bary > 0) and np.allclose(bary.sum(axis=1), 1.0, atol=1e-14)
    for powers in itertools.product(range(degree + 1), repeat=4):
        if sum(powers) > degree:
            continue
        # mean over the tet of l0^a l1^b l2^c l3^d = 3! a! b! c! d! / (a + b + c + d + 3)!
        exact = 6.0 * np.prod([factorial(p) for p in powers]) / factorial(sum(powers) + 3)
        assert np.prod(bary**np.array(powers), axis=1) @ weights == pytest.approx(exact,
                                                                                 rel=1e-12)


def test_quadrature_not_exact_beyond_degree() -> None:
    bary, weights = quadrature_rule(2)
    exact = 6.0 * factorial(3) / factorial(6)  # mean of l0^3
    assert abs(bary[:, 0] ** 3 @ weights - exact) > 1e-3
    with pytest.raises(MappingError, match="quadrature degree 0"):
        quadrature_rule(0)
    with pytest.raises(MappingError, match="quadrature degree"):
        quadrature_rule(MAX_QUADRATURE_DEGREE + 1)


# ---------------------------------------------------------------------------------------------
# numba kernel vs numpy reference
# ---------------------------------------------------------------------------------------------


def test_affine_matches_image_grid() -> None:
    grid = _grid()
    matrix, origin = world_to_index_affine(grid)
    xyz = np.random.default_rng(0).normal(size=(50, 3)) * 40.0
    np.testing.assert_allclose((xyz - origin) @ matrix.T, grid.world_to_index(xyz),
                               rtol=0, atol=1e-11)


@pytest.mark.parametrize(("seed", "degree"), [(1, 1), (2, 2), (3, 3), (4, 5)])
def test_numba_matches_numpy_reference(seed: int, degree: int) -> None:
    rng = np.random.default_rng(seed)
    grid = _grid()
    ct = CTVolume(grid, rng.normal(300.0, 400.0, size=grid.shape).astype(np.float32))
    # margin -0.45: corners also in the half-voxel band beyond the outer voxel centres
    mesh = _random_mesh(grid, rng, margin=-0.45)
    fast = sample_cells_hu(mesh, ct, quadrature_degree=degree)
    reference = sample_cells_hu_reference(mesh, ct, quadrature_degree=degree)
    assert fast.shape == (mesh.num_cells,) and fast.dtype == np.float64
    np.testing.assert_allclose(fast, reference, rtol=1e-10, atol=1e-10 * 400.0)
    assert np.std(fast) > 10.0  # a non-trivial field was sampled


def test_quadratic_cells_use_the_straight_sided_tet() -> None:
    rng = np.random.default_rng(5)
    grid = _grid()
    ct = CTVolume(grid, rng.normal(300.0, 400.0, size=grid.shape).astype(np.float32))
    mesh = _random_mesh(grid, rng, cells=50)
    np.testing.assert_array_equal(sample_cells_hu(_quadratic(mesh), ct),
                                  sample_cells_hu(mesh, ct))


# ---------------------------------------------------------------------------------------------
# Mapping invariants (DESIGN.md 5(d))
# ---------------------------------------------------------------------------------------------


def test_constant_hu_gives_the_exact_modulus() -> None:
    grid = _grid((12, 10, 9))
    ct = CTVolume(grid, np.full(grid.shape, 1000.0, dtype=np.float32))
    mesh = _box_mesh(grid, (-0.5, -0.5, -0.5), (11.5, 9.5, 8.5), (4, 3, 3))
    for mode in ("hu_average", "modulus_average", "centroid"):
        field = map_material(mesh, ct, MODEL, mode=mode)
        # rho_qct 0.79, rho_ash 0.76403, rho_app 1.27338, E = 6850 * 1.27338^1.49 = 9819.2818
        np.testing.assert_allclose(field.hu, 1000.0, rtol=1e-14)
        np.testing.assert_allclose(field.rho_ash_g_cm3, 0.76403, rtol=1e-13)
        np.testing.assert_allclose(field.E_MPa, 9819.2818, atol=1e-4)
        assert field.poisson_ratio == 0.3


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_linear_field_integrates_to_centroid_value(degree: int) -> None:
    grid = _grid()
    i, j, k = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    hu = (3.0 * i - 2.0 * j + 5.0 * k - 100.0).astype(np.float32)  # exact in float32
    ct = CTVolume(grid, hu)
    mesh = _random_mesh(grid, np.random.default_rng(7), margin=0.5)
    ci, cj, ck = grid.world_to_index(mesh.centroids()).T
    expected = 3.0 * ci - 2.0 * cj + 5.0 * ck - 100.0
    np.testing.assert_allclose(sample_cells_hu(mesh, ct, quadrature_degree=degree), expected,
                               rtol=0, atol=1e-9)


def test_total_mass_voxels_vs_mesh() -> None:
    grid = _grid((40, 36, 30))
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij"), axis=-1)
    centre_ijk, sigma = np.array([20.0, 17.0, 14.0]), 7.0
    r2 = np.sum((grid.index_to_world(ijk.reshape(-1, 3))
                 - grid.index_to_world(centre_ijk)) ** 2, axis=1)
    hu = (300.0 + 900.0 * np.exp(-r2 / (2.0 * sigma**2))).reshape(grid.shape)  # smooth blob
    ct = CTVolume(grid, hu.astype(np.float32))
    lo, hi = np.array([3, 3, 2]), np.array([36, 32, 27])  # voxel blocks inside the image
    voxel_volume = float(np.prod(grid.spacing))
    volume = voxel_volume * float(np.prod(hi - lo + 1))
    # continuum ash mass (g) of the box: the chain is linear in HU (rho_ash > 0 everywhere)
    # and the Gaussian is separable along the (orthonormal) image axes
    a = (lo - 0.5 - centre_ijk) * grid.spacing / (sigma * np.sqrt(2.0))
    b = (hi + 0.5 - centre_ijk) * grid.spacing / (sigma * np.sqrt(2.0))
    gauss = float(np.prod(sigma * np.sqrt(np.pi / 2.0) * (erf(b) - erf(a))))
    hu_integral = 300.0 * volume + 900.0 * gauss
    mass_exact = (0.0633 * volume + 0.887 * (-0.01 * volume + 0.0008 * hu_integral)) / 1000.0
    assert mass_exact == pytest.approx(8.7284, abs=1e-4)

    block = ct.hu[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    mass_voxels = MODEL.densities(block)[1].sum() * voxel_volume / 1000.0
    mesh = _box_mesh(grid, lo - 0.5, hi + 0.5, (12, 10, 9))  # 6480 tets of ~3 voxels a side
    field = map_material(mesh, ct, MODEL)
    mass_mesh = float(field.rho_ash_g_cm3 @ mesh.cell_volumes()) / 1000.0
    assert mesh.cell_volumes().sum() == pytest.approx(volume, rel=1e-12)
    assert mass_voxels == pytest.approx(mass_exact, rel=1e-3)
    assert mass_mesh == pytest.approx(mass_voxels, rel=0.01)
    assert mass_mesh == pytest.approx(mass_exact, rel=1e-3)  # in fact 0.04% (voxels 0.02%)


def test_floor_and_modulus_average() -> None:
    grid = _grid((16, 14, 12))
    rng = np.random.default_rng(11)
    hu = rng.normal(600.0, 500.0, size=grid.shape).astype(np.float32)
    hu[:6] = -1000.0  # air / lytic lesion slab
    ct = CTVolume(grid, hu)
    mesh = _box_mesh(grid, (0.0, 0.0, 0.0), (15.0, 13.0, 11.0), (5, 4, 4))
    field = map_material(mesh, ct, MODEL)
    in_slab = grid.world_to_index(mesh.points)[mesh.cells].max(axis=1)[:, 0] <= 3.0
    assert in_slab.sum() > 0
    np.testing.assert_array_equal(field.E_MPa[in_slab], 5.0)
    assert field.description["cells_at_E_floor"] >= int(in_slab.sum())
    assert np.all(field.E_MPa >= 5.0)
    # E integration >= E of the mean HU for a convex law (Jensen), equal where HU is constant
    e_integrated = sample_cells_modulus(mesh, ct, MODEL)
    assert np.all(e_integrated >= field.E_MPa - 1e-9)
    assert np.mean(e_integrated - field.E_MPa) > 1.0
    field_e = map_material(mesh, ct, MODEL, mode="modulus_average")
    np.testing.assert_allclose(field_e.E_MPa, e_integrated, rtol=1e-14)
    np.testing.assert_allclose(field_e.hu, field.hu, rtol=1e-12, atol=1e-9)
    assert field_e.description["mode"] == "modulus_average"
    assert field.description["law"]["name"] == "morgan2003_neck"
    assert field.to_dict()["E_MPa"]["min"] == 5.0


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_mesh_outside_ct_is_an_error() -> None:
    grid = _grid((12, 10, 9))
    ct = CTVolume(grid, np.full(grid.shape, 200.0, dtype=np.float32))
    mesh = _box_mesh(grid, (-0.5, -0.5, -0.5), (11.5, 9.5, 8.5), (3, 2, 2))  # 72 cells, inside
    assert sample_cells_hu(mesh, ct).shape == (72,)
    shifted = TetMesh(mesh.points + grid.direction[:, 0] * 2.0, mesh.cells, mesh.cell_tags)
    with pytest.raises(MappingError, match=r"^24 of 72 cells lie outside the CT") as info:
        sample_cells_hu(shifted, ct)
    assert "CT covers x [" in info.value.message
    assert "coordinate system" in info.value.hint
    mirrored = TetMesh(mesh.points * np.array([-1.0, -1.0, 1.0]), mesh.cells, mesh.cell_tags)
    with pytest.raises(MappingError, match="72 of 72 cells"):
        map_material(mirrored, ct, MODEL)
    with pytest.raises(MappingError, match="72 of 72 cells"):
        sample_cells_hu_reference(mirrored, ct)


def test_raw_ct_and_bad_options_are_errors() -> None:
    grid = _grid((12, 10, 9))
    raw = np.random.default_rng(2).integers(0, 4096, size=grid.shape).astype(np.float32)
    ct = CTVolume(grid, raw)
    mesh = _box_mesh(grid, (0.0, 0.0, 0.0), (11.0, 9.0, 8.0), (2, 2, 2))
    with pytest.raises(CalibrationError, match=r"raw 0\.\.4095"):
        map_material(mesh, ct, MODEL)
    assert map_material(mesh, ct, MODEL, check_rescaled=False).num_cells == 48
    with pytest.raises(MappingError, match="unknown material mapping mode 'voxel'") as info:
        map_material(mesh, ct, MODEL, mode="voxel", check_rescaled=False)  # type: ignore[arg-type]
    with pytest.raises(MappingError, match="quadrature degree 42"):
        sample_cells_hu(mesh, ct, quadrature_degree=42)
    assert "'centroid' (voxel lookup)" in info.value.hint


# ---------------------------------------------------------------------------------------------
# Centroid voxel lookup, quadrature-point output, floor tags, extrapolation report
# ---------------------------------------------------------------------------------------------


def test_centroid_mode_is_the_voxel_containing_the_centroid() -> None:
    grid = _grid()
    hu = np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape)  # unique values
    ct = CTVolume(grid, hu - 100.0)  # some negative HU: rescaled
    mesh = _random_mesh(grid, np.random.default_rng(21), cells=400, margin=-0.45)
    # independently: the voxel box holding the centroid, |index - centre| <= 1/2 on each axis
    ijk = grid.world_to_index(mesh.centroids())
    nearest = np.clip(np.floor(ijk + 0.5), 0, np.asarray(grid.shape) - 1).astype(int)
    assert np.all(np.abs(ijk - nearest) <= 0.5 + 1e-9)  # the box contains it (or edge band)
    expected = ct.hu[nearest[:, 0], nearest[:, 1], nearest[:, 2]]
    np.testing.assert_array_equal(sample_cells_centroid_hu(mesh, ct), expected)
    field = map_material(mesh, ct, MODEL, mode="centroid")
    np.testing.assert_array_equal(field.hu, expected)
    np.testing.assert_allclose(field.E_MPa, MODEL.modulus(expected), rtol=1e-15)
    assert field.description["mode"] == "centroid"
    assert field.description["quadrature_degree"] is None
    assert field.description["interpolation"] == "none: nearest voxel to the centroid"


def test_modulus_at_quadrature_points() -> None:
    rng = np.random.default_rng(8)
    grid = _grid()
    ct = CTVolume(grid, rng.normal(400.0, 400.0, size=grid.shape).astype(np.float32))
    mesh = _random_mesh(grid, rng, cells=200)
    for degree in (1, 2, 3):
        bary, weights = quadrature_rule(degree)
        e_points = map_material_qp(mesh, ct, MODEL, quadrature_degree=degree)
        assert e_points.shape == (mesh.num_cells, bary.shape[0])
        # their weighted mean is Bonemat's E integration
        np.testing.assert_allclose(e_points @ weights,
                                   sample_cells_modulus(mesh, ct, MODEL, quadrature_degree=degree),
                                   rtol=1e-13)
        # the same points given as reference coordinates (x, y, z) = barycentric (l1, l2, l3)
        np.testing.assert_allclose(  # (1 - x - y - z rounds the first coordinate)
            map_material_qp(mesh, ct, MODEL, reference_points=bary[:, 1:]), e_points,
            rtol=1e-12)
    # at the reference vertices: E of the trilinear HU at the cell's corner nodes
    corners = map_material_qp(mesh, ct, MODEL, reference_points=np.vstack([np.zeros(3),
                                                                          np.eye(3)]))
    corner_ijk = grid.world_to_index(mesh.points)[mesh.cells]
    hu_corner = _trilinear_numpy(ct.hu, corner_ijk.reshape(-1, 3)).reshape(-1, 4)
    np.testing.assert_allclose(corners, MODEL.modulus(hu_corner), rtol=1e-10)
    lesion = TetMesh(mesh.points, mesh.cells, np.where(np.arange(mesh.num_cells) < 50, 2, 1))
    floored = map_material_qp(lesion, ct, MODEL, floor_tags=(2,))
    assert np.all(floored[:50] == MODEL.E_floor_MPa)
    np.testing.assert_array_equal(floored[50:], map_material_qp(mesh, ct, MODEL)[50:])
    with pytest.raises(MappingError, match="outside the reference tetrahedron"):
        map_material_qp(mesh, ct, MODEL, reference_points=[[0.6, 0.6, 0.0]])
    with pytest.raises(MappingError, match=r"\(q, 3\) array"):
        map_material_qp(mesh, ct, MODEL, reference_points=[0.2, 0.2, 0.2])


def _trilinear_numpy(hu: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Plain trilinear interpolation inside the grid (a third implementation)."""
    lower = np.floor(ijk).astype(int)
    frac = ijk - lower
    out = np.zeros(len(ijk))
    for corner in itertools.product((0, 1), repeat=3):
        c = np.asarray(corner)
        weight = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
        idx = np.minimum(lower + c, np.asarray(hu.shape) - 1)
        out += weight * hu[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out


def test_floor_tags_force_lesion_cells_to_the_floor() -> None:
    grid = _grid((16, 14, 12))
    ct = CTVolume(grid, np.full(grid.shape, 1200.0, dtype=np.float32))  # blastic-looking HU
    mesh = _box_mesh(grid, (0.0, 0.0, 0.0), (15.0, 13.0, 11.0), (5, 4, 4))
    tags = np.where(grid.world_to_index(mesh.centroids())[:, 0] < 6.0, 2, 1).astype(np.int32)
    tagged = TetMesh(mesh.points, mesh.cells, tags)
    for mode in ("hu_average", "modulus_average", "centroid"):
        field = map_material(tagged, ct, MODEL, mode=mode, floor_tags=(2,))
        assert np.all(field.E_MPa[tags == 2] == 5.0)
        assert np.all(field.E_MPa[tags == 1] > 10_000.0)
        np.testing.assert_allclose(field.rho_ash_g_cm3, 0.0633 + 0.887 * 0.95)  # as mapped
        assert field.description["cells_forced_to_floor"] == int(np.sum(tags == 2))
        assert field.description["floor_tags"] == [2]
        # the extrapolation report leaves the forced cells out
        assert field.description["law_extrapolation"]["count"] == int(np.sum(tags == 1))
    untouched = map_material(tagged, ct, MODEL, floor_tags=(7,))
    assert untouched.description["cells_forced_to_floor"] == 0


def test_extrapolation_report_in_description() -> None:
    grid = _grid((20, 10, 10))
    hu = np.full(grid.shape, 1500.0, dtype=np.float32)  # cortex: rho_app ~ 2.0, above range
    hu[:10] = 200.0  # trabecular: rho_app = (0.0633 + 0.887 * 0.15) / 0.6 = 0.327, in range
    ct = CTVolume(grid, hu)
    mesh = _box_mesh(grid, (0.0, 0.0, 0.0), (19.0, 9.0, 9.0), (10, 3, 3))
    field = map_material(mesh, ct, MODEL, mode="centroid")
    report = field.description["law_extrapolation"]
    above = int(np.sum(field.rho_app_g_cm3 > 0.75))
    assert 0 < above < mesh.num_cells
    assert report["above"] == above and report["below"] == 0
    assert report["fraction_outside"] == pytest.approx(above / mesh.num_cells)
    assert report["valid_range_g_cm3"] == [0.26, 0.75] and report["density_kind"] == "app"
    keyak = MaterialModel(LinearCalibration(0.0008, -0.01), law=LAWS["keyak2005_modulus"])
    assert map_material(mesh, ct, keyak).description["law_extrapolation"][
        "fraction_outside"] is None  # no range recorded
