"""Prodigy: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np

from .._core.optimizer import Optimizer, ProdigyOptimizer
from .._core.validation import check_positive_eps
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import f64, preprocess_grad, project

__all__ = ['Prodigy', 'prodigy_step']

ALGORITHM = Algorithm(
    "prodigy",
    hyper=(("lr", 1.0), ("betas", (0.9, 0.999)), ("beta3", None), ("eps", 1e-8),
           ("weight_decay", 0.0), ("decouple", True), ("use_bias_correction", False),
           ("safeguard_warmup", False), ("d0", 1e-6), ("d_coef", 1.0),
           ("growth_rate", float("inf")), ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment"), State("s"),
            State("p0", kind="params")),
    classes=(PublicClass("Prodigy"),),
    methods=(Method("prodigy", "Prodigy", "Prodigy (Adam with a self-tuning step size)"),),
    cross_check=check_positive_eps,
    scalars=(("d", None), ("d_max", None), ("d_numerator", 0.0)),
    engine="_ProdigyEngine",
)


class Prodigy(ProdigyOptimizer):
    r"""Prodigy, Adam with a learning rate that adapts itself (Mishchenko &
    Defazio, 2024, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"), with the
    semantics and defaults of the ``prodigyopt`` package 1.1.2. Leave ``lr`` at 1.

    The step size is ``d * lr``, where ``d`` estimates the distance from the starting
    point ``p0`` to the solution from two sums over every parameter (all groups)::

        dlr = d * lr   (times sqrt(1 - beta2**k) / (1 - beta1**k) with bias correction)
        m = beta1 m + d (1 - beta1) g;   v = beta2 v + d**2 (1 - beta2) g**2
        s = beta3 s + (d / d0) dlr g            ((d / d0) d with safeguard_warmup)
        r = beta3 r + (d / d0) dlr <g, p0 - p>
        d_hat = d_coef r / ||s||_1;  d_max = max(d_max, d_hat)
        d = min(d_max, d * growth_rate)
        p = p - dlr m / (sqrt(v) + d eps)       (beta1 = 0: dlr d g instead of dlr m)

    (``d`` first jumps to ``d_hat`` while it is still ``d0``; ``d_max`` is the largest
    ``d_hat`` so far). The sums are computed in double precision in a fixed order: the
    results are the same bits for every SIMD level and thread count. A step is two
    passes over memory: one that only reads (the sums), then the update of the
    moments, ``s`` and the parameters in one pass. The gradients are never modified
    (prodigyopt adds the coupled weight decay into them).

    The optimizer-wide state ``d``, ``d_max``, ``d_numerator`` and ``k`` (the steps
    that moved the parameters) is mirrored after every step into each param group,
    as prodigyopt keeps it: ``opt.param_groups[0]["d"] * lr`` is the step size in use.
    Changing these entries has no effect; state dicts and checkpoints carry them.

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Decay rates of the moments (default (0.9, 0.999)); ``beta1 = 0`` steps along
        the gradient.
    beta3 : float or None, optional
        Decay of the sums ``s`` and ``r`` (default None: ``sqrt(beta2)``).
    eps : float, optional
        Added to ``sqrt(v)`` after scaling by ``d``; must be > 0 (default 1e-8).
    weight_decay : float, optional
        Weight decay (default 0): ``p *= 1 - weight_decay * dlr`` when ``decouple``,
        else the L2 term ``g + weight_decay * p``.
    decouple : bool, optional
        AdamW-style decoupled weight decay (default True).
    use_bias_correction : bool, optional
        Adam's bias correction of the step size (default False).
    safeguard_warmup : bool, optional
        Leave ``lr`` out of the sum ``s`` (default False).
    d0 : float, optional
        Initial estimate of ``d`` (default 1e-6).
    d_coef : float, optional
        Factor of the estimate (default 1); the preferred knob, 0.5 and 2 work too.
    growth_rate : float, optional
        Largest factor by which ``d`` grows per step (default inf: unlimited).
    maximize : bool, optional
        Maximize the objective (default False; not in prodigyopt).{shared}

    Notes
    -----
    As in prodigyopt, one estimate serves every param group: ``betas``, ``beta3``,
    ``d0``, ``d_coef``, ``growth_rate``, ``decouple``, ``use_bias_correction`` and
    ``safeguard_warmup`` must be the same in every group (a step refuses otherwise),
    and every group's ``lr`` must be the largest one or 0 (a group with lr 0 adds
    nothing to the sums and keeps its moments, but is still moved by ``d * lr`` of
    the others, as in prodigyopt). ``eps`` and ``weight_decay`` may differ. prodigyopt's
    ``slice_p`` and ``fsdp_in_use`` are not offered (see :mod:`adamc.distributed`
    for sharded parameters). When the sum of ``|s|`` is 0 (all gradients 0 so far),
    the step updates the moments and leaves the parameters and ``d`` unchanged, as
    prodigyopt's early return does.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Prodigy(x)
    >>> for _ in range(200):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> bool(abs(x[0] - 2) < 0.1)
    True
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None,
                 eps: float = 1e-08,
                 weight_decay: float = 0.0,
                 decouple: bool = True,
                 use_bias_correction: bool = False,
                 safeguard_warmup: bool = False,
                 d0: float = 1e-06,
                 d_coef: float = 1.0,
                 growth_rate: float = math.inf,
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, beta3=beta3, eps=eps,
                                weight_decay=weight_decay, decouple=decouple,
                                use_bias_correction=use_bias_correction,
                                safeguard_warmup=safeguard_warmup, d0=d0, d_coef=d_coef,
                                growth_rate=growth_rate, maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def prodigy_step(
        param: np.ndarray,
        grad: np.ndarray,
        exp_avg: np.ndarray,
        exp_avg_sq: np.ndarray,
        s: np.ndarray,
        p0: np.ndarray,
        *,
        step: int,
        d: float | None = None,
        d_max: float | None = None,
        d_numerator: float = 0.0,
        lr: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        beta3: float | None = None,
        eps: float = 1e-08,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-06,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        maximize: bool = False) -> tuple[float, float, float]:
    r"""Apply one Prodigy update in place to one array (see :class:`adamc.Prodigy`).

    The sums of the estimate of ``d`` run over this array only; for several arrays
    sharing one estimate use :class:`adamc.Prodigy`.

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    exp_avg, exp_avg_sq, s : ndarray
        The moments and the sum of scaled gradients (start from zeros); updated in
        place.
    p0 : ndarray
        The parameters at the first step: set from ``param`` when ``step == 1``.
    step : int
        1-based number of this update (it sets ``p0`` at 1 and gives the bias
        correction).
    d, d_max, d_numerator : float, optional
        Prodigy's scalar state before this step (at the first step ``d0``, ``d0`` and
        0, the defaults): pass the values this function returned.
    lr, beta1, beta2, beta3, eps, weight_decay, decouple, use_bias_correction, safeguard_warmup, d0, d_coef, growth_rate, maximize
        As for :class:`adamc.Prodigy`.

    Returns
    -------
    (float, float, float)
        ``d``, ``d_max`` and ``d_numerator`` after this step.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """


