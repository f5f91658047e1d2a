"""Reading a user's UTF-8 text file, with an error the user can act on.

One copy for every table reader (the cohort manifest, the risk cohort table).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import InputError

__all__ = ["read_utf8"]


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
