"""python -m adamc."""
import subprocess
import sys

import numpy as np
import pytest

from adamc.__main__ import main, quadratic_demo


def test_quadratic_demo_trajectories():
    paths = quadratic_demo(lr=0.1, steps=50)
    adam, gd = paths["adam"], paths["gd"]
    assert len(adam) == len(gd) == 51 and adam[0] == gd[0] == 8.0
    # Adam's first bias-corrected step is lr * sign(gradient)
    assert adam[1] == pytest.approx(7.9, abs=1e-9)
    # gradient descent contracts x - 2 by 1 - 2 lr = 0.8 per step
    assert gd[50] - 2 == pytest.approx(6 * 0.8 ** 50, rel=1e-9)
    assert all(b < a for a, b in zip(adam, adam[1:]))
    assert 2 < adam[50] < 5


def test_scipy_demo_recovers_the_curve(capsys):
    from adamc.__main__ import scipy_demo
    res = scipy_demo()
    assert res.success
    np.testing.assert_allclose(res.x, [2.5, 1.3, 0.5], atol=0.1)
    assert "scipy.optimize.minimize(method=adamc.minimize_adam)" in capsys.readouterr().out


def test_bench_prints_a_table_and_saves_a_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bench.png"
    assert main(["bench", "--sizes", "10", "1e3", "--dtype", "float64", "--threads", "1",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [10, 1000]
    assert "adamc" in out and "NumPy (prealloc)" in out and "NumPy reference" in out
    for r in rows:
        assert float(r[-1].rstrip("x")) > 1  # adamc beats every peer at these sizes
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,msg", [(["bench", "--sizes", "0"], "a size must be"),
                                      (["bench", "--sizes", "ten"], "not a size"),
                                      (["bench", "--threads", "0"], "--threads must be >= 1"),
                                      (["bench", "--dtype", "float16"], "invalid choice")])
def test_bench_bad_arguments_exit_with_a_message(argv, msg):
    proc = subprocess.run([sys.executable, "-m", "adamc", *argv], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and msg in proc.stderr


def test_demo_prints_config_trajectories_and_speedup():
    proc = subprocess.run([sys.executable, "-m", "adamc"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "simd_level" in out
    assert "Minimizing f(x) = (x - 2)^2 from x = 8" in out
    assert "adamc.minimize_adam" in out
    line = next(l for l in out.splitlines() if l.startswith("One Adam step at N = 10**6"))
    speedup = float(line.rsplit("speed-up", 1)[1].strip().rstrip("x"))
    assert speedup > 1.0


def test_info_subcommand(capsys):
    assert main(["info"]) == 0
    assert "simd_level" in capsys.readouterr().out


def test_bad_subcommand_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "adamc", "frobnicate"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
