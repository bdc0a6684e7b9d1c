"""adamc as a scipy.optimize.minimize method, adamc.minimize and mini-batches."""
import sys
import warnings

import numpy as np
import pytest
from scipy import optimize as so

import adamc

X0 = [1.3, 0.7, 0.8, 1.9, 1.2]
ROSEN_OPTIONS = dict(lr=1e-2, maxiter=50000)


def rosen_fg(x):
    return so.rosen(x), so.rosen_der(x)


def quad(x, c=2.0):
    return float(np.sum((x - c) ** 2)), 2 * (x - c)


# ----------------------------------------------------------------------------------
# SciPy's contract for custom methods

@pytest.mark.parametrize("method,opts", [
    (adamc.minimize_adam, ROSEN_OPTIONS),
    (adamc.minimize_adamw, dict(ROSEN_OPTIONS, weight_decay=0.0)),
    # AMSGrad keeps the largest second moment seen, so it needs a larger lr here
    (adamc.minimize_amsgrad, dict(ROSEN_OPTIONS, lr=0.1)),
], ids=["adam", "adamw", "amsgrad"])
def test_rosenbrock_through_scipy(method, opts):
    res = so.minimize(so.rosen, X0, method=method, jac=so.rosen_der, options=opts)
    assert res.success and res.status == 0, res.message
    np.testing.assert_allclose(res.x, np.ones(5), atol=1e-4)
    assert res.fun == so.rosen(res.x)
    np.testing.assert_array_equal(res.jac, so.rosen_der(res.x))
    assert np.max(np.abs(res.jac)) <= 1e-5


@pytest.mark.parametrize("name,lr", [("adam", 1e-2), ("amsgrad", 0.1), ("ADAM", 1e-2)])
def test_rosenbrock_through_adamc_minimize(name, lr):
    res = adamc.minimize(rosen_fg, X0, method=name, jac=True, options=dict(ROSEN_OPTIONS, lr=lr))
    assert res.success
    np.testing.assert_allclose(res.x, np.ones(5), atol=1e-4)


def test_jac_true_through_scipy_costs_one_call_per_iteration():
    calls = []

    def fg(x):
        calls.append(1)
        return quad(x)

    res = so.minimize(fg, np.zeros(3), method=adamc.minimize_adam, jac=True,
                      options=dict(lr=0.1, maxiter=40))
    assert res.nit == 40 and res.status == 1 and not res.success
    assert len(calls) == res.nfev == res.njev == 41  # x0 plus one per iteration


def test_args_are_passed_through():
    seen = []

    def f(x, a, b):
        seen.append((a, b))
        return quad(x, a)

    res = so.minimize(f, np.zeros(2), args=(3.0, "tag"), method=adamc.minimize_adam,
                      jac=True, options=dict(lr=0.1, maxiter=2000))
    np.testing.assert_allclose(res.x, 3.0, atol=1e-4)
    assert set(seen) == {(3.0, "tag")}
    res = adamc.minimize(lambda x, a: quad(x, a), [0.0], args=5.0, jac=True,
                         options=dict(lr=0.1, maxiter=3000))
    np.testing.assert_allclose(res.x, 5.0, atol=1e-4)


def test_separate_jac_and_counts():
    res = adamc.minimize(lambda x: quad(x)[0], np.zeros(3), jac=lambda x: quad(x)[1],
                         options=dict(lr=0.1, maxiter=10))
    assert res.nfev == res.njev == 11


@pytest.mark.parametrize("scheme,per_grad", [(None, 4), ("2-point", 4), ("3-point", 7)])
def test_finite_differences(scheme, per_grad):
    n = 3
    res = adamc.minimize(lambda x: quad(x)[0], np.zeros(n), jac=scheme,
                         options=dict(lr=0.1, maxiter=3000, gtol=1e-4))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, 2.0, atol=1e-4)
    assert res.nfev == per_grad * (res.nit + 1)  # f(x) plus n or 2n shifted calls
    assert res.njev == res.nit + 1
    np.testing.assert_allclose(res.jac, 2 * (res.x - 2), atol=1e-5)


def test_finite_differences_respect_bounds():
    seen = []

    def f(x):
        seen.append(x.copy())
        return float(np.sum((x - 2) ** 2))

    res = adamc.minimize(f, np.array([1.0, 0.0]), jac="3-point", bounds=[(0, 1), (0, 3)],
                         options=dict(lr=0.05, maxiter=200))
    pts = np.array(seen)
    assert pts[:, 0].max() <= 1.0 and pts.min() >= 0.0
    assert res.x[0] == 1.0


