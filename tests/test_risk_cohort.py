"""Cohort CSV table: hand-written tables, round trips, and one clear error per problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from meshing.errors import InputError
from risk import (
    USER_GIVEN,
    Cohort,
    CohortError,
    StrengthRiskModel,
    grouped_cross_val_predict,
    read_cohort,
    score_mirels,
    write_cohort,
)

HEADER = (
    "patient_id,side,body_mass_kg,failure_load_N,mirels_site,mirels_pain,mirels_lesion,"
    "mirels_size,size_fraction,aci_mm,fractured,follow_up_months,primary"
)
ROWS = [
    # 4905 N / (50 kg * 9.81) = 10 BW; Mirels 3 + 3 + 3 + 2 (0.5) = 11
    "P01,left,50,4905,peritrochanteric,functional,lytic,,0.5,42,1,3.5,breast",
    # 3924 N / (80 * 9.81) = 5 BW; Mirels 2 + 1 + 1 + 1 = 5 (points given)
    "P02,right,80,3924,2,1,1,1,,12.5,0,24,prostate",
    # same patient, other femur: allowed (key is patient_id + side); ACI unknown;
    # 7848 N / (80 * 9.81) = 10 BW; Mirels 2 + 1 + 2 + 2 = 7
    "P02,left,80,7848,lower_limb,mild,mixed,2,,,0,24,prostate",
]


def _write(tmp_path: Path, header: str = HEADER, rows: list[str] | None = None) -> Path:
    path = tmp_path / "cohort.csv"
    path.write_text("\n".join([header, *(ROWS if rows is None else rows)]) + "\n")
    return path


def test_read_hand_written_table(tmp_path: Path) -> None:
    cohort = read_cohort(_write(tmp_path))
    assert len(cohort) == 3 and cohort.n_fractured == 1
    np.testing.assert_array_equal(cohort.patient_id, ["P01", "P02", "P02"])
    np.testing.assert_array_equal(cohort.side, ["left", "right", "left"])
    np.testing.assert_allclose(cohort.failure_load_BW, [10.0, 5.0, 10.0])
    np.testing.assert_array_equal(cohort.fractured, [1, 0, 0])
    np.testing.assert_array_equal(cohort.aci_mm, [42.0, 12.5, np.nan])
    assert cohort.ctra_reduction is None
    np.testing.assert_array_equal(cohort.mirels_total, [11, 5, 7])
    assert cohort.mirels is not None
    first, second, third = cohort.mirels
    assert first.size.derivation == "size fraction 0.5 of the cortex/diameter"
    assert first.site.derivation == "site 'peritrochanteric'"
    assert all(item.derivation == USER_GIVEN for item in second.items)
    assert third.size.derivation == USER_GIVEN and third.lesion.measurement == "mixed"
    assert cohort.extra == {"primary": ("breast", "prostate", "prostate")}
    np.testing.assert_array_equal(cohort.groups, ["P01", "P02", "P02"])
    assert cohort.source == str(tmp_path / "cohort.csv")
    with pytest.raises(ValueError, match="read-only"):
        cohort.body_mass_kg[0] = 1.0


def test_body_weight_only_is_converted_to_newton(tmp_path: Path) -> None:
    # 2.5 BW * 70 kg * 9.81 = 1716.75 N
    path = _write(tmp_path, "patient_id,side,body_mass_kg,failure_load_BW,fractured,"
                  "follow_up_months", ["A,R,70,2.5,1,6"])
    cohort = read_cohort(path)
    np.testing.assert_allclose(cohort.failure_load_N, [1716.75])
    assert cohort.side[0] == "right" and cohort.mirels is None and cohort.aci_mm is None


def test_both_loads_must_agree_within_one_percent(tmp_path: Path) -> None:
    header = ("patient_id,side,body_mass_kg,failure_load_N,failure_load_BW,fractured,"
              "follow_up_months")
    # 4905 N / (50 * 9.81) = 10.0 BW: 10.05 is within 1%, 10.2 is not
    assert read_cohort(_write(tmp_path, header, ["A,left,50,4905,10.05,0,12"])).n_fractured == 0
    with pytest.raises(CohortError, match=re.escape(
            "line 2 (patient 'A'), column 'failure_load_BW': 10.2 BW disagrees with "
            "failure_load_N / (body_mass_kg * 9.81) = 10 BW")):
        read_cohort(_write(tmp_path, header, ["A,left,50,4905,10.2,0,12"]))


def test_write_read_round_trip(tmp_path: Path) -> None:
    cohort = read_cohort(_write(tmp_path))
    out = write_cohort(cohort, tmp_path / "copy.csv")
    again = read_cohort(out)
    assert again.equals(cohort)
    assert again.mirels == cohort.mirels  # derivations preserved, not just points
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.csv", "copy.csv"]


def test_in_memory_cohort_round_trips_exact_floats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 6
    mass = rng.uniform(50, 90, n)
    load = rng.uniform(2000, 9000, n)
    cohort = Cohort(
        patient_id=np.array([f"p{i}" for i in range(n)]),
        side=np.array(["left", "right"] * 3),
        body_mass_kg=mass,
        failure_load_N=load,
        failure_load_BW=load / (mass * 9.81),
        fractured=np.array([0, 1, 0, 0, 1, 0]),
        follow_up_months=rng.uniform(1, 30, n),
        ctra_reduction=np.array([0.1, 0.5, np.nan, 0.2, 0.4, 0.0]),
        mirels=tuple(
            score_mirels(site=3, pain="moderate", lesion="lytic", size_fraction=f)
            for f in rng.uniform(0, 1, n)
        ),
    )
    again = read_cohort(write_cohort(cohort, tmp_path / "c.csv"))
    assert again.equals(cohort)
    np.testing.assert_array_equal(again.failure_load_N, load)  # bit-identical


def test_write_replaces_atomically_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    cohort = read_cohort(_write(tmp_path))
    target = tmp_path / "out.csv"
    target.write_text("old")
    write_cohort(cohort, target)
    assert target.read_text().startswith("patient_id,side")
    with pytest.raises(CohortError, match="cannot write cohort table"):
        write_cohort(cohort, tmp_path / "missing-folder" / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.csv", "out.csv"]


def test_cohort_features_feed_grouped_cross_validation(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        bw = rng.uniform(2, 10)
        fx = int(i == 0 or rng.random() < 1 / (1 + np.exp(-(4 - bw))))
        rows.append(f"P{i // 2},{'left' if i % 2 else 'right'},70,{bw * 70 * 9.81:.3f},"
                    f"{rng.uniform(0, 60):.1f},{fx},12")
    header = "patient_id,side,body_mass_kg,failure_load_N,aci_mm,fractured,follow_up_months"
    cohort = read_cohort(_write(tmp_path, header, rows))
    X = cohort.features("failure_load_BW", "aci_mm")
    assert list(X) == ["failure_load_BW", "aci_mm"]
    p = grouped_cross_val_predict(StrengthRiskModel(penalty="l2"), X, cohort.fractured,
                                  cohort.groups, n_splits=4)
    assert p.shape == (40,) and np.all((p > 0) & (p < 1))
    with pytest.raises(CohortError, match="the cohort has no 'ctra_reduction' column"):
        cohort.features("ctra_reduction")
    with pytest.raises(CohortError, match="unknown feature 'age'"):
        cohort.features("age")


# ---------------------------------------------------------------------------------------------
# One clear error per problem, naming line, patient and column.
# ---------------------------------------------------------------------------------------------


def _bad(row_index: int, old: str, new: str) -> list[str]:
    rows = list(ROWS)
    assert old in rows[row_index]
    rows[row_index] = rows[row_index].replace(old, new, 1)
    return rows


@pytest.mark.parametrize(
    ("rows", "message", "hint"),
    [
        (_bad(0, ",50,", ",abc,"),
         "line 2 (patient 'P01'), column 'body_mass_kg': 'abc' is not a number", "kg"),
        (_bad(0, ",50,", ",-70,"),
         "line 2 (patient 'P01'), column 'body_mass_kg': value -70 is out of range [20, 350] kg",
         "kg"),
        (_bad(1, ",3924,", ",3.924,"),
         "line 3 (patient 'P02'), column 'failure_load_N': value 3.924 is out of range "
         "[50, 50000] N", "not kN"),
        (_bad(0, ",0.5,", ",50,"),
         "line 2 (patient 'P01'), column 'size_fraction': value 50 is out of range [0, 1]",
         "not a percentage"),
        (_bad(0, ",1,3.5,", ",2,3.5,"),
         "line 2 (patient 'P01'), column 'fractured': value 2 is out of range [0, 1]", "1"),
        (_bad(0, ",1,3.5,", ",0.5,3.5,"),
         "line 2 (patient 'P01'), column 'fractured': '0.5' is not 0 or 1", "1"),
        (_bad(0, ",3.5,", ",,"),
         "line 2 (patient 'P01'), column 'follow_up_months': value is missing", "follow-up"),
        (_bad(2, "P02,left", "P02,right"),
         "line 4 (patient 'P02'), column 'patient_id': duplicated femur: patient 'P02' right "
         "already on line 3", "(patient_id, side)"),
        (_bad(0, "left", "middle"),
         "line 2 (patient 'P01'), column 'side': 'middle' is not left or right", "left"),
        (_bad(0, "P01", ""), "line 2, column 'patient_id': value is missing", "patient id"),
        (_bad(0, "peritrochanteric", "knee"),
         "line 2 (patient 'P01'), column 'mirels_site': unknown Mirels site 'knee'",
         "peritrochanteric"),
        (_bad(0, "functional", "2.5"),
         "line 2 (patient 'P01'), column 'mirels_pain': '2.5' is not whole points 1-3",
         "points"),
        (_bad(1, ",2,1,1,1,", ",2,1,1,,"),
         "line 3 (patient 'P02'), column 'mirels_size': neither mirels_size nor size_fraction",
         "size"),
        (_bad(0, ",,0.5,", ",3,0.5,"),
         "line 2 (patient 'P01'), column 'mirels_size': size points 3 disagree with "
         "size_fraction 0.5 (2 points)", "blank"),
        (_bad(1, ",12.5,", ",1e400,"),
         "line 3 (patient 'P02'), column 'aci_mm': '1e400' is not a finite number", "blank"),
        (_bad(1, ",12.5,", ",12;5,"),
         "line 3 (patient 'P02'), column 'aci_mm': '12;5' is not a number", "mm"),
        (_bad(1, ",12.5,0,", ',"12,5",0,'),
         "line 3 (patient 'P02'), column 'aci_mm': '12,5' is not a number", "decimal"),
        (_bad(1, ",prostate", ",prostate,extra"),
         "line 3: 14 cells for 13 columns", "unquoted commas"),
    ],
)
def test_bad_cells_raise_one_clear_error(
    tmp_path: Path, rows: list[str], message: str, hint: str
) -> None:
    with pytest.raises(CohortError, match=re.escape(message)) as info:
        read_cohort(_write(tmp_path, rows=rows))
    assert hint in info.value.hint
    assert str(tmp_path / "cohort.csv") in info.value.message
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.replace("fractured,", ""), "missing column(s) ['fractured']"),
        (HEADER.replace("failure_load_N", "failure_load_kN"),
         "missing column 'failure_load_N' or 'failure_load_BW'"),
        (HEADER.replace("mirels_pain,", ""),
         "Mirels columns are incomplete, missing ['mirels_pain']"),
        (HEADER.replace("primary", "aci_mm"), "line 1: column 'aci_mm' appears twice"),
        (HEADER.replace("primary", ""), "line 1: column 13 has an empty header"),
    ],
)
def test_bad_headers(tmp_path: Path, header: str, message: str) -> None:
    rows = [r.rsplit(",", 1)[0] + "," for r in ROWS] if header.endswith(",") else ROWS
    with pytest.raises(CohortError, match=re.escape(message)):
        read_cohort(_write(tmp_path, header, rows))


def test_headers_are_case_insensitive_and_bom_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "cohort.csv"
    path.write_text("\ufeff" + HEADER.upper() + "\n" + "\n".join(ROWS) + "\n\n", encoding="utf-8")
    cohort = read_cohort(path)
    assert len(cohort) == 3 and "PRIMARY" in cohort.extra  # unknown names kept as given


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CohortError, match="the file is empty"):
        read_cohort(empty)
    with pytest.raises(CohortError, match="the table has a header but no rows"):
        read_cohort(_write(tmp_path, HEADER, []))
    with pytest.raises(CohortError, match="cannot read cohort table"):
        read_cohort(tmp_path / "nope.csv")


def test_in_memory_cohort_checks_lengths() -> None:
    def build(fractured: list[int], follow_up: list[float]) -> Cohort:
        return Cohort(np.array(["a", "b"]), np.array(["left", "left"]), np.array([70.0, 70.0]),
                      np.array([3000.0, 3000.0]), np.array([4.0, 4.0]), np.array(fractured),
                      np.array(follow_up))

    assert len(build([0, 1], [12.0, 6.0])) == 2
    with pytest.raises(CohortError, match="cohort columns have different lengths"):
        build([0, 1], [12.0])
    with pytest.raises(CohortError, match="fractured must be 0 or 1"):
        build([0, 2], [12.0, 6.0])
