"""The one interface of an optimizer that adamc's adapters use.

The checkpoint format (adamc._core.format, adamc.checkpoint), adamc.distributed and the
minimize driver reach an optimizer's internals through :class:`Port` only; this is
the only module outside adamc.optim that touches them (tests/test_layers.py checks
it), so what an adapter relies on is written here, once.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _kernels
from ..optim import Optimizer

__all__ = ["Port"]


class Port:
    """The interface of an optimizer class, and of its instances, for adamc's adapters.

    The checkpoint format (adamc._core.format, adamc.checkpoint), adamc.distributed and the
    minimize driver use an optimizer through this class only, never through the
    private members of :class:`Optimizer` (tests/test_layers.py checks it): what an
    adapter may rely on is written here, once.

    Parameters
    ----------
    cls : type
        An adamc optimizer class.
    """

    __slots__ = ("cls", "name", "state_keys", "options", "engine", "mirrored", "_checker")

    def __init__(self, cls: type[Optimizer]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise TypeError(f"expected an adamc optimizer class, got {cls!r}")
        self.cls = cls
        self.name: str = cls.__name__
        #: names of the per-parameter state arrays, in kernel order
        self.state_keys: tuple[str, ...] = cls._state_keys
        #: the compiled engine of an algorithm with optimizer-wide state (Prodigy's
        #: estimate of d, the schedule-free averaging), or None for the plain engine
        self.engine: str | None = cls._spec.engine
        #: the param-group keys that mirror the engine's scalar state after each step
        #: (Prodigy's d, the schedule-free weight sums): not hyperparameters
        self.mirrored: tuple[str, ...] = cls._mirrored
        self._checker = cls.__new__(cls)  # validates hyperparameters, holds nothing
        #: the names of the optimizer-wide options, the keys of a snapshot's "options"
        self.options: tuple[str, ...] = tuple(self._checker._options())

    # -- snapshots: everything that defines an optimizer, arrays by reference --------
    @staticmethod
    def export(opt: Optimizer) -> dict[str, Any]:
        """The snapshot of ``opt`` (the common ground of pickling, checkpoints and
        distribution): class name, defaults, groups, state arrays, step counts,
        scalar states, counters, options and bounds."""
        return opt._export()

    def build(self, snapshot: dict[str, Any]) -> Optimizer:
        """A new optimizer of this class from a snapshot (state copied, all validated)."""
        return self.cls._from_export(snapshot)

    # -- hyperparameters -------------------------------------------------------------
    def check_group(self, group: dict[str, Any], gi: int,
                    has_state: Callable[[int], bool]) -> tuple[dict, Callable | None]:
        """Validate param group ``gi`` (``group``'s hyperparameters) as step() does:
        returns (the hyperparameters, the schedule or None); raises when a flag needs
        state array k for which ``has_state(k)`` is false."""
        hyper, fn = self._checker._group_hyper(group, gi)
        for k, key in enumerate(self.state_keys):
            if self._checker._state_used(key, hyper) and not has_state(k):
                raise self.cls._missing_state(gi, key)
        return hyper, fn

    # -- stepping ---------------------------------------------------------------------
    @staticmethod
    def set_bounds(opt: Optimizer, lower: list[np.ndarray], upper: list[np.ndarray]) -> None:
        """Project every parameter onto [lower[i], upper[i]] after each update."""
        opt._set_bounds(lower, upper)

    @staticmethod
    def step_reduced(opt: Optimizer, grads: Any, sumsq: float) -> None:
        """step(grads) whose max_grad_norm clipping uses ``sumsq``, the sum of squares
        of the (clamped) gradient reduced by the caller over every process."""
        opt._step_reduced(grads, sumsq)

    @staticmethod
    def step_with_reducer(opt: Optimizer, grads: Any, reducer: Callable, sumsq: float | None,
                          grid: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Prodigy's step whose two global sums come from ``reducer`` (see
        ``adamc._kernels._ProdigyEngine._step_with_reducer``): with ``grid``, the
        optimizer's parameters are pieces of larger arrays, and the caller reduces
        the sums of their partitions over every process."""
        if not isinstance(opt, _kernels._ProdigyEngine):
            raise TypeError(f"{type(opt).__name__} has no reduced statistics (Prodigy has)")
        opt._step_with_reducer(grads, reducer, sumsq, grid)

    # -- state ------------------------------------------------------------------------
    @staticmethod
    def state_arrays(opt: Optimizer) -> list[list[np.ndarray | None]]:
        """Per parameter, its state arrays in ``state_keys`` order (None: not allocated)."""
        return opt._state_arrays

    @staticmethod
    def counters(opt: Optimizer) -> tuple[list[int], list[float]]:
        """Per group, the step counts and the algorithm's scalar states."""
        return opt._group_steps(), opt._group_aux()