def test_float32_and_integer_x0():
    res = adamc.minimize(lambda x: (float(np.sum((x - 2) ** 2)), 2 * (x - 2)),
                         np.zeros(4, np.float32), jac=True, options=dict(lr=0.1, maxiter=3000,
                                                                        gtol=1e-3))
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    np.testing.assert_allclose(res.x, 2.0, atol=1e-3)
    res = adamc.minimize(quad, np.array([8, 9]), jac=True, options=dict(lr=0.5, maxiter=5))
    assert res.x.dtype == np.float64


def test_fun_sees_a_read_only_view_of_the_iterate():
    def f(x):
        assert not x.flags.writeable
        with pytest.raises(ValueError):
            x += 1
        return quad(x)

    adamc.minimize(f, np.zeros(2), jac=True, options=dict(maxiter=3))


# ----------------------------------------------------------------------------------
# Callbacks

def test_callback_x_receives_private_copies():
    got = []

    def cb(xk):
        got.append(xk)
        xk[:] = 1e9  # must not disturb the run

    res = adamc.minimize(quad, np.zeros(3), jac=True, callback=cb, options=dict(lr=0.1, maxiter=5))
    assert len(got) == 5
    ref = adamc.minimize(quad, np.zeros(3), jac=True, options=dict(lr=0.1, maxiter=5))
    np.testing.assert_array_equal(res.x, ref.x)
    assert not any(np.shares_memory(a, res.x) for a in got)
    assert len({id(a) for a in got}) == 5


def test_callback_intermediate_result_has_exact_fun():
    rows = []

    def cb(intermediate_result):
        rows.append(intermediate_result)

    res = so.minimize(rosen_fg, X0, method=adamc.minimize_adam, jac=True, callback=cb,
                      options=dict(lr=1e-2, maxiter=30))
    assert len(rows) == 30 and rows[-1].nit == 30
    for r in rows:
        assert isinstance(r, so.OptimizeResult)
        assert r.fun == so.rosen(r.x)
    np.testing.assert_array_equal(rows[-1].x, res.x)
    assert res.fun == rows[-1].fun == so.rosen(res.x)


@pytest.mark.parametrize("style", ["x", "intermediate_result"])
def test_stop_iteration_equals_maxiter(style):
    k = 17

    if style == "x":
        def cb(xk, calls=[0]):
            calls[0] += 1
            if calls[0] == k:
                raise StopIteration
    else:
        def cb(intermediate_result):
            if intermediate_result.nit == k:
                raise StopIteration

    stopped = so.minimize(rosen_fg, X0, method=adamc.minimize_adam, jac=True, callback=cb,
                          options=dict(lr=1e-2))
    limited = so.minimize(rosen_fg, X0, method=adamc.minimize_adam, jac=True,
                          options=dict(lr=1e-2, maxiter=k))
    assert stopped.status == 99 and not stopped.success
    assert stopped.message == "`callback` raised `StopIteration`."
    np.testing.assert_array_equal(stopped.x, limited.x)
    assert stopped.fun == limited.fun and stopped.nit == limited.nit == k


# ----------------------------------------------------------------------------------
# Bounds

@pytest.mark.parametrize("bounds", [[(0, 1.5), (None, None)], so.Bounds([0, -np.inf], [1.5, np.inf])])
def test_bounds_project_every_iterate(bounds):
    xs = []
    res = adamc.minimize(quad, np.array([5.0, 5.0]), jac=True, bounds=bounds,
                         callback=lambda xk: xs.append(xk), options=dict(lr=0.1, maxiter=2000))
    xs = np.array(xs)
    assert xs[:, 0].min() >= 0 and xs[:, 0].max() <= 1.5
    assert xs[0, 0] <= 1.5  # x0 = 5 was clipped into the box first
    assert res.x[0] == 1.5
    np.testing.assert_allclose(res.x[1], 2.0, atol=1e-4)


def test_x0_outside_bounds_is_clipped_before_the_first_evaluation():
    first = []
    adamc.minimize(lambda x: first.append(x.copy()) or quad(x), np.array([-3.0, 9.0]), jac=True,
                   bounds=[(-1, 1), (0, 4)], options=dict(maxiter=1))
    np.testing.assert_array_equal(first[0], [-1.0, 4.0])


def test_float32_bounds_are_never_tightened_by_rounding():
    res = adamc.minimize(lambda x: (float(np.sum((x - 2) ** 2)), 2 * (x - 2)),
                         np.zeros(1, np.float32), jac=True, bounds=[(None, 0.1)],
                         options=dict(lr=0.1, maxiter=50))
    assert res.x.dtype == np.float32 and float(res.x[0]) >= 0.1


