/* adamc: in-place optimizer kernels for contiguous float32/float64 arrays.
 *
 * The C layer trusts its inputs: every pointer is valid for the range it is given,
 * arrays written by a kernel do not overlap any other operand, and scalars were
 * validated by the Python layer. Nothing here allocates, keeps global state or
 * touches Python objects.
 */
#ifndef ADAMC_H
#define ADAMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SIMD levels, lowest first. A level is usable when it was compiled in and the CPU
 * (and the operating system's saved register state) supports it. */
enum {
    ADAMC_LEVEL_BASELINE = 0,
    ADAMC_LEVEL_AVX2 = 1,
    ADAMC_LEVEL_AVX512 = 2
};

enum { ADAMC_F32 = 0, ADAMC_F64 = 1 };

/* The algorithms, one line each: X(ID, name, xflag, yflag) gives the enum value
 * ADAMC_<ID>, the name under which adamc/_algorithms.py knows it, the kernel table
 * entry <name>_chunk of every SIMD level and its specialised variants (adamc_algos.inc:
 * the loop <name>_loop, and <name>_REACHABLE for the option combinations that occur),
 * and the two option bits of adamc_coef.flags (0: none) the variants are specialised
 * on besides the shared ones. Values follow the order of the list. */
#define ADAMC_ALGORITHMS(X)                                             \
    X(ADAM, adam, ADAMC_AMSGRAD, 0)          /* Adam, AdamW, AMSGrad */  \
    X(ADAMAX, adamax, 0, 0)                                             \
    X(NADAM, nadam, 0, 0)                                               \
    X(RADAM, radam, ADAMC_RECTIFIED, 0)                                 \
    X(SGD, sgd, ADAMC_MOMENTUM, ADAMC_NESTEROV) /* dampening, Nesterov */ \
    X(RMSPROP, rmsprop, ADAMC_MOMENTUM, ADAMC_CENTERED)                 \
    X(LION, lion, 0, 0)                                                 \
    X(PRODIGY, prodigy, ADAMC_MOMENTUM, 0) /* the update after the estimate of d */ \
    X(SF_ADAMW, adamw_schedulefree, 0, ADAMC_LERP_END)                  \
    X(SF_SGD, sgd_schedulefree, 0, ADAMC_LERP_END)                      \
    X(ADAGRAD, adagrad, 0, 0)                                           \
    X(ADADELTA, adadelta, 0, 0)                                         \
    X(RPROP, rprop, 0, 0)

enum {
#define ADAMC_ENUM_(id, name, x, y) ADAMC_##id,
    ADAMC_ALGORITHMS(ADAMC_ENUM_)
#undef ADAMC_ENUM_
    ADAMC_NUM_ALGOS
};

/* Name of an algorithm ("adam", ...), or NULL for an unknown value. */
const char *adamc_algorithm_name(int algo);

/* Option bits of adamc_coef.flags; each combination gets its own specialised loop so
 * that the inner loops carry no data-independent branches. */
enum {
    ADAMC_COUPLED_WD = 1u << 0, /* g += weight_decay * p (L2 term) */
    ADAMC_BOUNDED = 1u << 1,    /* project p onto [lower, upper] after the update */
    ADAMC_AMSGRAD = 1u << 2,    /* Adam: denominator from the running max of v */
    ADAMC_RECTIFIED = 1u << 3,  /* RAdam: variance rectification active this step */
    ADAMC_MOMENTUM = 1u << 4,   /* SGD, RMSprop: keep a momentum buffer */
    ADAMC_NESTEROV = 1u << 5,   /* SGD */
    ADAMC_CENTERED = 1u << 6,   /* RMSprop */
    ADAMC_LERP_END = 1u << 7,   /* schedule-free: lerp's second form (weight >= 0.5) */
    ADAMC_EMA = 1u << 8         /* weight averaging: average = lerp(average, p, ema_weight) */
};

/* Per-step scalars, prepared once per step in double precision. Kernels for float32
 * round each of them to float once, at the start of a chunk. */
typedef struct adamc_coef {
    unsigned flags;
    double grad_scale;   /* -1 when maximizing, else 1; times the clipping factor */
    double clip_value;   /* g is clamped to [-clip_value, clip_value]; inf when off */
    double weight_decay; /* ADAMC_COUPLED_WD */
    double decay;        /* decoupled weight decay: p *= decay; 1 when off */
    double ema_weight;   /* ADAMC_EMA: weight of the new parameters in the average */
    union {
        struct { /* Adam */
            double beta2, one_minus_beta1, one_minus_beta2;
            double step_size; /* lr * sqrt(bc2) / bc1 */
            double eps_hat;   /* eps * sqrt(bc2) */
        } adam;
        struct { /* Adamax */
            double one_minus_beta1, beta2, eps;
            double step_size; /* lr / bc1 */
        } adamax;
        struct { /* NAdam: p -= (c_grad g + c_avg m) / (sqrt(v) + eps_hat) */
            double one_minus_beta1, beta2, one_minus_beta2;
            double c_grad, c_avg, eps_hat;
        } nadam;
        struct { /* RAdam */
            double one_minus_beta1, beta2, one_minus_beta2;
            double step_size; /* rectified: lr * r * sqrt(bc2) / bc1, else lr / bc1 */
            double eps;
        } radam;
        struct { /* SGD: b = buf_decay b + buf_gain g (first step: 0 and 1) */
            double lr, buf_decay, buf_gain, nesterov;
        } sgd;
        struct { /* RMSprop */
            double alpha, one_minus_alpha, eps, lr, momentum;
        } rmsprop;
        struct { /* Lion: c = beta1 m + (1 - beta1) g; p -= lr sign(c) */
            double beta1, one_minus_beta1, beta2, one_minus_beta2, lr;
        } lion;
        struct { /* Prodigy (Mishchenko & Defazio, 2024), with d the distance estimate.
                  * The statistics pass (prodigy_stats) only reads; the update pass:
                  *   m = beta1 m + m_gain g,  v = beta2 v + v_gain g g,  s = beta3 s + s_gain g
                  *   p -= wd_step p                 (decoupled decay; decay != 1 marks it)
                  *   p -= step_size m / (sqrt(v) + eps_hat)     (beta1 > 0)
                  *   p -= grad_step g / (sqrt(v) + eps_hat)     (beta1 = 0) */
            double beta1, m_gain, beta2, v_gain, beta3, s_gain;
            double step_size, grad_step, eps_hat, wd_step;
        } prodigy;
        struct { /* Schedule-free AdamW / SGD (Defazio et al., 2024); y = p, state z and exp_avg_sq:
                  *   v = beta2 v + ((1 - beta2) g) g;  g = g / (sqrt(v / bc2) + eps) (AdamW)
                  *   g = g + wd y;  y = lerp(y, z, ckp1);  y = y + c_y g;  z = z - lr g */
            double beta2, one_minus_beta2, bc2, eps, wd, ckp1, one_minus_ckp1, c_y, lr;
        } schedulefree;
        struct { /* Adagrad (torch.optim.Adagrad's order), with clr = lr / (1 + (t - 1)
                  * lr_decay) and init the initial accumulator value at the first step
                  * (the state starts at 0), else 0:
                  *   s = (s + init) + g g;  p -= (clr g) / (sqrt(s) + eps) */
            double clr, eps, init;
        } adagrad;
        struct { /* Adadelta (torch.optim.Adadelta's order):
                  *   v = v rho + ((1 - rho) g) g;  d = sqrt(u + eps) / sqrt(v + eps) g
                  *   u = u rho + ((1 - rho) d) d;  p -= lr d */
            double rho, one_minus_rho, eps, lr;
        } adadelta;
        struct { /* Rprop (torch.optim.Rprop), with init = lr at the first step (the
                  * step sizes start at 0), else 0; c = g prev:
                  *   f = etaplus (c > 0), etaminus (c < 0), 1 (c = 0), c (NaN)
                  *   s = clamp((s + init) f, step_min, step_max)
                  *   g = 0 where c < 0;  p -= sign(g) s;  prev = g */
            double etaminus, etaplus, step_min, step_max, init;
        } rprop;
    } u;
} adamc_coef;

/* One kernel invocation on one parameter array. State arrays, in order:
 *   Adam: exp_avg, exp_avg_sq, max_exp_avg_sq     Adamax: exp_avg, exp_inf
 *   NAdam, RAdam: exp_avg, exp_avg_sq             SGD: momentum_buffer
 *   RMSprop: square_avg, momentum_buffer, grad_avg      Lion: exp_avg
 *   Prodigy: exp_avg, exp_avg_sq, s (and the anchor p0)
 *   schedule-free AdamW: z, exp_avg_sq      schedule-free SGD: z
 *   Adagrad: sum      Adadelta: square_avg, acc_delta      Rprop: prev, step_size */
typedef struct adamc_task {
    void *param;
    const void *grad;
    void *state[3];
    const void *lower;
    const void *upper;
    const adamc_coef *coef;
    void *anchor;  /* Prodigy's statistics: p0, the parameters at the first step */
    void *average; /* ADAMC_EMA: the weight average of the parameters (else unused) */
} adamc_task;

/* A kernel updates elements [begin, end) of a task. Elements are independent, so any
 * split of the range gives the same bits. */
typedef void (*adamc_chunk_fn)(const adamc_task *task, ptrdiff_t begin, ptrdiff_t end);

/* Sum of squares of clamp(g, -clip, clip) over [begin, end), accumulated in double in
 * a fixed order (16 interleaved lanes, combined pairwise) on every SIMD level. */
typedef double (*adamc_sumsq_fn)(const void *grad, ptrdiff_t begin, ptrdiff_t end,
                                 double clip);

/* A read-only pass that returns two sums over [begin, end) in out[0], out[1] (Prodigy's
 * statistics: sum g (p0 - p) and sum |s_new|), accumulated in double in a fixed order
 * (16 interleaved lanes from `begin`, combined pairwise) on every SIMD level. */
typedef void (*adamc_reduce_fn)(const adamc_task *task, ptrdiff_t begin, ptrdiff_t end,
                                double *out);

/* Index of the first NaN or infinity in grad[0, n), or -1. */
typedef ptrdiff_t (*adamc_scan_fn)(const void *grad, ptrdiff_t n);

/* max |a[i]| over [0, n) as a double (0 when n = 0), NaN when a holds a NaN. */
typedef double (*adamc_norm_fn)(const void *a, ptrdiff_t n);

typedef struct adamc_kernels {
    const char *name;
    adamc_chunk_fn step[ADAMC_NUM_ALGOS][2]; /* [algorithm][ADAMC_F32 / ADAMC_F64] */
    adamc_sumsq_fn sumsq[2];
    adamc_scan_fn first_nonfinite[2];
    adamc_reduce_fn prodigy_stats[2];
    adamc_norm_fn max_abs[2];
} adamc_kernels;

/* Kernel table of a level, or NULL when that level was not compiled in. */
const adamc_kernels *adamc_kernels_at(int level);

/* Highest level that is both compiled in and supported by this CPU. */
int adamc_cpu_level(void);

/* Threads (adamc_pool.c). A thread runs kernels only between adamc_enter() and
 * adamc_leave(): at most adamc_get_num_threads() threads of the process are inside
 * them at once, callers and pool workers together (adamc_enter waits for a token).
 * Inside, adamc_run and adamc_sum_squares may hand chunks to pool workers; the caller
 * starts at once and never waits for a worker that has not started. `kind` names the
 * loop for the adaptive policy (ADAMC_KIND_STEP / ADAMC_KIND_SUMSQ), `nbytes` is the
 * size that decides whether threads may pay off. */
#define ADAMC_MAX_THREADS 256
#define ADAMC_POLICY_KINDS 32
#define ADAMC_KIND_STEP(algo, dtype) ((algo) * 2 + (dtype))
#define ADAMC_KIND_SUMSQ(dtype) (ADAMC_POLICY_KINDS - 2 + (dtype))
#define ADAMC_KIND_REDUCE(dtype) (ADAMC_POLICY_KINDS - 6 + (dtype))
/* (the step kinds of every algorithm stay below the other kinds) */
typedef char adamc_step_kinds_fit_[ADAMC_NUM_ALGOS * 2 <= ADAMC_POLICY_KINDS - 6 ? 1 : -1];
/* Whole fits of independent problems (adamc.minimize_many with a C objective): a job
 * of milliseconds, split whenever two threads may run, never measured by the policy. */
#define ADAMC_KIND_FITS (-1)

typedef void (*adamc_body_fn)(void *ctx, ptrdiff_t begin, ptrdiff_t end);

void adamc_enter(void);
int adamc_try_enter(void); /* 1 with a token, 0 (at once) when none is free */
void adamc_leave(void);
/* 1 when a token holder between two kernel calls keeps nobody out by keeping it */
int adamc_may_keep_token(void);

/* Run body over [0, n) in chunks of at least chunk_min (one thread when nbytes is
 * under the threshold, the limit is 1, or the policy measured one to be faster). */
void adamc_parallel(int kind, ptrdiff_t nbytes, adamc_body_fn body, void *ctx, ptrdiff_t n,
                    ptrdiff_t chunk_min);

/* fn over [0, n) of a task, on the pool. */
void adamc_run(adamc_chunk_fn fn, const adamc_task *task, ptrdiff_t n, int kind,
               ptrdiff_t nbytes);

/* The partitions of the two functions below: parts = n / ADAMC_SUM_PART clamped to
 * [1, ADAMC_SUM_PARTS], partition k = [n k / parts, n (k + 1) / parts). adamc.distributed
 * cuts sharded Prodigy at these boundaries (adamc._kernels.sum_partitions). */
enum { ADAMC_SUM_PARTS = 64, ADAMC_SUM_PART = 1 << 15 };

/* Sum of squares of a whole array: split into partitions that depend on n only, each
 * summed by fn, partial sums added in order; the same bits for any thread count. */
double adamc_sum_squares(adamc_sumsq_fn fn, const void *grad, ptrdiff_t n, double clip,
                         int kind, ptrdiff_t nbytes);

/* fn over [0, n) of a task, in the partitions of adamc_sum_squares; the two sums of
 * the partitions are added in order into out[0], out[1] (the same bits for any thread
 * count). */
void adamc_reduce2(adamc_reduce_fn fn, const adamc_task *task, ptrdiff_t n, int kind,
                   ptrdiff_t nbytes, double *out);

/* Configuration (also called through ctypes by adamc's threadpoolctl controller). */
int adamc_have_threads(void);
int adamc_get_num_threads(void);
void adamc_set_num_threads(int n);
int adamc_get_adaptive(void);
void adamc_set_adaptive(int on);
/* The adaptive policy keeps one thread while the host has more runnable threads than
 * CPUs (on by default; tests turn it off to measure several threads anyway). */
int adamc_get_host_check(void);
void adamc_set_host_check(int on);
ptrdiff_t adamc_get_threshold(void);
void adamc_set_threshold(ptrdiff_t nbytes);
ptrdiff_t adamc_get_step_chunk(void);
void adamc_set_step_chunk(ptrdiff_t elements); /* rounded up to a multiple of 64 */
int adamc_get_spin_ns(void);
void adamc_set_spin_ns(int ns);

typedef struct adamc_stats {
    int workers, active, peak; /* pool threads; threads in kernels now / at most */
    uint64_t jobs_single, jobs_parallel, joins, wake_ns_total;
    int64_t wake_ns_max;
} adamc_stats;

void adamc_pool_stats(adamc_stats *s);
void adamc_reset_stats(int forget_policy);
/* The policy's state for a kind and size: returns the choice (0 one thread, 1
 * several) and the measured ns per byte (-1 when not measured yet). */
int adamc_policy_choice(int kind, ptrdiff_t nbytes, double *ns_one, double *ns_many);
/* Tests: `calls` decisions of the adaptive policy as if one thread took ns_one and
 * several took ns_many, on a host with (host_full) or without more runnable threads
 * than CPUs; the modes chosen go to modes[] (0 or 1). */
int adamc_policy_simulate(int kind, ptrdiff_t nbytes, int64_t ns_one, int64_t ns_many,
                          int host_full, int calls, unsigned char *modes);

/* Hyperparameters of one param group (each algorithm reads its own fields). */
typedef struct adamc_hyper {
    double lr, beta1, beta2, eps, weight_decay;
    double momentum_decay;      /* NAdam */
    double momentum, dampening; /* SGD, RMSprop (momentum) */
    double alpha;               /* RMSprop */
    double beta3, d0, d_coef, growth_rate; /* Prodigy (beta3 < 0: sqrt(beta2)) */
    double warmup_steps, r, weight_lr_power; /* schedule-free */
    double lr_decay, initial_accumulator_value; /* Adagrad */
    double rho;                                 /* Adadelta */
    double etaminus, etaplus, step_size_min, step_size_max; /* Rprop */
    int decoupled, amsgrad, maximize, nesterov, centered;
    int bias_correction, safeguard_warmup; /* Prodigy */
} adamc_hyper;

/* Fill coef for the 1-based step `step` of algorithm `algo`. `aux` is the group's
 * scalar state before the step (NAdam: the product of the momentum coefficients;
 * SGD: 1 once the momentum buffer holds a value; 0 and 1 initially), `*aux_next`
 * receives its value after the step. Leaves ADAMC_BOUNDED, clipping and the norm
 * factor of grad_scale to the caller. Returns 0, or -1 for an unknown algorithm
 * (coef is then zeroed and must not be used). */
int adamc_prepare(int algo, const adamc_hyper *h, int64_t step, double aux,
                  adamc_coef *coef, double *aux_next);

/* 1 when adamc_prepare gives step `step` (scalar state aux) the coefficients and the
 * *aux_next of every later step with the same hyperparameters (its *aux_next fed back
 * as aux): a loop that steps with fixed hyperparameters may then prepare once. 0 when
 * not, or not known. */
int adamc_steady(int algo, const adamc_hyper *h, int64_t step, double aux);

/* Initial value of an algorithm's per-group scalar state. */
double adamc_aux_initial(int algo);

/* A bias correction 1 - beta**step in double: the same bits as
 * 1.0 - adamc_pow(beta, step), without the pow once the result is 1.0 (most steps of
 * a long fit). */
double adamc_bias_correction(double beta, int64_t step);

/* adamc's own pow and cos (adamc_math.c): the same bits on every IEEE-754 platform
 * (the C library's are not rounded alike everywhere), within 1 ulp of the exact
 * value. adamc_pow follows C99 Annex F for the special cases; adamc_cos is for
 * |x| < 2**19 pi/2 (NaN beyond). */
double adamc_pow(double x, double y);
double adamc_cos(double x);

#ifdef __cplusplus
}
#endif
#endif /* ADAMC_H */
