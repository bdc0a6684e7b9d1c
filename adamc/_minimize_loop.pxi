# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# The iteration of adamc.minimize in compiled code. adamc._fitting.minimize._run checks the
# inputs, makes the first evaluation (or resumes) and builds the result; the loop
# below makes the steps, the evaluations and the stopping tests, and calls Python
# only for a Python objective, the per-iteration hooks (callback, disp, progress,
# return_all, the collective stop of options['comm']), a checkpoint when due and a
# learning rate given as a Python callable. With a C objective and none of those, the
# whole loop runs without the GIL.

from cpython.exc cimport PyErr_CheckSignals
from libc.time cimport CLOCKS_PER_SEC, clock, clock_t
import threading
from cpython.pycapsule cimport (PyCapsule_CheckExact, PyCapsule_GetContext,
                                PyCapsule_GetName, PyCapsule_GetPointer)

ctypedef double (*_objective_fn)(int n, double *x, double *g, void *data) noexcept nogil

# What the loop returns as the reason it ended: LOOP_REASONS and the enum _R_* of
# _status.pxi, which maps each to a status and a message (_LOOP_OUTCOMES).
#: How the loop evaluates the objective: a C function (no Python), fun -> (f, g),
#: fun -> f and jac -> g, or a Python evaluate() (batches, finite differences, comm).
LOOP_SOURCES = ("c", "pair", "separate", "python")

cdef enum:
    _SRC_C, _SRC_PAIR, _SRC_SEPARATE, _SRC_PYTHON

cdef enum:
    # A C objective's loop reads the clock every _BLOCK iterations and, in the main
    # thread, takes the GIL to look for signals (Ctrl-C) every _SIGNAL_CLOCKS_DIV-th
    # of a second of CPU time: taking the GIL back waits for other Python threads, so
    # not at every block. A compiled schedule's learning rates are computed _BLOCK
    # at a time (they are pure functions of the step).
    _BLOCK = 256
    _SIGNAL_CLOCKS_DIV = 20
    # The coefficients of a compiled step are prepared _COEF_BLOCK steps ahead when no
    # Python runs between the steps (_Engine.drive_prepare)
    _COEF_BLOCK = 64
    # A block of _BLOCK iterations is short under 1/_SHORT_BLOCKS_PER_SECOND s: about
    # 1 us per iteration
    _SHORT_BLOCKS_PER_SECOND = 3906


cdef _objective_fn _capsule_function(object capsule, void **data) except NULL:
    """The function and user_data of a scipy.LowLevelCallable's capsule
    (adamc._fitting.lowlevel has checked its signature)."""
    if not PyCapsule_CheckExact(capsule):
        raise TypeError("expected the capsule of a scipy.LowLevelCallable")
    cdef void *fn = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    if fn == NULL:
        raise ValueError("the LowLevelCallable holds a NULL function pointer")
    data[0] = PyCapsule_GetContext(capsule)
    return <_objective_fn>fn


def call_objective(capsule, x, g):
    """f of a C objective at x (float64, contiguous), its gradient written into g."""
    cdef void *data
    cdef _objective_fn fn = _capsule_function(capsule, &data)
    cdef cnp.ndarray a = _vector(x, "x"), b = _vector(g, "g")
    if cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE or cnp.PyArray_TYPE(b) != cnp.NPY_DOUBLE \
            or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(b) or not cnp.PyArray_ISWRITEABLE(b):
        raise TypeError("x and g must be float64 arrays of one size, g writeable")
    if cnp.PyArray_SIZE(a) > 2147483647:
        raise ValueError("a C objective takes n as an int: at most 2**31 - 1 variables")
    return fn(<int>cnp.PyArray_SIZE(a), <double *>cnp.PyArray_DATA(a),
              <double *>cnp.PyArray_DATA(b), data)


