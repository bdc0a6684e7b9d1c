"""adamc.save / adamc.load, pickling and copies, and minimize's checkpoints."""
import copy
import os
import pickle

import numpy as np
import pytest

import adamc
from adamc import checkpoint, schedules
from conftest import bits

FAMILY = [
    (adamc.Adam, dict(amsgrad=True, lr=schedules.cosine_decay(0.05, 40, warmup_steps=3))),
    (adamc.AdamW, dict(max_grad_norm=1.0)),
    (adamc.Adamax, dict(clip_value=0.5)),
    (adamc.NAdam, dict(decoupled_weight_decay=True, weight_decay=0.01, nonfinite="skip")),
    (adamc.RAdam, dict(lr=schedules.step_decay(0.01, 3, 0.5))),
    (adamc.SGD, dict(momentum=0.9, nesterov=True, lr=0.01)),
    (adamc.RMSprop, dict(momentum=0.5, centered=True)),
    (adamc.Lion, dict(weight_decay=0.1, lr=schedules.exponential_decay(1e-3, 0.9))),
    (adamc.Prodigy, dict(weight_decay=0.1, use_bias_correction=True, max_grad_norm=1.0)),
    (adamc.AdamWScheduleFree, dict(warmup_steps=3, weight_decay=0.01)),
    (adamc.SGDScheduleFree, dict(lr=schedules.step_decay(0.1, 3, 0.5))),
]
IDS = [c.__name__ for c, _ in FAMILY]


def make(cls, kw, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(7)]
    groups = [{"params": params[:1]}, {"params": params[1:], "maximize": True, "tag": "bias"}]
    return params, cls(groups, **kw)


def grads(params, t):
    rng = np.random.default_rng(100 + t)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def run(opt, params, steps):
    for t in steps:
        opt.step(grads(params, t))


@pytest.mark.parametrize("cls,kw", FAMILY, ids=IDS)
def test_save_load_resume_is_bit_identical(tmp_path, cls, kw):
    params, opt = make(cls, kw)
    run(opt, params, range(1, 6))
    path = tmp_path / "ckpt.npz"
    adamc.save(opt, path)
    run(opt, params, range(6, 12))  # the uninterrupted run

    fresh = [np.zeros_like(p) for p in params]
    restored = adamc.load(path, fresh)
    assert type(restored) is cls and restored.step_count == 5
    assert restored.param_groups[1]["tag"] == "bias" and restored.param_groups[1]["maximize"]
    assert restored.param_groups[0]["params"][0] is fresh[0]
    run(restored, fresh, range(6, 12))
    for a, b in zip(params, fresh):
        np.testing.assert_array_equal(bits(a), bits(b))
    assert restored.state_dict()["options"] == opt.state_dict()["options"]


def test_load_single_array_and_bounds(tmp_path):
    x = np.array([5.0, -5.0])
    opt = adamc.Adam(x, lr=0.5)
    opt._set_bounds([np.array([0.0, -1.0])], [np.array([1.0, 1.0])])
    opt.step(np.array([-1.0, 1.0]))
    adamc.save(opt, tmp_path / "b.npz")
    y = np.zeros(2)
    again = adamc.load(tmp_path / "b.npz", y)
    again.step(np.array([-1.0, 1.0]))
    assert y[0] <= 1.0 and y[1] >= -1.0


def test_save_refuses_what_needs_pickle(tmp_path):
    opt = adamc.Adam(np.zeros(2), lr=lambda t: 0.1)
    with pytest.raises(ValueError, match="Python callable"):
        adamc.save(opt, tmp_path / "x.npz")
    opt = adamc.Adam([{"params": np.zeros(2), "tag": object()}])
    with pytest.raises(ValueError, match=r"\['tag'\] holds a object"):
        adamc.save(opt, tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())
    with pytest.raises(TypeError, match="adamc optimizer"):
        adamc.save("nope", tmp_path / "x.npz")


def _saved(tmp_path):
    params, opt = make(adamc.Adam, dict(amsgrad=True))
    run(opt, params, range(1, 3))
    path = tmp_path / "good.npz"
    adamc.save(opt, path)
    return path, params


def _corrupt(path, tmp_path, how):
    data = path.read_bytes()
    bad = tmp_path / f"bad-{how}.npz"
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        raw = bytearray(data)
        # damage bytes inside the first stored member (its CRC no longer matches)
        raw[200:260] = bytes(b ^ 0xFF for b in raw[200:260])
        bad.write_bytes(bytes(raw))
    elif how == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif how == "other-npz":
        np.savez(bad, a=np.zeros(3))
    elif how == "pickled-object":
        np.savez(bad, __meta__=np.array([{"evil": 1}], dtype=object))
    elif how == "bad-meta":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["__meta__"] = np.array('{"format": "adamc-checkpoint", "version": 1}')
        np.savez(bad, **arrays)
    elif how == "future":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["__meta__"] = np.array(str(arrays["__meta__"]).replace('"version": 1', '"version": 99'))
        np.savez(bad, **arrays)
    elif how == "bad-hyper":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["__meta__"] = np.array(str(arrays["__meta__"]).replace('"eps": 1e-08', '"eps": -1.0'))
        np.savez(bad, **arrays)
    return bad


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage", "other-npz",
                                 "pickled-object", "bad-meta", "future", "bad-hyper"])
