"""Prodigy (adamc.Prodigy, adamc.prodigy_step, method "prodigy").

1. Parity with the reference implementation, prodigyopt 1.1.2 (skipped when absent),
   in float64 over 200 steps for every option, and with adamc._reference.prodigy.
2. Bits: the kernels against the emulation of their operation order (the sums'
   lanes and partitions included) at every size, dtype, SIMD level and thread count;
   whole trajectories identical across levels and thread counts.
3. The optimizer-wide state: state dicts, checkpoints, copies, reset; several groups.
4. Bad input refused before anything changes; the reducer hook of adamc.distributed.
"""
import copy
import pickle
import threading

import numpy as np
import pytest

import adamc
import emulate
from adamc import _kernels, _reference
from conftest import (DTYPES, SIZES, assert_same_bits_everywhere, bits, marked_sizes,
                      noisy_quadratic)
from optim_db import DB

# Every option of prodigyopt's constructor (slice_p and fsdp_in_use aside): the
# oracle's column of the conformance table (tests/optim_db.py).
OPTIONS = DB["prodigy"].oracle_options


def case_id(o):
    return "-".join(f"{k}={v}" for k, v in o.items()) or "defaults"


def _torch_options(o):
    return dict(o)


@pytest.mark.parametrize("opt", OPTIONS, ids=case_id)
def test_matches_prodigyopt(opt):
    torch = pytest.importorskip("torch")
    prodigyopt = pytest.importorskip("prodigyopt")
    n = 50
    p0, grad = noisy_quadratic(n)
    ours = [p0[:20].copy(), p0[20:].copy()]
    o = adamc.Prodigy(ours, **opt)
    ws = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in ours]
    ref = prodigyopt.Prodigy(ws, **_torch_options(opt))
    for t in range(200):
        o.step([g for g in np.split(grad(np.concatenate(ours), t), [20])])
        full = np.concatenate([w.detach().numpy() for w in ws])
        for w, g in zip(ws, np.split(grad(full, t), [20])):
            w.grad = torch.from_numpy(g.copy())
        ref.step()
    theirs = np.concatenate([w.detach().numpy() for w in ws])
    mine = np.concatenate(ours)
    scale = np.max(np.abs(theirs))
    assert np.max(np.abs(mine - theirs)) <= 1e-12 * scale
    g0 = ref.param_groups[0]
    for key in ("d", "d_max", "d_numerator"):
        assert o.param_groups[0][key] == pytest.approx(g0[key], rel=1e-12, abs=1e-300), key
    assert o.param_groups[0]["k"] == g0["k"] == 200


def test_matches_prodigyopt_with_groups():
    """Two groups with their own eps and weight decay, and a frozen one (lr 0): it
    adds nothing to the sums and keeps its moments, but prodigyopt still moves it
    with the decoupled decay."""
    torch = pytest.importorskip("torch")
    prodigyopt = pytest.importorskip("prodigyopt")
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(n) for n in (30, 12, 5)]
    spec = [{"eps": 1e-8, "weight_decay": 0.1}, {"eps": 1e-6, "weight_decay": 0.0},
            {"lr": 0.0, "weight_decay": 0.2}]
    ours = [a.copy() for a in arrays]
    o = adamc.Prodigy([dict(params=[p], **s) for p, s in zip(ours, spec)])
    ws = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    ref = prodigyopt.Prodigy([dict(params=[w], **s) for w, s in zip(ws, spec)])
    for t in range(200):
        o.step([np.sin(p) + 0.5 * p for p in ours])
        for w in ws:
            x = w.detach().numpy()
            w.grad = torch.from_numpy(np.sin(x) + 0.5 * x)
        ref.step()
    for p, w in zip(ours, ws):
        np.testing.assert_allclose(p, w.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("opt", OPTIONS[:8], ids=case_id)
def test_matches_reference_twin(opt):
    n = 40
    p0, grad = noisy_quadratic(n, seed=1)
    p = p0.copy()
    o = adamc.Prodigy(p, **opt)
    kw = dict(opt)
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    q = p0.copy()
    st = {"exp_avg": np.zeros(n), "exp_avg_sq": np.zeros(n), "s": np.zeros(n), "p0": None}
    scal = {"k": 0, "d": None, "d_max": None, "d_numerator": 0.0}
    for t in range(100):
        o.step(grad(p, t))
        out = _reference.prodigy(q, grad(q, t), st, **scal, **kw)
        q, st = out["params"], out["states"]
        scal = {k: out[k] for k in ("k", "d", "d_max", "d_numerator")}
    np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-12 * np.max(np.abs(q)))
    assert o.param_groups[0]["d"] == pytest.approx(scal["d"], rel=1e-12)


