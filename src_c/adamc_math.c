/* adamc's own pow and cos: the same bits on every IEEE-754 platform.
 *
 * Why: the per-step coefficients (bias corrections, NAdam's mu, RAdam's rho_t, the
 * schedules) need pow and cos, and glibc, musl, Apple's libm and MSVC's CRT do not
 * round them alike; a fit would then differ by an ulp between machines. These two
 * functions use only +, -, *, / and sqrt of doubles (each correctly rounded by IEEE
 * 754), integer operations and the constant tables of adamc_math_tables.h, in one
 * fixed order. That needs: round-to-nearest (the default), doubles evaluated as
 * doubles (SSE2 on x86-64, any aarch64; not the x87) and no contraction of a*b + c
 * into a fused multiply-add, which rounds once instead of twice and would change
 * bits on the platforms that have it. The build passes -ffp-contract=off (GCC
 * contracts by default when the target has FMA, as every aarch64 does);
 * tools/check_vectorized.py checks the objects for fused instructions.
 *
 * Accuracy (measured against mpmath by tests/test_math.py and tools/measure_math.py,
 * see docs/internals.md): both within 1 ulp; pow near 0.5 ulp, as it computes
 * log(x) and y log(x) in double-double (about 2**-68 relative) and rounds once at the
 * end; cos below 0.6 ulp.
 */
#include <math.h> /* INFINITY only */
#include <stdint.h>
#include <string.h>

#include "adamc.h"
#include "adamc_math_tables.h"

#if defined(__clang__) || defined(_MSC_VER)
#pragma STDC FP_CONTRACT OFF
#endif
#if defined(__FAST_MATH__)
#error "adamc_math.c needs IEEE arithmetic: no fast-math"
#endif

