"""Time per step of adamc.distributed.DistributedOptimizer, split into its phases, and
memory per rank, on 1 and 2 MPI ranks (one thread per rank).

Phases of one step (medians over repetitions; the slowest rank of each phase):
  check      validate and pack this rank's gradients, one small Allreduce (errors,
             hyperparameters)
  reduction  average the gradients over the ranks (reproducible: Alltoallv + sum in
             rank order [+ Allgatherv in replicated mode]; fast: Allreduce or
             Reduce_scatter)
  update     the Adam kernels (all parameters, or this rank's shard)
  allgather  sharded mode: the updated shards to every rank

Run:  python benchmarks/bench_distributed.py [--sizes 10000 1000000 10000000]
          [--ranks 1 2] [--quick]
Writes benchmarks/results/bench_distributed.{json,md,png}. Needs pip install 'adamc[mpi]'.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHASES = ("check", "reduction", "update", "allgather")


# ----------------------------------------------------------------------------------
# Worker: runs under mpiexec

def worker(sizes: list[int], budget: float, out: Path) -> None:
    from mpi4py import MPI

    import adamc
    from adamc.distributed import DistributedOptimizer

    adamc.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rows = []
    for n in sizes:
        rng = np.random.default_rng(rank)
        g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
        plain_x = np.zeros(n, np.float32)
        plain = adamc.Adam(plain_x)
        plain_us = _median_us(lambda: plain.step(g), comm, budget)
        for mode in ("replicated", "sharded"):
            for reproducible in (True, False):
                x = np.zeros(n, np.float32)
                opt = DistributedOptimizer(adamc.Adam(x), comm, mode,
                                           reproducible=reproducible)
                total = _median_us(lambda: opt.step(g), comm, budget)
                phases = _phases(opt, g, comm, budget)
                state = comm.gather(opt.state_nbytes, root=0)
                buffers = comm.gather(opt.buffer_nbytes, root=0)
                if rank == 0:
                    rows.append({"n": n, "ranks": size, "mode": mode,
                                 "reproducible": reproducible, "step_us": total,
                                 "plain_step_us": plain_us, **phases,
                                 "state_bytes_per_rank": max(state),
                                 "buffer_bytes_per_rank": max(buffers),
                                 "param_bytes": x.nbytes})
    if rank == 0:
        out.write_text(json.dumps(rows))


def _median_us(fn, comm, budget: float) -> float:
    """Median time of fn() (every rank starts together; the slowest rank counts)."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    reps = int(comm.allreduce(min(300, max(7, budget / max(once, 1e-7))), op=_max()))
    samples = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(comm.allreduce(np.median(samples), op=_max())) * 1e6


def _mpi():
    from mpi4py import MPI
    return MPI


def _max():
    return _mpi().MAX


def _phases(opt, g, comm, budget: float) -> dict[str, float]:
    """The phases of opt.step(g), timed one by one (the step's own code path)."""
    inner = opt._inner

    def one() -> list[float]:
        comm.Barrier()
        t = [time.perf_counter()]
        opt._sync_hyper()
        opt._pack(g)
        opt._user_grads = None  # one rank: the step would use g itself, same cost
        opt._agree_step(None)
        t.append(time.perf_counter())
        for b in opt._buckets:
            if opt.mode == "replicated":
                opt._reducer.allreduce_mean(b)
            else:
                opt._reducer.reduce_shard(b)
        t.append(time.perf_counter())
        if inner is not None:
            inner.step(opt._grad_views)
        t.append(time.perf_counter())
        if opt.mode == "sharded":
            opt._gather_params()
        t.append(time.perf_counter())
        return [b - a for a, b in zip(t, t[1:])]

    for _ in range(3):
        one()
    reps = int(comm.allreduce(min(300, max(7, budget / max(sum(one()), 1e-7))), op=_max()))
    samples = np.array([one() for _ in range(reps)])
    slowest = np.median(samples, axis=0)
    comm.Allreduce(_mpi().IN_PLACE, slowest, op=_max())
    return {f"{p}_us": float(v) * 1e6 for p, v in zip(PHASES, slowest)}


# ----------------------------------------------------------------------------------
# Launcher

def mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else "mpiexec"


