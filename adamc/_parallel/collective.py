"""MPI plumbing shared by adamc.distributed and the distributed minimize: the
communicator, collective agreement on errors and inputs, and aborting a job.

Imports without mpi4py and says how to install it when used.
"""
from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["RankError", "abort_on_error"]

_INSTALL_HINT = ("adamc.distributed needs mpi4py and an MPI library: install them with "
                 "pip install 'adamc[mpi]' (mpi4py and MPICH, both from PyPI)")

# Exceptions re-raised on every rank with their type (the nearest of these in the
# failing exception's MRO); any other exception becomes RankError.
_SAME_TYPE = (FloatingPointError, ValueError, TypeError, KeyError, IndexError, MemoryError,
              OSError)


class RankError(RuntimeError):
    """An exception raised on one rank, re-raised on every rank.

    Attributes
    ----------
    rank : int
        The (lowest) rank where the original exception was raised.
    """

    def __init__(self, message: str, rank: int):
        super().__init__(message)
        self.rank = rank


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return MPI


def _communicator(comm: Any) -> Any:
    MPI = _mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py intracommunicator such as MPI.COMM_WORLD, "
                        f"got {type(comm).__name__}")
    return comm


@contextmanager
def abort_on_error(comm: Any = None) -> Iterator[None]:
    """End the whole MPI job when the block raises on any rank.

    An exception on one rank would leave the other ranks waiting forever in their next
    collective call. Inside this context an exception prints
    ``adamc.distributed: rank R of N failed`` and its traceback to stderr, then calls
    ``comm.Abort(1)``, which ends every process of the job (``mpiexec`` exits with a
    non-zero status). ``python -m mpi4py script.py`` does the same for a whole script.

    Examples
    --------
    >>> from adamc.distributed import abort_on_error
    >>> with abort_on_error():           # doctest: +SKIP
    ...     run_my_fit()
    """
    comm = _communicator(comm)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            raise  # a normal exit
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"adamc.distributed: rank {comm.Get_rank()} of {comm.Get_size()} "
                         f"failed; aborting the MPI job\n{text}")
        sys.stderr.flush()
        comm.Abort(1)
        raise  # not reached: Abort does not return


# ----------------------------------------------------------------------------------
# Collective agreement

def _agree(comm: Any, error: BaseException | None) -> None:
    """Collective: when any rank passes an error, raise on every rank. The lowest
    failing rank's exception is re-raised as the nearest of ``_SAME_TYPE`` in its
    class hierarchy (a FileNotFoundError as OSError, a CheckpointError as
    ValueError), with a message naming the rank; any other exception becomes
    RankError. On the failing rank the new exception is chained to the original.

    An exception that an agreement already raised (on every rank) passes through a
    later one unchanged: a driver that agrees on whatever its loop raised must not
    report the loop's agreed error as a new failure of every rank."""
    report = None
    if error is not None:
        report = getattr(error, _AGREED, None) or (
            None, 1, [c.__name__ for c in type(error).__mro__], type(error).__name__,
            str(error))
    reports = comm.allgather(report)
    failed = [(r, rep) for r, rep in enumerate(reports) if rep is not None]
    if not failed:
        return
    agreed = [rep for _, rep in failed if rep[0] is not None]
    if agreed:
        if error is not None and getattr(error, _AGREED, None) == agreed[0]:
            raise error
        rank, count, mro, name, text = agreed[0]  # a rank that had caught it: the same
    else:
        rank, (_, _, mro, name, text) = failed[0]
        count = len(failed)
    where = "on rank" if count == 1 else f"on {count} ranks, first on rank"
    cls = next((c for n in mro for c in _SAME_TYPE if c.__name__ == n), None)
    if cls is not None:
        new: BaseException = cls(f"{where} {rank}: {text}" if text else f"{where} {rank}")
        new.rank = rank  # type: ignore[attr-defined]
    else:
        new = RankError(f"{name} {where} {rank}: {text}", rank)
    setattr(new, _AGREED, (rank, count, mro, name, text))
    raise new from error


# the attribute that marks an exception raised by _agree: (rank, ranks that failed,
# the original exception's class names, its name, its message)
_AGREED = "_adamc_agreed"


def _check_same(comm: Any, fields: list[tuple[str, str]], what: str) -> None:
    """Collective: raise the same ValueError on every rank when ``fields`` (name,
    fingerprint pairs) differ between ranks."""
    everyone = comm.allgather(fields)
    mine = everyone[0]
    for rank, theirs in enumerate(everyone[1:], 1):
        for (name, v0), (other, vr) in zip(mine, theirs):
            if name != other or v0 != vr:
                theirs_text = vr if name == other else f"{other}: {vr}"
                raise ValueError(f"inconsistent {what} across ranks: {name}: {v0} on rank "
                                 f"0, {theirs_text} on rank {rank}; every rank must pass "
                                 f"the same")
        if len(theirs) != len(mine):
            raise ValueError(f"inconsistent {what} across ranks: rank 0 describes "
                             f"{len(mine)} items, rank {rank} {len(theirs)}")
