# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Steps of many independent problems held as the rows of (m, n) arrays
# (adamc.minimize_many). Row i gets exactly the update the engine gives a lone
# problem of n parameters at the same step (the kernels are elementwise; per-row
# hyperparameters and the norm clipping get one prepared coefficient set per row).

# Fields a row may set, in the order of the columns of `rows`.
_ROW_FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay", "momentum",
               "dampening", "alpha", "max_grad_norm", "clip_value")
cdef enum:
    _R_LR, _R_BETA1, _R_BETA2, _R_EPS, _R_WD, _R_MDECAY, _R_MOMENTUM, _R_DAMPENING
    _R_ALPHA, _R_MAXNORM, _R_CLIP, _R_COUNT


cdef inline void _set_row_field(adamc_hyper *h, double *maxnorm, double *clip, int field,
                                double v) noexcept nogil:
    if field == _R_LR:
        h.lr = v
    elif field == _R_BETA1:
        h.beta1 = v
    elif field == _R_BETA2:
        h.beta2 = v
    elif field == _R_EPS:
        h.eps = v
    elif field == _R_WD:
        h.weight_decay = v
    elif field == _R_MDECAY:
        h.momentum_decay = v
    elif field == _R_MOMENTUM:
        h.momentum = v
    elif field == _R_DAMPENING:
        h.dampening = v
    elif field == _R_ALPHA:
        h.alpha = v
    elif field == _R_MAXNORM:
        maxnorm[0] = v
    else:
        clip[0] = v


cdef cnp.ndarray _rows_operand(object a, str name, int type_num, Py_ssize_t m, Py_ssize_t n,
                               bint write):
    if not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray>a) != type_num \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a) \
            or cnp.PyArray_SIZE(<cnp.ndarray>a) != m * n \
            or (write and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)):
        raise TypeError(f"{name} must be a C-contiguous{' writeable' if write else ''} "
                        f"array of the param's dtype and shape")
    return <cnp.ndarray>a


cdef void *_rows_data(object a, str name, int type_num, Py_ssize_t m, Py_ssize_t n,
                      bint write) except? NULL:
    """The data of a checked (m, n) operand (see _rows_operand)."""
    return cnp.PyArray_DATA(_rows_operand(a, name, type_num, m, n, write))


def _step_rows(int algo, dict hyper, int64_t step, param, grad, list states, lower, upper,
               double max_grad_norm, double clip_value, rows, tuple fields, aux):
    """Update every row of ``param`` (m, n) in place as step ``step`` (1-based) of its
    own problem.

    ``hyper``: validated hyperparameters (as Optimizer._group_hyper gives them, lr a
    number); ``states``: 3 arrays or None like param; ``lower``/``upper``: None or
    arrays like param; ``max_grad_norm`` <= 0 and ``clip_value`` inf mean off.
    ``rows``: None, or a C-contiguous float64 (m, k) array whose column j holds every
    row's value of ``_ROW_FIELDS[fields[j]]`` (checked by the caller). ``aux``: a
    float64 (m,) array of every row's scalar state, updated in place.
    """
    if not 0 <= algo < ADAMC_NUM_ALGOS:
        raise ValueError(f"unknown algorithm {algo}")
    if not cnp.PyArray_Check(param) or cnp.PyArray_NDIM(<cnp.ndarray>param) != 2 \
            or not _float_type(cnp.PyArray_TYPE(<cnp.ndarray>param)):
        raise TypeError("param must be a 2-D float32 or float64 array")
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef int type_num = cnp.PyArray_TYPE(p)
    cdef Py_ssize_t m = cnp.PyArray_DIM(p, 0), n = cnp.PyArray_DIM(p, 1)
    cdef Py_ssize_t i, j, k = len(fields), item = cnp.PyArray_ITEMSIZE(p)
    _rows_operand(p, "param", type_num, m, n, True)
    _rows_operand(grad, "grad", type_num, m, n, False)
    if len(states) != 3:
        raise ValueError("states must list 3 arrays or None")
    cdef char *sp[3]
    for j in range(3):
        sp[j] = NULL if states[j] is None else <char *>cnp.PyArray_DATA(
            _rows_operand(states[j], "states", type_num, m, n, True))
    cdef char *lo = NULL
    cdef char *hi = NULL
    if (lower is None) != (upper is None):
        raise ValueError("lower and upper must both be given or both be None")
    if lower is not None:
        lo = <char *>cnp.PyArray_DATA(_rows_operand(lower, "lower", type_num, m, n, False))
        hi = <char *>cnp.PyArray_DATA(_rows_operand(upper, "upper", type_num, m, n, False))
    if not cnp.PyArray_Check(aux) or cnp.PyArray_TYPE(<cnp.ndarray>aux) != cnp.NPY_DOUBLE \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>aux) \
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>aux) \
            or cnp.PyArray_SIZE(<cnp.ndarray>aux) != m:
        raise TypeError("aux must be a writeable C-contiguous float64 array of m values")
    cdef double *ax = <double *>cnp.PyArray_DATA(<cnp.ndarray>aux)
    cdef const double *rv = NULL
    cdef int fidx[_R_COUNT]
    if k:
        if k > _R_COUNT or rows is None or not cnp.PyArray_Check(rows) \
                or cnp.PyArray_TYPE(<cnp.ndarray>rows) != cnp.NPY_DOUBLE \
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>rows) \
                or cnp.PyArray_SIZE(<cnp.ndarray>rows) != m * k:
            raise TypeError("rows must be a C-contiguous float64 (m, len(fields)) array")
        rv = <const double *>cnp.PyArray_DATA(<cnp.ndarray>rows)
        for j in range(k):
            fidx[j] = fields[j]
            if not 0 <= fidx[j] < _R_COUNT:
                raise ValueError(f"unknown row field {fidx[j]}")
    if m == 0:
        return
    cdef adamc_hyper base
    _fill_hyper(&base, hyper)
    _step_rows_core(algo, &base, step, type_num, <char *>cnp.PyArray_DATA(p),
                    <const char *>cnp.PyArray_DATA(<cnp.ndarray>grad), sp, lo, hi, m, n,
                    max_grad_norm, clip_value, rv, k, fidx, ax)


