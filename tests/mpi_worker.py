"""Scenarios run under ``mpiexec -n N python tests/mpi_worker.py TMPDIR`` by
tests/test_distributed.py. Each scenario asserts on every rank; every rank writes one
line per scenario to TMPDIR/results-N-RANK.txt: ``<scenario> OK`` or ``<scenario> FAIL
<traceback>``. Collective errors are checked on every rank, so a scenario that raised
on one rank only would deadlock and be caught by the driver's timeout."""
from __future__ import annotations

import os
import sys
import traceback
import zlib

import numpy as np
from mpi4py import MPI

import adamc
from adamc.algorithms import ALGORITHMS
from adamc.distributed import BLOCK, DistributedOptimizer, RankError
from optim_db import DB  # the conformance table (this script's folder is on sys.path)

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
TMP = sys.argv[1]
SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def same_everywhere(*arrays):
    """The arrays hold the same bits on every rank."""
    crc = [zlib.crc32(np.ascontiguousarray(a).view(np.uint8)) for a in arrays]
    everyone = comm.allgather(crc)
    assert all(c == everyone[0] for c in everyone), everyone


def raises_everywhere(exc_type, fn, *words):
    """fn() raises exc_type on this rank with every word in its message."""
    try:
        fn()
    except exc_type as exc:
        text = str(exc)
        assert all(w in text for w in words), (text, words)
        return exc
    raise AssertionError(f"{exc_type.__name__} not raised on rank {rank}")


def problem(seed=0):
    """Parameters of two dtypes and three shapes; the float32 buffer spans several
    blocks, so that 3 ranks get uneven shards."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(4 * BLOCK + 77).astype(np.float32),
            rng.standard_normal((9, 13)).astype(np.float32),
            rng.standard_normal((3, 700))]


def local_grads(params, t, r=None):
    """Rank r's gradients at step t (deterministic, different on each rank)."""
    r = rank if r is None else r
    return [(np.sin(p * (r + 1) + t) + 0.1 * r).astype(p.dtype) for p in params]


def averaged(params, t):
    """What the ranks average: the sum in rank order divided by the number of ranks."""
    per_rank = [local_grads(params, t, r) for r in range(size)]
    out = []
    for k, p in enumerate(params):
        acc = per_rank[0][k].copy()
        for r in range(1, size):
            acc = acc + per_rank[r][k]
        out.append(acc / p.dtype.type(size))
    return out


def groups(params):
    return [{"params": params[:2], "lr": 1e-2}, {"params": params[2:], "lr": 3e-3}]


# The MPI column of the conformance table (tests/optim_db.py): the algorithms without
# optimizer-wide state here, the others in ENGINES below; and AdamW.
OPTIMIZERS = [(getattr(adamc, DB[a].cls), kw) for a in DB if ALGORITHMS[a].engine is None
              for kw in DB[a].mpi]
OPTIMIZERS.insert(1, (adamc.AdamW, dict()))


@scenario
def sharded_equals_single_process():
    """Every algorithm, sharded and replicated: the same bits as one process fed
    the averaged gradients."""
    for cls, kw in OPTIMIZERS:
        results = {}
        for mode in ("replicated", "sharded", None):
            params = problem()
            base = cls(groups(params), **kw)
            opt = base if mode is None else DistributedOptimizer(base, comm, mode)
            for t in range(4):
                opt.step(averaged(params, t) if mode is None else local_grads(params, t))
            results[mode] = params
            same_everywhere(*params)
        for mode in ("replicated", "sharded"):
            for a, b in zip(results[mode], results[None]):
                assert np.array_equal(a, b), (cls.__name__, mode, np.abs(a - b).max())


@scenario
def clipping_replicated_equals_sharded():
    """max_grad_norm and clip_value: both modes give the same bits; one process
    agrees within rounding (its norm is summed in another order)."""
    results = {}
    for mode in ("replicated", "sharded", None):
        params = problem(1)
        base = adamc.Adam(params, lr=1e-2, max_grad_norm=5.0, clip_value=0.9)
        opt = base if mode is None else DistributedOptimizer(base, comm, mode)
        for t in range(5):
            opt.step(averaged(params, t) if mode is None else local_grads(params, t))
        results[mode] = params
    for a, b in zip(results["replicated"], results["sharded"]):
        assert np.array_equal(a, b)
    for a, b in zip(results["sharded"], results[None]):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-6 if a.dtype == np.float32 else 1e-13)


