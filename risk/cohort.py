"""The cohort table: one row per femur with FE strength, clinical scores and the outcome.

CSV schema (header names case-insensitive; blank lines ignored; ``.`` as decimal separator):

====================  ========  =================================================  ============
column                required  content                                            range
====================  ========  =================================================  ============
patient_id            yes       patient identifier (text)                          non-empty
side                  yes       ``left`` or ``right`` (``l``/``r`` accepted)       -
body_mass_kg          yes       body mass, kg                                      20-350
failure_load_N        one of    FE failure load, N                                 50-50000
failure_load_BW       the two   FE failure load in body weights (m * 9.81 N)       0.1-60
mirels_site           no (*)    points 1-3 or ``upper_limb``/``lower_limb``/        -
                                ``peritrochanteric``
mirels_pain           no (*)    points 1-3 or ``mild``/``moderate``/``functional``  -
mirels_lesion         no (*)    points 1-3 or ``blastic``/``mixed``/``lytic``       -
mirels_size           no (*)    size points 1-3                                    1-3
size_fraction         no (*)    fraction of the cortex/diameter involved           0-1
aci_mm                no        axial cortical involvement, mm (blank = unknown)   0-500
ctra_reduction        no        CTRA rigidity loss as a fraction (blank = unknown) 0-1
fractured             yes       1 = pathological fracture during follow-up, else 0  0/1
follow_up_months      yes       follow-up, months                                  0-600
====================  ========  =================================================  ============

(*) Mirels items are all-or-nothing: when any Mirels column is present, every row needs site,
pain, lesion and a size (``mirels_size`` points or ``size_fraction``; when both are given they
must agree). Other columns are kept as text in :attr:`Cohort.extra` (covariates).

Rows are femurs: a patient may appear twice (left and right), so the key is
(``patient_id``, ``side``) and duplicated keys are refused; use ``patient_id`` as the group of
grouped cross-validation. Ranges are plausibility bounds that catch unit mistakes (kN for N,
percent for fractions), not literature values. Every problem raises one :class:`CohortError`
naming the file, line, patient and column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from core.atomic import atomic_write_text as _atomic_write_text
from core.keyed import keyed
from core.textfile import canonical_header, read_utf8
from core.types import FloatArray, IntArray
from fea.loads import GRAVITY_M_S2  # 1 BW = m * 9.81 N, defined once (DESIGN.md 3)
from risk.errors import CohortError, MirelsError
from risk.mirels import MirelsScore, lesion_item, pain_item, site_item, size_item

__all__ = [
    "BW_TOLERANCE",
    "COLUMNS",
    "GRAVITY_M_S2",
    "Cohort",
    "ColumnSpec",
    "atomic_write_text",
    "read_cohort",
    "write_cohort",
]

StrArray = npt.NDArray[np.str_]

#: Largest accepted relative difference between failure_load_BW and failure_load_N / (m g).
BW_TOLERANCE = 0.01


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the cohort CSV.

    Attributes:
        name: Header name (canonical spelling).
        required: Whether the column must be present.
        low: Smallest plausible value (numeric columns), inclusive.
        high: Largest plausible value (numeric columns), inclusive.
        unit: Unit of the values (``""`` for none).
        description: What the column holds.
    """

    name: str
    required: bool
    low: float | None = None
    high: float | None = None
    unit: str = ""
    description: str = ""


