"""Stateful optimizers with torch.optim's names, defaults and semantics.

Parameters are NumPy arrays updated in place; each optimizer owns its state arrays.
The per-step work lives in the compiled base class ``adamc._kernels._Engine``; this
module builds param groups, allocates state and implements the slow paths
(validation of hyperparameters, state_dict, reset).
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, SupportsIndex

import numpy as np

from .. import _kernels
from ..algorithms._table import (HYPERPARAMETERS, Algorithm, PublicClass, aux_from_state,
                                aux_to_state, check_aux)
from .validation import is_schedule

__all__ = ["Optimizer"]


_MAX_STEP = 2**62


def _check_count(value: Any, name: str) -> int:
    """A step count or counter: an int in [0, 2**62]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 0 <= value <= _MAX_STEP:
        raise ValueError(f"{name} must be an int in [0, 2**62], got {value!r}")
    return int(value)


def _zeros_in_phase(param: np.ndarray) -> np.ndarray:
    """Zeros shaped like ``param`` that start at the same offset within a 64-byte cache
    line as ``param`` does. The kernels start their vector loop where the parameter is
    cache-line aligned; state arrays in the same phase are then aligned too, and no
    load or store of theirs straddles two cache lines (20% faster at 1e6 elements)."""
    buf = np.zeros(param.nbytes + 64, np.uint8)
    shift = (param.__array_interface__["data"][0] - buf.__array_interface__["data"][0]) % 64
    return buf[shift:shift + param.nbytes].view(param.dtype).reshape(param.shape)


def _check_ema(ema: Any, ema_start: Any) -> tuple[int, float, int]:
    """(mode, decay, start) of the ema option: mode 0 off, 1 an exponential moving
    average with ``decay`` in (0, 1), 2 the running mean (``"uniform"``)."""
    start = _check_count(ema_start, "ema_start")
    if ema is None:
        return 0, 0.0, start
    if isinstance(ema, str):
        if ema != "uniform":
            raise ValueError(f"ema must be a decay in (0, 1), 'uniform' or None, got {ema!r}")
        return 2, 0.0, start
    decay = _kernels.check_nonnegative(ema, "ema")
    if not 0 < decay < 1:
        raise ValueError(f"ema must be a decay in (0, 1), 'uniform' or None, got {ema!r}")
    return 1, decay, start


def _check_no_overlap(params: list[np.ndarray]) -> None:
    """Parameters must be distinct arrays with disjoint memory (each element is
    updated exactly once per step)."""
    ids: dict[int, int] = {}
    for i, p in enumerate(params):
        if id(p) in ids:
            raise ValueError(f"params[{ids[id(p)]}] and params[{i}] are the same array; "
                             f"some parameters appear more than once")
        ids[id(p)] = i
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i)
                   for i, p in enumerate(params) if p.nbytes)
    for (s0, n0, i), (s1, _, j) in zip(spans, spans[1:]):
        if s1 < s0 + n0:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory; every parameter "
                             f"must be a separate array")


def _first_bad(bad: np.ndarray, arr: np.ndarray) -> str:
    """'<value> at index <index>' of the first true element of ``bad`` (error path)."""
    flat = int(np.argmax(bad.reshape(-1)))
    index: int | tuple[int, ...] = flat
    if arr.ndim > 1:
        index = tuple(int(j) for j in np.unravel_index(flat, arr.shape))
    return f"{arr.reshape(-1)[flat]} at index {index}"


def _check_state_values(arr: np.ndarray, kind: str, name: str, step: int) -> None:
    """Refuse values that no run can leave in a state array of this kind (see
    adamc.algorithms.STATE_KINDS): the next step would turn them into NaN parameters
    or an update no run makes. ``step``: the parameter's step count. One reduction
    over the array (min and max propagate NaN), no temporary array unless it fails."""
    if arr.size == 0:
        return
    low, high = np.min(arr), np.max(arr)
    if kind == "step_size" and step > 0:
        if not (low > 0 and np.isfinite(high)):  # NaN, <= 0 or inf
            raise ValueError(f"{name} holds {_first_bad(~((arr > 0) & np.isfinite(arr)), arr)}; "
                             f"a step size must be finite and > 0 (steps clamp it to "
                             f"[step_size_min, step_size_max])")
    elif kind == "second_moment":
        if not low >= 0:  # NaN or negative; +inf is reachable (see STATE_KINDS)
            raise ValueError(f"{name} holds {_first_bad(~(arr >= 0), arr)}; a second "
                             f"moment must be >= 0 (no step makes it negative or NaN)")
    elif not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} holds {_first_bad(~np.isfinite(arr), arr)}; it must be "
                         f"finite (no step with finite gradients leaves it otherwise)")
    if step == 0 and kind != "params" and (low != 0 or high != 0):
        raise ValueError(f"{name} holds {_first_bad(arr != 0, arr)}, but the step count of "
                         f"its parameter is 0: before the first step this state is zero "
                         f"(load it with the step count it was saved with)")


