# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# The iterations of adamc.minimize_many with a Python objective, in compiled code.
# The running problems are the first m rows of every array, in increasing problem
# order (idx[r] is row r's problem); a problem that stops is recorded in the results
# and its rows are moved out (the later rows move down, keeping their order). Python
# is called for the objective (once per iteration, on the m running rows), a
# learning rate given as a callable, the hooks (callback, disp), the lockstep of a
# distributed run, and to re-select the objective's data rows when problems stop.


cdef struct _ManyRows:
    Py_ssize_t m, n, k, item
    int dtype_index
    char *x
    char *keep                      # x before the step
    char *g                         # the current gradient and f (arrays the objective
    double *f                       # returned), and f before the step
    double *f_prev
    double *gnorm                   # max |g| of each row
    char *state[3]
    char *lower
    char *upper
    double *rows
    double *aux
    double *gtol
    double *ftol
    double *xtol
    int64_t *maxiter                # NULL: none
    int64_t *maxfev
    int64_t *idx
    unsigned char *done             # the rows that stop now
    # results, by problem
    char *X
    char *G
    double *F
    int64_t *NIT
    int64_t *STATUS


cdef inline void _move_row(char *base, Py_ssize_t width, Py_ssize_t dst,
                           Py_ssize_t src) noexcept nogil:
    memcpy(base + dst * width, base + src * width, width)


cdef Py_ssize_t _finish_rows(_ManyRows *c, int64_t nit, int64_t status) noexcept nogil:
    """Record the rows marked in c.done (status: the given one, or the one already in
    c.STATUS when status is -1) and move the others down; returns the new m."""
    cdef Py_ssize_t r, w = 0, j, rb = c.n * c.item
    cdef int64_t p
    for r in range(c.m):
        if c.done[r]:
            p = c.idx[r]
            memcpy(c.X + p * rb, c.x + r * rb, rb)
            memcpy(c.G + p * rb, c.g + r * rb, rb)
            c.F[p] = c.f[r]
            c.NIT[p] = nit
            if status >= 0:
                c.STATUS[p] = status
            continue
        if w != r:
            _move_row(c.x, rb, w, r)
            _move_row(c.keep, rb, w, r)
            _move_row(c.g, rb, w, r)
            for j in range(3):
                if c.state[j] != NULL:
                    _move_row(c.state[j], rb, w, r)
            if c.lower != NULL:
                _move_row(c.lower, rb, w, r)
                _move_row(c.upper, rb, w, r)
            if c.k:
                _move_row(<char *>c.rows, c.k * 8, w, r)
            c.f[w], c.f_prev[w], c.aux[w] = c.f[r], c.f_prev[r], c.aux[r]
            c.gnorm[w] = c.gnorm[r]
            c.gtol[w], c.ftol[w], c.xtol[w] = c.gtol[r], c.ftol[r], c.xtol[r]
            if c.maxiter != NULL:
                c.maxiter[w] = c.maxiter[r]
            if c.maxfev != NULL:
                c.maxfev[w] = c.maxfev[r]
            c.idx[w] = c.idx[r]
        w += 1
    c.m = w
    return w


cdef object _rows_view(object a, Py_ssize_t m):
    return a[:m]


