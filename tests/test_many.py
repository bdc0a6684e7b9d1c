"""adamc.minimize_many: many independent problems, each the same bits as adamc.minimize
on it alone; per-problem stopping and compaction; bad input; MPI."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import optimize as so

import adamc
from adamc.algorithms import METHODS as ALGORITHM_METHODS
from conftest import mpiexec

# every method of the table: a new algorithm is checked here too (minimize_many steps
# rows with the kernels and one scalar state per row; an algorithm that needs more,
# e.g. reductions over the parameters, fails this test)
METHODS = [m for m, (algorithm, _) in ALGORITHM_METHODS.items() if algorithm.engine is None]
REFUSED = [m for m in ALGORITHM_METHODS if m not in METHODS]
B, N = 12, 3


def data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, N)).astype(dtype), rng.uniform(0.5, 3, (B, N)).astype(dtype),
            rng.normal(size=(B, N)).astype(dtype))


# Row i of fun_many computes exactly what fun_one computes on problem i (elementwise
# NumPy, and a sum over a row of 3 elements in the same order).
def fun_many(x, t, s):
    r = x - t
    return (s * r ** 4 + r * r).sum(axis=1), 4 * s * r ** 3 + 2 * r


def fun_one(x, t, s):
    f, g = fun_many(x[None], t[None], s[None])
    return float(f[0]), g[0]


def f_many(x, t, s):
    return fun_many(x, t, s)[0]


def f_one(x, t, s):
    return fun_one(x, t, s)[0]


def per_problem(opts, i):
    out = {}
    for k, v in opts.items():
        if isinstance(v, np.ndarray):
            v = v[i] if v.ndim == 2 else v[i].item()  # (x_scale: a row per problem)
        elif isinstance(v, tuple):
            v = tuple(b[i].item() if isinstance(b, np.ndarray) else b for b in v)
        out[k] = v
    return out


def assert_same_as_alone(res, x0, t, s, method, opts, jac=True, bounds=None, fone=fun_one):
    """Every problem's result is the bits of adamc.minimize on it alone."""
    for i in range(x0.shape[0]):
        b = bounds[i] if isinstance(bounds, np.ndarray) and bounds.ndim == 3 else bounds
        one = adamc.minimize(fone, x0[i], args=(t[i], s[i]), method=method, jac=jac,
                             bounds=None if b is None else [tuple(p) for p in b],
                             options=per_problem(opts, i))
        assert res.x[i].dtype == one.x.dtype
        np.testing.assert_array_equal(res.x[i], one.x, err_msg=f"problem {i}")
        assert res.fun[i] == one.fun, i
        np.testing.assert_array_equal(res.jac[i], one.jac)
        assert (res.nit[i], res.status[i], res.nfev[i], res.njev[i], res.nbacktrack[i]) == \
            (one.nit, one.status, one.nfev, one.njev, one.nbacktrack), i
        assert res.success[i] == one.success


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_bit_identical_to_minimize_alone(method, dtype):
    t, s, x0 = data(dtype)
    rng = np.random.default_rng(1)
    lr = rng.uniform(0.01, 0.1, B) if method != "sgd" else rng.uniform(1e-3, 1e-2, B)
    opts = {"lr": lr, "gtol": 1e-4, "ftol": 1e-10, "maxiter": np.arange(40, 40 + 15 * B, 15)}
    if method == "sgd":
        opts["momentum"] = 0.9
    bounds = [(-1.0, 1.0), (None, 0.8), (-0.9, None)]
    res = adamc.minimize_many(fun_many, x0, method=method, jac=True, bounds=bounds,
                              options=opts, batch_args=(t, s))
    assert res.x.shape == (B, N) and res.x.dtype == dtype and res.fun.shape == (B,)
    # problems stop at different iterations, for different reasons
    assert len(set(res.nit.tolist())) > 3
    assert_same_as_alone(res, x0, t, s, method, opts, bounds=bounds)


