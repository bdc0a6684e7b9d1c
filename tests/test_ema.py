"""Weight averaging (the ``ema`` option of every optimizer), kept inside the step's pass.

Against a NumPy reference computed from the trajectory of the parameters (the same
formula, a = a + w (p - a), in the parameter's dtype: the same bits); across SIMD
levels and thread counts; through state dicts, checkpoint files and copies; bad input.
"""
import copy
import pickle

import numpy as np
import pytest

import adamc
from adamc.algorithms import CLASSES
from conftest import DTYPES, assert_same_bits_everywhere, bits

KW = {"SGD": dict(lr=0.01, momentum=0.9), "SGDScheduleFree": dict(lr=0.01)}


def reference_average(trajectory, ema, ema_start, dtype):
    """AveragedModel: the first update copies; then get_ema_multi_avg_fn (decay) or the
    running mean, over the parameters after steps max(ema_start, 1), ...."""
    avg, n = None, 0
    for t, p in enumerate(trajectory, start=1):
        if t < max(ema_start, 1):
            continue
        if avg is None:
            avg = p.copy()
        else:
            w = (1.0 - ema) if ema != "uniform" else 1.0 / (n + 1)
            avg = avg + dtype(w) * (p - avg)
        n += 1
    return avg


@pytest.mark.parametrize("ema,ema_start", [(0.9, 0), (0.3, 4), ("uniform", 0), ("uniform", 7)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", list(CLASSES))
def test_matches_numpy_reference(name, dtype, ema, ema_start):
    rng = np.random.default_rng(1)
    ps = [rng.standard_normal(37).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)]
    opt = getattr(adamc, name)(ps, ema=ema, ema_start=ema_start, **KW.get(name, {}))
    traj = []
    for _ in range(15):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in ps])
        traj.append([p.copy() for p in ps])
    for k, avg in enumerate(opt.ema_params):
        want = reference_average([t[k] for t in traj], ema, ema_start, dtype)
        np.testing.assert_array_equal(avg, want)
    assert opt.ema == ema and opt.ema_start == ema_start


def test_skipped_steps_are_not_averaged():
    x = np.zeros(3)
    opt = adamc.Adam(x, lr=0.1, ema="uniform", nonfinite="skip")
    opt.step(np.ones(3))
    first = x.copy()
    opt.step(np.array([np.nan, 0.0, 0.0]))
    opt.step(np.ones(3))
    np.testing.assert_array_equal(opt.ema_params[0], first + 0.5 * (x - first))


def test_ema_params_are_read_only_and_none_without_ema():
    x = np.zeros(3)
    assert adamc.Adam(x).ema_params is None
    opt = adamc.Adam(x, ema=0.5)
    with pytest.raises(ValueError):
        opt.ema_params[0][0] = 1.0


@pytest.mark.parametrize("n", [17, 2**20 + 3])
def test_bit_identical_across_levels_and_threads(n):
    def run(dtype):
        rng = np.random.default_rng(2)
        x = rng.standard_normal(n).astype(dtype)
        opt = adamc.AdamW(x, lr=1e-3, ema=0.99, max_grad_norm=1.0)
        for _ in range(3 if n > 2**16 else 10):
            opt.step(rng.standard_normal(n).astype(dtype))
        return [x, opt.ema_params[0]]
    assert_same_bits_everywhere(run)


@pytest.mark.parametrize("name", ["Adam", "Prodigy", "AdamWScheduleFree"])
def test_checkpoint_resume_is_bit_identical(tmp_path, name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(20)
    opt = getattr(adamc, name)(x, ema="uniform", ema_start=2)
    for _ in range(5):
        opt.step(rng.standard_normal(20))
    sd = opt.state_dict()
    assert sd["ema"]["count"] == 4
    adamc.save(opt, tmp_path / "ck.npz")
    saved = x.copy()
    twins = [pickle.loads(pickle.dumps((opt, x))), copy.deepcopy((opt, x))]
    grads = [rng.standard_normal(20) for _ in range(5)]

    def resume(o):
        for g in grads:
            o.step(g)
        return o.ema_params[0].copy()
    want = resume(opt)
    y = saved.copy()
    o2 = getattr(adamc, name)(y, ema="uniform", ema_start=2)
    o2.load_state_dict(sd)
    z = saved.copy()
    o3 = adamc.load(tmp_path / "ck.npz", [z])
    for o in (o2, o3, twins[0][0], twins[1][0]):
        assert np.array_equal(bits(resume(o)), bits(want))
    opt.reset()
    assert np.all(opt.ema_params[0] == 0) and opt.state_dict()["ema"]["count"] == 0


def test_bad_input_refused():
    x = np.zeros(3)
    for ema in (0.0, 1.0, 1.5, -0.1, "mean"):
        with pytest.raises(ValueError, match="ema must be"):
            adamc.Adam(x, ema=ema)
    with pytest.raises(TypeError):
        adamc.Adam(x, ema=[0.9])
    with pytest.raises(ValueError, match="ema_start must be an int"):
        adamc.Adam(x, ema=0.9, ema_start=-1)
    opt = adamc.Adam(x, ema=0.9)
    opt.step(np.ones(3))
    before = opt.ema_params[0].copy()
    for other in (adamc.Adam(np.zeros(3)), adamc.Adam(np.zeros(3), ema="uniform")):
        with pytest.raises(ValueError, match="weight average|created without ema"):
            opt.load_state_dict(other.state_dict())
        np.testing.assert_array_equal(opt.ema_params[0], before)
    with pytest.raises(ValueError, match="created without ema"):
        adamc.Adam(np.zeros(3)).load_state_dict(opt.state_dict())


def test_minimize_returns_x_ema():
    def fun(x):
        return float((x - 3) @ (x - 3)), 2 * (x - 3)
    res = adamc.minimize(fun, np.zeros(4), method="adam", jac=True,
                         options={"lr": 0.1, "maxiter": 50, "ema": 0.8, "ema_start": 10,
                                  "x_scale": None, "f_scale": None})  # (as the loop below)
    x = np.zeros(4)
    opt = adamc.Adam(x, lr=0.1, ema=0.8, ema_start=10)
    for _ in range(50):
        opt.step(fun(x)[1])
    np.testing.assert_array_equal(res.x, x)
    np.testing.assert_array_equal(res.x_ema, opt.ema_params[0])
    assert "x_ema" not in adamc.minimize(fun, np.zeros(4), method="adam", jac=True,
                                         options={"maxiter": 3})