def test_corrupt_checkpoint_raises_and_changes_nothing(tmp_path, how):
    path, params = _saved(tmp_path)
    bad = _corrupt(path, tmp_path, how)
    targets = [np.full_like(p, 7) for p in params]
    with pytest.raises(ValueError) as info:
        adamc.load(bad, targets)
    assert isinstance(info.value, checkpoint.CheckpointError)
    assert all(np.all(t == 7) for t in targets)


@pytest.mark.parametrize("change,msg", [
    (lambda ps: ps[:1], "holds 2 parameters, got 1"),
    (lambda ps: [ps[0], np.full(8, 7.0)], r"params\[1\] has shape \(8,\)"),
    (lambda ps: [ps[0].astype(np.float64), ps[1]], r"params\[0\] has shape \(3, 4\) and dtype float64"),
])
def test_mismatched_params_raise_and_change_nothing(tmp_path, change, msg):
    path, params = _saved(tmp_path)
    targets = change([np.full_like(p, 7) for p in params])
    with pytest.raises(ValueError, match=msg):
        adamc.load(path, targets)
    assert all(np.all(t == 7) for t in targets)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        adamc.load("/nonexistent/ckpt.npz", np.zeros(2))


def test_writes_are_atomic(tmp_path, monkeypatch):
    path, params = _saved(tmp_path)
    before = path.read_bytes()
    opt = adamc.Adam(np.zeros(2))

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        adamc.save(opt, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.npz"]


@pytest.mark.parametrize("cls,kw", FAMILY, ids=IDS)
def test_pickle_and_deepcopy_continue_identically(cls, kw):
    params, opt = make(cls, kw)
    run(opt, params, range(1, 4))
    if cls is adamc.Adam:  # a Python lambda is not picklable; compiled schedules are
        clone_p = pickle.loads(pickle.dumps(opt))
    else:
        clone_p = pickle.loads(pickle.dumps(opt, protocol=pickle.HIGHEST_PROTOCOL))
    holder = copy.deepcopy({"params": params, "opt": opt})
    clone_d = holder["opt"]
    assert clone_d.param_groups[0]["params"][0] is holder["params"][0]  # sharing kept
    assert clone_d.param_groups[0]["params"][0] is not params[0]
    run(opt, params, range(4, 8))
    for clone in (clone_p, clone_d):
        cp = [p for g in clone.param_groups for p in g["params"]]
        run(clone, cp, range(4, 8))
        for a, b in zip(params, cp):
            np.testing.assert_array_equal(bits(a), bits(b))


def test_shallow_copy_shares_params_not_state():
    x = np.zeros(3)
    opt = adamc.Adam(x, lr=0.1)
    opt.step(np.ones(3))
    twin = copy.copy(opt)
    assert twin.param_groups[0]["params"][0] is x
    twin.step(np.ones(3))
    assert opt.state_dict()["state"][0]["step"] == 1 and twin.step_count == 2
    assert not np.array_equal(opt.state_dict()["state"][0]["exp_avg"],
                              twin.state_dict()["state"][0]["exp_avg"])


# ----------------------------------------------------------------------------------
# minimize(..., options={"checkpoint": ..., "resume": True})

def quad(x):
    return float(np.sum((x - 3) ** 2 * np.arange(1, x.size + 1))), 2 * (x - 3) * np.arange(1, x.size + 1)


def test_minimize_resume_is_bit_identical(tmp_path):
    opts = dict(lr=0.05, maxiter=120, gtol=0.0)
    full = adamc.minimize(quad, np.zeros(4), method="nadam", jac=True, options=opts)
    path = tmp_path / "run.npz"

    def interrupt(intermediate_result):
        if intermediate_result.nit == 47:
            raise StopIteration  # stands for a crash after the checkpoint at 40

    first = adamc.minimize(quad, np.zeros(4), method="nadam", jac=True, callback=interrupt,
                           options=dict(opts, checkpoint=path, checkpoint_every=20))
    assert first.status == 99 and first.nit == 47 and path.exists()
    resumed = adamc.minimize(quad, np.full(4, 123.0), method="nadam", jac=True,
                             options=dict(opts, checkpoint=path, resume=True))
    np.testing.assert_array_equal(bits(resumed.x), bits(full.x))
    assert resumed.fun == full.fun and resumed.nit == full.nit == 120
    assert resumed.nfev == full.nfev and resumed.status == full.status == 1


def test_minimize_resume_from_periodic_checkpoint_with_batches(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 3)), rng.standard_normal(200)

    def loss(w, Xb, yb):
        r = Xb @ w - yb
        return float(r @ r / len(yb)), 2 * Xb.T @ r / len(yb)

    def batches():
        return adamc.minibatches(X, y, batch_size=16, epochs=3, seed=5)

    full = adamc.minimize(loss, np.zeros(3), jac=True, options=dict(lr=0.05, batches=batches()))
    path = tmp_path / "sgd.npz"
    crash = {"at": 30}

    def cb(xk):
        crash["at"] -= 1
        if crash["at"] == 0:
            raise KeyboardInterrupt  # a real interruption: no final checkpoint

    with pytest.raises(KeyboardInterrupt):
        adamc.minimize(loss, np.zeros(3), jac=True, callback=cb,
                       options=dict(lr=0.05, batches=batches(), checkpoint=path,
                                    checkpoint_every=10))
    resumed = adamc.minimize(loss, np.zeros(3), jac=True,
                             options=dict(lr=0.05, batches=batches(), checkpoint=path,
                                          resume=True))
    assert resumed.nit == full.nit and resumed.status == 0
    np.testing.assert_array_equal(bits(resumed.x), bits(full.x))


