"""adamc.save / adamc.load, pickling and copies, and minimize's checkpoints."""
import contextlib
import copy
import io
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    (adamc.Adagrad, dict(lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01,
                         lr=schedules.step_decay(0.05, 3, 0.5))),
    (adamc.Adadelta, dict(rho=0.8, max_grad_norm=1.0)),
    (adamc.Rprop, dict(etas=(0.4, 1.3), step_sizes=(1e-5, 1.0), clip_value=0.5)),
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


# ----------------------------------------------------------------------------------
# load: every corrupt or foreign file is a CheckpointError, and nothing is modified

def _large(tmp_path):
    """A checkpoint whose first member is larger than zipfile's 4 KiB read-ahead, so
    that a reader parses the member's .npy header before zipfile has checked its CRC."""
    x = np.arange(1000.0)
    opt = adamc.Adam(x, lr=0.1)
    opt.step(np.ones(1000))
    path = tmp_path / "large.npz"
    adamc.save(opt, path)
    return path, x


def _rewrite(path, out, **changes):
    """Copy the checkpoint ``path`` to ``out`` with members replaced (bytes, the .npy
    file) or removed (None); the copy's CRCs are right."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for name, data in changes.items():
        if data is None:
            members.pop(f"{name}.npy")
        else:
            members[f"{name}.npy"] = data
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out


def _npy(header, payload=b""):
    """A version 1.0 .npy file with the header text as given."""
    text = header + " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1") \
        + payload


def _load_fails_cleanly(path, like):
    targets = [np.full_like(p, 7) for p in like]
    with pytest.raises(checkpoint.CheckpointError) as info:
        adamc.load(path, targets)
    assert all(np.all(t == 7) for t in targets)
    return str(info.value)


def test_flipped_bit_in_a_large_members_header_is_a_checkpoint_error(tmp_path):
    # failed before: tokenize.TokenError (NumPy parsed the header before the CRC check)
    path, x = _large(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"(1000,)") + 6] ^= 1  # ')' -> '(': the header is no longer a literal
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    _load_fails_cleanly(bad, [x])


def test_unparsable_npy_header_with_a_good_crc_is_a_checkpoint_error(tmp_path):
    # failed before: tokenize.TokenError
    path, x = _large(tmp_path)
    bad = _rewrite(path, tmp_path / "header.npz", param_0=_npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000((, }", b"\0" * 8000))
    assert "param_0" in _load_fails_cleanly(bad, [x])


def test_plain_npy_file_is_a_checkpoint_error(tmp_path):
    # failed before: TypeError ('numpy.ndarray' object does not support the context
    # manager protocol)
    np.save(tmp_path / "plain.npy", np.zeros(4))
    msg = _load_fails_cleanly(tmp_path / "plain.npy", [np.zeros(4)])
    assert "not an adamc checkpoint" in msg and ".npy" in msg


def test_member_declaring_a_huge_shape_is_refused_before_its_data_is_read(tmp_path):
    # failed before: MemoryError (every member was read before the meta data was checked)
    path, x = _large(tmp_path)
    huge = _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }",
                b"\0" * 64)
    for name in ("param_0", "state_0_exp_avg", "__meta__"):
        bad = _rewrite(path, tmp_path / f"huge-{name}.npz", **{name: huge})
        _load_fails_cleanly(bad, [x])
    # where no parameter says what to expect, the size of the file bounds it
    text = _npy("{'descr': '<U100000000000', 'fortran_order': False, 'shape': (), }", b"{}")
    _load_fails_cleanly(_rewrite(path, tmp_path / "huge-text.npz", __meta__=text), [x])
    bad = _rewrite(path, tmp_path / "huge-extra.npz", extra_jac=huge)
    targets = [np.full_like(x, 7)]
    with pytest.raises(checkpoint.CheckpointError, match="extra_jac"):
        checkpoint._load_with_extra(bad, targets)
    assert np.all(targets[0] == 7)


def test_members_of_the_wrong_dtype_shape_or_size_are_refused(tmp_path):
    path, x = _large(tmp_path)
    cases = {
        "f4": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }",
                   b"\0" * 4000),
        "shape": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (999,), }",
                      b"\0" * 7992),
        "short": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000,), }",
                      b"\0" * 7992),
        "long": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000,), }",
                     b"\0" * 8008),
        "struct": _npy("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1000,), }",
                       b"\0" * 8000),
    }
    for how, data in cases.items():
        _load_fails_cleanly(_rewrite(path, tmp_path / f"{how}.npz", state_0_exp_avg=data), [x])
    _load_fails_cleanly(_rewrite(path, tmp_path / "gone.npz", state_0_exp_avg=None), [x])


class _Trap:
    """Unpickling this creates the file ``marker``: a load that runs code is caught."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_arrays_are_never_unpickled(tmp_path):
    path, x = _large(tmp_path)
    marker = tmp_path / "code-ran"
    buf = io.BytesIO()
    np.save(buf, np.array([_Trap(str(marker))] * 1000, dtype=object), allow_pickle=True)
    for name in ("param_0", "state_0_exp_avg", "__meta__"):
        bad = _rewrite(path, tmp_path / f"pickled-{name}.npz", **{name: buf.getvalue()})
        _load_fails_cleanly(bad, [x])
    assert not marker.exists()


