"""Stateless steps: one in-place update of one array, with the state passed in.

Like ``torch.optim``'s functional forms (or ``torch._fused_adam_``) for NumPy: the
caller owns the state arrays (start them from zeros) and passes ``step``, the 1-based
number of this update. Every argument is checked before anything is modified; the
formulas are those of the optimizer classes in :mod:`adamc.optim`.

One ``<name>_step`` function per row of :data:`adamc._algorithms.ALGORITHMS`: its
signature, defaults and docstring come from the row; the argument parsing, the checks
and the update run in compiled code (``adamc._kernels._StepFunction``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from . import _kernels
from ._algorithms import ALGORITHMS, HYPERPARAMETERS, Algorithm
from ._validation import is_schedule

__all__ = [a.step_name for a in ALGORITHMS.values() if a.stateless]


def step_arguments(algorithm: Algorithm) -> list[tuple[str, Any, str]]:
    """The hyperparameter arguments of a stateless step: (name, default, kind), with
    ``betas`` split into ``beta1`` and ``beta2``."""
    out = []
    for name, default in algorithm.hyper:
        kind = HYPERPARAMETERS[name].kind
        if kind == "betas":
            out += [("beta1", default[0], "beta"), ("beta2", default[1], "beta")]
        else:
            out.append((name, default, kind))
    return out


def step_signature(algorithm: Algorithm) -> tuple[list[str], list[str], list[str]]:
    """(positional, keyword-only, state) argument names of ``algorithm``'s step; the
    keyword-only ones are written ``name=default`` with defaults from the table."""
    positional = ["param", "grad"]
    for s in algorithm.states:
        positional.append(s.name if s.requires is None else f"{s.name}=None")
        if not s.positional:
            positional.pop()
    keyword = ["step"] + ([f"{algorithm.aux}=1.0"] if algorithm.aux == "mu_product" else [])
    keyword += [f"{name}={default!r}" for name, default, _ in step_arguments(algorithm)]
    keyword += [f"{s.name}=None" for s in algorithm.states if not s.positional]
    return positional, keyword, [s.name for s in algorithm.states]


def _make_step(algorithm: Algorithm) -> Callable[..., Any]:
    """The compiled callable of ``algorithm``'s step (a ``_kernels._StepFunction``:
    CPython calls it through the vectorcall protocol and it binds the arguments
    itself, so a call builds no argument tuple, keyword dict or Python frame), with
    the name, docstring and signature of the table's row (in the instance's
    ``__dict__``)."""
    args = step_arguments(algorithm)
    spec = _kernels._StepSpec(
        algorithm.c_id, [a[0] for a in args], [a[2] for a in args],
        [s.name for s in algorithm.states],
        [s.requires for s in algorithm.states], [s.needs for s in algorithm.states],
        algorithm.aux or "none")
    npositional = sum(s.positional for s in algorithm.states)
    if any(s.positional for s in algorithm.states[npositional:]):
        raise ValueError(f"{algorithm.name}: positional states must come first")
    fn = _kernels._StepFunction(spec, algorithm.step_name, npositional, [a[1] for a in args])
    positional, keyword, _ = step_signature(algorithm)
    namespace: dict[str, Any] = {}
    exec(f"def {algorithm.step_name}({', '.join(positional)}, *, {', '.join(keyword)}):"
         f" pass", namespace)  # only to describe the signature (like dataclasses)
    fn.__signature__ = inspect.signature(namespace[algorithm.step_name])
    fn.__name__ = fn.__qualname__ = algorithm.step_name
    fn.__module__ = __name__
    fn.__doc__ = algorithm.step_doc
    return fn


def _make_scalar_step(algorithm: Algorithm) -> Callable[..., Any]:
    """The step of an algorithm with optimizer-wide scalar state (the table's
    ``scalars``, e.g. Prodigy's d): the scalars are arguments with defaults from the
    row (None: the hyperparameter ``d0``), their new values are returned, and the
    update runs in the compiled ``_kernels._<name>_step``."""
    args = step_arguments(algorithm)
    core = getattr(_kernels, f"_{algorithm.name}_step")
    hyper_names = [name for name, _, _ in args]

    defaults = {name: default for name, default, _ in args}
    checked: dict[str, Any] = {}  # the defaults' checked values, computed below

    def run(param: Any, grad: Any, states: tuple, step: Any, scalars: tuple,
            values: dict[str, Any]) -> Any:
        hyper: dict[str, Any] = {}
        for name, _, kind in args:
            value = values[name]
            if checked and value is defaults[name]:  # the default object: checked once
                hyper[name] = checked[name]
            elif name in ("beta1", "beta2"):  # betas, split
                hyper[name] = _kernels.check_beta(values[name], name)
            elif kind == "lr" and is_schedule(values[name]):
                raise TypeError("lr of a stateless step must be a number; pass "
                                "schedule(step) (schedules belong to the optimizer classes)")
            else:
                hyper[name] = HYPERPARAMETERS[name].check(values[name], name)
        hyper["betas"] = (hyper.pop("beta1"), hyper.pop("beta2"))
        if algorithm.cross_check is not None:
            algorithm.cross_check(hyper, "")
        t = _kernels.check_step(step)
        resolved = [hyper["d0"] if v is None else v for v in scalars]
        values_now = _kernels._check_prodigy_scalars(*resolved, 0, hyper["d0"])[:3]
        return core(param, grad, *states, t, *values_now, hyper)

    positional, keyword, states = step_signature(algorithm)
    positional = ["param", "grad", *states]
    keyword = ["step"] + [f"{n}=_scalars[{n!r}]" for n, _ in algorithm.scalars] + \
        [f"{n}=_defaults[{n!r}]" for n in hyper_names]
    namespace: dict[str, Any] = {"_run": run, "_scalars": dict(algorithm.scalars),
                                 "_defaults": {n: d for n, d, _ in args}}
    exec(f"def {algorithm.step_name}({', '.join(positional)}, *, {', '.join(keyword)}):\n"
         f"    return _run(param, grad, ({', '.join(states)},), step, "
         f"({', '.join(n for n, _ in algorithm.scalars)},), "
         f"dict({', '.join(f'{n}={n}' for n in hyper_names)}))\n", namespace)
    fn = namespace[algorithm.step_name]
    fn.__module__ = __name__
    fn.__doc__ = algorithm.step_doc
    for name, default, _ in args:
        checked[name] = (_kernels.check_beta(default, name) if name in ("beta1", "beta2")
                         else HYPERPARAMETERS[name].check(default, name))
    return fn


for _algorithm in ALGORITHMS.values():
    if not _algorithm.stateless:
        continue
    globals()[_algorithm.step_name] = (_make_scalar_step(_algorithm) if _algorithm.scalars
                                       else _make_step(_algorithm))
del _algorithm
