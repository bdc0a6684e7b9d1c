"""The optimizer classes: param groups, step(), state_dict, reset, and bad input."""
import copy

import numpy as np
import pytest

import adamc
from adamc import _reference
from conftest import bits


def params(seed=0, dtype=np.float64, shapes=((5,), (3, 4))):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grads_like(ps, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in ps]


def snapshot(opt, ps):
    return [p.copy() for p in ps], copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, ps, snap):
    old_ps, old_sd = snap
    for p, q in zip(ps, old_ps):
        np.testing.assert_array_equal(bits(p), bits(q))
    sd = opt.state_dict()
    assert sd["step_count"] == old_sd["step_count"]
    for i, st in old_sd["state"].items():
        assert sd["state"][i].keys() == st.keys()
        for k, v in st.items():
            np.testing.assert_array_equal(sd["state"][i][k], v)


# ----------------------------------------------------------------------------------
# Semantics

def test_single_array_and_quadratic_converges():
    x = np.array([8.0])
    opt = adamc.Adam(x, lr=0.1)
    for _ in range(500):
        opt.step(2 * (x - 2))
    assert abs(x[0] - 2) < 1e-2
    assert opt.step_count == 500
    assert opt.param_groups[0]["params"][0] is x


@pytest.mark.parametrize("cls,decoupled", [(adamc.Adam, False), (adamc.AdamW, True)])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_optimizer_equals_reference_trajectory(cls, decoupled, amsgrad):
    ps = params()
    ref = [dict(param=p.copy(), exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p),
                max_exp_avg_sq=np.zeros_like(p)) for p in ps]
    opt = cls(ps, lr=0.01, weight_decay=0.1, amsgrad=amsgrad)
    for t in range(1, 31):
        gs = grads_like(ps, t)
        opt.step(gs)
        for r, g in zip(ref, gs):
            r.update(_reference.adam(r["param"], g, r["exp_avg"], r["exp_avg_sq"], step=t,
                                     lr=0.01, weight_decay=0.1,
                                     decoupled_weight_decay=decoupled, amsgrad=amsgrad,
                                     max_exp_avg_sq=r["max_exp_avg_sq"]))
    for p, r in zip(ps, ref):
        np.testing.assert_allclose(p, r["param"], rtol=1e-12, atol=1e-12)


def test_optimizer_is_bitwise_the_stateless_step():
    ps = params(dtype=np.float32)
    qs = [p.copy() for p in ps]
    states = [(np.zeros_like(q), np.zeros_like(q)) for q in qs]
    opt = adamc.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    for t in range(1, 11):
        gs = grads_like(ps, t)
        opt.step(gs)
        for q, g, (m, v) in zip(qs, gs, states):
            adamc.adam_step(q, g, m, v, step=t, lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6,
                            weight_decay=0.01)
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(bits(p), bits(q))


def test_adamw_defaults():
    opt = adamc.AdamW(np.zeros(3))
    g = opt.param_groups[0]
    assert g["weight_decay"] == 1e-2 and g["decoupled_weight_decay"] is True
    assert g["lr"] == 1e-3 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8
    assert adamc.Adam(np.zeros(3)).param_groups[0]["weight_decay"] == 0.0


def test_param_groups_have_their_own_hyperparameters():
    a, b = np.ones(4), np.ones(4)
    opt = adamc.Adam([{"params": [a]}, {"params": b, "lr": 0.5, "maximize": True}], lr=0.1)
    opt.step([np.ones(4), np.ones(4)])
    np.testing.assert_allclose(a, 0.9, rtol=1e-7)
    np.testing.assert_allclose(b, 1.5, rtol=1e-7)
    assert opt.param_groups[1]["eps"] == 1e-8  # filled from defaults


def test_changing_lr_takes_effect_next_step():
    x = np.zeros(2)
    opt = adamc.Adam(x, lr=0.1)
    opt.step(np.ones(2))
    opt.param_groups[0]["lr"] = 0.0
    before = x.copy()
    opt.step(np.ones(2))
    np.testing.assert_array_equal(x, before)
    opt.param_groups[0]["betas"] = [0.5, 0.9]  # a list is accepted and frozen to a tuple
    opt.param_groups[0]["lr"] = 0.1
    opt.step(np.ones(2))
    assert opt.param_groups[0]["betas"] == (0.5, 0.9)
    assert np.all(x < before)


