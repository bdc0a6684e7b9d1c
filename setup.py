"""Build of adamc's compiled core.

The C kernels in src_c/ are compiled once per SIMD level (the level files set their
own compiler target), so the build itself uses only portable flags: nothing tuned to
the build machine's CPU, and no "fast math" (it would break NaN handling and the
reproducibility of results). -ffp-contract=off keeps the compiler from fusing a
multiply and an add on some code paths only, which would break bit-reproducibility
across SIMD levels.
Threads come from adamc's own pool (src_c/adamc_pool.c: POSIX threads, or Win32
threads on Windows); set ADAMC_NO_THREADS=1 to build a single-threaded extension, and
ADAMC_POOL_CONDVAR=1 to make the pool sleep on condition variables (as on macOS)
instead of Linux's futex. OpenMP is not used: its spinning teams slow a step down next
to BLAS and on a busy host. MSVC gets the GCC builtins the sources use from
src_c/adamc_msvc.h (force-included).
"""
import glob
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_SOURCES = [
    "src_c/adamc_runtime.c",
    "src_c/adamc_math.c",
    "src_c/adamc_pool.c",
    "src_c/adamc_baseline.c",
    "src_c/adamc_avx2.c",
    "src_c/adamc_avx512.c",
]
BASE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-strict-aliasing"]


def _compile_in_parallel(compiler, jobs):
    """Compile an extension's sources ``jobs`` at a time (setuptools compiles them one
    by one; the kernels are one object per SIMD level, each compiled for long)."""
    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj):
            src, ext = build[obj]
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, [obj for obj in objects if obj in build]))
        return objects

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if jobs > 1 and self.compiler.compiler_type == "unix":
            _compile_in_parallel(self.compiler, jobs)
        use_threads = os.environ.get("ADAMC_NO_THREADS", "") in ("", "0")
        if self.compiler.compiler_type == "msvc":
            # C11 for _Generic (the atomics of adamc_msvc.h), `restrict` and the
            # standard preprocessor; the shim gives MSVC the GCC builtins the sources
            # use. /fp:precise does not contract to FMA (Visual Studio 2022).
            shim = os.path.abspath(os.path.join("src_c", "adamc_msvc.h"))
            flags, link = ["/O2", "/fp:precise", "/std:c11", "/FI" + shim], []
            shown = ["/O2", "/fp:precise", "/std:c11", "/FIadamc_msvc.h"]
            if not use_threads:
                flags.append("/DADAMC_NO_THREADS")
        else:
            # libm named at link time: an extension that leaves pow unversioned binds
            # glibc's oldest pow (its SVID-compatible wrapper, a little slower) instead
            # of the one Python calls (the same code inside, the same bits).
            flags, link = list(BASE_FLAGS), ["-lm"]
            if not use_threads:
                flags.append("-DADAMC_NO_THREADS")
            elif self.compiler.compiler_type == "mingw32":
                link.append("-lsynchronization")  # WaitOnAddress; Win32 threads
            else:
                flags.append("-pthread")
                link.append("-pthread")
                # The condition-variable wait of macOS and the BSDs, forced on Linux
                # (for its tests: tools/pool_check.sh).
                if os.environ.get("ADAMC_POOL_CONDVAR", "") not in ("", "0"):
                    flags.append("-DADAMC_POOL_CONDVAR=1")
            shown = flags
        build_info = " ".join(shown) + (" (threads)" if use_threads else " (no threads)")
        for ext in self.extensions:
            ext.extra_compile_args = flags + ext.extra_compile_args
            ext.extra_link_args = link + ext.extra_link_args
            ext.define_macros.append(("ADAMC_BUILD_FLAGS", '"%s"' % build_info))
        if not use_threads:
            print("adamc: building without threads (updates will run on one thread)",
                  file=sys.stderr)
        super().build_extensions()


extensions = [
    Extension(
        "adamc._kernels",
        sources=["adamc/_kernels.pyx"] + C_SOURCES,
        include_dirs=[np.get_include(), "src_c"],
        depends=["src_c/adamc.h", "src_c/adamc_config.h", "src_c/adamc_msvc.h",
                 "src_c/adamc_math_tables.h",
                 "src_c/adamc_level.inc", "src_c/adamc_algos.inc",
                 *sorted(glob.glob("adamc/*.pxi"))],  # the parts _kernels.pyx includes
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
