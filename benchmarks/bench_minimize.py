"""Per-iteration overhead of adamc.minimize against a hand-written NumPy Adam loop.

The objective returns a precomputed (f, g) pair, so what is timed is the loop itself:
the update, the stopping test on |g|_inf and the bookkeeping. The cost of calling the
objective (measured separately) is subtracted from both.

Run:  python benchmarks/bench_minimize.py [--sizes 10 1000] [--iters 100000]
Writes benchmarks/results/bench_minimize.{json,md}.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import adamc
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


def measure(n: int, iters: int, repeats: int = 5) -> dict[str, float]:
    g = np.full(n, 0.5)
    pair = (1.0, g)

    def fun(x):
        return pair

    x0 = np.zeros(n)
    opts = dict(maxiter=iters, gtol=1e-12)
    rows = {"adamc.minimize": [], "numpy loop": [], "objective call": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        adamc.minimize(fun, x0, jac=True, options=opts)
        rows["adamc.minimize"].append((time.perf_counter() - t0) / iters)
        t0 = time.perf_counter()
        numpy_adam_loop(fun, x0, iters)
        rows["numpy loop"].append((time.perf_counter() - t0) / iters)
        t0 = time.perf_counter()
        for _ in range(iters):
            fun(x0)
        rows["objective call"].append((time.perf_counter() - t0) / iters)
    med = {k: float(np.median(v)) * 1e6 for k, v in rows.items()}
    return {"n": n, "adamc_us": med["adamc.minimize"] - med["objective call"],
            "numpy_us": med["numpy loop"] - med["objective call"],
            "objective_call_us": med["objective call"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--iters", type=int, default=100_000)
    args = parser.parse_args(argv)
    results = [measure(n, args.iters) for n in args.sizes]
    info = machine()
    rows = [[str(r["n"]), f"{r['adamc_us']:.2f}", f"{r['numpy_us']:.2f}",
             f"{r['numpy_us'] / r['adamc_us']:.1f}x"] for r in results]
    md = (f"Loop overhead per iteration (µs, median of 5 runs of {args.iters} iterations, "
          f"objective call subtracted); {info['cpu']}, {info['date']}, adamc {info['adamc']} "
          f"({info['git']}), SIMD {info['simd_level']}.\n\n"
          + markdown_table(["n", "adamc.minimize", "hand-written NumPy loop", "ratio"], rows))
    print(md)
    write_outputs("bench_minimize", {"machine": info, "results": results}, md)


if __name__ == "__main__":
    main()
