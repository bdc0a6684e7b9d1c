"""adamc: fast, reproducible Adam-family optimizers for NumPy and SciPy on the CPU.

Parameters are NumPy arrays updated in place by compiled SIMD kernels (float32 and
float64, chosen at import for the best instruction set of the CPU); results are the
same bits for every SIMD level and thread count.
"""
from . import _threads, distributed, schedules
from ._config import show_config
from .checkpoint import load, save
from ._kernels import get_num_threads, set_num_threads
from ._minimize import (minibatches, minimize, minimize_adam, minimize_adamax, minimize_adamw,
                        minimize_amsgrad, minimize_nadam, minimize_radam, minimize_rmsprop,
                        minimize_sgd)
from .functional import (adam_step, adamax_step, nadam_step, radam_step, rmsprop_step,
                         sgd_step)
from .optim import SGD, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop

__version__ = "0.1.0"

_threads.configure()
_threads._register_with_threadpoolctl()

__all__ = [
    "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop", "Optimizer",
    "adam_step", "adamax_step", "nadam_step", "radam_step", "sgd_step", "rmsprop_step",
    "minimize", "minimize_adam", "minimize_adamw", "minimize_amsgrad", "minimize_adamax",
    "minimize_nadam", "minimize_radam", "minimize_sgd", "minimize_rmsprop", "minibatches",
    "schedules", "distributed", "save", "load", "show_config", "get_num_threads",
    "set_num_threads", "__version__",
]
