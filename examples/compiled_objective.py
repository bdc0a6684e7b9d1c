"""Fit with a compiled objective: a numba ``cfunc`` passed to adamc.minimize as a
``scipy.LowLevelCallable``, so that the whole fit runs in C, without the GIL and
without a Python call per iteration.

The problem is a small least-squares fit (a decaying exponential to 60 noisy points,
3 parameters), where the Python around the objective would be most of the cost. The
data reach the C function through ``user_data`` (a pointer to a float64 array).
The same fit with a Python objective that calls the same compiled function gives the
same bits; the script checks it and times both.

Needs numba (an optional dependency):  pip install numba
Run:  python examples/compiled_objective.py [--outdir DIR] [--iters N]
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=None, help="unused (no plot)")
    parser.add_argument("--iters", type=int, default=20000)
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


if __name__ == "__main__":
    main()
