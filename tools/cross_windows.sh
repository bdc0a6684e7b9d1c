#!/usr/bin/env bash
# Cross-compile adamc's C sources for 64-bit Windows with mingw-w64 (warnings are
# errors), check that the pool uses the Win32 primitives, and link the pool's stress
# test (tests/pool_stress.c) as a Windows program; when Wine is installed, run it.
#
#   bash tools/cross_windows.sh [--quick] [--no-run]   exit 0: all held; 77: no compiler
#
# --quick: the pool and the runtime only (the kernels take a minute or more to compile
# at -O3). --no-run: compile and link only. tests/test_packaging.py uses both: Wine is
# slow to start, and the stress test under Wine takes ten seconds or more.
#
# Two builds of the pool: with GCC's atomics (what mingw-w64 builds use), and with
# the Interlocked atomics of src_c/adamc_msvc.h (what MSVC builds use; selected under
# GCC by ADAMC_MSVC_SHIM_TEST). Debian: apt-get install gcc-mingw-w64-x86-64-win32
# (and wine to run the programs). The Cython module is not built: that needs
# Windows' Python headers and libraries (CI builds it: .github/workflows/wheels.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0 run=1
for arg in "$@"; do
    case $arg in
        --quick) quick=1 ;;
        --no-run) run=0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
CC=${CC_WINDOWS:-x86_64-w64-mingw32-gcc}
if ! command -v "$CC" >/dev/null; then
    echo "skipped: $CC not found (apt-get install gcc-mingw-w64-x86-64-win32)"
    exit 77
fi
NM=${CC%gcc}nm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-O3 -ffp-contract=off -fno-math-errno -fno-strict-aliasing -Wall -Wextra -Werror
       -Isrc_c)
shim=(-DADAMC_MSVC_SHIM_TEST -DADAMC_NO_DISPATCH -include src_c/adamc_msvc.h)

sources=(src_c/*.c)
[ $quick = 1 ] && sources=(src_c/adamc_pool.c src_c/adamc_runtime.c)
for src in "${sources[@]}"; do
    name=$(basename "$src" .c)
    "$CC" "${flags[@]}" -c "$src" -o "$work/$name.o" &
    "$CC" "${flags[@]}" "${shim[@]}" -c "$src" -o "$work/$name.shim.o" &
    wait
done
echo "compiled for Windows: ${sources[*]} (GCC atomics and MSVC's)"

symbols=$("$NM" "$work/adamc_pool.o")
for needed in WaitOnAddress WakeByAddressSingle _beginthreadex QueryPerformanceCounter; do
    grep -q "$needed" <<<"$symbols" || { echo "the pool does not use $needed"; exit 1; }
done
if grep -q "pthread_" <<<"$symbols"; then
    echo "the Windows pool uses POSIX threads"; exit 1
fi

# pool_stress.c itself uses POSIX threads (mingw-w64's winpthreads, linked statically):
# only its callers are pthreads, the pool's own workers are Win32 threads.
for variant in gcc shim; do
    obj=$work/adamc_pool.o
    [ "$variant" = shim ] && obj=$work/adamc_pool.shim.o
    "$CC" -O1 -Wall -Werror -Isrc_c tests/pool_stress.c "$obj" -static -pthread \
        -lsynchronization -o "$work/pool_stress_$variant.exe"
done
echo "linked pool_stress.exe (both atomics)"

if [ $run = 0 ]; then
    exit 0
fi
if ! command -v wine >/dev/null; then
    echo "not run: wine is not installed"
    exit 0
fi
export WINEPREFIX=${WINEPREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/adamc-wine}
export WINEDEBUG=-all
mkdir -p "$WINEPREFIX"
for variant in gcc shim; do
    for run in "3 2 60" "1 2 60" "4 3 40" "3 4 40 churn"; do
        # shellcheck disable=SC2086
        out=$(timeout 300 wine "$work/pool_stress_$variant.exe" $run 2>"$work/err") || {
            echo "pool_stress.exe ($variant atomics) $run failed under wine:"
            cat "$work/err"; echo "$out"; exit 1; }
        echo "wine pool_stress.exe ($variant atomics) $run: $out"
    done
done