@scenario
def reduction_in_rounds():
    """A receive buffer of two blocks: the reduce-scatter takes several rounds and
    gives the same bits."""
    import adamc.distributed as dist
    saved = dist.RECV_ELEMENTS
    dist.RECV_ELEMENTS = 2 * BLOCK
    try:
        params = problem()
        opt = DistributedOptimizer(adamc.Adam(params), comm, "sharded")
        assert size == 1 or max(len(b.rounds) for b in opt._buckets) > 1
        sharded_equals_single_process()
        clipping_replicated_equals_sharded()
    finally:
        dist.RECV_ELEMENTS = saved


@scenario
def fast_reduction_within_rounding():
    """reproducible=False (MPI's own reductions) agrees within rounding, and keeps
    the parameters identical on every rank."""
    results = {}
    for reproducible in (True, False):
        for mode in ("replicated", "sharded"):
            params = problem(2)
            opt = DistributedOptimizer(adamc.Adam(params, lr=1e-2), comm, mode,
                                       reproducible=reproducible)
            for t in range(3):
                opt.step(local_grads(params, t))
            same_everywhere(*params)
            results[reproducible, mode] = params
    for key, params in results.items():
        for a, b in zip(params, results[True, "replicated"]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@scenario
def sharded_state_memory():
    """Each rank holds about 1/size of the state; the shards cover everything."""
    params = problem()
    whole = adamc.Adam(params)
    total = sum(a.nbytes for st in whole._state_arrays for a in st if a is not None)
    opt = DistributedOptimizer(whole, comm, "sharded")
    mine = opt.state_nbytes
    assert sum(comm.allgather(mine)) == total
    assert mine <= total / size + 2 * BLOCK * 8 * 2, (mine, total)
    rep = DistributedOptimizer(adamc.Adam(params), comm, "replicated")
    assert rep.state_nbytes == total


@scenario
def no_allocation_per_step():
    """A step allocates nothing the size of the gradients (buffers are made once)."""
    import tracemalloc
    n = 100_000  # 400 KB of float32 per array
    for mode in ("replicated", "sharded"):
        for options in ({}, {"max_grad_norm": 1.0, "nonfinite": "skip"}):
            x = np.zeros(n, np.float32)
            opt = DistributedOptimizer(adamc.Adam([x, np.zeros((20, 50))], **options), comm,
                                       mode)
            g = [np.full(n, 0.01 * (rank + 1), np.float32), np.ones((20, 50))]
            opt.step(g)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(5):
                opt.step(g)
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak - before < 32 * 1024, (mode, options, peak - before)
            assert current - before < 4 * 1024, (mode, options, current - before)


@scenario
def nonfinite_on_one_rank():
    """A NaN in one rank's gradient: skipped (or raised) on every rank."""
    for mode in ("replicated", "sharded"):
        params = problem()
        opt = DistributedOptimizer(adamc.Adam(params, nonfinite="skip"), comm, mode)
        opt.step(local_grads(params, 0))
        before = [p.copy() for p in params]
        g = local_grads(params, 1)
        if rank == size - 1:
            g[2][2, 600] = np.nan
        opt.step(g)
        assert opt.skipped_steps == 1 and opt.step_count == 1
        for a, b in zip(params, before):
            assert np.array_equal(a, b)
        # an infinity is seen before clip_value would clamp it
        params = problem()
        opt = DistributedOptimizer(adamc.Adam(params, nonfinite="skip", clip_value=0.5),
                                   comm, mode)
        g = local_grads(params, 0)
        if rank == 0:
            g[1][3, 4] = -np.inf
        opt.step(g)
        assert opt.skipped_steps == 1 and opt.step_count == 0
        params = problem()
        opt = DistributedOptimizer(adamc.Adam(params, nonfinite="raise"), comm, mode)
        g = local_grads(params, 0)
        if rank == 0:
            g[0][4 * BLOCK + 5] = np.inf
        raises_everywhere(FloatingPointError, lambda: opt.step(g), "params[0]",
                          f"index {4 * BLOCK + 5}", "nothing was updated")
        for a, b in zip(params, problem()):
            assert np.array_equal(a, b)


@scenario
def inconsistent_input_raises_everywhere():
    params = problem()
    # shapes
    mine = [p.copy() for p in params]
    if rank == size - 1:
        mine[1] = mine[1][:8]
    raises_everywhere(ValueError, lambda: DistributedOptimizer(adamc.Adam(mine), comm),
                      "params[1]", f"rank {size - 1}")
    # optimizer settings
    raises_everywhere(ValueError, lambda: DistributedOptimizer(
        adamc.Adam(params, lr=1e-3 if rank == 0 else 2e-3), comm, "sharded"),
        "['lr']", "rank 0", "rank 1")
    raises_everywhere(ValueError, lambda: DistributedOptimizer(
        adamc.Adam(params) if rank else adamc.AdamW(params), comm), "class")
    raises_everywhere(ValueError, lambda: DistributedOptimizer(
        adamc.Adam(params, max_grad_norm=1.0 if rank else None), comm), "max_grad_norm")
    raises_everywhere(ValueError, lambda: DistributedOptimizer(
        adamc.Adam(params, ema=0.9 if rank else 0.8), comm, "sharded"), "weight averaging")
    # Prodigy's estimate of d (scalar state mirrored into the groups) differing
    prodigy = adamc.Prodigy(params)
    state = prodigy.state_dict()
    state["param_groups"][0].update(d=2e-6 if rank else 1e-6, d_max=2e-6)
    prodigy.load_state_dict(state)
    raises_everywhere(ValueError, lambda: DistributedOptimizer(prodigy, comm, "sharded"),
                      "param_groups[0]['d']")
    # values
    other = [p + rank for p in params]
    raises_everywhere(ValueError, lambda: DistributedOptimizer(adamc.Adam(other), comm),
                      "the values of params[0]")
    # a bad argument on one rank
    raises_everywhere(ValueError, lambda: DistributedOptimizer(
        adamc.Adam(params), comm, "sharded" if rank else "zero"), "mode")
    # gradients of the wrong shape on one rank: nothing updated anywhere
    for mode in ("replicated", "sharded"):
        params = problem()
        opt = DistributedOptimizer(adamc.Adam(params), comm, mode)
        g = local_grads(params, 0)
        if rank == size - 1:
            g[2] = g[2][:, :10]
        raises_everywhere(ValueError, lambda: opt.step(g), f"rank {size - 1}", "grads[2]")
        raises_everywhere(ValueError, lambda: opt.step(g[:2] if rank == 0 else g),
                          "gradients")
        for a, b in zip(params, problem()):
            assert np.array_equal(a, b)
        assert opt.step_count == 0
        # hyperparameters changed on one rank only, then on all
        opt.param_groups[0]["lr"] = 0.5 if rank == 0 else 1e-3
        raises_everywhere(ValueError, lambda: opt.step(local_grads(params, 0)),
                          "inconsistent hyperparameters")
        opt.param_groups[0]["lr"] = -1.0
        raises_everywhere(ValueError, lambda: opt.step(local_grads(params, 0)), "lr")
        opt.param_groups[0]["lr"] = 0.5
        opt.step(local_grads(params, 0))
        ref_params = problem()
        ref = adamc.Adam(ref_params, lr=0.5)
        ref.step(averaged(ref_params, 0))
        for a, b in zip(params, ref_params):
            assert np.array_equal(a, b)


@scenario
def more_collective_failures():
    """Failures that arise on some ranks only, after the input checks."""
    # hyperparameters that need state the optimizer was created without
    for mode in ("replicated", "sharded"):
        params = problem()
        opt = DistributedOptimizer(adamc.SGD(groups(params)), comm, mode)
        opt.param_groups[1]["momentum"] = 0.9
        raises_everywhere(ValueError, lambda: opt.step(local_grads(params, 0)),
                          "momentum_buffer")
    # a Python schedule: every rank evaluates it, so a failure raises everywhere before
    # any update, even where the group has no elements (the 100-element group lives on
    # the last rank only)
    def make():
        return [np.linspace(-1, 1, 3 * BLOCK), np.zeros(100)]

    def schedule(t):
        return 1e-3 if t != 2 else -1.0

    def grads(t):
        return [np.cos(ps[0] + t), np.full(100, 1.0 + t)]

    ps = make()
    opt = DistributedOptimizer(adamc.Adam([{"params": ps[:1], "lr": 1e-2},
                                           {"params": ps[1:], "lr": schedule}]),
                               comm, "sharded")
    opt.step(grads(0))
    before = [p.copy() for p in ps]
    raises_everywhere(ValueError, lambda: opt.step(grads(1)), "bad learning rate", "rank 0")
    for a, b in zip(ps, before):
        assert np.array_equal(a, b)
    same_everywhere(*ps)
    opt.param_groups[1]["lr"] = 2e-3
    opt.step(grads(2))
    ref_ps = make()
    ref = adamc.Adam([{"params": ref_ps[:1], "lr": 1e-2}, {"params": ref_ps[1:], "lr": schedule}])
    def mean(g):  # what the ranks' identical gradients average to: rank order
        acc = g
        for _ in range(1, size):
            acc = acc + g
        return acc / size

    ref.step([mean(np.cos(ref_ps[0])), mean(np.full(100, 1.0))])
    ref.param_groups[1]["lr"] = 2e-3
    ref.step([mean(np.cos(ref_ps[0] + 2)), mean(np.full(100, 3.0))])
    for a, b in zip(ps, ref_ps):
        assert np.array_equal(a, b)
    # the nearest standard type survives the trip (FileNotFoundError -> OSError)
    opt = DistributedOptimizer(adamc.Adam(np.zeros(100)), comm, "sharded")
    raises_everywhere(OSError, lambda: adamc.save(opt, os.path.join(TMP, "no", "dir.npz")),
                      "rank 0")
    # consolidate with different roots
    if size > 1:
        raises_everywhere(ValueError, lambda: opt.consolidate(root=rank), "same root")
    raises_everywhere(ValueError, lambda: opt.consolidate(root=size), "root must be")
    # minimize: analytic gradient on one rank, finite differences on another
    X, y = _regression()
    raises_everywhere(ValueError, lambda: adamc.minimize(
        lambda w: _loss(w, X, y) if rank else _loss(w, X, y)[0], np.zeros(6),
        jac=True if rank else None, options={"comm": comm, "maxiter": 3}), "jac")
    # minimize: a checkpoint that only rank 0 sees (relative path, per-rank directory)
    here = os.getcwd()
    os.makedirs(os.path.join(TMP, f"cwd-{size}-{rank}"), exist_ok=True)
    os.chdir(os.path.join(TMP, f"cwd-{size}-{rank}"))
    try:
        opts = {"comm": comm, "checkpoint": "ck.npz", "checkpoint_every": 2, "maxiter": 4}
        adamc.minimize(_loss, np.zeros(6), args=(X, y), jac=True, options=opts)
        assert os.path.exists("ck.npz") == (rank == 0)  # written by rank 0, in its cwd
        raises_everywhere(ValueError, lambda: adamc.minimize(
            _loss, np.zeros(6), args=(X, y), jac=True, options=dict(opts, resume=True)),
            "every rank must resume from the same checkpoint")
    finally:
        os.chdir(here)


@scenario
def empty_parameter_group():
    """A group of zero-size parameters (a plain optimizer accepts it)."""
    def make():
        return [np.zeros(0), np.zeros((0, 3))], [np.linspace(-1, 1, 3000)]
    for mode in ("replicated", "sharded"):
        empty, full = make()
        opt = DistributedOptimizer(adamc.NAdam([{"params": empty}, {"params": full}]),
                                   comm, mode)
        for t in range(3):
            opt.step([np.zeros(0), np.zeros((0, 3)), np.cos(full[0] * (rank + 1) + t)])
        path = os.path.join(TMP, f"empty-{size}-{mode}.npz")
        adamc.save(opt, path)
        whole = opt.consolidate()
        e2, f2 = make()
        ref = adamc.NAdam([{"params": e2}, {"params": f2}])
        for t in range(3):
            ref.step([np.zeros(0), np.zeros((0, 3)), averaged_cos(f2[0], t)])
        assert np.array_equal(full[0], f2[0])
        loaded = adamc.load(path, make()[0] + make()[1])
        for got in ([whole] if rank == 0 else []) + [loaded]:
            a, b = got.state_dict(), ref.state_dict()
            assert a["step_count"] == b["step_count"] == 3
            for i in b["state"]:
                for key, v in b["state"][i].items():
                    assert np.array_equal(np.asarray(a["state"][i][key]), np.asarray(v)), key


def averaged_cos(x, t):
    acc = np.cos(x * 1 + t)
    for r in range(1, size):
        acc = acc + np.cos(x * (r + 1) + t)
    return acc / size


@scenario
def checkpoint_any_number_of_ranks():
    """Saved collectively, loaded in one process or re-wrapped on these ranks: the
    resumed run gives the same bits as an uninterrupted one."""
    path = os.path.join(TMP, f"dist-{size}.npz")
    cls, kw = adamc.NAdam, dict(weight_decay=1e-2)
    straight = problem(3)
    opt = DistributedOptimizer(cls(groups(straight), **kw), comm, "sharded")
    for t in range(6):
        opt.step(local_grads(straight, t))
        if t == 2:
            adamc.save(opt, path)
            full = opt.consolidate()
            assert (full is None) == (rank != 0)
            if full is not None:
                assert full.step_count == 3 and type(full) is cls
    # one process, from the file
    single = problem(3)
    resumed = adamc.load(path, single)
    assert resumed.step_count == 3
    for t in range(3, 6):
        resumed.step(averaged(single, t))
    for a, b in zip(single, straight):
        assert np.array_equal(a, b)
    # these ranks again, in the other mode
    again = problem(3)
    opt2 = DistributedOptimizer(adamc.load(path, again), comm, "replicated")
    for t in range(3, 6):
        opt2.step(local_grads(again, t))
    for a, b in zip(again, straight):
        assert np.array_equal(a, b)
    # the file written by the other launch (2 ranks vs 3), if it ran first
    other = os.path.join(TMP, "dist-2.npz")
    if size == 3 and os.path.exists(other):
        q = problem(3)
        DistributedOptimizer(adamc.load(other, q), comm, "sharded").step(local_grads(q, 3))
        same_everywhere(*q)


def _regression(seed=0, n=240):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    y = X @ np.linspace(-1, 1, 6) + 0.05 * rng.standard_normal(n)
    return X, y


def _loss(w, X, y):
    e = X @ w - y
    return 0.5 * float(e @ e) / len(y), X.T @ e / len(y)


@scenario
def minimize_weighted_batches():
    """Uneven batches: f and g are averaged with the batch sizes as weights; every
    rank returns the same result, equal to a one-process emulation."""
    X, y = _regression()
    parts = np.array_split(np.arange(len(y)), [50, 130][:size - 1]) if size > 1 else [
        np.arange(len(y))]

    def batches(r):
        return adamc.minibatches(X[parts[r]], y[parts[r]], batch_size=16 + 3 * r,
                                 epochs=3, seed=r)

    res = adamc.minimize(_loss, np.zeros(6), jac=True,
                         options={"comm": comm, "lr": 0.05, "batches": batches(rank)})
    same_everywhere(res.x, res.jac, np.array([res.fun, res.nit, res.status, res.nfev]))
    # the same loop in one process (minimize's order: step, then the next batches)
    its = [batches(r) for r in range(size)]
    current = [next(it) for it in its]

    def average():
        fs, gs = zip(*(_loss(x, *b) for b in current))
        ws = [float(len(b[0])) for b in current]
        if len(set(ws)) == 1:
            return sum(fs) / size, sum(gs[1:], gs[0]) / size
        f, g = 0.0, ws[0] * gs[0]
        for r in range(size):
            f += ws[r] * fs[r]
        for r in range(1, size):
            g = g + ws[r] * gs[r]
        return f / sum(ws), g / sum(ws)

    x = np.zeros(6)
    opt = adamc.Adam(x, lr=0.05)
    f, g = average()
    nit, done = 0, False
    while not done:
        opt.step(g)
        for r in range(size):
            b = next(its[r], None)
            done |= b is None
            current[r] = current[r] if b is None else b
        f, g = average()
        nit += 1
    assert res.status == 0 and "exhausted" in res.message
    assert res.nit == nit, (res.nit, nit)
    np.testing.assert_allclose(res.x, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.fun, f, rtol=1e-12)


@scenario
def minimize_matches_single_process():
    """Without batches: each rank's objective on its part of the data, averaged."""
    X, y = _regression(1, 300)
    part = np.array_split(np.arange(300), size)[rank]
    res = adamc.minimize(_loss, np.zeros(6), args=(X[part], y[part]), jac=True,
                         options={"comm": comm, "lr": 0.05, "maxiter": 400, "gtol": 0})
    ref = adamc.minimize(_loss, np.zeros(6), args=(X, y), jac=True,
                         options={"lr": 0.05, "maxiter": 400, "gtol": 0})
    same_everywhere(res.x)
    assert res.nit == ref.nit == 400
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-9)


