"""Schedule-free AdamW and SGD (adamc.AdamWScheduleFree, adamc.SGDScheduleFree).

1. Parity with the schedulefree package 1.4.1 (skipped when absent), float64, 200
   steps, every option, y while training and x after eval(); the package's own tests
   that apply (test_schedulefree.py: its three implementations agree step by step
   through train/eval; several groups, one without gradients in the package).
2. train()/eval(): exact round trips; a step in eval mode refused before anything
   changes; the minimize methods return x.
3. Bits identical across SIMD levels and thread counts; checkpoints bit-identical.
"""
import copy
import pickle

import numpy as np
import pytest

import adamc
from conftest import DTYPES, assert_same_bits_everywhere, bits, noisy_quadratic
from optim_db import DB

# the oracle's columns of the conformance table (tests/optim_db.py)
ADAMW_OPTIONS = DB["adamw_schedulefree"].oracle_options
SGD_OPTIONS = DB["sgd_schedulefree"].oracle_options
CASES = [("AdamWScheduleFree", o) for o in ADAMW_OPTIONS] + \
    [("SGDScheduleFree", o) for o in SGD_OPTIONS]


def case_id(case):
    name, o = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in o.items()) or "defaults")


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_schedulefree(case, foreach):
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    name, opt = case
    p0, grad = noisy_quadratic(40)
    x = p0.copy()
    o = getattr(adamc, name)(x, **opt)
    w = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    ref = getattr(schedulefree, name)([w], foreach=foreach, **opt)
    ref.train()
    for t in range(200):
        g = grad(x, t)
        g_before = g.copy()
        o.step(g)
        assert np.array_equal(g, g_before)  # the reference divides its gradients in place
        w.grad = torch.from_numpy(grad(w.detach().numpy(), t))
        ref.step()
        if t % 50 == 49:  # through eval and back, as a training loop would
            o.eval()
            ref.eval()
            np.testing.assert_allclose(x, w.detach().numpy(), rtol=1e-12, atol=1e-13)
            o.train()
            ref.train()
        np.testing.assert_allclose(x, w.detach().numpy(), rtol=1e-12, atol=1e-13)
    z = ref.state[w]["z"].numpy()
    np.testing.assert_allclose(o.state_dict()["state"][0]["z"], z, rtol=1e-12, atol=1e-13)
    for key in ("k", "weight_sum", "lr_max", "scheduled_lr", "train_mode"):
        assert o.param_groups[0][key] == pytest.approx(ref.param_groups[0][key], rel=1e-12)


