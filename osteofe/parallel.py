"""MPI fault handling: an exception on any rank ends every rank, with one message and code.

Under ``mpiexec -n N`` an exception raised on one rank alone leaves the other ranks waiting
forever in their next collective call. Two tools prevent that:

- :func:`on_root` runs a function on rank 0 only and broadcasts its result *or any exception
  it raised* (not only :class:`~meshing.errors.OsteofeError`): every rank then raises the
  same error class with the same message.
- :func:`agree_on_error` guards a block that every rank runs and in which one rank may fail.
  At the end of the block, or at a :func:`checkpoint` inside it (every :func:`on_root` holds
  one, so that rank 0 never writes results after another rank failed), the ranks agree with
  a non-blocking reduction whether any of them failed; if so, all raise the error of the
  lowest failing rank. A rank that fails while
  another is stuck inside a collective call of the block (waiting for the failed rank) cannot
  get that agreement: after ``wait_s`` seconds (:data:`ERROR_WAIT_S`, 10 s) the failed rank
  prints ``error: <message>`` and calls ``MPI_Abort`` with the exit code the command line
  would have returned (:func:`exit_code`), which ends every rank and makes ``mpiexec``
  return that code.

An exception that cannot be pickled is sent as a stand-in of the same message: an
:class:`~meshing.errors.OsteofeError` as an ``OsteofeError`` with its message and hint,
anything else as :class:`RankError` (``"<Type>: <message>"``). The rank that raised it
re-raises the original, with its traceback.

Both are no-ops on a single-rank communicator (serial runs, cohort workers on
``MPI.COMM_SELF``).
"""

from __future__ import annotations

import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, overload

import numpy as np

from meshing.errors import OsteofeError

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = [
    "ERROR_WAIT_S",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "RankError",
    "abort",
    "agree_on_error",
    "checkpoint",
    "error_line",
    "exit_code",
    "on_root",
]

#: Exit codes of the command line (:mod:`osteofe.cli`): internal error, invalid input.
EXIT_INTERNAL, EXIT_INPUT = 1, 3
#: Seconds a failed rank waits for the others to reach the end of a guarded block.
ERROR_WAIT_S = 10.0
_POLL_S = 0.01
#: Seconds a failing rank leaves the launcher to forward its message before MPI_Abort.
_ABORT_DRAIN_S = 1.0


class RankError(Exception):
    """Stand-in for an unexpected exception of another rank that could not be pickled."""


def exit_code(exc: BaseException) -> int:
    """The command line's exit code for an exception: 3 for OsteofeError, 130 for ^C, else 1."""
    if isinstance(exc, OsteofeError):
        return EXIT_INPUT
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return EXIT_INTERNAL


def error_line(exc: BaseException) -> str:
    """The line the command line prints for an exception (``error: ...``)."""
    if isinstance(exc, OsteofeError):
        return f"error: {exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip with the same class and text, else a stand-in."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return exc
    except Exception:  # any failure means "not portable"
        pass
    if isinstance(exc, OsteofeError):
        return OsteofeError(exc.message, exc.hint)
    return RankError(f"{type(exc).__name__}: {exc}")


def pickle_exception(exc: BaseException) -> bytes:
    """``exc`` pickled for another process: itself if it survives the trip, else a stand-in."""
    return pickle.dumps(_portable(exc))


@overload
def on_root[T](comm: MPI.Comm, fn: Callable[[], T]) -> T: ...


@overload
def on_root[T](comm: MPI.Comm, fn: Callable[[], T], *, broadcast: Literal[True]) -> T: ...


@overload
def on_root[T](comm: MPI.Comm, fn: Callable[[], T], *, broadcast: bool) -> T | None: ...


def on_root[T](comm: MPI.Comm, fn: Callable[[], T], *, broadcast: bool = True) -> T | None:
    """Run ``fn`` on rank 0; broadcast its result, or any exception it raised, to all ranks.

    Collective: call on every rank of ``comm``.

    Args:
        comm: The communicator.
        fn: Work for rank 0 (not called on the other ranks).
        broadcast: Send the result to every rank (it must be picklable); with ``False`` the
            other ranks return ``None`` (errors are still broadcast).

    Returns:
        ``fn()``'s result (on the other ranks ``None`` when ``broadcast`` is False).

    Raises:
        Exception: Whatever ``fn`` raised, on every rank (rank 0 re-raises the original).
    """
    if comm.size == 1:
        return fn()
    checkpoint(comm)
    result: T | None = None
    error: BaseException | None = None
    if comm.rank == 0:
        try:
            result = fn()
        except Exception as exc:  # re-raised on every rank below
            error = exc
    payload: tuple[bool, Any] | None = None
    if comm.rank == 0:
        if error is not None:
            payload = (False, pickle_exception(error))
        else:
            payload = (True, result if broadcast else None)
    try:
        ok, value = comm.bcast(payload, root=0)
    except Exception as exc:  # the result itself could not be pickled: all ranks see it
        if comm.rank == 0:
            raise
        raise RankError(f"rank 0 could not broadcast its result ({type(exc).__name__})") from None
    if not ok:
        raise _mark_agreed(error if error is not None else pickle.loads(value))
    return result if comm.rank == 0 else value


