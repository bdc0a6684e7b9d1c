"""The type stubs of the compiled module stay true to it (mypy's stubtest), and mypy
passes on the package and the examples."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_stubs_match_the_compiled_module_and_the_generated_methods():
    """The compiled module's stub, and the stub of the SciPy methods built from the
    algorithm table (tools/gen_stubs.py), agree with what they describe at import (one
    stubtest run for both: each run costs about 10 s of analysis)."""
    proc = run("mypy.stubtest", "adamc._kernels", "adamc._fitting.methods",
               "--mypy-config-file", "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_stubs_are_current():
    spec = importlib.util.spec_from_file_location("gen_stubs", ROOT / "tools" / "gen_stubs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path, make in gen.STUBS.items():
        assert (ROOT / path).read_text() == make(), \
            f"{path} is out of date: run python tools/gen_stubs.py"


@pytest.mark.slow
def test_mypy_passes_on_package_and_examples():
    proc = run("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_package_is_marked_typed():
    assert (ROOT / "adamc" / "py.typed").exists()
