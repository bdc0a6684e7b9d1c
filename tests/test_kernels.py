"""The compiled kernels (through adamc.adam_step) against the NumPy reference.

Three independent checks:

1. Per-step agreement with ``adamc._reference`` (float64, torch's form of the
   formulas). At every step of a 50-step trajectory the reference is applied to the
   kernel's previous state, so each step is held to a rounding-error bound derived
   from the operations involved (see ``assert_step_close``) instead of a loose
   tolerance for accumulated drift.
2. Bit-exact agreement with a NumPy emulation of the kernel's own operation order in
   the array's dtype: this pins the documented formula, operation by operation.
3. Bit-identity of whole trajectories across SIMD levels and thread counts.
"""

import numpy as np
import pytest

import adamc
import emulate
from adamc import _kernels, _reference
from conftest import (DTYPES, LEVELS, SIZES, SMALL_SIZES, THREADS, bits, kernel_config,
                      marked_sizes)
from optim_db import DB

STEPS = 50

# The stateless step's option sets in the conformance table (tests/optim_db.py).
OPTIONS = DB["adam"].step_options


def option_id(opt):
    return "-".join(f"{k}={v}" for k, v in opt.items()) or "plain"


def grad_at(rng, n, dtype, t):
    """Gradients of varying scale, with exact zeros and sign changes."""
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 2)
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype)


def new_state(n, dtype, rng, amsgrad):
    p = rng.standard_normal(n).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    vm = np.zeros_like(p) if amsgrad else None
    return p, m, v, vm


def unit_roundoff(dtype):
    return float(np.finfo(dtype).eps) / 2


def assert_step_close(dtype, before, g, after, ref, opt, lr, step, beta1=0.9, beta2=0.999):
    """Kernel result ``after`` vs reference ``ref``, both computed from ``before``.

    The bounds propagate rounding errors through the update, with u the unit
    roundoff of the dtype (doubled for float64, where the reference rounds too) and
    g' = -+g (+ wd p) the effective gradient, |g'| <= G = |g| + wd |p|:
    - m = m + c (g' - m): four roundings of terms bounded by |m| + G:
      |dm| <= 4 u (|m| + G);
    - v = b2 v + c2 g' g': six roundings of non-negative terms, plus the rounding of
      g' itself (relative u G / |g'|): |dv| <= 8 u v_new + 3 u c2 G (|g'| + u G);
    - p = p decay - s m / (sqrt(v) + e): eight roundings relative to the step, three
      relative to |p| and |p_new|, and the errors of m and v carried through the
      quotient: |dp| <= 8 u |step| + 3 u (|p| + |p_new|) + (lr / bc1) |dm| / D
      + |step| |dv| / (2 v), D being torch's denominator sqrt(v) / sqrt(bc2) + eps.
    A wrong formula (eps inside the sqrt, a missing bias correction, a swapped beta)
    misses these bounds by orders of magnitude.
    """
    u = unit_roundoff(dtype) * (2 if dtype == np.float64 else 1)
    tiny = float(np.finfo(dtype).tiny)
    wd = opt.get("weight_decay", 0.0)
    p0, m0 = before[0].astype(np.float64), before[1].astype(np.float64)
    G = np.abs(g.astype(np.float64)) + wd * np.abs(p0)
    g_ref = np.abs(g.astype(np.float64) + (0 if opt.get("decoupled_weight_decay") else wd * p0))
    m_ref, v_ref, p_ref = ref["exp_avg"], ref["exp_avg_sq"], ref["param"]
    v_den = ref["max_exp_avg_sq"] if opt.get("amsgrad") else v_ref
    m_bound = 4 * u * (np.abs(m0) + G) + tiny
    v_bound = 8 * u * v_ref + 3 * u * (1 - beta2) * G * (g_ref + u * G) + tiny
    decayed = p0 * (1 - lr * wd) if opt.get("decoupled_weight_decay") else p0
    step_ref = np.abs(p_ref - decayed)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    denom = np.sqrt(v_den) / np.sqrt(bc2) + opt.get("eps", 1e-8)
    p_bound = (8 * u * step_ref + 3 * u * (np.abs(p0) + np.abs(p_ref))
               + (lr / bc1) * m_bound / denom + step_ref * v_bound / (2 * v_den + tiny) + tiny)
    for name, got, want, bound in (("exp_avg", after[1], m_ref, m_bound),
                                   ("exp_avg_sq", after[2], v_ref, v_bound),
                                   ("param", after[0], p_ref, p_bound)):
        err = np.abs(got.astype(np.float64) - want)
        bad = err > bound
        assert not bad.any(), (
            f"{name} at step {step}: {bad.sum()} elements outside the rounding bound; "
            f"worst ratio {np.max(err / bound):.3g} at index {np.argmax(err / bound)}")
    if opt.get("amsgrad"):
        np.testing.assert_array_equal(after[3], np.maximum(before[3], after[2]))


