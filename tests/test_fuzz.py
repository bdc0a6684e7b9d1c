"""Property tests (Hypothesis) over dtypes, shapes, strides, views, aliasing,
hyperparameters (NaN, inf, negative, huge, wrong types) and call orders.

Every call must either give exactly the result of the NumPy emulation of the kernel
(tests/emulate.py; NaN positions compared, other values bit for bit) or raise
TypeError / ValueError with every array unchanged. The rules that decide which are
written out here, independently of adamc's own checks.

The number of examples defaults to a CI-sized volume; set ADAMC_FUZZ_EXAMPLES to run
more (e.g. ADAMC_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py).
"""
import copy
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import adamc
import emulate

EXAMPLES = int(os.environ.get("ADAMC_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ----------------------------------------------------------------------------------
# The rules, written from the documentation

ALGORITHMS = {
    # name: (function, state names, hyperparameters with their kinds)
    "adam": (adamc.adam_step, ("exp_avg", "exp_avg_sq"),
             dict(lr="nonneg", beta1="beta", beta2="beta", eps="nonneg", weight_decay="nonneg",
                  decoupled_weight_decay="flag", amsgrad="flag", maximize="flag")),
    "adamax": (adamc.adamax_step, ("exp_avg", "exp_inf"),
               dict(lr="nonneg", beta1="beta", beta2="beta", eps="nonneg",
                    weight_decay="nonneg", maximize="flag")),
    "nadam": (adamc.nadam_step, ("exp_avg", "exp_avg_sq"),
              dict(lr="nonneg", beta1="beta", beta2="beta", eps="nonneg", weight_decay="nonneg",
                   momentum_decay="nonneg", decoupled_weight_decay="flag", maximize="flag",
                   mu_product="unit")),
    "radam": (adamc.radam_step, ("exp_avg", "exp_avg_sq"),
              dict(lr="nonneg", beta1="beta", beta2="beta", eps="nonneg", weight_decay="nonneg",
                   decoupled_weight_decay="flag", maximize="flag")),
    "sgd": (adamc.sgd_step, (),
            dict(lr="nonneg", momentum="unit", dampening="unit", weight_decay="nonneg",
                 nesterov="flag", maximize="flag")),
    "lion": (adamc.lion_step, ("exp_avg",),
             dict(lr="nonneg", beta1="beta", beta2="beta", weight_decay="nonneg",
                  maximize="flag")),
    "rmsprop": (adamc.rmsprop_step, ("square_avg",),
                dict(lr="nonneg", alpha="unit", eps="nonneg", weight_decay="nonneg",
                     momentum="unit", centered="flag", maximize="flag")),
    "adagrad": (adamc.adagrad_step, ("sum",),
                dict(lr="nonneg", lr_decay="nonneg", weight_decay="nonneg",
                     initial_accumulator_value="nonneg", eps="nonneg", maximize="flag")),
    "adadelta": (adamc.adadelta_step, ("square_avg", "acc_delta"),
                 dict(lr="nonneg", rho="unit", eps="nonneg", weight_decay="nonneg",
                      maximize="flag")),
    "rprop": (adamc.rprop_step, ("prev", "step_size"),
              dict(lr="nonneg", etaminus="etaminus", etaplus="etaplus",
                   step_size_min="positive", step_size_max="positive", maximize="flag")),
}


def real_value(x):
    """The float a documented real argument stands for, or None if it is not one."""
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    return None


def valid_hyper(kind, x):
    if kind == "flag":
        return isinstance(x, (bool, np.bool_))
    v = real_value(x)
    if v is None or not math.isfinite(v) or v < 0:
        return False
    return {"nonneg": True, "beta": v < 1, "unit": v <= 1, "positive": v > 0,
            "etaminus": 0 < v < 1, "etaplus": v > 1}[kind]


def valid_step(x):
    return (not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, np.integer))
            and 1 <= x <= 2**62)


def usable(a, ref, writeable):
    return (isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype.isnative
            and a.dtype.itemsize in (4, 8) and a.dtype == ref.dtype and a.shape == ref.shape
            and a.flags.c_contiguous and a.flags.aligned
            and (a.flags.writeable or not writeable))


def param_usable(p):
    return (isinstance(p, np.ndarray) and p.dtype.kind == "f" and p.dtype.isnative
            and p.dtype.itemsize in (4, 8) and p.flags.c_contiguous and p.flags.aligned
            and p.flags.writeable)


