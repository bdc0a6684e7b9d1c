"""The test suite's oracle: adamc's readable pure-NumPy twins, by algorithm name.

Each twin lives in its algorithm's module of :mod:`adamc.algorithms`; the parts they
share (gradient preprocessing, weight decay, the global-norm clipping factor) in
``adamc/algorithms/_numpy.py``. They take arrays, return new float64 arrays and never
modify their inputs.
"""
from .algorithms._numpy import (adam_moments, clip_grad_norm_scale,  # noqa: F401
                                preprocess_grad, weight_decay_terms)
from .algorithms.adam import adam  # noqa: F401
from .algorithms.adamax import adamax  # noqa: F401
from .algorithms.lion import lion  # noqa: F401
from .algorithms.nadam import nadam  # noqa: F401
from .algorithms.prodigy import prodigy  # noqa: F401
from .algorithms.radam import radam  # noqa: F401
from .algorithms.rmsprop import rmsprop  # noqa: F401
from .algorithms.schedulefree import schedulefree  # noqa: F401
from .algorithms.sgd import sgd  # noqa: F401
