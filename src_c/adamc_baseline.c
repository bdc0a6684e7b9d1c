/* Portable kernels: whatever the compiler's default target is (SSE2 on x86-64; on
 * aarch64, NEON (Advanced SIMD), which every aarch64 CPU has, so it is the only level
 * there and is named for it). */
#if defined(__aarch64__) || defined(_M_ARM64)
#define ADAMC_LEVEL_NAME "neon"
#endif
#define ADAMC_LEVEL baseline
#include "adamc_level.inc"