def test_bad_value_set_in_group_is_caught_at_step_without_mutation():
    ps = params()
    opt = adamc.Adam(ps)
    opt.step(grads_like(ps, 1))
    snap = snapshot(opt, ps)
    opt.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['eps'\] must be a finite"):
        opt.step(grads_like(ps, 2))
    assert_unchanged(opt, ps, snap)
    del opt.param_groups[0]["eps"]
    with pytest.raises(ValueError, match=r"param_groups\[0\] has no 'eps'"):
        opt.step(grads_like(ps, 2))
    opt.param_groups[0]["eps"] = 1e-8
    opt.step(grads_like(ps, 2))
    assert opt.step_count == 2


def test_callable_lr_gets_the_one_based_step():
    seen = []
    x = np.zeros(3)
    opt = adamc.Adam(x, lr=lambda t: seen.append(t) or 0.1 / t)
    y, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for t in range(1, 6):
        opt.step(np.full(3, 1.0 + t))
        adamc.adam_step(y, np.full(3, 1.0 + t), m, v, step=t, lr=0.1 / t)
    assert seen == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(x, y)


def test_callable_lr_returning_bad_value_mutates_nothing():
    x = np.zeros(3)
    opt = adamc.Adam(x, lr=lambda t: -1.0 if t == 2 else 0.1)
    opt.step(np.ones(3))
    snap = snapshot(opt, [x])
    with pytest.raises(ValueError, match=r"'lr'\] returned a bad learning rate at step 2"):
        opt.step(np.ones(3))
    assert_unchanged(opt, [x], snap)


