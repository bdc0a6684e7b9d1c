"""adamc inside a NumPy training loop: a small neural network fitted with step().

A one-hidden-layer tanh network (float32) learns y = sin(3x) from noisy samples.
The loop shows what a pipeline usually needs: parameters as a list of arrays updated
in place, AdamW with a cosine learning-rate schedule and warm-up, gradient clipping,
shuffled mini-batches, and a checkpoint written half-way and resumed from, which gives
exactly the same bits as training straight through.

Run:  python examples/numpy_pipeline.py [--outdir DIR] [--epochs 200]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

import adamc
from adamc import schedules

HIDDEN = 32


def init(rng):
    return [rng.normal(0, 1.0, (1, HIDDEN)).astype(np.float32),
            np.zeros(HIDDEN, np.float32),
            rng.normal(0, 1.0 / np.sqrt(HIDDEN), (HIDDEN, 1)).astype(np.float32),
            np.zeros(1, np.float32)]


def forward(params, X):
    W1, b1, W2, b2 = params
    h = np.tanh(X @ W1 + b1)
    return h, h @ W2 + b2


def loss_and_grads(params, X, y):
    """Mean squared error and its gradients with respect to every parameter."""
    W1, b1, W2, b2 = params
    h, out = forward(params, X)
    r = out - y
    n = len(y)
    dout = 2 * r / n
    dh = (dout @ W2.T) * (1 - h * h)
    grads = [X.T @ dh, dh.sum(axis=0), h.T @ dout, dout.sum(axis=0)]
    return float((r * r).mean()), [g.astype(np.float32) for g in grads]


def make_optimizer(params, total_steps):
    return adamc.AdamW(params, lr=schedules.cosine_decay(3e-2, total_steps, min_lr=1e-4,
                                                         warmup_steps=50),
                       weight_decay=1e-4, max_grad_norm=5.0)


def train(params, opt, X, y, batches, curve=None, stop_after=None):
    for k, (Xb, yb) in enumerate(batches):
        if stop_after is not None and k == stop_after:
            return False
        loss, grads = loss_and_grads(params, Xb, yb)
        opt.step(grads)
        if curve is not None and opt.step_count % 50 == 0:
            curve.append((opt.step_count, loss_and_grads(params, X, y)[0],
                          opt.get_last_lr()[0]))  # the rate this step used
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "output")
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.uniform(-1.5, 1.5, (512, 1)).astype(np.float32)
    y = (np.sin(3 * X) + 0.1 * rng.standard_normal(X.shape)).astype(np.float32)
    batch_size = 32
    total = args.epochs * -(-len(X) // batch_size)

    def batches():
        return adamc.minibatches(X, y, batch_size=batch_size, epochs=args.epochs, seed=1)

    # 1. straight through
    params = init(np.random.default_rng(2))
    opt = make_optimizer(params, total)
    curve = [(0, loss_and_grads(params, X, y)[0], opt.get_last_lr()[0])]
    train(params, opt, X, y, batches(), curve)
    final = loss_and_grads(params, X, y)[0]
    print(f"trained {opt.step_count} steps: training MSE {final:.4f} "
          f"(noise variance 0.01)")

    # 2. interrupted half-way, checkpointed, resumed in a "new process"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "mlp.npz"
        first = init(np.random.default_rng(2))
        opt1 = make_optimizer(first, total)
        train(first, opt1, X, y, batches(), stop_after=total // 2)
        adamc.save(opt1, ckpt)
        resumed_params = [np.empty_like(p) for p in first]
        opt2 = adamc.load(ckpt, resumed_params)
        remaining = batches()
        for _ in range(total // 2):  # the same shuffles: skip what was used
            next(remaining)
        train(resumed_params, opt2, X, y, remaining)
    same = all(np.array_equal(a, b) for a, b in zip(params, resumed_params))
    print(f"checkpointed and resumed run identical to the straight one: {same}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.outdir.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(11, 4.6))
    layout = fig.add_gridspec(2, 2, height_ratios=[2.2, 1], hspace=0.08)
    ax1 = fig.add_subplot(layout[0, 0])
    lr_axis = fig.add_subplot(layout[1, 0], sharex=ax1)
    ax2 = fig.add_subplot(layout[:, 1])
    steps, losses, lrs = zip(*curve)
    ax1.semilogy(steps, losses, color="C0", label="training MSE (all 512 samples)")
    ax1.axhline(0.01, color="k", lw=0.7, ls=":", label="noise variance 0.01")
    for ax in (ax1, lr_axis):
        ax.axvline(total // 2, color="0.5", lw=0.7, ls="--")
    ax1.plot([], [], color="0.5", lw=0.7, ls="--",
             label="checkpoint; the resumed run is bit-identical")
    ax1.set_ylabel("training MSE")
    ax1.set_title("AdamW, cosine schedule with warm-up")
    ax1.legend(fontsize=8, loc="upper right")
    ax1.tick_params(labelbottom=False)
    lr_axis.plot(steps, lrs, color="C1")
    lr_axis.set_ylim(0, 1.2 * max(lrs))
    lr_axis.set_xlabel("step")
    lr_axis.set_ylabel("lr (get_last_lr)", fontsize=9)
    grid = np.linspace(-1.5, 1.5, 300, dtype=np.float32)[:, None]
    ax2.plot(X[:, 0], y[:, 0], ".", color="0.6", ms=3, label="data (noise sd 0.1)")
    ax2.plot(grid[:, 0], np.sin(3 * grid[:, 0]), "k:", label="sin(3x)")
    ax2.plot(grid[:, 0], forward(params, grid)[1][:, 0], color="C0", label="network")
    ax2.set_ylim(-1.45, 1.75)  # room above the data for the legend
    ax2.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    ax2.set_xlabel("x")
    ax2.set_ylabel("y")
    ax2.set_title(f"fit after {opt.step_count} steps: training MSE {final:.4f}")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.11, top=0.93, wspace=0.22)
    out = args.outdir / "numpy_pipeline.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")
    return final, same


if __name__ == "__main__":
    main()
