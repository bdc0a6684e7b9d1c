"""SGD: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .._core.optimizer import Optimizer
from .._core.validation import check_nesterov
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['SGD', 'sgd_step']

ALGORITHM = Algorithm(
    "sgd",
    hyper=(("lr", 1e-3), ("momentum", 0.0), ("dampening", 0.0), ("weight_decay", 0.0),
           ("nesterov", False), ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("momentum_buffer", requires="momentum", needs="momentum > 0",
                  unstarted=True),),
    classes=(PublicClass("SGD"),),
    methods=(Method("sgd", "SGD", "SGD (gradient descent with momentum)"),),
    aux="buffer_started",
    cross_check=check_nesterov,
)


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional (Nesterov) momentum, as
    torch.optim.SGD (Sutskever et al., 2013)::

        g = g + weight_decay * p
        b = g                                    (first step with momentum)
        b = momentum * b + (1 - dampening) * g   (later steps)
        g = g + momentum * b if nesterov else b  (with momentum)
        p = p - lr * g

    Parameters
    ----------
    {params}
    momentum : float, optional
        Momentum factor in [0, 1] (default 0: plain gradient descent).
    dampening : float, optional
        Dampening of the momentum, in [0, 1] (default 0).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    nesterov : bool, optional
        Nesterov momentum; needs momentum > 0 and dampening 0 (default False).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.001,
                 momentum: float = 0.0,
                 dampening: float = 0.0,
                 weight_decay: float = 0.0,
                 nesterov: bool = False,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                weight_decay=weight_decay, nesterov=nesterov,
                                maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def sgd_step(
        param: np.ndarray,
        grad: np.ndarray,
        momentum_buffer: np.ndarray | None = None,
        *,
        step: int,
        lr: float = 0.001,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False) -> None:
    r"""Apply one SGD update in place (see :class:`adamc.SGD`).

    Parameters
    ----------
    momentum_buffer : ndarray, optional
        Required when ``momentum > 0``. At ``step == 1`` it is set to the gradient
        (torch's first step); later steps update it.
    step : int
        1-based number of this update.
    lr, momentum, dampening, weight_decay, nesterov, maximize
        As for :class:`adamc.SGD`.
    param, grad
        As in :func:`adam_step`.
    """


def sgd(param: Array, grad: Array, momentum_buffer: Optional[Array] = None, *, step: int,
        lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
        lower=None, upper=None, clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One SGD step (torch.optim.SGD). The momentum buffer starts as a copy of the
    gradient at step 1."""
    p = f64(param)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    out = {}
    if momentum != 0:
        if step == 1:
            buf = g.copy()
        else:
            buf = momentum * f64(momentum_buffer) + (1 - dampening) * g
        out["momentum_buffer"] = buf
        g = g + momentum * buf if nesterov else buf
    out["param"] = project(p - lr * g, lower, upper)
    return out
