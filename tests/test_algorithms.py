"""The algorithm table (adamc.algorithms) and everything derived from it.

1. Every row is complete: its kernel exists, its classes, stateless step and SciPy
   methods are public with the row's defaults, its float64 twin in adamc._reference
   and its emulation in tests/emulate.py take the same defaults.
2. Every algorithm, through the class and through the stateless step, gives the same
   bits (the two ways in share one kernel and one preparation of the scalars).
3. Lion, the algorithm added through the table, in depth: bit-exact against the
   emulation of its operation order at every size, dtype, SIMD level and thread
   count; every step against the float64 reference; trajectories bit-identical across
   levels and threads; optax.lion and lion-pytorch as oracles when installed.
4. Adagrad, Adadelta and Rprop the same way (their float64 references in
   tests/test_functional.py, torch.optim in tests/test_torch_parity.py), and the
   semantics of their first step, state and checks.
"""
import inspect

import numpy as np
import pytest

import adamc
import emulate
from adamc import _kernels, _reference, algorithms
from adamc.algorithms import ALGORITHMS, CLASSES, HYPERPARAMETERS, METHODS
from conftest import (DTYPES, SIZES, SMALL_SIZES, assert_same_bits_everywhere, bits,
                      marked_sizes)
from optim_db import DB

# Option sets to exercise per algorithm: the class's column of the conformance table
# (tests/optim_db.py; the definitions are adamc.algorithms').
OPTIONS = {a: row.options for a, row in DB.items()}
CASES = [(a, o) for a in ALGORITHMS for o in OPTIONS[a]]
# Steps of the same call shape (states and hyperparameters in, None or mu_product out);
# Prodigy's (its scalars in and out) has its own bitwise test in tests/test_prodigy.py.
PLAIN_CASES = [(a, o) for a, o in CASES if not ALGORITHMS[a].scalars and ALGORITHMS[a].stateless]
# Rows without a stateless step (schedule-free: per-group averaging state).
STATELESS = [a for a in ALGORITHMS if ALGORITHMS[a].stateless]


def case_id(case):
    a, o = case
    return a + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "")


def test_every_algorithm_has_options_to_test():
    assert set(OPTIONS) == set(ALGORITHMS)


# ----------------------------------------------------------------------------------
# 1. The rows are complete

def test_indexes_list_every_class_step_and_twin():
    """adamc.optim, adamc.functional and adamc._reference name what the modules of
    adamc.algorithms define, all of it and in table order."""
    from adamc import algorithms
    assert adamc.optim.__all__ == ["Optimizer", *CLASSES]
    assert adamc.functional.__all__ == [a.step_name for a in ALGORITHMS.values() if a.stateless]
    defined = {name: getattr(m, name) for m in algorithms.MODULES for name in m.__all__}
    assert defined == {name: getattr(adamc, name)
                       for name in [*CLASSES, *adamc.functional.__all__]}
    for algorithm in (a for a in ALGORITHMS.values() if a.stateless):
        module = next(m for m in algorithms.MODULES if algorithm in vars(m).values())
        assert getattr(_reference, algorithm.reference) is getattr(module, algorithm.reference)


def test_table_matches_the_kernels():
    assert {a: ALGORITHMS[a].c_id for a in ALGORITHMS} == _kernels.ALGORITHMS


@pytest.mark.parametrize("name", list(CLASSES))
def test_public_class_has_the_rows_defaults(name):
    algorithm, spec = CLASSES[name]
    cls = getattr(adamc, name)
    assert name in adamc.__all__ and cls.__module__ == "adamc.optim"
    assert cls._algorithm == algorithm.name
    group = cls(np.zeros(3)).param_groups[0]
    for key, default in algorithm.hyper:
        want = spec.fixed.get(key, spec.defaults.get(key, default))
        assert group[key] == want, key
    params = inspect.signature(cls).parameters
    assert not set(spec.fixed) & set(params)
    assert cls.__doc__ and "{params}" not in cls.__doc__
    if spec.base:
        assert issubclass(cls, getattr(adamc, spec.base))


