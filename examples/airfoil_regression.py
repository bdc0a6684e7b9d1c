"""Mini-batch Adam on the NASA airfoil self-noise data (Dive into Deep Learning, 11.10).

Linear regression of the scaled sound pressure level on the five other (standardized)
columns, squared loss (y_hat - y)**2 / 2 averaged over each mini-batch of 10 rows,
2 epochs, Adam with lr 0.01 and eps 1e-6, weights initialized from N(0, 0.01**2).
The book reports a final mean training loss of about 0.244.

Run:  python examples/airfoil_regression.py [--outdir DIR] [--seed N]
"""
import argparse
from pathlib import Path

import numpy as np

import adamc

DATA = Path(__file__).resolve().parent / "data" / "airfoil_self_noise.dat"


def load_airfoil(path=DATA):
    """Standardized features (1503, 5) and target (1503,)."""
    data = np.loadtxt(path)
    data = (data - data.mean(axis=0)) / data.std(axis=0)
    return data[:, :-1], data[:, -1]


def loss_and_grad(params, X, y):
    """Mean of (X w + b - y)**2 / 2 over the rows, and its gradient."""
    w, b = params[:-1], params[-1]
    residual = X @ w + b - y
    grad = np.empty_like(params)
    grad[:-1] = X.T @ residual / len(y)
    grad[-1] = residual.mean()
    return 0.5 * float(residual @ residual) / len(y), grad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X, y = load_airfoil()
    rng = np.random.default_rng(args.seed)
    x0 = np.append(rng.normal(0.0, 0.01, X.shape[1]), 0.0)
    batch_size, epochs = 10, 2
    batches_per_epoch = -(-len(y) // batch_size)

    curve = [(0.0, loss_and_grad(x0, X, y)[0])]

    def record(intermediate_result):
        if intermediate_result.nit % 10 == 0:
            full = loss_and_grad(intermediate_result.x, X, y)[0]
            curve.append((intermediate_result.nit / batches_per_epoch, full))

    res = adamc.minimize(
        loss_and_grad, x0, jac=True, callback=record,
        options=dict(lr=0.01, eps=1e-6, batches=adamc.minibatches(
            X, y, batch_size=batch_size, epochs=epochs, seed=args.seed)))
    final = loss_and_grad(res.x, X, y)[0]
    curve.append((res.nit / batches_per_epoch, final))
    print(f"{res.message} ({res.nit} updates, {res.nfev} evaluations)")
    print(f"final mean training loss: {final:.3f} (Dive into Deep Learning: about 0.244)")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.outdir.mkdir(parents=True, exist_ok=True)
    epochs_axis, losses = zip(*curve)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs_axis, losses, label=f"adamc Adam: {final:.3f} after 2 epochs")
    ax.axhline(0.244, color="k", lw=0.7, ls=":", label="the book: about 0.244")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss, (y_hat - y)$^2$ / 2")
    ax.legend(fontsize=8)
    ax.set_title("Airfoil self-noise: mini-batch Adam (adamc)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = args.outdir / "airfoil_loss.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")
    return final


if __name__ == "__main__":
    main()
