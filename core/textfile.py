"""Reading a user's UTF-8 text file, with an error the user can act on.

One copy for every table reader (the cohort manifest, the risk cohort table): the text and
the header row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from core.errors import InputError

__all__ = ["canonical_header", "read_utf8"]


def read_utf8(path: str | os.PathLike[str], *, what: str,
              error: type[InputError] = InputError,
              fix: str = "save it as UTF-8 text") -> str:
    """The text of a UTF-8 file; an Excel byte-order mark is accepted and dropped.

    Args:
        path: The file.
        what: What the file is, for the message (``"manifest"``, ``"cohort table"``).
        error: The error class to raise (an :class:`~core.errors.InputError`).
        fix: The hint when the file is not UTF-8.

    Raises:
        InputError: ``error``, naming the file, when it cannot be read or is not UTF-8.
    """
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}", "check the path") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {p} is not UTF-8 text: {exc.reason}", fix) from exc


def canonical_header(path: str | os.PathLike[str], header: Sequence[str], names: Iterable[str],
                     *, error: type[InputError] = InputError,
                     aliases: Mapping[str, str] | None = None) -> list[str]:
    """The column names of a table's header row, spelled as the table's schema spells them.

    A header cell matches a schema name whatever its letter case and surrounding blanks
    (``aliases`` maps further lower-case spellings to a lower-case name); an unknown name is
    kept as written (stripped).

    Args:
        path: The table, for the messages.
        header: The header row as read.
        names: The schema's column names.
        error: The error class to raise.
        aliases: Lower-case alternative spelling -> lower-case schema name.

    Raises:
        InputError: ``error``, at the first empty header cell or name given twice.
    """
    canonical = {name.lower(): name for name in names}
    columns: list[str] = []
    for i, raw in enumerate(header):
        key = raw.strip().lower()
        name = canonical.get((aliases or {}).get(key, key), raw.strip())
        if not name:
            raise error(f"{path}: line 1: column {i + 1} has an empty header",
                        "name every column (or delete the empty one)")
        if name in columns:
            raise error(f"{path}: line 1: column {name!r} appears twice",
                        "keep one column of each name")
        columns.append(name)
    return columns
