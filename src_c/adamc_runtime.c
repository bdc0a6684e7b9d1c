/* CPU detection, the threading driver and the per-step scalar preparation. */
#include <math.h>

#include "adamc.h"
#include "adamc_config.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern const adamc_kernels adamc_kernels_baseline;
#if ADAMC_X86_DISPATCH
extern const adamc_kernels adamc_kernels_avx2;
extern const adamc_kernels adamc_kernels_avx512;
#endif

const adamc_kernels *
adamc_kernels_at(int level)
{
    switch (level) {
    case ADAMC_LEVEL_BASELINE:
        return &adamc_kernels_baseline;
#if ADAMC_X86_DISPATCH
    case ADAMC_LEVEL_AVX2:
        return &adamc_kernels_avx2;
    case ADAMC_LEVEL_AVX512:
        return &adamc_kernels_avx512;
#endif
    default:
        return NULL;
    }
}

int
adamc_cpu_level(void)
{
#if ADAMC_X86_DISPATCH
    /* libgcc's detection also checks (via XGETBV) that the OS saves the YMM/ZMM
     * registers, so a "supported" level never faults. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return ADAMC_LEVEL_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return ADAMC_LEVEL_AVX2;
#endif
    return ADAMC_LEVEL_BASELINE;
}

int
adamc_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int
adamc_default_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Start of thread id's range when [0, n) is split into nthreads ranges whose
 * boundaries are multiples of 64 elements (whole cache lines for either dtype). */
static ptrdiff_t
split_point(ptrdiff_t n, int nthreads, int id)
{
    const ptrdiff_t blocks = (n + 63) / 64;
    const ptrdiff_t b = (blocks * id / nthreads) * 64;
    return b < n ? b : n;
}

void
adamc_run(adamc_chunk_fn fn, const adamc_task *task, ptrdiff_t n, int nthreads)
{
#ifdef _OPENMP
    if (nthreads > 1 && n > 64) {
#pragma omp parallel num_threads(nthreads)
        {
            const int nt = omp_get_num_threads(), id = omp_get_thread_num();
            const ptrdiff_t b = split_point(n, nt, id), e = split_point(n, nt, id + 1);
            if (b < e)
                fn(task, b, e);
        }
        return;
    }
#else
    (void)nthreads;
#endif
    fn(task, 0, n);
}

void
adamc_adam_prepare(const adamc_adam_hyper *h, int64_t step, adamc_coef *c)
{
    const double bc1 = 1.0 - pow(h->beta1, (double)step);
    const double sqrt_bc2 = sqrt(1.0 - pow(h->beta2, (double)step));

    c->flags = 0;
    c->grad_scale = h->maximize ? -1.0 : 1.0;
    c->clip_value = 0.0;
    c->weight_decay = 0.0;
    c->decay = 1.0;
    if (h->weight_decay != 0.0) {
        if (h->decoupled)
            c->decay = 1.0 - h->lr * h->weight_decay;
        else {
            c->flags |= ADAMC_COUPLED_WD;
            c->weight_decay = h->weight_decay;
        }
    }
    if (h->amsgrad)
        c->flags |= ADAMC_AMSGRAD;
    c->u.adam.beta1 = h->beta1;
    c->u.adam.one_minus_beta1 = 1.0 - h->beta1;
    c->u.adam.beta2 = h->beta2;
    c->u.adam.one_minus_beta2 = 1.0 - h->beta2;
    c->u.adam.step_size = h->lr * sqrt_bc2 / bc1;
    c->u.adam.eps_hat = h->eps * sqrt_bc2;
}