class Optimizer(_kernels._Engine):
    """Base class of adamc's optimizers (the torch.optim.Optimizer interface).

    The public subclasses live in the modules of :mod:`adamc.algorithms`, one per
    algorithm, each naming its table row in its body as ``_spec``; from it
    ``__init_subclass__`` derives ``_algorithm``, the row's kernel name,
    ``_state_keys`` the names of up to three per-parameter state arrays in kernel
    order, ``_hyper_keys`` the group keys read at every step (checked by
    ``adamc.algorithms.HYPERPARAMETERS``) and ``_state_requires`` maps a state key
    to the group flag that needs it, for state that is only allocated when used.

    Options shared by every optimizer (keyword-only):

    max_grad_norm : float, optional
        Scale all gradients so that their global L2 norm is at most this value
        (torch.nn.utils.clip_grad_norm_, computed deterministically). Default None.
    clip_value : float, optional
        Clamp every gradient element to [-clip_value, clip_value], before the norm
        clipping (torch.nn.utils.clip_grad_value_). Default None.
    nonfinite : {"propagate", "raise", "skip"}, optional
        What a NaN or infinity in a gradient does: flow into the parameters (torch's
        behaviour, the default), raise FloatingPointError before anything is
        updated, or skip the step (counted in ``skipped_steps``).
    ema : float or "uniform", optional
        Keep a weight average of the parameters in ``ema_params``, updated inside
        each step's pass over memory: a decay in (0, 1) for an exponential moving
        average ``a = decay * a + (1 - decay) * p`` (as
        ``torch.optim.swa_utils.get_ema_multi_avg_fn``), or ``"uniform"`` for the
        running mean of the iterates (Polyak-Ruppert, ``AveragedModel``'s default).
        The first averaged value is the parameters after step ``max(ema_start, 1)``.
        Default None (off).
    ema_start : int, optional
        The step from which averaging begins (default 0: from the first step).
    """

    _spec: ClassVar[Algorithm]
    _algorithm: ClassVar[str]
    _state_keys: ClassVar[tuple[str, ...]]
    _hyper_keys: ClassVar[tuple[str, ...]]
    _state_requires: ClassVar[dict[str, str]] = {}
    _state_unstarted: ClassVar[frozenset[str]] = frozenset()  # state that may be None
    _state_kinds: ClassVar[dict[str, str]] = {}  # the table's State.kind of each key
    # group keys into which the engine mirrors its optimizer-wide scalar state after
    # every step (not hyperparameters: edits are ignored, the engine keeps the values)
    _mirrored: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("_spec")
        if spec is not None:  # the class that introduces an algorithm
            cls._algorithm = spec.name
            cls._state_keys = tuple(s.name for s in spec.states)
            cls._hyper_keys = tuple(k for k, _ in spec.hyper)
            cls._state_requires = {s.name: s.requires for s in spec.states if s.requires}
            cls._state_unstarted = frozenset(s.name for s in spec.states if s.unstarted)
            cls._state_kinds = {s.name: s.kind for s in spec.states}
        spec = getattr(cls, "_spec", None)
        public = next((c for c in spec.classes if c.name == cls.__name__), None) if spec else None
        if spec is None or public is None or cls.__module__.split(".")[0] != "adamc":
            return  # an internal base, or a user's subclass
        _check_public_signature(cls, spec, public)
        cls.__module__ = "adamc.optim"  # its public home: reprs and pickles name it there
        if cls.__doc__:
            lr = inspect.signature(cls).parameters["lr"].default
            cls.__doc__ = cls.__doc__.replace("{params}", _PARAMS_DOC.format(lr=lr)).replace(
                "{shared}", _SHARED_DOC)

    def __init__(self, params: Any, defaults: dict[str, Any], *,
                 max_grad_norm: float | None = None, clip_value: float | None = None,
                 nonfinite: str = "propagate", ema: float | str | None = None,
                 ema_start: int = 0) -> None:
        self._group_hyper(defaults, None)
        mode, decay, start = _check_ema(ema, ema_start)
        self.max_grad_norm = max_grad_norm
        self.clip_value = clip_value
        self.nonfinite = nonfinite
        self.defaults = dict(defaults)
        self._box: tuple[list, list] | None = None
        self._ema_option: tuple[float | str | None, int] = (ema, start)
        self._averages: list[np.ndarray] | None = [] if mode else None
        self.param_groups = []
        self._state_arrays: list[list[np.ndarray | None]] = []
        for group in self._split_groups(params):
            self._append_group(group)
        self._set_ema(mode, decay, start)
        self._rebind()
        self._init_scalars()

    # -- construction -----------------------------------------------------------
    @staticmethod
    def _split_groups(params: Any) -> list[dict[str, Any]]:
        if isinstance(params, np.ndarray):
            return [{"params": [params]}]
        if isinstance(params, dict):
            return [params]
        if isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
            raise TypeError(f"params must be an ndarray, a sequence of ndarrays or a "
                            f"sequence of dicts, got {type(params).__name__}")
        items = list(params)
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(it, (int, float, np.number)) for it in items):
            raise TypeError("params is a sequence of numbers; adamc updates NumPy arrays in "
                            "place, so create the array first and keep it: "
                            "x = np.array([...], dtype=np.float64); opt = adamc.Adam(x)")
        if all(isinstance(it, dict) for it in items):
            return items
        if any(isinstance(it, dict) for it in items):
            raise TypeError("params mixes arrays and param-group dicts; pass one or the other")
        return [{"params": items}]

    def _checked_group(self, group: dict[str, Any], gi: int) -> dict[str, Any]:
        if "params" not in group:
            raise ValueError(f"param group {gi} has no 'params' key")
        ps = group["params"]
        ps = [ps] if isinstance(ps, np.ndarray) else ps
        if isinstance(ps, (str, bytes, dict)) or not hasattr(ps, "__iter__"):
            raise TypeError(f"param group {gi}: 'params' must be an ndarray or a sequence "
                            f"of ndarrays, got {type(ps).__name__}")
        ps = list(ps)
        if not ps:
            raise ValueError(f"param group {gi} has no parameters")
        offset = sum(len(g["params"]) for g in self.param_groups)
        for j, p in enumerate(ps):
            _kernels.check_param(p, f"params[{offset + j}]")
        new = {k: v for k, v in self.defaults.items()}
        new.update({k: v for k, v in group.items() if k != "params"})
        new["params"] = ps
        self._group_hyper(new, gi)
        return new

    def _append_group(self, group: dict[str, Any]) -> None:
        new = self._checked_group(group, len(self.param_groups))
        everything = [p for g in self.param_groups for p in g["params"]] + new["params"]
        _check_no_overlap(everything)
        states = [self._new_state(p, new) for p in new["params"]]
        self.param_groups.append(new)
        self._state_arrays.extend(states)
        if self._averages is not None:
            self._averages.extend(_zeros_in_phase(p) for p in new["params"])

    def _new_state(self, param: np.ndarray, group: dict[str, Any]) -> list[np.ndarray | None]:
        state = [_zeros_in_phase(param) if self._state_used(k, group) else None
                 for k in self._state_keys]
        return state + [None] * (3 - len(state))

    def _state_used(self, key: str, hyper: dict[str, Any]) -> bool:
        """Whether state array ``key`` is needed with these hyperparameters."""
        flag = self._state_requires.get(key)
        return flag is None or bool(hyper[flag])

    def _check_group_state(self, gi: int, hyper: dict[str, Any]) -> None:
        """Refuse hyperparameters that need state the optimizer was created without."""
        first = sum(len(g["params"]) for g in self.param_groups[:gi])
        for k, key in enumerate(self._state_keys):
            if self._state_used(key, hyper) and any(
                    self._state_arrays[i][k] is None
                    for i in range(first, first + len(self.param_groups[gi]["params"]))):
                raise self._missing_state(gi, key)

    @classmethod
    def _missing_state(cls, gi: int, key: str) -> ValueError:
        flag = cls._state_requires[key]
        return ValueError(f"param_groups[{gi}]['{flag}'] needs the '{key}' state, which the "
                          f"optimizer was created without; create the optimizer with this "
                          f"{flag} setting")

    def _rebind(self) -> None:
        params, index = [], []
        for gi, g in enumerate(self.param_groups):
            params.extend(g["params"])
            index.extend([gi] * len(g["params"]))
        lower, upper = self._box if self._box is not None else (None, None)
        self._bind(_kernels.ALGORITHMS[self._algorithm], self._hyper_keys, params,
                   self._state_arrays, index, lower, upper, self._validated_group,
                   self._state_keys, self._averages)

    # -- weight averaging ---------------------------------------------------------------
    @property
    def ema(self) -> float | str | None:
        """The weight averaging: a decay in (0, 1), ``"uniform"`` or None (off)."""
        return self._ema_option[0]

    @property
    def ema_start(self) -> int:
        """The step from which the parameters are averaged (0 and 1: the first)."""
        return self._ema_option[1]

    @property
    def ema_params(self) -> list[np.ndarray] | None:
        """The weight average of each parameter (read-only views, in group order),
        updated inside every step's pass over memory; None without ``ema``. Before
        the first averaged step they are zeros."""
        if self._averages is None:
            return None
        views = []
        for a in self._averages:
            v = a.view()
            v.flags.writeable = False
            views.append(v)
        return views

    def _ema_entry(self) -> dict[str, Any] | None:
        """The averaging state as a state_dict entry (copies), or None without ema."""
        if self._averages is None:
            return None
        count = self._ema_state()[3]
        return {"ema": self.ema, "ema_start": self.ema_start, "count": count,
                "params": [a.copy() for a in self._averages]}

    def _check_ema_entry(self, entry: Any, params: list[np.ndarray]) -> tuple | None:
        """A saved averaging state checked against this optimizer's ema setting."""
        if self._averages is None:
            if entry is not None:
                raise ValueError("the state holds a weight average, but this optimizer was "
                                 "created without ema")
            return None
        if not isinstance(entry, dict):
            raise ValueError(f"the state has no weight average, but this optimizer was "
                             f"created with ema={self.ema!r}")
        if (entry.get("ema"), entry.get("ema_start")) != self._ema_option:
            raise ValueError(f"the state's weight average has ema={entry.get('ema')!r}, "
                             f"ema_start={entry.get('ema_start')!r}; this optimizer has "
                             f"ema={self.ema!r}, ema_start={self.ema_start!r}")
        count = _check_count(entry.get("count"), "the weight average's 'count'")
        arrays = entry.get("params")
        if not isinstance(arrays, (list, tuple)) or len(arrays) != len(params):
            raise ValueError(f"the weight average must hold {len(params)} arrays")
        for i, (a, p) in enumerate(zip(arrays, params)):
            _kernels.check_operand(a, f"ema params[{i}]", p, f"params[{i}]")
        return count, list(arrays)

    def _commit_ema_entry(self, checked: tuple | None) -> None:
        if checked is None or self._averages is None:
            return
        count, arrays = checked
        for target, a in zip(self._averages, arrays):
            np.copyto(target, a)
        mode, decay, start, _ = self._ema_state()
        self._set_ema(mode, decay, start, count)

    def _validated_group(self, group: dict[str, Any], gi: int) -> tuple[dict, Callable | None]:
        """The engine's check of a group whose hyperparameters changed (given to
        _bind): the values and the schedule, after refusing flags that need state
        the optimizer was created without."""
        hyper, lr_fn = self._group_hyper(group, gi)
        self._check_group_state(gi, hyper)
        return hyper, lr_fn

    @contextmanager
    def _exclusive(self, recover: bool = False) -> Iterator[None]:
        """Keep step() and reads (in any thread) out while a slow path changes the
        optimizer. ``recover``: the change replaces the whole state (load_state_dict,
        reset), which makes an optimizer torn by a fork usable again when it succeeds."""
        torn = self._acquire(recover)
        done = False
        try:
            yield
            done = True
        finally:
            self._release(torn and not done)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Keep step() and changes out while this thread reads the optimizer; a step
        or change running in another thread is waited for, other reads run too."""
        self._acquire_read()
        try:
            yield
        finally:
            self._release_read()

    def _check_counters(self, steps: list, aux: list, step_count: Any, skipped: Any) -> tuple:
        """Validated per-group step counts and scalar states, and the two counters."""
        n = len(self.param_groups)
        if len(steps) != n or len(aux) != n:
            raise ValueError(f"expected {n} step counts and scalar states, got {len(steps)} "
                             f"and {len(aux)}")
        steps = [_check_count(t, f"step of group {gi}") for gi, t in enumerate(steps)]
        aux = [self._check_aux(a, f"scalar state of group {gi}") for gi, a in enumerate(aux)]
        step_count = _check_count(step_count, "step_count")
        for gi, t in enumerate(steps):
            if t > step_count:  # every step of a group is a step() of the optimizer
                raise ValueError(f"group {gi} has taken {t} steps, more than step_count "
                                 f"({step_count}) counts for the whole optimizer")
        return steps, aux, step_count, _check_count(skipped, "skipped_steps")

    def _check_aux(self, value: Any, name: str) -> float:
        """The algorithm's per-group scalar state (see adamc.algorithms.check_aux)."""
        return check_aux(self._spec, value, name)

    def _set_bounds(self, lower: list[np.ndarray], upper: list[np.ndarray]) -> None:
        """Project every parameter onto [lower[i], upper[i]] after each update (used by
        the SciPy method); the bound arrays must match the parameters."""
        params = [p for g in self.param_groups for p in g["params"]]
        for i, (p, lo, hi) in enumerate(zip(params, lower, upper)):
            _kernels.check_operand(lo, f"lower[{i}]", p, self._param_name(i))
            _kernels.check_operand(hi, f"upper[{i}]", p, self._param_name(i))
        if len(lower) != len(params) or len(upper) != len(params):
            raise ValueError("one lower and one upper bound array per parameter")
        with self._exclusive():
            self._box = (list(lower), list(upper))
            self._rebind()  # keeps the step counts

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (torch.optim semantics); its step count starts at
        zero and missing hyperparameters come from the constructor's defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        with self._exclusive():
            self._append_group(param_group)
            self._rebind()  # existing groups keep their step counts, the new one starts at 0

    def get_last_lr(self) -> list[float]:
        """The learning rate of each param group's last step, as
        ``torch.optim.lr_scheduler.LRScheduler.get_last_lr()`` gives it.

        With a schedule, ``param_groups[i]["lr"]`` is the schedule itself; this is
        the number it gave. A group that has not stepped yet reports the rate its
        first step will use (the schedule at step 1, or the number), as a torch
        scheduler does right after it is created.

        Returns
        -------
        list of float
            One learning rate per param group, in group order.

        Notes
        -----
        torch changes the rate in ``scheduler.step()``, after ``optimizer.step()``,
        so its ``get_last_lr()`` then already gives the rate of the next step; adamc
        evaluates the schedule inside ``step()`` and reports the rate that step
        used. The value is recorded by ``step()``; when none is (before the first
        step, after ``load_state_dict``, ``reset``, ``adamc.load`` or a copy), the
        schedule is evaluated at the group's step count (at least 1), so a Python
        callable ``lr`` is called then.
        """
        recorded = self._group_last_lr()
        steps = self._group_steps()
        if type(self.param_groups) is not list or len(self.param_groups) != len(recorded):
            raise ValueError("param_groups was resized or replaced; use add_param_group() "
                             "to add parameters")
        out = []
        for gi, lr in enumerate(recorded):
            if lr != lr:  # NaN: nothing recorded for this group
                hyper, fn = self._group_hyper(self.param_groups[gi], gi)
                lr = hyper["lr"] if fn is None else _kernels.lr_at(fn, max(steps[gi], 1), gi)
            out.append(float(lr))
        return out

    # -- optimizer-wide scalar state (the table's ``scalars``; none by default) ------
    def _init_scalars(self) -> None:
        """Set the optimizer-wide scalar state to its initial value."""

    def _check_scalars(self, groups: list[dict[str, Any]]) -> Any:
        """The optimizer-wide scalar state found in (saved) param groups, checked."""
        return None

    def _commit_scalars(self, value: Any) -> None:
        """Set the optimizer-wide scalar state to a value of _check_scalars."""

    # -- hyperparameters ------------------------------------------------------------
    def _group_hyper(self, group: dict[str, Any], gi: int | None) -> tuple[dict, Callable | None]:
        """Validate a group's hyperparameters; return them as plain Python values and
        the learning-rate schedule (or None). ``gi`` None means constructor defaults."""
        hyper = {}
        for key in self._hyper_keys:
            name = key if gi is None else f"param_groups[{gi}]['{key}']"
            try:
                value = group[key]
            except KeyError:
                where = "the defaults" if gi is None else f"param_groups[{gi}]"
                raise ValueError(f"{where} has no '{key}'") from None
            hyper[key] = HYPERPARAMETERS[key].check(value, name)
        for key in ("betas", "etas", "step_sizes"):
            if isinstance(group.get(key), list):
                group[key] = tuple(group[key])  # a list could be edited unseen
        self._cross_check(hyper, "" if gi is None else f"param_groups[{gi}]: ")
        lr = hyper["lr"]
        if is_schedule(lr):
            hyper["lr"] = 0.0
            return hyper, lr
        return hyper, None

    def _cross_check(self, hyper: dict[str, Any], where: str) -> None:
        """Checks that involve several hyperparameters (the table's cross_check)."""
        if self._spec.cross_check is not None:
            self._spec.cross_check(hyper, where)

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Copy of the optimizer's state, in torch.optim's layout.

        Returns
        -------
        dict
            ``{"state": {i: {"step": int, <state name>: ndarray, ...}},
            "param_groups": [{<hyperparameters>, "params": [i, ...]}],
            "step_count": int}``, where ``i`` numbers the parameters in group order.
            Arrays are copies: later steps do not change them. A step running in
            another thread is waited for (and a step waits for this copy), so the
            state is that of one step count.
        """
        with self._reading():
            state, groups, i = {}, [], 0
            steps, aux = self._group_steps(), self._group_aux()
            for gi, g in enumerate(self.param_groups):
                entry = {k: v for k, v in g.items() if k != "params"}
                entry["params"] = list(range(i, i + len(g["params"])))
                groups.append(entry)
                for _ in g["params"]:
                    entry_state: dict[str, Any] = {"step": steps[gi]}
                    for key, arr in zip(self._state_keys, self._state_arrays[i]):
                        if arr is not None:
                            entry_state[key] = arr.copy()
                    entry_state.update(self._aux_to_state(aux[gi], entry_state))
                    state[i] = entry_state
                    i += 1
            out = {"state": state, "param_groups": groups, "step_count": self.step_count,
                   "skipped_steps": self.skipped_steps, "options": self._options()}
            if self._averages is not None:
                out["ema"] = self._ema_entry()
            return out

    def _options(self) -> dict[str, Any]:
        return {"max_grad_norm": self.max_grad_norm, "clip_value": self.clip_value,
                "nonfinite": self.nonfinite}

    def _aux_to_state(self, aux: float, state: dict[str, Any]) -> dict[str, Any]:
        """Per-parameter entries that carry the group's scalar state (torch layout)."""
        return aux_to_state(self._spec, aux, state)

    def _aux_from_state(self, state: dict[str, Any], sid: Any) -> float:
        """Inverse of _aux_to_state, with checks."""
        return aux_from_state(self._spec, state, sid)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state produced by :meth:`state_dict` of a matching optimizer.

        Everything is validated first (group and parameter counts, state shapes and
        dtypes, hyperparameters and options, and the state's values: second moments
        >= 0 and not NaN, every other state array finite, zero before a parameter's
        first step where only steps write it, and no group with more steps than
        ``step_count``); arrays are copied, so the dict stays independent.

        Raises
        ------
        ValueError, TypeError
            When the state does not match this optimizer; nothing is changed then.
        """
        with self._exclusive(recover=True):
            if not isinstance(state_dict, dict) or "state" not in state_dict \
                    or "param_groups" not in state_dict:
                raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
            groups, state = state_dict["param_groups"], state_dict["state"]
            if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
                count = len(groups) if hasattr(groups, "__len__") else "?"
                raise ValueError(f"state_dict has {count} param groups, the optimizer has "
                                 f"{len(self.param_groups)}")
            if not isinstance(state, dict):
                raise ValueError("state_dict['state'] must be a dict")
            new_groups: list[dict[str, Any]] = []
            steps: list[int] = []
            aux: list[float] = []
            copies: dict[tuple[int, int], np.ndarray] = {}
            i = 0
            for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
                if not isinstance(saved, dict) or len(saved.get("params", ())) != len(mine["params"]):
                    raise ValueError(f"param group {gi} of state_dict does not have "
                                     f"{len(mine['params'])} parameters")
                merged = {k: v for k, v in saved.items() if k != "params"}
                merged["params"] = mine["params"]
                hyper, _ = self._group_hyper(merged, gi)
                group_step = group_aux = None
                for p, sid in zip(mine["params"], saved["params"]):
                    st = state.get(sid)
                    if not isinstance(st, dict):
                        raise ValueError(f"state_dict has no state for parameter {sid}")
                    step = _check_count(st.get("step"), f"state of parameter {sid}: 'step'")
                    a = self._aux_from_state(st, sid)
                    if group_step is not None and (step != group_step or a != group_aux):
                        raise ValueError(f"parameters of group {gi} have different step counts")
                    group_step, group_aux = int(step), a
                    for k, key in enumerate(self._state_keys):
                        arr = st.get(key)
                        if arr is None:
                            if self._state_used(key, hyper) and not (
                                    key in self._state_unstarted and key in st):
                                raise ValueError(f"state of parameter {sid} has no '{key}'")
                            continue  # absent, or None for a buffer not started yet: zeros
                        if not isinstance(arr, np.ndarray):
                            raise TypeError(f"state[{sid}]['{key}'] must be an ndarray, got "
                                            f"{type(arr).__name__}")
                        if arr.dtype != p.dtype:
                            raise TypeError(f"state[{sid}]['{key}'] has dtype {arr.dtype}, the "
                                            f"parameter has {p.dtype}")
                        if arr.shape != p.shape:
                            raise ValueError(f"state[{sid}]['{key}'] has shape {arr.shape}, the "
                                             f"parameter has {p.shape}")
                        _check_state_values(arr, self._state_kinds[key],
                                            f"state[{sid}]['{key}']", step)
                        copies[i, k] = arr
                    i += 1
                assert group_step is not None and group_aux is not None  # groups are not empty
                new_groups.append(merged)
                steps.append(group_step)
                aux.append(group_aux)
            steps, aux, step_count, skipped = self._check_counters(
                steps, aux, state_dict.get("step_count", max(steps)),
                state_dict.get("skipped_steps", 0))
            scalars = self._check_scalars(new_groups)
            params_all = [p for g in self.param_groups for p in g["params"]]
            ema_checked = self._check_ema_entry(state_dict.get("ema"), params_all)
            options = {**self._options(), **state_dict.get("options", {})}
            probe = _kernels._Engine()  # validates the options without touching self
            for key, value in options.items():
                setattr(probe, key, value)
            # Allocate what is missing before changing anything, then commit.
            targets = [st[:] for st in self._state_arrays]
            params = [p for g in self.param_groups for p in g["params"]]
            for (i, k), arr in copies.items():
                if targets[i][k] is None:
                    targets[i][k] = _zeros_in_phase(params[i])
            for i, st in enumerate(targets):
                for k, arr in enumerate(st):
                    if arr is not None:
                        if (i, k) in copies:
                            np.copyto(arr, copies[i, k])
                        else:
                            arr.fill(0)
            self._state_arrays = targets
            for mine, merged in zip(self.param_groups, new_groups):
                mine.clear()
                mine.update(merged)
            for key, value in options.items():
                setattr(self, key, value)
            self._rebind()
            self._set_counters(steps, aux, step_count, skipped)
            self._commit_scalars(scalars)
            self._commit_ema_entry(ema_checked)

    def reset(self) -> None:
        """Zero every state array, the step counts and ``skipped_steps``
        (hyperparameters are kept)."""
        with self._exclusive(recover=True):
            for st in self._state_arrays:
                for arr in st:
                    if arr is not None:
                        arr.fill(0)
            n = len(self.param_groups)
            self._set_counters([0] * n, [self._aux_initial()] * n, 0, 0)
            self._init_scalars()
            if self._averages is not None:
                for a in self._averages:
                    a.fill(0)
                mode, decay, start, _ = self._ema_state()
                self._set_ema(mode, decay, start, 0)

    # -- copies, pickling and checkpoints ---------------------------------------------
    def _export(self) -> dict[str, Any]:
        """Everything that defines this optimizer, arrays by reference (the common
        ground of pickling and of adamc.save)."""
        with self._reading():
            return {
                "class": type(self).__name__,
                "defaults": dict(self.defaults),
                "groups": [dict(g, params=list(g["params"])) for g in self.param_groups],
                "state": [list(st) for st in self._state_arrays],
                "steps": self._group_steps(),
                "aux": self._group_aux(),
                "step_count": self.step_count,
                "skipped_steps": self.skipped_steps,
                "options": self._options(),
                "box": None if self._box is None else (list(self._box[0]), list(self._box[1])),
                "ema": None if self._averages is None else {
                    "ema": self.ema, "ema_start": self.ema_start,
                    "count": self._ema_state()[3], "params": list(self._averages)},
            }

    @classmethod
    def _from_export(cls, payload: dict[str, Any]) -> Optimizer:
        """Build an optimizer from _export()'s payload (its state arrays are copied
        into the new optimizer's own). Everything is validated first."""
        opt = cls.__new__(cls)
        for key, value in payload["options"].items():
            setattr(opt, key, value)
        opt.defaults = dict(payload["defaults"])
        opt._group_hyper(opt.defaults, None)
        opt._box = None
        saved_ema = payload.get("ema")
        ema, ema_start = (None, 0) if saved_ema is None else (saved_ema["ema"],
                                                               saved_ema["ema_start"])
        mode, decay, start = _check_ema(ema, ema_start)
        opt._ema_option = (ema, start)
        opt._averages = [] if mode else None
        opt.param_groups = []
        opt._state_arrays = []
        for group in payload["groups"]:
            opt._append_group(group)
        opt._set_ema(mode, decay, start)
        if len(payload["state"]) != len(opt._state_arrays):
            raise ValueError("the saved state does not match the parameters")
        counters = opt._check_counters(list(payload["steps"]), list(payload["aux"]),
                                       payload["step_count"], payload["skipped_steps"])
        params = [q for g in opt.param_groups for q in g["params"]]
        steps = [counters[0][gi] for gi, g in enumerate(opt.param_groups) for _ in g["params"]]
        for i, (p, saved, fresh) in enumerate(zip(params, payload["state"], opt._state_arrays)):
            for k, key in enumerate(cls._state_keys):
                arr = saved[k] if k < len(saved) else None
                target = fresh[k]
                if arr is None or target is None:
                    if arr is not target:
                        raise ValueError(f"the saved state of parameter {i} has "
                                         f"{'no' if arr is None else 'an unexpected'} '{key}'")
                    continue
                _kernels.check_operand(arr, f"state[{i}]['{key}']", p)
                _check_state_values(arr, cls._state_kinds[key], f"state[{i}]['{key}']",
                                    steps[i])
                np.copyto(target, arr)
        scalars = opt._check_scalars(list(payload["groups"]))
        ema_checked = opt._check_ema_entry(saved_ema, params)
        if payload["box"] is not None:
            opt._set_bounds(*payload["box"])
        else:
            opt._rebind()
        opt._set_counters(*counters)
        opt._commit_scalars(scalars)
        opt._commit_ema_entry(ema_checked)
        return opt

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple:
        # Pickle and deepcopy: the parameters and the state travel with the optimizer.
        return (_restore, (type(self), self._export()))

    def __copy__(self) -> Optimizer:
        """A new optimizer on the same parameter arrays, with its own copy of the state."""
        with self._reading():  # until the arrays are copied
            return type(self)._from_export(self._export())

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            sizes = ", ".join(str(p.shape) for p in g["params"])
            lines.append(f"    params: {sizes}")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]!r}")
        lines.append(")")
        return "\n".join(lines)



