"""The SciPy methods ``minimize_<name>``, one per entry of
``adamc.algorithms.METHODS`` (signatures and docstrings from adamc._fitting.minimize)."""
from __future__ import annotations

from ..algorithms import METHODS
from .minimize import _make_method_function

__all__ = [f"minimize_{name}" for name in METHODS]

globals().update({f"minimize_{name}": _make_method_function(name) for name in METHODS})
