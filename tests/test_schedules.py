"""adamc.schedules against their formulas, inside optimizers and minimize."""
import math
import pickle

import numpy as np
import pytest

import adamc
from adamc import schedules
from optim_db import DB


@pytest.mark.parametrize("sched,formula", [
    (schedules.constant(0.3), lambda t: 0.3),
    (schedules.step_decay(1.0, step_size=3, gamma=0.5), lambda t: 0.5 ** ((t - 1) // 3)),
    (schedules.exponential_decay(2.0, gamma=0.9), lambda t: 2.0 * 0.9 ** (t - 1)),
    (schedules.cosine_decay(1.0, total_steps=20),
     lambda t: 0.5 * (1 + math.cos(math.pi * min(1.0, t / 20)))),
    (schedules.cosine_decay(1.0, total_steps=20, min_lr=0.1, warmup_steps=5),
     lambda t: t / 5 if t <= 5 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - 5) / 15)))),
    (schedules.inverse_sqrt(1.0), lambda t: 1 / math.sqrt(t)),
    (schedules.inverse_sqrt(1.0, warmup_steps=4), lambda t: t / 4 if t <= 4 else math.sqrt(4 / t)),
], ids=["constant", "step", "exponential", "cosine", "cosine-warmup", "isqrt", "isqrt-warmup"])
def test_schedule_matches_formula(sched, formula):
    for t in range(1, 40):
        assert sched(t) == pytest.approx(formula(t), rel=1e-14, abs=1e-300), t
    assert isinstance(sched, schedules.Schedule)


def test_cosine_endpoints():
    s = schedules.cosine_decay(1.0, total_steps=10, min_lr=0.25, warmup_steps=2)
    assert s(1) == 0.5 and s(2) == 1.0 and s(10) == 0.25 and s(1000) == 0.25


@pytest.mark.parametrize("make,msg", [
    (lambda: schedules.constant(-1), "lr must be"),
    (lambda: schedules.step_decay(1.0, step_size=0), "step_size must be >= 1"),
    (lambda: schedules.step_decay(1.0, step_size=2, gamma=-0.5), "gamma must be"),
    (lambda: schedules.exponential_decay(1.0, gamma=float("nan")), "gamma must be"),
    (lambda: schedules.cosine_decay(1.0, total_steps=10, warmup_steps=10), "warmup_steps must be"),
    (lambda: schedules.cosine_decay(1.0, total_steps=0), "total_steps must be >= 1"),
    (lambda: schedules.cosine_decay(1.0, total_steps=5, min_lr=-1), "min_lr must be"),
    (lambda: schedules.inverse_sqrt(1.0, warmup_steps=-1), "warmup_steps must be"),
])
def test_bad_schedule_parameters(make, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        make()


def test_schedule_rejects_bad_step():
    with pytest.raises(ValueError, match="step must be >= 1"):
        schedules.constant(1.0)(0)


# every algorithm's class (tests/optim_db.py)
CLASSES = [getattr(adamc, row.cls) for row in DB.values()]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_optimizer_follows_a_schedule(cls):
    """A scheduled run equals a run whose group lr is set by hand before each step."""
    sched = schedules.cosine_decay(0.05, total_steps=8, warmup_steps=2)
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(5) for _ in range(10)]
    a, b = np.ones(5), np.ones(5)
    oa, ob = cls(a, lr=sched), cls(b, lr=0.05)
    for t, g in enumerate(grads, 1):
        oa.step(g)
        ob.param_groups[0]["lr"] = sched(t)
        ob.step(g)
    np.testing.assert_array_equal(a, b)


def test_schedule_is_per_group_and_counts_group_steps():
    a, b = np.zeros(1), np.zeros(1)
    opt = adamc.SGD([{"params": [a], "lr": schedules.exponential_decay(1.0, 0.5)}], lr=0.1)
    opt.step([np.ones(1)])
    opt.add_param_group({"params": [b], "lr": schedules.exponential_decay(1.0, 0.5)})
    opt.step([np.ones(1), np.ones(1)])
    assert a[0] == -1.5 and b[0] == -1.0  # b's schedule starts at its own step 1


