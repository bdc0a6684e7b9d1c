"""Run adamc's tests against an INSTALLED adamc (a wheel), from outside the repository.

    python tools/test_wheel.py PROJECT_DIR [pytest arguments]

Pytest arguments naming tests/... (files, or tests in them) run those instead of the
whole of tests/.

cibuildwheel runs it on every wheel it builds (pyproject.toml, [tool.cibuildwheel]
test-command) and tools/check_wheel.sh on the wheel built here. It copies tests/ and
the files some tests read (docs/ and what they link to, examples/, src_c/ for the
pool's C stress test) into a scratch folder without the package source, checks that
`import adamc` there finds the installed copy, and runs pytest there. Left out: the tests of the source
tree itself (test_packaging.py builds an sdist from it, test_typing.py runs mypy over
it, test_layers.py reads the package's .py files) and the tests marked slow.
Optional peers (torch, numba, mpi4py, matplotlib, ...) are not needed: their tests skip.
"""
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE_TREE_TESTS = ["test_packaging.py", "test_typing.py", "test_layers.py"]
COPIED = ["tests", "docs", "examples", "src_c", "benchmarks"]
COPIED_FILES = ["README.md"]
PYTEST_INI = """[pytest]
addopts = -ra -p no:cacheprovider
markers =
    slow: long-running tests (deselect with -m 'not slow')
"""


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    project = os.path.abspath(argv[1])
    extra = argv[2:]
    with tempfile.TemporaryDirectory(prefix="adamc-wheel-tests-") as work:
        for name in COPIED:
            shutil.copytree(os.path.join(project, name), os.path.join(work, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
        for name in COPIED_FILES:
            shutil.copy(os.path.join(project, name), work)
        with open(os.path.join(work, "pytest.ini"), "w") as f:
            f.write(PYTEST_INI)
        where = subprocess.run(
            [sys.executable, "-c", "import adamc; print(adamc.__file__)"],
            cwd=work, capture_output=True, text=True)
        if where.returncode != 0:
            print(where.stderr, file=sys.stderr)
            return 1
        installed = os.path.realpath(where.stdout.strip())
        if installed.startswith(os.path.realpath(project) + os.sep) or \
                installed.startswith(os.path.realpath(work) + os.sep):
            print(f"adamc is imported from {installed}, not from an installed wheel",
                  file=sys.stderr)
            return 1
        print(f"testing the installed adamc at {os.path.dirname(installed)}", flush=True)
        # the whole of tests/, or the files and tests named (tests/test_x.py[::name]),
        # e.g. a part of the suite under emulation (tools/aarch64.sh wheel)
        chosen = [a for a in extra if a == "tests" or a.startswith("tests/")]
        cmd = [sys.executable, "-m", "pytest"] + ([] if chosen else ["tests"])
        cmd += ["-m", "not slow"]
        cmd += [f"--ignore=tests/{name}" for name in SOURCE_TREE_TESTS] + extra
        return subprocess.run(cmd, cwd=work).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
