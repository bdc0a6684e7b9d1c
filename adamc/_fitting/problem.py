"""What a minimize run is given: x0, bounds, the callback's style, the objective.

Shared by the SciPy driver (adamc._fitting.minimize); it checks the inputs and evaluates f
and g (with jac=True, a separate jac, or finite differences), counting evaluations.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from .. import _kernels
from .lowlevel import capsule_of, is_lowlevel

__all__: list[str] = []



def _prepare_x0(x0: Any) -> np.ndarray:
    x = np.atleast_1d(np.asarray(x0))
    if x.ndim != 1:
        raise ValueError("'x0' must only have one dimension.")
    x = _float_copy(x)
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"x0 must be finite; x0[{bad[0]}] is {x[bad[0]]}")
    return x


def _float_copy(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of x0 in the dtype the optimizers work in."""
    kind = x.dtype.kind
    if kind in "iu":
        x = x.astype(np.float64)
    elif kind == "f":
        if x.dtype == np.float16:
            x = x.astype(np.float32)
        elif x.dtype.itemsize > 8:
            raise TypeError(f"x0 has dtype {x.dtype}; adamc works in float32 or float64 "
                            f"(convert with x0.astype(np.float64))")
        else:
            x = x.astype(x.dtype.newbyteorder("="), copy=True)
    else:
        raise TypeError(f"x0 has dtype {x.dtype}; it must be real (float32, float64 or "
                        f"integer)")
    return np.ascontiguousarray(x).copy()


