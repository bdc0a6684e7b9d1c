"""``minimize_many``: thousands of small independent problems in one vectorised loop.

The problems are the rows of (m, n) arrays: the objective is called once per
iteration on the rows still running, and one compiled call updates all of them
(``adamc._kernels._step_rows``: row i gets the update the engine gives a lone
problem, so every problem's result is the same bits as ``adamc.minimize`` on it
alone). A problem that converges or fails is dropped from the running arrays
(its optimizer state with it), so an iteration costs what its running problems
cost. The stopping tests, finite differences and status codes are those of
``adamc.minimize``, applied row by row.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np

from .. import _kernels
from ..algorithms import CLASSES, HYPERPARAMETERS, METHODS, Algorithm
from .._core.format import _fingerprint
from .lowlevel import capsule_of, is_lowlevel
from .minimize import (NO_LIMIT, _METHODS, _Method, _check_options, _prepare_f_scale,
                        check_count, check_tolerance)
from .problem import (_bounds_in_dtype, _callback_style, _float_copy, _gradient_mode,
                       _is_scipy_jac_wrapper, _prepare_bounds, _prepare_scale)
from .._core.validation import SHARED_CHECKS, check_hyperparameters, is_schedule
from .._core.optimizer import _check_ema

__all__ = ["minimize_many"]

# Hyperparameters that may be given per problem, as arrays of shape (B,) (betas: a
# pair whose members may be such arrays); the columns of _kernels._step_rows.
_ROW_FIELD = {name: i for i, name in enumerate(_kernels._ROW_FIELDS)}
_PER_PROBLEM_HYPER = ("lr", "eps", "weight_decay", "momentum_decay", "momentum", "dampening",
                      "alpha", "max_grad_norm", "clip_value")
_PER_PROBLEM_LOOP = ("gtol", "ftol", "xtol", "maxiter", "maxfev")
# minimize's options that have no meaning for many problems at once
# the scalar checks of per-problem values other than HYPERPARAMETERS' (an lr schedule
# is one for every problem; the clipping options are the optimizer's keyword-only
# ones, SHARED_CHECKS)
_ROW_CHECKS = {"lr": _kernels.check_nonnegative, **SHARED_CHECKS}
_UNSUPPORTED = ("batches", "return_all", "checkpoint", "checkpoint_every", "resume",
                "progress", "ema")

# (the statuses and their names are defined once, in adamc/_status.pxi)
_Status = _kernels._Status
_STATUS_TEXT = _kernels._STATUS_TEXT


# ----------------------------------------------------------------------------------
# Inputs

def _prepare_x0_many(x0: Any) -> np.ndarray:
    x = np.asarray(x0)
    if x.ndim != 2:
        raise ValueError(f"x0 must have shape (B, n), one row of n parameters per problem; "
                         f"got shape {x.shape}")
    x = _float_copy(x)
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise ValueError(f"x0 must be finite; x0[{i}, {j}] is {x[i, j]}")
    return x


def _prepare_bounds_many(bounds: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounds per parameter (n pairs, or a Bounds of n values) or per problem (a Bounds
    whose lb and ub have shape (B, n), or an array of shape (B, n, 2)), as two (B, n)
    arrays of x's dtype."""
    if bounds is None:
        return None
    from scipy.optimize import Bounds

    B, n = x.shape
    if isinstance(bounds, Bounds):
        lb, ub = np.asarray(bounds.lb, dtype=float), np.asarray(bounds.ub, dtype=float)
    elif isinstance(bounds, np.ndarray) and bounds.ndim == 3:
        if bounds.shape != (B, n, 2):
            raise ValueError(f"per-problem bounds must have shape (B, n, 2) = ({B}, {n}, 2); "
                             f"got {bounds.shape}")
        lb, ub = bounds[..., 0].astype(float), bounds[..., 1].astype(float)
    else:
        pairs = _prepare_bounds(bounds, np.empty(n))  # n (low, high) pairs
        assert pairs is not None
        lb, ub = pairs
    try:
        lb, ub = np.broadcast_to(lb, (B, n)), np.broadcast_to(ub, (B, n))
    except ValueError:
        raise ValueError(f"bounds of shape {np.shape(lb)} and {np.shape(ub)} do not fit x0 of "
                         f"shape ({B}, {n}): give n values (per parameter) or (B, n) "
                         f"(per problem)") from None
    if np.isnan(lb).any() or np.isnan(ub).any():
        raise ValueError("bounds must not contain NaN (use None or inf for no bound)")
    if np.any(ub < lb):
        i, j = (int(v) for v in np.argwhere(ub < lb)[0])
        raise ValueError(f"An upper bound is less than the corresponding lower bound: "
                         f"problem {i}, parameter {j}: ({lb[i, j]}, {ub[i, j]}).")
    return _bounds_in_dtype(lb, ub, x.dtype)


def _per_problem(value: Any, name: str, B: int) -> np.ndarray | None:
    """value as a (B,) array when it is one (None for a scalar), its dtype unchanged."""
    if callable(value) or np.ndim(value) == 0:
        return None
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of B = {B} numbers") from None
    if arr.shape != (B,):
        raise ValueError(f"{name} must be a number or an array of shape (B,) = ({B},), one "
                         f"value per problem; got shape {arr.shape}")
    return arr


def _each(arr: np.ndarray, name: str, check: Callable[[Any, str], Any]) -> list[Any]:
    """``check(arr[i], f"{name}[{i}]")`` of every element: the check of the scalar option
    the array replaces, whose error for the first bad element is raised. Returns the
    checked distinct values and, for each element, the index of its value."""
    if arr.dtype.kind in "biufc":  # each distinct value once, in order of appearance
        values, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
        checked: list[Any] = [None] * len(values)
        for k in np.argsort(first, kind="stable"):
            checked[k] = check(values[k].item(), f"{name}[{first[k]}]")
        return [checked, inverse.reshape(-1)]
    return [[check(v.item() if isinstance(v, np.generic) else v, f"{name}[{i}]")
             for i, v in enumerate(arr)], np.arange(arr.size)]


