"""adamc: fast, reproducible Adam-family optimizers for NumPy and SciPy on the CPU.

Parameters are NumPy arrays updated in place by compiled SIMD kernels (float32 and
float64, chosen at import for the best instruction set of the CPU); results are the
same bits for every SIMD level and thread count.
"""
from ._fitting import methods as _methods
from ._core import threads as _threads
from . import distributed, functional, optim, schedules
from ._core.config import show_config
from ._kernels import get_num_threads, set_num_threads
from ._fitting.methods import *  # noqa: F403  minimize_<name>, from the algorithm table
from ._fitting.many import minimize_many
from ._fitting.minimize import minibatches, minimize
from .checkpoint import load, save
from .functional import *  # noqa: F403  <name>_step, from the algorithm table
from .optim import *  # noqa: F403  the optimizer classes, from the algorithm table

from ._version import __version__  # noqa: E402

# Defined in private modules, public here: help(), reprs and pickles name this home.
for _public in (minimize, minimize_many, minibatches, show_config):
    _public.__module__ = "adamc"
del _public

_threads.configure()
_threads._register_with_threadpoolctl()

__all__ = ["Optimizer"]
__all__ += [name for name in optim.__all__ if name != "Optimizer"]
__all__ += functional.__all__
__all__ += ["minimize", "minimize_many"]
__all__ += _methods.__all__
__all__ += ["minibatches", "schedules", "distributed", "save", "load", "show_config",
            "get_num_threads", "set_num_threads", "__version__"]
