# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# The preparation of a step, written once for every driver: the engine
# (_Engine._prepare_coefs, hence Prodigy's and the schedule-free engines), the
# stateless steps (_stateless.pxi, _prodigy.pxi), and the rows and fits of
# minimize_many (_minimize_many_row_steps.pxi, _minimize_many_c_fits.pxi).
# adamc_prepare (src_c/adamc_runtime.c) gives an algorithm's coefficients from its hyperparameters, the sign of maximize in
# grad_scale included; _prepare_step adds the clip value and the bounds flag, and
# _norm_factor is the factor of the clipping by the gradient's norm.

cdef inline int _prepare_step(int algo, const adamc_hyper *h, int64_t step, double aux,
                              double clip_value, bint bounded, adamc_coef *coef,
                              double *aux_next) noexcept nogil:
    """The coefficients of step ``step`` (1-based) of algorithm algo with the scalar
    state aux, and that state after the step in aux_next (aux_next may point to aux).
    clip_value: the gradient's elements are clamped to [-clip_value, clip_value]
    (INFINITY: off); bounded: the step clamps the parameters into lower/upper.
    Returns -1 for an unknown algorithm."""
    if adamc_prepare(algo, h, step, aux, coef, aux_next) != 0:
        return -1
    coef.clip_value = clip_value
    if bounded:
        coef.flags |= ADAMC_BOUNDED
    return 0


cdef inline double _norm_factor(double max_grad_norm, double sumsq) noexcept nogil:
    """The factor of a step's grad_scale that clips the gradient by its norm
    (``max_grad_norm`` > 0; sumsq: the sum of the squares of its elements, clamped to
    the clip value), as torch.nn.utils.clip_grad_norm_: max_grad_norm / (norm +
    1e-6) when that is below 1 (or NaN), else 1.0 (multiplying by it changes
    nothing)."""
    cdef double scale = max_grad_norm / (sqrt(sumsq) + 1e-6)
    return scale if not (scale >= 1.0) else 1.0


cdef inline void _clip_own_norm(adamc_coef *coef, adamc_sumsq_fn sumsq_fn,
                                const void *grad, Py_ssize_t n, double max_grad_norm,
                                double clip_value, int dt, Py_ssize_t nbytes) noexcept nogil:
    """Clip one problem's gradient (n elements of dtype index dt) by its own norm:
    the engine's clipping of a lone problem (minimize_many's rows and fits)."""
    coef.grad_scale *= _norm_factor(
        max_grad_norm, adamc_sum_squares(sumsq_fn, grad, n, clip_value,
                                         ADAMC_KIND_SUMSQ(dt), nbytes))