def run_reference_check(n, dtype, opt, lr=1e-2, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    p, m, v, vm = new_state(n, dtype, rng, opt.get("amsgrad"))
    for t in range(1, steps + 1):
        g = grad_at(rng, n, dtype, t)
        before = tuple(None if a is None else a.copy() for a in (p, m, v, vm))
        ref = _reference.adam(p, g, m, v, step=t, lr=lr, max_exp_avg_sq=vm, **opt)
        adamc.adam_step(p, g, m, v, step=t, lr=lr, max_exp_avg_sq=vm, **opt)
        assert_step_close(dtype, before, g, (p, m, v, vm), ref, opt, lr, t)


@pytest.mark.parametrize("opt", OPTIONS, ids=option_id)
@pytest.mark.parametrize("n", SMALL_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_matches_reference_every_step(one_level, dtype, n, opt):
    run_reference_check(n, dtype, opt)


@pytest.mark.parametrize("opt", [OPTIONS[0], OPTIONS[-1]], ids=option_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.slow
def test_matches_reference_large(dtype, opt):
    # the split into chunks on the default thread count; 50-step trajectories are
    # checked at the small sizes (7 s a case here with 50 steps, about 1.5 s with 8)
    run_reference_check(2**20 + 3, dtype, opt, steps=8)


@pytest.mark.parametrize("opt", [OPTIONS[0], OPTIONS[5]], ids=option_id)
def test_float64_trajectory_without_resync(opt):
    """Free-running 50-step float64 trajectories: the kernel's form of the update and
    torch's form differ by a few ulps per step; 1e-11 relative to the parameter
    scale leaves a 20x margin over what accumulates in 50 steps."""
    rng = np.random.default_rng(1)
    n = 1000
    p, m, v, vm = new_state(n, np.float64, rng, opt.get("amsgrad"))
    ref = dict(param=p.copy(), exp_avg=m.copy(), exp_avg_sq=v.copy(),
               max_exp_avg_sq=None if vm is None else vm.copy())
    for t in range(1, STEPS + 1):
        g = grad_at(rng, n, np.float64, t)
        adamc.adam_step(p, g, m, v, step=t, lr=0.05, max_exp_avg_sq=vm, **opt)
        ref = _reference.adam(ref["param"], g, ref["exp_avg"], ref["exp_avg_sq"], step=t,
                              lr=0.05, max_exp_avg_sq=ref.get("max_exp_avg_sq"), **opt)
    scale = np.max(np.abs(ref["param"]))
    np.testing.assert_allclose(p, ref["param"], rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(m, ref["exp_avg"], rtol=1e-12, atol=1e-300)


def emulate_kernel(p, g, m, v, vm, *, step, lr=1e-3, beta1=0.9, beta2=0.999, **opt):
    """The kernel's exact operations (tests/emulate.py), in this module's calling style."""
    states = {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vm}
    p, new, _ = emulate.adam(p, g, states, step, 0.0, lr=lr, betas=(beta1, beta2), **opt)
    return p, new["exp_avg"], new["exp_avg_sq"], new.get("max_exp_avg_sq")


@pytest.mark.parametrize("opt", OPTIONS, ids=option_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_bit_exact_operation_order(one_level, dtype, opt):
    rng = np.random.default_rng(2)
    n = 1023
    p, m, v, vm = new_state(n, dtype, rng, opt.get("amsgrad"))
    e = [None if a is None else a.copy() for a in (p, m, v, vm)]
    with np.errstate(all="ignore"):
        for t in range(1, 21):
            g = grad_at(rng, n, dtype, t)
            adamc.adam_step(p, g, m, v, step=t, lr=0.01, max_exp_avg_sq=vm, **opt)
            e = emulate_kernel(e[0], g, e[1], e[2], e[3], step=t, lr=0.01, **opt)
            for got, want in zip((p, m, v, vm), e):
                if got is not None:
                    np.testing.assert_array_equal(bits(got), bits(want))



def bias_correction_cases():
    """(beta, t) pairs: small t, t on both sides of the kernels' shortcut (taken once
    t (1 - beta) > 40) and of the point where 1 - beta**t first rounds to 1.0 (near
    t (1 - beta) = 37.4 for beta near 1), and huge t; beta from 0 to the largest
    double below 1."""
    rng = np.random.default_rng(7)
    betas = [0.0, 5e-324, 1e-300, 1e-10, 0.1, 0.25, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995,
             0.999, 0.9995, 0.9999, 0.99999, 1 - 1e-7, 1 - 2.0 ** -30, 1 - 2.0 ** -52,
             np.nextafter(1.0, 0.0)]
    betas += list(rng.uniform(0.0, 1.0, 60)) + list(1.0 - 10.0 ** rng.uniform(-12, -0.5, 60))
    huge = [10 ** k for k in range(2, 19)] + [2 ** 53, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1]
    cases = []
    for beta in map(float, betas):
        ts = set(range(1, 80)) | set(huge)
        if beta > 0.0:
            for edge in (30.0, 37.0, 37.43, 38.0, 40.0):
                at = edge / (1.0 - beta)
                if at < 2.0 ** 62:
                    centre = int(at)
                    ts |= {max(1, centre + d) for d in range(-3, 4)}
                    ts |= {max(1, int(at * f)) for f in rng.uniform(0.9, 1.1, 12)}
        cases += [(beta, t) for t in sorted(ts)]
    return cases


def test_bias_correction_has_the_bits_of_one_minus_pow():
    # 1 - beta**t without pow once t (1 - beta) > 40 (src_c/adamc_runtime.c): the same
    # double as 1.0 - pow(beta, t) with adamc's own pow (_pow, src_c/adamc_math.c; the
    # C library's may differ in the last bit) for every pair, so that steps, fits and
    # the emulations agree to the bit.
    cases = bias_correction_cases()
    shortcut = near_miss = 0
    for beta, t in cases:
        want = 1.0 - _kernels._pow(beta, float(t))
        got = _kernels._bias_correction(beta, t)
        assert got.hex() == want.hex(), (beta, t, got, want)
        shortcut += float(t) * (1.0 - beta) > 40.0
        # pairs a threshold much below 40 would get wrong: 1 - beta**t is not 1 there
        near_miss += 30.0 < float(t) * (1.0 - beta) <= 40.0 and want != 1.0
    assert shortcut > 2000 and near_miss > 200, (shortcut, near_miss)


STEADY_HYPERS = {
    "adam": [dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8),
             dict(lr=0.3, betas=(0.0, 0.99), eps=0.0, weight_decay=0.1, amsgrad=True),
             dict(lr=0.01, betas=(0.5, 0.9999), eps=1e-6, weight_decay=0.01,
                  decoupled_weight_decay=True, maximize=True)],
    "adamax": [dict(lr=0.002, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)],
    "nadam": [dict(lr=0.002, betas=(0.9, 0.999), eps=1e-8, momentum_decay=0.004)],
    "radam": [dict(lr=0.001, betas=(0.9, 0.999), eps=1e-8)],
    "sgd": [dict(lr=0.1), dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
            dict(lr=0.1, momentum=0.9, nesterov=True)],
    "rmsprop": [dict(lr=0.01, alpha=0.99, eps=1e-8, momentum=0.5, centered=True)],
    "lion": [dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=1.0)],
    "adagrad": [dict(lr=0.01, eps=1e-10), dict(lr=0.01, eps=1e-10, lr_decay=0.01),
                dict(lr=0.01, eps=1e-10, initial_accumulator_value=0.5, weight_decay=0.1)],
    "adadelta": [dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.1, maximize=True)],
    "rprop": [dict(lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0))],
}


@pytest.mark.parametrize("algorithm", sorted(_kernels.ALGORITHMS))
def test_steady_coefficients_are_those_of_every_later_step(algorithm):
    # adamc_steady (src_c/adamc_runtime.c) lets the C-objective loop of adamc.minimize
    # prepare a step's coefficients once for all later steps: wherever it says so, the
    # coefficients (bytes, padding zeroed) and the scalar state of far later steps are
    # the same
    hypers = STEADY_HYPERS.get(algorithm, [dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8)])
    later = [1, 2, 3, 17, 1000, 40_001, 10**6, 10**9, 10**15, 2**62]
    steady_steps = 0
    for hyper in hypers:
        aux = _kernels.aux_initial(_kernels.ALGORITHMS[algorithm])
        for step in [*range(1, 60), 399, 400, 401, 402, 39_999, 40_000, 40_001, 10**6]:
            coef, aux_next, steady = _kernels._coefficients(algorithm, hyper, step, aux)
            # (the chain of aux is exact up to step 59; past it the steps jump, and only
            # NAdam's aux, which is never steady, keeps changing)
            aux = aux_next
            if not steady:
                continue
            steady_steps += 1
            for d in later:
                got, got_aux, still = _kernels._coefficients(algorithm, hyper, step + d,
                                                              aux_next)
                assert (got, got_aux, still) == (coef, aux_next, True), (hyper, step, d)
    # the algorithms whose coefficients stop depending on the step do reach that point
    steady_algorithms = {"adam", "adamax", "sgd", "rmsprop", "lion", "adagrad", "adadelta",
                         "rprop"}
    assert (steady_steps > 0) == (algorithm in steady_algorithms), steady_steps


