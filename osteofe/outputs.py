"""Atomic result writing: a run either leaves complete results or none, and only its own.

Files are written into a staging folder beside the output folder and moved into place only
when the whole run has succeeded, ``result.json`` last, so that an interrupted run never
leaves a result that looks complete (:func:`staged_output`). Faults of the output folder are
:class:`OutputError` (exit code 3), never a raw ``OSError``:

- before any analysis, :func:`reserve_output` pre-flights the folder (an existing file, a
  file in its path, not writable, less than :func:`min_free_bytes` free: 200 MB or
  ``OSTEOFE_MIN_FREE_MB``) and locks it (:class:`OutputLock`, ``.<name>.lock`` beside it):
  a second run into the same folder at the same time is refused, and a killed run's lock
  vanishes with its process;
- an ``OSError`` while writing or moving the results (disk full, read-only) leaves the
  folder as it was;
- a rerun replaces the earlier run's files, including ones it does not write again
  (``owned`` patterns, e.g. a report of the earlier run), and keeps any other file;
- staging folders left by a killed process are deleted by the next run into the folder.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.atomic import atomic_write_text as _atomic_write_text
from meshing.errors import OsteofeError

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = [
    "MIN_FREE_MB",
    "RESULT_FILES",
    "OutputError",
    "OutputLock",
    "OutputReservation",
    "atomic_write_text",
    "check_output_dir",
    "clean_stale_staging",
    "guarded_output",
    "json_default",
    "min_free_bytes",
    "new_staging_folder",
    "publish_permissions",
    "reserve_output",
    "sha256_file",
    "staged_output",
    "write_json",
]

#: Default free space an output folder's file system must have before a run, MB.
MIN_FREE_MB = 200
#: Files ``osteofe strength`` (and ``osteofe report`` after it) may leave in a result folder:
#: a rerun removes the ones it does not write again.
RESULT_FILES: tuple[str, ...] = (
    "result.json", "fields.vtu", "model.inp", "model_*.inp", "femur_risk.png",
    "fields.xdmf", "fields.h5", "force_displacement_*.csv",
    "force_displacement_*.png", "report.html", "report.pdf", "report_page_*.png", "report.dcm",
)
#: Age after which an owner-less (older osteofe) staging folder counts as abandoned, s.
LEGACY_STAGING_STALE_S = 3600.0
_STAGING_OWNER = re.compile(r"^(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


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
    _atomic_write_text(path, text)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


# --------------------------------------------------------------------------------------------
# Output folders: pre-flight, lock, staging, publication.
# --------------------------------------------------------------------------------------------


class OutputError(OsteofeError):
    """The output folder cannot be used: a file, not writable, full, or in use by another run."""


def min_free_bytes() -> int:
    """Free space a run's output folder needs: ``OSTEOFE_MIN_FREE_MB`` or 200 MB (bytes).

    Raises:
        OutputError: If ``OSTEOFE_MIN_FREE_MB`` is set but not a non-negative number.
    """
    raw = os.environ.get("OSTEOFE_MIN_FREE_MB")
    if raw is None or not raw.strip():
        return MIN_FREE_MB * 1_000_000
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0.0 and value < float("inf")):
        raise OutputError(f"OSTEOFE_MIN_FREE_MB={raw!r} is not a non-negative number of MB",
                          hint=f"unset it (default {MIN_FREE_MB} MB) or give e.g. 500")
    return int(value * 1_000_000)


def _describe(exc: OSError) -> str:
    text = exc.strerror or type(exc).__name__
    return f"{text} ({exc.filename})" if exc.filename else text


def _write_error(out: Path, exc: OSError) -> OutputError:
    hints = {errno.ENOSPC: "free disk space or choose an --out on another disk",
             errno.EDQUOT: "free space within your disk quota or choose another --out",
             errno.EROFS: "the file system is read-only: choose a writable --out",
             errno.EACCES: "choose an --out you may write to (or fix its permissions)",
             errno.EPERM: "choose an --out you may write to (or fix its permissions)",
             errno.ENOTDIR: "a path component of --out is a file: choose another --out"}
    hint = hints.get(exc.errno or 0, "check --out (a writable folder with free space)")
    return OutputError(f"cannot write the results to {out}: {_describe(exc)}; nothing was "
                       "written", hint=hint)


def _name(out: Path) -> str:
    return out.name or "out"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def _staging_prefix(out: Path) -> str:
    """``.<name>.staging-<host>-<pid>-``: whose staging folder it is, for the clean-up."""
    return f".{_name(out)}.staging-{_host()}-{os.getpid()}-"


def new_staging_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` named as this process's staging folder.

    The name (``.<name>.staging-<host>-<pid>-...``) lets :func:`clean_stale_staging` delete
    one that a killed run left behind.
    """
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=_staging_prefix(out)))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def clean_stale_staging(out_dir: str | Path) -> list[Path]:
    """Delete staging folders of ``out_dir`` left by processes that died (e.g. SIGKILL).

    A staging folder is named ``.<name>.staging-<host>-<pid>-<random>``; it is stale when
    ``<host>`` is this machine and process ``<pid>`` no longer exists. Folders named the
    older way (``.<name>.staging-<random>``, no owner) are stale after
    :data:`LEGACY_STAGING_STALE_S` (1 hour). Folders of live processes, and of other
    machines sharing the file system, are left alone.

    Args:
        out_dir: The output folder (file or folder) whose staging folders to clean.

    Returns:
        The folders deleted.
    """
    out = Path(out_dir)
    parent = out.parent
    prefix = f".{_name(out)}.staging-"
    removed: list[Path] = []
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        match = _STAGING_OWNER.match(entry.name[len(prefix):])
        if match:
            stale = match["host"] == host and not _pid_alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > LEGACY_STAGING_STALE_S
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def check_output_dir(out_dir: str | Path, *, need_bytes: int | None = None) -> None:
    """Pre-flight an output folder before any analysis; touches nothing.

    Checks that ``out_dir`` is not an existing file (or broken link), that no component of
    its path is a file, that the folder (or the nearest existing folder above it) can be
    written to (tried by creating and removing a probe folder: this also catches read-only
    file systems and, unlike permission bits, works as root), and that its file system has
    ``need_bytes`` free (default :func:`min_free_bytes`, 200 MB: a femur's fields.vtu,
    pictures and report at 1-2 mm elements take 20-150 MB). A disk that fills up during
    the run is still caught at the final write (:func:`staged_output`).

    Args:
        out_dir: The output folder (created later, on success only).
        need_bytes: Free space required, bytes.

    Raises:
        OutputError: Naming the problem and the fix.
    """
    out = Path(out_dir)
    if os.path.lexists(out) and not out.is_dir():
        kind = "broken link" if out.is_symlink() and not out.exists() else "file"
        raise OutputError(f"output folder {out} is an existing {kind}, not a folder",
                          hint="give --out a folder path (it is created if missing), or "
                               "move the file away")
    folder = out.absolute()
    while not os.path.lexists(folder):
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot create output folder {out}: {folder} is a file, not a "
                          "folder", hint="choose an --out whose parent folders are folders")
    # Staging happens beside the folder; an existing folder's files are replaced.
    probes = [folder, folder.parent] if folder == out.absolute() else [folder]
    for place in probes:
        try:
            probe = tempfile.mkdtemp(dir=place, prefix=f".{_name(out)}.probe-")
            os.rmdir(probe)
        except OSError as exc:
            raise OutputError(f"output folder {out} is not writable: cannot create files in "
                              f"{place} ({exc.strerror or type(exc).__name__})",
                              hint="choose an --out you may write to, or fix its "
                                   "permissions (a read-only file system cannot be used)"
                              ) from None
    need = min_free_bytes() if need_bytes is None else need_bytes
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise OutputError(f"only {free / 1e6:.0f} MB free on the file system of {folder}; a "
                          f"run needs at least {need / 1e6:.0f} MB for its results",
                          hint="free disk space or choose an --out on another disk; the "
                               "environment variable OSTEOFE_MIN_FREE_MB sets the minimum")


