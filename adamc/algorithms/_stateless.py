"""The stateless steps: a module's ``def <name>_step(...)`` declares the signature
and the docstring, and :func:`compiled_step` puts the compiled implementation behind
it (a ``adamc._kernels._StepFunction``: CPython calls it through the vectorcall
protocol and it binds the arguments itself, so a call builds no argument tuple,
keyword dict or Python frame)."""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from .. import _kernels
from ._table import HYPERPARAMETERS, Algorithm

F = TypeVar("F", bound=Callable[..., Any])


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
    """(positional, keyword-only, state) argument names of ``algorithm``'s step, as the
    row defines them; the keyword-only ones are written ``name=default``."""
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


def _written(sig: inspect.Signature) -> tuple[list[str], list[str]]:
    """``step_signature``'s form of a declared signature."""
    positional: list[str] = []
    keyword: list[str] = []
    for p in sig.parameters.values():
        text = p.name if p.default is p.empty else f"{p.name}={p.default!r}"
        (keyword if p.kind is p.KEYWORD_ONLY else positional).append(text)
    return positional, keyword


def compiled_step(algorithm: Algorithm) -> Callable[[F], F]:
    """Decorator: the compiled step of ``algorithm`` with the name, signature and
    docstring of the decorated declaration, which must agree with the row (checked
    here, at import). An algorithm with optimizer-wide scalars (the row's ``scalars``:
    Prodigy's d, d_max, d_numerator) takes them as arguments and returns their new
    values."""
    def make(declared: F) -> F:
        sig = inspect.signature(declared, eval_str=True)
        positional, keyword, _ = step_signature(algorithm)
        if _written(sig) != (positional, keyword):
            raise TypeError(f"{declared.__name__}: the declared signature {sig} disagrees "
                            f"with the row of {algorithm.name!r}: "
                            f"({', '.join(positional)}, *, {', '.join(keyword)})")
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
        fn = _kernels._StepFunction(spec, algorithm.step_name, npositional,
                                    [a[1] for a in args], aux_default)
        for key, value in {"__signature__": sig, "__name__": declared.__name__,
                           "__qualname__": declared.__name__, "__doc__": declared.__doc__,
                           "__module__": "adamc.functional"}.items():  # its public home
            setattr(fn, key, value)
        return fn  # type: ignore[return-value]
    return make
