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

Every optimizer is supported, Prodigy, the schedule-free optimizers and weight
averaging (``ema``) included, with the bits of one process (docs/distributed.md).

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

import zlib
from typing import Any, Sequence

import numpy as np

from . import _kernels
from ._parallel.collective import (RankError, _agree, _check_same, _communicator, _mpi,
                                   abort_on_error)
from ._core.format import _fingerprint, _write
from ._parallel.reducer import BLOCK, RECV_ELEMENTS, _Bucket, _GradientCheck, _Partitions, _Reducer
from ._core.port import Port
from .optim import Optimizer

__all__ = ["DistributedOptimizer", "RankError", "abort_on_error"]

# documented here, where users import them
RankError.__module__ = abort_on_error.__module__ = __name__

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
    Optimizer-wide state works in both modes. Prodigy's estimate of ``d``, the
    schedule-free weight sums and the ``ema`` count are kept by every rank (in
    sharded mode every rank holds every param group, with an empty piece where its
    shard has none) and mirrored into :attr:`param_groups` after each step, as
    the plain optimizer does. Prodigy's step needs two sums over every parameter
    (and max_grad_norm's sum of squares), which the kernels add in partitions that
    depend on each parameter's size only: sharded Prodigy cuts the shards between
    partitions, each rank sums its partitions, and every rank adds all of them in
    the order of one process. So Prodigy (max_grad_norm included), the
    schedule-free optimizers and ``ema`` give the bits of one process in both
    modes. :meth:`eval` and :meth:`train` switch a schedule-free optimizer's
    parameters on every rank; :attr:`ema_params` gives the weight average.

    ``max_grad_norm``, ``clip_value`` and ``nonfinite`` of ``optimizer`` are applied
    to the averaged gradient by the wrapper: the global norm is summed in blocks of
    ``BLOCK`` elements in a fixed order (Prodigy: in the partitions above), and a NaN or infinity on any rank's shard
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
            payload = Port.export(optimizer)
        except Exception as exc:
            error = exc
        _agree(comm, error)
        assert payload is not None
        self.mode, self.reproducible = mode, bool(reproducible)
        self._cls = type(optimizer)
        self._port = Port(self._cls)
        _check_same(comm, self._describe(payload), "input")

        try:
            self._setup(payload)
        except Exception as exc:  # e.g. MemoryError on one rank: every rank raises
            error = exc
        _agree(comm, error)

    def _setup(self, payload: dict[str, Any]) -> None:
        """Everything local of the construction (buffers, the inner optimizer)."""
        mode = self.mode
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
        self._ema = payload["ema"]  # the settings (arrays: the inner optimizer's)
        self._mirrored = self._port.mirrored
        self._skip_keys = ("params",) + self._mirrored  # group keys that are not inputs
        self._schedulefree = self._port.engine == "_ScheduleFreeEngine"
        # sharded: every rank's inner optimizer holds every group (a zero-size piece
        # where it holds none), so that the groups' scalar state (Prodigy's d, the
        # schedule-free weight sums, the ema count) is kept on every rank
        self._all_groups = mode == "sharded" and (self._port.engine is not None
                                                  or self._ema is not None)
        prodigy = self._port.engine == "_ProdigyEngine"
        # sharded Prodigy: shards cut between the partitions of its sums (see _Partitions)
        self._partitioned = mode == "sharded" and prodigy
        self._reducer = _Reducer(self.comm, self.reproducible)
        dtypes: dict[np.dtype, list[int]] = {}
        for i, p in enumerate(self._params):
            dtypes.setdefault(p.dtype, []).append(i)
        self._buckets = [_Bucket(dt, members, self._params, self.rank, self.size,
                                 mode == "sharded", self.reproducible, RECV_ELEMENTS,
                                 partitioned=self._partitioned)
                         for dt, members in dtypes.items()]
        self._partitions = _Partitions(self._buckets, self._params, self.rank, self.size) \
            if self._partitioned else None
        self._bucket_of = {i: b for b in self._buckets for i in b.members}
        # the parts of the parameters each rank updates in sharded mode
        self._mine = [p for b in self._buckets for p in b.pieces(b.lo, b.hi)]
        self._mine.sort()
        self._theirs = [(b, [p for r in range(self.size) if r != self.rank
                             for p in b.pieces(b.bounds[r], b.bounds[r + 1])])
                        for b in self._buckets]
        # replicated Prodigy clips by its own norm of the whole (averaged) gradient, as
        # one process does: it sums it in its partitions
        check_options = dict(self._options, max_grad_norm=None) \
            if prodigy and mode == "replicated" else self._options
        self._check = _GradientCheck(self.comm, self._buckets, self._params, check_options,
                                     mode == "sharded", self._partitions)
        self._inner, self._inner_groups, self._grad_views = self._build_inner(payload)
        if self._partitioned:
            self._plan_grid()
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
            for key, arr in zip(self._port.state_keys, payload["state"][i]):
                fields.append((f"state '{key}' of params[{i}]",
                               "absent" if arr is None else _fingerprint(arr)))
            if payload["box"] is not None:
                fields.append((f"bounds of params[{i}]", _fingerprint(payload["box"][0][i])
                               + _fingerprint(payload["box"][1][i])))
        ema = payload["ema"]
        fields.append(("the weight averaging (ema, ema_start, count)", "off" if ema is None
                       else repr((ema["ema"], ema["ema_start"], ema["count"]))))
        if ema is not None:
            fields += [(f"the weight average of params[{i}]", _fingerprint(a))
                       for i, a in enumerate(ema["params"])]
        return fields

    def _build_inner(self, payload: dict[str, Any]):
        """The optimizer this rank steps (options handled by the wrapper), the
        original group of each of its groups, and its gradients (views of the
        buffers): a copy of the whole optimizer, or of this rank's shard."""
        # clip_value and max_grad_norm are applied by the inner optimizer's kernels, with
        # the sum of squares of all ranks (Port.step_reduced); the non-finite decision is
        # taken by the wrapper for all ranks, so the inner optimizer propagates.
        base = dict(payload, options=dict(self._options, nonfinite="propagate"))
        self._inner_index: list[tuple[int, int, int, int]] = []  # (param, begin, end, flat)
        if self.mode == "replicated":
            views = []
            for i, p in enumerate(self._params):
                b = self._bucket_of[i]
                s = b.starts[b.members.index(i)]
                views.append(b.send[s:s + p.size].reshape(p.shape))
            return (self._port.build(base), list(range(len(self.param_groups))),
                    views)
        groups, state, steps, aux, lower, upper, kept, views = [], [], [], [], [], [], [], []
        ema = payload["ema"]
        averages: list[np.ndarray] = []
        for gi, g in enumerate(payload["groups"]):
            mine = [t for t in self._mine if self._group_of[t[0]] == gi]
            if not mine and self.rank == 0 and all(
                    self._params[i].size == 0 for i in self._group_members[gi]):
                # a group of empty parameters: rank 0 keeps it, and its counters
                mine = [(i, 0, 0, -1) for i in self._group_members[gi]]
            if not mine and self._all_groups:  # a zero-size piece of its first parameter
                first = self._group_members[gi][0]
                mine = [(first, 0, 0, self._bucket_of[first].lo)]
            if not mine:
                continue
            ps = []
            for i, a, e, flat in mine:
                p = self._params[i]
                whole = flat < 0
                ps.append(p if whole else p.reshape(-1)[a:e])
                state.append([None if st is None else st if whole else st.reshape(-1)[a:e]
                              for st in payload["state"][i]])
                if ema is not None:
                    avg = ema["params"][i]
                    averages.append(avg if whole else avg.reshape(-1)[a:e])
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
        inner = self._port.build(dict(
            base, groups=groups, state=state, steps=steps, aux=aux,
            box=(lower, upper) if self._box is not None else None,
            ema=None if ema is None else dict(ema, params=averages)))
        return inner, kept, views

    def _plan_grid(self) -> None:
        """Sharded Prodigy: where each piece of its inner optimizer lies in its
        parameter (the piece's partitions are summed as one process sums them), and
        the buffer into which every rank's partition sums are all-gathered."""
        assert self._inner is not None and self._partitions is not None
        layout = np.zeros(3 * len(self._inner_index), np.int64)
        for j, (i, a, e, flat) in enumerate(self._inner_index):
            if e > a:
                layout[3 * j:3 * j + 3] = self._params[i].size, a, self._partitions.first[i, a]
        counts = [2 * c for c in self._partitions.counts]
        self._stats_counts = counts
        self._stats_displs = [sum(counts[:r]) for r in range(self.size)]
        self._stats_all = np.zeros(sum(counts))
        here = self._stats_displs[self.rank]
        self._grid = (layout, self._stats_all[here:here + counts[self.rank]])

    def _reduce_stats(self, acc: np.ndarray, factor: float) -> tuple[float, float]:
        """Prodigy's reducer (called inside its step, on every rank): its two sums over
        every partition of every rank, added in the order and with the operations
        of one process (per parameter in order: factor * the sum of its partitions'
        first sums; and the sum of their second sums)."""
        if self.size > 1:  # acc is this rank's part of _stats_all
            MPI = _mpi()
            self.comm.Allgatherv(MPI.IN_PLACE, [self._stats_all, self._stats_counts,
                                                self._stats_displs, MPI.DOUBLE])
        assert self._partitions is not None
        every = self._stats_all
        delta = denom = 0.0
        for t in self._partitions.totals(every[0::2]):
            delta += factor * t
        for t in self._partitions.totals(every[1::2]):
            denom += t
        return delta, denom

    # -- hyperparameters ------------------------------------------------------------
    def _sync_hyper(self) -> BaseException | None:
        """Copy changed hyperparameters of param_groups to the inner optimizer and
        refresh their fingerprint; return a validation error instead of raising."""
        skip = self._skip_keys
        seen = [[v for k, v in g.items() if k not in skip] for g in self.param_groups] \
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
                members = self._group_members[gi]
                self._port.check_group(g, gi, lambda k: all(self._has_state[i][k]
                                                            for i in members))
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
                target.update((k, v) for k, v in self.param_groups[gi].items()
                              if k not in skip)
        text = "|".join(f"{k}={_fingerprint(v)}" for g in self.param_groups
                        for k, v in g.items() if k not in skip)
        self._hyper_code = zlib.crc32(text.encode())
        self._hyper_seen = [[v for k, v in g.items() if k not in skip]
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
        if self._schedulefree and not self.train_mode:  # the same on every rank
            raise RuntimeError("the optimizer is in eval mode (the parameters hold the "
                               "averaged point x); call opt.train() before step(), on "
                               "every rank")
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
        proceed, sumsq = self._check()
        if not proceed:
            self._skipped += 1
            return
        if self._inner is not None:
            if self._partitioned:  # Prodigy: its sums over the partitions of every rank
                Port.step_with_reducer(self._inner, self._grad_views, self._reduce_stats,
                                       sumsq, self._grid)
            elif sumsq is None:
                self._inner.step(self._grad_views)
            else:  # the inner kernels clip by the norm of the gradient of all ranks
                Port.step_reduced(self._inner, self._grad_views, sumsq)
        if self.mode == "sharded":
            self._gather_params()
        self._completed()

    def _completed(self) -> None:
        if self._mirrored:
            self._mirror()
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

    def _mirror(self) -> None:
        """Copy the inner optimizer's scalar state (Prodigy's d, the schedule-free
        weight sums and mode) into param_groups, where the plain optimizer keeps it:
        every rank holds every group then, with the same values."""
        if not self._mirrored or self._inner is None:
            return
        for inner_gi, gi in enumerate(self._inner_groups):
            source = self._inner.param_groups[inner_gi]
            self.param_groups[gi].update((k, source[k]) for k in self._mirrored
                                         if k in source)

    def _lr_at(self, gi: int) -> float:
        """Group gi's rate at its current step count (at least 1)."""
        hyper, fn = self._port.check_group(self.param_groups[gi], gi, lambda k: True)
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

    # -- schedule-free modes and weight averages ---------------------------------------
    @property
    def train_mode(self) -> bool:
        """False after :meth:`eval` (a schedule-free optimizer's parameters hold x),
        else True."""
        return self._inner.train_mode if self._schedulefree else True

    def eval(self) -> None:
        """Schedule-free optimizers: put the averaged point x into the parameters on
        every rank, as :meth:`adamc.AdamWScheduleFree.eval` does in one process
        (collective in sharded mode, where the shards are all-gathered); no-op in
        eval mode.

        Raises
        ------
        TypeError
            When the wrapped optimizer is not schedule-free.
        """
        self._switch(False)

    def train(self) -> None:
        """Schedule-free optimizers: put y back into the parameters, exactly as
        :meth:`eval` found it (collective in sharded mode); no-op in train mode.

        Raises
        ------
        TypeError
            When the wrapped optimizer is not schedule-free.
        """
        self._switch(True)

    def _switch(self, train: bool) -> None:
        if not self._schedulefree:
            raise TypeError(f"{'train' if train else 'eval'}() is for the schedule-free "
                            f"optimizers, not {self._port.name}")
        if self.train_mode == train:
            return
        if train:
            self._inner.train()
        else:
            self._inner.eval()
        if self.mode == "sharded":  # every rank switched its shard: gather the rest
            self._gather_params()
        self._mirror()

    @property
    def ema(self) -> float | str | None:
        """The weight averaging of the wrapped optimizer: a decay, "uniform" or None."""
        return None if self._ema is None else self._ema["ema"]

    @property
    def ema_params(self) -> list[np.ndarray] | None:
        """The weight average of each parameter (see
        :attr:`adamc.Optimizer.ema_params`), the same on every rank; None without
        ``ema``. Replicated mode: the inner optimizer's read-only views. Sharded
        mode: each rank averages its shard only, so reading this is collective
        (every rank must read it): the shards are all-gathered into new arrays."""
        if self._ema is None:
            return None
        if self.mode == "replicated":
            assert self._inner is not None
            return self._inner.ema_params
        k = len(self._port.state_keys)  # the index of the average in _local_arrays
        flats = self._collect([(bi, k) for bi in range(len(self._buckets))], None)
        out: list[Any] = [None] * len(self._params)
        for bi, b in enumerate(self._buckets):
            for i, s, n in zip(b.members, b.starts, b.sizes):
                out[i] = flats[bi, k][s:s + n].reshape(self._params[i].shape)
        return out

    def _local_arrays(self) -> list[list[np.ndarray | None]]:
        """Per piece of the inner optimizer: its state arrays, then its average."""
        if self._inner is None:
            return []
        state = Port.state_arrays(self._inner)
        if self._ema is None:
            return state
        return [st + [avg] for st, avg in zip(state, self._inner.ema_params)]

    def _collect(self, wanted: list[tuple[int, int]], root: int | None
                 ) -> dict[tuple[int, int], np.ndarray]:
        """Sharded: array k of every piece (k < len(state_keys): a state array, else
        the average) of bucket bi, for each (bi, k) in ``wanted`` (the same on every
        rank), as one flat array of the bucket: gathered on ``root`` (the others get
        {}), or on every rank when root is None."""
        flats: dict[tuple[int, int], np.ndarray] = {}
        error = None
        if root is None or self.rank == root:
            try:  # the whole arrays: allocated before anyone sends
                flats = {(bi, k): np.zeros(self._buckets[bi].total, self._buckets[bi].dtype)
                         for bi, k in wanted}
            except MemoryError as exc:
                error = exc
        _agree(self.comm, error)
        local = self._local_arrays()
        MPI = _mpi()
        for bi, k in wanted:
            b = self._buckets[bi]
            # root None: this rank's pieces go straight into place, then in-place gather
            target = flats[bi, k] if root is None else b.shard
            shift = 0 if root is None else b.lo
            for (i, a, e, flat), arrays in zip(self._inner_index, local):
                arr = arrays[k]
                if e > a and i in b.members and arr is not None:
                    target[flat - shift:flat - shift + e - a] = arr.reshape(-1)
            if root is None:
                if self.size > 1:
                    self.comm.Allgatherv(MPI.IN_PLACE, [flats[bi, k], b.counts, b.displs,
                                                        b.mpitype])
            else:
                self.comm.Gatherv([b.shard, b.count, b.mpitype],
                                  [flats[bi, k], b.counts, b.displs, b.mpitype]
                                  if self.rank == root else None, root=root)
        return flats

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
        return sum(a.nbytes for st in Port.state_arrays(self._inner) for a in st
                   if a is not None)

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
        return self._port.build(payload)

    def _gathered_payload(self, root: int) -> dict[str, Any] | None:
        common = {"class": self._cls.__name__, "defaults": self._defaults,
                  "groups": [dict(g, params=list(g["params"])) for g in self.param_groups],
                  "step_count": self._step_count, "skipped_steps": self._skipped,
                  "options": dict(self._options), "box": self._box}
        if self.mode == "replicated":
            if self.rank != root:
                return None
            assert self._inner is not None
            inner = Port.export(self._inner)
            return dict(common, state=inner["state"], steps=inner["steps"], aux=inner["aux"],
                        ema=inner["ema"])
        nkeys = len(self._port.state_keys)
        keys = range(nkeys + (self._ema is not None))  # the last: the average
        wanted = [(bi, k) for bi, b in enumerate(self._buckets) for k in keys
                  if k == nkeys or any(self._has_state[i][k] for i in b.members)]
        counters = {}
        if self._inner is not None:
            counters = {gi: (t, a) for gi, t, a in zip(
                self._inner_groups, *Port.counters(self._inner))}
        everyone = self.comm.gather(counters, root=root)
        flats = self._collect(wanted, root)
        if self.rank != root:
            return None
        full: list[list[np.ndarray | None]] = [[None] * nkeys for _ in self._params]
        averages: list[Any] = [None] * len(self._params)
        for bi, k in wanted:
            b = self._buckets[bi]
            for i, s, n in zip(b.members, b.starts, b.sizes):
                arr = flats[bi, k][s:s + n].reshape(self._params[i].shape)
                if k == nkeys:
                    averages[i] = arr
                elif self._has_state[i][k]:
                    full[i][k] = arr
        merged: dict[int, tuple] = {}
        for d in everyone:
            for gi, v in d.items():
                merged.setdefault(gi, v)
        groups = range(len(self.param_groups))
        ema = None
        if self._ema is not None:  # every rank holds every group, so root has the count
            assert self._inner is not None
            ema = dict(Port.export(self._inner)["ema"], params=averages)
        return dict(common, state=full, steps=[merged[gi][0] for gi in groups],
                    aux=[merged[gi][1] for gi in groups], ema=ema)

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


