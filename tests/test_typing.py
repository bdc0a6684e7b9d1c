"""The type stubs of the compiled module stay true to it (mypy's stubtest), and mypy
passes on the package and the examples."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_stubs_match_the_compiled_module():
    proc = run("mypy.stubtest", "adamc._kernels", "--mypy-config-file", "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_passes_on_package_and_examples():
    proc = run("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_package_is_marked_typed():
    assert (ROOT / "adamc" / "py.typed").exists()
