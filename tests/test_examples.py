"""Every example runs as a script, headless, and prints sane numbers."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, tmp_path, *extra):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--outdir", str(tmp_path),
                           *extra], capture_output=True, text=True, timeout=600,
                          env={"MPLBACKEND": "Agg", **__import__("os").environ})
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
