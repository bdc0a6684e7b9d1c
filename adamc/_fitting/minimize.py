"""adamc's optimizers as ``scipy.optimize.minimize`` methods.

``minimize_<name>`` are callables for ``scipy.optimize.minimize(..., method=...)``;
``minimize(fun, x0, method="<name>")`` is the same with SciPy's signature. The loop
here owns the iteration (objective calls, stopping tests, callbacks); every update is
one ``step()`` of an adamc optimizer, whose kernel also projects onto the bounds.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import sys
import textwrap
import warnings
from typing import Any, Callable

import numpy as np

from .. import _kernels, optim, schedules
from ..algorithms import HYPERPARAMETERS, METHODS, SHARED_OPTION_DOCS
from .batches import _Batches, minibatches
from .._core.format import _fingerprint
from .problem import (_callback_style, _Objective, _prepare_bounds, _prepare_scale,
                       _prepare_x0)
from .._core.port import Port
from ..optim import Optimizer

# The minimize_<name> functions are built from the table in adamc._fitting.methods.
__all__ = ["minimize", "minibatches"]

# (the statuses and messages are defined once, in adamc/_status.pxi)
_Status = _kernels._Status
_STOP_MESSAGE = _kernels._STOP_MESSAGE
_MAXITER_MESSAGE = _kernels._MAXITER_MESSAGE
_MAXFEV_MESSAGE = _kernels._MAXFEV_MESSAGE


class _Method:
    """A minimize method: an optimizer class and the keyword arguments it fixes."""

    def __init__(self, name: str, cls: type[Optimizer], fixed: dict[str, Any]):
        self.name, self.cls, self.fixed = name, cls, fixed
        params = inspect.signature(cls.__init__).parameters
        # non-finite values end the loop with status 3, so the policy is not an option
        self.hyper = {k: p.default for k, p in params.items()
                      if k not in ("self", "params", "nonfinite") and k not in fixed}


_METHODS: dict[str, _Method] = {}


def _register(name: str, cls: type[Optimizer], **fixed: Any) -> None:
    _METHODS[name] = _Method(name, cls, fixed)


for _name, (_, _m) in METHODS.items():
    _register(_name, getattr(optim, _m.cls), **_m.fixed)

# gtol of a run whose lr is reduced on plateaus: |g|_inf <= this holds for 0 only
_ZERO_GRADIENT = float(np.finfo(np.float64).tiny)

# (the default of an option whose default depends on others)
_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<default>"})()

_LOOP_DEFAULTS: dict[str, Any] = dict(
    maxiter=None, maxfev=None, gtol=None, ftol=0.0, xtol=0.0, tol=None, disp=False,
    disp_every=None, progress=False, batches=None, return_all=False,
    finite_diff_rel_step=None, checkpoint=None, checkpoint_every=None, resume=False,
    comm=None, x_scale=_UNSET, f_scale=_UNSET, nonfinite=_UNSET)

# Methods whose learning rate stays a number by default: their designs need no
# schedule (Prodigy estimates the step size, schedule-free averages the iterates).
_NO_DEFAULT_SCHEDULE = ("prodigy", "adamw_schedulefree", "sgd_schedulefree")
# Methods whose step is not normalized by the gradient's size: x_scale and f_scale
# would change what their lr means, so they are off by default.
_UNSCALED_BY_DEFAULT = ("sgd", "sgd_schedulefree")


def default_lr(method: _Method) -> Any:
    """The learning rate of a deterministic run (no batches) when options give none:
    the method's default rate, reduced on plateaus of f (docs/scipy.md, "Defaults")."""
    lr = method.hyper.get("lr")
    if method.name in _NO_DEFAULT_SCHEDULE or not isinstance(lr, float):
        return lr
    first = float(f"{lr * PLATEAU['lr_multiplier']:.12g}")  # (0.01, not 0.010000000000000002)
    return schedules.reduce_on_plateau(first, factor=PLATEAU["factor"],
                                       patience=PLATEAU["patience"],
                                       threshold=PLATEAU["threshold"],
                                       min_lr=float(f"{first * PLATEAU['min_lr']:.12g}"))


#: The plateau schedule of default_lr: its first rate (the method's default times
#: lr_multiplier), factor, patience, threshold, and min_lr relative to the first rate
#: (chosen on benchmarks/bench_fitting.py's problems: docs/scipy.md, "Defaults").
PLATEAU: dict[str, Any] = dict(lr_multiplier=10.0, factor=0.5, patience=30, threshold=0.0,
                               min_lr=1e-6)


#: A count of iterations or evaluations of this size or more means no limit (the loops
#: count in int64).
NO_LIMIT = 2**63 - 1


