"""The shared parts of adamc's NumPy twins (each algorithm's twin lives in its module).

The twins take arrays, return new float64 arrays and never modify their inputs. Their
formulas are written the way torch.optim and the papers write them (for Adam:
``lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``), not in the rearranged form the
kernels use, so a test against them checks the mathematics, not a copy of the code.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

Array = np.ndarray


def f64(a: Any) -> Array:
    return np.array(a, dtype=np.float64)


def preprocess_grad(grad: Array, *, maximize: bool = False, clip_value: Optional[float] = None,
                    clip_scale: float = 1.0) -> Array:
    """Gradient as every algorithm sees it: clamped to ``[-clip_value, clip_value]``,
    scaled by the norm-clipping factor, negated when maximizing."""
    g = f64(grad)
    if clip_value is not None:
        g = np.clip(g, -clip_value, clip_value)
    g = g * clip_scale
    return -g if maximize else g


def weight_decay_terms(p: Array, g: Array, lr: float, weight_decay: float,
                       decoupled: bool) -> tuple[Array, Array]:
    """Adam's L2 term ``g + wd * p``, or AdamW's decay ``p * (1 - lr * wd)``."""
    if weight_decay == 0:
        return p, g
    if decoupled:
        return p * (1 - lr * weight_decay), g
    return p, g + weight_decay * p


def adam_moments(m: Array, v: Array, g: Array, beta1: float, beta2: float) -> tuple[Array, Array]:
    """Exponential moving averages of g and g**2 (``m.lerp_(g, 1 - beta1)`` in torch)."""
    return m + (1 - beta1) * (g - m), beta2 * v + (1 - beta2) * g * g


def clip_grad_norm_scale(grads: list[Array], max_norm: float,
                         clip_value: Optional[float] = None) -> float:
    """Factor that torch.nn.utils.clip_grad_norm_ applies to all gradients (after an
    optional clip_grad_value_): ``min(1, max_norm / (||g||_2 + 1e-6))``."""
    total = 0.0
    for g in grads:
        g = f64(g)
        if clip_value is not None:
            g = np.clip(g, -clip_value, clip_value)
        total += float(np.sum(g * g))
    return min(1.0, max_norm / (np.sqrt(total) + 1e-6))


def project(p: Array, lower: Optional[Array], upper: Optional[Array]) -> Array:
    if lower is not None:
        p = np.maximum(p, f64(lower))
    if upper is not None:
        p = np.minimum(p, f64(upper))
    return p
