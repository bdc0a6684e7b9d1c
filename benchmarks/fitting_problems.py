"""Badly scaled and ill-conditioned least-squares fits, for bench_fitting.py.

Each problem is a model, data and two start points; the objective is the residual sum
of squares ``f(x) = sum(r(x)**2)``. Three sources:

- Moré, Garbow and Hillstrom, "Testing unconstrained optimization software", ACM TOMS
  7 (1981) 17-41 (MGH): Bard, Box 3-D, Brown badly scaled, Powell badly scaled, Meyer,
  Osborne 1 and 2, Kowalik-Osborne, Jennrich-Sampson; the second start point is
  10 x0, as MGH suggest.
- NIST Statistical Reference Datasets, nonlinear regression (StRD,
  https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml): Misra1a-d, BoxBOD, Rat42,
  Rat43, DanWood, with their two published start points (the first one is the far
  one).
- Models of the natural sciences, with data generated here from a fixed seed:
  Arrhenius, Michaelis-Menten, Hill, an exponential decay (amplitude 1e4, rate 1e-4)
  and a Gaussian peak on a large offset.

The residuals are written so that they also accept complex x: the gradient is taken by
complex-step differentiation (exact to rounding for these analytic models), so every
contender gets the same derivatives. A model evaluated outside its domain gives NaN
(for example ``(1 + 2 b x) ** -0.5`` with ``1 + 2 b x < 0``), as a scientist's code
would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Problem:
    name: str
    source: str
    residuals: Callable[[np.ndarray], np.ndarray]
    starts: list[np.ndarray]
    certified: float | None = None  # the published minimum of f, where there is one
    notes: str = ""
    kind: str = field(default="")

    def f(self, x: np.ndarray) -> float:
        r = self.residuals(np.asarray(x, dtype=float))
        return float(np.dot(r, r))

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """dr/dx by complex steps (h = 1e-20 max(1, |x_j|)), every column in one call
        of the residuals: parameter k is the column X[k] of an (n, n, 1) array."""
        x = np.asarray(x, dtype=float)
        h = 1e-20 * np.maximum(1.0, np.abs(x))
        X = (x[:, None] + np.diag(1j * h))[:, :, None]
        return (self.residuals(X).imag / h[:, None]).T

    def fun_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=float)
        with np.errstate(all="ignore"):
            r = self.residuals(x)
            if not np.all(np.isfinite(r)):
                return float("nan"), np.full(x.size, np.nan)
            return float(np.dot(r, r)), 2.0 * (self.jacobian(x).T @ r)


def _csqrt_pow(base, power):
    """base ** power, NaN for a negative real base (the model's domain edge)."""
    if np.iscomplexobj(base):
        return np.where(base.real > 0, base, np.nan) ** power
    with np.errstate(invalid="ignore"):
        return np.where(base > 0, base, np.nan) ** power


def _columns(*r):
    """Residuals given one by one: shape (m,) for a plain x, (n, m) for the columns of
    the complex step (each r then has shape (n, 1))."""
    return np.concatenate(np.broadcast_arrays(*r), axis=-1) if np.ndim(r[0]) else np.stack(r)


PROBLEMS: list[Problem] = []


def _add(name, source, residuals, starts, certified=None, notes=""):
    PROBLEMS.append(Problem(name, source, residuals,
                            [np.array(s, dtype=float) for s in starts], certified, notes))


# ----------------------------------------------------------------------------------
# Moré, Garbow and Hillstrom (1981)

_bard_y = np.array([0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73,
                    0.96, 1.34, 2.10, 4.39])
_u = np.arange(1.0, 16.0)
_v = 16.0 - _u
_w = np.minimum(_u, _v)
_add("Bard", "MGH 8", lambda x: _bard_y - (x[0] + _u / (x[1] * _v + x[2] * _w)),
     [[1, 1, 1], [10, 10, 10]], 8.21487e-3)

_t10 = 0.1 * np.arange(1.0, 11.0)
_add("Box 3-D", "MGH 12 (m = 10)",
     lambda x: (np.exp(-_t10 * x[0]) - np.exp(-_t10 * x[1])
                - x[2] * (np.exp(-_t10) - np.exp(-10 * _t10))),
     [[0, 10, 20], [0, 100, 200]], 0.0)

_add("Brown badly scaled", "MGH 4",
     lambda x: _columns(x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2),
     [[1, 1], [10, 10]], 0.0, "solution (1e6, 2e-6)")

_add("Powell badly scaled", "MGH 3",
     lambda x: _columns(1e4 * x[0] * x[1] - 1, np.exp(-x[0]) + np.exp(-x[1]) - 1.0001),
     [[0, 1], [0, 10]], 0.0, "solution (1.098e-5, 9.106)")

_meyer_t = 45.0 + 5.0 * np.arange(1.0, 17.0)
_meyer_y = np.array([34780, 28610, 23650, 19630, 16370, 13720, 11540, 9744, 8261, 7030,
                     6005, 5147, 4427, 3820, 3307, 2872], dtype=float)
_add("Meyer", "MGH 10 (NIST MGH10)",
     lambda x: x[0] * np.exp(x[1] / (_meyer_t + x[2])) - _meyer_y,
     [[0.02, 4000, 250], [0.2, 40000, 2500]], 87.9458551)

_osb1_t = 10.0 * np.arange(33.0)
_osb1_y = np.array([0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784,
                    0.751, 0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522,
                    0.506, 0.490, 0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420,
                    0.414, 0.411, 0.406])
_add("Osborne 1", "MGH 17 (NIST MGH17)",
     lambda x: (_osb1_y - (x[0] + x[1] * np.exp(-_osb1_t * x[3])
                           + x[2] * np.exp(-_osb1_t * x[4]))),
     [[0.5, 1.5, -1, 0.01, 0.02], [5, 15, -10, 0.1, 0.2]], 5.46489e-5)

_osb2_t = 0.1 * np.arange(65.0)
_osb2_y = np.array([
    1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679,
    0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644,
    0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391,
    0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668,
    0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581,
    0.428, 0.292, 0.162, 0.098, 0.054])


def _osborne2(x):
    t = _osb2_t
    return _osb2_y - (x[0] * np.exp(-t * x[4]) + x[1] * np.exp(-(t - x[8]) ** 2 * x[5])
                      + x[2] * np.exp(-(t - x[9]) ** 2 * x[6])
                      + x[3] * np.exp(-(t - x[10]) ** 2 * x[7]))


_add("Osborne 2", "MGH 19", _osborne2,
     [[1.3, 0.65, 0.65, 0.7, 0.6, 3, 5, 7, 2, 4.5, 5.5],
      [13, 6.5, 6.5, 7, 6, 30, 50, 70, 20, 45, 55]], 4.01377e-2)

_ko_u = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])
_ko_y = np.array([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323,
                  0.0235, 0.0246])
