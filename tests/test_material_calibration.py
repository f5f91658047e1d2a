"""Calibration: phantom rods (values and ROIs), phantomless fits, fit statistics, config."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats

from material import (
    DEFAULT_PHANTOMLESS_TISSUES,
    REFERENCE_TISSUES,
    CalibrationError,
    LinearCalibration,
    MaterialModel,
    calibration_from_config,
    calibration_from_rois,
    get_density_chain,
    phantomless_calibration,
)
from material.calibration import GENERIC_LINE, REFERENCE_HU
from meshing.types import CTVolume, ImageGrid, LabelMap

# Nominal K2HPO4 rod densities of a five-rod phantom (g/cm^3); the exact values do not matter.
RODS = np.array([-0.05, 0.0, 0.1, 0.2, 0.4])


def _rod_ct(slope: float, intercept: float, noise: float = 0.0, seed: int = 0,
            shape: tuple[int, int, int] = (60, 40, 12)) -> tuple[CTVolume, LabelMap]:
    """Soft-tissue background with air, five cylindrical rods (labels 11..15) along k."""
    grid = ImageGrid(shape, spacing=np.array([0.8, 0.8, 2.0]), origin=np.array([5.0, -7.0, 3.0]))
    hu = np.full(shape, 40.0)
    hu[:, :3, :] = -1000.0  # air above the phantom
    labels = np.zeros(shape, dtype=np.int32)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for n, rho in enumerate(RODS):
        inside = (i - (7 + 11 * n)) ** 2 + (j - 22) ** 2 <= 16  # radius 4 voxels (3.2 mm)
        hu[inside, :] = (rho - intercept) / slope
        labels[inside, :] = 11 + n
    hu += noise * np.random.default_rng(seed).standard_normal(shape)
    return CTVolume(grid, hu.astype(np.float32)), LabelMap(grid, labels)


def _sd(cal: LinearCalibration, hu: float) -> float:
    assert cal.fit is not None
    sd = cal.fit.density_sd(hu)
    assert sd is not None
    return float(sd)


# ---------------------------------------------------------------------------------------------
# Phantom rods given as values
# ---------------------------------------------------------------------------------------------


def test_phantom_fit_statistics_match_linregress() -> None:
    rng = np.random.default_rng(4)
    hu = (RODS + 0.012) / 0.00081 + rng.normal(0.0, 4.0, RODS.size)
    cal = LinearCalibration.from_phantom(hu, RODS, name="rods", material="hydroxyapatite")
    reference = stats.linregress(hu, RODS)  # an independent implementation
    fit = cal.fit
    assert fit is not None and fit.n == 5 and fit.method == "phantom rods"
    assert cal.material == "HA"
    assert cal.slope == pytest.approx(reference.slope, rel=1e-12)
    assert cal.intercept == pytest.approx(reference.intercept, abs=1e-12)
    assert fit.r2 == pytest.approx(reference.rvalue**2, rel=1e-12)
    assert fit.stderr_slope == pytest.approx(reference.stderr, rel=1e-9)
    assert fit.stderr_intercept == pytest.approx(reference.intercept_stderr, rel=1e-9)
    residuals = np.array(fit.residuals_g_cm3)
    np.testing.assert_allclose(residuals, RODS - cal(hu), atol=1e-15)
    assert abs(residuals.sum()) < 1e-12  # least squares with an intercept
    assert fit.residual_sd_g_cm3 == pytest.approx(np.sqrt(np.sum(residuals**2) / 3), rel=1e-12)
    # uncertainty of the line at 1000 HU: var(a) + 2 h cov(a, b) + h^2 var(b)
    mean_hu = hu.mean()
    sxx = np.sum((hu - mean_hu) ** 2)
    by_hand = fit.residual_sd_g_cm3 * np.sqrt(1 / 5 + (1000.0 - mean_hu) ** 2 / sxx)
    assert fit.density_sd(1000.0) == pytest.approx(by_hand, rel=1e-9)
    summary = cal.to_dict()
    assert summary["material"] == "HA" and summary["fit"]["n"] == 5
    assert summary["fit"]["density_sd_at_reference_hu_g_cm3"] == pytest.approx(by_hand)
    assert summary["fit"]["points"][2]["name"] == "rod 3"
    json.dumps(summary)  # JSON-ready


def test_two_rods_give_a_line_without_uncertainty() -> None:
    cal = LinearCalibration.from_phantom([0.0, 500.0], [0.0, 0.4])
    assert cal.slope == pytest.approx(0.0008) and cal.fit is not None
    assert cal.fit.covariance is None and cal.fit.density_sd(1000.0) is None
    assert cal.fit.r2 == 1.0
    assert cal.to_dict()["fit"]["density_sd_at_reference_hu_g_cm3"] is None


@pytest.mark.parametrize(
    ("hu", "rho", "match"),
    [
        ([0.0, 125.0, 250.0], [0.0, 100.0, 200.0], "look like mg/cm"),  # mg/cm^3
        ([0.0, 125.0, 250.0, 500.0], [0.0, 0.2, 0.1, 0.4], r"poor: R\^2 = 0\.\d+ < 0\.95"),
        ([0.0, 125.0, 250.0], [0.2, 0.1, 0.0], "density must grow with HU"),  # reversed
        ([100.0, 100.0], [0.0, 0.1], "at least two rods"),
    ],
)
def test_phantom_fit_errors(hu: list[float], rho: list[float], match: str) -> None:
    with pytest.raises(CalibrationError, match=match) as info:
        LinearCalibration.from_phantom(hu, rho)
    assert info.value.hint


def test_material_names_and_chain_compatibility() -> None:
    alias = LinearCalibration(0.0008, 0.0, material="k2hpo4")  # type: ignore[arg-type]
    assert alias.material == "K2HPO4"
    with pytest.raises(CalibrationError, match="unknown calibration phantom material 'bone'"):
        LinearCalibration(0.0008, 0.0, material="bone")  # type: ignore[arg-type]
    ha = LinearCalibration(0.0008, 0.0, "esp", material="HA")
    with pytest.raises(CalibrationError, match="HA-equivalent density but density chain "
                       "'mayo_schileo' expects K2HPO4") as info:
        MaterialModel(ha)  # default chain: Mayo (K2HPO4)
    assert "schileo2008" in info.value.hint
    assert MaterialModel(ha, chain=get_density_chain("schileo2008")).chain.name == "schileo2008"
    assert MaterialModel(ha, chain=get_density_chain("identity_schileo")).calibration is ha


# ---------------------------------------------------------------------------------------------
# Phantom rods as ROIs in the CT
# ---------------------------------------------------------------------------------------------


def test_calibration_from_rois_recovers_the_line() -> None:
    ct, labels = _rod_ct(0.00078, -0.008, noise=15.0)
    densities = {11 + n: float(rho) for n, rho in enumerate(RODS)}
    cal = calibration_from_rois(ct, labels, densities, material="K2HPO4", name="mindways")
    assert cal.slope == pytest.approx(0.00078, rel=0.01)
    assert cal.intercept == pytest.approx(-0.008, abs=0.002)
    fit = cal.fit
    assert fit is not None and fit.method == "phantom ROIs" and fit.n == 5
    assert fit.names == ("label 11", "label 12", "label 13", "label 14", "label 15")
    assert fit.voxels == (49 * 12,) * 5  # 49 voxels per slice in a radius-4 disc, 12 slices
    assert fit.hu_sd is not None and all(13.0 < sd < 17.0 for sd in fit.hu_sd)
    assert fit.r2 > 0.999
    # the line's uncertainty is consistent with its actual error at 1000 HU
    sd = fit.density_sd(REFERENCE_HU)
    assert sd is not None and 0.0 < float(sd) < 0.005
    assert abs(cal(1000.0) - (-0.008 + 0.78)) < 4.0 * float(sd)
    # eroding keeps the fit and shrinks the ROIs
    eroded = calibration_from_rois(ct, labels.labels, densities, erode_voxels=1)
    assert eroded.fit is not None and eroded.fit.voxels is not None
    assert all(v < 49 * 12 for v in eroded.fit.voxels)


def test_calibration_from_rois_errors() -> None:
    ct, labels = _rod_ct(0.0008, -0.01)
    with pytest.raises(CalibrationError, match="phantom rod label 99 has 0 voxel"):
        calibration_from_rois(ct, labels, {11: -0.05, 99: 0.1})
    with pytest.raises(CalibrationError, match="at least two rods"):
        calibration_from_rois(ct, labels, {11: -0.05})
    other = LabelMap(ImageGrid(ct.grid.shape, spacing=np.ones(3), origin=np.zeros(3)),
                     labels.labels)
    with pytest.raises(CalibrationError, match="another grid than the CT"):
        calibration_from_rois(ct, other, {11: -0.05, 12: 0.0})
    raw = CTVolume(ct.grid, ct.hu + 1024.0 + 2000.0 * (ct.hu > 300))
    with pytest.raises(CalibrationError, match=r"raw 0\.\.4095"):
        calibration_from_rois(raw, labels, {11: -0.05, 12: 0.0})


# ---------------------------------------------------------------------------------------------
# Phantomless
# ---------------------------------------------------------------------------------------------


def _tissue_ct(hu_of: dict[str, float], noise: float = 0.0, seed: int = 0,
               tissues: tuple[str, ...] = ("air", "fat", "muscle", "blood"),
               ) -> tuple[CTVolume, LabelMap]:
    """Slabs of the tissues along i, 10 voxels each (labels 1, 2, ...)."""
    shape = (10 * len(tissues), 12, 10)
    grid = ImageGrid(shape, spacing=np.array([1.0, 1.0, 1.5]), origin=np.zeros(3))
    hu = np.empty(shape)
    labels = np.zeros(shape, dtype=np.int32)
    for n, tissue in enumerate(tissues):
        hu[10 * n:10 * (n + 1)] = hu_of[tissue]
        labels[10 * n:10 * (n + 1)] = n + 1
    hu += noise * np.random.default_rng(seed).standard_normal(shape)
    return CTVolume(grid, hu.astype(np.float32)), LabelMap(grid, labels)


def _scanner_hu(slope: float, intercept: float, shift: dict[str, float] | None = None
                ) -> dict[str, float]:
    """HU a scanner with line (slope, intercept) gives the reference tissues."""
    shift = shift or {}
    return {name: (REFERENCE_TISSUES[name].density_g_cm3 + shift.get(name, 0.0) - intercept)
            / slope for name in ("air", "fat", "muscle", "blood")}


def test_phantomless_recovers_a_scanner_line_by_thresholds() -> None:
    # a scanner 6% more sensitive than the generic line, offset by 0.02 g/cm^3
    # (blood would fall in muscle's HU window: thresholds cannot tell them apart)
    ct, _ = _tissue_ct(_scanner_hu(0.00075, 0.02), noise=8.0, tissues=("air", "fat", "muscle"))
    cal = phantomless_calibration(ct)  # air, fat, muscle by HU windows, eroded 1 voxel
    assert cal.slope == pytest.approx(0.00075, rel=0.003)
    assert cal.intercept == pytest.approx(0.02, abs=0.002)
    fit = cal.fit
    assert fit is not None and fit.method == "phantomless"
    assert fit.names == DEFAULT_PHANTOMLESS_TISSUES
    assert "HU window -190..-30" in cal.source and "UNVERIFIED" in cal.source
    assert fit.density_sd_g_cm3 == tuple(REFERENCE_TISSUES[t].sd_g_cm3
                                         for t in DEFAULT_PHANTOMLESS_TISSUES)
    # with the points exactly on a line the covariance is the one of the assigned
    # uncertainties (no chi^2 scaling): check it by hand (the HU noise term is negligible)
    x = np.array(fit.hu)
    w = 1.0 / np.array(fit.density_sd_g_cm3) ** 2
    design = np.column_stack([np.ones(3), x])
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    np.testing.assert_allclose(np.array(fit.covariance), cov, rtol=1e-3)
    h = np.array([1.0, REFERENCE_HU])
    assert _sd(cal, REFERENCE_HU) == pytest.approx(np.sqrt(h @ cov @ h), rel=1e-3)
    summary = cal.to_dict()["fit"]
    assert 0.05 < summary["density_sd_at_reference_hu_g_cm3"] < 0.12  # honest: ~0.08
    json.dumps(summary)


def test_phantomless_uncertainty_matches_its_scatter() -> None:
    # Patients whose tissues deviate from the assigned densities by their assigned SD: the
    # scatter of the fitted density at 1000 HU matches the reported (unscaled) uncertainty.
    rng = np.random.default_rng(12)
    tissues = ("air", "fat", "muscle", "blood")
    masks: dict[str, Any] = {t: n + 1 for n, t in enumerate(tissues)}

    def fit(shift: dict[str, float]) -> tuple[float, float]:
        ct, labels = _tissue_ct(_scanner_hu(0.0008, -0.01, shift))
        cal = phantomless_calibration(ct, tissues, masks=masks, labels=labels, erode_voxels=0)
        return float(cal(REFERENCE_HU)), _sd(cal, REFERENCE_HU)

    nominal_value, nominal_sd = fit({})  # points on the line: no chi^2 scaling
    assert nominal_value == pytest.approx(-0.01 + 0.8, abs=1e-9)
    assert nominal_sd == pytest.approx(0.064, abs=0.001)  # dominated by air's +-0.08
    draws = [fit({t: rng.normal(0.0, REFERENCE_TISSUES[t].sd_g_cm3) for t in tissues})
             for _ in range(400)]
    fitted, reported = np.array(draws).T
    assert np.mean(fitted) == pytest.approx(0.79, abs=0.01)
    assert np.std(fitted, ddof=1) == pytest.approx(nominal_sd, rel=0.1)  # 400 draws: +-4%
    assert np.median(reported) >= 0.9 * nominal_sd  # chi^2 scaling only ever inflates


def test_phantomless_masks_region_and_errors() -> None:
    ct, labels = _tissue_ct(_scanner_hu(*GENERIC_LINE[::-1]))
    by_label = phantomless_calibration(ct, ("fat", "muscle", "blood"),
                                       masks={"fat": 2, "muscle": 3, "blood": labels.labels == 4},
                                       labels=labels)
    assert by_label.slope == pytest.approx(GENERIC_LINE[1], rel=1e-4)
    assert by_label.intercept == pytest.approx(GENERIC_LINE[0], abs=1e-5)
    assert "fat: label 2" in by_label.source and "blood: given mask" in by_label.source
    region = np.zeros(ct.grid.shape, dtype=bool)
    region[:, :6] = True
    in_region = phantomless_calibration(ct, region=region)
    assert in_region.fit is not None and in_region.fit.voxels is not None
    assert max(in_region.fit.voxels) < 10 * 6 * 10
    with pytest.raises(CalibrationError, match="at least two reference tissues"):
        phantomless_calibration(ct, ("fat",))
    with pytest.raises(CalibrationError, match=r"unknown reference tissue\(s\) \['bone'\]"):
        phantomless_calibration(ct, ("fat", "bone"))
    with pytest.raises(CalibrationError, match=r"reference tissue 'cortical_bone'.* 0 voxel"):
        phantomless_calibration(ct, ("fat", "cortical_bone"))
    with pytest.raises(CalibrationError, match="no label map was passed"):
        phantomless_calibration(ct, ("fat", "muscle"), masks={"fat": 2})
    with pytest.raises(CalibrationError, match="masks given for tissue"):
        phantomless_calibration(ct, ("fat", "muscle"), masks={"blood": 4}, labels=labels)


def test_reference_tissue_table_is_documented() -> None:
    intercept, slope = GENERIC_LINE
    for tissue in REFERENCE_TISSUES.values():
        assert tissue.density_g_cm3 == pytest.approx(intercept + slope * tissue.typical_hu)
        assert tissue.hu_window[0] < tissue.typical_hu < tissue.hu_window[1]
        assert tissue.source and tissue.sd_g_cm3 > 0.0
    assert REFERENCE_TISSUES["air"].typical_hu == -1000.0 and REFERENCE_TISSUES["air"].verified
    assert not REFERENCE_TISSUES["fat"].verified  # assigned densities are not literature values


# ---------------------------------------------------------------------------------------------
# From configuration tables
# ---------------------------------------------------------------------------------------------


def test_calibration_from_config_kinds() -> None:
    line = calibration_from_config({"slope": 0.0008, "intercept": -0.01, "material": "HA"})
    assert (line.slope, line.intercept, line.material, line.fit) == (0.0008, -0.01, "HA", None)
    rods = calibration_from_config({"rods": [{"hu": 0.0, "density": 0.0, "name": "water"},
                                             {"hu": 250.0, "density": 200.0},
                                             {"hu": 500.0, "density": 400.0}],
                                    "density_unit": "mg/cm3"})
    assert rods.slope == pytest.approx(0.0008) and rods.fit is not None
    assert rods.fit.names[0] == "water"
    columns = calibration_from_config({"rods": {"hu": [0.0, 500.0], "density": [0.0, 0.4]}})
    assert columns.slope == pytest.approx(0.0008)
    ct, labels = _rod_ct(0.0008, -0.01)
    rois = calibration_from_config({"rod_labels": {"11": -0.05, "15": 0.4}, "name": "roi"},
                                   ct=ct, labels=labels)
    assert rois.slope == pytest.approx(0.0008, rel=1e-4) and rois.name == "roi"
    tissue_ct, tissue_labels = _tissue_ct(_scanner_hu(0.0008, -0.01))
    assert calibration_from_config({"phantomless": True}, ct=tissue_ct).fit is not None
    named = calibration_from_config({"phantomless": ["fat", "muscle"]}, ct=tissue_ct)
    assert named.fit is not None and named.fit.names == ("fat", "muscle")
    labelled = calibration_from_config({"phantomless": {"air": 1, "muscle": 3}}, ct=tissue_ct,
                                       labels=tissue_labels)
    assert labelled.slope == pytest.approx(0.0008, rel=1e-4)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({}, "exactly one of"),
        ({"slope": 0.0008, "intercept": 0.0, "rods": []}, "exactly one of"),
        ({"slope": 0.0008, "intercept": 0.0, "offset": 1}, r"unknown key\(s\) \['offset'\]"),
        ({"rods": [{"hu": 0.0}]}, "malformed 'rods' calibration table"),
        ({"rods": {"hu": [0, 1], "density": [0, 1]}, "density_unit": "kg"}, "density_unit"),
        ({"phantomless": True}, "no CT was given"),
        ({"slope": -0.0008, "intercept": 0.0}, "density must grow"),
    ],
)
def test_calibration_from_config_errors(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        calibration_from_config(spec)
