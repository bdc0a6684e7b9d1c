"""NumPy emulations of the kernels' exact operation order (src_c/adamc_algos.inc and
adamc_prepare in src_c/adamc_runtime.c), in the array's dtype. Scalars are prepared
in double precision and rounded to the dtype once, as the kernels do, with the
kernels' own pow (``_pow``: Python's ``**`` calls the C library's, whose last bit may
differ). A kernel and its emulation must give the same bits.

Each function takes the parameter, the gradient, a dict of state arrays, the 1-based
step, the algorithm's scalar state ``aux`` and the hyperparameters (torch's defaults),
and returns ``(param, new states, aux)`` without modifying its inputs.
"""
import math

import numpy as np

from adamc._kernels import _pow  # adamc's own pow (the C library's may round differently)


def _t(p, x):
    return p.dtype.type(x)


def _grad(p, g, maximize, weight_decay, coupled):
    g = _t(p, -1.0 if maximize else 1.0) * g
    if weight_decay and coupled:
        g = g + _t(p, weight_decay) * p
    return g


def _decay(p, lr, weight_decay, decoupled):
    if weight_decay and decoupled:
        return p * _t(p, 1.0 - lr * weight_decay)
    return p


def _moments(p, g, m, v, beta1, beta2):
    m = m + _t(p, 1.0 - beta1) * (g - m)
    v = _t(p, beta2) * v + _t(p, 1.0 - beta2) * (g * g)
    return m, v


def adam(p, g, s, step, aux, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
         decoupled_weight_decay=False, amsgrad=False, maximize=False):
    b1, b2 = betas
    bc1 = 1.0 - _pow(b1, step)
    sqrt_bc2 = math.sqrt(1.0 - _pow(b2, step))
    g = _grad(p, g, maximize, weight_decay, not decoupled_weight_decay)
    p = _decay(p, lr, weight_decay, decoupled_weight_decay)
    m, v = _moments(p, g, s["exp_avg"], s["exp_avg_sq"], b1, b2)
    out = {"exp_avg": m, "exp_avg_sq": v}
    d = v
    if amsgrad:
        d = np.maximum(s["max_exp_avg_sq"], v)
        out["max_exp_avg_sq"] = d
    p = p - (_t(p, lr * sqrt_bc2 / bc1) * m) / (np.sqrt(d) + _t(p, eps * sqrt_bc2))
    return p, out, aux


def adamax(p, g, s, step, aux, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
           maximize=False):
    b1, b2 = betas
    g = _grad(p, g, maximize, weight_decay, True)
    m = s["exp_avg"] + _t(p, 1.0 - b1) * (g - s["exp_avg"])
    u = np.maximum(_t(p, b2) * s["exp_inf"], np.abs(g) + _t(p, eps))
    p = p - (_t(p, lr / (1.0 - _pow(b1, step))) * m) / u
    return p, {"exp_avg": m, "exp_inf": u}, aux


def nadam(p, g, s, step, aux, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False):
    b1, b2 = betas
    t = float(step)
    sqrt_bc2 = math.sqrt(1.0 - _pow(b2, step))
    mu = b1 * (1.0 - 0.5 * _pow(0.96, t * momentum_decay))
    mu_next = b1 * (1.0 - 0.5 * _pow(0.96, (t + 1.0) * momentum_decay))
    prod = aux * mu
    c_grad = lr * (1.0 - mu) / (1.0 - prod) * sqrt_bc2
    c_avg = lr * mu_next / (1.0 - prod * mu_next) * sqrt_bc2
    g = _grad(p, g, maximize, weight_decay, not decoupled_weight_decay)
    p = _decay(p, lr, weight_decay, decoupled_weight_decay)
    m, v = _moments(p, g, s["exp_avg"], s["exp_avg_sq"], b1, b2)
    p = p - (_t(p, c_grad) * g + _t(p, c_avg) * m) / (np.sqrt(v) + _t(p, eps * sqrt_bc2))
    return p, {"exp_avg": m, "exp_avg_sq": v}, prod


