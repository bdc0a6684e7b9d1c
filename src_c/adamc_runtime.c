/* CPU detection and the per-step scalar preparation (threads: adamc_pool.c). */
#include <math.h>

#include "adamc.h"
#include "adamc_config.h"

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

double
adamc_aux_initial(int algo)
{
    return algo == ADAMC_NADAM ? 1.0 : 0.0;
}

/* 1.0 - adamc_pow(beta, t) to the bit, for 0 <= beta < 1, without the pow once it is 1.0.
 * ln(beta) <= beta - 1, so beta**t <= exp(-t (1 - beta)); once t (1 - beta) > 40,
 * beta**t < exp(-40) < 2**-57, well under 2**-54 (half the spacing of the doubles
 * just below 1, even with pow's error and the rounding of t (1 - beta)), and
 * 1 - beta**t rounds to 1.0 (round to nearest). Why it matters: an Adam step
 * makes two of these, and pow (adamc's own, src_c/adamc_math.c, for the same bits on
 * every platform) is the largest part of a C-objective fit's loop at n = 10 while it
 * runs. A negative or NaN beta (rejected by the validation anyway) fails the test and
 * takes pow. tests/test_kernels.py checks the bits over many (beta, t). */
static inline int
past_shortcut(double beta, int64_t step)
{
    return beta >= 0.0 && (double)step * (1.0 - beta) > 40.0;
}

static inline double
bias_correction(double beta, int64_t step)
{
    if (past_shortcut(beta, step))
        return 1.0;
    return 1.0 - adamc_pow(beta, (double)step);
}

double
adamc_bias_correction(double beta, int64_t step)
{
    return bias_correction(beta, step);
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

/* (t (1 - beta) only grows with t, also in floating point: once past the shortcut, a
 * bias correction stays exactly 1.0.) tests/test_kernels.py compares the coefficients
 * of steps far beyond a steady one, for every algorithm. */
int
adamc_steady(int algo, const adamc_hyper *h, int64_t step, double aux)
{
    switch (algo) {
    case ADAMC_ADAM:
        return past_shortcut(h->beta1, step) && past_shortcut(h->beta2, step);
    case ADAMC_ADAMAX:
        return past_shortcut(h->beta1, step);
    case ADAMC_SGD: /* after the first step with momentum: aux marks it */
        return h->momentum == 0.0 || aux != 0.0;
    case ADAMC_RMSPROP:
    case ADAMC_LION:
    case ADAMC_ADADELTA:
        return 1;
    case ADAMC_ADAGRAD: /* after the first step (its initial value), without lr decay */
        return h->lr_decay == 0.0 && (step > 1 || h->initial_accumulator_value == 0.0);
    case ADAMC_RPROP: /* after the first step (its initial step size) */
        return step > 1;
    default: /* NAdam's product of the mu, RAdam's rho_t, Prodigy's d, schedule-free */
        return 0;
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
        const double mu = h->beta1 * (1.0 - 0.5 * adamc_pow(0.96, t * h->momentum_decay));
        const double mu_next =
            h->beta1 * (1.0 - 0.5 * adamc_pow(0.96, (t + 1.0) * h->momentum_decay));
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
        const double rho_t = rho_inf - 2.0 * t * adamc_pow(h->beta2, t) / bc2;
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
    case ADAMC_PRODIGY:
        /* The option bits only: the coefficients depend on the distance estimate d,
         * which the engine holds for the whole optimizer and fills in per pass (the
         * decoupled decay 1 - weight_decay * d lr of the update pass included). */
        c->weight_decay = 0.0;
        c->decay = 1.0;
        if (h->weight_decay != 0.0 && !h->decoupled) {
            c->flags |= ADAMC_COUPLED_WD;
            c->weight_decay = h->weight_decay;
        }
        if (h->beta1 > 0.0)
            c->flags |= ADAMC_MOMENTUM;
        break;
    case ADAMC_SF_ADAMW:
    case ADAMC_SF_SGD:
        /* The per-step constants; the averaging weight ckp1, the warm-up and the y
         * coefficient depend on the group's weight sum and largest lr, which the engine
         * holds and fills in (_schedulefree.pxi). */
        c->weight_decay = 0.0;
        c->decay = 1.0;
        c->u.schedulefree.beta2 = h->beta2;
        c->u.schedulefree.one_minus_beta2 = 1.0 - h->beta2;
        c->u.schedulefree.bc2 = bias_correction(h->beta2, step);
        c->u.schedulefree.eps = h->eps;
        c->u.schedulefree.wd = h->weight_decay;
        break;
    case ADAMC_ADAGRAD:
        /* torch: clr = lr / (1 + (step - 1) lr_decay); the sum starts at the initial
         * accumulator value, which the first step adds to adamc's zero state (the
         * state of a group at step 0 is zero: a loaded state is checked for it) */
        weight_decay_terms(h, 0, c);
        c->u.adagrad.clr = h->lr / (1.0 + (t - 1.0) * h->lr_decay);
        c->u.adagrad.eps = h->eps;
        c->u.adagrad.init = step == 1 ? h->initial_accumulator_value : 0.0;
        break;
    case ADAMC_ADADELTA:
        weight_decay_terms(h, 0, c);
        c->u.adadelta.rho = h->rho;
        c->u.adadelta.one_minus_rho = 1.0 - h->rho;
        c->u.adadelta.eps = h->eps;
        c->u.adadelta.lr = h->lr;
        break;
    case ADAMC_RPROP:
        /* no weight decay; torch sets the step sizes to lr when it creates the state,
         * the first step adds lr to adamc's zero state */
        c->weight_decay = 0.0;
        c->decay = 1.0;
        c->u.rprop.etaminus = h->etaminus;
        c->u.rprop.etaplus = h->etaplus;
        c->u.rprop.step_min = h->step_size_min;
        c->u.rprop.step_max = h->step_size_max;
        c->u.rprop.init = step == 1 ? h->lr : 0.0;
        break;
    default: {
        const adamc_coef zero = {0};
        *c = zero;
        return -1;
    }
    }
    return 0;
}