def _zip_field(path, out, member, offset, value):
    """Copy ``path`` to ``out`` with a 2-byte field of ``member``'s central directory
    entry set to ``value`` (offset 8: the flags; 6: the version needed to extract)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        start = z.start_dir
    entry = raw.index(b"PK\x01\x02", start)
    while not raw[entry + 46:].startswith(member.encode()):
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + offset:entry + offset + 2] = value.to_bytes(2, "little")
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize("offset,value", [(8, 1), (6, 99)], ids=["encrypted", "zip-version"])
def test_zip_features_adamc_never_writes_are_a_checkpoint_error(tmp_path, offset, value):
    # failed before: RuntimeError (File ... is encrypted) and NotImplementedError (zip
    # file version 9.9), both one flipped bit away from a good checkpoint
    path, x = _large(tmp_path)
    for member in ("__meta__.npy", "param_0.npy"):
        _load_fails_cleanly(_zip_field(path, tmp_path / "z.npz", member, offset, value), [x])


# ----------------------------------------------------------------------------------
# Property tests: random bit flips, truncations and foreign files. Every outcome is a
# CheckpointError that changed nothing, or a load identical to the original.
# Fixed examples (derandomize) so that CI is reproducible and fast.

PROPERTY = settings(max_examples=int(os.environ.get("ADAMC_FUZZ_EXAMPLES", "150")),
                    derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _same(a, b):
    """Deep equality of state dicts, arrays bit for bit."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(bits(a), bits(b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, adamc.schedules.Schedule):  # equal when built from equal arguments
        return type(a) is type(b) and a.__reduce__() == b.__reduce__()
    return type(a) is type(b) and (a == b or (a != a and b != b))