def test_schedules_pickle():
    s = schedules.cosine_decay(0.1, total_steps=50, min_lr=0.01, warmup_steps=5)
    r = pickle.loads(pickle.dumps(s))
    assert [r(t) for t in range(1, 60)] == [s(t) for t in range(1, 60)]
    assert "cosine_decay" in repr(s)


def test_minimize_accepts_a_schedule():
    res = adamc.minimize(lambda x: (float(x @ x), 2 * x), np.ones(2), jac=True,
                         options=dict(lr=schedules.step_decay(0.1, 100, 0.5), maxiter=50))
    assert res.nit == 50


def test_compiled_schedule_runs_without_a_python_call():
    """step() calls a Python schedule through the interpreter, a compiled one not at
    all (the profiler sees every Python-level call)."""
    import sys

    def python_calls(lr):
        calls = []

        def profile(frame, event, arg):
            if event == "call":
                calls.append(frame.f_code.co_name)

        opt = adamc.Adam(np.zeros(10), lr=lr)
        g = np.ones(10)
        opt.step(g)  # the first step validates the hyperparameters in Python
        sys.setprofile(profile)
        try:
            opt.step(g)
            opt.step(g)
        finally:
            sys.setprofile(None)
        return calls

    def my_schedule(t):
        return 0.1 / math.sqrt(t)

    assert python_calls(my_schedule).count("my_schedule") == 2
    assert python_calls(schedules.inverse_sqrt(0.1)) == []


def test_python_subclass_of_schedule_is_called():
    class Half(schedules.Schedule):
        def __call__(self, step):
            return 0.5

    x = np.zeros(2)
    adamc.SGD(x, lr=Half()).step(np.ones(2))
    np.testing.assert_array_equal(x, [-0.5, -0.5])


def test_compiled_schedule_that_overflows_is_refused_at_the_step():
    x = np.zeros(2)
    opt = adamc.SGD(x, lr=schedules.exponential_decay(1.0, 1e200))  # 1, 1e200, inf, ...
    opt.step(np.ones(2))
    opt.step(np.zeros(2))
    before = x.copy()
    with pytest.raises(ValueError, match="is not finite at step 3"):
        opt.step(np.ones(2))
    np.testing.assert_array_equal(x, before)
    assert opt.step_count == 2


# ----------------------------------------------------------------------------------
# get_last_lr(): the rate in use, per group (torch's LRScheduler.get_last_lr())

def test_get_last_lr_is_the_rate_each_step_used():
    """SGD without momentum moves by exactly lr * g: the reported rate must be the one
    that moved the parameters, per group, before and after every step."""
    a, b = np.zeros(1), np.zeros(1)
    sched = schedules.step_decay(0.1, step_size=2, gamma=0.5)
    opt = adamc.SGD([{"params": [a], "lr": sched}, {"params": [b]}], lr=0.01)
    assert opt.get_last_lr() == [0.1, 0.01]  # before any step: what step 1 will use
    for t in range(1, 8):
        a0, b0 = a[0], b[0]
        opt.step([np.ones(1), np.ones(1)])
        last = opt.get_last_lr()
        assert isinstance(last, list) and all(type(v) is float for v in last)
        assert last == [sched(t), 0.01]
        assert a0 - a[0] == pytest.approx(last[0], rel=1e-12)
        assert b0 - b[0] == pytest.approx(last[1], rel=1e-12)
    opt.param_groups[1]["lr"] = 0.02  # a changed number shows once a step has used it
    assert opt.get_last_lr()[1] == 0.01
    opt.step([np.ones(1), np.ones(1)])
    assert opt.get_last_lr() == [sched(8), 0.02]


def test_get_last_lr_records_python_callables_without_calling_them_again():
    calls = []

    def lr(t):
        calls.append(t)
        return 0.1 / t

    x = np.zeros(2)
    opt = adamc.Adam(x, lr=lr)
    assert opt.get_last_lr() == [0.1] and calls == [1]  # nothing recorded yet: lr(1)
    for _ in range(3):
        opt.step(np.ones(2))
    calls.clear()
    assert opt.get_last_lr() == [0.1 / 3] and calls == []


