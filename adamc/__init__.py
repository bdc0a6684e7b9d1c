"""adamc: fast, reproducible Adam-family optimizers for NumPy and SciPy on the CPU.

Parameters are NumPy arrays updated in place by compiled SIMD kernels (float32 and
float64, chosen at import for the best instruction set of the CPU); results are the
same bits for every SIMD level and thread count.
"""
from ._kernels import adam_step, get_num_threads, set_num_threads
from ._config import show_config
from ._minimize import minibatches, minimize, minimize_adam, minimize_adamw, minimize_amsgrad
from .optim import Adam, AdamW, Optimizer

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AdamW",
    "Optimizer",
    "adam_step",
    "get_num_threads",
    "minibatches",
    "minimize",
    "minimize_adam",
    "minimize_adamw",
    "minimize_amsgrad",
    "set_num_threads",
    "show_config",
    "__version__",
]