class _Original:
    """A checkpoint with groups, schedules, amsgrad, bounds and EMA-free state, and one
    member larger than zipfile's read-ahead; its bytes, params and state_dict."""

    def __init__(self, directory):
        rng = np.random.default_rng(3)
        self.params = [rng.standard_normal(600), rng.standard_normal((2, 3)).astype(np.float32)]
        opt = adamc.Adam([{"params": self.params[:1]},
                          {"params": self.params[1:], "lr": schedules.cosine_decay(0.1, 9)}],
                         amsgrad=True, max_grad_norm=2.0)
        run(opt, self.params, range(1, 4))
        self.path = directory / "original.npz"
        adamc.save(opt, self.path)
        self.data = self.path.read_bytes()
        self.state = opt.state_dict()
        self.scratch = directory / "mutated.npz"

    def structure(self):
        """Offsets of the bytes that are not array data: (the local headers and .npy
        headers of the members, the central directory and its end record)."""
        headers = []
        with zipfile.ZipFile(self.path) as z:
            for info in z.infolist():
                start = info.header_offset
                name_len = int.from_bytes(self.data[start + 26:start + 28], "little")
                extra_len = int.from_bytes(self.data[start + 28:start + 30], "little")
                member = start + 30 + name_len + extra_len
                header_len = int.from_bytes(self.data[member + 8:member + 10], "little")
                headers += range(start, member + 10 + header_len)
            return headers, list(range(z.start_dir, len(self.data)))

    def check(self, data):
        """Load ``data``: a CheckpointError that changed nothing, or the original."""
        self.scratch.write_bytes(data)
        targets = [np.full_like(p, 7) for p in self.params]
        try:
            opt = adamc.load(self.scratch, targets)
        except checkpoint.CheckpointError:
            assert all(np.all(t == 7) for t in targets)
            return "error"
        for t, p in zip(targets, self.params):
            np.testing.assert_array_equal(bits(t), bits(p))
        assert _same(opt.state_dict(), self.state)
        return "identical"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return _Original(tmp_path_factory.mktemp("original"))


def test_random_bit_flips_load_identically_or_raise_checkpoint_error(original):
    headers, directory = original.structure()
    where = st.one_of(st.integers(0, len(original.data) - 1), st.sampled_from(headers),
                      st.sampled_from(directory))
    outcomes = []

    @PROPERTY
    @given(flips=st.lists(st.tuples(where, st.integers(0, 7)), min_size=1, max_size=3))
    def prop(flips):
        raw = bytearray(original.data)
        for pos, bit in flips:
            raw[pos] ^= 1 << bit
        outcomes.append(original.check(bytes(raw)))

    prop()
    # the flips reached both kinds of bytes: those that matter and those that do not
    assert {"error", "identical"} <= set(outcomes)


@PROPERTY
@given(cut=st.integers(0, 10**6))
def test_truncated_files_raise_checkpoint_error(original, cut):
    assert original.check(original.data[:cut % len(original.data)]) == "error"


def _foreign(tmp_path, kind):
    """Files that are not adamc checkpoints, each written as ``tmp_path/kind``."""
    path = tmp_path / kind
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(4))
    elif kind == "npz-without-meta":
        with open(path, "wb") as f:
            np.savez(f, param_0=np.zeros(4))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip-with-other-members":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("README.txt", "hello")
            z.writestr("data.csv", "1,2,3\n")
    elif kind == "directory":
        path.mkdir()
    else:  # a meta data member of the wrong kind
        meta = {"meta-list": json.dumps([1, 2]), "meta-number": "3",
                "meta-string": json.dumps("adamc-checkpoint"), "meta-null": "null",
                "meta-not-json": "{'format': 'adamc-checkpoint'", "meta-deep": "[" * 100000,
                "meta-format-is-list": json.dumps({"format": ["adamc-checkpoint"],
                                                   "version": 1})}.get(kind)
        value = {"meta-int-array": np.arange(3), "meta-2d-strings": np.array([["{}"]]),
                 "meta-bytes": np.array(b'{"format": "adamc-checkpoint"}')}.get(
            kind, np.array(meta))
        buf = io.BytesIO()
        np.savez(buf, __meta__=value, param_0=np.zeros(4))
        path.write_bytes(buf.getvalue())
    return path


FOREIGN = ["npy", "npz-without-meta", "empty", "zip-with-other-members", "directory",
           "meta-list", "meta-number", "meta-string", "meta-null", "meta-not-json",
           "meta-deep", "meta-format-is-list", "meta-int-array", "meta-2d-strings",
           "meta-bytes"]


