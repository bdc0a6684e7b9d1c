# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Prodigy (Mishchenko & Defazio, 2024), as the prodigyopt package 1.1.2: Adam whose
# step size d * lr is adapted from two sums over every parameter,
#     numerator   = beta3 * numerator + (d / d0) * d lr * sum g (p0 - p)
#     denominator = sum |s|,   s = beta3 * s + (d / d0) * d lr * g
# and d_hat = d_coef * numerator / denominator. A step is two passes over memory: the
# statistics pass (reads only: the two sums, in double, in partitions that depend on
# the sizes only) and, once the estimate of d is made, the update pass (the moments,
# s and p together). Nothing is written before the sums are known, so a failure
# between the passes (e.g. of the reducer of adamc.distributed) changes nothing.

cdef struct ProdigyScalars:
    double d, d_max, d_numerator, d_hat, d_denom
    int64_t k                 # steps that moved the parameters (bias correction)


cdef inline double _py_max(double a, double b) noexcept nogil:
    # Python's max(a, b): b only when b > a (a NaN b leaves a)
    return b if b > a else a


cdef inline double _py_min(double a, double b) noexcept nogil:
    return b if b < a else a


cdef double _prodigy_dlr(const adamc_hyper *h, const ProdigyScalars *st,
                         double lr) noexcept nogil:
    """d * lr * bias correction (prodigyopt's dlr) before this step's estimate."""
    cdef double bc = 1.0
    if h.bias_correction:
        bc = sqrt(adamc_bias_correction(h.beta2, st.k + 1)) / \
            adamc_bias_correction(h.beta1, st.k + 1)
    return st.d * lr * bc


cdef inline double _prodigy_beta3(const adamc_hyper *h) noexcept nogil:
    return sqrt(h.beta2) if h.beta3 < 0 else h.beta3


cdef void _prodigy_stats_coef(const adamc_hyper *h, const ProdigyScalars *st, double dlr,
                              adamc_coef *c) noexcept nogil:
    """The coefficients of the moments and of s (the statistics pass and the update
    pass share them). A group with lr 0 keeps its state (prodigyopt skips it)."""
    cdef double d = st.d
    if h.lr == 0.0:
        c.u.prodigy.beta1 = c.u.prodigy.beta2 = c.u.prodigy.beta3 = 1.0
        c.u.prodigy.m_gain = c.u.prodigy.v_gain = c.u.prodigy.s_gain = 0.0
        return
    c.u.prodigy.beta1 = h.beta1
    c.u.prodigy.m_gain = d * (1.0 - h.beta1)
    c.u.prodigy.beta2 = h.beta2
    c.u.prodigy.v_gain = d * d * (1.0 - h.beta2)
    c.u.prodigy.beta3 = _prodigy_beta3(h)
    c.u.prodigy.s_gain = (d / h.d0) * d if h.safeguard_warmup else (d / h.d0) * dlr


cdef bint _prodigy_estimate(const adamc_hyper *h, const ProdigyScalars *st, double delta,
                            double denom, ProdigyScalars *out) noexcept nogil:
    """The new estimate of d from the global sums; False (and out = st) when the
    denominator is 0: prodigyopt then returns before moving the parameters."""
    out[0] = st[0]
    if denom == 0.0:
        return False
    cdef double num = st.d_numerator * _prodigy_beta3(h) + delta
    cdef double d = st.d, d_hat = h.d_coef * num / denom
    if d == h.d0:
        d = _py_max(d, d_hat)
    cdef double d_max = _py_max(st.d_max, d_hat)
    out.d = _py_min(d_max, d * h.growth_rate)
    out.d_max = d_max
    out.d_numerator = num
    out.d_hat = d_hat
    out.d_denom = denom
    out.k = st.k + 1
    return True


cdef void _prodigy_update_coef(const adamc_hyper *h, double dlr, double d_new, bint moved,
                               adamc_coef *c) noexcept nogil:
    """The update pass's step: p -= dlr m / (sqrt(v) + d eps) (beta1 > 0) or
    p -= dlr d g / (sqrt(v) + d eps) (beta1 = 0), after the decoupled decay
    p -= weight_decay dlr p; no move when the estimate was skipped."""
    c.u.prodigy.eps_hat = d_new * h.eps
    c.u.prodigy.step_size = dlr if moved else 0.0
    c.u.prodigy.grad_step = dlr * d_new if moved else 0.0
    c.decay = 1.0
    c.u.prodigy.wd_step = 0.0
    if moved and h.decoupled and h.weight_decay != 0.0:
        c.u.prodigy.wd_step = h.weight_decay * dlr
        c.decay = 1.0 - c.u.prodigy.wd_step  # (selects the variant with the decay)


