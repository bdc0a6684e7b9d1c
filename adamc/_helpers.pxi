# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Small helpers of the minimize loop (cheap at n = 10, where NumPy calls cost ~1 us)

ctypedef fused real:
    float
    double


cdef inline double _max_abs(const real *a, Py_ssize_t n) noexcept nogil:
    # (it runs at every iteration of a C-objective fit: the SIMD kernel of the level)
    if real is float:
        return _kernels.max_abs[ADAMC_F32](a, n)
    return _kernels.max_abs[ADAMC_F64](a, n)


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


# Scaled variables (the x_scale option of minimize and minimize_many): the optimizer
# steps u, the objective sees x = s u (clipped into the bounds, which rounding could
# leave), and the optimizer gets the gradient s g.

cdef void _scaled_x(real *x, const real *s, const real *u, const real *lower,
                    const real *upper, Py_ssize_t n) noexcept nogil:
    """x = s u, clipped into [lower, upper] when given."""
    cdef Py_ssize_t i
    for i in range(n):  # (a loop of its own: vectorised)
        x[i] = s[i] * u[i]
    if lower != NULL:
        for i in range(n):
            if x[i] < lower[i]:
                x[i] = lower[i]
            elif x[i] > upper[i]:
                x[i] = upper[i]


cdef void _scaled_g(real *gu, const real *s, const real *g, Py_ssize_t n) noexcept nogil:
    """gu = s g."""
    cdef Py_ssize_t i
    for i in range(n):
        gu[i] = s[i] * g[i]


cdef enum:
    # Backtracking halves a step at most this often (to 2**-30 of it) before the
    # objective's non-finite values end the problem's fit
    _MAX_BACKTRACKS = 30


cdef void _halve_step(real *u, const real *keep, Py_ssize_t n) noexcept nogil:
    """u = keep + (u - keep) / 2: half the step just made (backtracking from a point
    where the objective is not finite)."""
    cdef Py_ssize_t i
    for i in range(n):
        u[i] = keep[i] + (u[i] - keep[i]) * <real>0.5


cdef inline void _scaled_x_any(void *x, const void *s, const void *u, const void *lower,
                               const void *upper, Py_ssize_t n, int dtype_index) noexcept nogil:
    if dtype_index == ADAMC_F32:
        _scaled_x(<float *>x, <const float *>s, <const float *>u, <const float *>lower,
                  <const float *>upper, n)
    else:
        _scaled_x(<double *>x, <const double *>s, <const double *>u, <const double *>lower,
                  <const double *>upper, n)


cdef inline void _halve_step_any(void *u, const void *keep, Py_ssize_t n,
                                 int dtype_index) noexcept nogil:
    if dtype_index == ADAMC_F32:
        _halve_step(<float *>u, <const float *>keep, n)
    else:
        _halve_step(<double *>u, <const double *>keep, n)


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


cdef inline Py_ssize_t _sum_parts(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t parts = n // ADAMC_SUM_PART
    return 1 if parts < 1 else ADAMC_SUM_PARTS if parts > ADAMC_SUM_PARTS else parts


def sum_partitions(Py_ssize_t n):
    """The boundaries ``[b0 = 0, b1, ..., n]`` of the partitions in which the kernels
    sum over an array of n elements (the sum of squares of max_grad_norm, Prodigy's
    statistics): they depend on n only; each partition is summed in a fixed 16-lane
    order from its start and the partitions' sums are added in order."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cdef Py_ssize_t k, parts = _sum_parts(n)
    return [n * k // parts for k in range(parts + 1)]


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


def first_nonfinite(a):
    """Flat index of the first NaN or infinity of a contiguous float array, or -1
    (the kernels' scan of nonfinite="raise"/"skip")."""
    cdef cnp.ndarray x = _vector(a, "a")
    cdef adamc_scan_fn fn = _kernels.first_nonfinite[ADAMC_F32 if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT
                                                     else ADAMC_F64]
    cdef const void *data = cnp.PyArray_DATA(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x), r
    with nogil:
        adamc_enter()
        r = fn(data, n)
        adamc_leave()
    return r


def copy_into(dst, src):
    """Copy src into dst (contiguous arrays of one dtype and size, dst writeable)."""
    cdef cnp.ndarray d = _vector(dst, "dst"), s = _vector(src, "src")
    if cnp.PyArray_TYPE(d) != cnp.PyArray_TYPE(s) or cnp.PyArray_SIZE(d) != cnp.PyArray_SIZE(s):
        raise ValueError("dst and src must have the same dtype and size")
    if not cnp.PyArray_ISWRITEABLE(d):
        raise ValueError("dst is read-only")
    memcpy(cnp.PyArray_DATA(d), cnp.PyArray_DATA(s), cnp.PyArray_NBYTES(s))


cdef inline double _norm_inf(const void *a, Py_ssize_t n, int dtype_index) noexcept nogil:
    if dtype_index == ADAMC_F32:
        return _max_abs(<const float *>a, n)
    return _max_abs(<const double *>a, n)


cdef inline double _diff_inf(const void *a, const void *b, Py_ssize_t n,
                             int dtype_index) noexcept nogil:
    if dtype_index == ADAMC_F32:
        return _max_abs_diff(<const float *>a, <const float *>b, n)
    return _max_abs_diff(<const double *>a, <const double *>b, n)


cdef inline bint _tolerances_met(double gtol, double ftol, double xtol, double gnorm,
                                 double f_prev, double f, const void *x, const void *keep,
                                 Py_ssize_t n, int dtype_index) noexcept nogil:
    """minimize_many's stopping tests of one problem after a step (values finite; a
    tolerance <= 0 is off): |g|_inf <= gtol, the relative change of f <= ftol, or the
    relative change of x <= xtol."""
    cdef double scale, a, b
    if gtol > 0 and gnorm <= gtol:
        return True
    if ftol > 0:
        a, b = fabs(f_prev), fabs(f)
        scale = a if a > b else b
        if scale < 1.0:
            scale = 1.0
        if fabs(f_prev - f) <= ftol * scale:
            return True
    if xtol > 0:
        scale = _norm_inf(x, n, dtype_index)
        if scale < 1.0:
            scale = 1.0
        if _diff_inf(x, keep, n, dtype_index) <= xtol * scale:
            return True
    return False
