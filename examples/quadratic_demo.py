"""The classic demonstration: Adam beside plain gradient descent on f(x) = (x - 2)**2
from x = 8, with the same learning rate (0.1) and 50 steps.

Adam's bias-corrected step is about lr whatever the size of the gradient, so it walks
towards the minimum at a steady pace; gradient descent contracts x - 2 by 1 - 2 lr per
step and gets there first on this well-conditioned quadratic. The plot shows the loss
curve with both paths on it, and x against the step.

Run:  python examples/quadratic_demo.py [--outdir DIR] [--lr 0.1] [--steps 50]
"""
import argparse
from pathlib import Path

import numpy as np

import adamc


def f(x):
    return (x - 2.0) ** 2


def grad(x):
    return 2.0 * (x - 2.0)


def run(opt_class, lr, steps, x0=8.0):
    x = np.array([x0])
    opt = opt_class(x, lr=lr)
    path = [x0]
    for _ in range(steps):
        opt.step(grad(x))
        path.append(float(x[0]))
    return np.array(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "output")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)

    paths = {"Adam": run(adamc.Adam, args.lr, args.steps),
             "gradient descent (SGD)": run(adamc.SGD, args.lr, args.steps)}
    for name, path in paths.items():
        print(f"{name:>24}: x after {args.steps} steps = {path[-1]:.6f}, "
              f"f = {f(path[-1]):.3e}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.outdir.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = np.linspace(-1, 9, 400)
    ax1.plot(xs, f(xs), color="0.6", lw=1, label="f(x) = (x - 2)$^2$")
    for (name, path), marker, color, offset in zip(paths.items(), ("o", "s"), ("C0", "C1"),
                                                   ((-8, -16), (-6, 8))):
        ax1.plot(path, f(path), marker, ms=3, color=color, label=f"{name}, every step")
        ax1.plot(path[-1], f(path[-1]), marker, ms=10, mfc="none", mec=color, mew=1.5)
        ax2.plot(path, color=color, label=name)
        ax2.plot(len(path) - 1, path[-1], marker, color=color, ms=6)
        ax2.annotate(f"x = {path[-1]:.2f}", (len(path) - 1, path[-1]),
                     xytext=offset, textcoords="offset points", ha="right", fontsize=8)
    ax1.annotate(f"Adam after {args.steps} steps", (paths["Adam"][-1], f(paths["Adam"][-1])),
                 xytext=(paths["Adam"][-1] - 4.3, f(paths["Adam"][-1]) + 9), fontsize=8,
                 arrowprops={"arrowstyle": "->", "lw": 0.7})
    ax1.set_xlabel("x")
    ax1.set_ylabel("f(x)")
    ax1.set_title(f"loss surface and paths from x = 8 (lr {args.lr})")
    ax1.legend()
    ax2.axhline(2.0, color="k", lw=0.6, ls=":")
    ax2.set_xlabel("step")
    ax2.set_ylabel("x")
    ax2.set_title("x against the step")
    ax2.legend()
    fig.tight_layout()
    out = args.outdir / "quadratic_demo.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")
    return paths


if __name__ == "__main__":
    main()
