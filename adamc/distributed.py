"""Data-parallel fitting and sharded optimizer state over MPI (through mpi4py).

``DistributedOptimizer`` wraps any adamc optimizer. Every rank computes gradients on
its own data and calls ``step(grads)``; the gradients are averaged over the ranks and
every rank ends the step with the same parameters.

- ``mode="replicated"``: every rank holds the whole optimizer state and updates all
  parameters.
- ``mode="sharded"`` (ZeRO stage 1): the parameters are seen as one flat buffer per
  dtype, split into one contiguous shard per rank. A rank keeps the state of its own
  shard only (state memory per rank about 1/size), updates it with the same kernels,
  and the updated shards are all-gathered.

The reduction is reproducible by default: every rank receives the gradients of its
shard from all ranks (one ``Alltoallv``) and adds them in rank order, so the result
does not depend on the MPI library's reduction algorithm or on the process layout,
and both modes give the same bits. ``reproducible=False`` uses ``Allreduce`` /
``Reduce_scatter`` instead.

Failures are collective: wrong or inconsistent input on any rank raises the same
exception on every rank before anything is updated, and an exception in user code
called by adamc (the objective and callback of :func:`adamc.minimize` with
``options={"comm": comm}``) is re-raised on every rank as :class:`RankError`.
For user code outside adamc's calls, :func:`abort_on_error` ends the whole job with a
message naming the failing rank instead of leaving the others waiting.

Requires ``pip install 'adamc[mpi]'`` (mpi4py and MPICH from PyPI); this module
imports without them and says how to install them when used.
"""
from __future__ import annotations

import math
import sys
import traceback
import zlib
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from . import _kernels
from ._format import _fingerprint, _write
from .optim import Optimizer

__all__ = ["DistributedOptimizer", "RankError", "abort_on_error"]

