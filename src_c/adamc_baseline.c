/* Portable kernels: whatever the compiler's default target is (SSE2 on x86-64). */
#define ADAMC_LEVEL baseline
#include "adamc_level.inc"
