"""The types of the algorithm table, and the one list of hyperparameter names.

Each algorithm's row (an :class:`Algorithm`) lives in its own module of
:mod:`adamc.algorithms`, next to its optimizer class, its stateless step and its NumPy
twin; :mod:`adamc.algorithms` collects the rows into ``ALGORITHMS``. The row gives the
C kernel's name (``ADAMC_ALGORITHMS`` in ``src_c/adamc.h``), the per-parameter state
arrays, the hyperparameters with their defaults, the per-group scalar state, the
public classes and the SciPy methods. The class and step signatures are written out
in the module and checked against the row when the module is imported.

:data:`HYPERPARAMETERS` holds the one checker and the one description of each
hyperparameter name, shared by every algorithm; the compiled field lists
(``adamc_hyper``) are checked against it by tests/test_algorithms.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import _kernels
from .._core.validation import (check_betas, check_count_value, check_etas, check_flag,
                           check_growth_rate, check_lr, check_nonnegative, check_optional_beta,
                           check_positive, check_step_sizes, check_unit)

__all__ = ["Hyperparameter", "HYPERPARAMETERS", "SHARED_OPTION_DOCS", "State", "STATE_KINDS",
           "PublicClass", "Method", "Algorithm", "check_aux", "aux_to_state",
           "aux_from_state"]


@dataclass(frozen=True)
class Hyperparameter:
    """What a hyperparameter name means, for every algorithm that has it.

    ``kind`` is the compiled check of the stateless steps ("lr", "beta", "nonneg",
    "unit", "flag", "positive", "optional_beta", "growth"; ``betas`` is split into two
    "beta" arguments there, Rprop's ``etas`` into "etaminus" and "etaplus",
    ``step_sizes`` into two "positive" ``step_size_min`` and ``step_size_max``); it must
    accept and refuse what ``check`` does, with the
    same messages (tests/test_functional.py compares them)."""

    check: Callable[[Any, str], Any]
    kind: str
    annotation: str
    doc: str


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "lr": Hyperparameter(check_lr, "lr", "float | Callable[[int], float]",
                         "Learning rate, or a schedule ``step -> lr`` (1-based update number)."),
    "betas": Hyperparameter(check_betas, "betas", "tuple[float, float]",
                            "Decay rates of the moment estimates."),
    "eps": Hyperparameter(check_nonnegative, "nonneg", "float", "Term of the denominator."),
    "weight_decay": Hyperparameter(check_nonnegative, "nonneg", "float",
                                   "Weight decay coefficient."),
    "momentum_decay": Hyperparameter(check_nonnegative, "nonneg", "float",
                                     "Momentum schedule constant psi."),
    "momentum": Hyperparameter(check_unit, "unit", "float", "Momentum factor."),
    "dampening": Hyperparameter(check_unit, "unit", "float", "Dampening of the momentum."),
    "alpha": Hyperparameter(check_unit, "unit", "float",
                            "Smoothing constant of the squared-gradient average."),
    "amsgrad": Hyperparameter(check_flag, "flag", "bool",
                              "Use the maximum of past second moments."),
    "maximize": Hyperparameter(check_flag, "flag", "bool",
                               "Maximize instead (the result's ``fun`` is still the objective)."),
    "decoupled_weight_decay": Hyperparameter(
        check_flag, "flag", "bool", "Decay x directly instead of adding an L2 gradient term."),
    "nesterov": Hyperparameter(check_flag, "flag", "bool", "Nesterov momentum."),
    "centered": Hyperparameter(check_flag, "flag", "bool",
                               "Normalize by the estimated variance of the gradient."),
    "beta3": Hyperparameter(check_optional_beta, "optional_beta", "float | None",
                            "Decay of Prodigy's sums (None: sqrt(beta2))."),
    "d0": Hyperparameter(check_positive, "positive", "float",
                         "Initial estimate of the distance to the solution."),
    "d_coef": Hyperparameter(check_positive, "positive", "float",
                             "Factor of the estimate of the distance."),
    "growth_rate": Hyperparameter(check_growth_rate, "growth", "float",
                                  "Largest factor by which the estimate grows per step."),
    "decouple": Hyperparameter(check_flag, "flag", "bool",
                               "Decoupled (AdamW-style) weight decay."),
    "use_bias_correction": Hyperparameter(check_flag, "flag", "bool",
                                          "Adam's bias correction of the step size."),
    "safeguard_warmup": Hyperparameter(check_flag, "flag", "bool",
                                       "Leave lr out of the denominator's sum."),
    "warmup_steps": Hyperparameter(check_count_value, "nonneg", "int",
                                   "Steps of linear learning-rate warm-up."),
    "r": Hyperparameter(check_nonnegative, "nonneg", "float",
                        "Power of the polynomial weighting of the average."),
    "weight_lr_power": Hyperparameter(check_nonnegative, "nonneg", "float",
                                      "Power of the largest lr in the averaging weights."),
    "lr_decay": Hyperparameter(check_nonnegative, "nonneg", "float",
                               "Learning-rate decay: lr / (1 + (step - 1) * lr_decay)."),
    "initial_accumulator_value": Hyperparameter(
        check_nonnegative, "nonneg", "float", "Initial value of the sum of squared gradients."),
    "rho": Hyperparameter(check_unit, "unit", "float",
                          "Decay rate of the running averages of g**2 and of the updates."),
    "etas": Hyperparameter(check_etas, "etas", "tuple[float, float]",
                           "Step-size factors (etaminus, etaplus), 0 < etaminus < 1 < etaplus."),
    "step_sizes": Hyperparameter(check_step_sizes, "step_sizes", "tuple[float, float]",
                                 "Smallest and largest step sizes (step_size_min, step_size_max)."),
}

# Options every optimizer takes (keyword-only), described once for the SciPy methods.
SHARED_OPTION_DOCS = {
    "max_grad_norm": "Clip the L2 norm of the gradient to this value.",
    "clip_value": "Clamp gradient elements to [-clip_value, clip_value].",
    "ema": ("Keep a weight average of the iterates, returned as the result's x_ema: a "
            "decay in (0, 1) (exponential) or 'uniform' (running mean)."),
    "ema_start": "The iteration from which the average is kept.",
}


@dataclass(frozen=True)
class State:
    """A per-parameter state array, in kernel order.

    ``requires``: the hyperparameter that needs it (the array is allocated only when
    it is true; None: always). ``needs``: how the stateless step's messages name that
    condition. ``positional``: a positional argument of the stateless step (else
    keyword-only, default None). ``unstarted``: may be None in a state_dict (torch
    keeps a buffer None until its first use). ``kind``: what values a run can leave
    in it, checked when a state is loaded (see :data:`STATE_KINDS`)."""

    name: str
    requires: str | None = None
    needs: str = ""
    positional: bool = True
    unstarted: bool = False
    kind: str = "accumulated"


#: The values a state array can hold after any run with finite gradients, by kind.
#: "accumulated": finite, and zero while its parameter has taken no step (a moment, a
#: momentum buffer, Prodigy's s: sums of gradients). "second_moment": the same but
#: >= 0 instead of finite: +inf is reachable (the square of a finite gradient above
#: about 1e19 in float32, 1e154 in float64, overflows; that element then stops
#: moving, and stays finite), NaN and negative values are not. "params": finite, a
#: copy of the parameters that may be set before the first step completes (p0, the
#: schedule-free z and y). "step_size": finite and > 0 once its parameter has taken a
#: step, zero before (Rprop's step sizes, clamped to [step_size_min, step_size_max]).
STATE_KINDS = ("accumulated", "second_moment", "params", "step_size")


@dataclass(frozen=True)
class PublicClass:
    """An optimizer class of :mod:`adamc.optim` built on an algorithm.

    ``base``: the public class it derives from (None: ``Optimizer``); ``defaults``:
    hyperparameter defaults that differ from the algorithm's; ``fixed``:
    hyperparameters the class sets (left out of its signature)."""

    name: str
    base: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A SciPy method ``minimize_<name>``: a public class and the options it fixes."""

    name: str
    cls: str
    title: str
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Algorithm:
    """One row of the table (see the module docstring).

    ``hyper``: (name, default) pairs in signature order; the names in
    ``keyword_only`` follow the ``*`` of the class signature. ``aux``: the name of
    the per-group scalar state when it is visible to users ("mu_product": NAdam's
    product of momentum coefficients, a stateless-step argument and a state_dict
    entry; "buffer_started": SGD's flag that the momentum buffer holds a value).
    ``cross_check``: a check over several hyperparameters, ``(hyper, where) -> None``.
    ``reference``: the name of the float64 twin in :mod:`adamc._reference`.
    ``scalars``: optimizer-wide scalar state (Prodigy: its distance estimate), kept by
    the compiled engine named by ``engine`` (a class of :mod:`adamc._kernels`), an
    argument of the stateless step and, as in the reference implementation, mirrored
    into every param group; the stateless step returns its new values. ``stateless``:
    whether the row has a stateless step (schedule-free methods do not: their averaging
    weights are per-group state of the class)."""

    name: str
    hyper: tuple[tuple[str, Any], ...]
    keyword_only: tuple[str, ...]
    states: tuple[State, ...]
    classes: tuple[PublicClass, ...]
    methods: tuple[Method, ...]
    aux: str | None = None
    cross_check: Callable[[dict[str, Any], str], None] | None = None
    scalars: tuple[tuple[str, Any], ...] = ()
    engine: str | None = None
    stateless: bool = True

    @property
    def c_id(self) -> int:
        """The kernel's enum value (``ADAMC_<NAME>`` in src_c/adamc.h)."""
        return _kernels.ALGORITHMS[self.name]

    @property
    def step_name(self) -> str:
        return f"{self.name}_step"

    @property
    def reference(self) -> str:
        return self.name

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.hyper)

    @property
    def aux_initial(self) -> float:
        return _kernels.aux_initial(self.c_id)


