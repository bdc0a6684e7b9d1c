# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# adamc.minimize_many with a C objective: every problem's fit runs in C, the problems
# dealt to the adamc threads (the GIL released). Problem i gets exactly what the
# vectorised loop of adamc._fitting.many gives it (the step of _step_rows for its row, the
# same evaluation order and stopping tests), so the results are the same bits for any
# split of the problems and any thread count. adamc._fitting.many calls _fit_rows for blocks
# of iterations and does, between blocks, what needs Python: a learning rate schedule,
# the callback, disp, signals.

from libc.stdint cimport intptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from "adamc.h" nogil:
    enum:
        ADAMC_KIND_FITS

ctypedef double (*_row_objective_fn)(int n, double *x, double *g, intptr_t i,
                                     void *data) noexcept nogil

cdef struct _RowFits:
    _row_objective_fn fun
    void *data
    intptr_t first                 # the index the objective gets for problem 0
    int algo, k, start
    int fidx[_R_COUNT]
    Py_ssize_t n
    int64_t t0, t1
    const double *lrs              # the lr of steps t0 + 1 .. t1 (a schedule), or NULL
    # without per-problem hyperparameters every problem's step t has the same
    # coefficients and scalar state: prepared once per block, for steps t0 + 1 .. t1
    const adamc_coef *coefs
    const double *coefs_aux
    adamc_hyper base
    double max_grad_norm, clip_value
    adamc_chunk_fn step_fn
    adamc_sumsq_fn sumsq_fn
    double *rows                   # (B, k) per-problem hyperparameters
    int lr_col                     # the column of each problem's own lr (-1: none)
    # x_scale and f_scale (s NULL: none): x holds u, the objective gets
    # clip(s u, ulo, uhi), the step gs g
    const double *s
    const double *gs
    const double *ulo
    const double *uhi
    # a reduce_on_plateau lr (NULL: none): the rule, each problem's best f and counters
    const _Plateau *plateau
    double *pbest
    int64_t *pcounts
    bint backtrack
    int64_t *nback                 # halvings made, by problem
    double *x
    double *g
    double *f
    double *state[3]
    const double *lower
    const double *upper
    double *aux
    const double *gtol
    const double *ftol
    const double *xtol
    const int64_t *maxiter         # NULL: none
    const int64_t *maxfev          # NULL: none
    int64_t *nit
    int64_t *nfev
    int64_t *status
    int failed                     # 1: out of memory, 2: unknown algorithm


cdef inline bint _same_bits(double a, double b) noexcept nogil:
    return (<uint64_t *>&a)[0] == (<uint64_t *>&b)[0]


cdef inline bint _fit_eval(_RowFits *c, Py_ssize_t i, double *x, double *xu, double *g,
                           double *gu, double *f, double *gnorm) noexcept nogil:
    """Problem i's f and gradient g at its iterate x (at clip(s x) when scaled: xu),
    and the step's gradient gu = gs g; whether all are finite (gu not at the start:
    gs is not known before f(x0) is, adamc._fitting.many checks it then)."""
    cdef Py_ssize_t n = c.n
    cdef double *arg = x
    if c.s != NULL:
        _scaled_x(xu, c.s + i * n, x, NULL if c.ulo == NULL else c.ulo + i * n,
                  NULL if c.uhi == NULL else c.uhi + i * n, n)
        arg = xu
    f[0] = c.fun(<int>n, arg, g, c.first + <intptr_t>i, c.data)
    c.nfev[i] += 1
    gnorm[0] = _max_abs(<const double *>g, n)
    if not (isfinite(f[0]) and isfinite(gnorm[0])):
        return False
    if c.s != NULL and not c.start:
        _scaled_g(gu, c.gs + i * n, g, n)
        return isfinite(_max_abs(<const double *>gu, n))
    return True