def _prepare_bounds(bounds: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if bounds is None:
        return None
    from scipy.optimize import Bounds

    n = x.size
    if isinstance(bounds, Bounds):
        lb, ub = np.asarray(bounds.lb, dtype=float), np.asarray(bounds.ub, dtype=float)
    else:
        try:
            pairs = list(bounds)
        except TypeError:
            raise TypeError("bounds must be a scipy.optimize.Bounds or a sequence of "
                            "(low, high) pairs") from None
        if len(pairs) != n:
            raise ValueError(f"The number of bounds is not compatible with the length of "
                             f"`x0`: got {len(pairs)} pairs for {n} variables.")
        lb, ub = np.empty(n), np.empty(n)
        for i, pair in enumerate(pairs):
            try:
                lo, hi = pair
            except (TypeError, ValueError):
                raise ValueError(f"bounds[{i}] must be a (low, high) pair, got {pair!r}") from None
            lb[i] = -np.inf if lo is None else float(np.asarray(lo).item())
            ub[i] = np.inf if hi is None else float(np.asarray(hi).item())
    try:
        lb, ub = np.broadcast_to(lb, (n,)), np.broadcast_to(ub, (n,))
    except ValueError:
        raise ValueError(f"The number of bounds is not compatible with the length of `x0`: "
                         f"bounds of shape {lb.shape} and {ub.shape} for {n} variables.") from None
    if np.isnan(lb).any() or np.isnan(ub).any():
        raise ValueError("bounds must not contain NaN (use None or inf for no bound)")
    if np.any(ub < lb):
        i = int(np.flatnonzero(ub < lb)[0])
        raise ValueError(f"An upper bound is less than the corresponding lower bound: "
                         f"bounds[{i}] = ({lb[i]}, {ub[i]}).")
    return _bounds_in_dtype(lb, ub, x.dtype)


def _bounds_in_dtype(lb: np.ndarray, ub: np.ndarray,
                     dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """float64 bound arrays as contiguous arrays of x's dtype (any shape)."""
    lower = np.ascontiguousarray(lb, dtype=dtype)
    upper = np.ascontiguousarray(ub, dtype=dtype)
    if dtype == np.float32:
        # rounding to float32 must not move a bound inward past the true one
        lower = np.where(lower.astype(np.float64) > lb, np.nextafter(lower, np.float32(-np.inf)),
                         lower).astype(np.float32)
        upper = np.where(upper.astype(np.float64) < ub, np.nextafter(upper, np.float32(np.inf)),
                         upper).astype(np.float32)
    return lower, upper


def _prepare_scale(x_scale: Any, x: np.ndarray) -> np.ndarray | None:
    """The x_scale option as an array like x (positive, finite, in x's dtype), or None
    for no scaling (None, or the number 1). ``"auto"``: abs(x0), 1 where x0 is 0.
    x may hold many problems (rows); an array of x's last dimension serves every row."""
    if x_scale is None:
        return None
    if isinstance(x_scale, str):
        if x_scale != "auto":
            raise ValueError(f"x_scale must be 'auto', a number > 0 or an array of numbers "
                             f"> 0 (the parameters' typical magnitudes), got {x_scale!r}")
        return np.where(x != 0, np.abs(x), x.dtype.type(1))
    if np.ndim(x_scale) == 0 and not isinstance(x_scale, np.ndarray):
        value = _kernels.check_positive(x_scale, "x_scale")  # (its own type errors)
        return None if value == 1.0 else np.full_like(x, value)
    arr = np.asarray(x_scale)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"x_scale must hold real numbers, got an array of dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        cast = arr.astype(x.dtype)
    bad = ~(np.isfinite(cast) & (cast > 0))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x_scale must be finite and > 0 in {x.dtype}; "
                         f"x_scale[{', '.join(map(str, where))}] is {arr[where].item()!r}")
    try:
        return np.ascontiguousarray(np.broadcast_to(cast, x.shape)).copy()
    except ValueError:
        per_problem = f" or {x.shape} (per problem)" if x.ndim == 2 else ""
        raise ValueError(f"x_scale has shape {arr.shape}; expected {x.shape[-1:]} (one "
                         f"scale per parameter){per_problem}") from None


def _callback_style(callback: Callable | None) -> str | None:
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        params = inspect.signature(callback).parameters
    except (TypeError, ValueError):
        return "x"
    return "result" if set(params) == {"intermediate_result"} else "x"



def _is_scipy_jac_wrapper(fun: Any, jac: Any) -> bool:
    """Whether (fun, jac) is what scipy.optimize.minimize passes a custom method for
    jac=True: an object holding the user's function as ``fun`` (SciPy's MemoizeJac)
    and its bound ``derivative`` method. Recognised by that interface, without
    importing SciPy's private class."""
    return (getattr(jac, "__self__", None) is fun and getattr(jac, "__name__", "") == "derivative"
            and (callable(getattr(fun, "fun", None)) or is_lowlevel(getattr(fun, "fun", None))))


def _gradient_mode(jac: Any, dtype: np.dtype, rel_step: float | None
                   ) -> tuple[str, Callable | None, float | None]:
    """(mode, the jac callable, finite differences' relative step) of minimize's
    ``jac`` argument: "combined" (True), "separate" (a callable), "2-point" or
    "3-point" (finite differences; None and False mean "2-point")."""
    if jac is True:
        return "combined", None, None
    if callable(jac):
        return "separate", jac, None
    if jac is None or jac is False or jac in ("2-point", "3-point"):
        mode = "3-point" if jac == "3-point" else "2-point"
        eps = float(np.finfo(dtype).eps)
        # adamc's own pow: the same step, and so the same bits, on every platform
        default = _kernels._pow(eps, 0.5 if mode == "2-point" else 1 / 3)
        return mode, None, rel_step if rel_step is not None else default
    raise ValueError(f"jac must be True, a callable, None, '2-point' or '3-point'; "
                     f"got {jac!r}")


class _Objective:
    """Evaluates f and g at the optimizer's x, counting evaluations."""

    def __init__(self, fun, jac, args, x, bounds, rel_step):
        if _is_scipy_jac_wrapper(fun, jac):
            fun, jac = fun.fun, True  # SciPy's jac=True wrapper: skip its caching
        compiled = is_lowlevel(fun)
        if not compiled and not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        self.args = tuple(args) if isinstance(args, tuple) else (args,)
        self.nfev = self.njev = 0
        self.x = x
        self.view = x.view()
        self.view.flags.writeable = False  # fun must not change the iterate
        self.dtype, self.n = x.dtype, x.size
        self.fun = fun
        if compiled:
            self._compiled(fun, jac)
        else:
            self.mode, self.jac, self.rel_step = _gradient_mode(jac, self.dtype, rel_step)
        if self.mode in ("2-point", "3-point"):
            self.work = np.empty_like(x)
            self.work_view = self.work.view()
            self.work_view.flags.writeable = False
            self.lower, self.upper = bounds if bounds is not None else (None, None)

    def _compiled(self, fun: Any, jac: Any) -> None:
        """A scipy.LowLevelCallable: f and the gradient from one C call."""
        self.capsule = capsule_of(fun)
        if jac is not None and jac is not True:
            raise ValueError(f"a LowLevelCallable objective fills the gradient itself "
                             f"(jac=True is implied); got jac={jac!r}")
        if self.args:
            raise ValueError("a LowLevelCallable objective takes no args; pass its data "
                             "as user_data: scipy.LowLevelCallable(function, user_data)")
        if self.dtype != np.float64:
            raise TypeError(f"a LowLevelCallable objective works in float64; x0 has dtype "
                            f"{self.dtype} (pass x0.astype(np.float64))")
        if self.n > 2**31 - 1:
            raise ValueError("a LowLevelCallable objective takes n as an int: at most "
                             "2**31 - 1 variables")
        self.mode = "compiled"

    def pair(self, out: Any) -> tuple[Any, Any]:
        """(f, g) from what fun returned with jac=True."""
        try:
            f, g = out
        except (TypeError, ValueError):
            raise ValueError("with jac=True, fun must return a pair (f, gradient); "
                             f"it returned {type(out).__name__}") from None
        return f, g

    def scalar(self, value: Any) -> float:
        if type(value) is float:
            return value
        try:
            return float(np.asarray(value).item())
        except (TypeError, ValueError):
            hint = ""
            if isinstance(value, tuple) and len(value) == 2 and self.mode != "combined":
                hint = (" It returned a pair: if that is (f, gradient), pass jac=True so "
                        "that the gradient is used.")
            raise ValueError("The user-provided objective function must return a scalar "
                             f"value.{hint}") from None

    def gradient(self, g: Any, source: str) -> np.ndarray:
        if type(g) is np.ndarray and g.dtype == self.dtype and g.shape == (self.n,) \
                and g.flags.c_contiguous:
            return g
        arr = np.asarray(g)
        if arr.shape != (self.n,):
            if arr.size == self.n and arr.ndim != 1:
                arr = arr.reshape(self.n)
            else:
                raise ValueError(f"{source} returned a gradient of shape {arr.shape}; "
                                 f"expected ({self.n},), the shape of x0")
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{source} returned a gradient of dtype {arr.dtype}; "
                            f"expected real numbers")
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def __call__(self, batch: tuple) -> tuple[float, np.ndarray]:
        args = self.args + batch if batch else self.args
        if self.mode == "combined":
            out = self.fun(self.view, *args)
            self.nfev += 1
            self.njev += 1
            f, g = self.pair(out)
            return self.scalar(f), self.gradient(g, "fun")
        if self.mode == "compiled":
            g = np.empty_like(self.x)
            f = _kernels.call_objective(self.capsule, self.x, g)
            self.nfev += 1
            self.njev += 1
            return f, g
        f = self.scalar(self.fun(self.view, *args))
        self.nfev += 1
        if self.mode == "separate":
            g = self.jac(self.view, *args)
            self.njev += 1
            return f, self.gradient(g, "jac")
        self.njev += 1
        return f, self._finite_difference(f, args)

    def _finite_difference(self, f0: float, args: tuple) -> np.ndarray:
        x, work, view = self.x, self.work, self.work_view
        g = np.empty_like(x)
        signs = np.where(x >= 0, 1.0, -1.0)
        h = self.rel_step * signs * np.maximum(1.0, np.abs(x))
        np.copyto(work, x)
        for i in range(self.n):
            xi = x[i]
            hi = (x.dtype.type(xi + h[i]) - xi)
            if hi == 0:
                hi = x.dtype.type(np.spacing(xi) * (1 if signs[i] > 0 else -1))
            fwd_ok = self._inside(i, xi + hi)
            back_ok = self._inside(i, xi - hi)
            if self.mode == "3-point" and fwd_ok and back_ok:
                work[i] = xi + hi
                fp = self.scalar(self.fun(view, *args))
                work[i] = xi - hi
                fm = self.scalar(self.fun(view, *args))
                self.nfev += 2
                g[i] = (fp - fm) / (2 * float(hi))
            else:
                if not fwd_ok:
                    hi = -hi
                work[i] = xi + hi
                fp = self.scalar(self.fun(view, *args))
                self.nfev += 1
                g[i] = (fp - f0) / float(hi)
            work[i] = xi
        return g

    def _inside(self, i: int, value: float) -> bool:
        return (self.lower is None
                or (self.lower[i] <= value <= self.upper[i]))