def overlap(a, b):
    return a.size > 0 and b.size > 0 and np.shares_memory(a, b)


# ----------------------------------------------------------------------------------
# Strategies

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
BAD_DTYPES = [np.dtype(np.float16), np.dtype(np.int32), np.dtype(np.complex64),
              np.dtype(">f8"), np.dtype(np.bool_)]
LAYOUTS = ["c", "c", "c", "view", "strided", "reversed", "fortran", "readonly",
           "misaligned", "list", "wrong-shape", "wrong-dtype"]


def make_array(rng, shape, dtype, layout, scale):
    n = int(np.prod(shape))
    values = (rng.standard_normal(n) * scale).astype(dtype).reshape(shape)
    if layout == "view":
        base = np.zeros(n + 5, dtype)
        out = base[2:2 + n].reshape(shape)
        out[...] = values
        return out
    if layout == "strided":
        base = np.zeros((2 * n,) if n else (0,), dtype)
        out = base[::2].reshape(shape) if n else base.reshape(shape)
        out[...] = values
        return out
    if layout == "reversed":
        return values.reshape(-1)[::-1].reshape(shape) if values.ndim == 1 else values
    if layout == "fortran":
        return np.asfortranarray(values)
    if layout == "readonly":
        values.flags.writeable = False
        return values
    if layout == "misaligned":
        buf = np.zeros(values.nbytes + 1, np.uint8)
        out = np.frombuffer(buf.data, dtype=dtype, count=n, offset=1).reshape(shape)
        out.flags.writeable = True
        out[...] = values
        return out
    if layout == "list":
        return values.tolist()
    if layout == "wrong-shape":
        return np.zeros(n + 1, dtype)
    if layout == "wrong-dtype":
        return values.astype(np.float32 if dtype == np.float64 else np.float64)
    return values


def hyper_values(kind, clean):
    good = {"nonneg": st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1e-30, 1e30, 1e308])),
            "beta": st.floats(0, 0.999), "unit": st.floats(0, 1), "flag": st.booleans(),
            "positive": st.sampled_from([1e-6, 0.01, 1.0, 50.0, 1e30]),
            "etaminus": st.floats(0.01, 0.99), "etaplus": st.floats(1.01, 10.0)}[kind]
    if clean:
        return good
    bad = st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, 1.0, 1e308, 2,
                           "0.1", None, [0.1], True, np.float32(0.5), np.int64(0)])
    return st.one_of(good, good, good, bad)


@st.composite
def calls(draw):
    """Half of the calls are built from valid pieces only (their values still span
    zeros, subnormals, huge and tiny scales), the other half from any pieces."""
    clean = draw(st.booleans())
    name = draw(st.sampled_from(sorted(ALGORITHMS)))
    fn, state_names, kinds = ALGORITHMS[name]
    hyper = {k: draw(hyper_values(kind, clean)) for k, kind in kinds.items()}
    if clean and name == "rprop" and hyper["step_size_min"] > hyper["step_size_max"]:
        hyper["step_size_min"], hyper["step_size_max"] = (hyper["step_size_max"],
                                                          hyper["step_size_min"])
    if clean and name == "sgd" and hyper["nesterov"]:
        hyper["dampening"] = 0.0
        hyper["momentum"] = max(hyper["momentum"], 0.5)
    valid_steps = st.integers(1, 10**6)
    step = draw(valid_steps if clean else st.one_of(
        valid_steps, valid_steps, st.sampled_from([0, -1, 2.5, True, 2**63, np.int64(3)])))
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple))
    dtype = draw(st.sampled_from(DTYPES if clean else DTYPES * 3 + BAD_DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    layout = st.sampled_from(["c", "view"] if clean else LAYOUTS)
    layouts = {role: draw(layout)
               for role in ("param", "grad") + state_names + ("extra0", "extra1")}
    alias = None if clean else draw(st.sampled_from(
        [None] * 6 + ["grad=param", "state=state", "grad=state", "param=state",
                      "grad-view-param"]))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30, 1e-42]))
    return name, hyper, step, shape, dtype, seed, layouts, alias, scale, clean


OPTIONAL = {"adam": [("max_exp_avg_sq", "amsgrad")],
            "sgd": [("momentum_buffer", "momentum")],
            "rmsprop": [("momentum_buffer", "momentum"), ("grad_avg", "centered")]}