def sqrt_edge_many(x, t, s):
    """Rows of sum(s (sqrt(x) - t)^2): undefined (NaN) where x < 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sqrt(x) - t
        return (s * r * r).sum(axis=1), s * r / np.sqrt(x)


def sqrt_edge_one(x, t, s):
    f, g = sqrt_edge_many(x[None], t[None], s[None])
    return float(f[0]), g[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("jac", [True, "2-point"])
def test_scales_plateaus_and_backtracking_per_problem_are_those_of_minimize(dtype, jac):
    """Per-problem x_scale rows, f_scale, one plateau schedule per problem and
    backtracking at a domain edge (some problems step past it, some never): every
    problem's result is the bits of adamc.minimize on it alone."""
    rng = np.random.default_rng(11)
    t = rng.uniform(0.5, 2.0, (B, N)).astype(dtype)
    s = rng.uniform(0.5, 3.0, (B, N)).astype(dtype)
    x0 = rng.uniform(0.2, 3.0, (B, N)).astype(dtype)
    scale = (x0 * rng.uniform(0.5, 2.0, (B, N))).astype(dtype)
    plateau = adamc.schedules.reduce_on_plateau(1.2, factor=0.5, patience=10, threshold=0,
                                                min_lr=1e-6)
    opts = {"lr": plateau, "x_scale": scale, "f_scale": 3.0, "maxiter": 400}
    if jac == True:  # noqa: E712
        fun, one = sqrt_edge_many, sqrt_edge_one
    else:
        fun, one = (lambda x, t, s: sqrt_edge_many(x, t, s)[0],
                    lambda x, t, s: sqrt_edge_one(x, t, s)[0])
    bounds = [(None, None), (None, 2.5), (0.1, None)]
    res = adamc.minimize_many(fun, x0, jac=jac, bounds=bounds, options=opts,
                              batch_args=(t, s))
    assert (res.nbacktrack > 0).sum() >= 2 and (res.nbacktrack == 0).sum() >= 2
    assert np.isfinite(res.x).all() and set(res.status.tolist()) == {0, 1}
    assert plateau.last_epoch == 0  # (every problem stepped its own copy)
    assert_same_as_alone(res, x0, t, s, "adam", opts, jac=jac, bounds=bounds, fone=one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("jac", [None, "3-point"])
def test_finite_differences_are_bit_identical_inside_bounds(dtype, jac):
    t, s, x0 = data(dtype, seed=2)
    x0[:4, 0] = 1.0  # on the upper bound: the forward step leaves the box
    x0[4:6, 1] = -1.0
    bounds = [(-1.0, 1.0), (-1.0, 1.0), (None, None)]
    opts = {"lr": 0.05, "gtol": 1e-3, "maxiter": 150, "xtol": 1e-7}
    res = adamc.minimize_many(f_many, x0, method="adam", jac=jac, bounds=bounds,
                              options=opts, batch_args=(t, s))
    assert_same_as_alone(res, x0, t, s, "adam", opts, jac=jac, bounds=bounds, fone=f_one)


def test_separate_jac_and_per_problem_bounds():
    t, s, x0 = data(np.float64, seed=3)
    rng = np.random.default_rng(3)
    lo = rng.uniform(-1, -0.2, (B, N))
    box = np.stack([lo, lo + rng.uniform(0.3, 2, (B, N))], axis=-1)
    opts = {"lr": 0.05, "gtol": 1e-5, "maxiter": 300}
    res = adamc.minimize_many(f_many, x0, jac=lambda x, t, s: fun_many(x, t, s)[1],
                              bounds=box, options=opts, batch_args=(t, s))
    assert (res.x >= box[..., 0]).all() and (res.x <= box[..., 1]).all()
    assert_same_as_alone(res, x0, t, s, "adam", opts,
                         jac=lambda x, t, s: fun_one(x, t, s)[1], bounds=box, fone=f_one)
    lb, ub = box[..., 0], box[..., 1]
    res2 = adamc.minimize_many(f_many, x0, jac=lambda x, t, s: fun_many(x, t, s)[1],
                               bounds=so.Bounds(lb, ub), options=opts, batch_args=(t, s))
    np.testing.assert_array_equal(res.x, res2.x)


def test_per_problem_hyperparameters_schedules_and_clipping():
    t, s, x0 = data(np.float64, seed=4)
    rng = np.random.default_rng(4)
    cases = [
        ("adamw", {"lr": 0.05, "weight_decay": rng.uniform(0, 0.1, B),
                   "betas": (rng.uniform(0.8, 0.95, B), 0.99), "eps": rng.uniform(1e-8, 1e-3, B)}),
        ("adam", {"lr": adamc.schedules.cosine_decay(0.1, total_steps=100), "max_grad_norm": 0.5}),
        ("adam", {"lr": rng.uniform(0.01, 0.1, B), "max_grad_norm": rng.uniform(0.1, 2, B),
                  "clip_value": 0.7}),
        ("sgd", {"lr": 0.01, "momentum": rng.uniform(0, 0.9, B), "nesterov": False,
                 "dampening": rng.uniform(0, 0.5, B)}),
        ("rmsprop", {"lr": 0.01, "alpha": rng.uniform(0.9, 0.99, B), "centered": True}),
    ]
    for method, hyper in cases:
        opts = dict(hyper, gtol=rng.uniform(1e-5, 1e-3, B), maxiter=120)
        res = adamc.minimize_many(fun_many, x0, method=method, jac=True, options=opts,
                                  batch_args=(t, s))
        assert_same_as_alone(res, x0, t, s, method, opts)


def test_a_per_problem_array_of_one_value_is_the_scalar():
    t, s, x0 = data(np.float32)
    a = adamc.minimize_many(fun_many, x0, jac=True, batch_args=(t, s),
                            options={"lr": np.full(B, 0.05), "maxiter": 50})
    b = adamc.minimize_many(fun_many, x0, jac=True, batch_args=(t, s),
                            options={"lr": 0.05, "maxiter": 50})
    np.testing.assert_array_equal(a.x, b.x)


def test_stopped_problems_are_no_longer_evaluated_and_rows_stay_in_order():
    t, s, x0 = data(np.float64, seed=5)
    seen = []

    def fun(x, t, s, ids):
        seen.append(ids.copy())
        assert not x.flags.writeable and x.shape == (ids.size, N)
        np.testing.assert_array_equal(t, T[ids])  # the data rows follow the problems
        return fun_many(x, t, s)

    T = t
    ids = np.arange(B)
    res = adamc.minimize_many(fun, x0, jac=True, batch_args=(t, s, ids),
                              options={"lr": np.linspace(0.01, 0.2, B), "gtol": 1e-4,
                                       "maxiter": np.arange(20, 20 + 10 * B, 10)})
    counts = [len(v) for v in seen]
    assert counts[0] == B and counts == sorted(counts, reverse=True) and counts[-1] < B
    assert all((np.diff(v) > 0).all() for v in seen)
    for i in range(B):  # problem i was evaluated exactly nfev times
        assert sum(i in v for v in seen) == res.nfev[i] == res.nit[i] + 1
    assert res.nfev.sum() == sum(counts)


def test_nonfinite_problems_fail_alone_and_leave_the_others_unchanged():
    t, s, x0 = data(np.float64, seed=6)
    opts = {"lr": 0.05, "gtol": 1e-5, "maxiter": 300, "nonfinite": "stop", "x_scale": None}
    clean = adamc.minimize_many(fun_many, x0, jac=True, options=opts, batch_args=(t, s))

    def fun(x, t, s, poison):
        f, g = fun_many(x, t, s)
        f = np.where(poison == 0, np.nan, f)  # problem 2 at x0
        g = g.copy()
        g[(poison > 0) & (np.abs(x[:, 0] - x0[poison, 0]) > 0.05)] = np.inf  # later
        return f, g

    poison = np.full(B, -1)
    poison[2], poison[5], poison[7] = 0, 5, 7
    res = adamc.minimize_many(fun, x0, jac=True, options=opts, batch_args=(t, s, poison))
    assert res.status[2] == 3 and res.nit[2] == 0 and np.isnan(res.fun[2])
    np.testing.assert_array_equal(res.x[2], x0[2])
    for i in (5, 7):
        assert res.status[i] == 3 and res.nit[i] > 0
        assert np.isfinite(res.fun[i]) and np.isfinite(res.jac[i]).all()  # last finite
    ok = np.setdiff1d(np.arange(B), [2, 5, 7])
    np.testing.assert_array_equal(res.x[ok], clean.x[ok])
    np.testing.assert_array_equal(res.nit[ok], clean.nit[ok])
    assert "3 had a non-finite" in res.message


def test_callback_gets_arrays_and_stop_iteration_ends_every_problem():
    t, s, x0 = data(np.float64, seed=7)
    calls = []

    def cb(intermediate_result):
        r = intermediate_result
        assert r.x.shape == (B, N) and r.fun.shape == (B,) and r.running.dtype == bool
        calls.append(r.running.sum())
        if len(calls) == 30:
            raise StopIteration

    res = adamc.minimize_many(fun_many, x0, jac=True, callback=cb, batch_args=(t, s),
                              options={"lr": np.linspace(0.02, 0.3, B), "gtol": 1e-3})
    assert len(calls) == 30
    stopped = res.status == 99
    assert stopped.any() and (res.nit[stopped] == 30).all()
    assert ((res.status == 0) == ~stopped).all() and (res.nit[~stopped] < 30).all()
    assert "stopped by the callback" in res.message
    xs = []
    adamc.minimize_many(fun_many, x0, jac=True, callback=lambda xk: xs.append(xk),
                        batch_args=(t, s), options={"maxiter": 3})
    assert len(xs) == 3 and xs[0].shape == (B, N)


def test_maxfev_per_problem_and_the_message():
    t, s, x0 = data(np.float64, seed=8)
    opts = {"lr": 0.01, "gtol": 0.0, "maxfev": np.arange(5, 5 + B), "maxiter": 1000}
    res = adamc.minimize_many(fun_many, x0, jac=True, options=opts, batch_args=(t, s))
    assert (res.status == 2).all() and (res.nfev == opts["maxfev"]).all()
    assert_same_as_alone(res, x0, t, s, "adam", opts)
    assert res.message == f"0 of {B} problems converged: {B} reached maxfev (status 2)."
    res = adamc.minimize_many(fun_many, x0, jac=True, options={"lr": 0.1, "gtol": 1e-2},
                              batch_args=(t, s))
    assert res.success.all() and res.message.startswith("Optimization terminated")


def test_bad_input_gets_a_clear_error():
    t, s, x0 = data(np.float64)

    def run(fun=fun_many, x=x0, batch=(t, s), **kw):
        return adamc.minimize_many(fun, x, jac=kw.pop("jac", True), batch_args=batch, **kw)

    with pytest.raises(ValueError, match=r"shape \(B, n\)"):
        run(x=x0[0])
    with pytest.raises(ValueError, match=r"x0\[1, 2\]"):
        bad = x0.copy()
        bad[1, 2] = np.nan
        run(x=bad)
    with pytest.raises(ValueError, match=r"batch_args\[1\].*length B = 12"):
        run(batch=(t, s[:5]))
    with pytest.raises(ValueError, match=r"values of shape \(12, 1, 1\); expected \(12,\)"):
        run(fun=lambda x, t, s: (fun_many(x, t, s)[0][:, None, None], fun_many(x, t, s)[1]))
    with pytest.raises(ValueError, match=r"gradient of shape \(12,\); expected \(12, 3\)"):
        run(fun=lambda x, t, s: (fun_many(x, t, s)[0], np.zeros(12)))
    with pytest.raises(ValueError, match="pair"):
        run(fun=lambda x, t, s: 1.0)
    with pytest.raises(ValueError, match=r"options\['lr'\]\[4\]"):
        lr = np.full(B, 0.1)
        lr[4] = -1
        run(options={"lr": lr})
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(12,\)"):
        run(options={"lr": np.ones(3)})
    with pytest.raises(ValueError, match=r"options\['betas'\]\[1\]\[0\]"):
        run(options={"betas": (0.9, np.full(B, 1.5))})
    with pytest.raises(ValueError, match="problem 3: Nesterov"):
        m = np.full(B, 0.9)
        m[3] = 0
        run(method="sgd", options={"momentum": m, "nesterov": True})
    with pytest.raises(ValueError, match="not supported by minimize_many"):
        run(options={"batches": [(t,)]})
    with pytest.raises(ValueError, match="problem 0, parameter 1"):
        run(bounds=so.Bounds(np.zeros((B, N)), np.where(np.arange(N) == 1, -1.0, 1.0)))
    with pytest.raises(ValueError, match="unknown method"):
        run(method="lbfgs")
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: foo"):
        run(options={"foo": 1, "maxiter": 1})
    with pytest.raises(ValueError, match="jac must be"):
        run(jac="5-point")


def test_a_per_problem_count_of_2_63_or_more_means_no_limit():
    """maxiter and maxfev per problem at or past int64's maximum are no limit, as a
    scalar of the same value is (they once wrapped to negative counts: status 1 at
    iteration 0, or status 2 after one iteration)."""
    T = np.random.default_rng(0).normal(size=(3, 2))

    def fq(x, t):
        return ((x - t) ** 2).sum(1), 2 * (x - t)

    def run(**opts):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (not even a warning of NumPy's casts)
            return adamc.minimize_many(fq, np.zeros((3, 2)), jac=True, batch_args=(T,),
                                       options={"lr": 0.1, "gtol": 1e-6, **opts})

    alone = run()
    assert (alone.status == 0).all()
    for big in (np.iinfo(np.int64).max, 2**63, 1e19, 2.0**63):
        for key in ("maxiter", "maxfev"):
            arr = np.array([big, 10**6, 10**6], dtype=object if big == 2**63 else None)
            r = run(**{key: arr})
            np.testing.assert_array_equal(r.status, alone.status, err_msg=f"{key}={big!r}")
            np.testing.assert_array_equal(r.nit, alone.nit)
            np.testing.assert_array_equal(r.x, alone.x)
            s = run(**{key: big})  # the scalar means the same
            np.testing.assert_array_equal(s.nit, alone.nit)
    r = run(maxiter=np.array([np.iinfo(np.int64).max, 100, 100]))
    assert r.status.tolist() == [0, 1, 1] and r.nit[1:].tolist() == [100, 100]
    assert r.nit[0] == alone.nit[0] > 100
    assert run(maxiter=2e4).nit.tolist() == alone.nit.tolist()  # (as SciPy accepts)


# Every option minimize_many takes per problem, the method that has it and a good
# value; "betas[k]" is member k of the pair.
PER_PROBLEM_OPTIONS = {
    "lr": ("adam", 0.1), "eps": ("adam", 1e-8), "weight_decay": ("adam", 0.01),
    "momentum_decay": ("nadam", 4e-3), "momentum": ("sgd", 0.5), "dampening": ("sgd", 0.1),
    "alpha": ("rmsprop", 0.9), "max_grad_norm": ("adam", 10.0), "clip_value": ("adam", 10.0),
    "betas[0]": ("adam", 0.9), "betas[1]": ("adam", 0.99), "gtol": ("adam", 1e-6),
    "ftol": ("adam", 1e-12), "xtol": ("adam", 1e-12), "maxiter": ("adam", 40),
    "maxfev": ("adam", 50),
}
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 100), st.integers(2**62, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1.5),
    st.complex_numbers(max_magnitude=10), st.text(max_size=2),
    st.sampled_from([0, 1, 0.5, -0.0, 1e-300, 0.999, 1.0, 20.0, 1e19, 2.0**63, 2**63 - 1]))


