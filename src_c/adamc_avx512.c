/* AVX-512 kernels: the x86-64-v4 subset F/CD/BW/DQ/VL, without FMA (see adamc_avx2.c). */
#include "adamc_config.h"
#if ADAMC_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(                                                         \
    __attribute__((target("avx,avx2,avx512f,avx512cd,avx512bw,avx512dq,avx512vl"))), \
    apply_to = function)
#else
#pragma GCC target("avx,avx2,avx512f,avx512cd,avx512bw,avx512dq,avx512vl")
#endif

#define ADAMC_LEVEL avx512
#include "adamc_level.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
