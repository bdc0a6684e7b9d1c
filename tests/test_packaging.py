"""Packaging: `python -m build` makes an sdist and a wheel; the sdist installs in a fresh
virtual environment and works; no -march=native or -ffast-math anywhere in the build.

The build and the install need the package index (build requirements, numpy, scipy);
they take a few minutes, so the test is marked slow (it runs in CI).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


UNSAFE = ("-march=" + "native", "-mtune=" + "native", "-ffast" + "-math", "-O" + "fast")


def test_no_machine_specific_or_unsafe_flags():
    for path in [ROOT / "setup.py", ROOT / "pyproject.toml", *ROOT.glob("src_c/*"),
                 ROOT / "adamc" / "_kernels.pyx"]:
        text = path.read_text()
        for flag in UNSAFE:
            assert flag not in text, f"{flag} in {path.name}"


@pytest.mark.slow
def test_sdist_and_wheel_build_and_the_sdist_installs(tmp_path):
    # build.__main__: a checkout's build/ folder imports as a namespace package "build"
    pytest.importorskip("build.__main__")
    dist = tmp_path / "dist"
    # no --sdist/--wheel: build makes the sdist, then the wheel from the unpacked sdist
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sdist = next(dist.glob("adamc-*.tar.gz"))
    wheel = next(dist.glob("adamc-*.whl"))

    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "adamc/_kernels.pyx",
                   "adamc/_kernels.pyi", "adamc/py.typed", "src_c/adamc.h",
                   "src_c/adamc_algos.inc", "src_c/adamc_level.inc", "src_c/adamc_avx512.c",
                   "src_c/adamc_msvc.h"):
        assert needed in names, f"{needed} missing from the sdist"
    assert not any(n.endswith((".so", ".o")) for n in names)
    with zipfile.ZipFile(wheel) as zf:
        wnames = zf.namelist()
    assert any(n.startswith("adamc/_kernels") and n.endswith(".so") for n in wnames)
    assert "adamc/py.typed" in wnames and "adamc/_kernels.pyi" in wnames
    assert "adamc/_fitting/methods.pyi" in wnames  # package data of a subpackage

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    # the clean venv sees only what it installed (a PYTHONPATH to a checkout would
    # make pip take adamc for installed, and the checks import the checkout's)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    py = env_dir / "bin" / "python"
    # The wheel was compiled from the sdist, not from the checkout: installing it shows
    # that the sdist builds and installs, without a second compile (two minutes here).
    # With the [mpi] extra: mpi4py and an MPI library come from the package index too.
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q",
                           f"adamc[mpi] @ {wheel.resolve().as_uri()}"],
                          capture_output=True, text=True, timeout=1800, env=clean)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check = ("import numpy as np, adamc; x = np.array([8.0]); opt = adamc.Adam(x, lr=0.1)\n"
             "for _ in range(3): opt.step(2 * (x - 2))\n"
             "print(adamc.__version__, round(float(x[0]), 6), adamc.show_config('dicts')['simd_level'])")
    proc = subprocess.run([str(py), "-c", check], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=clean)
    assert proc.returncode == 0, proc.stderr
    version, value, level = proc.stdout.split()
    assert version == "0.1.0" and abs(float(value) - 7.7) < 1e-3

    mpi_check = ("import numpy as np, adamc\n"
                 "from adamc.distributed import DistributedOptimizer\n"
                 "from mpi4py import MPI\n"
                 "x = np.zeros(3000)\n"
                 "opt = DistributedOptimizer(adamc.Adam(x, lr=0.1), mode='sharded')\n"
                 "opt.step(np.full(3000, MPI.COMM_WORLD.rank + 1.0))\n"
                 "same = len({x.tobytes() for x in MPI.COMM_WORLD.allgather(x)}) == 1\n"
                 "if MPI.COMM_WORLD.rank == 0: print(round(x[0], 6), round(x[-1], 6), same)\n")
    proc = subprocess.run([str(env_dir / "bin" / "mpiexec"), "-n", "2", str(py), "-c",
                           mpi_check], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=clean)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-0.1", "-0.1", "True"]


@pytest.mark.slow
def test_hot_loops_are_vectorised():
    """Every specialised loop of every compiled SIMD level uses packed arithmetic on
    its level's registers, and nothing is fused into multiply-adds
    (tools/check_vectorized.py reads the object code)."""
    import importlib.util

    from adamc import _kernels

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("check_vectorized",
                                                  root / "tools" / "check_vectorized.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    if check.objdump(_kernels.__file__) is None:
        pytest.skip(f"no objdump for {check.machine(_kernels.__file__)}")
    found = check.variants(_kernels.__file__)
    levels = {level for level, _ in found.values()}
    assert "baseline" in levels and len(found) >= 2 * len(_kernels.ALGORITHMS)
    if check.machine(_kernels.__file__) == "x86-64" and \
            _kernels.available_simd_levels()[-1] != "baseline":
        assert {"avx2", "avx512"} <= levels
    assert check.not_vectorised(_kernels.__file__) == []
    # and no a*b + c contracted into one fused rounding (the bits would differ on the
    # platforms that have FMA, aarch64 above all)
    assert check.fused(_kernels.__file__) == []


@pytest.mark.slow
def test_windows_cross_compile():
    """tools/cross_windows.sh --quick: the pool and the runtime compile for 64-bit
    Windows with mingw-w64 (warnings are errors), with GCC's atomics and with MSVC's
    (src_c/adamc_msvc.h); the pool uses Win32 threads and WaitOnAddress, not POSIX
    threads; its stress test links as a Windows program. Skips without the cross
    compiler. (The script without options also compiles the kernels and runs the
    stress test under Wine.)"""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = str(ROOT / "tools" / "cross_windows.sh")
    proc = subprocess.run(["bash", script, "--quick", "--no-run"], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "linked pool_stress.exe" in proc.stdout


def test_wheel_configuration_covers_the_platforms():
    """pyproject.toml's [tool.cibuildwheel] and the workflow that runs it name every
    platform of the wheel matrix, and tools/test_wheel.py's list of the source tree's
    tests and folders is current."""
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        cfg = tomllib.load(f)["tool"]["cibuildwheel"]
    assert set(cfg["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert set(cfg["macos"]["archs"]) == {"x86_64", "arm64"}
    assert cfg["windows"]["archs"] == ["AMD64"]
    for arch in ("x86_64", "aarch64"):
        assert cfg["linux"][f"manylinux-{arch}-image"].startswith("manylinux")
        assert cfg["linux"][f"musllinux-{arch}-image"].startswith("musllinux")
    assert "tools/test_wheel.py {project}" in cfg["test-command"]
    assert "torch" not in " ".join(cfg["test-requires"])  # not on every platform

    workflow = (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    assert "pypa/cibuildwheel@" in workflow and "sdist:" in workflow
    jobs = set(re.findall(r"os: ([\w.-]+), archs: (\w+), skip: \"([^\"]*)\"", workflow))
    linux = {(arch, skip) for os_, arch, skip in jobs if os_.startswith("ubuntu")}
    assert linux == {(arch, f"*-{other}linux_*") for arch in ("x86_64", "aarch64")
                     for other in ("many", "musl")}
    assert {arch for os_, arch, _ in jobs if os_.startswith("macos")} == {"x86_64", "arm64"}
    assert {arch for os_, arch, _ in jobs if os_.startswith("windows")} == {"AMD64"}

    spec = importlib.util.spec_from_file_location("test_wheel",
                                                  ROOT / "tools" / "test_wheel.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    for name in runner.SOURCE_TREE_TESTS:
        assert (ROOT / "tests" / name).exists(), name
    for name in runner.COPIED:
        assert (ROOT / name).is_dir(), name
    for name in runner.COPIED_FILES:
        assert (ROOT / name).is_file(), name
