"""Rprop: the table row, the optimizer class, the stateless step and the NumPy twin."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._core.optimizer import Optimizer
from ._stateless import compiled_step
from ._table import Algorithm, Method, PublicClass, State
from ._numpy import Array, f64, preprocess_grad, project

__all__ = ['Rprop', 'rprop_step']

ALGORITHM = Algorithm(
    "rprop",
    hyper=(("lr", 1e-2), ("etas", (0.5, 1.2)), ("step_sizes", (1e-6, 50.0)),
           ("maximize", False)),
    keyword_only=("maximize",),
    states=(State("prev"), State("step_size", kind="step_size")),
    classes=(PublicClass("Rprop"),),
    methods=(Method("rprop", "Rprop", "Rprop (resilient backpropagation)"),),
)


class Rprop(Optimizer):
    r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), with
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
    """

    _spec = ALGORITHM

    def __init__(self,
                 params: Any,
                 lr: float | Callable[[int], float] = 0.01,
                 etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-06, 50.0),
                 *,
                 maximize: bool = False,
                 max_grad_norm: float | None = None,
                 clip_value: float | None = None,
                 nonfinite: str = "propagate",
                 ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        Optimizer.__init__(self, params, dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize),
                           max_grad_norm=max_grad_norm, clip_value=clip_value,
                           nonfinite=nonfinite, ema=ema, ema_start=ema_start)


@compiled_step(ALGORITHM)
def rprop_step(
        param: np.ndarray,
        grad: np.ndarray,
        prev: np.ndarray,
        step_size: np.ndarray,
        *,
        step: int,
        lr: float = 0.01,
        etaminus: float = 0.5,
        etaplus: float = 1.2,
        step_size_min: float = 1e-06,
        step_size_max: float = 50.0,
        maximize: bool = False) -> None:
    r"""Apply one Rprop update in place (see :class:`adamc.Rprop`).

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
    """


def rprop(param: Array, grad: Array, prev: Array, step_size: Array, *, step: int,
          lr: float = 1e-2, etaminus: float = 0.5, etaplus: float = 1.2,
          step_size_min: float = 1e-6, step_size_max: float = 50.0, maximize: bool = False,
          lower=None, upper=None, clip_value=None, clip_scale: float = 1.0) -> dict[str, Array]:
    """One Rprop step (torch.optim.Rprop; Riedmiller & Braun, 1993). ``prev`` and
    ``step_size`` start from zeros, as adamc keeps them: step 1 sets the step sizes to
    ``lr`` (torch's starting value)."""
    p, prev = f64(param), f64(prev)
    sizes = np.full_like(p, lr) if step == 1 else f64(step_size)
    g = preprocess_grad(grad, maximize=maximize, clip_value=clip_value, clip_scale=clip_scale)
    sign = np.sign(g * prev)
    factor = np.where(sign > 0, etaplus, np.where(sign < 0, etaminus, 1.0))
    factor = np.where(np.isnan(sign), np.nan, factor)
    sizes = np.clip(sizes * factor, step_size_min, step_size_max)
    g = np.where(sign < 0, 0.0, g)
    p = p - np.sign(g) * sizes
    return {"param": project(p, lower, upper), "prev": g, "step_size": sizes}