def test_get_last_lr_after_skip_reset_load_and_new_groups():
    sched = schedules.exponential_decay(1.0, 0.5)
    a, b = np.zeros(1), np.zeros(1)
    opt = adamc.Adam(a, lr=sched, nonfinite="skip")
    opt.step(np.ones(1))
    opt.step(np.ones(1))
    opt.step(np.full(1, np.nan))  # skipped: the last completed step is still step 2
    assert opt.skipped_steps == 1 and opt.get_last_lr() == [0.5]
    other = adamc.Adam(np.zeros(1), lr=sched)
    other.load_state_dict(opt.state_dict())  # nothing recorded: the schedule at step 2
    assert other.get_last_lr() == [0.5]
    opt.add_param_group({"params": [b], "lr": 0.3})
    assert opt.get_last_lr() == [0.5, 0.3]
    opt.step([np.ones(1), np.ones(1)])
    assert opt.get_last_lr() == [0.25, 0.3]
    opt.reset()
    assert opt.get_last_lr() == [1.0, 0.3]


def test_get_last_lr_reports_a_bad_group_like_step():
    opt = adamc.Adam(np.zeros(1), lr=lambda t: -1.0)
    with pytest.raises(ValueError, match="bad learning rate at step 1"):
        opt.get_last_lr()
    opt = adamc.Adam(np.zeros(1))
    opt.param_groups.append({"params": []})
    with pytest.raises(ValueError, match="param_groups was resized"):
        opt.get_last_lr()


def test_disp_table_prints_the_rate_each_step_used(capsys):
    calls = []

    def lr(t):  # a different value at every call: only the recorded one is right
        calls.append((t, 0.1 / t + 1e-3 * len(calls)))
        return calls[-1][1]

    adamc.minimize(lambda x: (float(x @ x), 2 * x), np.ones(2), jac=True,
                   options=dict(lr=lr, disp=True, disp_every=5, maxiter=20, gtol=0))
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 5, 10, 15, 20]
    # row 0 comes before any step: lr(1) is asked once for it; then one call per step
    assert [t for t, _ in calls] == [1] + list(range(1, 21))
    assert float(rows[0][3]) == pytest.approx(calls[0][1], rel=1e-3)
    used = dict(calls[1:])
    for r in rows[1:]:  # row k: the rate step k used
        assert float(r[3]) == pytest.approx(used[int(r[0])], rel=1e-3)


# ----------------------------------------------------------------------------------
# reduce_on_plateau: torch's ReduceLROnPlateau, as a schedule

PLATEAU_OPTIONS = [
    dict(),
    dict(mode="max"),
    dict(factor=0.5, patience=2),
    dict(threshold=0.05, threshold_mode="abs"),
    dict(mode="max", threshold=0.1, threshold_mode="abs", patience=1),
    dict(mode="max", threshold=0.2, patience=0),
    dict(cooldown=3, patience=1, factor=0.3),
    dict(min_lr=0.02, patience=0, factor=0.5),
    dict(eps=0.04, patience=0, factor=0.5),  # (one reduction, then none: eps)
    dict(threshold=0.0, patience=4, factor=0.7, cooldown=2, min_lr=1e-4),
]


def plateau_losses():
    """A recorded loss sequence: descents, plateaus, noise, a negative stretch, a NaN."""
    rng = np.random.default_rng(3)
    seq = list(np.linspace(5, 1, 12)) + [1.0] * 15 + list(1 + 0.01 * rng.standard_normal(20))
    seq += list(np.linspace(1, -2, 10)) + [-2.0] * 8 + [float("nan")] + [-2.5] * 12
    return seq + list(rng.uniform(-3, 3, 40))


@pytest.mark.parametrize("options", PLATEAU_OPTIONS, ids=lambda o: ",".join(
    f"{k}={v}" for k, v in o.items()) or "defaults")
def test_reduce_on_plateau_matches_torch(options):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
    mine = schedules.reduce_on_plateau(0.1, **options)
    for t, loss in enumerate(plateau_losses(), 1):
        ref.step(loss)
        mine.step(loss)
        assert mine.lr == opt.param_groups[0]["lr"], (t, loss)
        assert mine(t) == mine.lr and mine.get_last_lr() == [mine.lr]
        assert (mine.num_bad_epochs, mine.cooldown_counter, mine.last_epoch) == \
            (ref.num_bad_epochs, ref.cooldown_counter, ref.last_epoch)
        assert mine.best == ref.best or (math.isinf(mine.best) and math.isinf(ref.best))
    assert mine.lr < 0.1  # (the sequence reduces the rate under every option set)