def prodigy(params: Any, grads: Any, states: Any, *, k: int = 0, d: Optional[float] = None,
            d_max: Optional[float] = None, d_numerator: float = 0.0, lr: float = 1.0,
            beta1: float = 0.9, beta2: float = 0.999, beta3: Optional[float] = None,
            eps: float = 1e-8, weight_decay: float = 0.0, decouple: bool = True,
            use_bias_correction: bool = False, safeguard_warmup: bool = False,
            d0: float = 1e-6, d_coef: float = 1.0, growth_rate: float = float("inf"),
            maximize: bool = False, lower=None, upper=None, clip_value=None,
            clip_scale: float = 1.0) -> dict[str, Any]:
    """One Prodigy step over several arrays sharing one estimate of d, written as
    prodigyopt 1.1.2 writes it (Mishchenko & Defazio, 2024, Algorithm 4 with Adam).

    ``params``, ``grads``: arrays (or one array); ``states``: per array a dict with
    ``exp_avg``, ``exp_avg_sq``, ``s`` and ``p0`` (None before the first step: the
    parameters are taken). ``k``: steps that moved the parameters so far; ``d`` and
    ``d_max`` default to ``d0``. Returns ``params``, ``states`` (lists) and the new
    ``d``, ``d_max``, ``d_numerator``, ``k``.
    """
    single = isinstance(params, np.ndarray)
    if single:
        params, grads, states = [params], [grads], [states]
    d = d0 if d is None else d
    d_max = d0 if d_max is None else d_max
    beta3 = np.sqrt(beta2) if beta3 is None else beta3
    bias_correction = (np.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1))
                       if use_bias_correction else 1.0)
    dlr = d * lr * bias_correction
    ps, gs, new_states = [], [], []
    numerator, denominator = d_numerator * beta3, 0.0
    for param, grad, st in zip(params, grads, states):
        p = f64(param)
        g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value,
                            clip_scale=clip_scale)
        if weight_decay != 0 and not decouple:
            g = g + weight_decay * p
        p0 = p.copy() if st.get("p0") is None else f64(st["p0"])
        numerator += (d / d0) * dlr * float(np.dot(g.ravel(), (p0 - p).ravel()))
        m = beta1 * f64(st["exp_avg"]) + d * (1 - beta1) * g
        v = beta2 * f64(st["exp_avg_sq"]) + d * d * (1 - beta2) * g * g
        s = beta3 * f64(st["s"]) + ((d / d0) * d if safeguard_warmup else (d / d0) * dlr) * g
        denominator += float(np.abs(s).sum())
        ps.append(p)
        gs.append(g)
        new_states.append({"exp_avg": m, "exp_avg_sq": v, "s": s, "p0": p0})
    out: dict[str, Any] = {"d": d, "d_max": d_max, "d_numerator": d_numerator, "k": k}
    if denominator == 0:  # prodigyopt returns before moving the parameters
        out.update(params=ps[0] if single else ps,
                   states=new_states[0] if single else new_states)
        return out
    d_hat = d_coef * numerator / denominator
    d_new = max(d, d_hat) if d == d0 else d
    d_max = max(d_max, d_hat)
    d_new = min(d_max, d_new * growth_rate)
    for i, (p, g, st) in enumerate(zip(ps, gs, new_states)):
        denom = np.sqrt(st["exp_avg_sq"]) + d_new * eps
        if weight_decay != 0 and decouple:
            p = p - weight_decay * dlr * p
        p = p - dlr * (st["exp_avg"] if beta1 > 0 else d_new * g) / denom
        ps[i] = project(p, lower, upper)
    out.update(params=ps[0] if single else ps, states=new_states[0] if single else new_states,
               d=d_new, d_max=d_max, d_numerator=numerator, k=k + 1)
    return out
