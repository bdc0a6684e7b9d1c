"""Gradient descent, momentum, RMSprop, Adam and AMSGrad side by side.

1. f(x) = (x - 2)**2 from x = 8 and the Rosenbrock function from (-1.5, 2):
   trajectories through adamc.minimize(..., options={"return_all": True}).
2. Softmax regression on scikit-learn's bundled digits data (optional dependency,
   no download), trained with each optimizer's step() on mini-batches; the
   training-loss curves share one plot.

Run:  python examples/compare_optimizers.py [--outdir DIR]
"""
import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import rosen, rosen_der

import adamc

# name -> (minimize method, options); learning rates tuned per problem below
OPTIMIZERS = {
    "GD": ("sgd", {}),
    "momentum": ("sgd", {"momentum": 0.9}),
    "RMSprop": ("rmsprop", {}),
    "Adam": ("adam", {}),
    "AMSGrad": ("amsgrad", {}),
}
QUADRATIC_LR = {"GD": 0.1, "momentum": 0.02, "RMSprop": 0.1, "Adam": 0.1, "AMSGrad": 0.1}
ROSEN_LR = {"GD": 1e-3, "momentum": 1e-4, "RMSprop": 1e-3, "Adam": 2e-2, "AMSGrad": 2e-2}
DIGITS_LR = {"GD": 0.1, "momentum": 0.05, "RMSprop": 1e-3, "Adam": 1e-2, "AMSGrad": 1e-2}


# one look per optimizer in every panel. Adam is drawn first, wide and pale, so that
# the lines on top of it (AMSGrad dashed, the others thin) stay visible where they
# run together
STYLES = {
    "GD": dict(color="C0", lw=1.3, zorder=4),
    "momentum": dict(color="C1", lw=1.3, ls=(0, (4, 2)), zorder=5),
    "RMSprop": dict(color="C2", lw=1.3, zorder=4),
    "Adam": dict(color="C3", lw=4.0, alpha=0.45, zorder=2),
    "AMSGrad": dict(color="C4", lw=1.5, ls="--", zorder=3),
}
MARKERS = {"GD": "o", "momentum": "s", "RMSprop": "^", "Adam": "D", "AMSGrad": "X"}
MARKER_SIZES = {"GD": 13, "momentum": 7, "RMSprop": 9, "Adam": 14, "AMSGrad": 9}


def line_style(name):
    return STYLES[name]


def marker_style(name):
    return {"marker": MARKERS[name], "color": STYLES[name]["color"]}


def paths(fun, x0, lrs, steps):
    out = {}
    for name, (method, opts) in OPTIMIZERS.items():
        res = adamc.minimize(fun, x0, method=method, jac=True,
                             options=dict(opts, lr=lrs[name], maxiter=steps, gtol=0.0,
                                          return_all=True))
        out[name] = np.array(res.allvecs)
    return out


def quadratic(x):
    return float((x[0] - 2) ** 2), 2 * (x - 2)


def rosenbrock(x):
    return rosen(x), rosen_der(x)


def softmax_loss(params, X, y):
    """Mean cross-entropy of softmax(X W + b) and its gradients."""
    W, b = params
    z = X @ W + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    p /= n
    return loss, [X.T @ p, p.sum(axis=0)]