def build(call):
    """The arrays of one call (by role) and the optional state arrays passed by keyword.
    Optional state is present when its flag asks for it, except in 10% of the calls."""
    name, hyper, step, shape, dtype, seed, layouts, alias, scale, clean = call
    fn, state_names, kinds = ALGORITHMS[name]
    rng = np.random.default_rng(seed)
    base = dtype if dtype in DTYPES else np.dtype(np.float64)
    arrays = {"param": (make_array(rng, shape, dtype, layouts["param"], scale)
                        if dtype in DTYPES else np.zeros(shape, dtype))}
    for role in ("grad",) + state_names:
        arrays[role] = make_array(rng, shape, base, layouts[role], scale)
    kwargs = {}
    for k, (role, flag) in enumerate(OPTIONAL.get(name, [])):
        wanted = valid_hyper(kinds[flag], hyper[flag]) and bool(hyper[flag])
        if wanted != (not clean and rng.random() < 0.1):
            kwargs[role] = arrays[role] = make_array(rng, shape, base, layouts[f"extra{k}"], scale)
    if alias == "grad=param":
        arrays["grad"] = arrays["param"]
    elif alias == "state=state" and len(state_names) >= 2:
        arrays[state_names[1]] = arrays[state_names[0]]
    elif alias == "grad=state" and state_names:
        arrays["grad"] = arrays[state_names[0]]
    elif alias == "param=state" and state_names:
        arrays[state_names[0]] = arrays["param"]
    elif alias == "grad-view-param" and isinstance(arrays["param"], np.ndarray):
        arrays["grad"] = arrays["param"].view()
    return fn, state_names, kinds, arrays, kwargs


def expected_valid(name, kinds, hyper, step, arrays, kwargs, state_names):
    p = arrays["param"]
    if not param_usable(p) or not usable(arrays["grad"], p, False):
        return False
    written = [p] + [arrays[s] for s in state_names] + list(kwargs.values())
    for role in list(state_names) + list(kwargs):
        if not usable(arrays[role], p, True):
            return False
    for i in range(len(written)):
        for j in range(i + 1, len(written)):
            if overlap(written[i], written[j]):
                return False
    if any(overlap(arrays["grad"], w) for w in written):
        return False
    if not all(valid_hyper(kinds[k], hyper[k]) for k in kinds) or not valid_step(step):
        return False
    for role, flag in OPTIONAL.get(name, []):
        if bool(hyper[flag]) != (role in kwargs):
            return False
    if name == "sgd" and hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
        return False
    if name == "rprop" and real_value(hyper["step_size_min"]) > real_value(hyper["step_size_max"]):
        return False
    return True


def snapshot(arrays):
    return {k: (a.copy() if isinstance(a, np.ndarray) else copy.deepcopy(a))
            for k, a in arrays.items()}


def same(a, b):
    """Same dtype, shape and bytes (or the same list)."""
    if not isinstance(a, np.ndarray):
        return a == b
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def equal_or_both_nan(got, want):
    got, want = np.asarray(got), np.asarray(want)
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    return np.array_equal(nan_g, nan_w) and np.array_equal(got[~nan_g], want[~nan_w]) and \
        np.array_equal(np.signbit(got[~nan_g]), np.signbit(want[~nan_w]))


