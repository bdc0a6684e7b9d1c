"""Measure the accuracy of adamc's own pow and cos (src_c/adamc_math.c) against mpmath.

Run:  python tools/measure_math.py [samples per range, default 20000]

For each range of arguments that adamc's coefficients and schedules meet, prints the
largest error in ulps of the exact value (mpmath at 200 bits), where it occurred, and
how often the C library's pow/cos (Python's ``**`` and ``math.cos``) gives other bits.
tests/test_math.py runs the same ranges with fewer samples and asserts the bound.
"""
from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator

from pathlib import Path

import mpmath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's build
from adamc import _kernels  # noqa: E402

mpmath.mp.prec = 200


def ulp_error(got: float, exact) -> float:
    """|got - exact| in ulps of the exact value's binade (the subnormal ulp below it)."""
    if not math.isfinite(got):
        return 0.0 if got == float(exact) else math.inf
    if exact == 0:
        return 0.0 if got == 0 else math.inf
    _, e = mpmath.frexp(abs(exact))  # exact = f 2**e, f in [0.5, 1)
    ulp = mpmath.ldexp(1, max(int(e) - 53, -1074))
    return float(abs(mpmath.mpf(got) - exact) / ulp)


def _libm_pow(x: float, y: float) -> float:
    try:
        return x ** y  # the C library's pow
    except OverflowError:
        return math.inf


def _pow_case(x: float, y: float):
    return ("pow", (x, y), _kernels._pow(x, y), mpmath.power(mpmath.mpf(x), mpmath.mpf(y)),
            _libm_pow(x, y))


def _cos_case(x: float):
    return ("cos", (x,), _kernels._cos(x), mpmath.cos(mpmath.mpf(x)), math.cos(x))


def ranges(rng: random.Random) -> dict[str, Callable[[], tuple]]:
    """name -> a function drawing one case (function, args, adamc's, exact, libm's)."""

    def bias_correction():  # beta**t before the shortcut: t (1 - beta) <= 40
        beta = 1.0 - 10.0 ** rng.uniform(-12, -0.05)
        t = rng.randint(1, max(1, int(min(2.0 ** 50, 40.0 / (1.0 - beta)))))
        return _pow_case(beta, float(t))

    def radam():  # beta2**t for every t, into the subnormals
        beta = 1.0 - 10.0 ** rng.uniform(-6, -0.3)
        t = rng.randint(1, int(800.0 / (1.0 - beta)))
        return _pow_case(beta, float(t))

    def nadam():  # 0.96**(t momentum_decay)
        return _pow_case(0.96, rng.randint(1, 10 ** 7) * 10.0 ** rng.uniform(-4, -1))

    def schedules():  # gamma**k, (k + 1)**r, lr_max**power
        kind = rng.randrange(3)
        if kind == 0:
            return _pow_case(rng.uniform(0.01, 1.5), float(rng.randint(0, 5000)))
        if kind == 1:
            return _pow_case(float(rng.randint(1, 10 ** 9)), rng.uniform(0.0, 4.0))
        return _pow_case(10.0 ** rng.uniform(-8, 1), rng.uniform(0.0, 4.0))

    def general():  # any positive x, results from the subnormals to near overflow
        x = 10.0 ** rng.uniform(-307, 307)
        bound = 700.0 / max(abs(math.log(x)), 1e-300)
        return _pow_case(x, rng.uniform(-bound, bound))

    def cosine_schedule():  # cos(pi progress), progress = k / total in (0, 1]
        total = rng.randint(1, 10 ** 7)
        return _cos_case(math.pi * (rng.randint(1, total) / total))

    def cos_wide():
        return _cos_case(rng.uniform(-8e5, 8e5))

    return {"pow: bias corrections": bias_correction, "pow: RAdam's beta2**t": radam,
            "pow: NAdam's 0.96**(t psi)": nadam, "pow: schedules": schedules,
            "pow: general": general, "cos: cosine schedule [0, pi]": cosine_schedule,
            "cos: |x| < 8e5": cos_wide}


def measure(samples: int, seed: int = 0) -> Iterator[tuple[str, float, tuple, int]]:
    """(range, largest ulp error, its arguments, cases where libm's bits differ)."""
    rng = random.Random(seed)
    for name, draw in ranges(rng).items():
        worst, where, differ = 0.0, (), 0
        for _ in range(samples):
            _, args, got, exact, libm = draw()
            err = ulp_error(got, exact)
            if err > worst:
                worst, where = err, args
            differ += got != libm
        yield name, worst, where, differ


def main(argv: list[str]) -> int:
    samples = int(argv[0]) if argv else 20000
    print(f"{samples} samples per range; error in ulps of the exact value (mpmath, 200 bits)")
    for name, worst, where, differ in measure(samples):
        print(f"{name:32s} max {worst:.4f} ulp at {where!r:48s} libm differs: {differ}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
