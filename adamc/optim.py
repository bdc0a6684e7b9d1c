"""Stateful optimizers with torch.optim's names, defaults and semantics.

Parameters are NumPy arrays updated in place; each optimizer owns its state arrays.
Each class lives in its algorithm's module of :mod:`adamc.algorithms` (Adam and
AdamW in ``adamc/algorithms/adam.py``, ...); their common base, :class:`Optimizer`,
in ``adamc/_core/optimizer.py``, over the compiled engine ``adamc._kernels._Engine``.
"""
from ._core.optimizer import Optimizer, _restore  # noqa: F401  (pickles name adamc.optim._restore)
from .algorithms.adadelta import Adadelta
from .algorithms.adagrad import Adagrad
from .algorithms.adam import Adam, AdamW
from .algorithms.adamax import Adamax
from .algorithms.lion import Lion
from .algorithms.nadam import NAdam
from .algorithms.prodigy import Prodigy
from .algorithms.radam import RAdam
from .algorithms.rmsprop import RMSprop
from .algorithms.rprop import Rprop
from .algorithms.schedulefree import AdamWScheduleFree, SGDScheduleFree
from .algorithms.sgd import SGD

Optimizer.__module__ = __name__  # its public home: help(), reprs and pickles name it here

__all__ = ["Optimizer", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop",
           "Lion", "Prodigy", "AdamWScheduleFree", "SGDScheduleFree", "Adagrad", "Adadelta",
           "Rprop"]
