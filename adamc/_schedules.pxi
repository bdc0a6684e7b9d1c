# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Learning-rate schedules evaluated without a Python call (see adamc.schedules)

@cython.auto_pickle(False)
cdef class Schedule:
    """Base of the compiled learning-rate schedules: ``schedule(step) -> lr`` for the
    1-based number of the update being computed. Optimizers call them without going
    through Python."""

    cdef double _at(self, int64_t step) noexcept:
        return 0.0

    def __call__(self, step):
        return self._at(_step_number(step, "step"))


cdef class _Constant(Schedule):
    cdef readonly double lr

    def __init__(self, lr):
        self.lr = _nonneg(lr, "lr")

    cdef double _at(self, int64_t step) noexcept:
        return self.lr

    def __repr__(self):
        return f"constant(lr={self.lr!r})"

    def __reduce__(self):
        return (_Constant, (self.lr,))


cdef class _StepDecay(Schedule):
    cdef readonly double lr, gamma
    cdef readonly int64_t step_size

    def __init__(self, lr, step_size, gamma):
        self.lr = _nonneg(lr, "lr")
        self.step_size = _positive_count(step_size, "step_size")
        self.gamma = _nonneg(gamma, "gamma")

    cdef double _at(self, int64_t step) noexcept:
        return self.lr * adamc_pow(self.gamma, <double>((step - 1) // self.step_size))

    def __repr__(self):
        return f"step_decay(lr={self.lr!r}, step_size={self.step_size}, gamma={self.gamma!r})"

    def __reduce__(self):
        return (_StepDecay, (self.lr, self.step_size, self.gamma))


cdef class _ExponentialDecay(Schedule):
    cdef readonly double lr, gamma

    def __init__(self, lr, gamma):
        self.lr = _nonneg(lr, "lr")
        self.gamma = _nonneg(gamma, "gamma")

    cdef double _at(self, int64_t step) noexcept:
        return self.lr * adamc_pow(self.gamma, <double>(step - 1))

    def __repr__(self):
        return f"exponential_decay(lr={self.lr!r}, gamma={self.gamma!r})"

    def __reduce__(self):
        return (_ExponentialDecay, (self.lr, self.gamma))


cdef class _CosineDecay(Schedule):
    cdef readonly double lr, min_lr
    cdef readonly int64_t total_steps, warmup_steps

    def __init__(self, lr, total_steps, min_lr, warmup_steps):
        self.lr = _nonneg(lr, "lr")
        self.total_steps = _positive_count(total_steps, "total_steps")
        self.min_lr = _nonneg(min_lr, "min_lr")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) \
                or not 0 <= warmup_steps < self.total_steps:
            raise ValueError(f"warmup_steps must be an int in [0, total_steps), got "
                             f"{warmup_steps!r}")
        self.warmup_steps = warmup_steps

    cdef double _at(self, int64_t step) noexcept:
        if step <= self.warmup_steps:
            return self.lr * <double>step / <double>self.warmup_steps
        cdef double progress = <double>(step - self.warmup_steps) / \
            <double>(self.total_steps - self.warmup_steps)
        if progress > 1.0:
            progress = 1.0
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + adamc_cos(M_PI * progress))

    def __repr__(self):
        return (f"cosine_decay(lr={self.lr!r}, total_steps={self.total_steps}, "
                f"min_lr={self.min_lr!r}, warmup_steps={self.warmup_steps})")

    def __reduce__(self):
        return (_CosineDecay, (self.lr, self.total_steps, self.min_lr, self.warmup_steps))


cdef class _InverseSqrt(Schedule):
    cdef readonly double lr
    cdef readonly int64_t warmup_steps

    def __init__(self, lr, warmup_steps):
        self.lr = _nonneg(lr, "lr")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) \
                or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps

    cdef double _at(self, int64_t step) noexcept:
        if step <= self.warmup_steps:
            return self.lr * <double>step / <double>self.warmup_steps
        return self.lr * sqrt(<double>max(self.warmup_steps, 1) / <double>step)

    def __repr__(self):
        return f"inverse_sqrt(lr={self.lr!r}, warmup_steps={self.warmup_steps})"

    def __reduce__(self):
        return (_InverseSqrt, (self.lr, self.warmup_steps))