def test_state_dict_is_a_copy_and_roundtrips_bitwise():
    ps = params(dtype=np.float32)
    opt = adamc.Adam(ps, lr=0.01, amsgrad=True)
    for t in range(1, 6):
        opt.step(grads_like(ps, t))
    sd = opt.state_dict()
    assert sd["step_count"] == 5 and sd["state"][0]["step"] == 5
    assert set(sd["state"][1]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["param_groups"][0]["params"] == [0, 1]
    saved_params = [p.copy() for p in ps]
    for t in range(6, 11):
        opt.step(grads_like(ps, t))
    assert not np.array_equal(sd["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    expected = [p.copy() for p in ps]

    qs = [p.copy() for p in saved_params]
    other = adamc.Adam(qs, lr=0.5)  # hyperparameters come from the state dict
    other.load_state_dict(sd)
    assert other.step_count == 5 and other.param_groups[0]["lr"] == 0.01
    assert other.param_groups[0]["params"][0] is qs[0]
    for t in range(6, 11):
        other.step(grads_like(qs, t))
    for p, q in zip(expected, qs):
        np.testing.assert_array_equal(bits(p), bits(q))
    sd["state"][0]["exp_avg"][:] = 123  # the loaded copy is independent
    assert not np.any(other.state_dict()["state"][0]["exp_avg"] == 123)


def test_load_state_dict_into_optimizer_without_amsgrad_state():
    ps = params()
    src = adamc.Adam(ps, amsgrad=True)
    src.step(grads_like(ps, 1))
    dst = adamc.Adam([p.copy() for p in ps])
    dst.load_state_dict(src.state_dict())
    assert dst.param_groups[0]["amsgrad"] is True
    np.testing.assert_array_equal(dst.state_dict()["state"][0]["max_exp_avg_sq"],
                                  src.state_dict()["state"][0]["max_exp_avg_sq"])


def bad_state_dicts():
    ps = params()
    opt = adamc.Adam(ps)
    opt.step(grads_like(ps, 1))
    good = opt.state_dict()

    def edit(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    return [
        ("not a dict", [1, 2], ValueError, "must be a dict"),
        ("groups", edit(lambda s: s["param_groups"].append(dict(s["param_groups"][0]))),
         ValueError, "2 param groups"),
        ("params", edit(lambda s: s["param_groups"][0]["params"].pop()), ValueError,
         "does not have 2 parameters"),
        ("missing state", edit(lambda s: s["state"].pop(1)), ValueError, "no state for parameter 1"),
        ("missing key", edit(lambda s: s["state"][0].pop("exp_avg_sq")), ValueError,
         "has no 'exp_avg_sq'"),
        ("shape", edit(lambda s: s["state"][1].update(exp_avg=np.zeros((4, 3)))), ValueError,
         r"shape \(4, 3\)"),
        ("dtype", edit(lambda s: s["state"][0].update(exp_avg=np.zeros(5, np.float32))),
         TypeError, "dtype float32"),
        ("not array", edit(lambda s: s["state"][0].update(exp_avg=[0.0] * 5)), TypeError,
         "must be an ndarray"),
        ("step", edit(lambda s: s["state"][0].update(step=-1)), ValueError, "'step' must be"),
        ("hyper", edit(lambda s: s["param_groups"][0].update(lr=-2.0)), ValueError,
         r"param_groups\[0\]\['lr'\]"),
    ]


@pytest.mark.parametrize("name,sd,exc,msg", bad_state_dicts(), ids=lambda x: x if isinstance(x, str) else "")
def test_load_state_dict_rejects_mismatch_without_change(name, sd, exc, msg):
    ps = params(seed=9)
    opt = adamc.Adam(ps, lr=0.3)
    for t in range(3):
        opt.step(grads_like(ps, t))
    snap = snapshot(opt, ps)
    with pytest.raises(exc, match=msg):
        opt.load_state_dict(sd)
    assert_unchanged(opt, ps, snap)
    assert opt.param_groups[0]["lr"] == 0.3


# every state array of every algorithm, allocated (the flags that need them set)
STATE_CASES = [(cls, kw, st.name, st.kind)
               for cls, kw in [(adamc.Adam, dict(amsgrad=True)), (adamc.Adamax, {}),
                               (adamc.NAdam, {}), (adamc.RAdam, {}),
                               (adamc.SGD, dict(momentum=0.9)),
                               (adamc.RMSprop, dict(momentum=0.5, centered=True)),
                               (adamc.Lion, {}), (adamc.Prodigy, {}),
                               (adamc.AdamWScheduleFree, {}), (adamc.SGDScheduleFree, {}),
                               (adamc.Adagrad, {}), (adamc.Adadelta, {}), (adamc.Rprop, {})]
               for st in cls._spec.states]


@pytest.mark.parametrize("cls,kw,key,kind", STATE_CASES,
                         ids=[f"{c.__name__}-{k}" for c, _, k, _ in STATE_CASES])
def test_load_state_dict_refuses_values_no_run_can_reach(cls, kw, key, kind):
    """A negative or NaN second moment, a non-finite moment, buffer or copy of the
    parameters: refused before anything changes (the next step would make NaN)."""
    assert kind in adamc.algorithms.STATE_KINDS
    ps = params(seed=3)
    opt = cls(ps, **kw)
    for t in range(2):
        opt.step(grads_like(ps, t))
    snap = snapshot(opt, ps)
    bad_values = ([-1.0, np.nan, -np.inf] if kind == "second_moment" else
                  [0.0, -1.0, np.nan, np.inf] if kind == "step_size" else [np.nan, np.inf, -np.inf])
    for value in bad_values:
        sd = copy.deepcopy(opt.state_dict())
        sd["state"][1][key][2, 1] = value
        with pytest.raises(ValueError, match=rf"state\[1\]\['{key}'\] holds {value} at index "
                                             rf"\(2, 1\)"):
            opt.load_state_dict(sd)
        assert_unchanged(opt, ps, snap)
    opt.step(grads_like(ps, 5))
    assert all(np.isfinite(p).all() for p in ps)


def test_overflowed_second_moment_round_trips():
    """+inf is what a finite gradient whose square overflows leaves in a second moment
    (the element then stops moving): a state holding it loads and steps on."""
    x = np.zeros(3, np.float32)
    opt = adamc.Adam(x, lr=0.1)
    opt.step(np.array([1e20, 1.0, -2.0], np.float32))
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg_sq"][0] == np.inf
    y = x.copy()
    twin = adamc.Adam(y, lr=0.1)
    twin.load_state_dict(sd)
    for t in range(3):
        g = np.array([1.0, 2.0, 3.0 + t], np.float32)
        opt.step(g)
        twin.step(g)
    np.testing.assert_array_equal(bits(x), bits(y))
    assert np.isfinite(y).all()


def test_load_state_dict_refuses_state_that_disagrees_with_its_step_count():
    ps = params()
    opt = adamc.Adam(ps)
    snap = snapshot(opt, ps)
    busy = adamc.Adam([p.copy() for p in ps])
    busy.step(grads_like(ps, 1))
    sd = busy.state_dict()
    for st in sd["state"].values():
        st["step"] = 0  # moments of one step, saved as if none was taken
    sd["step_count"] = 0
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] holds .* at index 0, but "
                                         r"the step count of its parameter is 0"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, ps, snap)
    sd = busy.state_dict()
    sd["step_count"] = 0  # fewer steps in all than the group took
    with pytest.raises(ValueError, match=r"group 0 has taken 1 steps, more than step_count "
                                         r"\(0\)"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, ps, snap)


def test_copies_of_the_parameters_may_be_set_before_the_first_step():
    """eval() at step 0 keeps the parameters in y: a state a run reaches, so it loads."""
    x = np.arange(4.0)
    opt = adamc.SGDScheduleFree(x)
    opt.eval()
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 0 and sd["state"][0]["y"].any()
    y = np.zeros(4)
    twin = adamc.SGDScheduleFree(y)
    twin.load_state_dict(sd)
    twin.train()
    np.testing.assert_array_equal(y, np.arange(4.0))


def test_reset_restarts_from_zero_state():
    ps = params()
    start = [p.copy() for p in ps]
    opt = adamc.Adam(ps, lr=0.05)
    for t in range(1, 4):
        opt.step(grads_like(ps, t))
    first_run = [p.copy() for p in ps]
    for p, s in zip(ps, start):
        p[...] = s
    opt.reset()
    assert opt.step_count == 0
    assert all(np.all(v == 0) for st in opt.state_dict()["state"].values()
               for k, v in st.items() if k != "step")
    for t in range(1, 4):
        opt.step(grads_like(ps, t))
    for p, q in zip(ps, first_run):
        np.testing.assert_array_equal(p, q)


def test_add_param_group_starts_its_own_step_count():
    a, b = np.zeros(3), np.zeros(3)
    opt = adamc.Adam([a], lr=0.1)
    for _ in range(5):
        opt.step([np.ones(3)])
    opt.add_param_group({"params": [b], "lr": 0.2})
    opt.step([np.ones(3), np.ones(3)])
    # b's first update is bias-corrected as step 1: lr * g / (|g| + eps)
    np.testing.assert_allclose(b, -0.2, rtol=1e-7)
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 6 and sd["state"][1]["step"] == 1
    assert opt.step_count == 6
    with pytest.raises(ValueError, match="same array"):
        opt.add_param_group({"params": [a]})


def test_float32_and_float64_params_in_one_optimizer():
    a, b = np.ones(5, np.float32), np.ones(5, np.float64)
    opt = adamc.Adam([a, b], lr=0.1)
    opt.step([np.ones(5, np.float32), np.ones(5)])
    np.testing.assert_allclose(a, 0.9, rtol=1e-6)
    np.testing.assert_allclose(b, 0.9, rtol=1e-7)


def test_repr_lists_groups():
    text = repr(adamc.Adam([np.zeros((2, 3))], lr=0.1))
    assert "Adam (" in text and "lr: 0.1" in text and "(2, 3)" in text


# ----------------------------------------------------------------------------------
# Bad input at construction

BAD_CONSTRUCTION = [
    (lambda: adamc.Adam([]), ValueError, "empty parameter list"),
    (lambda: adamc.Adam("x"), TypeError, "params must be"),
    (lambda: adamc.Adam([np.zeros(3), {"params": np.zeros(2)}]), TypeError, "mixes"),
    (lambda: adamc.Adam([{"lr": 0.1}]), ValueError, "no 'params'"),
    (lambda: adamc.Adam([[1.0, 2.0]]), TypeError, r"params\[0\] must be a numpy.ndarray"),
    (lambda: adamc.Adam(np.zeros(3, np.int32)), TypeError, "dtype int32"),
    (lambda: adamc.Adam(np.zeros((4, 4))[:, 0]), ValueError, "not C-contiguous"),
    (lambda: adamc.Adam(np.zeros(3), lr=-1), ValueError, "lr must be a finite number >= 0"),
    (lambda: adamc.Adam(np.zeros(3), betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in"),
    (lambda: adamc.Adam(np.zeros(3), betas=0.9), ValueError, "betas must be a pair"),
    (lambda: adamc.Adam(np.zeros(3), betas={0: 0.9, 1: 0.99}), ValueError, "betas must be a pair"),
    (lambda: adamc.Adam(np.zeros(3), betas={"a": 0.9, "b": 0.99}), ValueError,
     "betas must be a pair"),
    (lambda: adamc.Adam(np.zeros(3), betas={0.9, 0.99}), ValueError, "betas must be a pair"),
    (lambda: adamc.Adam(np.zeros(3), eps=float("nan")), ValueError, "eps must be"),
    (lambda: adamc.Adam(np.zeros(3), weight_decay=-0.1), ValueError, "weight_decay must be"),
    (lambda: adamc.Adam(np.zeros(3), amsgrad=None), TypeError, "amsgrad must be a bool"),
    (lambda: adamc.Adam([{"params": np.zeros(3), "lr": -1.0}]), ValueError,
     r"param_groups\[0\]\['lr'\]"),
]


@pytest.mark.parametrize("make,exc,msg", BAD_CONSTRUCTION, ids=[b[2] for b in BAD_CONSTRUCTION])
def test_bad_construction(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_shared_memory_between_params_rejected():
    buf = np.zeros(10)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        adamc.Adam([buf[:6], buf[4:]])
    a = np.zeros(3)
    with pytest.raises(ValueError, match="same array"):
        adamc.Adam([a, a])
    adamc.Adam([buf[:5], buf[5:]])  # disjoint views are fine


# ----------------------------------------------------------------------------------
# Bad input at step: precise exception, nothing mutated

def bad_steps(ps, opt):
    g = grads_like(ps, 1)
    return [
        ("not list", {"a": 1}, TypeError, "grads must be an ndarray or a list"),
        ("single for many", g[0], ValueError, "single array but the optimizer has 2"),
        ("length", g[:1], ValueError, "grads has 1 arrays but the optimizer has 2"),
        ("dtype", [g[0].astype(np.float32), g[1]], TypeError,
         r"grads\[0\] has dtype float32 but params\[0\] has dtype float64"),
        ("shape", [g[0], g[1].T.copy()], ValueError, r"grads\[1\] has shape \(4, 3\)"),
        ("noncontig", [g[0], np.asfortranarray(g[1])], ValueError, "not C-contiguous"),
        ("list", [g[0].tolist(), g[1]], TypeError, "must be a numpy.ndarray"),
        ("alias param", [ps[0], g[1]], ValueError, r"grads\[0\] shares memory with params\[0\]"),
        ("int", [g[0].astype(int), g[1]], TypeError, "dtype int64"),
        ("closure", lambda: 1.0, TypeError, r"step\(\) takes the gradients, not a closure"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_grads_rejected_without_mutation(case):
    ps = params()
    opt = adamc.Adam(ps, lr=0.1)
    opt.step(grads_like(ps, 0))
    name, grads, exc, msg = bad_steps(ps, opt)[case]
    snap = snapshot(opt, ps)
    with pytest.raises(exc, match=msg):
        opt.step(grads)
    assert_unchanged(opt, ps, snap)


def test_param_changed_behind_the_optimizer():
    ps = params()
    opt = adamc.Adam(ps)
    ps[0].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        opt.step(grads_like(ps, 1))
    ps[0].flags.writeable = True
    opt.param_groups[0]["params"][1] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\] was modified"):
        opt.step(grads_like(ps, 1))


def test_amsgrad_switched_on_later_is_refused():
    x = np.zeros(3)
    opt = adamc.Adam(x)
    opt.param_groups[0]["amsgrad"] = True
    with pytest.raises(ValueError, match="create the optimizer with this amsgrad setting"):
        opt.step(np.ones(3))
    assert np.all(x == 0) and opt.step_count == 0


# ----------------------------------------------------------------------------------
# The whole family

FAMILY = [
    (adamc.Adam, dict(amsgrad=True), dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)),
    (adamc.AdamW, {}, dict(lr=1e-3, weight_decay=1e-2)),
    (adamc.Adamax, dict(weight_decay=0.01), dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8)),
    (adamc.NAdam, dict(decoupled_weight_decay=True, weight_decay=0.01),
     dict(lr=2e-3, momentum_decay=4e-3, decoupled_weight_decay=False)),
    (adamc.RAdam, {}, dict(lr=1e-3, decoupled_weight_decay=False)),
    (adamc.SGD, dict(momentum=0.9, nesterov=True), dict(lr=1e-3, momentum=0.0, dampening=0.0,
                                                        nesterov=False)),
    (adamc.RMSprop, dict(momentum=0.5, centered=True), dict(lr=1e-2, alpha=0.99, eps=1e-8,
                                                             momentum=0.0, centered=False)),
    (adamc.Lion, dict(weight_decay=0.1), dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)),
    (adamc.Prodigy, dict(weight_decay=0.1, decouple=False),
     dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0, decouple=True,
          use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0,
          growth_rate=float("inf"))),
    (adamc.AdamWScheduleFree, dict(warmup_steps=2),
     dict(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0,
          weight_lr_power=2.0)),
    (adamc.SGDScheduleFree, dict(weight_decay=0.1),
     dict(lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, r=0.0,
          weight_lr_power=2.0)),
    (adamc.Adagrad, dict(lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01),
     dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)),
    (adamc.Adadelta, dict(rho=0.8, weight_decay=0.01),
     dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0)),
    (adamc.Rprop, dict(etas=(0.4, 1.3), step_sizes=(1e-5, 1.0)),
     dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0))),
]
FAMILY_IDS = [f[0].__name__ for f in FAMILY]


