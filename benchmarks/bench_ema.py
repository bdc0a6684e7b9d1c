"""Cost of weight averaging (the ema option): step time with and without it.

For every optimizer class at N = 1e6 float32 (and 1e4), the two optimizers step in
alternation (interleaved, so that machine noise hits both alike); the ratio of the
medians is the cost of keeping the average inside the step's pass.

Run:  python benchmarks/bench_ema.py [--rounds R]
Writes benchmarks/results/bench_ema.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adamc  # noqa: E402
from adamc._algorithms import CLASSES  # noqa: E402
from _common import machine, markdown_table, write_outputs  # noqa: E402


def measure(name, n, dtype, rounds, reps):
    rng = np.random.default_rng(0)
    g = (rng.standard_normal(n) * 1e-2).astype(dtype)
    kw = {"lr": 1e-4}
    if name == "SGDScheduleFree":
        kw = {"lr": 1e-3}
    plain_x, ema_x = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    plain = getattr(adamc, name)(plain_x, **kw)
    ema = getattr(adamc, name)(ema_x, ema=0.999, **kw)
    for o in (plain, ema):
        for _ in range(5):
            o.step(g)
    times = {"plain": [], "ema": []}
    for _ in range(rounds):
        for label, o in (("plain", plain), ("ema", ema)):
            t0 = time.perf_counter()
            for _ in range(reps):
                o.step(g)
            times[label].append((time.perf_counter() - t0) / reps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    p90 = {k: float(np.percentile(v, 90)) for k, v in times.items()}
    ratios = np.array(times["ema"]) / np.array(times["plain"])
    return {"median_us": {k: v * 1e6 for k, v in med.items()},
            "p90_us": {k: v * 1e6 for k, v in p90.items()},
            "ratio_of_medians": med["ema"] / med["plain"],
            "ratio_p90_of_pairs": float(np.percentile(ratios, 90))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args(argv)
    results, rows = {}, []
    for n, reps in ((10**6, 5), (10**4, 200)):
        for name in CLASSES:
            r = measure(name, n, np.float32, args.rounds, reps)
            results[f"{name}/{n}"] = r
            rows.append([name, f"{n:.0e}", f"{r['median_us']['plain']:.1f}",
                         f"{r['median_us']['ema']:.1f}", f"{r['ratio_of_medians']:.2f}x",
                         f"{r['ratio_p90_of_pairs']:.2f}x"])
            print(rows[-1], flush=True)
    info = machine()
    md = (f"# bench_ema\n\n{info['date']}, {info['cpu']} ({info['cores']} cores, shared), "
          f"SIMD {info['simd_level']}, {adamc.get_num_threads()} threads, adamc "
          f"{info['adamc']} ({info['git']}). float32, step time in microseconds "
          f"(median of {args.rounds} interleaved rounds), with ema=0.999 and without.\n\n"
          + markdown_table(["optimizer", "N", "without ema (us)", "with ema (us)",
                            "ratio of medians", "p90 of paired ratios"], rows))
    write_outputs("bench_ema", {"machine": info, "results": results}, md)
    print(md)


if __name__ == "__main__":
    main()
