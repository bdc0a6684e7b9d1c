"""Many small fits at once: adamc.minimize_many against SciPy loops, torch and jax.

The problem (issue 14): B independent Gaussian-peak fits, 4 parameters (amplitude,
centre, log width, offset), 39 points each, noise 0.05, data drawn with a fixed seed,
every fit started at (2, 0, 0, 0). A fit counts as converged when its loss
0.5 * sum(r**2) is within 1% of a tight L-BFGS-B optimum of that problem (ftol 1e-15,
gtol 1e-12; the lower of it and the least_squares result).

Contenders, on 1 thread unless stated, in float64, timed in interleaved rounds (medians):

- scipy ``least_squares(method="lm")`` in a loop (analytic Jacobian);
- scipy ``minimize(method="L-BFGS-B")`` in a loop (default tolerances);
- ``adamc.minimize_many`` with per-problem stopping (lr 0.05, gtol as given; the
  default scales: x_scale and f_scale "auto");
- ``adamc.minimize_many`` with no options (the reduce_on_plateau lr; every fit stops
  when its schedule is exhausted);
- ``adamc.minimize_many`` for 500 fixed iterations (gtol 0), as the next two run;
- torch: ``torch.optim.Adam(fused=True)`` on a (B, 4) tensor, autograd, 500 iterations;
- jax: ``jax.vmap`` of an optax Adam loop (``lax.fori_loop``), jit, 500 iterations,
  compile excluded (when jax and optax are installed);
- ``adamc.minimize_many`` with a numba ``cfunc`` objective (a ``scipy.LowLevelCallable``
  that gets the problem's index; when numba is installed): every fit runs in C, on 1
  and on 2 adamc threads (the only contenders on 2 threads). Two versions of the same
  objective: "plain" (the loop written plainly; numba calls the C library's scalar
  ``exp`` per point) and "SIMD" (written so that LLVM vectorises it; see
  ``cfunc_runner``).

The adamc runs call the same NumPy objective (rows in blocks of 512, which keeps its
temporaries in the cache). The cost of an iteration against the number of running
problems is measured inside a real per-problem-stopping run: the time between two
calls of the objective (step, stopping tests, compaction and objective), with the
number of problems the call received.

Run:  python benchmarks/bench_many.py [--sizes 1000 10000] [--rounds 3]
Writes benchmarks/results/bench_many.{json,md,png}.
"""
from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402
from scipy import optimize as so  # noqa: E402

import adamc  # noqa: E402
from _common import machine, markdown_table, write_outputs  # noqa: E402

T = np.linspace(-4.0, 4.0, 39)
START = (2.0, 0.0, 0.0, 0.0)
LR = 0.05
FIXED_ITERS = 500
BLOCK = 512
ONES = np.ones(T.size)


def make_data(B: int, seed: int = 2024) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = np.column_stack([rng.uniform(1, 3, B), rng.uniform(-1, 1, B),
                            np.log(rng.uniform(0.6, 1.6, B)), rng.uniform(-0.3, 0.3, B)])
    return true, model(true) + 0.05 * rng.normal(size=(B, T.size))


def model(p: np.ndarray) -> np.ndarray:
    a, mu, ls, c = (p[:, k:k + 1] for k in range(4))
    return a * np.exp(-0.5 * ((T - mu) * np.exp(-ls)) ** 2) + c


def loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = model(p) - y
    return 0.5 * np.einsum("ij,ij->i", r, r)