def _float_column(arr: np.ndarray, name: str, check: Callable[[Any, str], Any]) -> np.ndarray:
    """A per-problem hyperparameter or tolerance: every element through the scalar
    check; float64 values (exactly the elements' values when they are real numbers)."""
    checked, index = _each(arr, name, check)
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    return np.asarray(checked, np.float64)[index]


def _count_column(arr: np.ndarray, name: str, minimum: int,
                  default: int | None) -> np.ndarray:
    """A per-problem maxiter or maxfev: every element through the scalar check; int64
    values, NO_LIMIT for no limit (None without a default, or counts past 2**63 - 1)."""
    checked, index = _each(arr, name, lambda v, where: check_count(v, where, minimum, default))
    return np.asarray([NO_LIMIT if c is None else c for c in checked], np.int64)[index]


class _Setup:
    """The validated method, hyperparameters (scalars and per-problem columns) and
    stopping options of a minimize_many run."""

    def __init__(self, method: _Method, options: dict[str, Any], x: np.ndarray,
                 stacklevel: int):
        B = x.shape[0]
        options = dict(options)
        for key in _UNSUPPORTED:
            if options.get(key) not in (None, False):
                raise ValueError(f"options[{key!r}] is not supported by minimize_many")
            options.pop(key, None)
        self.algorithm: Algorithm = METHODS[method.name][0]
        # per-problem arrays leave the options: every element goes through the check of
        # the scalar it replaces (before anything else is checked), and the scalar
        # checks below see its first value
        columns: dict[str, np.ndarray] = {}
        for key in _PER_PROBLEM_HYPER:
            if key in options and key in method.hyper:
                name = f"options[{key!r}]"
                arr = _per_problem(options[key], name, B)
                if arr is not None:
                    check = _ROW_CHECKS[key] if key in _ROW_CHECKS else \
                        HYPERPARAMETERS[key].check
                    columns[key] = _float_column(arr, name, check)
                    options[key] = (None if key in _ROW_CHECKS and key != "lr" else
                                    float(columns[key][0]) if B else method.hyper[key])
        if "betas" in options and "betas" in method.hyper:
            betas = options["betas"]
            if isinstance(betas, (tuple, list)) and len(betas) == 2:
                pair = list(betas)
                for k, b in enumerate(betas):
                    name = f"options['betas'][{k}]"
                    arr = _per_problem(b, name, B)
                    if arr is not None:
                        columns[f"beta{k + 1}"] = _float_column(arr, name, _kernels.check_beta)
                        pair[k] = float(columns[f"beta{k + 1}"][0]) if B else 0.5
                options["betas"] = tuple(pair)
        # (None in a per-problem array of maxiter, maxfev or gtol is the scalar
        # default, as an option of None is: a placeholder of None lets
        # _check_options say what it is)
        arrays = {key: arr for key in _PER_PROBLEM_LOOP if key in options
                  for arr in [_per_problem(options[key], f"options[{key!r}]", B)]
                  if arr is not None}
        for key in arrays:
            options[key] = None if key in ("maxiter", "maxfev", "gtol") else 0.0
        parsed = _check_options(method, options, stacklevel + 1)
        loop = parsed["loop"]
        loop_arrays: dict[str, np.ndarray] = {}
        for key, arr in arrays.items():
            name = f"options[{key!r}]"
            if key in ("maxiter", "maxfev"):
                loop_arrays[key] = _count_column(arr, name, int(key == "maxfev"), loop[key])
            elif key == "gtol":
                loop_arrays[key] = _float_column(arr, name, lambda v, where: loop["gtol"]
                                                 if v is None else check_tolerance(v, where))
            else:
                loop_arrays[key] = _float_column(arr, name, check_tolerance)
        hyper = parsed["hyper"]
        # the checks of the optimizer class's constructor, in its order, without
        # building one: its hyperparameters (with the values the class fixes, e.g.
        # AdamW's decoupled weight decay) through the table's checks, the ema options,
        # then the clipping options
        fixed = CLASSES[METHODS[method.name][1].cls][1].fixed
        self.hyper = check_hyperparameters(
            {**hyper, **fixed}, [k for k, _ in self.algorithm.hyper],
            {k: HYPERPARAMETERS[k].check for k, _ in self.algorithm.hyper},
            self.algorithm.cross_check)
        _check_ema(hyper["ema"], hyper["ema_start"])
        self.max_grad_norm, self.clip_value = (SHARED_CHECKS[k](hyper[k], k)
                                               for k in ("max_grad_norm", "clip_value"))
        # a reduce_on_plateau lr: each problem steps its own copy (its lr a column)
        lr = self.hyper["lr"]
        self.plateau = lr if isinstance(lr, _kernels._ReduceOnPlateau) else None
        self.lr_fn = None
        if self.plateau is not None:
            self.hyper["lr"] = self.plateau.lr
        elif is_schedule(lr):
            self.lr_fn, self.hyper["lr"] = lr, 0.0
        # a column with one value is a scalar: the rows then share one kernel call
        for key in list(columns):
            arr = columns[key]
            if B == 0 or (arr == arr[0]).all():
                value = float(arr[0]) if B else None
                del columns[key]
                if value is None:
                    continue
                if key in self.hyper:
                    self.hyper[key] = value
                elif key.startswith("beta"):
                    b = list(self.hyper["betas"])
                    b[int(key[-1]) - 1] = value
                    self.hyper["betas"] = tuple(b)
                elif key == "max_grad_norm":
                    self.max_grad_norm = value
                else:
                    self.clip_value = value
        # each problem's own lr, where it can change: on its plateaus, and backing off
        # at its domain edges (a number; another schedule is the same for every problem)
        self.backtrack = loop["nonfinite"] == "backtrack"
        if "lr" not in columns and (self.plateau is not None or
                                    (self.backtrack and self.lr_fn is None)):
            columns["lr"] = np.full(B, self.hyper["lr"])
        self.lr_col = list(columns).index("lr") if "lr" in columns else -1
        self.x_scale, self.f_scale = loop["x_scale"], loop["f_scale"]
        self.fields = tuple(_ROW_FIELD[k] for k in columns)
        self.rows = (np.ascontiguousarray(np.stack(list(columns.values()), axis=1))
                     if columns else None)
        if self.algorithm.cross_check is not None and self.rows is not None:
            combos, first = np.unique(self.rows, axis=0, return_index=True)
            for combo, i in zip(combos, first):
                values = dict(self.hyper)
                for key, v in zip(columns, combo):
                    if key.startswith("beta"):
                        b = list(values["betas"])
                        b[int(key[-1]) - 1] = float(v)
                        values["betas"] = tuple(b)
                    elif key in values:
                        values[key] = float(v)
                self.algorithm.cross_check(values, f"problem {int(i)}: ")
        # state arrays: those the hyperparameters need (per-problem values: any row)
        self.state_used = []
        for st in self.algorithm.states:
            used = st.requires is None or bool(self.hyper[st.requires])
            if st.requires in columns:
                used = used or bool(columns[st.requires].any())
            self.state_used.append(used)
        self.loop = loop

        def per_problem(key, dtype):  # (None: no maxiter or maxfev)
            if key in loop_arrays:
                return loop_arrays[key]
            return None if loop[key] is None else np.full(B, loop[key], dtype)

        self.maxiter = per_problem("maxiter", np.int64)
        self.maxfev = per_problem("maxfev", np.int64)
        self.gtol = per_problem("gtol", np.float64)
        self.ftol = per_problem("ftol", np.float64)
        self.xtol = per_problem("xtol", np.float64)
        self.aux_initial = self.algorithm.aux_initial

    def fields_text(self) -> list[tuple[str, str]]:
        out = [(f"hyperparameter {k}", _fingerprint(v)) for k, v in self.hyper.items()]
        out += [("lr schedule", _fingerprint(self.lr_fn)),
                ("max_grad_norm", repr(self.max_grad_norm)),
                ("clip_value", repr(self.clip_value)),
                ("per-problem hyperparameters", repr(self.fields)),
                ("their values", "none" if self.rows is None else _fingerprint(self.rows))]
        for key in ("maxiter", "maxfev", "gtol", "ftol", "xtol"):
            arr = getattr(self, key)
            out.append((key, "none" if arr is None else _fingerprint(arr)))
        return out

    def subset(self, sl: slice) -> _Setup:
        """The same setup for the problems sl (a distributed run's share)."""
        new = object.__new__(_Setup)
        new.__dict__.update(self.__dict__)
        if self.rows is not None:
            new.rows = np.ascontiguousarray(self.rows[sl])
        for key in ("maxiter", "maxfev", "gtol", "ftol", "xtol"):
            arr = getattr(self, key)
            if arr is not None:
                setattr(new, key, arr[sl])
        return new