class OutputLock:
    """An exclusive lock on an output folder: ``.<name>.lock`` beside it (``fcntl.flock``).

    The kernel releases a ``flock`` when its process ends, however it ends, so a killed run
    never blocks the next one; the file records the holder's host and pid for the message.
    The lock file is removed on :meth:`release`.
    """

    def __init__(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        self.out = out
        self.path = out.parent / f".{_name(out)}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse at once.

        Raises:
            OutputError: If another live process holds it, or the lock file cannot be made.
        """
        import fcntl

        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise _write_error(self.out, exc) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(f"output folder {self.out} is in use by another osteofe run "
                                  f"({holder}); this run was refused so that neither "
                                  "result is lost", hint="wait for that run to finish or "
                                  "choose another --out (a killed run releases the lock "
                                  f"at once; {self.path} records the holder)") from None
            except OSError as exc:
                os.close(fd)
                raise _write_error(self.out, exc) from exc
            # The holder before us may have removed the file after we opened it: retry on
            # the file now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
            self._fd = fd
            return
        raise OutputError(f"could not lock output folder {self.out}",
                          hint="another run keeps replacing its lock file: choose another --out")

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        with suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class OutputReservation:
    """A pre-flighted, locked output folder (see :func:`reserve_output`)."""

    def __init__(self, out_dir: str | Path, need_bytes: int | None = None) -> None:
        self.out = Path(out_dir)
        self.need_bytes = need_bytes
        self.lock = OutputLock(self.out)
        self._created: list[Path] = []

    def acquire(self) -> OutputReservation:
        """Pre-flight, create the parent folders, lock, clean stale staging folders.

        Raises:
            OutputError: If the folder cannot be used (nothing is left behind).
        """
        check_output_dir(self.out, need_bytes=self.need_bytes)
        parent = self.out.absolute().parent
        missing = []
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = parent.parent
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created.append(folder)
            self.lock.acquire()
        except OSError as exc:
            self._remove_created()
            raise _write_error(self.out, exc) from exc
        except BaseException:
            self._remove_created()
            raise
        clean_stale_staging(self.out)
        return self

    def release(self) -> None:
        """Unlock; remove the parent folders made by :meth:`acquire` if they stayed empty."""
        self.lock.release()
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            with suppress(OSError):
                folder.rmdir()
        self._created = []


@contextmanager
def reserve_output(out_dir: str | Path, comm: MPI.Comm | None = None, *,
                   need_bytes: int | None = None) -> Iterator[None]:
    """Pre-flight and lock ``out_dir`` for the duration of a run (rank 0 under MPI).

    Collective when ``comm`` has several ranks: rank 0 does the work and any error is
    raised on every rank (:func:`osteofe.parallel.on_root`).

    Raises:
        OutputError: If the folder is a file, not writable, on a full disk, or locked by
            another live run.
    """
    from osteofe.parallel import on_root

    reservation = OutputReservation(out_dir, need_bytes)
    if comm is None or comm.size == 1:
        held: OutputReservation | None = reservation.acquire()
    else:
        held = on_root(comm, reservation.acquire, broadcast=False)
    try:
        yield
    finally:
        if held is not None:
            held.release()


def guarded_output[**P, R](out_arg: str = "out_dir", comm_arg: str = "comm"
                           ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a collective run that writes one output folder.

    The wrapped call first pre-flights and locks the folder named by its ``out_arg``
    argument (:func:`reserve_output`, before any analysis) and runs inside
    :func:`osteofe.parallel.agree_on_error` on its ``comm_arg`` communicator: an exception
    on any rank ends every rank with the same error.

    Args:
        out_arg: Name of the output-folder parameter.
        comm_arg: Name of the communicator parameter (``None`` or absent: serial).
    """
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            from osteofe.parallel import agree_on_error

            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            comm = bound.arguments.get(comm_arg)
            if comm is None:
                with reserve_output(bound.arguments[out_arg]):
                    return fn(*args, **kwargs)
            with agree_on_error(comm), reserve_output(bound.arguments[out_arg], comm):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def _previous_outputs(out: Path, final_last: str) -> set[str]:
    """Names listed in ``outputs`` of the folder's earlier ``final_last`` JSON, if any."""
    if not final_last.endswith(".json"):
        return set()
    try:
        listed = json.loads((out / final_last).read_text(encoding="utf-8")).get("outputs")
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(listed, list):
        return set()
    return {n for n in listed if isinstance(n, str) and n and "/" not in n and "\\" not in n
            and not n.startswith(".")}


def _publish(stage: Path, out: Path, final_last: str, owned: Sequence[str]) -> None:
    """Move the staged files into ``out``, replacing the earlier run's; all or nothing."""
    out.mkdir(parents=True, exist_ok=True)
    new = sorted(stage.iterdir(), key=lambda p: p.name == final_last)
    names = {p.name for p in new}
    previous = _previous_outputs(out, final_last)
    old = [entry for entry in out.iterdir()
           if entry.name in names or entry.name in previous
           or any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in owned)]
    old.sort(key=lambda p: p.name != final_last)  # the earlier marker goes first
    backup = new_staging_folder(out)
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for entry in old:
            os.replace(entry, backup / entry.name)
            moved_old.append(entry.name)
        for entry in new:
            publish_permissions(entry)
            os.replace(entry, out / entry.name)
            moved_new.append(entry.name)
    except OSError as exc:
        restored = True
        for name in reversed(moved_new):
            try:
                os.replace(out / name, stage / name)
            except OSError:
                restored = False
        for name in reversed(moved_old):
            try:
                os.replace(backup / name, out / name)
            except OSError:
                restored = False
        error = _write_error(out, exc)
        if not restored:
            error.message += f" (the earlier results could not all be restored: see {backup})"
            raise error from exc
        shutil.rmtree(backup, ignore_errors=True)
        raise error from exc
    shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def staged_output(out_dir: str | Path, final_last: str = "result.json", *,
                  owned: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a staging folder; on success move its files into ``out_dir``.

    The staging folder ``.<name>.staging-<host>-<pid>-<random>`` sits beside ``out_dir``;
    ones left by a killed process are deleted first (:func:`clean_stale_staging`). On
    success the earlier run's files are moved aside (``final_last`` first), the new ones
    moved in (``final_last`` last), then the old ones deleted; if a move fails, both are
    moved back, so ``out_dir`` holds either the earlier complete results or the new ones.

    Args:
        out_dir: Destination folder (created on success only).
        final_last: Name of the file moved last (the marker of a complete result).
        owned: ``fnmatch`` patterns of files an earlier run may have left in ``out_dir``
            that belong to this kind of result: they are removed when this run does not
            write them (so that the folder holds exactly this run's files). Files listed in
            the earlier ``final_last``'s ``"outputs"`` (a JSON marker) count as owned too.
            Any other file in ``out_dir`` is kept.

    Yields:
        The staging folder to write into. On an exception it is deleted and ``out_dir`` is
        left as it was.

    Raises:
        OutputError: On any OSError while creating the staging folder, writing into it
            (``ENOSPC``, ``EROFS``, ...) or moving the results into place; ``out_dir`` is
            left as it was.
    """
    out = Path(out_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(out) and not out.is_dir():
            raise OutputError(f"output folder {out} is an existing file, not a folder",
                              hint="give --out a folder path, or move the file away")
        clean_stale_staging(out)
        stage = new_staging_folder(out)
    except OSError as exc:
        raise _write_error(out, exc) from exc
    try:
        try:
            yield stage
        except OSError as exc:
            raise _write_error(out, exc) from exc
        _publish(stage, out, final_last, owned)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