def _set_option(opts, key, value):
    if key.startswith("betas"):
        pair = [0.9, 0.99]
        pair[int(key[-2])] = value
        opts["betas"] = tuple(pair)
    else:
        opts[key] = value
    return opts


def _outcome(method, key, value):
    T = np.random.default_rng(1).normal(size=(3, 2))

    def fq(x, t):
        return ((x - t) ** 2).sum(1), 2 * (x - t)

    opts = _set_option({"lr": 0.1, "maxiter": 40, "gtol": 1e-6}, key, value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return adamc.minimize_many(fq, np.zeros((3, 2)), method=method, jac=True,
                                       batch_args=(T,), options=opts)
    except Exception as exc:  # (compared below: the same type and message)
        return exc


@settings(max_examples=int(__import__("os").environ.get("ADAMC_FUZZ_EXAMPLES", "150")),
          derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(PER_PROBLEM_OPTIONS)), value=ODD_VALUES)
def test_every_per_problem_value_gets_the_check_of_its_scalar(key, value):
    """A per-problem array is refused exactly when the scalar it replaces is, element
    by element, with the scalar's message naming the element; when accepted, each
    problem gets the result of the scalar run (complex and bool arrays were once cast
    to float, counts past 2**63 wrapped around)."""
    method, good = PER_PROBLEM_OPTIONS[key]
    scalar = _outcome(method, key, value)
    name = f"options['betas'][{key[-2]}]" if key.startswith("betas") else f"options['{key}']"
    variants = [(np.array([good, value, good], dtype=object), 1)]
    native = np.asarray(value)
    if native.dtype != object:
        variants.append((np.full(3, value, dtype=native.dtype), 0))
    for arr, i in variants:
        got = _outcome(method, key, arr)
        if isinstance(scalar, Exception):
            assert type(got) is type(scalar), (arr, got, scalar)
            assert str(got) == str(scalar).replace(key, f"{name}[{i}]", 1), (got, scalar)
        else:
            assert not isinstance(got, Exception), (arr, got)
            for field in ("x", "fun", "nit", "nfev", "status"):
                np.testing.assert_array_equal(got[field][i], scalar[field][i], err_msg=field)