@pytest.mark.parametrize("name", STATELESS)
def test_stateless_step_and_twins_have_the_rows_defaults(name):
    algorithm = ALGORITHMS[name]
    fn = getattr(adamc, algorithm.step_name)
    assert algorithm.step_name in adamc.__all__ and fn.__module__ == "adamc.functional"
    assert fn.__doc__.startswith("Apply one ")
    sig = inspect.signature(fn).parameters
    ref = inspect.signature(getattr(_reference, algorithm.reference)).parameters
    emu = inspect.signature(getattr(emulate, algorithm.name)).parameters
    for key, default, _ in algorithms.step_arguments(algorithm):
        assert sig[key].default == default, key
        assert ref[key].default == default, f"_reference.{name}: {key}"
    for key, default in algorithm.hyper:
        assert emu[key].default == default, f"emulate.{name}: {key}"
    for state in algorithm.states:
        assert state.name in sig


@pytest.mark.parametrize("method", list(METHODS))
def test_scipy_method_is_public(method):
    algorithm, m = METHODS[method]
    fn = getattr(adamc, f"minimize_{method}")
    assert f"minimize_{method}" in adamc.__all__ and m.title in fn.__doc__
    res = adamc.minimize(lambda x: (float(x @ x), 2 * x), np.array([1.0, -2.0]),
                         method=method, jac=True, options={"maxiter": 3})
    assert res.nit == 3 and np.all(np.isfinite(res.x))


def test_hyperparameters_of_every_row_are_known():
    for algorithm in ALGORITHMS.values():
        for key, _ in algorithm.hyper:
            assert key in HYPERPARAMETERS
        assert set(algorithm.keyword_only) <= {k for k, _ in algorithm.hyper}


# ----------------------------------------------------------------------------------
# 2. Class and stateless step: the same bits

def _step_kwargs(algorithm, opt):
    kw = dict(opt)
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    if "etas" in kw:
        kw["etaminus"], kw["etaplus"] = kw.pop("etas")
    if "step_sizes" in kw:
        kw["step_size_min"], kw["step_size_max"] = kw.pop("step_sizes")
    return kw


@pytest.mark.parametrize("case", PLAIN_CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_class_and_stateless_step_agree_bitwise(dtype, case):
    name, opt = case
    algorithm = ALGORITHMS[name]
    cls = getattr(adamc, algorithm.classes[0].name)
    rng = np.random.default_rng(3)
    n = 37
    p = rng.standard_normal(n).astype(dtype)
    q = p.copy()
    o = cls(p, lr=0.01, **opt)
    states = {s.name: (np.zeros_like(q) if s.requires is None or opt.get(s.requires) else None)
              for s in algorithm.states}
    fn = getattr(adamc, algorithm.step_name)
    positional = [s.name for s in algorithm.states if s.positional]
    aux = 1.0
    for t in range(1, 16):
        g = rng.standard_normal(n).astype(dtype)
        o.step(g)
        kw = _step_kwargs(algorithm, opt)
        kw.update({k: v for k, v in states.items() if k not in positional})
        if algorithm.aux == "mu_product":
            kw["mu_product"] = aux
        out = fn(q, g, *[states[k] for k in positional], step=t, lr=0.01, **kw)
        if algorithm.aux == "mu_product":
            aux = out
        else:
            assert out is None
        np.testing.assert_array_equal(bits(p), bits(q), err_msg=f"step {t}")
    for key, arr in zip(cls._state_keys, o._state_arrays[0]):
        if arr is not None:
            np.testing.assert_array_equal(bits(arr), bits(states[key]))


# ----------------------------------------------------------------------------------
# 3. Lion in depth

LION_OPTIONS = DB["lion"].step_options


def grad_at(rng, n, dtype):
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 2)
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype)