#: The schema, in the order :func:`write_cohort` writes the columns.
COLUMNS: Mapping[str, ColumnSpec] = keyed(
    ColumnSpec("patient_id", True, description="patient identifier"),
    ColumnSpec("side", True, description="left or right femur"),
    ColumnSpec("body_mass_kg", True, 20.0, 350.0, "kg", "body mass"),
    ColumnSpec("failure_load_N", False, 50.0, 50000.0, "N", "FE failure load"),
    ColumnSpec("failure_load_BW", False, 0.1, 60.0, "BW", "FE failure load / (m g)"),
    ColumnSpec("mirels_site", False, description="Mirels site: points or category"),
    ColumnSpec("mirels_pain", False, description="Mirels pain: points or category"),
    ColumnSpec("mirels_lesion", False, description="Mirels lesion: points or category"),
    ColumnSpec("mirels_size", False, 1.0, 3.0, "points", "Mirels size points"),
    ColumnSpec("size_fraction", False, 0.0, 1.0, "", "fraction of cortex involved"),
    ColumnSpec("aci_mm", False, 0.0, 500.0, "mm", "axial cortical involvement"),
    ColumnSpec("ctra_reduction", False, 0.0, 1.0, "", "CTRA rigidity loss fraction"),
    ColumnSpec("fractured", True, 0.0, 1.0, "", "fracture during follow-up (0/1)"),
    ColumnSpec("follow_up_months", True, 0.0, 600.0, "months", "follow-up"),
    key=attrgetter("name"),
)