@cython.final
@cython.auto_pickle(False)
cdef class _Fit:
    """One run of the loop (see minimize_loop)."""
    cdef _Engine opt
    cdef cnp.ndarray x, keep_x, keep_g
    cdef cnp.ndarray ga, gb         # C objective: the gradient, double-buffered
    cdef object g                   # Python objective: the current gradient
    cdef object fun, jac, args, objective, evaluate, hooks, checkpoint, batches
    cdef int source, dtype_index, type_num, cur, reason, lr_pos, lr_len
    cdef bint py_step, released, schedule, has_hooks, has_batches, main_thread
    cdef bint holding               # a token kept from the last step (released loop)
    cdef bint short_iterations      # the last _BLOCK iterations took under 1 us each
    cdef clock_t block_clock
    cdef clock_t last_signals
    cdef void *xp
    cdef void *keep                 # keep_x's data: x before the step
    cdef void *keep_gp              # keep_g's data: g before the step
    cdef void *gp                   # the current gradient's data
    cdef double *gptr[2]
    cdef Py_ssize_t n, nbytes, total
    cdef double f, gtol, ftol, xtol
    cdef double gnorm               # |g|_inf (the user's variables)
    # the x_scale and f_scale options: the optimizer steps u (x above), the objective
    # gets x = s u (xup, clipped into [lop, hip]) and the optimizer s g / f_scale
    # (guptr; gu for a Python objective)
    cdef bint scaled
    cdef cnp.ndarray s_arr, gs_arr, xu_arr, lo_arr, hi_arr, gua, gub
    cdef void *sp
    cdef void *gsp                  # the gradient's scale: s / f_scale
    cdef void *xup
    cdef void *lop
    cdef void *hip
    cdef double *guptr[2]
    cdef object gu
    cdef bint backtrack             # nonfinite="backtrack"
    cdef int64_t nbacktrack         # the halvings made
    cdef _ReduceOnPlateau plateau   # the lr, when it is a plateau schedule
    cdef bint stop_on_plateau       # its exhaustion ends the run
    cdef int64_t nit, maxiter, maxfev, nfev, njev, every
    cdef _objective_fn cfun
    cdef void *data
    cdef double lrs[_BLOCK]
    cdef adamc_coef coefs[_COEF_BLOCK]  # the next steps' coefficients ...
    cdef double coef_aux[_COEF_BLOCK]   # ... and the scalar state after each
    cdef int coef_pos, coef_len
    cdef bint steady                    # coefs[0] is every remaining step's (adamc_steady)
    # without clipping by the norm, a compiled step calls the algorithm's kernel on
    # this task (what _Engine.drive_run does for one parameter, without its loops and the
    # copy of the coefficients)
    cdef bint direct
    cdef adamc_task task
    cdef adamc_chunk_fn step_fn
    cdef int step_kind

    # -- Python points ------------------------------------------------------------
    cdef int _step_python(self, object g) except -1:
        """opt.step(g), with every check step() makes (the engine's own path)."""
        return self.opt.drive_step(g)

    cdef int _take_gradient(self, object g, str source) except -1:
        if not (cnp.PyArray_CheckExact(g)
                and cnp.PyArray_TYPE(<cnp.ndarray>g) == self.type_num
                and cnp.PyArray_NDIM(<cnp.ndarray>g) == 1
                and cnp.PyArray_DIMS(<cnp.ndarray>g)[0] == self.n
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>g)):
            g = self.objective.gradient(g, source)
        self.g = g
        self.gp = cnp.PyArray_DATA(<cnp.ndarray>g)
        return 0

    cdef double _scalar(self, object value) except? -1.0:
        if type(value) is float:
            return PyFloat_AS_DOUBLE(value)
        return PyFloat_AS_DOUBLE(self.objective.scalar(value))

    cdef int _evaluate_python(self) except -1:
        """Evaluate a Python objective at x: self.f, self.g, self.gp, the counts."""
        cdef object out, fo, go
        if self.source == _SRC_PAIR:
            out = self.fun(*self.args)
            self.nfev += 1
            self.njev += 1
            if type(out) is tuple and len(<tuple>out) == 2:
                fo, go = (<tuple>out)[0], (<tuple>out)[1]
            else:
                fo, go = self.objective.pair(out)
            self.f = self._scalar(fo)
            self._take_gradient(go, "fun")
        elif self.source == _SRC_SEPARATE:
            self.f = self._scalar(self.fun(*self.args))
            self.nfev += 1
            go = self.jac(*self.args)
            self.njev += 1
            self._take_gradient(go, "jac")
        else:
            fo, go = self.evaluate(False)
            self.f = fo
            self.g = go
            self.gp = cnp.PyArray_DATA(<cnp.ndarray>go)
            self.nfev = self.objective.nfev
        return 0

    cdef object _gradient_object(self):
        """The gradient at the iterate, in the user's variables."""
        if self.source == _SRC_C:
            return self.ga if self.cur == 0 else self.gb
        return self.g

    cdef object _step_gradient(self):
        """The gradient the optimizer steps with (s g when scaled)."""
        if not self.scaled:
            return self._gradient_object()
        if self.source == _SRC_C:
            return self.gua if self.cur == 0 else self.gub
        return self.gu

    cdef void *_user_gp(self) noexcept:
        return cnp.PyArray_DATA(<cnp.ndarray>self.g) if self.scaled else self.gp

    cdef int _sync_counts(self) except -1:
        if self.source != _SRC_PYTHON:
            self.objective.nfev = self.nfev
            self.objective.njev = self.njev
        return 0

    cdef int _refill_lrs(self) except -1:
        """The next block of a compiled schedule's learning rates; stops before the
        first that is not finite (the engine's own path then raises its error)."""
        cdef Schedule fn = <Schedule>self.opt.drive_schedule()
        cdef int64_t first = self.opt.drive_group().step + 1
        cdef int k
        cdef double lr
        self.lr_pos = self.lr_len = 0
        for k in range(_BLOCK):
            lr = fn._at(first + k)
            if not isfinite(lr):
                break
            self.lrs[k] = lr
            self.lr_len = k + 1
        return 0

    # -- the loop -----------------------------------------------------------------
    cdef inline void _drop_token(self) noexcept nogil:
        """Give back a token kept from the last step (before taking the GIL, and at
        the end of the loop)."""
        if self.holding:
            self.holding = False
            adamc_leave()

    cdef int _step_c(self) except -1 nogil:
        """One step through the engine's compiled part (a C objective: the gradient
        is the loop's own buffer; hyperparameters validated before the loop)."""
        cdef Group *grp = self.opt.drive_group()
        if self.schedule and self.lr_pos == self.lr_len:
            self._drop_token()
            with gil:
                self._refill_lrs()
            if self.lr_len == 0:
                with gil:
                    self._step_python(self._gradient_object())  # raises the bad lr
                return 0
        if self.coef_pos == self.coef_len:
            self.coef_pos = 0
            if not self.released:
                # (Python runs between the steps: prepared one step at a time, as the
                # engine's own path does)
                self.coef_len = 1
            elif self.schedule:
                self.coef_len = min(_COEF_BLOCK, self.lr_len - self.lr_pos)
            elif adamc_steady(self.opt.drive_algorithm(), &grp.hyper, grp.step + 1, grp.aux):
                # every later step has these coefficients: prepared once for the rest
                # of the loop (the position never reaches the length)
                self.coef_len = 1
                self.steady = True
            else:
                self.coef_len = _COEF_BLOCK
            self.opt.drive_prepare(&self.lrs[self.lr_pos] if self.schedule else NULL,
                                   self.coef_len, self.coefs, self.coef_aux)
        if self.schedule:
            grp.hyper.lr = self.lrs[self.lr_pos]
            self.lr_pos += 1
        grp.aux_next = self.coef_aux[self.coef_pos]
        if self.direct:
            self.task.coef = &self.coefs[self.coef_pos]
            self.task.grad = self.gp
            self.opt.drive_begin(NULL)
        else:
            grp.coef = self.coefs[self.coef_pos]
            self.opt.drive_begin(self.gp)
        self.coef_pos += not self.steady
        if self.released:
            # a token kept from the last step when that kept nobody out (see
            # adamc_may_keep_token): no atomic operations per step then
            if not self.holding:
                adamc_enter()
                self.holding = True
        else:
            with gil:
                _enter_holding_gil()
        if self.direct:
            adamc_run(self.step_fn, &self.task, self.n, self.step_kind, self.nbytes)
        else:
            self.opt.drive_run(self.total)
        # (kept only while iterations are short: the token is then held through the
        # objective's call, and a slow objective would keep another caller's workers
        # out of its parallel updates for that long)
        if not (self.released and self.short_iterations and adamc_may_keep_token()):
            self.holding = False
            adamc_leave()
        self.opt.drive_end()
        return 0

    # -- scaled variables, backtracking, the plateau schedule ------------------------
    cdef bint _try_c(self, int buf) noexcept nogil:
        """Evaluate the C objective at the iterate (at x = s u when scaled) into gradient
        buffer buf (and its scaled copy); self.f and self.gnorm (|g|_inf in the user's
        variables). Whether f and the gradients are finite."""
        cdef double *arg = <double *>self.xp
        if self.scaled:
            _scaled_x(<double *>self.xup, <const double *>self.sp, <const double *>self.xp,
                      <const double *>self.lop, <const double *>self.hip, self.n)
            arg = <double *>self.xup
        self.f = self.cfun(<int>self.n, arg, self.gptr[buf], self.data)
        self.nfev += 1
        self.njev += 1
        self.gnorm = _max_abs(<const double *>self.gptr[buf], self.n)
        if not (isfinite(self.f) and isfinite(self.gnorm)):
            return False
        if self.scaled:  # (s g / f_scale may overflow where g does not)
            _scaled_g(self.guptr[buf], <const double *>self.gsp, self.gptr[buf], self.n)
            return isfinite(_max_abs(<const double *>self.guptr[buf], self.n))
        return True

    cdef bint _try_python(self) except -1:
        """_try_c for a Python objective (with the GIL): self.f, self.g (the user's
        variables), self.gu (scaled) and self.gp (the one the optimizer steps with)."""
        if self.scaled:
            _scaled_x_any(self.xup, self.sp, self.xp, self.lop, self.hip, self.n,
                          self.dtype_index)
        self._evaluate_python()
        self.gnorm = _norm_inf(self.gp, self.n, self.dtype_index)
        if not (isfinite(self.f) and isfinite(self.gnorm)):
            return False
        if self.scaled:
            self.gu = np.multiply(self.g, self.gs_arr)
            self.gp = cnp.PyArray_DATA(<cnp.ndarray>self.gu)
            return isfinite(_norm_inf(self.gp, self.n, self.dtype_index))
        return True

    cdef int _back_off(self, double factor) except -1:
        """After backtracking: later steps use the learning rate times factor (a
        number is changed in the param group, a plateau schedule's current rate; any
        other schedule is left alone: only this step was shortened)."""
        cdef _Engine eng = self.opt
        group = eng.param_groups[0]
        lr = group["lr"]
        if type(lr) is _ReduceOnPlateau:
            (<_ReduceOnPlateau>lr).p.lr *= factor
        elif not callable(lr):
            group["lr"] = float(lr) * factor
            eng.drive_refresh()
        else:
            return 0
        self._lr_changed()
        return 0

    cdef void _lr_changed(self) noexcept nogil:
        """The learning rate changed (a plateau, a back-off): the prepared rates and
        coefficients of the compiled step are stale."""
        self.lr_pos = self.lr_len
        self.coef_pos = self.coef_len
        self.steady = False

    # -- the loop -----------------------------------------------------------------
    cdef int run(self) except -1 nogil:
        cdef double f_prev, factor, scale, a, b
        cdef int next_buf, k
        cdef bint stopped, ok
        cdef int64_t since_signals = 0
        cdef clock_t now
        while True:
            if self.maxiter >= 0 and self.nit >= self.maxiter:
                self.reason = _R_MAXITER
                return 0
            memcpy(self.keep, self.xp, self.nbytes)
            f_prev = self.f
            if self.source == _SRC_C:
                if self.py_step:
                    with gil:
                        self._step_python(self._step_gradient())
                else:
                    self._step_c()
                next_buf = 1 - self.cur
                ok = self._try_c(next_buf)
                if not ok and self.backtrack:
                    factor = 1.0
                    for k in range(_MAX_BACKTRACKS):
                        _halve_step(<double *>self.xp, <const double *>self.keep, self.n)
                        factor *= 0.5
                        self.nbacktrack += 1
                        ok = self._try_c(next_buf)
                        if ok:
                            break
                    if ok:
                        self._drop_token()
                        with gil:
                            self._back_off(factor)
                if not ok:
                    memcpy(self.xp, self.keep, self.nbytes)
                    self.f = f_prev
                    self.reason = _R_NONFINITE
                    return 0
                self.cur = next_buf
                self.gp = self.guptr[next_buf] if self.scaled else self.gptr[next_buf]
                since_signals += 1
                if since_signals == _BLOCK:
                    since_signals = 0
                    now = clock()
                    # (process CPU time: other busy threads make a block look slower,
                    # which only gives the token back more often)
                    self.short_iterations = \
                        (now - self.block_clock) <= CLOCKS_PER_SEC // _SHORT_BLOCKS_PER_SECOND
                    self.block_clock = now
                    if self.main_thread and \
                            now - self.last_signals > CLOCKS_PER_SEC // _SIGNAL_CLOCKS_DIV:
                        self._drop_token()
                        with gil:
                            PyErr_CheckSignals()
                        self.last_signals = clock()
            else:
                with gil:
                    memcpy(self.keep_gp, self._user_gp(), self.nbytes)
                    keep_gu = self.gu
                    self._step_python(self._step_gradient())
                    ok = self._try_python()
                    if not ok and self.backtrack:
                        factor = 1.0
                        for k in range(_MAX_BACKTRACKS):
                            _halve_step_any(self.xp, self.keep, self.n, self.dtype_index)
                            factor *= 0.5
                            self.nbacktrack += 1
                            ok = self._try_python()
                            if ok:
                                break
                        if ok:
                            self._back_off(factor)
                    if not ok:
                        memcpy(self.xp, self.keep, self.nbytes)
                        self.f = f_prev
                        self.g = self.keep_g
                        self.gu = keep_gu
                        self.gp = self.keep_gp if not self.scaled else \
                            cnp.PyArray_DATA(<cnp.ndarray>keep_gu)
                        self.reason = _R_NONFINITE
                        return 0
            self.nit += 1
            if self.plateau is not None:
                k = _plateau_step(&self.plateau.p, self.f)
                if k == _PLATEAU_REDUCED:
                    self._lr_changed()
                elif k == _PLATEAU_EXHAUSTED and self.stop_on_plateau:
                    self.reason = _R_PLATEAU
                    return 0
            if self.has_hooks:
                with gil:
                    stopped = self.hooks(self.nit, self.f, self.gnorm)
                if stopped:
                    self.reason = _R_CALLBACK
                    return 0
            if self.has_batches:
                with gil:
                    stopped = self.batches.exhausted
                if stopped:
                    self.reason = _R_BATCHES
                    return 0
            if self.gtol > 0 and self.gnorm <= self.gtol:
                self.reason = _R_GTOL
                return 0
            if self.ftol > 0:
                a, b = fabs(f_prev), fabs(self.f)
                scale = a if a > b else b
                if scale < 1.0:
                    scale = 1.0
                if fabs(f_prev - self.f) <= self.ftol * scale:
                    self.reason = _R_FTOL
                    return 0
            if self.xtol > 0:
                scale = _norm_inf(self.xp, self.n, self.dtype_index)
                if scale < 1.0:
                    scale = 1.0
                if _diff_inf(self.xp, self.keep, self.n, self.dtype_index) <= self.xtol * scale:
                    self.reason = _R_XTOL
                    return 0
            if self.maxfev >= 0 and self.nfev >= self.maxfev:
                self.reason = _R_MAXFEV
                return 0
            if self.every > 0 and self.nit % self.every == 0:
                self._drop_token()
                with gil:
                    self._sync_counts()
                    self.checkpoint(self.nit, self.f, self._gradient_object())


