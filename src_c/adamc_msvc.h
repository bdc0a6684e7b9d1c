/* The GCC builtins adamc's C and Cython code use, for Microsoft's C compiler, which
 * has none of them. setup.py force-includes this header (/FI) in every MSVC
 * compilation, so the kernels and the pool keep one spelling for GCC, Clang and MSVC.
 *
 * - __atomic_*: the pool's and the thread tests' atomics, on the Interlocked
 *   intrinsics. Every operation is sequentially consistent whatever order is asked
 *   for (stronger than needed, never weaker). On x86-64 a load is a plain volatile
 *   load (with MSVC's default /volatile:ms), as in GCC's sequentially consistent
 *   load: the stores and read-modify-writes are locked instructions. The types are
 *   those of 64-bit Windows: int and long are 32 bits, long long 64.
 * - __builtin_sqrt(f): sqrt(f), an intrinsic at /O2 (correctly rounded either way).
 * - __attribute__((...)): dropped (always_inline, noinline, unused are hints).
 *
 * ADAMC_MSVC_SHIM_TEST selects the atomics under GCC too (mingw-w64), so that
 * tools/cross_windows.sh can run the pool's stress test on them under Wine. */
#ifndef ADAMC_MSVC_H
#define ADAMC_MSVC_H

#if (defined(_MSC_VER) && !defined(__clang__)) || defined(ADAMC_MSVC_SHIM_TEST)
/* This header comes first in every file: M_PI (the cosine schedule) must be asked for
 * before math.h is first included. */
#ifndef _USE_MATH_DEFINES
#define _USE_MATH_DEFINES
#endif
#include <intrin.h>
#include <math.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define __attribute__(x)
#define ADAMC_MSVC_INLINE static __forceinline
#define ADAMC_MSVC_BARRIER() _ReadWriteBarrier()
#else
#define ADAMC_MSVC_INLINE static inline __attribute__((always_inline, unused))
#define ADAMC_MSVC_BARRIER() __asm__ __volatile__("" ::: "memory")
#endif

#define __builtin_sqrt(x) sqrt(x)
#define __builtin_sqrtf(x) sqrtf(x)

#ifndef __ATOMIC_RELAXED
#define __ATOMIC_RELAXED 0
#define __ATOMIC_CONSUME 1
#define __ATOMIC_ACQUIRE 2
#define __ATOMIC_RELEASE 3
#define __ATOMIC_ACQ_REL 4
#define __ATOMIC_SEQ_CST 5
#endif

ADAMC_MSVC_INLINE long
adamc_ld32_(volatile long *p)
{
#if defined(_M_X64) || defined(_M_IX86) || defined(__x86_64__) || defined(__i386__)
    const long v = *p;
    ADAMC_MSVC_BARRIER();
    return v;
#else
    return _InterlockedOr(p, 0);
#endif
}

ADAMC_MSVC_INLINE long long
adamc_ld64_(volatile long long *p)
{
#if defined(_M_X64) || defined(__x86_64__)
    const long long v = *p;
    ADAMC_MSVC_BARRIER();
    return v;
#else
    return _InterlockedCompareExchange64(p, 0, 0);
#endif
}

ADAMC_MSVC_INLINE long long
adamc_xadd64_(volatile long long *p, long long v)
{
#if defined(_WIN64)
    return _InterlockedExchangeAdd64(p, v);
#else
    long long old = adamc_ld64_(p), seen;
    while ((seen = _InterlockedCompareExchange64(p, old + v, old)) != old)
        old = seen;
    return old;
#endif
}

ADAMC_MSVC_INLINE void
adamc_st64_(volatile long long *p, long long v)
{
#if defined(_WIN64)
    _InterlockedExchange64(p, v);
#else
    long long old = adamc_ld64_(p), seen;
    while ((seen = _InterlockedCompareExchange64(p, v, old)) != old)
        old = seen;
#endif
}

ADAMC_MSVC_INLINE int
adamc_cas32_(volatile long *p, long *expected, long desired)
{
    const long old = _InterlockedCompareExchange(p, desired, *expected);
    if (old == *expected)
        return 1;
    *expected = old;
    return 0;
}

