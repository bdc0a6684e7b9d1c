"""The schedule-free methods (AdamW and SGD): the table rows, the optimizer classes and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .._core.optimizer import Optimizer, ScheduleFreeOptimizer
from .._core.validation import check_schedulefree_momentum
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad

__all__ = ['AdamWScheduleFree', 'SGDScheduleFree']

ADAMW_SCHEDULEFREE = Algorithm(
    "adamw_schedulefree",
    hyper=(("lr", 0.0025), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.0),
           ("warmup_steps", 0), ("r", 0.0), ("weight_lr_power", 2.0),
           ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("z", kind="params"), State("exp_avg_sq", kind="second_moment"),
            State("y", kind="params")),
    classes=(PublicClass("AdamWScheduleFree"),),
    methods=(Method("adamw_schedulefree", "AdamWScheduleFree",
                    "schedule-free AdamW (returns the averaged point x)"),),
    stateless=False,
    cross_check=check_schedulefree_momentum,
    engine="_ScheduleFreeEngine",
)

SGD_SCHEDULEFREE = Algorithm(
    "sgd_schedulefree",
    hyper=(("lr", 1.0), ("momentum", 0.9), ("weight_decay", 0.0), ("warmup_steps", 0),
           ("r", 0.0), ("weight_lr_power", 2.0), ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("z", kind="params"), State("y", kind="params")),
    classes=(PublicClass("SGDScheduleFree"),),
    methods=(Method("sgd_schedulefree", "SGDScheduleFree",
                    "schedule-free SGD (returns the averaged point x)"),),
    stateless=False,
    cross_check=check_schedulefree_momentum,
    engine="_ScheduleFreeEngine",
)


class AdamWScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-free AdamW (Defazio et al., 2024, "The Road Less Scheduled"), with
    the semantics and defaults of the ``schedulefree`` package 1.4.1: no learning-rate
    schedule is needed (a linear warm-up is ``warmup_steps``).

    While training, the parameters hold ``y``, where gradients are taken; ``z`` is
    the base sequence and ``x`` the weighted average of the ``z``, which is the point
    to evaluate and to keep. Per step ``k`` (0-based) and group::

        lr_k  = lr * min(1, (k + 1) / warmup_steps);   lr_max = max(lr_max, lr_k)
        w     = (k + 1)**r * lr_max**weight_lr_power;  W = W + w;  c = w / W
        v     = beta2 v + (1 - beta2) g g
        u     = g / (sqrt(v / (1 - beta2**(k+1))) + eps) + weight_decay * y
        y     = lerp(y, z, c) + lr_k (beta1 (1 - c) - 1) u
        z     = z - lr_k u

    Call :meth:`eval` before evaluating or saving the model (the parameters then
    hold ``x = lerp(y, z, 1 - 1/beta1)``) and :meth:`train` before the next step,
    which is refused in eval mode. Unlike the reference, ``train()`` restores ``y``
    exactly (``eval()`` keeps it in the state array ``y``, which costs one array per
    parameter), and your gradient arrays are never modified (the reference divides
    them in place). ``k``, ``weight_sum``, ``lr_max``, ``scheduled_lr`` and
    ``train_mode`` are mirrored into every param group, as the reference keeps them.

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        ``beta1`` in (0, 1) interpolates between y and z, ``beta2`` decays the second
        moment (default (0.9, 0.999)).
    eps : float, optional
        Added to the bias-corrected ``sqrt(v)`` (default 1e-8).
    weight_decay : float, optional
        Added to the normalised gradient as ``weight_decay * y`` (default 0).
    warmup_steps : int, optional
        Steps of linear warm-up of the learning rate (default 0).
    r : float, optional
        Polynomial weighting of the average (default 0: uniform in the steps).
    weight_lr_power : float, optional
        Weights proportional to ``lr_max**weight_lr_power`` (default 2).
    maximize : bool, optional
        Maximize the objective (default False; not in the reference).{shared}
    """

    _spec = ADAMW_SCHEDULEFREE

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.0025,
                 betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-08,
                 weight_decay: float = 0.0,
                 warmup_steps: int = 0,
                 r: float = 0.0,
                 weight_lr_power: float = 2.0,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                warmup_steps=warmup_steps, r=r,
                                weight_lr_power=weight_lr_power, maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


class SGDScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-free SGD (Defazio et al., 2024), with the semantics and defaults of
    the ``schedulefree`` package 1.4.1: :class:`AdamWScheduleFree` without the second
    moment (``u = g + weight_decay * y``) and ``momentum`` in place of ``beta1``.

    Parameters
    ----------
    {params}
    momentum : float, optional
        In (0, 1): interpolation between y and z (default 0.9).
    weight_decay, warmup_steps, r, weight_lr_power, maximize
        As for :class:`AdamWScheduleFree`.{shared}
    """

    _spec = SGD_SCHEDULEFREE

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 1.0,
                 momentum: float = 0.9,
                 weight_decay: float = 0.0,
                 warmup_steps: int = 0,
                 r: float = 0.0,
                 weight_lr_power: float = 2.0,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                warmup_steps=warmup_steps, r=r,
                                weight_lr_power=weight_lr_power, maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


def schedulefree(param: Array, grad: Array, z: Optional[Array], *, k: int,
                 weight_sum: float = 0.0, lr_max: float = -1.0, lr: float = 0.0025,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, exp_avg_sq: Optional[Array] = None,
                 adaptive: bool = True, maximize: bool = False) -> dict[str, Any]:
    """One schedule-free step (Defazio et al., 2024; the schedulefree package's
    AdamWScheduleFree, or SGDScheduleFree with ``adaptive=False`` and ``beta1`` the
    momentum). ``param`` holds y; ``z`` is None before the first step (y is taken);
    ``k`` counts the steps so far. Returns the new ``param``, ``z``, ``exp_avg_sq``,
    ``weight_sum``, ``lr_max`` and ``x`` (what eval() shows)."""
    y = f64(param)
    g = preprocess_grad(grad, maximize=maximize)
    z = y.copy() if z is None else f64(z)
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    lr_k = lr * sched
    lr_max = max(lr_k, lr_max)
    weight = (k + 1) ** r * lr_max ** weight_lr_power
    weight_sum = weight_sum + weight
    ckp1 = weight / weight_sum if weight_sum else 0.0
    out: dict[str, Any] = {}
    if adaptive:
        v = beta2 * f64(exp_avg_sq) + (1 - beta2) * g * g
        out["exp_avg_sq"] = v
        g = g / (np.sqrt(v / (1 - beta2 ** (k + 1))) + eps)
    g = g + weight_decay * y
    y = (1 - ckp1) * y + ckp1 * z + lr_k * (beta1 * (1 - ckp1) - 1) * g
    z = z - lr_k * g
    out.update(param=y, z=z, weight_sum=weight_sum, lr_max=lr_max,
               x=y + (1 - 1 / beta1) * (z - y))
    return out
