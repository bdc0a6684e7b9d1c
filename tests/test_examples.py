"""Every example runs as a script, headless, and prints sane numbers."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import mpiexec

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, tmp_path, *extra):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--outdir", str(tmp_path),
                           *extra], capture_output=True, text=True, timeout=600,
                          env={"MPLBACKEND": "Agg", **os.environ})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_fit(tmp_path):
    out = run("curve_fit.py", tmp_path)
    fits = dict(re.findall(r"(adamc Adam|L-BFGS-B): .*loss=([0-9.]+)", out))
    adam, lbfgsb = float(fits["adamc Adam"]), float(fits["L-BFGS-B"])
    assert adam == pytest.approx(lbfgsb, rel=1e-4)
    png(tmp_path / "curve_fit.png")


def test_airfoil_regression(tmp_path):
    out = run("airfoil_regression.py", tmp_path)
    loss = float(re.search(r"final mean training loss: ([0-9.]+)", out).group(1))
    assert 0.235 < loss < 0.255  # the textbook reports about 0.244
    assert "302 updates" in out  # 151 batches of 10 rows per epoch, 2 epochs
    png(tmp_path / "airfoil_loss.png")


def test_compare_optimizers(tmp_path):
    out = run("compare_optimizers.py", tmp_path)
    names = ("GD", "momentum", "RMSprop", "Adam", "AMSGrad")
    first_table = out.split("digits loss")[0]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]]
            for line in first_table.splitlines() if line.split() and line.split()[0] in names}
    assert set(rows) == set(names)
    # every optimizer approaches x = 2 on the quadratic; Adam solves Rosenbrock
    assert all(abs(x - 2) < 0.2 for x, _ in rows.values())
    assert rows["Adam"][1] < 1e-6
    png(tmp_path / "compare_optimizers_trajectories.png")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert "skipping the digits comparison" in out
    else:
        accuracies = [float(line.split()[2]) for line in out.split("digits loss")[1].splitlines()[1:6]]
        assert min(accuracies) > 0.9
        png(tmp_path / "compare_optimizers_digits.png")


def test_quadratic_demo(tmp_path):
    out = run("quadratic_demo.py", tmp_path)
    xs = {line.split(":")[0].strip(): float(re.search(r"= ([0-9.]+),", line).group(1))
          for line in out.splitlines() if "x after 50 steps" in line}
    assert 3.6 < xs["Adam"] < 3.8  # about lr per step: 8 - 50 * 0.1 = 3, slowing near 2
    assert abs(xs["gradient descent (SGD)"] - 2) < 1e-3
    png(tmp_path / "quadratic_demo.png")


def test_numpy_pipeline(tmp_path):
    out = run("numpy_pipeline.py", tmp_path, "--epochs", "100")
    mse = float(re.search(r"training MSE ([0-9.]+)", out).group(1))
    assert mse < 0.02  # the noise variance is 0.01
    assert "identical to the straight one: True" in out
    png(tmp_path / "numpy_pipeline.png")


def test_distributed_fit(tmp_path):
    """Under mpiexec -n 2: every rank prints the same result."""
    pytest.importorskip("mpi4py")
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("needs mpiexec: pip install 'adamc[mpi]'")
    proc = subprocess.run([launcher, "-n", "2", sys.executable,
                           str(EXAMPLES / "distributed_fit.py"), "--outdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          env={"MPLBACKEND": "Agg", **os.environ})
    assert proc.returncode == 0, proc.stderr
    # rank 0 prints every rank's line, in rank order, each on a line of its own: a line
    # that holds two results (joined output) or comes out of order fails here
    out = proc.stdout.splitlines()
    mentions = [line for line in out if "of 2:" in line]
    assert len(mentions) == 2 and proc.stdout.count("of 2:") == 2, proc.stdout
    rows = [re.fullmatch(r"rank (\d) of 2: (\d+ iterations, status \d, loss [0-9.]+, "
                         r"accuracy [0-9.]+, w\[:3\] = \[[^\]]*\])", line) for line in mentions]
    assert all(rows), mentions
    assert [m.group(1) for m in rows] == ["0", "1"], mentions
    assert rows[0].group(2) == rows[1].group(2)  # the same result on every rank
    assert out.index(mentions[1]) == out.index(mentions[0]) + 1
    accuracy = float(re.search(r"accuracy ([0-9.]+)", rows[0].group(2)).group(1))
    assert 0.87 < accuracy < 0.91  # 10% of the labels are flipped
    assert proc.stdout.count("saved ") == 1  # the plot is written by rank 0 only
    png(tmp_path / "distributed_fit.png")


def test_distributed_fit_without_mpi4py_says_how_to_install_it(tmp_path):
    """Run the example in an interpreter where mpi4py cannot be imported."""
    code = ("import runpy, sys; sys.modules['mpi4py'] = None; "
            f"sys.argv = ['distributed_fit.py', '--outdir', {str(tmp_path)!r}]; "
            f"runpy.run_path({str(EXAMPLES / 'distributed_fit.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"MPLBACKEND": "Agg", **os.environ})
    assert proc.returncode == 1
    assert "pip install 'adamc[mpi]'" in proc.stderr and "mpiexec -n 2" in proc.stderr
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr


def test_every_example_is_tested():
    tested = {"curve_fit.py", "airfoil_regression.py", "compare_optimizers.py",
              "quadratic_demo.py", "numpy_pipeline.py", "distributed_fit.py", "many_fits.py",
              "compiled_objective.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_many_fits(tmp_path):
    out = run("many_fits.py", tmp_path, "--size", "24")
    assert "Optimization terminated successfully for every problem: 576 converged" in out
    worst = float(re.search(r"loss at most ([0-9.]+)% above least_squares", out).group(1))
    assert worst < 0.01
    median = float(re.search(r"lifetime error: median ([0-9.]+)%", out).group(1))
    assert median < 10
    png(tmp_path / "many_fits.png")


def test_compiled_objective(tmp_path):
    pytest.importorskip("numba")
    out = run("compiled_objective.py", tmp_path, "--iters", "5000", "--curves", "200")
    assert "identical results: True" in out
    assert "1 and 2 threads give identical results: True" in out
    assert "identical to the Python objective: True" in out
    assert "200 converged (status 0)" in out
    fit = re.search(r"compiled objective: a, k, c = \[([-0-9. ]+)\]", out).group(1)
    np.testing.assert_allclose([float(v) for v in fit.split()], [2.5, 1.3, 0.5], atol=0.05)
