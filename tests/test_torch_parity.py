"""Trajectory parity with torch.optim (skipped when torch is not installed).

torch's single-tensor Adam computes ``lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``
(sometimes with fused multiply-adds), adamc the same mathematics with one division
fewer, so the two differ by rounding only: a few units in the last place per step.
Over 50 free-running steps the largest difference measured was 1.4e-7 (float32) and
3.4e-16 (float64) relative to the scale of each quantity (torch 2.13.0, AVX-512); the
tolerances below leave a margin of more than ten on top of that, while a difference
in the mathematics (eps placement, bias correction, the order of weight decay) shows
up at 1e-4 or more.
"""
import numpy as np
import pytest

import adamc
import optim_db

torch = pytest.importorskip("torch")

STEPS = 50
# The torch.optim columns of the conformance table (tests/optim_db.py).
TOL = optim_db.TORCH_TOL
CASES = optim_db.torch_cases("adam")
CASES += [("AdamW", o) for o in optim_db.ADAMW_TORCH_OPTIONS]


def case_id(c):
    return c if isinstance(c, str) else "-".join(f"{k}={v}" for k, v in c.items())


def close(name, a, b, dtype):
    scale = max(float(np.max(np.abs(b))), 1e-30)
    err = float(np.max(np.abs(a - b))) / scale if a.size else 0.0
    assert err <= TOL[dtype], f"{name}: relative difference {err:.3g} > {TOL[dtype]:g}"


