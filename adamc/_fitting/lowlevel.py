"""Compiled objectives: a ``scipy.LowLevelCallable`` whose C function has the
signature ``double (int n, double *x, double *grad, void *user_data)`` (adamc.minimize)
or ``double (int n, double *x, double *grad, intptr_t i, void *user_data)``, i the
problem's index (adamc.minimize_many). The loops call it from C, without the GIL (see
docs/compiled-objectives.md)."""
from __future__ import annotations

import ctypes
import re
from _ctypes import CFuncPtr
from typing import Any

__all__: list[str] = []

SIGNATURE = "double (int, double *, double *, void *)"
# the same C function type, as ctypes, cffi and Cython spell it
_ACCEPTED = {SIGNATURE, "double (int, const double *, double *, void *)",
             "double (int, double *, double *, void *) noexcept",
             "double (int, const double *, double *, void *) noexcept"}

MANY_SIGNATURE = "double (int, double *, double *, intptr_t, void *)"
# the index as C, ctypes (numba's intp: "long" on LP64) and Cython may spell it
_INDEX_TYPES = ["intptr_t", "Py_ssize_t", "ssize_t", "ptrdiff_t"] + [
    name for name, ct in (("long", ctypes.c_long), ("long long", ctypes.c_longlong))
    if ctypes.sizeof(ct) == ctypes.sizeof(ctypes.c_void_p)]
_ACCEPTED_MANY = {f"double (int, {x}double *, double *, {i}, void *){tail}"
                  for x in ("", "const ") for i in _INDEX_TYPES for tail in ("", " noexcept")}


def is_lowlevel(fun: Any) -> bool:
    """Whether fun is a scipy.LowLevelCallable (a compiled objective). A C function
    given without one (a numba ``cfunc``, or a ctypes function pointer with an
    objective's signature) raises TypeError saying how to wrap it: called from Python
    it would fail with a message about missing arguments."""
    if type(fun).__name__ != "LowLevelCallable":  # cheap test before importing SciPy
        _refuse_bare_c_function(fun)
        return False
    from scipy import LowLevelCallable

    return isinstance(fun, LowLevelCallable)


def _refuse_bare_c_function(fun: Any) -> None:
    if type(fun).__name__ == "CFunc" and all(hasattr(fun, a) for a in
                                              ("ctypes", "address", "native_name")):
        what, wrap = "a numba cfunc", "scipy.LowLevelCallable(fun.ctypes)"
    elif isinstance(fun, CFuncPtr) and _objective_signature(fun):
        what, wrap = "a ctypes function pointer", "scipy.LowLevelCallable(fun)"
    else:
        return
    raise TypeError(f"fun is {what}: adamc calls a compiled objective from C only when it "
                    f"is wrapped in a scipy.LowLevelCallable; pass {wrap} (C signature "
                    f"'{SIGNATURE}' for adamc.minimize, '{MANY_SIGNATURE}' for "
                    f"minimize_many)")


def _objective_signature(pointer: Any) -> bool:
    """Whether a ctypes function pointer has the C signature of a compiled objective
    (of either entry point). Other ctypes functions (with ndpointer arguments, say)
    may be Python objectives."""
    try:
        from scipy import LowLevelCallable

        text = _normalized(LowLevelCallable(pointer).signature)
    except Exception:  # a type SciPy cannot name: not an objective's signature
        return False
    return text in _ACCEPTED or text in _ACCEPTED_MANY


def _normalized(signature: str) -> str:
    text = " ".join(signature.split())
    text = re.sub(r"\s*\*\s*", " *", text)     # "double*" -> "double *"
    text = re.sub(r"\*\s+(?=[*,)])", "*", text)  # "* *" -> "**", "* )" -> "*)"
    text = re.sub(r"\s*\(\s*", " (", text)
    return re.sub(r"\s*,\s*", ", ", text)


def capsule_of(fun: Any, many: bool = False) -> Any:
    """The capsule of a LowLevelCallable (function pointer, signature, user_data),
    after checking its signature (``many``: minimize_many's, with the problem's
    index)."""
    signature = fun.signature
    text = _normalized(signature) if isinstance(signature, str) else None
    if many and text not in _ACCEPTED_MANY:
        hint = (" (that is adamc.minimize's signature: minimize_many also passes the "
                "problem's index)" if text in _ACCEPTED else "")
        raise TypeError(f"a LowLevelCallable objective of minimize_many must have the C "
                        f"signature '{MANY_SIGNATURE}' (n, x, the gradient to fill, the "
                        f"problem's index, user_data; it returns f); got "
                        f"{signature!r}{hint}")
    if not many and text not in _ACCEPTED:
        hint = (" (that is minimize_many's signature, with the problem's index)"
                if text in _ACCEPTED_MANY else "")
        raise TypeError(f"a LowLevelCallable objective must have the C signature "
                        f"'{SIGNATURE}' (n, x, the gradient to fill, user_data; it "
                        f"returns f); got {signature!r}{hint}")
    return tuple.__getitem__(fun, 0)
