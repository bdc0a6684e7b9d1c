"""Learning-rate schedules: ``lr=schedule`` in any optimizer, param group or
``minimize`` call.

A schedule is called with the 1-based number of the update being computed (the same
``step`` as the stateless steps receive) and returns the learning rate of that update.
The schedules below are compiled: an optimizer evaluates them without a Python call,
so they cost a few nanoseconds per step. Any other callable ``step -> lr`` works too
(its result is checked at every step).

Examples
--------
>>> import numpy as np, adamc
>>> from adamc import schedules
>>> x = np.zeros(10)
>>> opt = adamc.Adam(x, lr=schedules.cosine_decay(1e-2, total_steps=1000, warmup_steps=50))
>>> opt.param_groups[0]["lr"](1)      # first warm-up step
0.0002
"""
from __future__ import annotations

from ._kernels import (Schedule, _Constant, _CosineDecay, _ExponentialDecay, _InverseSqrt,
                       _ReduceOnPlateau, _StepDecay)

__all__ = ["Schedule", "ReduceOnPlateau", "constant", "step_decay", "exponential_decay",
           "cosine_decay", "inverse_sqrt", "reduce_on_plateau"]

ReduceOnPlateau = _ReduceOnPlateau


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    return _Constant(lr)


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** ((step - 1) // step_size)``: multiply by ``gamma`` every
    ``step_size`` steps (torch.optim.lr_scheduler.StepLR)."""
    return _StepDecay(lr, step_size, gamma)


def exponential_decay(lr: float, gamma: float) -> Schedule:
    """``lr * gamma ** (step - 1)`` (torch.optim.lr_scheduler.ExponentialLR)."""
    return _ExponentialDecay(lr, gamma)


def cosine_decay(lr: float, total_steps: int, min_lr: float = 0.0,
                 warmup_steps: int = 0) -> Schedule:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr``.

    For ``step <= warmup_steps``: ``lr * step / warmup_steps``. Then
    ``min_lr + (lr - min_lr) * (1 + cos(pi * q)) / 2`` with
    ``q = min(1, (step - warmup_steps) / (total_steps - warmup_steps))``, so the rate
    reaches ``min_lr`` at ``total_steps`` and stays there
    (torch's CosineAnnealingLR after a LinearLR warm-up; optax's
    warmup_cosine_decay_schedule from 0).
    """
    return _CosineDecay(lr, total_steps, min_lr, warmup_steps)


def inverse_sqrt(lr: float, warmup_steps: int = 0) -> Schedule:
    """Inverse square-root decay ("Attention is all you need", fairseq):
    ``lr * step / warmup_steps`` during the warm-up, then
    ``lr * sqrt(max(warmup_steps, 1) / step)``."""
    return _InverseSqrt(lr, warmup_steps)


def reduce_on_plateau(lr: float, mode: str = "min", factor: float = 0.1, patience: int = 10,
                      threshold: float = 1e-4, threshold_mode: str = "rel",
                      cooldown: int = 0, min_lr: float = 0.0,
                      eps: float = 1e-8) -> ReduceOnPlateau:
    """Start at ``lr``; multiply it by ``factor`` when a metric has stopped improving
    (torch.optim.lr_scheduler.ReduceLROnPlateau: the same options, defaults and rule).

    Each ``sched.step(metric)`` records one value; when ``patience`` calls in a row
    bring no improvement, the rate becomes ``max(lr * factor, min_lr)`` (unless that
    changes it by ``eps`` or less), and the next ``cooldown`` calls are not counted.
    An improvement is a value below ``best * (1 - threshold)`` (``mode="min"``,
    ``threshold_mode="rel"``), ``best - threshold`` (``"abs"``), or above
    ``best * (1 + threshold)`` / ``best + threshold`` with ``mode="max"``.

    Unlike the other schedules, the rate depends on the metrics, not on the step:
    the schedule is a stateful object.

    - With an optimizer object, call ``sched.step(loss)`` yourself, as with torch
      (``opt = adamc.Adam(x, lr=sched)``; every step uses ``sched.lr``).
    - ``adamc.minimize(..., options={"lr": sched})`` steps a copy with ``f`` after
      every iteration (your object is left as it is), and stops with status 0 when a
      reduction is due while the rate is already at ``min_lr``: the rate cannot
      shrink further and f has stopped improving.
    - ``adamc.minimize_many`` keeps one copy per problem, stepped with that problem's
      ``f``.

    Its state travels with ``state_dict()``, checkpoints, copies and pickles.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([1.0])
    >>> sched = adamc.schedules.reduce_on_plateau(0.1, patience=2)
    >>> opt = adamc.Adam(x, lr=sched)
    >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0]:
    ...     sched.step(loss)
    >>> sched.lr
    0.010000000000000002
    """
    return _ReduceOnPlateau(lr, mode, factor, patience, threshold, threshold_mode, cooldown,
                            min_lr, eps)