# torch.optim.lr_scheduler.ReduceLROnPlateau's rule, on a struct: the schedule below
# holds one, adamc.minimize's loop steps it with f after every iteration (without the
# GIL), and minimize_many keeps one per problem.
cdef struct _Plateau:
    double lr, best, factor, threshold, min_lr, eps
    int64_t patience, cooldown, num_bad, cooldown_counter, last_epoch
    bint maximize, absolute

cdef enum:
    _PLATEAU_SAME = 0       # the lr is unchanged
    _PLATEAU_REDUCED = 1    # the lr was reduced
    _PLATEAU_EXHAUSTED = 2  # a reduction was due, but the lr is at min_lr (within eps)


cdef inline bint _plateau_better(const _Plateau *p, double a) noexcept nogil:
    if p.maximize:
        return a > (p.best + p.threshold if p.absolute else p.best * (p.threshold + 1.0))
    return a < (p.best - p.threshold if p.absolute else p.best * (1.0 - p.threshold))


cdef int _plateau_step(_Plateau *p, double current) noexcept nogil:
    """ReduceLROnPlateau.step(current) (a NaN is a bad epoch, as there)."""
    cdef double new_lr
    cdef int out = _PLATEAU_SAME
    p.last_epoch += 1
    if _plateau_better(p, current):
        p.best = current
        p.num_bad = 0
    else:
        p.num_bad += 1
    if p.cooldown_counter > 0:
        p.cooldown_counter -= 1
        p.num_bad = 0
    if p.num_bad > p.patience:
        new_lr = p.lr * p.factor
        if new_lr < p.min_lr:
            new_lr = p.min_lr
        if p.lr - new_lr > p.eps:
            p.lr = new_lr
            out = _PLATEAU_REDUCED
        else:
            out = _PLATEAU_EXHAUSTED
        p.cooldown_counter = p.cooldown
        p.num_bad = 0
    return out


cdef int _plateau_row(const _Plateau *rule, double *lr, double *best, int64_t *counts,
                      double current) noexcept nogil:
    """_plateau_step of one problem of minimize_many: the rule's options, the problem's
    own lr, best and counters (num_bad, cooldown_counter, last_epoch)."""
    cdef _Plateau p = rule[0]
    cdef int out
    p.lr, p.best = lr[0], best[0]
    p.num_bad, p.cooldown_counter, p.last_epoch = counts[0], counts[1], counts[2]
    out = _plateau_step(&p, current)
    lr[0], best[0] = p.lr, p.best
    counts[0], counts[1], counts[2] = p.num_bad, p.cooldown_counter, p.last_epoch
    return out


cdef _PLATEAU_FIELDS = ("lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")