@pytest.mark.parametrize("opt", LION_OPTIONS, ids=lambda o: case_id(("lion", o)))
@pytest.mark.parametrize("n", marked_sizes(SIZES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_lion_bit_exact_operation_order(one_level, dtype, n, opt):
    rng = np.random.default_rng(21)
    p = rng.standard_normal(n).astype(dtype)
    m = np.zeros_like(p)
    ep, es = p.copy(), {"exp_avg": m.copy()}
    kw = _step_kwargs(ALGORITHMS["lion"], opt)
    with np.errstate(all="ignore"):
        for t in range(1, 4 if n > 2**16 else 21):
            g = grad_at(rng, n, dtype)
            adamc.lion_step(p, g, m, step=t, lr=0.01, **kw)
            ep, es, _ = emulate.lion(ep, g, es, t, 0.0, lr=0.01, **opt)
            np.testing.assert_array_equal(bits(p), bits(ep), err_msg=f"param at step {t}")
            np.testing.assert_array_equal(bits(m), bits(es["exp_avg"]), err_msg=f"m, step {t}")


@pytest.mark.parametrize("opt", LION_OPTIONS, ids=lambda o: case_id(("lion", o)))
@pytest.mark.parametrize("n", SMALL_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_lion_matches_reference_every_step(dtype, n, opt):
    """Each step from the kernel's previous state: the parameter moves by exactly lr
    per element (up to the rounding of p and of the decay), in the direction of the
    reference's sign wherever the reference's c is not within rounding of zero."""
    rng = np.random.default_rng(22)
    lr = 0.01
    u = float(np.finfo(dtype).eps)
    p = rng.standard_normal(n).astype(dtype)
    m = np.zeros_like(p)
    kw = _step_kwargs(ALGORITHMS["lion"], opt)
    b1, b2 = opt.get("betas", (0.9, 0.99))
    wd = opt.get("weight_decay", 0.0)
    for t in range(1, 41):
        g = grad_at(rng, n, dtype)
        p0, m0 = p.astype(np.float64), m.astype(np.float64)
        ref = _reference.lion(p0, g, m0, step=t, lr=lr, **kw)
        adamc.lion_step(p, g, m, step=t, lr=lr, **kw)
        gg = -g.astype(np.float64) if opt.get("maximize") else g.astype(np.float64)
        c_scale = b1 * np.abs(m0) + (1 - b1) * np.abs(gg)
        c_ref = b1 * m0 + (1 - b1) * gg
        sure = np.abs(c_ref) > 4 * u * c_scale
        tol_p = 4 * u * (np.abs(p0) + lr) + 2 * u * lr * wd * np.abs(p0)
        err = np.abs(p.astype(np.float64) - ref["param"])
        assert np.all(err[sure] <= tol_p[sure]), f"param at step {t}"
        # where the sign is uncertain, the step is 0 or +-lr either way
        assert np.all(err[~sure] <= 2 * lr + tol_p[~sure])
        tol_m = 4 * u * (b2 * np.abs(m0) + (1 - b2) * np.abs(gg)) + np.finfo(dtype).tiny
        assert np.all(np.abs(m.astype(np.float64) - ref["exp_avg"]) <= tol_m), f"m at step {t}"


@pytest.mark.parametrize("n", marked_sizes([17, 1023, 200_003]))
def test_lion_bit_identical_across_levels_and_threads(n):
    def run(dtype):
        rng = np.random.default_rng(23)
        p = rng.standard_normal(n).astype(dtype)
        opt = adamc.Lion(p, lr=1e-3, weight_decay=0.1, max_grad_norm=1.0)
        for _ in range(5 if n > 2**16 else 20):
            opt.step(grad_at(rng, n, dtype))
        return [p, opt._state_arrays[0][0]]
    assert_same_bits_everywhere(run)


def test_lion_sign_of_zero_is_zero_and_nan_propagates():
    p = np.ones(3)
    m = np.zeros(3)
    adamc.lion_step(p, np.array([0.0, -0.0, 1.0]), m, step=1, lr=0.5)
    np.testing.assert_array_equal(p, [1.0, 1.0, 0.5])
    adamc.lion_step(p, np.array([np.nan, 0.0, 0.0]), m, step=2, lr=0.5)
    assert np.isnan(p[0]) and np.isnan(m[0])


def test_lion_weight_decay_is_decoupled():
    p = np.array([2.0])
    adamc.lion_step(p, np.array([0.0]), np.zeros(1), step=1, lr=0.1, weight_decay=0.5)
    assert p[0] == 2.0 * (1 - 0.1 * 0.5)  # only the decay: sign(0) = 0


def test_lion_bad_input_rejected_without_mutation():
    p, g, m = np.ones(4), np.ones(4), np.zeros(4)
    for kw, exc, msg in [(dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
                         (dict(weight_decay=-1.0), ValueError, "weight_decay must be"),
                         (dict(lr=lambda t: 0.1), TypeError, "must be a number"),
                         (dict(maximize=1), TypeError, "maximize must be a bool"),
                         (dict(step=0), ValueError, "step must be >= 1")]:
        kw = {"step": 1, **kw}
        with pytest.raises(exc, match=msg):
            adamc.lion_step(p, g, m, **kw)
        assert np.all(p == 1) and np.all(m == 0)
    with pytest.raises(ValueError, match="shares memory with exp_avg"):
        adamc.lion_step(p, m, m, step=1)
    strided = np.ones(8)[::2]
    with pytest.raises(ValueError, match="keep using that array"):
        adamc.lion_step(p, g, strided, step=1)


def test_lion_minimizes_a_quadratic():
    res = adamc.minimize(lambda x: (float((x - 3) @ (x - 3)), 2 * (x - 3)), np.zeros(4),
                         method="lion", jac=True,
                         options={"lr": adamc.schedules.exponential_decay(0.1, 0.99),
                                  "maxiter": 2000})
    np.testing.assert_allclose(res.x, 3.0, atol=1e-3)


# ---- oracles (skipped when absent) -------------------------------------------------

def _trajectory_adamc(p0, grads, lr, betas, wd):
    p = p0.copy()
    opt = adamc.Lion(p, lr=lr, betas=betas, weight_decay=wd)
    for g in grads:
        opt.step(g)
    return p


@pytest.mark.parametrize("wd", [o.get("weight_decay", 0.0) for o in DB["lion"].oracle_options])
def test_lion_matches_lion_pytorch(wd):
    torch = pytest.importorskip("torch")
    lion_pytorch = pytest.importorskip("lion_pytorch")
    rng = np.random.default_rng(24)
    p0 = rng.standard_normal(1000)
    grads = [rng.standard_normal(1000) for _ in range(50)]
    w = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = lion_pytorch.Lion([w], lr=1e-3, betas=(0.9, 0.99), weight_decay=wd)
    for g in grads:
        w.grad = torch.from_numpy(g.copy())
        opt.step()
    ours = _trajectory_adamc(p0, grads, 1e-3, (0.9, 0.99), wd)
    np.testing.assert_allclose(ours, w.detach().numpy(), rtol=DB["lion"].oracle_tol[np.float64],
                               atol=1e-15)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_optax(wd):
    """Local only: optax needs jax, which the test extras leave out (CI never runs
    this; lion-pytorch above is the oracle CI runs)."""
    optax = pytest.importorskip("optax", reason="local only: optax (and jax) are not in "
                                "the test extras, CI never runs this oracle")
    jax = pytest.importorskip("jax", reason="local only: jax is not in the test extras")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(25)
    p0 = rng.standard_normal(1000)
    grads = [rng.standard_normal(1000) for _ in range(50)]
    tx = optax.lion(1e-3, b1=0.9, b2=0.99, weight_decay=wd)
    params = jax.numpy.asarray(p0)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(jax.numpy.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
    ours = _trajectory_adamc(p0, grads, 1e-3, (0.9, 0.99), wd)
    np.testing.assert_allclose(ours, np.asarray(params), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------
# 4. Adagrad, Adadelta, Rprop (torch.optim's), added through the table: bit-exact against
# the emulation of their operation order at every size, dtype, SIMD level and thread
# count (tests/test_functional.py compares them with the reference at every step and
# tests/test_torch_parity.py with torch)

CLASSIC_CASES = [(a, o) for a in ("adagrad", "adadelta", "rprop") for o in OPTIONS[a]]


def sign_changing_grad(rng, n, dtype):
    """Gradients of random sign per step, with a per-element bias: some elements keep
    their sign (Rprop's step sizes grow), others change it (they shrink), a few are 0."""
    bias = np.linspace(-2, 2, n) if n else np.zeros(0)
    g = (rng.standard_normal(n) + bias) * 10.0 ** rng.uniform(-3, 2)
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype)


@pytest.mark.parametrize("case", CLASSIC_CASES, ids=case_id)
@pytest.mark.parametrize("n", marked_sizes(SIZES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_classic_bit_exact_operation_order(one_level, dtype, n, case):
    # (one level on one thread, as every emulation check: identity across levels and
    # threads is tests/test_conformance.py's)
    name, opt = case
    algorithm = ALGORITHMS[name]
    fn = getattr(adamc, algorithm.step_name)
    rng = np.random.default_rng(31)
    p = rng.standard_normal(n).astype(dtype)
    states = {s.name: np.zeros_like(p) for s in algorithm.states}
    ep, es = p.copy(), {k: v.copy() for k, v in states.items()}
    kw = _step_kwargs(algorithm, opt)
    with np.errstate(all="ignore"):
        for t in range(1, 4 if n > 2**16 else 21):
            g = sign_changing_grad(rng, n, dtype)
            fn(p, g, *states.values(), step=t, lr=0.01, **kw)
            ep, es, _ = getattr(emulate, name)(ep, g, es, t, 0.0, lr=0.01, **opt)
            np.testing.assert_array_equal(bits(p), bits(ep), err_msg=f"param at step {t}")
            for k, v in es.items():
                np.testing.assert_array_equal(bits(states[k]), bits(v), err_msg=f"{k}, step {t}")


@pytest.mark.parametrize("case", CLASSIC_CASES, ids=case_id)
@pytest.mark.parametrize("n", [17, 1023, 200_003])
def test_classic_bit_identical_across_levels_and_threads(n, case):
    """Through the class (several groups' worth of options, norm clipping on)."""
    name, opt = case
    cls = getattr(adamc, ALGORITHMS[name].classes[0].name)

    def run(dtype):
        rng = np.random.default_rng(32)
        p = rng.standard_normal(n).astype(dtype)
        o = cls(p, lr=1e-2, max_grad_norm=10.0, **opt)
        for _ in range(5 if n > 2**16 else 20):
            o.step(sign_changing_grad(rng, n, dtype))
        return [p] + [a for a in o._state_arrays[0] if a is not None]
    assert_same_bits_everywhere(run)


def test_adagrad_initial_accumulator_value_and_lr_decay():
    p, acc = np.array([1.0]), np.zeros(1)
    adamc.adagrad_step(p, np.array([2.0]), acc, step=1, lr=0.1, initial_accumulator_value=5.0)
    assert acc[0] == 9.0 and p[0] == 1.0 - 0.1 * 2.0 / (3.0 + 1e-10)
    before = p[0]
    adamc.adagrad_step(p, np.array([4.0]), acc, step=2, lr=0.1, lr_decay=1.0,
                       initial_accumulator_value=5.0)  # added once, at step 1
    assert acc[0] == 25.0 and p[0] == pytest.approx(before - 0.05 * 4.0 / 5.0, rel=1e-15)


def test_adagrad_state_dict_has_torchs_sum():
    p = np.zeros(2)
    opt = adamc.Adagrad(p, initial_accumulator_value=0.5)
    opt.step(np.array([1.0, 0.0]))
    sd = opt.state_dict()["state"][0]
    assert set(sd) == {"step", "sum"}
    np.testing.assert_array_equal(sd["sum"], [1.5, 0.5])


def test_rprop_first_step_and_sign_changes():
    p, prev, size = np.zeros(3), np.zeros(3), np.zeros(3)
    kw = dict(lr=0.1, etaminus=0.5, etaplus=2.0, step_size_min=0.01, step_size_max=0.3)
    adamc.rprop_step(p, np.array([1.0, -1.0, 0.0]), prev, size, step=1, **kw)
    np.testing.assert_array_equal(size, [0.1, 0.1, 0.1])  # lr, clamped
    np.testing.assert_array_equal(p, [-0.1, 0.1, 0.0])
    np.testing.assert_array_equal(prev, [1.0, -1.0, 0.0])
    adamc.rprop_step(p, np.array([3.0, 1.0, 1.0]), prev, size, step=2, **kw)
    np.testing.assert_array_equal(size, [0.2, 0.05, 0.1])  # same sign, change, no sign
    np.testing.assert_array_equal(prev, [3.0, 0.0, 1.0])  # the changed one zeroed
    np.testing.assert_allclose(p, [-0.3, 0.1, -0.1], rtol=1e-15)  # and not moved
    adamc.rprop_step(p, np.array([1.0, 1.0, 1.0]), prev, size, step=3, **kw)
    np.testing.assert_array_equal(size, [0.3, 0.05, 0.2])  # clamped at step_size_max
    adamc.rprop_step(p, np.array([np.nan, 1.0, 1.0]), prev, size, step=4, **kw)
    assert np.isnan(p[0]) and np.isnan(size[0]) and np.isnan(prev[0])


def test_rprop_step_size_min_clamps():
    p, prev, size = np.zeros(1), np.zeros(1), np.zeros(1)
    for t in range(1, 30):
        adamc.rprop_step(p, np.array([(-1.0) ** t]), prev, size, step=t, lr=0.1,
                         step_size_min=1e-3)
    assert size[0] == 1e-3


@pytest.mark.parametrize("cls,kw,msg", [
    ("Adagrad", dict(lr_decay=-0.1), "lr_decay must be a finite number >= 0"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value must be"),
    ("Adagrad", dict(eps=-1.0), "eps must be a finite number >= 0"),
    ("Adadelta", dict(rho=1.1), r"rho must be in \[0, 1\]"),
    ("Adadelta", dict(rho=-0.1), "rho must be a finite number >= 0"),
    ("Rprop", dict(etas=(1.0, 1.2)), r"etas\[0\] must be in \(0, 1\)"),
    ("Rprop", dict(etas=(0.0, 1.2)), r"etas\[0\] must be in \(0, 1\)"),
    ("Rprop", dict(etas=(0.5, 1.0)), r"etas\[1\] must be a finite number > 1"),
    ("Rprop", dict(etas=0.5), r"etas must be a pair \(etaminus, etaplus\)"),
    ("Rprop", dict(step_sizes=(0.0, 1.0)), r"step_sizes\[0\] must be > 0"),
    ("Rprop", dict(step_sizes=(1.0, float("inf"))), r"step_sizes\[1\] must be a finite"),
    ("Rprop", dict(step_sizes=(2.0, 1.0)), "step_size_min <= step_size_max"),
])
def test_classic_bad_hyperparameters(cls, kw, msg):
    with pytest.raises(ValueError, match=msg):
        getattr(adamc, cls)(np.zeros(2), **kw)


def test_rprop_group_pairs_are_kept_as_tuples():
    opt = adamc.Rprop(np.zeros(2))
    opt.param_groups[0]["etas"] = [0.4, 1.3]
    opt.step(np.ones(2))
    assert opt.param_groups[0]["etas"] == (0.4, 1.3)


# ---- the engine's interface for externally reduced norms (adamc.distributed) -------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_step_reduced_is_step_with_the_given_norm(dtype):
    """_step_reduced(grads, sumsq) with the engine's own sum of squares gives step()'s
    bits; a larger sumsq clips harder; clip_value still clamps in the kernel."""
    rng = np.random.default_rng(26)
    p0 = [rng.standard_normal(n).astype(dtype) for n in (5, 300)]
    g = [(10 * rng.standard_normal(x.size)).astype(dtype) for x in p0]
    clip = 3.0
    sumsq = sum(float(np.sum(np.clip(x.astype(np.float64), -clip, clip) ** 2)) for x in g)
    a, b, c = ([x.copy() for x in p0] for _ in range(3))
    oa = adamc.Adam(a, lr=0.1, max_grad_norm=1.0, clip_value=clip)
    ob = adamc.Adam(b, lr=0.1, max_grad_norm=1.0, clip_value=clip)
    oc = adamc.Adam(c, lr=0.1, max_grad_norm=1.0, clip_value=clip)
    oa.step(g)
    own = oa._state_arrays[0][0].copy()
    ob._step_reduced(g, sumsq)
    oc._step_reduced(g, 100 * sumsq)
    m_b, m_c = ob._state_arrays[0][0], oc._state_arrays[0][0]
    np.testing.assert_allclose(m_b, own, rtol=1e-6 if dtype == np.float32 else 1e-13)
    ratio = (sumsq ** 0.5 + 1e-6) / ((100 * sumsq) ** 0.5 + 1e-6)  # of the two scales
    np.testing.assert_allclose(m_c, own * ratio, rtol=1e-5 if dtype == np.float32 else 1e-12)
    with pytest.raises(ValueError, match="sumsq must be"):
        ob._step_reduced(g, float("nan"))
    assert ob.step_count == 1