def test_batch_rows_are_read_only_to_the_objective():
    """fun gets the rows of batch_args as read-only arrays, before and after problems
    stop (a write reached the caller's array only while every problem ran)."""
    T = np.random.default_rng(2).normal(size=(4, 2))
    seen = []

    def fun(x, t):
        seen.append((len(x), t.flags.writeable))
        with pytest.raises(ValueError, match="read-only"):
            t[...] = 0
        return ((x - t) ** 2).sum(1), 2 * (x - t)

    kept = T.copy()
    r = adamc.minimize_many(fun, np.zeros((4, 2)), jac=True, batch_args=(T,),
                            options={"lr": 0.1, "gtol": 1e-6,
                                     "maxiter": np.array([5, 50, 10**4, 10**4])})
    assert {m for m, _ in seen} >= {4, 3, 2} and not any(w for _, w in seen)
    np.testing.assert_array_equal(T, kept)
    assert T.flags.writeable  # (the caller's array itself is left as it was)
    assert r.status.tolist() == [1, 1, 0, 0]
    for jac in ("2-point", "3-point"):  # finite differences: the same rows
        seen.clear()
        adamc.minimize_many(lambda x, t: fun(x, t)[0], np.zeros((4, 2)), jac=jac,
                            batch_args=(T,), bounds=[(-1, 0.5)] * 2,
                            options={"lr": 0.1, "maxiter": 3})
        assert seen and not any(w for _, w in seen)


