"""Stateless steps: one in-place update of one array, with the state passed in.

Like ``torch.optim``'s functional forms (or ``torch._fused_adam_``) for NumPy: the
caller owns the state arrays (start them from zeros) and passes ``step``, the 1-based
number of this update. Every argument is checked before anything is modified; the
formulas are those of the optimizer classes in :mod:`adamc.optim`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _kernels
from ._kernels import check_beta
from ._validation import CHECKS, check_nesterov

__all__ = ["adam_step", "adamax_step", "nadam_step", "radam_step", "sgd_step",
           "rmsprop_step"]


def _arrays(param: Any, grad: Any, **state: Any) -> list[np.ndarray | None]:
    """Check param, grad and the state arrays (None: not used); return the states."""
    _kernels.check_param(param)
    _kernels.check_operand(grad, "grad", param)
    for name, arr in state.items():
        if arr is not None:
            _kernels.check_operand(arr, name, param, writeable=True)
    _kernels.check_disjoint([("param", param)] + list(state.items()), [("grad", grad)])
    states = list(state.values())
    return states + [None] * (3 - len(states))


def _hyper(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("beta1", "beta2"):
            out[key] = check_beta(value, key)
        else:
            out[key] = CHECKS[key](value, key)
    if "beta1" in out:
        out["betas"] = (out.pop("beta1"), out.pop("beta2"))
    if not isinstance(out["lr"], float):
        raise TypeError("lr of a stateless step must be a number; pass schedule(step) "
                        "(schedules belong to the optimizer classes)")
    return out


def _required(name: str, flag: str, arr: Any) -> None:
    if arr is None:
        raise ValueError(f"{flag} needs {name} (start it from zeros)")


def _unused(name: str, flag: str, arr: Any) -> None:
    if arr is not None:
        raise ValueError(f"{name} is only used with {flag}")


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
              eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
              max_exp_avg_sq=None, maximize=False) -> None:
    """Apply one Adam (or AdamW) update in place.

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
    """
    hyper = _hyper(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                   decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                   maximize=maximize)
    (_required if hyper["amsgrad"] else _unused)("max_exp_avg_sq", "amsgrad=True",
                                                 max_exp_avg_sq)
    states = _arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                     max_exp_avg_sq=max_exp_avg_sq)
    _kernels._apply("adam", hyper, step, 0.0, param, grad, states)


def adamax_step(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
                eps=1e-8, weight_decay=0.0, maximize=False) -> None:
    """Apply one Adamax update in place (see :class:`adamc.Adamax`).

    ``exp_avg`` and ``exp_inf`` (the exponentially weighted infinity norm) start from
    zeros; other arguments as in :func:`adam_step`.
    """
    hyper = _hyper(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                   maximize=maximize)
    states = _arrays(param, grad, exp_avg=exp_avg, exp_inf=exp_inf)
    _kernels._apply("adamax", hyper, step, 0.0, param, grad, states)


def nadam_step(param, grad, exp_avg, exp_avg_sq, *, step, mu_product=1.0, lr=2e-3,
               beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
               decoupled_weight_decay=False, maximize=False) -> float:
    """Apply one NAdam update in place (see :class:`adamc.NAdam`).

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
    """
    hyper = _hyper(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                   momentum_decay=momentum_decay,
                   decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    aux = CHECKS["momentum"](mu_product, "mu_product")
    states = _arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    return _kernels._apply("nadam", hyper, step, aux, param, grad, states)


def radam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
               eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
               maximize=False) -> None:
    """Apply one RAdam update in place (see :class:`adamc.RAdam`); arguments as in
    :func:`adam_step`."""
    hyper = _hyper(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                   decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    states = _arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    _kernels._apply("radam", hyper, step, 0.0, param, grad, states)


def sgd_step(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
             dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False) -> None:
    """Apply one SGD update in place (see :class:`adamc.SGD`).

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
    """
    hyper = _hyper(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                   nesterov=nesterov, maximize=maximize)
    check_nesterov(hyper)
    (_required if hyper["momentum"] else _unused)("momentum_buffer", "momentum > 0",
                                                  momentum_buffer)
    states = _arrays(param, grad, momentum_buffer=momentum_buffer)
    t = _kernels.check_step(step)
    _kernels._apply("sgd", hyper, t, 0.0 if t == 1 else 1.0, param, grad, states)


def rmsprop_step(param, grad, square_avg, *, step, lr=1e-2, alpha=0.99, eps=1e-8,
                 weight_decay=0.0, momentum=0.0, centered=False, maximize=False,
                 momentum_buffer=None, grad_avg=None) -> None:
    """Apply one RMSprop update in place (see :class:`adamc.RMSprop`).

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
    """
    hyper = _hyper(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                   momentum=momentum, centered=centered, maximize=maximize)
    (_required if hyper["momentum"] else _unused)("momentum_buffer", "momentum > 0",
                                                  momentum_buffer)
    (_required if hyper["centered"] else _unused)("grad_avg", "centered=True", grad_avg)
    states = _arrays(param, grad, square_avg=square_avg, momentum_buffer=momentum_buffer,
                     grad_avg=grad_avg)
    _kernels._apply("rmsprop", hyper, step, 0.0, param, grad, states)