def _restore(cls: type[Optimizer], payload: dict[str, Any]) -> Optimizer:
    return cls._from_export(payload)


class ProdigyOptimizer(Optimizer, _kernels._ProdigyEngine):
    """Base of :class:`Prodigy`: its optimizer-wide estimate of the distance ``d``
    (kept by the compiled ``_ProdigyEngine``), mirrored into the param groups under
    prodigyopt's keys, which state dicts and checkpoints carry."""

    _mirrored = ("d", "d_max", "d_numerator", "k", "d_hat", "d_denom")  # _prodigy_state()

    def _init_scalars(self) -> None:
        d0 = self.param_groups[0]["d0"]
        self._set_prodigy_state(d0, d0, 0.0, 0)

    def _check_scalars(self, groups: list[dict[str, Any]]) -> Any:
        g = groups[0]
        for key in ("d", "d_max", "d_numerator", "k"):
            if key not in g:
                raise ValueError(f"param group 0 has no '{key}' (Prodigy's scalar state)")
        values = _kernels._check_prodigy_scalars(g["d"], g["d_max"], g["d_numerator"],
                                                 g["k"], g["d0"], "param_groups[0]: ")
        last = [_kernels.check_nonnegative(g.get(k, 0.0), f"param_groups[0]['{k}']")
                if k == "d_denom" else float(g.get(k, 0.0)) for k in ("d_hat", "d_denom")]
        return (*values, *last)

    def _commit_scalars(self, value: Any) -> None:
        self._set_prodigy_state(*value)


