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
                       _StepDecay)

__all__ = ["Schedule", "constant", "step_decay", "exponential_decay", "cosine_decay",
           "inverse_sqrt"]


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