cdef str _prodigy_mismatch(const adamc_hyper *a, const adamc_hyper *b):
    """The first of the optimizer-wide hyperparameters in which two groups differ."""
    if a.beta1 != b.beta1 or a.beta2 != b.beta2:
        return "betas"
    if a.beta3 != b.beta3:
        return "beta3"
    if a.d0 != b.d0:
        return "d0"
    if a.d_coef != b.d_coef:
        return "d_coef"
    if a.growth_rate != b.growth_rate:
        return "growth_rate"
    if a.bias_correction != b.bias_correction:
        return "use_bias_correction"
    if a.safeguard_warmup != b.safeguard_warmup:
        return "safeguard_warmup"
    if a.decoupled != b.decoupled:
        return "decouple"
    return None


cdef int _prodigy_scalars(object d, object d_max, object d_numerator, str where,
                          ProdigyScalars *out) except -1:
    """Check d, d_max and d_numerator (numbers; the names in messages prefixed with
    ``where``) into out."""
    cdef double x, y, z
    x = PyFloat_AS_DOUBLE(d) if PyFloat_Check(d) else _real(d, where + "d")
    y = PyFloat_AS_DOUBLE(d_max) if PyFloat_Check(d_max) else _real(d_max, where + "d_max")
    z = PyFloat_AS_DOUBLE(d_numerator) if PyFloat_Check(d_numerator) else \
        _real(d_numerator, where + "d_numerator")
    if not (x > 0 and isfinite(x)):
        raise ValueError(f"{where}d must be a finite number > 0, got {x!r}")
    if not (y >= x and isfinite(y)):
        raise ValueError(f"{where}d_max must be a finite number >= d, got {y!r}")
    if not isfinite(z):
        raise ValueError(f"{where}d_numerator must be finite, got {z!r}")
    out.d, out.d_max, out.d_numerator = x, y, z
    return 0


def _check_prodigy_scalars(d, d_max, d_numerator, k, d0, where=""):
    """Validated optimizer-wide scalar state of Prodigy: (d, d_max, d_numerator, k)."""
    cdef ProdigyScalars st
    _prodigy_scalars(d, d_max, d_numerator, where, &st)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= 2**62:
        raise ValueError(f"{where}k must be an int in [0, 2**62], got {k!r}")
    return st.d, st.d_max, st.d_numerator, int(k)