# ----------------------------------------------------------------------------------
# The objective of the running problems

def _read_only(arrays) -> tuple:
    """The batch rows as fun sees them: NumPy arrays as read-only views (a write would
    reach the caller's array only while every problem runs, and be lost after)."""
    out = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            a = a.view()
            a.flags.writeable = False
        out.append(a)
    return tuple(out)


class _Problems:
    """Evaluates f (m,) and g (m, n) of the running problems, counting evaluations
    per problem. ``select(idx)`` sets the running problems (increasing indices)."""

    def __init__(self, fun, jac, args, batch_args, x: np.ndarray, rel_step):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        self.args = tuple(args) if isinstance(args, tuple) else (args,)
        B, n = x.shape
        if not isinstance(batch_args, (tuple, list)):
            raise TypeError("batch_args must be a tuple of arrays whose first axis has "
                            "length B (one row per problem)")
        batch = []
        for k, a in enumerate(batch_args):
            if not hasattr(a, "shape") or not hasattr(a, "__getitem__"):
                a = np.asarray(a)
            if len(a.shape) == 0 or a.shape[0] != B:
                raise ValueError(f"batch_args[{k}] has shape {tuple(a.shape)}; its first axis "
                                 f"must have length B = {B} (one row per problem of x0)")
            batch.append(a)
        self.batch = tuple(batch)
        self.rows = _read_only(self.batch)
        self.n, self.dtype = n, x.dtype
        self.nfev = np.zeros(B, np.int64)
        self.njev = np.zeros(B, np.int64)
        self.pending = 0  # evaluations of every running problem not yet in nfev/njev
        self.idx = np.arange(B)
        if _is_scipy_jac_wrapper(fun, jac):
            fun, jac = fun.fun, True
        self.fun = fun
        self.mode, jac_fn, self.rel_step = _gradient_mode(jac, self.dtype, rel_step)
        self.jac: Any = jac_fn  # called in "separate" mode only, where it is set

    def flush(self) -> None:
        """Add the pending evaluations of the running problems to nfev and njev."""
        if self.pending:
            self.nfev[self.idx] += self.pending
            self.njev[self.idx] += self.pending
            self.pending = 0

    def running_nfev(self) -> np.ndarray:
        return self.nfev[self.idx] + self.pending

    def select(self, idx: np.ndarray) -> None:
        self.flush()
        self.idx = idx
        self.rows = _read_only(a.take(idx, axis=0) if isinstance(a, np.ndarray) else a[idx]
                               for a in self.batch)

    def some(self, rows: np.ndarray, x: np.ndarray, lower, upper
             ) -> tuple[np.ndarray, np.ndarray]:
        """f and g of some of the running problems (their positions among the running
        ones) at x, counted for them alone (backtracking)."""
        self.flush()
        idx, data = self.idx, self.rows
        self.idx = idx[rows]
        self.rows = _read_only(a.take(rows, axis=0) if isinstance(a, np.ndarray) else
                               a[rows] for a in data)
        try:
            out = self(np.ascontiguousarray(x), lower, upper)
            self.flush()
        finally:
            self.idx, self.rows = idx, data
        return out

    def values(self, out: Any, m: int, source: str) -> np.ndarray:
        f = np.asarray(out)
        if f.shape != (m,):
            if f.shape == (m, 1):
                f = f.reshape(m)
            else:
                hint = ""
                if isinstance(out, tuple) and len(out) == 2 and self.mode != "combined":
                    hint = (" It returned a pair: if that is (f, gradient), pass jac=True so "
                            "that the gradient is used.")
                raise ValueError(f"{source} returned values of shape {f.shape}; expected "
                                 f"({m},), one per running problem (x had shape ({m}, "
                                 f"{self.n})).{hint}")
        if f.dtype.kind not in "fiu":
            raise TypeError(f"{source} returned values of dtype {f.dtype}; expected real "
                            f"numbers")
        return f.astype(np.float64)

    def gradient(self, g: Any, m: int, source: str) -> np.ndarray:
        arr = np.asarray(g)
        if arr.shape != (m, self.n):
            raise ValueError(f"{source} returned a gradient of shape {arr.shape}; expected "
                             f"({m}, {self.n}), one row per running problem")
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{source} returned a gradient of dtype {arr.dtype}; expected "
                            f"real numbers")
        # an owned copy: a function may return the same buffer at every call
        return np.array(arr, dtype=self.dtype, order="C", copy=True)

    def __call__(self, x: np.ndarray, lower, upper) -> tuple[np.ndarray, np.ndarray]:
        m = x.shape[0]
        view = x.view()
        view.flags.writeable = False  # fun must not change the iterates
        args = self.args + self.rows
        if self.mode == "combined":
            out = self.fun(view, *args)
            self.pending += 1
            try:
                f, g = out
            except (TypeError, ValueError):
                raise ValueError("with jac=True, fun must return a pair (f, gradient); "
                                 f"it returned {type(out).__name__}") from None
            return self.values(f, m, "fun"), self.gradient(g, m, "fun")
        f = self.values(self.fun(view, *args), m, "fun")
        self.pending += 1
        if self.mode == "separate":
            return f, self.gradient(self.jac(view, *args), m, "jac")
        return f, self._finite_difference(x, f, args, lower, upper)

    def _finite_difference(self, x, f0, args, lower, upper) -> np.ndarray:
        """_Objective._finite_difference of every row at once (the same operations,
        elementwise, so each row gets the bits of its lone problem)."""
        m, n = x.shape
        work = x.copy()
        view = work.view()
        view.flags.writeable = False
        g = np.empty_like(x)
        signs = np.where(x >= 0, 1.0, -1.0)
        h = self.rel_step * signs * np.maximum(1.0, np.abs(x))
        idx = self.idx
        for i in range(n):
            xi = x[:, i]
            hi = (xi + h[:, i]).astype(x.dtype) - xi
            zero = hi == 0
            if zero.any():
                sp = np.spacing(xi)
                hi = np.where(zero, np.where(signs[:, i] > 0, sp, -sp), hi).astype(x.dtype)
            if lower is None:
                fwd_ok = back_ok = np.ones(m, bool)
            else:
                fwd, back = xi + hi, xi - hi
                fwd_ok = (lower[:, i] <= fwd) & (fwd <= upper[:, i])
                back_ok = (lower[:, i] <= back) & (back <= upper[:, i])
            central = (fwd_ok & back_ok) if self.mode == "3-point" else np.zeros(m, bool)
            step = np.where(fwd_ok, hi, -hi).astype(x.dtype)
            work[:, i] = xi + step
            fp = self.values(self.fun(view, *args), m, "fun")
            self.nfev[idx] += 1  # (the gradient counts once, in pending)
            gi = (fp - f0) / step.astype(np.float64)
            if central.any():
                work[:, i] = xi - hi
                if central.all():
                    fm = self.values(self.fun(view, *args), m, "fun")
                else:  # only the problems whose backward point is inside the bounds
                    rows = np.flatnonzero(central)
                    sub = work[rows]
                    sub.flags.writeable = False
                    fm_c = self.values(self.fun(sub, *self.args,
                                                *_read_only(a[rows] for a in self.rows)),
                                       rows.size, "fun")
                    fm = np.zeros(m)
                    fm[rows] = fm_c
                self.nfev[idx[central]] += 1
                gc = (fp - fm) / (2 * hi.astype(np.float64))
                gi = np.where(central, gc, gi)
            g[:, i] = gi
            work[:, i] = xi
        return g


