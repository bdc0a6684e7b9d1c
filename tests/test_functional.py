"""The stateless steps of the whole family (Adamax, NAdam, RAdam, SGD, RMSprop, Adagrad,
Adadelta, Rprop; Adam is covered in depth by test_kernels.py) against the NumPy
reference.

For every algorithm and option set:
1. a NumPy emulation of the kernel's own operation order, in the array's dtype,
   must give the same bits at every step, on every SIMD level and thread count;
2. at every step of a 50-step trajectory, the float64 reference applied to the
   kernel's previous state must agree within 1e-12 (float64) or 2e-5 (float32) of
   the scale S of each quantity (|before| + |after| + |gradient term|; for the
   parameter |p| + |p_new| + lr (1 + |g|)). That is about 10^4 units of roundoff
   for float64 and 300 for float32: room for the few roundings of a step and for
   the difference between the kernel's rearranged formula and torch's, while a
   wrong formula (eps placement, bias correction, NAdam's momentum product in
   float32, a missing dampening) misses by orders of magnitude;
3. trajectories must be bit-identical across SIMD levels and thread counts.
"""
import inspect

import numpy as np
import pytest

import adamc
import emulate
from adamc import _reference
from adamc.algorithms import ALGORITHMS
from conftest import DTYPES, LEVELS, SMALL_SIZES, THREADS, bits, kernel_config, marked_sizes
from optim_db import DB

STEPS = 50


def _grad_term(g, p, opt):
    return np.abs(g.astype(np.float64)) + opt.get("weight_decay", 0.0) * np.abs(
        p.astype(np.float64))


class Algo:
    """How to call, check and emulate one algorithm."""

    def __init__(self, name, states, options, emulate, call, reference, aux=None):
        self.name, self.states, self.options = name, states, options
        self.emulate, self.call, self.reference, self.aux = emulate, call, reference, aux

    def new_states(self, p, opt):
        return {k: (np.zeros_like(p) if self.needed(k, opt) else None) for k in self.states}

    @staticmethod
    def needed(key, opt):
        if key == "grad_avg":
            return opt.get("centered", False)
        if key == "momentum_buffer":
            return opt.get("momentum", 0) > 0
        return True


# ---- emulations of the kernels' operation order (tests/emulate.py) ----------------

def _emulator(fn):
    def run(p, g, s, t, lr, opt, aux):
        if fn is emulate.sgd:  # the stateless SGD step fills its buffer at step 1
            p, new, _ = fn(p, g, s, t, 0.0 if t == 1 else 1.0, lr=lr, **opt)
            return p, new, aux
        return fn(p, g, s, t, aux, lr=lr, **opt)
    return run


emulate_adamax, emulate_nadam, emulate_radam, emulate_sgd, emulate_rmsprop = (
    _emulator(f) for f in (emulate.adamax, emulate.nadam, emulate.radam, emulate.sgd,
                           emulate.rmsprop))
emulate_adagrad, emulate_adadelta, emulate_rprop = (
    _emulator(f) for f in (emulate.adagrad, emulate.adadelta, emulate.rprop))


# ---- the algorithms --------------------------------------------------------------

def _call_adamax(p, g, s, t, lr, opt, aux):
    adamc.adamax_step(p, g, s["exp_avg"], s["exp_inf"], step=t, lr=lr, **opt)
    return aux


def _call_nadam(p, g, s, t, lr, opt, aux):
    return adamc.nadam_step(p, g, s["exp_avg"], s["exp_avg_sq"], step=t, lr=lr,
                            mu_product=aux, **opt)


def _call_radam(p, g, s, t, lr, opt, aux):
    adamc.radam_step(p, g, s["exp_avg"], s["exp_avg_sq"], step=t, lr=lr, **opt)
    return aux


def _call_sgd(p, g, s, t, lr, opt, aux):
    adamc.sgd_step(p, g, s["momentum_buffer"], step=t, lr=lr, **opt)
    return aux


def _call_rmsprop(p, g, s, t, lr, opt, aux):
    adamc.rmsprop_step(p, g, s["square_avg"], step=t, lr=lr,
                       momentum_buffer=s["momentum_buffer"], grad_avg=s["grad_avg"], **opt)
    return aux


def _ref_adamax(p, g, s, t, lr, opt, aux):
    return _reference.adamax(p, g, s["exp_avg"], s["exp_inf"], step=t, lr=lr, **opt), aux


