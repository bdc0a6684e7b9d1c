"""Fit with a compiled objective: a numba ``cfunc`` passed to adamc.minimize as a
``scipy.LowLevelCallable``, so that the whole fit runs in C, without the GIL and
without a Python call per iteration.

The problem is a small least-squares fit (a decaying exponential to 60 noisy points,
3 parameters), where the Python around the objective would be most of the cost. The
data reach the C function through ``user_data`` (a pointer to a float64 array).
The same fit with a Python objective that calls the same compiled function gives the
same bits; the script checks it and times both.

Then many data sets at once: adamc.minimize_many with a cfunc that also gets the
problem's index (``double (int, double *, double *, intptr_t, void *)``) fits 2,000
noisy curves in C, on 1 and on 2 adamc threads, with the same results.

Needs numba (an optional dependency):  pip install numba
Run:  python examples/compiled_objective.py [--outdir DIR] [--iters N] [--curves B]
"""
import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
from scipy import LowLevelCallable

import adamc

try:
    import numba
    from numba import types
except ImportError:
    sys.exit("this example needs numba: pip install numba")

TRUE = np.array([2.5, 1.3, 0.5])  # a, k, c of y = a exp(-k t) + c

# double f(int n, double *x, double *grad, void *user_data): adamc's C signature
SIGNATURE = types.double(types.intc, types.CPointer(types.double),
                         types.CPointer(types.double), types.voidptr)


def make_objective():
    """f and its gradient as a numba cfunc; user_data points to the float64 array
    [m, t_0 .. t_{m-1}, y_0 .. y_{m-1}]."""

    @numba.cfunc(SIGNATURE)
    def fun(n, xp, gp, data):
        x = numba.carray(xp, (n,))
        g = numba.carray(gp, (n,))
        head = numba.carray(data, (1,), np.float64)
        m = int(head[0])
        buf = numba.carray(data, (1 + 2 * m,), np.float64)
        a, k, c = x[0], x[1], x[2]
        f = 0.0
        g[0] = 0.0
        g[1] = 0.0
        g[2] = 0.0
        for i in range(m):
            t = buf[1 + i]
            e = np.exp(-k * t)
            r = a * e + c - buf[1 + m + i]
            f += 0.5 * r * r
            g[0] += r * e
            g[1] -= r * a * t * e
            g[2] += r
        return f

    return fun


# double f(int n, double *x, double *grad, intptr_t i, void *user_data): minimize_many's
MANY_SIGNATURE = types.double(types.intc, types.CPointer(types.double),
                              types.CPointer(types.double), types.intp, types.voidptr)


def make_many_objective():
    """Curve i of many: user_data points to [m, t_0 .. t_{m-1}, then the m values of
    curve 0, of curve 1, ...]."""
    @numba.cfunc(MANY_SIGNATURE)
    def fun(n, xp, gp, i, data):
        x = numba.carray(xp, (n,))
        g = numba.carray(gp, (n,))
        m = int(numba.carray(data, (1,), np.float64)[0])
        buf = numba.carray(data, (1 + m + (i + 1) * m,), np.float64)
        a, k, c = x[0], x[1], x[2]
        f = g0 = g1 = g2 = 0.0
        for j in range(m):
            t = buf[1 + j]
            e = np.exp(-k * t)
            r = a * e + c - buf[1 + m + i * m + j]
            f += 0.5 * r * r
            g0 += r * e
            g1 -= r * a * t * e
            g2 += r
        g[0], g[1], g[2] = g0, g1, g2
        return f

    return fun


