# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Schedule-free AdamW and SGD (Defazio et al., 2024, "The Road Less Scheduled"), as the
# schedulefree package 1.4.1. While training, the parameters hold y, the point where
# gradients are taken; the state z is the base sequence, and x, the average of the z
# (weights ((k+1)**r) * lr_max**weight_lr_power), is what eval() puts in the
# parameters. Per group and step the averaging weight ckp1 comes from the weight sum
# and the largest lr so far, which this engine keeps (the kernel is element-wise).

cdef inline double _sf_momentum(int algo, const adamc_hyper *h) noexcept nogil:
    return h.beta1 if algo == ADAMC_SF_ADAMW else h.momentum


@cython.auto_pickle(False)
cdef class _ScheduleFreeEngine(_Engine):
    """The engine of :class:`adamc.AdamWScheduleFree` and
    :class:`adamc.SGDScheduleFree`: per group the weight sum and the largest lr,
    the train/eval mode, and z taken from the parameters at a group's first step."""
    cdef double *_wsum
    cdef double *_lrmax
    cdef double *_wsum_next
    cdef double *_lrmax_next
    cdef double *_lr_now        # scheduled lr of the step in progress (logging)
    cdef double *_lr_last       # of the last completed step
    cdef bint _train

    def __cinit__(self):
        self._train = True

    def __dealloc__(self):
        PyMem_Free(self._wsum)

    def _bind(self, int algo, tuple keys, list params, list states, list group_index,
              lower=None, upper=None, validate=None, tuple state_names=(), averages=None):
        """_Engine._bind; existing groups keep their weight sums."""
        cdef Py_ssize_t gi, ng = len(self.param_groups), old = self._ngroups
        cdef double *buf = <double *>PyMem_Calloc(max(ng, 1) * 6, sizeof(double))
        if buf == NULL:
            raise MemoryError("cannot allocate the optimizer's bookkeeping")
        try:
            _Engine._bind(self, algo, keys, params, states, group_index, lower, upper,
                          validate, state_names, averages)
        except BaseException:
            PyMem_Free(buf)
            raise
        for gi in range(ng):
            buf[gi] = self._wsum[gi] if gi < old and self._wsum != NULL else 0.0
            buf[ng + gi] = self._lrmax[gi] if gi < old and self._wsum != NULL else -1.0
            buf[5 * ng + gi] = self._lr_last[gi] if gi < old and self._wsum != NULL else 0.0
        PyMem_Free(self._wsum)
        self._wsum, self._lrmax = buf, buf + ng
        self._wsum_next, self._lrmax_next = buf + 2 * ng, buf + 3 * ng
        self._lr_now, self._lr_last = buf + 4 * ng, buf + 5 * ng
        self._publish()

    @property
    def train_mode(self):
        """True while the parameters hold y (training), False after eval() (x)."""
        return bool(self._train)

    def _schedulefree_state(self):
        """Per group: (weight_sum, lr_max, scheduled_lr of the last step)."""
        return [(self._wsum[gi], self._lrmax[gi], self._lr_last[gi])
                for gi in range(self._ngroups)]

    def _set_schedulefree_state(self, groups, bint train):
        """Set every group's (weight_sum, lr_max, scheduled_lr) and the mode (values
        already checked)."""
        cdef Py_ssize_t gi
        self._check_idle()
        if len(groups) != self._ngroups:
            raise ValueError(f"expected {self._ngroups} groups, got {len(groups)}")
        for gi in range(self._ngroups):
            self._wsum[gi], self._lrmax[gi], self._lr_last[gi] = groups[gi]
        self._train = train
        self._publish()

    def _set_train_mode(self, bint train):
        self._check_idle()
        self._train = train
        self._publish()

    cdef int _publish(self) except -1:
        """Mirror the per-group scalars into the param groups, under the names the
        schedulefree package keeps them (k, weight_sum, lr_max, scheduled_lr,
        train_mode)."""
        cdef Py_ssize_t gi
        groups = self.param_groups
        if type(groups) is not list or len(<list>groups) != self._ngroups:
            return 0
        for gi in range(self._ngroups):
            group = (<list>groups)[gi]
            if type(group) is dict:
                (<dict>group).update(k=self._groups[gi].step, weight_sum=self._wsum[gi],
                                     lr_max=self._lrmax[gi], scheduled_lr=self._lr_last[gi],
                                     train_mode=bool(self._train))
        return 0

    cdef int _prepare(self) except -1:
        cdef Py_ssize_t gi
        cdef Group *grp
        cdef double k1, sched, lr, lr_max, weight, ckp1, mom
        if not self._train:
            raise RuntimeError("the optimizer is in eval mode (the parameters hold the "
                               "averaged point x); call opt.train() before step(), as "
                               "with the schedulefree package")
        _Engine._prepare(self)
        for gi in range(self._ngroups):
            grp = &self._groups[gi]
            k1 = <double>(grp.step + 1)
            sched = k1 / grp.hyper.warmup_steps if grp.step < grp.hyper.warmup_steps else 1.0
            lr = grp.hyper.lr * sched
            lr_max = self._lrmax[gi] if self._lrmax[gi] > lr else lr  # Python's max(lr, lr_max)
            weight = adamc_pow(k1, grp.hyper.r) * adamc_pow(lr_max, grp.hyper.weight_lr_power)
            self._wsum_next[gi] = self._wsum[gi] + weight
            self._lrmax_next[gi] = lr_max
            self._lr_now[gi] = lr
            ckp1 = weight / self._wsum_next[gi] if self._wsum_next[gi] != 0 else 0.0
            mom = _sf_momentum(self._algo, &grp.hyper)
            grp.coef.u.schedulefree.ckp1 = ckp1
            grp.coef.u.schedulefree.one_minus_ckp1 = 1.0 - ckp1
            grp.coef.u.schedulefree.c_y = lr * (mom * (1.0 - ckp1) - 1.0)
            grp.coef.u.schedulefree.lr = lr
            if not (ckp1 < 0.5):  # torch.lerp's second form
                grp.coef.flags |= ADAMC_LERP_END
        return 0

    cdef int _update(self) except -1:
        cdef Py_ssize_t i, gi
        cdef int64_t before = self._step_count
        for i in range(self._nparams):  # z starts at the parameters (schedulefree: clone)
            if self._groups[self._slots[i].group].step == 0:
                memcpy(self._slots[i].state[0], self._slots[i].data, self._slots[i].nbytes)
        _Engine._update(self)
        if self._step_count != before:
            for gi in range(self._ngroups):
                self._wsum[gi] = self._wsum_next[gi]
                self._lrmax[gi] = self._lrmax_next[gi]
                self._lr_last[gi] = self._lr_now[gi]
        self._publish()
        return 0
