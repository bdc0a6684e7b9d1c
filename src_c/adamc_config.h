/* Build-time facts shared by the C sources. */
#ifndef ADAMC_CONFIG_H
#define ADAMC_CONFIG_H

/* Extra SIMD levels exist on x86-64 with GCC or Clang (target pragmas and
 * __builtin_cpu_supports); everything else builds the baseline only. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(ADAMC_NO_DISPATCH)
#define ADAMC_X86_DISPATCH 1
#else
#define ADAMC_X86_DISPATCH 0
#endif

/* Compiler flags of the build, recorded by setup.py for show_config(). */
#ifndef ADAMC_BUILD_FLAGS
#define ADAMC_BUILD_FLAGS "unknown"
#endif

#endif