# ----------------------------------------------------------------------------------
# Per-group scalar state that users see (NAdam, SGD)

def check_aux(algorithm: Algorithm, value: Any, name: str) -> float:
    """Validated per-group scalar state of ``algorithm``."""
    if algorithm.aux == "mu_product":
        return check_unit(value, name)  # a product of factors in [0, 1]
    if algorithm.aux == "buffer_started":
        if value not in (0.0, 1.0):
            raise ValueError(f"{name} must be 0 or 1 (momentum buffer started), got {value!r}")
        return float(value)
    if value != algorithm.aux_initial:
        raise ValueError(f"{name} must be {algorithm.aux_initial}, got {value!r}")
    return float(value)


def aux_to_state(algorithm: Algorithm, aux: float, state: dict[str, Any]) -> dict[str, Any]:
    """Per-parameter state_dict entries that carry the group's scalar state (torch's
    layout)."""
    if algorithm.aux == "mu_product":
        return {"mu_product": aux}
    if algorithm.aux == "buffer_started" and "momentum_buffer" in state and aux == 0:
        return {"momentum_buffer": None}  # torch: None until the first momentum step
    return {}


def aux_from_state(algorithm: Algorithm, state: dict[str, Any], sid: Any) -> float:
    """Inverse of :func:`aux_to_state`, with checks."""
    if algorithm.aux == "mu_product":
        value = state.get("mu_product")
        if value is None:
            raise ValueError(f"state of parameter {sid} has no 'mu_product'")
        return check_aux(algorithm, value, f"state[{sid}]['mu_product']")
    if algorithm.aux == "buffer_started":
        return 1.0 if isinstance(state.get("momentum_buffer"), np.ndarray) else 0.0
    return algorithm.aux_initial
