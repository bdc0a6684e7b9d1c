"""adamc's algorithms, one module each (or per family): its table row, its optimizer
class(es), its stateless step and its readable NumPy twin.

``MODULES`` is the one list of algorithms; ``ALGORITHMS``, ``CLASSES`` and
``METHODS`` are collected from it in this order, and everything else (the public
names of :mod:`adamc.optim` and :mod:`adamc.functional`, ``adamc.minimize``'s
method names, the API page, the conformance tests) follows from them.
"""
from __future__ import annotations

from types import ModuleType

from . import (adadelta, adagrad, adam, adamax, lion, nadam, prodigy, radam, rmsprop, rprop,
               schedulefree, sgd)
from ._stateless import step_arguments, step_signature
from ._table import (HYPERPARAMETERS, SHARED_OPTION_DOCS, STATE_KINDS, Algorithm,
                     Hyperparameter, Method, PublicClass, State, aux_from_state,
                     aux_to_state, check_aux)

MODULES: tuple[ModuleType, ...] = (adam, adamax, nadam, radam, sgd, rmsprop, lion, prodigy,
                                   schedulefree, adagrad, adadelta, rprop)

ALGORITHMS: dict[str, Algorithm] = {
    row.name: row for m in MODULES for row in vars(m).values() if isinstance(row, Algorithm)}
# Public classes and SciPy methods in table order.
CLASSES: dict[str, tuple[Algorithm, PublicClass]] = {
    c.name: (a, c) for a in ALGORITHMS.values() for c in a.classes}
METHODS: dict[str, tuple[Algorithm, Method]] = {
    m.name: (a, m) for a in ALGORITHMS.values() for m in a.methods}
__all__ = ["MODULES", "ALGORITHMS", "CLASSES", "METHODS",
           "HYPERPARAMETERS", "SHARED_OPTION_DOCS", "STATE_KINDS", "Algorithm",
           "Hyperparameter", "Method", "PublicClass", "State", "aux_from_state",
           "aux_to_state", "check_aux", "step_arguments", "step_signature"]
