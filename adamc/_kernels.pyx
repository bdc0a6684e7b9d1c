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
- ``_status.pxi``     the statuses of minimize and minimize_many, and their messages
- ``_schedules.pxi``  the compiled learning-rate schedules
- ``_coefs.pxi``      the preparation of a step's coefficients, shared by every driver
- ``_stateless.pxi``  the algorithms of the kernels and the compiled stateless steps
- ``_engine.pxi``     the engine behind the optimizer classes
- ``_prodigy.pxi``    Prodigy's engine and stateless step (sums over every parameter)
- ``_schedulefree.pxi`` the schedule-free engine (per-group averaging weights, train/eval)
- ``_minimize_many_row_steps.pxi`` steps of many independent problems held as rows
  (adamc.minimize_many)
- ``_minimize_many_loop.pxi`` the iterations of adamc.minimize_many (Python objectives)
- ``_minimize_loop.pxi`` the iterations of adamc.minimize (Python or C objectives)
- ``_minimize_many_c_fits.pxi`` the fits of adamc.minimize_many with a C objective, on
  the threads

They form one extension module on purpose: every part reads the selected kernel
table and the thread count (module-level C state), and separate extension modules
would each link their own copy of the C core and need accessor functions on the hot
path.
"""

import os
import sys
import warnings

cimport cython
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItemWithError
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_Check, PyLong_CheckExact
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport PyObject
from libc.math cimport INFINITY, M_PI, NAN, fabs, isfinite, isnan, sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

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
        ADAMC_PRODIGY
        ADAMC_SF_ADAMW
        ADAMC_LERP_END
        ADAMC_EMA

    # (only the members Cython code reads or writes; the names of the nested types
    # are never emitted)
    ctypedef struct _prodigy_coef:
        double beta1, m_gain, beta2, v_gain, beta3, s_gain, step_size, grad_step, eps_hat
        double wd_step
    ctypedef struct _schedulefree_coef:
        double beta2, one_minus_beta2, bc2, eps, wd, ckp1, one_minus_ckp1, c_y, lr
    ctypedef union _coef_union:
        _prodigy_coef prodigy
        _schedulefree_coef schedulefree

    ctypedef struct adamc_coef:
        unsigned flags
        double grad_scale
        double clip_value
        double weight_decay
        double decay
        double ema_weight
        _coef_union u

    ctypedef struct adamc_task:
        void *param
        const void *grad
        void *state[3]
        const void *lower
        const void *upper
        const adamc_coef *coef
        void *anchor
        void *average

    ctypedef void (*adamc_chunk_fn)(const adamc_task *task, Py_ssize_t begin,
                                    Py_ssize_t end) noexcept nogil
    ctypedef double (*adamc_sumsq_fn)(const void *grad, Py_ssize_t begin, Py_ssize_t end,
                                      double clip) noexcept nogil
    ctypedef Py_ssize_t (*adamc_scan_fn)(const void *grad, Py_ssize_t n) noexcept nogil
    ctypedef double (*adamc_norm_fn)(const void *a, Py_ssize_t n) noexcept nogil
    ctypedef void (*adamc_reduce_fn)(const adamc_task *task, Py_ssize_t begin, Py_ssize_t end,
                                     double *out) noexcept nogil

    ctypedef struct adamc_kernels:
        const char *name
        adamc_chunk_fn step[ADAMC_NUM_ALGOS][2]
        adamc_sumsq_fn sumsq[2]
        adamc_scan_fn first_nonfinite[2]
        adamc_reduce_fn prodigy_stats[2]
        adamc_norm_fn max_abs[2]

    const adamc_kernels *adamc_kernels_at(int level)
    int adamc_cpu_level()
    int ADAMC_KIND_STEP(int algo, int dtype)
    int ADAMC_KIND_SUMSQ(int dtype)
    int ADAMC_KIND_REDUCE(int dtype)
    ctypedef void (*adamc_body_fn)(void *ctx, Py_ssize_t begin, Py_ssize_t end) noexcept nogil
    void adamc_enter()
    bint adamc_try_enter()
    void adamc_leave()
    bint adamc_may_keep_token()
    void adamc_parallel(int kind, Py_ssize_t nbytes, adamc_body_fn body, void *ctx,
                        Py_ssize_t n, Py_ssize_t chunk_min)
    void adamc_run(adamc_chunk_fn fn, const adamc_task *task, Py_ssize_t n, int kind,
                   Py_ssize_t nbytes)
    double adamc_sum_squares(adamc_sumsq_fn fn, const void *grad, Py_ssize_t n, double clip,
                             int kind, Py_ssize_t nbytes)
    void adamc_reduce2(adamc_reduce_fn fn, const adamc_task *task, Py_ssize_t n, int kind,
                       Py_ssize_t nbytes, double *out)
    enum: ADAMC_SUM_PARTS
    enum: ADAMC_SUM_PART
    int adamc_have_threads()
    int adamc_get_num_threads()
    void adamc_set_num_threads(int n)
    int adamc_get_adaptive()
    void adamc_set_adaptive(int on)
    int adamc_get_host_check()
    void adamc_set_host_check(int on)
    Py_ssize_t adamc_get_threshold()
    void adamc_set_threshold(Py_ssize_t nbytes)
    Py_ssize_t adamc_get_step_chunk()
    void adamc_set_step_chunk(Py_ssize_t elements)
    int adamc_get_spin_ns()
    void adamc_set_spin_ns(int ns)
    ctypedef struct adamc_stats:
        int workers, active, peak
        unsigned long long jobs_single, jobs_parallel, joins, wake_ns_total
        long long wake_ns_max
    void adamc_pool_stats(adamc_stats *s)
    void adamc_reset_stats(int forget_policy)
    int adamc_policy_choice(int kind, Py_ssize_t nbytes, double *ns_one, double *ns_many)
    int adamc_policy_simulate(int kind, Py_ssize_t nbytes, int64_t ns_one, int64_t ns_many,
                              int host_full, int calls, unsigned char *modes)

    ctypedef struct adamc_hyper:
        double lr, beta1, beta2, eps, weight_decay
        double momentum_decay, momentum, dampening, alpha
        double beta3, d0, d_coef, growth_rate
        double warmup_steps, r, weight_lr_power
        double lr_decay, initial_accumulator_value, rho
        double etaminus, etaplus, step_size_min, step_size_max
        int decoupled, amsgrad, maximize, nesterov, centered
        int bias_correction, safeguard_warmup

    int adamc_prepare(int algo, const adamc_hyper *h, int64_t step, double aux,
                      adamc_coef *coef, double *aux_next)
    int adamc_steady(int algo, const adamc_hyper *h, int64_t step, double aux)
    double adamc_aux_initial(int algo)
    double adamc_bias_correction(double beta, int64_t step)
    const char *adamc_algorithm_name(int algo)
    # adamc's own pow and cos: the coefficients and schedules have the same bits on
    # every platform (the C libraries' pow and cos are not rounded alike)
    double adamc_pow(double x, double y)
    double adamc_cos(double x)


cdef extern from "adamc_config.h":
    const char *ADAMC_BUILD_FLAGS


# ---------------------------------------------------------------------------------
# SIMD level and threads

# The compiled levels' names, lowest first: baseline, avx2, avx512 on x86-64; neon on
# aarch64 (its baseline, every aarch64 CPU has NEON); baseline elsewhere.
LEVEL_NAMES = tuple(adamc_kernels_at(i).name.decode()
                    for i in range(ADAMC_LEVEL_AVX512 + 1) if adamc_kernels_at(i) != NULL)
# "baseline" names the lowest level on every architecture (ADAMC_SIMD=baseline works
# everywhere, and so do tests that ask for it)
_LEVEL_ALIASES = {"baseline": LEVEL_NAMES[0]}

cdef const adamc_kernels *_kernels = NULL
cdef int _level = 0
# Below this size a step keeps the GIL: releasing it costs about 0.1 us. (The size
# from which threads may be used is the pool's threshold, adamc_get_threshold.)
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
    name = _LEVEL_ALIASES.get(name, name)
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
    requested = _LEVEL_ALIASES.get(requested, requested)
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


def have_threads():
    """True when the extension was built with its thread pool."""
    return bool(adamc_have_threads())


def set_num_threads(n):
    """Set the largest number of threads adamc runs its kernels on.

    The limit is for the whole process: steps from several Python threads at once
    share it (each caller counts as one thread; pool workers join only while the
    total stays within the limit). Results are bit-identical for every thread count.
    ``threadpoolctl.threadpool_limits`` changes the same limit.

    Parameters
    ----------
    n : int
        Number of threads, >= 1 (at most 256).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > 1 and not adamc_have_threads():
        warnings.warn("adamc was built without threads; updates run on 1 thread",
                      RuntimeWarning, stacklevel=2)
        n = 1
    adamc_set_num_threads(min(int(n), 256))