def _ref_nadam(p, g, s, t, lr, opt, aux):
    out = _reference.nadam(p, g, s["exp_avg"], s["exp_avg_sq"], step=t, lr=lr, mu_product=aux,
                           **opt)
    return out, out.pop("mu_product")


def _ref_radam(p, g, s, t, lr, opt, aux):
    return _reference.radam(p, g, s["exp_avg"], s["exp_avg_sq"], step=t, lr=lr, **opt), aux


def _ref_sgd(p, g, s, t, lr, opt, aux):
    return _reference.sgd(p, g, s.get("momentum_buffer"), step=t, lr=lr, **opt), aux


def _ref_rmsprop(p, g, s, t, lr, opt, aux):
    return _reference.rmsprop(p, g, s["square_avg"], step=t, lr=lr,
                              momentum_buffer=s.get("momentum_buffer"),
                              grad_avg=s.get("grad_avg"), **opt), aux


def _call_adagrad(p, g, s, t, lr, opt, aux):
    adamc.adagrad_step(p, g, s["sum"], step=t, lr=lr, **opt)
    return aux


def _call_adadelta(p, g, s, t, lr, opt, aux):
    adamc.adadelta_step(p, g, s["square_avg"], s["acc_delta"], step=t, lr=lr, **opt)
    return aux


def _rprop_kwargs(opt):
    kw = dict(opt)
    if "etas" in kw:
        kw["etaminus"], kw["etaplus"] = kw.pop("etas")
    if "step_sizes" in kw:
        kw["step_size_min"], kw["step_size_max"] = kw.pop("step_sizes")
    return kw


def _call_rprop(p, g, s, t, lr, opt, aux):
    adamc.rprop_step(p, g, s["prev"], s["step_size"], step=t, lr=lr, **_rprop_kwargs(opt))
    return aux


def _ref_adagrad(p, g, s, t, lr, opt, aux):
    return _reference.adagrad(p, g, s["sum"], step=t, lr=lr, **opt), aux


def _ref_adadelta(p, g, s, t, lr, opt, aux):
    return _reference.adadelta(p, g, s["square_avg"], s["acc_delta"], step=t, lr=lr,
                               **opt), aux


def _ref_rprop(p, g, s, t, lr, opt, aux):
    return _reference.rprop(p, g, s["prev"], s["step_size"], step=t, lr=lr,
                            **_rprop_kwargs(opt)), aux


# The option sets and tolerances are the stateless step's columns of the conformance
# table (tests/optim_db.py).
ALGOS = {
    "adamax": Algo("adamax", ("exp_avg", "exp_inf"), DB["adamax"].step_options,
                   emulate_adamax, _call_adamax, _ref_adamax),
    "nadam": Algo("nadam", ("exp_avg", "exp_avg_sq"), DB["nadam"].step_options,
                  emulate_nadam, _call_nadam, _ref_nadam, aux=1.0),
    "radam": Algo("radam", ("exp_avg", "exp_avg_sq"), DB["radam"].step_options,
                  emulate_radam, _call_radam, _ref_radam),
    "sgd": Algo("sgd", ("momentum_buffer",), DB["sgd"].step_options,
                emulate_sgd, _call_sgd, _ref_sgd),
    "rmsprop": Algo("rmsprop", ("square_avg", "momentum_buffer", "grad_avg"),
                    DB["rmsprop"].step_options, emulate_rmsprop, _call_rmsprop, _ref_rmsprop),
    "adagrad": Algo("adagrad", ("sum",), DB["adagrad"].step_options,
                    emulate_adagrad, _call_adagrad, _ref_adagrad),
    "adadelta": Algo("adadelta", ("square_avg", "acc_delta"), DB["adadelta"].step_options,
                     emulate_adadelta, _call_adadelta, _ref_adadelta),
    "rprop": Algo("rprop", ("prev", "step_size"), DB["rprop"].step_options,
                  emulate_rprop, _call_rprop, _ref_rprop),
}
# The stateless steps checked in depth elsewhere (their own calling conventions).
IN_DEPTH = {"adam": "tests/test_kernels.py", "lion": "tests/test_algorithms.py",
            "prodigy": "tests/test_prodigy.py"}


def test_every_stateless_step_is_checked_here_or_in_depth():
    assert set(ALGOS) | set(IN_DEPTH) == {a for a, alg in ALGORITHMS.items() if alg.stateless}
    assert not set(ALGOS) & set(IN_DEPTH)
    for name, algo in ALGOS.items():
        assert DB[name].tol is not None and algo.emulate is not None

