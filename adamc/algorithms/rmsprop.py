"""RMSprop: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['RMSprop', 'rmsprop_step']

ALGORITHM = Algorithm(
    "rmsprop",
    hyper=(("lr", 1e-2), ("alpha", 0.99), ("eps", 1e-8), ("weight_decay", 0.0),
           ("momentum", 0.0), ("centered", False), ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("square_avg", kind="second_moment"),
            State("momentum_buffer", requires="momentum", needs="momentum > 0",
                  positional=False),
            State("grad_avg", requires="centered", needs="centered=True",
                  positional=False)),
    classes=(PublicClass("RMSprop"),),
    methods=(Method("rmsprop", "RMSprop", "RMSprop"),),
)


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, lecture 6e), as torch.optim.RMSprop::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        a = a + (1 - alpha) * (g - a);  d = sqrt(v - a * a) + eps   (centered)
        d = sqrt(v) + eps                                           (otherwise)
        b = momentum * b + g / d;  p = p - lr * b                   (momentum > 0)
        p = p - lr * g / d                                          (otherwise)

    Parameters
    ----------
    {params}
    alpha : float, optional
        Smoothing constant in [0, 1] (default 0.99).
    eps : float, optional
        Added to the denominator (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    momentum : float, optional
        Momentum factor in [0, 1] (default 0).
    centered : bool, optional
        Normalize by an estimate of the variance of the gradient (default False).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.01,
                 alpha: float = 0.99,
                 eps: float = 1e-08,
                 weight_decay: float = 0.0,
                 momentum: float = 0.0,
                 centered: bool = False,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                momentum=momentum, centered=centered, maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def rmsprop_step(
        param: np.ndarray,
        grad: np.ndarray,
        square_avg: np.ndarray,
        *,
        step: int,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        maximize: bool = False,
        momentum_buffer: np.ndarray | None = None,
        grad_avg: np.ndarray | None = None) -> None:
    r"""Apply one RMSprop update in place (see :class:`adamc.RMSprop`).

    Parameters
    ----------
    square_avg : ndarray
        Running average of the squared gradient (start from zeros).
    momentum_buffer : ndarray, optional
        Required when ``momentum > 0`` (start from zeros).
    grad_avg : ndarray, optional
        Running average of the gradient; required when ``centered``.
    step : int
        1-based number of this update (RMSprop has no bias correction; it is
        checked for consistency with the other steps).
    lr, alpha, eps, weight_decay, momentum, centered, maximize
        As for :class:`adamc.RMSprop`.
    param, grad
        As in :func:`adam_step`.
    """


def rmsprop(param: Array, grad: Array, square_avg: Array, *, step: int, lr: float = 1e-2,
            alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, maximize: bool = False,
            momentum_buffer: Optional[Array] = None, grad_avg: Optional[Array] = None,
            lower=None, upper=None, clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One RMSprop step (torch.optim.RMSprop; Hinton's lecture 6e). ``step`` is
    accepted for symmetry: RMSprop has no bias correction."""
    p, v = f64(param), f64(square_avg)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    out = {"square_avg": v}
    if centered:
        a = f64(grad_avg)
        a = a + (1 - alpha) * (g - a)
        out["grad_avg"] = a
        avg = np.sqrt(v - a * a) + eps
    else:
        avg = np.sqrt(v) + eps
    if momentum > 0:
        buf = momentum * f64(momentum_buffer) + g / avg
        out["momentum_buffer"] = buf
        p = p - lr * buf
    else:
        p = p - lr * g / avg
    out["param"] = project(p, lower, upper)
    return out
