"""Checkpoints: ``adamc.save(optimizer, path)`` and ``adamc.load(path, params)``.

A checkpoint is an ``.npz`` file (NumPy's zip of ``.npy`` arrays) holding the
parameter values, every state array, and a JSON description of the optimizer (class,
hyperparameters of each group, step counts, options). Loading never executes code
(nothing is unpickled) and checks every array's header against the description
before reading its data. Files are written atomically (a temporary file in the same
directory, locked while it is written, flushed to disk, then renamed), so a crash
leaves either the old checkpoint or the new one, never a mixture; the temporary file
of a save killed half-way is removed by the next save to the same path.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import optim
from ._core.format import CheckpointError, _Archive, _payload, _write
from ._core.port import Port

__all__ = ["save", "load"]

CheckpointError.__module__ = __name__  # its public home (defined with the format)


def save(optimizer: optim.Optimizer, path: str | os.PathLike) -> None:
    """Write the optimizer (hyperparameters, state and parameter values) to ``path``.

    Parameters
    ----------
    optimizer : adamc.Optimizer or adamc.distributed.DistributedOptimizer
        Any adamc optimizer. A ``DistributedOptimizer`` is saved collectively
        (every rank calls ``save``; rank 0 gathers the state and writes one file,
        which ``load`` reads with any number of ranks, or in a single process).
    path : str or path-like
        Destination, written atomically (replaced if it exists). The name is used
        as given (``.npz`` is not appended). A file that is replaced keeps its mode
        (and its group, where permitted); a new file gets the umask's default mode,
        as ``open()`` gives it. A symbolic link stays: the file it points to is
        replaced.

    Raises
    ------
    ValueError
        When a hyperparameter cannot be stored without pickle (a Python callable as
        ``lr``, or an arbitrary object in a param group).
    OSError
        When the file cannot be written (the old file, if any, is then unchanged).

    Notes
    -----
    The data go to a temporary file ``.<name>.XXXXXXXX.tmp`` next to the file, which
    is flushed to disk and renamed over it. On POSIX systems the temporary file is
    locked while it is written, and each save first removes the unlocked temporary
    files of earlier saves to the same path (those of killed processes), never one
    that a running save is writing. Without ``fcntl`` (Windows) there is no such
    sweep: a killed save's temporary file stays until it is removed by hand.
    """
    _save_with_extra(optimizer, path)


def _save_with_extra(optimizer: optim.Optimizer, path: str | os.PathLike,
                     _extra: dict[str, Any] | None = None,
                     _extra_arrays: dict[str, np.ndarray] | None = None) -> None:
    """save() plus the extra meta data and arrays of minimize's checkpoints (read back
    by _load_with_extra)."""
    collective = getattr(type(optimizer), "_save_collectively", None)
    if collective is not None:  # adamc.distributed.DistributedOptimizer: every rank calls
        collective(optimizer, path, _extra, _extra_arrays)
        return
    if not isinstance(optimizer, optim.Optimizer):
        raise TypeError(f"optimizer must be an adamc optimizer, got {type(optimizer).__name__}")
    _write(type(optimizer), Port.export(optimizer), path, _extra, _extra_arrays)


def load(path: str | os.PathLike, params: Any) -> optim.Optimizer:
    """Restore an optimizer saved by :func:`save`, writing the saved parameter values
    into ``params`` in place.

    Parameters
    ----------
    path : str or path-like
        A checkpoint written by :func:`save`.
    params : ndarray or sequence of ndarray
        The arrays to optimize, in the order of the saved optimizer's param groups,
        with the saved shapes and dtypes (C-contiguous and writeable).

    Returns
    -------
    adamc.Optimizer
        An optimizer of the saved class with the saved hyperparameters, state and
        step counts, bound to ``params``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        (``adamc.checkpoint.CheckpointError``) When the file is corrupt, truncated, not
        an adamc checkpoint (a plain ``.npy`` or ``.npz`` file, any other file, a
        directory), or does not match ``params``. Nothing is modified then.
    TypeError
        When ``params`` are not float arrays.
    """
    return _load(path, params, extras=False)[0]


def _load(path: str | os.PathLike, params: Any, extras: bool
          ) -> tuple[optim.Optimizer, dict[str, Any], dict[str, np.ndarray]]:
    """load(), and with ``extras`` the extra meta data and arrays that minimize's
    checkpoints hold. Everything is read and checked before ``params`` are written."""
    params = [params] if isinstance(params, np.ndarray) else list(params)
    with _Archive(path) as archive:
        cls, payload, saved_values = _payload(archive, params)
        extra_arrays = {name[len("extra_"):]: archive.array(name) for name in archive.names()
                        if extras and name.startswith("extra_")}
        extra = archive.meta.get("extra", {})
    try:
        opt = Port(cls).build(payload)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not describe a valid optimizer: {exc}") from None
    for p, value in zip(params, saved_values):  # last: nothing above could fail after it
        np.copyto(p, value)
    return opt, extra, extra_arrays


def _load_with_extra(path, params):
    """load() plus the extra meta data and arrays saved by minimize's checkpoints."""
    return _load(path, params, extras=True)
