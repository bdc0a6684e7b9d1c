"""Stateless steps: one in-place update of one array, with the state passed in.

Like ``torch.optim``'s functional forms (or ``torch._fused_adam_``) for NumPy: the
caller owns the state arrays (start them from zeros) and passes ``step``, the 1-based
number of this update. Every argument is checked before anything is modified; the
formulas are those of the optimizer classes in :mod:`adamc.optim`.

One ``<name>_step`` function per row of :data:`adamc._algorithms.ALGORITHMS`: its
signature, defaults and docstring come from the row; the argument parsing, the checks
and the update run in compiled code (``adamc._kernels._StepFunction``), Prodigy's
too (its optimizer-wide scalars are arguments, and returned).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from . import _kernels
from ._algorithms import ALGORITHMS, HYPERPARAMETERS, Algorithm

__all__ = [a.step_name for a in ALGORITHMS.values() if a.stateless]


def step_arguments(algorithm: Algorithm) -> list[tuple[str, Any, str]]:
    """The hyperparameter arguments of a stateless step: (name, default, kind), with
    ``betas`` split into ``beta1`` and ``beta2`` (Rprop's ``etas`` into ``etaminus`` and
    ``etaplus``, ``step_sizes`` into ``step_size_min`` and ``step_size_max``, as in
    torch.optim's functional form)."""
    out = []
    for name, default in algorithm.hyper:
        kind = HYPERPARAMETERS[name].kind
        if kind == "betas":
            out += [("beta1", default[0], "beta"), ("beta2", default[1], "beta")]
        elif kind == "etas":
            out += [("etaminus", default[0], "etaminus"), ("etaplus", default[1], "etaplus")]
        elif kind == "step_sizes":
            out += [("step_size_min", default[0], "positive"),
                    ("step_size_max", default[1], "positive")]
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
    keyword += [f"{name}={default!r}" for name, default in algorithm.scalars]
    keyword += [f"{name}={default!r}" for name, default, _ in step_arguments(algorithm)]
    keyword += [f"{s.name}=None" for s in algorithm.states if not s.positional]
    return positional, keyword, [s.name for s in algorithm.states]


def _make_step(algorithm: Algorithm) -> Callable[..., Any]:
    """The compiled callable of ``algorithm``'s step (a ``_kernels._StepFunction``:
    CPython calls it through the vectorcall protocol and it binds the arguments
    itself, so a call builds no argument tuple, keyword dict or Python frame), with
    the name, docstring and signature of the table's row (in the instance's
    ``__dict__``). An algorithm with optimizer-wide scalars (the table's ``scalars``:
    Prodigy's d, d_max, d_numerator; None: the hyperparameter ``d0``) takes them as
    arguments and returns their new values."""
    args = step_arguments(algorithm)
    aux = algorithm.aux or "none"
    aux_default: Any = 1.0
    if algorithm.scalars:
        if algorithm.name != "prodigy" or aux != "none":
            raise ValueError(f"{algorithm.name}: only Prodigy's scalars are compiled")
        aux, aux_default = "prodigy", tuple(d for _, d in algorithm.scalars)
    spec = _kernels._StepSpec(
        algorithm.c_id, [a[0] for a in args], [a[2] for a in args],
        [s.name for s in algorithm.states],
        [s.requires for s in algorithm.states], [s.needs for s in algorithm.states], aux)
    npositional = sum(s.positional for s in algorithm.states)
    if any(s.positional for s in algorithm.states[npositional:]):
        raise ValueError(f"{algorithm.name}: positional states must come first")
    fn = _kernels._StepFunction(spec, algorithm.step_name, npositional, [a[1] for a in args],
                                aux_default)
    positional, keyword, _ = step_signature(algorithm)
    namespace: dict[str, Any] = {"inf": float("inf")}  # repr(inf), e.g. Prodigy's growth_rate
    exec(f"def {algorithm.step_name}({', '.join(positional)}, *, {', '.join(keyword)}):"
         f" pass", namespace)  # only to describe the signature (like dataclasses)
    fn.__signature__ = inspect.signature(namespace[algorithm.step_name])
    fn.__name__ = fn.__qualname__ = algorithm.step_name
    fn.__module__ = __name__
    fn.__doc__ = algorithm.step_doc
    return fn


for _algorithm in ALGORITHMS.values():
    if not _algorithm.stateless:
        continue
    globals()[_algorithm.step_name] = _make_step(_algorithm)
del _algorithm