@cython.final
cdef class _ReduceOnPlateau(Schedule):
    """See adamc.schedules.reduce_on_plateau."""
    cdef _Plateau p
    cdef readonly double initial_lr
    cdef readonly str mode, threshold_mode

    def __init__(self, lr, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.initial_lr = _nonneg(lr, "lr")
        factor = _nonneg(factor, "factor")
        if not factor < 1.0:
            raise ValueError(f"factor must be < 1 (the lr is multiplied by it), got {factor!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.p.lr = self.initial_lr
        self.p.factor = factor
        self.p.threshold = _nonneg(threshold, "threshold")
        self.p.min_lr = _nonneg(min_lr, "min_lr")
        self.p.eps = _nonneg(eps, "eps")
        self.p.patience = _count_arg(patience, "patience")
        self.p.cooldown = _count_arg(cooldown, "cooldown")
        self.p.maximize = mode == "max"
        self.p.absolute = threshold_mode == "abs"
        self.p.best = -INFINITY if self.p.maximize else INFINITY
        self.p.num_bad = self.p.cooldown_counter = self.p.last_epoch = 0

    cdef double _at(self, int64_t step) noexcept:
        return self.p.lr

    def step(self, metrics):
        """Record the metric of the epoch (or iteration) just done; reduce the learning
        rate when it has not improved for more than ``patience`` calls, as torch's
        ``ReduceLROnPlateau.step(metrics)`` does."""
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"metrics must be a real number, got "
                            f"{type(metrics).__name__} {metrics!r}") from None
        _plateau_step(&self.p, current)

    def get_last_lr(self):
        """The current learning rate, in a list (torch's scheduler API)."""
        return [self.p.lr]

    @property
    def lr(self):
        """The current learning rate."""
        return self.p.lr

    @property
    def factor(self):
        return self.p.factor

    @property
    def patience(self):
        return self.p.patience

    @property
    def threshold(self):
        return self.p.threshold

    @property
    def cooldown(self):
        return self.p.cooldown

    @property
    def min_lr(self):
        return self.p.min_lr

    @property
    def eps(self):
        return self.p.eps

    @property
    def best(self):
        return self.p.best

    @property
    def num_bad_epochs(self):
        return self.p.num_bad

    @property
    def cooldown_counter(self):
        return self.p.cooldown_counter

    @property
    def last_epoch(self):
        return self.p.last_epoch

    @property
    def in_cooldown(self):
        return self.p.cooldown_counter > 0

    def _args(self):
        return (self.initial_lr, self.mode, self.p.factor, self.p.patience, self.p.threshold,
                self.threshold_mode, self.p.cooldown, self.p.min_lr, self.p.eps)

    def state_dict(self):
        """The state that changes as it steps: ``lr``, ``best``, ``num_bad_epochs``,
        ``cooldown_counter`` and ``last_epoch``."""
        return {"lr": self.p.lr, "best": self.p.best, "num_bad_epochs": self.p.num_bad,
                "cooldown_counter": self.p.cooldown_counter, "last_epoch": self.p.last_epoch}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (checked first)."""
        if not isinstance(state, dict) or set(state) != set(_PLATEAU_FIELDS):
            raise ValueError(f"a reduce_on_plateau state must be a dict with the keys "
                             f"{', '.join(_PLATEAU_FIELDS)}")
        lr = _nonneg(state["lr"], "state['lr']")
        best = state["best"]
        if isinstance(best, bool) or not isinstance(best, (int, float, np.integer, np.floating)):
            raise TypeError(f"state['best'] must be a real number, got {best!r}")
        num_bad = _count_arg(state["num_bad_epochs"], "state['num_bad_epochs']")
        counter = _count_arg(state["cooldown_counter"], "state['cooldown_counter']")
        epoch = _count_arg(state["last_epoch"], "state['last_epoch']")
        self.p.lr, self.p.best, self.p.num_bad = lr, float(best), num_bad
        self.p.cooldown_counter, self.p.last_epoch = counter, epoch

    def __repr__(self):
        return (f"reduce_on_plateau(lr={self.initial_lr!r}, mode={self.mode!r}, "
                f"factor={self.p.factor!r}, patience={self.p.patience}, "
                f"threshold={self.p.threshold!r}, threshold_mode={self.threshold_mode!r}, "
                f"cooldown={self.p.cooldown}, min_lr={self.p.min_lr!r}, eps={self.p.eps!r})")

    def __reduce__(self):
        return (_plateau_from_state, (self._args(), self.state_dict()))


def _plateau_from_state(args, state):
    sched = _ReduceOnPlateau(*args)
    sched.load_state_dict(state)
    return sched


cdef int64_t _positive_count(object value, str name) except? -1:
    """A number of steps >= 1 (not a step number: _step_number's message would say so)."""
    cdef int64_t k = _count_arg(value, name)
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return k


cdef int64_t _count_arg(object value, str name) except? -1:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if value > 2**62:
        raise ValueError(f"{name} is too large: {value!r}")
    return value


cdef double _lr_at(object fn, int64_t step, Py_ssize_t gi) except? -1.0:
    """The learning rate of group gi's schedule or callable at a 1-based step."""
    cdef double lr
    if type(fn) in _COMPILED_SCHEDULES:  # a Python subclass of Schedule goes through __call__
        lr = (<Schedule>fn)._at(step)
        if not isfinite(lr):
            raise ValueError(f"param_groups[{gi}]['lr'] ({fn!r}) is not finite at step {step}")
        return lr
    value = fn(step)
    try:
        return _nonneg(value, "lr")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"param_groups[{gi}]['lr'] returned a bad learning rate at step "
                        f"{step}: {exc}") from None


_COMPILED_SCHEDULES = (_Constant, _StepDecay, _ExponentialDecay, _CosineDecay, _InverseSqrt,
                       _ReduceOnPlateau)


def lr_at(fn, int64_t step, Py_ssize_t gi):
    """The validated learning rate of group gi's schedule or callable ``fn`` at a
    1-based step (what step() computes; adamc.distributed evaluates Python callables
    itself in sharded mode)."""
    return _lr_at(fn, step, gi)