@scenario
def minimize_collective_stops():
    X, y = _regression(2)
    part = np.array_split(np.arange(len(y)), size)[rank]
    args = (X[part], y[part])
    opts = {"comm": comm, "lr": 0.05, "maxiter": 500, "gtol": 0}
    # a callback's StopIteration on the last rank only
    calls = []

    def callback(xk):
        calls.append(1)
        if rank == size - 1 and len(calls) == 7:
            raise StopIteration

    res = adamc.minimize(_loss, np.zeros(6), args=args, jac=True, callback=callback,
                         options=opts)
    assert res.status == 99 and res.nit == 7
    # a callback only on rank 0
    res = adamc.minimize(_loss, np.zeros(6), args=args, jac=True,
                         callback=callback if rank == 0 else None, options=opts)
    assert res.status == 1
    # a non-finite objective on one rank

    def nonfinite(w, X, y):
        nonfinite.k += 1
        f, g = _loss(w, X, y)
        return (np.nan if rank == 0 and nonfinite.k == 5 else f), g
    nonfinite.k = 0
    res = adamc.minimize(nonfinite, np.zeros(6), args=args, jac=True,
                         options=dict(opts, nonfinite="stop"))
    assert res.status == 3 and res.nit == 3, (res.status, res.nit)
    same_everywhere(res.x)
    # ... which every rank backtracks from together (the default)
    nonfinite.k = 0
    res = adamc.minimize(nonfinite, np.zeros(6), args=args, jac=True, options=opts)
    assert res.status == 1 and res.nit == 500 and res.nbacktrack == 1, res
    same_everywhere(res.x)
    # batches exhausted on one rank first
    res = adamc.minimize(_loss, np.zeros(6), jac=True, options=dict(
        opts, maxiter=None, batches=adamc.minibatches(*args, batch_size=10, epochs=1 + rank)))
    sizes = [len(p) for p in np.array_split(np.arange(len(y)), size)]
    assert res.status == 0 and res.nit == min(-(-n // 10) * (1 + r)
                                              for r, n in enumerate(sizes)), res.nit
    # an exception in the objective on one rank: RankError everywhere, naming it

    def failing(w, X, y):
        failing.k += 1
        if rank == size - 1 and failing.k == 4:
            raise ZeroDivisionError("bad batch")
        return _loss(w, X, y)
    failing.k = 0
    err = raises_everywhere(RankError, lambda: adamc.minimize(
        failing, np.zeros(6), args=args, jac=True, options=opts),
        f"rank {size - 1}", "ZeroDivisionError", "bad batch")
    assert err.rank == size - 1
    # and in a callback
    raises_everywhere(RankError, lambda: adamc.minimize(
        _loss, np.zeros(6), args=args, jac=True, options=opts,
        callback=lambda xk: 1 / 0 if rank == 0 else None), "rank 0")
    # inconsistent options
    raises_everywhere(ValueError, lambda: adamc.minimize(
        _loss, np.zeros(6), args=args, jac=True, options=dict(opts, lr=0.1 * (rank + 1))),
        "options['lr']")
    raises_everywhere(ValueError, lambda: adamc.minimize(
        _loss, np.zeros(6) + rank, args=args, jac=True, options=opts), "x0")
    raises_everywhere(ValueError, lambda: adamc.minimize(
        _loss, np.zeros(6), args=args, jac=True, options=dict(opts, maxiter=-rank)),
        "maxiter")


@scenario
def minimize_checkpoint_resume():
    X, y = _regression(3)
    part = np.array_split(np.arange(len(y)), size)[rank]

    def batches():
        return adamc.minibatches(X[part], y[part], batch_size=8, epochs=20, seed=rank)

    path = os.path.join(TMP, f"minimize-{size}.npz")
    opts = {"comm": comm, "lr": 0.02, "checkpoint": path, "checkpoint_every": 5}
    straight = adamc.minimize(_loss, np.zeros(6), jac=True,
                              options={"comm": comm, "lr": 0.02, "maxiter": 40,
                                       "batches": batches()})
    first = adamc.minimize(_loss, np.zeros(6), jac=True,
                           options=dict(opts, maxiter=23, batches=batches()))
    assert first.nit == 23
    comm.Barrier()
    resumed = adamc.minimize(_loss, np.zeros(6), jac=True,
                             options=dict(opts, maxiter=40, resume=True, batches=batches()))
    assert resumed.nit == 40
    assert np.array_equal(resumed.x, straight.x)
    assert resumed.fun == straight.fun


@scenario
def get_last_lr_in_both_modes():
    """The rates of the last step, the same on every rank, whether or not the rank
    holds a piece of the group (in sharded mode the small float64 group sits on the
    last rank only)."""
    sched = adamc.schedules.step_decay(1e-2, step_size=2, gamma=0.5)

    def python_lr(t):
        return 3e-3 / t

    for mode in ("replicated", "sharded"):
        params = [problem()[0], np.linspace(-1, 1, 10)]
        opt = DistributedOptimizer(adamc.Adam([{"params": params[:1], "lr": sched},
                                               {"params": params[1:], "lr": python_lr}]),
                                   comm, mode)
        if mode == "sharded" and size > 1:
            held = comm.allgather(opt._inner_groups)
            assert held[:-1] == [[0]] * (size - 1) and held[-1] == [0, 1], held
        assert opt.get_last_lr() == [1e-2, 3e-3]  # before any step: the first step's
        for t in range(1, 5):
            opt.step(local_grads(params, t))
            assert opt.get_last_lr() == [sched(t), 3e-3 / t], (mode, t, opt.get_last_lr())
        opt.param_groups[1]["lr"] = 1e-3
        opt.step(local_grads(params, 5))
        assert opt.get_last_lr() == [sched(5), 1e-3], (mode, opt.get_last_lr())
        everyone = comm.allgather(opt.get_last_lr())
        assert all(e == everyone[0] for e in everyone), everyone


# Optimizers with optimizer-wide state (Prodigy's d, the schedule-free weight sums)
# or a weight average.
ENGINES = [(getattr(adamc, DB[a].cls), kw) for a in DB if ALGORITHMS[a].engine is not None
           for kw in DB[a].mpi] + [
    (adamc.Adam, dict(lr=1e-2, ema=0.9)),
    (adamc.AdamW, dict(ema="uniform", ema_start=2)),
]


def big_problem(seed=0):
    """Arrays large enough to have several partitions in the kernels' sums (3 and 2):
    sharded Prodigy cuts them between partitions."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(3 * 32768 + 101).astype(np.float32),
            rng.standard_normal(50).astype(np.float32), rng.standard_normal(70000)]


def engine_groups(params, cls):
    """Two groups; Prodigy's share lr (it estimates one step size)."""
    if cls is adamc.Prodigy:
        return [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}]
    return groups(params)


