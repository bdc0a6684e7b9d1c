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
    ADAMC_LEVEL_AVX512 = 2,
    ADAMC_NUM_LEVELS = 3
};

enum { ADAMC_F32 = 0, ADAMC_F64 = 1 };

/* Option bits of adamc_coef.flags; each combination gets its own specialised loop so
 * that the inner loops carry no data-independent branches. */
enum {
    ADAMC_COUPLED_WD = 1u << 0, /* g += weight_decay * p (Adam's L2 term) */
    ADAMC_AMSGRAD = 1u << 1,    /* denominator from the running max of v */
    ADAMC_BOUNDED = 1u << 2,    /* project p onto [lower, upper] after the update */
    ADAMC_CLIP_VALUE = 1u << 3  /* clamp g to [-clip_value, clip_value] first */
};

/* Per-step scalars, prepared once per step in double precision. Kernels for float32
 * round each of them to float once, at the start of a chunk. */
typedef struct adamc_coef {
    unsigned flags;
    double grad_scale;   /* -1 when maximizing, else 1; times the clipping factor */
    double clip_value;   /* ADAMC_CLIP_VALUE */
    double weight_decay; /* ADAMC_COUPLED_WD */
    double decay;        /* decoupled weight decay: p *= decay; 1 when off */
    union {
        struct {
            double beta1, one_minus_beta1, beta2, one_minus_beta2;
            double step_size; /* lr * sqrt(bc2) / bc1 */
            double eps_hat;   /* eps * sqrt(bc2) */
        } adam;
    } u;
} adamc_coef;

/* One kernel invocation on one parameter array. State arrays are algorithm specific
 * (Adam: exp_avg, exp_avg_sq, max_exp_avg_sq). */
typedef struct adamc_task {
    void *param;
    const void *grad;
    void *state[3];
    const void *lower;
    const void *upper;
    const adamc_coef *coef;
} adamc_task;

/* A kernel updates elements [begin, end) of a task. Elements are independent, so any
 * split of the range gives the same bits. */
typedef void (*adamc_chunk_fn)(const adamc_task *task, ptrdiff_t begin, ptrdiff_t end);

typedef struct adamc_kernels {
    const char *name;
    adamc_chunk_fn adam[2]; /* indexed by ADAMC_F32 / ADAMC_F64 */
} adamc_kernels;

/* Kernel table of a level, or NULL when that level was not compiled in. */
const adamc_kernels *adamc_kernels_at(int level);

/* Highest level that is both compiled in and supported by this CPU. */
int adamc_cpu_level(void);

/* Run fn over [0, n) on up to nthreads OpenMP threads (ranges split at multiples of
 * 64 elements; one thread when OpenMP is absent). */
void adamc_run(adamc_chunk_fn fn, const adamc_task *task, ptrdiff_t n, int nthreads);

int adamc_have_openmp(void);
int adamc_default_threads(void);

/* Hyperparameters of Adam/AdamW for one step. */
typedef struct adamc_adam_hyper {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled, amsgrad, maximize;
} adamc_adam_hyper;

/* Fill coef for the 1-based step `step`. Leaves ADAMC_BOUNDED/ADAMC_CLIP_VALUE off. */
void adamc_adam_prepare(const adamc_adam_hyper *h, int64_t step, adamc_coef *coef);

#ifdef __cplusplus
}
#endif
#endif /* ADAMC_H */
