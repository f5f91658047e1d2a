"""'Did you mean' suggestions for misspelt names (options, load cases, label names)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "suggest"]


def suggest(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice closest to ``word``, or None when none is close.

    Case is ignored; a choice that contains ``word`` or is contained in it (``fall`` for
    ``sideways_fall``) counts as close when no choice is closer by :mod:`difflib`'s ratio.

    Args:
        word: What the user typed.
        choices: The valid names.
        cutoff: Least :class:`difflib.SequenceMatcher` ratio in [0, 1] for a close name.

    Returns:
        The valid name as spelt in ``choices``, or None.
    """
    names = [c for c in choices if c]
    lowered = {c.lower(): c for c in names}
    key = word.lower().lstrip("-")
    stripped = {c.lower().lstrip("-"): c for c in names}
    if key in stripped:
        return stripped[key]
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)
    if close:
        return lowered[close[0]]
    contained = [c for k, c in stripped.items() if len(k) >= 3 and (k in key or key in k)]
    return min(contained, key=len) if len(contained) >= 1 and key else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = suggest(word, choices)
    return f"; did you mean {close!r}?" if close is not None and close != word else ""
