# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, autotestdict=False
"""Compiled core of adamc: operand checks, SIMD level selection, threading, and the
per-step engine that every optimizer class builds on.

Everything here runs on the hot path of ``step()``, so checks are done on the array
objects themselves (type number, flags, dimensions), never through memoryviews or
copies; the precise error message is only built once a check has failed.
"""

import os
import warnings

cimport cython
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItemWithError
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_Check
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
        ADAMC_ADAM
        ADAMC_ADAMAX
        ADAMC_NADAM
        ADAMC_RADAM
        ADAMC_SGD
        ADAMC_RMSPROP
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
    int ADAMC_KIND_STEP(int algo, int dtype)
    int ADAMC_KIND_SUMSQ(int dtype)
    ctypedef void (*adamc_body_fn)(void *ctx, Py_ssize_t begin, Py_ssize_t end) noexcept nogil
    void adamc_enter()
    bint adamc_try_enter()
    void adamc_leave()
    void adamc_parallel(int kind, Py_ssize_t nbytes, adamc_body_fn body, void *ctx,
                        Py_ssize_t n, Py_ssize_t chunk_min)
    void adamc_run(adamc_chunk_fn fn, const adamc_task *task, Py_ssize_t n, int kind,
                   Py_ssize_t nbytes)
    double adamc_sum_squares(adamc_sumsq_fn fn, const void *grad, Py_ssize_t n, double clip,
                             int kind, Py_ssize_t nbytes)
    int adamc_have_threads()
    int adamc_get_num_threads()
    void adamc_set_num_threads(int n)
    int adamc_get_adaptive()
    void adamc_set_adaptive(int on)
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
                              int calls, unsigned char *modes)

    ctypedef struct adamc_hyper:
        double lr, beta1, beta2, eps, weight_decay
        double momentum_decay, momentum, dampening, alpha
        int decoupled, amsgrad, maximize, nesterov, centered

    void adamc_prepare(int algo, const adamc_hyper *h, int64_t step, double aux,
                       adamc_coef *coef, double *aux_next)
    double adamc_aux_initial(int algo)


cdef extern from "adamc_config.h":
    const char *ADAMC_BUILD_FLAGS


# ---------------------------------------------------------------------------------
# SIMD level and threads

LEVEL_NAMES = ("baseline", "avx2", "avx512")

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
    sequence of (ns on one thread, ns on several) per call; returns the modes it chose
    (0: one thread, 1: several). Tests check the policy's logic so, without clocks."""
    cdef unsigned char mode
    out = []
    for one, many in costs:
        if adamc_policy_simulate(kind, nbytes, one, many, 1, &mode) != 0:
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
        adamc_parallel(ADAMC_KIND_SUMSQ(ADAMC_F64) - 2, nbytes, _occupancy_body, &o, n, 1)
        adamc_leave()
    return __atomic_load_n(&_occupied_most, __ATOMIC_SEQ_CST)


def _reset_occupancy():
    __atomic_store_n(&_occupied_most, 0, __ATOMIC_SEQ_CST)


_select_level_from_environment()


# ---------------------------------------------------------------------------------
# Hyperparameter checks (the one place where scalar arguments are validated)

cdef double _real(object value, str name) except? -1.0:
    if PyFloat_Check(value):
        return PyFloat_AS_DOUBLE(value)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got bool {value!r}")
    if PyLong_Check(value) or isinstance(value, (np.floating, np.integer)):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        return float(value)
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")


cdef double _nonneg(object value, str name) except? -1.0:
    cdef double x = _real(value, name)
    if not (x >= 0.0) or not isfinite(x):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return x