cdef bint _rows_alike(const double *rv, Py_ssize_t m, int k) noexcept nogil:
    """Whether the m rows of k values all have the bits of the first."""
    cdef const uint64_t *bits = <const uint64_t *>rv
    cdef Py_ssize_t i, j
    for i in range(1, m):
        for j in range(k):
            if bits[i * k + j] != bits[j]:
                return False
    return True


cdef int _step_rows_core(int algo, const adamc_hyper *base_hyper, int64_t step, int type_num,
                         char *pd, const char *gd, char **sp, const char *lo, const char *hi,
                         Py_ssize_t m, Py_ssize_t n, double max_grad_norm, double clip_value,
                         const double *rv, int k, const int *fidx, double *ax) except -1:
    """_step_rows on checked operands: the m rows of n elements at pd (gd, sp[j], lo,
    hi alike); rv: the (m, k) per-row values of the fields fidx."""
    cdef adamc_hyper base = base_hyper[0], h
    cdef Py_ssize_t i, j
    cdef Py_ssize_t item = 4 if type_num == cnp.NPY_FLOAT else 8
    cdef int dt = ADAMC_F32 if type_num == cnp.NPY_FLOAT else ADAMC_F64
    cdef adamc_chunk_fn fn = _kernels.step[algo][dt]
    cdef adamc_sumsq_fn sumsq_fn = _kernels.sumsq[dt]
    cdef adamc_coef coef
    cdef adamc_task task
    cdef double aux_next, maxnorm, clip
    cdef Py_ssize_t row_bytes = n * item
    cdef int failed = 0
    if k and _rows_alike(rv, m, k):
        # (every row has the same values: e.g. each problem's own lr, none backed off
        # or reduced yet) as one row of those values for all
        for j in range(k):
            _set_row_field(&base, &max_grad_norm, &clip_value, fidx[j], rv[j])
        k = 0
    if k == 0 and not (max_grad_norm > 0):
        # every row has the same coefficients: one kernel call over the whole block
        if _prepare_step(algo, &base, step, ax[0], clip_value, lo != NULL, &coef,
                         &aux_next) != 0:
            raise ValueError(f"unknown algorithm {algo}")
        task.param = pd
        task.grad = gd
        for j in range(3):
            task.state[j] = sp[j]
        task.lower, task.upper = lo, hi
        task.coef = &coef
        _run_task(fn, &task, m * n, ADAMC_KIND_STEP(algo, dt), m * row_bytes)
        for i in range(m):
            ax[i] = aux_next
        return 0
    with nogil:
        adamc_enter()
        for i in range(m):
            h = base
            maxnorm, clip = max_grad_norm, clip_value
            for j in range(k):
                _set_row_field(&h, &maxnorm, &clip, fidx[j], rv[i * k + j])
            if _prepare_step(algo, &h, step, ax[i], clip, lo != NULL, &coef, &aux_next) != 0:
                failed = 1
                break
            task.param = pd + i * row_bytes
            task.grad = gd + i * row_bytes
            for j in range(3):
                task.state[j] = NULL if sp[j] == NULL else sp[j] + i * row_bytes
            task.lower = NULL if lo == NULL else lo + i * row_bytes
            task.upper = NULL if hi == NULL else hi + i * row_bytes
            task.coef = &coef
            if maxnorm > 0:  # the engine's clipping of a lone problem: its own norm
                _clip_own_norm(&coef, sumsq_fn, task.grad, n, maxnorm, clip, dt, row_bytes)
            adamc_run(fn, &task, n, ADAMC_KIND_STEP(algo, dt), row_bytes)
            ax[i] = aux_next
        adamc_leave()
    if failed:
        raise ValueError(f"unknown algorithm {algo}")
    return 0
