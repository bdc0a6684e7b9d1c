"""Checks of hyperparameters, shared by the optimizer classes, the stateless steps and
the SciPy methods (array checks live in the compiled module, where they are cheap)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._kernels import (Schedule, check_beta, check_betas, check_clip_value, check_etas,
                       check_flag, check_growth_rate, check_max_grad_norm, check_nonnegative,
                       check_positive, check_step_sizes)


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


def check_optional_beta(value: Any, name: str) -> float | None:
    """None (a default derived from other hyperparameters) or a number in [0, 1)."""
    return None if value is None else check_beta(value, name)


def check_count_value(value: Any, name: str) -> int:
    """An int >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def check_schedulefree_momentum(hyper: dict[str, Any], where: str = "") -> None:
    """eval() moves the parameters by 1 - 1/momentum towards z: the momentum (beta1)
    must be in (0, 1) (the schedulefree package refuses 0 for SGD)."""
    key = "betas" if "betas" in hyper else "momentum"
    mom = hyper["betas"][0] if key == "betas" else hyper["momentum"]
    if not 0 < mom < 1:
        name = "betas[0]" if key == "betas" else "momentum"
        raise ValueError(f"{where}{name} must be in (0, 1) for a schedule-free optimizer "
                         f"(eval() divides by it), got {mom!r}")


def check_positive_eps(hyper: dict[str, Any], where: str = "") -> None:
    """Prodigy divides by d * eps where the second moment is 0 (prodigyopt refuses eps
    <= 0 too)."""
    if not hyper["eps"] > 0:
        raise ValueError(f"{where}eps must be > 0 for Prodigy, got {hyper['eps']!r}")


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
    "beta3": check_optional_beta,
    "d0": check_positive,
    "d_coef": check_positive,
    "growth_rate": check_growth_rate,
    "decouple": check_flag,
    "use_bias_correction": check_flag,
    "safeguard_warmup": check_flag,
    "warmup_steps": check_count_value,
    "r": check_nonnegative,
    "weight_lr_power": check_nonnegative,
    "lr_decay": check_nonnegative,
    "initial_accumulator_value": check_nonnegative,
    "rho": check_unit,
    "etas": check_etas,
    "step_sizes": check_step_sizes,
}


def check_nesterov(hyper: dict[str, Any], where: str = "") -> None:
    if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
        raise ValueError(f"{where}Nesterov momentum requires momentum > 0 and dampening = 0 "
                         f"(got momentum={hyper['momentum']}, dampening={hyper['dampening']})")


# The options every optimizer class takes besides its hyperparameters (keyword-only),
# by the value the engine stores: 0.0 and infinity for None (off).
SHARED_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "max_grad_norm": check_max_grad_norm,
    "clip_value": check_clip_value,
}


def check_hyperparameters(values: dict[str, Any], keys: Any,
                          checks: dict[str, Callable[[Any, str], Any]],
                          cross_check: Callable[[dict[str, Any], str], None] | None = None,
                          where: str = "") -> dict[str, Any]:
    """The hyperparameters ``keys`` of ``values`` as an optimizer's constructor checks
    its defaults (adamc.optim's Optimizer._group_hyper): each through its check of
    ``checks`` (the table's, adamc.algorithms.HYPERPARAMETERS), named by its key,
    then the checks over several of them (the table's cross_check). Returns the
    checked values (an lr schedule unchanged)."""
    hyper = {k: checks[k](values[k], k) for k in keys}
    if cross_check is not None:
        cross_check(hyper, where)
    return hyper