def objective(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f (m,) and g (m, 4) of the running problems, in blocks of rows (row sums as
    matrix-vector products with a vector of ones)."""
    m = p.shape[0]
    f, g = np.empty(m), np.empty((m, 4))
    for s in range(0, m, BLOCK):
        sl = slice(s, s + BLOCK)
        q = p[sl]
        a, w = q[:, 0], np.exp(-q[:, 2])
        z = T - q[:, 1:2]
        z *= w[:, None]                      # z = (t - mu) / sigma
        e = np.square(z)
        e *= -0.5
        np.exp(e, out=e)                     # e = exp(-z^2 / 2)
        r = e * a[:, None]
        r += q[:, 3:4]
        r -= y[sl]                           # residuals
        f[sl] = 0.5 * np.einsum("ij,ij->i", r, r)
        g[sl, 3] = r @ ONES
        r *= e
        g[sl, 0] = r @ ONES
        r *= z
        g[sl, 1] = (r @ ONES) * (a * w)
        g[sl, 2] = np.einsum("ij,ij->i", r, z) * a
    return f, g


# -- one problem at a time (the SciPy loops) ------------------------------------------

def residual_one(p, y):
    return p[0] * np.exp(-0.5 * ((T - p[1]) * np.exp(-p[2])) ** 2) + p[3] - y


def jac_one(p, y):
    w = np.exp(-p[2])
    z = (T - p[1]) * w
    e = np.exp(-0.5 * z * z)
    ae = p[0] * e
    return np.column_stack([e, ae * z * w, ae * z * z, np.ones_like(T)])


def fg_one(p, y):
    r = residual_one(p, y)
    return 0.5 * float(r @ r), jac_one(p, y).T @ r


def run_lm(y):
    return np.array([so.least_squares(residual_one, START, jac=jac_one, args=(yi,),
                                      method="lm").x for yi in y])


def run_lbfgsb(y, tight=False):
    opts = dict(ftol=1e-15, gtol=1e-12, maxiter=20000, maxfun=40000) if tight else {}
    return np.array([so.minimize(fg_one, START, args=(yi,), jac=True, method="L-BFGS-B",
                                 options=opts).x for yi in y])


# -- vectorised -----------------------------------------------------------------------

def run_adamc(y, gtol, maxiter=10000):
    x0 = np.tile(START, (len(y), 1))
    res = adamc.minimize_many(objective, x0, jac=True, batch_args=(y,),
                              options={"lr": LR, "gtol": gtol, "maxiter": maxiter})
    return res.x, res


def run_adamc_defaults(y):
    """minimize_many with no options: x_scale and f_scale "auto", backtracking, the
    reduce_on_plateau lr, each fit ending when its plateau schedule is exhausted."""
    return adamc.minimize_many(objective, np.tile(START, (len(y), 1)), jac=True,
                               batch_args=(y,))


def run_adamc_traced(y, gtol):
    """A per-problem-stopping run that records when the objective is called and on
    how many problems."""
    calls: list[tuple[float, int]] = []

    def traced(p, yy):
        calls.append((time.perf_counter(), p.shape[0]))
        return objective(p, yy)

    x0 = np.tile(START, (len(y), 1))
    adamc.minimize_many(traced, x0, jac=True, batch_args=(y,),
                        options={"lr": LR, "gtol": gtol, "maxiter": 10000})
    times = np.array([c[0] for c in calls])
    running = np.array([c[1] for c in calls])
    # iteration k: from the call on the iterate k-1 to the call on iterate k
    return running[:-1], np.diff(times)


def torch_runner():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    tt = torch.tensor(T)

    def run(y):
        yt = torch.tensor(y)
        p = torch.tensor(np.tile(START, (len(y), 1)), requires_grad=True)
        opt = torch.optim.Adam([p], lr=LR, fused=True)
        for _ in range(FIXED_ITERS):
            opt.zero_grad(set_to_none=False)
            a, mu, ls, c = p[:, 0:1], p[:, 1:2], p[:, 2:3], p[:, 3:4]
            r = a * torch.exp(-0.5 * ((tt - mu) * torch.exp(-ls)) ** 2) + c - yt
            (0.5 * (r * r).sum()).backward()  # rows are independent: the sum separates
            opt.step()
        return p.detach().numpy().copy()

    return run, torch.__version__


def jax_runner():
    try:
        import jax
        import optax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    tt = jnp.asarray(T)
    opt = optax.adam(LR)

    def loss_one(p, y):
        r = p[0] * jnp.exp(-0.5 * ((tt - p[1]) * jnp.exp(-p[2])) ** 2) + p[3] - y
        return 0.5 * jnp.dot(r, r)

    def fit_one(y):
        p = jnp.asarray(START)

        def body(_, carry):
            p, s = carry
            g = jax.grad(loss_one)(p, y)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, FIXED_ITERS, body, (p, opt.init(p)))[0]

    fit = jax.jit(jax.vmap(fit_one))
    compiled: dict[int, object] = {}

    def run(y):
        if len(y) not in compiled:  # compile outside the timed call
            compiled[len(y)] = fit.lower(jnp.asarray(y)).compile()
        return np.asarray(jax.block_until_ready(compiled[len(y)](jnp.asarray(y))))

    return run, f"jax {jax.__version__}, optax {optax.__version__}"


def cfunc_runner():
    """minimize_many with the objective as a numba cfunc that gets the problem's index.

    Two versions of the same objective, both without fastmath's nnan/ninf (so NaN
    still stops a fit):

    - "plain": the loop over the 39 points written plainly. numba calls the C
      library's scalar ``exp`` for every point (this llvmlite has no SVML), so the
      loop cannot be vectorised.
    - "SIMD": ``exp`` written in arithmetic (below, within 0.86 ulp of the correctly
      rounded result on [-708, 709], checked by ``_check_exp``), the sums allowed to be
      reassociated (``fastmath={"reassoc", "contract"}``) and the points padded to a
      multiple of 8 with weight 0: LLVM then vectorises the whole loop, as NumPy's own
      ``exp`` is vectorised for the NumPy objective.
    """
    try:
        import ctypes

        import numba
        from llvmlite import ir
        from numba import types
        from numba.extending import intrinsic
        from scipy import LowLevelCallable
    except ImportError:
        return None
    sig = types.double(types.intc, types.CPointer(types.double),
                       types.CPointer(types.double), types.intp, types.voidptr)

    @numba.cfunc(sig)
    def peak(n, xp, gp, i, data):
        # user_data: [m, t_0 .. t_{m-1}, y of problem 0, y of problem 1, ...]
        x = numba.carray(xp, (n,))
        g = numba.carray(gp, (n,))
        m = int(numba.carray(data, (1,), np.float64)[0])
        buf = numba.carray(data, (1 + m + (i + 1) * m,), np.float64)
        a, mu, w, c = x[0], x[1], np.exp(-x[2]), x[3]
        f = g0 = g1 = g2 = g3 = 0.0
        for k in range(m):
            z = (buf[1 + k] - mu) * w
            e = np.exp(-0.5 * z * z)
            r = a * e + c - buf[1 + m + i * m + k]
            f += 0.5 * r * r
            g0 += r * e
            g1 += r * a * e * z * w
            g2 += r * a * e * z * z
            g3 += r
        g[0], g[1], g[2], g[3] = g0, g1, g2, g3
        return f

    @intrinsic
    def _as_double(typingctx, bits):  # the float64 whose bits are the int64 `bits`
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())
        return types.float64(types.int64), codegen

    fm = {"reassoc", "contract"}

    @numba.njit(inline="always", fastmath=fm)
    def exp_(x):
        # exp(x) = 2**k exp(r): k = round(x / ln 2), r = x - k ln 2 in two parts (Cody
        # and Waite), exp(r) by its Taylor series to degree 13 (|r| <= ln(2) / 2, the
        # remainder is below 5e-18). Below -708 (where 2**k would be subnormal): 0.
        xc = -708.0 if x < -708.0 else x  # NaN stays NaN
        k = np.floor(xc * 1.4426950408889634 + 0.5)
        r = (xc - k * 0.6931471803691238) - k * 1.9082149292705877e-10
        p = 1.0 / 6227020800.0
        for inv_factorial in (1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                              1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0,
                              1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0):
            p = p * r + inv_factorial
        e = p * _as_double((np.int64(k) + 1023) << 52)
        return 0.0 if x < -708.0 else e

    @numba.cfunc(sig, fastmath=fm)
    def peak_simd(n, xp, gp, i, data):
        # user_data: [m, t (m), weight (m), y of problem 0 (m), y of problem 1 (m), ...]
        # with m a multiple of 8; the padding points have weight 0
        x = numba.carray(xp, (n,))
        g = numba.carray(gp, (n,))
        m = int(numba.carray(data, (1,), np.float64)[0])
        buf = numba.carray(data, (1 + (i + 3) * m,), np.float64)
        # slices, so that the loop's indices are known to be in range (no gathers)
        t, weight, yi = buf[1:1 + m], buf[1 + m:1 + 2 * m], buf[1 + (i + 2) * m:]
        a, mu, w, c = x[0], x[1], np.exp(-x[2]), x[3]  # (a scalar: the C library's exp)
        f = g0 = g1 = g2 = g3 = 0.0
        for k in range(m):
            z = (t[k] - mu) * w
            e = exp_(-0.5 * z * z)
            r = (a * e + c - yi[k]) * weight[k]
            re = r * e
            rez = re * z
            f += r * r
            g0 += re
            g1 += rez
            g2 += rez * z
            g3 += r
        # the factors common to every point, as the NumPy objective applies them
        g[0], g[1], g[2], g[3] = g0, g1 * (a * w), g2 * a, g3
        return 0.5 * f

    @numba.njit(fastmath=fm)
    def exp_array(xs):
        out = np.empty_like(xs)
        for k in range(xs.size):
            out[k] = exp_(xs[k])
        return out

    _check_exp(exp_array)

    def plain_data(y):
        return np.concatenate([[T.size], T, np.ravel(y)])

    def simd_data(y):
        m = -(-T.size // 8) * 8
        pad = m - T.size
        weight = np.concatenate([np.ones(T.size), np.zeros(pad)])
        return np.concatenate([[m], T, np.zeros(pad), weight,
                               np.ravel(np.hstack([y, np.zeros((len(y), pad))]))])

    def runner(fn, make_data):
        def run(y, gtol, threads):
            data = make_data(y)
            llc = LowLevelCallable(fn.ctypes, ctypes.c_void_p(data.ctypes.data))
            before = adamc.get_num_threads()
            adamc.set_num_threads(threads)
            try:
                res = adamc.minimize_many(llc, np.tile(START, (len(y), 1)),
                                          options={"lr": LR, "gtol": gtol,
                                                   "maxiter": 10000})
            finally:
                adamc.set_num_threads(before)
            return res.x
        return run

    return ({"plain": runner(peak, plain_data), "SIMD": runner(peak_simd, simd_data)},
            f"numba {numba.__version__}")


def _check_exp(exp_array) -> None:
    """The arithmetic exp of the SIMD cfunc against a long-double exp: at most 1 ulp."""
    xs = np.concatenate([np.linspace(-708.0, 709.0, 200_001),
                         np.random.default_rng(0).uniform(-40.0, 0.0, 100_000)])
    got = exp_array(xs)
    ulps = np.abs(got - np.exp(xs.astype(np.longdouble))) / np.spacing(np.exp(xs))
    assert float(ulps.max()) <= 1.0, f"exp_ is {float(ulps.max()):.2f} ulp off"
    assert exp_array(np.array([-709.0, -1e300, -np.inf])).tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(exp_array(np.array([np.nan]))[0])


# -- the benchmark --------------------------------------------------------------------

def measure(B: int, rounds: int, gtols: list[float]) -> dict:
    true, y = make_data(B)
    t0 = time.perf_counter()
    ref = np.minimum(loss(run_lbfgsb(y, tight=True), y), loss(run_lm(y), y))
    ref_seconds = time.perf_counter() - t0
    contenders: dict[str, object] = {
        "scipy least_squares lm loop": run_lm,
        "scipy L-BFGS-B loop": run_lbfgsb,
    }
    for gtol in gtols:
        contenders[f"adamc.minimize_many (gtol {gtol:g})"] = \
            lambda yy, gtol=gtol: run_adamc(yy, gtol)[0]
    contenders[f"adamc.minimize_many ({FIXED_ITERS} fixed iterations)"] = \
        lambda yy: run_adamc(yy, 0.0, FIXED_ITERS)[0]
    contenders["adamc.minimize_many, no options (plateau lr, stops by itself)"] = \
        lambda yy: run_adamc_defaults(yy).x
    versions = {}
    made = cfunc_runner()
    if made is not None:
        versions["numba"] = made[1]
        for kind, run in made[0].items():
            for gtol in gtols:
                for threads in (1, 2):
                    contenders[f"adamc.minimize_many, numba cfunc {kind} (gtol {gtol:g}, "
                               f"{threads} thread{'s' if threads > 1 else ''})"] = \
                        lambda yy, gtol=gtol, threads=threads, run=run: run(yy, gtol, threads)
            run(y[:8], gtols[0], 1)  # compile outside the timed calls
    for name, maker in (("torch fused Adam + autograd", torch_runner),
                        ("jax vmap + optax adam (jit)", jax_runner)):
        made = maker()
        if made is not None:
            contenders[f"{name} ({FIXED_ITERS} fixed iterations)"] = made[0]
            versions[name] = made[1]
            made[0](y[:8])  # warm-up (and jax: compile this shape once) outside timing
            if name.startswith("jax"):
                made[0](y)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    converged: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            x = fn(y)
            times[name].append(time.perf_counter() - t0)
            converged[name] = float(np.mean(loss(x, y) <= 1.01 * ref))
    stats = {}
    for gtol in gtols:
        _, res = run_adamc(y, gtol)
        stats[f"{gtol:g}"] = {"nit_median": float(np.median(res.nit)),
                              "nit_p90": float(np.percentile(res.nit, 90)),
                              "nit_max": int(res.nit.max()),
                              "statuses": {int(s): int(c) for s, c in
                                           zip(*np.unique(res.status, return_counts=True))}}
    running, cost = run_adamc_traced(y, gtols[0])
    full = cost[running == B]
    tenth = cost[(running >= 0.07 * B) & (running <= 0.13 * B)]
    out = {"B": B, "reference_seconds": ref_seconds, "versions": versions,
           "contenders": {k: {"seconds_median": float(np.median(v)),
                              "seconds_all": [float(t) for t in v],
                              "fits_per_second": B / float(np.median(v)),
                              "converged_fraction": converged[k]} for k, v in times.items()},
           "adamc_iterations": stats,
           "iteration_cost": {"gtol": gtols[0], "running": running.tolist(),
                              "seconds": cost.tolist(),
                              "full_median_ms": float(np.median(full)) * 1e3 if full.size else None,
                              "tenth_median_ms": float(np.median(tenth)) * 1e3 if tenth.size else None}}
    ic = out["iteration_cost"]
    if ic["full_median_ms"] and ic["tenth_median_ms"]:
        ic["tenth_over_full"] = ic["tenth_median_ms"] / ic["full_median_ms"]
    return out


def plot(results: list[dict], path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    big = results[-1]
    names = list(big["contenders"])
    fig, axes = plt.subplots(1, 2, figsize=(12, max(4.8, 0.42 * len(names))))
    rates = [big["contenders"][k]["fits_per_second"] for k in names]
    axes[0].barh(range(len(names)), rates, color=["#888" if "adamc" not in k else "#1f77b4"
                                                  for k in names])
    axes[0].set_yticks(range(len(names)), [k.replace(" (", "\n(") for k in names], fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("fits per second (1 thread unless stated, higher is better)")
    axes[0].set_title(f"B = {big['B']:,} Gaussian-peak fits")
    for i, (r, k) in enumerate(zip(rates, names)):
        axes[0].text(r, i, f" {r:,.0f}  ({100 * big['contenders'][k]['converged_fraction']:.1f}%)",
                     va="center", fontsize=8)
    axes[0].set_xlim(0, max(rates) * 1.45)
    for res, color in zip(results, ["tab:blue", "tab:orange", "tab:green"]):
        ic = res["iteration_cost"]
        running, sec = np.array(ic["running"]), np.array(ic["seconds"]) * 1e3
        axes[1].loglog(running, sec, ".", ms=2.5, alpha=0.35, color=color)
        # the median of each bin of running counts (single points far above it are
        # the process being preempted on a shared machine)
        edges = np.unique(np.geomspace(1, res["B"] + 1, 25).astype(int))
        mid, med = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (running >= lo) & (running < hi)
            if inside.any():
                mid.append(np.sqrt(lo * max(hi - 1, lo)))
                med.append(np.median(sec[inside]))
        axes[1].loglog(mid, med, "-o", ms=3.5, color=color,
                       label=f"B = {res['B']:,} (median per bin; dots: iterations)")
    axes[1].set_xlabel("problems still running (evaluated and updated)")
    axes[1].set_ylabel("time of one iteration, objective included (ms)")
    axes[1].set_title("Cost of an iteration follows the running problems")
    axes[1].legend()
    axes[1].grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gtol", type=float, nargs="+", default=[1e-4, 1e-3])
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot from benchmarks/results/bench_many.json")
    args = parser.parse_args(argv)
    from _common import RESULTS
    if args.plot_only:
        import json
        plot(json.loads((RESULTS / "bench_many.json").read_text())["results"],
             RESULTS / "bench_many.png")
        return
    adamc.set_num_threads(1)
    results = [measure(B, args.rounds, args.gtol) for B in args.sizes]
    info = machine()
    info["load_average_after"] = os.getloadavg()
    md = [f"# Many small fits (issues 14 and 17)\n\n{info['cpu']}, 1 thread unless stated, "
          f"{info['date']}, "
          f"adamc {info['adamc']} ({info['git']}), SIMD {info['simd_level']}; load "
          f"average after the run {info['load_average_after'][0]:.2f} on "
          f"{info['cores']} cores. Medians of {args.rounds} interleaved rounds.\n"]
    for res in results:
        B = res["B"]
        lm = res["contenders"]["scipy least_squares lm loop"]["fits_per_second"]
        rows = [[k, f"{v['fits_per_second']:,.0f}", f"{v['fits_per_second'] / lm:.2f}x",
                 f"{100 * v['converged_fraction']:.1f}%", f"{v['seconds_median']:.3f}"]
                for k, v in res["contenders"].items()]
        md.append(f"\n## B = {B:,}\n\n" + markdown_table(
            ["method", "fits/s", "vs lm loop", "converged (within 1%)", "seconds"], rows))
        its = "; ".join(f"gtol {g}: median {s['nit_median']:.0f}, 90% {s['nit_p90']:.0f}, "
                        f"max {s['nit_max']} iterations"
                        for g, s in res["adamc_iterations"].items())
        ic = res["iteration_cost"]
        md.append(f"\nadamc iterations per problem: {its}.\n")
        scaling = []
        for k, v in res["contenders"].items():
            two = k.replace("1 thread)", "2 threads)")
            if k.endswith("1 thread)") and two in res["contenders"]:
                per_round = (np.array(v["seconds_all"])
                             / np.array(res["contenders"][two]["seconds_all"]))
                scaling.append(f"{k.split(', ', 1)[1].rsplit(', ', 1)[0]}): "
                               f"{np.median(per_round):.2f}x (rounds "
                               f"{per_round.min():.2f}x to {per_round.max():.2f}x)")
        if scaling:
            md.append("2 threads against 1, the median of the per-round ratios: "
                      + "; ".join(scaling) + ".\n")
        if ic.get("tenth_over_full"):
            md.append(f"Iteration cost (gtol {ic['gtol']:g} run): all {B:,} running "
                      f"{ic['full_median_ms']:.3f} ms, about 10% running "
                      f"{ic['tenth_median_ms']:.3f} ms = {100 * ic['tenth_over_full']:.1f}% "
                      f"of a full iteration.\n")
    text = "".join(md)
    print(text)
    slim = [dict(r, iteration_cost={k: v for k, v in r["iteration_cost"].items()})
            for r in results]
    write_outputs("bench_many", {"machine": info, "results": slim}, text)
    plot(results, RESULTS / "bench_many.png")


if __name__ == "__main__":
    main()
