# Included by adamc/_kernels.pyx (one extension module; see its docstring).

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


cdef double _positive(object value, str name) except? -1.0:
    cdef double x = _nonneg(value, name)
    if x == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return x


cdef double _growth(object value, str name) except? -1.0:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    cdef double x = float(value)
    if not x > 0:
        raise ValueError(f"{name} must be > 0 (inf: no limit), got {value!r}")
    return x


cdef double _etaminus(object value, str name) except? -1.0:
    cdef double x = _real(value, name)
    if not (0.0 < x < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return x


cdef double _etaplus(object value, str name) except? -1.0:
    cdef double x = _real(value, name)
    if not (x > 1.0) or not isfinite(x):
        raise ValueError(f"{name} must be a finite number > 1, got {value!r}")
    return x


cdef bint _flag(object value, str name) except -1:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


cdef int64_t _step_number(object value, str name) except? -1:
    if PyLong_CheckExact(value) and 1 <= <object>value <= 2**62:  # the common case, fast
        return value
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
    # a sequence or an array: a dict or a set has a length but no order (value[0] of a
    # dict is a key lookup)
    if isinstance(value, (str, bytes, dict, set, frozenset)) or \
            not hasattr(value, "__getitem__") or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    return (_beta(value[0], f"{name}[0]"), _beta(value[1], f"{name}[1]"))


cdef bint _is_pair(object value):
    # a sequence or an array: a dict or a set has a length but no order
    return not isinstance(value, (str, bytes, dict, set, frozenset)) and \
        hasattr(value, "__getitem__") and hasattr(value, "__len__") and len(value) == 2


def check_etas(value, name="etas"):
    """Return Rprop's ``(etaminus, etaplus)`` after checking
    ``0 < etaminus < 1 < etaplus`` (etaplus finite)."""
    if not _is_pair(value):
        raise ValueError(f"{name} must be a pair (etaminus, etaplus), got {value!r}")
    return (_etaminus(value[0], f"{name}[0]"), _etaplus(value[1], f"{name}[1]"))


def check_step_sizes(value, name="step_sizes"):
    """Return Rprop's ``(step_size_min, step_size_max)`` after checking
    ``0 < step_size_min <= step_size_max`` (both finite)."""
    if not _is_pair(value):
        raise ValueError(f"{name} must be a pair (step_size_min, step_size_max), got {value!r}")
    lo, hi = _positive(value[0], f"{name}[0]"), _positive(value[1], f"{name}[1]")
    if lo > hi:
        raise ValueError(f"{name} must satisfy step_size_min <= step_size_max, got {value!r}")
    return (lo, hi)


def check_positive(value, name):
    """Return ``value`` as a float after checking that it is finite and > 0."""
    return _positive(value, name)


def check_growth_rate(value, name):
    """Return ``value`` as a float after checking that it is > 0 (infinity included:
    no limit)."""
    return _growth(value, name)


def check_flag(value, name):
    """Return ``value`` after checking that it is a bool."""
    return _flag(value, name)


def check_max_grad_norm(value, name="max_grad_norm"):
    """The stored value of ``max_grad_norm``: 0.0 for None (no clipping by the norm),
    else a finite number > 0."""
    if value is None:
        return 0.0
    cdef double x = _nonneg(value, name)
    if x == 0:
        raise ValueError(f"{name} must be > 0 (use None to turn clipping off)")
    return x


def check_clip_value(value, name="clip_value"):
    """The stored value of ``clip_value``: infinity for None (no clamping), else a
    finite number >= 0."""
    return INFINITY if value is None else _nonneg(value, name)


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


cdef object _operand_error(object obj, str name, object ref, str ref_name, bint writeable,
                           bint stateless=False):
    """The exception explaining why obj failed _operand_ok against ref (or, when ref
    is None, why obj cannot be a parameter at all); ``stateless``: for a stateless
    step (no optimizer involved)."""
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
        if writeable and stateless:
            return ValueError(
                f"{name} is not C-contiguous; adamc updates arrays in place and never "
                f"through a copy, so pass a contiguous array (np.ascontiguousarray) and "
                f"keep using that array in the later steps")
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
