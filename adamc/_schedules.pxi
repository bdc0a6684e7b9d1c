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
        self.step_size = _step_number(step_size, "step_size")
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
        self.total_steps = _step_number(total_steps, "total_steps")
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


_COMPILED_SCHEDULES = (_Constant, _StepDecay, _ExponentialDecay, _CosineDecay, _InverseSqrt)


def lr_at(fn, int64_t step, Py_ssize_t gi):
    """The validated learning rate of group gi's schedule or callable ``fn`` at a
    1-based step (what step() computes; adamc.distributed evaluates Python callables
    itself in sharded mode)."""
    return _lr_at(fn, step, gi)