def many_loop(problems, int algo, dict hyper, lr_fn, x, f, g, list states, aux, lower,
              upper, double max_grad_norm, double clip_value, rows, tuple fields, gtol,
              ftol, xtol, maxiter, maxfev, X, F, G, NIT, STATUS, hooks=None, sync=None):
    """The iterations of minimize_many with a Python objective, from the first
    evaluation (f, g at x, every problem running) until every problem has stopped.

    ``problems(x, lower, upper) -> (f, g)`` evaluates the running rows (new arrays,
    float64 (m,) and (m, n) of x's dtype: the loop works in them) and
    ``problems.select(idx)`` sets them; its ``nfev`` (by problem) and ``pending``
    (evaluations of every running problem not yet in nfev) count. The per-problem
    arrays (x, states, lower, upper, rows, aux, gtol, ftol, xtol, maxiter, maxfev: B
    rows, C-contiguous, owned) are used as scratch. X, F, G, NIT, STATUS receive the
    results. ``hooks(nit, m, x, f, g, idx) -> stopped`` after every iteration with
    running problems (None: none); ``sync``: the lockstep collaborator of a
    distributed run (None: none).
    """
    cdef _ManyRows c
    memset(&c, 0, sizeof(c))
    if not 0 <= algo < ADAMC_NUM_ALGOS:
        raise ValueError(f"unknown algorithm {algo}")
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2):
        raise TypeError("x must be a 2-D array")
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int type_num = cnp.PyArray_TYPE(xa)
    cdef Py_ssize_t B = cnp.PyArray_DIM(xa, 0), n = cnp.PyArray_DIM(xa, 1)
    cdef Py_ssize_t r, j, m, rb, stopping
    cdef int64_t nit = 0, t, nf = 0
    cdef double gnorm
    cdef bint stopped, more, conv, lockstep = sync is not None, has_hooks = hooks is not None
    c.n, c.k = n, len(fields)
    c.item = cnp.PyArray_ITEMSIZE(xa)
    c.dtype_index = ADAMC_F32 if type_num == cnp.NPY_FLOAT else ADAMC_F64
    rb = n * c.item
    for name, arr, dt, size in (("x", x, type_num, B * n), ("aux", aux, cnp.NPY_DOUBLE, B),
                                ("gtol", gtol, cnp.NPY_DOUBLE, B),
                                ("ftol", ftol, cnp.NPY_DOUBLE, B),
                                ("xtol", xtol, cnp.NPY_DOUBLE, B),
                                ("X", X, type_num, B * n), ("F", F, cnp.NPY_DOUBLE, B),
                                ("G", G, type_num, B * n), ("NIT", NIT, cnp.NPY_INT64, B),
                                ("STATUS", STATUS, cnp.NPY_INT64, B)):
        _rows_operand(arr, name, dt, size, 1, True)
    keep_x = np.empty_like(xa)
    f_prev = np.empty(B)
    gnorms = np.empty(B)
    idx = np.arange(B, dtype=np.int64)
    done = np.zeros(B, np.uint8)
    f_cur = _rows_operand(f, "f", cnp.NPY_DOUBLE, B, 1, True)
    g_cur = _rows_operand(g, "g", type_num, B, n, True)
    g_old = g_cur
    c.x = <char *>cnp.PyArray_DATA(xa)
    c.keep = <char *>cnp.PyArray_DATA(<cnp.ndarray>keep_x)
    c.f = <double *>cnp.PyArray_DATA(<cnp.ndarray>f_cur)
    c.g = <char *>cnp.PyArray_DATA(<cnp.ndarray>g_cur)
    c.f_prev = <double *>cnp.PyArray_DATA(<cnp.ndarray>f_prev)
    c.gnorm = <double *>cnp.PyArray_DATA(<cnp.ndarray>gnorms)
    for j in range(3):
        if states[j] is not None:
            c.state[j] = <char *>_rows_data(states[j], "states", type_num, B, n, True)
    if lower is not None:
        c.lower = <char *>_rows_data(lower, "lower", type_num, B, n, True)
        c.upper = <char *>_rows_data(upper, "upper", type_num, B, n, True)
    cdef int fidx[_R_COUNT]
    if c.k:
        if c.k > _R_COUNT:
            raise ValueError("too many row fields")
        c.rows = <double *>_rows_data(rows, "rows", cnp.NPY_DOUBLE, B, c.k, True)
        for j in range(c.k):
            fidx[j] = fields[j]
            if not 0 <= fidx[j] < _R_COUNT:
                raise ValueError(f"unknown row field {fidx[j]}")
    c.aux = <double *>cnp.PyArray_DATA(<cnp.ndarray>aux)
    c.gtol = <double *>cnp.PyArray_DATA(<cnp.ndarray>gtol)
    c.ftol = <double *>cnp.PyArray_DATA(<cnp.ndarray>ftol)
    c.xtol = <double *>cnp.PyArray_DATA(<cnp.ndarray>xtol)
    if maxiter is not None:
        c.maxiter = <int64_t *>_rows_data(maxiter, "maxiter", cnp.NPY_INT64, B, 1, True)
    if maxfev is not None:
        c.maxfev = <int64_t *>_rows_data(maxfev, "maxfev", cnp.NPY_INT64, B, 1, True)
    c.idx = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>idx)
    c.done = <unsigned char *>cnp.PyArray_DATA(<cnp.ndarray>done)
    c.X = <char *>cnp.PyArray_DATA(<cnp.ndarray>X)
    c.G = <char *>cnp.PyArray_DATA(<cnp.ndarray>G)
    c.F = <double *>cnp.PyArray_DATA(<cnp.ndarray>F)
    c.NIT = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>NIT)
    c.STATUS = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>STATUS)
    cdef int64_t *nfev = <int64_t *>_rows_data(problems.nfev, "nfev", cnp.NPY_INT64, B, 1,
                                               True)
    cdef adamc_hyper base
    _fill_hyper(&base, hyper)
    c.m = B

    # the first evaluation: non-finite (status 3) and converged (status 0) problems
    stopping = 0
    for r in range(B):
        gnorm = _norm_inf(c.g + r * rb, n, c.dtype_index)
        if not (isfinite(c.f[r]) and isfinite(gnorm)):
            c.STATUS[r] = 3
            c.done[r] = 1
        elif c.gtol[r] > 0 and gnorm <= c.gtol[r]:
            c.STATUS[r] = 0
            c.done[r] = 1
        else:
            c.done[r] = 0
        stopping += c.done[r]
    if stopping:
        _finish_rows(&c, 0, -1)
        problems.select(idx[:c.m].copy())
    while True:
        stopped, error = False, None
        try:
            if c.m and c.maxiter != NULL:
                stopping = 0
                for r in range(c.m):
                    c.done[r] = c.maxiter[r] <= nit
                    stopping += c.done[r]
                if stopping:
                    _finish_rows(&c, nit, 1)
                    problems.select(idx[:c.m].copy())
            m = c.m
            if m:
                memcpy(c.keep, c.x, m * rb)
                t = nit + 1
                if lr_fn is not None:
                    base.lr = _lr_at(lr_fn, t, 0)
                _step_rows_core(algo, &base, t, type_num, c.x, c.g, c.state, c.lower,
                                c.upper, m, n, max_grad_norm, clip_value, c.rows,
                                <int>c.k, fidx, c.aux)
                fo, go = problems(_rows_view(x, m), None if lower is None else
                                  _rows_view(lower, m), None if upper is None else
                                  _rows_view(upper, m))
                # the loop works in the new arrays (the previous ones: f before the
                # step, and the gradient a non-finite problem returns to)
                f_prev, g_old = f_cur, g_cur
                f_cur = _rows_operand(fo, "f", cnp.NPY_DOUBLE, m, 1, True)
                g_cur = _rows_operand(go, "g", type_num, m, n, True)
                c.f_prev, c.f = c.f, <double *>cnp.PyArray_DATA(<cnp.ndarray>f_cur)
                c.g = <char *>cnp.PyArray_DATA(<cnp.ndarray>g_cur)
                stopping = 0
                for r in range(m):
                    gnorm = _norm_inf(c.g + r * rb, n, c.dtype_index)
                    c.gnorm[r] = gnorm
                    if isfinite(c.f[r]) and isfinite(gnorm):
                        c.done[r] = 0
                        continue
                    # the last finite iterate, its f and g
                    memcpy(c.x + r * rb, c.keep + r * rb, rb)
                    memcpy(c.g + r * rb, (<char *>cnp.PyArray_DATA(<cnp.ndarray>g_old)) +
                           r * rb, rb)
                    c.f[r] = c.f_prev[r]
                    c.done[r] = 1
                    stopping += 1
                if stopping:
                    _finish_rows(&c, nit, 3)
                    problems.select(idx[:c.m].copy())
                nit += 1
                if has_hooks and c.m:
                    stopped = hooks(nit, c.m, x, f_cur, g_cur, idx)
        except Exception as exc:
            if not lockstep:
                raise
            error = exc
        if lockstep:
            stopped, more = sync.iteration(stopped, error, c.m > 0)
        else:
            more = c.m > 0
        if stopped:
            for r in range(c.m):
                c.done[r] = 1
            _finish_rows(&c, nit, 99)
            break
        if not c.m:
            if not more:
                break
            nit += 1  # a lockstep rank whose problems are done waits for the others
            continue
        # the stopping tests (every value here is finite)
        stopping = 0
        if c.maxfev != NULL:
            nf = problems.pending
        for r in range(c.m):
            conv = _tolerances_met(c.gtol[r], c.ftol[r], c.xtol[r], c.gnorm[r], c.f_prev[r],
                                   c.f[r], c.x + r * rb, c.keep + r * rb, n, c.dtype_index)
            if conv:
                c.STATUS[c.idx[r]] = 0
                c.done[r] = 1
            elif c.maxfev != NULL and nfev[c.idx[r]] + nf >= c.maxfev[r]:
                c.STATUS[c.idx[r]] = 2
                c.done[r] = 1
            else:
                c.done[r] = 0
            stopping += c.done[r]
        if stopping:
            _finish_rows(&c, nit, -1)
            problems.select(idx[:c.m].copy())
    problems.flush()
