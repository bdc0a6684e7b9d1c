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
          for c in optim_db.torch_cases(a)]


def test_every_torch_oracle_row_is_compared():
    torch_rows = {a for a, row in optim_db.DB.items() if row.oracle[0] == "torch.optim"}
    assert {optim_db.DB[a].cls for a in torch_rows} == {"Adam"} | {c for c, _ in FAMILY}


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