# ----------------------------------------------------------------------------------
# Statuses

def test_status_gtol_and_tol_sets_gtol():
    res = adamc.minimize(quad, np.zeros(2), jac=True, tol=1e-3, options=dict(lr=0.05))
    assert res.status == 0 and "gtol" in res.message
    assert np.max(np.abs(res.jac)) <= 1e-3
    res2 = adamc.minimize(quad, np.zeros(2), jac=True, tol=1e-3, options=dict(lr=0.05, gtol=1e-6))
    assert np.max(np.abs(res2.jac)) <= 1e-6 and res2.nit > res.nit


def test_already_converged_at_x0():
    res = adamc.minimize(quad, np.full(2, 2.0), jac=True)
    assert res.status == 0 and res.nit == 0 and res.nfev == 1


def test_status_maxfev():
    res = adamc.minimize(lambda x: quad(x)[0], np.zeros(3), options=dict(maxfev=40, lr=0.01))
    assert res.status == 2 and not res.success
    assert res.message == "Maximum number of function evaluations has been exceeded."
    assert 40 <= res.nfev < 44


def test_status_ftol_and_xtol():
    res = adamc.minimize(quad, np.zeros(2), jac=True, options=dict(lr=0.01, ftol=1e-6, gtol=0))
    assert res.status == 0 and "ftol" in res.message
    res = adamc.minimize(quad, np.zeros(2), jac=True, options=dict(lr=1e-3, xtol=1e-2, gtol=0))
    assert res.status == 0 and "xtol" in res.message and res.nit == 1


def test_nonfinite_objective_returns_last_finite_iterate():
    xs = []

    def f(x):
        if len(xs) == 7:
            return float("nan"), np.ones_like(x)
        xs.append(x.copy())
        return quad(x)

    res = adamc.minimize(f, np.zeros(2), jac=True, options=dict(lr=0.1))
    assert res.status == 3 and not res.success and "not finite at iteration 7" in res.message
    assert res.nit == 6
    np.testing.assert_array_equal(res.x, xs[-1])
    assert res.fun == quad(xs[-1])[0]
    np.testing.assert_array_equal(res.jac, quad(xs[-1])[1])


def test_nonfinite_gradient_at_x0():
    res = adamc.minimize(lambda x: (1.0, np.array([np.inf, 0.0])), np.zeros(2), jac=True)
    assert res.status == 3 and res.nit == 0 and "starting point" in res.message
    np.testing.assert_array_equal(res.x, [0.0, 0.0])


# ----------------------------------------------------------------------------------
# Bad input

BAD = [
    (dict(x0=np.zeros((2, 2))), ValueError, "'x0' must only have one dimension."),
    (dict(x0=[0.0, np.nan]), ValueError, r"x0 must be finite; x0\[1\] is nan"),
    (dict(x0=np.zeros(2, complex)), TypeError, "x0 has dtype complex128"),
    (dict(bounds=[(1, 0), (0, 1)]), ValueError, "An upper bound is less than"),
    (dict(bounds=[(0, 1)]), ValueError, "number of bounds is not compatible"),
    (dict(bounds=so.Bounds([0, 0, 0], [1, 1, 1])), ValueError, "number of bounds"),
    (dict(bounds=[(0, 1), (np.nan, 1)]), ValueError, "must not contain NaN"),
    (dict(bounds=[(0, 1), 3]), ValueError, r"bounds\[1\] must be a \(low, high\) pair"),
    (dict(fun=lambda x: (1.0, np.zeros(3))), ValueError,
     r"fun returned a gradient of shape \(3,\); expected \(2,\)"),
    (dict(fun=lambda x: 1.0), ValueError, "with jac=True, fun must return a pair"),
    (dict(fun=lambda x: (np.ones(2), np.ones(2))), ValueError, "must return a scalar value"),
    (dict(jac="cs"), ValueError, "jac must be True, a callable, None"),
    (dict(options=dict(maxiter=-1)), ValueError, "maxiter must be an int >= 0"),
    (dict(options=dict(gtol=-1)), ValueError, "gtol must be a finite number >= 0"),
    (dict(options=dict(lr=-0.1)), ValueError, "lr must be a finite number >= 0"),
    (dict(options=dict(betas=(0.9, 1.5))), ValueError, r"betas\[1\] must be in"),
    (dict(options=dict(disp="yes")), TypeError, "disp must be a bool"),
    (dict(method="lbfgs"), ValueError, "unknown method 'lbfgs'"),
    (dict(options=dict(batches=[])), ValueError, "options\\['batches'\\] is empty"),
]