def run_both(cls, kw, dtype, seed):
    """The same STEPS random gradients through adamc's and torch's optimizer."""
    rng = np.random.default_rng(seed)
    ours = [rng.standard_normal(s).astype(dtype) for s in [(33,), (4, 5)]]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ours]
    opt = getattr(adamc, cls)(ours, **kw)
    topt = getattr(torch.optim, cls)(theirs, foreach=False, **kw)
    for _ in range(STEPS):
        grads = [(rng.standard_normal(p.shape) * 10.0 ** rng.uniform(-2, 1)).astype(dtype)
                 for p in ours]
        opt.step(grads)
        for tp, g in zip(theirs, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
    return opt, topt, ours, theirs


@pytest.mark.parametrize("cls,case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_trajectory_matches_torch(cls, dtype, case):
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, **case)
    opt, topt, ours, theirs = run_both(cls, kw, dtype, seed=0)
    sd = opt.state_dict()["state"]
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        close(f"param {i}", p, tp.detach().numpy(), dtype)
        tstate = topt.state[tp]
        assert int(tstate["step"]) == sd[i]["step"] == STEPS
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in tstate:
                close(f"{key} {i}", sd[i][key], tstate[key].numpy(), dtype)
            else:
                assert key not in sd[i]


# every other algorithm whose oracle is torch.optim
FAMILY = [c for a, row in optim_db.DB.items()
          if a != "adam" and row.oracle and row.oracle[0] == "torch.optim"
          and row.oracle_steps == STEPS for c in optim_db.torch_cases(a)]


def test_every_torch_oracle_row_is_compared():
    torch_rows = {a for a, row in optim_db.DB.items() if row.oracle[0] == "torch.optim"}
    assert {optim_db.DB[a].cls for a in torch_rows} == ({"Adam"} | {c for c, _ in FAMILY}
                                                        | {c for c, _ in CLASSIC})


@pytest.fixture
def torch_default_dtype():
    """torch keeps NAdam's momentum product in the default dtype (float32); adamc keeps
    it in double. Run float64 comparisons with torch's default dtype at float64 too."""
    old = torch.get_default_dtype()
    yield lambda dtype: torch.set_default_dtype(torch.float64 if dtype == np.float64
                                                else torch.float32)
    torch.set_default_dtype(old)


@pytest.mark.parametrize("cls,kw", FAMILY, ids=[f"{c}-{case_id(k) or 'plain'}" for c, k in FAMILY])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_family_trajectory_matches_torch(cls, kw, dtype, torch_default_dtype):
    torch_default_dtype(dtype)
    opt, topt, ours, theirs = run_both(cls, dict(lr=0.01, **kw), dtype, seed=1)
    sd = opt.state_dict()["state"]
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        close(f"param {i}", p, tp.detach().numpy(), dtype)
        for key, value in topt.state[tp].items():
            if key == "step":
                assert int(value) == sd[i]["step"] == STEPS
            elif key == "mu_product":
                assert sd[i]["mu_product"] == pytest.approx(float(value), rel=TOL[dtype])
            else:
                close(f"{key} {i}", sd[i][key], value.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_clipping_matches_torch_utilities(dtype):
    rng = np.random.default_rng(2)
    ours = [rng.standard_normal(s).astype(dtype) for s in [(100,), (7, 3)]]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ours]
    opt = adamc.Adam(ours, lr=0.01, max_grad_norm=1.0, clip_value=0.8)
    topt = torch.optim.Adam(theirs, lr=0.01, foreach=False)
    for _ in range(20):
        grads = [(rng.standard_normal(p.shape) * 3).astype(dtype) for p in ours]
        opt.step(grads)
        for tp, g in zip(theirs, grads):
            tp.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_value_(theirs, 0.8)
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        topt.step()
    for p, tp in zip(ours, theirs):
        close("param", p, tp.detach().numpy(), dtype)


# ----------------------------------------------------------------------------------
# Adagrad, Adadelta, Rprop: 200 steps of every option set. Gradients are noise plus a
# per-element offset, so that some elements keep their sign (Rprop's step sizes grow to
# step_size_max) and others change it often (they shrink to step_size_min).
# Largest relative differences measured over the 200 steps (torch 2.13.0, AVX2), float64
# and float32: Adagrad 2.5e-16 and 1.1e-7, Adadelta 2.5e-15 and 1.8e-6 (both at rho = 0,
# where each step's update feeds the next denominator directly), Rprop 0 and 0 (the same
# operations, no rounding choice).

LONG_STEPS = 200
# the torch.optim rows of the conformance table compared over 200 steps
CLASSIC = [c for a, row in optim_db.DB.items()
           if row.oracle and row.oracle[0] == "torch.optim" and row.oracle_steps == LONG_STEPS
           for c in optim_db.torch_cases(a)]
LONG_TOL = optim_db.LONG_TORCH_TOL


def run_both_long(cls, kw, dtype, seed):
    rng = np.random.default_rng(seed)
    ours = [rng.standard_normal(s).astype(dtype) for s in [(33,), (4, 5)]]
    offsets = [np.linspace(-3, 3, p.size).reshape(p.shape) for p in ours]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ours]
    opt = getattr(adamc, cls)(ours, **kw)
    topt = getattr(torch.optim, cls)(theirs, foreach=False, **kw)
    for _ in range(LONG_STEPS):
        grads = [((rng.standard_normal(p.shape) + off) * 10.0 ** rng.uniform(-2, 1)).astype(dtype)
                 for p, off in zip(ours, offsets)]
        opt.step(grads)
        for tp, g in zip(theirs, grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
    return opt, topt, ours, theirs


def relative_error(a, b):
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


@pytest.mark.parametrize("cls,kw", CLASSIC, ids=[f"{c}-{case_id(k) or 'plain'}" for c, k in CLASSIC])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_classic_trajectory_matches_torch(cls, kw, dtype, torch_default_dtype):
    torch_default_dtype(dtype)
    opt, topt, ours, theirs = run_both_long(cls, dict(kw), dtype, seed=3)
    sd = opt.state_dict()["state"]
    worst = 0.0
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        pairs = [("param", p, tp.detach().numpy())]
        tstate = topt.state[tp]
        assert set(tstate) == set(sd[i])
        for key, value in tstate.items():
            if key == "step":
                assert int(value) == sd[i]["step"] == LONG_STEPS
            else:
                pairs.append((key, sd[i][key], value.numpy()))
        for key, a, b in pairs:
            err = relative_error(a, b)
            worst = max(worst, err)
            assert err <= LONG_TOL[dtype], f"{key} {i}: relative difference {err:.3g}"
    print(f"{cls} {kw} {np.dtype(dtype)}: {worst:.3g}")
    if cls == "Rprop":  # the steps clamped at both ends
        sizes = np.concatenate([s["step_size"].ravel() for s in sd.values()])
        lo, hi = kw.get("step_sizes", (1e-6, 50))
        assert (sizes == dtype(lo)).any() or kw.get("etas", (0.5,))[0] > 0.5
        assert (sizes == dtype(hi)).any() or hi > 10
