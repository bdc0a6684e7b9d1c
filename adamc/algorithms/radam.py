"""RAdam: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, weight_decay_terms, adam_moments, project

__all__ = ['RAdam', 'radam_step']

ALGORITHM = Algorithm(
    "radam",
    hyper=(("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0),
           ("decoupled_weight_decay", False), ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment")),
    classes=(PublicClass("RAdam"),),
    methods=(Method("radam", "RAdam", "RAdam (rectified Adam)"),),
)


class RAdam(Optimizer):
    r"""RAdam, Adam with a rectified adaptive learning rate (Liu et al., 2020), as
    torch.optim.RAdam::

        m, v as in Adam;  rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        if rho_t > 5:  r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                       p = p - lr * r * m / (1 - beta1**t) * sqrt(1 - beta2**t) / (sqrt(v) + eps)
        else:          p = p - lr * m / (1 - beta1**t)

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Default (0.9, 0.999).
    eps : float, optional
        Added to ``sqrt(v)`` (default 1e-8).
    weight_decay : float, optional
        Default 0; coupled (L2) unless ``decoupled_weight_decay``.
    decoupled_weight_decay : bool, optional
        Decay the parameters directly (RAdamW). Default False.
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-08,
                 weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                decoupled_weight_decay=decoupled_weight_decay,
                                maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def radam_step(
        param: np.ndarray,
        grad: np.ndarray,
        exp_avg: np.ndarray,
        exp_avg_sq: np.ndarray,
        *,
        step: int,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        maximize: bool = False) -> None:
    r"""Apply one RAdam update in place (see :class:`adamc.RAdam`); arguments as in
    :func:`adam_step`."""


def radam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          maximize: bool = False, lower=None, upper=None, clip_value=None,
          clip_scale: float = 1.0) -> dict[str, Array]:
    """One RAdam step (torch.optim.RAdam; Liu et al., 2020)."""
    p, m, v = f64(param), f64(exp_avg), f64(exp_avg_sq)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    p, g = weight_decay_terms(p, g, lr, weight_decay, decoupled_weight_decay)
    m, v = adam_moments(m, v, g, beta1, beta2)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    m_hat = m / bias_correction1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2 ** step / bias_correction2
    if rho_t > 5:
        rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                       / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = np.sqrt(bias_correction2) / (np.sqrt(v) + eps)
        p = p - m_hat * lr * adaptive * rect
    else:
        p = p - m_hat * lr
    return {"param": project(p, lower, upper), "exp_avg": m, "exp_avg_sq": v}
