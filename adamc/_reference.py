"""Readable pure-NumPy twins of adamc's algorithms: the oracle of the test suite.

Each function takes arrays, returns new float64 arrays and never modifies its inputs.
The formulas are written the way torch.optim and the papers write them (for Adam:
``lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``), not in the rearranged form the
kernels use, so a test against them checks the mathematics, not a copy of the code.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

Array = np.ndarray


def _f64(a: Optional[Array]) -> Optional[Array]:
    return None if a is None else np.array(a, dtype=np.float64)


def preprocess_grad(grad: Array, *, maximize: bool = False, clip_value: Optional[float] = None,
                    clip_scale: float = 1.0) -> Array:
    """Gradient as every algorithm sees it: clamped to ``[-clip_value, clip_value]``,
    scaled by the norm-clipping factor, negated when maximizing."""
    g = _f64(grad)
    if clip_value is not None:
        g = np.clip(g, -clip_value, clip_value)
    g = g * clip_scale
    return -g if maximize else g


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
    p, m, v = _f64(param), _f64(exp_avg), _f64(exp_avg_sq)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    out = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = np.maximum(_f64(max_exp_avg_sq), v)
        out["max_exp_avg_sq"] = v
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    p = p - (lr / bias_correction1) * m / denom
    if lower is not None:
        p = np.maximum(p, _f64(lower))
    if upper is not None:
        p = np.minimum(p, _f64(upper))
    out["param"] = p
    return out