def test_empty_and_zero_width_problems():
    res = adamc.minimize_many(fun_many, np.zeros((0, 3)), jac=True,
                              batch_args=(np.zeros((0, 3)), np.zeros((0, 3))))
    assert res.x.shape == (0, 3) and res.status.shape == (0,)
    res = adamc.minimize_many(lambda x: np.zeros(len(x)), np.zeros((4, 0)))
    assert (res.status == 0).all() and (res.nit == 0).all()


def test_scipy_style_equivalent_of_many_single_fits_on_gaussian_peaks():
    """A real use: Gaussian peaks fitted per row reach least_squares' optimum."""
    rng = np.random.default_rng(9)
    tt = np.linspace(-3, 3, 39)
    true = np.column_stack([rng.uniform(1, 3, 40), rng.uniform(-1, 1, 40),
                            np.log(rng.uniform(0.5, 1.5, 40)), rng.uniform(-0.3, 0.3, 40)])

    def model(p):
        a, mu, ls, c = (p[:, k:k + 1] for k in range(4))
        return a * np.exp(-0.5 * ((tt - mu) * np.exp(-ls)) ** 2) + c

    y = model(true) + 0.02 * rng.normal(size=(40, tt.size))

    def fun(p, y):
        a, mu, ls, c = (p[:, k:k + 1] for k in range(4))
        z = (tt - mu) * np.exp(-ls)
        e = np.exp(-0.5 * z * z)
        r = a * e + c - y
        g = np.stack([(r * e).sum(1), (r * a * e * z * np.exp(-ls)).sum(1),
                      (r * a * e * z * z).sum(1), r.sum(1)], axis=1)
        return 0.5 * (r * r).sum(1), g

    res = adamc.minimize_many(fun, np.tile([2.0, 0, 0, 0], (40, 1)), jac=True,
                              batch_args=(y,), options={"lr": 0.05, "gtol": 1e-6})
    assert res.success.all()
    for i in range(40):
        ls = so.least_squares(lambda p: model(p[None])[0] - y[i], [2.0, 0, 0, 0],
                              method="lm")
        assert res.fun[i] <= 0.5 * (ls.fun @ ls.fun) * (1 + 1e-6)


