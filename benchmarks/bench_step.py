"""Time of one Adam step: adamc against NumPy, PyTorch, DeepSpeed and optax.

For every size N, dtype (float32, float64) and thread count (1, 2), every contender is
built on the same parameter and gradient arrays and timed in that configuration, in
``--rounds`` rounds that visit every contender in a rotating order (each visit: median
seconds per step over ``--repeats`` timings of at least ``--min-time`` seconds,
``_common.time_per_call``); the result is the median over the rounds, so a drift of the
machine during a configuration affects all contenders alike and ratios compare like with
like.

Contenders (peers that are not installed are skipped with a printed note):

- adamc            ``opt = adamc.Adam(p); opt.step(g)``; threads: ``adamc.set_num_threads``
- adamc adam_step  the stateless step, ``adamc.adam_step(p, g, m, v, step=t, lr=..., ...)``
  (every argument checked at every call)
- numpy textbook   allocating temporaries: ``m = b1*m + (1-b1)*g`` ... ``p -= lr*mhat/(sqrt(vhat)+eps)``
- numpy prealloc   the same with in-place ops and ``out=`` into one preallocated temporary
  (NumPy is single-threaded: it is measured again, with one thread, in the 2-thread rows)
- torch Adam (default), foreach=True, fused=True: ``torch.optim.Adam`` on tensors that share
  memory with the NumPy arrays (``torch.from_numpy``), ``.grad`` set once, ``opt.step()`` timed.
  On CPU the default resolves to the single-tensor for-loop implementation.
- torch._fused_adam_  the raw fused kernel (what ``fused=True`` calls), with the step-count
  increment torch does before it (``torch._foreach_add_(steps, 1)``), no Optimizer overhead.
  torch threads: ``torch.set_num_threads``.
- DeepSpeedCPUAdam ``deepspeed.ops.adam.DeepSpeedCPUAdam(adamw_mode=False)``, float32 only (it has
  no float64 kernel). Its OpenMP loop follows ``torch.set_num_threads`` (one shared libgomp).
- optax            ``jax.jit`` of ``optax.adam`` update + ``apply_updates`` with donated
  parameter and state buffers, on the CPU, ``block_until_ready`` after each step. XLA's CPU
  thread pool cannot be resized in-process: optax runs with XLA's defaults (all cores) in
  both thread rows; the JSON records its CPU time / wall time ratio ("cpu_util").

Reference: the in-place add ``np.add(a, b, out=a)`` (12 bytes/element float32, 24 float64:
read a, read b, write a), in GB/s; with 2 threads the array is split in two halves, one
added by the main thread and one by a persistent worker thread (NumPy releases the GIL in
the add loop). Every contender's effective bandwidth uses the Adam traffic model: 28
bytes/element float32 (read p, g, m, v; write p, m, v), 56 float64. The plot's dashed line
is the time Adam would take at the in-place-add bandwidth.

Also measured once: the subnormal case (float32, N = 1e6, 1 thread, g = 0, m = v = 1e-39,
step 1000), adamc and NumPy prealloc, against the same steps with normal m = v = 1e-3;
each repeat restores the state and times 20 steps (m stays subnormal, nothing is flushed to
zero: the script checks that denormals are not flushed in this process).

Optional peers (this machine: Python 3.11, CPU only):
    pip install torch==2.13.0   # the CPU build (on this machine a local wheel); never a
                                # plain `pip install torch`, which may pull a CUDA build
    pip install deepspeed       # check `pip install --dry-run deepspeed` pulls no other torch;
                                # its CPU Adam op is compiled with ninja (and a C++ compiler)
                                # at first use, about 40 s, cached in ~/.cache/torch_extensions
    pip install optax           # pulls jax and jaxlib (about 600 MB); runs on the CPU

The stateless steps at small N (written to bench_step_stateless.{json,md}; alone with
``--stateless-only``): every ``*_step`` function of ``adamc.functional`` (one per row of the
algorithm table) and the bound ``Adam.step``, float64 and float32, N = 10, 1 thread. Each
timing is a loop of ``--stateless-calls`` direct calls as user code writes them
(``adam_step(p, g, m, v, step=t)``, ``t`` counting up; the loop costs about 0.02 µs per
call), every contender visited in a rotating order for ``--stateless-rounds`` rounds; the
tables give the median and the 90th percentile over the rounds, and the median's ratio to
the bound step's (a ratio measured in the same rounds).

Other load: on a 2-core machine a second process holding one core wrecks 2-thread timings
(an OpenMP team waits for a descheduled thread: milliseconds per step). For every timing
the script records the cores used by other processes (/proc/stat minus this process's CPU
time), warns, and marks such values with a dagger in the table: rerun those on a quiet
machine.

Run:  python benchmarks/bench_step.py [--quick] [--sizes 10 1e3 1e5] [--threads 1 2]
      [--dtypes float32 float64] [--skip optax ...] [--outdir DIR] [--stateless-only]
Writes bench_step.json (raw medians in seconds, machine info), bench_step.md and
bench_step.png into benchmarks/results/ (or --outdir). A full run (N up to 1e8, which
needs several GB of memory for float64) takes tens of minutes: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")      # no accelerator probing
os.environ.setdefault("DS_ACCELERATOR", "cpu")     # DeepSpeed: no accelerator detection

import numpy as np

import adamc
from adamc._bench import numpy_adam_prealloc
from _common import RESULTS, machine, markdown_table, time_per_call, write_outputs

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
DEFAULT_SIZES = [10, 10**2, 10**3, 10**4, 10**5, 10**6, 10**7, 10**8]
ADAM_BYTES = {"float32": 28, "float64": 56}       # read p, g, m, v; write p, m, v
ADD_BYTES = {"float32": 12, "float64": 24}        # read a, b; write a

# -- optional peers --------------------------------------------------------------------
PEERS: dict[str, Any] = {}      # name -> module
VERSIONS: dict[str, str] = {}
NOTES: list[str] = []


def note(msg: str) -> None:
    print("note:", msg)
    NOTES.append(msg)


def load_peers(skip: set[str]) -> None:
    if "torch" not in skip:
        try:
            import torch
            PEERS["torch"] = torch
            VERSIONS["torch"] = torch.__version__
        except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
            note(f"torch not importable ({exc!r}): torch contenders skipped "
                 "(pip install torch==2.13.0)")
    if "deepspeed" not in skip:
        if "torch" not in PEERS:
            note("DeepSpeedCPUAdam skipped: it needs torch")
        else:
            try:
                import deepspeed
                from deepspeed.utils import logger as ds_logger
                ds_logger.setLevel(logging.WARNING)   # no "Adam Optimizer #k is created" lines
                from deepspeed.ops.adam import DeepSpeedCPUAdam
                t0 = time.perf_counter()
                torch = PEERS["torch"]
                probe = torch.zeros(8)
                probe.grad = torch.ones(8)
                DeepSpeedCPUAdam([probe], adamw_mode=False).step()   # builds the op if needed
                PEERS["deepspeed"] = DeepSpeedCPUAdam
                VERSIONS["deepspeed"] = deepspeed.__version__
                if time.perf_counter() - t0 > 5:
                    print(f"DeepSpeed CPU Adam op ready after {time.perf_counter() - t0:.0f} s")
            except Exception as exc:  # noqa: BLE001
                note(f"DeepSpeedCPUAdam unavailable ({type(exc).__name__}: {exc}): skipped "
                     "(pip install deepspeed; its CPU Adam op is built with ninja at first use)")
    if "optax" not in skip:
        try:
            import jax
            jax.config.update("jax_enable_x64", True)   # float64 arrays stay float64
            import jax.numpy  # noqa: F401
            import optax
            PEERS["jax"], PEERS["optax"] = jax, optax
            VERSIONS.update(jax=jax.__version__, optax=optax.__version__,
                            jax_backend=jax.default_backend())
        except Exception as exc:  # noqa: BLE001
            note(f"optax/jax not importable ({exc!r}): optax skipped (pip install optax)")


def denormals_flushed() -> dict[str, bool]:
    """Whether this thread's MXCSR flushes subnormal results (FTZ) or inputs (DAZ)."""
    tiny = np.finfo(np.float32).tiny
    ftz = bool(np.multiply(np.float32(tiny), np.float32(0.5)) == 0)
    daz = bool(np.multiply(np.float32(tiny * 0.5), np.float32(1.0)) == 0)
    return {"ftz": ftz, "daz": daz}