def scalars(opt):
    """The mirrored scalar state of every group (d, weight_sum, ...)."""
    keys = ("d", "d_max", "d_numerator", "k", "weight_sum", "lr_max", "train_mode")
    return [{k: g[k] for k in keys if k in g} for g in opt.param_groups]


@scenario
def engines_equal_single_process():
    """Prodigy (with max_grad_norm too), the schedule-free optimizers and ema, in
    both modes: the bits of one process fed the averaged gradients (sharded Prodigy
    sums each partition of its statistics on one rank, and adds them in one
    process's order); every rank holds the same parameters, averages and scalars."""
    cases = [(cls, kw, problem) for cls, kw in ENGINES] + [
        (adamc.Prodigy, dict(max_grad_norm=1.0, ema="uniform"), big_problem)]
    for cls, kw, make in cases:
        results = {}
        for mode in ("replicated", "sharded", None):
            params = make(4)
            base = cls(engine_groups(params, cls), **kw)
            opt = base if mode is None else DistributedOptimizer(base, comm, mode)
            for t in range(8):  # slowly drifting gradients: Prodigy's d grows
                u = 0.01 * t
                opt.step(averaged(params, u) if mode is None else local_grads(params, u))
            if make is big_problem and mode == "sharded" and size > 1:
                # the large arrays are split between ranks (between partitions)
                inner = [b.bounds[1:-1] for b in opt._buckets]
                assert 0 < inner[0][0] < params[0].size, inner
                assert 0 < inner[1][0] < params[2].size, inner
            avg = opt.ema_params
            results[mode] = params, avg, scalars(opt)
            same_everywhere(*params, *(avg or []))
            everyone = comm.allgather(scalars(opt))
            assert all(e == everyone[0] for e in everyone), everyone
        name = f"{cls.__name__} {kw} {make.__name__}"
        assert (results[None][1] is None) == ("ema" not in kw)
        if cls is adamc.Prodigy:
            assert results[None][2][0]["d"] > 1e-5, name  # d moved: its sums matter
        for mode in ("replicated", "sharded"):
            params, avg, sc = results[mode]
            assert sc == results[None][2], (name, mode, sc, results[None][2])
            for a, b in zip(params + (avg or []), results[None][0] + (results[None][1] or [])):
                assert np.array_equal(a, b), (name, mode, np.abs(a - b).max())


