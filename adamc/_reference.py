"""The test suite's oracle: adamc's readable pure-NumPy twins, by algorithm name.

Each twin lives in its algorithm's module of :mod:`adamc.algorithms`; the parts they
share (gradient preprocessing, weight decay, the global-norm clipping factor) in
``adamc/algorithms/_numpy.py``. They take arrays, return new float64 arrays and never
modify their inputs.
"""
from .algorithms._numpy import (adam_moments, clip_grad_norm_scale,
                                preprocess_grad, weight_decay_terms)
from .algorithms.adadelta import adadelta
from .algorithms.adagrad import adagrad
from .algorithms.adam import adam
from .algorithms.adamax import adamax
from .algorithms.lion import lion
from .algorithms.nadam import nadam
from .algorithms.prodigy import prodigy
from .algorithms.radam import radam
from .algorithms.rmsprop import rmsprop
from .algorithms.rprop import rprop
from .algorithms.schedulefree import schedulefree
from .algorithms.sgd import sgd

__all__ = ["adam", "adamax", "nadam", "radam", "sgd", "rmsprop", "lion", "prodigy",
           "schedulefree", "adagrad", "adadelta", "rprop", "adam_moments", "clip_grad_norm_scale", "preprocess_grad",
           "weight_decay_terms"]
