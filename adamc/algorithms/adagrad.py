"""Adagrad: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['Adagrad', 'adagrad_step']

ALGORITHM = Algorithm(
    "adagrad",
    hyper=(("lr", 1e-2), ("lr_decay", 0.0), ("weight_decay", 0.0),
           ("initial_accumulator_value", 0.0), ("eps", 1e-10), ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("sum", kind="second_moment"),),
    classes=(PublicClass("Adagrad"),),
    methods=(Method("adagrad", "Adagrad", "Adagrad"),),
)


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), with torch.optim.Adagrad's defaults and
    semantics. Per step ``t`` and element::

        g   = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s   = s + g * g                  (s starts at initial_accumulator_value)
        p   = p - clr * g / (sqrt(s) + eps)

    in torch's operation order. The state array ``sum`` (torch's name) holds ``s``;
    it is zero before the first step, which adds ``initial_accumulator_value`` (torch
    fills it in when the state is created: the values after every step are the same).

    Parameters
    ----------
    {params}
    lr_decay : float, optional
        Decay of the learning rate with the step number (default 0).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    initial_accumulator_value : float, optional
        Initial value of the sum of squared gradients, >= 0 (default 0). Each group
        uses its own value (torch uses the constructor's for every group).
    eps : float, optional
        Added to the denominator, outside the square root (default 1e-10).
    maximize : bool, optional
        Maximize the objective (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adagrad(x, lr=1.0)
    >>> for _ in range(100):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> bool(abs(x[0] - 2) < 0.1)
    True
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.01,
                 lr_decay: float = 0.0,
                 weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                initial_accumulator_value=initial_accumulator_value,
                                eps=eps, maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def adagrad_step(
        param: np.ndarray,
        grad: np.ndarray,
        sum: np.ndarray,
        *,
        step: int,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        maximize: bool = False) -> None:
    r"""Apply one Adagrad update in place (see :class:`adamc.Adagrad`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    sum : ndarray
        Sum of squared gradients (start from zeros: step 1 adds
        ``initial_accumulator_value``); updated in place.
    step : int
        1-based number of this update (it gives the learning-rate decay and marks
        the first step).
    lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
        As for :class:`adamc.Adagrad`.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """


def adagrad(param: Array, grad: Array, sum: Array, *, step: int, lr: float = 1e-2,
            lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            maximize: bool = False, lower=None, upper=None, clip_value=None,
            clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adagrad step (torch.optim.Adagrad; Duchi et al., 2011). ``sum`` starts from
    zeros, as adamc keeps it: step 1 adds ``initial_accumulator_value`` (torch's
    starting value of the sum)."""
    p = f64(param)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    state_sum = f64(sum) + (initial_accumulator_value if step == 1 else 0.0)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum = state_sum + g * g
    p = p - clr * g / (np.sqrt(state_sum) + eps)
    return {"param": project(p, lower, upper), "sum": state_sum}
