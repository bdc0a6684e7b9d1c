"""Compiled objectives of adamc.minimize: a ``scipy.LowLevelCallable`` whose C
function has the signature ``double (int n, double *x, double *grad, void
*user_data)``. The minimize loop calls it from C, without the GIL (see
docs/compiled-objectives.md)."""
from __future__ import annotations

import re
from typing import Any

__all__: list[str] = []

SIGNATURE = "double (int, double *, double *, void *)"
# the same C function type, as ctypes, cffi and Cython spell it
_ACCEPTED = {SIGNATURE, "double (int, const double *, double *, void *)",
             "double (int, double *, double *, void *) noexcept",
             "double (int, const double *, double *, void *) noexcept"}


def is_lowlevel(fun: Any) -> bool:
    """Whether fun is a scipy.LowLevelCallable (a compiled objective)."""
    if type(fun).__name__ != "LowLevelCallable":  # cheap test before importing SciPy
        return False
    from scipy import LowLevelCallable

    return isinstance(fun, LowLevelCallable)


def _normalized(signature: str) -> str:
    text = " ".join(signature.split())
    text = re.sub(r"\s*\*\s*", " *", text)     # "double*" -> "double *"
    text = re.sub(r"\*\s+(?=[*,)])", "*", text)  # "* *" -> "**", "* )" -> "*)"
    text = re.sub(r"\s*\(\s*", " (", text)
    return re.sub(r"\s*,\s*", ", ", text)


def capsule_of(fun: Any) -> Any:
    """The capsule of a LowLevelCallable (function pointer, signature, user_data),
    after checking its signature."""
    signature = fun.signature
    if not isinstance(signature, str) or _normalized(signature) not in _ACCEPTED:
        raise TypeError(f"a LowLevelCallable objective must have the C signature "
                        f"'{SIGNATURE}' (n, x, the gradient to fill, user_data; it "
                        f"returns f); got {signature!r}")
    return tuple.__getitem__(fun, 0)
