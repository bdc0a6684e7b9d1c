"""adamc.minimize(..., options={"comm": comm}): the collaborator that makes the
driver's run collective (see adamc._fitting.minimize._Local for the interface)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _kernels
from .._parallel.collective import _agree, _check_same, _communicator, _mpi
from .._parallel.reducer import _Bucket, _Reducer, _uniform

__all__: list[str] = []

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