@pytest.mark.parametrize("kw,exc,msg", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input(kw, exc, msg):
    call = dict(fun=quad, x0=np.zeros(2), jac=True)
    call.update(kw)
    with pytest.raises(exc, match=msg):
        adamc.minimize(call.pop("fun"), call.pop("x0"), **call)


@pytest.mark.parametrize("name", ["maxiter", "maxfev", "disp_every", "checkpoint_every"])
@pytest.mark.parametrize("value", [2**63, np.uint64(2**63), 2**64, 1e19])
def test_count_options_past_int64_mean_no_limit(name, value):
    """The loops count in int64: a larger count (a natural "no limit") is no limit, in
    minimize and in minimize_many's scalar path (it was a bare OverflowError naming no
    option)."""
    opts = {"lr": 0.1, "gtol": 1e-6}
    alone = adamc.minimize(quad, np.zeros(2), jac=True, options=opts)
    res = adamc.minimize(quad, np.zeros(2), jac=True, options={**opts, name: value})
    assert res.status == 0 and res.nit == alone.nit
    np.testing.assert_array_equal(res.x, alone.x)
    if name != "checkpoint_every":  # not an option of minimize_many
        fq = lambda x: (((x - 2.0) ** 2).sum(1), 2 * (x - 2.0))  # noqa: E731
        many = adamc.minimize_many(fq, np.zeros((2, 2)), jac=True, options={**opts, name: value})
        assert (many.status == 0).all() and (many.nit == alone.nit).all()
    with pytest.raises(ValueError, match=rf"^{name} must be an int >= [01] or None, got -1"):
        adamc.minimize(quad, np.zeros(2), jac=True, options={name: -1})


def test_constraints_are_refused_with_alternatives():
    cons = [{"type": "ineq", "fun": lambda x: x[0]}]
    with pytest.raises(ValueError, match="does not support constraints.*SLSQP"):
        so.minimize(quad, np.zeros(2), method=adamc.minimize_adam, jac=True, constraints=cons)
    so.minimize(quad, np.zeros(2), method=adamc.minimize_adam, jac=True, constraints=(),
                options=dict(maxiter=2))


def test_unknown_option_warns_like_scipy():
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: learning_rate"):
        adamc.minimize(quad, np.zeros(2), jac=True, options=dict(learning_rate=0.1, maxiter=1))


def test_hessian_arguments_warn():
    with pytest.warns(RuntimeWarning, match="does not use Hessian information"):
        so.minimize(quad, np.zeros(2), method=adamc.minimize_adam, jac=True,
                    hess=lambda x: np.eye(2), options=dict(maxiter=1))


# ----------------------------------------------------------------------------------
# Stochastic fitting

def test_batches_reach_fun_in_order_and_end_the_run():
    seen = []

    def f(x, scale, batch_id):
        seen.append(batch_id)
        return quad(x, scale)

    batches = [(i,) for i in range(25)]
    res = adamc.minimize(f, np.zeros(2), args=(1.0,), jac=True,
                         options=dict(batches=batches, lr=0.1))
    assert res.status == 0 and res.success and "batches are exhausted" in res.message
    assert res.nit == 25  # one update per batch
    assert seen == list(range(25)) + [24]  # the final x is evaluated on the last batch
    assert res.nfev == 26


def test_batches_stop_at_maxiter_and_convergence_tests_are_off():
    res = adamc.minimize(lambda x, b: quad(x), np.full(2, 2.0), jac=True,
                         options=dict(batches=((i,) for i in range(100)), maxiter=10))
    assert res.status == 1 and res.nit == 10  # gtol is off with batches: no stop at x0


def test_minibatches_cover_the_data():
    X = np.arange(23 * 2).reshape(23, 2)
    y = np.arange(23)
    batches = list(adamc.minibatches(X, y, batch_size=5, epochs=2, seed=0))
    assert len(batches) == 10
    assert [len(b[1]) for b in batches[:5]] == [5, 5, 5, 5, 3]
    for epoch in (batches[:5], batches[5:]):
        ys = np.concatenate([b[1] for b in epoch])
        assert sorted(ys) == list(range(23))
        xs = np.concatenate([b[0] for b in epoch])
        np.testing.assert_array_equal(xs, X[ys])
    again = list(adamc.minibatches(X, y, batch_size=5, epochs=2, seed=0))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    ordered = list(adamc.minibatches(y, batch_size=10, shuffle=False, drop_last=True))
    assert len(ordered) == 2 and np.array_equal(ordered[0][0], np.arange(10))


@pytest.mark.parametrize("kw,msg", [
    (dict(arrays=(np.zeros(3), np.zeros(4)), batch_size=2), "arrays\\[1\\] has 4 rows"),
    (dict(arrays=(np.zeros(3),), batch_size=0), "batch_size must be an int >= 1"),
    (dict(arrays=(np.zeros(3),), batch_size=2, epochs=0), "epochs must be"),
    (dict(arrays=(), batch_size=2), "at least one array"),
])
def test_minibatches_bad_input(kw, msg):
    arrays = kw.pop("arrays")
    with pytest.raises(ValueError, match=msg):
        adamc.minibatches(*arrays, **kw)


def test_stochastic_linear_regression_fits():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 3))
    w_true = np.array([1.0, -2.0, 0.5])
    y = X @ w_true + 0.01 * rng.standard_normal(500)

    def loss(w, Xb, yb):
        r = Xb @ w - yb
        return float(r @ r / len(yb)), 2 * Xb.T @ r / len(yb)

    res = adamc.minimize(loss, np.zeros(3), jac=True,
                         options=dict(lr=0.05, batches=adamc.minibatches(X, y, batch_size=20,
                                                                       epochs=20, seed=1)))
    assert res.status == 0 and res.nit == 500
    np.testing.assert_allclose(res.x, w_true, atol=0.02)