class ScheduleFreeOptimizer(Optimizer, _kernels._ScheduleFreeEngine):
    """Base of the schedule-free optimizers: train/eval and the per-group averaging
    state (kept by the compiled ``_ScheduleFreeEngine``, mirrored into the param
    groups under the schedulefree package's keys)."""

    _mirrored = ("k", "weight_sum", "lr_max", "scheduled_lr", "train_mode")  # _publish()

    def _momentum(self, group: dict[str, Any]) -> float:
        return group["betas"][0] if "betas" in group else group["momentum"]

    def eval(self) -> None:
        """Put the averaged point ``x = lerp(y, z, 1 - 1/beta1)`` into the parameters
        (no-op in eval mode); ``y`` is kept for :meth:`train`. Call it before
        evaluating or saving the model."""
        with self._exclusive():
            if not self.train_mode:
                return
            steps = self._group_steps()
            i = 0
            for gi, g in enumerate(self.param_groups):
                w = 1.0 - 1.0 / self._momentum(g)
                for p in g["params"]:
                    z, y = self._state_arrays[i][0], self._state_arrays[i][len(self._state_keys) - 1]
                    assert y is not None  # allocated with its parameter
                    np.copyto(y, p)
                    if steps[gi] > 0:  # z exists once the group has stepped
                        p += w * (z - p)  # torch.lerp(p, z, w) for w < 0.5
                    i += 1
            self._set_train_mode(False)

    def train(self) -> None:
        """Put ``y`` back into the parameters, exactly as :meth:`eval` found it
        (no-op in train mode)."""
        with self._exclusive():
            if self.train_mode:
                return
            i = 0
            for g in self.param_groups:
                for p in g["params"]:
                    y = self._state_arrays[i][len(self._state_keys) - 1]
                    assert y is not None  # allocated with its parameter
                    np.copyto(p, y)
                    i += 1
            self._set_train_mode(True)

    def _init_scalars(self) -> None:
        self._set_schedulefree_state([(0.0, -1.0, 0.0)] * len(self.param_groups), True)

    def _check_scalars(self, groups: list[dict[str, Any]]) -> Any:
        out = []
        for gi, g in enumerate(groups):
            for key in ("weight_sum", "lr_max", "train_mode"):
                if key not in g:
                    raise ValueError(f"param group {gi} has no '{key}' (the schedule-free "
                                     f"state)")
            wsum = _kernels.check_nonnegative(g["weight_sum"], f"param_groups[{gi}]['weight_sum']")
            lr_max = float(g["lr_max"])
            if not (lr_max == -1.0 or lr_max >= 0) or lr_max != lr_max:
                raise ValueError(f"param_groups[{gi}]['lr_max'] must be -1 (no step yet) or "
                                 f">= 0, got {g['lr_max']!r}")
            last = _kernels.check_nonnegative(g.get("scheduled_lr", 0.0),
                                              f"param_groups[{gi}]['scheduled_lr']")
            out.append((wsum, lr_max, last))
        modes = {_kernels.check_flag(g["train_mode"], f"param_groups[{gi}]['train_mode']")
                 for gi, g in enumerate(groups)}
        if len(modes) != 1:
            raise ValueError("the param groups disagree on train_mode")
        return out, modes.pop()

    def _commit_scalars(self, value: Any) -> None:
        self._set_schedulefree_state(*value)


