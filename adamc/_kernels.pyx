# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, autotestdict=False
"""Compiled core of adamc: operand checks, SIMD level selection, threading, and the
per-step engine that every optimizer class builds on.

Everything here runs on the hot path of ``step()``, so checks are done on the array
objects themselves (type number, flags, dimensions), never through memoryviews or
copies; the precise error message is only built once a check has failed.

The source is split by concern: this file holds the C declarations and the SIMD level
and thread configuration; the rest is included from

- ``_checks.pxi``     hyperparameter and operand checks
- ``_helpers.pxi``    small array helpers of minimize and adamc.distributed
- ``_schedules.pxi``  the compiled learning-rate schedules
- ``_stateless.pxi``  the algorithms of the kernels and the compiled stateless steps
- ``_engine.pxi``     the engine behind the optimizer classes

They form one extension module on purpose: every part reads the selected kernel
table and the thread count (module-level C state), and separate extension modules
would each link their own copy of the C core and need accessor functions on the hot
path.
"""

import os
import warnings

cimport cython
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItemWithError
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_Check, PyLong_CheckExact
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport PyObject
from libc.math cimport INFINITY, M_PI, NAN, cos, fabs, isfinite, isnan, pow, sqrt
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy

import numpy as np

cnp.import_array()


cdef extern from "adamc.h" nogil:
    enum:
        ADAMC_LEVEL_BASELINE
        ADAMC_LEVEL_AVX2
        ADAMC_LEVEL_AVX512
        ADAMC_F32
        ADAMC_F64
        ADAMC_NUM_ALGOS
        ADAMC_BOUNDED

    ctypedef struct adamc_coef:
        unsigned flags
        double grad_scale
        double clip_value

    ctypedef struct adamc_task:
        void *param
        const void *grad
        void *state[3]
        const void *lower
        const void *upper
        const adamc_coef *coef

    ctypedef void (*adamc_chunk_fn)(const adamc_task *task, Py_ssize_t begin,
                                    Py_ssize_t end) noexcept nogil
    ctypedef double (*adamc_sumsq_fn)(const void *grad, Py_ssize_t begin, Py_ssize_t end,
                                      double clip) noexcept nogil
    ctypedef Py_ssize_t (*adamc_scan_fn)(const void *grad, Py_ssize_t n) noexcept nogil

    ctypedef struct adamc_kernels:
        const char *name
        adamc_chunk_fn step[ADAMC_NUM_ALGOS][2]
        adamc_sumsq_fn sumsq[2]
        adamc_scan_fn first_nonfinite[2]

    const adamc_kernels *adamc_kernels_at(int level)
    int adamc_cpu_level()
    void adamc_run(adamc_chunk_fn fn, const adamc_task *task, Py_ssize_t n, int nthreads)
    double adamc_sum_squares(adamc_sumsq_fn fn, const void *grad, Py_ssize_t n, double clip,
                             int nthreads)
    int adamc_have_openmp()
    int adamc_default_threads()

    ctypedef struct adamc_hyper:
        double lr, beta1, beta2, eps, weight_decay
        double momentum_decay, momentum, dampening, alpha
        int decoupled, amsgrad, maximize, nesterov, centered

    int adamc_prepare(int algo, const adamc_hyper *h, int64_t step, double aux,
                      adamc_coef *coef, double *aux_next)
    double adamc_aux_initial(int algo)
    const char *adamc_algorithm_name(int algo)


cdef extern from "adamc_config.h":
    const char *ADAMC_BUILD_FLAGS


# ---------------------------------------------------------------------------------
# SIMD level and threads

LEVEL_NAMES = ("baseline", "avx2", "avx512")

cdef const adamc_kernels *_kernels = NULL
cdef int _level = 0
cdef int _num_threads = 1
# Below these sizes the work is too small to pay for waking the thread team or for
# releasing the GIL (about 0.1 us). Waking the team cost 0.6 us on a quiet 2-core
# AVX-512 VM (two threads then break even at 32 KiB per array) but up to 2 us when the
# host was busier (break-even near 128 KiB for float64, 256 KiB for float32); 128 KiB
# gives up about a microsecond in the first case and avoids losing 2x in the second.
cdef Py_ssize_t _parallel_min_bytes = 1 << 17
cdef Py_ssize_t _nogil_min_bytes = 1 << 14


def available_simd_levels():
    """Names of the SIMD levels usable on this CPU, lowest first."""
    return LEVEL_NAMES[:adamc_cpu_level() + 1]


def simd_level():
    """Name of the SIMD level in use."""
    return LEVEL_NAMES[_level]


def _use_simd_level(name):
    """Switch the SIMD level (tests and benchmarks); returns the previous name."""
    global _kernels, _level
    if name not in LEVEL_NAMES:
        raise ValueError(f"unknown SIMD level {name!r}; expected one of {LEVEL_NAMES}")
    cdef int wanted = LEVEL_NAMES.index(name)
    if wanted > adamc_cpu_level():
        raise ValueError(
            f"SIMD level {name!r} is not supported by this CPU (best: "
            f"{LEVEL_NAMES[adamc_cpu_level()]!r})")
    previous = LEVEL_NAMES[_level]
    _kernels = adamc_kernels_at(wanted)
    _level = wanted
    return previous


def _choose_level(requested, int cpu_best):
    """SIMD level for an ADAMC_SIMD value on a CPU whose best level is cpu_best:
    returns (name, warning message or None)."""
    best = LEVEL_NAMES[cpu_best]
    requested = (requested or "").strip().lower()
    if not requested:
        return best, None
    if requested not in LEVEL_NAMES:
        return best, (f"ADAMC_SIMD={requested!r} is not a SIMD level (expected one of "
                      f"{', '.join(LEVEL_NAMES)}); using {best!r}")
    if LEVEL_NAMES.index(requested) > cpu_best:
        return best, (f"ADAMC_SIMD={requested!r} asks for a level this CPU does not "
                      f"support; using {best!r}")
    return requested, None


def _select_level_from_environment():
    name, warning = _choose_level(os.environ.get("ADAMC_SIMD"), adamc_cpu_level())
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    _use_simd_level(name)


def build_flags():
    """Compiler flags the extension was built with."""
    return ADAMC_BUILD_FLAGS.decode()


def have_openmp():
    """True when the extension was built with OpenMP."""
    return bool(adamc_have_openmp())


def set_num_threads(n):
    """Set the number of threads used for large arrays.

    Parameters
    ----------
    n : int
        Number of threads, >= 1. Results are bit-identical for every thread count.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > 1 and not adamc_have_openmp():
        warnings.warn("adamc was built without OpenMP; updates run on 1 thread",
                      RuntimeWarning, stacklevel=2)
        n = 1
    _num_threads = int(n)


def get_num_threads():
    """Number of threads used for arrays above the parallel threshold."""
    return _num_threads


def _parallel_threshold_bytes():
    return _parallel_min_bytes


def _set_parallel_threshold_bytes(nbytes):
    """Set the size from which updates are split over threads (tests, benchmarks)."""
    global _parallel_min_bytes
    previous = _parallel_min_bytes
    _parallel_min_bytes = max(0, int(nbytes))
    return previous


_select_level_from_environment()
_num_threads = max(1, adamc_default_threads())


cdef inline int _threads_for(Py_ssize_t nbytes) noexcept nogil:
    return _num_threads if nbytes >= _parallel_min_bytes else 1


include "_checks.pxi"
include "_helpers.pxi"
include "_schedules.pxi"
include "_stateless.pxi"
include "_engine.pxi"