def check_count(value: Any, name: str, minimum: int, default: int | None) -> int | None:
    """An iteration or evaluation count: None (``default``), an int >= ``minimum`` or a
    float with an integral value (SciPy's methods accept ``maxiter=2e4``). Counts past
    2**63 - 1 mean no limit: they become :data:`NO_LIMIT`."""
    if value is None:
        return default
    ok = isinstance(value, (int, np.integer, float, np.floating)) and \
        not isinstance(value, (bool, np.bool_))
    if ok and isinstance(value, (float, np.floating)):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")
    return min(int(value), NO_LIMIT)


def check_tolerance(value: Any, name: str) -> float:
    """A stopping tolerance: a finite number >= 0."""
    try:
        return _kernels.check_nonnegative(value, name)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc)) from None



def _check_options(method: _Method, options: dict[str, Any], stacklevel: int) -> dict[str, Any]:
    from scipy.optimize import OptimizeWarning

    unknown = {k: v for k, v in options.items()
               if k not in method.hyper and k not in _LOOP_DEFAULTS}
    if unknown:
        warnings.warn(f"Unknown solver options: {', '.join(map(str, unknown))}",
                      OptimizeWarning, stacklevel=stacklevel + 1)
    opts = dict(_LOOP_DEFAULTS)
    opts.update({k: v for k, v in options.items() if k in _LOOP_DEFAULTS})
    batched = opts["batches"] is not None

    opts["maxiter"] = check_count(opts["maxiter"], "maxiter", 0, None if batched else 20000)
    opts["maxfev"] = check_count(opts["maxfev"], "maxfev", 1, None)
    gtol = opts["gtol"] if opts["gtol"] is not None else opts["tol"]
    for key in ("x_scale", "f_scale"):
        if opts[key] is _UNSET:
            opts[key] = None if batched or method.name in _UNSCALED_BY_DEFAULT else "auto"
    nonfinite = opts["nonfinite"]
    if nonfinite is _UNSET:
        nonfinite = "stop" if batched else "backtrack"
    if nonfinite not in ("backtrack", "stop"):
        raise ValueError(f"nonfinite must be 'backtrack' or 'stop', got {nonfinite!r}")
    if nonfinite == "backtrack" and batched:
        raise ValueError("nonfinite='backtrack' evaluates f again at shorter steps: it needs "
                         "a deterministic objective, not batches (use nonfinite='stop')")
    opts["nonfinite"] = nonfinite
    opts["gtol"] = None if gtol is None else check_tolerance(gtol, "gtol")
    opts["ftol"] = check_tolerance(opts["ftol"], "ftol")
    opts["xtol"] = check_tolerance(opts["xtol"], "xtol")
    for flag in ("disp", "return_all", "progress", "resume"):
        if not isinstance(opts[flag], (bool, np.bool_)):
            raise TypeError(f"{flag} must be a bool, got {opts[flag]!r}")
    every = opts["disp_every"]
    if every is None:
        every = max(1, (opts["maxiter"] or 2000) // 20)
    opts["disp_every"] = check_count(every, "disp_every", 1, 1)
    step = opts["finite_diff_rel_step"]
    if step is not None:
        step = _kernels.check_nonnegative(step, "finite_diff_rel_step")
        if step == 0:
            raise ValueError("finite_diff_rel_step must be > 0")
    opts["finite_diff_rel_step"] = step
    if opts["checkpoint"] is not None and not isinstance(opts["checkpoint"], (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path, got {opts['checkpoint']!r}")
    opts["checkpoint_every"] = check_count(opts["checkpoint_every"], "checkpoint_every", 1, 100)
    hyper = dict(method.hyper)
    if not batched and "lr" in hyper:
        hyper["lr"] = default_lr(method)
    hyper.update({k: v for k, v in options.items() if k in method.hyper})
    hyper.update(method.fixed)
    plateau = isinstance(hyper.get("lr"), _kernels._ReduceOnPlateau)
    if plateau:
        hyper["lr"] = copy.deepcopy(hyper["lr"])  # (the run steps its own copy)
    if opts["gtol"] is None:
        # a plateau schedule ends the run when it is exhausted; until then only a
        # gradient of exactly 0 (a point the steps cannot leave) ends it
        opts["gtol"] = 0.0 if batched else _ZERO_GRADIENT if plateau else 1e-5
    return {"loop": opts, "hyper": hyper}


# ----------------------------------------------------------------------------------
# The loop

def _run_fields(method: _Method, parsed: dict[str, Any], x: np.ndarray,
                box: tuple[np.ndarray, np.ndarray] | None,
                objective: _Objective) -> list[tuple[str, str]]:
    """What every rank of a distributed run must pass identically."""
    loop = parsed["loop"]
    # the gradient mode decides how many evaluations an iteration makes (maxfev)
    fields = [("method", method.name), ("jac", objective.mode),
              ("finite_diff_rel_step", repr(getattr(objective, "rel_step", None))),
              ("x0", _fingerprint(x)),
              ("bounds", "none" if box is None else _fingerprint(box[0]) + _fingerprint(box[1]))]
    fields += [(f"options['{k}']", _fingerprint(v)) for k, v in parsed["hyper"].items()]
    fields += [(f"options['{k}']", repr(loop[k])) for k in (
        "maxiter", "maxfev", "gtol", "ftol", "xtol", "return_all", "checkpoint_every",
        "resume", "nonfinite")]
    fields += [(f"options['{k}']", _fingerprint(loop[k])) for k in ("x_scale", "f_scale")]
    fields += [("options['checkpoint']", repr(None if loop["checkpoint"] is None
                                              else os.fspath(loop["checkpoint"]))),
               ("whether options['batches'] is given", repr(loop["batches"] is not None))]
    return fields


def _run(method: _Method, fun, x0, args, jac, bounds, constraints, callback, options,
         hess=None, hessp=None, stacklevel=3):
    from scipy.optimize import OptimizeResult

    if constraints is not None and not (hasattr(constraints, "__len__") and len(constraints) == 0):
        raise ValueError(f"method {method.name!r} does not support constraints; use one of "
                         f"SciPy's methods that do: 'SLSQP', 'trust-constr', 'COBYLA' or "
                         f"'COBYQA'")
    for name, value in (("hess", hess), ("hessp", hessp)):
        if value is not None:
            warnings.warn(f"Method {method.name} does not use Hessian information ({name}).",
                          RuntimeWarning, stacklevel=stacklevel)
    peers = _collaborator(options.get("comm"))
    error = None
    try:
        parsed = _check_options(method, options, stacklevel)
        loop = parsed["loop"]
        x = _prepare_x0(x0)
        box = _prepare_bounds(bounds, x)
        if box is not None:
            np.clip(x, box[0], box[1], out=x)
        # (a resumed run steps the variables of the checkpoint, scaled or not: separate)
        scaling = _Scaling(loop["x_scale"], loop["f_scale"], x, box, separate=loop["resume"])
        style = _callback_style(callback)
        objective = _Objective(fun, jac, args, x, box, loop["finite_diff_rel_step"])
        _check_compiled(objective, loop)
        opt = method.cls(scaling.u, **parsed["hyper"])
        if scaling.bounds is not None:
            Port.set_bounds(opt, *scaling.bounds)
        batches = _Batches(loop["batches"])
        ckpt = _Checkpointer(loop, method, peers, scaling)
    except Exception as exc:
        error = exc
    # every rank agrees on its inputs before any collective step (no rank waits)
    peers.agree(error)
    peers.start(x, lambda: _run_fields(method, parsed, x, box, objective))

    def evaluate(first: bool) -> tuple[float, np.ndarray]:
        return peers.evaluate(objective, batches, first)

    gtol = loop["gtol"]
    status = message = None

    restored = ckpt.restore(objective, batches)
    scaling.to_user()
    if restored is not None:
        opt, nit, f, g, status, message = restored
        gnorm = _kernels.max_abs(g)
    else:
        f, g = evaluate(True)
        nit = 0
        gnorm = _kernels.max_abs(g)
        if not (math.isfinite(f) and math.isfinite(gnorm)):
            status, message = _kernels._START_OUTCOMES["nonfinite"]
        elif gtol > 0 and gnorm <= gtol:
            status, message = _kernels._START_OUTCOMES["gtol"]
    scaling.start(f)
    allvecs = [x.copy()] if loop["return_all"] else None
    reporter = _Reporter(loop, opt) if (loop["disp"] or loop["progress"]) and \
        peers.rank == 0 else None
    if reporter:
        reporter.row(nit, f, gnorm)

    if status is None:
        # the iterations run in compiled code (adamc/_minimize_loop.pxi), calling Python
        # only for what is written in Python
        local = isinstance(peers, _Local) and loop["batches"] is None
        source = _SOURCES[objective.mode] if local else "python"
        hooks = _Hooks(x, allvecs, reporter, callback, style, peers)
        reason, nit, f, g, nbacktrack = _kernels.minimize_loop(
            opt, scaling.u, f, g, nit, source=source, objective=objective,
            evaluate=evaluate if source == "python" else None,
            capsule=getattr(objective, "capsule", None),
            hooks=hooks if hooks.needed else None,
            checkpoint=ckpt.writer(opt, objective, batches),
            checkpoint_every=loop["checkpoint_every"],
            batches=None if loop["batches"] is None else batches,
            maxiter=loop["maxiter"], maxfev=loop["maxfev"], gtol=gtol, ftol=loop["ftol"],
            xtol=loop["xtol"], backtrack=loop["nonfinite"] == "backtrack",
            stop_on_plateau=True, **scaling.loop_arguments())
        scaling.nbacktrack += nbacktrack
        scaling.to_user()
        status, message = _OUTCOMES[reason]
        if reason == "nonfinite":
            message = message.format(nit + 1, nit)

    batches.close(status)
    if status != _Status.NONFINITE:  # (then the optimizer's state is one step ahead)
        ckpt.write(opt, nit, f, g, objective, batches, status, message)
    if status != _Status.NONFINITE and hasattr(opt, "eval") and loop["batches"] is None:
        # schedule-free methods: the result is the averaged point x, evaluated there
        opt.eval()
        scaling.to_user()
        f, g = evaluate(False)
    result = OptimizeResult(x=x, fun=f, jac=np.array(g, copy=True), nit=nit,
                            nfev=objective.nfev, njev=objective.njev, status=status,
                            success=status == _Status.CONVERGED, message=message,
                            nbacktrack=scaling.nbacktrack)
    if opt.ema_params is not None:  # the ema option: the weight average of the iterates
        result["x_ema"] = scaling.user(opt.ema_params[0])
    if allvecs is not None:
        result["allvecs"] = allvecs
    if reporter:
        reporter.close(result)
    return result


class _Scaling:
    """The x_scale and f_scale options: the optimizer minimizes f / f_scale over
    u = x / s; the objective, the callback, the bounds the user gave and the result
    see x = s u (clipped into the bounds). The optimizer's gradient is
    (s / f_scale) g. Without either option u is x itself and nothing is converted."""

    def __init__(self, x_scale: Any, f_scale: Any, x: np.ndarray,
                 box: tuple[np.ndarray, np.ndarray] | None, separate: bool = False):
        self.x, self.box = x, box
        self.s = _prepare_scale(x_scale, x)
        self.f_scale = _prepare_f_scale(f_scale)  # (None: from f(x0), "auto")
        self.auto_f = f_scale == "auto"
        self.nbacktrack = 0  # (with those of the run a checkpoint resumed)
        self.gs = None
        if self.s is None and (separate or self.auto_f or self.f_scale != 1.0):
            self.s = np.ones_like(x)  # (the same bits as no scale: s u = u)
        if self.s is None:
            self.u = x
            self.bounds = None if box is None else ([box[0]], [box[1]])
            return
        self.u = x / self.s
        self.bounds = None if box is None else ([box[0] / self.s], [box[1] / self.s])
        self.to_user()

    def start(self, f0: float) -> None:
        """The gradient's scale, once f(x0) is known ("auto": abs(f(x0)), or 1 where
        that is 0 or not finite)."""
        if self.s is None:
            return
        if self.auto_f:
            self.f_scale = abs(f0) if math.isfinite(f0) and f0 != 0 else 1.0
        self.gs = self.s / self.x.dtype.type(self.f_scale) if self.f_scale != 1.0 \
            else self.s.copy()

    def adopt(self, saved: np.ndarray | None, f_scale: float) -> None:
        """The scales of a resumed checkpoint (None, 1.0: it was written without)."""
        assert self.s is not None  # (a resumed run always steps separate variables)
        self.s[...] = 1 if saved is None else saved
        self.auto_f, self.f_scale = False, f_scale

    def user(self, u: np.ndarray) -> np.ndarray:
        """x = s u, clipped into the bounds, as a new array."""
        if self.s is None:
            return u.copy()
        x = self.s * u
        return x if self.box is None else np.clip(x, *self.box, out=x)

    def to_user(self) -> None:
        """x = s u, in place."""
        if self.s is not None:
            np.multiply(self.s, self.u, out=self.x)
            if self.box is not None:
                np.clip(self.x, *self.box, out=self.x)

    def loop_arguments(self) -> dict[str, Any]:
        if self.s is None:
            return {}
        return dict(scale=self.s, grad_scale=self.gs, x_user=self.x,
                    lower=None if self.box is None else self.box[0],
                    upper=None if self.box is None else self.box[1])


def _prepare_f_scale(value: Any) -> float | None:
    """The f_scale option: "auto" (None here: decided at x0), or a number > 0."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"f_scale must be 'auto' or a number > 0, got {value!r}")
        return None
    return 1.0 if value is None else _kernels.check_positive(value, "f_scale")


def _check_compiled(objective: _Objective, loop: dict[str, Any]) -> None:
    """Options a C objective cannot serve (its signature has no batch argument; a
    collective run evaluates through Python)."""
    if objective.mode != "compiled":
        return
    for key, why in (("batches", "its C signature takes no batch"),
                     ("comm", "a distributed run evaluates f through Python")):
        if loop[key] is not None:
            raise ValueError(f"options['{key}'] cannot be used with a LowLevelCallable "
                             f"objective ({why}); pass a Python function")


# how the compiled loop evaluates each objective mode of _Objective (a run with
# batches or a collaborator other than _Local goes through evaluate(): "python")
_SOURCES = {"compiled": "c", "combined": "pair", "separate": "separate",
            "2-point": "python", "3-point": "python"}

# the end of a run by the reason the compiled loop returns: (status, message)
_OUTCOMES = _kernels._LOOP_OUTCOMES
assert set(_OUTCOMES) == set(_kernels.LOOP_REASONS)


class _Hooks:
    """What runs after every iteration of the compiled loop, in this order: the
    iterate stored for return_all, the disp/progress row, the callback, and the
    collaborator's shared stop. Called as ``hooks(nit, f, gnorm) -> stopped``."""

    def __init__(self, x, allvecs, reporter, callback, style, peers):
        self.x, self.allvecs, self.reporter = x, allvecs, reporter
        self.callback, self.style, self.peers = callback, style, peers
        # a collaborator other than _Local stops collectively: called every iteration
        self.needed = (allvecs is not None or reporter is not None or style is not None
                       or not isinstance(peers, _Local))

    def __call__(self, nit: int, f: float, gnorm: float) -> bool:
        x = self.x
        if self.allvecs is not None:
            self.allvecs.append(x.copy())
        if self.reporter:
            self.reporter.row(nit, f, gnorm)
        stopped, failure = False, None
        if self.style is not None:
            from scipy.optimize import OptimizeResult

            try:
                if self.style == "x":
                    self.callback(x.copy())
                else:
                    self.callback(intermediate_result=OptimizeResult(x=x.copy(), fun=f,
                                                                     nit=nit))
            except StopIteration:
                stopped = True
            except Exception as exc:
                failure = exc
        return self.peers.stop(stopped, failure)  # distributed: a stop on any rank stops all


def _collaborator(comm: Any) -> Any:
    """The one place where the distributed parts plug into the driver: with
    options['comm'], the collective collaborator of adamc._fitting.minimize_sync; else _Local."""
    if comm is None:
        return _Local()
    from .minimize_sync import _MinimizeSync

    return _MinimizeSync(comm)


class _Local:
    """The collaborator of a single-process run; adamc._fitting.minimize_sync._MinimizeSync has
    the same interface and makes the run collective (agreement on the inputs, means
    of f and g over the ranks, shared stops and errors, one checkpoint writer)."""

    rank, size = 0, 1

    def agree(self, error: BaseException | None) -> None:
        """Raise error (distributed: on every rank when any rank has one)."""
        if error is not None:
            raise error

    def start(self, x: np.ndarray, fields: Callable[[], list[tuple[str, str]]]) -> None:
        """Begin the run on x (distributed: check that every rank passed the same
        ``fields()``)."""

    def evaluate(self, objective: _Objective, batches: _Batches,
                 first: bool) -> tuple[float, np.ndarray]:
        return objective(batches.first() if first else batches.next())

    def stop(self, stopped: bool, error: BaseException | None) -> bool:
        """Whether the callback stopped the run; raises its error."""
        if error is not None:
            raise error
        return stopped

    def gather_int(self, value: int) -> list[int]:
        return [int(value)]


class _Checkpointer:
    """The ``checkpoint``, ``checkpoint_every`` and ``resume`` options."""

    def __init__(self, loop: dict[str, Any], method: _Method, peers: Any, scaling: _Scaling):
        self.path = loop["checkpoint"]
        self.every = loop["checkpoint_every"]
        self.resume = loop["resume"]
        self.method = method
        self.sync = peers  # the run's collaborator (_Local or _MinimizeSync)
        self.scaling = scaling
        if self.resume and self.path is None:
            raise ValueError("resume=True needs options['checkpoint'], the file to resume from")

    def writer(self, opt, objective, batches) -> Callable[[int, float, np.ndarray], None] | None:
        """What the loop calls every ``checkpoint_every`` iterations (None: no
        checkpoints)."""
        if self.path is None:
            return None
        return lambda nit, f, g: self.write(opt, nit, f, g, objective, batches, None, None)

    def write(self, opt, nit, f, g, objective, batches, status, message) -> None:
        if self.path is None:
            return
        from ..checkpoint import _save_with_extra

        extra = dict(method=self.method.name, nit=nit, fun=f, nfev=objective.nfev,
                     njev=objective.njev, batches_consumed=batches.consumed, status=status,
                     message=message, nbacktrack=self.scaling.nbacktrack,
                     f_scale=self.scaling.f_scale)
        arrays = {"jac": g}
        if self.scaling.s is not None:  # (the optimizer's state is in scaled variables)
            arrays["x_scale"] = self.scaling.s
        # every rank holds the same optimizer: rank 0 writes, every rank learns the outcome
        by_rank = self.sync.gather_int(batches.consumed)
        if len(by_rank) > 1:
            extra["batches_consumed_by_rank"] = by_rank
        error = None
        if self.sync.rank == 0:
            try:
                _save_with_extra(opt, self.path, extra, arrays)
            except Exception as exc:
                error = exc
        self.sync.agree(error)

    def restore(self, objective, batches):
        """restore_local, agreed by every rank with options['comm']."""
        result = error = None
        try:
            result = self.restore_local(objective, batches)
        except Exception as exc:
            error = exc
        self.sync.agree(error)
        where = self.sync.gather_int(-1 if result is None else result[1])
        if len(set(where)) > 1:  # e.g. a file on node-local storage, or relative paths
            missing = [r for r, nit in enumerate(where) if nit < 0]
            raise ValueError(f"{self.path}: every rank must resume from the same checkpoint; "
                             f"ranks {missing or list(range(len(where)))} found "
                             f"{'no file' if missing else 'other iterations'} "
                             f"(iterations by rank: {where}); put the checkpoint where "
                             f"every rank sees it")
        return result

    def restore_local(self, objective, batches):
        """Continue from the checkpoint file, if resuming and it exists: writes the saved
        iterate into the scaled variables and adopts the file's scale; returns
        (optimizer, nit, f, g, status, message) or None."""
        if not self.resume or not os.path.exists(self.path):
            return None
        from ..checkpoint import CheckpointError, _load_with_extra

        u = self.scaling.u
        opt, extra, arrays = _load_with_extra(self.path, u)
        if extra.get("method") != self.method.name:
            raise CheckpointError(f"{self.path} was written by method "
                                  f"{extra.get('method')!r}, not {self.method.name!r}")
        g = arrays["jac"]
        saved_scale = arrays.get("x_scale")
        for name, arr in (("gradient", g), ("x_scale", saved_scale)):
            if arr is not None and (arr.shape != u.shape or arr.dtype != u.dtype):
                raise CheckpointError(f"{self.path}: the saved {name} does not match x")
        self.scaling.adopt(saved_scale, float(extra.get("f_scale", 1.0)))
        self.scaling.nbacktrack = int(extra.get("nbacktrack", 0))
        objective.nfev, objective.njev = int(extra["nfev"]), int(extra["njev"])
        consumed = extra["batches_consumed"]
        by_rank = extra.get("batches_consumed_by_rank")
        if by_rank is not None and len(by_rank) == self.sync.size:
            consumed = by_rank[self.sync.rank]
        batches.skip(int(consumed))
        # a converged run stays converged; any other stop (maxiter, callback) continues
        converged = extra.get("status") == _Status.CONVERGED
        status = int(_Status.CONVERGED) if converged else None
        message = extra.get("message") if converged else None
        return opt, int(extra["nit"]), float(extra["fun"]), g, status, message


class _Reporter:
    """disp=True table and the optional tqdm progress bar."""

    def __init__(self, loop: dict[str, Any], opt: Optimizer):
        self.every = loop["disp_every"]
        self.disp = loop["disp"]
        self.opt = opt
        self.bar = None
        if loop["progress"]:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                warnings.warn("progress=True needs tqdm (pip install tqdm); continuing "
                              "without a progress bar", RuntimeWarning, stacklevel=5)
            else:
                total = loop["maxiter"]
                batches = loop["batches"]
                if hasattr(batches, "__len__"):
                    total = len(batches) if total is None else min(total, len(batches))
                self.bar = tqdm(total=total, unit="it")
        if self.disp:
            print(f"{'iter':>8} {'f':>14} {'|g|_inf':>11} {'lr':>10}", file=sys.stdout)

    def row(self, nit: int, f: float, gnorm: float) -> None:
        if self.bar is not None and nit > self.bar.n:
            self.bar.update(nit - self.bar.n)  # a resumed run starts at its iteration
        if self.disp and nit % self.every == 0:
            # the lr of the step that led to this row (iteration 0: of the first step)
            lr = self.opt.get_last_lr()[0]
            print(f"{nit:>8} {f:>14.6e} {gnorm:>11.3e} {lr:>10.3e}", file=sys.stdout)

    def close(self, result) -> None:
        if self.bar is not None:
            if self.bar.total is not None and self.bar.n < self.bar.total:
                self.bar.total = self.bar.n  # stopped early: the bar ends full, at nit
            self.bar.close()
        if self.disp:
            print(result.message)
            print(f"         Current function value: {result.fun:.6e}")
            print(f"         Iterations: {result.nit}")
            print(f"         Function evaluations: {result.nfev}")
            print(f"         Gradient evaluations: {result.njev}")


# ----------------------------------------------------------------------------------
# Public entry points

_HYPER_DOC = {**{k: h.doc for k, h in HYPERPARAMETERS.items()}, **SHARED_OPTION_DOCS}

_LOOP_DOC = """    maxiter : int, default 20000 (no limit with ``batches``)
        Maximum number of iterations (updates); an integral float is accepted, any
        count past 2**63 - 1 means no limit.
    maxfev : int, default None (no limit)
        Stop at the first iteration after which the number of objective
        evaluations (finite differences included) reaches ``maxfev``.
    x_scale : {'auto', float, array_like, None}, default 'auto' (None for sgd,
        sgd_schedulefree and with ``batches``)
        Typical magnitudes of the parameters: the optimizer steps the scaled
        variables ``u = x / x_scale``, so ``lr`` is a step relative to each
        parameter's scale. ``'auto'``: ``abs(x0)`` (1 where x0 is 0). The
        objective, the callback, the bounds, the finite differences and the
        result see ``x`` itself. None or 1: no scaling.
    f_scale : {'auto', float, None}, default 'auto' (as x_scale)
        The optimizer minimizes ``f / f_scale`` (its gradient is
        ``x_scale * g / f_scale``), so that ``eps`` means the same whatever the
        units of f. ``'auto'``: ``abs(f(x0))`` (1 where that is 0 or not
        finite). None or 1: none.
    nonfinite : {'backtrack', 'stop'}, default 'backtrack' ('stop' with
        ``batches``)
        What a step to a point where f or the gradient is not finite does:
        ``'backtrack'`` halves the step (up to 30 times, each an evaluation,
        counted in ``result.nbacktrack``) and goes on with the learning rate
        times the factor found (a number, or a reduce_on_plateau schedule's
        current rate); status 3 only when that does not help. ``'stop'``: status
        3 at once, ``x`` the last finite iterate.
    gtol : float, default 1e-5 (0 with ``batches``; with a reduce_on_plateau lr,
        only a gradient of exactly 0)
        Stop when the infinity norm of the gradient is <= gtol; 0 turns it off.
    ftol : float, default 0 (off)
        Stop when ``|f_prev - f| <= ftol * max(|f_prev|, |f|, 1)``.
    xtol : float, default 0 (off)
        Stop when ``max|x - x_prev| <= xtol * max(1, max|x|)``.
    tol : float, default None
        Sets ``gtol`` when ``gtol`` is not given (SciPy passes ``minimize``'s
        ``tol`` this way).
    batches : iterable of tuples, default None
        Mini-batches: iteration k calls ``fun(x, *args, *batches[k])``; the run
        ends when the iterable is exhausted (status 0) or at ``maxiter``. See
        :func:`adamc.minibatches`.
    disp : bool, default False
        Print iteration, f, |g|_inf and the lr used by that iteration's step
        (``get_last_lr()``) every ``disp_every`` iterations and a summary at the
        end.
    disp_every : int, default maxiter // 20
        Rows of the ``disp`` table.
    progress : bool, default False
        Show a tqdm progress bar (when tqdm is installed); a run that stops
        before ``maxiter`` closes it full, at its iteration count.
    return_all : bool, default False
        Store every iterate in ``result.allvecs``.
    finite_diff_rel_step : float, default None
        Relative step of finite differences (sqrt(eps) for '2-point',
        eps**(1/3) for '3-point', eps of the dtype of x).
    checkpoint : str or path, default None
        Write the run's state (optimizer, iterate, counters) to this file every
        ``checkpoint_every`` iterations and at the end (not after a non-finite
        stop), atomically; see :func:`adamc.save`.
    checkpoint_every : int, default 100
        Iterations between checkpoints.
    resume : bool, default False
        Continue from ``checkpoint`` when the file exists (x0 is then ignored, the
        optimizer's hyperparameters come from the file, ``maxiter`` counts the
        iterations before the checkpoint too). With ``batches``, pass the same
        batches (same data and seed): the ones the saved run consumed are skipped.
        A resumed run gives the same bits as an uninterrupted one.
    comm : mpi4py.MPI.Intracomm, default None
        Fit over the ranks of an MPI communicator (collective: every rank calls
        with the same x0 and options, checked). Each rank evaluates ``fun`` on its
        own ``batches`` (or its own objective without batches); f and the gradient
        are averaged over the ranks in rank order, weighted by the number of
        samples of each rank's batch (the length of its first array). Every rank
        returns the same result. A callback's StopIteration, a non-finite value or
        exhausted batches on any rank stop every rank with the same status; an
        exception on one rank is raised on every rank, naming it (``RankError``
        unless it is a ValueError, TypeError, OSError, ...). Rank 0
        writes the checkpoints and prints ``disp``. See :mod:`adamc.distributed`.
"""


def _options_doc(method: _Method) -> str:
    lines = ["    Options", "    -------"]
    for key, default in method.hyper.items():
        if key == "lr" and default_lr(method) is not default:
            lines.append(f"    lr : default {default_lr(method)!r} ({default!r} with "
                         f"``batches``)")
            lines.append(f"        {_HYPER_DOC[key]} A reduce_on_plateau schedule is "
                         f"stepped with f after every iteration, and its exhaustion "
                         f"ends the run (status 0).")
            continue
        lines.append(f"    {key} : default {default!r}")
        lines.append(f"        {_HYPER_DOC[key]}")
    return "\n".join(lines) + "\n" + _LOOP_DOC


_TITLES = {name: m.title for name, (_, m) in METHODS.items()}


def _make_method_function(name: str) -> Callable[..., Any]:
    method = _METHODS[name]

    def minimize_method(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None,
                        constraints=None, callback=None, **options):
        return _run(method, fun, x0, args, jac, bounds, constraints, callback, options,
                    hess=hess, hessp=hessp)

    minimize_method.__name__ = minimize_method.__qualname__ = f"minimize_{name}"
    minimize_method.__module__ = "adamc"
    minimize_method.__doc__ = _METHOD_DOC.format(title=_TITLES[name],
                                                 func=minimize_method.__name__,
                                                 options=_options_doc(method))
    return minimize_method


_METHOD_DOC = """Minimize a scalar function with {title}; a ``scipy.optimize.minimize`` method.

    Use as ``scipy.optimize.minimize(fun, x0, method=adamc.{func}, jac=True,
    options={{...}})`` or call it directly.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float``, or ``-> (float, ndarray)`` with ``jac=True``.
        ``x`` is a read-only view of the current iterate (copy it to keep it).
    x0 : array_like, shape (n,)
        Starting point. Integer x0 is cast to float64; float32 x0 optimizes in
        float32.
    args : tuple, optional
        Extra arguments of ``fun`` and ``jac``.
    jac : {{True, callable, None, '2-point', '3-point'}}, optional
        Gradient: returned by ``fun`` (True), computed by ``jac(x, *args)``, or by
        finite differences (None and '2-point' are forward differences).
    hess, hessp : ignored
        Accepted for SciPy compatibility (a RuntimeWarning says they are unused).
    bounds : scipy.optimize.Bounds or sequence of (low, high), optional
        Box constraints (None for no bound); every iterate is projected onto the
        box and x0 is clipped into it.
    constraints : empty, optional
        Other constraints are not supported (ValueError).
    callback : callable, optional
        ``callback(xk)`` (a copy of the iterate) or
        ``callback(intermediate_result)`` (an OptimizeResult with ``x``, ``fun``,
        ``nit``), called after every iteration; raising StopIteration ends the
        run with status 99.
    **options
        See Options. Unknown options give an OptimizeWarning.

{options}
    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x``, ``fun`` (the objective at ``x``), ``jac``, ``nit``, ``nfev``,
        ``njev``, ``status`` (0 converged or batches exhausted, 1 maxiter, 2
        maxfev, 3 non-finite objective or gradient: ``x`` is then the last
        iterate where both were finite, 99 callback stop), ``success``,
        ``message``.
"""



def minimize(fun: Callable, x0: Any, args: tuple = (), method: str = "adam", jac: Any = None,
             bounds: Any = None, callback: Callable | None = None, tol: float | None = None,
             options: dict[str, Any] | None = None):
    """Minimize a scalar function with an adamc optimizer (SciPy's signature).

    Parameters
    ----------
    fun, x0, args, jac, bounds, callback
        As in :func:`scipy.optimize.minimize`; see :func:`minimize_adam`.
    method : str, optional
{methods}
    tol : float, optional
        Sets the ``gtol`` option unless ``options`` has it.
    options : dict, optional
        Method options; see :func:`minimize_adam`.

    Returns
    -------
    scipy.optimize.OptimizeResult
    """
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of "
                         f"{', '.join(repr(m) for m in _METHODS)}")
    options = dict(options or {})
    if tol is not None:
        options.setdefault("tol", tol)
    return _run(_METHODS[method.lower()], fun, x0, args, jac, bounds, None, callback, options)


def _method_list() -> str:
    names = [f"``{name!r}``" for name in _METHODS]
    names = [n.replace("'", '"') for n in names]
    names[0] += " (default)"
    text = (f"One of {', '.join(names[:-1])} or {names[-1]} (case-insensitive; the "
            f"methods of ``adamc.algorithms.METHODS``).")
    return textwrap.fill(text, 84, initial_indent=" " * 8, subsequent_indent=" " * 8,
                         break_on_hyphens=False)


assert minimize.__doc__ is not None
minimize.__doc__ = minimize.__doc__.replace("{methods}", _method_list())