def test_no_step_is_steady_while_the_coefficients_still_change():
    adam = STEADY_HYPERS["adam"][0]
    assert not _kernels._coefficients("adam", adam, 39_999, 0.0)[2]
    assert _kernels._coefficients("adam", adam, 40_000, 0.0)[2]
    assert _kernels._coefficients("adam", adam, 30_000, 0.0)[0] != \
        _kernels._coefficients("adam", adam, 40_000, 0.0)[0]  # 1 - 0.999**30000 < 1
    for name in ("nadam", "radam", "prodigy", "adamw_schedulefree", "sgd_schedulefree"):
        assert not _kernels._coefficients(name, STEADY_HYPERS.get(name, [adam])[0], 10**6,
                                          _kernels.aux_initial(_kernels.ALGORITHMS[name]))[2]
    sgd = STEADY_HYPERS["sgd"][1]
    assert not _kernels._coefficients("sgd", sgd, 1, 0.0)[2]  # the first momentum step
    assert _kernels._coefficients("sgd", sgd, 2, 1.0)[2]
    # the first step's initial value (Adagrad's accumulator, Rprop's step sizes), and
    # Adagrad's lr decay
    adagrad = STEADY_HYPERS["adagrad"]
    assert _kernels._coefficients("adagrad", adagrad[0], 1, 0.0)[2]
    assert not _kernels._coefficients("adagrad", adagrad[2], 1, 0.0)[2]
    assert _kernels._coefficients("adagrad", adagrad[2], 2, 0.0)[2]
    assert not _kernels._coefficients("adagrad", adagrad[1], 10**6, 0.0)[2]
    rprop = STEADY_HYPERS["rprop"][0]
    assert not _kernels._coefficients("rprop", rprop, 1, 0.0)[2]
    assert _kernels._coefficients("rprop", rprop, 2, 0.0)[2]


