"""show_config, threads and the ADAMC_SIMD environment variable."""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import adamc
from adamc import _kernels
from conftest import LEVELS


def test_show_config_prints_and_returns(capsys):
    assert adamc.show_config() is None
    out = capsys.readouterr().out
    assert "simd_level" in out and _kernels.simd_level() in out and "thread_policy" in out
    info = adamc.show_config(mode="dicts")
    assert info["simd_level"] == _kernels.simd_level()
    assert info["simd_levels_available"] == LEVELS
    assert info["num_threads"] == adamc.get_num_threads()
    assert info["adamc"] == adamc.__version__
    import scipy
    assert info["scipy"] == scipy.__version__ and info["numpy"] == np.__version__
    assert "scipy" in out and scipy.__version__ in out.split("scipy")[1].splitlines()[0]
    assert "native" not in info["build_flags"] and "fast-math" not in info["build_flags"]
    with pytest.raises(ValueError, match="mode must be"):
        adamc.show_config(mode="json")


X86 = platform.machine().lower() in ("x86_64", "amd64")
ARM64 = platform.machine().lower() in ("aarch64", "arm64")


def test_levels_start_with_baseline_and_include_the_one_in_use():
    # aarch64's baseline is NEON (every aarch64 CPU has it), named so
    assert LEVELS[0] == ("neon" if ARM64 else "baseline")
    assert _kernels.simd_level() in LEVELS
    if X86:
        assert _kernels.LEVEL_NAMES == ("baseline", "avx2", "avx512")
    if ARM64:
        assert _kernels.LEVEL_NAMES == ("neon",) and LEVELS == ["neon"]
        assert adamc.show_config("dicts")["simd_level"] == "neon"


def test_baseline_names_the_lowest_level_everywhere():
    previous = _kernels._use_simd_level("baseline")
    try:
        assert _kernels.simd_level() == LEVELS[0]
    finally:
        _kernels._use_simd_level(previous)
    assert _kernels._choose_level("baseline", 0) == (LEVELS[0], None)


def test_set_num_threads_roundtrip_and_validation():
    old = adamc.get_num_threads()
    try:
        adamc.set_num_threads(1)
        assert adamc.get_num_threads() == 1
        with pytest.raises(ValueError, match="n must be >= 1, got 0"):
            adamc.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an int"):
            adamc.set_num_threads(2.0)
        assert adamc.get_num_threads() == 1
    finally:
        adamc.set_num_threads(old)


def test_use_simd_level_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _kernels._use_simd_level("sse9")


def run_with_env(value):
    env = dict(os.environ, ADAMC_SIMD=value)
    code = "import adamc; from adamc import _kernels; print(_kernels.simd_level())"
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_environment_variable_forces_a_level(level):
    used, err = run_with_env(level.upper())
    assert used == level and "Warning" not in err


def test_environment_variable_with_bad_value_warns_and_uses_best():
    used, err = run_with_env("turbo")
    assert used == LEVELS[-1]
    assert "RuntimeWarning" in err and "ADAMC_SIMD='turbo'" in err


@pytest.mark.skipif(not X86, reason="the x86-64 levels")
def test_level_choice_for_every_cpu():
    assert _kernels._choose_level(None, 2) == ("avx512", None)
    assert _kernels._choose_level(" AVX2 ", 2) == ("avx2", None)
    assert _kernels._choose_level("baseline", 0) == ("baseline", None)
    name, warning = _kernels._choose_level("avx512", 1)
    assert name == "avx2" and "does not support" in warning
    name, warning = _kernels._choose_level("avx2", 0)
    assert name == "baseline" and "does not support" in warning


def test_threads_do_not_change_results_of_an_optimizer():
    rng = np.random.default_rng(0)
    start = rng.standard_normal(300_000).astype(np.float32)
    grads = [rng.standard_normal(start.size).astype(np.float32) for _ in range(5)]
    results = []
    old = adamc.get_num_threads()
    try:
        for threads in (1, 2):
            adamc.set_num_threads(threads)
            x = start.copy()
            opt = adamc.Adam(x, lr=0.01)
            for g in grads:
                opt.step(g)
            results.append(x)
    finally:
        adamc.set_num_threads(old)
    assert np.array_equal(results[0].view(np.uint32), results[1].view(np.uint32))
