"""The algorithm table: every algorithm of adamc defined in one place.

One :class:`Algorithm` row per kernel algorithm gives its name (the C kernel's, see
``ADAMC_ALGORITHMS`` in ``src_c/adamc.h``), its per-parameter state arrays, its
hyperparameters with their defaults, its per-group scalar state, the public classes,
the stateless step and the SciPy methods built on it, and their documentation.
Everything else is derived from the rows:

- the optimizer classes of :mod:`adamc.optim` (signatures, defaults, docstrings);
- the stateless ``*_step`` functions of :mod:`adamc.functional`;
- the ``minimize_<name>`` methods and ``adamc.minimize``'s method names;
- the type stubs ``adamc/optim.pyi``, ``adamc/functional.pyi`` and
  ``adamc/_methods.pyi`` (``python tools/gen_stubs.py``) and ``docs/api.md``;
- the parametrised tests (tests/test_algorithms.py).

The hyperparameter kinds (:data:`HYPERPARAMETERS`) hold the one checker and the one
description of each hyperparameter name, shared by every algorithm.

Adding an algorithm: its kernel (a line in ``ADAMC_ALGORITHMS``, its coefficients in
``adamc_coef``, its loop in ``adamc_algos.inc`` and its case in ``adamc_prepare``),
its row here, its twin in ``adamc/_reference.py``, then ``python tools/gen_stubs.py``
and ``python docs/gen_api.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _kernels
from ._validation import (check_betas, check_etas, check_flag, check_growth_rate, check_lr,
                          check_count_value, check_nesterov, check_nonnegative,
                          check_optional_beta, check_positive, check_positive_eps,
                          check_schedulefree_momentum, check_step_sizes, check_unit)

__all__ = ["Hyperparameter", "HYPERPARAMETERS", "State", "STATE_KINDS", "PublicClass",
           "Method", "Algorithm", "ALGORITHMS", "CLASSES", "METHODS"]


@dataclass(frozen=True)
class Hyperparameter:
    """What a hyperparameter name means, for every algorithm that has it.

    ``kind`` is the compiled check of the stateless steps ("lr", "beta", "nonneg",
    "unit", "flag", "positive", "optional_beta", "growth"; ``betas`` is split into two
    "beta" arguments there, Rprop's ``etas`` into "etaminus" and "etaplus",
    ``step_sizes`` into two "positive" ``step_size_min`` and ``step_size_max``); it must accept and refuse what ``check`` does, with the
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
    doc: str
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
    step_doc: str
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


# ----------------------------------------------------------------------------------
# The table

