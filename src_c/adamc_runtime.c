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

/* A thread takes its own range, and the others', in chunks of an eighth of a range (at
 * least 4096 elements, about 1 us of work): few enough calls that their cost does not
 * show, small enough that a late thread delays the step by an eighth of its share at
 * most. A multiple of 64, like the range boundaries. */
#define ADAMC_CHUNK_MIN 4096
#define ADAMC_CHUNKS_PER_RANGE 8
#define ADAMC_MAX_THREADS 256

void
adamc_run(adamc_chunk_fn fn, const adamc_task *task, ptrdiff_t n, int nthreads)
{
#ifdef _OPENMP
    if (nthreads > 1 && n > 64) {
        /* Each thread first works through its own static range (which stays in its
         * cache from step to step), then takes chunks from the ranges of the others.
         * On a quiet machine nobody steals; when the host runs one of our threads late,
         * the others finish its range instead of waiting for it. */
        ptrdiff_t next[ADAMC_MAX_THREADS], stop[ADAMC_MAX_THREADS];
        if (nthreads > ADAMC_MAX_THREADS)
            nthreads = ADAMC_MAX_THREADS;
        ptrdiff_t chunk = (n / nthreads / ADAMC_CHUNKS_PER_RANGE + 63) / 64 * 64;
        if (chunk < ADAMC_CHUNK_MIN)
            chunk = ADAMC_CHUNK_MIN;
        for (int r = 0; r < nthreads; r++) {
            next[r] = split_point(n, nthreads, r);
            stop[r] = split_point(n, nthreads, r + 1);
        }
#pragma omp parallel num_threads(nthreads)
        {
            const int id = omp_get_thread_num();
            for (int k = 0; k < nthreads; k++) {
                const int r = (id + k) % nthreads;
                for (;;) {
                    const ptrdiff_t b = __atomic_fetch_add(&next[r], chunk, __ATOMIC_RELAXED);
                    if (b >= stop[r])
                        break;
                    fn(task, b, b + chunk < stop[r] ? b + chunk : stop[r]);
                }
            }
        }
        return;
    }
#else
    (void)nthreads;
#endif
    fn(task, 0, n);
}

double
adamc_sum_squares(adamc_sumsq_fn fn, const void *grad, ptrdiff_t n, double clip, int nthreads)
{
    /* Partitions of about 32K elements, at most 64: their boundaries depend on n only,
     * so the partial sums and their (ordered) total are the same for any thread count. */
    enum { MAX_PARTS = 64, PART = 1 << 15 };
    double partial[MAX_PARTS];
    ptrdiff_t parts = n / PART;
    if (parts < 1)
        parts = 1;
    if (parts > MAX_PARTS)
        parts = MAX_PARTS;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1) if (nthreads > 1 && parts > 1)
#else
    (void)nthreads;
#endif
    for (ptrdiff_t k = 0; k < parts; k++)
        partial[k] = fn(grad, n * k / parts, n * (k + 1) / parts, clip);
    double total = 0.0;
    for (ptrdiff_t k = 0; k < parts; k++)
        total += partial[k];
    return total;
}

double
adamc_aux_initial(int algo)
{
    return algo == ADAMC_NADAM ? 1.0 : 0.0;
}

/* Adam-style bias corrections: 1 - beta**t in double. */
static double
bias_correction(double beta, int64_t step)
{
    return 1.0 - pow(beta, (double)step);
}

static void
weight_decay_terms(const adamc_hyper *h, int allow_decoupled, adamc_coef *c)
{
    c->weight_decay = 0.0;
    c->decay = 1.0;
    if (h->weight_decay == 0.0)
        return;
    if (allow_decoupled && h->decoupled) {
        c->decay = 1.0 - h->lr * h->weight_decay;
    } else {
        c->flags |= ADAMC_COUPLED_WD;
        c->weight_decay = h->weight_decay;
    }
}

const char *
adamc_algorithm_name(int algo)
{
    switch (algo) {
#define ADAMC_NAME_(id, name, x, y) \
    case ADAMC_##id:          \
        return #name;
        ADAMC_ALGORITHMS(ADAMC_NAME_)
#undef ADAMC_NAME_
    default:
        return NULL;
    }
}

