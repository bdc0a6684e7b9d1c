"""NAdam: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, weight_decay_terms, adam_moments, project

__all__ = ['NAdam', 'nadam_step']

ALGORITHM = Algorithm(
    "nadam",
    hyper=(("lr", 2e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0),
           ("momentum_decay", 4e-3), ("decoupled_weight_decay", False),
           ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment")),
    classes=(PublicClass("NAdam"),),
    methods=(Method("nadam", "NAdam", "NAdam (Adam with Nesterov momentum)"),),
    aux="mu_product",
)


class NAdam(Optimizer):
    r"""NAdam, Adam with Nesterov momentum (Dozat, 2016), as torch.optim.NAdam::

        mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)),  P_t = mu_1 ... mu_t
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        d = sqrt(v / (1 - beta2**t)) + eps
        p = p - lr (1 - mu_t) / (1 - P_t) * g / d - lr mu_{t+1} / (1 - P_{t+1}) * m / d

    The running product ``P_t`` is kept in double precision per param group (torch
    keeps it in the default float dtype).

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Default (0.9, 0.999).
    eps : float, optional
        Default 1e-8.
    weight_decay : float, optional
        Default 0; coupled (L2) unless ``decoupled_weight_decay``.
    momentum_decay : float, optional
        psi of the momentum schedule (default 4e-3).
    decoupled_weight_decay : bool, optional
        Decay the parameters directly (NAdamW). Default False.
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
                 momentum_decay: float = 0.004,
                 decoupled_weight_decay: bool = False,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                momentum_decay=momentum_decay,
                                decoupled_weight_decay=decoupled_weight_decay,
                                maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def nadam_step(
        param: np.ndarray,
        grad: np.ndarray,
        exp_avg: np.ndarray,
        exp_avg_sq: np.ndarray,
        *,
        step: int,
        mu_product: float = 1.0,
        lr: float = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        momentum_decay: float = 0.004,
        decoupled_weight_decay: bool = False,
        maximize: bool = False) -> float:
    r"""Apply one NAdam update in place (see :class:`adamc.NAdam`).

    Parameters
    ----------
    mu_product : float, optional
        Product of the momentum coefficients of the previous steps (1.0 before the
        first step).
    momentum_decay : float, optional
        Default 4e-3.
    param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize
        As in :func:`adam_step` (``lr`` defaults to 2e-3).

    Returns
    -------
    float
        ``mu_product`` after this step: pass it to the next call.
    """


def nadam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          mu_product: float = 1.0, lr: float = 2e-3, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
          momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
          maximize: bool = False, lower=None, upper=None, clip_value=None,
          clip_scale: float = 1.0) -> dict[str, Any]:
    """One NAdam step (torch.optim.NAdam; Dozat, 2016). Also returns the new
    ``mu_product``."""
    p, m, v = f64(param), f64(exp_avg), f64(exp_avg_sq)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    p, g = weight_decay_terms(p, g, lr, weight_decay, decoupled_weight_decay)
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    m, v = adam_moments(m, v, g, beta1, beta2)
    denom = np.sqrt(v / (1 - beta2 ** step)) + eps
    p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
    p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    return {"param": project(p, lower, upper), "exp_avg": m, "exp_avg_sq": v,
            "mu_product": mu_product}