@pytest.mark.parametrize("name", ["AdamWScheduleFree", "SGDScheduleFree"])
def test_ported_three_implementations_agree(name):
    """schedulefree's test_schedulefree_adam / _sgd: the optimizer, its closure form and
    its reference implementation give the same x after eval() and the same y after
    train(), for 10 steps with warm-up and weight decay; adamc agrees with all three."""
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    kw = dict(lr=0.3, warmup_steps=5, weight_decay=0.5)
    torch.manual_seed(0)
    start = torch.randn(3, 2, dtype=torch.float64)
    ws = [start.clone().requires_grad_() for _ in range(3)]
    refs = [getattr(schedulefree, name)([ws[0]], **kw),
            getattr(schedulefree, name + "Closure")([ws[1]], **kw),
            getattr(schedulefree, name + "Reference")([ws[2]], **kw)]
    x = start.numpy().copy()
    o = getattr(adamc, name)(x, **kw)
    for _ in range(10):
        for r in (refs[0], refs[2]):
            r.train()
        o.train()
        grad = torch.rand_like(start)
        ws[0].grad, ws[2].grad = grad.clone(), grad.clone()
        refs[0].step()

        def closure():
            ws[1].grad = grad.clone()
        refs[1].step(closure=closure)
        refs[2].step()
        o.step(grad.numpy().copy())
        for r in (refs[0], refs[2]):
            r.eval()
        o.eval()
        for w in ws:  # the closure form keeps x in the parameters
            np.testing.assert_allclose(x, w.detach().numpy(), rtol=1e-5, atol=1e-6)
        for r in (refs[0], refs[2]):
            r.train()
        o.train()
        y_closure = ws[1].detach().lerp(refs[1].state[ws[1]]["z"], 1 - 0.9)
        np.testing.assert_allclose(x, ws[0].detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(x, y_closure.numpy(), rtol=1e-5, atol=1e-6)


def test_ported_groups():
    """schedulefree's test_foreach: several groups (the package's third group has no
    gradient; adamc takes a gradient for every parameter, so it gets zeros here and
    is compared with the package fed zeros too)."""
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((3, 2)), rng.standard_normal((1, 1)), rng.standard_normal((1, 2))]
    ours = [a.copy() for a in arrays]
    o = adamc.AdamWScheduleFree([{"params": ours[:2]}, {"params": ours[2:]}], lr=0.3,
                                warmup_steps=5, weight_decay=0.5)
    ws = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    ref = schedulefree.AdamWScheduleFree([{"params": ws[:2]}, {"params": ws[2:]}], lr=0.3,
                                         warmup_steps=5, weight_decay=0.5)
    for _ in range(10):
        ref.train()
        o.train()
        grads = [rng.random(a.shape) for a in arrays[:2]] + [np.zeros((1, 2))]
        for w, g in zip(ws, grads):
            w.grad = torch.from_numpy(g.copy())
        ref.step()
        o.step(grads)
        ref.eval()
        o.eval()
        for p, w in zip(ours, ws):
            np.testing.assert_allclose(p, w.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------
# 2. train / eval

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", ["AdamWScheduleFree", "SGDScheduleFree"])
def test_train_eval_round_trip_is_exact(name, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(1000).astype(dtype)
    o = getattr(adamc, name)(x, lr=0.01)
    o.eval()  # before any step: nothing to average yet
    o.train()
    for _ in range(30):
        o.step(rng.standard_normal(1000).astype(dtype))
    y = x.copy()
    for _ in range(3):
        o.eval()
        o.eval()  # a second eval is a no-op
        assert not o.train_mode and o.param_groups[0]["train_mode"] is False
        assert not np.array_equal(x, y)
        z = o.state_dict()["state"][0]["z"]
        mom = o.param_groups[0].get("betas", (o.param_groups[0].get("momentum"),))[0]
        expected = (y + (1 - 1 / mom) * (z - y)).astype(dtype)
        assert np.array_equal(x, expected)
        o.train()
        o.train()
        assert np.array_equal(bits(x), bits(y))


def test_step_in_eval_mode_refused_before_anything_changes():
    x = np.ones(5)
    o = adamc.AdamWScheduleFree(x)
    o.step(np.ones(5))
    o.eval()
    before = (x.copy(), o.state_dict())
    with pytest.raises(RuntimeError, match="eval mode.*opt.train()"):
        o.step(np.ones(5))
    assert np.array_equal(x, before[0]) and o.step_count == 1
    after = o.state_dict()
    for k in ("z", "exp_avg_sq", "y"):
        assert np.array_equal(after["state"][0][k], before[1]["state"][0][k])
    assert after["param_groups"][0]["weight_sum"] == before[1]["param_groups"][0]["weight_sum"]


def test_bad_hyperparameters_refused():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \(0, 1\)"):
        adamc.AdamWScheduleFree(x, betas=(0.0, 0.999))
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\)"):
        adamc.SGDScheduleFree(x, momentum=1.0)
    with pytest.raises(TypeError, match="warmup_steps must be an int"):
        adamc.AdamWScheduleFree(x, warmup_steps=2.5)
    with pytest.raises(ValueError, match="r must be"):
        adamc.AdamWScheduleFree(x, r=-1.0)


@pytest.mark.parametrize("method", ["adamw_schedulefree", "sgd_schedulefree"])
def test_minimize_returns_the_averaged_point(method):
    def fun(x):
        return float((x - 3) @ (x - 3)), 2 * (x - 3)
    opts = {"maxiter": 300, "lr": 0.1, "x_scale": None, "f_scale": None}  # (as below)
    res = adamc.minimize(fun, np.zeros(4), method=method, jac=True, options=opts)
    # the same run by hand: x is what eval() gives after the last step
    x = np.zeros(4)
    cls = adamc.AdamWScheduleFree if method.startswith("adamw") else adamc.SGDScheduleFree
    o = cls(x, lr=0.1)
    for _ in range(res.nit):
        o.step(fun(x)[1])
    o.eval()
    assert np.array_equal(res.x, x)
    assert res.fun == fun(x)[0]
    np.testing.assert_array_equal(res.jac, fun(x)[1])
    np.testing.assert_allclose(res.x, 3.0, atol=0.1)  # (the average lags the iterates)


# ----------------------------------------------------------------------------------
# 3. Bits and checkpoints

@pytest.mark.parametrize("name", ["AdamWScheduleFree", "SGDScheduleFree"])
@pytest.mark.parametrize("n", [17, 1023, 2**20 + 3])
def test_bit_identical_across_levels_and_threads(name, n):
    def run(dtype):
        rng = np.random.default_rng(5)
        x = rng.standard_normal(n).astype(dtype)
        o = getattr(adamc, name)(x, lr=0.01, weight_decay=0.1, warmup_steps=2,
                                 max_grad_norm=1.0)
        for _ in range(3 if n > 2**16 else 20):
            o.step(rng.standard_normal(n).astype(dtype))
        o.eval()
        return [x] + [a for a in o._state_arrays[0] if a is not None]
    assert_same_bits_everywhere(run)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_checkpoint_resume_is_bit_identical(tmp_path, mode):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(50)
    o = adamc.AdamWScheduleFree(x, lr=0.01, warmup_steps=5)
    for _ in range(8):
        o.step(rng.standard_normal(50))
    if mode == "eval":
        o.eval()
    sd = o.state_dict()
    adamc.save(o, tmp_path / "ck.npz")
    saved = x.copy()
    twin = pickle.loads(pickle.dumps((o, x)))
    twin2 = copy.deepcopy((o, x))
    grads = [rng.standard_normal(50) for _ in range(8)]

    def resume(opt, p):
        opt.train()
        for g in grads:
            opt.step(g)
        opt.eval()
        return p.copy()
    want = resume(o, x)
    y = saved.copy()
    o2 = adamc.AdamWScheduleFree(y, lr=0.01, warmup_steps=5)
    o2.load_state_dict(sd)
    assert o2.train_mode == (mode == "train")
    z = saved.copy()
    o3 = adamc.load(tmp_path / "ck.npz", [z])
    for got in (resume(o2, y), resume(o3, z), resume(*twin), resume(*twin2)):
        assert np.array_equal(bits(got), bits(want))


@pytest.mark.parametrize("case", CASES[:4] + CASES[-2:], ids=case_id)
def test_matches_reference_twin(case):
    from adamc import _reference
    name, opt = case
    p0, grad = noisy_quadratic(30, seed=2)
    x = p0.copy()
    o = getattr(adamc, name)(x, **opt)
    kw = dict(opt)
    adaptive = name.startswith("AdamW")
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    if "momentum" in kw:
        kw["beta1"] = kw.pop("momentum")
    y, z, v, scal = p0.copy(), None, np.zeros(30), {"weight_sum": 0.0, "lr_max": -1.0}
    defaults = {} if adaptive else {"lr": 1.0, "beta1": 0.9}
    for k in range(100):
        o.step(grad(x, k))
        out = _reference.schedulefree(y, grad(y, k), z, k=k, exp_avg_sq=v if adaptive else None,
                                      adaptive=adaptive, **scal, **{**defaults, **kw})
        y, z, v = out["param"], out["z"], out.get("exp_avg_sq")
        scal = {"weight_sum": out["weight_sum"], "lr_max": out["lr_max"]}
    np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-13)
    o.eval()
    np.testing.assert_allclose(x, out["x"], rtol=1e-12, atol=1e-13)
    assert o.param_groups[0]["weight_sum"] == pytest.approx(scal["weight_sum"], rel=1e-14)