int
adamc_prepare(int algo, const adamc_hyper *h, int64_t step, double aux, adamc_coef *c,
              double *aux_next)
{
    const double t = (double)step;
    c->flags = 0;
    c->grad_scale = h->maximize ? -1.0 : 1.0;
    c->clip_value = INFINITY;
    *aux_next = aux;

    switch (algo) {
    case ADAMC_ADAM: {
        const double bc1 = bias_correction(h->beta1, step);
        const double sqrt_bc2 = sqrt(bias_correction(h->beta2, step));
        weight_decay_terms(h, 1, c);
        if (h->amsgrad)
            c->flags |= ADAMC_AMSGRAD;
        c->u.adam.beta2 = h->beta2;
        c->u.adam.one_minus_beta1 = 1.0 - h->beta1;
        c->u.adam.one_minus_beta2 = 1.0 - h->beta2;
        c->u.adam.step_size = h->lr * sqrt_bc2 / bc1;
        c->u.adam.eps_hat = h->eps * sqrt_bc2;
        break;
    }
    case ADAMC_ADAMAX:
        weight_decay_terms(h, 0, c);
        c->u.adamax.one_minus_beta1 = 1.0 - h->beta1;
        c->u.adamax.beta2 = h->beta2;
        c->u.adamax.eps = h->eps;
        c->u.adamax.step_size = h->lr / bias_correction(h->beta1, step);
        break;
    case ADAMC_NADAM: {
        /* torch: p -= lr (1 - mu) / (1 - P) g / d + lr mu' / (1 - P mu') m / d with
         * d = sqrt(v / bc2) + eps and P the product of the mu so far; multiplying
         * through by sqrt(bc2) leaves one division per element. */
        const double sqrt_bc2 = sqrt(bias_correction(h->beta2, step));
        const double mu = h->beta1 * (1.0 - 0.5 * pow(0.96, t * h->momentum_decay));
        const double mu_next =
            h->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * h->momentum_decay));
        const double prod = aux * mu, prod_next = prod * mu_next;
        weight_decay_terms(h, 1, c);
        c->u.nadam.one_minus_beta1 = 1.0 - h->beta1;
        c->u.nadam.beta2 = h->beta2;
        c->u.nadam.one_minus_beta2 = 1.0 - h->beta2;
        c->u.nadam.c_grad = h->lr * (1.0 - mu) / (1.0 - prod) * sqrt_bc2;
        c->u.nadam.c_avg = h->lr * mu_next / (1.0 - prod_next) * sqrt_bc2;
        c->u.nadam.eps_hat = h->eps * sqrt_bc2;
        *aux_next = prod;
        break;
    }
    case ADAMC_RADAM: {
        const double bc1 = bias_correction(h->beta1, step);
        const double bc2 = bias_correction(h->beta2, step);
        const double rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
        const double rho_t = rho_inf - 2.0 * t * pow(h->beta2, t) / bc2;
        weight_decay_terms(h, 1, c);
        c->u.radam.one_minus_beta1 = 1.0 - h->beta1;
        c->u.radam.beta2 = h->beta2;
        c->u.radam.one_minus_beta2 = 1.0 - h->beta2;
        c->u.radam.eps = h->eps;
        if (rho_t > 5.0) {
            const double rect = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                     ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
            c->flags |= ADAMC_RECTIFIED;
            c->u.radam.step_size = h->lr * rect * sqrt(bc2) / bc1;
        } else {
            c->u.radam.step_size = h->lr / bc1;
        }
        break;
    }
    case ADAMC_SGD:
        weight_decay_terms(h, 0, c);
        c->u.sgd.lr = h->lr;
        c->u.sgd.buf_decay = 0.0;
        c->u.sgd.buf_gain = 1.0;
        c->u.sgd.nesterov = h->momentum;
        if (h->momentum != 0.0) {
            c->flags |= ADAMC_MOMENTUM;
            if (h->nesterov)
                c->flags |= ADAMC_NESTEROV;
            if (aux != 0.0) { /* torch: the first buffer is a copy of the gradient */
                c->u.sgd.buf_decay = h->momentum;
                c->u.sgd.buf_gain = 1.0 - h->dampening;
            }
            *aux_next = 1.0;
        }
        break;
    case ADAMC_RMSPROP:
        weight_decay_terms(h, 0, c);
        c->u.rmsprop.alpha = h->alpha;
        c->u.rmsprop.one_minus_alpha = 1.0 - h->alpha;
        c->u.rmsprop.eps = h->eps;
        c->u.rmsprop.lr = h->lr;
        c->u.rmsprop.momentum = h->momentum;
        if (h->momentum > 0.0)
            c->flags |= ADAMC_MOMENTUM;
        if (h->centered)
            c->flags |= ADAMC_CENTERED;
        break;
    case ADAMC_LION:
        /* always decoupled, as optax.lion and lion-pytorch: p *= 1 - lr wd first */
        c->decay = h->weight_decay == 0.0 ? 1.0 : 1.0 - h->lr * h->weight_decay;
        c->weight_decay = 0.0;
        c->u.lion.beta1 = h->beta1;
        c->u.lion.one_minus_beta1 = 1.0 - h->beta1;
        c->u.lion.beta2 = h->beta2;
        c->u.lion.one_minus_beta2 = 1.0 - h->beta2;
        c->u.lion.lr = h->lr;
        break;
    default: {
        const adamc_coef zero = {0};
        *c = zero;
        return -1;
    }
    }
    return 0;
}
