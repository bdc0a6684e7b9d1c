"""Mini-batches: the public ``minibatches`` generator and the driver's ``batches``
option (extra arguments of each evaluation, counted so that a run can resume)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

__all__ = ["minibatches"]



def minibatches(*arrays: np.ndarray, batch_size: int, epochs: int = 1, shuffle: bool = True,
                seed: Any = None, drop_last: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield tuples of mini-batches of ``arrays`` (split along their first axis).

    Parameters
    ----------
    *arrays : array_like
        Arrays with the same length along axis 0 (e.g. ``X`` and ``y``).
    batch_size : int
        Rows per batch (the last batch of an epoch may be smaller).
    epochs : int, optional
        Passes over the data (default 1).
    shuffle : bool, optional
        Draw a new random order of the rows for every epoch (default True).
    seed : int, numpy.random.Generator or None, optional
        Seed of the shuffling, for reproducible runs.
    drop_last : bool, optional
        Skip the last batch of each epoch when it is smaller than ``batch_size``.

    Yields
    ------
    tuple of ndarray
        One batch of every array, in the order given; suitable for
        ``options={"batches": ...}`` of :func:`minimize`.
    """
    if not arrays:
        raise ValueError("minibatches needs at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)
    if any(a.ndim == 0 for a in arrays):
        raise ValueError("minibatches needs arrays with at least one dimension")
    n = arrays[0].shape[0]
    for i, a in enumerate(arrays[1:], 1):
        if a.shape[0] != n:
            raise ValueError(f"arrays[{i}] has {a.shape[0]} rows, arrays[0] has {n}")
    for name, value in (("batch_size", batch_size), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    rng = np.random.default_rng(seed)
    return _batch_iterator(arrays, n, int(batch_size), int(epochs), bool(shuffle), rng,
                           bool(drop_last))


def _batch_iterator(arrays, n, batch_size, epochs, shuffle, rng, drop_last):
    for _ in range(epochs):
        order = rng.permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if drop_last and stop - start < batch_size:
                break
            if order is None:
                yield tuple(a[start:stop] for a in arrays)
            else:
                idx = order[start:stop]
                yield tuple(a[idx] for a in arrays)


class _Batches:
    """The ``batches`` option: extra arguments of each evaluation, counted so that a
    resumed run can skip what the interrupted one consumed."""

    def __init__(self, batches: Iterable | None):
        self.iterator: Iterator | None = None if batches is None else iter(batches)
        self.last: tuple = ()
        self.consumed = 0
        self.exhausted = False

    def _pull(self) -> tuple | None:
        assert self.iterator is not None
        for item in self.iterator:
            self.consumed += 1
            return item if isinstance(item, tuple) else (item,)
        return None

    def first(self) -> tuple:
        if self.iterator is None:
            return ()
        batch = self._pull()
        if batch is None:
            raise ValueError("options['batches'] is empty")
        self.last = batch
        return batch

    def next(self) -> tuple:
        """The next batch; once exhausted, the last one again (the final x is
        evaluated on it) and ``exhausted`` is set."""
        if self.iterator is None:
            return ()
        batch = self._pull()
        if batch is None:
            self.exhausted = True
        else:
            self.last = batch
        return self.last

    def skip(self, count: int) -> None:
        if self.iterator is None:
            return
        for _ in range(count):
            batch = self._pull()
            if batch is None:
                raise ValueError(f"options['batches'] has fewer than the {count} batches the "
                                 f"checkpointed run had consumed; pass the same batches "
                                 f"(same data and seed) to resume")
            self.last = batch

    def close(self, status: int) -> None:
        if self.iterator is not None and hasattr(self.iterator, "close") and status != 0:
            self.iterator.close()