def abort(comm: MPI.Comm, exc: BaseException) -> NoReturn:
    """Print the error (and the traceback of an internal one) on this rank; end every rank.

    The exit code of every rank and of ``mpiexec`` is :func:`exit_code` of ``exc``.
    """
    if not isinstance(exc, OsteofeError):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{error_line(exc)} [rank {comm.rank} of {comm.size}; ending all ranks]",
          file=sys.stderr, flush=True)
    # MPI_Abort kills the job at once; the launcher's proxy may not yet have forwarded
    # what this rank wrote to its pipe, and the user would see a bare exit code (seen on
    # a loaded 2-core CI machine). Give it time to drain.
    time.sleep(_ABORT_DRAIN_S)
    comm.Abort(exit_code(exc))
    raise SystemExit(exit_code(exc))  # pragma: no cover - Abort does not return


@dataclass
class _Guard:
    """An :func:`agree_on_error` block: its private communicator."""

    private: MPI.Comm


#: Open :func:`agree_on_error` blocks by communicator handle, innermost last.
_GUARDS: dict[int, list[_Guard]] = {}
_AGREED = "_osteofe_agreed"


def _key(comm: MPI.Comm) -> int:
    return int(comm.py2f())


def _mark_agreed(exc: BaseException) -> BaseException:
    with suppress(AttributeError, TypeError):
        setattr(exc, _AGREED, True)
    return exc


def _is_agreed(exc: BaseException) -> bool:
    return bool(getattr(exc, _AGREED, False))


def _agree(comm: MPI.Comm, guard: _Guard, error: Exception | None,
           wait_s: float) -> BaseException | None:
    """One agreement round: the error of the lowest failing rank, or None if none failed."""
    from mpi4py import MPI

    mine = np.array([comm.rank if error is not None else comm.size], dtype=np.int64)
    lowest = np.empty(1, dtype=np.int64)
    request = guard.private.Iallreduce(mine, lowest, op=MPI.MIN)
    if error is None:
        request.Wait()
    else:
        deadline = time.monotonic() + wait_s
        while not request.Test():
            if time.monotonic() > deadline:
                abort(comm, error)
            time.sleep(_POLL_S)
    first = int(lowest[0])
    if first == comm.size:
        return None
    mine_sent = comm.rank == first and error is not None
    payload = guard.private.bcast(pickle_exception(error) if mine_sent and error is not None
                                  else None, root=first)
    agreed = error if mine_sent and error is not None else pickle.loads(payload)
    return _mark_agreed(agreed)


def checkpoint(comm: MPI.Comm, *, wait_s: float = ERROR_WAIT_S) -> None:
    """Inside :func:`agree_on_error`: raise here, on every rank, an earlier failure of any rank.

    Collective. A rank that failed in the block is waiting at the block's end; this meets
    it there, so the other ranks stop before doing more (e.g. writing results). Outside
    a block, or on one rank, it does nothing. :func:`on_root` calls it first.
    """
    guards = _GUARDS.get(_key(comm)) if comm.size > 1 else None
    if not guards:
        return
    error = _agree(comm, guards[-1], None, wait_s)
    if error is not None:
        raise error


@contextmanager
def agree_on_error(comm: MPI.Comm, *, wait_s: float = ERROR_WAIT_S) -> Iterator[None]:
    """Guard a block that every rank runs: if any rank fails, every rank raises its error.

    Collective: every rank of ``comm`` must enter the block. A failing rank waits at the
    block's end for the others to reach the end too, or a :func:`checkpoint` inside the
    block (:func:`on_root` holds one); there the ranks agree on the lowest failing rank,
    whose exception, broadcast, is raised on every rank (the failing rank re-raises its
    own). A failed rank that does not hear from every other rank within ``wait_s`` seconds
    (one is stuck in a collective call that waits for it) ends the job with :func:`abort`.

    Only ``Exception`` is handled; ``KeyboardInterrupt`` and ``SystemExit`` pass through.

    Args:
        comm: The communicator.
        wait_s: Seconds a failed rank waits for the others before aborting.
    """
    if comm.size == 1:
        yield
        return
    # The agreement runs on a private duplicate, so that it cannot be confused with a
    # collective of the block that another rank is still inside.
    guard = _Guard(comm.Dup())
    stack = _GUARDS.setdefault(_key(comm), [])
    stack.append(guard)
    error: Exception | None = None
    try:
        yield
    except Exception as exc:
        error = exc
    finally:
        stack.remove(guard)
        if not stack:
            _GUARDS.pop(_key(comm), None)
    try:
        if error is not None and _is_agreed(error):
            raise error  # every rank raises it already (on_root, checkpoint)
        agreed = _agree(comm, guard, error, wait_s)
    finally:
        guard.private.Free()
    if agreed is not None:
        raise agreed
