"""Per-iteration cost of adamc.minimize: the loop around a Python objective against a
hand-written NumPy Adam loop, and a compiled objective (numba cfunc, LowLevelCallable)
against the same fit with Python objectives.

Part 1 (Python objective): the objective returns a precomputed (f, g) pair, so what
is timed is the loop itself: the update, the stopping test on |g|_inf and the
bookkeeping. The cost of calling the objective from a Python loop (measured in the
same run) is subtracted from both.

Part 2 (compiled objective, needs numba): a quadratic at n = 10 as a numba ``cfunc``
passed as ``scipy.LowLevelCallable``; its own cost is timed by calling it from C
(``adamc._kernels._call_objective_repeatedly``) and subtracted. The same fit runs
with two Python objectives: a numba ``njit`` function returning (f, g) (the fastest
Python objective we know) and the Python twin that calls the cfunc through ctypes
(bit-identical results, checked here).

The machine is shared with other jobs: the contenders run interleaved, one run each
per round, and the tables give the median and the 90th percentile over the rounds.
Timings are warm: every contender runs once before the rounds (imports, numba
compilation).

Run:  python benchmarks/bench_minimize.py [--sizes 10 1000] [--iters 50000] [--rounds 15]
Writes benchmarks/results/bench_minimize.{json,md}.
"""
from __future__ import annotations

import os

# 1 thread: BLAS pools spinning after a call would compete for the 2 cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import ctypes
import time

import numpy as np

import adamc
from adamc import _kernels
from adamc._bench import numpy_adam_prealloc
from _common import machine, markdown_table, write_outputs


def numpy_adam_loop(fun, x0, iters, gtol=1e-5):
    """What a user writes by hand: a loop around a preallocated in-place NumPy Adam
    step (adamc._bench.numpy_adam_prealloc) with the same stopping test."""
    x = x0.copy()
    m, v, tmp = np.zeros_like(x), np.zeros_like(x), np.empty_like(x)
    f, g = fun(x)
    for t in range(1, iters + 1):
        if np.max(np.abs(g)) <= gtol:
            break
        numpy_adam_prealloc(x, g, m, v, tmp, t)
        f, g = fun(x)
    return x


def stats(values_s: list[float]) -> tuple[float, float]:
    a = np.asarray(values_s) * 1e6
    return float(np.median(a)), float(np.percentile(a, 90))