_SHARED_DOC = """
    max_grad_norm, clip_value, nonfinite
        Gradient clipping and the non-finite policy, shared by every optimizer (see
        :class:`Optimizer`).
    ema, ema_start
        Weight averaging inside the step's pass, shared by every optimizer (see
        :class:`Optimizer`)."""

_PARAMS_DOC = """params : ndarray, sequence of ndarray, or sequence of dict
        Arrays to optimize (float32 or float64, C-contiguous, writeable; updated in
        place), or torch-style parameter groups: dicts with a ``"params"`` entry and
        optional per-group hyperparameters.
    lr : float or callable, optional
        Learning rate (default {lr}), or a schedule: any callable ``step -> lr``
        called with the 1-based number of the update being computed (see
        :mod:`adamc.schedules`)."""

_SHARED_KEYWORDS = "max_grad_norm=None, clip_value=None, nonfinite='propagate', ema=None, ema_start=0"


def _check_public_signature(cls: type, spec: Algorithm, public: PublicClass) -> None:
    """A public class's written signature must be its row's: the hyperparameters in
    row order with the row's defaults (and the class's own), the ``keyword_only``
    ones after the ``*``, the fixed ones left out, then the shared options."""
    defaults = {**dict(spec.hyper), **public.defaults}
    shown = [(k, defaults[k]) for k, _ in spec.hyper if k not in public.fixed]
    pos = [f"{k}={v!r}" for k, v in shown if k not in spec.keyword_only]
    kw = [f"{k}={v!r}" for k, v in shown if k in spec.keyword_only]
    expected = f"(params, {', '.join(pos)}, *, {', '.join(kw + [_SHARED_KEYWORDS])})"
    sig = inspect.signature(cls)
    written = str(sig.replace(parameters=[p.replace(annotation=p.empty)
                                          for p in sig.parameters.values()],
                              return_annotation=sig.empty))
    if written != expected:
        raise TypeError(f"{cls.__name__}.__init__{written} disagrees with the row of "
                        f"{spec.name!r}: {expected}")
