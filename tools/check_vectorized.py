"""Check that the hot loops of the built extension were vectorised.

Run:  python tools/check_vectorized.py [path/to/_kernels*.so]

Disassembles the extension (``objdump -d``) and, for every specialised loop variant
(symbols ``<algo>_v_<bits>_<f32|f64>_<level>``, see src_c/adamc_algos.inc), requires
packed floating-point arithmetic on the level's vector registers: ``%zmm`` for
avx512, ``%ymm`` for avx2 and ``%xmm`` packed (``...ps``/``...pd``) for baseline.
A variant whose loop the compiler left scalar would run 4-16 times slower without any
test noticing (the results are the same bits). tests/test_packaging.py runs it.
Exits 1 and lists the offenders when a variant is not vectorised.
"""
from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = re.compile(r"^[0-9a-f]+ <(?P<name>\w+_v_[01]{7}_(?P<dtype>f32|f64)_(?P<level>\w+))>:$")
REGISTER = {"avx512": "%zmm", "avx2": "%ymm", "baseline": "%xmm"}
PACKED = re.compile(r"\s(v?(?:add|sub|mul|div|sqrt|max|min)p[sd])\s")


def variants(path: str) -> dict[str, tuple[str, list[str]]]:
    """symbol -> (level, instructions) of every loop variant in the object code."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], check=True,
                         capture_output=True, text=True).stdout
    found: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in out.splitlines():
        m = SYMBOL.match(line)
        if m:
            current = m["name"]
            found[current] = (m["level"], [])
        elif not line.strip():
            current = None
        elif current is not None:
            found[current][1].append(line)
    return found


def not_vectorised(path: str) -> list[str]:
    bad = []
    for name, (level, lines) in sorted(variants(path).items()):
        reg = REGISTER[level]
        if not any(PACKED.search(line) and reg in line for line in lines):
            bad.append(name)
    return bad


def main(argv: list[str]) -> int:
    if shutil.which("objdump") is None:
        print("objdump not found", file=sys.stderr)
        return 2
    paths = argv or glob.glob(str(ROOT / "adamc" / "_kernels*.so"))
    if not paths:
        print("no built extension found (pip install -e .)", file=sys.stderr)
        return 2
    found = variants(paths[0])
    bad = not_vectorised(paths[0])
    levels = sorted({level for level, _ in found.values()})
    print(f"{len(found)} loop variants ({', '.join(levels)}), {len(bad)} not vectorised")
    for name in bad:
        print("  not vectorised:", name)
    return 1 if bad or not found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
