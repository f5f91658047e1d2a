"""Atomic result writing: a run either leaves complete results or none.

Files are written into a staging folder beside the output folder and moved into place only
when the whole run has succeeded, ``result.json`` last, so that an interrupted run never
leaves a result that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write_text",
    "json_default",
    "publish_permissions",
    "sha256_file",
    "staged_output",
    "write_json",
]


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex). For a folder, of its files' names and bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def json_default(value: Any) -> Any:
    """JSON encoder fallback for numpy scalars/arrays and paths."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_permissions(path: Path) -> None:
    """Give a file written through a private temp file the usual permissions (umask).

    ``tempfile`` creates files 0600 and folders 0700; results are meant to be shared.
    """
    mode = (0o777 if path.is_dir() else 0o666) & ~_umask()
    path.chmod(mode)
    if path.is_dir():
        for child in path.rglob("*"):
            child.chmod((0o777 if child.is_dir() else 0o666) & ~_umask())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        publish_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


@contextmanager
def staged_output(out_dir: str | Path, final_last: str = "result.json") -> Iterator[Path]:
    """Yield a staging folder; on success move its files into ``out_dir``.

    Args:
        out_dir: Destination folder (created on success only).
        final_last: Name of the file moved last (the marker of a complete result).

    Yields:
        The staging folder to write into. On an exception it is deleted and ``out_dir`` is
        left as it was.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        # A stale marker from an earlier run must not survive a partial move.
        (out / final_last).unlink(missing_ok=True)
        entries = sorted(stage.iterdir(), key=lambda p: p.name == final_last)
        for entry in entries:
            target = out / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            publish_permissions(entry)
            os.replace(entry, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
