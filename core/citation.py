"""The literature source of an empirical constant or a method (one class for every stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Citation"]


@dataclass(frozen=True)
class Citation:
    """A literature source of an empirical constant or of a method.

    Attributes:
        key: Short identifier, e.g. ``"morgan2003"``.
        authors: Author list as printed (surname + initials).
        year: Publication year (``None`` for entries that are conventions, not papers).
        title: Article title.
        journal: Journal, volume(issue):pages.
        doi: DOI without the ``https://doi.org/`` prefix, or ``None`` if it has none or is
            unknown.
        verified: ``False`` when a value or the attribution could not be checked against the
            paper or its abstract (then ``note`` says what is uncertain).
        note: What exactly is taken from the source, or what is uncertain.
    """

    key: str
    authors: str
    year: int | None
    title: str
    journal: str
    doi: str | None = None
    verified: bool = True
    note: str = ""

    def __str__(self) -> str:
        if self.year is None:
            return self.title
        doi = f" doi:{self.doi}" if self.doi else ""
        flag = "" if self.verified else f" [UNVERIFIED: {self.note}]"
        return f"{self.authors} ({self.year}). {self.title}. {self.journal}.{doi}{flag}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the formatted ``reference`` string."""
        return {
            "key": self.key,
            "reference": str(self),
            "doi": self.doi,
            "verified": self.verified,
            "note": self.note,
        }
