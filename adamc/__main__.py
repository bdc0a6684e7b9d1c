"""Command line: ``python -m adamc [info | demo | bench]``.

``demo`` (the default) prints the configuration, runs the classic quadratic
demonstration of Adam beside gradient descent, fits a small curve with
``scipy.optimize.minimize``, and times one Adam step at N = 10**6 against the pure-NumPy
reference. ``info`` prints the configuration; ``bench`` runs a quick benchmark.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import numpy as np

from . import Adam, _reference, show_config
from ._bench import time_per_call


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


def time_one_step(n: int = 10**6, repeats: int = 15) -> tuple[float, float]:
    """Median seconds of one float64 Adam step at size n: adamc, then the NumPy
    reference (adamc._reference.adam, the textbook NumPy formulation)."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    opt = Adam(p.copy(), lr=1e-3)
    opt.step(g)
    m, v = np.zeros(n), np.zeros(n)
    fast = time_per_call(lambda: opt.step(g), repeats=repeats)
    slow = time_per_call(lambda: _reference.adam(p, g, m, v, step=2), repeats=repeats)
    return fast, slow


def scipy_demo(out: Any = None) -> Any:
    """Fit y = a exp(-k t) + c to noisy data through scipy.optimize.minimize."""
    out = out or sys.stdout
    from scipy.optimize import minimize

    from . import minimize_adam

    rng = np.random.default_rng(0)
    t = np.linspace(0, 4, 40)
    y = 2.5 * np.exp(-1.3 * t) + 0.5 + 0.05 * rng.standard_normal(t.size)

    def loss(p):
        e = np.exp(-p[1] * t)
        r = p[0] * e + p[2] - y
        return 0.5 * float(r @ r), np.array([r @ e, -p[0] * (r @ (t * e)), r.sum()])

    res = minimize(loss, [1.0, 0.5, 0.0], method=minimize_adam, jac=True,
                   options={"lr": 0.05, "maxiter": 20000, "gtol": 1e-6})
    print("Fitting y = a exp(-k t) + c (true a=2.5, k=1.3, c=0.5) with "
          "scipy.optimize.minimize(method=adamc.minimize_adam):", file=out)
    print(f"  a={res.x[0]:.3f} k={res.x[1]:.3f} c={res.x[2]:.3f}, loss {res.fun:.4f}, "
          f"{res.nit} iterations ({res.message})", file=out)
    return res


def run_demo(out: Any = None) -> None:
    out = out or sys.stdout
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
    scipy_demo(out)
    print(file=out)
    fast, slow = time_one_step()
    print(f"One Adam step at N = 10**6 (float64): adamc {fast * 1e3:.3f} ms, NumPy "
          f"reference {slow * 1e3:.3f} ms, speed-up {slow / fast:.1f}x", file=out)


def _size(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"a size must be a whole number >= 1, got {text}")
    return int(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adamc",
        description="adamc: fast, reproducible Adam-family optimizers for NumPy and SciPy.")
    sub = parser.add_subparsers(dest="command", metavar="{info,demo,bench}")
    sub.add_parser("info", help="print the SIMD level, threads, versions and build flags")
    sub.add_parser("demo", help="Adam beside gradient descent on (x - 2)^2, a SciPy fit and "
                                "a timing (the default)")
    bench = sub.add_parser("bench", help="time one Adam step against NumPy and torch "
                                         "(when installed)")
    bench.add_argument("--sizes", type=_size, nargs="+", default=[10, 1000, 100_000, 1_000_000],
                       help="array sizes (default: 10 1e3 1e5 1e6)")
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for adamc (and torch); default: adamc's setting")
    bench.add_argument("--plot", metavar="PNG", default=None,
                       help="save a plot of ns per element against N")
    args = parser.parse_args(argv)
    if args.command == "info":
        show_config()
    elif args.command == "bench":
        if args.threads is not None and args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        from ._bench import run_bench
        run_bench(args.sizes, args.dtype, args.threads, args.plot)
    else:
        run_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
