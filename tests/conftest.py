"""Shared fixtures: SIMD levels and thread counts to run the kernels at."""
import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import adamc
from adamc import _kernels

LEVELS = list(_kernels.available_simd_levels())
THREADS = [1, 2] if _kernels.have_threads() else [1]
# Sizes that exercise every vector width's body and remainder (16 float32 lanes per
# AVX-512 register, 8 per AVX2 register, 64-element thread split points).
SIZES = [0, 1, 7, 15, 16, 17, 63, 64, 1023, 2**20 + 3]
SMALL_SIZES = [n for n in SIZES if n < 2**20]


def marked_sizes(sizes):
    """Sizes to parametrize over, the large ones (above 2**16 elements) marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n > 2**16 else n for n in sizes]
DTYPES = [np.float32, np.float64]


@contextlib.contextmanager
def kernel_config(level, threads):
    """Run the kernels at a SIMD level on a number of threads; with threads > 1,
    every array above 64 elements is split into 64-element chunks shared by the
    threads (the size threshold is lifted and the policy is fixed)."""
    previous_level = _kernels._use_simd_level(level)
    previous_threads = adamc.get_num_threads()
    previous_min = _kernels._set_parallel_threshold_bytes(0 if threads > 1 else 1 << 62)
    previous_chunk = _kernels._set_step_chunk(64 if threads > 1 else 4096)
    previous_policy = _kernels._set_thread_policy("fixed")
    adamc.set_num_threads(threads)
    try:
        yield
    finally:
        _kernels._use_simd_level(previous_level)
        _kernels._set_parallel_threshold_bytes(previous_min)
        _kernels._set_step_chunk(previous_chunk)
        _kernels._set_thread_policy(previous_policy)
        adamc.set_num_threads(previous_threads)


@pytest.fixture(params=[(lv, th) for lv in LEVELS for th in THREADS],
                ids=lambda p: f"{p[0]}-{p[1]}thr")
def level_threads(request):
    """Every SIMD level and thread count: for what differs between levels (NaN
    handling, the golden digests); the emulation and reference checks use
    ``one_level``, and identity across levels and threads has its own tests
    (tests/test_conformance.py and the bit-identity tests of each file)."""
    with kernel_config(*request.param):
        yield request.param


# The level the dispatcher picks on this machine (the widest), on one thread.
ONE_LEVEL = (LEVELS[-1], 1)


@pytest.fixture
def one_level():
    """The emulation and reference checks run at one SIMD level on one thread;
    assert_same_bits_everywhere and the bit-identity tests carry the result to every
    other level and thread count."""
    with kernel_config(*ONE_LEVEL):
        yield ONE_LEVEL


def bits(a):
    """View of an array's bits, for exact comparisons that also match NaN payloads."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits_everywhere(run, threads_from=THREADS):
    """``run(dtype)`` returns arrays; at every SIMD level and thread count (of
    ``threads_from``) they must have the bits of the baseline level on one thread, for
    both dtypes."""
    for dtype in DTYPES:
        with kernel_config("baseline", 1):
            expected = run(dtype)
        for level in LEVELS:
            for threads in threads_from:
                with kernel_config(level, threads):
                    got = run(dtype)
                assert len(got) == len(expected)
                for a, b in zip(got, expected):
                    assert np.array_equal(bits(a), bits(b)), \
                        f"{np.dtype(dtype)}, {level}, {threads} threads"


def noisy_quadratic(n, seed=0):
    """A noisy ill-conditioned quadratic: gradient A p - b + noise (noise fixed per
    step, so that every implementation sees the same gradients at the same point).
    Returns (a starting point, grad(p, t) for step t < 200)."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(-1, 1, n)
    target = rng.standard_normal(n)
    noise = rng.standard_normal((200, n)) * 0.1

    def grad(p, t):
        return scale * (p - target) + noise[t]
    return rng.standard_normal(n), grad


def mpiexec() -> str | None:
    """The mpiexec of this environment (pip install mpich puts it beside python)."""
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else shutil.which("mpiexec")
