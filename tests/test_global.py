"""adamc's methods as the local minimizer of SciPy's global optimizers
(docs/scipy.md, "Global optimization")."""
import numpy as np
import pytest
import scipy
from scipy import optimize as so

import adamc

SCIPY = tuple(int(v) for v in scipy.__version__.split(".")[:2])
SEED = {"rng": 0} if SCIPY >= (1, 15) else {"seed": 0}  # SciPy 1.15 renamed seed to rng
BOUNDS = [(-5.12, 5.12)] * 2
LOCAL = {"lr": 0.05, "maxiter": 500, "gtol": 1e-6}


def rastrigin(x):
    """2-D Rastrigin: global minimum 0 at the origin, a local minimum near every
    integer point."""
    return 10.0 * x.size + float(np.sum(x * x - 10.0 * np.cos(2 * np.pi * x)))


def rastrigin_grad(x):
    return 2 * x + 20 * np.pi * np.sin(2 * np.pi * x)


def rastrigin_fg(x):
    return rastrigin(x), rastrigin_grad(x)


class Counted:
    """An adamc method that counts its calls (to prove it did the local searches)."""

    def __init__(self, method):
        self.method, self.calls, self.results = method, 0, []

    def __call__(self, *args, **kwargs):
        self.calls += 1
        res = self.method(*args, **kwargs)
        self.results.append(res)
        return res


def test_adam_alone_stops_in_a_local_minimum():
    """The problem needs a global method: Adam from (3.3, -2.7) stops near (3, -3)."""
    res = adamc.minimize(rastrigin_fg, [3.3, -2.7], jac=True, options=LOCAL)
    assert res.success and res.fun > 17
    np.testing.assert_allclose(res.x, [3, -3], atol=0.02)


def test_basinhopping_with_adam_finds_the_global_minimum():
    method = Counted(adamc.minimize_adam)
    res = so.basinhopping(rastrigin_fg, [3.3, -2.7], niter=100, stepsize=1.5,
                          minimizer_kwargs={"method": method, "jac": True, "options": LOCAL},
                          **SEED)
    assert res.fun < 1e-9
    np.testing.assert_allclose(res.x, [0, 0], atol=1e-6)
    assert method.calls == 101  # the start and every hop are local Adam searches
    best = res.lowest_optimization_result
    assert best.success and best.message.endswith("|g|_inf <= gtol.")  # adamc's own message
    assert any(r is best for r in method.results)


def test_dual_annealing_with_adam_finds_the_global_minimum():
    method = Counted(adamc.minimize_adam)
    # dual_annealing evaluates fun for its own energies (so fun returns f only, and the
    # gradient comes as jac); it does not pass its bounds to a custom method itself
    res = so.dual_annealing(rastrigin, BOUNDS, maxiter=100, **SEED,
                            minimizer_kwargs={"method": method, "jac": rastrigin_grad,
                                              "bounds": BOUNDS, "options": LOCAL})
    assert res.fun < 1e-9
    np.testing.assert_allclose(res.x, [0, 0], atol=1e-6)
    assert method.calls >= 1
    assert any(abs(r.fun - res.fun) < 1e-12 and r.success for r in method.results)


def test_shgo_refuses_a_callable_method():
    """SciPy's shgo calls minimizer_kwargs['method'].lower() (scipy/optimize/_shgo.py,
    SHGO.__init__), so any callable method fails before a local search; docs/scipy.md
    says so. If this starts to pass, SciPy has fixed it: update the docs."""
    try:
        so.shgo(rastrigin, BOUNDS, minimizer_kwargs={"method": adamc.minimize_adam})
    except AttributeError as exc:
        assert "has no attribute 'lower'" in str(exc)
    else:
        pytest.fail(f"SciPy {scipy.__version__}'s shgo accepts a callable method now: "
                    f"document it in docs/scipy.md and test it here")


@pytest.mark.skipif(SCIPY < (1, 15), reason="the docs use SciPy 1.15's rng= keyword")
def test_the_documented_example_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "scipy.md").read_text()
    section = text.split("## Global optimization")[1].split("\n## ")[0]
    code = section.split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(compile(code, "docs/scipy.md", "exec"), scope)
    assert scope["res"].fun < 1e-9  # the last one run: dual_annealing
    np.testing.assert_allclose(scope["res"].x, [0, 0], atol=1e-6)