def get_num_threads():
    """Largest number of threads adamc runs its kernels on (see set_num_threads)."""
    return adamc_get_num_threads()


THREAD_POLICIES = ("adaptive", "fixed")


def _set_thread_policy(name):
    """``"adaptive"`` (use several threads where they were measured to be faster) or
    ``"fixed"`` (always, from the threshold on); returns the previous name."""
    if name not in THREAD_POLICIES:
        raise ValueError(f"thread policy must be one of {THREAD_POLICIES}, got {name!r}")
    previous = _get_thread_policy()
    adamc_set_adaptive(name == "adaptive")
    return previous


def _get_thread_policy():
    return THREAD_POLICIES[0] if adamc_get_adaptive() else THREAD_POLICIES[1]


def _parallel_threshold_bytes():
    return adamc_get_threshold()


def _set_parallel_threshold_bytes(nbytes):
    """Set the size from which updates may be split over threads (tests, benchmarks)."""
    previous = adamc_get_threshold()
    adamc_set_threshold(max(0, int(nbytes)))
    return previous


def _set_step_chunk(elements):
    """Set the smallest chunk of a step handed to a thread, in elements (rounded up to
    a multiple of 64; tests use small chunks to split small arrays); returns the
    previous value."""
    previous = adamc_get_step_chunk()
    adamc_set_step_chunk(max(64, int(elements)))
    return previous


