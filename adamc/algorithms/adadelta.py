"""Adadelta: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['Adadelta', 'adadelta_step']

ALGORITHM = Algorithm(
    "adadelta",
    hyper=(("lr", 1.0), ("rho", 0.9), ("eps", 1e-6), ("weight_decay", 0.0),
           ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("square_avg", kind="second_moment"),
            State("acc_delta", kind="second_moment")),
    classes=(PublicClass("Adadelta"),),
    methods=(Method("adadelta", "Adadelta", "Adadelta"),),
)


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), with torch.optim.Adadelta's defaults and
    semantics. Per step and element::

        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g * g                       (square_avg)
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d                       (acc_delta)
        p = p - lr * d

    in torch's operation order.

    Parameters
    ----------
    {params}
    rho : float, optional
        Decay rate of the running averages, in [0, 1] (default 0.9).
    eps : float, optional
        Added inside both square roots (default 1e-6).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    maximize : bool, optional
        Maximize the objective (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adadelta(x)
    >>> for _ in range(10):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> opt.step_count
    10
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 1.0,
                 rho: float = 0.9,
                 eps: float = 1e-06,
                 weight_decay: float = 0.0,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def adadelta_step(
        param: np.ndarray,
        grad: np.ndarray,
        square_avg: np.ndarray,
        acc_delta: np.ndarray,
        *,
        step: int,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-06,
        weight_decay: float = 0.0,
        maximize: bool = False) -> None:
    r"""Apply one Adadelta update in place (see :class:`adamc.Adadelta`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    square_avg, acc_delta : ndarray
        Running averages of the squared gradients and of the squared updates (start
        from zeros); updated in place.
    step : int
        1-based number of this update (Adadelta has no bias correction; it is checked
        for consistency with the other steps).
    lr, rho, eps, weight_decay, maximize
        As for :class:`adamc.Adadelta`.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """


def adadelta(param: Array, grad: Array, square_avg: Array, acc_delta: Array, *, step: int,
             lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
             maximize: bool = False, lower=None, upper=None, clip_value=None,
             clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adadelta step (torch.optim.Adadelta; Zeiler, 2012, Algorithm 1 with a
    learning rate). ``step`` is accepted for symmetry: Adadelta has no bias
    correction."""
    p, v, u = f64(param), f64(square_avg), f64(acc_delta)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    v = rho * v + (1 - rho) * g * g
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    u = rho * u + (1 - rho) * delta * delta
    p = p - lr * delta
    return {"param": project(p, lower, upper), "square_avg": v, "acc_delta": u}