cdef double _beta(object value, str name) except? -1.0:
    cdef double x = _real(value, name)
    if not (0.0 <= x < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return x


cdef bint _flag(object value, str name) except -1:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


cdef int64_t _step_number(object value, str name) except? -1:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (the 1-based number of this update), got {value!r}")
    if value > 2**62:
        raise ValueError(f"{name} is too large: {value!r}")
    return value


def check_nonnegative(value, name):
    """Return ``value`` as a float after checking that it is finite and >= 0."""
    return _nonneg(value, name)


def check_beta(value, name):
    """Return ``value`` as a float after checking that it lies in [0, 1)."""
    return _beta(value, name)


def check_betas(value, name="betas"):
    """Return ``(beta1, beta2)`` after checking a pair of numbers in [0, 1)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    return (_beta(value[0], f"{name}[0]"), _beta(value[1], f"{name}[1]"))


def check_flag(value, name):
    """Return ``value`` after checking that it is a bool."""
    return _flag(value, name)


def check_step(value, name="step"):
    """Return ``value`` as an int after checking that it is >= 1."""
    return _step_number(value, name)


# ---------------------------------------------------------------------------------
# Operand checks

cdef int _REQ_READ = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
cdef int _REQ_WRITE = _REQ_READ | cnp.NPY_ARRAY_WRITEABLE


cdef inline bint _float_type(int type_num) noexcept:
    return type_num == cnp.NPY_FLOAT or type_num == cnp.NPY_DOUBLE


cdef inline bint _operand_ok(object obj, int type_num, int ndim, const cnp.npy_intp *dims,
                             int required) noexcept:
    """True when obj is an ndarray of the expected dtype, shape and flags."""
    if not cnp.PyArray_Check(obj):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != type_num or (cnp.PyArray_FLAGS(a) & required) != required:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(a) or cnp.PyArray_NDIM(a) != ndim:
        return False
    return ndim == 0 or memcmp(cnp.PyArray_DIMS(a), dims, ndim * sizeof(cnp.npy_intp)) == 0


def _fix_hint(name):
    return f" (make it with np.ascontiguousarray({name}))"


cdef object _operand_error(object obj, str name, object ref, str ref_name, bint writeable):
    """The exception explaining why obj failed _operand_ok against ref (or, when ref
    is None, why obj cannot be a parameter at all)."""
    if not isinstance(obj, np.ndarray):
        hint = ""
        if isinstance(obj, (list, tuple, float, int)):
            hint = f"; convert it with np.asarray({name}, dtype=np.float64)"
        return TypeError(f"{name} must be a numpy.ndarray, got {type(obj).__name__}{hint}")
    dt = obj.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8) or not dt.isnative:
        if dt.kind == "f" and not dt.isnative:
            return TypeError(f"{name} has non-native byte order ({dt.str}); convert it "
                             f"with {name}.astype({dt.newbyteorder('=').name})")
        hint = ""
        if dt.kind in "iub":
            hint = f"; for a parameter use {name}.astype(np.float64)"
        return TypeError(f"{name} has dtype {dt}; adamc supports float32 and float64{hint}")
    if ref is not None and dt != ref.dtype:
        return TypeError(f"{name} has dtype {dt} but {ref_name} has dtype {ref.dtype}; "
                         f"they must match (convert with {name}.astype(np.{ref.dtype}))")
    if ref is not None and obj.shape != ref.shape:
        return ValueError(f"{name} has shape {obj.shape} but {ref_name} has shape "
                          f"{ref.shape}; they must match")
    if not obj.flags.c_contiguous:
        if writeable:
            return ValueError(
                f"{name} is not C-contiguous; adamc updates arrays in place and never "
                f"through a copy, so make the array itself contiguous "
                f"(np.ascontiguousarray) before creating the optimizer")
        return ValueError(f"{name} is not C-contiguous{_fix_hint(name)}")
    if not obj.flags.aligned:
        return ValueError(f"{name} is not aligned to its dtype{_fix_hint(name)}")
    if writeable and not obj.flags.writeable:
        return ValueError(f"{name} is read-only; adamc updates it in place")
    return RuntimeError(f"{name}: unexpected operand failure")  # pragma: no cover


cdef inline bint _overlap(object a, object b) noexcept:
    """True when the memory of two contiguous arrays overlaps."""
    cdef cnp.ndarray x = <cnp.ndarray>a, y = <cnp.ndarray>b
    cdef char *p = cnp.PyArray_BYTES(x)
    cdef char *q = cnp.PyArray_BYTES(y)
    cdef Py_ssize_t nx = cnp.PyArray_NBYTES(x), ny = cnp.PyArray_NBYTES(y)
    return nx > 0 and ny > 0 and p < q + ny and q < p + nx


def check_param(obj, name="param"):
    """Check that obj can be updated in place as a parameter."""
    if not cnp.PyArray_Check(obj) or not _float_type(cnp.PyArray_TYPE(<cnp.ndarray>obj)):
        raise _operand_error(obj, name, None, "", True)
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if not _operand_ok(obj, cnp.PyArray_TYPE(a), cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a),
                       _REQ_WRITE):
        raise _operand_error(obj, name, None, "", True)
    return obj


def check_operand(obj, name, ref, ref_name="param", writeable=False):
    """Check that obj matches ref (an already checked parameter) in dtype and shape
    and has the flags needed to be read (or written, with writeable=True)."""
    cdef cnp.ndarray r = <cnp.ndarray>ref
    if not _operand_ok(obj, cnp.PyArray_TYPE(r), cnp.PyArray_NDIM(r), cnp.PyArray_DIMS(r),
                       _REQ_WRITE if writeable else _REQ_READ):
        raise _operand_error(obj, name, ref, ref_name, writeable)
    return obj


def check_disjoint(named_arrays, read_only=()):
    """Raise ValueError when two arrays of ``named_arrays`` (written by a kernel)
    overlap, or when an array of ``read_only`` overlaps one of them."""
    written = [(n, a) for n, a in named_arrays if a is not None]
    for i in range(len(written)):
        for j in range(i + 1, len(written)):
            if _overlap(written[i][1], written[j][1]):
                raise ValueError(f"{written[i][0]} and {written[j][0]} share memory; "
                                 f"each must be a separate array")
    for rn, ra in read_only:
        if ra is None:
            continue
        for wn, wa in written:
            if _overlap(ra, wa):
                raise ValueError(f"{rn} shares memory with {wn}, which this step writes; "
                                 f"pass a separate array (e.g. {rn}.copy())")


# ---------------------------------------------------------------------------------
# Small helpers of the minimize loop (cheap at n = 10, where NumPy calls cost ~1 us)

ctypedef fused real:
    float
    double


cdef double _max_abs(const real *a, Py_ssize_t n) noexcept nogil:
    cdef double m = 0.0, x
    cdef Py_ssize_t i
    for i in range(n):
        x = fabs(a[i])
        if not (x <= m):
            if isnan(x):
                return NAN
            m = x
    return m


cdef double _max_abs_diff(const real *a, const real *b, Py_ssize_t n) noexcept nogil:
    cdef double m = 0.0, x
    cdef Py_ssize_t i
    for i in range(n):
        x = fabs(<double>a[i] - <double>b[i])
        if not (x <= m):
            if isnan(x):
                return NAN
            m = x
    return m


cdef inline cnp.ndarray _vector(object a, str name):
    if not cnp.PyArray_Check(a) or not _float_type(cnp.PyArray_TYPE(<cnp.ndarray>a)) \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise TypeError(f"{name} must be a C-contiguous float32 or float64 ndarray")
    return <cnp.ndarray>a


def max_abs(a):
    """Infinity norm of a contiguous float array (NaN if it holds a NaN, 0 if empty)."""
    cdef cnp.ndarray x = _vector(a, "a")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        return _max_abs(<const float *>cnp.PyArray_DATA(x), cnp.PyArray_SIZE(x))
    return _max_abs(<const double *>cnp.PyArray_DATA(x), cnp.PyArray_SIZE(x))


def max_abs_diff(a, b):
    """max |a - b| of two contiguous arrays of one dtype and size (NaN-propagating)."""
    cdef cnp.ndarray x = _vector(a, "a"), y = _vector(b, "b")
    if cnp.PyArray_TYPE(x) != cnp.PyArray_TYPE(y) or cnp.PyArray_SIZE(x) != cnp.PyArray_SIZE(y):
        raise ValueError("a and b must have the same dtype and size")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT:
        return _max_abs_diff(<const float *>cnp.PyArray_DATA(x),
                             <const float *>cnp.PyArray_DATA(y), cnp.PyArray_SIZE(x))
    return _max_abs_diff(<const double *>cnp.PyArray_DATA(x),
                         <const double *>cnp.PyArray_DATA(y), cnp.PyArray_SIZE(x))


def block_sum_squares(a, Py_ssize_t first, Py_ssize_t block, double clip, out):
    """Add the sums of squares of ``a``'s elements (clamped to [-clip, clip]), in
    double, to ``out[k]`` for the blocks ``k`` of a grid of ``block`` elements in
    which ``a[0]`` has index ``first`` (``out[0]`` is the block holding ``a[0]``).

    Each block's sum depends only on its elements and on where the pieces that
    fill it begin (a fixed 16-lane order), never on addresses, SIMD level or
    threads: adamc.distributed sums the same blocks on any rank layout."""
    cdef cnp.ndarray x = _vector(a, "a")
    if not cnp.PyArray_Check(out) or cnp.PyArray_TYPE(<cnp.ndarray>out) != cnp.NPY_DOUBLE \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>out) \
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        raise TypeError("out must be a writeable C-contiguous float64 ndarray")
    if block < 1 or first < 0:
        raise ValueError("block must be >= 1 and first >= 0")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x), pos = 0, end, k
    cdef Py_ssize_t k0 = first // block
    if n and (first + n - 1) // block - k0 >= cnp.PyArray_SIZE(<cnp.ndarray>out):
        raise ValueError("out is too short for the blocks of a")
    cdef double *acc = <double *>cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef adamc_sumsq_fn fn = _kernels.sumsq[ADAMC_F32 if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT
                                            else ADAMC_F64]
    cdef const void *data = cnp.PyArray_DATA(x)
    with nogil:
        adamc_enter()
        while pos < n:
            k = (first + pos) // block
            end = (k + 1) * block - first
            if end > n:
                end = n
            acc[k - k0] += fn(data, pos, end, clip)
            pos = end
        adamc_leave()


def copy_into(dst, src):
    """Copy src into dst (contiguous arrays of one dtype and size, dst writeable)."""
    cdef cnp.ndarray d = _vector(dst, "dst"), s = _vector(src, "src")
    if cnp.PyArray_TYPE(d) != cnp.PyArray_TYPE(s) or cnp.PyArray_SIZE(d) != cnp.PyArray_SIZE(s):
        raise ValueError("dst and src must have the same dtype and size")
    if not cnp.PyArray_ISWRITEABLE(d):
        raise ValueError("dst is read-only")
    memcpy(cnp.PyArray_DATA(d), cnp.PyArray_DATA(s), cnp.PyArray_NBYTES(s))


# ---------------------------------------------------------------------------------
# Learning-rate schedules evaluated without a Python call (see adamc.schedules)

@cython.auto_pickle(False)
cdef class Schedule:
    """Base of the compiled learning-rate schedules: ``schedule(step) -> lr`` for the
    1-based number of the update being computed. Optimizers call them without going
    through Python."""

    cdef double _at(self, int64_t step) noexcept:
        return 0.0

    def __call__(self, step):
        return self._at(_step_number(step, "step"))


cdef class _Constant(Schedule):
    cdef readonly double lr

    def __init__(self, lr):
        self.lr = _nonneg(lr, "lr")

    cdef double _at(self, int64_t step) noexcept:
        return self.lr

    def __repr__(self):
        return f"constant(lr={self.lr!r})"

    def __reduce__(self):
        return (_Constant, (self.lr,))


cdef class _StepDecay(Schedule):
    cdef readonly double lr, gamma
    cdef readonly int64_t step_size

    def __init__(self, lr, step_size, gamma):
        self.lr = _nonneg(lr, "lr")
        self.step_size = _step_number(step_size, "step_size")
        self.gamma = _nonneg(gamma, "gamma")

    cdef double _at(self, int64_t step) noexcept:
        return self.lr * pow(self.gamma, <double>((step - 1) // self.step_size))

    def __repr__(self):
        return f"step_decay(lr={self.lr!r}, step_size={self.step_size}, gamma={self.gamma!r})"

    def __reduce__(self):
        return (_StepDecay, (self.lr, self.step_size, self.gamma))


cdef class _ExponentialDecay(Schedule):
    cdef readonly double lr, gamma

    def __init__(self, lr, gamma):
        self.lr = _nonneg(lr, "lr")
        self.gamma = _nonneg(gamma, "gamma")

    cdef double _at(self, int64_t step) noexcept:
        return self.lr * pow(self.gamma, <double>(step - 1))

    def __repr__(self):
        return f"exponential_decay(lr={self.lr!r}, gamma={self.gamma!r})"

    def __reduce__(self):
        return (_ExponentialDecay, (self.lr, self.gamma))


cdef class _CosineDecay(Schedule):
    cdef readonly double lr, min_lr
    cdef readonly int64_t total_steps, warmup_steps

    def __init__(self, lr, total_steps, min_lr, warmup_steps):
        self.lr = _nonneg(lr, "lr")
        self.total_steps = _step_number(total_steps, "total_steps")
        self.min_lr = _nonneg(min_lr, "min_lr")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) \
                or not 0 <= warmup_steps < self.total_steps:
            raise ValueError(f"warmup_steps must be an int in [0, total_steps), got "
                             f"{warmup_steps!r}")
        self.warmup_steps = warmup_steps

    cdef double _at(self, int64_t step) noexcept:
        if step <= self.warmup_steps:
            return self.lr * <double>step / <double>self.warmup_steps
        cdef double progress = <double>(step - self.warmup_steps) / \
            <double>(self.total_steps - self.warmup_steps)
        if progress > 1.0:
            progress = 1.0
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + cos(M_PI * progress))

    def __repr__(self):
        return (f"cosine_decay(lr={self.lr!r}, total_steps={self.total_steps}, "
                f"min_lr={self.min_lr!r}, warmup_steps={self.warmup_steps})")

    def __reduce__(self):
        return (_CosineDecay, (self.lr, self.total_steps, self.min_lr, self.warmup_steps))


cdef class _InverseSqrt(Schedule):
    cdef readonly double lr
    cdef readonly int64_t warmup_steps

    def __init__(self, lr, warmup_steps):
        self.lr = _nonneg(lr, "lr")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) \
                or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps

    cdef double _at(self, int64_t step) noexcept:
        if step <= self.warmup_steps:
            return self.lr * <double>step / <double>self.warmup_steps
        return self.lr * sqrt(<double>max(self.warmup_steps, 1) / <double>step)

    def __repr__(self):
        return f"inverse_sqrt(lr={self.lr!r}, warmup_steps={self.warmup_steps})"

    def __reduce__(self):
        return (_InverseSqrt, (self.lr, self.warmup_steps))


cdef double _lr_at(object fn, int64_t step, Py_ssize_t gi) except? -1.0:
    """The learning rate of group gi's schedule or callable at a 1-based step."""
    cdef double lr
    if type(fn) in _COMPILED_SCHEDULES:  # a Python subclass of Schedule goes through __call__
        lr = (<Schedule>fn)._at(step)
        if not isfinite(lr):
            raise ValueError(f"param_groups[{gi}]['lr'] ({fn!r}) is not finite at step {step}")
        return lr
    value = fn(step)
    try:
        return _nonneg(value, "lr")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"param_groups[{gi}]['lr'] returned a bad learning rate at step "
                        f"{step}: {exc}") from None


