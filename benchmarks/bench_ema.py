"""Cost of weight averaging (the ema option): step time with and without it.

For every optimizer class at N = 1e6 float32 (and 1e4), the two optimizers step in
alternation (interleaved, so that machine noise hits both alike); the ratio of the
medians is the cost of keeping the average inside the step's pass.

At N = 1e6 float32 (4 MB per array) a step is bound by memory bandwidth (the
kernels' loops are vectorised; the average adds one vector load, subtract,
multiply, add and store per 16 elements), so the cost of the average cannot go
below the ratio of the bytes moved: the table gives, per optimizer with its
defaults, the bytes per element of a step (each array read, and written when it
is updated, 4 bytes each), the same with the average (+8), their ratio (the bound
at equal bandwidth) and the bandwidth achieved.

Run:  python benchmarks/bench_ema.py [--rounds R]
Writes benchmarks/results/bench_ema.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adamc  # noqa: E402
from adamc.algorithms import CLASSES  # noqa: E402
from _common import machine, markdown_table, write_outputs  # noqa: E402


# Arrays read and written per element by one step of each class with its default
# options (the loops of src_c/adamc_algos.inc): p and g, then the state arrays the
# loop touches. Prodigy: its statistics pass reads p, g, s, p0, then the update pass
# reads p, g, m, v, s and writes p, m, v, s. The schedule-free classes' y is touched
# only by eval()/train().
TRAFFIC = {
    "Adam": (4, 3), "AdamW": (4, 3), "Adamax": (4, 3), "NAdam": (4, 3), "RAdam": (4, 3),
    "SGD": (2, 1), "RMSprop": (3, 2), "Lion": (3, 2), "Prodigy": (9, 4),
    "AdamWScheduleFree": (4, 3), "SGDScheduleFree": (3, 2),
}


def traffic_bytes(name, itemsize, ema):
    """Bytes moved per element by one step of ``name`` (the average: one more array
    read and written)."""
    reads, writes = TRAFFIC[name]
    return (reads + writes + (2 if ema else 0)) * itemsize


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
    size = np.dtype(dtype).itemsize
    nbytes = {k: traffic_bytes(name, size, k == "ema") for k in ("plain", "ema")}
    return {"median_us": {k: v * 1e6 for k, v in med.items()},
            "p90_us": {k: v * 1e6 for k, v in p90.items()},
            "ratio_of_medians": med["ema"] / med["plain"],
            "ratio_p90_of_pairs": float(np.percentile(ratios, 90)),
            "bytes_per_element": nbytes,
            "traffic_ratio": nbytes["ema"] / nbytes["plain"],
            "gb_per_s": {k: nbytes[k] * n / med[k] / 1e9 for k in med}}


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
                         f"{r['ratio_p90_of_pairs']:.2f}x",
                         f"{r['bytes_per_element']['plain']} / {r['bytes_per_element']['ema']}",
                         f"{r['traffic_ratio']:.2f}x",
                         f"{r['gb_per_s']['plain']:.1f} / {r['gb_per_s']['ema']:.1f}"])
            print(rows[-1], flush=True)
    info = machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    md = (f"# bench_ema\n\n{info['date']}, {info['cpu']} ({info['cores']} cores, shared; "
          f"load average {load:.1f} at the end), SIMD {info['simd_level']}, "
          f"{adamc.get_num_threads()} threads, adamc {info['adamc']} ({info['git']}). "
          f"float32, step time in microseconds (median of {args.rounds} interleaved "
          f"rounds), with ema=0.999 and without. Bytes per element moved by one step "
          f"without / with the average, their ratio (the least cost of the average when "
          f"the step runs at memory bandwidth, as it does at N = 1e6), and the bandwidth "
          f"achieved (GB/s, without / with).\n\n"
          + markdown_table(["optimizer", "N", "without ema (us)", "with ema (us)",
                            "ratio of medians", "p90 of paired ratios", "bytes/element",
                            "traffic ratio", "GB/s"], rows))
    write_outputs("bench_ema", {"machine": info, "results": results}, md)
    print(md)


if __name__ == "__main__":
    main()