# ----------------------------------------------------------------------------------
# MPI

WORKER = Path(__file__).parent / "mpi_many_worker.py"
MPIEXEC = mpiexec()


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                    reason="needs mpi4py and mpiexec: pip install 'adamc[mpi]'")
@pytest.mark.parametrize("ranks", [2, 3])
def test_problems_split_across_mpi_ranks(ranks, tmp_path):
    out = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(WORKER)],
                         capture_output=True, text=True, timeout=150,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("many OK") == ranks, out.stdout + out.stderr


def test_one_kernel_call_and_row_by_row_agree_on_every_level(level_threads):
    """The shared-coefficients path (one call over the block, split across threads)
    and the row-by-row path (a huge max_grad_norm never scales) give the same bits."""
    rng = np.random.default_rng(10)
    x0 = rng.normal(size=(300, 7)).astype(np.float32)
    t = rng.normal(size=(300, 7)).astype(np.float32)
    s = np.ones_like(t)
    opts = {"lr": 0.05, "maxiter": 30, "gtol": 0.0}
    a = adamc.minimize_many(fun_many, x0, jac=True, batch_args=(t, s), options=opts)
    b = adamc.minimize_many(fun_many, x0, jac=True, batch_args=(t, s),
                            options=dict(opts, max_grad_norm=1e30))
    np.testing.assert_array_equal(a.x, b.x)


def test_disp_prints_the_running_problems(capsys):
    t, s, x0 = data(np.float64)
    adamc.minimize_many(fun_many, x0, jac=True, batch_args=(t, s),
                        options={"lr": 0.1, "gtol": 1e-3, "disp": True, "disp_every": 10})
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["iter", "running", "median", "f"]
    rows = [line.split() for line in out[1:-1]]
    assert rows[0][0] == "10" and int(rows[0][1]) <= B
    assert [int(r[1]) for r in rows] == sorted((int(r[1]) for r in rows), reverse=True)
    assert out[-1].startswith("Optimization terminated successfully")


@pytest.mark.parametrize("method", REFUSED)
def test_methods_with_state_over_all_parameters_are_refused(method):
    x0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match=f"method '{method}' is not supported by minimize_many"):
        adamc.minimize_many(lambda x: (np.sum(x * x, 1), 2 * x), x0, jac=True, method=method)


def test_ema_is_refused():
    x0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match="options\\['ema'\\] is not supported by minimize_many"):
        adamc.minimize_many(lambda x: (np.sum(x * x, 1), 2 * x), x0, jac=True,
                            options={"ema": 0.9})
