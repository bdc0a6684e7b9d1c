# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled core of adamc: operand checks, SIMD level selection, threading, and the
per-step engine that every optimizer class builds on.

Everything here runs on the hot path of ``step()``, so checks are done on the array
objects themselves (type number, flags, dimensions), never through memoryviews or
copies; the precise error message is only built once a check has failed.
"""

import os
import warnings

cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_Check
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport PyObject
from libc.math cimport NAN, fabs, isfinite, isnan
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy

import numpy as np

cnp.import_array()


cdef extern from "adamc.h" nogil:
    enum:
        ADAMC_LEVEL_BASELINE
        ADAMC_LEVEL_AVX2
        ADAMC_LEVEL_AVX512
        ADAMC_NUM_LEVELS
        ADAMC_F32
        ADAMC_F64
        ADAMC_COUPLED_WD
        ADAMC_AMSGRAD
        ADAMC_BOUNDED
        ADAMC_CLIP_VALUE

    ctypedef struct adamc_coef:
        unsigned flags
        double grad_scale
        double clip_value
        double weight_decay
        double decay

    ctypedef struct adamc_task:
        void *param
        const void *grad
        void *state[3]
        const void *lower
        const void *upper
        const adamc_coef *coef

    ctypedef void (*adamc_chunk_fn)(const adamc_task *task, Py_ssize_t begin,
                                    Py_ssize_t end) noexcept nogil

    ctypedef struct adamc_kernels:
        const char *name
        adamc_chunk_fn adam[2]

    const adamc_kernels *adamc_kernels_at(int level)
    int adamc_cpu_level()
    void adamc_run(adamc_chunk_fn fn, const adamc_task *task, Py_ssize_t n, int nthreads)
    int adamc_have_openmp()
    int adamc_default_threads()

    ctypedef struct adamc_adam_hyper:
        double lr, beta1, beta2, eps, weight_decay
        int decoupled, amsgrad, maximize

    void adamc_adam_prepare(const adamc_adam_hyper *h, int64_t step, adamc_coef *coef)


cdef extern from "adamc_config.h":
    const char *ADAMC_BUILD_FLAGS


# ---------------------------------------------------------------------------------
# SIMD level and threads

LEVEL_NAMES = ("baseline", "avx2", "avx512")

cdef const adamc_kernels *_kernels = NULL
cdef int _level = 0
cdef int _num_threads = 1
# Below these sizes the work is too small to pay for waking the thread team (about
# 0.6 us) or for releasing the GIL (about 0.1 us). Measured on a 2-core AVX-512 machine:
# two threads break even at 32 KiB per array (float32 8192 elements: 1.07x faster,
# float64 4096: 1.24x) and lose below (float32 4096: 0.88x).
cdef Py_ssize_t _parallel_min_bytes = 1 << 15
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
                         f"they must match")
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


def copy_into(dst, src):
    """Copy src into dst (contiguous arrays of one dtype and size, dst writeable)."""
    cdef cnp.ndarray d = _vector(dst, "dst"), s = _vector(src, "src")
    if cnp.PyArray_TYPE(d) != cnp.PyArray_TYPE(s) or cnp.PyArray_SIZE(d) != cnp.PyArray_SIZE(s):
        raise ValueError("dst and src must have the same dtype and size")
    if not cnp.PyArray_ISWRITEABLE(d):
        raise ValueError("dst is read-only")
    memcpy(cnp.PyArray_DATA(d), cnp.PyArray_DATA(s), cnp.PyArray_NBYTES(s))


# ---------------------------------------------------------------------------------
# Stateless step

def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
              amsgrad=False, max_exp_avg_sq=None, maximize=False):
    """Apply one Adam (or AdamW) update in place.

    Parameters
    ----------
    param : ndarray
        Parameters, float32 or float64, C-contiguous and writeable; updated in place.
    grad : ndarray
        Gradient of the objective at ``param``, same dtype and shape.
    exp_avg, exp_avg_sq : ndarray
        First and second moment estimates (start from zeros); updated in place.
    step : int
        1-based number of this update (used for the bias corrections).
    lr : float, optional
        Learning rate, >= 0. Default 1e-3.
    beta1, beta2 : float, optional
        Decay rates of the moment estimates, in [0, 1). Defaults 0.9 and 0.999.
    eps : float, optional
        Added to the bias-corrected ``sqrt(v)`` (outside the square root, like
        torch). Default 1e-8.
    weight_decay : float, optional
        Weight decay coefficient, >= 0. Default 0.
    decoupled_weight_decay : bool, optional
        False: Adam's L2 term ``g += weight_decay * p``. True: AdamW's
        ``p *= 1 - lr * weight_decay`` before the update.
    amsgrad : bool, optional
        Use the running maximum of ``exp_avg_sq`` (kept in ``max_exp_avg_sq``).
    max_exp_avg_sq : ndarray, optional
        Running maximum of ``exp_avg_sq``; required when ``amsgrad`` is True.
    maximize : bool, optional
        Maximize the objective instead of minimizing it.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, before anything is modified.
    """
    cdef adamc_adam_hyper h
    cdef adamc_coef coef
    cdef adamc_task task
    cdef int64_t t = _step_number(step, "step")
    h.lr = _nonneg(lr, "lr")
    h.beta1 = _beta(beta1, "beta1")
    h.beta2 = _beta(beta2, "beta2")
    h.eps = _nonneg(eps, "eps")
    h.weight_decay = _nonneg(weight_decay, "weight_decay")
    h.decoupled = _flag(decoupled_weight_decay, "decoupled_weight_decay")
    h.amsgrad = _flag(amsgrad, "amsgrad")
    h.maximize = _flag(maximize, "maximize")

    check_param(param)
    check_operand(grad, "grad", param)
    check_operand(exp_avg, "exp_avg", param, writeable=True)
    check_operand(exp_avg_sq, "exp_avg_sq", param, writeable=True)
    if h.amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sq (start it from zeros)")
        check_operand(max_exp_avg_sq, "max_exp_avg_sq", param, writeable=True)
    elif max_exp_avg_sq is not None:
        raise ValueError("max_exp_avg_sq is only used with amsgrad=True")
    check_disjoint((("param", param), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq),
                    ("max_exp_avg_sq", max_exp_avg_sq)), (("grad", grad),))

    adamc_adam_prepare(&h, t, &coef)
    cdef cnp.ndarray p = <cnp.ndarray>param
    task.param = cnp.PyArray_DATA(p)
    task.grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
    task.state[0] = cnp.PyArray_DATA(<cnp.ndarray>exp_avg)
    task.state[1] = cnp.PyArray_DATA(<cnp.ndarray>exp_avg_sq)
    task.state[2] = cnp.PyArray_DATA(<cnp.ndarray>max_exp_avg_sq) if h.amsgrad else NULL
    task.lower = NULL
    task.upper = NULL
    task.coef = &coef
    cdef adamc_chunk_fn fn = _kernels.adam[ADAMC_F32 if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT
                                           else ADAMC_F64]
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p), nbytes = cnp.PyArray_NBYTES(p)
    cdef int nthreads = _threads_for(nbytes)
    if nbytes >= _nogil_min_bytes:
        with nogil:
            adamc_run(fn, &task, n, nthreads)
    else:
        adamc_run(fn, &task, n, 1)


# ---------------------------------------------------------------------------------
# Engine behind the optimizer classes

ALGO_ADAM = 0

cdef struct Slot:
    PyObject *param          # borrowed: the engine's _params list holds the reference
    void *data               # param's data pointer, re-read at every step
    void *state[3]
    const void *lower
    const void *upper
    Py_ssize_t size
    Py_ssize_t nbytes
    int type_num
    int dtype_index
    Py_ssize_t group


cdef struct Group:
    adamc_adam_hyper adam
    adamc_coef coef          # scratch: prepared anew at every step
    int64_t step             # completed steps of this group


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
    cdef list _states            # per param: list of state arrays or None
    cdef list _params_lists      # per group: the list object found in group["params"]
    cdef tuple _keys             # hyperparameter keys watched for changes
    cdef list _seen              # per group: list of the objects last validated
    cdef list _lr_fns            # per group: callable lr or None
    cdef object _bounds          # (lower, upper): per-param lists of arrays, or (None, None)
    cdef int64_t _step_count
    cdef bint _busy
    cdef bint _bound

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._groups)
        PyMem_Free(self._grad_ptr)

    @property
    def step_count(self):
        """Number of completed ``step()`` calls."""
        return self._step_count

    def _bind(self, int algo, tuple keys, list params, list states, list group_index,
              lower=None, upper=None):
        """(Re)build the cached view of param_groups. ``states[i]`` lists the state
        arrays of params[i] (None where absent); ``lower``/``upper`` optional
        per-param bound arrays. Arrays must already be checked."""
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
            slots[i].size = cnp.PyArray_SIZE(a)
            slots[i].nbytes = cnp.PyArray_NBYTES(a)
            slots[i].type_num = cnp.PyArray_TYPE(a)
            slots[i].dtype_index = ADAMC_F32 if slots[i].type_num == cnp.NPY_FLOAT else ADAMC_F64
            slots[i].group = group_index[i]
            for k in range(3):
                s = states[i][k] if k < len(states[i]) else None
                slots[i].state[k] = NULL if s is None else cnp.PyArray_DATA(<cnp.ndarray>s)
            slots[i].lower = NULL if lower is None or lower[i] is None else \
                cnp.PyArray_DATA(<cnp.ndarray>lower[i])
            slots[i].upper = NULL if upper is None or upper[i] is None else \
                cnp.PyArray_DATA(<cnp.ndarray>upper[i])
        for i in range(min(ng, self._ngroups)):
            groups[i].step = self._groups[i].step
        PyMem_Free(self._slots)
        PyMem_Free(self._groups)
        PyMem_Free(self._grad_ptr)
        self._slots, self._groups, self._grad_ptr = slots, groups, gp
        self._algo = algo
        self._keys = keys
        self._nparams, self._ngroups = n, ng
        self._params = list(params)
        self._states = [list(s) for s in states]
        self._bounds = (lower, upper)
        self._params_lists = [g["params"] for g in self.param_groups]
        self._seen = [[None] * len(keys) for _ in range(ng)]
        self._lr_fns = [None] * ng
        self._bound = True

    # -- state access for the Python layer ------------------------------------------
    def _group_steps(self):
        return [self._groups[i].step for i in range(self._ngroups)]

    def _set_group_steps(self, steps, step_count):
        cdef Py_ssize_t i
        for i in range(self._ngroups):
            self._groups[i].step = steps[i]
        self._step_count = step_count

    def _forget_hyperparameters(self):
        """Make the next step re-read every group's hyperparameters."""
        self._seen = [[None] * len(self._keys) for _ in range(self._ngroups)]

    def _check_idle(self):
        if self._busy:
            raise RuntimeError("the optimizer is stepping in another thread")

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
        RuntimeError
            When the optimizer is already stepping in another thread.
        """
        if self._busy:
            raise RuntimeError("step() is already running on this optimizer in another "
                               "thread; an optimizer must not be stepped concurrently")
        if not self._bound:
            raise RuntimeError("optimizer is not initialised (call super().__init__)")
        self._busy = True
        try:
            self._collect(grads)
            self._prepare()
            self._update()
        finally:
            self._busy = False

    cdef int _collect(self, object grads) except -1:
        """Check every parameter and gradient; store gradient pointers."""
        cdef Py_ssize_t i, n = self._nparams
        cdef object g, p
        cdef cnp.ndarray pa
        if cnp.PyArray_Check(grads):
            if n != 1:
                raise ValueError(f"grads is a single array but the optimizer has {n} "
                                 f"parameters; pass a list of {n} arrays")
            seq = None
        elif isinstance(grads, (list, tuple)):
            if len(grads) != n:
                raise ValueError(f"grads has {len(grads)} arrays but the optimizer has {n} "
                                 f"parameters")
            seq = grads
        else:
            raise TypeError(f"grads must be an ndarray or a list of ndarrays, got "
                            f"{type(grads).__name__}")
        self._check_structure()
        for i in range(n):
            p = <object>self._slots[i].param
            pa = <cnp.ndarray>p
            if (cnp.PyArray_TYPE(pa) != self._slots[i].type_num
                    or cnp.PyArray_SIZE(pa) != self._slots[i].size
                    or (cnp.PyArray_FLAGS(pa) & _REQ_WRITE) != _REQ_WRITE):
                raise self._changed_param_error(i)
            g = grads if seq is None else (<list>seq)[i] if type(seq) is list else seq[i]
            if not _operand_ok(g, self._slots[i].type_num, cnp.PyArray_NDIM(pa),
                               cnp.PyArray_DIMS(pa), _REQ_READ):
                raise _operand_error(g, self._grad_name(i), p, self._param_name(i), False)
            if _overlap(g, p) or self._overlaps_state(g, i):
                raise ValueError(f"{self._grad_name(i)} shares memory with "
                                 f"{self._param_name(i)} or its optimizer state; pass a "
                                 f"separate array")
            self._grad_ptr[i] = cnp.PyArray_DATA(<cnp.ndarray>g)
            self._slots[i].data = cnp.PyArray_DATA(pa)
        return 0

    cdef bint _overlaps_state(self, object g, Py_ssize_t i):
        for s in <list>self._states[i]:
            if s is not None and _overlap(g, s):
                return True
        return False

    cdef int _check_structure(self) except -1:
        """Detect edits of param_groups that the cached pointers cannot follow."""
        cdef Py_ssize_t gi, j
        cdef PyObject *obj
        groups = self.param_groups
        if type(groups) is not list or len(<list>groups) != self._ngroups:
            raise ValueError("param_groups was resized or replaced; use add_param_group() "
                             "to add parameters")
        cdef Py_ssize_t k = 0
        for gi in range(self._ngroups):
            group = (<list>groups)[gi]
            if type(group) is not dict:
                raise TypeError(f"param_groups[{gi}] must be a dict")
            obj = PyDict_GetItem(group, "params")
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
                cnp.PyArray_TYPE(<cnp.ndarray>p) != self._slots[i].type_num:
            return ValueError(f"{name} changed its dtype or size since the optimizer was "
                              f"created")
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
        cdef double lr
        for gi in range(self._ngroups):
            group = <dict>(<list>self.param_groups)[gi]
            seen = <list>self._seen[gi]
            for k in range(nk):
                obj = PyDict_GetItem(group, (<tuple>self._keys)[k])
                if obj == NULL or <object>obj is not seen[k]:
                    self._refresh(gi)
                    break
            grp = &self._groups[gi]
            fn = self._lr_fns[gi]
            if fn is not None:
                lr = self._scheduled_lr(fn, grp.step + 1, gi)
                grp.adam.lr = lr
            adamc_adam_prepare(&grp.adam, grp.step + 1, &grp.coef)
            if self._bounds[0] is not None:
                grp.coef.flags |= ADAMC_BOUNDED
        return 0

    cdef double _scheduled_lr(self, object fn, int64_t step, Py_ssize_t gi) except? -1.0:
        value = fn(step)
        try:
            return _nonneg(value, "lr")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"param_groups[{gi}]['lr'] returned a bad learning rate at "
                            f"step {step}: {exc}") from None

    cdef int _refresh(self, Py_ssize_t gi) except -1:
        """Validate group gi's hyperparameters (via the subclass's _group_hyper) and
        cache them; only validated values reach the Group struct."""
        cdef Py_ssize_t i
        group = self.param_groups[gi]
        hyper, lr_fn = self._group_hyper(group, gi)
        if hyper["amsgrad"]:
            for i in range(self._nparams):
                if self._slots[i].group == gi and self._slots[i].state[2] == NULL:
                    raise ValueError(
                        f"param_groups[{gi}]['amsgrad'] was switched on, but the optimizer "
                        f"was created without amsgrad state; create it with amsgrad=True")
        cdef Group *grp = &self._groups[gi]
        grp.adam.lr = 0.0 if lr_fn is not None else hyper["lr"]
        grp.adam.beta1, grp.adam.beta2 = hyper["betas"]
        grp.adam.eps = hyper["eps"]
        grp.adam.weight_decay = hyper["weight_decay"]
        grp.adam.decoupled = hyper["decoupled_weight_decay"]
        grp.adam.amsgrad = hyper["amsgrad"]
        grp.adam.maximize = hyper["maximize"]
        self._lr_fns[gi] = lr_fn
        self._seen[gi] = [group.get(k) for k in self._keys]
        return 0

    cdef int _update(self) except -1:
        cdef Py_ssize_t i, total = 0
        for i in range(self._nparams):
            total += self._slots[i].nbytes
        if total >= _nogil_min_bytes:
            with nogil:
                self._run_kernels()
        else:
            self._run_kernels()
        for i in range(self._ngroups):
            self._groups[i].step += 1
        self._step_count += 1
        return 0

    cdef void _run_kernels(self) noexcept nogil:
        cdef Py_ssize_t i
        cdef adamc_task task
        cdef Slot *s
        cdef const adamc_kernels *kern = _kernels
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
            adamc_run(kern.adam[s.dtype_index], &task, s.size, _threads_for(s.nbytes))