def minimize_loop(_Engine opt, x, double f, g, int64_t nit, *, str source, objective,
                  evaluate=None, capsule=None, hooks=None, checkpoint=None,
                  int64_t checkpoint_every=0, batches=None, maxiter=None, maxfev=None,
                  double gtol=0.0, double ftol=0.0, double xtol=0.0, scale=None,
                  grad_scale=None, x_user=None, lower=None, upper=None, bint backtrack=False,
                  bint stop_on_plateau=False):
    """The iterations of adamc.minimize from x (f, g evaluated there, nit done) until a
    stopping rule holds; returns ``(reason, nit, f, g, nbacktrack)``, reason in
    LOOP_REASONS and (f, g) evaluated at the returned x.

    With ``scale`` (an array like x), opt steps the scaled variables u (``x``) and the
    objective sees ``x_user = clip(scale * u, lower, upper)`` (``x_user`` is
    ``objective.x`` for a Python objective); ``g`` and the returned gradient are in
    the user's variables, the optimizer gets ``grad_scale * g`` (gtol tests g).
    ``backtrack``: where f or g is not finite after a step, halve the step (up to
    _MAX_BACKTRACKS times) and continue, the learning rate times the factor found; else
    the run ends at the last finite iterate. When the lr of opt's group is a
    reduce_on_plateau schedule, it is stepped with f after every iteration;
    ``stop_on_plateau``: the run ends (reason "plateau") when a reduction is due with
    the rate already at its min_lr.

    opt steps x in place. ``source`` (LOOP_SOURCES) says how the objective is
    evaluated: ``"c"`` calls the C function of ``capsule``; ``"pair"`` and
    ``"separate"`` call ``objective.fun`` (and ``objective.jac``) on
    ``objective.view`` and ``objective.args``, with ``objective.pair``,
    ``objective.scalar`` and ``objective.gradient`` for what is not a float and a
    contiguous array of x's dtype; ``"python"`` calls ``evaluate(False) -> (f, g)``,
    which counts in ``objective.nfev``. The counts are written back to
    ``objective.nfev`` and ``objective.njev`` before each checkpoint and at the end.
    ``hooks(nit, f, gnorm) -> stopped`` runs after every iteration (None: none);
    ``checkpoint(nit, f, g)`` every ``checkpoint_every`` iterations (0: never), while
    no stopping rule holds; ``batches.exhausted`` is read after every iteration.
    """
    cdef _Fit fit = _Fit.__new__(_Fit)
    cdef int k
    cdef const Slot *slot
    cdef cnp.ndarray xa = _vector(x, "x")
    if not cnp.PyArray_ISWRITEABLE(xa):
        raise ValueError("x must be writeable")
    if source not in LOOP_SOURCES:
        raise ValueError(f"source must be one of {LOOP_SOURCES}, got {source!r}")
    fit.opt, fit.x, fit.objective = opt, xa, objective
    fit.source = LOOP_SOURCES.index(source)
    fit.type_num = cnp.PyArray_TYPE(xa)
    fit.dtype_index = ADAMC_F32 if fit.type_num == cnp.NPY_FLOAT else ADAMC_F64
    fit.n, fit.nbytes = cnp.PyArray_SIZE(xa), cnp.PyArray_NBYTES(xa)
    fit.xp = cnp.PyArray_DATA(xa)
    fit.keep_x = np.empty_like(xa)
    fit.keep = cnp.PyArray_DATA(fit.keep_x)
    fit.f, fit.nit = f, nit
    fit.maxiter = -1 if maxiter is None else maxiter
    fit.maxfev = -1 if maxfev is None else maxfev
    fit.gtol, fit.ftol, fit.xtol = gtol, ftol, xtol
    fit.every = checkpoint_every if checkpoint is not None else 0
    fit.hooks, fit.checkpoint, fit.batches = hooks, checkpoint, batches
    fit.has_hooks, fit.has_batches = hooks is not None, batches is not None
    fit.nfev, fit.njev = objective.nfev, objective.njev
    fit.evaluate = evaluate
    cdef cnp.ndarray ga = _vector(g, "g")
    if cnp.PyArray_TYPE(ga) != fit.type_num or cnp.PyArray_SIZE(ga) != fit.n:
        raise ValueError("g must have the dtype and size of x")
    fit.py_step = True
    if fit.source == _SRC_C:
        if fit.type_num != cnp.NPY_DOUBLE:
            raise TypeError("a C objective works in float64")
        if fit.n > 2147483647:
            raise ValueError("a C objective takes n as an int: at most 2**31 - 1 variables")
        if fit.has_batches or evaluate is not None:
            raise ValueError("a C objective takes no batches")
        fit.cfun = _capsule_function(capsule, &fit.data)
        fit.ga = np.array(ga, dtype=np.float64, copy=True, order="C")
        fit.gb = np.empty_like(fit.ga)
        fit.gptr[0] = <double *>cnp.PyArray_DATA(fit.ga)
        fit.gptr[1] = <double *>cnp.PyArray_DATA(fit.gb)
        fit.cur = 0
        fit.gp = fit.gptr[0]
        fit.py_step = not _compiled_step_ok(opt, fit)
        fit.direct = not fit.py_step and not opt.drive_clips_norm()
        if fit.direct:
            slot = opt.drive_slot()
            fit.task.param = slot.data
            for k in range(3):
                fit.task.state[k] = slot.state[k]
            fit.task.lower, fit.task.upper = slot.lower, slot.upper
            fit.task.average = fit.task.anchor = NULL
            fit.step_fn = _kernels.step[opt.drive_algorithm()][ADAMC_F64]
            fit.step_kind = ADAMC_KIND_STEP(opt.drive_algorithm(), ADAMC_F64)
    else:
        fit.g, fit.gp = ga, cnp.PyArray_DATA(ga)
        fit.keep_g = np.empty_like(xa)
        fit.keep_gp = cnp.PyArray_DATA(fit.keep_g)
        if fit.source == _SRC_PYTHON:
            if evaluate is None:
                raise ValueError("source 'python' needs evaluate")
        else:
            fit.fun = objective.fun
            fit.args = (objective.view,) + tuple(objective.args)
            if fit.source == _SRC_SEPARATE:
                fit.jac = objective.jac
    fit.scaled = scale is not None
    if fit.scaled:
        fit.s_arr, fit.xu_arr = _vector(scale, "scale"), _vector(x_user, "x_user")
        fit.gs_arr = _vector(grad_scale, "grad_scale")
        for a in (fit.s_arr, fit.gs_arr, fit.xu_arr):
            if cnp.PyArray_TYPE(<cnp.ndarray>a) != fit.type_num or \
                    cnp.PyArray_SIZE(<cnp.ndarray>a) != fit.n:
                raise ValueError("scale, grad_scale and x_user must be arrays like x")
        if not cnp.PyArray_ISWRITEABLE(fit.xu_arr):
            raise ValueError("x_user must be writeable")
        fit.sp, fit.xup = cnp.PyArray_DATA(fit.s_arr), cnp.PyArray_DATA(fit.xu_arr)
        fit.gsp = cnp.PyArray_DATA(fit.gs_arr)
        if (lower is None) != (upper is None):
            raise ValueError("lower and upper must both be given or both be None")
        if lower is not None:
            fit.lo_arr, fit.hi_arr = _vector(lower, "lower"), _vector(upper, "upper")
            if cnp.PyArray_TYPE(fit.lo_arr) != fit.type_num or \
                    cnp.PyArray_TYPE(fit.hi_arr) != fit.type_num or \
                    cnp.PyArray_SIZE(fit.lo_arr) != fit.n or cnp.PyArray_SIZE(fit.hi_arr) != fit.n:
                raise ValueError("lower and upper must be arrays like x")
            fit.lop, fit.hip = cnp.PyArray_DATA(fit.lo_arr), cnp.PyArray_DATA(fit.hi_arr)
        if fit.source == _SRC_C:
            fit.gua, fit.gub = np.multiply(fit.ga, fit.gs_arr), np.empty_like(fit.ga)
            fit.guptr[0] = <double *>cnp.PyArray_DATA(fit.gua)
            fit.guptr[1] = <double *>cnp.PyArray_DATA(fit.gub)
            fit.gp = fit.guptr[0]
        else:
            fit.gu = np.multiply(fit.g, fit.gs_arr)
            fit.gp = cnp.PyArray_DATA(<cnp.ndarray>fit.gu)
    fit.backtrack = backtrack
    fit.nbacktrack = 0
    lr = (<dict>opt.param_groups[0]).get("lr") if len(opt.param_groups) == 1 else None
    fit.plateau = lr if type(lr) is _ReduceOnPlateau else None
    fit.stop_on_plateau = stop_on_plateau
    fit.released = fit.source == _SRC_C and not fit.py_step and hooks is None
    fit.main_thread = threading.current_thread() is threading.main_thread()
    fit.last_signals = fit.block_clock = clock()
    fit.short_iterations = False  # (until a block has been timed)
    fit.coef_pos = fit.coef_len = 0
    fit.steady = False
    if fit.released:
        try:
            with nogil:
                fit.run()
        finally:
            fit._drop_token()
    else:
        fit.run()
    fit._sync_counts()
    return LOOP_REASONS[fit.reason], fit.nit, fit.f, fit._gradient_object(), fit.nbacktrack