@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_files_raise_checkpoint_error(tmp_path, kind):
    _load_fails_cleanly(_foreign(tmp_path, kind), [np.zeros(4)])


@PROPERTY
@given(data=st.binary(max_size=2000))
def test_random_bytes_raise_checkpoint_error(original, data):
    assert original.check(data) == "error"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=8) | st.sampled_from(["adamc-checkpoint", "Adam", "<f8", "|O"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)


def _paths(value, prefix=()):
    """Every place in a JSON value: the paths of its dict entries and list items."""
    yield prefix
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, prefix + (key,))


def test_meta_data_of_the_wrong_kind_raises_checkpoint_error(original):
    """Any value in any place of the JSON meta data (or a removed entry): a
    CheckpointError that changed nothing, or a successful load."""
    with zipfile.ZipFile(original.path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with np.load(original.path) as z:
        meta = json.loads(str(z["__meta__"]))
    places = list(_paths(meta))[1:]

    @PROPERTY
    @given(place=st.sampled_from(places), value=_JSON, remove=st.booleans())
    def prop(place, value, remove):
        changed = copy.deepcopy(meta)
        *parents, last = place
        holder = changed
        for key in parents:
            holder = holder[key]
        if remove and isinstance(holder, dict):
            del holder[last]
        else:
            holder[last] = value
        buf = io.BytesIO()
        np.save(buf, np.array(json.dumps(changed)))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for name, data in members.items():
                z.writestr(name, buf.getvalue() if name == "__meta__.npy" else data)
        original.scratch.write_bytes(out.getvalue())
        targets = [np.full_like(p, 7) for p in original.params]
        try:
            adamc.load(original.scratch, targets)
        except checkpoint.CheckpointError:
            assert all(np.all(t == 7) for t in targets)

    prop()


# ----------------------------------------------------------------------------------
# save: kill -9 leaves no temporary file behind that a later save does not remove, and
# a save never removes the temporary file of a save still running

posix_only = pytest.mark.skipif(os.name != "posix", reason="temp-file locks need fcntl")


def _temps(directory, name="ckpt.npz"):
    return sorted(p.name for p in directory.iterdir()
                  if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def _child(code):
    """A Python process running ``code`` with this adamc."""
    root = os.path.dirname(os.path.dirname(adamc.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _version(n, k):
    """Params and optimizer after k steps of the saving loop below."""
    x = np.linspace(-1.0, 1.0, n)
    opt = adamc.Adam(x, lr=1e-3)
    for t in range(1, k + 1):
        opt.step(np.cos(x * t))
    return x, opt


def _saving_child(n, path):
    """Fork a process that saves versions 1, 2, ... of an optimizer to ``path`` until
    it is killed; return its pid once version 2 is on disk, and the time version 2
    took (a step and a save: about 20 ms here, far more under emulation)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            x = np.linspace(-1.0, 1.0, n)
            opt = adamc.Adam(x, lr=1e-3)
            for k in range(1, 10**6):
                opt.step(np.cos(x * k))
                adamc.save(opt, path)
                if k <= 2:
                    os.write(write, b"1")
        finally:
            os._exit(1)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
        t1 = time.perf_counter()
        assert os.read(read, 1) == b"1"
        cycle = time.perf_counter() - t1
    finally:
        os.close(read)
    return pid, cycle


@posix_only
def test_kill_during_save_keeps_the_checkpoint_and_the_next_save_sweeps(tmp_path):
    """SIGKILL a process that saves a 3 MB checkpoint again and again, at random
    moments: the file at the path is always one of the saved versions, and the next
    save removes the temporary file the killed save left (fails before the sweep)."""
    n, path = 2**17, tmp_path / "ckpt.npz"
    rng = np.random.default_rng(0)
    left = 0
    for _ in range(8):
        pid, cycle = _saving_child(n, path)
        time.sleep(rng.uniform(0.0, cycle))  # somewhere in the next step and save
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        y = np.zeros(n)
        loaded = adamc.load(path, y)  # intact: loads, and is one of the saved versions
        x, opt = _version(n, loaded.step_count)
        np.testing.assert_array_equal(bits(y), bits(x))
        assert _same(loaded.state_dict(), opt.state_dict())
        left += bool(_temps(tmp_path))
        adamc.save(opt, path)
        assert _temps(tmp_path) == []
        assert _same(adamc.load(path, np.zeros(n)).state_dict(), opt.state_dict())
    assert left, "no kill landed inside a save: the test did not test the sweep"


@posix_only
def test_save_never_sweeps_the_temp_file_of_a_running_save(tmp_path):
    """A save that is writing (here: stopped half-way) holds a lock on its temporary
    file; another process's save of the same path leaves it alone, and both saves
    complete."""
    path = tmp_path / "ckpt.npz"
    proc = _child(f"""
        import sys
        import numpy as np
        import adamc
        real = np.savez
        def slow(f, **arrays):
            f.write(b"half")
            f.flush()
            print("writing", flush=True)
            sys.stdin.readline()  # until the other save has run
            f.seek(0)
            f.truncate()
            real(f, **arrays)
        np.savez = slow
        adamc.save(adamc.Adam(np.full(3, 2.0)), {str(path)!r})
        print("done", flush=True)
    """)
    try:
        assert proc.stdout.readline().strip() == "writing"
        live = _temps(tmp_path)
        assert len(live) == 1
        stale = tmp_path / ".ckpt.npz.abcd1234.tmp"  # an earlier save's, killed
        stale.write_bytes(b"partial")
        adamc.save(adamc.Adam(np.full(3, 1.0)), path)
        assert _temps(tmp_path) == live  # the stale one swept, the live one kept
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _temps(tmp_path) == []
    y = np.zeros(3)
    adamc.load(path, y)
    assert np.all(y == 2.0)  # the later rename wins


@posix_only
def test_sweep_only_touches_the_temp_files_of_this_path(tmp_path):
    names = [".ckpt.npz.abcd1234.tmp", ".ckpt.npz.abcd_xyz.tmp", ".ckpt.npz.abc.tmp",
             ".other.npz.abcd1234.tmp", ".ckpt.npz.abcd1234.tmp.keep", "ckpt.npz.abcd1234.tmp",
             ".ckpt.npz.x.abcd1234.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".ckpt.npz.dir12345.tmp").mkdir()
    adamc.save(adamc.Adam(np.zeros(2)), tmp_path / "ckpt.npz")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(set(names + [".ckpt.npz.dir12345.tmp", "ckpt.npz"])
                          - {".ckpt.npz.abcd1234.tmp", ".ckpt.npz.abcd_xyz.tmp"})


@posix_only
def test_save_retries_when_a_sweep_removes_its_temp_file_before_it_is_locked(
        tmp_path, monkeypatch):
    """Between creating its temporary file and locking it, a save can lose the file to
    another process's sweep: it notices and writes a new one."""
    from adamc._core import format as _format
    real, swept = _format.fcntl.flock, []

    def flock(fd, op):
        if not swept:  # a sweep in another process gets there first
            name = os.readlink(f"/proc/self/fd/{fd}")
            os.unlink(name)
            swept.append(name)
        return real(fd, op)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc")
    monkeypatch.setattr(_format.fcntl, "flock", flock)
    x = np.arange(3.0)
    adamc.save(adamc.Adam(x), tmp_path / "ckpt.npz")
    assert swept and _temps(tmp_path) == []
    y = np.zeros(3)
    adamc.load(tmp_path / "ckpt.npz", y)
    np.testing.assert_array_equal(y, x)


def test_save_without_file_locks_still_works(tmp_path, monkeypatch):
    """Where fcntl is missing (Windows), a save writes atomically without the sweep."""
    from adamc._core import format as _format
    monkeypatch.setattr(_format, "fcntl", None)
    stale = tmp_path / ".ckpt.npz.abcd1234.tmp"
    stale.write_bytes(b"partial")
    adamc.save(adamc.Adam(np.ones(2)), tmp_path / "ckpt.npz")
    y = np.zeros(2)
    adamc.load(tmp_path / "ckpt.npz", y)
    assert np.all(y == 1) and stale.exists()


# ----------------------------------------------------------------------------------
# save: the mode of the file it replaces, or the umask's default; symbolic links

def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@posix_only
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600),
                                        (0o002, 0o664)])
def test_new_checkpoint_gets_the_umask_default_mode(tmp_path, umask, mode):
    # failed before: always 0600 (mkstemp)
    with _umask(umask):
        adamc.save(adamc.Adam(np.zeros(2)), tmp_path / "new.npz")
        adamc.minimize(quad, np.zeros(2), jac=True,
                       options=dict(maxiter=2, checkpoint=tmp_path / "run.npz"))
    assert _mode(tmp_path / "new.npz") == mode and _mode(tmp_path / "run.npz") == mode


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444, 0o664])
def test_replaced_checkpoint_keeps_its_mode(tmp_path, mode):
    # failed before: always 0600 (mkstemp)
    path = tmp_path / "ckpt.npz"
    adamc.save(adamc.Adam(np.zeros(2)), path)
    os.chmod(path, mode)
    with _umask(0o077):  # the old file's mode wins over the umask
        adamc.save(adamc.Adam(np.ones(2)), path)
    assert _mode(path) == mode
    y = np.zeros(2)
    adamc.load(path, y)
    assert np.all(y == 1)


