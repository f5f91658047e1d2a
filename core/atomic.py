"""Atomic file writes: the one temporary-file-and-rename routine of the project.

A result file is either absent, the earlier complete version, or the new complete version:
never half written. The temporary file lives in the target's folder (``os.replace`` is
atomic only within one file system), has a fresh unguessable name, and is created with the
user's umask (``tempfile.mkstemp`` would make it 0600, and results are meant to be shared).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``target`` that replaces it when the block succeeds.

    The file is created empty (exclusively, umask permissions) before the block, so that a
    library writing by name (gmsh, ITK, VTK) finds a file of the user's permissions. On an
    exception the temporary file is removed and ``target`` is left as it was.

    Args:
        target: The final file.
        suffix: Ending of the temporary name; a writer that picks the format from the ending
            (ITK, pyvista) needs the real one, e.g. ``".nii.gz"``.

    Yields:
        The temporary path to write.

    Raises:
        OSError: If the folder does not exist or is not writable (nothing is left behind).
    """
    final = Path(target)
    tmp = final.parent / f".{final.name}.{secrets.token_hex(6)}.tmp{suffix}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes, *,
                       fsync: bool = False) -> Path:
    """Write ``data`` to ``target`` atomically.

    Args:
        target: The final file.
        data: Its whole content.
        fsync: Flush to the disk before the rename (for files that must survive a crash).

    Returns:
        ``target`` as a path.
    """
    final = Path(target)
    with atomic_path(final) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return final


def atomic_write_text(target: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      newline: str | None = None, fsync: bool = False) -> Path:
    """Write ``text`` to ``target`` atomically (``newline`` as for :func:`open`)."""
    final = Path(target)
    with atomic_path(final) as tmp, open(tmp, "w", encoding=encoding, newline=newline) as fh:
        fh.write(text)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return final
