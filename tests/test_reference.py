"""The NumPy reference itself, against hand-computed values (it is the oracle of the
kernel tests, so it must not simply restate them)."""
import math

import numpy as np
import pytest

from adamc import _reference


def approx(x):
    return pytest.approx(x, rel=1e-14)


def test_two_adam_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    p, m, v = 1.0, 0.0, 0.0
    for t, g in ((1, 0.5), (2, -2.0)):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * mhat / (math.sqrt(vhat) + eps)
    out = dict(param=np.array([1.0]), exp_avg=np.zeros(1), exp_avg_sq=np.zeros(1))
    for t, g in ((1, 0.5), (2, -2.0)):
        out = _reference.adam(out["param"], np.array([g]), out["exp_avg"], out["exp_avg_sq"],
                              step=t, lr=lr)
    assert out["param"][0] == approx(p)
    assert out["exp_avg"][0] == approx(m)


def test_weight_decay_forms_and_maximize():
    p, g = np.array([2.0]), np.array([0.0])
    z = np.zeros(1)
    coupled = _reference.adam(p, g, z, z, step=1, lr=0.1, weight_decay=0.5)
    # coupled: the gradient becomes 0.5 * 2 = 1, so the first step is -lr
    assert coupled["param"][0] == approx(1.9 + 0.1 * 1e-8 / (1 + 1e-8))
    decoupled = _reference.adam(p, g, z, z, step=1, lr=0.1, weight_decay=0.5,
                                decoupled_weight_decay=True)
    assert decoupled["param"][0] == approx(2 * (1 - 0.05))
    up = _reference.adam(p, np.array([1.0]), z, z, step=1, lr=0.1, maximize=True)
    assert up["param"][0] > 2.0


def test_amsgrad_uses_the_running_maximum():
    out = _reference.adam(np.zeros(2), np.array([1.0, 1.0]), np.zeros(2), np.zeros(2), step=3,
                          amsgrad=True, max_exp_avg_sq=np.array([5.0, 0.0]))
    np.testing.assert_allclose(out["max_exp_avg_sq"], [5.0, 0.001], rtol=1e-12)


def test_inputs_are_not_modified():
    arrays = [np.ones(3) for _ in range(4)]
    _reference.adam(*arrays, step=1, lower=np.zeros(3), upper=np.ones(3))
    assert all(np.all(a == 1) for a in arrays)
