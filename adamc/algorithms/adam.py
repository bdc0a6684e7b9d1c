"""Adam, AdamW and AMSGrad: the table row, the optimizer classes, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, weight_decay_terms, adam_moments, project

__all__ = ['Adam', 'AdamW', 'adam_step']

ALGORITHM = Algorithm(
    "adam",
    hyper=(("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0),
           ("amsgrad", False), ("maximize", False), ("decoupled_weight_decay", False)),
    keyword_only=("maximize", "decoupled_weight_decay"),
    states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment"),
            State("max_exp_avg_sq", requires="amsgrad", needs="amsgrad=True",
                  positional=False, kind="second_moment")),
    classes=(PublicClass("Adam"),
             PublicClass("AdamW", base="Adam", defaults={"weight_decay": 1e-2},
                         fixed={"decoupled_weight_decay": True})),
    methods=(Method("adam", "Adam", "Adam"),
             Method("adamw", "AdamW", "AdamW (decoupled weight decay)"),
             Method("amsgrad", "Adam",
                    "AMSGrad (Adam with the maximum of past second moments)",
                    fixed={"amsgrad": True})),
)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015) with torch.optim.Adam's defaults and semantics.

    Per step ``t`` and element, with ``g`` the gradient (negated when maximizing)::

        g  = g + weight_decay * p            (L2 term; AdamW decays p instead)
        m  = m + (1 - beta1) * (g - m)
        v  = beta2 * v + (1 - beta2) * g * g
        v' = max(v_max, v) if amsgrad else v
        p  = p - lr / (1 - beta1**t) * m / (sqrt(v') / sqrt(1 - beta2**t) + eps)

    computed as ``p - step_size * m / (sqrt(v') + eps_hat)`` with
    ``step_size = lr * sqrt(bc2) / bc1`` and ``eps_hat = eps * sqrt(bc2)`` (the same
    mathematics with one division fewer per element).

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Decay rates of the first and second moment estimates (default (0.9, 0.999)).
    eps : float, optional
        Term added to the denominator, outside the square root (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    amsgrad : bool, optional
        Use the maximum of past second moments (Reddi et al., 2018). Default False.
    maximize : bool, optional
        Maximize the objective (default False).
    decoupled_weight_decay : bool, optional
        Decay the parameters directly, as AdamW does (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adam(x, lr=0.1)
    >>> for _ in range(100):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> opt.step_count
    100
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-08,
                 weight_decay: float = 0.0,
                 amsgrad: bool = False,
                 *,
                 maximize: bool = False,
                 decoupled_weight_decay: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                amsgrad=amsgrad, maximize=maximize,
                                decoupled_weight_decay=decoupled_weight_decay),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as
    torch.optim.AdamW: ``p *= 1 - lr * weight_decay`` before the Adam update.

    Parameters
    ----------
    {params}
    betas, eps, amsgrad, maximize
        As for :class:`Adam`.
    weight_decay : float, optional
        Decoupled weight decay coefficient (default 1e-2).{shared}
    """

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-08,
                 weight_decay: float = 0.01,
                 amsgrad: bool = False,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                amsgrad=amsgrad, maximize=maximize,
                                decoupled_weight_decay=True),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def adam_step(
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
        amsgrad: bool = False,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        max_exp_avg_sq: np.ndarray | None = None) -> None:
    r"""Apply one Adam (or AdamW) update in place.

    Parameters
    ----------
    param : ndarray
        Parameters, float32 or float64, C-contiguous and writeable; updated in place.
    grad : ndarray
        Gradient of the objective at ``param``, same dtype and shape.
    exp_avg, exp_avg_sq : ndarray
        First and second moment estimates (start from zeros); updated in place.
    step : int
        1-based number of this update (used for the bias corrections).
    lr : float, optional
        Learning rate, >= 0. Default 1e-3.
    beta1, beta2 : float, optional
        Decay rates of the moment estimates, in [0, 1). Defaults 0.9 and 0.999.
    eps : float, optional
        Added to the bias-corrected ``sqrt(v)`` (outside the square root, like
        torch). Default 1e-8.
    weight_decay : float, optional
        Weight decay coefficient, >= 0. Default 0.
    decoupled_weight_decay : bool, optional
        False: Adam's L2 term ``g += weight_decay * p``. True: AdamW's
        ``p *= 1 - lr * weight_decay`` before the update.
    amsgrad : bool, optional
        Use the running maximum of ``exp_avg_sq`` (kept in ``max_exp_avg_sq``).
    max_exp_avg_sq : ndarray, optional
        Running maximum of ``exp_avg_sq``; required when ``amsgrad`` is True.
    maximize : bool, optional
        Maximize the objective instead of minimizing it.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """


def adam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
         lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
         amsgrad: bool = False, max_exp_avg_sq: Optional[Array] = None,
         maximize: bool = False, lower: Optional[Array] = None,
         upper: Optional[Array] = None, clip_value: Optional[float] = None,
         clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adam/AdamW step (torch.optim.Adam, Algorithm 1 of Kingma & Ba).

    Returns a dict with the new ``param``, ``exp_avg``, ``exp_avg_sq`` and, with
    amsgrad, ``max_exp_avg_sq``. ``lower``/``upper`` project the new parameters onto
    a box (used by the SciPy method).
    """
    p, m, v = f64(param), f64(exp_avg), f64(exp_avg_sq)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    p, g = weight_decay_terms(p, g, lr, weight_decay, decoupled_weight_decay)
    m, v = adam_moments(m, v, g, beta1, beta2)
    out = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = np.maximum(f64(max_exp_avg_sq), v)
        out["max_exp_avg_sq"] = v
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    p = p - (lr / bias_correction1) * m / denom
    out["param"] = project(p, lower, upper)
    return out
