"""Command line: ``python -m adamc [info | demo]``.

``demo`` (the default) prints the configuration, runs the classic quadratic
demonstration of Adam beside gradient descent, and times one Adam step at N = 10**6
against the pure-NumPy reference.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

import numpy as np

from . import Adam, _reference, show_config


def quadratic_demo(lr: float = 0.1, steps: int = 50, x0: float = 8.0) -> dict[str, list[float]]:
    """Minimize f(x) = (x - 2)**2 from x0 with Adam and with gradient descent.

    Returns the two trajectories (x after each step, x0 first).
    """
    x = np.array([x0])
    opt = Adam(x, lr=lr)
    adam_path = [x0]
    for _ in range(steps):
        opt.step(2 * (x - 2))
        adam_path.append(float(x[0]))
    gd = x0
    gd_path = [x0]
    for _ in range(steps):
        gd -= lr * 2 * (gd - 2)
        gd_path.append(gd)
    return {"adam": adam_path, "gd": gd_path}


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_one_step(n: int = 10**6, repeats: int = 15) -> tuple[float, float]:
    """Median seconds of one float64 Adam step at size n: adamc, then the NumPy
    reference (adamc._reference.adam, the textbook NumPy formulation)."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    opt = Adam(p.copy(), lr=1e-3)
    opt.step(g)
    m, v = np.zeros(n), np.zeros(n)
    fast = _median_time(lambda: opt.step(g), repeats)
    slow = _median_time(lambda: _reference.adam(p, g, m, v, step=2), repeats)
    return fast, slow


def run_demo(out=sys.stdout) -> None:
    show_config()
    print(file=out)
    lr, steps = 0.1, 50
    paths = quadratic_demo(lr, steps)
    print(f"Minimizing f(x) = (x - 2)^2 from x = 8, lr = {lr}, {steps} steps:", file=out)
    print(f"{'step':>6} {'Adam x':>12} {'GD x':>12}", file=out)
    for k in (0, 1, 5, 10, 25, 50):
        print(f"{k:>6} {paths['adam'][k]:>12.6f} {paths['gd'][k]:>12.6f}", file=out)
    fa, fg = ((paths[k][-1] - 2) ** 2 for k in ("adam", "gd"))
    print(f"final f: Adam {fa:.3e}, gradient descent {fg:.3e}", file=out)
    print("Adam moves about lr per step whatever the gradient's size; plain gradient "
          "descent contracts (x - 2) by 1 - 2 lr per step on this quadratic.", file=out)
    print(file=out)
    fast, slow = time_one_step()
    print(f"One Adam step at N = 10**6 (float64): adamc {fast * 1e3:.3f} ms, NumPy "
          f"reference {slow * 1e3:.3f} ms, speed-up {slow / fast:.1f}x", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adamc",
        description="adamc: fast, reproducible Adam-family optimizers for NumPy and SciPy.")
    sub = parser.add_subparsers(dest="command", metavar="{info,demo}")
    sub.add_parser("info", help="print the SIMD level, threads, versions and build flags")
    sub.add_parser("demo", help="quadratic demo of Adam vs gradient descent and a timing "
                                "(the default)")
    args = parser.parse_args(argv)
    if args.command == "info":
        show_config()
    else:
        run_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