CASES = [(a, o) for a in ALGOS for o in ALGOS[a].options]


def case_id(case):
    a, o = case
    return a + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "")


def grad_at(rng, n, dtype):
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 2)
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype)


def lr_of(algo):
    return 0.01


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_bit_exact_operation_order(one_level, dtype, case):
    name, opt = case
    algo = ALGOS[name]
    rng = np.random.default_rng(11)
    n = 1023
    p = rng.standard_normal(n).astype(dtype)
    s = algo.new_states(p, opt)
    ep, es, aux, eaux = p.copy(), {k: v.copy() for k, v in s.items() if v is not None}, algo.aux, algo.aux
    with np.errstate(all="ignore"):
        for t in range(1, 31):
            g = grad_at(rng, n, dtype)
            aux = algo.call(p, g, s, t, lr_of(name), opt, aux)
            ep, new, eaux = algo.emulate(ep, g, es, t, lr_of(name), opt, eaux)
            es.update(new)
            np.testing.assert_array_equal(bits(p), bits(ep), err_msg=f"param at step {t}")
            for k, v in es.items():
                np.testing.assert_array_equal(bits(s[k]), bits(v), err_msg=f"{k} at step {t}")
            if algo.aux is not None:
                assert aux == eaux


def scale_of(before, after, g_term, lr=None):
    s = np.abs(before.astype(np.float64)) + np.abs(after)
    return s + (lr * (1 + g_term) if lr is not None else g_term)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("n", SMALL_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_matches_reference_every_step(dtype, n, case):
    name, opt = case
    algo = ALGOS[name]
    lr = lr_of(name)
    rng = np.random.default_rng(12)
    p = rng.standard_normal(n).astype(dtype)
    s = algo.new_states(p, opt)
    aux = algo.aux
    for t in range(1, STEPS + 1):
        g = grad_at(rng, n, dtype)
        before_p = p.copy()
        before = {k: v.copy() for k, v in s.items() if v is not None}
        ref, ref_aux = algo.reference(before_p, g, before, t, lr, opt, aux)
        ref_p = ref.pop("param")
        ref_s = ref
        aux = algo.call(p, g, s, t, lr, opt, aux)
        gt = _grad_term(g, before_p, opt)
        tol = DB[name].tol[dtype]
        err = np.abs(p.astype(np.float64) - ref_p)
        bound = tol * scale_of(before_p, ref_p, gt, lr) + np.finfo(dtype).tiny
        assert np.all(err <= bound), f"param at step {t}: worst {np.max(err / bound):.3g}"
        for k, want in ref_s.items():
            err = np.abs(s[k].astype(np.float64) - want)
            bound = tol * scale_of(before[k], want, gt) + np.finfo(dtype).tiny
            if k in ("square_avg", "exp_avg_sq"):
                bound = bound + tol * gt * gt
            assert np.all(err <= bound), f"{k} at step {t}: worst {np.max(err / bound):.3g}"
        if algo.aux is not None:
            assert aux == pytest.approx(ref_aux, rel=1e-15)


def trajectory(name, opt, n, dtype, steps=STEPS, seed=13):
    algo = ALGOS[name]
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    s = algo.new_states(p, opt)
    aux = algo.aux
    for t in range(1, steps + 1):
        aux = algo.call(p, grad_at(rng, n, dtype), s, t, lr_of(name), opt, aux)
    return [p] + [v for v in s.values() if v is not None]


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("n", marked_sizes([17, 1023, 200_003]))
def test_bit_identical_across_levels_and_threads(n, case):
    name, opt = case
    for dtype in DTYPES:
        steps = 5 if n > 2**16 else 20
        with kernel_config("baseline", 1):
            expected = trajectory(name, opt, n, dtype, steps)
        for level in LEVELS:
            for threads in THREADS:
                with kernel_config(level, threads):
                    got = trajectory(name, opt, n, dtype, steps)
                for a, b in zip(got, expected):
                    assert np.array_equal(bits(a), bits(b)), f"{level}, {threads} threads"


# ----------------------------------------------------------------------------------
# Semantics worth pinning down on their own

def test_sgd_plain_is_gradient_descent():
    p = np.array([1.0, -2.0])
    adamc.sgd_step(p, np.array([0.5, 0.25]), step=1, lr=0.1)
    np.testing.assert_array_equal(p, [1.0 - 0.05, -2.0 - 0.025])


def test_sgd_first_momentum_step_copies_the_gradient():
    p, b = np.zeros(2), np.full(2, 99.0)  # whatever the buffer held
    adamc.sgd_step(p, np.array([1.0, 2.0]), b, step=1, lr=1.0, momentum=0.9, dampening=0.5)
    np.testing.assert_array_equal(b, [1.0, 2.0])
    adamc.sgd_step(p, np.array([1.0, 2.0]), b, step=2, lr=1.0, momentum=0.9, dampening=0.5)
    np.testing.assert_allclose(b, [0.9 + 0.5, 1.8 + 1.0])


def test_radam_switches_to_rectified_updates():
    # with beta2 = 0.999, rho_t first exceeds 5 at step 6
    p = np.zeros(1)
    m, v = np.zeros(1), np.zeros(1)
    steps = []
    for t in range(1, 8):
        before = p.copy()
        adamc.radam_step(p, np.array([1.0]), m, v, step=t, lr=0.1)
        steps.append(float(before[0] - p[0]))
    np.testing.assert_allclose(steps[:5], 0.1, rtol=1e-12)  # unrectified: lr * m_hat, m_hat = 1
    assert steps[5] != pytest.approx(0.1, rel=1e-3)


def test_nadam_returns_the_momentum_product():
    p = np.zeros(3)
    mu = 1.0
    for t in range(1, 4):
        mu = adamc.nadam_step(p, np.ones(3), np.zeros(3), np.zeros(3), step=t, mu_product=mu)
    expected = np.prod([0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3)) for t in (1, 2, 3)])
    assert mu == pytest.approx(expected, rel=1e-15)