def rounds(contenders: dict, count: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, one call each per round, interleaved."""
    for fn in contenders.values():
        fn()  # warm
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(count):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def measure_python(n: int, iters: int, count: int) -> dict[str, float]:
    g = np.full(n, 0.5)
    pair = (1.0, g)

    def fun(x):
        return pair

    x0 = np.zeros(n)
    opts = dict(maxiter=iters, gtol=1e-12)

    def calls():
        for _ in range(iters):
            fun(x0)

    t = rounds({"adamc.minimize": lambda: adamc.minimize(fun, x0, jac=True, options=opts),
                "numpy loop": lambda: numpy_adam_loop(fun, x0, iters, gtol=1e-12),
                "objective call": calls}, count)
    per = {k: [s / iters for s in v] for k, v in t.items()}
    obj = float(np.median(per["objective call"]))
    out = {"n": n, "objective_call_us": obj * 1e6}
    for key, name in (("adamc", "adamc.minimize"), ("numpy", "numpy loop")):
        out[f"{key}_us"], out[f"{key}_p90_us"] = stats([s - obj for s in per[name]])
    return out


def measure_compiled(n: int, iters: int, count: int) -> dict[str, float] | None:
    try:
        import numba
        from numba import types
    except ImportError:
        return None
    from scipy import LowLevelCallable

    from adamc._fitting.lowlevel import capsule_of

    sig = types.double(types.intc, types.CPointer(types.double),
                       types.CPointer(types.double), types.voidptr)

    @numba.njit(cache=False)
    def quad_core(x, g):
        f = 0.0
        for i in range(x.shape[0]):
            d = x[i] - 1.0
            f += 0.5 * (i + 1) * d * d
            g[i] = (i + 1) * d
        return f

    @numba.cfunc(sig)
    def quad_c(m, xp, gp, data):
        return quad_core(numba.carray(xp, (m,)), numba.carray(gp, (m,)))

    @numba.njit(cache=False)
    def quad_njit(x):
        g = np.empty_like(x)
        return quad_core(x, g), g

    ptr = ctypes.POINTER(ctypes.c_double)
    cf = quad_c.ctypes

    def twin(x):  # the Python objective that calls the same compiled function
        g = np.empty_like(x)
        return cf(x.size, x.ctypes.data_as(ptr), g.ctypes.data_as(ptr), None), g

    llc = LowLevelCallable(quad_c.ctypes)
    x0 = np.zeros(n)
    # a small lr: x stays far from the minimum, so that the moments never decay into
    # subnormal numbers (which slow the update itself several times, see DESIGN.md)
    opts = dict(lr=1e-7, maxiter=iters, gtol=0.0)
    py_iters = iters
    py_opts = opts
    res = adamc.minimize(llc, x0, options=py_opts)
    ref = adamc.minimize(twin, x0, jac=True, options=py_opts)
    identical = bool(np.array_equal(res.x, ref.x) and res.fun == ref.fun
                     and res.nit == ref.nit and np.array_equal(res.jac, ref.jac))
    xg, gg = np.full(n, 0.3), np.empty(n)
    t = rounds({"cfunc fit": lambda: adamc.minimize(llc, x0, options=opts),
                "cfunc calls": lambda: _kernels._call_objective_repeatedly(
                    capsule_of(llc), xg, gg, iters),
                "njit objective fit": lambda: adamc.minimize(quad_njit, x0, jac=True,
                                                             options=py_opts),
                "ctypes twin fit": lambda: adamc.minimize(twin, x0, jac=True,
                                                          options=py_opts)}, count)
    fit = [s / iters for s in t["cfunc fit"]]
    call = [s / iters for s in t["cfunc calls"]]
    njit_fit = [s / py_iters for s in t["njit objective fit"]]
    twin_fit = [s / py_iters for s in t["ctypes twin fit"]]
    out = {"n": n, "identical_to_twin": identical}
    out["cfunc_fit_us"], out["cfunc_fit_p90_us"] = stats(fit)
    out["cfunc_call_us"], out["cfunc_call_p90_us"] = stats(call)
    out["overhead_us"], out["overhead_p90_us"] = stats([a - b for a, b in zip(fit, call)])
    out["njit_fit_us"], out["njit_fit_p90_us"] = stats(njit_fit)
    out["twin_fit_us"], out["twin_fit_p90_us"] = stats(twin_fit)
    # per round (interleaved runs), then the median and the 10th percentile
    speed = np.array(njit_fit) / np.array(fit)
    out["speedup_vs_njit"] = float(np.median(speed))
    out["speedup_vs_njit_p10"] = float(np.percentile(speed, 10))
    out["speedup_vs_twin"] = float(np.median(np.array(twin_fit) / np.array(fit)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--iters", type=int, default=50_000)
    parser.add_argument("--c-iters", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--python-only", action="store_true",
                        help="only the Python-objective table (e.g. to time an older "
                             "adamc, without compiled objectives, the same way)")
    args = parser.parse_args(argv)
    info = machine()
    results = [measure_python(n, args.iters, args.rounds) for n in args.sizes]
    rows = [[str(r["n"]), f"{r['adamc_us']:.2f} ({r['adamc_p90_us']:.2f})",
             f"{r['numpy_us']:.2f} ({r['numpy_p90_us']:.2f})",
             f"{r['numpy_us'] / r['adamc_us']:.1f}x", f"{r['objective_call_us']:.3f}"]
            for r in results]
    md = (f"{info['cpu']} ({info['cores']} cores, shared with other jobs), {info['date']}, "
          f"adamc {info['adamc']} ({info['git']}), SIMD {info['simd_level']}, 1 thread.\n\n"
          f"Loop overhead per iteration with a Python objective (µs beyond the objective's "
          f"call; median (p90) of {args.rounds} interleaved runs of {args.iters} "
          f"iterations):\n\n"
          + markdown_table(["n", "adamc.minimize", "hand-written NumPy loop",
                            "NumPy / adamc", "objective call"], rows))
    compiled = None if args.python_only else measure_compiled(10, args.c_iters, args.rounds)
    if args.python_only:
        pass
    elif compiled is None:
        md += "\n(numba is not installed: no compiled-objective measurements.)\n"
    else:
        c = compiled
        rows = [
            ["numba cfunc (LowLevelCallable), whole iteration",
             f"{c['cfunc_fit_us']:.3f} ({c['cfunc_fit_p90_us']:.3f})"],
            ["the cfunc's own call, from C", f"{c['cfunc_call_us']:.3f} "
                                             f"({c['cfunc_call_p90_us']:.3f})"],
            ["adamc beyond the objective", f"{c['overhead_us']:.3f} "
                                           f"({c['overhead_p90_us']:.3f})"],
            ["Python objective: numba njit returning (f, g)",
             f"{c['njit_fit_us']:.3f} ({c['njit_fit_p90_us']:.3f})"],
            ["Python objective: the cfunc through ctypes",
             f"{c['twin_fit_us']:.3f} ({c['twin_fit_p90_us']:.3f})"],
        ]
        md += (f"\nCompiled objective, n = 10 (µs per iteration, median (p90) of "
               f"{args.rounds} interleaved runs of the same fit of {args.c_iters} "
               f"iterations):\n\n"
               + markdown_table(["fit", "µs / iteration"], rows)
               + f"\nEnd to end, the cfunc fit is {c['speedup_vs_njit']:.1f}x faster than "
                 f"with the njit Python objective (10th percentile over the rounds: "
                 f"{c['speedup_vs_njit_p10']:.1f}x) and {c['speedup_vs_twin']:.0f}x faster "
                 f"than with the ctypes twin; results identical to the twin's: "
                 f"{c['identical_to_twin']}.\n")
    print(md)
    write_outputs("bench_minimize", {"machine": info, "results": results,
                                     "compiled": compiled}, md)


if __name__ == "__main__":
    main()