@pytest.mark.parametrize("opt", [OPTIONS[0], OPTIONS[3], OPTIONS[5]], ids=option_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_bit_exact_at_late_steps(dtype, opt):
    # the steps around the bias corrections' shortcut (beta1 = 0.9: t = 400; beta2 =
    # 0.999: t = 40000) and far beyond it, against the emulation's 1 - _pow(beta, t)
    rng = np.random.default_rng(4)
    p, m, v, vm = new_state(17, dtype, rng, opt.get("amsgrad"))
    m[:] = rng.standard_normal(17).astype(dtype)
    v[:] = rng.random(17).astype(dtype)
    e = [None if a is None else a.copy() for a in (p, m, v, vm)]
    steps = [*range(370, 420), *range(37400, 37420), *range(39990, 40010), 10 ** 6, 2 ** 40]
    for t in steps:
        g = grad_at(rng, 17, dtype, t)
        adamc.adam_step(p, g, m, v, step=t, lr=0.01, max_exp_avg_sq=vm, **opt)
        e = emulate_kernel(e[0], g, e[1], e[2], e[3], step=t, lr=0.01, **opt)
        for got, want in zip((p, m, v, vm), e):
            if got is not None:
                np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"step {t}")

def trajectory(n, dtype, opt, steps=STEPS, seed=3):
    rng = np.random.default_rng(seed)
    p, m, v, vm = new_state(n, dtype, rng, opt.get("amsgrad"))
    for t in range(1, steps + 1):
        adamc.adam_step(p, grad_at(rng, n, dtype, t), m, v, step=t, lr=0.01,
                        max_exp_avg_sq=vm, **opt)
    return [a for a in (p, m, v, vm) if a is not None]