@SETTINGS
@given(calls())
def test_stateless_steps_are_exact_or_refuse_cleanly(call):
    name, hyper, step, shape, dtype, seed, layouts, alias, scale, clean = call
    fn, state_names, kinds, arrays, kwargs = build(call)
    valid = expected_valid(name, kinds, hyper, step, arrays, kwargs, state_names)
    event(f"{name}: {'computed' if valid else 'refused'}")
    before = snapshot(arrays)
    args = [arrays["param"], arrays["grad"]] + [arrays[s] for s in state_names]
    call_kw = dict(hyper, step=step, **kwargs)
    if name == "sgd" and "momentum_buffer" in kwargs:
        args.append(call_kw.pop("momentum_buffer"))
    if valid:
        p0 = before["param"]
        states = {s: before[s] for s in state_names}
        states.update({k: before[k] for k in kwargs})
        ehyper = {k: (float(v) if kinds[k] != "flag" else bool(v)) for k, v in hyper.items()}
        aux = ehyper.pop("mu_product", 0.0)
        if name in ("adam", "adamax", "nadam", "radam", "lion"):
            ehyper["betas"] = (ehyper.pop("beta1"), ehyper.pop("beta2"))
        if name == "sgd":
            aux = 0.0 if step == 1 else 1.0
        if name == "rprop":
            ehyper["etas"] = (ehyper.pop("etaminus"), ehyper.pop("etaplus"))
            ehyper["step_sizes"] = (ehyper.pop("step_size_min"), ehyper.pop("step_size_max"))
        emu = getattr(emulate, name)
        with np.errstate(all="ignore"):
            want_p, want_s, want_aux = emu(p0, before["grad"], states, int(step), aux, **ehyper)
            result = fn(*args, **call_kw)
        assert equal_or_both_nan(arrays["param"], want_p)
        for k, v in want_s.items():
            assert equal_or_both_nan(arrays[k], v), k
        if name == "nadam":
            assert result == want_aux
    else:
        with pytest.raises((TypeError, ValueError)):
            fn(*args, **call_kw)
        for k, v in arrays.items():
            assert same(v, before[k]), f"{k} changed although the call was refused"


# ----------------------------------------------------------------------------------
# Call orders on an optimizer

class OptimizerMachine(RuleBasedStateMachine):
    """Random sequences of steps (good and bad), hyperparameter edits (good and bad),
    state_dict round trips and resets, checked against a shadow run of the stateless
    Adam step, which must stay bit-identical."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.params = [rng.standard_normal(7).astype(np.float32), rng.standard_normal((2, 3))]
        self.opt = adamc.Adam(self.params, lr=0.01, amsgrad=True)
        self.shadow = [p.copy() for p in self.params]
        self.states = [[np.zeros_like(p) for _ in range(3)] for p in self.params]
        self.lr = 0.01
        self.t = 0
        self.rng = rng

    def grads(self):
        return [self.rng.standard_normal(p.shape).astype(p.dtype) for p in self.params]

    @rule()
    def good_step(self):
        gs = self.grads()
        self.opt.step(gs)
        self.t += 1
        for q, g, (m, v, vm) in zip(self.shadow, gs, self.states):
            adamc.adam_step(q, g, m, v, step=self.t, lr=self.lr, amsgrad=True, max_exp_avg_sq=vm)

    @rule(kind=st.sampled_from(["dtype", "shape", "noncontig", "alias", "length", "type",
                                "nan-shape"]))
    def bad_step(self, kind):
        gs = self.grads()
        if kind == "dtype":
            gs[0] = gs[0].astype(np.float64)
        elif kind == "shape":
            gs[1] = gs[1].T.copy()
        elif kind == "noncontig":
            gs[1] = np.asfortranarray(gs[1])
        elif kind == "alias":
            gs[0] = self.params[0]
        elif kind == "length":
            gs = gs[:1]
        elif kind == "type":
            gs = tuple(g.tolist() for g in gs)
        else:
            gs[0] = np.full(8, np.nan, np.float32)
        with pytest.raises((TypeError, ValueError)):
            self.opt.step(gs)

    @rule(value=st.one_of(st.floats(0, 0.1), st.sampled_from([-1.0, float("nan"), "x"])))
    def set_lr(self, value):
        for group in self.opt.param_groups:
            group["lr"] = value
        if valid_hyper("nonneg", value):
            self.lr = value
        else:
            with pytest.raises((TypeError, ValueError)):
                self.opt.step(self.grads())
            for group in self.opt.param_groups:
                group["lr"] = self.lr

    @rule()
    def roundtrip(self):
        sd = self.opt.state_dict()
        self.opt.load_state_dict(sd)

    @precondition(lambda self: self.t > 0)
    @rule()
    def reset(self):
        self.opt.reset()
        self.t = 0
        for st_ in self.states:
            for a in st_:
                a.fill(0)

    @invariant()
    def matches_shadow(self):
        for p, q in zip(self.params, self.shadow):
            assert np.array_equal(p.view(np.uint8), q.view(np.uint8))
        assert self.opt.step_count == self.t


TestOptimizerCallOrders = OptimizerMachine.TestCase
TestOptimizerCallOrders.settings = settings(max_examples=max(20, EXAMPLES // 10),
                                            stateful_step_count=30, deadline=None)