@cython.auto_pickle(False)
cdef class _ProdigyEngine(_Engine):
    """The engine of :class:`adamc.Prodigy`: the optimizer-wide estimate of d, the
    statistics pass before the update pass, and a hook for reducing the two sums
    across processes (``_step_with_reducer``)."""
    cdef ProdigyScalars _pd
    cdef object _reducer        # callable (delta, denom) -> (delta, denom), or None
    cdef void **_anchor         # per param: p0's data
    cdef object _grid           # (layout, acc) of a step over pieces, or None
    cdef const int64_t *_grid_layout
    cdef double *_grid_acc
    cdef Py_ssize_t _grid_len

    def __cinit__(self):
        self._pd.d = self._pd.d_max = 1e-6
        self._pd.d_numerator = self._pd.d_hat = self._pd.d_denom = 0.0
        self._pd.k = 0

    def __dealloc__(self):
        PyMem_Free(self._anchor)

    def _bind(self, int algo, tuple keys, list params, list states, list group_index,
              lower=None, upper=None, validate=None, tuple state_names=(), averages=None):
        """_Engine._bind; ``states[i][3]`` is p0, the anchor of the statistics."""
        cdef Py_ssize_t i, n = len(params)
        cdef void **anchor = <void **>PyMem_Calloc(max(n, 1), sizeof(void *))
        if anchor == NULL:
            raise MemoryError("cannot allocate the optimizer's bookkeeping")
        for i in range(n):
            if len(states[i]) < 4 or states[i][3] is None:
                PyMem_Free(anchor)
                raise ValueError("Prodigy needs the p0 state of every parameter")
            anchor[i] = cnp.PyArray_DATA(<cnp.ndarray>states[i][3])
        try:
            _Engine._bind(self, algo, keys, params, states, group_index, lower, upper,
                          validate, state_names, averages)
        except BaseException:
            PyMem_Free(anchor)
            raise
        PyMem_Free(self._anchor)
        self._anchor = anchor

    def _prodigy_state(self):
        """The optimizer-wide scalars: d, d_max, d_numerator, k (steps that moved the
        parameters), and d_hat, d_denom of the last estimate."""
        return {"d": self._pd.d, "d_max": self._pd.d_max, "d_numerator": self._pd.d_numerator,
                "k": self._pd.k, "d_hat": self._pd.d_hat, "d_denom": self._pd.d_denom}

    def _set_prodigy_state(self, double d, double d_max, double d_numerator, int64_t k,
                           double d_hat=0.0, double d_denom=0.0):
        """Set the scalars (values already checked by _check_prodigy_scalars)."""
        self._check_idle()
        self._pd.d, self._pd.d_max, self._pd.d_numerator, self._pd.k = d, d_max, d_numerator, k
        self._pd.d_hat, self._pd.d_denom = d_hat, d_denom
        self._publish()

    cdef int _publish(self) except -1:
        """Mirror the scalars into every param group, where prodigyopt keeps them
        (``param_groups[0]["d"]`` is the adapted step size, for logging)."""
        st = self._prodigy_state()
        for group in self.param_groups:
            if type(group) is dict:
                (<dict>group).update(st)
        return 0

    def _step_with_reducer(self, grads, reducer, sumsq=None, grid=None):
        """step() with the two sums of the statistics pass (sum of (d/d0) dlr g (p0 -
        p) and of |s|, over this process's parameters) passed through
        ``reducer(delta, denom) -> (delta, denom)`` before the estimate of d: the hook
        through which adamc.distributed makes them global (each rank holding a shard
        of the parameters). It is called once per step, with the GIL, after every
        check and before anything is written; if it raises, nothing has changed
        (except p0 at the first step, which is then set again). ``sumsq``: the global
        sum of squares for max_grad_norm, as for ``_step_reduced``.

        ``grid = (layout, acc)``: this optimizer's parameters are pieces of larger
        arrays (the shards of adamc.distributed), each cut at the boundaries of the
        larger array's partitions (:func:`sum_partitions`). ``layout`` (int64, three
        entries per parameter): the size of the whole array, the offset of the piece
        in it, and where the piece's first partition goes in ``acc``. The two sums of
        each partition of the piece (sum g (p0 - p) and sum |s|, as one process sums
        them) are written to ``acc[2 j]`` and ``acc[2 j + 1]`` (acc is zeroed
        first); the reducer is then called as ``reducer(acc, factor)`` and returns
        the two totals, delta = sum over the arrays of factor * (the array's first
        sum), denom = sum of the second sums, added as one process adds them."""
        if not callable(reducer):
            raise TypeError("reducer must be callable")
        cdef Py_ssize_t i, n, offset, index, size, k, parts, inside, slots
        cdef cnp.ndarray layout_arr, acc_arr
        cdef const int64_t *lay
        if grid is not None:
            layout, acc = grid
            if not (cnp.PyArray_Check(layout) and cnp.PyArray_TYPE(<cnp.ndarray>layout) == cnp.NPY_INT64
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>layout)):
                raise TypeError("grid: layout must be a C-contiguous int64 ndarray")
            if not (cnp.PyArray_Check(acc) and cnp.PyArray_TYPE(<cnp.ndarray>acc) == cnp.NPY_DOUBLE
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>acc)
                    and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>acc)):
                raise TypeError("grid: acc must be a writeable C-contiguous float64 ndarray")
            layout_arr, acc_arr = <cnp.ndarray>layout, <cnp.ndarray>acc
            if cnp.PyArray_SIZE(layout_arr) != 3 * self._nparams:
                raise ValueError(f"grid: layout must have {3 * self._nparams} entries "
                                 f"(3 per parameter)")
            lay = <const int64_t *>cnp.PyArray_DATA(layout_arr)
            slots = cnp.PyArray_SIZE(acc_arr) // 2
            for i in range(self._nparams):
                size = self._slots[i].size
                n, offset, index = lay[3 * i], lay[3 * i + 1], lay[3 * i + 2]
                if size == 0:
                    continue
                if offset < 0 or n < offset + size or index < 0:
                    raise ValueError(f"grid: parameter {i} (size {size}) is not a piece "
                                     f"of an array of {n} elements at offset {offset}")
                parts = _sum_parts(n)
                inside = 0
                for k in range(parts):
                    if n * k // parts >= offset and n * (k + 1) // parts <= offset + size:
                        inside += 1
                if index + inside > slots:
                    raise ValueError("grid: acc is too short for the partitions of the "
                                     "parameters")
            self._grid = (layout_arr, acc_arr)
            self._grid_layout = lay
            self._grid_acc = <double *>cnp.PyArray_DATA(acc_arr)
            self._grid_len = cnp.PyArray_SIZE(acc_arr)
        self._reducer = reducer
        try:
            if sumsq is None:
                self.step(grads)
            else:
                self._step_reduced(grads, sumsq)
        finally:
            self._reducer = None
            self._grid = None
            self._grid_layout = NULL
            self._grid_acc = NULL

    cdef int _update(self) except -1:
        cdef Py_ssize_t i, gi, total = 0, bad = -1
        cdef double lr = 0.0, x, dlr, delta = 0.0, denom = 0.0
        cdef ProdigyScalars nxt
        cdef Group *grp
        cdef const adamc_hyper *h0 = &self._groups[0].hyper
        cdef bint moved
        for gi in range(self._ngroups):
            x = self._groups[gi].hyper.lr
            if x > lr:
                lr = x
        for gi in range(self._ngroups):
            grp = &self._groups[gi]
            if grp.hyper.lr != lr and grp.hyper.lr != 0.0:
                raise RuntimeError(
                    f"Prodigy: param_groups[{gi}] has lr {grp.hyper.lr}, another group "
                    f"{lr}; the groups' lr must all be equal, or 0 (as in prodigyopt)")
            name = _prodigy_mismatch(h0, &grp.hyper)
            if name is not None:
                raise ValueError(
                    f"param_groups[{gi}]['{name}'] differs from param_groups[0]: Prodigy "
                    f"estimates one step size for all groups, so {name} must be the same "
                    f"in every group")
        for i in range(self._nparams):
            total += self._slots[i].nbytes
        dlr = _prodigy_dlr(h0, &self._pd, lr)
        for gi in range(self._ngroups):
            _prodigy_stats_coef(&self._groups[gi].hyper, &self._pd, dlr, &self._groups[gi].coef)
        if total >= _nogil_min_bytes:
            with nogil:
                adamc_enter()
                bad = self._stats(total, dlr, &delta, &denom)
                adamc_leave()
        else:
            _enter_holding_gil()
            bad = self._stats(total, dlr, &delta, &denom)
            adamc_leave()
        if bad >= 0:
            if self._nonfinite == 2:
                self._skipped += 1
                return 0
            self._raise_nonfinite(bad)
        if self._reducer is not None and self._grid is not None:
            # the factor of every group (they share d0: checked), as _stats applies it
            delta, denom = self._reducer(self._grid[1], (self._pd.d / h0.d0) * dlr)
        elif self._reducer is not None:
            delta, denom = self._reducer(delta, denom)
        moved = _prodigy_estimate(h0, &self._pd, delta, denom, &nxt)
        for gi in range(self._ngroups):
            _prodigy_update_coef(&self._groups[gi].hyper, dlr, nxt.d, moved,
                                 &self._groups[gi].coef)
        self._busy = _WRITING  # (p0, set at the first step, is set again if this fails)
        if total >= _nogil_min_bytes:
            with nogil:
                adamc_enter()
                self._apply(total)
                adamc_leave()
        else:
            _enter_holding_gil()
            self._apply(total)
            adamc_leave()
        self._pd = nxt
        for i in range(self._ngroups):
            self._groups[i].step += 1
            self._groups[i].aux = self._groups[i].aux_next
            self._groups[i].last_lr = self._groups[i].hyper.lr
        self._step_count += 1
        if self._ema_now:
            self._ema_count += 1
        self._publish()
        return 0

    cdef Py_ssize_t _stats(self, Py_ssize_t total, double dlr, double *delta,
                           double *denom) noexcept nogil:
        """Scan for non-finite gradients (returns the first offending parameter),
        clip by the global norm, set p0 at a group's first step, then the statistics
        pass over the parameters of the groups with lr > 0."""
        cdef Py_ssize_t i
        cdef adamc_task task
        cdef Slot *s
        cdef Group *grp
        cdef const adamc_kernels *kern = _kernels
        cdef double out[2]
        if self._nonfinite != 0:
            for i in range(self._nparams):
                s = &self._slots[i]
                if kern.first_nonfinite[s.dtype_index](self._grad_ptr[i], s.size) >= 0:
                    return i
        if self._max_grad_norm > 0:
            self._clip_global_norm(total)
        delta[0] = 0.0
        denom[0] = 0.0
        if self._grid_acc != NULL:
            memset(self._grid_acc, 0, self._grid_len * sizeof(double))
        for i in range(self._nparams):
            s = &self._slots[i]
            grp = &self._groups[s.group]
            if grp.step == 0:  # prodigyopt's p0: the parameters at the first step
                memcpy(self._anchor[i], s.data, s.nbytes)
            if grp.hyper.lr == 0.0:
                continue
            task.param = s.data
            task.grad = self._grad_ptr[i]
            task.state[0] = s.state[0]
            task.state[1] = s.state[1]
            task.state[2] = s.state[2]
            task.lower = task.upper = NULL
            task.average = NULL
            task.coef = &grp.coef
            task.anchor = self._anchor[i]
            if self._grid_acc != NULL:
                self._block_stats(i, &task)
                continue
            adamc_reduce2(kern.prodigy_stats[s.dtype_index], &task, s.size,
                          ADAMC_KIND_REDUCE(s.dtype_index), s.nbytes, out)
            delta[0] += (self._pd.d / grp.hyper.d0) * dlr * out[0]
            denom[0] += out[1]
        return -1

    cdef void _block_stats(self, Py_ssize_t i, const adamc_task *task) noexcept nogil:
        """The statistics of parameter i, a piece of a larger array, over the
        partitions of that array inside the piece (each as one process sums it),
        into the grid's accumulators."""
        cdef Py_ssize_t n = self._grid_layout[3 * i], offset = self._grid_layout[3 * i + 1]
        cdef Py_ssize_t j = self._grid_layout[3 * i + 2], size = self._slots[i].size
        cdef Py_ssize_t k, b, e, parts = _sum_parts(n)
        cdef adamc_reduce_fn fn = _kernels.prodigy_stats[self._slots[i].dtype_index]
        cdef double out[2]
        if size == 0:
            return
        for k in range(parts):
            b = n * k // parts
            e = n * (k + 1) // parts
            if b < offset or e > offset + size:
                continue
            fn(task, b - offset, e - offset, out)
            self._grid_acc[2 * j] = out[0]
            self._grid_acc[2 * j + 1] = out[1]
            j += 1

    cdef void _apply(self, Py_ssize_t total) noexcept nogil:
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
            task.anchor = self._anchor[i]
            task.average = s.average
            adamc_run(kern.step[ADAMC_PRODIGY][s.dtype_index], &task, s.size,
                      ADAMC_KIND_STEP(ADAMC_PRODIGY, s.dtype_index), s.nbytes)