_add("Kowalik-Osborne", "MGH 15 (NIST MGH09)",
     lambda x: _ko_y - x[0] * (_ko_u ** 2 + _ko_u * x[1]) / (_ko_u ** 2 + _ko_u * x[2] + x[3]),
     [[0.25, 0.39, 0.415, 0.39], [2.5, 3.9, 4.15, 3.9]], 3.07505e-4)

_js_i = np.arange(1.0, 11.0)
_add("Jennrich-Sampson", "MGH 6 (m = 10)",
     lambda x: 2 + 2 * _js_i - (np.exp(_js_i * x[0]) + np.exp(_js_i * x[1])),
     [[0.3, 0.4], [3, 4]], 124.362, "the far start overflows exp at once")

# ----------------------------------------------------------------------------------
# NIST StRD nonlinear regression (starts: the published Start 1 and Start 2)

_misra_x = np.array([77.6, 114.9, 141.1, 190.8, 239.9, 289.0, 332.8, 378.4, 434.8, 477.3,
                     536.8, 593.1, 689.1, 760.0])
_misra_y = np.array([10.07, 14.73, 17.94, 23.93, 29.61, 35.18, 40.02, 44.82, 50.76, 55.05,
                     61.01, 66.40, 75.47, 81.78])
_add("Misra1a", "NIST StRD",
     lambda b: b[0] * (1 - np.exp(-b[1] * _misra_x)) - _misra_y,
     [[500, 1e-4], [250, 5e-4]], 1.2455138894e-01)
_add("Misra1b", "NIST StRD",
     lambda b: b[0] * (1 - _csqrt_pow(1 + b[1] * _misra_x / 2, -2.0)) - _misra_y,
     [[500, 1e-4], [300, 2e-4]], 7.5464681533e-02)
_add("Misra1c", "NIST StRD",
     lambda b: b[0] * (1 - _csqrt_pow(1 + 2 * b[1] * _misra_x, -0.5)) - _misra_y,
     [[500, 1e-4], [600, 2e-4]], 4.0966836971e-02, "undefined once 1 + 2 b2 x < 0")
_add("Misra1d", "NIST StRD",
     lambda b: b[0] * b[1] * _misra_x / (1 + b[1] * _misra_x) - _misra_y,
     [[500, 1e-4], [450, 3e-4]], 5.6419295283e-02)

_bod_x = np.array([1.0, 2, 3, 5, 7, 10])
_bod_y = np.array([109.0, 149, 149, 191, 213, 224])
_add("BoxBOD", "NIST StRD", lambda b: b[0] * (1 - np.exp(-b[1] * _bod_x)) - _bod_y,
     [[1, 1], [100, 0.75]], 1.1680088766e+03)

