"""Readable pure-NumPy twins of adamc's algorithms: the oracle of the test suite.

Each function takes arrays, returns new float64 arrays and never modifies its inputs.
The formulas are written the way torch.optim and the papers write them (for Adam:
``lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``), not in the rearranged form the
kernels use, so a test against them checks the mathematics, not a copy of the code.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

Array = np.ndarray


def _f64(a: Any) -> Array:
    return np.array(a, dtype=np.float64)


def preprocess_grad(grad: Array, *, maximize: bool = False, clip_value: Optional[float] = None,
                    clip_scale: float = 1.0) -> Array:
    """Gradient as every algorithm sees it: clamped to ``[-clip_value, clip_value]``,
    scaled by the norm-clipping factor, negated when maximizing."""
    g = _f64(grad)
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
    p, g = weight_decay_terms(p, g, lr, weight_decay, decoupled_weight_decay)
    m, v = adam_moments(m, v, g, beta1, beta2)
    out = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = np.maximum(_f64(max_exp_avg_sq), v)
        out["max_exp_avg_sq"] = v
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    p = p - (lr / bias_correction1) * m / denom
    out["param"] = _project(p, lower, upper)
    return out


def adamax(param: Array, grad: Array, exp_avg: Array, exp_inf: Array, *, step: int,
           lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
           weight_decay: float = 0.0, maximize: bool = False, lower=None, upper=None,
           clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adamax step (torch.optim.Adamax; Kingma & Ba, section 7.1)."""
    p, m, u = _f64(param), _f64(exp_avg), _f64(exp_inf)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    m = m + (1 - beta1) * (g - m)
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    p = p - (lr / (1 - beta1 ** step)) * m / u
    return {"param": _project(p, lower, upper), "exp_avg": m, "exp_inf": u}


def nadam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          mu_product: float = 1.0, lr: float = 2e-3, beta1: float = 0.9,
          beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
          momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
          maximize: bool = False, lower=None, upper=None, clip_value=None,
          clip_scale: float = 1.0) -> dict[str, Any]:
    """One NAdam step (torch.optim.NAdam; Dozat, 2016). Also returns the new
    ``mu_product``."""
    p, m, v = _f64(param), _f64(exp_avg), _f64(exp_avg_sq)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    p, g = weight_decay_terms(p, g, lr, weight_decay, decoupled_weight_decay)
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    m, v = adam_moments(m, v, g, beta1, beta2)
    denom = np.sqrt(v / (1 - beta2 ** step)) + eps
    p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
    p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    return {"param": _project(p, lower, upper), "exp_avg": m, "exp_avg_sq": v,
            "mu_product": mu_product}


def radam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          maximize: bool = False, lower=None, upper=None, clip_value=None,
          clip_scale: float = 1.0) -> dict[str, Array]:
    """One RAdam step (torch.optim.RAdam; Liu et al., 2020)."""
    p, m, v = _f64(param), _f64(exp_avg), _f64(exp_avg_sq)
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
    return {"param": _project(p, lower, upper), "exp_avg": m, "exp_avg_sq": v}


def sgd(param: Array, grad: Array, momentum_buffer: Optional[Array] = None, *, step: int,
        lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
        lower=None, upper=None, clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One SGD step (torch.optim.SGD). The momentum buffer starts as a copy of the
    gradient at step 1."""
    p = _f64(param)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    out = {}
    if momentum != 0:
        if step == 1:
            buf = g.copy()
        else:
            buf = momentum * _f64(momentum_buffer) + (1 - dampening) * g
        out["momentum_buffer"] = buf
        g = g + momentum * buf if nesterov else buf
    out["param"] = _project(p - lr * g, lower, upper)
    return out


def rmsprop(param: Array, grad: Array, square_avg: Array, *, step: int, lr: float = 1e-2,
            alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, maximize: bool = False,
            momentum_buffer: Optional[Array] = None, grad_avg: Optional[Array] = None,
            lower=None, upper=None, clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One RMSprop step (torch.optim.RMSprop; Hinton's lecture 6e). ``step`` is
    accepted for symmetry: RMSprop has no bias correction."""
    p, v = _f64(param), _f64(square_avg)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    out = {"square_avg": v}
    if centered:
        a = _f64(grad_avg)
        a = a + (1 - alpha) * (g - a)
        out["grad_avg"] = a
        avg = np.sqrt(v - a * a) + eps
    else:
        avg = np.sqrt(v) + eps
    if momentum > 0:
        buf = momentum * _f64(momentum_buffer) + g / avg
        out["momentum_buffer"] = buf
        p = p - lr * buf
    else:
        p = p - lr * g / avg
    out["param"] = _project(p, lower, upper)
    return out


def lion(param: Array, grad: Array, exp_avg: Array, *, step: int, lr: float = 1e-4,
         beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
         maximize: bool = False, lower=None, upper=None, clip_value=None,
         clip_scale: float = 1.0) -> dict[str, Array]:
    """One Lion step (Chen et al., 2023, Program 1; ``optax.lion``): the update is the
    sign of an interpolation of momentum and gradient, plus decoupled weight decay.
    ``step`` is accepted for symmetry: Lion has no bias correction."""
    p, m = _f64(param), _f64(exp_avg)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    update = np.sign(beta1 * m + (1 - beta1) * g)
    p = p - lr * (update + weight_decay * p)
    m = beta2 * m + (1 - beta2) * g
    return {"param": _project(p, lower, upper), "exp_avg": m}


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
        p = _f64(param)
        g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value,
                            clip_scale=clip_scale)
        if weight_decay != 0 and not decouple:
            g = g + weight_decay * p
        p0 = p.copy() if st.get("p0") is None else _f64(st["p0"])
        numerator += (d / d0) * dlr * float(np.dot(g.ravel(), (p0 - p).ravel()))
        m = beta1 * _f64(st["exp_avg"]) + d * (1 - beta1) * g
        v = beta2 * _f64(st["exp_avg_sq"]) + d * d * (1 - beta2) * g * g
        s = beta3 * _f64(st["s"]) + ((d / d0) * d if safeguard_warmup else (d / d0) * dlr) * g
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
        ps[i] = _project(p, lower, upper)
    out.update(params=ps[0] if single else ps, states=new_states[0] if single else new_states,
               d=d_new, d_max=d_max, d_numerator=numerator, k=k + 1)
    return out


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
    y = _f64(param)
    g = preprocess_grad(grad, maximize=maximize)
    z = y.copy() if z is None else _f64(z)
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    lr_k = lr * sched
    lr_max = max(lr_k, lr_max)
    weight = (k + 1) ** r * lr_max ** weight_lr_power
    weight_sum = weight_sum + weight
    ckp1 = weight / weight_sum if weight_sum else 0.0
    out: dict[str, Any] = {}
    if adaptive:
        v = beta2 * _f64(exp_avg_sq) + (1 - beta2) * g * g
        out["exp_avg_sq"] = v
        g = g / (np.sqrt(v / (1 - beta2 ** (k + 1))) + eps)
    g = g + weight_decay * y
    y = (1 - ckp1) * y + ckp1 * z + lr_k * (beta1 * (1 - ckp1) - 1) * g
    z = z - lr_k * g
    out.update(param=y, z=z, weight_sum=weight_sum, lr_max=lr_max,
               x=y + (1 - 1 / beta1) * (z - y))
    return out