def many_curves(B, t, rng):
    """B curves with their own parameters; every fit from (1, 1, 0)."""
    true = np.column_stack([rng.uniform(1, 4, B), rng.uniform(0.5, 2, B),
                            rng.uniform(-0.5, 1, B)])
    y = true[:, :1] * np.exp(-true[:, 1:2] * t) + true[:, 2:] + rng.normal(0, 0.05, (B, t.size))
    data = np.concatenate([[t.size], t, y.ravel()])
    fun = make_many_objective()
    llc = LowLevelCallable(fun.ctypes, ctypes.c_void_p(data.ctypes.data))
    x0 = np.tile([1.0, 1.0, 0.0], (B, 1))
    options = dict(lr=0.02, maxiter=20000, gtol=1e-6)
    runs = {}
    for threads in (1, 2):
        adamc.set_num_threads(threads)
        adamc.minimize_many(llc, x0[:8], options=options)  # warm
        t0 = time.perf_counter()
        runs[threads] = (adamc.minimize_many(llc, x0, options=options),
                         time.perf_counter() - t0)
    adamc.set_num_threads(1)
    res, t1 = runs[1]
    print(f"minimize_many, {B} curves in C: {B / t1:,.0f} fits/s on 1 thread, "
          f"{B / runs[2][1]:,.0f} on 2 ({res.message}); median "
          f"{np.median(res.nit):.0f} iterations")
    print(f"1 and 2 threads give identical results: "
          f"{all(np.array_equal(res[k], runs[2][0][k]) for k in ('x', 'fun', 'nit'))}")
    # a few curves again, through a Python objective calling the same cfunc row by row
    ptr = ctypes.POINTER(ctypes.c_double)
    cfun, user_data = fun.ctypes, ctypes.c_void_p(data.ctypes.data)

    def rows(x, idx):
        f, g = np.empty(len(x)), np.empty_like(x)
        for r, i in enumerate(idx):
            xr, gr = np.ascontiguousarray(x[r]), np.empty(3)
            f[r] = cfun(3, xr.ctypes.data_as(ptr), gr.ctypes.data_as(ptr), int(i), user_data)
            g[r] = gr
        return f, g

    few = min(B, 20)
    llc_few = LowLevelCallable(fun.ctypes, ctypes.c_void_p(data.ctypes.data))
    ref = adamc.minimize_many(rows, x0[:few], jac=True, batch_args=(np.arange(few),),
                              options=options)
    mine = adamc.minimize_many(llc_few, x0[:few], options=options)
    print(f"identical to the Python objective: "
          f"{all(np.array_equal(mine[k], ref[k]) for k in ('x', 'fun', 'nit'))}")
    err = np.abs(res.x - true).max(axis=0)
    print(f"largest error of a, k, c over the {B} curves: {np.round(err, 3)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=None, help="unused (no plot)")
    parser.add_argument("--iters", type=int, default=20000)
    parser.add_argument("--curves", type=int, default=2000)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(42)
    t = np.linspace(0, 4, 60)
    y = TRUE[0] * np.exp(-TRUE[1] * t) + TRUE[2] + rng.normal(0, 0.05, t.size)
    data = np.concatenate([[t.size], t, y])  # float64: what user_data points to

    fun = make_objective()
    llc = LowLevelCallable(fun.ctypes, ctypes.c_void_p(data.ctypes.data))
    x0 = np.array([1.0, 1.0, 0.0])
    options = dict(lr=0.01, maxiter=args.iters, gtol=1e-8)

    def timed(fun, **kw):
        adamc.minimize(fun, x0, options=options, **kw)  # warm: imports are not timed
        t0 = time.perf_counter()
        result = adamc.minimize(fun, x0, options=options, **kw)
        return result, time.perf_counter() - t0

    res, t_c = timed(llc)
    print(f"compiled objective: a, k, c = {np.round(res.x, 4)}, loss={res.fun:.6f}, "
          f"{res.nit} iterations, {t_c * 1e6 / max(res.nit, 1):.2f} us per iteration "
          f"({res.message})")

    # the same fit with a Python objective calling the same compiled function
    ptr = ctypes.POINTER(ctypes.c_double)
    cfun, user_data = fun.ctypes, ctypes.c_void_p(data.ctypes.data)

    def python_objective(x):
        g = np.empty_like(x)
        return cfun(x.size, x.ctypes.data_as(ptr), g.ctypes.data_as(ptr), user_data), g

    ref, t_py = timed(python_objective, jac=True)
    same = (np.array_equal(res.x, ref.x) and res.fun == ref.fun and res.nit == ref.nit)
    print(f"Python objective:   a, k, c = {np.round(ref.x, 4)}, loss={ref.fun:.6f}, "
          f"{ref.nit} iterations, {t_py * 1e6 / max(ref.nit, 1):.2f} us per iteration")
    print(f"identical results: {same}; the compiled fit is {t_py / t_c:.0f}x faster")
    print(f"true parameters:    a, k, c = {TRUE}")
    print()
    many_curves(args.curves, t, rng)


if __name__ == "__main__":
    main()