@pytest.mark.parametrize("cls,kw,defaults", FAMILY, ids=FAMILY_IDS)
def test_defaults_follow_torch(cls, kw, defaults):
    group = cls(np.zeros(2)).param_groups[0]
    for key, value in defaults.items():
        assert group[key] == value, key
    assert group["maximize"] is False


@pytest.mark.parametrize("cls,kw,defaults", FAMILY, ids=FAMILY_IDS)
def test_state_dict_roundtrip_continues_bitwise(cls, kw, defaults):
    ps = params(dtype=np.float32)
    opt = cls(ps, **kw)
    for t in range(1, 4):
        opt.step(grads_like(ps, t))
    sd = copy.deepcopy(opt.state_dict())
    qs = [p.copy() for p in ps]
    for t in range(4, 8):
        opt.step(grads_like(ps, t))
    other = cls(qs, **kw)
    other.load_state_dict(sd)
    for t in range(4, 8):
        other.step(grads_like(qs, t))
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(bits(p), bits(q))
    # and reset() restarts exactly like a fresh optimizer
    fresh_params = params(dtype=np.float32)
    for p, q in zip(ps, fresh_params):
        p[...] = q
    opt.reset()
    fresh = cls(fresh_params, **kw)
    for t in range(1, 4):
        opt.step(grads_like(ps, t))
        fresh.step(grads_like(fresh_params, t))
    for p, q in zip(ps, fresh_params):
        np.testing.assert_array_equal(bits(p), bits(q))