# ----------------------------------------------------------------------------------
# Bad input: precise exception, nothing mutated

def _fresh(n=6):
    rng = np.random.default_rng(14)
    return rng.standard_normal(n), rng.standard_normal(n), [rng.random(n) for _ in range(3)]


BAD = [
    ("adamax_step", dict(beta2=1.0), ValueError, r"beta2 must be in \[0, 1\)"),
    ("adamax_step", dict(eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    ("nadam_step", dict(momentum_decay=-1.0), ValueError, "momentum_decay must be"),
    ("nadam_step", dict(mu_product=1.5), ValueError, r"mu_product must be in \[0, 1\]"),
    ("nadam_step", dict(decoupled_weight_decay="no"), TypeError, "must be a bool"),
    ("radam_step", dict(lr=float("nan")), ValueError, "lr must be a finite number"),
    ("radam_step", dict(step=0), ValueError, "step must be >= 1"),
    ("sgd_step", dict(momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
    ("sgd_step", dict(momentum=-0.1), ValueError, "momentum must be a finite number >= 0"),
    ("sgd_step", dict(dampening=2.0), ValueError, r"dampening must be in \[0, 1\]"),
    ("sgd_step", dict(nesterov=True), ValueError, "Nesterov momentum requires momentum > 0"),
    ("sgd_step", dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError,
     "dampening = 0"),
    ("sgd_step", dict(momentum=0.9, no_buffer=True), ValueError,
     "momentum > 0 needs momentum_buffer"),
    ("sgd_step", dict(extra_buffer=True), ValueError, "momentum_buffer is only used with"),
    ("rmsprop_step", dict(alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
    ("rmsprop_step", dict(centered=True), ValueError, "centered=True needs grad_avg"),
    ("rmsprop_step", dict(momentum=0.5), ValueError, "momentum > 0 needs momentum_buffer"),
    ("rmsprop_step", dict(lr=lambda t: 0.1), TypeError, "must be a number"),
    ("radam_step", dict(shared=True), ValueError, "exp_avg and exp_avg_sq share memory"),
    ("adamax_step", dict(grad_f32=True), TypeError, "grad has dtype float32"),
    ("adagrad_step", dict(lr_decay=-1.0), ValueError, "lr_decay must be a finite number >= 0"),
    ("adagrad_step", dict(initial_accumulator_value=-1.0), ValueError,
     "initial_accumulator_value must be a finite number >= 0"),
    ("adagrad_step", dict(eps=float("nan")), ValueError, "eps must be a finite number >= 0"),
    ("adadelta_step", dict(rho=1.5), ValueError, r"rho must be in \[0, 1\]"),
    ("adadelta_step", dict(eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    ("rprop_step", dict(etaminus=1.0), ValueError, r"etaminus must be in \(0, 1\), got 1.0"),
    ("rprop_step", dict(etaminus=0), ValueError, r"etaminus must be in \(0, 1\)"),
    ("rprop_step", dict(etaplus=1.0), ValueError, "etaplus must be a finite number > 1"),
    ("rprop_step", dict(etaplus=float("inf")), ValueError, "etaplus must be a finite number > 1"),
    ("rprop_step", dict(step_size_min=0.0), ValueError, "step_size_min must be > 0"),
    ("rprop_step", dict(step_size_max=float("inf")), ValueError, "step_size_max must be a finite"),
    ("rprop_step", dict(step_size_min=2.0, step_size_max=1.0), ValueError,
     "step_size_min must be <= step_size_max"),
    ("rprop_step", dict(lr=-1.0), ValueError, "lr must be a finite number >= 0"),
    ("prodigy_step", dict(lr=-1.0), ValueError, "lr must be a finite number >= 0"),
    ("prodigy_step", dict(lr=lambda t: 1.0, beta1=2.0), TypeError, "must be a number"),
    ("prodigy_step", dict(beta1=2.0, eps=0.0), ValueError, r"beta1 must be in \[0, 1\)"),
    ("prodigy_step", dict(beta3=1.0), ValueError, r"beta3 must be in \[0, 1\)"),
    ("prodigy_step", dict(beta3="x"), TypeError, "beta3 must be a real number, got str"),
    ("prodigy_step", dict(eps=0.0), ValueError, "eps must be > 0 for Prodigy, got 0.0"),
    ("prodigy_step", dict(eps=0.0, step=0), ValueError, "eps must be > 0 for Prodigy"),
    ("prodigy_step", dict(d0=0.0), ValueError, "d0 must be > 0, got 0.0"),
    ("prodigy_step", dict(d_coef=-1), ValueError, "d_coef must be a finite number >= 0"),
    ("prodigy_step", dict(growth_rate=0), ValueError, r"growth_rate must be > 0 \(inf: no limit\)"),
    ("prodigy_step", dict(growth_rate=np.array(2.0)), TypeError,
     "growth_rate must be a real number, got ndarray"),
    ("prodigy_step", dict(decouple=1), TypeError, "decouple must be a bool, got int 1"),
    ("prodigy_step", dict(maximize=None), TypeError, "maximize must be a bool"),
    ("prodigy_step", dict(step=0, d=-1.0), ValueError, "step must be >= 1"),
    ("prodigy_step", dict(d=-1.0, grad_f32=True), ValueError,
     "d must be a finite number > 0, got -1.0"),
    ("prodigy_step", dict(d=1e-3), ValueError, "d_max must be a finite number >= d, got 1e-06"),
    ("prodigy_step", dict(d_numerator=float("inf")), ValueError, "d_numerator must be finite"),
    ("prodigy_step", dict(d="1"), TypeError, "d must be a real number, got str"),
    ("prodigy_step", dict(grad_f32=True), TypeError, "grad has dtype float32"),
    ("prodigy_step", dict(shared=True), ValueError, "exp_avg and exp_avg_sq share memory"),
    ("prodigy_step", dict(noncontig=True), ValueError,
     "p0 is not C-contiguous; adamc updates arrays in place"),
]


@pytest.mark.parametrize("fn,kw,exc,msg", BAD, ids=[f"{b[0]}-{b[3][:30]}" for b in BAD])
def test_bad_input_rejected_without_mutation(fn, kw, exc, msg):
    p, g, (s0, s1, s2) = _fresh()
    kw = dict(kw)
    if kw.pop("grad_f32", False):
        g = g.astype(np.float32)
    if kw.pop("shared", False):
        s1 = s0
    s3 = np.zeros(12)[::2] if kw.pop("noncontig", False) else np.zeros(6)
    snapshot = [a.copy() for a in (p, g, s0, s1, s2, s3)]
    step = kw.pop("step", 2)
    with pytest.raises(exc, match=msg):
        if fn == "sgd_step":
            buf = None if kw.pop("no_buffer", False) else s0
            if not kw.get("momentum") and not kw.pop("extra_buffer", False):
                buf = None
            adamc.sgd_step(p, g, buf, step=step, **kw)
        elif fn == "rmsprop_step":
            adamc.rmsprop_step(p, g, s0, step=step, **kw)
        elif fn == "adagrad_step":
            adamc.adagrad_step(p, g, s0, step=step, **kw)
        elif fn == "prodigy_step":
            adamc.prodigy_step(p, g, s0, s1, s2, s3, step=step, **kw)
        else:
            getattr(adamc, fn)(p, g, s0, s1, step=step, **kw)
    for a, b in zip((p, g, s0, s1, s2, s3), snapshot):
        np.testing.assert_array_equal(a, b)


# ---- binding the arguments (the compiled vectorcall entry) ----------------------------

def _arrays(k, n=5):
    return [np.full(n, 0.5 + i) for i in range(k)]


def _bind_calls(f):
    """(call, expected message) pairs of mistakes a caller can make; the messages are
    those of a Python function with the step's signature."""
    a = _arrays(6)
    return [
        (lambda: f(), "adam_step() missing 4 required positional arguments: 'param', "
                      "'grad', 'exp_avg', and 'exp_avg_sq'"),
        (lambda: f(a[0], a[1], a[2], step=1),
         "adam_step() missing 1 required positional argument: 'exp_avg_sq'"),
        (lambda: f(*a[:4]), "adam_step() missing 1 required keyword-only argument: 'step'"),
        (lambda: f(*a[:5]), "adam_step() takes 4 positional arguments but 5 were given"),
        (lambda: f(*a[:5], step=1), "adam_step() takes 4 positional arguments but 5 "
                                    "positional arguments (and 1 keyword-only argument) were given"),
        (lambda: f(*a[:4], step=1, bogus=1),
         "adam_step() got an unexpected keyword argument 'bogus'"),
        (lambda: f(*a[:4], step=1, grad=a[5]),
         "adam_step() got multiple values for argument 'grad'"),
        (lambda: f(*a[:4], step=1, mu_product=0.5),
         "adam_step() got an unexpected keyword argument 'mu_product'"),
    ]


@pytest.mark.parametrize("k", range(8))
def test_bad_calls_get_the_messages_of_a_function(k):
    call, msg = _bind_calls(adamc.adam_step)[k]
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == msg


def test_optional_positional_state_message():
    a = _arrays(4)
    with pytest.raises(TypeError, match=r"^sgd_step\(\) takes from 2 to 3 positional "
                                        r"arguments but 4 positional arguments \(and 1 "
                                        r"keyword-only argument\) were given$"):
        adamc.sgd_step(*a, step=1)
    with pytest.raises(TypeError, match=r"^sgd_step\(\) takes from 2 to 3 positional "
                                        r"arguments but 4 were given$"):
        adamc.sgd_step(*a)


def _python_twin(name):
    """A Python function with the signature of step ``name`` (from the table)."""
    algorithm = next(a for a in ALGORITHMS.values() if a.step_name == name)
    positional, keyword, _ = adamc.algorithms.step_signature(algorithm)
    namespace = {"inf": float("inf")}
    exec(f"def {name}({', '.join(positional)}, *, {', '.join(keyword)}): pass", namespace)
    return namespace[name]


def _mistakes(f):
    """Calls binding arguments wrongly (or rightly), as (args, kwargs)."""
    names = list(inspect.signature(f).parameters)
    npos = sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in inspect.signature(f).parameters.values())
    a = _arrays(npos + 1)
    by_name = dict(zip(names, a))
    out = [((), {}), (a[:1], {}), (a[:2], {}), (a[:2], {"step": 1}), (a[:npos], {}),
           (a[:npos + 1], {}), (a[:npos + 1], {"step": 1}), (a[:npos + 1], {"step": 1, "lr": 0.1}),
           (a[:npos + 1], {"bogus": 1}), (a[:npos], {"step": 1, "bogus": 1}),
           (a[:npos], {"step": 1, "grad": a[0]}), (a[:npos + 1], {"param": a[0]}),
           (a[:1], {"step": 1, names[npos - 1]: a[0]}), ((), {"step": 1, "lr": 0.1}),
           ((), {names[1]: a[1]}), ((), {names[-1]: None}), (a[:npos - 1], {})]
    out.append(((), {**{k: v for k, v in by_name.items() if k in names[:npos]}, "step": 1}))
    return out


@pytest.mark.parametrize("name", adamc.functional.__all__)
def test_bad_calls_match_a_python_function_of_the_same_signature(name):
    """Every binding error of a compiled step, word for word that of CPython's for a
    ``def`` with the same signature (including several missing arguments, the count
    of keyword-only ones given with too many positional ones, and which of two
    mistakes is reported first)."""
    f, twin = getattr(adamc, name), _python_twin(name)
    sig = inspect.signature(f)
    assert sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                       return_annotation=sig.empty) == inspect.signature(twin)
    checked = 0
    for args, kwargs in _mistakes(f):
        try:
            twin(*args, **kwargs)
        except TypeError as e:
            expected = str(e)
        else:
            continue
        with pytest.raises(TypeError) as info:
            f(*args, **kwargs)
        assert str(info.value) == expected, (args, kwargs)
        checked += 1
    assert checked >= 14


def _steps_of_every_call_form():
    """The same update through every way of calling: keyword names built at run time
    (equal to the parameter names but not the same objects), ``**kwargs``, every
    argument by keyword, and the type's ``__call__`` (no vectorcall)."""
    f = adamc.adam_step
    lr, st = "".join(["l", "r"]), "".join(["st", "ep"])
    forms = [
        lambda a, t: f(*a, step=t, lr=0.01),
        lambda a, t: f(*a, **{st: t, lr: 0.01}),
        lambda a, t: f(param=a[0], grad=a[1], exp_avg=a[2], exp_avg_sq=a[3], lr=0.01, step=t),
        lambda a, t: type(f).__call__(f, *a, step=t, lr=0.01),
    ]
    out = []
    for form in forms:
        a = _arrays(4)
        for t in range(1, 4):
            assert form(a, t) is None
        out.append(np.concatenate([a[0], a[2], a[3]]))
    return out


def test_every_call_form_gives_the_same_bits():
    first, *others = _steps_of_every_call_form()
    assert not np.array_equal(first, np.concatenate([_arrays(4)[0], _arrays(4)[2],
                                                     _arrays(4)[3]]))  # it stepped
    for other in others:
        np.testing.assert_array_equal(other, first)


def test_a_default_passed_explicitly_is_still_checked_like_any_value():
    a = _arrays(4)
    b = _arrays(4)
    adamc.adam_step(*a, step=2)
    adamc.adam_step(*b, step=2, lr=float("1e-3"), beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, amsgrad=False, maximize=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -0.001"):
        adamc.adam_step(*a, step=2, lr=-1e-3)


def test_steps_look_like_functions():
    import pickle
    for name in adamc.functional.__all__:
        f = getattr(adamc, name)
        assert f.__name__ == f.__qualname__ == name and f.__module__ == "adamc.functional"
        assert repr(f) == f"<compiled function adamc.functional.{name}>"
        assert pickle.loads(pickle.dumps(f)) is f
        assert list(inspect.signature(f).parameters)[:2] == ["param", "grad"]
    with pytest.raises(TypeError):
        class Sub(type(adamc.adam_step)):  # final: no subclass inherits its call slot
            pass


def test_prodigy_step_every_call_form_gives_the_same_bits_and_scalars():
    f = adamc.prodigy_step
    lr, dn = "".join(["l", "r"]), "".join(["d_", "max"])
    names = ["param", "grad", "exp_avg", "exp_avg_sq", "s", "p0"]
    forms = [
        lambda a, t, sc: f(*a, step=t, d=sc[0], d_max=sc[1], d_numerator=sc[2], lr=0.5),
        lambda a, t, sc: f(*a, **{"step": t, "d": sc[0], dn: sc[1], "d_numerator": sc[2],
                                  lr: 0.5}),
        lambda a, t, sc: f(**dict(zip(names, a)), lr=0.5, d_numerator=sc[2], d_max=sc[1],
                           d=sc[0], step=t),
        lambda a, t, sc: type(f).__call__(f, *a, step=t, d=sc[0], d_max=sc[1],
                                          d_numerator=sc[2], lr=0.5),
    ]
    out = []
    for form in forms:
        a = [np.linspace(-1, 1, 9), np.linspace(0.5, -0.3, 9)] + [np.zeros(9) for _ in range(4)]
        sc = (None, None, 0.0)
        for t in range(1, 5):
            sc = form(a, t, sc)
            assert type(sc) is tuple and len(sc) == 3 and all(type(x) is float for x in sc)
        out.append((sc, np.concatenate(a).tobytes()))
    assert out[0][0][0] != 1e-6  # d moved
    assert all(o == out[0] for o in out[1:])