def test_reduce_on_plateau_state_travels():
    s = schedules.reduce_on_plateau(0.1, factor=0.5, patience=2, cooldown=1)
    for loss in [3, 2, 2, 2, 2, 2, 1.5]:
        s.step(loss)
    state = s.state_dict()
    assert state["lr"] == 0.05 and state["best"] == 1.5
    for copied in (pickle.loads(pickle.dumps(s)), __import__("copy").deepcopy(s)):
        assert copied.state_dict() == state and repr(copied) == repr(s)
    other = schedules.reduce_on_plateau(0.1, factor=0.5, patience=2, cooldown=1)
    other.load_state_dict(state)
    for loss in [1.5, 1.5, 1.5, 1.5, 1.5]:
        s.step(loss)
        other.step(loss)
        assert other.state_dict() == s.state_dict()
    with pytest.raises(ValueError, match="keys"):
        other.load_state_dict({"lr": 0.1})
    with pytest.raises(ValueError, match="lr"):
        other.load_state_dict(dict(state, lr=-1.0))
    with pytest.raises(TypeError, match="metrics"):
        s.step("low")


@pytest.mark.parametrize("make,msg", [
    (lambda: schedules.reduce_on_plateau(0.1, factor=1.0), "factor must be < 1"),
    (lambda: schedules.reduce_on_plateau(0.1, factor=-0.5), "factor must be"),
    (lambda: schedules.reduce_on_plateau(0.1, mode="lowest"), "mode must be"),
    (lambda: schedules.reduce_on_plateau(0.1, threshold_mode="pct"), "threshold_mode"),
    (lambda: schedules.reduce_on_plateau(0.1, patience=-1), "patience must be"),
    (lambda: schedules.reduce_on_plateau(0.1, patience=2.5), "patience must be an int"),
    (lambda: schedules.reduce_on_plateau(0.1, cooldown=True), "cooldown must be an int"),
    (lambda: schedules.reduce_on_plateau(-0.1), "lr must be"),
    (lambda: schedules.reduce_on_plateau(0.1, min_lr=float("nan")), "min_lr must be"),
])
def test_reduce_on_plateau_bad_options(make, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        make()


def test_an_optimizer_follows_a_plateau_schedule_stepped_by_hand():
    """With an optimizer object, sched.step(loss) as in torch; every step uses sched.lr
    (the same bits as setting the group's lr by hand)."""
    sched = schedules.reduce_on_plateau(0.1, factor=0.5, patience=1)
    a, b = np.ones(4), np.ones(4)
    oa, ob = adamc.Adam(a, lr=sched), adamc.Adam(b, lr=0.1)
    for loss in [4, 3, 3, 3, 3, 2, 2, 2]:
        g = np.full(4, loss / 4.0)
        oa.step(g)
        ob.step(g)
        sched.step(loss)
        ob.param_groups[0]["lr"] = sched.lr
    assert sched.lr < 0.1
    np.testing.assert_array_equal(a, b)
    assert oa.get_last_lr() == ob.get_last_lr()


def test_a_checkpoint_keeps_the_plateau_state(tmp_path):
    sched = schedules.reduce_on_plateau(0.1, factor=0.5, patience=1, cooldown=2)
    x = np.ones(3)
    opt = adamc.Adam(x, lr=sched)
    for loss in [3, 2, 2, 2]:
        opt.step(np.full(3, 0.5))
        sched.step(loss)
    adamc.save(opt, tmp_path / "c.npz")
    y = np.empty(3)
    back = adamc.load(tmp_path / "c.npz", y)
    restored = back.param_groups[0]["lr"]
    assert restored is not sched and restored.state_dict() == sched.state_dict()
    for loss in [2, 2, 2, 1]:
        opt.step(np.full(3, 0.5))
        back.step(np.full(3, 0.5))
        sched.step(loss)
        restored.step(loss)
    np.testing.assert_array_equal(x, y)
    assert restored.state_dict() == sched.state_dict()


def test_cosine_decay_of_no_steps_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"^total_steps must be >= 1, got 0$"):
        schedules.cosine_decay(0.1, 0)