_COMPILED_SCHEDULES = (_Constant, _StepDecay, _ExponentialDecay, _CosineDecay, _InverseSqrt)


def lr_at(fn, int64_t step, Py_ssize_t gi):
    """The validated learning rate of group gi's schedule or callable ``fn`` at a
    1-based step (what step() computes; adamc.distributed evaluates Python callables
    itself in sharded mode)."""
    return _lr_at(fn, step, gi)


# ---------------------------------------------------------------------------------
# Stateless steps (the checks live in adamc.functional)

ALGORITHMS = {"adam": ADAMC_ADAM, "adamax": ADAMC_ADAMAX, "nadam": ADAMC_NADAM,
              "radam": ADAMC_RADAM, "sgd": ADAMC_SGD, "rmsprop": ADAMC_RMSPROP}


cdef int _fill_hyper(adamc_hyper *h, dict v) except -1:
    """Copy validated hyperparameters (see Optimizer._group_hyper) into a C struct."""
    h.lr = v.get("lr", 0.0)
    h.beta1, h.beta2 = v.get("betas", (0.0, 0.0))
    h.eps = v.get("eps", 0.0)
    h.weight_decay = v.get("weight_decay", 0.0)
    h.momentum_decay = v.get("momentum_decay", 0.0)
    h.momentum = v.get("momentum", 0.0)
    h.dampening = v.get("dampening", 0.0)
    h.alpha = v.get("alpha", 0.0)
    h.decoupled = v.get("decoupled_weight_decay", False)
    h.amsgrad = v.get("amsgrad", False)
    h.maximize = v.get("maximize", False)
    h.nesterov = v.get("nesterov", False)
    h.centered = v.get("centered", False)
    return 0