_MIRELS_COLUMNS = ("mirels_site", "mirels_pain", "mirels_lesion", "mirels_size", "size_fraction")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, renamed.

    Readers never see a half-written file, and an existing file is kept if writing fails.

    Args:
        path: Destination file; its folder must exist.
        text: Content (written as UTF-8, newlines as given).

    Returns:
        ``path``.

    Raises:
        OSError: If the folder does not exist or is not writable.
    """
    return _atomic_write_text(path, text, newline="", fsync=True)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Cohort:
    """A cohort of femurs as numpy columns (row i of every column is femur i).

    Attributes:
        patient_id: Patient ids, shape (n,), str.
        side: ``"left"``/``"right"``, shape (n,), str.
        body_mass_kg: Body mass, shape (n,), float64, kg.
        failure_load_N: FE failure load, shape (n,), float64, N.
        failure_load_BW: FE failure load in body weights (``N / (m 9.81)``), shape (n,),
            float64.
        fractured: Outcome, shape (n,), int64, 0/1.
        follow_up_months: Follow-up, shape (n,), float64, months.
        aci_mm: Axial cortical involvement, shape (n,), float64, mm, NaN where unknown;
            ``None`` when the table has no such column.
        ctra_reduction: CTRA rigidity loss fraction, shape (n,), float64, NaN where unknown;
            ``None`` when absent.
        mirels: Mirels score per femur (with each item's derivation); ``None`` when absent.
        extra: Other columns, name -> raw text values (n,).
        source: Where the table was read from (``""`` if built in memory).
    """

    patient_id: StrArray
    side: StrArray
    body_mass_kg: FloatArray
    failure_load_N: FloatArray
    failure_load_BW: FloatArray
    fractured: IntArray
    follow_up_months: FloatArray
    aci_mm: FloatArray | None = None
    ctra_reduction: FloatArray | None = None
    mirels: tuple[MirelsScore, ...] | None = None
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.patient_id)
        set_ = object.__setattr__
        set_(self, "patient_id", _readonly(np.asarray(self.patient_id, dtype=np.str_)))
        set_(self, "side", _readonly(np.asarray(self.side, dtype=np.str_)))
        for name in ("body_mass_kg", "failure_load_N", "failure_load_BW", "follow_up_months",
                     "aci_mm", "ctra_reduction"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, _readonly(np.asarray(value, dtype=np.float64)))
        set_(self, "fractured", _readonly(np.asarray(self.fractured, dtype=np.int64)))
        if self.mirels is not None:
            set_(self, "mirels", tuple(self.mirels))
        set_(self, "extra", MappingProxyType({k: tuple(v) for k, v in self.extra.items()}))
        lengths = {
            name: len(getattr(self, name))
            for name in ("side", "body_mass_kg", "failure_load_N", "failure_load_BW",
                         "fractured", "follow_up_months", "aci_mm", "ctra_reduction", "mirels")
            if getattr(self, name) is not None
        }
        lengths.update({f"extra[{k!r}]": len(v) for k, v in self.extra.items()})
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise CohortError(
                f"cohort columns have different lengths: patient_id {n}, {bad}",
                "give every column one value per femur",
            )
        if not np.all(np.isin(self.fractured, (0, 1))):
            raise CohortError("fractured must be 0 or 1", "encode fractured femurs as 1")

    def __len__(self) -> int:
        return int(self.patient_id.size)

    @property
    def n_fractured(self) -> int:
        """Number of fractured femurs."""
        return int(self.fractured.sum())

    @property
    def groups(self) -> StrArray:
        """Group id per femur for grouped cross-validation: the patient id."""
        return self.patient_id

    @property
    def mirels_total(self) -> IntArray | None:
        """Mirels total per femur, shape (n,), int64; ``None`` without Mirels columns."""
        if self.mirels is None:
            return None
        return np.array([s.total for s in self.mirels], dtype=np.int64)

    def features(self, *names: str) -> dict[str, FloatArray]:
        """Numeric columns by name, as a dict ready for a risk model's ``fit``/``predict``.

        Args:
            *names: Column names: ``failure_load_N``, ``failure_load_BW``, ``body_mass_kg``,
                ``follow_up_months``, ``aci_mm``, ``ctra_reduction``, ``mirels_total``, or an
                extra column whose values are all numbers.

        Returns:
            Name -> float64 array (n,).

        Raises:
            CohortError: If a name is unknown, absent from this cohort, or not numeric.
        """
        out: dict[str, FloatArray] = {}
        for name in names:
            if name == "mirels_total":
                totals = self.mirels_total
                value: FloatArray | None = None if totals is None else totals.astype(np.float64)
            elif name in ("failure_load_N", "failure_load_BW", "body_mass_kg",
                          "follow_up_months", "aci_mm", "ctra_reduction"):
                value = getattr(self, name)
            elif name in self.extra:
                try:
                    value = np.array([float(v) for v in self.extra[name]], dtype=np.float64)
                except ValueError as exc:
                    raise CohortError(
                        f"extra column {name!r} is not numeric: {exc}",
                        "encode covariates as numbers",
                    ) from exc
            else:
                raise CohortError(
                    f"unknown feature {name!r}",
                    "use failure_load_N, failure_load_BW, body_mass_kg, aci_mm, "
                    "ctra_reduction, mirels_total or an extra column",
                )
            if value is None:
                raise CohortError(
                    f"the cohort has no {name!r} column", "add it to the cohort table"
                )
            out[name] = np.array(value, dtype=np.float64)
        return out

    def equals(self, other: Cohort) -> bool:
        """Value equality (NaN equal to NaN; ``source`` ignored).

        Args:
            other: Another cohort.

        Returns:
            Whether every column holds the same values.
        """
        def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            if a.dtype.kind == "f" and b.dtype.kind == "f":
                return bool(np.array_equal(a, b, equal_nan=True))
            return bool(np.array_equal(a, b))

        arrays = ("patient_id", "side", "body_mass_kg", "failure_load_N", "failure_load_BW",
                  "fractured", "follow_up_months", "aci_mm", "ctra_reduction")
        return (
            all(same(getattr(self, a), getattr(other, a)) for a in arrays)
            and self.mirels == other.mirels
            and dict(self.extra) == dict(other.extra)
        )


# --------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------


class _Row:
    """Cell parsing with errors that name file, line, patient and column."""

    def __init__(self, path: str, line: int, cells: Mapping[str, str]) -> None:
        self.path = path
        self.line = line
        self.cells = cells
        self.pid = cells.get("patient_id", "").strip()

    def error(self, column: str, problem: str, hint: str) -> CohortError:
        who = f" (patient {self.pid!r})" if self.pid else ""
        return CohortError(f"{self.path}: line {self.line}{who}, column {column!r}: {problem}",
                           hint)

    def text(self, column: str) -> str:
        return self.cells.get(column, "").strip()

    def number(self, column: str, *, blank_ok: bool = False) -> float:
        raw = self.text(column)
        spec = COLUMNS[column]
        if raw == "":
            if blank_ok:
                return math.nan
            raise self.error(column, "value is missing", f"give the {spec.description}")
        try:
            value = float(raw)
        except ValueError:
            hint = ("use '.' as decimal separator" if "," in raw
                    else f"give the {spec.description} as a number"
                    + (f" in {spec.unit}" if spec.unit else ""))
            raise self.error(column, f"{raw!r} is not a number", hint) from None
        if not math.isfinite(value):
            raise self.error(column, f"{raw!r} is not a finite number",
                             "leave the cell blank if unknown" if blank_ok
                             else f"give the {spec.description}")
        if spec.low is not None and spec.high is not None and not (
            spec.low <= value <= spec.high
        ):
            unit = f" {spec.unit}" if spec.unit else ""
            raise self.error(
                column,
                f"value {value:g} is out of range [{spec.low:g}, {spec.high:g}]{unit}",
                _RANGE_HINTS.get(column, f"check the {spec.description} and its unit"),
            )
        return value


_RANGE_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "failure_load_N": "give the failure load in newtons (not kN)",
        "failure_load_BW": "give the failure load in body weights (failure_load_N / (m g))",
        "body_mass_kg": "give the body mass in kg",
        "size_fraction": "give the fraction (0.5 for half the cortex), not a percentage",
        "ctra_reduction": "give the reduction as a fraction (0.35 for 35%)",
        "fractured": "encode fractured as 1 and not fractured as 0",
        "aci_mm": "give the axial cortical involvement in mm",
        "follow_up_months": "give the follow-up in months",
    }
)


def _mirels_for_row(row: _Row) -> MirelsScore:
    items = []
    for column, build in (("mirels_site", site_item), ("mirels_pain", pain_item),
                          ("mirels_lesion", lesion_item)):
        raw = row.text(column)
        if raw == "":
            raise row.error(column, "value is missing",
                            "give every Mirels item for every femur (points 1-3 or a category)")
        value: str | int = raw
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            if not number.is_integer():
                raise row.error(column, f"{raw!r} is not whole points 1-3",
                                "give points 1, 2 or 3 or a category name")
            value = int(number)
        try:
            items.append(build(value))
        except MirelsError as exc:
            raise row.error(column, exc.message, exc.hint) from None
    points_raw = row.text("mirels_size")
    fraction_raw = row.text("size_fraction")
    if points_raw == "" and fraction_raw == "":
        raise row.error("mirels_size", "neither mirels_size nor size_fraction is given",
                        "give the size points (1-3) or the size fraction (0-1)")
    points = None
    if points_raw != "":
        value_p = row.number("mirels_size")
        if not value_p.is_integer():
            raise row.error("mirels_size", f"{points_raw!r} is not whole points 1-3",
                            "give size points 1, 2 or 3")
        points = int(value_p)
    if fraction_raw != "":
        size = size_item(fraction=row.number("size_fraction"))
        if points is not None and points != size.points:
            raise row.error(
                "mirels_size",
                f"size points {points} disagree with size_fraction {fraction_raw} "
                f"({size.points} points)",
                "correct one of the two, or leave mirels_size blank",
            )
    else:
        size = size_item(points=points)
    return MirelsScore(items[0], items[1], items[2], size)


def _canonical_headers(path: str, header: Sequence[str]) -> list[str]:
    return canonical_header(path, header, COLUMNS, error=CohortError)


def _parse(text: str, path: str) -> Cohort:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise CohortError(f"{path}: the file is empty",
                          "write a header line: " + ",".join(
                              n for n, c in COLUMNS.items() if c.required)) from None
    names = _canonical_headers(path, header)
    missing = [n for n, c in COLUMNS.items() if c.required and n not in names]
    if missing:
        raise CohortError(f"{path}: missing column(s) {missing}",
                          f"the header must contain {[n for n, c in COLUMNS.items() if c.required]}"
                          " and failure_load_N or failure_load_BW")
    if "failure_load_N" not in names and "failure_load_BW" not in names:
        raise CohortError(f"{path}: missing column 'failure_load_N' or 'failure_load_BW'",
                          "give the FE failure load in N or in body weights")
    has_mirels = any(c in names for c in _MIRELS_COLUMNS)
    if has_mirels:
        lacking = [c for c in ("mirels_site", "mirels_pain", "mirels_lesion") if c not in names]
        if "mirels_size" not in names and "size_fraction" not in names:
            lacking.append("mirels_size or size_fraction")
        if lacking:
            raise CohortError(f"{path}: Mirels columns are incomplete, missing {lacking}",
                              "give all four Mirels items (or no Mirels column at all)")
    extra_names = [n for n in names if n not in COLUMNS]

    cols: dict[str, list[object]] = {n: [] for n in (
        "patient_id", "side", "body_mass_kg", "failure_load_N", "failure_load_BW", "fractured",
        "follow_up_months", "aci_mm", "ctra_reduction", "mirels")}
    extra: dict[str, list[str]] = {n: [] for n in extra_names}
    seen: dict[tuple[str, str], int] = {}
    for cells_list in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells_list):
            continue
        if len(cells_list) != len(names):
            raise CohortError(
                f"{path}: line {line}: {len(cells_list)} cells for {len(names)} columns",
                "check for unquoted commas or missing cells in this row",
            )
        row = _Row(path, line, dict(zip(names, cells_list, strict=True)))
        if row.pid == "":
            raise row.error("patient_id", "value is missing", "give every femur a patient id")
        side = row.text("side").lower()
        side = {"l": "left", "r": "right"}.get(side, side)
        if side not in ("left", "right"):
            raise row.error("side", f"{row.text('side')!r} is not left or right",
                            "use 'left' or 'right'")
        key = (row.pid, side)
        if key in seen:
            raise row.error("patient_id", f"duplicated femur: patient {row.pid!r} {side} "
                            f"already on line {seen[key]}",
                            "give each (patient_id, side) once")
        seen[key] = line
        mass = row.number("body_mass_kg")
        newton = row.number("failure_load_N", blank_ok=True) if "failure_load_N" in names \
            else math.nan
        bw = row.number("failure_load_BW", blank_ok=True) if "failure_load_BW" in names \
            else math.nan
        weight = mass * GRAVITY_M_S2
        if math.isnan(newton) and math.isnan(bw):
            column = "failure_load_N" if "failure_load_N" in names else "failure_load_BW"
            raise row.error(column, "no failure load given",
                            "give failure_load_N or failure_load_BW")
        if math.isnan(newton):
            newton = bw * weight
        elif math.isnan(bw):
            bw = newton / weight
        elif abs(bw - newton / weight) > BW_TOLERANCE * abs(bw):
            raise row.error(
                "failure_load_BW",
                f"{bw:g} BW disagrees with failure_load_N / (body_mass_kg * 9.81) = "
                f"{newton / weight:.4g} BW",
                "correct one of the two (or leave failure_load_BW blank to derive it)",
            )
        fractured = row.number("fractured")
        if fractured not in (0.0, 1.0):
            raise row.error("fractured", f"{row.text('fractured')!r} is not 0 or 1",
                            _RANGE_HINTS["fractured"])
        cols["patient_id"].append(row.pid)
        cols["side"].append(side)
        cols["body_mass_kg"].append(mass)
        cols["failure_load_N"].append(newton)
        cols["failure_load_BW"].append(bw)
        cols["fractured"].append(int(fractured))
        cols["follow_up_months"].append(row.number("follow_up_months"))
        cols["aci_mm"].append(row.number("aci_mm", blank_ok=True))
        cols["ctra_reduction"].append(row.number("ctra_reduction", blank_ok=True))
        if has_mirels:
            cols["mirels"].append(_mirels_for_row(row))
        for name in extra_names:
            extra[name].append(row.text(name))
    if not cols["patient_id"]:
        raise CohortError(f"{path}: the table has a header but no rows", "add one row per femur")
    return Cohort(
        patient_id=np.array(cols["patient_id"], dtype=np.str_),
        side=np.array(cols["side"], dtype=np.str_),
        body_mass_kg=np.array(cols["body_mass_kg"], dtype=np.float64),
        failure_load_N=np.array(cols["failure_load_N"], dtype=np.float64),
        failure_load_BW=np.array(cols["failure_load_BW"], dtype=np.float64),
        fractured=np.array(cols["fractured"], dtype=np.int64),
        follow_up_months=np.array(cols["follow_up_months"], dtype=np.float64),
        aci_mm=np.array(cols["aci_mm"], dtype=np.float64) if "aci_mm" in names else None,
        ctra_reduction=(np.array(cols["ctra_reduction"], dtype=np.float64)
                        if "ctra_reduction" in names else None),
        mirels=tuple(cols["mirels"]) if has_mirels else None,  # type: ignore[arg-type]
        extra={k: tuple(v) for k, v in extra.items()},
        source=path,
    )


def read_cohort(path: str | Path) -> Cohort:
    """Read and validate a cohort CSV (schema in the module docstring).

    Args:
        path: The CSV file (UTF-8, an Excel byte-order mark is accepted).

    Returns:
        The cohort; failure loads in both N and BW (one derived from the other with
        ``1 BW = body_mass_kg * 9.81 N`` when only one is given).

    Raises:
        CohortError: On the first problem: unreadable file, missing or duplicated columns,
            a cell that is missing, not a number, out of range or inconsistent, or a
            duplicated (patient_id, side); the message names the line, patient and column.
    """
    p = Path(path)
    text = read_utf8(p, what="cohort table", error=CohortError,
                     fix="save the table as CSV UTF-8")
    return _parse(text, str(p))


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def _item_cell(score: MirelsScore, name: Literal["site", "pain", "lesion"]) -> str:
    item = getattr(score, name)
    return str(item.measurement) if item.measurement is not None else str(item.points)


def write_cohort(cohort: Cohort, path: str | Path) -> Path:
    """Write a cohort as CSV, atomically; :func:`read_cohort` reads it back unchanged.

    Mirels items are written as their category when they were measured and as points when
    given; a measured size writes both ``mirels_size`` and ``size_fraction``. Floats use the
    shortest exact representation; unknown values are blank.

    Args:
        cohort: The cohort.
        path: Destination CSV; its folder must exist.

    Returns:
        The path written.

    Raises:
        CohortError: If the file cannot be written.
    """
    header = ["patient_id", "side", "body_mass_kg", "failure_load_N", "failure_load_BW"]
    if cohort.mirels is not None:
        header += list(_MIRELS_COLUMNS)
    if cohort.aci_mm is not None:
        header.append("aci_mm")
    if cohort.ctra_reduction is not None:
        header.append("ctra_reduction")
    header += ["fractured", "follow_up_months", *cohort.extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i in range(len(cohort)):
        row = [str(cohort.patient_id[i]), str(cohort.side[i]), _fmt(cohort.body_mass_kg[i]),
               _fmt(cohort.failure_load_N[i]), _fmt(cohort.failure_load_BW[i])]
        if cohort.mirels is not None:
            s = cohort.mirels[i]
            fraction = s.size.measurement
            row += [_item_cell(s, "site"), _item_cell(s, "pain"), _item_cell(s, "lesion"),
                    str(s.size.points),
                    "" if fraction is None else repr(float(fraction))]
        if cohort.aci_mm is not None:
            row.append(_fmt(cohort.aci_mm[i]))
        if cohort.ctra_reduction is not None:
            row.append(_fmt(cohort.ctra_reduction[i]))
        row += [str(int(cohort.fractured[i])), _fmt(cohort.follow_up_months[i])]
        row += [values[i] for values in cohort.extra.values()]
        writer.writerow(row)
    p = Path(path)
    try:
        return atomic_write_text(p, buffer.getvalue())
    except OSError as exc:
        raise CohortError(f"cannot write cohort table {p}: {exc.strerror}",
                          "check that the folder exists and is writable") from exc