class _CompiledProblems:
    """A C objective of every problem: a scipy.LowLevelCallable of signature ``double
    (int n, double *x, double *grad, intptr_t i, void *user_data)``, called from C by
    _kernels._fit_rows with the problem's index i (``first`` + its row)."""

    mode = "compiled"
    batch: tuple = ()

    def __init__(self, fun, jac, args, batch_args, x: np.ndarray):
        self.capsule = capsule_of(fun, many=True)
        if jac is not None and jac is not True:
            raise ValueError(f"a LowLevelCallable objective fills the gradient itself "
                             f"(jac=True is implied); got jac={jac!r}")
        if (args if isinstance(args, tuple) else (args,)) or len(batch_args):
            raise ValueError("a LowLevelCallable objective takes no args or batch_args: "
                             "pass its data as user_data, scipy.LowLevelCallable(function, "
                             "user_data), and find problem i's rows there")
        if x.dtype != np.float64:
            raise TypeError(f"a LowLevelCallable objective works in float64; x0 has dtype "
                            f"{x.dtype} (pass x0.astype(np.float64))")
        if x.shape[1] > 2**31 - 1:
            raise ValueError("a LowLevelCallable objective takes n as an int: at most "
                             "2**31 - 1 variables")
        self.nfev = np.zeros(x.shape[0], np.int64)
        self.njev = self.nfev  # (one call gives both)
        self.first = 0

    def select(self, idx: np.ndarray) -> None:
        """(every problem's arrays stay in place: _fit_rows skips the stopped ones)"""


