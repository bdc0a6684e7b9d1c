"""Adamax: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['Adamax', 'adamax_step']

ALGORITHM = Algorithm(
    "adamax",
    hyper=(("lr", 2e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0),
           ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("exp_avg"), State("exp_inf", kind="second_moment")),
    classes=(PublicClass("Adamax"),),
    methods=(Method("adamax", "Adamax", "Adamax"),),
)


class Adamax(Optimizer):
    r"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, section 7.1),
    as torch.optim.Adamax::

        g = g + weight_decay * p
        m = m + (1 - beta1) * (g - m)
        u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1**t) * m / u

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Decay rates of ``m`` and of the infinity norm ``u`` (default (0.9, 0.999)).
    eps : float, optional
        Added to ``|g|`` inside the maximum (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.002,
                 betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-08,
                 weight_decay: float = 0.0,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def adamax_step(
        param: np.ndarray,
        grad: np.ndarray,
        exp_avg: np.ndarray,
        exp_inf: np.ndarray,
        *,
        step: int,
        lr: float = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        maximize: bool = False) -> None:
    r"""Apply one Adamax update in place (see :class:`adamc.Adamax`).

    ``exp_avg`` and ``exp_inf`` (the exponentially weighted infinity norm) start from
    zeros; other arguments as in :func:`adam_step`.
    """


def adamax(param: Array, grad: Array, exp_avg: Array, exp_inf: Array, *, step: int,
           lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
           weight_decay: float = 0.0, maximize: bool = False, lower=None, upper=None,
           clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adamax step (torch.optim.Adamax; Kingma & Ba, section 7.1)."""
    p, m, u = f64(param), f64(exp_avg), f64(exp_inf)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    m = m + (1 - beta1) * (g - m)
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    p = p - (lr / (1 - beta1 ** step)) * m / u
    return {"param": project(p, lower, upper), "exp_avg": m, "exp_inf": u}
