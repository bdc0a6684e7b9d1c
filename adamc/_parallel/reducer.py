"""Flat gradient buffers per dtype, split into shards, their reduction over MPI
ranks: reproducible (every rank adds its shard's pieces in rank order) or through
MPI's Allreduce / Reduce_scatter, and the global checks of the reduced gradient."""
from __future__ import annotations

import bisect
import math
from typing import Any, Sequence

import numpy as np

from .. import _kernels
from .collective import _mpi

__all__: list[str] = []

# Shards begin at multiples of this many elements of the flat buffer, and the global
# gradient norm is summed in blocks of this size: the blocks lie wholly on one rank,
# so their sums, and the norm, are the same bits for every mode. (Partitioned buckets,
# sharded Prodigy's, are cut between the kernels' sum partitions instead.)
BLOCK = 1024
# The reproducible reduce-scatter receives at most about this many elements per
# round (4 Mi: 16 MiB of float32) whatever the size, up to 4096 ranks (beyond,
# size * BLOCK). Every rank must use the same value (checked by adamc.distributed,
# which passes its own module attribute: tests lower it there).
RECV_ELEMENTS = 1 << 22



def _shard_bounds(total: int, size: int) -> list[int]:
    """Shard r is [b[r], b[r+1]): whole blocks, spread as evenly as possible."""
    blocks = -(-total // BLOCK)
    return [min(total, (blocks * r // size) * BLOCK) for r in range(size + 1)]


def _cut_bounds(total: int, size: int, cuts: Sequence[int]) -> list[int]:
    """Like _shard_bounds, but every bound is one of ``cuts`` (sorted, from 0 to
    total): the one nearest to the even split."""
    bounds = [0]
    for target in _shard_bounds(total, size)[1:-1]:
        j = bisect.bisect_left(cuts, target)
        near = [c for c in cuts[max(j - 1, 0):j + 1] if c >= bounds[-1]] or [bounds[-1]]
        bounds.append(min(near, key=lambda c: (abs(c - target), c)))
    return bounds + [total]


def _blocks(n: int) -> int:
    return -(-n // BLOCK)


class _Bucket:
    """The parameters of one dtype as one flat index space, split into shards.

    ``source`` is this rank's contribution to a reduction: the gradient array itself
    when the bucket has one parameter (no copy), else ``send``, into which the
    gradients are packed. ``send`` receives the averaged result (its own shard in
    sharded mode). ``recv`` receives pieces of this rank's shard from every rank."""

    def __init__(self, dtype: np.dtype, members: list[int], params: list[np.ndarray],
                 rank: int, size: int, sharded: bool = False, reproducible: bool = True,
                 recv_elements: int = RECV_ELEMENTS, partitioned: bool = False):
        MPI = _mpi()
        self.dtype = np.dtype(dtype)
        self.mpitype = MPI.FLOAT if self.dtype == np.float32 else MPI.DOUBLE
        self.members = members
        self.sizes = [params[i].size for i in members]
        self.starts = [int(s) for s in np.cumsum([0] + self.sizes[:-1])]
        self.total = sum(self.sizes)
        if partitioned:  # shards cut between the partitions of the kernels' sums
            cuts = sorted({s + b for s, n in zip(self.starts, self.sizes)
                           for b in _kernels.sum_partitions(n)} | {0, self.total})
            self.bounds = _cut_bounds(self.total, size, cuts)
        else:
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
            self._plan_rounds(rank, size, recv_elements)
        else:  # Reduce_scatter receives into the shard, or here when send is the source
            self.recv = np.zeros(0 if own_shard_only or not sharded else self.count,
                                 self.dtype)

    def _plan_rounds(self, rank: int, size: int, recv_elements: int) -> None:
        """The reproducible reduce-scatter in rounds: in round k every rank sends to
        rank j the k-th piece (of at most ``chunk`` elements) of j's shard, so that
        the receive buffer holds size * chunk elements (about ``recv_elements``), not
        a whole gradient."""
        chunk = max(BLOCK, recv_elements // size)
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


class _Partitions:
    """The partitions of the kernels' sums (``_kernels.sum_partitions``) of every
    non-empty parameter, when the shards are cut between them (partitioned buckets):
    each lies on one rank, which sums it as one process does; every rank's partition
    sums are all-gathered, and ``totals`` adds them as one process adds them."""

    def __init__(self, buckets: list[_Bucket], params: list[np.ndarray], rank: int,
                 size: int):
        bucket_of = {i: b for b in buckets for i in b.members}
        owned: list[list[int]] = [[] for _ in range(size)]
        self.spans: list[tuple[int, int]] = []  # per non-empty parameter, in order
        self.first: dict[tuple[int, int], int] = {}  # (param, offset): local index
        self.ranges: list[tuple[_Bucket, int, int]] = []  # local: (bucket, begin, end)
        g = 0
        for i, p in enumerate(params):
            if p.size == 0:
                continue  # one process adds +0.0 for it: nothing
            b = bucket_of[i]
            start = b.starts[b.members.index(i)]
            cuts = _kernels.sum_partitions(p.size)
            self.spans.append((g, g + len(cuts) - 1))
            for lo, hi in zip(cuts, cuts[1:]):
                r = next(r for r in range(size)
                         if b.bounds[r] <= start + lo and start + hi <= b.bounds[r + 1])
                if r == rank:
                    self.first.setdefault((i, lo), len(owned[r]))
                    self.ranges.append((b, start + lo - b.lo, start + hi - b.lo))
                owned[r].append(g)
                g += 1
        self.counts = [len(o) for o in owned]
        self.order = np.array([x for o in owned for x in o], np.intp)

    def totals(self, values: np.ndarray) -> list[float]:
        """Per parameter, the sum of its partitions' values in order (``values``: one
        per partition, in rank order, as all-gathered)."""
        ordered = np.empty(len(values))
        ordered[self.order] = values
        v = ordered.tolist()
        out = []
        for lo, hi in self.spans:
            s = 0.0
            for x in v[lo:hi]:
                s += x
            out.append(s)
        return out


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
            self._alone(b)
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
            self._alone(b)
            return
        if self.reproducible:
            self.reduce_shard(b, weights)
            self.gather_shards(b)
        else:
            assert _uniform(weights), "weighted means use the reproducible reduction"
            send = self.MPI.IN_PLACE if b.source is b.send else [b.source, b.mpitype]
            self.comm.Allreduce(send, [b.send, b.mpitype], op=self.MPI.SUM)
            self._divide(b.send, weights)

    @staticmethod
    def _alone(b: _Bucket) -> None:
        """One rank: the mean is the source itself (the shard is the whole buffer)."""
        if b.source is not b.send:
            _kernels.copy_into(b.send, b.source)

    def _divide(self, out: np.ndarray, weights: Sequence[float] | None) -> None:
        total = self.size if weights is None or _uniform(weights) else sum(weights)
        np.divide(out, out.dtype.type(total), out=out)


# ----------------------------------------------------------------------------------
# The optimizer wrapper


class _GradientCheck:
    """The non-finite policy and the global sum of squares for max_grad_norm, on the
    averaged gradient of a DistributedOptimizer (this rank's shards in sharded mode,
    where every rank's findings are all-gathered).

    Sharded, per rank: the first non-finite element (2 values) and the sums of squares
    of its blocks, at fixed offsets of one buffer."""

    def __init__(self, comm: Any, buckets: list[_Bucket], params: list[np.ndarray],
                 options: dict[str, Any], sharded: bool,
                 partitions: _Partitions | None = None):
        self.comm, self.buckets, self.params, self.options = comm, buckets, params, options
        self.sharded = sharded
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        # with partitions (sharded Prodigy): the norm summed as one process sums it
        self.partitions = partitions
        self.partition_sums = np.zeros(0 if partitions is None
                                       else partitions.counts[self.rank])
        self.counts = [2 + (sum(_blocks(b.counts[r]) for b in buckets) if partitions is None
                            else partitions.counts[r]) for r in range(self.size)]
        self.displs = [int(d) for d in np.cumsum([0] + self.counts[:-1])]
        self.all = np.zeros(sum(self.counts))
        here = self.displs[self.rank]
        self.mine = self.all[here:here + self.counts[self.rank]]
        self.is_sum = np.ones(len(self.all), bool)
        for d in self.displs:
            self.is_sum[d:d + 2] = False

    def __call__(self) -> tuple[bool, float | None]:
        """Apply the check to the averaged gradient in the buckets; the clamping and
        the scaling themselves happen in the inner optimizer's kernels (one gradient
        pre-processing path). Returns (False, None) to skip the step, else (True,
        the sum of squares of the clamped gradient of all ranks, or None without
        max_grad_norm)."""
        clip, mgn = self.options["clip_value"], self.options["max_grad_norm"]
        policy = self.options["nonfinite"]
        if mgn is None and policy == "propagate":
            return True, None
        sharded = self.sharded
        parts = [(b, b.shard if sharded else b.send, b.lo if sharded else 0)
                 for b in self.buckets]
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
        if mgn is not None and self.partitions is not None:
            out = self.partition_sums
            out.fill(0.0)
            for j, (b, lo, hi) in enumerate(self.partitions.ranges):
                _kernels.block_sum_squares(b.shard[lo:hi], 0, hi - lo,
                                           np.inf if clip is None else clip, out[j:j + 1])
            sums.append(out)
        elif mgn is not None:  # the kernels' sum of squares of the clamped gradient
            for b, part, _ in parts:
                b.norm_sums.fill(0.0)
                _kernels.block_sum_squares(part, 0, BLOCK, np.inf if clip is None else clip,
                                           b.norm_sums)
                sums.append(b.norm_sums)
        if sharded and self.size > 1:
            # every rank's flags and block sums, gathered in place into self.all
            mine = self.mine
            mine.fill(0.0)
            mine[:2] = local
            if sums:
                mine[2:] = np.concatenate(sums) if len(sums) > 1 else sums[0]
            self.comm.Allgatherv(_mpi().IN_PLACE, [self.all, self.counts,
                                                   self.displs, _mpi().DOUBLE])
            bad: Any = next((self.all[d:d + 2] for d in self.displs
                             if self.all[d] >= 0), None)
            block_sums = self.all[self.is_sum].tolist() if sums else []
        else:
            bad = local if local[0] >= 0 else None
            block_sums = [v for a in sums for v in a.tolist()]
        if bad is not None:
            if policy == "skip":
                return False, None
            i, flat = int(bad[0]), int(bad[1])
            index = np.unravel_index(flat, self.params[i].shape)
            where = int(index[0]) if len(index) == 1 else tuple(int(j) for j in index)
            raise FloatingPointError(
                f"the averaged gradient of params[{i}] holds a NaN or infinity at index "
                f"{where}; nothing was updated on any rank (nonfinite='raise')")
        if mgn is None:
            return True, None
        if self.partitions is not None:  # as the engine adds them in one process
            total = 0.0
            for t in self.partitions.totals(np.asarray(block_sums)):
                total += t
            return True, total
        # fsum is correctly rounded: the same total from the same blocks, in any order
        # and on any rank layout; the kernels turn it into torch's clip_grad_norm_ factor
        return True, math.fsum(block_sums)