def radam(p, g, s, step, aux, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          decoupled_weight_decay=False, maximize=False):
    b1, b2 = betas
    t = float(step)
    bc1, bc2 = 1.0 - _pow(b1, step), 1.0 - _pow(b2, step)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * _pow(b2, t) / bc2
    g = _grad(p, g, maximize, weight_decay, not decoupled_weight_decay)
    p = _decay(p, lr, weight_decay, decoupled_weight_decay)
    m, v = _moments(p, g, s["exp_avg"], s["exp_avg_sq"], b1, b2)
    if rho_t > 5.0:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        p = p - (_t(p, lr * rect * math.sqrt(bc2) / bc1) * m) / (np.sqrt(v) + _t(p, eps))
    else:
        p = p - _t(p, lr / bc1) * m
    return p, {"exp_avg": m, "exp_avg_sq": v}, aux


def sgd(p, g, s, step, aux, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
        nesterov=False, maximize=False):
    """``aux`` is 1 once the momentum buffer holds a value (0: this step fills it)."""
    g = _grad(p, g, maximize, weight_decay, True)
    out = {}
    if momentum:
        decay, gain = (momentum, 1.0 - dampening) if aux else (0.0, 1.0)
        b = _t(p, decay) * s["momentum_buffer"] + _t(p, gain) * g
        out["momentum_buffer"] = b
        g = g + _t(p, momentum) * b if nesterov else b
        aux = 1.0
    return p - _t(p, lr) * g, out, aux


def rmsprop(p, g, s, step, aux, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
            momentum=0.0, centered=False, maximize=False):
    g = _grad(p, g, maximize, weight_decay, True)
    v = _t(p, alpha) * s["square_avg"] + _t(p, 1.0 - alpha) * (g * g)
    out = {"square_avg": v}
    if centered:
        a = s["grad_avg"] + _t(p, 1.0 - alpha) * (g - s["grad_avg"])
        out["grad_avg"] = a
        den = np.sqrt(v - a * a) + _t(p, eps)
    else:
        den = np.sqrt(v) + _t(p, eps)
    if momentum > 0:
        b = _t(p, momentum) * s["momentum_buffer"] + g / den
        out["momentum_buffer"] = b
        p = p - _t(p, lr) * b
    else:
        p = p - (_t(p, lr) * g) / den
    return p, out, aux