@scenario
def schedulefree_eval_train_round_trip():
    """eval() puts x into the parameters on every rank (those of one process), train()
    puts y back bit for bit, a step in eval mode is refused everywhere; eval() of a
    wrapper of another optimizer is refused."""
    for mode in ("replicated", "sharded"):
        for cls, kw in ENGINES[2:4]:
            params = problem(5)
            opt = DistributedOptimizer(cls(engine_groups(params, cls), **kw), comm, mode)
            ref_params = problem(5)
            ref = cls(engine_groups(ref_params, cls), **kw)
            for t in range(3):
                opt.step(local_grads(params, 0.01 * t))
                ref.step(averaged(ref_params, 0.01 * t))
            y = [p.copy() for p in params]
            opt.eval()
            ref.eval()
            assert not opt.train_mode and opt.param_groups[0]["train_mode"] is False
            same_everywhere(*params)
            for a, b in zip(params, ref_params):
                assert np.array_equal(a, b), (cls.__name__, mode)
            assert not all(np.array_equal(a, b) for a, b in zip(params, y))
            opt.eval()  # no-op
            raises_everywhere(RuntimeError, lambda: opt.step(local_grads(params, 0.03)),
                              "eval mode")
            opt.train()
            ref.train()
            assert opt.train_mode
            for a, b in zip(params, y):
                assert np.array_equal(a, b)
            opt.step(local_grads(params, 0.03))
            ref.step(averaged(ref_params, 0.03))
            for a, b in zip(params, ref_params):
                assert np.array_equal(a, b)
        plain = DistributedOptimizer(adamc.Adam(problem()), comm, mode)
        raises_everywhere(TypeError, plain.eval, "schedule-free", "Adam")