# Shards begin at multiples of this many elements of the flat buffer, and the global
# gradient norm is summed in blocks of this size: the blocks lie wholly on one rank,
# so their sums, and the norm, are the same bits for every mode.
BLOCK = 1024
# The reproducible reduce-scatter receives at most about this many elements per
# round (4 Mi: 16 MiB of float32) whatever the size, up to 4096 ranks (beyond,
# size * BLOCK). Every rank must use the same value (checked).
RECV_ELEMENTS = 1 << 22

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
    RankError. On the failing rank the new exception is chained to the original."""
    report = None
    if error is not None:
        report = ([c.__name__ for c in type(error).__mro__], type(error).__name__, str(error))
    failed = [(r, rep) for r, rep in enumerate(comm.allgather(report)) if rep is not None]
    if not failed:
        return
    rank, (mro, name, text) = failed[0]
    where = "on rank" if len(failed) == 1 else f"on {len(failed)} ranks, first on rank"
    cls = next((c for n in mro for c in _SAME_TYPE if c.__name__ == n), None)
    if cls is not None:
        new: BaseException = cls(f"{where} {rank}: {text}" if text else f"{where} {rank}")
        new.rank = rank  # type: ignore[attr-defined]
    else:
        new = RankError(f"{name} {where} {rank}: {text}", rank)
    raise new from error


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


# ----------------------------------------------------------------------------------
# Flat buffers and the reproducible reduction

def _shard_bounds(total: int, size: int) -> list[int]:
    """Shard r is [b[r], b[r+1]): whole blocks, spread as evenly as possible."""
    blocks = -(-total // BLOCK)
    return [min(total, (blocks * r // size) * BLOCK) for r in range(size + 1)]


def _blocks(n: int) -> int:
    return -(-n // BLOCK)


class _Bucket:
    """The parameters of one dtype as one flat index space, split into shards.

    ``source`` is this rank's contribution to a reduction: the gradient array itself
    when the bucket has one parameter (no copy), else ``send``, into which the
    gradients are packed. ``send`` receives the averaged result (its own shard in
    sharded mode). ``recv`` receives pieces of this rank's shard from every rank."""

    def __init__(self, dtype: np.dtype, members: list[int], params: list[np.ndarray],
                 rank: int, size: int, sharded: bool = False, reproducible: bool = True):
        MPI = _mpi()
        self.dtype = np.dtype(dtype)
        self.mpitype = MPI.FLOAT if self.dtype == np.float32 else MPI.DOUBLE
        self.members = members
        self.sizes = [params[i].size for i in members]
        self.starts = [int(s) for s in np.cumsum([0] + self.sizes[:-1])]
        self.total = sum(self.sizes)
        self.bounds = _shard_bounds(self.total, size)
        self.counts = [self.bounds[r + 1] - self.bounds[r] for r in range(size)]
        self.displs = self.bounds[:-1]
        self.lo, self.hi = self.bounds[rank], self.bounds[rank + 1]
        self.count = self.hi - self.lo
        # A sharded single-array bucket only ever holds its own shard: the gradient is
        # sent from the caller's array and the parameter is all-gathered in place.
        own_shard_only = sharded and len(members) == 1
        self.base = self.lo if own_shard_only else 0
        self.send = np.zeros(self.count if own_shard_only else self.total, self.dtype)
        self.source = self.send  # what this rank contributes to the next reduction
        self.shard = self.send[self.lo - self.base:self.hi - self.base]
        self.norm_sums = np.zeros(_blocks(self.count if sharded else self.total))
        self.rounds: list[tuple] = []
        if size == 1:
            self.recv = np.zeros(0, self.dtype)
        elif reproducible:
            self._plan_rounds(rank, size)
        else:  # Reduce_scatter receives into the shard, or here when send is the source
            self.recv = np.zeros(0 if own_shard_only or not sharded else self.count,
                                 self.dtype)

    def _plan_rounds(self, rank: int, size: int) -> None:
        """The reproducible reduce-scatter in rounds: in round k every rank sends to
        rank j the k-th piece (of at most ``chunk`` elements) of j's shard, so that
        the receive buffer holds size * chunk elements, not a whole gradient."""
        chunk = max(BLOCK, RECV_ELEMENTS // size)
        self.recv = np.zeros(size * min(chunk, self.count), self.dtype)
        for k in range(max(-(-c // chunk) for c in self.counts)):
            begin = [min(k * chunk, c) for c in self.counts]
            scounts = [min(chunk, c - b) for c, b in zip(self.counts, begin)]
            sdispls = [d + b for d, b in zip(self.displs, begin)]
            mine = scounts[rank]
            rows = self.recv[:size * mine].reshape(size, mine)
            self.rounds.append(([scounts, sdispls], [self.recv, [mine] * size,
                                                     [r * mine for r in range(size)],
                                                     self.mpitype],
                                rows, self.shard[begin[rank]:begin[rank] + mine]))

    def pieces(self, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
        """(param index, begin, end, flat offset) of the parts of the parameters in
        [lo, hi) of the flat space, in parameter order."""
        out = []
        for i, s, n in zip(self.members, self.starts, self.sizes):
            a, b = max(lo, s), min(hi, s + n)
            if a < b:
                out.append((i, a - s, b - s, a))
        return out

    def nbytes(self) -> int:
        return self.send.nbytes + self.recv.nbytes


def _uniform(weights: Sequence[float] | None) -> bool:
    return weights is None or all(w == weights[0] for w in weights)


class _Reducer:
    """(Weighted) means of flat buffers over the ranks: reproducibly (each shard from
    every rank by Alltoallv, added in rank order) or with MPI's own reductions."""

    def __init__(self, comm: Any, reproducible: bool):
        self.MPI = _mpi()
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.reproducible = reproducible

    def reduce_shard(self, b: _Bucket, weights: Sequence[float] | None = None) -> None:
        """b.shard = the mean over the ranks of their b.source[b.lo:b.hi]."""
        if self.size == 1:
            if b.source is not b.send:
                _kernels.copy_into(b.send, b.source)
            return
        if self.reproducible:
            scale = None if weights is None or _uniform(weights) else \
                [b.dtype.type(w) for w in weights]
            for (scounts, sdispls), recv_spec, rows, out in b.rounds:
                self.comm.Alltoallv([b.source, scounts, sdispls, b.mpitype], recv_spec)
                if scale is not None:
                    for r in range(self.size):
                        np.multiply(rows[r], scale[r], out=rows[r])
                # rank order, whatever the layout: the bits depend on the number of
                # ranks only
                np.add(rows[0], rows[1], out=out)
                for r in range(2, self.size):
                    np.add(out, rows[r], out=out)
        else:
            assert _uniform(weights), "weighted means use the reproducible reduction"
            if b.source is b.send:  # the shard lies inside the source: receive apart
                self.comm.Reduce_scatter([b.source, b.mpitype], [b.recv, b.count, b.mpitype],
                                         recvcounts=b.counts, op=self.MPI.SUM)
                np.copyto(b.shard, b.recv)
            else:
                self.comm.Reduce_scatter([b.source, b.mpitype],
                                         [b.shard, b.count, b.mpitype],
                                         recvcounts=b.counts, op=self.MPI.SUM)
        self._divide(b.shard, weights)

    def gather_shards(self, b: _Bucket) -> None:
        """Every rank's b.shard into everyone's b.send."""
        if self.size > 1:
            self.comm.Allgatherv(self.MPI.IN_PLACE, [b.send, b.counts, b.displs, b.mpitype])

    def allreduce_mean(self, b: _Bucket, weights: Sequence[float] | None = None) -> None:
        """b.send = the mean of b.source over the ranks, on every rank."""
        if self.size == 1:
            if b.source is not b.send:
                _kernels.copy_into(b.send, b.source)
            return
        if self.reproducible:
            self.reduce_shard(b, weights)
            self.gather_shards(b)
        else:
            assert _uniform(weights), "weighted means use the reproducible reduction"
            send = self.MPI.IN_PLACE if b.source is b.send else [b.source, b.mpitype]
            self.comm.Allreduce(send, [b.send, b.mpitype], op=self.MPI.SUM)
            self._divide(b.send, weights)

    def _divide(self, out: np.ndarray, weights: Sequence[float] | None) -> None:
        total = self.size if weights is None or _uniform(weights) else sum(weights)
        np.divide(out, out.dtype.type(total), out=out)


# ----------------------------------------------------------------------------------
# The optimizer wrapper

_NO_OPTIONS = {"max_grad_norm": None, "clip_value": None, "nonfinite": "propagate"}


class DistributedOptimizer:
    """Data-parallel steps of an adamc optimizer over the ranks of an MPI communicator.

    Parameters
    ----------
    optimizer : adamc.Optimizer
        The optimizer to distribute, created identically on every rank (same
        parameters, values, hyperparameters and state: checked). The wrapper copies
        what it needs (in sharded mode only its own shard of the state) and never
        steps ``optimizer`` itself; drop your reference to it to free its state,
        e.g. ``opt = DistributedOptimizer(adamc.Adam(x), mode="sharded")``.
    comm : mpi4py.MPI.Intracomm, optional
        The ranks taking part (default ``MPI.COMM_WORLD``). Construction, ``step``,
        ``consolidate`` and ``adamc.save`` are collective: every rank of ``comm``
        must call them.
    mode : {"replicated", "sharded"}, optional
        ``"replicated"`` (default): every rank holds all the optimizer state and
        updates every parameter. ``"sharded"`` (ZeRO stage 1): each rank holds the
        state of its shard of the flat parameters only and updates it; the
        parameters are then all-gathered.
    reproducible : bool, optional
        Average the gradients in rank order (default True): the same bits on any
        cluster and MPI library with the same number of ranks, in both modes.
        False uses MPI's Allreduce / Reduce_scatter, whose summation order depends
        on the library and the process layout (with 2 ranks the bits are the same
        anyway); the parameters then stay identical across ranks as long as the
        library gives every rank the same Allreduce result (MPICH and Open MPI do,
        the MPI standard recommends it without requiring it).

    Notes
    -----
    ``max_grad_norm``, ``clip_value`` and ``nonfinite`` of ``optimizer`` are applied
    to the averaged gradient by the wrapper: the global norm is summed in blocks of
    ``BLOCK`` elements in a fixed order, and a NaN or infinity on any rank's shard
    raises or skips on every rank. Hyperparameters may be changed between steps
    through :attr:`param_groups`, identically on every rank (checked at each step).
    Schedules from :mod:`adamc.schedules` are compared by value; a Python callable as
    ``lr`` is compared by name only, so it must compute the same values on every
    rank.

    Examples
    --------
    >>> from mpi4py import MPI                                  # doctest: +SKIP
    >>> x = np.zeros(1000)
    >>> opt = DistributedOptimizer(adamc.Adam(x, lr=1e-2), MPI.COMM_WORLD)
    >>> opt.step(local_gradient(x))       # the mean over the ranks is applied
    """

    def __init__(self, optimizer: Optimizer, comm: Any = None, mode: str = "replicated", *,
                 reproducible: bool = True):
        self.comm = comm = _communicator(comm)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        error: BaseException | None = None
        payload: dict[str, Any] | None = None
        try:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be an adamc optimizer, got "
                                f"{type(optimizer).__name__}")
            if mode not in ("replicated", "sharded"):
                raise ValueError(f"mode must be 'replicated' or 'sharded', got {mode!r}")
            if not isinstance(reproducible, (bool, np.bool_)):
                raise TypeError(f"reproducible must be a bool, got {reproducible!r}")
            payload = optimizer._export()
        except Exception as exc:
            error = exc
        _agree(comm, error)
        assert payload is not None
        self.mode, self.reproducible = mode, bool(reproducible)
        self._cls = type(optimizer)
        _check_same(comm, self._describe(payload), "input")

        try:
            self._setup(payload)
        except Exception as exc:  # e.g. MemoryError on one rank: every rank raises
            error = exc
        _agree(comm, error)

    def _setup(self, payload: dict[str, Any]) -> None:
        """Everything local of the construction (buffers, the inner optimizer)."""
        mode = self.mode
        self._checker = self._cls.__new__(self._cls)  # validates hyperparameters
        self._defaults = payload["defaults"]
        self._options = dict(payload["options"])
        self._box = payload["box"]
        self._step_count, self._skipped = payload["step_count"], payload["skipped_steps"]
        self._group_steps = list(payload["steps"])  # for the Python lr callables
        self.param_groups = [dict(g) for g in payload["groups"]]
        self._group_params = [g["params"] for g in self.param_groups]
        self._params = [p for g in self.param_groups for p in g["params"]]
        self._group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
        self._group_members: list[list[int]] = [[] for _ in self.param_groups]
        for i, gi in enumerate(self._group_of):
            self._group_members[gi].append(i)
        self._has_state = [[a is not None for a in st] for st in payload["state"]]
        self._reducer = _Reducer(self.comm, self.reproducible)
        dtypes: dict[np.dtype, list[int]] = {}
        for i, p in enumerate(self._params):
            dtypes.setdefault(p.dtype, []).append(i)
        self._buckets = [_Bucket(dt, members, self._params, self.rank, self.size,
                                 mode == "sharded", self.reproducible)
                         for dt, members in dtypes.items()]
        self._bucket_of = {i: b for b in self._buckets for i in b.members}
        # the parts of the parameters each rank updates in sharded mode
        self._mine = [p for b in self._buckets for p in b.pieces(b.lo, b.hi)]
        self._mine.sort()
        self._theirs = [(b, [p for r in range(self.size) if r != self.rank
                             for p in b.pieces(b.bounds[r], b.bounds[r + 1])])
                        for b in self._buckets]
        # sharded mode, with clipping options: per rank, the first non-finite element
        # (2 values) and the sums of squares of its blocks
        self._norm_counts = [2 + sum(_blocks(b.counts[r]) for b in self._buckets)
                             for r in range(self.size)]
        self._norm_displs = [int(d) for d in np.cumsum([0] + self._norm_counts[:-1])]
        self._norm_all = np.zeros(sum(self._norm_counts))
        here = self._norm_displs[self.rank]
        self._norm_mine = self._norm_all[here:here + self._norm_counts[self.rank]]
        self._norm_is_sum = np.ones(len(self._norm_all), bool)
        for d in self._norm_displs:
            self._norm_is_sum[d:d + 2] = False
        self._inner, self._inner_groups, self._grad_views = self._build_inner(payload)
        # one rank and nothing for the wrapper to apply: step the gradients themselves
        self._direct = self.size == 1 and self._options == _NO_OPTIONS
        self._user_grads: Any = None
        self._hyper_seen: list[list[Any]] = []
        self._hyper_code = 0
        self._python_lr: list[int] = []
        self._python_lr_values: dict[int, float] = {}  # sharded: this step's values
        self._last_lr: list[float] | None = None  # per group: the rates of the last step
        error = self._sync_hyper()
        if error is not None:
            raise error  # validated by the optimizer already: the same on every rank

    def _describe(self, payload: dict[str, Any]) -> list[tuple[str, str]]:
        """What must be equal on every rank, as (name, fingerprint) pairs."""
        fields = [("the optimizer class", payload["class"]), ("mode", repr(self.mode)),
                  ("reproducible", repr(self.reproducible)),
                  ("adamc.distributed.RECV_ELEMENTS", repr(RECV_ELEMENTS)),
                  ("adamc.distributed.BLOCK", repr(BLOCK))]
        params = [p for g in payload["groups"] for p in g["params"]]
        fields.append(("the number of parameters", str(len(params))))
        fields += [(f"params[{i}]", f"shape {p.shape} dtype {p.dtype}")
                   for i, p in enumerate(params)]
        for gi, g in enumerate(payload["groups"]):
            fields.append((f"the size of param_groups[{gi}]", str(len(g["params"]))))
            fields += [(f"param_groups[{gi}]['{k}']", _fingerprint(v))
                       for k, v in g.items() if k != "params"]
        fields += [(k, repr(v)) for k, v in payload["options"].items()]
        fields += [("the step counts", repr(payload["steps"])),
                   ("the scalar state", repr(payload["aux"])),
                   ("step_count", repr(payload["step_count"])),
                   ("bounds", repr(payload["box"] is not None))]
        for i, p in enumerate(params):
            fields.append((f"the values of params[{i}]", _fingerprint(p)))
            for key, arr in zip(self._cls._state_keys, payload["state"][i]):
                fields.append((f"state '{key}' of params[{i}]",
                               "absent" if arr is None else _fingerprint(arr)))
            if payload["box"] is not None:
                fields.append((f"bounds of params[{i}]", _fingerprint(payload["box"][0][i])
                               + _fingerprint(payload["box"][1][i])))
        return fields

    def _build_inner(self, payload: dict[str, Any]):
        """The optimizer this rank steps (options handled by the wrapper), the
        original group of each of its groups, and its gradients (views of the
        buffers): a copy of the whole optimizer, or of this rank's shard."""
        # clip_value and max_grad_norm are applied by the inner optimizer's kernels, with
        # the sum of squares of all ranks (_step_reduced); the non-finite decision is
        # taken by the wrapper for all ranks, so the inner optimizer propagates.
        base = dict(payload, options=dict(self._options, nonfinite="propagate"))
        self._inner_index: list[tuple[int, int, int, int]] = []  # (param, begin, end, flat)
        if self.mode == "replicated":
            views = []
            for i, p in enumerate(self._params):
                b = self._bucket_of[i]
                s = b.starts[b.members.index(i)]
                views.append(b.send[s:s + p.size].reshape(p.shape))
            return (self._cls._from_export(base), list(range(len(self.param_groups))),
                    views)
        groups, state, steps, aux, lower, upper, kept, views = [], [], [], [], [], [], [], []
        for gi, g in enumerate(payload["groups"]):
            mine = [t for t in self._mine if self._group_of[t[0]] == gi]
            if not mine and self.rank == 0 and all(
                    self._params[i].size == 0 for i in self._group_members[gi]):
                # a group of empty parameters: rank 0 keeps it, and its counters
                mine = [(i, 0, 0, -1) for i in self._group_members[gi]]
            if not mine:
                continue
            ps = []
            for i, a, e, flat in mine:
                p = self._params[i]
                whole = flat < 0
                ps.append(p if whole else p.reshape(-1)[a:e])
                state.append([None if st is None else st if whole else st.reshape(-1)[a:e]
                              for st in payload["state"][i]])
                b = self._bucket_of[i]
                views.append(np.zeros(p.shape, p.dtype) if whole
                             else b.send[flat - b.base:flat - b.base + e - a])
                if self._box is not None:
                    lower.append(self._box[0][i] if whole else self._box[0][i].reshape(-1)[a:e])
                    upper.append(self._box[1][i] if whole else self._box[1][i].reshape(-1)[a:e])
                self._inner_index.append((i, a, e, flat))
            groups.append(dict(g, params=ps))
            steps.append(payload["steps"][gi])
            aux.append(payload["aux"][gi])
            kept.append(gi)
        if not groups:  # more ranks than blocks: nothing to update here
            return None, [], []
        inner = self._cls._from_export(dict(
            base, groups=groups, state=state, steps=steps, aux=aux,
            box=(lower, upper) if self._box is not None else None))
        return inner, kept, views

    # -- hyperparameters ------------------------------------------------------------
    def _sync_hyper(self) -> BaseException | None:
        """Copy changed hyperparameters of param_groups to the inner optimizer and
        refresh their fingerprint; return a validation error instead of raising."""
        seen = [[v for k, v in g.items() if k != "params"] for g in self.param_groups] \
            if isinstance(self.param_groups, list) else None
        if seen is not None and len(seen) == len(self._hyper_seen) and all(
                len(a) == len(b) and all(x is y for x, y in zip(a, b))
                for a, b in zip(seen, self._hyper_seen)):
            return None
        try:
            if not isinstance(self.param_groups, list) or \
                    len(self.param_groups) != len(self._group_params):
                raise ValueError("param_groups must keep its groups (create a new "
                                 "DistributedOptimizer to add parameters)")
            for gi, g in enumerate(self.param_groups):
                if not isinstance(g, dict) or g.get("params") is not self._group_params[gi]:
                    raise ValueError(f"param_groups[{gi}]['params'] must not be replaced "
                                     f"(create a new DistributedOptimizer instead)")
                hyper, _ = self._checker._group_hyper(g, gi)
                for k, key in enumerate(self._cls._state_keys):
                    if self._checker._state_used(key, hyper) and not all(
                            self._has_state[i][k] for i in self._group_members[gi]):
                        raise self._cls._missing_state(gi, key)
        except (TypeError, ValueError) as exc:
            return exc
        # In sharded mode a Python callable lr would run inside the inner step, on
        # the ranks that hold a piece of its group only; step() evaluates it on every
        # rank instead, before anything is updated (see _evaluate_lr).
        self._python_lr = [gi for gi, g in enumerate(self.param_groups)
                           if callable(g["lr"]) and type(g["lr"]) not in _kernels._COMPILED_SCHEDULES] \
            if self.mode == "sharded" else []
        if self._inner is not None:
            for inner_gi, gi in enumerate(self._inner_groups):
                target = self._inner.param_groups[inner_gi]
                target.update((k, v) for k, v in self.param_groups[gi].items() if k != "params")
        text = "|".join(f"{k}={_fingerprint(v)}" for g in self.param_groups
                        for k, v in g.items() if k != "params")
        self._hyper_code = zlib.crc32(text.encode())
        self._hyper_seen = [[v for k, v in g.items() if k != "params"]
                            for g in self.param_groups]  # after _group_hyper's edits
        return None

    # -- stepping -------------------------------------------------------------------
    def step(self, grads: np.ndarray | Sequence[np.ndarray]) -> None:
        """Average ``grads`` over the ranks and update the parameters (collective).

        Parameters
        ----------
        grads : ndarray or sequence of ndarray
            This rank's gradients, mirroring the parameters (shapes and dtypes).
            They are read, never modified.

        Raises
        ------
        ValueError, TypeError
            On every rank, when the gradients of any rank do not match the
            parameters, or the hyperparameters are invalid or differ between ranks;
            nothing is updated then.
        FloatingPointError
            On every rank, with ``nonfinite="raise"``, when the averaged gradient
            holds a NaN or infinity; nothing is updated then.
        """
        self._python_lr_values = {}
        error = self._sync_hyper()
        if error is None:
            error = self._pack(grads)
        if error is None and self._python_lr:
            error = self._evaluate_lr()
        try:
            self._agree_step(error)
        except BaseException:
            self._user_grads = None  # keep no reference to the caller's arrays
            for b in self._buckets:
                b.source = b.send
            raise
        if self._direct:  # one rank, nothing to clip: the wrapped optimizer's own step
            assert self._inner is not None
            grads, self._user_grads = self._user_grads, None
            self._inner.step(grads if self.mode == "replicated" else [
                grads[i] if flat < 0 else grads[i].reshape(-1)[a:e]
                for i, a, e, flat in self._inner_index])
            self._completed()
            return
        for b in self._buckets:
            if self.mode == "replicated":
                self._reducer.allreduce_mean(b)
            else:
                self._reducer.reduce_shard(b)
            b.source = b.send  # drop the reference to the caller's gradient
        proceed, sumsq = self._check_and_reduce()
        if not proceed:
            self._skipped += 1
            return
        if self._inner is not None:
            if sumsq is None:
                self._inner.step(self._grad_views)
            else:  # the inner kernels clip by the norm of the gradient of all ranks
                self._inner._step_reduced(self._grad_views, sumsq)
        if self.mode == "sharded":
            self._gather_params()
        self._completed()

    def _completed(self) -> None:
        self._step_count += 1
        for gi in range(len(self._group_steps)):
            self._group_steps[gi] += 1
        # the inner optimizer recorded the rates of the groups it holds; the other
        # groups' (sharded mode) are this step's Python values or compiled schedules
        held = {} if self._inner is None else dict(zip(self._inner_groups,
                                                       self._inner.get_last_lr()))
        self._last_lr = [held[gi] if gi in held else self._python_lr_values[gi]
                         if gi in self._python_lr_values else self._lr_at(gi)
                         for gi in range(len(self._group_steps))]

    def _lr_at(self, gi: int) -> float:
        """Group gi's rate at its current step count (at least 1)."""
        hyper, fn = self._checker._group_hyper(self.param_groups[gi], gi)
        return float(hyper["lr"] if fn is None
                     else _kernels.lr_at(fn, max(self._group_steps[gi], 1), gi))

    def get_last_lr(self) -> list[float]:
        """The learning rate of each param group's last step, the same on every rank
        (local, not collective); see :meth:`adamc.Optimizer.get_last_lr`.

        Returns
        -------
        list of float
            One learning rate per param group; before the first step, the rates the
            first step will use.
        """
        if self._last_lr is not None:
            return list(self._last_lr)
        return [self._lr_at(gi) for gi in range(len(self._group_steps))]

    def _evaluate_lr(self) -> BaseException | None:
        """Sharded mode: every rank computes the Python lr callables' values (the
        inner optimizers get the numbers), so that an error is seen everywhere."""
        try:
            values = {gi: _kernels.lr_at(self.param_groups[gi]["lr"],
                                         self._group_steps[gi] + 1, gi)
                      for gi in self._python_lr}
        except Exception as exc:
            return exc
        self._python_lr_values = values
        if self._inner is not None:
            for inner_gi, gi in enumerate(self._inner_groups):
                if gi in values:
                    self._inner.param_groups[inner_gi]["lr"] = values[gi]
        return None

    def _pack(self, grads: Any) -> BaseException | None:
        try:
            if isinstance(grads, np.ndarray):
                grads = [grads]
            elif isinstance(grads, (str, bytes, dict)) or not hasattr(grads, "__len__"):
                raise TypeError(f"grads must be an ndarray or a sequence of ndarrays, got "
                                f"{type(grads).__name__}")
            grads = list(grads)
            if len(grads) != len(self._params):
                raise ValueError(f"got {len(grads)} gradients for {len(self._params)} "
                                 f"parameters")
            for i, (g, p) in enumerate(zip(grads, self._params)):
                _kernels.check_operand(g, f"grads[{i}]", p, f"params[{i}]", writeable=False)
            if self._direct:
                self._user_grads = grads
                return None
            for b in self._buckets:
                if len(b.members) == 1:
                    b.source = grads[b.members[0]].reshape(-1)  # a view: sent as it is
                    continue
                for i, s, n in zip(b.members, b.starts, b.sizes):
                    _kernels.copy_into(b.send[s:s + n], grads[i].reshape(-1))
        except (TypeError, ValueError) as exc:
            return exc
        return None

    def _agree_step(self, error: BaseException | None) -> None:
        """One small Allreduce: an error on any rank, or differing hyperparameters."""
        MPI = _mpi()
        flags = np.array([0 if error is None else 1, self._hyper_code, -self._hyper_code],
                         np.int64)
        if self.size > 1:
            self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        if flags[0]:
            _agree(self.comm, error)
        if flags[1] != -flags[2]:
            raise ValueError("inconsistent hyperparameters across ranks: param_groups "
                             "were changed differently on different ranks; nothing was "
                             "updated")

    def _check_and_reduce(self) -> tuple[bool, float | None]:
        """The non-finite policy and the global sum of squares for max_grad_norm, on
        the averaged gradient (this rank's shard in sharded mode); the clamping and
        the scaling themselves happen in the inner optimizer's kernels (one gradient
        pre-processing path). Returns (False, None) to skip the step, else (True,
        the sum of squares of the clamped gradient of all ranks, or None without
        max_grad_norm)."""
        clip, mgn = self._options["clip_value"], self._options["max_grad_norm"]
        policy = self._options["nonfinite"]
        if mgn is None and policy == "propagate":
            return True, None
        sharded = self.mode == "sharded"
        parts = [(b, b.shard if sharded else b.send, b.lo if sharded else 0)
                 for b in self._buckets]
        local = [-1.0, -1.0]  # the first non-finite element: (parameter, flat index)
        if policy != "propagate":  # the kernels' scan, on the unclamped gradient
            for b, part, lo in parts:
                at = _kernels.first_nonfinite(part)
                if at >= 0:
                    flat = lo + at
                    k = max(j for j, s in enumerate(b.starts) if s <= flat)
                    local = [float(b.members[k]), float(flat - b.starts[k])]
                    break
        sums = []
        if mgn is not None:  # the kernels' sum of squares of the clamped gradient
            for b, part, _ in parts:
                b.norm_sums.fill(0.0)
                _kernels.block_sum_squares(part, 0, BLOCK, np.inf if clip is None else clip,
                                           b.norm_sums)
                sums.append(b.norm_sums)
        if sharded and self.size > 1:
            # every rank's flags and block sums, gathered in place into _norm_all
            mine = self._norm_mine
            mine.fill(0.0)
            mine[:2] = local
            if sums:
                mine[2:] = np.concatenate(sums) if len(sums) > 1 else sums[0]
            self.comm.Allgatherv(_mpi().IN_PLACE, [self._norm_all, self._norm_counts,
                                                   self._norm_displs, _mpi().DOUBLE])
            bad: Any = next((self._norm_all[d:d + 2] for d in self._norm_displs
                             if self._norm_all[d] >= 0), None)
            block_sums = self._norm_all[self._norm_is_sum].tolist() if sums else []
        else:
            bad = local if local[0] >= 0 else None
            block_sums = [v for a in sums for v in a.tolist()]
        if bad is not None:
            if policy == "skip":
                return False, None
            i, flat = int(bad[0]), int(bad[1])
            index = np.unravel_index(flat, self._params[i].shape)
            where = int(index[0]) if len(index) == 1 else tuple(int(j) for j in index)
            raise FloatingPointError(
                f"the averaged gradient of params[{i}] holds a NaN or infinity at index "
                f"{where}; nothing was updated on any rank (nonfinite='raise')")
        if mgn is None:
            return True, None
        # fsum is correctly rounded: the same total from the same blocks, in any order
        # and on any rank layout; the kernels turn it into torch's clip_grad_norm_ factor
        return True, math.fsum(block_sums)

    def _gather_params(self) -> None:
        if self.size == 1:
            return
        for b, theirs in self._theirs:
            if len(b.members) == 1:  # the parameter itself is the flat buffer: no copies
                p = self._params[b.members[0]].reshape(-1)
                self._reducer.comm.Allgatherv(self._reducer.MPI.IN_PLACE,
                                              [p, b.counts, b.displs, b.mpitype])
                continue
            for i, a, e, flat in b.pieces(b.lo, b.hi):
                _kernels.copy_into(b.shard[flat - b.lo:flat - b.lo + e - a],
                                   self._params[i].reshape(-1)[a:e])
            self._reducer.gather_shards(b)
            for i, a, e, flat in theirs:
                _kernels.copy_into(self._params[i].reshape(-1)[a:e], b.send[flat:flat + e - a])

    # -- state ----------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        """Number of completed (not skipped) steps."""
        return self._step_count

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of a non-finite gradient (``nonfinite="skip"``)."""
        return self._skipped

    @property
    def state_nbytes(self) -> int:
        """Bytes of optimizer state arrays held by this rank (about 1/size of the
        whole state in sharded mode)."""
        if self._inner is None:
            return 0
        return sum(a.nbytes for st in self._inner._state_arrays for a in st if a is not None)

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of this rank's communication buffers: the averaged gradient (its
        shard in sharded mode, when each dtype has one parameter array) and a
        receive buffer of at most ``RECV_ELEMENTS`` elements per dtype."""
        return sum(b.nbytes() for b in self._buckets)

    def consolidate(self, root: int = 0) -> Optimizer | None:
        """The whole optimizer, gathered on rank ``root`` (collective).

        Returns
        -------
        adamc.Optimizer or None
            On ``root``: an ordinary optimizer of the wrapped class on the same
            parameter arrays, with the full state, step counts and options. Building
            it holds the full state twice on ``root`` for a moment. None on the
            other ranks.

        Raises
        ------
        ValueError
            On every rank, when ``root`` is not a rank of ``comm`` on some rank or
            differs between ranks.
        """
        return self._consolidated(root, build=True)

    def _consolidated(self, root: Any, build: bool) -> Any:
        """consolidate(root) (an optimizer) or, with build=False, its payload."""
        error = None
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) \
                or not 0 <= root < self.size:
            error = ValueError(f"root must be a rank of comm (0 to {self.size - 1}), "
                               f"got {root!r}")
        _agree(self.comm, error)
        roots = self.comm.allgather(int(root))
        if len(set(roots)) > 1:
            raise ValueError(f"every rank must pass the same root, got {roots}")
        payload = self._gathered_payload(int(root))
        if payload is None or not build:
            return payload
        return self._cls._from_export(payload)

    def _gathered_payload(self, root: int) -> dict[str, Any] | None:
        common = {"class": self._cls.__name__, "defaults": self._defaults,
                  "groups": [dict(g, params=list(g["params"])) for g in self.param_groups],
                  "step_count": self._step_count, "skipped_steps": self._skipped,
                  "options": dict(self._options), "box": self._box}
        if self.mode == "replicated":
            if self.rank != root:
                return None
            assert self._inner is not None
            inner = self._inner._export()
            return dict(common, state=inner["state"], steps=inner["steps"], aux=inner["aux"])
        keys = range(len(self._cls._state_keys))
        wanted = [(bi, k) for bi, b in enumerate(self._buckets) for k in keys
                  if any(self._has_state[i][k] for i in b.members)]  # the same on every rank
        flats: dict[tuple[int, int], np.ndarray] = {}
        error = None
        if self.rank == root:
            try:  # the whole state, on root: allocated before anyone sends
                flats = {(bi, k): np.empty(self._buckets[bi].total, self._buckets[bi].dtype)
                         for bi, k in wanted}
            except MemoryError as exc:
                error = exc
        _agree(self.comm, error)
        counters = {}
        if self._inner is not None:
            counters = {gi: (t, a) for gi, t, a in zip(
                self._inner_groups, self._inner._group_steps(), self._inner._group_aux())}
        everyone = self.comm.gather(counters, root=root)
        inner_state = self._inner._state_arrays if self._inner is not None else []
        for bi, k in wanted:
            b = self._buckets[bi]
            for (i, a, e, flat), st in zip(self._inner_index, inner_state):
                if e > a and i in b.members and st[k] is not None:
                    b.shard[flat - b.lo:flat - b.lo + e - a] = st[k]
            self.comm.Gatherv([b.shard, b.count, b.mpitype],
                              [flats[bi, k], b.counts, b.displs, b.mpitype]
                              if self.rank == root else None, root=root)
        if self.rank != root:
            return None
        full: list[list[np.ndarray | None]] = [[None] * 3 for _ in self._params]
        for bi, k in wanted:
            b = self._buckets[bi]
            for i, s, n in zip(b.members, b.starts, b.sizes):
                if self._has_state[i][k]:
                    full[i][k] = flats[bi, k][s:s + n].reshape(self._params[i].shape)
        merged: dict[int, tuple] = {}
        for d in everyone:
            for gi, v in d.items():
                merged.setdefault(gi, v)
        groups = range(len(self.param_groups))
        return dict(common, state=full, steps=[merged[gi][0] for gi in groups],
                    aux=[merged[gi][1] for gi in groups])

    def _save_collectively(self, path: Any, extra: dict[str, Any] | None,
                           extra_arrays: dict[str, np.ndarray] | None) -> None:
        """adamc.save of a DistributedOptimizer (the interface adamc.checkpoint.save
        looks for): gathered on rank 0, written once."""
        payload = self._consolidated(0, build=False)
        error = None
        if payload is not None:
            try:
                _write(self._cls, payload, path, extra, extra_arrays)
            except Exception as exc:
                error = exc
        _agree(self.comm, error)


# ----------------------------------------------------------------------------------
# adamc.minimize(..., options={"comm": comm})

def _batch_weight(batch: tuple) -> float:
    """The number of samples of a batch: the length of its first array."""
    if not batch:
        return 1.0
    shape = np.shape(batch[0])
    if not shape:
        raise ValueError("with options['comm'] and 'batches', the first array of every "
                         "batch must have a length (its number of samples)")
    return float(shape[0])


class _MinimizeSync:
    """The collective parts of a distributed minimize: agreement on the inputs,
    weighted means of f and g, and stops and errors shared by every rank."""

    def __init__(self, comm: Any):
        self.comm = _communicator(comm)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def agree(self, error: BaseException | None) -> None:
        _agree(self.comm, error)

    def start(self, x: np.ndarray, fields: Any) -> None:
        """Buffers for x's gradient, after checking that every rank passed the same
        inputs (``fields()``: (name, text) pairs)."""
        self.bucket = _Bucket(x.dtype, [0], [x], self.rank, self.size)
        self.reducer = _Reducer(self.comm, True)
        self.scalars = np.zeros(4)
        self.everyone = np.zeros((self.size, 4))
        _check_same(self.comm, fields(), "input of minimize")

    def evaluate(self, objective: Any, batches: Any, first: bool) -> tuple[float, np.ndarray]:
        """This rank's f and g on its next batch, averaged over the ranks (weighted
        by the batch sizes); ``batches.exhausted`` becomes true on every rank when
        it is on any."""
        error, f, w = None, float("nan"), 0.0
        try:
            batch = batches.first() if first else batches.next()
            f, g = objective(batch)
            w = _batch_weight(batch) if batches.iterator is not None else 1.0
            _kernels.copy_into(self.bucket.send, g)
        except Exception as exc:
            error = exc
        self.scalars[:] = (w, f, error is not None, batches.exhausted)
        self.comm.Allgather(self.scalars, self.everyone)
        if self.everyone[:, 2].any():
            _agree(self.comm, error)
        weights = self.everyone[:, 0].tolist()
        batches.exhausted = bool(self.everyone[:, 3].any())
        uniform = _uniform(weights)
        fsum = 0.0
        for w_r, f_r in zip(weights, self.everyone[:, 1].tolist()):  # rank order
            fsum += f_r if uniform else w_r * f_r
        f_mean = fsum / (self.size if uniform else sum(weights))
        self.reducer.allreduce_mean(self.bucket, None if uniform else weights)
        return f_mean, self.bucket.send

    def stop(self, stopped: bool, error: BaseException | None) -> bool:
        """Whether any rank's callback stopped the run (collective)."""
        MPI = _mpi()
        code = np.array([2 if error is not None else int(stopped)], np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, code, op=MPI.MAX)
        if code[0] == 2:
            _agree(self.comm, error)
        return bool(code[0])

    def gather_int(self, value: int) -> list[int]:
        return [int(v) for v in self.comm.allgather(int(value))]