ADAMC_MSVC_INLINE int
adamc_cas64_(volatile long long *p, long long *expected, long long desired)
{
    const long long old = _InterlockedCompareExchange64(p, desired, *expected);
    if (old == *expected)
        return 1;
    *expected = old;
    return 0;
}

/* One typed function per operation and type: T name(T *p, ...). 32-bit types go
 * through `long`, 64-bit ones through `long long` (two's complement, so the unsigned
 * ones wrap as they should). */
#define ADAMC_MSVC_W32 long
#define ADAMC_MSVC_W64 long long
#define ADAMC_MSVC_ST32(p, v) ((void)_InterlockedExchange(p, v))
#define ADAMC_MSVC_ST64(p, v) adamc_st64_(p, v)
#define ADAMC_MSVC_XADD32(p, v) _InterlockedExchangeAdd(p, v)
#define ADAMC_MSVC_XADD64(p, v) adamc_xadd64_(p, v)

#define ADAMC_MSVC_OPS_(T, S, W)                                                          \
    ADAMC_MSVC_INLINE T adamc_load_##S(T *p)                                              \
    {                                                                                     \
        return (T)adamc_ld##W##_((volatile ADAMC_MSVC_W##W *)p);                          \
    }                                                                                     \
    ADAMC_MSVC_INLINE void adamc_store_##S(T *p, T v)                                     \
    {                                                                                     \
        ADAMC_MSVC_ST##W((volatile ADAMC_MSVC_W##W *)p, (ADAMC_MSVC_W##W)v);              \
    }                                                                                     \
    ADAMC_MSVC_INLINE T adamc_fetch_add_##S(T *p, T v)                                    \
    {                                                                                     \
        return (T)ADAMC_MSVC_XADD##W((volatile ADAMC_MSVC_W##W *)p, (ADAMC_MSVC_W##W)v);  \
    }                                                                                     \
    ADAMC_MSVC_INLINE T adamc_add_fetch_##S(T *p, T v)                                    \
    {                                                                                     \
        return (T)(adamc_fetch_add_##S(p, v) + v);                                        \
    }                                                                                     \
    ADAMC_MSVC_INLINE T adamc_sub_fetch_##S(T *p, T v)                                    \
    {                                                                                     \
        return (T)(adamc_fetch_add_##S(p, (T)(0 - v)) - v);                               \
    }                                                                                     \
    ADAMC_MSVC_INLINE int adamc_cas_##S(T *p, T *expected, T desired)                     \
    {                                                                                     \
        ADAMC_MSVC_W##W e = (ADAMC_MSVC_W##W)*expected;                                 \
        const int ok = adamc_cas##W##_((volatile ADAMC_MSVC_W##W *)p, &e,                 \
                                       (ADAMC_MSVC_W##W)desired);                         \
        *expected = (T)e;                                                                 \
        return ok;                                                                        \
    }

ADAMC_MSVC_OPS_(int, i, 32)
ADAMC_MSVC_OPS_(unsigned, u, 32)
ADAMC_MSVC_OPS_(long, l, 32)
ADAMC_MSVC_OPS_(unsigned long, ul, 32)
ADAMC_MSVC_OPS_(long long, ll, 64)
ADAMC_MSVC_OPS_(unsigned long long, ull, 64)

#define ADAMC_MSVC_PICK_(p, op)                                                           \
    _Generic((p), int *: adamc_##op##_i, unsigned *: adamc_##op##_u, long *: adamc_##op##_l, \
             unsigned long *: adamc_##op##_ul, long long *: adamc_##op##_ll,              \
             unsigned long long *: adamc_##op##_ull)

#define __atomic_load_n(p, order) ADAMC_MSVC_PICK_(p, load)(p)
#define __atomic_store_n(p, v, order) ADAMC_MSVC_PICK_(p, store)(p, v)
#define __atomic_fetch_add(p, v, order) ADAMC_MSVC_PICK_(p, fetch_add)(p, v)
#define __atomic_add_fetch(p, v, order) ADAMC_MSVC_PICK_(p, add_fetch)(p, v)
#define __atomic_sub_fetch(p, v, order) ADAMC_MSVC_PICK_(p, sub_fetch)(p, v)
#define __atomic_compare_exchange_n(p, expected, desired, weak, success, failure)          \
    ADAMC_MSVC_PICK_(p, cas)(p, expected, desired)

#endif
#endif