def _set_host_check(on):
    """Whether the adaptive policy keeps one thread while the host has more runnable
    threads than CPUs (the default); returns the previous setting. Tests turn it off
    to measure several threads on a busy host."""
    previous = bool(adamc_get_host_check())
    adamc_set_host_check(1 if on else 0)
    return previous


def _worker_spin_ns():
    return adamc_get_spin_ns()


def _set_worker_spin_ns(ns):
    """How long an idle pool worker spins before it sleeps (benchmarks)."""
    previous = adamc_get_spin_ns()
    adamc_set_spin_ns(max(0, min(int(ns), 10**9)))
    return previous


def thread_stats():
    """Counters of the thread pool: workers started, threads in kernels now and at
    most since the last reset, jobs run on one thread and on several, worker joins
    and their wake-up latency."""
    cdef adamc_stats st
    adamc_pool_stats(&st)
    return {"workers": st.workers, "active": st.active, "peak": st.peak,
            "jobs_single": st.jobs_single, "jobs_parallel": st.jobs_parallel,
            "joins": st.joins,
            "wake_us_mean": st.wake_ns_total / st.joins / 1e3 if st.joins else None,
            "wake_us_max": st.wake_ns_max / 1e3 if st.joins else None}


def _reset_thread_stats(forget_policy=False):
    """Reset the counters (and, with forget_policy, every measured choice)."""
    adamc_reset_stats(1 if forget_policy else 0)


def _policy_choice(str algorithm, dtype, Py_ssize_t nbytes):
    """(threads chosen, ns/byte on one thread, ns/byte on several) as measured so far
    for a step of ``algorithm`` on arrays of ``nbytes`` bytes."""
    cdef double one, many
    cdef int dt = ADAMC_F32 if np.dtype(dtype) == np.float32 else ADAMC_F64
    choice = adamc_policy_choice(ADAMC_KIND_STEP(ALGORITHMS[algorithm], dt), nbytes,
                                 &one, &many)
    return (2 if choice else 1), (one if one >= 0 else None), (many if many >= 0 else None)


