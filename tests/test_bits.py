"""The same result bytes on every platform: x86-64 at each SIMD level, aarch64 (NEON).

A fixed set of runs (every algorithm with its options, every compiled schedule, both
dtypes; the optimizer classes with clipping and weight averaging, the stateless steps,
scipy.optimize.minimize, adamc.minimize with bounds, minimize_many) hashes its result
bytes; tests/golden_bits.json holds the digests made on x86-64, and every platform,
SIMD level and thread count must reproduce them. tools/aarch64.sh runs this file on
aarch64 under QEMU (CI too).

The inputs come from integer draws scaled by powers of two, and the objectives use
only elementwise +, -, * (each correctly rounded by IEEE 754) and math.fsum (correctly
rounded), so that the platforms' C libraries and BLAS cannot enter the results; what
remains is adamc's own arithmetic. A change that alters results on purpose regenerates
the digests:  python tests/test_bits.py --regenerate  (then review the diff).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

if __name__ == "__main__":  # run as a script: import this checkout's adamc
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import adamc  # noqa: E402
from adamc import schedules  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden_bits.json"
DTYPES = (np.float32, np.float64)
N = 37  # every vector width's body and remainder


def _data(seed: int, n: int, dtype, scale: float = 1.0) -> np.ndarray:
    """Integers in [-2**20, 2**20) scaled by 2**-20: exact in both dtypes."""
    ints = np.random.default_rng(seed).integers(-(2 ** 20), 2 ** 20, n)
    return (ints.astype(np.float64) * (scale * 2.0 ** -20)).astype(dtype)


def _grad(x: np.ndarray, t: int, seed: int) -> np.ndarray:
    """A quadratic's gradient with a step-dependent integer-drawn noise term."""
    def draw(s, scale=1.0):
        return _data(s, x.size, x.dtype, scale).reshape(x.shape)
    curv = draw(seed + 1, 4.0) ** 2 + x.dtype.type(0.25)
    return curv * (x - draw(seed + 2)) + draw(seed * 1000 + t, 0.1)


def _objective(c: np.ndarray):
    def fun(x):
        r = x - c
        return math.fsum((r * r).tolist()), 2.0 * r
    return fun


# (algorithm class, hyperparameters) runs of the optimizer classes
CLASS_RUNS = {
    "adam": (adamc.Adam, dict(lr=0.05)),
    "adam-amsgrad-wd-max": (adamc.Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1,
                                              maximize=True)),
    "adamw": (adamc.AdamW, dict(lr=0.05, weight_decay=0.05)),
    "adamax": (adamc.Adamax, dict(lr=0.05, weight_decay=0.01)),
    "nadam": (adamc.NAdam, dict(lr=0.05)),
    "nadam-decoupled": (adamc.NAdam, dict(lr=0.05, weight_decay=0.1,
                                          decoupled_weight_decay=True)),
    "radam": (adamc.RAdam, dict(lr=0.05)),
    "radam-wd": (adamc.RAdam, dict(lr=0.05, weight_decay=0.1, betas=(0.8, 0.9))),
    "sgd": (adamc.SGD, dict(lr=0.01)),
    "sgd-nesterov": (adamc.SGD, dict(lr=0.01, momentum=0.9, nesterov=True,
                                     weight_decay=0.01)),
    "sgd-dampening": (adamc.SGD, dict(lr=0.01, momentum=0.8, dampening=0.3)),
    "rmsprop": (adamc.RMSprop, dict(lr=0.01)),
    "rmsprop-centered-momentum": (adamc.RMSprop, dict(lr=0.01, momentum=0.5, centered=True,
                                                      weight_decay=0.01)),
    "lion": (adamc.Lion, dict(lr=0.01, weight_decay=0.1)),
    "prodigy": (adamc.Prodigy, dict()),
    "prodigy-bias-correction": (adamc.Prodigy, dict(use_bias_correction=True,
                                                    weight_decay=0.01, safeguard_warmup=True)),
    "adamw-schedulefree": (adamc.AdamWScheduleFree, dict(lr=0.05, warmup_steps=3, r=0.5,
                                                         weight_decay=0.01)),
    "sgd-schedulefree": (adamc.SGDScheduleFree, dict(lr=0.05, warmup_steps=2)),
    "adagrad": (adamc.Adagrad, dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1,
                                    weight_decay=0.01)),
    "adadelta": (adamc.Adadelta, dict(rho=0.8, weight_decay=0.01, maximize=True)),
    "rprop": (adamc.Rprop, dict(lr=0.01, etas=(0.4, 1.3), step_sizes=(1e-4, 0.05))),
    # the compiled schedules (pow and cos) and the options around the kernels
    "adam-cosine": (adamc.Adam, dict(lr=schedules.cosine_decay(0.05, total_steps=17,
                                                               min_lr=0.001, warmup_steps=3))),
    "nadam-exponential": (adamc.NAdam, dict(lr=schedules.exponential_decay(0.05, 0.93))),
    "radam-step-decay": (adamc.RAdam, dict(lr=schedules.step_decay(0.05, 4, 0.7))),
    "adamw-isqrt-clip-ema": (adamc.AdamW, dict(lr=schedules.inverse_sqrt(0.05, 2),
                                               max_grad_norm=1.0, clip_value=0.5, ema=0.9)),
}
STEPS = 24