cdef inline void _enter_holding_gil():
    """A token for a small update that keeps the GIL, without holding the GIL while
    waiting (every Python thread would stop until another thread's kernel ends)."""
    if not adamc_try_enter():
        with nogil:
            adamc_enter()


cdef inline void *_data_or_null(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def _apply(str algorithm, dict hyper, step, double aux, param, grad, states):
    """One update of ``param`` in place, from checked arrays and hyperparameters;
    returns the algorithm's scalar state after the step."""
    cdef adamc_hyper h
    cdef adamc_coef coef
    cdef adamc_task task
    cdef double aux_next
    cdef int algo = ALGORITHMS[algorithm]
    cdef int64_t t = _step_number(step, "step")
    if not cnp.PyArray_Check(param) or not cnp.PyArray_Check(grad) or len(states) != 3:
        raise TypeError("_apply needs checked arrays")
    _fill_hyper(&h, hyper)
    adamc_prepare(algo, &h, t, aux, &coef, &aux_next)
    cdef cnp.ndarray p = <cnp.ndarray>param
    task.param = cnp.PyArray_DATA(p)
    task.grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
    for k in range(3):
        task.state[k] = _data_or_null(states[k])
    task.lower = NULL
    task.upper = NULL
    task.coef = &coef
    cdef adamc_chunk_fn fn = _kernels.step[algo][ADAMC_F32 if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT
                                                 else ADAMC_F64]
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p), nbytes = cnp.PyArray_NBYTES(p)
    cdef int kind = ADAMC_KIND_STEP(algo, ADAMC_F32 if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT
                                    else ADAMC_F64)
    if nbytes >= _nogil_min_bytes:
        with nogil:
            adamc_enter()
            adamc_run(fn, &task, n, kind, nbytes)
            adamc_leave()
    else:
        _enter_holding_gil()
        adamc_run(fn, &task, n, kind, nbytes)
        adamc_leave()
    return aux_next