def test_nadam_and_sgd_scalar_state_in_state_dict():
    x = np.zeros(3)
    nadam = adamc.NAdam(x)
    assert nadam.state_dict()["state"][0]["mu_product"] == 1.0
    nadam.step(np.ones(3))
    assert nadam.state_dict()["state"][0]["mu_product"] == pytest.approx(
        0.9 * (1 - 0.5 * 0.96 ** 4e-3), rel=1e-15)
    sgd = adamc.SGD(np.zeros(3), momentum=0.9)
    assert sgd.state_dict()["state"][0]["momentum_buffer"] is None  # torch: not yet used
    sgd.step(np.full(3, 2.0))
    np.testing.assert_array_equal(sgd.state_dict()["state"][0]["momentum_buffer"], 2.0)
    assert "momentum_buffer" not in adamc.SGD(np.zeros(3)).state_dict()["state"][0]


@pytest.mark.parametrize("cls,flag,value", [(adamc.SGD, "momentum", 0.9),
                                            (adamc.RMSprop, "momentum", 0.5),
                                            (adamc.RMSprop, "centered", True)])
def test_state_hungry_flag_switched_on_later_is_refused(cls, flag, value):
    x = np.zeros(3)
    opt = cls(x)
    opt.param_groups[0][flag] = value
    with pytest.raises(ValueError, match=rf"\['{flag}'\] needs the"):
        opt.step(np.ones(3))
    assert np.all(x == 0) and opt.step_count == 0