def test_resume_without_file_starts_fresh_and_converged_run_stays_done(tmp_path):
    path = tmp_path / "new.npz"
    res = adamc.minimize(quad, np.zeros(2), jac=True,
                         options=dict(lr=0.1, checkpoint=path, resume=True))
    assert res.status == 0 and path.exists()
    again = adamc.minimize(quad, np.zeros(2), jac=True,
                           options=dict(lr=0.1, checkpoint=path, resume=True))
    assert again.status == 0 and again.nit == res.nit and again.nfev == res.nfev
    np.testing.assert_array_equal(again.x, res.x)


def test_resume_checks(tmp_path):
    with pytest.raises(ValueError, match="resume=True needs"):
        adamc.minimize(quad, np.zeros(2), jac=True, options=dict(resume=True))
    path = tmp_path / "a.npz"
    adamc.minimize(quad, np.zeros(2), jac=True, options=dict(maxiter=3, checkpoint=path))
    with pytest.raises(ValueError, match="written by method 'adam', not 'sgd'"):
        adamc.minimize(quad, np.zeros(2), method="sgd", jac=True,
                       options=dict(checkpoint=path, resume=True))
    with pytest.raises(ValueError, match="holds 2 parameters|shape"):
        adamc.minimize(quad, np.zeros(3), jac=True, options=dict(checkpoint=path, resume=True))


@pytest.mark.parametrize("field,value", [("steps", []), ("steps", [-3]), ("steps", [2**64]),
                                         ("steps", "7"), ("aux", [float("nan")]),
                                         ("aux", [0.5]), ("step_count", -1),
                                         ("skipped_steps", True)])
def test_corrupt_counters_raise_and_change_nothing(tmp_path, field, value):
    import json
    x = np.arange(4.0)
    opt = adamc.Adam(x, lr=0.1)
    opt.step(np.ones(4))
    path = tmp_path / "c.npz"
    adamc.save(opt, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta[field] = value
    arrays["__meta__"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    target = np.full(4, 7.0)
    with pytest.raises(checkpoint.CheckpointError):
        adamc.load(bad, target)
    assert np.all(target == 7.0)


def test_save_has_no_private_parameters_in_its_signature():
    # docs/api.md is generated from these signatures (tests/test_docs.py keeps it
    # current), so a private parameter cannot reappear there either.
    import inspect

    assert list(inspect.signature(adamc.save).parameters) == ["optimizer", "path"]


@pytest.mark.parametrize("key,value", [("exp_avg_sq", -1.0), ("exp_avg_sq", np.nan),
                                       ("exp_avg", np.inf)])
def test_load_refuses_state_values_no_run_can_reach(tmp_path, key, value):
    """adamc.load, pickle and copies build through the checks of load_state_dict."""
    x = np.arange(4.0)
    opt = adamc.Prodigy(x)
    opt.step(np.full(4, 0.5))
    path = tmp_path / "p.npz"
    adamc.save(opt, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[f"state_0_{key}"][1] = value
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    target = np.full(4, 7.0)
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"state\[0\]\['{key}'\] holds {value} at index 1"):
        adamc.load(bad, target)
    assert np.all(target == 7.0)
    payload = opt.__reduce_ex__(2)[1][1]
    payload["state"][0][1] = payload["state"][0][1].copy()
    payload["state"][0][1][0] = -1.0
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg_sq'\] holds -1.0"):
        type(opt)._from_export(payload)