@posix_only
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_save_writes_through_a_symlink(tmp_path, relative):
    # failed before: the link was replaced by a regular file (with mode 0600)
    store = tmp_path / "store"
    store.mkdir()
    target = store / "real.npz"
    adamc.save(adamc.Adam(np.zeros(2)), target)
    os.chmod(target, 0o640)
    link = tmp_path / "ckpt.npz"
    link.symlink_to(os.path.join("store", "real.npz") if relative else target)
    (store / ".real.npz.abcd1234.tmp").write_bytes(b"stale")  # the target's stale temp
    adamc.save(adamc.Adam(np.ones(2)), link)
    assert link.is_symlink() and os.readlink(link) == (
        os.path.join("store", "real.npz") if relative else str(target))
    assert _mode(target) == 0o640
    assert sorted(p.name for p in store.iterdir()) == ["real.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz", "store"]
    y = np.zeros(2)
    adamc.load(target, y)
    assert np.all(y == 1)


@posix_only
def test_save_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "ckpt.npz"
    link.symlink_to(tmp_path / "later.npz")
    with _umask(0o022):
        adamc.save(adamc.Adam(np.ones(2)), link)
    assert link.is_symlink() and _mode(tmp_path / "later.npz") == 0o644
    y = np.zeros(2)
    adamc.load(link, y)
    assert np.all(y == 1)


@posix_only
def test_save_to_a_symlink_loop_raises_oserror(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError):
        adamc.save(adamc.Adam(np.ones(2)), a)
    assert a.is_symlink() and b.is_symlink() and len(list(tmp_path.iterdir())) == 2


@posix_only
def test_replaced_checkpoint_keeps_its_group_where_permitted(tmp_path):
    path = tmp_path / "ckpt.npz"
    adamc.save(adamc.Adam(np.zeros(2)), path)
    others = [g for g in os.getgroups() if g != os.stat(path).st_gid]
    if os.geteuid() == 0:
        others.append(os.stat(path).st_gid + 4242)
    if not others:
        pytest.skip("the user belongs to a single group")
    os.chown(path, -1, others[0])
    os.chmod(path, 0o640)
    adamc.save(adamc.Adam(np.ones(2)), path)
    assert os.stat(path).st_gid == others[0] and _mode(path) == 0o640


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
