"""Mirels score, thresholds and published operating points: literature values and errors."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from meshing.errors import OsteofeError
from risk import (
    CITATIONS,
    MIRELS_FIX_MIN,
    MIRELS_JUDGEMENT,
    MIRELS_LESION_POINTS,
    MIRELS_PAIN_POINTS,
    MIRELS_SITE_POINTS,
    MIRELS_SIZE_BOUNDS,
    OPERATING_POINTS,
    THRESHOLDS,
    USER_GIVEN,
    MirelsError,
    MirelsItem,
    MirelsScore,
    RiskError,
    aci_positive,
    load_to_strength_ratio,
    mirels_recommendation,
    score_mirels,
    site_item,
    size_item,
)

# ---------------------------------------------------------------------------------------------
# Literature values (Mirels 1989; DESIGN.md section 4).
# ---------------------------------------------------------------------------------------------


def test_mirels_item_points_as_published() -> None:
    assert dict(MIRELS_SITE_POINTS) == {"upper_limb": 1, "lower_limb": 2, "peritrochanteric": 3}
    assert dict(MIRELS_PAIN_POINTS) == {"mild": 1, "moderate": 2, "functional": 3}
    assert dict(MIRELS_LESION_POINTS) == {"blastic": 1, "mixed": 2, "lytic": 3}
    assert MIRELS_SIZE_BOUNDS == (1.0 / 3.0, 2.0 / 3.0)
    assert (MIRELS_FIX_MIN, MIRELS_JUDGEMENT) == (9, 8)


def test_thresholds_as_published() -> None:
    aci = THRESHOLDS["aci"]
    assert (aci.value, aci.unit, aci.inclusive) == (30.0, "mm", True)
    assert aci.citation == "vanderwal2020"
    assert THRESHOLDS["mirels_fix"].value == 9.0
    assert THRESHOLDS["factor_of_risk"].value == 1.0


@pytest.mark.parametrize(
    ("key", "sensitivity", "specificity", "citation", "n_patients", "n_fractures"),
    [
        ("damron2003_mirels", 0.91, 0.35, "damron2003", 12, None),
        ("vanderwal2020_aci", 0.86, 0.50, "vanderwal2020", 100, 14),
        ("eggermont2018_fe", 0.89, 0.79, "eggermont2018", 39, 9),
        ("sternheim2020_sfr", 1.00, 0.67, "sternheim2020", 33, 9),
        ("sternheim2020_mirels", 0.88, 0.38, "sternheim2020", 33, 9),
    ],
)
def test_operating_points_as_published(
    key: str,
    sensitivity: float,
    specificity: float,
    citation: str,
    n_patients: int,
    n_fractures: int | None,
) -> None:
    point = OPERATING_POINTS[key]
    assert (point.sensitivity, point.specificity) == (sensitivity, specificity)
    assert point.false_positive_rate == pytest.approx(1.0 - specificity)
    assert (point.citation, point.n_patients, point.n_fractures) == (
        citation,
        n_patients,
        n_fractures,
    )


def test_every_table_entry_cites_a_known_source() -> None:
    cited = {p.citation for p in OPERATING_POINTS.values()} | {
        t.citation for t in THRESHOLDS.values()
    }
    assert cited <= set(CITATIONS)
    for c in CITATIONS.values():
        assert c.key and c.authors and c.year > 1900 and c.title and c.journal
        # unverified sources say what is uncertain, and their reference string flags it
        assert c.verified or ("UNVERIFIED" in str(c) and c.note)
    assert "Clin Orthop Relat Res (249):256-264" in CITATIONS["mirels1989"].journal
    assert CITATIONS["delong1988"].journal.startswith("Biometrics 44")
    assert CITATIONS["vickers2006"].journal.startswith("Med Decis Making 26")


# ---------------------------------------------------------------------------------------------
# Hand-computed scores.
# ---------------------------------------------------------------------------------------------


def test_peritrochanteric_lytic_functional_half_cortex_scores_11() -> None:
    # site 3 + pain 3 + lesion 3 + size 2 (0.5 lies in [1/3, 2/3]) = 11 -> fix
    s = MirelsScore.from_measurements("peritrochanteric", "functional", "lytic", 0.5)
    assert s.points == (3, 3, 3, 2)
    assert s.total == 11
    assert s.recommendation == "fix"
    assert s.site.derivation == "site 'peritrochanteric'"
    assert s.size.derivation == "size fraction 0.5 of the cortex/diameter"
    assert s.size.category == "1/3 - 2/3"
    assert s.size.measurement == 0.5
    assert not s.size.given_by_user


def test_points_given_directly_are_marked_given_by_user() -> None:
    # 2 + 1 + 1 + 1 = 5 -> irradiate
    s = MirelsScore.from_points(2, 1, 1, 1)
    assert s.total == 5 and s.recommendation == "irradiate"
    assert all(item.derivation == USER_GIVEN for item in s.items)
    assert all(item.given_by_user for item in s.items)
    assert s.site.category == "lower_limb"
    assert s.size.category == "< 1/3"


def test_mixed_points_and_measurements() -> None:
    # lower limb 2 + pain given 2 + mixed 2 + size fraction 0.2 -> 1 = 7 -> irradiate
    s = score_mirels(site="Lower Limb", pain=2, lesion="mixed", size_fraction=0.2)
    assert s.points == (2, 2, 2, 1)
    assert s.pain.derivation == USER_GIVEN
    assert s.lesion.derivation == "lesion 'mixed'"
    assert s.recommendation == "irradiate"
    # 8 exactly is clinical judgement: 3 + 2 + 2 + 1
    assert score_mirels(site=3, pain=2, lesion=2, size_points=1).recommendation == "judgement"


def test_aliases_normalise_to_the_table_categories() -> None:
    assert site_item("upper-extremity").category == "upper_limb"
    assert score_mirels(site=3, pain="Functional pain", lesion="osteolytic",
                        size_points=3).points == (3, 3, 3, 3)


@pytest.mark.parametrize(
    ("fraction", "points"),
    [
        (0.0, 1),
        (np.nextafter(1.0 / 3.0, 0.0), 1),
        (1.0 / 3.0, 2),  # the boundary itself scores 2
        (0.5, 2),
        (2.0 / 3.0, 2),
        (np.nextafter(2.0 / 3.0, 1.0), 3),
        (1.0, 3),
    ],
)
def test_size_fraction_boundaries(fraction: float, points: int) -> None:
    assert size_item(fraction=float(fraction)).points == points


def test_every_combination_totals_4_to_12_with_monotone_recommendation() -> None:
    rank = {"irradiate": 0, "judgement": 1, "fix": 2}
    seen = set()
    for pts in itertools.product((1, 2, 3), repeat=4):
        s = MirelsScore.from_points(*pts)
        assert s.total == sum(pts)
        seen.add((s.total, rank[s.recommendation]))
    totals = sorted(seen)
    assert [t for t, _ in totals] == list(range(4, 13))
    assert [r for _, r in totals] == sorted(r for _, r in totals)  # non-decreasing
    assert mirels_recommendation(9) == "fix" and mirels_recommendation(7) == "irradiate"


def test_to_dict_lists_items_total_and_recommendation() -> None:
    d = score_mirels(site="peritrochanteric", pain=1, lesion="blastic", size_points=2).to_dict()
    assert d["total"] == 7 and d["recommendation"] == "irradiate"
    assert d["items"]["site"]["derivation"] == "site 'peritrochanteric'"
    assert d["items"]["pain"]["derivation"] == USER_GIVEN


# ---------------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(site="knee", pain=1, lesion=1, size_points=1), "unknown Mirels site 'knee'"),
        (dict(site=1, pain="severe", lesion=1, size_points=1), "unknown Mirels pain 'severe'"),
        (dict(site=1, pain=1, lesion="cystic", size_points=1),
         "unknown Mirels lesion 'cystic'"),
        (dict(site=0, pain=1, lesion=1, size_points=1),
         "Mirels site points must be 1, 2 or 3, got 0"),
        (dict(site=1, pain=4, lesion=1, size_points=1),
         "Mirels pain points must be 1, 2 or 3, got 4"),
        (dict(site=1, pain=1, lesion=2.5, size_points=1),
         "Mirels lesion points must be an integer 1, 2 or 3, got 2.5"),
        (dict(site=True, pain=1, lesion=1, size_points=1),
         "Mirels site points must be an integer 1, 2 or 3, got True"),
        (dict(site=1, pain=1, lesion=1), "give exactly one of the Mirels size points"),
        (dict(site=1, pain=1, lesion=1, size_points=2, size_fraction=0.5),
         "give exactly one of the Mirels size points"),
        (dict(site=1, pain=1, lesion=1, size_fraction=1.2),
         "Mirels size fraction must be a number in [0, 1], got 1.2"),
        (dict(site=1, pain=1, lesion=1, size_fraction=float("nan")),
         "Mirels size fraction must be a number in [0, 1], got nan"),
        (dict(site=1, pain=1, lesion=1, size_fraction=-0.1),
         "Mirels size fraction must be a number in [0, 1], got -0.1"),
    ],
)
def test_invalid_items_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MirelsError, match=re.escape(message)) as info:
        score_mirels(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, OsteofeError) and info.value.hint


def test_size_fraction_hint_warns_about_percentages() -> None:
    with pytest.raises(MirelsError) as info:
        size_item(fraction=50.0)
    assert "not a percentage" in info.value.hint


def test_from_measurements_refuses_points() -> None:
    with pytest.raises(MirelsError, match="Mirels pain measurement must be a category string"):
        MirelsScore.from_measurements("peritrochanteric", 3, "lytic", 0.5)  # type: ignore[arg-type]


def test_item_and_score_consistency_checks() -> None:
    with pytest.raises(MirelsError, match="unknown Mirels item 'colour'"):
        MirelsItem("colour", 1, "x", USER_GIVEN)  # type: ignore[arg-type]
    site = site_item(3)
    message = "MirelsScore.pain must be a MirelsItem named 'pain'"
    with pytest.raises(MirelsError, match=re.escape(message)):
        MirelsScore(site, site, site, size_item(points=1))
    with pytest.raises(MirelsError, match=re.escape("Mirels total must be an integer in 4-12")):
        mirels_recommendation(13)


# ---------------------------------------------------------------------------------------------
# Load-to-strength ratio and ACI.
# ---------------------------------------------------------------------------------------------


def test_load_to_strength_ratio_hand_values() -> None:
    # stumbling 8 BW of a 70 kg patient = 8 * 70 * 9.81 = 5493.6 N on a 4000 N femur: phi 1.3734
    assert load_to_strength_ratio(2000.0, 4000.0) == 0.5
    assert load_to_strength_ratio(8 * 70 * 9.81, 4000.0) == pytest.approx(1.37340)
    phi = load_to_strength_ratio([1000.0, 3000.0], [2000.0, 3000.0])
    np.testing.assert_allclose(phi, [0.5, 1.0])
    assert THRESHOLDS["factor_of_risk"].positive(phi).tolist() == [False, True]


@pytest.mark.parametrize(
    ("applied", "failure", "message"),
    [
        (1000.0, 0.0, "failure load must be > 0 N, got 0 "),
        (-1.0, 1000.0, "applied load must be >= 0 N, got -1 "),
        (float("nan"), 1000.0, "a load is NaN or infinite"),
    ],
)
def test_load_to_strength_ratio_errors(applied: float, failure: float, message: str) -> None:
    with pytest.raises(RiskError, match=re.escape(message)):
        load_to_strength_ratio(applied, failure)


def test_aci_threshold_is_inclusive_at_30_mm() -> None:
    assert aci_positive([29.9, 30.0, 45.0]).tolist() == [False, True, True]
    with pytest.raises(RiskError, match="axial cortical involvement has non-finite values"):
        aci_positive([np.nan])