_BETAS = (0.9, 0.999)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in [
    Algorithm(
        "adam",
        hyper=(("lr", 1e-3), ("betas", _BETAS), ("eps", 1e-8), ("weight_decay", 0.0),
               ("amsgrad", False), ("maximize", False), ("decoupled_weight_decay", False)),
        keyword_only=("maximize", "decoupled_weight_decay"),
        states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment"),
                State("max_exp_avg_sq", requires="amsgrad", needs="amsgrad=True",
                      positional=False, kind="second_moment")),
        classes=(PublicClass("Adam", r"""Adam (Kingma & Ba, 2015) with torch.optim.Adam's defaults and semantics.

    Per step ``t`` and element, with ``g`` the gradient (negated when maximizing)::

        g  = g + weight_decay * p            (L2 term; AdamW decays p instead)
        m  = m + (1 - beta1) * (g - m)
        v  = beta2 * v + (1 - beta2) * g * g
        v' = max(v_max, v) if amsgrad else v
        p  = p - lr / (1 - beta1**t) * m / (sqrt(v') / sqrt(1 - beta2**t) + eps)

    computed as ``p - step_size * m / (sqrt(v') + eps_hat)`` with
    ``step_size = lr * sqrt(bc2) / bc1`` and ``eps_hat = eps * sqrt(bc2)`` (the same
    mathematics with one division fewer per element).

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Decay rates of the first and second moment estimates (default (0.9, 0.999)).
    eps : float, optional
        Term added to the denominator, outside the square root (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    amsgrad : bool, optional
        Use the maximum of past second moments (Reddi et al., 2018). Default False.
    maximize : bool, optional
        Maximize the objective (default False).
    decoupled_weight_decay : bool, optional
        Decay the parameters directly, as AdamW does (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adam(x, lr=0.1)
    >>> for _ in range(100):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> opt.step_count
    100
    """),
                 PublicClass("AdamW", r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as
    torch.optim.AdamW: ``p *= 1 - lr * weight_decay`` before the Adam update.

    Parameters
    ----------
    {params}
    betas, eps, amsgrad, maximize
        As for :class:`Adam`.
    weight_decay : float, optional
        Decoupled weight decay coefficient (default 1e-2).{shared}
    """, base="Adam",
                             defaults={"weight_decay": 1e-2},
                             fixed={"decoupled_weight_decay": True})),
        methods=(Method("adam", "Adam", "Adam"),
                 Method("adamw", "AdamW", "AdamW (decoupled weight decay)"),
                 Method("amsgrad", "Adam",
                        "AMSGrad (Adam with the maximum of past second moments)",
                        fixed={"amsgrad": True})),
        step_doc=r"""Apply one Adam (or AdamW) update in place.

    Parameters
    ----------
    param : ndarray
        Parameters, float32 or float64, C-contiguous and writeable; updated in place.
    grad : ndarray
        Gradient of the objective at ``param``, same dtype and shape.
    exp_avg, exp_avg_sq : ndarray
        First and second moment estimates (start from zeros); updated in place.
    step : int
        1-based number of this update (used for the bias corrections).
    lr : float, optional
        Learning rate, >= 0. Default 1e-3.
    beta1, beta2 : float, optional
        Decay rates of the moment estimates, in [0, 1). Defaults 0.9 and 0.999.
    eps : float, optional
        Added to the bias-corrected ``sqrt(v)`` (outside the square root, like
        torch). Default 1e-8.
    weight_decay : float, optional
        Weight decay coefficient, >= 0. Default 0.
    decoupled_weight_decay : bool, optional
        False: Adam's L2 term ``g += weight_decay * p``. True: AdamW's
        ``p *= 1 - lr * weight_decay`` before the update.
    amsgrad : bool, optional
        Use the running maximum of ``exp_avg_sq`` (kept in ``max_exp_avg_sq``).
    max_exp_avg_sq : ndarray, optional
        Running maximum of ``exp_avg_sq``; required when ``amsgrad`` is True.
    maximize : bool, optional
        Maximize the objective instead of minimizing it.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """,
    ),
    Algorithm(
        "adamax",
        hyper=(("lr", 2e-3), ("betas", _BETAS), ("eps", 1e-8), ("weight_decay", 0.0),
               ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("exp_avg"), State("exp_inf", kind="second_moment")),
        classes=(PublicClass("Adamax", r"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, section 7.1),
    as torch.optim.Adamax::

        g = g + weight_decay * p
        m = m + (1 - beta1) * (g - m)
        u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1**t) * m / u

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Decay rates of ``m`` and of the infinity norm ``u`` (default (0.9, 0.999)).
    eps : float, optional
        Added to ``|g|`` inside the maximum (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """),),
        methods=(Method("adamax", "Adamax", "Adamax"),),
        step_doc=r"""Apply one Adamax update in place (see :class:`adamc.Adamax`).

    ``exp_avg`` and ``exp_inf`` (the exponentially weighted infinity norm) start from
    zeros; other arguments as in :func:`adam_step`.
    """,
    ),
    Algorithm(
        "nadam",
        hyper=(("lr", 2e-3), ("betas", _BETAS), ("eps", 1e-8), ("weight_decay", 0.0),
               ("momentum_decay", 4e-3), ("decoupled_weight_decay", False),
               ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment")),
        classes=(PublicClass("NAdam", r"""NAdam, Adam with Nesterov momentum (Dozat, 2016), as torch.optim.NAdam::

        mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)),  P_t = mu_1 ... mu_t
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        d = sqrt(v / (1 - beta2**t)) + eps
        p = p - lr (1 - mu_t) / (1 - P_t) * g / d - lr mu_{t+1} / (1 - P_{t+1}) * m / d

    The running product ``P_t`` is kept in double precision per param group (torch
    keeps it in the default float dtype).

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Default (0.9, 0.999).
    eps : float, optional
        Default 1e-8.
    weight_decay : float, optional
        Default 0; coupled (L2) unless ``decoupled_weight_decay``.
    momentum_decay : float, optional
        psi of the momentum schedule (default 4e-3).
    decoupled_weight_decay : bool, optional
        Decay the parameters directly (NAdamW). Default False.
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """),),
        methods=(Method("nadam", "NAdam", "NAdam (Adam with Nesterov momentum)"),),
        step_doc=r"""Apply one NAdam update in place (see :class:`adamc.NAdam`).

    Parameters
    ----------
    mu_product : float, optional
        Product of the momentum coefficients of the previous steps (1.0 before the
        first step).
    momentum_decay : float, optional
        Default 4e-3.
    param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize
        As in :func:`adam_step` (``lr`` defaults to 2e-3).

    Returns
    -------
    float
        ``mu_product`` after this step: pass it to the next call.
    """,
        aux="mu_product",
    ),
    Algorithm(
        "radam",
        hyper=(("lr", 1e-3), ("betas", _BETAS), ("eps", 1e-8), ("weight_decay", 0.0),
               ("decoupled_weight_decay", False), ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment")),
        classes=(PublicClass("RAdam", r"""RAdam, Adam with a rectified adaptive learning rate (Liu et al., 2020), as
    torch.optim.RAdam::

        m, v as in Adam;  rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        if rho_t > 5:  r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                       p = p - lr * r * m / (1 - beta1**t) * sqrt(1 - beta2**t) / (sqrt(v) + eps)
        else:          p = p - lr * m / (1 - beta1**t)

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Default (0.9, 0.999).
    eps : float, optional
        Added to ``sqrt(v)`` (default 1e-8).
    weight_decay : float, optional
        Default 0; coupled (L2) unless ``decoupled_weight_decay``.
    decoupled_weight_decay : bool, optional
        Decay the parameters directly (RAdamW). Default False.
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """),),
        methods=(Method("radam", "RAdam", "RAdam (rectified Adam)"),),
        step_doc=r"""Apply one RAdam update in place (see :class:`adamc.RAdam`); arguments as in
    :func:`adam_step`.""",
    ),
    Algorithm(
        "sgd",
        hyper=(("lr", 1e-3), ("momentum", 0.0), ("dampening", 0.0), ("weight_decay", 0.0),
               ("nesterov", False), ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("momentum_buffer", requires="momentum", needs="momentum > 0",
                      unstarted=True),),
        classes=(PublicClass("SGD", r"""Stochastic gradient descent with optional (Nesterov) momentum, as
    torch.optim.SGD (Sutskever et al., 2013)::

        g = g + weight_decay * p
        b = g                                    (first step with momentum)
        b = momentum * b + (1 - dampening) * g   (later steps)
        g = g + momentum * b if nesterov else b  (with momentum)
        p = p - lr * g

    Parameters
    ----------
    {params}
    momentum : float, optional
        Momentum factor in [0, 1] (default 0: plain gradient descent).
    dampening : float, optional
        Dampening of the momentum, in [0, 1] (default 0).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    nesterov : bool, optional
        Nesterov momentum; needs momentum > 0 and dampening 0 (default False).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """),),
        methods=(Method("sgd", "SGD", "SGD (gradient descent with momentum)"),),
        step_doc=r"""Apply one SGD update in place (see :class:`adamc.SGD`).

    Parameters
    ----------
    momentum_buffer : ndarray, optional
        Required when ``momentum > 0``. At ``step == 1`` it is set to the gradient
        (torch's first step); later steps update it.
    step : int
        1-based number of this update.
    lr, momentum, dampening, weight_decay, nesterov, maximize
        As for :class:`adamc.SGD`.
    param, grad
        As in :func:`adam_step`.
    """,
        aux="buffer_started",
        cross_check=check_nesterov,
    ),
    Algorithm(
        "rmsprop",
        hyper=(("lr", 1e-2), ("alpha", 0.99), ("eps", 1e-8), ("weight_decay", 0.0),
               ("momentum", 0.0), ("centered", False), ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("square_avg", kind="second_moment"),
                State("momentum_buffer", requires="momentum", needs="momentum > 0",
                      positional=False),
                State("grad_avg", requires="centered", needs="centered=True",
                      positional=False)),
        classes=(PublicClass("RMSprop", r"""RMSprop (Hinton, lecture 6e), as torch.optim.RMSprop::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        a = a + (1 - alpha) * (g - a);  d = sqrt(v - a * a) + eps   (centered)
        d = sqrt(v) + eps                                           (otherwise)
        b = momentum * b + g / d;  p = p - lr * b                   (momentum > 0)
        p = p - lr * g / d                                          (otherwise)

    Parameters
    ----------
    {params}
    alpha : float, optional
        Smoothing constant in [0, 1] (default 0.99).
    eps : float, optional
        Added to the denominator (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    momentum : float, optional
        Momentum factor in [0, 1] (default 0).
    centered : bool, optional
        Normalize by an estimate of the variance of the gradient (default False).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """),),
        methods=(Method("rmsprop", "RMSprop", "RMSprop"),),
        step_doc=r"""Apply one RMSprop update in place (see :class:`adamc.RMSprop`).

    Parameters
    ----------
    square_avg : ndarray
        Running average of the squared gradient (start from zeros).
    momentum_buffer : ndarray, optional
        Required when ``momentum > 0`` (start from zeros).
    grad_avg : ndarray, optional
        Running average of the gradient; required when ``centered``.
    step : int
        1-based number of this update (RMSprop has no bias correction; it is
        checked for consistency with the other steps).
    lr, alpha, eps, weight_decay, momentum, centered, maximize
        As for :class:`adamc.RMSprop`.
    param, grad
        As in :func:`adam_step`.
    """,
    ),
    Algorithm(
        "lion",
        hyper=(("lr", 1e-4), ("betas", (0.9, 0.99)), ("weight_decay", 0.0),
               ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("exp_avg"),),
        classes=(PublicClass("Lion", r"""Lion, evolved sign momentum (Chen et al., 2023, "Symbolic Discovery of
    Optimization Algorithms"), as ``optax.lion`` and the ``lion-pytorch`` package::

        p = p * (1 - lr * weight_decay)         (decoupled weight decay)
        c = beta1 * m + (1 - beta1) * g
        p = p - lr * sign(c)                     (sign(0) = 0)
        m = beta2 * m + (1 - beta2) * g

    Every element moves by exactly ``lr`` (or not at all), so Lion wants a learning
    rate 3-10 times smaller than Adam's and a weight decay 3-10 times larger.

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        ``beta1`` interpolates the update direction, ``beta2`` decays the momentum
        (default (0.9, 0.99)).
    weight_decay : float, optional
        Decoupled weight decay coefficient (default 0).
    maximize : bool, optional
        Maximize the objective (default False).{shared}
    """),),
        methods=(Method("lion", "Lion", "Lion (evolved sign momentum)"),),
        step_doc=r"""Apply one Lion update in place (see :class:`adamc.Lion`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    exp_avg : ndarray
        Momentum (start from zeros); updated in place.
    step : int
        1-based number of this update (Lion has no bias correction; it is checked
        for consistency with the other steps).
    lr : float, optional
        Learning rate, >= 0. Default 1e-4.
    beta1, beta2 : float, optional
        In [0, 1). Defaults 0.9 and 0.99.
    weight_decay : float, optional
        Decoupled weight decay coefficient (``p *= 1 - lr * weight_decay``). Default 0.
    maximize : bool, optional
        Maximize the objective instead of minimizing it.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """,
    ),
    Algorithm(
        "prodigy",
        hyper=(("lr", 1.0), ("betas", _BETAS), ("beta3", None), ("eps", 1e-8),
               ("weight_decay", 0.0), ("decouple", True), ("use_bias_correction", False),
               ("safeguard_warmup", False), ("d0", 1e-6), ("d_coef", 1.0),
               ("growth_rate", float("inf")), ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("exp_avg"), State("exp_avg_sq", kind="second_moment"), State("s"),
                State("p0", kind="params")),
        classes=(PublicClass("Prodigy", r"""Prodigy, Adam with a learning rate that adapts itself (Mishchenko &
    Defazio, 2024, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"), with the
    semantics and defaults of the ``prodigyopt`` package 1.1.2. Leave ``lr`` at 1.

    The step size is ``d * lr``, where ``d`` estimates the distance from the starting
    point ``p0`` to the solution from two sums over every parameter (all groups)::

        dlr = d * lr   (times sqrt(1 - beta2**k) / (1 - beta1**k) with bias correction)
        m = beta1 m + d (1 - beta1) g;   v = beta2 v + d**2 (1 - beta2) g**2
        s = beta3 s + (d / d0) dlr g            ((d / d0) d with safeguard_warmup)
        r = beta3 r + (d / d0) dlr <g, p0 - p>
        d_hat = d_coef r / ||s||_1;  d_max = max(d_max, d_hat)
        d = min(d_max, d * growth_rate)
        p = p - dlr m / (sqrt(v) + d eps)       (beta1 = 0: dlr d g instead of dlr m)

    (``d`` first jumps to ``d_hat`` while it is still ``d0``; ``d_max`` is the largest
    ``d_hat`` so far). The sums are computed in double precision in a fixed order: the
    results are the same bits for every SIMD level and thread count. A step is two
    passes over memory: one that only reads (the sums), then the update of the
    moments, ``s`` and the parameters in one pass. The gradients are never modified
    (prodigyopt adds the coupled weight decay into them).

    The optimizer-wide state ``d``, ``d_max``, ``d_numerator`` and ``k`` (the steps
    that moved the parameters) is mirrored after every step into each param group,
    as prodigyopt keeps it: ``opt.param_groups[0]["d"] * lr`` is the step size in use.
    Changing these entries has no effect; state dicts and checkpoints carry them.

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        Decay rates of the moments (default (0.9, 0.999)); ``beta1 = 0`` steps along
        the gradient.
    beta3 : float or None, optional
        Decay of the sums ``s`` and ``r`` (default None: ``sqrt(beta2)``).
    eps : float, optional
        Added to ``sqrt(v)`` after scaling by ``d``; must be > 0 (default 1e-8).
    weight_decay : float, optional
        Weight decay (default 0): ``p *= 1 - weight_decay * dlr`` when ``decouple``,
        else the L2 term ``g + weight_decay * p``.
    decouple : bool, optional
        AdamW-style decoupled weight decay (default True).
    use_bias_correction : bool, optional
        Adam's bias correction of the step size (default False).
    safeguard_warmup : bool, optional
        Leave ``lr`` out of the sum ``s`` (default False).
    d0 : float, optional
        Initial estimate of ``d`` (default 1e-6).
    d_coef : float, optional
        Factor of the estimate (default 1); the preferred knob, 0.5 and 2 work too.
    growth_rate : float, optional
        Largest factor by which ``d`` grows per step (default inf: unlimited).
    maximize : bool, optional
        Maximize the objective (default False; not in prodigyopt).{shared}

    Notes
    -----
    As in prodigyopt, one estimate serves every param group: ``betas``, ``beta3``,
    ``d0``, ``d_coef``, ``growth_rate``, ``decouple``, ``use_bias_correction`` and
    ``safeguard_warmup`` must be the same in every group (a step refuses otherwise),
    and every group's ``lr`` must be the largest one or 0 (a group with lr 0 adds
    nothing to the sums and keeps its moments, but is still moved by ``d * lr`` of
    the others, as in prodigyopt). ``eps`` and ``weight_decay`` may differ. prodigyopt's
    ``slice_p`` and ``fsdp_in_use`` are not offered (see :mod:`adamc.distributed`
    for sharded parameters). When the sum of ``|s|`` is 0 (all gradients 0 so far),
    the step updates the moments and leaves the parameters and ``d`` unchanged, as
    prodigyopt's early return does.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Prodigy(x)
    >>> for _ in range(200):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> bool(abs(x[0] - 2) < 0.1)
    True
    """),),
        methods=(Method("prodigy", "Prodigy", "Prodigy (Adam with a self-tuning step size)"),),
        step_doc=r"""Apply one Prodigy update in place to one array (see :class:`adamc.Prodigy`).

    The sums of the estimate of ``d`` run over this array only; for several arrays
    sharing one estimate use :class:`adamc.Prodigy`.

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    exp_avg, exp_avg_sq, s : ndarray
        The moments and the sum of scaled gradients (start from zeros); updated in
        place.
    p0 : ndarray
        The parameters at the first step: set from ``param`` when ``step == 1``.
    step : int
        1-based number of this update (it sets ``p0`` at 1 and gives the bias
        correction).
    d, d_max, d_numerator : float, optional
        Prodigy's scalar state before this step (at the first step ``d0``, ``d0`` and
        0, the defaults): pass the values this function returned.
    lr, beta1, beta2, beta3, eps, weight_decay, decouple, use_bias_correction, safeguard_warmup, d0, d_coef, growth_rate, maximize
        As for :class:`adamc.Prodigy`.

    Returns
    -------
    (float, float, float)
        ``d``, ``d_max`` and ``d_numerator`` after this step.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """,
        cross_check=check_positive_eps,
        scalars=(("d", None), ("d_max", None), ("d_numerator", 0.0)),
        engine="_ProdigyEngine",
    ),
    Algorithm(
        "adamw_schedulefree",
        hyper=(("lr", 0.0025), ("betas", _BETAS), ("eps", 1e-8), ("weight_decay", 0.0),
               ("warmup_steps", 0), ("r", 0.0), ("weight_lr_power", 2.0),
               ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("z", kind="params"), State("exp_avg_sq", kind="second_moment"),
                State("y", kind="params")),
        classes=(PublicClass("AdamWScheduleFree", r"""Schedule-free AdamW (Defazio et al., 2024, "The Road Less Scheduled"), with
    the semantics and defaults of the ``schedulefree`` package 1.4.1: no learning-rate
    schedule is needed (a linear warm-up is ``warmup_steps``).

    While training, the parameters hold ``y``, where gradients are taken; ``z`` is
    the base sequence and ``x`` the weighted average of the ``z``, which is the point
    to evaluate and to keep. Per step ``k`` (0-based) and group::

        lr_k  = lr * min(1, (k + 1) / warmup_steps);   lr_max = max(lr_max, lr_k)
        w     = (k + 1)**r * lr_max**weight_lr_power;  W = W + w;  c = w / W
        v     = beta2 v + (1 - beta2) g g
        u     = g / (sqrt(v / (1 - beta2**(k+1))) + eps) + weight_decay * y
        y     = lerp(y, z, c) + lr_k (beta1 (1 - c) - 1) u
        z     = z - lr_k u

    Call :meth:`eval` before evaluating or saving the model (the parameters then
    hold ``x = lerp(y, z, 1 - 1/beta1)``) and :meth:`train` before the next step,
    which is refused in eval mode. Unlike the reference, ``train()`` restores ``y``
    exactly (``eval()`` keeps it in the state array ``y``, which costs one array per
    parameter), and your gradient arrays are never modified (the reference divides
    them in place). ``k``, ``weight_sum``, ``lr_max``, ``scheduled_lr`` and
    ``train_mode`` are mirrored into every param group, as the reference keeps them.

    Parameters
    ----------
    {params}
    betas : (float, float), optional
        ``beta1`` in (0, 1) interpolates between y and z, ``beta2`` decays the second
        moment (default (0.9, 0.999)).
    eps : float, optional
        Added to the bias-corrected ``sqrt(v)`` (default 1e-8).
    weight_decay : float, optional
        Added to the normalised gradient as ``weight_decay * y`` (default 0).
    warmup_steps : int, optional
        Steps of linear warm-up of the learning rate (default 0).
    r : float, optional
        Polynomial weighting of the average (default 0: uniform in the steps).
    weight_lr_power : float, optional
        Weights proportional to ``lr_max**weight_lr_power`` (default 2).
    maximize : bool, optional
        Maximize the objective (default False; not in the reference).{shared}
    """),),
        methods=(Method("adamw_schedulefree", "AdamWScheduleFree",
                        "schedule-free AdamW (returns the averaged point x)"),),
        step_doc="",
        stateless=False,
        cross_check=check_schedulefree_momentum,
        engine="_ScheduleFreeEngine",
    ),
    Algorithm(
        "sgd_schedulefree",
        hyper=(("lr", 1.0), ("momentum", 0.9), ("weight_decay", 0.0), ("warmup_steps", 0),
               ("r", 0.0), ("weight_lr_power", 2.0), ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("z", kind="params"), State("y", kind="params")),
        classes=(PublicClass("SGDScheduleFree", r"""Schedule-free SGD (Defazio et al., 2024), with the semantics and defaults of
    the ``schedulefree`` package 1.4.1: :class:`AdamWScheduleFree` without the second
    moment (``u = g + weight_decay * y``) and ``momentum`` in place of ``beta1``.

    Parameters
    ----------
    {params}
    momentum : float, optional
        In (0, 1): interpolation between y and z (default 0.9).
    weight_decay, warmup_steps, r, weight_lr_power, maximize
        As for :class:`AdamWScheduleFree`.{shared}
    """),),
        methods=(Method("sgd_schedulefree", "SGDScheduleFree",
                        "schedule-free SGD (returns the averaged point x)"),),
        step_doc="",
        stateless=False,
        cross_check=check_schedulefree_momentum,
        engine="_ScheduleFreeEngine",
    ),
    Algorithm(
        "adagrad",
        hyper=(("lr", 1e-2), ("lr_decay", 0.0), ("weight_decay", 0.0),
               ("initial_accumulator_value", 0.0), ("eps", 1e-10), ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("sum", kind="second_moment"),),
        classes=(PublicClass("Adagrad", r"""Adagrad (Duchi et al., 2011), with torch.optim.Adagrad's defaults and
    semantics. Per step ``t`` and element::

        g   = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s   = s + g * g                  (s starts at initial_accumulator_value)
        p   = p - clr * g / (sqrt(s) + eps)

    in torch's operation order. The state array ``sum`` (torch's name) holds ``s``;
    it is zero before the first step, which adds ``initial_accumulator_value`` (torch
    fills it in when the state is created: the values after every step are the same).

    Parameters
    ----------
    {params}
    lr_decay : float, optional
        Decay of the learning rate with the step number (default 0).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    initial_accumulator_value : float, optional
        Initial value of the sum of squared gradients, >= 0 (default 0). Each group
        uses its own value (torch uses the constructor's for every group).
    eps : float, optional
        Added to the denominator, outside the square root (default 1e-10).
    maximize : bool, optional
        Maximize the objective (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adagrad(x, lr=1.0)
    >>> for _ in range(100):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> bool(abs(x[0] - 2) < 0.1)
    True
    """),),
        methods=(Method("adagrad", "Adagrad", "Adagrad"),),
        step_doc=r"""Apply one Adagrad update in place (see :class:`adamc.Adagrad`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    sum : ndarray
        Sum of squared gradients (start from zeros: step 1 adds
        ``initial_accumulator_value``); updated in place.
    step : int
        1-based number of this update (it gives the learning-rate decay and marks
        the first step).
    lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
        As for :class:`adamc.Adagrad`.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """,
    ),
    Algorithm(
        "adadelta",
        hyper=(("lr", 1.0), ("rho", 0.9), ("eps", 1e-6), ("weight_decay", 0.0),
               ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("square_avg", kind="second_moment"),
                State("acc_delta", kind="second_moment")),
        classes=(PublicClass("Adadelta", r"""Adadelta (Zeiler, 2012), with torch.optim.Adadelta's defaults and
    semantics. Per step and element::

        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g * g                       (square_avg)
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d                       (acc_delta)
        p = p - lr * d

    in torch's operation order.

    Parameters
    ----------
    {params}
    rho : float, optional
        Decay rate of the running averages, in [0, 1] (default 0.9).
    eps : float, optional
        Added inside both square roots (default 1e-6).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    maximize : bool, optional
        Maximize the objective (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adadelta(x)
    >>> for _ in range(10):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> opt.step_count
    10
    """),),
        methods=(Method("adadelta", "Adadelta", "Adadelta"),),
        step_doc=r"""Apply one Adadelta update in place (see :class:`adamc.Adadelta`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    square_avg, acc_delta : ndarray
        Running averages of the squared gradients and of the squared updates (start
        from zeros); updated in place.
    step : int
        1-based number of this update (Adadelta has no bias correction; it is checked
        for consistency with the other steps).
    lr, rho, eps, weight_decay, maximize
        As for :class:`adamc.Adadelta`.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """,
    ),
    Algorithm(
        "rprop",
        hyper=(("lr", 1e-2), ("etas", (0.5, 1.2)), ("step_sizes", (1e-6, 50.0)),
               ("maximize", False)),
        keyword_only=("maximize",),
        states=(State("prev"), State("step_size", kind="step_size")),
        classes=(PublicClass("Rprop", r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), with
    torch.optim.Rprop's defaults and semantics. Every element has its own step size
    ``s``, which starts at ``lr``; per step, with ``c = g * prev``::

        s    = clamp(s * (etaplus if c > 0 else etaminus if c < 0 else 1),
                     step_size_min, step_size_max)
        g    = 0 where c < 0              (a sign change: no move, and no change next)
        p    = p - sign(g) * s
        prev = g

    Only the signs of the gradients matter: Rprop suits full-batch gradients. The
    state arrays ``prev`` and ``step_size`` (torch's names) are zero before the first
    step, which starts the step sizes at ``lr`` (torch fills them in when the state
    is created: the values after every step are the same); ``lr`` is not used after
    the first step.

    Parameters
    ----------
    {params}
    etas : (float, float), optional
        ``(etaminus, etaplus)``, the factors of the step size after a sign change and
        after the same sign, ``0 < etaminus < 1 < etaplus`` (default (0.5, 1.2)).
    step_sizes : (float, float), optional
        ``(step_size_min, step_size_max)``, the range of the step sizes,
        ``0 < step_size_min <= step_size_max`` (default (1e-6, 50)).
    maximize : bool, optional
        Maximize the objective (default False).{shared}

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Rprop(x, lr=0.1)
    >>> for _ in range(100):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> bool(abs(x[0] - 2) < 1e-3)
    True
    """),),
        methods=(Method("rprop", "Rprop", "Rprop (resilient backpropagation)"),),
        step_doc=r"""Apply one Rprop update in place (see :class:`adamc.Rprop`).

    Parameters
    ----------
    param, grad
        As in :func:`adam_step`.
    prev, step_size : ndarray
        The previous (masked) gradient and the per-element step sizes (start both
        from zeros: step 1 sets the step sizes from ``lr``); updated in place.
    step : int
        1-based number of this update (step 1 starts the step sizes at ``lr``).
    lr : float, optional
        Initial step size, >= 0 (used at step 1 only). Default 1e-2.
    etaminus, etaplus : float, optional
        Step-size factors, ``0 < etaminus < 1 < etaplus``. Defaults 0.5 and 1.2.
    step_size_min, step_size_max : float, optional
        Range of the step sizes, ``0 < step_size_min <= step_size_max``. Defaults
        1e-6 and 50.
    maximize : bool, optional
        Maximize the objective instead of minimizing it.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """,
    ),
]}

# Public classes and SciPy methods in table order.
CLASSES: dict[str, tuple[Algorithm, PublicClass]] = {
    c.name: (a, c) for a in ALGORITHMS.values() for c in a.classes}
METHODS: dict[str, tuple[Algorithm, Method]] = {
    m.name: (a, m) for a in ALGORITHMS.values() for m in a.methods}
