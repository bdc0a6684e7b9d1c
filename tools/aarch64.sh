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
#   bash tools/aarch64.sh all [pytest args]   all of the above
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

run_python() {
    local cache
    cache="$(dirname "$root")/arm64-pycache"
    mkdir -p "$cache"
    # byte code cached outside the root and the checkout: each module is compiled under
    # emulation once, not in every process the tests start
    env -u PYTHONDONTWRITEBYTECODE QEMU_LD_PREFIX="$root" PYTHONPYCACHEPREFIX="$cache" \
        "$root/usr/bin/python3" "$@"
}

build() {
    # Cython on the host (the generated C is the same for every platform), then
    # setup.py on the arm64 Python with the cross compiler; a stand-in for
    # Cython.Build hands it the generated file instead of cythonizing again.
    local py=${PYTHON:-python3}
    "$py" -c "from Cython.Build import cythonize; cythonize(['adamc/_kernels.pyx'], compiler_directives={'language_level': 3}, quiet=True)"
    # The root's Python sees /usr through QEMU_LD_PREFIX, the cross compiler does not:
    # it gets the root's Python and NumPy headers first.
    local tmp flags="" dir
    tmp="$(dirname "$root")/arm64-build"
    for dir in $(run_python -c "import sysconfig, numpy; print(sysconfig.get_config_var('INCLUDEPY'), numpy.get_include())"); do
        [ -d "$root$dir" ] && dir="$root$dir"
        flags="$flags -I$dir"
    done
    CFLAGS="$flags -idirafter $root/usr/include" run_python - "$tmp" <<'EOF'
import sys, types
def cythonize(extensions, **kwargs):
    for ext in extensions:
        ext.sources = [s[:-4] + ".c" if s.endswith(".pyx") else s for s in ext.sources]
    return extensions
sys.modules["Cython"] = types.ModuleType("Cython")
sys.modules["Cython.Build"] = types.ModuleType("Cython.Build")
sys.modules["Cython.Build"].cythonize = cythonize
sys.argv = ["setup.py", "-q", "build_ext", "--inplace", "--build-temp", sys.argv[1]]
exec(compile(open("setup.py").read(), "setup.py", "exec"))
EOF
    ls adamc/_kernels.cpython-*-aarch64-linux-gnu.so >/dev/null
}

run_tests() {
    run_python -c "import platform, adamc; print('adamc on', platform.machine(), adamc.show_config('dicts')['simd_level'])"
    # (CC: the tests that compile a C objective must make aarch64 code)
    CC=${ADAMC_ARM_CC:-aarch64-linux-gnu-gcc} run_python -m pytest -p no:cacheprovider "$@"
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
    ci) ci ;;
    *) echo "usage: bash tools/aarch64.sh {setup|root|build|test|python|all|ci} [args]" >&2; exit 2 ;;
esac