# -- contenders: make(p, g) -> step function -------------------------------------------
def make_adamc(p, g):
    opt = adamc.Adam(p, lr=LR, betas=(B1, B2), eps=EPS)
    return lambda: opt.step(g)


def make_adamc_stateless(p, g):
    m, v = np.zeros_like(p), np.zeros_like(p)
    st = {"t": 0}

    def step():
        st["t"] += 1
        adamc.adam_step(p, g, m, v, step=st["t"], lr=LR, beta1=B1, beta2=B2, eps=EPS)
    return step


def make_numpy_textbook(p, g):
    st = {"m": np.zeros_like(p), "v": np.zeros_like(p), "t": 0}

    def step():
        st["t"] += 1
        t = st["t"]
        m = B1 * st["m"] + (1 - B1) * g
        v = B2 * st["v"] + (1 - B2) * g * g
        st["m"], st["v"] = m, v
        mhat = m / (1 - B1 ** t)
        vhat = v / (1 - B2 ** t)
        np.subtract(p, LR * mhat / (np.sqrt(vhat) + EPS), out=p)   # p -= ...
    return step


def make_numpy_prealloc(p, g):
    m, v, tmp = np.zeros_like(p), np.zeros_like(p), np.empty_like(p)
    st = {"t": 0}

    def step():
        st["t"] += 1
        numpy_adam_prealloc(p, g, m, v, tmp, st["t"])
    return step


