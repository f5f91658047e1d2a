"""Calibration, density chains and density -> modulus laws: literature values and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from material import (
    ASH_FRACTIONS,
    CITATIONS,
    DENSITY_CHAINS,
    LAW_SETS,
    LAWS,
    QCT_TO_ASH,
    CalibrationError,
    LinearCalibration,
    MaterialField,
    MaterialLawError,
    MaterialModel,
    PiecewiseLaw,
    PowerLaw,
    check_ct_is_rescaled,
    extrapolation_report,
    get_density_chain,
    get_law,
    law_from_config,
)
from meshing.errors import OsteofeError

# ---------------------------------------------------------------------------------------------
# Literature values as published (laws.CITATIONS flags the ones not checked against the paper).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quantity", "kind", "coefficient", "exponent"),
    [
        ("morgan2003_neck", "E", "app", 6850.0, 1.49),
        ("morgan2003_trochanter", "E", "app", 15010.0, 2.18),
        ("morgan2003_pooled", "E", "app", 8920.0, 1.83),
        ("keyak2005_modulus", "E", "ash", 14900.0, 1.86),
        ("keyak2005_yield", "yield_stress", "ash", 102.0, 1.80),
        ("keyak2005_min_stress", "min_stress", "ash", 43.1, 1.81),
    ],
)
def test_power_law_constants(
    name: str, quantity: str, kind: str, coefficient: float, exponent: float
) -> None:
    law = LAWS[name]
    assert isinstance(law, PowerLaw)
    assert (law.quantity, law.density_kind) == (quantity, kind)
    assert law.coefficient == coefficient
    assert law.exponent == exponent
    assert law.offset == 0.0


def test_morgan_neck_at_half_density() -> None:
    # 6850 * 0.5^1.49 = 2438.686 MPa
    assert LAWS["morgan2003_neck"](0.5) == pytest.approx(2438.686, abs=1e-3)
    assert LAWS["morgan2003_trochanter"](0.5) == pytest.approx(3312.343, abs=1e-3)
    assert LAWS["morgan2003_pooled"](0.5) == pytest.approx(2508.880, abs=1e-3)
    assert LAWS["keyak2005_modulus"](0.5) == pytest.approx(4104.597, abs=1e-3)
    assert LAWS["keyak2005_yield"](0.5) == pytest.approx(29.2918, abs=1e-4)
    assert LAWS["keyak2005_min_stress"](0.5) == pytest.approx(12.2917, abs=1e-4)


def test_morgan_citation() -> None:
    citation = CITATIONS["morgan2003"]
    assert citation.doi == "10.1016/S0021-9290(03)00071-X"
    assert citation.year == 2003
    assert "36(7):897" in citation.journal
    assert LAWS["morgan2003_neck"].citation is citation


def test_keyak1998_modulus_pieces_and_continuity() -> None:
    law = LAWS["keyak1998_modulus"]
    assert isinstance(law, PiecewiseLaw)
    assert law.breakpoints == (0.27, 0.6)
    assert [(p.coefficient, p.exponent, p.offset) for p in law.pieces] == [
        (33900.0, 2.20, 0.0),
        (5307.0, 1.0, 469.0),
        (10200.0, 2.01, 0.0),
    ]
    # one density inside each piece, hand computed
    values = law(np.array([0.2, 0.4, 0.8]))
    np.testing.assert_allclose(values, [982.8012, 2591.8, 6513.4494], rtol=1e-7)
    # the published pieces meet within 0.01%: 1901.95 vs 1901.89 MPa and 3653.20 vs 3653.29
    below, above = law(np.array([0.27 - 1e-12, 0.27]))
    assert below == pytest.approx(1901.954, abs=1e-3)
    assert above == pytest.approx(1901.890, abs=1e-3)
    assert abs(below - above) / above < 1e-4
    below, above = law(np.array([0.6 - 1e-12, 0.6]))
    assert below == pytest.approx(3653.200, abs=1e-3)
    assert above == pytest.approx(3653.290, abs=1e-3)
    assert abs(below - above) / above < 1e-4


def test_keyak1998_yield_continuity() -> None:
    law = LAWS["keyak1998_yield"]
    assert isinstance(law, PiecewiseLaw)
    assert law.breakpoints == (0.317,)
    assert [(p.coefficient, p.exponent) for p in law.pieces] == [(137.0, 1.88), (114.0, 1.72)]
    below, above = law(np.array([0.317 - 1e-12, 0.317]))
    assert below == pytest.approx(15.8020, abs=1e-4)
    assert above == pytest.approx(15.8025, abs=1e-4)
    assert abs(below - above) / above < 1e-4


def test_density_chain_constants() -> None:
    assert (QCT_TO_ASH["mayo"].slope, QCT_TO_ASH["mayo"].intercept) == (0.887, 0.0633)
    assert ASH_FRACTIONS["schileo"].ratio == 0.6
    assert ASH_FRACTIONS["dongguo"].ratio == 0.626
    assert not QCT_TO_ASH["mayo"].citation.verified  # attribution flagged, not hidden
    rho_ash, rho_app = DENSITY_CHAINS["mayo_schileo"](np.array([0.5]))
    assert rho_ash[0] == pytest.approx(0.0633 + 0.887 * 0.5, abs=1e-15)  # 0.5068
    assert rho_app[0] == pytest.approx(0.5068 / 0.6, abs=1e-12)
    _, rho_app_mayo = DENSITY_CHAINS["mayo_dongguo"](np.array([0.5]))
    assert rho_app_mayo[0] == pytest.approx(0.5068 / 0.626, abs=1e-12)


def test_morgan_neck_in_ash_form_is_the_mayo_law() -> None:
    # Mayo (Dragomir-Daescu 2011, as tabulated by Knowles 2016): E = 14664 rho_ash^1.49,
    # i.e. Morgan's neck law with rho_app = rho_ash / 0.6.
    rho_ash = np.linspace(0.05, 1.2, 20)
    fraction = ASH_FRACTIONS["schileo"]
    np.testing.assert_allclose(
        LAWS["morgan2003_neck"](fraction(rho_ash)), 14664.0 * rho_ash**1.49, rtol=5e-5
    )


def test_every_entry_has_a_source() -> None:
    for law in LAWS.values():
        assert law.citation.year is not None and law.citation.journal
        assert law.to_dict()["source"]["reference"]
    for chain in DENSITY_CHAINS.values():
        assert chain.to_dict()["ash_to_app_source"]["reference"]
    assert "UNVERIFIED" in str(CITATIONS["dragomirdaescu2011"])


# ---------------------------------------------------------------------------------------------
# MaterialModel
# ---------------------------------------------------------------------------------------------


def _model(**kwargs: Any) -> MaterialModel:
    return MaterialModel(LinearCalibration(0.0008, -0.01, "test", "unit test"), **kwargs)


def test_default_model_chain_exact_value() -> None:
    model = _model()
    assert model.chain.name == "mayo_schileo"
    assert model.law.name == "morgan2003_neck"
    assert model.poisson_ratio == 0.3
    assert model.E_floor_MPa == 5.0
    # HU 1000: rho_qct = 0.79, rho_ash = 0.0633 + 0.887 * 0.79 = 0.76403,
    # rho_app = 1.2733833, E = 6850 * 1.2733833^1.49 = 9819.2818 MPa
    rho_qct, rho_ash, rho_app, e = model.evaluate(np.array([1000.0]))
    assert rho_qct[0] == pytest.approx(0.79, abs=1e-14)
    assert rho_ash[0] == pytest.approx(0.76403, abs=1e-14)
    assert rho_app[0] == pytest.approx(1.2733833333, abs=1e-9)
    assert e[0] == pytest.approx(9819.2818, abs=1e-4)


def test_floor_and_negative_density_clamp() -> None:
    model = _model(E_floor_MPa=7.5)
    hu = np.array([-1000.0, -100.0, 0.0, 1500.0])
    rho_qct, rho_ash, rho_app, e = model.evaluate(hu)
    assert rho_qct[0] == pytest.approx(-0.81)  # reported as calibrated
    assert rho_ash[0] == 0.0 and rho_app[0] == 0.0  # clamped, not NaN
    assert e[0] == 7.5  # floor
    assert np.all(e >= 7.5) and np.all(np.isfinite(e))
    assert e[3] > 10_000.0


def test_model_by_names_and_ash_law() -> None:
    model = MaterialModel.from_names(
        LinearCalibration(0.0008, -0.01), chain="identity_schileo", law="keyak1998_modulus"
    )
    # identity chain: rho_ash = rho_qct = 0.39 at 500 HU -> linear Keyak piece
    assert model.modulus(np.array([500.0]))[0] == pytest.approx(5307.0 * 0.39 + 469.0, rel=1e-12)


def test_model_rejects_bad_inputs() -> None:
    calibration = LinearCalibration(0.0008, 0.0)
    with pytest.raises(MaterialLawError, match="yield_stress, not Young's modulus"):
        MaterialModel(calibration, law=LAWS["keyak2005_yield"])
    with pytest.raises(MaterialLawError, match=r"Poisson ratio 0\.5"):
        MaterialModel(calibration, poisson_ratio=0.5)
    with pytest.raises(MaterialLawError, match="E floor"):
        MaterialModel(calibration, E_floor_MPa=-1.0)
    with pytest.raises(MaterialLawError, match="unknown material law 'morgan'") as info:
        get_law("morgan")
    assert "morgan2003_neck" in info.value.hint
    with pytest.raises(MaterialLawError, match="unknown density chain"):
        get_density_chain("nope")
    pieces = LAWS["keyak1998_modulus"].pieces  # type: ignore[union-attr]
    with pytest.raises(MaterialLawError, match="not strictly increasing"):
        PiecewiseLaw("bad", "E", "ash", pieces, (0.6, 0.27), CITATIONS["keyak1998"])


def test_model_to_dict_names_everything() -> None:
    summary = _model().to_dict()
    assert summary["calibration"]["line"] == "rho_QCT = -0.01 + 0.0008 * HU [g/cm^3]"
    assert summary["density_chain"]["qct_to_ash"] == "rho_ash = 0.0633 + 0.887 * rho_QCT"
    assert summary["density_chain"]["ash_to_app"] == "rho_app = rho_ash / 0.6"
    assert summary["law"]["formula"] == "E = 6850 * rho_app^1.49 [MPa]"
    assert "10.1016/S0021-9290(03)00071-X" in summary["law"]["source"]["reference"]


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def test_calibration_line_and_inverse() -> None:
    cal = LinearCalibration(0.00075, 0.012, "k2hpo4", "phantom")
    np.testing.assert_allclose(cal(np.array([0.0, 1000.0])), [0.012, 0.762], atol=1e-15)
    assert cal.hu_for_density(0.762) == pytest.approx(1000.0)
    assert cal.to_dict()["slope_g_cm3_per_HU"] == 0.00075


def test_calibration_from_phantom_recovers_line() -> None:
    hu = np.array([-50.0, 80.0, 210.0, 480.0, 900.0])
    rho = 0.02 + 0.0009 * hu
    cal = LinearCalibration.from_phantom(hu, rho, name="rods")
    assert cal.slope == pytest.approx(0.0009, rel=1e-12)
    assert cal.intercept == pytest.approx(0.02, abs=1e-12)
    assert "R^2 = 1.0000" in cal.source
    with pytest.raises(CalibrationError, match="at least two rods"):
        LinearCalibration.from_phantom([100.0], [0.1])


@pytest.mark.parametrize(
    ("slope", "intercept", "match"),
    [
        (-0.0008, 0.0, "slope -0.0008"),
        (0.8, 0.0, "slope 0.8"),  # fitted in mg/cm^3
        (float("nan"), 0.0, "slope nan"),
        (0.0008, 12.0, "intercept 12"),
    ],
)
def test_calibration_rejects_implausible_lines(slope: float, intercept: float, match: str) -> None:
    with pytest.raises(CalibrationError, match=match) as info:
        LinearCalibration(slope, intercept, "bad")
    assert info.value.hint  # every domain error names its fix
    assert isinstance(info.value, OsteofeError)
    assert "hint:" in str(info.value)


def test_check_ct_is_rescaled() -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4096, size=(8, 8, 8)).astype(np.float32)
    with pytest.raises(CalibrationError, match=r"raw 0\.\.4095 storage") as info:
        check_ct_is_rescaled(raw)
    assert "RescaleSlope" in info.value.hint
    check_ct_is_rescaled(raw - 1024.0)  # rescaled: air at -1024 HU
    check_ct_is_rescaled(np.full((4, 4, 4), 500.0))  # uniform phantom, no bone-range values
    check_ct_is_rescaled(np.zeros(0))


# ---------------------------------------------------------------------------------------------
# MaterialField
# ---------------------------------------------------------------------------------------------


def test_material_field_record() -> None:
    field = MaterialField(
        E_MPa=np.array([100.0, 300.0, 200.0]),
        rho_qct_g_cm3=np.array([0.1, 0.3, 0.2]),
        rho_ash_g_cm3=np.array([0.15, 0.33, 0.24]),
        rho_app_g_cm3=np.array([0.25, 0.55, 0.4]),
        hu=np.array([120.0, 390.0, 260.0]),
        poisson_ratio=0.3,
        description={"law": "x"},
    )
    assert field.num_cells == 3
    assert field.E_MPa.dtype == np.float64 and not field.E_MPa.flags.writeable
    summary = field.to_dict()
    assert summary["E_MPa"] == {"min": 100.0, "median": 200.0, "max": 300.0}
    assert summary["hu"]["median"] == 260.0
    assert summary["description"] == {"law": "x"}
    with pytest.raises(ValueError, match=r"must be \(3,\)"):
        one = np.array([0.1])
        MaterialField(np.array([1.0, 2.0, 3.0]), one, one, one, one, 0.3)


# ---------------------------------------------------------------------------------------------
# Keller 1994, the Schileo chain, law sets, valid ranges
# ---------------------------------------------------------------------------------------------


def test_keller1994_femur_law_is_flagged() -> None:
    law = LAWS["keller1994_femur"]
    assert isinstance(law, PowerLaw)
    assert (law.quantity, law.density_kind, law.coefficient, law.exponent) == (
        "E", "ash", 10500.0, 2.29)
    assert law(0.5) == pytest.approx(2146.9929, abs=1e-4)  # 10500 * 0.5^2.29
    assert not law.citation.verified and "not checked" in law.citation.note
    assert law.valid_range is None and "not transcribed" in law.range_note


def test_schileo_chain_constants() -> None:
    relation = QCT_TO_ASH["schileo"]
    assert (relation.slope, relation.intercept, relation.phantom) == (0.877, 0.079, "HA")
    assert QCT_TO_ASH["mayo"].phantom == "K2HPO4" and QCT_TO_ASH["identity"].phantom is None
    chain = DENSITY_CHAINS["schileo2008"]
    rho_ash, rho_app = chain(np.array([0.5]))
    assert rho_ash[0] == pytest.approx(0.079 + 0.877 * 0.5, abs=1e-15)  # 0.5175
    assert rho_app[0] == pytest.approx(0.5175 / 0.6, abs=1e-12)
    assert not relation.citation.verified  # coefficients recalled, flagged
    # the Bologna model: HA line -> Schileo ash -> /0.6 -> Morgan neck
    model = MaterialModel.from_names(LinearCalibration(0.0008, -0.01, material="HA"),
                                     chain="schileo2008", law="morgan2003_neck")
    assert model.modulus(np.array([1000.0]))[0] == pytest.approx(
        6850.0 * ((0.079 + 0.877 * 0.79) / 0.6) ** 1.49, rel=1e-12)
    assert model.to_dict()["density_chain"]["qct_to_ash_phantom"] == "HA"


def test_law_sets() -> None:
    assert LAW_SETS["keyak2005"] == {"E": "keyak2005_modulus",
                                     "yield_stress": "keyak2005_yield",
                                     "min_stress": "keyak2005_min_stress",
                                     "plateau_end_strain": "keyak2005_plateau_end_strain",
                                     "softening_modulus": "keyak2005_softening_modulus"}
    # Curve parameters at rho_ash = 1 g/cm^3 are the coefficients themselves.
    one = np.array([1.0])
    assert LAWS["keyak2005_plateau_end_strain"](one) == pytest.approx([0.0728 - 0.00315])
    assert LAWS["keyak2005_softening_modulus"](one) == pytest.approx([-2080.0])
    for members in LAW_SETS.values():
        for quantity, name in members.items():
            assert LAWS[name].quantity == quantity


def test_valid_ranges_and_extrapolation_report() -> None:
    neck = LAWS["morgan2003_neck"]
    assert neck.valid_range == (0.26, 0.75)
    assert LAWS["morgan2003_pooled"].valid_range == (0.09, 0.75)
    assert "UNVERIFIED" in neck.range_note  # recalled, not checked
    for law in LAWS.values():
        assert law.range_note  # every law says where its range comes from, or why none
        assert law.to_dict()["range_note"] == law.range_note
    report = extrapolation_report(neck, np.array([0.1, 0.3, 0.5, 0.7, 0.8, 1.9, 2.0, 0.26]))
    assert (report["below"], report["above"], report["count"]) == (1, 3, 8)
    assert report["fraction_outside"] == 0.5 and report["fraction_below"] == 0.125
    assert report["density_kind"] == "app" and report["valid_range_g_cm3"] == [0.26, 0.75]
    none = extrapolation_report(LAWS["keyak2005_modulus"], np.array([0.1, 5.0]))
    assert none["fraction_outside"] is None and none["count"] == 2


# ---------------------------------------------------------------------------------------------
# User-defined laws
# ---------------------------------------------------------------------------------------------


def test_user_power_law() -> None:
    law = law_from_config({"name": "my_neck", "density": "app", "coefficient": 6850.0,
                           "exponent": 1.49, "valid_range": [0.2, 0.8],
                           "source": "Morgan 2003 typed in"})
    assert isinstance(law, PowerLaw)
    rho = np.linspace(0.0, 2.0, 41)
    np.testing.assert_array_equal(law(rho), LAWS["morgan2003_neck"](rho))
    assert law.valid_range == (0.2, 0.8) and law.quantity == "E"
    assert law.citation.key == "user:my_neck" and not law.citation.verified
    assert law.to_dict()["source"]["reference"] == "Morgan 2003 typed in"
    assert get_law({"name": "x", "density": "ash", "coefficient": 1.0, "exponent": 1.0}).name == "x"
    model = MaterialModel.from_names(LinearCalibration(0.0008, -0.01),
                                     law={"name": "lin", "density": "ash", "coefficient": 1000.0,
                                          "exponent": 1.0, "offset": 10.0})
    assert model.modulus(np.array([1000.0]))[0] == pytest.approx(1000.0 * 0.76403 + 10.0)


def test_user_piecewise_law_reproduces_keyak1998() -> None:
    spec: dict[str, Any] = {
        "name": "keyak_again", "density": "ash", "breakpoints": [0.27, 0.6],
        "pieces": [{"coefficient": 33900.0, "exponent": 2.20},
                   {"coefficient": 5307.0, "exponent": 1.0, "offset": 469.0},
                   {"coefficient": 10200.0, "exponent": 2.01}],
    }
    law = law_from_config(spec)
    assert isinstance(law, PiecewiseLaw) and law.valid_range is None
    rho = np.linspace(0.0, 1.5, 301)
    np.testing.assert_array_equal(law(rho), LAWS["keyak1998_modulus"](rho))
    yield_law = law_from_config({"name": "y", "quantity": "yield_stress", "density": "ash",
                                 "coefficient": 102.0, "exponent": 1.8})
    with pytest.raises(MaterialLawError, match="not Young's modulus"):
        MaterialModel(LinearCalibration(0.0008, 0.0), law=yield_law)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"name": ""}, "needs a name"),
        ({"name": "morgan2003_neck"}, "name of a built-in law"),
        ({"density": "wet"}, "density 'wet' is unknown"),
        ({"quantity": "G"}, "quantity 'G' is unknown"),
        ({"coefficient": -5.0}, "coefficient -5 is not positive"),
        ({"coefficient": "big"}, "coefficient = 'big' is not a finite number"),
        ({"exponent": 0.0}, r"exponent 0 is outside \(0, 10\]"),
        ({"offset": -100.0}, "negative or non-finite"),
        ({"valid_range": [0.8, 0.2]}, "valid_range"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
        ({"form": "spline"}, "form 'spline' is unknown"),
        ({"breakpoints": [0.5]}, "a power law has no pieces"),
    ],
)
def test_user_power_law_errors(change: dict[str, Any], match: str) -> None:
    spec = {"name": "bad", "density": "app", "coefficient": 6850.0, "exponent": 1.49, **change}
    with pytest.raises(MaterialLawError, match=match) as info:
        law_from_config(spec)
    assert info.value.hint


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"breakpoints": [0.5, 0.6]}, r"needs 1 breakpoint\(s\) for 2 pieces"),
        ({"breakpoints": [0.0]}, "breakpoint 0 is not positive"),
        ({"pieces": [{"coefficient": 1000.0, "exponent": 1.0}]}, "at least two pieces"),
        ({"pieces": [{"coefficient": 1000.0, "exponent": 1.0},
                     {"coefficient": 3000.0, "exponent": 1.0}]}, "pieces 0 and 1 differ by"),
        ({"pieces": [{"coefficient": 1000.0, "exponent": 1.0},
                     {"coefficient": 500.0, "exponent": 1.0}], "max_jump": 0.6},
         "decreases with density"),
        ({"pieces": [{"coefficient": 1000.0, "exponent": 1.0}, {"slope": 1.0}]},
         "piece 1"),
    ],
)
def test_user_piecewise_law_errors(change: dict[str, Any], match: str) -> None:
    spec = {"name": "bad", "density": "ash", "breakpoints": [0.5],
            "pieces": [{"coefficient": 1000.0, "exponent": 1.0},
                       {"coefficient": 1000.0, "exponent": 1.0}], **change}
    with pytest.raises(MaterialLawError, match=match):
        law_from_config(spec)
