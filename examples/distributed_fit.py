"""Distributed logistic regression: the data split across MPI ranks, one fit.

Synthetic data (20,000 samples, 20 features, labels from a known weight vector with
10% label noise) are split across the ranks; each rank iterates over mini-batches of
its own part only. ``adamc.minimize`` with ``options={"comm": comm}`` averages the
loss and gradient over the ranks at every iteration (weighted by batch sizes, in
rank order, so the run gives the same bits on any cluster with this number of
ranks), and every rank ends with the same result. The parameters also go through a
``DistributedOptimizer`` in sharded mode for a few full-batch refinement steps.
Rank 0 prints every rank's result (gathered, one line per rank in rank order) and
plots the loss of every iteration with its running mean.

Run:  mpiexec -n 2 python examples/distributed_fit.py [--outdir DIR]
      (needs pip install 'adamc[mpi]'; also runs as a single process)
"""
import argparse
from pathlib import Path

import numpy as np

try:
    from mpi4py import MPI
except ImportError:
    raise SystemExit("examples/distributed_fit.py needs mpi4py and an MPI library: install "
                     "them with pip install 'adamc[mpi]' (from a clone: pip install -e "
                     "\".[mpi]\"), then run mpiexec -n 2 python examples/distributed_fit.py") \
        from None

import adamc
from adamc.distributed import DistributedOptimizer, abort_on_error

N_SAMPLES, N_FEATURES = 20_000, 20


def make_data(seed=0):
    """The same synthetic data set on every rank (each rank then keeps its part)."""
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(N_FEATURES)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES))
    y = (X @ w_true + 0.5 > 0).astype(np.float64)
    flip = rng.random(N_SAMPLES) < 0.1
    y[flip] = 1 - y[flip]
    return X, y


def loss_and_grad(params, X, y):
    """Mean logistic loss of (w, b) on (X, y) and its gradient."""
    z = X @ params[:-1] + params[-1]
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    residual = 0.5 * (1 + np.tanh(0.5 * z)) - y  # sigmoid(z) - y, overflow-free
    grad = np.empty_like(params)
    grad[:-1] = X.T @ residual / len(y)
    grad[-1] = residual.mean()
    return float(loss), grad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    X, y = make_data()
    mine = np.array_split(np.arange(N_SAMPLES), size)[rank]
    X_local, y_local = X[mine], y[mine]

    history = []
    batches = adamc.minibatches(X_local, y_local, batch_size=64, epochs=3, seed=rank)
    result = adamc.minimize(
        loss_and_grad, np.zeros(N_FEATURES + 1), jac=True,
        callback=lambda intermediate_result: history.append(intermediate_result.fun),
        options={"comm": comm, "batches": batches, "lr": 0.01})

    # a few full-batch steps, the Adam state sharded across the ranks
    params = result.x.copy()
    opt = DistributedOptimizer(adamc.Adam(params, lr=1e-3), comm, mode="sharded")
    for _ in range(20):
        opt.step(loss_and_grad(params, X_local, y_local)[1])

    loss = comm.allreduce(loss_and_grad(params, X_local, y_local)[0] * len(y_local)) / N_SAMPLES
    correct = comm.allreduce(int(np.sum((X_local @ params[:-1] + params[-1] > 0) == y_local)))
    line = (f"rank {rank} of {size}: {result.nit} iterations, status {result.status}, "
            f"loss {loss:.6f}, accuracy {correct / N_SAMPLES:.4f}, "
            f"w[:3] = {np.array2string(params[:3], precision=6)}")
    # one rank prints every rank's line, in rank order: ranks printing themselves
    # share one terminal and their lines can come out interleaved or joined
    lines = comm.gather(line, root=0)
    if rank == 0:
        print("\n".join(lines), flush=True)

    if rank == 0:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.outdir.mkdir(parents=True, exist_ok=True)
        history = np.array(history)
        per_epoch = len(history) // 3  # 3 epochs of the same number of batches
        window = 25
        running = np.convolve(history, np.ones(window) / window, mode="valid")
        fig, ax = plt.subplots(figsize=(7, 4))
        steps = np.arange(1, len(history) + 1)
        ax.plot(steps, history, lw=0.6, color="C0", alpha=0.35,
                label="loss of each iteration's mini-batches (64 rows per rank)")
        ax.plot(steps[window - 1:], running, lw=2, color="C0",
                label=f"running mean over the last {window} iterations")
        ax.axhline(loss, color="C3", lw=1, ls="--",
                   label=f"loss on all {N_SAMPLES:,} samples after 20 more sharded "
                         f"full-batch steps: {loss:.3f}")
        for epoch in range(1, 3):
            ax.axvline(epoch * per_epoch + 0.5, color="0.6", lw=0.7, ls=":")
        for epoch in range(3):
            ax.text((epoch + 0.5) * per_epoch, 0.99, f"epoch {epoch + 1}", ha="center",
                    va="top", fontsize=8, color="0.4", transform=ax.get_xaxis_transform())
        ax.set_xlabel("iteration (one Adam update)")
        ax.set_ylabel("mean logistic loss (averaged over ranks)")
        ax.set_title(f"distributed Adam on {size} rank{'s' if size > 1 else ''}: "
                     f"{result.nit} iterations")
        low, high = history.min(), history.max()
        ax.set_ylim(low - 0.05 * (high - low), high + 0.45 * (high - low))  # legend room
        ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1, 0.94))
        fig.tight_layout()
        fig.savefig(args.outdir / "distributed_fit.png", dpi=120)
        print(f"saved {args.outdir / 'distributed_fit.png'}")


if __name__ == "__main__":
    with abort_on_error():  # an error on one rank ends the job instead of a hang
        main()