static inline uint64_t
bits_of(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double
double_of(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* 2**e for -1022 <= e <= 1023 */
static inline double
pow2i(int e)
{
    return double_of((uint64_t)(e + 1023) << 52);
}

/* c[0] + x (c[1] + x (c[2] + ...)) */
static inline double
horner(const double *c, int n, double x)
{
    double p = c[n - 1];
    for (int k = n - 2; k >= 0; k--)
        p = c[k] + x * p;
    return p;
}

/* Error-free transformations (Knuth, Dekker), valid without FMA. */
typedef struct {
    double hi, lo;
} dd;

static inline dd
two_sum(double a, double b)
{
    const double s = a + b;
    const double bb = s - a;
    dd r = {s, (a - (s - bb)) + (b - bb)};
    return r;
}

/* |a| >= |b| (or a == 0) */
static inline dd
fast_two_sum(double a, double b)
{
    const double s = a + b;
    dd r = {s, b - (s - a)};
    return r;
}

/* Veltkamp's split: a = hi + lo, both with at most 26 significant bits (|a| < 2**995) */
static inline void
split(double a, double *hi, double *lo)
{
    const double c = 134217729.0 * a; /* 2**27 + 1 */
    const double h = c - (c - a);
    *hi = h;
    *lo = a - h;
}

/* a * b = hi + lo exactly (Dekker), b given split */
static inline dd
two_prod_split(double a, double b, double bh, double bl)
{
    double ah, al;
    const double p = a * b;
    split(a, &ah, &al);
    dd r = {p, ((ah * bh - p) + ah * bl + al * bh) + al * bl};
    return r;
}

static inline dd
two_prod(double a, double b)
{
    double bh, bl;
    split(b, &bh, &bl);
    return two_prod_split(a, b, bh, bl);
}

/* a * a = hi + lo exactly */
static inline dd
two_sqr(double a)
{
    double ah, al;
    const double p = a * a;
    split(a, &ah, &al);
    dd r = {p, ((ah * ah - p) + 2.0 * (ah * al)) + al * al};
    return r;
}

/* ---------------------------------------------------------------------------------
 * log(x) for finite x > 0, as hi + lo with about 2**-68 relative error.
 * x = 2**k m, m in [0.707, 1.414); for the mantissa interval of m, c is its centre
 * (1 for the two intervals at 1) and invc a double near 1/c: r = m invc - 1 is exact
 * in double-double and |r| < 2**-7, log(x) = k ln 2 + log(c) + log1p(r). Near 1 (the
 * betas of the optimizers), k = 0 and invc = 1, so r = x - 1 exactly and the result
 * keeps its relative accuracy however small log(x) is. */
static dd
log_dd(double x)
{
    uint64_t ix = bits_of(x);
    int k = 0;
    if (ix < ((uint64_t)1 << 52)) { /* subnormal: scale into the normal range */
        ix = bits_of(x * 0x1p52);
        k = -52;
    }
    k += (int)(ix >> 52) - 1023;
    const int i = (int)((ix >> (52 - ADAMC_LOG_BITS)) & ((1 << ADAMC_LOG_BITS) - 1));
    uint64_t mbits = (ix & (((uint64_t)1 << 52) - 1)) | ((uint64_t)1023 << 52);
    if (i >= 53) { /* m >= 1 + 53/128: halve it, so that m < 1.4140625 */
        mbits -= (uint64_t)1 << 52;
        k += 1;
    }
    const double m = double_of(mbits);
    const double invc = LOG_TABLE[i].invc;

    /* r = m invc - 1 = rh + rl: m's top 32 bits times invc (21 bits) is exact, and so
     * is its difference to 1 (Sterbenz); the rest of m (below 2**-31) times invc
     * rounds by under 2**-84. */
    const double mh = double_of(mbits & ~(((uint64_t)1 << 21) - 1));
    const dd r = two_sum(mh * invc - 1.0, (m - mh) * invc);
    const double rh = r.hi, rl = r.lo;

    /* log1p(r) = r - r**2/2 + r**3 (1/3 - r/4 + ...), the square in double-double;
     * the series is cut after r**11 (|r| < 2**-7: the next term is below 2**-80 |r|). */
    const dd sq = two_sqr(rh);
    const double tail = rh * sq.hi * horner(LOG1P_C, 9, rh);
    const dd a = two_sum(rh, -0.5 * sq.hi);
    const double a_lo = a.lo + rl - (0.5 * sq.lo + rh * rl) + tail;

    /* + k ln 2 + log(c) */
    const double kd = (double)k;
    const dd s = two_sum(kd * LN2_HI, LOG_TABLE[i].logc_hi);
    const dd u = two_sum(s.hi, a.hi);
    const double lo = s.lo + u.lo + (kd * LN2_LO + LOG_TABLE[i].logc_lo + a_lo);
    return fast_two_sum(u.hi, lo);
}

/* ---------------------------------------------------------------------------------
 * exp(zh + zl) for -746 <= zh <= 710, |zl| <= 2**-52 |zh|, rounded once at the end.
 * z = (128 n + j) ln2/128 + r, |r| <= ln2/256 + tiny, exp(z) = 2**n 2**(j/128) exp(r). */
static double
exp_dd(double zh, double zl)
{
    const double shift = 0x1.8p52; /* (zh 128/ln2 + shift) - shift rounds to an integer */
    const double kd = (zh * INV_LN2N + shift) - shift;
    const int64_t ki = (int64_t)kd;
    const int j = (int)(ki & ((1 << ADAMC_EXP_BITS) - 1));
    const int n = (int)((ki - j) / (1 << ADAMC_EXP_BITS));

    /* zh - kd LN2N_HI is exact: kd LN2N_HI is (kd < 2**18, 35 bits), and it lies
     * within a factor 2 of zh whenever kd != 0 (Sterbenz) */
    const dd r = two_sum(zh - kd * LN2N_HI, zl - kd * LN2N_LO);
    const double rh = r.hi;

    /* exp(r) - 1 = rh + q (Taylor to r**6: |r| < 2**-8.4, the rest is below 2**-70) */
    const double q = r.lo + rh * r.lo + rh * rh * horner(EXP_C, 5, rh);
    const double th = EXP_TABLE[j].hi, tl = EXP_TABLE[j].lo;
    /* 2**(j/128) (1 + rh + q) = th + th rh + (th q + tl (1 + rh + q)) */
    const dd p = two_prod_split(rh, th, EXP_TABLE[j].hi_top, EXP_TABLE[j].hi_rest);
    const double small = p.lo + th * q + (tl + tl * rh);
    const dd s = fast_two_sum(th, p.hi);

    if (n > 1023) /* near overflow: 2**n in two factors (inf when it overflows) */
        return (s.hi + (s.lo + small)) * pow2i(n - 1) * 2.0;
    if (n >= -1022)
        return (s.hi + (s.lo + small)) * pow2i(n);
    /* A subnormal result, rounded once: scaled by 2**(1022 + n) (exactly), the value
     * v lies in [0, 1); 1 + v rounds at the spacing 2**-52 that the subnormals have
     * after scaling by 2**-1022, so (hi + lo) - 1 is v rounded as the subnormal will
     * be, and the last product is exact. */
    const double sc = double_of((uint64_t)(1022 + n + 1023) << 52);
    const double vh = s.hi * sc, vl = (s.lo + small) * sc;
    const double hi = 1.0 + vh;
    const double lo = ((1.0 - hi) + vh) + vl;
    return ((hi + lo) - 1.0) * 0x1p-1022;
}

/* 0: not an integer, 1: odd integer, 2: even integer (y finite) */
static int
integer_kind(double y)
{
    const uint64_t iy = bits_of(y) & ~((uint64_t)1 << 63);
    const int e = (int)(iy >> 52) - 1023;
    if (e < 0)
        return iy == 0 ? 2 : 0;
    if (e >= 53)
        return 2;
    const uint64_t mant = (iy & (((uint64_t)1 << 52) - 1)) | ((uint64_t)1 << 52);
    if (mant & ((((uint64_t)1 << (52 - e)) - 1)))
        return 0; /* fraction bits */
    return (mant >> (52 - e)) & 1 ? 1 : 2;
}

/* sign * x**y for finite x > 0, finite y != 0 */
static double
pow_finite(double x, double y, double sign)
{
    const dd l = log_dd(x);
    const double zh0 = y * l.hi;
    if (zh0 > 710.0)
        return sign * 0x1p1023 * 0x1p1023; /* inf (raising overflow) */
    if (zh0 < -746.0)
        return sign * 0x1p-1022 * 0x1p-1022; /* 0 (raising underflow) */
    dd z = two_prod(y, l.hi);
    z = fast_two_sum(z.hi, z.lo + y * l.lo);
    return sign * exp_dd(z.hi, z.lo);
}

double
adamc_pow(double x, double y)
{
    const uint64_t ix = bits_of(x), iy = bits_of(y);
    const uint64_t ax = ix & ~((uint64_t)1 << 63), ay = iy & ~((uint64_t)1 << 63);
    const uint64_t inf = (uint64_t)0x7ff << 52;
    double sign = 1.0;

    /* the common case first: x > 0 finite, y finite and not 0 */
    if (ix - 1 < inf - 1 && ay - 1 < inf - 1)
        return pow_finite(x, y, 1.0);

    /* C99 Annex F's special cases, in its order */
    if (ay == 0 || ix == bits_of(1.0))
        return 1.0;
    if (ax > inf || ay > inf)
        return x + y; /* NaN */
    if (ay == inf) {
        if (x == -1.0)
            return 1.0;
        return (ax < bits_of(1.0)) == (y < 0.0) ? y * y : 0.0; /* +inf or +0 */
    }
    if (ax == 0 || ax == inf) {
        const int odd = integer_kind(y) == 1;
        const double mag = (ax == 0) == (y < 0.0) ? (double)INFINITY : 0.0;
        return (odd && (ix >> 63)) ? -mag : mag;
    }
    if (x < 0.0) {
        const int kind = integer_kind(y);
        if (kind == 0)
            return (x - x) / (x - x); /* NaN, raising invalid */
        if (kind == 1)
            sign = -1.0;
        x = -x;
    }

    return pow_finite(x, y, sign);
}

/* ---------------------------------------------------------------------------------
 * cos(x) for |x| < 2**19 pi/2 (the schedules call it on [0, pi]); NaN beyond. */

/* cos(rh + rl), |rh| <= pi/4 + tiny, |rl| <= 2**-52 |rh| (Taylor to r**20) */
static double
kernel_cos(double rh, double rl)
{
    const dd z = two_sqr(rh);
    const double zh = z.hi;
    const double hz = 0.5 * zh;
    const double w = 1.0 - hz;
    /* cos(r) = 1 - r**2/2 + r**4 (1/24 - r**2/720 + ...) */
    const double poly = zh * zh * horner(COS_C, 9, zh);
    /* w's rounding error is ((1 - w) - hz), exactly; r**2 = zh + z.lo + 2 rh rl */
    return w + (((1.0 - w) - hz) + (poly - (0.5 * z.lo + rh * rl)));
}

/* sin(rh + rl), same ranges (Taylor to r**21). The leading correction -r**3/6 (up to
 * 0.08 r) is formed in double-double: rounded as a double it would add 0.1 ulp. */
static double
kernel_sin(double rh, double rl)
{
    const dd z = two_sqr(rh);
    const dd a = two_prod(rh, z.hi);                   /* rh zh */
    const dd t = two_prod(a.hi, SIN_C[0]);             /* rh zh (-1/6), rounded 1/6 */
    const double poly = horner(SIN_C + 1, 9, z.hi);    /* 1/120 - r**2/5040 + ... */
    const double low = t.lo + a.hi * SIN_C0_LO + (a.lo + rh * z.lo) * SIN_C[0] +
                       a.hi * z.hi * poly + rl * (1.0 - 0.5 * z.hi);
    const dd h = fast_two_sum(rh, t.hi);
    return h.hi + (h.lo + low);
}

double
adamc_cos(double x)
{
    const double ax = x < 0.0 ? -x : x;
    if (!(ax < 0x1.921fb54442d18p19)) /* beyond 2**19 pi/2, infinite or NaN */
        return (x - x) / (x - x);
    if (ax <= 0x1.921fb54442d18p-1) /* pi/4 */
        return kernel_cos(ax, 0.0);

    /* n = nearest integer to ax / (pi/2); r = ax - n pi/2 in double-double, with
     * pi/2 in four parts: n PIO2_k is exact (n < 2**19, 33 bits), and so is
     * ax - n PIO2_1 (Sterbenz, the two are within a factor 2). */
    const double shift = 0x1.8p52;
    const double nd = (ax * INV_PIO2 + shift) - shift;
    const int n = (int)nd;
    const dd s = two_sum(ax - nd * PIO2_1, -(nd * PIO2_2));
    const dd t = two_sum(s.hi, -(nd * PIO2_3));
    const dd r = fast_two_sum(t.hi, t.lo + s.lo - nd * PIO2_4);

    switch (n & 3) {
    case 0:
        return kernel_cos(r.hi, r.lo);
    case 1:
        return -kernel_sin(r.hi, r.lo);
    case 2:
        return -kernel_cos(r.hi, r.lo);
    default:
        return kernel_sin(r.hi, r.lo);
    }
}