_rat42_x = np.array([9.0, 14, 21, 28, 42, 57, 63, 70, 79])
_rat42_y = np.array([8.93, 10.8, 18.59, 22.33, 39.35, 56.11, 61.73, 64.62, 67.08])
_add("Rat42", "NIST StRD", lambda b: b[0] / (1 + np.exp(b[1] - b[2] * _rat42_x)) - _rat42_y,
     [[100, 1, 0.1], [75, 2.5, 0.07]], 8.0565229338)

_rat43_x = np.arange(1.0, 16.0)
_rat43_y = np.array([16.08, 33.83, 65.80, 97.20, 191.55, 326.20, 386.87, 520.53, 590.03,
                     651.92, 724.93, 699.56, 689.96, 637.56, 717.41])
_add("Rat43", "NIST StRD",
     lambda b: b[0] / _csqrt_pow(1 + np.exp(b[1] - b[2] * _rat43_x), 1 / b[3]) - _rat43_y,
     [[100, 10, 1, 1], [700, 5, 0.75, 1.3]], 8.7864049080e+03)

_dw_x = np.array([1.309, 1.471, 1.490, 1.565, 1.611, 1.680])
_dw_y = np.array([2.138, 3.421, 3.597, 4.340, 4.882, 5.660])
_add("DanWood", "NIST StRD", lambda b: b[0] * _csqrt_pow(_dw_x, b[1]) - _dw_y,
     [[1, 5], [0.7, 4]], 4.3173084083e-03)

# ----------------------------------------------------------------------------------
# Models of the natural sciences (data: the model at known parameters, times
# multiplicative noise of a few percent from a fixed seed)

_rng = np.random.default_rng(20261207)


def _noisy(y, rel):
    return y * (1 + rel * _rng.standard_normal(y.shape))


_R = 8.314462618
_arr_T = np.linspace(300.0, 400.0, 11)
_arr_k = _noisy(2e10 * np.exp(-6e4 / (_R * _arr_T)), 0.03)
_add("Arrhenius", "k(T) = A exp(-Ea / (R T)); A = 2e10 1/s, Ea = 60 kJ/mol",
     lambda x: x[0] * np.exp(-x[1] / (_R * _arr_T)) - _arr_k,
     [[1e10, 5.5e4], [1e11, 6.5e4]], None, "A and Ea 1e6 apart, strongly correlated")

_mm_S = np.array([2.5e-6, 5e-6, 1e-5, 2e-5, 4e-5, 8e-5, 1.6e-4, 3.2e-4])
_mm_v = _noisy(1.5e-7 * _mm_S / (3e-5 + _mm_S), 0.02)
_add("Michaelis-Menten", "v = Vmax S / (Km + S); Vmax = 1.5e-7 M/s, Km = 30 uM",
     lambda x: x[0] * _mm_S / (x[1] + _mm_S) - _mm_v,
     [[1e-7, 1e-5], [5e-7, 2e-4]], None, "a pole at Km = -S")

_hill_x = np.logspace(-8, -4, 13)
_hill_y = _noisy(100 * _hill_x ** 1.8 / ((2e-6) ** 1.8 + _hill_x ** 1.8), 0.02)
_add("Hill", "y = top x^h / (K^h + x^h); top = 100, K = 2 uM, h = 1.8",
     lambda x: (x[0] * _csqrt_pow(_hill_x, x[2])
                / (_csqrt_pow(x[1], x[2]) + _csqrt_pow(_hill_x, x[2])) - _hill_y),
     [[80, 1e-6, 1], [150, 1e-5, 3]], None, "undefined for K <= 0")

_exp_t = np.linspace(0.0, 3e4, 21)
_exp_y = _noisy(1e4 * np.exp(-1e-4 * _exp_t), 0.01)
_add("Exponential decay", "y = A exp(-k t); A = 1e4, k = 1e-4",
     lambda x: x[0] * np.exp(-x[1] * _exp_t) - _exp_y,
     [[5e3, 2e-4], [2e4, 5e-5]])

_g_t = np.linspace(400.0, 600.0, 41)
_g_y = 1e3 + 50 * np.exp(-(_g_t - 500) ** 2 / (2 * 15.0 ** 2)) + 0.5 * _rng.standard_normal(41)
_add("Gaussian on an offset", "y = c + a exp(-(t - mu)^2 / (2 w^2)); c = 1000, a = 50, "
     "mu = 500, w = 15",
     lambda x: x[0] + x[1] * np.exp(-(_g_t - x[2]) ** 2 / (2 * x[3] ** 2)) - _g_y,
     [[990, 40, 505, 10], [1010, 80, 490, 25]])