cdef int _fit_row(_RowFits *c, Py_ssize_t i, double *keep, double *g_new,
                  double *xu, double *gu) noexcept nogil:
    """Problem i from iteration c.t0 (after its first evaluation when c.start) until
    it stops or has made c.t1 iterations. Returns -1 for an unknown algorithm."""
    cdef Py_ssize_t n = c.n, j
    cdef size_t nbytes = n * sizeof(double)
    cdef double *x = c.x + i * n
    cdef double *row_g = c.g + i * n
    # the gradient at x and the buffer of the next one, swapped after an evaluation
    cdef double *g = row_g
    cdef double f, f_prev, gnorm, maxnorm, clip, aux_next, factor
    cdef int64_t nit
    cdef int k
    cdef bint ok
    cdef adamc_hyper h
    cdef adamc_coef coef
    cdef adamc_task task
    if c.status[i] != _ST_RUNNING:
        return 0
    if c.start:
        ok = _fit_eval(c, i, x, xu, g, gu, &f, &gnorm)
        c.f[i] = f
        if not ok:
            c.status[i] = _ST_NONFINITE
            return 0
        if c.gtol[i] > 0 and gnorm <= c.gtol[i]:
            c.status[i] = _ST_CONVERGED
            return 0
    elif c.s != NULL:  # (the step's gradient of the last accepted evaluation)
        _scaled_g(gu, c.gs + i * n, g, n)
    memset(&task, 0, sizeof(task))
    task.param = x
    task.lower = NULL if c.lower == NULL else c.lower + i * n
    task.upper = NULL if c.upper == NULL else c.upper + i * n
    for j in range(3):
        task.state[j] = NULL if c.state[j] == NULL else c.state[j] + i * n
    task.coef = &coef
    nit, f = c.nit[i], c.f[i]
    while nit < c.t1:
        if c.maxiter != NULL and nit >= c.maxiter[i]:
            c.status[i] = _ST_MAXITER
            break
        memcpy(keep, x, nbytes)
        f_prev = f
        maxnorm, clip = c.max_grad_norm, c.clip_value
        if c.coefs != NULL and (c.k == 0 or _same_bits(c.rows[i * c.k + c.lr_col],
                                                       c.base.lr)):
            if maxnorm > 0:  # (a copy: the norm's factor goes into grad_scale)
                coef = c.coefs[nit - c.t0]
                task.coef = &coef
            else:
                task.coef = &c.coefs[nit - c.t0]
            aux_next = c.coefs_aux[nit - c.t0]
        else:
            h = c.base
            for j in range(c.k):
                _set_row_field(&h, &maxnorm, &clip, c.fidx[j], c.rows[i * c.k + j])
            if c.lrs != NULL:
                h.lr = c.lrs[nit - c.t0]
            if _prepare_step(c.algo, &h, nit + 1, c.aux[i], clip, c.lower != NULL, &coef,
                             &aux_next) != 0:
                return -1
            task.coef = &coef  # (the problem may have used the shared table before)
        task.grad = g if c.s == NULL else gu
        if maxnorm > 0:  # as _step_rows: the problem's own norm
            _clip_own_norm(&coef, c.sumsq_fn, task.grad, n, maxnorm, clip, ADAMC_F64, nbytes)
        c.step_fn(&task, 0, n)
        c.aux[i] = aux_next
        ok = _fit_eval(c, i, x, xu, g_new, gu, &f, &gnorm)
        if not ok and c.backtrack:
            factor = 1.0
            for k in range(_MAX_BACKTRACKS):
                _halve_step(x, <const double *>keep, n)
                factor *= 0.5
                c.nback[i] += 1
                ok = _fit_eval(c, i, x, xu, g_new, gu, &f, &gnorm)
                if ok:
                    break
            if ok and c.lr_col >= 0:
                c.rows[i * c.k + c.lr_col] *= factor
        if not ok:
            memcpy(x, keep, nbytes)  # the last finite iterate, its f and g
            f = f_prev
            c.status[i] = _ST_NONFINITE
            break
        g, g_new = g_new, g
        nit += 1
        if c.plateau != NULL and _plateau_row(c.plateau, &c.rows[i * c.k + c.lr_col],
                                              &c.pbest[i], &c.pcounts[3 * i],
                                              f) == _PLATEAU_EXHAUSTED:
            c.status[i] = _ST_CONVERGED
            break
        if _tolerances_met(c.gtol[i], c.ftol[i], c.xtol[i], gnorm, f_prev, f, x, keep, n,
                           ADAMC_F64):
            c.status[i] = _ST_CONVERGED
            break
        if c.maxfev != NULL and c.nfev[i] >= c.maxfev[i]:
            c.status[i] = _ST_MAXFEV
            break
    if g != row_g:
        memcpy(row_g, g, nbytes)
    c.nit[i], c.f[i] = nit, f
    return 0


cdef void _fit_rows_body(void *ctx, Py_ssize_t begin, Py_ssize_t end) noexcept nogil:
    cdef _RowFits *c = <_RowFits *>ctx
    cdef Py_ssize_t i
    # (a chunk's scratch: the iterate before the step, the new gradient, and the
    # scaled iterate and gradient)
    cdef double *scratch = <double *>malloc((4 * c.n + 1) * sizeof(double))
    if scratch == NULL:
        __atomic_store_n(&c.failed, 1, __ATOMIC_SEQ_CST)
        return
    for i in range(begin, end):
        if _fit_row(c, i, scratch, scratch + c.n, scratch + 2 * c.n, scratch + 3 * c.n) != 0:
            __atomic_store_n(&c.failed, 2, __ATOMIC_SEQ_CST)
            break
    free(scratch)


