"""Lion: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['Lion', 'lion_step']

ALGORITHM = Algorithm(
    "lion",
    hyper=(("lr", 1e-4), ("betas", (0.9, 0.99)), ("weight_decay", 0.0),
           ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("exp_avg"),),
    classes=(PublicClass("Lion"),),
    methods=(Method("lion", "Lion", "Lion (evolved sign momentum)"),),
)


class Lion(Optimizer):
    r"""Lion, evolved sign momentum (Chen et al., 2023, "Symbolic Discovery of
    Optimization Algorithms"), as ``optax.lion`` and the ``lion-pytorch`` package::

        p = p * (1 - lr * weight_decay)         (decoupled weight decay)
        c = beta1 * m + (1 - beta1) * g
        p = p - lr * sign(c)                     (sign(0) = 0)
        m = beta2 * m + (1 - beta2) * g

    Every element moves by exactly ``lr`` (or not at all), so Lion wants a learning
    rate 3-10 times smaller than Adam's and a weight decay 3-10 times larger.

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        ``beta1`` interpolates the update direction, ``beta2`` decays the momentum
        (default (0.9, 0.99)).
    weight_decay : float, optional
        Decoupled weight decay coefficient (default 0).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.0001,
                 betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def lion_step(
        param: np.ndarray,
        grad: np.ndarray,
        exp_avg: np.ndarray,
        *,
        step: int,
        lr: float = 0.0001,
        beta1: float = 0.9,
        beta2: float = 0.99,
        weight_decay: float = 0.0,
        maximize: bool = False) -> None:
    r"""Apply one Lion update in place (see :class:`adamc.Lion`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    exp_avg : ndarray
        Momentum (start from zeros); updated in place.
    step : int
        1-based number of this update (Lion has no bias correction; it is checked
        for consistency with the other steps).
    lr : float, optional
        Learning rate, >= 0. Default 1e-4.
    beta1, beta2 : float, optional
        In [0, 1). Defaults 0.9 and 0.99.
    weight_decay : float, optional
        Decoupled weight decay coefficient (``p *= 1 - lr * weight_decay``). Default 0.
    maximize : bool, optional
        Maximize the objective instead of minimizing it.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """


def lion(param: Array, grad: Array, exp_avg: Array, *, step: int, lr: float = 1e-4,
         beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
         maximize: bool = False, lower=None, upper=None, clip_value=None,
         clip_scale: float = 1.0) -> dict[str, Array]:
    """One Lion step (Chen et al., 2023, Program 1; ``optax.lion``): the update is the
    sign of an interpolation of momentum and gradient, plus decoupled weight decay.
    ``step`` is accepted for symmetry: Lion has no bias correction."""
    p, m = f64(param), f64(exp_avg)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    update = np.sign(beta1 * m + (1 - beta1) * g)
    p = p - lr * (update + weight_decay * p)
    m = beta2 * m + (1 - beta2) * g
    return {"param": project(p, lower, upper), "exp_avg": m}