@pytest.mark.parametrize("opt", [OPTIONS[0], OPTIONS[3], OPTIONS[10]], ids=option_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", marked_sizes(SIZES))
def test_bit_identical_across_levels_and_threads(n, dtype, opt):
    steps = 10 if n > 2**16 else STEPS
    with kernel_config("baseline", 1):
        expected = trajectory(n, dtype, opt, steps)
    for level in LEVELS:
        for threads in THREADS:
            with kernel_config(level, threads):
                got = trajectory(n, dtype, opt, steps)
            for a, b in zip(got, expected):
                assert np.array_equal(bits(a), bits(b)), f"{level} with {threads} threads"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nonfinite_values_propagate_elementwise(level_threads, dtype):
    n = 37
    p = np.ones(n, dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    g = np.full(n, 0.5, dtype)
    g[3], g[20], g[36] = np.nan, np.inf, -np.inf
    with np.errstate(invalid="ignore"):
        adamc.adam_step(p, g, m, v, step=1, lr=0.1)
    bad = np.zeros(n, bool)
    bad[[3, 20, 36]] = True
    assert np.isnan(p[bad]).all()
    np.testing.assert_allclose(p[~bad], 0.9, rtol=1e-6)


def test_amsgrad_max_propagates_nan():
    p = np.ones(4)
    m, v, vm = np.zeros(4), np.zeros(4), np.array([np.nan, 0.0, 5.0, 0.0])
    adamc.adam_step(p, np.ones(4), m, v, step=1, amsgrad=True, max_exp_avg_sq=vm)
    assert np.isnan(vm[0]) and np.isnan(p[0])
    assert vm[2] == 5.0 and vm[1] == v[1]


def test_first_step_moves_by_lr_against_the_gradient():
    # Bias correction makes the first update lr * g / (|g| + eps): about lr * sign(g).
    p = np.zeros(3)
    adamc.adam_step(p, np.array([3.0, -0.2, 1e4]), np.zeros(3), np.zeros(3), step=1, lr=0.5)
    np.testing.assert_allclose(p, [-0.5, 0.5, -0.5], rtol=1e-7)


def test_empty_and_zero_dimensional_arrays():
    for shape in [(0,), (3, 0), ()]:
        p = np.ones(shape)
        adamc.adam_step(p, np.ones(shape), np.zeros(shape), np.zeros(shape), step=1, lr=0.1)
        np.testing.assert_allclose(p, np.full(shape, 0.9), rtol=1e-7)


def test_multidimensional_param_matches_flat():
    rng = np.random.default_rng(4)
    p2 = rng.standard_normal((7, 9, 3))
    g2 = rng.standard_normal((7, 9, 3))
    p1, g1 = p2.ravel().copy(), g2.ravel().copy()
    s2 = [np.zeros_like(p2), np.zeros_like(p2)]
    s1 = [np.zeros_like(p1), np.zeros_like(p1)]
    adamc.adam_step(p2, g2, *s2, step=1)
    adamc.adam_step(p1, g1, *s1, step=1)
    np.testing.assert_array_equal(p2.ravel(), p1)


# ----------------------------------------------------------------------------------
# Bad input: precise exception, nothing mutated.

def fresh(dtype=np.float64, n=8):
    rng = np.random.default_rng(5)
    return dict(param=rng.standard_normal(n).astype(dtype),
                grad=rng.standard_normal(n).astype(dtype),
                exp_avg=rng.standard_normal(n).astype(dtype),
                exp_avg_sq=rng.random(n).astype(dtype))


def call(arrays, **kw):
    kw.setdefault("step", 3)
    adamc.adam_step(arrays["param"], arrays["grad"], arrays["exp_avg"], arrays["exp_avg_sq"],
                    **kw)


def ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def misaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1)
    return out


BAD_ARRAYS = [
    ("param", lambda a: list(a["param"]), TypeError, "param must be a numpy.ndarray"),
    ("param", lambda a: a["param"].astype(np.int64), TypeError, "dtype int64"),
    ("param", lambda a: a["param"].astype(np.float16), TypeError, "float32 and float64"),
    ("param", lambda a: a["param"].astype(">f8"), TypeError, "byte order"),
    ("grad", lambda a: a["grad"].astype(np.float32), TypeError, "grad has dtype float32"),
    ("exp_avg", lambda a: a["exp_avg"].astype(np.float32), TypeError, "exp_avg has dtype"),
    ("grad", lambda a: a["grad"][:4], ValueError, "grad has shape (4,)"),
    ("exp_avg_sq", lambda a: a["exp_avg_sq"].reshape(2, 4), ValueError, "shape (2, 4)"),
    ("param", lambda a: np.repeat(a["param"], 2)[::2], ValueError, "not C-contiguous"),
    ("grad", lambda a: np.repeat(a["grad"], 2)[::2], ValueError, "grad is not C-contiguous"),
    ("param", lambda a: ro(a["param"]), ValueError, "param is read-only"),
    ("exp_avg", lambda a: ro(a["exp_avg"]), ValueError, "exp_avg is read-only"),
    ("grad", lambda a: misaligned(a["grad"]), ValueError, "not aligned"),
    ("exp_avg_sq", lambda a: a["exp_avg"], ValueError, "exp_avg and exp_avg_sq share memory"),
    ("grad", lambda a: a["param"], ValueError, "grad shares memory with param"),
    ("grad", lambda a: a["exp_avg"], ValueError, "grad shares memory with exp_avg"),
]


@pytest.mark.parametrize("which,make,exc,msg", BAD_ARRAYS,
                         ids=[f"{b[0]}-{b[3]}" for b in BAD_ARRAYS])
def test_bad_array_rejected_without_mutation(which, make, exc, msg):
    arrays = fresh()
    arrays[which] = make(arrays)
    before = {k: np.array(v, copy=True) for k, v in arrays.items()}
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        call(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(np.asarray(v), before[k])


BAD_SCALARS = [
    (dict(lr=-1e-3), ValueError, r"lr must be a finite number >= 0, got -0.001"),
    (dict(lr=float("nan")), ValueError, "lr must be a finite number"),
    (dict(lr=float("inf")), ValueError, "lr must be a finite number"),
    (dict(lr="0.1"), TypeError, "lr must be a real number, got str"),
    (dict(eps=-1e-8), ValueError, "eps must be a finite number >= 0"),
    (dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\), got 1.0"),
    (dict(beta1=-0.1), ValueError, "beta1 must be in"),
    (dict(beta2=float("nan")), ValueError, "beta2 must be in"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay must be a finite number >= 0"),
    (dict(step=0), ValueError, "step must be >= 1"),
    (dict(step=2.0), TypeError, "step must be an int"),
    (dict(step=True), TypeError, "step must be an int"),
    (dict(amsgrad=1), TypeError, "amsgrad must be a bool"),
    (dict(maximize="yes"), TypeError, "maximize must be a bool"),
    (dict(amsgrad=True), ValueError, "amsgrad=True needs max_exp_avg_sq"),
    (dict(max_exp_avg_sq=np.zeros(8)), ValueError, "only used with amsgrad=True"),
    (dict(amsgrad=True, max_exp_avg_sq=np.zeros(3)), ValueError, "max_exp_avg_sq has shape"),
]


@pytest.mark.parametrize("kw,exc,msg", BAD_SCALARS, ids=[str(b[0]) for b in BAD_SCALARS])
def test_bad_hyperparameter_rejected_without_mutation(kw, exc, msg):
    arrays = fresh()
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(exc, match=msg):
        call(arrays, **kw)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k])


def test_numpy_scalars_and_ints_mean_what_python_numbers_mean():
    a, b = fresh(np.float32), fresh(np.float32)
    call(a, lr=np.float32(0.01), beta1=np.float64(0.8), eps=0, weight_decay=1,
         step=np.int64(2), maximize=np.bool_(True))
    call(b, lr=float(np.float32(0.01)), beta1=0.8, eps=0.0, weight_decay=1.0, step=2,
         maximize=True)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = fresh(np.float32)
    call(c, lr=0.01, beta1=0.8, eps=0.0, weight_decay=1.0, step=2, maximize=False)
    assert not np.array_equal(a["param"], c["param"])  # maximize=np.bool_(True) took effect


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_max_abs_of_the_minimize_loop(dtype, level):
    # the level's integer maxima on the bits (max_abs in src_c/adamc_algos.inc): NaN
    # wherever one is, inf, -0.0, subnormals, every vector body and remainder
    rng = np.random.default_rng(9)
    with kernel_config(level, 1):
        _check_max_abs(dtype, rng)


def _check_max_abs(dtype, rng):
    tiny = np.finfo(dtype).smallest_subnormal
    assert _kernels.max_abs(np.array([tiny, -2 * tiny], dtype)) == 2 * float(tiny)
    assert _kernels.max_abs(np.array([-0.0, 0.0], dtype)) == 0.0
    big = np.finfo(dtype).max
    assert _kernels.max_abs(np.array([1.0, -big, np.inf, 3.0], dtype)) == np.inf
    for n in [*range(0, 18), 31, 32, 33, 63, 64, 1023]:
        a = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)).astype(dtype)
        want = float(np.max(np.abs(a))) if n else 0.0
        assert _kernels.max_abs(a) == want
        for i in sorted({*range(min(n, 9)), *range(max(n - 3, 0), n)}):
            b = a.copy()
            b[i] = -np.inf
            assert _kernels.max_abs(b) == np.inf
            b[i] = np.nan
            assert np.isnan(_kernels.max_abs(b))
            b[i] = np.copysign(np.nan, -1.0)
            assert np.isnan(_kernels.max_abs(b))
            b[:] = -0.0
            b[i] = -a[i]
            assert _kernels.max_abs(b) == abs(float(a[i]))