# ----------------------------------------------------------------------------------
# 2. Bits

BIT_OPTIONS = DB["prodigy"].step_options


def grad_at(rng, n, dtype):
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1)
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype)


def _kw(opt):
    kw = dict(opt)
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    return kw


@pytest.mark.parametrize("opt", BIT_OPTIONS, ids=case_id)
@pytest.mark.parametrize("n", marked_sizes(SIZES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_bit_exact_operation_order(one_level, dtype, n, opt):
    rng = np.random.default_rng(31)
    p = rng.standard_normal(n).astype(dtype)
    st = {k: np.zeros_like(p) for k in ("exp_avg", "exp_avg_sq", "s", "p0")}
    ep, es = p.copy(), {k: v.copy() for k, v in st.items()}
    scal = (None, None, 0.0)
    escal = (None, None, 0.0)
    with np.errstate(all="ignore"):
        for t in range(1, 3 if n > 2**16 else 13):
            g = grad_at(rng, n, dtype)
            scal = adamc.prodigy_step(p, g, *st.values(), step=t, d=scal[0], d_max=scal[1],
                                      d_numerator=scal[2], lr=0.5, **_kw(opt))
            ep, es, escal = emulate.prodigy(ep, g, es, t, 0.0, lr=0.5, d=escal[0],
                                            d_max=escal[1], d_numerator=escal[2], **opt)
            assert scal == escal, f"scalars at step {t}"
            np.testing.assert_array_equal(bits(p), bits(ep), err_msg=f"param at step {t}")
            for k in st:
                np.testing.assert_array_equal(bits(st[k]), bits(es[k]), err_msg=f"{k}, step {t}")


# (not marked slow: the only size here with several partitions of the sums, and the
# wheel tests, which leave the slow tests out, run it on every platform)
@pytest.mark.parametrize("n", [17, 1023, 2**20 + 3])
def test_bit_identical_across_levels_and_threads(n):
    def run(dtype):
        rng = np.random.default_rng(33)
        ps = [rng.standard_normal(n).astype(dtype), rng.standard_normal(7).astype(dtype)]
        opt = adamc.Prodigy(ps, weight_decay=0.1, max_grad_norm=1.0)
        for _ in range(3 if n > 2**16 else 20):
            opt.step([grad_at(rng, q.size, dtype) for q in ps])
        return ps + [a for st in opt._state_arrays for a in st] + [np.array(opt.param_groups[0]["d"])]
    assert_same_bits_everywhere(run)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_class_and_stateless_step_agree_bitwise(dtype):
    rng = np.random.default_rng(34)
    p = rng.standard_normal(100).astype(dtype)
    q = p.copy()
    o = adamc.Prodigy(p, use_bias_correction=True)
    st = [np.zeros_like(q) for _ in range(4)]
    scal = (None, None, 0.0)
    for t in range(1, 21):
        g = grad_at(rng, 100, dtype)
        o.step(g)
        scal = adamc.prodigy_step(q, g, *st, step=t, d=scal[0], d_max=scal[1],
                                  d_numerator=scal[2], use_bias_correction=True)
        assert np.array_equal(bits(p), bits(q))
        assert scal == tuple(o.param_groups[0][k] for k in ("d", "d_max", "d_numerator"))


def test_minimize_method_converges():
    res = adamc.minimize(lambda x: (float((x - 3) @ (x - 3)), 2 * (x - 3)), np.zeros(5),
                         method="prodigy", jac=True, options={"maxiter": 500})
    np.testing.assert_allclose(res.x, 3.0, atol=1e-3)
    assert res.success and res.nit < 500


def test_all_zero_gradients_leave_parameters_and_d():
    p = np.ones(4)
    o = adamc.Prodigy(p)
    o.step(np.zeros(4))
    assert np.all(p == 1) and o.param_groups[0]["d"] == 1e-6 and o.param_groups[0]["k"] == 0
    assert o.step_count == 1
    o.step(np.ones(4))
    assert np.all(p < 1) and o.param_groups[0]["k"] == 1


# ----------------------------------------------------------------------------------
# 3. The optimizer-wide state

def _run(o, ps, rng, steps):
    for _ in range(steps):
        o.step([rng.standard_normal(q.size) for q in ps])


def test_state_dict_round_trip_is_bit_identical(tmp_path):
    rng = np.random.default_rng(40)
    ps = [rng.standard_normal(30), rng.standard_normal(4)]
    o = adamc.Prodigy(ps, weight_decay=0.1)
    _run(o, ps, np.random.default_rng(1), 10)
    sd = o.state_dict()
    assert {"d", "d_max", "d_numerator", "k"} <= set(sd["param_groups"][0])
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "s", "p0"}
    saved = [q.copy() for q in ps]
    adamc.save(o, tmp_path / "ck.npz")
    copied = copy.deepcopy((o, ps))
    _run(o, ps, np.random.default_rng(2), 10)
    want = [q.copy() for q in ps]
    # state dict into a fresh optimizer
    qs = [a.copy() for a in saved]
    o2 = adamc.Prodigy(qs, weight_decay=0.1)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["d"] == sd["param_groups"][0]["d"]
    _run(o2, qs, np.random.default_rng(2), 10)
    # checkpoint file
    rs = [a.copy() for a in saved]
    o3 = adamc.load(tmp_path / "ck.npz", rs)
    _run(o3, rs, np.random.default_rng(2), 10)
    # deepcopy / pickle
    o4, us = copied
    o5, vs = pickle.loads(pickle.dumps(copied))
    _run(o4, us, np.random.default_rng(2), 10)
    _run(o5, vs, np.random.default_rng(2), 10)
    for got in (qs, rs, us, vs):
        for a, b in zip(got, want):
            assert np.array_equal(bits(a), bits(b))


def test_reset_restarts_the_estimate_and_p0():
    p = np.array([1.0, 2.0])
    o = adamc.Prodigy(p)
    for _ in range(5):
        o.step(p - 3)
    o.reset()
    assert o.param_groups[0]["d"] == 1e-6 and o.param_groups[0]["k"] == 0
    q = p.copy()
    o2 = adamc.Prodigy(q)
    for _ in range(5):
        o.step(p - 3)
        o2.step(q - 3)
    assert np.array_equal(p, q)


def test_p0_is_taken_at_the_first_step():
    """prodigyopt keeps the parameters of the first step, not of construction."""
    p = np.zeros(3)
    o = adamc.Prodigy(p)
    p[:] = [1.0, 2.0, 3.0]
    o.step(np.ones(3))
    np.testing.assert_array_equal(o.state_dict()["state"][0]["p0"], [1.0, 2.0, 3.0])


def test_bad_state_dict_refused_without_change():
    p = np.ones(3)
    o = adamc.Prodigy(p)
    o.step(np.ones(3))
    sd = o.state_dict()
    before = o.state_dict()
    for key, value, msg in [("d", -1.0, "d must be"), ("d_max", 0.0, "d_max must be"),
                            ("k", -1, "k must be"), ("d_numerator", np.nan, "finite")]:
        bad = copy.deepcopy(sd)
        bad["param_groups"][0][key] = value
        with pytest.raises(ValueError, match=msg):
            o.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    del bad["param_groups"][0]["d"]
    with pytest.raises(ValueError, match="no 'd'"):
        o.load_state_dict(bad)
    after = o.state_dict()
    assert after["param_groups"][0]["d"] == before["param_groups"][0]["d"]
    for k in ("exp_avg", "exp_avg_sq", "s", "p0"):
        assert np.array_equal(after["state"][0][k], before["state"][0][k])


# ----------------------------------------------------------------------------------
# 4. Bad input, and the reducer hook

def test_bad_hyperparameters_refused():
    p = np.ones(3)
    for kw, msg in [(dict(eps=0.0), "eps must be > 0"), (dict(d0=0.0), "d0 must be > 0"),
                    (dict(d_coef=-1.0), "d_coef must be"),
                    (dict(growth_rate=0.0), "growth_rate must be > 0"),
                    (dict(beta3=1.0), r"beta3 must be in \[0, 1\)"),
                    (dict(betas=(0.9, 1.0)), r"betas\[1\]")]:
        with pytest.raises(ValueError, match=msg):
            adamc.Prodigy(p, **kw)
    with pytest.raises(TypeError, match="decouple must be a bool"):
        adamc.Prodigy(p, decouple=1)


def _snapshot(o, ps):
    return [q.copy() for q in ps], o.state_dict()


def _same(a, b):
    pa, sa = a
    pb, sb = b
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    assert sa["param_groups"][0]["d"] == sb["param_groups"][0]["d"]
    for i in sa["state"]:
        for k in ("exp_avg", "exp_avg_sq", "s", "p0"):
            assert np.array_equal(sa["state"][i][k], sb["state"][i][k])


def test_group_mismatch_refused_before_anything_changes():
    ps = [np.ones(3), np.ones(2)]
    o = adamc.Prodigy([{"params": [ps[0]]}, {"params": [ps[1]]}])
    o.step([np.ones(3), np.ones(2)])
    before = _snapshot(o, ps)
    o.param_groups[1]["lr"] = 0.5
    with pytest.raises(RuntimeError, match="lr must all be equal, or 0"):
        o.step([np.ones(3), np.ones(2)])
    _same(before, _snapshot(o, ps))
    o.param_groups[1]["lr"] = 1.0
    o.param_groups[1]["d_coef"] = 2.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['d_coef'\] differs"):
        o.step([np.ones(3), np.ones(2)])
    _same(before, _snapshot(o, ps))


def test_nonfinite_raise_changes_nothing():
    p = np.ones(4)
    o = adamc.Prodigy(p, nonfinite="raise")
    o.step(np.ones(4))
    before = _snapshot(o, [p])
    with pytest.raises(FloatingPointError):
        o.step(np.array([1.0, np.nan, 0.0, 0.0]))
    _same(before, _snapshot(o, [p]))


def test_stateless_bad_input_refused_without_mutation():
    p, g = np.ones(4), np.ones(4)
    st = [np.zeros(4) for _ in range(4)]
    for kw, exc, msg in [(dict(eps=0.0), ValueError, "eps must be > 0"),
                         (dict(d=-1.0), ValueError, "d must be"),
                         (dict(lr=lambda t: 1.0), TypeError, "must be a number"),
                         (dict(step=0), ValueError, "step must be >= 1")]:
        kw = {"step": 1, **kw}
        with pytest.raises(exc, match=msg):
            adamc.prodigy_step(p, g, *st, **kw)
        assert np.all(p == 1) and all(np.all(a == 0) for a in st)
    with pytest.raises(ValueError, match="shares memory"):
        adamc.prodigy_step(p, st[0], *st, step=1)


def test_reducer_failure_changes_nothing():
    p = np.ones(5)
    o = adamc.Prodigy(p)
    o.step(np.arange(5.0))
    before = _snapshot(o, [p])

    def broken(delta, denom):
        raise ConnectionError("rank 1 is gone")
    with pytest.raises(ConnectionError):
        o._step_with_reducer(np.arange(5.0), broken)
    _same(before, _snapshot(o, [p]))


def test_reducer_over_shards_gives_the_bits_of_one_optimizer():
    """Two "ranks" (threads), each with a shard of the parameters, whose reducer
    sums the two partial sums in rank order: the same bits as one optimizer."""
    rng = np.random.default_rng(41)
    full = rng.standard_normal(300)
    grads = [rng.standard_normal(300) for _ in range(15)]
    p = full.copy()
    whole = adamc.Prodigy([p[:200], p[200:]], weight_decay=0.1)
    for g in grads:
        whole.step([g[:200], g[200:]])
    shards = [full[:200].copy(), full[200:].copy()]
    opts = [adamc.Prodigy(s, weight_decay=0.1) for s in shards]
    slots = [None, None]
    barrier = threading.Barrier(2)

    def reducer(rank):
        def reduce(delta, denom):
            slots[rank] = (delta, denom)
            barrier.wait()
            total = (slots[0][0] + slots[1][0], slots[0][1] + slots[1][1])
            barrier.wait()
            return total
        return reduce

    def work(rank):
        for g in grads:
            part = g[:200] if rank == 0 else g[200:]
            opts[rank]._step_with_reducer(part, reducer(rank))
    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(bits(np.concatenate(shards)), bits(p))
    assert opts[0].param_groups[0]["d"] == opts[1].param_groups[0]["d"] == whole.param_groups[0]["d"]


def _pieces_run(full, grads, cuts, **kw):
    """Prodigy over the pieces full[cuts[r]:cuts[r+1]] (cut between partitions of the
    kernels' sums), one thread ("rank") each, with the reducer of adamc.distributed:
    every partition's sums, added in order as one process adds them."""
    bounds = _kernels.sum_partitions(full.size)
    pieces = [full[a:b].copy() for a, b in zip(cuts, cuts[1:])]
    opts = [adamc.Prodigy(p, weight_decay=0.1, **kw) for p in pieces]
    n = len(pieces)
    accs = [np.zeros(2 * sum(a <= lo and hi <= b for lo, hi in zip(bounds, bounds[1:])))
            for a, b in zip(cuts, cuts[1:])]
    barrier = threading.Barrier(n)

    def reduce(acc, factor):
        barrier.wait()  # every rank's acc is filled
        every = np.concatenate(accs)  # the ranks' partitions, in order
        s0 = s1 = 0.0
        for x in every[0::2].tolist():
            s0 += x
        for x in every[1::2].tolist():
            s1 += x
        barrier.wait()
        return 0.0 + factor * s0, 0.0 + s1

    def work(r):
        grid = (np.array([full.size, cuts[r], 0], np.int64), accs[r])
        for g in grads:
            opts[r]._step_with_reducer(g[cuts[r]:cuts[r + 1]], reduce, None, grid)
    threads = [threading.Thread(target=work, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.concatenate(pieces), [o.param_groups[0]["d"] for o in opts]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pieces_cut_between_partitions_give_the_bits_of_one_optimizer(dtype):
    """The grid of _step_with_reducer (adamc.distributed's sharded Prodigy): an
    array cut between the partitions of the kernels' sums, on 1, 2 or 3 "ranks",
    gives the bits of one optimizer."""
    rng = np.random.default_rng(43)
    n = 3 * 32768 + 11
    bounds = _kernels.sum_partitions(n)
    assert len(bounds) == 4
    full = rng.standard_normal(n).astype(dtype)
    grads = [(np.sin(2 * full + 0.01 * t) + 0.1).astype(dtype) for t in range(10)]
    plain = full.copy()
    ref = adamc.Prodigy(plain, weight_decay=0.1)
    for g in grads:
        ref.step(g)
    assert ref.param_groups[0]["d"] > 1e-5  # d moved: the sums matter
    for cuts in ([0, n], [0, bounds[2], n], bounds):
        p, d = _pieces_run(full, grads, cuts)
        assert np.array_equal(bits(p), bits(plain)), cuts
        assert d == [ref.param_groups[0]["d"]] * len(d), (d, ref.param_groups[0]["d"])


def test_sum_partitions():
    assert _kernels.sum_partitions(0) == [0, 0]
    assert _kernels.sum_partitions(5) == [0, 5]
    assert _kernels.sum_partitions(2 * 32768 + 1) == [0, 32768, 2 * 32768 + 1]
    big = _kernels.sum_partitions(10**8)
    assert len(big) == 65 and big[-1] == 10**8
    with pytest.raises(ValueError, match=">= 0"):
        _kernels.sum_partitions(-1)


def test_grid_is_checked_before_anything():
    p = np.ones(5)
    o = adamc.Prodigy(p)
    o.step(np.arange(5.0))
    before = _snapshot(o, [p])
    ok = lambda acc, factor: (0.0, 0.0)  # noqa: E731
    for grid, exc, msg in [
            ((np.array([5, 0, 0.0]), np.zeros(2)), TypeError, "int64"),
            ((np.array([5, 0, 0, 1], np.int64), np.zeros(2)), ValueError, "3 per parameter"),
            ((np.array([4, 0, 0], np.int64), np.zeros(2)), ValueError, "not a piece"),
            ((np.array([5, -1, 0], np.int64), np.zeros(2)), ValueError, "not a piece"),
            ((np.array([5, 0, 1], np.int64), np.zeros(2)), ValueError, "too short"),
            ((np.array([5, 0, 0], np.int64), np.zeros(2, np.float32)), TypeError, "float64")]:
        with pytest.raises(exc, match=msg):
            o._step_with_reducer(np.arange(5.0), ok, None, grid)
        _same(before, _snapshot(o, [p]))
