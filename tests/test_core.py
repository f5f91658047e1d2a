"""The shared helpers of core: keyed tables, read-only array records, JSON-plain copies,
UTF-8 table reading."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.citation import Citation
from core.errors import InputError
from core.keyed import keyed
from core.textfile import canonical_header, read_utf8
from core.types import ArrayRecord, FloatArray, freeze_arrays, json_plain


def test_keyed_keeps_the_order_is_read_only_and_refuses_a_key_twice():
    a, b = Citation("b2000", "B", 2000, "T", "J"), Citation("a1999", "A", 1999, "T", "J")
    table = keyed(a, b)
    assert list(table) == ["b2000", "a1999"] and table["a1999"] is b
    with pytest.raises(TypeError):
        table["c"] = a  # type: ignore[index]
    with pytest.raises(ValueError, match="'b2000'"):
        keyed(a, b, a)
    assert list(keyed(a, b, key=lambda c: c.authors)) == ["B", "A"]


@dataclass(frozen=True)
class _Record:
    values: FloatArray

    def __post_init__(self) -> None:
        freeze_arrays(self, "values")


def test_freeze_arrays_copies_and_makes_read_only():
    given = np.array([1.0, 2.0])
    record = _Record(given)
    given[0] = 9.0
    assert record.values.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="read-only"):
        record.values[0] = 3.0


@dataclass(frozen=True)
class _Measure(ArrayRecord):
    level_mm: float
    levels_mm: FloatArray
    count: int

    ARRAYS = ("levels_mm",)


def test_array_record_freezes_its_arrays_and_writes_every_field_in_order():
    m = _Measure(float("nan"), np.array([1.0, 2.5]), 3)
    assert not m.levels_mm.flags.writeable
    assert m.to_dict() == {"level_mm": None, "levels_mm": [1.0, 2.5], "count": 3}
    assert list(m.to_dict()) == ["level_mm", "levels_mm", "count"]


def test_json_plain_gives_what_json_writes():
    value = {1: (np.float32(0.5), np.arange(2)), "p": Path("/x"), "n": [np.int64(3), None]}
    plain = json_plain(value)
    assert plain == {"1": [0.5, [0, 1]], "p": "/x", "n": [3, None]}
    assert json.loads(json.dumps(plain)) == plain


def test_read_utf8_drops_the_bom_and_names_the_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n")
    assert read_utf8(path, what="table") == "a,b\n"
    path.write_bytes(b"a,\xff\n")
    with pytest.raises(InputError, match=r"table .*t\.csv is not UTF-8 text") as info:
        read_utf8(path, what="table", fix="save it as CSV UTF-8")
    assert info.value.hint == "save it as CSV UTF-8"
    with pytest.raises(InputError, match="cannot read table"):
        read_utf8(tmp_path / "missing.csv", what="table")


def test_canonical_header_spells_the_schema_and_refuses_empty_or_repeated_columns():
    names = ("case_id", "body_mass_kg", "lesion_labels")
    assert canonical_header("m.csv", [" Case_ID", "BODY_MASS_KG", "lesion_label", "notes "],
                            names, aliases={"lesion_label": "lesion_labels"}) == [
        "case_id", "body_mass_kg", "lesion_labels", "notes"]
    with pytest.raises(InputError, match=r"m\.csv: line 1: column 2 has an empty header"):
        canonical_header("m.csv", ["case_id", " "], names)
    with pytest.raises(InputError, match="column 'case_id' appears twice"):
        canonical_header("m.csv", ["case_id", "CASE_ID"], names)
