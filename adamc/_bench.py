"""`python -m adamc bench`: a quick benchmark of one Adam step.

Times adamc's optimizer against a hand-written NumPy Adam step (preallocated, in-place
operations), the readable NumPy reference (adamc._reference, which allocates), and
``torch._fused_adam_`` when torch is installed. The full suite, with more peers and
sizes, is ``benchmarks/bench_step.py`` in the repository.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

import numpy as np

from . import _reference
from .optim import Adam

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8


def numpy_adam_prealloc(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray,
                        tmp: np.ndarray, t: int) -> None:
    """One Adam step written by hand in NumPy: in-place operations and one preallocated
    temporary (what a careful user writes; the benchmarks' NumPy baseline)."""
    m *= BETA1
    np.multiply(g, 1 - BETA1, out=tmp)
    m += tmp
    v *= BETA2
    np.multiply(g, g, out=tmp)
    tmp *= 1 - BETA2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp *= 1 / math.sqrt(1 - BETA2 ** t)
    tmp += EPS
    np.divide(m, tmp, out=tmp)
    tmp *= LR / (1 - BETA1 ** t)
    p -= tmp


def time_per_call(fn: Callable[[], Any], min_time: float = 0.01, repeats: int = 5) -> float:
    """Median seconds per call over ``repeats`` rounds of at least ``min_time`` each
    (the number of calls per round is calibrated first). Shared with benchmarks/."""
    fn()
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time or number >= 1 << 24:
            break
        number *= 2 if elapsed <= 0 else max(2, int(min_time / elapsed * 1.2))
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return float(np.median(rounds))


def _contenders(p0: np.ndarray, g: np.ndarray) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    p = p0.copy()
    opt = Adam(p, lr=LR)
    out["adamc"] = lambda: opt.step(g)

    q, m, v, tmp = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.empty_like(p0)
    out["NumPy (prealloc)"] = lambda: numpy_adam_prealloc(q, g, m, v, tmp, 10)

    m2, v2 = np.zeros_like(p0), np.zeros_like(p0)
    out["NumPy reference"] = lambda: _reference.adam(p0, g, m2, v2, step=10, lr=LR)

    try:
        import torch
    except ImportError:
        return out
    tp, tg = torch.from_numpy(p0.copy()), torch.from_numpy(g)
    tm, tv = torch.zeros_like(tp), torch.zeros_like(tp)
    step = torch.tensor(1.0)

    def fused():
        step.add_(1)  # what torch.optim.Adam(fused=True) does before the kernel
        torch._fused_adam_([tp], [tg], [tm], [tv], [], [step], lr=LR, beta1=BETA1,
                           beta2=BETA2, weight_decay=0.0, eps=EPS, amsgrad=False,
                           maximize=False)

    out["torch._fused_adam_"] = fused
    return out


def run_bench(sizes: list[int], dtype: str, threads: int | None, plot: str | None,
              out: Any = None) -> dict[str, dict[int, float]]:
    """Time every contender at every size; print a table; optionally save a plot."""
    out = out or sys.stdout
    from . import _kernels

    if threads is not None:
        _kernels.set_num_threads(threads)
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            pass
    results: dict[str, dict[int, float]] = {}
    rng = np.random.default_rng(0)
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(sizes), unit="size", leave=False, file=sys.stderr)
    except ImportError:
        bar = None
    for k, n in enumerate(sizes):
        p0 = rng.standard_normal(n).astype(dtype)
        g = rng.standard_normal(n).astype(dtype)
        for name, fn in _contenders(p0, g).items():
            results.setdefault(name, {})[n] = time_per_call(fn)
        if bar is not None:
            bar.update(1)
        else:
            print(f"[{k + 1}/{len(sizes)}] N = {n} done", file=sys.stderr)
    if bar is not None:
        bar.close()

    names = list(results)
    print(f"One Adam step, {dtype}, {_kernels.get_num_threads()} adamc thread(s), SIMD "
          f"{_kernels.simd_level()}: median microseconds per step", file=out)
    header = f"{'N':>10} " + " ".join(f"{name:>20}" for name in names) + f" {'adamc speed-up':>15}"
    print(header, file=out)
    for n in sizes:
        peers = [results[name][n] for name in names if name != "adamc"]
        row = f"{n:>10} " + " ".join(f"{results[name][n] * 1e6:>20.3f}" for name in names)
        print(f"{row} {min(peers) / results['adamc'][n]:>14.1f}x", file=out)
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name in names:
            xs = sorted(results[name])
            ax.loglog(xs, [results[name][n] / n * 1e9 for n in xs], "o-", label=name)
        ax.set_xlabel("N (elements)")
        ax.set_ylabel("ns per element")
        ax.set_title(f"One Adam step ({dtype})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"saved {plot}", file=out)
    return results