def _torch_param(p, g):
    torch = PEERS["torch"]
    pt = torch.from_numpy(p)          # shares memory with p
    pt.grad = torch.from_numpy(g)
    return pt


def make_torch(**flags):
    def make(p, g):
        pt = _torch_param(p, g)
        opt = PEERS["torch"].optim.Adam([pt], lr=LR, betas=(B1, B2), eps=EPS, **flags)
        return opt.step
    return make


def make_torch_raw(p, g):
    torch = PEERS["torch"]
    pt, gt = torch.from_numpy(p), torch.from_numpy(g)
    mt, vt = torch.zeros_like(pt), torch.zeros_like(pt)
    steps = [torch.tensor(0.0)]
    fused, add_ = torch._fused_adam_, torch._foreach_add_

    def step():
        add_(steps, 1)
        fused([pt], [gt], [mt], [vt], [], steps, lr=LR, beta1=B1, beta2=B2,
              weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False,
              grad_scale=None, found_inf=None)
    return step


def make_deepspeed(p, g):
    pt = _torch_param(p, g)
    opt = PEERS["deepspeed"]([pt], lr=LR, betas=(B1, B2), eps=EPS, adamw_mode=False)
    return opt.step


def make_optax(p, g):
    jax, optax = PEERS["jax"], PEERS["optax"]
    jnp = jax.numpy
    tx = optax.adam(LR, b1=B1, b2=B2, eps=EPS)

    def update(params, state, grad):
        updates, state = tx.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(update, donate_argnums=(0, 1))
    pj, gj = jnp.array(p), jnp.array(g)          # copies: jax owns its buffers
    box = [pj, tx.init(pj)]

    def step():
        box[0], box[1] = jitted(box[0], box[1], gj)
        jax.block_until_ready(box)
    step.params = lambda: np.asarray(box[0])     # jax works on its own copy of p
    return step


class Bandwidth:
    """In-place add a += b, one thread or split in halves over two threads."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1)

    def make(self, threads):
        def make(p, g):
            a = np.zeros_like(p)
            if threads == 1:
                return lambda: np.add(a, g, out=a)
            h = a.size // 2
            a0, a1, b0, b1 = a[:h], a[h:], g[:h], g[h:]
            submit, add = self.pool.submit, np.add

            def step():
                fut = submit(add, a1, b1, a1)
                add(a0, b0, a0)
                fut.result()
            return step
        return make


def contenders(skip: set[str]) -> dict[str, dict[str, Any]]:
    """name -> {make, dtypes (default: both)}; adamc cannot be skipped."""
    out = {"adamc": dict(make=make_adamc),
           "adamc adam_step": dict(make=make_adamc_stateless),
           "numpy textbook": dict(make=make_numpy_textbook),
           "numpy prealloc": dict(make=make_numpy_prealloc)}
    if "torch" in PEERS:
        out["torch default"] = dict(make=make_torch())
        out["torch foreach"] = dict(make=make_torch(foreach=True))
        out["torch fused"] = dict(make=make_torch(fused=True))
        out["torch._fused_adam_"] = dict(make=make_torch_raw)
    if "deepspeed" in PEERS:
        out["DeepSpeedCPUAdam"] = dict(make=make_deepspeed, dtypes=("float32",))
    if "optax" in PEERS:
        out["optax (jit)"] = dict(make=make_optax)     # XLA's own thread pool in every row
    return {k: v for k, v in out.items()
            if k == "adamc" or not any(s in k.lower() for s in skip)}


def check_contenders(table: dict[str, dict[str, Any]], dtypes: list[str]) -> None:
    """Drop (with a note) any contender whose 3-step update differs from adamc's."""
    rng = np.random.default_rng(1)
    for dt in dtypes:
        p0 = rng.standard_normal(1000, dtype=np.dtype(dt))
        g = rng.standard_normal(1000, dtype=np.dtype(dt))
        deltas = {}
        for name, c in list(table.items()):
            if dt not in c.get("dtypes", (dt,)):
                continue
            p = p0.copy()
            try:
                fn = c["make"](p, g)
                for _ in range(3):
                    fn()
                deltas[name] = (fn.params() if hasattr(fn, "params") else p) - p0
            except Exception as exc:  # noqa: BLE001
                note(f"{name} failed on {dt} ({type(exc).__name__}: {exc}): dropped")
                del table[name]
        ref = deltas.pop("adamc")
        scale = float(np.max(np.abs(ref)))
        for name, d in deltas.items():
            err = float(np.max(np.abs(d - ref))) / scale
            if not err <= 1e-3:
                note(f"{name} does not compute Adam's update on {dt} (relative difference "
                     f"{err:.1e} from adamc after 3 steps): dropped")
                del table[name]


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def set_threads(n: int) -> None:
    adamc.set_num_threads(n)
    if "torch" in PEERS:
        PEERS["torch"].set_num_threads(n)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_OTHERS = 0.25     # cores used by other processes that mark a timing as disturbed


