"""Badly scaled and ill-conditioned fits: how many each method solves.

The problems are those of fitting_problems.py (Moré-Garbow-Hillstrom, NIST StRD and
models of the natural sciences), each from two start points. Every method minimizes
the residual sum of squares f with the exact gradient (complex-step Jacobians, the same
for every method) and at most 20,000 iterations (least_squares: 20,000 evaluations).

A run solves a problem when its f is within 4 significant digits of the best known
value f* (the certified one, or the best any run reached):
``f - f* <= 1e-4 max(f*, 1e-12 f0)`` with f0 the objective at the first start point
(so a zero-residual problem needs f <= 1e-16 f0). A run whose x is not finite counts
as not solved (and is listed).

Contenders
  least_squares   scipy.optimize.least_squares(method="trf") on the residuals
  L-BFGS-B        scipy.optimize.minimize(method="L-BFGS-B") on f
  adamc defaults  adamc.minimize(fun, x0, jac=True) with no options
  Adam grid       Adam with a constant lr of {1e-3, 1e-2, 1e-1}, the best of the three
                  per problem; unscaled (x_scale=None, f_scale=None, nonfinite="stop":
                  the defaults before 0.2) and scaled (x_scale="auto", f_scale="auto");
                  and scaled with the defaults' plateau schedule starting at each rate
  Prodigy, schedule-free AdamW   their SciPy methods with default options (scaled,
                  backtracking) and unscaled

The "conditioned" column restricts the counts to the problems whose scaled Jacobian at
the best known point, J diag(abs(x0)), has a condition number under 1e3.

Run:  python benchmarks/bench_fitting.py [--quick]
Writes benchmarks/results/bench_fitting.{json,md,png}.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adamc  # noqa: E402
from _common import RESULTS, machine, markdown_table, write_outputs  # noqa: E402
from fitting_problems import PROBLEMS  # noqa: E402

MAXITER = 20_000
GRID = [1e-3, 1e-2, 1e-1]
UNSCALED = dict(x_scale=None, f_scale=None, nonfinite="stop")


def run_lsq(p, x0):
    r = optimize.least_squares(p.residuals, x0, jac=p.jacobian, method="trf",
                               max_nfev=MAXITER)
    return r.x, 2 * r.cost, r.nfev


def run_lbfgsb(p, x0):
    r = optimize.minimize(p.fun_and_grad, x0, jac=True, method="L-BFGS-B",
                          options=dict(maxiter=MAXITER, maxfun=2 * MAXITER))
    return r.x, r.fun, r.nit


def adamc_run(method, **options):
    def run(p, x0):
        r = adamc.minimize(p.fun_and_grad, x0, jac=True, method=method,
                           options=dict(options, maxiter=MAXITER))
        return r.x, r.fun, r.nit
    return run


CONTENDERS = {
    "least_squares (trf)": [run_lsq],
    "L-BFGS-B": [run_lbfgsb],
    "adamc defaults": [adamc_run("adam")],
    "Adam, best lr of the grid": [adamc_run("adam", lr=lr, **UNSCALED) for lr in GRID],
    "Adam, best lr of the grid, x_scale": [adamc_run("adam", lr=lr, x_scale="auto",
                                                     f_scale="auto", nonfinite="stop")
                                           for lr in GRID],
    "Adam, best first lr of the grid, x_scale, plateau": [
        adamc_run("adam", lr=adamc.schedules.reduce_on_plateau(
            lr, factor=0.5, patience=30, threshold=0.0, min_lr=1e-6 * lr), x_scale="auto",
            f_scale="auto", nonfinite="stop") for lr in GRID],
    "Prodigy": [adamc_run("prodigy")],
    "Prodigy, unscaled": [adamc_run("prodigy", **UNSCALED)],
    "schedule-free AdamW": [adamc_run("adamw_schedulefree")],
    "schedule-free AdamW, unscaled": [adamc_run("adamw_schedulefree", **UNSCALED)],
}


def f_at(p, x):
    with np.errstate(all="ignore"):
        return p.f(x) if np.all(np.isfinite(x)) else np.nan


def scaled_condition(p, x_best, x0):
    J = p.jacobian(x_best) * np.where(x0 != 0, np.abs(x0), 1.0)
    s = np.linalg.svd(J, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few problems (a smoke test)")
    args = ap.parse_args()
    problems = PROBLEMS[::4] if args.quick else PROBLEMS
    warnings.simplefilter("ignore")
    runs = []  # (problem, start, contender, f, nit, seconds, finite)
    for p in problems:
        for k, x0 in enumerate(p.starts):
            for name, variants in CONTENDERS.items():
                for variant in variants:
                    t0 = time.perf_counter()
                    try:
                        x, f, nit = variant(p, x0.copy())
                        f = f_at(p, x)
                    except (ValueError, FloatingPointError, OverflowError) as exc:
                        x, f, nit = np.full_like(x0, np.nan), np.nan, 0
                        print(f"  {p.name} {k + 1} {name}: {type(exc).__name__}: {exc}")
                    runs.append(dict(problem=p.name, start=k + 1, contender=name,
                                     f=float(f), nit=int(nit),
                                     seconds=time.perf_counter() - t0,
                                     finite=bool(np.all(np.isfinite(x))), x=list(map(float, x))))
            print(f"{p.name} start {k + 1} done", flush=True)
    # the best known f, and the conditioning at the best point
    best, cond = {}, {}
    for p in problems:
        mine = [r for r in runs if r["problem"] == p.name and np.isfinite(r["f"])]
        fbest = min(r["f"] for r in mine)
        if p.certified is not None:
            fbest = min(fbest, p.certified)
        best[p.name] = fbest
        xbest = min(mine, key=lambda r: r["f"])["x"]
        for k, x0 in enumerate(p.starts):
            cond[(p.name, k + 1)] = scaled_condition(p, np.array(xbest), x0)
    f0 = {p.name: f_at(p, p.starts[0]) for p in problems}
    for r in runs:
        fs, tol_base = best[r["problem"]], f0[r["problem"]]
        r["solved"] = bool(r["finite"] and np.isfinite(r["f"]) and
                           r["f"] - fs <= 1e-4 * max(fs, 1e-12 * tol_base))

    def solved(name, start, only=None):
        out = set()
        for r in runs:
            if r["contender"] == name and r["start"] == start and r["solved"]:
                if only is None or (r["problem"], start) in only:
                    out.add(r["problem"])
        return out

    conditioned = {key for key, c in cond.items() if c < 1e3}
    lsq_cond = {(pr, k) for k in (1, 2) for pr in solved("least_squares (trf)", k)
                if (pr, k) in conditioned}
    header = ["method", "solved, start 1", "solved, start 2",
              f"conditioned (cond < 1e3: {len(conditioned)})",
              f"of least_squares' {len(lsq_cond)} conditioned", "median iterations",
              "median time [ms]", "non-finite x"]
    rows, summary = [], {}
    nprob = len(problems)
    for name in CONTENDERS:
        mine = [r for r in runs if r["contender"] == name]
        s1, s2 = solved(name, 1), solved(name, 2)
        sc = len(solved(name, 1, conditioned)) + len(solved(name, 2, conditioned))
        of_lsq = len(solved(name, 1, lsq_cond)) + len(solved(name, 2, lsq_cond))
        nonfinite = sorted({f"{r['problem']} {r['start']}" for r in mine if not r["finite"]})
        summary[name] = dict(start1=len(s1), start2=len(s2), conditioned=sc,
                             of_least_squares_conditioned=of_lsq, nonfinite=nonfinite)
        rows.append([name, f"{len(s1)} / {nprob}", f"{len(s2)} / {nprob}",
                     f"{sc} / {len(conditioned)}",
                     f"{of_lsq} / {len(lsq_cond)} ({100 * of_lsq / max(len(lsq_cond), 1):.0f}%)",
                     f"{np.median([r['nit'] for r in mine]):.0f}",
                     f"{1e3 * np.median([r['seconds'] for r in mine]):.0f}",
                     ", ".join(nonfinite) or "none"])
    detail_header = ["problem", "start"] + list(CONTENDERS)
    detail = []
    for p in problems:
        for k in (1, 2):
            line = [p.name, str(k)]
            for name in CONTENDERS:
                line.append("yes" if p.name in solved(name, k) else "-")
            detail.append(line)
    info = machine()
    md = (f"# bench_fitting\n\n{info['date']}, {info['cpu']}, adamc {info['adamc']} "
          f"({info['git']}); {nprob} problems, two start points each, at most {MAXITER} "
          f"iterations.\n\n" + markdown_table(header, rows) +
          "\n(For the Adam grid, the best of the three rates per problem.)\n\n"
          "## By problem\n\n" + markdown_table(detail_header, detail))
    payload = dict(machine=info, summary=summary, best=best,
                   condition={f"{a} {b}": c for (a, b), c in cond.items()}, runs=runs)
    write_outputs("bench_fitting", payload, md)
    print(md)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(CONTENDERS)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y - 0.2, [summary[n]["start1"] for n in names], 0.4, label="start 1")
    ax.barh(y + 0.2, [summary[n]["start2"] for n in names], 0.4, label="start 2")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"problems solved (of {nprob})")
    ax.legend(loc="lower right")
    ax.set_title("Badly scaled fits solved (f within 4 digits of the best known)")
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_fitting.png", dpi=110)


if __name__ == "__main__":
    main()
