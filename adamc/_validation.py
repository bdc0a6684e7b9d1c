"""Checks of hyperparameters, shared by the optimizer classes, the stateless steps and
the SciPy methods (array checks live in the compiled module, where they are cheap)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._kernels import Schedule, check_betas, check_flag, check_nonnegative


def is_schedule(value: Any) -> bool:
    """A learning rate given as a schedule or any callable ``step -> lr``."""
    return isinstance(value, Schedule) or (
        callable(value) and not isinstance(value, (np.ndarray, np.generic)))


def check_lr(value: Any, name: str) -> float | Callable:
    """A number >= 0, or a schedule (returned unchanged, checked at every step)."""
    return value if is_schedule(value) else check_nonnegative(value, name)


def check_unit(value: Any, name: str) -> float:
    """A number in [0, 1]."""
    x = check_nonnegative(value, name)
    if x > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return x


# One checker per hyperparameter name; every optimizer reads its keys from here.
CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "lr": check_lr,
    "betas": check_betas,
    "eps": check_nonnegative,
    "weight_decay": check_nonnegative,
    "momentum_decay": check_nonnegative,
    "momentum": check_unit,
    "dampening": check_unit,
    "alpha": check_unit,
    "amsgrad": check_flag,
    "maximize": check_flag,
    "decoupled_weight_decay": check_flag,
    "nesterov": check_flag,
    "centered": check_flag,
}


def check_nesterov(hyper: dict[str, Any], where: str = "") -> None:
    if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
        raise ValueError(f"{where}Nesterov momentum requires momentum > 0 and dampening = 0 "
                         f"(got momentum={hyper['momentum']}, dampening={hyper['dampening']})")
