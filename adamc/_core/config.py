"""show_config(): what adamc runs on."""
from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from .. import _kernels
from . import threads as _threads
from .._version import __version__


def config() -> dict[str, Any]:
    """Configuration facts as a dict (the data behind :func:`show_config`)."""
    import scipy

    return {
        "adamc": __version__,
        "simd_level": _kernels.simd_level(),
        "simd_levels_available": list(_kernels.available_simd_levels()),
        "threads": _kernels.have_threads(),
        "num_threads": _kernels.get_num_threads(),
        "thread_policy": _kernels._get_thread_policy(),
        "threads_because": _threads.reason(),
        "parallel_threshold_bytes": _kernels._parallel_threshold_bytes(),
        "build_flags": _kernels.build_flags(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
    }


def show_config(mode: str = "stdout") -> dict[str, Any] | None:
    """Print (or return) the SIMD level in use, the levels available, the thread
    limit, its policy and why, and versions.

    Parameters
    ----------
    mode : {"stdout", "dicts"}, optional
        Print a readable summary (default) or return it as a dict, like
        ``numpy.show_config``.
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    info = config()
    if mode == "dicts":
        return info
    width = max(map(len, info))
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:<{width}} : {value}")
    return None
