/* AVX2 kernels. FMA is deliberately not enabled: a fused multiply-add rounds once
 * where the other levels round twice, and results must be the same bits on every
 * level. */
#include "adamc_config.h"
#if ADAMC_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx,avx2"))), apply_to = function)
#else
#pragma GCC target("avx,avx2")
#endif

#define ADAMC_LEVEL avx2
#include "adamc_level.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
