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
    # the x_scale and f_scale options (NULL: none): the rows of x are the scaled
    # variables u, the objective gets xu = s u clipped into [ulo, uhi], the step
    # gu = gs g (computed at each accepted evaluation)
    char *s
    char *gs
    char *xu
    char *gu
    char *ulo
    char *uhi
    # a reduce_on_plateau lr (pbest NULL: none): each row's best f and counters; its
    # lr is column lr_col of rows
    double *pbest
    int64_t *pcounts
    int lr_col
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
    c.STATUS when status is _ST_RUNNING) and move the others down; returns the new m."""
    cdef Py_ssize_t r, w = 0, j, rb = c.n * c.item
    cdef int64_t p
    for r in range(c.m):
        if c.done[r]:
            p = c.idx[r]
            memcpy(c.X + p * rb, (c.x if c.s == NULL else c.xu) + r * rb, rb)
            memcpy(c.G + p * rb, c.g + r * rb, rb)
            c.F[p] = c.f[r]
            c.NIT[p] = nit
            if status != _ST_RUNNING:
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
            if c.s != NULL:
                _move_row(c.s, rb, w, r)
                _move_row(c.gs, rb, w, r)
                _move_row(c.xu, rb, w, r)
                _move_row(c.gu, rb, w, r)
                if c.ulo != NULL:
                    _move_row(c.ulo, rb, w, r)
                    _move_row(c.uhi, rb, w, r)
            if c.pbest != NULL:
                c.pbest[w] = c.pbest[r]
                _move_row(<char *>c.pcounts, 24, w, r)
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


cdef bint _row_ok(_ManyRows *c, Py_ssize_t r) noexcept nogil:
    """Whether row r's f and gradient are finite (and its scaled gradient, computed
    here: s g / f_scale may overflow where g does not); sets its gnorm."""
    cdef Py_ssize_t rb = c.n * c.item
    cdef double gnorm = _norm_inf(c.g + r * rb, c.n, c.dtype_index)
    c.gnorm[r] = gnorm
    if not (isfinite(c.f[r]) and isfinite(gnorm)):
        return False
    if c.s != NULL:
        if c.dtype_index == ADAMC_F32:
            _scaled_g(<float *>(c.gu + r * rb), <const float *>(c.gs + r * rb),
                      <const float *>(c.g + r * rb), c.n)
        else:
            _scaled_g(<double *>(c.gu + r * rb), <const double *>(c.gs + r * rb),
                      <const double *>(c.g + r * rb), c.n)
        return isfinite(_norm_inf(c.gu + r * rb, c.n, c.dtype_index))
    return True


cdef void _user_row(_ManyRows *c, Py_ssize_t r) noexcept nogil:
    """xu = s u of row r, clipped into its bounds."""
    cdef Py_ssize_t rb = c.n * c.item
    _scaled_x_any(c.xu + r * rb, c.s + r * rb, c.x + r * rb,
                  NULL if c.ulo == NULL else c.ulo + r * rb,
                  NULL if c.uhi == NULL else c.uhi + r * rb, c.n, c.dtype_index)


def many_loop(problems, int algo, dict hyper, lr_fn, x, f, g, list states, aux, lower,
              upper, double max_grad_norm, double clip_value, rows, tuple fields, gtol,
              ftol, xtol, maxiter, maxfev, X, F, G, NIT, STATUS, hooks=None, sync=None,
              scale=None, grad_scale=None, x_user=None, user_lower=None, user_upper=None,
              _ReduceOnPlateau plateau=None, int lr_col=-1, bint backtrack=False,
              nbacktrack=None):
    """The iterations of minimize_many with a Python objective, from the first
    evaluation (f, g at x, every problem running) until every problem has stopped.

    ``problems(x, lower, upper) -> (f, g)`` evaluates the running rows (new arrays,
    float64 (m,) and (m, n) of x's dtype: the loop works in them),
    ``problems.select(idx)`` sets them and ``problems.some(rows, x, lower, upper)``
    evaluates some of them again; its ``nfev`` (by problem) and ``pending``
    (evaluations of every running problem not yet in nfev) count. The per-problem
    arrays (x, states, lower, upper, rows, aux, gtol, ftol, xtol, maxiter, maxfev, and
    scale, grad_scale, x_user, user_lower, user_upper: B rows, C-contiguous, owned) are
    used as scratch. X, F, G, NIT, STATUS receive the results (X: x_user when
    scaled). ``hooks(nit, m, x, f, g, idx) -> stopped`` after every iteration with
    running problems (None: none); ``sync``: the lockstep collaborator of a
    distributed run (None: none).

    With ``scale``, x holds the scaled variables u and the objective sees
    ``x_user = clip(scale u, user_lower, user_upper)`` (the first evaluation was at
    x_user), the step gets ``grad_scale g``. ``plateau``: the rule of a
    reduce_on_plateau lr, which every problem steps with its own f; its lr is column
    ``lr_col`` of ``rows``. ``backtrack``: a problem whose f or g is not finite after
    a step has the step halved (up to _MAX_BACKTRACKS times; counted in
    ``nbacktrack``, by problem) and its lr (column lr_col, if any) times the factor.
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
    cdef Py_ssize_t r, j, m, rb, stopping, nbad
    cdef int64_t nit = 0, t, nf = 0
    cdef int code
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
    if not (-1 <= lr_col < c.k) or (plateau is not None and lr_col < 0):
        raise ValueError("lr_col must be a column of rows (with a plateau schedule)")
    c.lr_col = lr_col
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
    gu_rows = None
    if scale is not None:
        gu_rows = np.empty_like(xa)
        c.s = <char *>_rows_data(scale, "scale", type_num, B, n, True)
        c.gs = <char *>_rows_data(grad_scale, "grad_scale", type_num, B, n, True)
        c.xu = <char *>_rows_data(x_user, "x_user", type_num, B, n, True)
        c.gu = <char *>cnp.PyArray_DATA(<cnp.ndarray>gu_rows)
        if user_lower is not None:
            c.ulo = <char *>_rows_data(user_lower, "user_lower", type_num, B, n, True)
            c.uhi = <char *>_rows_data(user_upper, "user_upper", type_num, B, n, True)
    pbest = pcounts = None
    if plateau is not None:
        pbest = np.full(B, plateau.p.best)
        pcounts = np.zeros((B, 3), np.int64)
        c.pbest = <double *>cnp.PyArray_DATA(<cnp.ndarray>pbest)
        c.pcounts = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>pcounts)
    cdef int64_t *nback = NULL
    if backtrack:
        nback = <int64_t *>_rows_data(nbacktrack, "nbacktrack", cnp.NPY_INT64, B, 1, True)
    factors = np.ones(B) if backtrack else None
    cdef double *fac = NULL if factors is None else <double *>cnp.PyArray_DATA(
        <cnp.ndarray>factors)
    cdef adamc_hyper base
    _fill_hyper(&base, hyper)
    c.m = B
    xs = x if scale is None else x_user  # the x the objective and the results see

    # the first evaluation: non-finite and converged problems
    stopping = 0
    for r in range(B):
        if not _row_ok(&c, r):
            c.STATUS[r] = _ST_NONFINITE
            c.done[r] = 1
        elif c.gtol[r] > 0 and c.gnorm[r] <= c.gtol[r]:
            c.STATUS[r] = _ST_CONVERGED
            c.done[r] = 1
        else:
            c.done[r] = 0
        stopping += c.done[r]
    if stopping:
        _finish_rows(&c, 0, _ST_RUNNING)
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
                    _finish_rows(&c, nit, _ST_MAXITER)
                    problems.select(idx[:c.m].copy())
            m = c.m
            if m:
                memcpy(c.keep, c.x, m * rb)
                t = nit + 1
                if lr_fn is not None:
                    base.lr = _lr_at(lr_fn, t, 0)
                _step_rows_core(algo, &base, t, type_num, c.x, c.g if c.s == NULL else c.gu,
                                c.state, c.lower, c.upper, m, n, max_grad_norm, clip_value,
                                c.rows, <int>c.k, fidx, c.aux)
                if c.s != NULL:
                    for r in range(m):
                        _user_row(&c, r)
                fo, go = problems(_rows_view(xs, m), None if lower is None else
                                  _rows_view(lower if scale is None else user_lower, m),
                                  None if upper is None else
                                  _rows_view(upper if scale is None else user_upper, m))
                # the loop works in the new arrays (the previous ones: f before the
                # step, and the gradient a non-finite problem returns to)
                f_prev, g_old = f_cur, g_cur
                f_cur = _rows_operand(fo, "f", cnp.NPY_DOUBLE, m, 1, True)
                g_cur = _rows_operand(go, "g", type_num, m, n, True)
                c.f_prev, c.f = c.f, <double *>cnp.PyArray_DATA(<cnp.ndarray>f_cur)
                c.g = <char *>cnp.PyArray_DATA(<cnp.ndarray>g_cur)
                nbad = 0
                for r in range(m):
                    c.done[r] = not _row_ok(&c, r)
                    nbad += c.done[r]
                if nbad and backtrack:
                    _backtrack_rows(&c, problems, xs, user_lower if scale is not None
                                    else lower, user_upper if scale is not None else upper,
                                    f_cur, g_cur, done, nback, fac)
                stopping = 0
                for r in range(m):
                    if not c.done[r]:
                        continue
                    # the last finite iterate, its f and g
                    memcpy(c.x + r * rb, c.keep + r * rb, rb)
                    memcpy(c.g + r * rb, (<char *>cnp.PyArray_DATA(<cnp.ndarray>g_old)) +
                           r * rb, rb)
                    c.f[r] = c.f_prev[r]
                    if c.s != NULL:
                        _user_row(&c, r)
                    stopping += 1
                if stopping:
                    _finish_rows(&c, nit, _ST_NONFINITE)
                    problems.select(idx[:c.m].copy())
                nit += 1
                if c.pbest != NULL and c.m:
                    stopping = 0
                    for r in range(c.m):
                        code = _plateau_row(&plateau.p, &c.rows[r * c.k + c.lr_col],
                                            &c.pbest[r], &c.pcounts[3 * r], c.f[r])
                        c.done[r] = code == _PLATEAU_EXHAUSTED
                        stopping += c.done[r]
                    if stopping:
                        _finish_rows(&c, nit, _ST_CONVERGED)
                        problems.select(idx[:c.m].copy())
                if has_hooks and c.m:
                    stopped = hooks(nit, c.m, xs, f_cur, g_cur, idx)
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
            _finish_rows(&c, nit, _ST_CALLBACK)
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
                c.STATUS[c.idx[r]] = _ST_CONVERGED
                c.done[r] = 1
            elif c.maxfev != NULL and nfev[c.idx[r]] + nf >= c.maxfev[r]:
                c.STATUS[c.idx[r]] = _ST_MAXFEV
                c.done[r] = 1
            else:
                c.done[r] = 0
            stopping += c.done[r]
        if stopping:
            _finish_rows(&c, nit, _ST_RUNNING)
            problems.select(idx[:c.m].copy())
    problems.flush()


