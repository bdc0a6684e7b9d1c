"""Check that the hot loops of the built extension were vectorised, and that nothing
was contracted into fused multiply-adds.

Run:  python tools/check_vectorized.py [path/to/_kernels*.so]

Disassembles the extension (``objdump -d``; ``aarch64-linux-gnu-objdump`` for an
aarch64 build on another machine, e.g. the cross-compiled one of tools/aarch64.sh)
and, for every specialised loop variant (symbols ``<algo>_v_<bits>_<f32|f64>_<level>``,
see src_c/adamc_algos.inc), requires packed floating-point arithmetic on the level's
vector registers: on x86-64 ``%zmm`` for avx512, ``%ymm`` for avx2 and ``%xmm`` packed
(``...ps``/``...pd``) for baseline; on aarch64 NEON arithmetic on ``v`` registers
(``.4s``/``.2d``). A variant whose loop the compiler left scalar would run 2-16 times
slower without any test noticing (the results are the same bits).

It also requires that no fused multiply-add appears anywhere in the extension
(``vfmadd...`` on x86-64; ``fmadd``, ``fmla``... on aarch64, where GCC contracts a*b + c
by default): one rounding instead of two would change the bits on that platform only.
The build's -ffp-contract=off prevents it. tests/test_packaging.py runs this check.
Exits 1 and lists the offenders.
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
NEON_PACKED = re.compile(r"\sf(?:add|sub|mul|div|sqrt|max|min|maxnm|minnm)\s+v\d+\.(?:4s|2d)")
FUSED = {"x86-64": re.compile(r"\svfn?m(?:add|sub)\w*\s"),
         "aarch64": re.compile(r"\s(?:fn?m(?:add|sub)|fml[as])\s")}
MACHINES = {0x3E: "x86-64", 0xB7: "aarch64"}  # ELF e_machine


def machine(path: str) -> str:
    """The ELF file's architecture: "x86-64", "aarch64" or "other"."""
    with open(path, "rb") as f:
        head = f.read(20)
    return MACHINES.get(int.from_bytes(head[18:20], "little"), "other")


def objdump(path: str) -> str | None:
    """An objdump that reads the file's architecture, or None."""
    if machine(path) == "aarch64" and shutil.which("aarch64-linux-gnu-objdump"):
        return "aarch64-linux-gnu-objdump"
    return shutil.which("objdump")


def disassembly(path: str) -> str:
    tool = objdump(path)
    if tool is None:
        raise FileNotFoundError("objdump")
    return subprocess.run([tool, "-d", "--no-show-raw-insn", path], check=True,
                          capture_output=True, text=True).stdout


def variants(path: str) -> dict[str, tuple[str, list[str]]]:
    """symbol -> (level, instructions) of every loop variant in the object code."""
    out = disassembly(path)
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
    arm = machine(path) == "aarch64"
    for name, (level, lines) in sorted(variants(path).items()):
        if arm:
            ok = any(NEON_PACKED.search(line) for line in lines)
        else:
            ok = any(PACKED.search(line) and REGISTER[level] in line for line in lines)
        if not ok:
            bad.append(name)
    return bad


def fused(path: str) -> list[str]:
    """Fused multiply-add instructions anywhere in the file ("function: instruction")."""
    pattern = FUSED.get(machine(path))
    if pattern is None:
        return []
    found, function = [], "?"
    for line in disassembly(path).splitlines():
        if line.endswith(">:"):
            function = line.split("<", 1)[-1][:-2]
        elif pattern.search(line):
            found.append(f"{function}: {line.split(chr(9), 1)[-1].strip()}")
    return found


def main(argv: list[str]) -> int:
    paths = argv or glob.glob(str(ROOT / "adamc" / "_kernels*.so"))
    if not paths:
        print("no built extension found (pip install -e .)", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        if objdump(path) is None:
            print(f"{path}: no objdump for {machine(path)}", file=sys.stderr)
            return 2
        found = variants(path)
        bad = not_vectorised(path)
        fma = fused(path)
        levels = sorted({level for level, _ in found.values()})
        print(f"{Path(path).name} ({machine(path)}): {len(found)} loop variants "
              f"({', '.join(levels)}), {len(bad)} not vectorised, {len(fma)} fused "
              f"multiply-adds")
        for name in bad:
            print("  not vectorised:", name)
        for where in fma:
            print("  fused:", where)
        status |= 1 if bad or fma or not found else 0
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