def _fit_rows(capsule, intptr_t first, int algo, dict hyper, int64_t t0, int64_t t1,
              bint start, lrs, x, g, f, list states, aux, lower, upper, double max_grad_norm,
              double clip_value, rows, tuple fields, gtol, ftol, xtol, maxiter, maxfev,
              nit, nfev, status, scale=None, grad_scale=None, user_lower=None,
              user_upper=None, _ReduceOnPlateau plateau=None, int lr_col=-1,
              pbest=None, pcounts=None, bint backtrack=False, nbacktrack=None):
    """Advance every running problem (``status`` -1) of a minimize_many run with a C
    objective (``capsule``: ``double (int, double *, double *, intptr_t, void *)``,
    called with index ``first + i`` for row i) until it stops or has made ``t1``
    iterations; ``t0``: the iterations made so far (every running problem's ``nit``). ``start``: evaluate every problem at x first
    (t0 = 0). ``lrs``: None, or the float64 learning rates of steps t0 + 1 .. t1.

    x, g (B, n), f, aux, gtol, ftol, xtol (B,) are float64; maxiter, maxfev (B,) int64
    or None; nit, nfev, status (B,) int64 are updated in place (status: -1 running, then
    minimize_many's codes 0, 1, 2, 3).
    ``hyper``, ``states``, ``lower``/``upper``, ``max_grad_norm``, ``clip_value``,
    ``rows`` and ``fields`` are those of _step_rows (rows writeable: column ``lr_col``
    is each problem's own lr, reduced by ``plateau`` with the problem's ``pbest`` (B,)
    and ``pcounts`` (B, 3), and backed off by ``backtrack``, whose halvings count in
    ``nbacktrack``). ``scale``, ``grad_scale``, ``user_lower``, ``user_upper``: the
    x_scale and f_scale options, as in many_loop (x holds the scaled variables). The
    problems are split across the adamc threads; the results do not depend on the
    split."""
    cdef _RowFits c
    memset(&c, 0, sizeof(c))
    cdef void *data
    c.fun = <_row_objective_fn>_capsule_function(capsule, &data)
    c.data = data
    c.first = first
    if not 0 <= algo < ADAMC_NUM_ALGOS:
        raise ValueError(f"unknown algorithm {algo}")
    if not (cnp.PyArray_Check(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2):
        raise TypeError("x must be a 2-D float64 array")
    cdef Py_ssize_t B = cnp.PyArray_DIM(<cnp.ndarray>x, 0), n = cnp.PyArray_DIM(<cnp.ndarray>x, 1)
    cdef Py_ssize_t j
    if n > 2147483647:
        raise ValueError("a C objective takes n as an int: at most 2**31 - 1 variables")
    if t1 < t0 or (start and t0 != 0):
        raise ValueError("the iterations must go forwards, and start at 0")
    c.algo, c.n, c.t0, c.t1, c.start = algo, n, t0, t1, start
    c.x = <double *>_rows_data(x, "x", cnp.NPY_DOUBLE, B, n, True)
    c.g = <double *>_rows_data(g, "g", cnp.NPY_DOUBLE, B, n, True)
    c.f = <double *>_rows_data(f, "f", cnp.NPY_DOUBLE, B, 1, True)
    if len(states) != 3:
        raise ValueError("states must list 3 arrays or None")
    for j in range(3):
        if states[j] is not None:
            c.state[j] = <double *>_rows_data(states[j], "states", cnp.NPY_DOUBLE, B, n, True)
    if (lower is None) != (upper is None):
        raise ValueError("lower and upper must both be given or both be None")
    if lower is not None:
        c.lower = <const double *>_rows_data(lower, "lower", cnp.NPY_DOUBLE, B, n, False)
        c.upper = <const double *>_rows_data(upper, "upper", cnp.NPY_DOUBLE, B, n, False)
    c.aux = <double *>_rows_data(aux, "aux", cnp.NPY_DOUBLE, B, 1, True)
    c.gtol = <const double *>_rows_data(gtol, "gtol", cnp.NPY_DOUBLE, B, 1, False)
    c.ftol = <const double *>_rows_data(ftol, "ftol", cnp.NPY_DOUBLE, B, 1, False)
    c.xtol = <const double *>_rows_data(xtol, "xtol", cnp.NPY_DOUBLE, B, 1, False)
    if maxiter is not None:
        c.maxiter = <const int64_t *>_rows_data(maxiter, "maxiter", cnp.NPY_INT64, B, 1, False)
    if maxfev is not None:
        c.maxfev = <const int64_t *>_rows_data(maxfev, "maxfev", cnp.NPY_INT64, B, 1, False)
    c.nit = <int64_t *>_rows_data(nit, "nit", cnp.NPY_INT64, B, 1, True)
    c.nfev = <int64_t *>_rows_data(nfev, "nfev", cnp.NPY_INT64, B, 1, True)
    c.status = <int64_t *>_rows_data(status, "status", cnp.NPY_INT64, B, 1, True)
    if lrs is not None:
        c.lrs = <const double *>_rows_data(lrs, "lrs", cnp.NPY_DOUBLE, t1 - t0, 1, False)
    c.k = len(fields)
    if c.k:
        if c.k > _R_COUNT or rows is None:
            raise TypeError("rows must be a C-contiguous float64 (B, len(fields)) array")
        c.rows = <double *>_rows_data(rows, "rows", cnp.NPY_DOUBLE, B, c.k, True)
        for j in range(c.k):
            c.fidx[j] = fields[j]
            if not 0 <= c.fidx[j] < _R_COUNT:
                raise ValueError(f"unknown row field {c.fidx[j]}")
    if not (-1 <= lr_col < c.k) or (plateau is not None and lr_col < 0):
        raise ValueError("lr_col must be a column of rows (with a plateau schedule)")
    c.lr_col = lr_col
    if scale is not None:
        c.s = <const double *>_rows_data(scale, "scale", cnp.NPY_DOUBLE, B, n, False)
        c.gs = <const double *>_rows_data(grad_scale, "grad_scale", cnp.NPY_DOUBLE, B, n,
                                          False)
        if user_lower is not None:
            c.ulo = <const double *>_rows_data(user_lower, "user_lower", cnp.NPY_DOUBLE, B,
                                               n, False)
            c.uhi = <const double *>_rows_data(user_upper, "user_upper", cnp.NPY_DOUBLE, B,
                                               n, False)
    if plateau is not None:
        c.plateau = &plateau.p
        c.pbest = <double *>_rows_data(pbest, "pbest", cnp.NPY_DOUBLE, B, 1, True)
        c.pcounts = <int64_t *>_rows_data(pcounts, "pcounts", cnp.NPY_INT64, B, 3, True)
    c.backtrack = backtrack
    if backtrack:
        c.nback = <int64_t *>_rows_data(nbacktrack, "nbacktrack", cnp.NPY_INT64, B, 1, True)
    _fill_hyper(&c.base, hyper)
    c.max_grad_norm, c.clip_value = max_grad_norm, clip_value
    c.step_fn = _kernels.step[algo][ADAMC_F64]
    c.sumsq_fn = _kernels.sumsq[ADAMC_F64]
    if B == 0:
        return
    for j in range(B):
        if c.status[j] == _ST_RUNNING and c.nit[j] != t0:
            raise ValueError(f"problem {j} is running at iteration {c.nit[j]}, not t0 = {t0}")
    cdef cnp.ndarray coefs, coefs_aux
    cdef adamc_hyper h
    cdef double a
    cdef int64_t s
    if (c.k == 0 or (c.k == 1 and c.lr_col == 0 and c.lrs == NULL)) and t1 > t0:
        # (every running problem has made t0 steps: they share the scalar state too;
        # a problem whose own lr is not the base one, backed off or reduced on a
        # plateau, prepares its own coefficients)
        a = c.aux[0]
        for j in range(B):
            if c.status[j] == _ST_RUNNING:
                a = c.aux[j]
                break
        coefs = np.empty((t1 - t0) * sizeof(adamc_coef), np.uint8)
        coefs_aux = np.empty(t1 - t0)
        c.coefs = <const adamc_coef *>cnp.PyArray_DATA(coefs)
        c.coefs_aux = <const double *>cnp.PyArray_DATA(coefs_aux)
        for s in range(t1 - t0):
            h = c.base
            if c.lrs != NULL:
                h.lr = c.lrs[s]
            if _prepare_step(algo, &h, t0 + s + 1, a, clip_value, c.lower != NULL,
                             <adamc_coef *>&c.coefs[s], &a) != 0:
                raise ValueError(f"unknown algorithm {algo}")
            (<double *>c.coefs_aux)[s] = a
    with nogil:
        adamc_enter()
        adamc_parallel(ADAMC_KIND_FITS, B * n * <Py_ssize_t>sizeof(double), _fit_rows_body,
                       &c, B, 1)
        adamc_leave()
    if c.failed == 1:
        raise MemoryError("no memory for the scratch of a minimize_many fit")
    if c.failed == 2:
        raise ValueError(f"unknown algorithm {algo}")