@scenario
def engines_checkpoint_resume():
    """Saved collectively (in eval mode for schedule-free), resumed in one process,
    in the other mode or in the same one: the bits of an uninterrupted run, with the
    scalar state and the weight average."""
    for j, (cls, kw) in enumerate(ENGINES):
        for mode in ("replicated", "sharded"):
            path = os.path.join(TMP, f"engine-{size}-{j}-{mode}.npz")
            straight = problem(6)
            opt = DistributedOptimizer(cls(engine_groups(straight, cls), **kw), comm, mode)
            sf = "ScheduleFree" in cls.__name__
            for t in range(6):
                opt.step(local_grads(straight, 0.01 * t))
                if t == 2:
                    if sf:
                        opt.eval()
                    adamc.save(opt, path)
                    whole = opt.consolidate()
                    if whole is not None:
                        assert scalars(whole) == scalars(opt)
                        if whole.ema_params is not None:
                            for a, b in zip(whole.ema_params, opt.ema_params):
                                assert np.array_equal(a, b)
                    elif opt.ema is not None:
                        opt.ema_params  # collective in sharded mode
                    if sf:
                        opt.train()
            end = (straight, opt.ema_params, scalars(opt))
            for target in ("replicated", "sharded", None):
                again = problem(6)
                loaded = adamc.load(path, again)
                if sf:
                    assert not loaded.train_mode
                    loaded.train()
                o = loaded if target is None else DistributedOptimizer(loaded, comm, target)
                for t in range(3, 6):
                    u = 0.01 * t
                    o.step(averaged(again, u) if target is None else local_grads(again, u))
                avg = o.ema_params
                for a, b in zip(again + (avg or []), end[0] + (end[1] or [])):
                    assert np.array_equal(a, b), (cls.__name__, mode, target)
                assert scalars(o) == end[2], (cls.__name__, mode, target)


def main():
    global comm
    names = sys.argv[2:] or list(SCENARIOS)
    for name in names:
        # A communicator per scenario: a scenario that fails on one rank leaves the
        # others waiting (the driver's timeout ends it) instead of mixing its
        # collective calls with those of the next scenario.
        comm = MPI.COMM_WORLD.Dup()
        try:
            SCENARIOS[name]()
            status = "OK"
        except Exception:
            status = "FAIL " + traceback.format_exc().replace("\n", " | ")
        with open(os.path.join(TMP, f"results-{size}-{rank}.txt"), "a") as out:
            out.write(f"{name} {status}\n")
        comm.Barrier()
        comm.Free()


if __name__ == "__main__":
    main()
