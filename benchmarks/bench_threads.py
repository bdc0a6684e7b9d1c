"""Threads in real conditions: adamc's default against forced 1 and forced 2 threads,
with torch's fused Adam as the peer.

Scenarios (float32 unless stated):

- (a) ``mlp``: a NumPy training loop. Gradients of a 784-256-256 MLP (batch 256, ReLU,
  squared loss) from OpenBLAS matmuls, then ``opt.step([dW1, dW2])`` on the 784x256 and
  256x256 weights. Iteration time and step median / p90 / p99.
- (b) ``busy1`` / ``busy2``: N = 1e5 and 1e6 steps while another process spins on one
  core, and on two.
- (c) ``pair``: two processes step N = 1e5 at once (each its own optimizer); the median
  of the two processes' step medians.
- (d) ``callers``: two Python threads each step their own optimizer (N = 1e6), against
  one thread stepping both in turn, on a quiet machine and with one core busy.
- (e) ``quiet``: a quiet machine, N = 10 ... 1e7, plus float64 at 1e6; the gain of a
  second thread for the in-place add ``np.add(a, b, out=a)`` of the same arrays at 1e7;
  the pool's wake-up latency; and a sweep of small sizes for the parallel threshold.
- (f) ``cold``: the first 100 steps of a fresh process (N = 1e5 and 1e6), the policy's
  cold start, with one and two cores busy: the total time of the default over that of
  one thread, per round (median and worst over rounds).

Contenders run in fresh processes (so each starts with its own default policy, as a user
would), interleaved over ``--rounds`` rounds in rotating order; the tables give the
median over rounds. ``adamc default`` has no thread variables set (2 threads allowed on
this 2-CPU machine, adaptive policy); ``adamc 1 thread`` sets ``ADAMC_NUM_THREADS=1``;
``adamc 2 threads`` sets ``ADAMC_NUM_THREADS=2 ADAMC_THREAD_POLICY=fixed`` (always two
threads from the 64 KiB threshold on, like the OpenMP runtime it replaced); ``torch
fused`` is ``torch.optim.Adam(fused=True)`` with ``torch.set_num_threads(2)`` (and 1).

Run:  python benchmarks/bench_threads.py [--quick] [--rounds 5] [--only mlp quiet ...]
Writes bench_threads.json, bench_threads.md and bench_threads.png into
benchmarks/results/ (or --outdir).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, markdown_table, write_outputs  # noqa: E402

HERE = Path(__file__).resolve()
THREAD_VARS = ("ADAMC_NUM_THREADS", "ADAMC_THREAD_POLICY", "OMP_NUM_THREADS")
CONTENDERS = {
    "adamc default": {},
    "adamc 1 thread": {"ADAMC_NUM_THREADS": "1"},
    "adamc 2 threads": {"ADAMC_NUM_THREADS": "2", "ADAMC_THREAD_POLICY": "fixed"},
    "torch fused 2 threads": {"TORCH_THREADS": "2"},
    "torch fused 1 thread": {"TORCH_THREADS": "1"},
}
ADAMC = ["adamc default", "adamc 1 thread", "adamc 2 threads"]


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------
# Inside a worker process

def make_stepper(contender: str, params: list[np.ndarray]):
    """A function grads -> None stepping an Adam optimizer over params."""
    if contender.startswith("torch"):
        import torch

        torch.set_num_threads(int(os.environ["TORCH_THREADS"]))
        tensors = [torch.from_numpy(p) for p in params]
        opt = torch.optim.Adam(tensors, lr=1e-3, fused=True)

        def step(grads):
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g)
            opt.step()
        return step
    import adamc

    opt = adamc.Adam(params, lr=1e-3)
    return lambda grads: opt.step(list(grads))


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99))}


def work_mlp(contender: str, seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    batch = 256
    X = rng.standard_normal((batch, 784)).astype(np.float32)
    Y = rng.standard_normal((batch, 256)).astype(np.float32)
    W1 = (rng.standard_normal((784, 256)) * 0.03).astype(np.float32)
    W2 = (rng.standard_normal((256, 256)) * 0.06).astype(np.float32)
    step = make_stepper(contender, [W1, W2])
    iters, steps = [], []
    t_end = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < t_end or k < 20:
        t0 = time.perf_counter()
        H = X @ W1
        np.maximum(H, 0, out=H)
        E = H @ W2 - Y
        dW2 = H.T @ E
        dH = E @ W2.T
        dH *= H > 0
        dW1 = X.T @ dH
        t1 = time.perf_counter()
        step((dW1, dW2))
        t2 = time.perf_counter()
        if k >= 10:  # warm-up: allocations, the policy's first measurements
            iters.append(t2 - t0)
            steps.append(t2 - t1)
        k += 1
    return {"iteration": percentiles(iters), "step": percentiles(steps), "n": len(iters)}


def work_steps(contender: str, n: int, dtype: str, seconds: float,
               threshold: int | None = None) -> dict[str, Any]:
    if threshold is not None:
        from adamc import _kernels

        _kernels._set_parallel_threshold_bytes(threshold)
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    step = make_stepper(contender, [p])
    grads = (g,)
    samples = []
    t_end = time.perf_counter() + seconds
    k = 0
    # Steps are timed in small batches so that timer overhead does not dominate at N=10.
    batch = max(1, min(1000, int(2e5 / max(n, 1))))
    while time.perf_counter() < t_end or k < 30:
        t0 = time.perf_counter()
        for _ in range(batch):
            step(grads)
        if k >= 5:
            samples.append((time.perf_counter() - t0) / batch)
        k += 1
    out = {"step": percentiles(samples), "n": len(samples) * batch}
    if not contender.startswith("torch"):
        from adamc import _kernels

        out["stats"] = _kernels.thread_stats()
    return out


def work_callers(n: int, seconds: float) -> dict[str, Any]:
    """Two optimizers stepped by two Python threads at once, and by one thread in turn
    (this process's default policy), interleaved."""
    import adamc

    rng = np.random.default_rng(1)
    ps = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    gs = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    opts = [adamc.Adam(p, lr=1e-3) for p in ps]
    reps = max(5, int(2e7 / n))

    def serial():
        t0 = time.perf_counter()
        for _ in range(reps):
            opts[0].step(gs[0])
            opts[1].step(gs[1])
        return (time.perf_counter() - t0) / reps

    def threaded():
        barrier = threading.Barrier(3)

        def run(i):
            barrier.wait()
            for _ in range(reps):
                opts[i].step(gs[i])
        ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        return (time.perf_counter() - t0) / reps

    serial(), threaded()
    s, t = [], []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(s) < 5:
        s.append(serial())
        t.append(threaded())
    from adamc import _kernels
    return {"serial": float(np.median(s)), "threads": float(np.median(t)),
            "peak": _kernels.thread_stats()["peak"]}


def work_first(contender: str, n: int, steps: int = 100) -> dict[str, Any]:
    """The first ``steps`` steps of a fresh optimizer, each timed (no warm-up: the
    policy's cold start is what is measured)."""
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    step = make_stepper(contender, [p])
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step((g,))
        times.append(time.perf_counter() - t0)
    from adamc import _kernels

    stats = _kernels.thread_stats()
    return {"total": float(np.sum(times)), "max": float(np.max(times)),
            "parallel": stats["jobs_parallel"], "workers": stats["workers"]}


def worker_main(spec: dict[str, Any]) -> None:
    kind = spec["work"]
    if kind == "mlp":
        out = work_mlp(spec["contender"], spec["seconds"])
    elif kind == "steps":
        out = work_steps(spec["contender"], spec["n"], spec.get("dtype", "float32"),
                         spec["seconds"], spec.get("threshold"))
    elif kind == "callers":
        out = work_callers(spec["n"], spec["seconds"])
    elif kind == "first":
        out = work_first(spec["contender"], spec["n"])
    else:
        raise SystemExit(f"unknown work {kind!r}")
    print(json.dumps(out))


# ---------------------------------------------------------------------------------
# The driver

def env_for(contender: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(CONTENDERS.get(contender, {}))
    return env


def spawn(spec: dict[str, Any], contender: str) -> subprocess.Popen:
    spec = dict(spec, contender=contender)
    return subprocess.Popen([sys.executable, str(HERE), "--worker", json.dumps(spec)],
                            env=env_for(contender), stdout=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


class Spinners:
    """Other processes each spinning on a core for the duration of a with-block."""

    def __init__(self, count: int):
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(self.count)]
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def rounds_of(contenders: list[str], rounds: int, run) -> dict[str, list[Any]]:
    """run(contender) for every contender in every round, in rotating order."""
    results: dict[str, list[Any]] = {c: [] for c in contenders}
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for c in order:
            results[c].append(run(c))
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return results


def median_of(samples: list[dict[str, Any]], *path: str) -> float:
    vals = []
    for s in samples:
        for key in path:
            s = s[key]
        vals.append(s)
    return float(np.median(vals))


def scenario_mlp(args, contenders) -> dict[str, Any]:
    spec = {"work": "mlp", "seconds": args.seconds * 2}
    res = rounds_of(contenders, args.rounds, lambda c: collect(spawn(spec, c)))
    return {c: {"iteration_ms": median_of(v, "iteration", "median") * 1e3,
                "step_ms": median_of(v, "step", "median") * 1e3,
                "step_p90_ms": median_of(v, "step", "p90") * 1e3,
                "step_p99_ms": median_of(v, "step", "p99") * 1e3} for c, v in res.items()}


def scenario_steps(args, contenders, n, spinners=0, dtype="float32",
                   threshold=None) -> dict[str, Any]:
    spec = {"work": "steps", "n": n, "dtype": dtype, "seconds": args.seconds,
            "threshold": threshold}
    with Spinners(spinners):
        res = rounds_of(contenders, args.rounds, lambda c: collect(spawn(spec, c)))
    out = {c: {"step_us": median_of(v, "step", "median") * 1e6,
               "step_p99_us": median_of(v, "step", "p99") * 1e6} for c, v in res.items()}
    for c, v in res.items():
        stats = [s["stats"] for s in v if "stats" in s and s["stats"]["joins"]]
        if stats:
            out[c]["wake_us_mean"] = float(np.median([s["wake_us_mean"] for s in stats]))
            out[c]["wake_us_max"] = float(np.max([s["wake_us_max"] for s in stats]))
    return out


def scenario_pair(args, contenders, n) -> dict[str, Any]:
    spec = {"work": "steps", "n": n, "seconds": args.seconds}

    def run(c):
        procs = [spawn(spec, c), spawn(spec, c)]
        return [collect(p) for p in procs]

    res = rounds_of(contenders, args.rounds, run)
    return {c: {"step_us": float(np.median([np.median([p["step"]["median"] for p in pair])
                                            for pair in v])) * 1e6} for c, v in res.items()}


def scenario_callers(args, n, spinners) -> dict[str, Any]:
    spec = {"work": "callers", "n": n, "seconds": args.seconds}
    with Spinners(spinners):
        res = rounds_of(["adamc default"], args.rounds,
                        lambda c: collect(spawn(spec, c)))["adamc default"]
    serial = float(np.median([r["serial"] for r in res]))
    threads = float(np.median([r["threads"] for r in res]))
    return {"serial_us": serial * 1e6, "threads_us": threads * 1e6,
            "speedup": serial / threads, "peak": max(r["peak"] for r in res)}


def scenario_cold(args, n, spinners) -> dict[str, Any]:
    contenders = ["adamc default", "adamc 1 thread"]
    spec = {"work": "first", "n": n}
    with Spinners(spinners):
        res = rounds_of(contenders, max(args.rounds, 6), lambda c: collect(spawn(spec, c)))
    ratios = [d["total"] / o["total"] for d, o in zip(res["adamc default"], res["adamc 1 thread"])]
    return {"default_ms": median_of(res["adamc default"], "total") * 1e3,
            "one_thread_ms": median_of(res["adamc 1 thread"], "total") * 1e3,
            "ratio_median": float(np.median(ratios)), "ratio_max": float(np.max(ratios)),
            "default_max_step_ms": float(np.max([d["max"] for d in res["adamc default"]])) * 1e3,
            "default_parallel_steps": [d["parallel"] for d in res["adamc default"]]}


def add_gain(n: int, repeats: int = 30) -> float:
    """Speed-up of np.add(a, b, out=a) from splitting it over two Python threads (NumPy
    releases the GIL in the loop): the memory system's gain from a second thread."""
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    half = n // 2
    go, done = threading.Event(), threading.Event()
    stop = False

    def helper():
        while True:
            go.wait()
            go.clear()
            if stop:
                return
            np.add(a[half:], b[half:], out=a[half:])
            done.set()
    t = threading.Thread(target=helper, daemon=True)
    t.start()

    def one():
        t0 = time.perf_counter()
        np.add(a, b, out=a)
        return time.perf_counter() - t0

    def two():
        t0 = time.perf_counter()
        go.set()
        np.add(a[:half], b[:half], out=a[:half])
        done.wait()
        done.clear()
        return time.perf_counter() - t0
    ones, twos = [], []
    for _ in range(repeats):
        ones.append(one())
        twos.append(two())
    stop = True
    go.set()
    return float(np.median(ones) / np.median(twos))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per worker process")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 0.3 s")
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["mlp", "busy", "pair", "callers", "cold", "quiet", "threshold"])
    ap.add_argument("--outdir", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    if args.quick:
        args.rounds, args.seconds = 2, 0.3
    only = set(args.only or ["mlp", "busy", "pair", "callers", "cold", "quiet", "threshold"])
    peers = ["torch fused 2 threads", "torch fused 1 thread"] if have_torch() else []
    if not peers:
        print("torch is not installed: the torch contenders are skipped "
              "(pip install torch==2.13.0)", file=sys.stderr)
    results: dict[str, Any] = {"machine": machine(), "rounds": args.rounds,
                               "seconds": args.seconds}
    if "mlp" in only:
        print("(a) NumPy MLP loop", file=sys.stderr)
        results["mlp"] = scenario_mlp(args, ADAMC + peers)
    if "busy" in only:
        for spin in (1, 2):
            for n in (100_000, 1_000_000):
                print(f"(b) {spin} core(s) busy, N={n}", file=sys.stderr)
                results[f"busy{spin}_{n}"] = scenario_steps(args, ADAMC + peers[:1], n, spin)
    if "pair" in only:
        print("(c) two processes stepping at once", file=sys.stderr)
        results["pair"] = scenario_pair(args, ADAMC + peers[:1], 100_000)
    if "callers" in only:
        for n in (10_000, 1_000_000):
            for spin in (0, 1):
                print(f"(d) two Python threads, N={n}, {spin} core(s) busy", file=sys.stderr)
                results[f"callers_{n}_busy{spin}"] = scenario_callers(args, n, spin)
    if "cold" in only:
        for spin in (1, 2):
            for n in (100_000, 1_000_000):
                print(f"(f) the first 100 steps, {spin} core(s) busy, N={n}", file=sys.stderr)
                results[f"cold{spin}_{n}"] = scenario_cold(args, n, spin)
    if "quiet" in only:
        quiet: dict[str, Any] = {}
        for n, dtype in [(10, "float32"), (10_000, "float32"), (100_000, "float32"),
                         (1_000_000, "float32"), (10_000_000, "float32"),
                         (1_000_000, "float64")]:
            print(f"(e) quiet, N={n} {dtype}", file=sys.stderr)
            quiet[f"{n}_{dtype}"] = scenario_steps(args, ADAMC + peers[:1], n, 0, dtype)
        quiet["add_gain_1e7"] = add_gain(10_000_000)
        results["quiet"] = quiet
    if "threshold" in only:
        sweep = {}
        for n in (4096, 8192, 16384, 32768, 65536, 131072):
            print(f"threshold sweep, N={n}", file=sys.stderr)
            sweep[str(n)] = scenario_steps(args, ["adamc 1 thread", "adamc 2 threads"],
                                           n, 0, threshold=0)
        results["threshold"] = sweep
    path = args.outdir / "bench_threads.json"
    if path.exists() and args.only:
        previous = json.loads(path.read_text())
        previous.update(results)
        results = previous
    md = render(results)
    write_outputs("bench_threads", results, md, args.outdir)
    plot(results, args.outdir / "bench_threads.png")
    print(md)


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"# Threads in real conditions\n\n{m['cpu']}, {m['cores']} cores, SIMD "
           f"{m['simd_level']}, {m['date']}, adamc {m['git']}; medians over {r['rounds']} "
           f"rounds of fresh processes.\n"]
    if "mlp" in r:
        rows = [[c, fmt(v["iteration_ms"], 2), fmt(v["step_ms"], 3), fmt(v["step_p90_ms"], 3),
                 fmt(v["step_p99_ms"], 3)] for c, v in r["mlp"].items()]
        out.append("## (a) NumPy MLP loop (784-256-256, batch 256, OpenBLAS matmuls)\n")
        out.append(markdown_table(["contender", "iteration ms", "step ms", "step p90 ms",
                                   "step p99 ms"], rows))
    busy = [k for k in r if k.startswith("busy")]
    if busy:
        out.append("## (b) Another process spinning (µs per step, median / p99)\n")
        names = list(r[busy[0]])
        rows = []
        for k in busy:
            spin, n = k[4], int(k.split("_")[1])
            rows.append([f"{spin} core(s) busy, N={n:.0e}"] +
                        [f"{fmt(r[k][c]['step_us'])} / {fmt(r[k][c]['step_p99_us'])}"
                         for c in names])
        out.append(markdown_table(["case"] + names, rows))
    if "pair" in r:
        out.append("## (c) Two processes stepping at once (N=1e5, µs per step)\n")
        out.append(markdown_table(list(r["pair"]), [[fmt(v["step_us"]) for v in
                                                     r["pair"].values()]]))
    cal = [k for k in r if k.startswith("callers")]
    if cal:
        out.append("## (d) Two Python threads, each its own optimizer (µs for one step "
                   "of each; serial: one thread steps both in turn)\n")
        rows = [[f"{int(k.split('_')[1]):.0e}",
                 ("quiet" if k.endswith("busy0") else "1 core busy"), fmt(r[k]["serial_us"]),
                 fmt(r[k]["threads_us"]), f"{r[k]['speedup']:.2f}x", str(r[k]["peak"])]
                for k in cal]
        out.append(markdown_table(["N", "machine", "serial", "two threads", "speed-up",
                                   "threads in kernels at most"], rows))
    cold = [k for k in r if k.startswith("cold")]
    if cold:
        out.append("## (f) The first 100 steps of a fresh process (ms in total; ratio: "
                   "default / 1 thread per round)\n")
        rows = [[f"{k[4]} core(s) busy, N={int(k.split('_')[1]):.0e}",
                 fmt(r[k]["default_ms"], 2), fmt(r[k]["one_thread_ms"], 2),
                 f"{r[k]['ratio_median']:.2f}x", f"{r[k]['ratio_max']:.2f}x",
                 fmt(r[k]["default_max_step_ms"], 2),
                 f"{min(r[k]['default_parallel_steps'])}-{max(r[k]['default_parallel_steps'])}"]
                for k in cold]
        out.append(markdown_table(["case", "default", "1 thread", "ratio median",
                                   "ratio worst", "default's slowest step ms",
                                   "default's steps on 2 threads (of 100)"], rows))
        out.append("\nWith every core busy, a time slice of another process (about 3 ms) "
                   "weighs more than the step itself: the ratios vary from run to run in "
                   "both directions; the count of steps on two threads does not.\n")
    if "quiet" in r:
        q = r["quiet"]
        keys = [k for k in q if k != "add_gain_1e7"]
        names = list(q[keys[0]])
        out.append("## (e) Quiet machine (µs per step)\n")
        rows = [[k.replace("_", " ")] + [fmt(q[k][c]["step_us"], 3 if q[k][c]["step_us"] < 10
                                                else 1) for c in names] for k in keys]
        out.append(markdown_table(["N dtype"] + names, rows))
        out.append(f"\nIn-place add, gain of a second thread at 1e7 float32: "
                   f"{q['add_gain_1e7']:.2f}x.\n")
    if "threshold" in r:
        rows = []
        for n, v in r["threshold"].items():
            one, two = v["adamc 1 thread"]["step_us"], v["adamc 2 threads"]["step_us"]
            rows.append([n, f"{int(n) * 4 // 1024} KiB", fmt(one, 2), fmt(two, 2),
                         f"{one / two:.2f}x"])
        out.append("## Parallel threshold (float32, quiet; 2 threads forced with the "
                   "threshold at 0 bytes)\n")
        out.append(markdown_table(["N", "bytes per array", "1 thread µs", "2 threads µs",
                                   "gain"], rows))
    return "\n".join(out) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    panels = [k for k in ("mlp", "busy1_100000", "busy2_100000", "pair") if k in r]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    axes = np.atleast_1d(axes)
    titles = {"mlp": "(a) MLP loop: iteration ms", "busy1_100000": "(b) 1 core busy: step µs",
              "busy2_100000": "(b) 2 cores busy: step µs", "pair": "(c) 2 processes: step µs"}
    for ax, k in zip(axes, panels):
        names = list(r[k])
        vals = [r[k][c]["iteration_ms" if k == "mlp" else "step_us"] for c in names]
        colors = ["C0" if c == "adamc default" else "C7" if c.startswith("adamc") else "C3"
                  for c in names]
        ax.barh(range(len(names)), vals, color=colors)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(titles[k])
        ax.set_xlabel("ms" if k == "mlp" else "µs")
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
        ax.set_xlim(0, max(vals) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