# ----------------------------------------------------------------------------------
# The loop

class _Local:
    """Collaborator of a single-process run (a lockstep distributed run has one that
    shares stops and errors between ranks at every iteration)."""

    lockstep = False

    def iteration(self, stopped: bool, error: BaseException | None,
                  running: bool) -> tuple[bool, bool]:
        if error is not None:
            raise error
        return stopped, running


def _start(evaluate: Callable[[], Any], sync, disp: bool) -> Any:
    """The first evaluation (in a lockstep run its error is raised on every rank) and
    the header of disp."""
    out, error = None, None
    try:
        out = evaluate()
    except Exception as exc:
        if not sync.lockstep:
            raise
        error = exc
    sync.iteration(False, error, True)
    if disp:
        print(f"{'iter':>8} {'running':>9} {'median f':>14}", file=sys.stdout)
    return out


class _RowScaling:
    """minimize's x_scale and f_scale for every problem (row): the optimizer steps
    u = x / s within the bounds divided by s, the objective sees x = clip(s u), the
    step gets (s / f_scale) g with f_scale from each problem's f(x0) ("auto")."""

    def __init__(self, setup: _Setup, x: np.ndarray,
                 box: tuple[np.ndarray, np.ndarray] | None):
        self.box = None if box is None else (np.ascontiguousarray(box[0]).copy(),
                                             np.ascontiguousarray(box[1]).copy())
        self.s = _prepare_scale(setup.x_scale, x)
        self.auto_f = setup.f_scale == "auto"
        self.f_scale = _prepare_f_scale(setup.f_scale)
        if self.s is None and (self.auto_f or self.f_scale != 1.0):
            self.s = np.ones_like(x)
        self.gs = None
        if self.s is None:  # the optimizer steps x itself
            self.u, self.x_user, self.bounds = x, None, self.box
            return
        self.u = x / self.s
        self.x_user = self.user(self.u)
        self.bounds = None if self.box is None else (self.box[0] / self.s,
                                                     self.box[1] / self.s)

    @property
    def xs(self) -> np.ndarray:
        """The x the objective sees."""
        return self.u if self.x_user is None else self.x_user

    def user(self, u: np.ndarray) -> np.ndarray:
        assert self.s is not None
        x = self.s * u
        return x if self.box is None else np.clip(x, *self.box, out=x)

    def start(self, f0: np.ndarray) -> None:
        """The step's gradient scale, once each f(x0) is known."""
        if self.s is None:
            return
        if self.auto_f:
            fs = np.where(np.isfinite(f0) & (f0 != 0), np.abs(f0), 1.0)
        else:
            fs = np.full(len(f0), self.f_scale)
        self.gs = self.s / fs.astype(self.s.dtype)[:, None]

    def loop_arguments(self) -> dict[str, Any]:
        if self.s is None:
            return {}
        return dict(scale=self.s, grad_scale=self.gs,
                    user_lower=None if self.box is None else self.box[0],
                    user_upper=None if self.box is None else self.box[1])


def _solve(method: _Method, setup: _Setup, problems: _Problems | _CompiledProblems,
           x: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None, callback, style,
           sync) -> dict:
    if isinstance(problems, _CompiledProblems):
        return _solve_compiled(setup, problems, x, box, callback, style, sync)
    B, n = x.shape
    if box is not None:
        np.clip(x, box[0], box[1], out=x)
    sc = _RowScaling(setup, x, box)
    lower, upper = (None, None) if sc.bounds is None else sc.bounds
    user_lower, user_upper = (None, None) if sc.box is None else sc.box
    X, F, G = sc.xs.copy(), np.full(B, np.nan), np.zeros_like(x)
    NIT, STATUS = np.zeros(B, np.int64), np.full(B, _Status.RUNNING, np.int64)
    NB = np.zeros(B, np.int64)
    states = [np.zeros_like(x) if used else None for used in setup.state_used]
    states += [None] * (3 - len(states))
    maxiter, maxfev = setup.maxiter, setup.maxfev
    disp, every = setup.loop["disp"], setup.loop["disp_every"]
    f, g = _start(lambda: problems(sc.xs, user_lower, user_upper) if B else
                  (np.zeros(0), np.zeros((0, n), x.dtype)), sync, disp)
    sc.start(np.asarray(f, np.float64))
    hooks = None
    if style is not None or disp:
        def hooks(nit, m, xs, fs, gs, idx):
            # the running problems took iteration nit (those converging now included)
            stopped = False
            if style is not None:
                running = idx[:m]
                X[running], F[running], G[running] = xs[:m], fs[:m], gs[:m]
                NIT[running] = nit
                try:
                    if style == "x":
                        callback(X.copy())
                    else:
                        from scipy.optimize import OptimizeResult

                        mask = STATUS == _Status.RUNNING
                        callback(intermediate_result=OptimizeResult(
                            x=X.copy(), fun=F.copy(), jac=G.copy(), nit=NIT.copy(),
                            running=mask))
                except StopIteration:
                    stopped = True
            if disp and nit % every == 0:
                print(f"{nit:>8} {m:>9} {np.median(fs[:m]):>14.6e}", file=sys.stdout)
            return stopped
    copy = np.ascontiguousarray
    _kernels.many_loop(problems, setup.algorithm.c_id, setup.hyper, setup.lr_fn, sc.u,
                       copy(f, np.float64).copy(), g, states,
                       np.full(B, setup.aux_initial), lower, upper, setup.max_grad_norm,
                       setup.clip_value, None if setup.rows is None else setup.rows.copy(),
                       setup.fields, copy(setup.gtol, np.float64).copy(),
                       copy(setup.ftol, np.float64).copy(), copy(setup.xtol, np.float64).copy(),
                       None if maxiter is None else copy(maxiter, np.int64).copy(),
                       None if maxfev is None else copy(maxfev, np.int64).copy(),
                       X, F, G, NIT, STATUS, hooks, sync if sync.lockstep else None,
                       x_user=sc.x_user, plateau=setup.plateau, lr_col=setup.lr_col,
                       backtrack=setup.backtrack, nbacktrack=NB, **sc.loop_arguments())
    return dict(x=X, fun=F, jac=G, nit=NIT, nfev=problems.nfev, njev=problems.njev,
                status=STATUS, nbacktrack=NB)