def _policy_simulate(int kind, Py_ssize_t nbytes, costs):
    """Feed the adaptive policy of (kind, nbytes) with made-up timings: ``costs`` is a
    sequence of (ns on one thread, ns on several) or (ns on one, ns on several, whether
    the host has more runnable threads than CPUs) per call; returns the modes it chose
    (0: one thread, 1: several). Tests check the policy's logic so, without clocks."""
    cdef unsigned char mode
    out = []
    for cost in costs:
        one, many = cost[0], cost[1]
        full = len(cost) > 2 and bool(cost[2])
        if adamc_policy_simulate(kind, nbytes, one, many, full, 1, &mode) != 0:
            raise RuntimeError("the policy is not available (no threads, or busy)")
        out.append(mode)
    return out


cdef extern from *:
    """
    static int _occupied = 0, _occupied_most = 0;
    """
    int _occupied, _occupied_most
    int __atomic_add_fetch(int *p, int v, int order) nogil
    int __atomic_sub_fetch(int *p, int v, int order) nogil
    int __atomic_load_n(int *p, int order) nogil
    void __atomic_store_n(int *p, int v, int order) nogil
    bint __atomic_compare_exchange_n(int *p, int *expected, int desired, bint weak,
                                     int success, int failure) nogil
    int __ATOMIC_SEQ_CST


cdef struct _Occupancy:
    long long spin


cdef void _occupancy_body(void *ctx, Py_ssize_t begin, Py_ssize_t end) noexcept nogil:
    cdef _Occupancy *o = <_Occupancy *>ctx
    cdef int now = __atomic_add_fetch(&_occupied, 1, __ATOMIC_SEQ_CST)
    cdef int seen = __atomic_load_n(&_occupied_most, __ATOMIC_SEQ_CST)
    while now > seen:
        if __atomic_compare_exchange_n(&_occupied_most, &seen, now, False,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST):
            break
    cdef volatile long long i = 0
    while i < o.spin * (end - begin):
        i += 1
    __atomic_sub_fetch(&_occupied, 1, __ATOMIC_SEQ_CST)


def _occupancy_probe(Py_ssize_t n, Py_ssize_t nbytes, long long spin):
    """Run a dummy loop of n chunks on the pool, like a kernel of nbytes bytes (the
    GIL released): returns how many chunk bodies, of any caller, ran at once at most
    since the last _reset_occupancy(). Tests count the threads inside kernels so."""
    cdef _Occupancy o
    o.spin = spin
    with nogil:
        adamc_enter()
        # a policy kind no kernel uses (steps: 0 .. 2*algorithms-1, sums: the last two)
        adamc_parallel(ADAMC_KIND_SUMSQ(ADAMC_F64) - 2, nbytes, _occupancy_body, &o, n, 1)
        adamc_leave()
    return __atomic_load_n(&_occupied_most, __ATOMIC_SEQ_CST)


def _reset_occupancy():
    __atomic_store_n(&_occupied_most, 0, __ATOMIC_SEQ_CST)


def _bias_correction(double beta, int64_t step):
    """The kernels' 1 - beta**step (tests check it against 1.0 - _pow(beta, step))."""
    return adamc_bias_correction(beta, step)


def _pow(double x, double y):
    """adamc's own pow (src_c/adamc_math.c): what the coefficients and schedules use,
    the same bits on every platform; tests' emulations of the kernels call it."""
    return adamc_pow(x, y)


def _cos(double x):
    """adamc's own cos, for |x| < 2**19 pi/2 (the cosine schedule's)."""
    return adamc_cos(x)


_select_level_from_environment()


cdef inline void _enter_holding_gil() noexcept:
    """A token for a small update that keeps the GIL, without holding the GIL while
    waiting (every Python thread would stop until another thread's kernel ends)."""
    if not adamc_try_enter():
        with nogil:
            adamc_enter()


include "_checks.pxi"
include "_helpers.pxi"
include "_status.pxi"
include "_coefs.pxi"
include "_schedules.pxi"
include "_stateless.pxi"
include "_engine.pxi"
include "_prodigy.pxi"
include "_schedulefree.pxi"
include "_minimize_many_row_steps.pxi"
include "_minimize_many_loop.pxi"
include "_minimize_loop.pxi"
include "_minimize_many_c_fits.pxi"