def run(ranks: list[int], sizes: list[int], budget: float) -> list[dict]:
    rows = []
    for k in ranks:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            cmd = [mpiexec(), "-n", str(k), sys.executable, __file__, "--worker",
                   "--out", str(out), "--budget", str(budget), "--sizes", *map(str, sizes)]
            print(" ".join(cmd[:3]), "...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, timeout=3600)
            rows += json.loads(out.read_text())
    return rows


def model(rows: list[dict]) -> dict[str, float]:
    """Expected step time for 1e9 float32 parameters on a 100 Gb/s network: the
    ring-allreduce bandwidth model plus the update measured here on one rank."""
    big = max(r["n"] for r in rows)
    one = [r for r in rows if r["ranks"] == 1 and r["n"] == big and r["mode"] == "replicated"
           and r["reproducible"]][0]
    ns_per_element = one["update_us"] * 1e3 / big
    n, bytes_per = 1e9, 4
    bandwidth = 100e9 / 8      # bytes/s
    latency = 5e-6             # s per message, typical of a 100 Gb/s fabric
    out = {"ns_per_element_update": ns_per_element}
    for p in (8, 64):
        comm_s = 2 * (p - 1) / p * n * bytes_per / bandwidth + 2 * (p - 1) * latency
        out[f"p{p}_allreduce_s"] = comm_s
        out[f"p{p}_replicated_step_s"] = comm_s + n * ns_per_element * 1e-9
        out[f"p{p}_sharded_step_s"] = comm_s + n / p * ns_per_element * 1e-9
        out[f"p{p}_state_gb_replicated"] = 2 * n * bytes_per / 1e9
        out[f"p{p}_state_gb_sharded"] = 2 * n * bytes_per / p / 1e9
    return out


def markdown(rows: list[dict], info: dict, m: dict) -> str:
    from _common import markdown_table

    lines = ["# adamc.distributed: time per step and memory per rank", "",
             f"{info['date']}, {info['cpu']}, {info['cores']} cores, SIMD {info['simd_level']}, "
             f"adamc {info['adamc']} ({info['git']}), float32 Adam, one thread per rank, "
             f"MPICH through mpi4py on one machine (shared memory). Medians; each phase is "
             f"the slowest rank's. Phases are timed on each rank, and one rank's phase can "
             f"overlap the other's (a rank updates while the other still copies), so on "
             f"this 2-vCPU VM the update of 2 ranks reads slower than the same update "
             f"alone; 'step' is the whole step.", ""]
    header = ["N", "ranks", "mode", "reduction", "step µs", "check", "reduction µs",
              "update", "allgather", "plain Adam.step", "state/rank", "buffers/rank"]
    table = []
    for r in rows:
        table.append([f"{r['n']:.0e}", str(r["ranks"]), r["mode"],
                      "reproducible" if r["reproducible"] else "MPI (fast)",
                      f"{r['step_us']:.1f}", f"{r['check_us']:.1f}",
                      f"{r['reduction_us']:.1f}", f"{r['update_us']:.1f}",
                      f"{r['allgather_us']:.1f}", f"{r['plain_step_us']:.1f}",
                      f"{r['state_bytes_per_rank'] / 2**20:.2f} MiB",
                      f"{r['buffer_bytes_per_rank'] / 2**20:.2f} MiB"])
    lines.append(markdown_table(header, table))
    lines += ["", "## Cost of the reproducible reduction (2 ranks)", ""]
    cost = []
    for n in sorted({r["n"] for r in rows}):
        for mode in ("replicated", "sharded"):
            sel = {r["reproducible"]: r for r in rows
                   if r["n"] == n and r["ranks"] == 2 and r["mode"] == mode}
            if len(sel) == 2:
                cost.append([f"{n:.0e}", mode, f"{sel[True]['reduction_us']:.1f}",
                             f"{sel[False]['reduction_us']:.1f}",
                             f"{sel[True]['reduction_us'] / sel[False]['reduction_us']:.2f}x",
                             f"{sel[True]['step_us'] / sel[False]['step_us']:.2f}x"])
    lines.append(markdown_table(["N", "mode", "reproducible µs", "MPI µs",
                                 "reduction ratio", "step ratio"], cost))
    lines += ["", "## On paper: 10^9 float32 parameters, 100 Gb/s network", "",
              "Ring allreduce of S bytes over p nodes with link bandwidth B and latency "
              "a: T = 2 (p-1)/p * S/B + 2 (p-1) a (a reduce-scatter and an all-gather, "
              "each moving (p-1)/p of the data through every link). Sharded mode moves "
              "the same bytes (reduce-scatter of gradients, all-gather of parameters) "
              "but updates only 1/p of the parameters per node. S = 4e9 bytes, "
              f"B = 12.5e9 bytes/s, a = 5 µs; update {m['ns_per_element_update']:.3f} "
              "ns per element (measured here, one thread, largest N).", ""]
    paper = []
    for p in (8, 64):
        paper.append([str(p), f"{m[f'p{p}_allreduce_s']:.3f} s",
                      f"{m[f'p{p}_replicated_step_s']:.3f} s",
                      f"{m[f'p{p}_sharded_step_s']:.3f} s",
                      f"{m[f'p{p}_state_gb_replicated']:.1f} GB",
                      f"{m[f'p{p}_state_gb_sharded']:.3f} GB"])
    lines.append(markdown_table(["nodes", "allreduce", "replicated step", "sharded step",
                                 "Adam state/node replicated", "sharded"], paper))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 4), squeeze=False)
    colors = {"check": "#999999", "reduction": "#d95f02", "update": "#1b9e77",
              "allgather": "#7570b3"}
    for ax, n in zip(axes[0], sizes):
        sel = [r for r in rows if r["n"] == n]
        labels = [f"{r['ranks']}r {r['mode'][:4]}\n{'repro' if r['reproducible'] else 'fast'}"
                  for r in sel]
        bottom = np.zeros(len(sel))
        for p in PHASES:
            vals = np.array([r[f"{p}_us"] for r in sel])
            ax.bar(range(len(sel)), vals, bottom=bottom, color=colors[p], label=p)
            bottom += vals
        ax.set_xticks(range(len(sel)), labels, fontsize=7)
        ax.set_title(f"N = {n:.0e} float32")
        ax.set_ylabel("µs per step (phases)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**6, 10**7])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timing per measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes, short timing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--outdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.worker:
        from adamc.distributed import abort_on_error

        with abort_on_error():  # an error on one rank must not leave the other waiting
            worker(args.sizes, args.budget, args.out)
        return
    if args.quick:
        args.sizes, args.budget = [10**4, 10**5], 0.1
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import RESULTS, machine, write_outputs

    rows = run(args.ranks, args.sizes, args.budget)
    info = machine()
    m = model(rows)
    outdir = args.outdir or (RESULTS / "scratch" if args.quick else RESULTS)
    md = markdown(rows, info, m)
    json_path, md_path = write_outputs("bench_distributed",
                                       {"machine": info, "rows": rows, "model": m}, md, outdir)
    plot(rows, outdir / "bench_distributed.png")
    print(md)
    print(f"wrote {json_path}, {md_path} and {outdir / 'bench_distributed.png'}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