def lion(p, g, s, step, aux, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
    b1, b2 = betas
    g = _grad(p, g, maximize, 0.0, False)
    p = _decay(p, lr, weight_decay, True)
    m = s["exp_avg"]
    c = _t(p, b1) * m + _t(p, 1.0 - b1) * g
    sign = np.where(c > 0, _t(p, 1.0), np.where(c < 0, _t(p, -1.0), c)).astype(p.dtype)
    m = _t(p, b2) * m + _t(p, 1.0 - b2) * g
    return p - _t(p, lr) * sign, {"exp_avg": m}, aux


def adagrad(p, g, s, step, aux, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
            initial_accumulator_value=0.0, eps=1e-10, maximize=False):
    g = _grad(p, g, maximize, weight_decay, True)
    clr = lr / (1.0 + (float(step) - 1.0) * lr_decay)
    init = initial_accumulator_value if step == 1 else 0.0
    acc = (s["sum"] + _t(p, init)) + g * g
    return p - (_t(p, clr) * g) / (np.sqrt(acc) + _t(p, eps)), {"sum": acc}, aux


def adadelta(p, g, s, step, aux, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    g = _grad(p, g, maximize, weight_decay, True)
    rho_, omr, eps_ = _t(p, rho), _t(p, 1.0 - rho), _t(p, eps)
    v = s["square_avg"] * rho_ + (omr * g) * g
    d = (np.sqrt(s["acc_delta"] + eps_) / np.sqrt(v + eps_)) * g
    u = s["acc_delta"] * rho_ + (omr * d) * d
    return p - _t(p, lr) * d, {"square_avg": v, "acc_delta": u}, aux


def rprop(p, g, s, step, aux, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0),
          maximize=False):
    g = _grad(p, g, maximize, 0.0, False)
    one, zero = _t(p, 1.0), _t(p, 0.0)
    c = g * s["prev"]
    f = np.where(c == c, one, c)
    f = np.where(c > 0, _t(p, etas[1]), f)
    f = np.where(c < 0, _t(p, etas[0]), f).astype(p.dtype)
    size = (s["step_size"] + _t(p, lr if step == 1 else 0.0)) * f
    size = np.where(size < _t(p, step_sizes[0]), _t(p, step_sizes[0]), size)
    size = np.where(size > _t(p, step_sizes[1]), _t(p, step_sizes[1]), size).astype(p.dtype)
    g = np.where(c < 0, zero, g).astype(p.dtype)
    sign = np.where(g > 0, one, np.where(g < 0, -one, g)).astype(p.dtype)
    return p - sign * size, {"prev": g, "step_size": size}, aux


def _lane_sum(x):
    """Sum of a float64 array in the kernels' order: 16 lanes counted from the start,
    combined pairwise (8, 4, 2, 1)."""
    n = x.size
    full = n - n % 16
    # a reduction over the rows of a C-contiguous (rows, 16) array adds the rows in
    # order, as the loop does (NumPy sums pairwise only along the contiguous axis)
    acc = np.zeros(16) + x[:full].reshape(-1, 16).sum(axis=0)
    acc[: n - full] += x[full:]
    for w in (8, 4, 2, 1):
        acc[:w] += acc[w:2 * w]
    return acc[0]


def _partition_sum(x):
    """adamc_reduce2's order: partitions that depend on n only, summed in order."""
    n = x.size
    parts = min(max(n // 32768, 1), 64)
    total = 0.0
    for k in range(parts):
        total += _lane_sum(x[n * k // parts: n * (k + 1) // parts])
    return total


def prodigy(p, g, s, step, aux, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8,
            weight_decay=0.0, decouple=True, use_bias_correction=False,
            safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=float("inf"),
            maximize=False, d=None, d_max=None, d_numerator=0.0):
    """One array's Prodigy step (prodigy_step). ``aux`` is unused; the scalars are
    keywords and come back in the third element as (d, d_max, d_numerator)."""
    b1, b2 = betas
    d = d0 if d is None else d
    d_max = d0 if d_max is None else d_max
    b3 = math.sqrt(b2) if beta3 is None else beta3
    k = step - 1
    bc = math.sqrt(1.0 - _pow(b2, k + 1)) / (1.0 - _pow(b1, k + 1)) \
        if use_bias_correction else 1.0
    dlr = d * lr * bc
    coupled = weight_decay != 0.0 and not decouple
    g = _grad(p, g, maximize, weight_decay, coupled)
    p0 = p.copy() if step == 1 else s["p0"]
    m_gain, v_gain = d * (1.0 - b1), d * d * (1.0 - b2)
    s_gain = (d / d0) * d if safeguard_warmup else (d / d0) * dlr
    if lr == 0.0:
        b1_, b2_, b3_, m_gain, v_gain, s_gain = 1.0, 1.0, 1.0, 0.0, 0.0, 0.0
    else:
        b1_, b2_, b3_ = b1, b2, b3
    s_new = _t(p, b3_) * s["s"] + _t(p, s_gain) * g
    if lr == 0.0:
        dot = denom = 0.0
    else:
        dot = _partition_sum(g.astype(np.float64) * (p0.astype(np.float64) - p.astype(np.float64)))
        denom = _partition_sum(np.abs(s_new.astype(np.float64)))
    d_new, moved = d, denom != 0.0
    if moved:
        num = d_numerator * b3 + (d / d0) * dlr * dot
        d_hat = d_coef * num / denom
        dd = d
        if dd == d0:
            dd = d_hat if d_hat > dd else dd
        d_max = d_hat if d_hat > d_max else d_max
        d_new = dd * growth_rate if dd * growth_rate < d_max else d_max
        d_numerator = num
    v = _t(p, b2_) * s["exp_avg_sq"] + (_t(p, v_gain) * g) * g
    den = np.sqrt(v) + _t(p, d_new * eps)
    if moved and weight_decay != 0.0 and decouple:
        p = p - _t(p, weight_decay * dlr) * p
    step_size, grad_step = (dlr, dlr * d_new) if moved else (0.0, 0.0)
    m = s["exp_avg"]
    if b1 > 0:
        m = _t(p, b1_) * m + _t(p, m_gain) * g
        p = p - _t(p, step_size) * (m / den)
    else:
        p = p - _t(p, grad_step) * (g / den)
    return p, {"exp_avg": m, "exp_avg_sq": v, "s": s_new, "p0": p0}, (d_new, d_max, d_numerator)