# ---------------------------------------------------------------------------------
# Engine behind the optimizer classes

NONFINITE_POLICIES = ("propagate", "raise", "skip")

cdef struct Slot:
    PyObject *param          # borrowed: the engine's _params list holds the reference
    void *data               # param's data pointer (checked at every step)
    void *state[3]
    const void *lower
    const void *upper
    Py_ssize_t size
    Py_ssize_t nbytes
    int type_num
    int dtype_index
    Py_ssize_t group


cdef struct Group:
    adamc_hyper hyper
    adamc_coef coef          # scratch: prepared anew at every step
    int64_t step             # completed steps of this group
    double aux               # scalar state of the algorithm (see adamc_prepare)
    double aux_next          # scratch: aux after this step
    double last_lr           # lr of the last completed step (NaN: none recorded)


@cython.auto_pickle(False)
cdef class _Engine:
    """Stepping machinery shared by the optimizer classes (see adamc.optim).

    The Python subclass builds param_groups and state arrays, then calls _bind();
    step() only reads cached pointers and re-checks what a user could have changed.
    """
    cdef public list param_groups
    cdef int _algo
    cdef Py_ssize_t _nparams, _ngroups
    cdef Slot *_slots
    cdef Group *_groups
    cdef const void **_grad_ptr
    cdef list _params            # flat list of parameter arrays (keeps them alive)
    cdef list _states            # per param: list of 3 state arrays or None
    cdef list _params_lists      # per group: the list object found in group["params"]
    cdef tuple _keys             # hyperparameter keys watched for changes
    cdef list _seen              # per group: list of the objects last validated
    cdef list _lr_fns            # per group: schedule or callable lr, or None
    cdef bint _bounded
    cdef double _max_grad_norm   # <= 0: off
    cdef double _clip_value      # inf: off
    cdef int _nonfinite          # index in NONFINITE_POLICIES
    cdef int64_t _step_count
    cdef int64_t _skipped
    cdef int _busy               # 0 idle, 1 stepping, 2 modified by a slow path (Python)
    cdef bint _bound
    cdef list _held              # per param: the gradient of the step in progress
    cdef char **_span_lo         # every byte range the kernels write (params and state),
    cdef char **_span_hi         # sorted by start; pairwise disjoint
    cdef Py_ssize_t _nspans

    def __cinit__(self):
        self._clip_value = INFINITY
        self._max_grad_norm = 0.0

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._groups)
        PyMem_Free(self._grad_ptr)
        PyMem_Free(self._span_lo)
        PyMem_Free(self._span_hi)

    # -- configuration --------------------------------------------------------------
    @property
    def step_count(self):
        """Number of completed ``step()`` calls (skipped steps excluded)."""
        return self._step_count

    @property
    def skipped_steps(self):
        """Number of steps skipped by ``nonfinite="skip"``."""
        return self._skipped

    @property
    def max_grad_norm(self):
        """Clip the global L2 norm of the gradients to this value (None: off)."""
        return None if self._max_grad_norm <= 0 else self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._check_idle()
        if value is None:
            self._max_grad_norm = 0.0
            return
        cdef double x = _nonneg(value, "max_grad_norm")
        if x == 0:
            raise ValueError("max_grad_norm must be > 0 (use None to turn clipping off)")
        self._max_grad_norm = x

    @property
    def clip_value(self):
        """Clamp every gradient element to [-clip_value, clip_value] (None: off)."""
        return None if self._clip_value == INFINITY else self._clip_value

    @clip_value.setter
    def clip_value(self, value):
        self._check_idle()
        if value is None:
            self._clip_value = INFINITY
            return
        self._clip_value = _nonneg(value, "clip_value")

    @property
    def nonfinite(self):
        """What a NaN or infinity in the gradients does: "propagate" (into the
        parameters, like torch), "raise" (FloatingPointError, nothing updated) or
        "skip" (the step is skipped and counted in ``skipped_steps``)."""
        return NONFINITE_POLICIES[self._nonfinite]

    @nonfinite.setter
    def nonfinite(self, value):
        self._check_idle()
        if value not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE_POLICIES))}, "
                             f"got {value!r}")
        self._nonfinite = NONFINITE_POLICIES.index(value)

    def _bind(self, int algo, tuple keys, list params, list states, list group_index,
              lower=None, upper=None):
        """(Re)build the cached view of param_groups. ``states[i]`` lists the 3 state
        slots of params[i] (None where unused); ``lower``/``upper`` optional per-param
        bound arrays. Arrays must already be checked. Existing groups keep their step
        counts and scalar state; new ones start fresh."""
        if self._busy == 1:
            raise RuntimeError("the optimizer is stepping in another thread")
        cdef Py_ssize_t i, k, n = len(params), ng = len(self.param_groups)
        cdef Slot *slots = <Slot *>PyMem_Calloc(max(n, 1), sizeof(Slot))
        cdef Group *groups = <Group *>PyMem_Calloc(max(ng, 1), sizeof(Group))
        cdef const void **gp = <const void **>PyMem_Calloc(max(n, 1), sizeof(void *))
        if slots == NULL or groups == NULL or gp == NULL:
            PyMem_Free(slots)
            PyMem_Free(groups)
            PyMem_Free(gp)
            raise MemoryError("cannot allocate the optimizer's bookkeeping")
        cdef cnp.ndarray a
        for i in range(n):
            a = <cnp.ndarray>params[i]
            slots[i].param = <PyObject *>a
            slots[i].data = cnp.PyArray_DATA(a)
            slots[i].size = cnp.PyArray_SIZE(a)
            slots[i].nbytes = cnp.PyArray_NBYTES(a)
            slots[i].type_num = cnp.PyArray_TYPE(a)
            slots[i].dtype_index = ADAMC_F32 if slots[i].type_num == cnp.NPY_FLOAT else ADAMC_F64
            slots[i].group = group_index[i]
            for k in range(3):
                slots[i].state[k] = _data_or_null(states[i][k])
            slots[i].lower = NULL if lower is None else _data_or_null(lower[i])
            slots[i].upper = NULL if upper is None else _data_or_null(upper[i])
        for i in range(ng):
            if i < self._ngroups:
                groups[i].step = self._groups[i].step
                groups[i].aux = self._groups[i].aux
                groups[i].last_lr = self._groups[i].last_lr
            else:
                groups[i].aux = adamc_aux_initial(algo)
                groups[i].last_lr = NAN
        written = list(params) + [x for st in states for x in st if x is not None]
        spans = sorted((<Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>a), cnp.PyArray_NBYTES(<cnp.ndarray>a))
                       for a in written if cnp.PyArray_NBYTES(<cnp.ndarray>a) > 0)
        cdef char **lo_ = <char **>PyMem_Calloc(max(len(spans), 1), sizeof(char *))
        cdef char **hi_ = <char **>PyMem_Calloc(max(len(spans), 1), sizeof(char *))
        if lo_ == NULL or hi_ == NULL:
            PyMem_Free(slots)
            PyMem_Free(groups)
            PyMem_Free(gp)
            PyMem_Free(lo_)
            PyMem_Free(hi_)
            raise MemoryError("cannot allocate the optimizer's bookkeeping")
        for k, (start, nbytes) in enumerate(spans):
            lo_[k] = <char *><Py_ssize_t>start
            hi_[k] = <char *><Py_ssize_t>start + <Py_ssize_t>nbytes
        PyMem_Free(self._slots)
        PyMem_Free(self._groups)
        PyMem_Free(self._grad_ptr)
        PyMem_Free(self._span_lo)
        PyMem_Free(self._span_hi)
        self._slots, self._groups, self._grad_ptr = slots, groups, gp
        self._span_lo, self._span_hi, self._nspans = lo_, hi_, len(spans)
        self._held = [None] * n
        self._algo = algo
        self._keys = keys
        self._nparams, self._ngroups = n, ng
        self._params = list(params)
        self._states = [list(s) for s in states]
        self._bounded = lower is not None
        self._params_lists = [g["params"] for g in self.param_groups]
        self._seen = [[None] * len(keys) for _ in range(ng)]
        self._lr_fns = [None] * ng
        self._bound = True

    # -- state access for the Python layer ------------------------------------------
    def _group_steps(self):
        return [self._groups[i].step for i in range(self._ngroups)]

    def _group_aux(self):
        return [self._groups[i].aux for i in range(self._ngroups)]

    def _group_last_lr(self):
        """Per group: the lr of its last completed step, NaN where none was recorded
        (no step yet, or the counters were set by _set_counters since)."""
        return [self._groups[i].last_lr for i in range(self._ngroups)]

    def _set_counters(self, steps, aux, step_count, skipped=None):
        """Set every group's step count and scalar state, and the step counters (the
        values must already be checked; the lengths are checked here)."""
        cdef Py_ssize_t i
        if len(steps) != self._ngroups or len(aux) != self._ngroups:
            raise ValueError(f"expected {self._ngroups} step counts and scalar states, got "
                             f"{len(steps)} and {len(aux)}")
        for i in range(self._ngroups):
            self._groups[i].step = steps[i]
            self._groups[i].aux = aux[i]
            self._groups[i].last_lr = NAN  # recorded by a step no longer counted
        self._step_count = step_count
        if skipped is not None:
            self._skipped = skipped

    def _aux_initial(self):
        return adamc_aux_initial(self._algo)

    def _check_idle(self):
        if self._busy == 1:
            raise RuntimeError("the optimizer is stepping in another thread")

    def _acquire(self):
        """Keep step() out while a slow path (load_state_dict, reset, ...) changes the
        optimizer; raises if a step or another slow path is running."""
        if self._busy:
            raise RuntimeError("the optimizer is " + ("stepping" if self._busy == 1 else
                               "being modified") + " in another thread")
        self._busy = 2

    def _release(self):
        self._busy = 0

    # -- the step -------------------------------------------------------------------
    def step(self, grads):
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : ndarray or sequence of ndarray
            One gradient per parameter, in the order of ``param_groups`` (a single
            array when the optimizer has one parameter). Each must have its
            parameter's dtype and shape and be C-contiguous.

        Raises
        ------
        TypeError, ValueError
            On a bad gradient or hyperparameter, before anything is modified.
        FloatingPointError
            With ``nonfinite="raise"``, when a gradient holds a NaN or infinity
            (nothing is modified).
        RuntimeError
            When the optimizer is already stepping in another thread.
        """
        if self._busy:
            if self._busy == 2:
                raise RuntimeError("the optimizer is being modified in another thread")
            raise RuntimeError("step() is already running on this optimizer in another "
                               "thread; an optimizer must not be stepped concurrently")
        if not self._bound:
            raise RuntimeError("optimizer is not initialised (call super().__init__)")
        self._busy = 1
        try:
            # User code (schedules, hyperparameter validation) runs first; the arrays
            # are read and checked after it, and held until the kernels are done.
            self._prepare()
            self._collect(grads)
            self._update()
        finally:
            self._busy = 0
            self._release_grads()

    cdef int _release_grads(self) except -1:
        cdef Py_ssize_t i
        cdef list held = self._held
        if held is not None:
            for i in range(len(held)):
                held[i] = None
        return 0

    cdef int _collect(self, object grads) except -1:
        """Check the structure of param_groups, every parameter and every gradient;
        store gradient pointers and hold the gradients until the step ends."""
        cdef Py_ssize_t i, n = self._nparams
        cdef object g, p
        cdef cnp.ndarray pa
        cdef bint is_list
        cdef list held = self._held
        if cnp.PyArray_Check(grads):
            if n != 1:
                raise ValueError(f"grads is a single array but the optimizer has {n} "
                                 f"parameters; pass a list of {n} arrays")
            seq = None
        elif isinstance(grads, (list, tuple)):
            if n == 1 and len(grads) and isinstance(grads[0], (int, float, np.number)):
                raise TypeError("grads is a sequence of numbers; pass the gradient as an "
                                "array: np.asarray(grad, dtype=param.dtype)")
            if len(grads) != n:
                raise ValueError(f"grads has {len(grads)} arrays but the optimizer has {n} "
                                 f"parameters")
            seq = grads
        elif callable(grads):
            raise TypeError("step() takes the gradients, not a closure: adamc does not "
                            "differentiate, so compute the loss and gradient yourself "
                            "and pass the gradient, e.g. loss, grad = f_and_grad(x); "
                            "opt.step(grad) (a list of arrays for several parameters)")
        else:
            raise TypeError(f"grads must be an ndarray or a list of ndarrays, got "
                            f"{type(grads).__name__}")
        self._check_structure()
        is_list = type(seq) is list
        for i in range(n):
            p = <object>self._slots[i].param
            pa = <cnp.ndarray>p
            if (cnp.PyArray_TYPE(pa) != self._slots[i].type_num
                    or cnp.PyArray_SIZE(pa) != self._slots[i].size
                    or cnp.PyArray_DATA(pa) != self._slots[i].data
                    or (cnp.PyArray_FLAGS(pa) & _REQ_WRITE) != _REQ_WRITE):
                raise self._changed_param_error(i)
            if seq is None:
                g = grads
            elif is_list:
                g = (<list>seq)[i]
            else:
                g = seq[i]
            held[i] = g
            if not _operand_ok(g, self._slots[i].type_num, cnp.PyArray_NDIM(pa),
                               cnp.PyArray_DIMS(pa), _REQ_READ):
                raise _operand_error(g, self._grad_name(i), p, self._param_name(i), False)
            if self._writes_into(g):
                raise ValueError(f"{self._grad_name(i)} shares memory with "
                                 f"{self._written_name(g)}, which this step writes; pass a "
                                 f"separate array (e.g. {self._grad_name(i)}.copy())")
            self._grad_ptr[i] = cnp.PyArray_DATA(<cnp.ndarray>g)
        return 0

    def _written_name(self, g):
        """Name of the parameter or state array whose memory g overlaps (error path)."""
        keys = getattr(self, "_state_keys", ())
        for i, p in enumerate(self._params):
            if _overlap(g, p):
                return self._param_name(i)
            for k, st in enumerate(<list>self._states[i]):
                if st is not None and _overlap(g, st):
                    key = keys[k] if k < len(keys) else f"state {k}"
                    return f"the {key} state of {self._param_name(i)}"
        return "an array this step writes"

    cdef bint _writes_into(self, object g) noexcept:
        """Whether g's memory overlaps anything the kernels write: binary search of the
        sorted, disjoint spans of all parameters and state arrays."""
        cdef char *q = cnp.PyArray_BYTES(<cnp.ndarray>g)
        cdef char *q_end = q + cnp.PyArray_NBYTES(<cnp.ndarray>g)
        cdef Py_ssize_t lo = 0, hi = self._nspans, mid
        if q == q_end:
            return False
        while lo < hi:  # first span that ends after q
            mid = (lo + hi) // 2
            if self._span_hi[mid] <= q:
                lo = mid + 1
            else:
                hi = mid
        return lo < self._nspans and self._span_lo[lo] < q_end

    cdef int _check_structure(self) except -1:
        """Detect edits of param_groups that the cached pointers cannot follow."""
        cdef Py_ssize_t gi, j, k = 0
        cdef PyObject *obj
        groups = self.param_groups
        if type(groups) is not list or len(<list>groups) != self._ngroups:
            raise ValueError("param_groups was resized or replaced; use add_param_group() "
                             "to add parameters")
        for gi in range(self._ngroups):
            group = (<list>groups)[gi]
            if type(group) is not dict:
                raise TypeError(f"param_groups[{gi}] must be a dict")
            obj = PyDict_GetItemWithError(group, "params")
            if obj == NULL or <object>obj is not self._params_lists[gi]:
                raise ValueError(f"param_groups[{gi}]['params'] was replaced; create a new "
                                 f"optimizer (or use add_param_group) for new parameters")
            plist = <object>obj
            for j in range(len(plist)):
                if k >= self._nparams or plist[j] is not <object>self._slots[k].param:
                    raise ValueError(f"param_groups[{gi}]['params'] was modified; create a "
                                     f"new optimizer for new parameters")
                k += 1
        if k != self._nparams:
            raise ValueError("param_groups[...]['params'] was modified; create a new "
                             "optimizer for new parameters")
        return 0

    cdef object _changed_param_error(self, Py_ssize_t i):
        p = <object>self._slots[i].param
        name = self._param_name(i)
        if cnp.PyArray_SIZE(<cnp.ndarray>p) != self._slots[i].size or \
                cnp.PyArray_TYPE(<cnp.ndarray>p) != self._slots[i].type_num or \
                cnp.PyArray_DATA(<cnp.ndarray>p) != self._slots[i].data:
            return ValueError(f"{name} changed its dtype, size or memory since the "
                              f"optimizer was created")
        return _operand_error(p, name, None, "", True)

    def _param_name(self, Py_ssize_t i):
        return "param" if self._nparams == 1 else f"params[{i}]"

    def _grad_name(self, Py_ssize_t i):
        return "grad" if self._nparams == 1 else f"grads[{i}]"

    cdef int _prepare(self) except -1:
        """Read each group's hyperparameters (re-validating the ones that changed) and
        prepare its coefficients for this step. Writes only per-step scratch."""
        cdef Py_ssize_t gi, k, nk = len(self._keys)
        cdef PyObject *obj
        cdef list seen
        cdef Group *grp
        groups = self.param_groups
        for gi in range(self._ngroups):
            # checked at every group: a schedule or a validator may have edited the list
            if type(groups) is not list or len(<list>groups) != self._ngroups:
                raise ValueError("param_groups was resized or replaced; use "
                                 "add_param_group() to add parameters")
            group = (<list>groups)[gi]
            if type(group) is not dict:
                raise TypeError(f"param_groups[{gi}] must be a dict")
            seen = <list>self._seen[gi]
            for k in range(nk):
                obj = PyDict_GetItemWithError(group, (<tuple>self._keys)[k])
                if obj == NULL or <object>obj is not seen[k]:
                    self._refresh(gi)
                    break
            grp = &self._groups[gi]
            fn = self._lr_fns[gi]
            if fn is not None:
                grp.hyper.lr = _lr_at(fn, grp.step + 1, gi)
            adamc_prepare(self._algo, &grp.hyper, grp.step + 1, grp.aux, &grp.coef,
                          &grp.aux_next)
            grp.coef.clip_value = self._clip_value
            if self._bounded:
                grp.coef.flags |= ADAMC_BOUNDED
        return 0

    cdef int _refresh(self, Py_ssize_t gi) except -1:
        """Validate group gi's hyperparameters (via the subclass's _group_hyper) and
        cache them; only validated values reach the Group struct."""
        group = self.param_groups[gi]
        hyper, lr_fn = self._group_hyper(group, gi)
        self._check_group_state(gi, hyper)
        _fill_hyper(&self._groups[gi].hyper, hyper)
        self._lr_fns[gi] = lr_fn
        self._seen[gi] = [group.get(k) for k in self._keys]
        return 0

    cdef int _update(self) except -1:
        cdef Py_ssize_t i, total = 0
        cdef Py_ssize_t bad = -1
        for i in range(self._nparams):
            total += self._slots[i].nbytes
        if total >= _nogil_min_bytes:
            with nogil:
                adamc_enter()
                bad = self._run(total)
                adamc_leave()
        else:
            _enter_holding_gil()
            bad = self._run(total)
            adamc_leave()
        if bad >= 0:
            if self._nonfinite == 2:
                self._skipped += 1
                return 0
            self._raise_nonfinite(bad)
        for i in range(self._ngroups):
            self._groups[i].step += 1
            self._groups[i].aux = self._groups[i].aux_next
            self._groups[i].last_lr = self._groups[i].hyper.lr
        self._step_count += 1
        return 0

    cdef Py_ssize_t _run(self, Py_ssize_t total) noexcept nogil:
        """The whole update: optional scan for non-finite gradients (returns the
        index of the first offending parameter, nothing updated), optional global
        norm, then one kernel call per parameter."""
        cdef Py_ssize_t i, gi
        cdef adamc_task task
        cdef Slot *s
        cdef const adamc_kernels *kern = _kernels
        cdef double sumsq = 0.0, scale
        if self._nonfinite != 0:
            for i in range(self._nparams):
                s = &self._slots[i]
                if kern.first_nonfinite[s.dtype_index](self._grad_ptr[i], s.size) >= 0:
                    return i
        if self._max_grad_norm > 0:
            for i in range(self._nparams):
                s = &self._slots[i]
                sumsq += adamc_sum_squares(kern.sumsq[s.dtype_index], self._grad_ptr[i],
                                           s.size, self._clip_value,
                                           ADAMC_KIND_SUMSQ(s.dtype_index), total)
            # torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6), at most 1
            scale = self._max_grad_norm / (sqrt(sumsq) + 1e-6)
            if not (scale >= 1.0):
                for gi in range(self._ngroups):
                    self._groups[gi].coef.grad_scale *= scale
        for i in range(self._nparams):
            s = &self._slots[i]
            task.param = s.data
            task.grad = self._grad_ptr[i]
            task.state[0] = s.state[0]
            task.state[1] = s.state[1]
            task.state[2] = s.state[2]
            task.lower = s.lower
            task.upper = s.upper
            task.coef = &self._groups[s.group].coef
            adamc_run(kern.step[self._algo][s.dtype_index], &task, s.size,
                      ADAMC_KIND_STEP(self._algo, s.dtype_index), s.nbytes)
        return -1

    cdef int _raise_nonfinite(self, Py_ssize_t i) except -1:
        cdef Slot *s = &self._slots[i]
        cdef Py_ssize_t flat = _kernels.first_nonfinite[s.dtype_index](self._grad_ptr[i], s.size)
        cdef double value = (<const float *>self._grad_ptr[i])[flat] if s.dtype_index == ADAMC_F32 \
            else (<const double *>self._grad_ptr[i])[flat]
        shape = (<object>s.param).shape
        index = tuple(int(j) for j in np.unravel_index(flat, shape)) if len(shape) > 1 else flat
        raise FloatingPointError(
            f"{self._grad_name(i)} holds {value} at index {index}; nothing was updated "
            f"(nonfinite='raise')")