def adagrad(param: Array, grad: Array, sum: Array, *, step: int, lr: float = 1e-2,
            lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            maximize: bool = False, lower=None, upper=None, clip_value=None,
            clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adagrad step (torch.optim.Adagrad; Duchi et al., 2011). ``sum`` starts from
    zeros, as adamc keeps it: step 1 adds ``initial_accumulator_value`` (torch's
    starting value of the sum)."""
    p = _f64(param)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    state_sum = _f64(sum) + (initial_accumulator_value if step == 1 else 0.0)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum = state_sum + g * g
    p = p - clr * g / (np.sqrt(state_sum) + eps)
    return {"param": _project(p, lower, upper), "sum": state_sum}


def adadelta(param: Array, grad: Array, square_avg: Array, acc_delta: Array, *, step: int,
             lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
             maximize: bool = False, lower=None, upper=None, clip_value=None,
             clip_scale: float = 1.0) -> dict[str, Array]:
    """One Adadelta step (torch.optim.Adadelta; Zeiler, 2012, Algorithm 1 with a
    learning rate). ``step`` is accepted for symmetry: Adadelta has no bias
    correction."""
    p, v, u = _f64(param), _f64(square_avg), _f64(acc_delta)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    if weight_decay != 0:
        g = g + weight_decay * p
    v = rho * v + (1 - rho) * g * g
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    u = rho * u + (1 - rho) * delta * delta
    p = p - lr * delta
    return {"param": _project(p, lower, upper), "square_avg": v, "acc_delta": u}


def rprop(param: Array, grad: Array, prev: Array, step_size: Array, *, step: int,
          lr: float = 1e-2, etaminus: float = 0.5, etaplus: float = 1.2,
          step_size_min: float = 1e-6, step_size_max: float = 50.0, maximize: bool = False,
          lower=None, upper=None, clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One Rprop step (torch.optim.Rprop; Riedmiller & Braun, 1993). ``prev`` and
    ``step_size`` start from zeros, as adamc keeps them: step 1 sets the step sizes to
    ``lr`` (torch's starting value)."""
    p, prev = _f64(param), _f64(prev)
    sizes = np.full_like(p, lr) if step == 1 else _f64(step_size)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    sign = np.sign(g * prev)
    factor = np.where(sign > 0, etaplus, np.where(sign < 0, etaminus, 1.0))
    factor = np.where(np.isnan(sign), np.nan, factor)
    sizes = np.clip(sizes * factor, step_size_min, step_size_max)
    g = np.where(sign < 0, 0.0, g)
    p = p - np.sign(g) * sizes
    return {"param": _project(p, lower, upper), "prev": g, "step_size": sizes}


def clip_grad_norm_scale(grads: list[Array], max_norm: float,
                         clip_value: Optional[float] = None) -> float:
    """Factor that torch.nn.utils.clip_grad_norm_ applies to all gradients (after an
    optional clip_grad_value_): ``min(1, max_norm / (||g||_2 + 1e-6))``."""
    total = 0.0
    for g in grads:
        g = _f64(g)
        if clip_value is not None:
            g = np.clip(g, -clip_value, clip_value)
        total += float(np.sum(g * g))
    return min(1.0, max_norm / (np.sqrt(total) + 1e-6))


def _project(p: Array, lower: Optional[Array], upper: Optional[Array]) -> Array:
    if lower is not None:
        p = np.maximum(p, _f64(lower))
    if upper is not None:
        p = np.minimum(p, _f64(upper))
    return p