cdef object _prodigy_core(_StepFunction fn, object param, object grad, PyObject **states,
                         object step, PyObject **scalars, PyObject **hyper):
    """adamc.functional.prodigy_step after the binding of its arguments (see
    _step_vectorcall): the stateless Prodigy step of one array. The checks run in the
    order of the Python function it replaced: the hyperparameters in call order (a
    schedule lr refused at once), eps > 0 (adamc._core.validation.check_positive_eps), step,
    the scalars (None: d0), the arrays, their overlaps; then p0 is set at step 1, the
    statistics pass, the estimate of d, the update pass. Returns (d, d_max,
    d_numerator) after the step."""
    cdef _StepSpec spec = fn.spec
    cdef double fv[_F_COUNT]
    cdef int k
    cdef double x
    cdef PyObject *obj
    for k in range(_F_COUNT):
        fv[k] = 0.0
    for k in range(spec.nhyper):
        obj = hyper[k]
        if obj == fn.hyper_default[k]:  # the default object, checked once
            x = fn.hyper_default_value[k]
        else:
            x = _hyper_value(spec.kinds[k], <object>obj, <str>spec.names[k])
            if x == -2.0:
                raise TypeError("lr of a stateless step must be a number; pass "
                                "schedule(step) (schedules belong to the optimizer classes)")
        fv[spec.fields[k]] = x
    if not fv[_F_EPS] > 0:
        raise ValueError(f"eps must be > 0 for Prodigy, got {fv[_F_EPS]!r}")
    cdef int64_t t
    cdef int overflow = 0
    if PyLong_CheckExact(step):
        t = PyLong_AsLongLongAndOverflow(step, &overflow)
        if overflow or not 1 <= t <= (<int64_t>1) << 62:
            t = _step_number(step, "step")
    else:
        t = _step_number(step, "step")
    cdef ProdigyScalars st, nxt
    d0 = fv[_F_D0]
    _prodigy_scalars(d0 if scalars[0] == <PyObject *>None else <object>scalars[0],
                     d0 if scalars[1] == <PyObject *>None else <object>scalars[1],
                     d0 if scalars[2] == <PyObject *>None else <object>scalars[2], "", &st)
    st.k = t - 1
    st.d_hat = st.d_denom = 0.0
    # arrays: the messages of check_param and check_operand (the optimizers' ones)
    if not cnp.PyArray_Check(param) or not _float_type(cnp.PyArray_TYPE(<cnp.ndarray>param)):
        raise _operand_error(param, "param", None, "", True)
    cdef int type_num = cnp.PyArray_TYPE(<cnp.ndarray>param)
    cdef int ndim = cnp.PyArray_NDIM(<cnp.ndarray>param)
    cdef const cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>param)
    if not _operand_ok(param, type_num, ndim, dims, _REQ_WRITE):
        raise _operand_error(param, "param", None, "", True)
    if not _operand_ok(grad, type_num, ndim, dims, _REQ_READ):
        raise _operand_error(grad, "grad", param, "param", False)
    cdef void *data[4]
    for k in range(4):
        obj = states[k]
        if not _operand_ok(<object>obj, type_num, ndim, dims, _REQ_WRITE):
            raise _operand_error(<object>obj, spec.state_names[k], param, "param", True)
        data[k] = cnp.PyArray_DATA(<cnp.ndarray>obj)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef Py_ssize_t nbytes = n * (4 if type_num == cnp.NPY_FLOAT else 8)
    cdef adamc_task task
    task.param = cnp.PyArray_DATA(<cnp.ndarray>param)
    task.grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
    if nbytes > 0:
        _check_step_disjoint(spec, <const char *>task.param, <const char *>task.grad, data,
                             nbytes)
    # (the fields of _fill_hyper for Prodigy's hyperparameters; the others are 0)
    cdef adamc_hyper h
    memset(&h, 0, sizeof(h))
    h.lr, h.beta1, h.beta2 = fv[_F_LR], fv[_F_BETA1], fv[_F_BETA2]
    h.beta3 = -1.0 if fv[_F_BETA3] == _NONE_BETA else fv[_F_BETA3]
    h.eps, h.weight_decay = fv[_F_EPS], fv[_F_WD]
    h.decoupled = fv[_F_DECOUPLE] != 0.0
    h.bias_correction = fv[_F_BIAS_CORRECTION] != 0.0
    h.safeguard_warmup = fv[_F_SAFEGUARD] != 0.0
    h.d0, h.d_coef, h.growth_rate = fv[_F_D0], fv[_F_D_COEF], fv[_F_GROWTH]
    h.maximize = fv[_F_MAXIMIZE] != 0.0
    cdef adamc_coef coef
    cdef double aux_next, dlr, out[2]
    _prepare_step(ADAMC_PRODIGY, &h, t, 0.0, INFINITY, False, &coef, &aux_next)
    cdef int dt = ADAMC_F32 if type_num == cnp.NPY_FLOAT else ADAMC_F64
    task.state[0], task.state[1], task.state[2] = data[0], data[1], data[2]
    task.anchor = data[3]
    task.lower = task.upper = NULL
    task.average = NULL
    task.coef = &coef
    dlr = _prodigy_dlr(&h, &st, h.lr)
    _prodigy_stats_coef(&h, &st, dlr, &coef)
    if t == 1:
        memcpy(task.anchor, task.param, nbytes)
    out[0] = out[1] = 0.0
    cdef adamc_reduce_fn stats = _kernels.prodigy_stats[dt]
    if h.lr != 0.0:
        if nbytes >= _nogil_min_bytes:
            with nogil:
                adamc_enter()
                adamc_reduce2(stats, &task, n, ADAMC_KIND_REDUCE(dt), nbytes, out)
                adamc_leave()
        else:
            _enter_holding_gil()
            adamc_reduce2(stats, &task, n, ADAMC_KIND_REDUCE(dt), nbytes, out)
            adamc_leave()
    moved = _prodigy_estimate(&h, &st, (st.d / h.d0) * dlr * out[0], out[1], &nxt)
    _prodigy_update_coef(&h, dlr, nxt.d, moved, &coef)
    _run_task(_kernels.step[ADAMC_PRODIGY][dt], &task, n, ADAMC_KIND_STEP(ADAMC_PRODIGY, dt),
              nbytes)
    return nxt.d, nxt.d_max, nxt.d_numerator