def train_digits(epochs=15, batch_size=64, seed=0):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("scikit-learn is not installed: skipping the digits comparison "
              "(pip install scikit-learn)")
        return None
    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    classes = 10
    curves = {}
    for name, (method, opts) in OPTIMIZERS.items():
        cls = {"sgd": adamc.SGD, "rmsprop": adamc.RMSprop, "adam": adamc.Adam,
               "amsgrad": adamc.Adam}[method]
        kw = dict(opts, amsgrad=True) if method == "amsgrad" else dict(opts)
        rng = np.random.default_rng(seed)
        params = [rng.normal(0, 0.01, (X.shape[1], classes)), np.zeros(classes)]
        opt = cls(params, lr=DIGITS_LR[name], **kw)
        curve = [softmax_loss(params, X, y)[0]]
        for Xb, yb in adamc.minibatches(X, y, batch_size=batch_size, epochs=epochs, seed=seed):
            opt.step(softmax_loss(params, Xb, yb)[1])
            if opt.step_count % -(-len(y) // batch_size) == 0:
                curve.append(softmax_loss(params, X, y)[0])
        accuracy = np.mean(np.argmax(X @ params[0] + params[1], axis=1) == y)
        curves[name] = (np.array(curve), accuracy)
    return curves


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)

    quad = paths(quadratic, np.array([8.0]), QUADRATIC_LR, 100)
    rosen_paths = paths(rosenbrock, np.array([-1.5, 2.0]), ROSEN_LR, 3000)
    print(f"{'optimizer':<10} {'x after 100 steps on (x-2)^2':>30} {'Rosenbrock f after 3000':>26}")
    for name in OPTIMIZERS:
        print(f"{name:<10} {quad[name][-1][0]:>30.6f} {rosen(rosen_paths[name][-1]):>26.3e}")

    digits = train_digits()
    if digits:
        print(f"\n{'optimizer':<10} {'digits loss':>12} {'accuracy':>9}  (softmax regression, 15 epochs)")
        for name, (curve, acc) in digits.items():
            print(f"{name:<10} {curve[-1]:>12.4f} {acc:>9.3f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.outdir.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.6),
                                        gridspec_kw={"width_ratios": [1, 1.15, 1]})
    for name, path in quad.items():
        ax1.plot(path[:, 0], label=f"{name} (lr {QUADRATIC_LR[name]})", **line_style(name))
    ax1.axhline(2.0, color="k", lw=0.6, ls=":")
    ax1.set_xlabel("step")
    ax1.set_ylabel("x")
    ax1.set_title("f(x) = (x - 2)$^2$ from x = 8")
    ax1.legend(fontsize=8)

    xs, ys = np.meshgrid(np.linspace(-2, 1.6, 300), np.linspace(-0.6, 2.6, 300))
    zs = rosen(np.array([xs, ys]))
    ax2.contour(xs, ys, np.log10(zs + 1e-3), levels=20, cmap="Greys", linewidths=0.5)
    for name, path in rosen_paths.items():  # every path follows the valley
        ax2.plot(path[:, 0], path[:, 1], **line_style(name))
    for name, path in rosen_paths.items():  # the end points on top of every line;
        # sizes decrease so that end points that (nearly) coincide all show
        ax2.plot(*path[-1], ls="none", ms=MARKER_SIZES[name], mec="k", zorder=10,
                 label=f"{name} stops at ({path[-1, 0]:.2f}, {path[-1, 1]:.2f})",
                 **marker_style(name))
    for text, names, offset in (("GD, momentum", ("GD", "momentum"), (0.12, -0.12)),
                                ("RMSprop", ("RMSprop",), (0.12, -0.15)),
                                ("Adam, AMSGrad", ("Adam", "AMSGrad"), (-0.25, 0.35))):
        end = rosen_paths[names[0]][-1]
        ax2.annotate(text, end, xytext=(end[0] + offset[0], end[1] + offset[1]), fontsize=8,
                     arrowprops={"arrowstyle": "-", "lw": 0.6}, zorder=12)
    ax2.plot([-1.5], [2.0], "ko", ms=5, zorder=10)
    ax2.annotate("start", (-1.5, 2.0), xytext=(-1.85, 2.3), fontsize=8,
                 arrowprops={"arrowstyle": "-", "lw": 0.6})
    ax2.plot([1], [1], "k*", ms=8, mfc="gold", mew=0.6, zorder=11, label="minimum (1, 1)")
    ax2.set_xlabel("$x_1$")
    ax2.set_ylabel("$x_2$")
    ax2.set_title("Rosenbrock from (-1.5, 2): paths, 3000 steps")
    ax2.legend(fontsize=7.5, loc="lower left")

    for name, path in rosen_paths.items():
        f = np.array([rosen(p) for p in path])
        ax3.plot(f, label=f"{name} (lr {ROSEN_LR[name]}): f = {f[-1]:.1e}", **line_style(name))
    ax3.set_yscale("log")
    ax3.set_xlabel("step")
    ax3.set_ylabel("f(x) (Rosenbrock)")
    ax3.set_title("Rosenbrock: f along each path")
    ax3.legend(fontsize=7.5, loc="lower left")
    fig.tight_layout()
    out1 = args.outdir / "compare_optimizers_trajectories.png"
    fig.savefig(out1, dpi=120)
    print(f"\nsaved {out1}")

    if digits:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for name, (curve, acc) in digits.items():
            ax.plot(curve, label=f"{name} (lr {DIGITS_LR[name]}, acc {acc:.3f})",
                    marker=MARKERS[name], ms=5, **line_style(name))
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (cross-entropy)")
        ax.set_title("Softmax regression on digits")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out2 = args.outdir / "compare_optimizers_digits.png"
        fig.savefig(out2, dpi=120)
        print(f"saved {out2}")
    return quad, rosen_paths, digits


if __name__ == "__main__":
    main()
