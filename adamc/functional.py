"""Stateless steps: one in-place update of one array, with the state passed in.

Like ``torch.optim``'s functional forms (or ``torch._fused_adam_``) for NumPy: the
caller owns the state arrays (start them from zeros) and passes ``step``, the 1-based
number of this update. Every argument is checked before anything is modified; the
formulas are those of the optimizer classes in :mod:`adamc.optim`.

Each ``<name>_step`` lives in its algorithm's module of :mod:`adamc.algorithms`,
where its signature and docstring are written; the argument parsing, the checks and
the update run in compiled code (``adamc._kernels._StepFunction``), Prodigy's too
(its optimizer-wide scalars are arguments, and returned).
"""
from .algorithms.adadelta import adadelta_step
from .algorithms.adagrad import adagrad_step
from .algorithms.adam import adam_step
from .algorithms.adamax import adamax_step
from .algorithms.lion import lion_step
from .algorithms.nadam import nadam_step
from .algorithms.prodigy import prodigy_step
from .algorithms.radam import radam_step
from .algorithms.rmsprop import rmsprop_step
from .algorithms.rprop import rprop_step
from .algorithms.sgd import sgd_step

__all__ = ["adam_step", "adamax_step", "nadam_step", "radam_step", "sgd_step",
           "rmsprop_step", "lion_step", "prodigy_step", "adagrad_step", "adadelta_step",
           "rprop_step"]