def test_sgd_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="Nesterov momentum requires momentum > 0"):
        adamc.SGD(np.zeros(2), nesterov=True)
    opt = adamc.SGD(np.zeros(2), momentum=0.9, nesterov=True)
    opt.param_groups[0]["dampening"] = 0.5
    with pytest.raises(ValueError, match=r"param_groups\[0\]: Nesterov"):
        opt.step(np.ones(2))


# ----------------------------------------------------------------------------------
# Gradient clipping

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_grad_norm_matches_numpy(dtype):
    ps = params(dtype=dtype)
    qs = [p.copy() for p in ps]
    opt = adamc.SGD(ps, lr=0.1, max_grad_norm=0.5)
    ref = adamc.SGD(qs, lr=0.1)
    for t in range(1, 6):
        gs = [g * 10 for g in grads_like(ps, t)]
        scale = _reference.clip_grad_norm_scale(gs, 0.5)
        assert scale < 1
        opt.step(gs)
        ref.step([(g * dtype(scale)).astype(dtype) for g in gs])
        for p, q in zip(ps, qs):
            np.testing.assert_allclose(p, q, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_small_gradients_are_not_scaled_up():
    a, b = np.zeros(4), np.zeros(4)
    adamc.SGD(a, lr=1.0, max_grad_norm=10.0).step(np.full(4, 0.5))
    adamc.SGD(b, lr=1.0).step(np.full(4, 0.5))
    np.testing.assert_array_equal(a, b)


def test_clip_value_is_exact_and_applies_before_the_norm():
    rng = np.random.default_rng(3)
    g = rng.standard_normal(1000) * 3
    a, b = np.zeros(1000), np.zeros(1000)
    adamc.SGD(a, lr=1.0, clip_value=1.0).step(g)
    adamc.SGD(b, lr=1.0).step(np.clip(g, -1.0, 1.0))
    np.testing.assert_array_equal(a, b)
    c = np.zeros(1000)
    adamc.SGD(c, lr=1.0, clip_value=1.0, max_grad_norm=2.0).step(g)
    scale = _reference.clip_grad_norm_scale([g], 2.0, clip_value=1.0)
    np.testing.assert_allclose(c, -np.clip(g, -1, 1) * scale, rtol=1e-14)
    assert np.linalg.norm(c) == pytest.approx(2.0, rel=1e-6)


def test_global_norm_is_deterministic_across_threads_and_levels():
    from conftest import LEVELS, THREADS, kernel_config
    rng = np.random.default_rng(4)
    shapes = [(300_001,), (70_000,), (5,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) * 5 for s in shapes]
    results = []
    for level in LEVELS:
        for threads in THREADS:
            with kernel_config(level, threads):
                ps = [p.copy() for p in start]
                adamc.Adam(ps, lr=0.1, max_grad_norm=1.0).step(grads)
            results.append(ps)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(bits(a), bits(b))


def test_clipping_options_are_validated_and_settable():
    for kw, msg in [(dict(max_grad_norm=0.0), "max_grad_norm must be > 0"),
                    (dict(max_grad_norm=-1.0), "max_grad_norm must be a finite"),
                    (dict(clip_value=-1.0), "clip_value must be a finite"),
                    (dict(clip_value="1"), "clip_value must be a real number"),
                    (dict(nonfinite="ignore"), "nonfinite must be one of")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            adamc.Adam(np.zeros(2), **kw)
    opt = adamc.Adam(np.zeros(2))
    assert opt.max_grad_norm is None and opt.clip_value is None
    opt.max_grad_norm, opt.clip_value = 2.0, 0.5
    assert opt.state_dict()["options"] == {"max_grad_norm": 2.0, "clip_value": 0.5,
                                           "nonfinite": "propagate"}
    other = adamc.Adam(np.zeros(2))
    other.load_state_dict(opt.state_dict())
    assert other.max_grad_norm == 2.0 and other.clip_value == 0.5


# ----------------------------------------------------------------------------------
# Non-finite gradients

def test_nonfinite_propagate_is_torch_behaviour():
    x = np.zeros(3)
    adamc.SGD(x, lr=1.0).step(np.array([np.nan, 1.0, np.inf]))
    assert np.isnan(x[0]) and x[1] == -1.0 and x[2] == -np.inf


def test_nonfinite_raise_names_the_array_and_index_and_mutates_nothing():
    ps = params()
    opt = adamc.Adam(ps, nonfinite="raise")
    opt.step(grads_like(ps, 0))
    snap = snapshot(opt, ps)
    gs = grads_like(ps, 1)
    gs[1][2, 3] = np.inf
    with pytest.raises(FloatingPointError, match=r"grads\[1\] holds inf at index \(2, 3\)"):
        opt.step(gs)
    assert_unchanged(opt, ps, snap)


def test_nonfinite_skip_counts_and_mutates_nothing():
    ps = params()
    opt = adamc.Adam(ps, nonfinite="skip")
    opt.step(grads_like(ps, 0))
    snap = snapshot(opt, ps)
    gs = grads_like(ps, 1)
    gs[0][4] = np.nan
    opt.step(gs)
    assert opt.skipped_steps == 1 and opt.step_count == 1
    assert_unchanged(opt, ps, snap)
    opt.step(grads_like(ps, 2))
    assert opt.step_count == 2 and opt.skipped_steps == 1
    assert opt.state_dict()["skipped_steps"] == 1
    opt.reset()
    assert opt.skipped_steps == 0


# ----------------------------------------------------------------------------------
# Errors a newcomer will hit say how to fix them

@pytest.mark.parametrize("make,exc,fix", [
    (lambda: adamc.Adam([1.0, 2.0]), TypeError, r"x = np.array\(\[...\], dtype=np.float64\)"),
    (lambda: adamc.Adam(np.arange(3)), TypeError, r"astype\(np.float64\)"),
    (lambda: adamc.Adam(np.zeros((3, 3))[:, 1]), ValueError, "np.ascontiguousarray"),
    (lambda: adamc.Adam(np.zeros(3)).step([1.0, 2.0, 3.0]), TypeError,
     r"np.asarray\(grad, dtype=param.dtype\)"),
    (lambda: adamc.Adam(np.zeros(3)).step(np.ones(3, np.float32)), TypeError,
     r"grad.astype\(np.float64\)"),
    (lambda: adamc.Adam(np.zeros(4)).step(np.ones(8)[::2]), ValueError,
     r"np.ascontiguousarray\(grad\)"),
    (lambda: adamc.minimize(lambda x: (float(x @ x), 2 * x), np.ones(2)), ValueError,
     "pass jac=True"),
    # torch's opt.step(closure): adamc takes the gradient, and the message shows how
    (lambda: adamc.Adam(np.zeros(3)).step(lambda: 0.0), TypeError,
     r"compute the loss and gradient yourself .*opt.step\(grad\)"),
])
def test_newcomer_errors_say_how_to_fix_them(make, exc, fix):
    with pytest.raises(exc, match=fix):
        make()


def test_load_state_dict_checks_every_counter_before_committing():
    ps = params()
    opt = adamc.Adam(ps, lr=0.3)
    opt.step(grads_like(ps, 1))
    snap = snapshot(opt, ps)
    other = adamc.Adam([p.copy() for p in ps], lr=0.5)
    other.step(grads_like(ps, 2))
    for edit in (lambda sd: sd["state"][1].update(step=2**64),
                 lambda sd: sd.update(step_count=2**63),
                 lambda sd: sd.update(skipped_steps=-1)):
        sd = copy.deepcopy(other.state_dict())
        for st in sd["state"].values():
            st["exp_avg"][...] = 7
        edit(sd)
        with pytest.raises(ValueError, match=r"must be an int in \[0, 2\*\*62\]"):
            opt.load_state_dict(sd)
        assert_unchanged(opt, ps, snap)
        assert opt.param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("when", ["fresh", "after reset"])
def test_sgd_state_dict_before_the_first_momentum_step_round_trips(when):
    x = np.zeros(3)
    opt = adamc.SGD(x, lr=0.1, momentum=0.9)
    if when == "after reset":
        opt.step(np.ones(3))
        opt.reset()
    sd = opt.state_dict()
    assert sd["state"][0]["momentum_buffer"] is None
    y = np.zeros(3)
    twin = adamc.SGD(y, lr=0.1, momentum=0.9)
    twin.step(np.full(3, 5.0))  # a started buffer, to be replaced by the unstarted one
    y[...] = x
    twin.load_state_dict(sd)
    for t in range(3):
        opt.step(np.full(3, 1.0 + t))
        twin.step(np.full(3, 1.0 + t))
    np.testing.assert_array_equal(x, y)


def test_gradient_aliasing_another_parameter_or_its_state_is_refused():
    a, b = np.ones(4), np.ones(4)
    opt = adamc.SGD([a, b], lr=1.0, momentum=0.5)
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with params\[0\]"):
        opt.step([np.ones(4), a])
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[1\]"):
        opt.step([b, np.ones(4)])
    buf = opt._state_arrays[1][0]
    with pytest.raises(ValueError, match=r"the momentum_buffer state of params\[1\]"):
        opt.step([buf, np.ones(4)])
    assert np.all(a == 1) and np.all(b == 1) and opt.step_count == 0