def _solve_compiled(setup: _Setup, problems: _CompiledProblems, x: np.ndarray,
                    box: tuple[np.ndarray, np.ndarray] | None, callback, style,
                    sync) -> dict:
    """_solve with a C objective: the fits run in C (_kernels._fit_rows) in blocks of
    iterations; between blocks, what needs Python (schedule, callback, disp, the
    lockstep of a distributed run, signals). The same results as _solve."""
    B, n = x.shape
    if box is not None:
        np.clip(x, box[0], box[1], out=x)
    sc = _RowScaling(setup, x, box)
    u = sc.u
    lower, upper = (None, None) if sc.bounds is None else sc.bounds
    F, G = np.full(B, np.nan), np.zeros_like(x)
    NIT, STATUS = np.zeros(B, np.int64), np.full(B, _Status.RUNNING, np.int64)
    NB = np.zeros(B, np.int64)
    rows = None if setup.rows is None else setup.rows.copy()  # (each problem's own lr)
    pbest = pcounts = None
    if setup.plateau is not None:
        pbest, pcounts = np.full(B, setup.plateau.best), np.zeros((B, 3), np.int64)
    nfev = problems.nfev
    states = [np.zeros_like(x) if used else None for used in setup.state_used]
    states += [None] * (3 - len(states))
    aux = np.full(B, setup.aux_initial)
    gtol, ftol, xtol = (np.ascontiguousarray(a, np.float64)
                        for a in (setup.gtol, setup.ftol, setup.xtol))
    maxiter, maxfev = setup.maxiter, setup.maxfev
    disp, every = setup.loop["disp"], setup.loop["disp_every"]

    pace = _Pace(B)

    def advance(t0: int, t1: int, start: bool, last_step: int) -> None:
        lrs = None
        if setup.lr_fn is not None and t1 > t0:
            # (steps after every problem's maxiter are never made: not evaluated)
            lrs = np.full(t1 - t0, np.nan)
            for t in range(t0 + 1, min(t1, last_step) + 1):
                lrs[t - t0 - 1] = _kernels.lr_at(setup.lr_fn, t, 0)
        begin = 0
        scaled = {} if start else sc.loop_arguments()  # (gs: once f(x0) is known)
        if start and sc.s is not None:
            scaled = dict(sc.loop_arguments(), grad_scale=sc.s)
        while begin < B:  # pace.rows problems per compiled call
            sl = slice(begin, min(B, begin + pace.rows))
            begin = sl.stop
            if not (STATUS[sl] == _Status.RUNNING).any():
                continue
            part = lambda a: None if a is None else a[sl]  # noqa: E731
            start_time = time.perf_counter()
            _kernels._fit_rows(
                problems.capsule, problems.first + sl.start, setup.algorithm.c_id,
                setup.hyper, t0, t1, start, lrs, u[sl], G[sl], F[sl],
                [part(a) for a in states], aux[sl], part(lower), part(upper),
                setup.max_grad_norm, setup.clip_value, part(rows), setup.fields, gtol[sl],
                ftol[sl], xtol[sl], part(maxiter), part(maxfev), NIT[sl], nfev[sl],
                STATUS[sl], plateau=setup.plateau, lr_col=setup.lr_col, pbest=part(pbest),
                pcounts=part(pcounts), backtrack=setup.backtrack, nbacktrack=NB[sl],
                **{k: part(v) for k, v in scaled.items()})
            pace.took(time.perf_counter() - start_time)

    _start(lambda: advance(0, 0, True, 0), sync, disp)
    sc.start(F)
    if sc.s is not None:  # (as adamc.minimize: a step gradient that overflows at x0)
        with np.errstate(over="ignore", invalid="ignore"):
            bad = (STATUS == _Status.RUNNING) & ~np.isfinite(sc.gs * G).all(axis=1)
        STATUS[bad] = _Status.NONFINITE
    nit = 0
    while True:
        running = STATUS == _Status.RUNNING
        took = np.zeros(B, bool)  # the problems that made iteration nit (then running)
        stopped, error = False, None
        try:
            if running.any():
                t1 = nit + (pace.block if style is None else 1)
                if disp:
                    t1 = min(t1, (nit // every + 1) * every)
                last_step = t1 if maxiter is None else min(t1, int(maxiter[running].max()))
                advance(nit, t1, False, last_step)
                nit = t1
                took = running & ((STATUS == _Status.RUNNING) | (
                    (NIT == nit) & ((STATUS == _Status.CONVERGED) |
                                    (STATUS == _Status.MAXFEV))))
                m = int(took.sum())
                if style is not None and m:
                    try:
                        if style == "x":
                            callback(u.copy() if sc.s is None else sc.user(u))
                        else:
                            from scipy.optimize import OptimizeResult

                            callback(intermediate_result=OptimizeResult(
                                x=u.copy() if sc.s is None else sc.user(u), fun=F.copy(), jac=G.copy(), nit=NIT.copy(),
                                running=took.copy()))
                    except StopIteration:
                        stopped = True
                if disp and nit % every == 0 and m:
                    print(f"{nit:>8} {m:>9} {np.median(F[took]):>14.6e}", file=sys.stdout)
        except Exception as exc:
            if not sync.lockstep:
                raise
            error = exc
        stopped, more = sync.iteration(stopped, error, bool(took.any()))
        if stopped:
            STATUS[took] = _Status.CALLBACK
            break
        if not (STATUS == _Status.RUNNING).any():
            if not more:
                break
            nit += 1  # a lockstep rank whose problems are done waits for the others
    return dict(x=u if sc.s is None else sc.user(u), fun=F, jac=G, nit=NIT, nfev=nfev,
                njev=nfev.copy(), status=STATUS, nbacktrack=NB)


class _Pace:
    """How much one compiled call of _solve_compiled does: ``rows`` problems (a slice)
    for ``block`` iterations, adapted so that a call takes 30-60 ms. Python runs
    between calls: Ctrl-C is seen within one call, whatever B and the objective's
    cost (down to one problem's iterations), and a call's end, which waits for the
    slowest thread's last chunk, is rare. The first calls are small (a few problems),
    then grow: first the rows, up to every problem, then the block of iterations, up
    to 4096 (the table of coefficients)."""

    def __init__(self, B: int):
        self.B, self.rows, self.block = B, min(B, 4), 1

    def took(self, seconds: float) -> None:
        if seconds < 0.03:
            if self.rows < self.B:
                self.rows = min(self.B, 2 * self.rows)
            else:
                self.block = min(2 * self.block, 1 << 12)
        elif seconds > 0.06:
            shrink = 0.03 / seconds
            if self.block > 1:
                self.block = max(1, int(self.block * shrink))
            else:
                self.rows = max(1, int(self.rows * shrink))


def _message(status: np.ndarray) -> str:
    B = status.size
    if B == 0:
        return "No problems."
    values, counts = np.unique(status, return_counts=True)
    parts = [f"{c} {_STATUS_TEXT.get(int(v), f'status {v}')} (status {int(v)})"
             for v, c in zip(values, counts)]
    head = ("Optimization terminated successfully for every problem: "
            if values.tolist() == [_Status.CONVERGED]
            else f"{int(counts[values == _Status.CONVERGED].sum())} of {B} "
            f"problems converged: ")
    return head + ", ".join(parts) + "."


# ----------------------------------------------------------------------------------
# MPI: the problems split across the ranks

class _Lockstep:
    """With a callback, every rank iterates together so that a StopIteration (or an
    error) on any rank stops every rank at the same iteration."""

    lockstep = True

    def __init__(self, comm):
        self.comm = comm

    def iteration(self, stopped, error, running):
        from .._parallel.collective import _agree, _mpi

        MPI = _mpi()
        code = np.array([error is not None, stopped, running], np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, code, op=MPI.MAX)
        if code[0]:
            _agree(self.comm, error)
        return bool(code[1]), bool(code[2])


def _distributed(comm, method, setup, problems, x, box, callback, style, fields):
    from .._parallel.collective import _agree, _check_same, _communicator

    comm = _communicator(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    _check_same(comm, fields, "input of minimize_many")
    B = x.shape[0]
    bounds = [B * r // size for r in range(size + 1)]
    sl = slice(bounds[rank], bounds[rank + 1])
    local = problems
    local.batch = tuple(a[sl] for a in problems.batch)
    local.nfev, local.njev = problems.nfev[sl].copy(), problems.njev[sl].copy()
    local.select(np.arange(sl.stop - sl.start))
    if isinstance(local, _CompiledProblems):
        local.first = sl.start  # the C objective gets the problems' own indices
    sub_box = None if box is None else (box[0][sl].copy(), box[1][sl].copy())
    result, error = None, None
    sync = _Lockstep(comm) if style is not None else _Local()
    try:
        result = _solve(method, setup.subset(sl), local, np.ascontiguousarray(x[sl]),
                        sub_box, callback, style, sync)
    except Exception as exc:
        error = exc
    _agree(comm, error)
    parts = comm.allgather(result)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# ----------------------------------------------------------------------------------
# Public entry point

def minimize_many(fun: Callable, x0: Any, args: tuple = (), method: str = "adam",
                  jac: Any = None, bounds: Any = None, callback: Callable | None = None,
                  options: dict[str, Any] | None = None, batch_args: tuple = ()):
    """Minimize B independent problems of n parameters at once, each with its own
    stopping test.

    Every iteration calls ``fun`` once on the problems still running (an (m, n)
    array) and updates them with one vectorised step. A problem that converges or
    fails stops being evaluated and updated, so an iteration costs what its running
    problems cost. Each problem's result (``x``, ``fun``, ``nit``, ``status``) is
    the same bits as :func:`adamc.minimize` on that problem alone with the same
    method and options, provided ``fun`` computes each row as the single-problem
    objective does.

    Parameters
    ----------
    fun : callable or scipy.LowLevelCallable
        ``fun(x, *args, *batch_rows) -> f`` with ``x`` of shape (m, n): the rows of
        the m problems still running, in increasing order (a read-only array), and
        ``f`` of shape (m,); with ``jac=True`` it returns ``(f, g)``, ``g`` of
        shape (m, n). Or a compiled objective of one problem: a
        ``scipy.LowLevelCallable`` of C signature ``double (int n, double *x,
        double *grad, intptr_t i, void *user_data)`` (i: the problem's row in
        ``x0``; it fills ``grad`` and returns f). Every fit then runs in C, the
        problems split across the adamc threads without the GIL, with the same
        results; ``jac=True`` is implied, float64 only, no ``args`` or
        ``batch_args`` (see docs/compiled-objectives.md).
    x0 : array_like, shape (B, n)
        Starting points, one row per problem. float32 optimizes in float32, float64
        (or integers) in float64.
    args : tuple, optional
        Extra arguments of ``fun`` and ``jac``, the same for every problem.
    method : str, optional
        One of the methods of :func:`adamc.minimize` (default ``"adam"``), except
        ``"prodigy"`` and the schedule-free ones (their steps keep state over all of a
        problem's parameters).
    jac : {True, callable, None, '2-point', '3-point'}, optional
        Gradient: returned by ``fun`` (True), computed by ``jac(x, *args,
        *batch_rows)`` (shape (m, n)), or by finite differences (None and
        '2-point': n + 1 calls of ``fun`` per iteration, each on the (m, n) array of
        running problems; '3-point': 2n + 1).
    bounds : optional
        Per parameter: a :class:`scipy.optimize.Bounds` of n values or a sequence
        of n ``(low, high)`` pairs (None for no bound). Per problem: a ``Bounds``
        whose ``lb`` and ``ub`` have shape (B, n), or an array of shape (B, n, 2).
        Iterates are projected onto the box and x0 is clipped into it.
    callback : callable, optional
        ``callback(intermediate_result)``, called after every iteration with an
        OptimizeResult of arrays: ``x`` (B, n), ``fun`` (B,), ``jac`` (B, n),
        ``nit`` (B,) and ``running`` (B,) bool (the problems that took this
        iteration; the others hold their final values); or ``callback(x)`` with a
        copy of ``x`` (B, n). Raising StopIteration ends every running problem
        with status 99.
    options : dict, optional
        The options of :func:`adamc.minimize_adam` (and of the other methods):
        the method's hyperparameters and ``maxiter``, ``maxfev``, ``gtol``,
        ``ftol``, ``xtol``, ``tol``, ``finite_diff_rel_step``, ``disp``,
        ``disp_every``, ``comm``, each applied to every problem separately.
        ``lr``, ``eps``, ``weight_decay``, ``momentum``, ``dampening``, ``alpha``,
        ``momentum_decay``, ``max_grad_norm``, ``clip_value``, each member of
        ``betas``, and ``gtol``, ``ftol``, ``xtol``, ``maxiter``, ``maxfev`` may be
        arrays of shape (B,): one value per problem. ``x_scale`` may be an array
        of shape (n,) or (B, n) (``"auto"``: each problem's ``abs(x0)``) and
        ``f_scale="auto"`` takes each problem's own ``abs(f(x0))``; a
        ``reduce_on_plateau`` lr (the default) is stepped by each problem with its
        own f, and ``nonfinite="backtrack"`` backs each problem off alone.
        ``comm`` (an mpi4py communicator) splits the problems into contiguous
        shares, one per rank, and returns the whole result on every rank
        (collective: every rank passes the same inputs, checked). ``batches``,
        ``checkpoint``, ``resume``, ``return_all`` and ``progress`` are not
        supported.
    batch_args : tuple of array_like, optional
        Per-problem data: arrays whose first axis has length B. ``fun`` receives
        their rows of the running problems after ``args``, as read-only arrays (the
        rows are copies once some problems have stopped, so writes could not reach
        your arrays; keep state that ``fun`` updates in ``args``).

    Returns
    -------
    scipy.optimize.OptimizeResult
        Arrays with one entry per problem: ``x`` (B, n), ``fun`` (B,), ``jac``
        (B, n), ``nit``, ``nfev``, ``njev``, ``nbacktrack``, ``status`` and
        ``success`` (B,); the
        status codes are those of :func:`adamc.minimize_adam` (0 converged, 1
        maxiter, 2 maxfev, 3 non-finite objective or gradient: ``x`` is then that
        problem's last finite iterate, 99 callback stop). ``message`` counts the
        problems of each status.

    Examples
    --------
    >>> import numpy as np, adamc
    >>> targets = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 4.0]])
    >>> def fun(x, t):                       # one quadratic per row
    ...     r = x - t
    ...     return (r * r).sum(axis=1), 2 * r
    >>> res = adamc.minimize_many(fun, np.zeros((3, 2)), jac=True, batch_args=(targets,),
    ...                           options={"lr": 0.1, "gtol": 1e-6, "maxiter": 5000})
    >>> bool(res.success.all()), np.allclose(res.x, targets, atol=1e-5)
    (True, True)
    """
    from scipy.optimize import OptimizeResult

    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of "
                         f"{', '.join(repr(m) for m in _METHODS)}")
    m = _METHODS[method.lower()]
    if METHODS[m.name][0].engine is not None:
        # the rows are stepped by the elementwise kernels with one scalar state per
        # problem; these methods also keep state over all of a problem's parameters
        raise ValueError(f"method {m.name!r} is not supported by minimize_many yet (its "
                         f"step keeps state over all parameters); fit the problems one "
                         f"by one with adamc.minimize")
    options = dict(options or {})
    comm = options.pop("comm", None)
    x = _prepare_x0_many(x0)
    setup = _Setup(m, options, x, stacklevel=2)
    box = _prepare_bounds_many(bounds, x)
    style = _callback_style(callback)
    problems: _Problems | _CompiledProblems
    if is_lowlevel(fun):
        problems = _CompiledProblems(fun, jac, args, batch_args, x)
    else:
        problems = _Problems(fun, jac, args, batch_args, x,
                             setup.loop["finite_diff_rel_step"])
    if comm is not None:
        fields = [("method", m.name), ("jac", problems.mode),
                  ("finite_diff_rel_step", repr(getattr(problems, "rel_step", None))),
                  ("x0", _fingerprint(x)),
                  ("bounds", "none" if box is None else _fingerprint(box[0]) +
                   _fingerprint(box[1])),
                  ("callback", repr(style))] + setup.fields_text()
        out = _distributed(comm, m, setup, problems, x, box, callback, style, fields)
    else:
        out = _solve(m, setup, problems, x, box, callback, style, _Local())
    status = out["status"]
    result = OptimizeResult(**out, success=status == _Status.CONVERGED,
                            message=_message(status))
    if setup.loop["disp"]:
        print(result.message)
    return result

