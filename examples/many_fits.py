"""One fit per pixel of a synthetic image stack with adamc.minimize_many.

A 64 x 64 image is recorded at 24 times (as in fluorescence-lifetime imaging): every
pixel decays as y(t) = A * exp(-t / tau) + c with its own amplitude A, lifetime tau
and background c, plus noise. The 4,096 three-parameter fits run as one vectorised
loop: the objective gets the (m, 3) parameters of the m pixels still running and the
rows of their data (batch_args), and each pixel stops on its own tolerance. A few
pixels are also fitted with scipy.optimize.least_squares as a check.

Run:  python examples/many_fits.py [--outdir DIR] [--size 64]
"""
import argparse
import time
from pathlib import Path

import numpy as np
from scipy import optimize

import adamc

TIMES = np.linspace(0.0, 8.0, 24)


def true_maps(size):
    """Amplitude: two bright discs; lifetime: a left-to-right ramp; background: a
    faint vertical gradient."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    amp = 0.4 + 1.2 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.35) ** 2) / 0.02) \
        + 0.9 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.7) ** 2) / 0.04)
    tau = 0.6 + 2.2 * xx
    background = 0.05 + 0.1 * yy
    return amp, tau, background


def decay(p, t=TIMES):
    """Model of every row of p = (A, log tau, c), shape (m, 3) -> (m, len(t))."""
    return p[:, 0:1] * np.exp(-t / np.exp(p[:, 1:2])) + p[:, 2:3]


def loss_and_grad(p, y):
    """Half the sum of squared residuals of every pixel (m,) and its gradient (m, 3)."""
    rate = np.exp(-p[:, 1:2])
    e = np.exp(-TIMES * rate)
    r = p[:, 0:1] * e + p[:, 2:3] - y
    g = np.column_stack([(r * e).sum(1),
                         (r * p[:, 0:1] * e * TIMES * rate).sum(1),  # d/d(log tau)
                         r.sum(1)])
    return 0.5 * (r * r).sum(1), g


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "output")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(7)
    amp, tau, background = true_maps(args.size)
    truth = np.column_stack([amp.ravel(), np.log(tau.ravel()), background.ravel()])
    stack = decay(truth) + 0.02 * rng.standard_normal((truth.shape[0], TIMES.size))
    B = stack.shape[0]

    x0 = np.tile([1.0, 0.0, 0.0], (B, 1))  # A = 1, tau = 1, c = 0 for every pixel
    # lifetimes between 0.1 and 20 (log tau bounded): keeps exp() sane on every pixel
    bounds = [(0.0, None), (np.log(0.1), np.log(20.0)), (None, None)]
    t0 = time.perf_counter()
    res = adamc.minimize_many(loss_and_grad, x0, jac=True, bounds=bounds,
                              batch_args=(stack,),
                              options={"lr": 0.05, "gtol": 1e-5, "maxiter": 5000})
    seconds = time.perf_counter() - t0
    fit_amp = res.x[:, 0].reshape(amp.shape)
    fit_tau = np.exp(res.x[:, 1]).reshape(tau.shape)
    rel_err = np.abs(fit_tau - tau) / tau
    print(f"{B} pixels fitted in {seconds:.2f} s ({B / seconds:,.0f} fits/s): {res.message}")
    print(f"iterations per pixel: median {np.median(res.nit):.0f}, "
          f"max {res.nit.max()}; objective calls: {res.nfev.max()} at most")
    print(f"lifetime error: median {100 * np.median(rel_err):.2f}%, "
          f"95th percentile {100 * np.percentile(rel_err, 95):.2f}%")

    # check some pixels against least_squares (Levenberg-Marquardt, one pixel at a time)
    check = rng.choice(B, 100, replace=False)
    worst = 0.0
    for i in check:
        ls = optimize.least_squares(lambda p: decay(p[None])[0] - stack[i], x0[i],
                                    method="lm")
        worst = max(worst, res.fun[i] / (0.5 * ls.fun @ ls.fun) - 1)
    print(f"least_squares check on {check.size} pixels: loss at most "
          f"{100 * worst:.4f}% above least_squares'")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(15, 7.2), constrained_layout=True)
    t_lim = (tau.min(), tau.max())
    a_lim = (0, amp.max() * 1.05)
    panels = [
        (axes[0, 0], amp, "true amplitude A", "magma", a_lim),
        (axes[0, 1], tau, "true lifetime tau", "viridis", t_lim),
        (axes[0, 2], stack[:, 0].reshape(amp.shape), "recorded frame at t = 0", "gray", None),
        (axes[0, 3], res.nit.reshape(amp.shape), "iterations until the pixel stopped",
         "cividis", None),
        (axes[1, 0], fit_amp, "fitted amplitude A", "magma", a_lim),
        (axes[1, 1], fit_tau, "fitted lifetime tau", "viridis", t_lim),
        (axes[1, 2], 100 * rel_err, "lifetime error |fit - true| / true (%)", "Reds",
         (0, float(np.percentile(100 * rel_err, 99)))),  # a few noisy pixels saturate
    ]
    for ax, image, title, cmap, lim in panels:
        im = ax.imshow(image, cmap=cmap, vmin=None if lim is None else lim[0],
                       vmax=None if lim is None else lim[1], origin="lower")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.85)
    ax = axes[1, 3]
    for i, color in zip([int(np.argmax(amp.ravel())), int(np.argmin(amp.ravel()))],
                        ["tab:red", "tab:blue"]):
        row, col = divmod(i, args.size)
        ax.plot(TIMES, stack[i], "o", ms=3.5, color=color,
                label=f"pixel (row {row}, column {col}): data")
        fine = np.linspace(TIMES[0], TIMES[-1], 200)
        ax.plot(fine, decay(res.x[i:i + 1], fine)[0], "-", color=color,
                label=f"fit, tau = {np.exp(res.x[i, 1]):.2f} (true {tau.ravel()[i]:.2f})")
    ax.set_xlabel("time")
    ax.set_ylabel("signal")
    ax.set_title("the brightest and the dimmest pixel", fontsize=10)
    ax.legend(fontsize=7.5)
    fig.suptitle(f"{B:,} per-pixel fits of y = A exp(-t/tau) + c with adamc.minimize_many "
                 f"(every pixel stops on its own test, |gradient| <= 1e-5)")
    args.outdir.mkdir(parents=True, exist_ok=True)
    out = args.outdir / "many_fits.png"
    fig.savefig(out, dpi=110)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