# ----------------------------------------------------------------------------------
# Reporting

def test_disp_prints_table_and_summary(capsys):
    adamc.minimize(quad, np.zeros(2), jac=True, options=dict(disp=True, disp_every=5, maxiter=20,
                                                             lr=0.1))
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["iter", "f", "|g|_inf", "lr"]
    rows = [line.split() for line in out[1:] if line.strip() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 5, 10, 15, 20]
    assert all(float(r[3]) == 0.1 for r in rows)
    assert any("Iterations: 20" in line for line in out)


def test_progress_bar_counts_iterations(capsys):
    pytest.importorskip("tqdm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adamc.minimize(quad, np.zeros(2), jac=True, options=dict(progress=True, maxiter=7))
    assert "7/7" in capsys.readouterr().err


def test_progress_bar_ends_full_when_the_fit_converges_early(capsys):
    pytest.importorskip("tqdm")
    # x <- x - 0.25 * 2 (x - 2) halves the error: |g| <= 1e-6 after about 22 steps
    res = adamc.minimize(quad, np.zeros(2), method="sgd", jac=True,
                         options=dict(lr=0.25, gtol=1e-6, maxiter=1000, progress=True))
    assert res.status == 0 and 10 < res.nit < 100
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{res.nit}/{res.nit}" in final and "100%" in final, final
    assert "/1000" not in final


def test_progress_bar_of_a_resumed_run_starts_at_its_iteration(tmp_path, capsys):
    pytest.importorskip("tqdm")
    opts = dict(lr=0.1, gtol=0, checkpoint=tmp_path / "run.npz", checkpoint_every=5)
    adamc.minimize(quad, np.zeros(2), jac=True, options=dict(opts, maxiter=5))
    capsys.readouterr()
    adamc.minimize(quad, np.zeros(2), jac=True,
                   options=dict(opts, maxiter=8, resume=True, progress=True))
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "8/8" in final, final


def test_progress_without_tqdm_warns(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.warns(RuntimeWarning, match="needs tqdm"):
        res = adamc.minimize(quad, np.zeros(2), jac=True, options=dict(progress=True, maxiter=3))
    assert res.nit == 3


def test_return_all_and_schedule():
    # (f_scale=None: adam_step below gets the gradient itself, not g / f(x0))
    res = adamc.minimize(quad, np.zeros(1), jac=True,
                         options=dict(return_all=True, maxiter=4, lr=lambda t: 0.1 * t,
                                      f_scale=None))
    assert len(res.allvecs) == 5 and res.allvecs[0][0] == 0.0
    x, m, v = np.zeros(1), np.zeros(1), np.zeros(1)
    for t in range(1, 5):  # the schedule is called with the 1-based update number
        adamc.adam_step(x, quad(x)[1], m, v, step=t, lr=0.1 * t)
        np.testing.assert_array_equal(res.allvecs[t], x)


# ----------------------------------------------------------------------------------
# Every method of the family, through both entry points

METHODS = ["adam", "adamw", "amsgrad", "adamax", "nadam", "radam", "sgd", "rmsprop",
           "adagrad", "adadelta", "rprop"]
# (Rprop: its smallest step, in the variables scaled by x_scale='auto', below gtol's reach)
FAMILY_OPTIONS = {"sgd": dict(lr=0.1, momentum=0.5), "rmsprop": dict(lr=0.01),
                  "adamw": dict(lr=0.1, weight_decay=0.0), "adadelta": dict(lr=1.0),
                  "rprop": dict(lr=0.1, step_sizes=(1e-9, 50.0))}


@pytest.mark.parametrize("name", METHODS)
def test_every_method_solves_a_quadratic(name):
    opts = dict(FAMILY_OPTIONS.get(name, dict(lr=0.1)), maxiter=20000, gtol=1e-6)
    res = adamc.minimize(quad, np.array([8.0, -3.0]), method=name, jac=True, options=opts)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, 2.0, atol=1e-5)
    via_scipy = so.minimize(quad, np.array([8.0, -3.0]), method=getattr(adamc, f"minimize_{name}"),
                            jac=True, options=opts)
    np.testing.assert_array_equal(via_scipy.x, res.x)
    assert via_scipy.nit == res.nit


@pytest.mark.parametrize("name", METHODS)
def test_method_docstrings_list_their_options(name):
    doc = getattr(adamc, f"minimize_{name}").__doc__
    assert "Options" in doc and "maxiter" in doc and "lr : default" in doc
    # the loop itself handles non-finite values: its own policy is documented, never the
    # optimizer's per-step one ('skip' / 'raise')
    assert "nonfinite : {'backtrack', 'stop'}" in doc
    assert "'skip'" not in doc and "'raise'" not in doc


def test_family_options_reach_the_optimizer():
    res = adamc.minimize(quad, np.zeros(2), method="sgd", jac=True,
                         options=dict(lr=0.1, momentum=0.9, nesterov=True, maxiter=3))
    x, b = np.zeros(2), np.zeros(2)
    for t in range(1, 4):
        adamc.sgd_step(x, quad(x)[1], b, step=t, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_array_equal(res.x, x)
    with pytest.raises(ValueError, match="Nesterov"):
        adamc.minimize(quad, np.zeros(2), method="sgd", jac=True, options=dict(nesterov=True))


def test_clipping_in_minimize():
    big = lambda x: (float(1e6 * x @ x), 2e6 * x)  # noqa: E731
    res = adamc.minimize(big, np.ones(2), method="sgd", jac=True,
                         options=dict(lr=0.1, max_grad_norm=1.0, maxiter=1))
    np.testing.assert_allclose(np.linalg.norm(res.x - 1), 0.1, rtol=1e-6)
    res = adamc.minimize(big, np.ones(2), method="sgd", jac=True,
                         options=dict(lr=0.1, clip_value=1.0, maxiter=1))
    np.testing.assert_array_equal(res.x, 0.9)


# ----------------------------------------------------------------------------------
# Fits that survive real models: scales, backtracking at domain edges, plateaus

def quartic_pair(x):
    c = np.linspace(-1.0, 2.0, x.size).astype(x.dtype)
    r = x - c
    return float(np.sum(r ** 4 + r * r)), (4 * r ** 3 + 2 * r).astype(x.dtype)


def same_fit(a, b):
    for key in ("x", "jac"):
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype
    for key in ("fun", "nit", "nfev", "njev", "status", "message", "nbacktrack"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("jac", [True, "separate", "2-point", "3-point"])
def test_a_scale_of_ones_changes_nothing(dtype, jac):
    """x_scale of ones and f_scale 1 go through the scaled path (x = s u, the step's
    gradient s g / f_scale) and give the bits of an unscaled run."""
    x0 = np.array([0.3, -1.2, 2.5, 0.0, 1.0], dtype)
    fun, kw = quartic_pair, dict(jac=True)
    if jac == "separate":
        fun, kw = (lambda x: quartic_pair(x)[0]), dict(jac=lambda x: quartic_pair(x)[1])
    elif jac != True:  # noqa: E712
        fun, kw = (lambda x: quartic_pair(x)[0]), dict(jac=jac)
    base = dict(lr=0.05, maxiter=60, gtol=0)
    plain = adamc.minimize(fun, x0, **kw, options=dict(base, x_scale=None, f_scale=None))
    ones = adamc.minimize(fun, x0, **kw, options=dict(base, x_scale=np.ones(5), f_scale=1.0))
    same_fit(plain, ones)


@pytest.mark.parametrize("method", ["adam", "amsgrad", "rmsprop", "lion", "prodigy",
                                    "adamw_schedulefree", "adagrad", "adadelta", "rprop"])
def test_a_scaled_run_is_the_method_on_the_scaled_problem(method):
    """minimize steps u = x / s with the gradient (s / f_scale) g: a hand-written loop
    over the optimizer object gives the same bits."""
    s = np.array([1e3, 1e-3, 2.0, 0.5])
    fs = 8.0
    x0 = np.array([250.0, 2e-4, -1.0, 0.3])
    target = np.array([300.0, 1e-4, 1.0, 0.5])

    def fun(x):
        r = (x - target) / s
        return float(np.sum(r * r)), 2 * r / s

    opts = dict(x_scale=s, f_scale=fs, maxiter=40, gtol=0, nonfinite="stop")
    if method not in ("prodigy", "adamw_schedulefree"):
        opts["lr"] = 0.01
    res = adamc.minimize(fun, x0, jac=True, method=method, options=opts)
    cls, fixed = {"adam": (adamc.Adam, {}), "amsgrad": (adamc.Adam, {"amsgrad": True}),
                  "rmsprop": (adamc.RMSprop, {}), "lion": (adamc.Lion, {}),
                  "prodigy": (adamc.Prodigy, {}),
                  "adamw_schedulefree": (adamc.AdamWScheduleFree, {}),
                  "adagrad": (adamc.Adagrad, {}), "adadelta": (adamc.Adadelta, {}),
                  "rprop": (adamc.Rprop, {})}[method]
    u = x0 / s
    opt = cls(u, **fixed, **({"lr": 0.01} if "lr" in opts else {}))
    gs = s / np.float64(fs)
    for _ in range(40):
        opt.step(fun(s * u)[1] * gs)
    if hasattr(opt, "eval"):
        opt.eval()
    np.testing.assert_array_equal(res.x, s * u)
    assert res.fun == fun(s * u)[0]


def test_scaled_runs_keep_the_bounds_and_differentiate_in_the_users_variables():
    seen = []

    def f(x):
        seen.append(x.copy())
        return float((x[0] - 3e3) ** 2 / 1e6 + (x[1] - 5e-4) ** 2 * 1e8)

    lb, ub = np.array([1e3, 1e-4]), np.array([2.5e3, 1e-3])
    res = adamc.minimize(f, np.array([1.5e3, 2e-4]), jac="2-point",
                         bounds=list(zip(lb, ub)), options=dict(x_scale=[1e3, 1e-4]))
    seen = np.array(seen)
    assert (seen >= lb).all() and (seen <= ub).all()
    assert res.success and res.x[0] == ub[0]  # (the optimum is past the upper bound)
    np.testing.assert_allclose(res.x[1], 5e-4, atol=1e-8)  # (the differences' step: 1.5e-8)
    # the result's gradient: of f in the user's variables, by differences there
    np.testing.assert_allclose(res.jac, [2 * (res.x[0] - 3e3) / 1e6, 0.0], atol=1e-5)


def edge(x):
    """f = (sqrt(x) - 1)^2 summed: undefined for x < 0 (NaN, as NumPy gives it)."""
    with np.errstate(invalid="ignore"):
        r = np.sqrt(x) - 1
        return float(np.sum(r * r)), r / np.sqrt(x)


def test_backtracking_at_a_domain_edge():
    """A step past the edge is halved until f is finite again, and the fit goes on
    with the lr backed off by that factor; nonfinite='stop' ends it there instead."""
    x0 = np.array([3.0, 1.2])  # (the first step of x[1] is -1.5)
    opts = dict(lr=1.5, x_scale=None, f_scale=None, maxiter=3000)
    res = adamc.minimize(edge, x0, jac=True, options=opts)
    assert res.success and res.nbacktrack > 0 and np.isfinite(res.x).all()
    np.testing.assert_allclose(res.x, 1.0, atol=1e-4)
    stop = adamc.minimize(edge, x0, jac=True, options=dict(opts, nonfinite="stop"))
    assert stop.status == 3 and stop.nit == 0 and stop.nbacktrack == 0
    np.testing.assert_array_equal(stop.x, x0)
    # with a plateau schedule: converged to the end of the plateau, past the edge
    plateau = adamc.schedules.reduce_on_plateau(1.5, factor=0.5, patience=30, threshold=0)
    res = adamc.minimize(edge, x0, jac=True, options=dict(opts, lr=plateau))
    assert plateau.lr == 1.5 and plateau.last_epoch == 0  # (the run stepped a copy)
    assert res.success and res.nbacktrack > 0
    np.testing.assert_allclose(res.x, 1.0, rtol=1e-6)


def test_backtracking_that_does_not_help_ends_with_status_3():
    def fun(x):  # finite at x0 only
        return (float(x @ x), 2 * x) if np.all(x == 1.0) else (np.nan, x)

    res = adamc.minimize(fun, np.ones(3), jac=True, options=dict(x_scale=None))
    assert res.status == 3 and res.nbacktrack == 30 and res.nit == 0
    np.testing.assert_array_equal(res.x, 1.0)


def test_the_default_plateau_reaches_high_precision_and_stops_by_itself():
    """No options: a badly scaled exponential fit (amplitude 1e4, rate 1e-4) is solved
    to 8 digits, and the run ends when the plateau schedule is exhausted."""
    t = np.linspace(0, 3e4, 21)
    y = 1e4 * np.exp(-1e-4 * t)

    def fun(b):
        e = np.exp(-b[1] * t)
        r = b[0] * e - y
        return float(r @ r), np.array([2 * r @ e, -2 * r @ (b[0] * t * e)])

    res = adamc.minimize(fun, np.array([5e3, 2e-4]), jac=True)
    assert res.success and "min_lr" in res.message, res.message
    np.testing.assert_allclose(res.x, [1e4, 1e-4], rtol=1e-8)
    old = adamc.minimize(fun, np.array([5e3, 2e-4]), jac=True,
                         options=dict(x_scale=None, f_scale=None, lr=1e-3, gtol=1e-5))
    assert not old.success  # (the defaults before: amplitude and rate at one scale)


def test_checkpoint_and_resume_mid_plateau(tmp_path):
    """With the defaults (plateau lr, auto scales), a run interrupted at maxiter and
    resumed gives the bits of an uninterrupted one."""
    path = tmp_path / "fit.npz"
    x0 = np.array([2.5, -0.5, 1.5])
    full = adamc.minimize(quartic_pair, x0, jac=True, options=dict(maxiter=900))
    part = adamc.minimize(quartic_pair, x0, jac=True,
                          options=dict(maxiter=300, checkpoint=path, checkpoint_every=50))
    assert part.status == 1
    resumed = adamc.minimize(quartic_pair, np.zeros(3), jac=True,
                             options=dict(maxiter=900, checkpoint=path, resume=True))
    same_fit(resumed, full)


@pytest.mark.parametrize("options,error,match", [
    (dict(x_scale=[1.0, 0.0]), ValueError, r"x_scale\[1\] is 0.0"),
    (dict(x_scale=[1.0, -2.0]), ValueError, r"finite and > 0"),
    (dict(x_scale=[np.nan, 1.0]), ValueError, r"x_scale\[0\] is nan"),
    (dict(x_scale=[1.0, 1.0, 1.0]), ValueError, r"shape \(3,\); expected \(2,\)"),
    (dict(x_scale="jac"), ValueError, "x_scale must be 'auto'"),
    (dict(x_scale=[1j, 1]), TypeError, "real numbers"),
    (dict(x_scale=0.0), ValueError, "x_scale must be"),
    (dict(x_scale=[1e-50, 1.0]), None, None),  # (a float64 run: fine)
    (dict(f_scale=0.0), ValueError, "f_scale must be"),
    (dict(f_scale="max"), ValueError, "f_scale must be 'auto'"),
    (dict(nonfinite="skip"), ValueError, "nonfinite must be 'backtrack' or 'stop'"),
    (dict(nonfinite="backtrack", batches=[()] * 3), ValueError, "deterministic"),
    (dict(maxiter=2.5), ValueError, "maxiter must be an int"),
])
def test_bad_scales_and_policies_are_refused_before_anything_runs(options, error, match):
    calls = []

    def fun(x):
        calls.append(1)
        return quad(x)

    if error is None:
        adamc.minimize(fun, np.ones(2), jac=True, options=dict(options, maxiter=2))
        return
    with pytest.raises(error, match=match):
        adamc.minimize(fun, np.ones(2), jac=True, options=options)
    assert not calls
    with pytest.raises(ValueError, match="x_scale"):  # (float32: underflows to 0)
        adamc.minimize(quad, np.ones(2, np.float32), jac=True,
                       options=dict(x_scale=[1e-50, 1.0]))


def test_integral_float_counts_are_accepted():
    a = adamc.minimize(quad, np.zeros(2), jac=True, options=dict(maxiter=2e2, lr=0.01,
                                                                 gtol=0))
    b = adamc.minimize(quad, np.zeros(2), jac=True, options=dict(maxiter=200, lr=0.01,
                                                                 gtol=0))
    same_fit(a, b)