def machine_busy_seconds() -> float | None:
    """CPU seconds spent by all processes since boot (/proc/stat), None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)     # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def measure(fn: Callable[[], Any], min_time: float, repeats: int) -> tuple[float, float, float]:
    """(median seconds per call, this process's CPU time / wall time, cores used by
    other processes meanwhile) while timing ``fn``."""
    time.sleep(0.005)     # let the previous contender's spinning worker threads park
    b0, c0, w0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    sec = time_per_call(fn, min_time, repeats)
    wall = time.perf_counter() - w0
    own = time.process_time() - c0
    b1 = machine_busy_seconds()
    others = max(0.0, (b1 - b0 - own) / wall) if b0 is not None and b1 is not None else 0.0
    return sec, own / wall, others


# -- the subnormal case ------------------------------------------------------------------
def subnormal_case(repeats: int, steps: int = 20, n: int = 10**6) -> dict[str, Any]:
    set_threads(1)
    out: dict[str, Any] = {"n": n, "dtype": "float32", "threads": 1, "steps_per_repeat": steps,
                           "start_step": 1000, "flushed": denormals_flushed()}
    g = np.zeros(n, np.float32)
    tiny = np.finfo(np.float32).tiny
    b0, c0, w0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    for case, value in (("normal", 1e-3), ("subnormal", 1e-39)):
        state = np.full(n, value, np.float32)
        # adamc: the bound optimizer, state loaded through the public state_dict API
        p = np.ones(n, np.float32)
        opt = adamc.Adam(p, lr=LR, betas=(B1, B2), eps=EPS)
        sd = opt.state_dict()
        sd["state"][0].update(step=1000, exp_avg=state, exp_avg_sq=state)
        sd["step_count"] = 1000
        rounds = []
        for _ in range(repeats):
            opt.load_state_dict(sd)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step(g)
            rounds.append((time.perf_counter() - t0) / steps)
        m_end = opt.state_dict()["state"][0]["exp_avg"]
        out[f"adamc_{case}_s"] = float(np.median(rounds))
        out[f"adamc_{case}_m_subnormal_fraction"] = float(
            np.mean((m_end != 0) & (np.abs(m_end) < tiny)))
        del opt, sd
        # NumPy prealloc: numpy_prealloc_update, state restored per repeat
        p = np.ones(n, np.float32)
        m, v, tmp = np.empty_like(p), np.empty_like(p), np.empty_like(p)
        rounds = []
        for _ in range(repeats):
            m[:], v[:] = state, state
            t0 = time.perf_counter()
            for t in range(1001, 1001 + steps):
                numpy_adam_prealloc(p, g, m, v, tmp, t)
            rounds.append((time.perf_counter() - t0) / steps)
        out[f"numpy prealloc_{case}_s"] = float(np.median(rounds))
        out[f"numpy prealloc_{case}_m_subnormal_fraction"] = float(
            np.mean((m != 0) & (np.abs(m) < tiny)))
    if b0 is not None:
        own, wall = time.process_time() - c0, time.perf_counter() - w0
        out["other_processes_cores"] = max(0.0, (machine_busy_seconds() - b0 - own) / wall)
    for who in ("adamc", "numpy prealloc"):
        out[f"{who}_slowdown"] = out[f"{who}_subnormal_s"] / out[f"{who}_normal_s"]
    return out


# -- the stateless steps at small N -------------------------------------------------------
def stateless_contenders(n: int) -> dict[str, Callable[[int], None]]:
    """name -> loop(calls): ``calls`` direct calls of one contender. Every ``*_step``
    function of the algorithm table, called with its required arguments only (states
    from zeros), plus ``adam_step`` with four hyperparameters by keyword and the bound
    ``Adam.step``; float64, and float32 for Adam."""
    from adamc import functional
    from adamc.algorithms import ALGORITHMS

    rng = np.random.default_rng(5)
    out: dict[str, Callable[[int], None]] = {}

    def loop(name, fn, arrays, extra=""):
        env = {"f": fn, **{f"a{i}": a for i, a in enumerate(arrays)}}
        args = ", ".join(f"a{i}" for i in range(len(arrays)))
        # generated so that the call is written out, as in user code (no *args/**kwargs)
        exec(f"def run(calls):\n    for t in range(1, calls + 1):\n"
             f"        f({args}, step=t{extra})\n", env)
        out[name] = env["run"]

    for dt in ("float64", "float32"):
        p = rng.standard_normal(n).astype(dt)
        g = (0.1 * rng.standard_normal(n)).astype(dt)
        opt = adamc.Adam(p.copy(), lr=LR, betas=(B1, B2), eps=EPS)
        env = {"s": opt.step, "g": g.copy()}
        exec("def run(calls):\n    for _ in range(calls):\n        s(g)\n", env)
        out[f"Adam.step {dt}"] = env["run"]
        for algorithm in ALGORITHMS.values():
            if not algorithm.stateless or (dt == "float32" and algorithm.name != "adam"):
                continue
            positional, _, _ = functional.step_signature(algorithm)
            required = [a for a in positional if "=" not in a]
            arrays = [p.copy(), g.copy()] + [np.zeros_like(p) for _ in required[2:]]
            fn = getattr(adamc, algorithm.step_name)
            loop(f"{algorithm.step_name} {dt}", fn, arrays)
            if algorithm.name == "adam" and dt == "float64":
                loop(f"adam_step {dt}, 4 keywords", fn, [a.copy() for a in arrays],
                     f", lr={LR!r}, beta1={B1!r}, beta2={B2!r}, eps={EPS!r}")
    return out


def stateless_case(rounds: int, calls: int, n: int = 10) -> dict[str, Any]:
    set_threads(1)
    table = stateless_contenders(n)
    names = list(table)
    for run in table.values():
        run(calls)                                  # warm up
    samples: dict[str, list[float]] = {k: [] for k in names}
    b0, c0, w0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            table[name](calls)
            samples[name].append((time.perf_counter() - t0) / calls)
    out: dict[str, Any] = {"n": n, "threads": 1, "rounds": rounds, "calls_per_round": calls,
                           "seconds": {}}
    for name in names:
        x = np.array(samples[name])
        out["seconds"][name] = {"median": float(np.median(x)),
                                "p90": float(np.percentile(x, 90))}
    for name in names:
        bound = out["seconds"][f"Adam.step {name.split()[1].rstrip(',')}"]["median"]
        out["seconds"][name]["ratio_to_bound"] = out["seconds"][name]["median"] / bound
    if b0 is not None:
        own, wall = time.process_time() - c0, time.perf_counter() - w0
        out["other_processes_cores"] = max(0.0, (machine_busy_seconds() - b0 - own) / wall)
    return out


def stateless_markdown(info: dict[str, Any], st: dict[str, Any]) -> str:
    rows = [[name, f"{v['median'] * 1e6:.3f}", f"{v['p90'] * 1e6:.3f}",
             f"{v['ratio_to_bound']:.2f}x"] for name, v in st["seconds"].items()]
    busy = st.get("other_processes_cores")
    return "\n".join([
        f"# Stateless steps at N = {st['n']}: every *_step function beside the bound "
        "Adam.step\n",
        f"{info['cpu']} ({info['cores']} cores), {info['date']}; adamc {info['adamc']} "
        f"({info['git']}), SIMD {info['simd_level']}, Python {info['python']}, NumPy "
        f"{info['numpy']}; 1 thread.",
        f"{st['rounds']} rounds visiting every contender in a rotating order, each a loop of "
        f"{st['calls_per_round']} direct calls (step=t counting up; defaults for every other "
        "argument unless stated); median and 90th percentile over the rounds, µs per call "
        "(loop included, about 0.02 µs)."
        + (f" Other processes used {busy:.2f} cores meanwhile." if busy is not None else "")
        + "\n",
        markdown_table(["contender", "median µs", "p90 µs", "median / bound Adam.step"], rows),
    ])


def publish_stateless(st: dict[str, Any], outdir: Path) -> None:
    info = machine()
    md = stateless_markdown(info, st)
    print()
    print(md)
    paths = write_outputs("bench_step_stateless", {"machine": info, "stateless": st}, md,
                          outdir=outdir)
    print("wrote", ", ".join(str(p) for p in paths))


# -- outputs -----------------------------------------------------------------------------
def fmt_us(sec: float | None) -> str:
    if sec is None:
        return "–"
    us = sec * 1e6
    return f"{us:.3g}" if us < 1000 else f"{us:,.0f}"


def build_markdown(payload: dict[str, Any], names: list[str]) -> str:
    info, args = payload["machine"], payload["settings"]
    peers = [n for n in names if not n.startswith("adamc")]
    lines = [
        "# One Adam step: adamc and its peers\n",
        f"{info['cpu']} ({info['cores']} cores), {info['date']}; adamc {info['adamc']} "
        f"({info['git']}), SIMD {info['simd_level']}, NumPy {info['numpy']}, "
        + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + ".",
        f"Median over {args.get('rounds', 1)} rounds, each visiting every contender in a "
        f"rotating order and taking the median of {args['repeats']} timings of at least "
        f"{args['min_time']} s"
        + (" (**--quick smoke run**: few repeats, not for publication)" if args["quick"] else "")
        + ". Every contender is timed in the same size/dtype/threads configuration.",
        "NumPy contenders and the 1-thread add are single-threaded in every row; optax uses "
        "XLA's default CPU thread pool in both rows; 'torch default' is torch.optim.Adam's "
        f"CPU default ({payload['torch_default_impl']}). 'speed-up' = fastest peer's time / "
        "adamc's time (> 1: adamc is faster).",
        f"1-minute load average at start {args['loadavg_1min_start']}, at the end "
        f"{args['loadavg_1min_end']} (this run's own load included at the end). "
        f"† marks a time measured while other processes used more than {BUSY_OTHERS} core "
        f"({args['disturbed_configurations']} of the configurations had one): rerun on a "
        "quiet machine; 2-thread times suffer most.\n",
    ]
    if payload["notes"]:
        lines += ["Skipped: " + "; ".join(payload["notes"]) + "\n"]
    for panel in payload["panels"]:
        dt, th = panel["dtype"], panel["threads"]
        add_label = "np.add, 1 thread" if th == 1 else "np.add, 2 Python threads"
        lines.append(f"## {dt}, {th} thread{'s' if th > 1 else ''}: µs per step\n")
        header = ["N"] + names + ["fastest peer", "speed-up", f"{add_label} GB/s"]
        rows, bw_rows = [], []
        for r in panel["rows"]:
            t = r["seconds"]
            row = [f"{r['n']:.0e}" if r["n"] >= 10**4 else str(r["n"])]
            busy = r.get("other_processes_cores", {})
            row += [fmt_us(t.get(k)) + (" †" if busy.get(k, 0) > BUSY_OTHERS else "")
                    for k in names]
            best = min((k for k in peers if t.get(k) is not None), key=t.get, default=None)
            if best is not None and t.get("adamc"):
                row += [best, f"{t[best] / t['adamc']:.2f}x"]
            else:
                row += ["–", "–"]
            row.append(f"{r['add_gbs']:.1f}")
            rows.append(row)
            bw_rows.append([row[0]] + [f"{r['gbs'][k]:.1f}" if k in r["gbs"] else "–"
                                       for k in names] + [f"{r['add_gbs']:.1f}"])
        lines.append(markdown_table(header, rows))
        lines.append(f"Effective bandwidth, GB/s ({ADAM_BYTES[dt]} bytes/element; "
                     f"in-place add: {ADD_BYTES[dt]}):\n")
        lines.append(markdown_table(["N"] + names + [add_label], bw_rows))
    sub = payload.get("subnormal")
    if sub:
        lines.append(f"## Subnormal state (float32, N = {sub['n']:.0e}, 1 thread, g = 0, "
                     f"m = v = 1e-39 against 1e-3, {sub['steps_per_repeat']} steps from "
                     f"step {sub['start_step']})\n")
        flushed = sub["flushed"]
        lines.append(f"Denormals flushed in this process: FTZ {flushed['ftz']}, "
                     f"DAZ {flushed['daz']}.\n")
        rows = [[who, fmt_us(sub[f"{who}_normal_s"]), fmt_us(sub[f"{who}_subnormal_s"]),
                 f"{sub[f'{who}_slowdown']:.2f}x",
                 f"{sub[f'{who}_subnormal_m_subnormal_fraction']:.2f}"]
                for who in ("adamc", "numpy prealloc")]
        lines.append(markdown_table(["", "normal µs/step", "subnormal µs/step", "slowdown",
                                     "share of m still subnormal at the end"], rows))
    return "\n".join(lines)


def plot(payload: dict[str, Any], names: list[str], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note("matplotlib not installed: no plot")
        return False
    panels = payload["panels"]
    dtypes = sorted({p["dtype"] for p in panels})
    threads = sorted({p["threads"] for p in panels})
    fig, axes = plt.subplots(len(dtypes), len(threads), squeeze=False, sharex=True,
                             figsize=(6.5 * len(threads), 4.6 * len(dtypes)))
    # one color per contender in every panel (DeepSpeed has no float64 panel)
    styles = {k: dict(marker="o", lw=2.2 if k == "adamc" else 1.2, ms=4, color=f"C{i % 10}")
              for i, k in enumerate(names)}
    for panel in panels:
        ax = axes[dtypes.index(panel["dtype"])][threads.index(panel["threads"])]
        ns = [r["n"] for r in panel["rows"]]
        for k in names:
            pts = [(r["n"], r["seconds"][k] / r["n"] * 1e9) for r in panel["rows"]
                   if r["seconds"].get(k) is not None]
            if pts:
                ax.plot(*zip(*pts), label=k, **styles[k])
        floor = [ADAM_BYTES[panel["dtype"]] / r["add_gbs"] for r in panel["rows"]]
        ax.plot(ns, floor, "k--", lw=1, label="Adam traffic at np.add bandwidth")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        th = panel["threads"]
        ax.set_title(f"{panel['dtype']}, {th} thread{'s' if th > 1 else ''}")
        ax.set_xlabel("N (elements)")
        ax.set_ylabel("ns per element")
    axes[0][0].legend(fontsize=8)
    info = payload["machine"]
    fig.suptitle(f"One Adam step — {info['cpu']}, adamc {info['adamc']} ({info['git']})"
                 + (" — quick smoke run" if payload["settings"]["quick"] else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ---------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: int(float(s)), nargs="+", default=DEFAULT_SIZES,
                        help="array sizes (1e6 accepted); default 10 ... 1e8")
    parser.add_argument("--quick", action="store_true",
                        help="drop sizes above 1e6, 3 repeats of 10 ms (a smoke run)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per contender and round, default 3 (quick: 3)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds over all contenders per configuration, default 3 "
                             "(quick: 1); the reported time is the median over rounds")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds per timing round; default 0.05 (quick: 0.01)")
    parser.add_argument("--skip", nargs="+", default=[],
                        help="peers to leave out: torch, deepspeed, optax, numpy, ...")
    parser.add_argument("--no-subnormal", action="store_true", help="skip the subnormal case")
    parser.add_argument("--stateless-only", action="store_true",
                        help="time only the stateless steps at N = 10 (bench_step_stateless.*)")
    parser.add_argument("--no-stateless", action="store_true",
                        help="skip the stateless steps at N = 10")
    parser.add_argument("--stateless-rounds", type=int, default=None,
                        help="rounds of the stateless section, default 300 (quick: 30)")
    parser.add_argument("--stateless-calls", type=int, default=2000,
                        help="calls per timing of the stateless section (default 2000)")
    parser.add_argument("--outdir", type=Path, default=RESULTS)
    parser.add_argument("--replot", metavar="JSON", type=Path, default=None,
                        help="rebuild the markdown and the plot from a saved run, no timing")
    args = parser.parse_args(argv)
    if args.replot is not None:
        replot(args.replot, args.outdir)
        return
    sizes = sorted(set(args.sizes))
    if args.quick:
        sizes = [n for n in sizes if n <= 10**6]
    repeats = args.repeats or 3
    args.rounds = args.rounds or (1 if args.quick else 3)
    min_time = args.min_time if args.min_time is not None else (0.01 if args.quick else 0.05)
    skip = {s.lower() for s in args.skip}
    stateless_rounds = args.stateless_rounds or (30 if args.quick else 300)
    if args.stateless_only:
        publish_stateless(stateless_case(stateless_rounds, args.stateless_calls), args.outdir)
        return

    load_peers(skip)
    flushed = denormals_flushed()
    if flushed["ftz"] or flushed["daz"]:
        note(f"denormals are flushed in this process ({flushed}): a loaded library set "
             "FTZ/DAZ; subnormal timings are not meaningful")
    table = contenders(skip)
    check_contenders(table, args.dtypes)
    names = list(table)
    load_start = loadavg()
    if load_start is not None and load_start > 0.5:
        print(f"warning: load average {load_start:.2f} at start: the machine is not quiet; "
              "2-thread timings suffer most when another process holds a core")
    torch_default_impl = "n/a"
    if "torch" in PEERS:
        from torch.optim.optimizer import _default_to_fused_or_foreach
        t = PEERS["torch"].zeros(1)
        fused, foreach = _default_to_fused_or_foreach([t], False, False)
        torch_default_impl = "fused" if fused else "foreach" if foreach else "for-loop"
    print(f"contenders: {', '.join(names)}; sizes {sizes}; dtypes {args.dtypes}; "
          f"threads {args.threads}; {repeats} repeats of >= {min_time} s")

    bandwidth = Bandwidth()
    rng = np.random.default_rng(0)
    panels = {(dt, th): {"dtype": dt, "threads": th, "rows": []}
              for dt in args.dtypes for th in args.threads}
    start = time.perf_counter()
    n_busy = 0
    for n in sizes:
        for dt in args.dtypes:
            dtype = np.dtype(dt)
            p = rng.standard_normal(n, dtype=dtype)
            g = rng.standard_normal(n, dtype=dtype)
            for th in args.threads:
                set_threads(th)
                # Rounds: every contender is built, timed and freed once per round, in an
                # order that rotates, so that a drift of the machine's memory bandwidth
                # during a configuration affects all of them alike (holding every
                # contender's state at once does not fit in memory at N = 1e8).
                visit = [k for k, c in table.items() if dt in c.get("dtypes", (dt,))] + ["add"]
                samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in visit}
                for r in range(args.rounds):
                    for name in visit[r % len(visit):] + visit[:r % len(visit)]:
                        if name == "add":
                            samples[name].append(measure(bandwidth.make(th)(p, g), min_time,
                                                         repeats))
                            gc.collect()
                            continue
                        fn = table[name]["make"](p, g)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")   # e.g. jax's donation notice
                            samples[name].append(measure(fn, min_time, repeats))
                        del fn
                        gc.collect()
                seconds = {k: float(np.median([x[0] for x in v])) for k, v in samples.items()}
                cpu = {k: float(np.mean([x[1] for x in v])) for k, v in samples.items()}
                others = {k: float(max(x[2] for x in v)) for k, v in samples.items()}
                add_s, add_cpu, add_others = seconds.pop("add"), cpu.pop("add"), others.pop("add")
                row = {"n": n, "seconds": seconds, "cpu_util": cpu, "other_processes_cores": others,
                       "add_seconds": add_s, "add_cpu_util": add_cpu,
                       "add_other_processes_cores": add_others,
                       "add_gbs": ADD_BYTES[dt] * n / add_s / 1e9,
                       "gbs": {k: ADAM_BYTES[dt] * n / s / 1e9 for k, s in seconds.items()}}
                panels[(dt, th)]["rows"].append(row)
                best = min((k for k in seconds if not k.startswith("adamc")), key=seconds.get, default=None)
                print(f"N={n:>9} {dt} {th}T  adamc {seconds['adamc'] * 1e6:10.2f} µs"
                      + (f"  fastest peer {best} {seconds[best] * 1e6:10.2f} µs"
                         f"  speed-up {seconds[best] / seconds['adamc']:.2f}x" if best else "")
                      + f"  add {row['add_gbs']:.1f} GB/s", flush=True)
                busy = max([add_others, *others.values()])
                if busy > BUSY_OTHERS:
                    n_busy += 1
                    print(f"  warning: other processes used up to {busy:.1f} cores while "
                          "this configuration was timed", flush=True)
            del p, g
            gc.collect()

    subnormal = None
    if not args.no_subnormal:
        subnormal = subnormal_case(repeats=5 if args.quick else 15)
        print(f"subnormal (float32, 1e6, 1 thread): adamc {subnormal['adamc_slowdown']:.2f}x, "
              f"numpy prealloc {subnormal['numpy prealloc_slowdown']:.2f}x slower than normal")
    bandwidth.pool.shutdown()
    if not args.no_stateless:
        publish_stateless(stateless_case(stateless_rounds, args.stateless_calls), args.outdir)

    payload = {
        "machine": machine(),
        "versions": VERSIONS,
        "settings": {"sizes": sizes, "dtypes": args.dtypes, "threads": args.threads,
                     "repeats": repeats, "rounds": args.rounds, "min_time": min_time,
                     "quick": args.quick,
                     "lr": LR, "betas": [B1, B2], "eps": EPS,
                     "adam_bytes_per_element": ADAM_BYTES, "add_bytes_per_element": ADD_BYTES,
                     "xla_flags": os.environ.get("XLA_FLAGS", ""),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
                     "argv": sys.argv[1:], "elapsed_s": round(time.perf_counter() - start, 1),
                     "loadavg_1min_start": load_start, "loadavg_1min_end": loadavg(),
                     "disturbed_configurations": n_busy},
        "contenders": names,
        "torch_default_impl": torch_default_impl,
        "bandwidth_2_threads": "two halves: main thread + one persistent Python worker thread",
        "notes": NOTES,
        "panels": list(panels.values()),
        "subnormal": subnormal,
    }
    publish(payload, names, args.outdir)


def publish(payload: dict[str, Any], names: list[str], outdir: Path) -> None:
    """Write the JSON, the markdown tables and the plot of a run."""
    md = build_markdown(payload, names)
    print()
    print(md)
    json_path, md_path = write_outputs("bench_step", payload, md, outdir=outdir)
    png_path = outdir / "bench_step.png"
    written = [json_path, md_path] + ([png_path] if plot(payload, names, png_path) else [])
    print("wrote", ", ".join(str(p) for p in written))


def replot(json_path: Path, outdir: Path) -> None:
    """Rebuild the markdown and the plot of a saved run (no timing)."""
    payload = json.loads(Path(json_path).read_text())
    names: list[str] = []
    for panel in payload["panels"]:
        for row in panel["rows"]:
            names += [k for k in row["seconds"] if k not in names]
    publish(payload, names, outdir)


if __name__ == "__main__":
    main()