def run_class(name: str, dtype) -> list[np.ndarray]:
    cls, hyper = CLASS_RUNS[name]
    ps = [_data(1, N, dtype), _data(2, 5, dtype).reshape(5, 1)]
    opt = cls(ps, **hyper)
    for t in range(1, STEPS + 1):
        opt.step([_grad(p, t, 10 + i) for i, p in enumerate(ps)])
    out = list(ps)
    if hasattr(opt, "eval"):  # schedule-free: the averaged point too
        opt.eval()
        out += [p.copy() for p in ps]
    state = opt.state_dict()
    for entry in state["state"].values():
        out += [np.asarray(v) for v in entry.values() if isinstance(v, np.ndarray)]
    out.append(np.array([float(v) for g in state["param_groups"] for v in g.values()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)]))
    return out


def run_functional(dtype) -> list[np.ndarray]:
    p = [_data(3, N, dtype) for _ in range(7)]
    st = [np.zeros(N, dtype) for _ in range(13)]
    mu, d = 1.0, (None, None, 0.0)
    p0 = p[4].copy()
    for t in range(1, STEPS + 1):
        adamc.adam_step(p[0], _grad(p[0], t, 20), st[0], st[1], step=t, lr=0.05, amsgrad=True,
                        max_exp_avg_sq=st[2])
        mu = adamc.nadam_step(p[1], _grad(p[1], t, 21), st[3], st[4], step=t, mu_product=mu,
                              lr=0.05)
        adamc.radam_step(p[2], _grad(p[2], t, 22), st[5], st[6], step=t, lr=0.05)
        adamc.adamax_step(p[3], _grad(p[3], t, 23), st[7], st[8], step=t, lr=0.05)
        d = adamc.prodigy_step(p[4], _grad(p[4], t, 24), st[9], st[10], st[11], p0, step=t,
                               d=d[0], d_max=d[1], d_numerator=d[2], use_bias_correction=True)
        adamc.sgd_step(p[5], _grad(p[5], t, 25), st[12], step=t, lr=0.01, momentum=0.9)
        adamc.lion_step(p[6], _grad(p[6], t, 26), st[0].copy(), step=t, lr=0.01)
    return p + st + [np.array([mu, *d])]


def run_minimize(dtype) -> list[np.ndarray]:
    import scipy.optimize

    out = []
    c = _data(4, N, np.float64)
    for method in ("adam", "nadam", "radam", "adamw_schedulefree"):
        res = scipy.optimize.minimize(_objective(c), _data(5, N, np.float64),
                                      method=getattr(adamc, f"minimize_{method}"), jac=True,
                                      options={"lr": 0.05, "maxiter": 60, "gtol": 0.0})
        out += [res.x, np.array([res.fun, res.nit])]
    lo, hi = np.full(N, -0.25), np.full(N, 0.5)
    res = adamc.minimize(_objective(c), _data(6, N, np.float64), method="adam", jac=True,
                         bounds=list(zip(lo, hi)), options={"lr": 0.05, "maxiter": 80})
    out += [res.x, np.array([res.fun, res.nit])]
    x0 = np.stack([_data(7 + k, N, np.float64) for k in range(3)])

    def batch(xs):
        r = xs - c
        return np.array([math.fsum(row.tolist()) for row in r * r]), 2.0 * r

    res = adamc.minimize_many(batch, x0, method="nadam", jac=True,
                              options={"lr": 0.05, "maxiter": 50})
    out += [res.x, np.asarray(res.fun), np.asarray(res.nit)]
    return [np.asarray(a) for a in out]


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def cases() -> dict[str, callable]:
    out = {}
    for dtype in DTYPES:
        dn = np.dtype(dtype).name
        for name in CLASS_RUNS:
            out[f"{name}-{dn}"] = (lambda name=name, dtype=dtype: run_class(name, dtype))
        out[f"functional-{dn}"] = (lambda dtype=dtype: run_functional(dtype))
    out["minimize"] = lambda: run_minimize(np.float64)
    return out


CASES = cases()


def digests() -> dict[str, str]:
    return {name: _digest(run()) for name, run in CASES.items()}


def _golden() -> dict[str, str]:
    return json.loads(GOLDEN.read_text())["digests"]


def test_golden_file_covers_every_case():
    assert sorted(_golden()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_result_bytes_match_the_golden_digests(name, level_threads):
    assert _digest(CASES[name]()) == _golden()[name], (
        f"{name}: result bytes differ from tests/golden_bits.json (made on x86-64)")


def main(argv: list[str]) -> int:
    if argv != ["--regenerate"]:
        print(__doc__)
        return 2
    import platform

    GOLDEN.write_text(json.dumps({
        "made_on": f"{platform.machine()}, SIMD {adamc._kernels.simd_level()}",
        "digests": digests()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