cdef bint _compiled_step_ok(_Engine opt, _Fit fit) except -1:
    """Whether the loop may step opt without Python: one parameter (x itself) in one
    group, the default non-finite policy, and a learning rate that is a number or a
    compiled schedule; the plain engine without weight averaging. Validates the group
    then, with every check step() makes."""
    if not opt.drive_compiled_ok(fit.xp):
        return False
    if isinstance(opt, (_ProdigyEngine, _ScheduleFreeEngine)):
        return False  # their steps do more than the plain engine's compiled part
    groups = opt.param_groups
    if type(groups) is not list or len(<list>groups) != 1 or type(groups[0]) is not dict:
        return False
    lr = (<dict>groups[0]).get("lr")
    if not (type(lr) in _COMPILED_SCHEDULES or PyFloat_Check(lr) or PyLong_Check(lr)
            or isinstance(lr, (np.floating, np.integer))):
        return False  # a Python callable: called at every step, with the GIL
    opt.drive_validate(fit.ga)  # the checks of step(), once
    fit.schedule = opt.drive_schedule() is not None
    fit.lr_pos = fit.lr_len = 0
    fit.total = opt.drive_total_bytes()
    return True


def _call_objective_repeatedly(capsule, x, g, int64_t times):
    """Call a C objective ``times`` times at x from C, without the GIL, and return
    the last f: benchmarks/bench_minimize.py times the objective's own cost so (the
    function pointer is opaque to the compiler: every call is made)."""
    cdef void *data
    cdef _objective_fn fn = _capsule_function(capsule, &data)
    cdef cnp.ndarray a = _vector(x, "x"), b = _vector(g, "g")
    if cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE or cnp.PyArray_TYPE(b) != cnp.NPY_DOUBLE \
            or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(b) or not cnp.PyArray_ISWRITEABLE(b):
        raise TypeError("x and g must be float64 arrays of one size, g writeable")
    cdef int n = <int>cnp.PyArray_SIZE(a)
    cdef double *xp = <double *>cnp.PyArray_DATA(a)
    cdef double *gp = <double *>cnp.PyArray_DATA(b)
    cdef double f = 0.0
    cdef int64_t k
    with nogil:
        for k in range(times):
            f = fn(n, xp, gp, data)
    return f