cdef int _backtrack_rows(_ManyRows *c, problems, xs, lower, upper, f_cur, g_cur, done,
                         int64_t *nback, double *fac) except -1:
    """Backtracking of the rows marked in c.done (not finite after the step): their
    steps halved and the rows evaluated again, until finite or _MAX_BACKTRACKS
    halvings; c.done keeps the rows that stay non-finite. The rows that recover get
    their lr (column lr_col, if any) times the factor, as adamc.minimize does."""
    cdef Py_ssize_t r, j, k, rb = c.n * c.item
    cdef cnp.ndarray bad
    cdef int64_t *bp
    for r in range(c.m):
        fac[r] = 1.0
    for k in range(_MAX_BACKTRACKS):
        bad = np.flatnonzero(done[:c.m]).astype(np.int64)
        if bad.size == 0:
            break
        bp = <int64_t *>cnp.PyArray_DATA(bad)
        for j in range(bad.size):
            r = bp[j]
            _halve_step_any(c.x + r * rb, c.keep + r * rb, c.n, c.dtype_index)
            fac[r] *= 0.5
            nback[c.idx[r]] += 1
            if c.s != NULL:
                _user_row(c, r)
        fo, go = problems.some(bad, xs[:c.m][bad], None if lower is None else
                               lower[:c.m][bad], None if upper is None else upper[:c.m][bad])
        f_cur[bad] = fo
        g_cur[bad] = go
        for j in range(bad.size):
            r = bp[j]
            c.done[r] = not _row_ok(c, r)
    for r in range(c.m):
        if fac[r] != 1.0 and not c.done[r] and c.lr_col >= 0:
            c.rows[r * c.k + c.lr_col] *= fac[r]
    return 0
