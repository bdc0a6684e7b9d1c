"""The conformance table: one row per algorithm of adamc.algorithms.ALGORITHMS (in the
style of torch's optim_db), with its option sets, its reference implementations and
its tolerances. The per-algorithm tests read their cases from here:

- ``options``: option sets of the optimizer class (class and stateless step agree
  bitwise, tests/test_algorithms.py; bits identical across SIMD levels and threads
  at every size, tests/test_conformance.py);
- ``step_options``: option sets of the stateless step checked bit for bit against the
  emulation of the kernel's operation order (tests/emulate.py) and step by step
  against the float64 twin in adamc._reference (tests/test_kernels.py for Adam,
  tests/test_functional.py, tests/test_algorithms.py for Lion, tests/test_prodigy.py);
  also in the identity test;
- ``emulation`` (tests/emulate.py) and ``reference`` (adamc._reference) twins;
- ``oracle``: the third-party implementation (module, class) compared over whole
  trajectories when installed (all four are in the ``test`` extras of pyproject.toml),
  with ``oracle_options`` and ``oracle_tol`` (relative, per dtype);
- ``tol``: the tolerance of the per-step comparison with the float64 reference
  (relative to the scale of each quantity, per dtype; None where the test derives
  rounding bounds itself: Adam, Lion, Prodigy);
- ``oracle_steps``: the length of the compared trajectories (Adagrad, Adadelta and
  Rprop: 200 steps, issue 25's parity target);
- ``mpi``: option sets run under MPI by tests/mpi_worker.py (replicated and sharded
  must give the bits of one process).

A new algorithm without its row fails test_conformance.py::test_every_algorithm_has_a_row;
the hand-written per-algorithm lists that remain in the tests (runs of the golden
digests, checkpoints, fuzzing, minimize, the C-objective loop, ...) are checked for
completeness against ALGORITHMS there too (``COVERAGE_EXEMPT`` says which algorithm a
list leaves out and why).

Emulation and reference checks run at one SIMD level on one thread (``one_level`` in
conftest.py); identity across levels and thread counts is checked separately
(test_conformance.py, and the bit-identity tests of each file).
"""
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import emulate

F32, F64 = np.float32, np.float64


@dataclass(frozen=True)
class Row:
    cls: str
    options: list[dict[str, Any]]
    step_options: list[dict[str, Any]]
    emulation: Callable[..., Any] | None
    reference: str
    tol: dict[Any, float] | None = None
    oracle: tuple[str, str] | None = None
    oracle_options: list[dict[str, Any]] = field(default_factory=list)
    oracle_tol: dict[Any, float] | None = None
    mpi: list[dict[str, Any]] = field(default_factory=list)
    oracle_steps: int = 50


# torch's tolerances (tests/test_torch_parity.py explains them): a few ulps per step
TORCH_TOL = {F32: 2e-6, F64: 1e-14}
# the per-step reference check of tests/test_functional.py
STEP_TOL = {F32: 2e-5, F64: 1e-12}
# 200 steps against torch.optim (tests/test_torch_parity.py gives the measured figures)
LONG_TORCH_TOL = {F32: 2e-5, F64: 1e-12}

ADAM_STEP_OPTIONS = [
    dict(maximize=mx, amsgrad=ams, **wd)
    for mx, ams, wd in itertools.product(
        (False, True), (False, True),
        (dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True)))
]
ADAM_TORCH_OPTIONS = [
    dict(weight_decay=wd, amsgrad=ams, maximize=mx, decoupled_weight_decay=dec)
    for wd, ams, mx, dec in itertools.product((0.0, 0.1), (False, True), (False, True),
                                              (False, True))
    if wd or not dec]
ADAMW_TORCH_OPTIONS = [dict(weight_decay=0.1, amsgrad=ams, maximize=mx)
                       for ams, mx in itertools.product((False, True), (False, True))]

# Every option of prodigyopt's constructor (slice_p and fsdp_in_use aside).
PRODIGY_ORACLE_OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decouple": False},
    {"use_bias_correction": True},
    {"safeguard_warmup": True},
    {"beta3": 0.99},
    {"betas": (0.0, 0.999)},
    {"betas": (0.0, 0.99), "weight_decay": 0.05, "decouple": False},
    {"d_coef": 0.5, "d0": 1e-5},
    {"growth_rate": 1.02},
    {"lr": 0.5, "eps": 1e-6},
    {"use_bias_correction": True, "safeguard_warmup": True, "weight_decay": 0.01,
     "betas": (0.95, 0.98), "beta3": 0.9, "d_coef": 2.0, "growth_rate": 1.1},
]

SF_ADAMW_OPTIONS = [{}, {"weight_decay": 0.1}, {"warmup_steps": 20}, {"r": 1.0},
                    {"weight_lr_power": 0.0}, {"betas": (0.95, 0.99), "eps": 1e-6, "lr": 0.01},
                    {"lr": 0.3, "warmup_steps": 5, "weight_decay": 0.5, "r": 0.5,
                     "weight_lr_power": 1.0}]
SF_SGD_OPTIONS = [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1},
                  {"lr": 0.05, "warmup_steps": 10, "r": 1.0, "weight_lr_power": 1.0}]

DB: dict[str, Row] = {
    "adam": Row(
        "Adam",
        options=[{}, {"amsgrad": True, "weight_decay": 0.1},
                 {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True}],
        step_options=ADAM_STEP_OPTIONS, emulation=emulate.adam, reference="adam",
        oracle=("torch.optim", "Adam"), oracle_options=ADAM_TORCH_OPTIONS, oracle_tol=TORCH_TOL,
        mpi=[dict(weight_decay=1e-2, amsgrad=True)]),
    "adamax": Row(
        "Adamax", options=[{}, {"weight_decay": 0.1, "maximize": True}],
        step_options=[{}, {"weight_decay": 0.1}, {"maximize": True}],
        emulation=emulate.adamax, reference="adamax", tol=STEP_TOL,
        oracle=("torch.optim", "Adamax"), oracle_tol=TORCH_TOL,
        oracle_options=[{}, dict(weight_decay=0.1, maximize=True)],
        mpi=[dict(weight_decay=1e-3)]),
    "nadam": Row(
        "NAdam", options=[{}, {"decoupled_weight_decay": True, "weight_decay": 0.1}],
        step_options=[{}, {"weight_decay": 0.1},
                      {"weight_decay": 0.1, "decoupled_weight_decay": True}, {"maximize": True}],
        emulation=emulate.nadam, reference="nadam", tol=STEP_TOL,
        oracle=("torch.optim", "NAdam"), oracle_tol=TORCH_TOL,
        oracle_options=[{}, dict(weight_decay=0.1),
                        dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)],
        mpi=[dict(decoupled_weight_decay=True, weight_decay=1e-2)]),
    "radam": Row(
        "RAdam", options=[{}, {"weight_decay": 0.1}],
        step_options=[{}, {"weight_decay": 0.1},
                      {"weight_decay": 0.1, "decoupled_weight_decay": True}, {"maximize": True}],
        emulation=emulate.radam, reference="radam", tol=STEP_TOL,
        oracle=("torch.optim", "RAdam"), oracle_tol=TORCH_TOL,
        oracle_options=[{}, dict(weight_decay=0.1),
                        dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)],
        mpi=[{}]),
    "sgd": Row(
        "SGD",
        options=[{}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "dampening": 0.5}],
        step_options=[{}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.5},
                      {"momentum": 0.9, "nesterov": True}, {"weight_decay": 0.1, "maximize": True}],
        emulation=emulate.sgd, reference="sgd", tol=STEP_TOL,
        oracle=("torch.optim", "SGD"), oracle_tol=TORCH_TOL,
        oracle_options=[{}, dict(momentum=0.9), dict(momentum=0.9, dampening=0.3),
                        dict(momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)],
        mpi=[dict(momentum=0.9, nesterov=True)]),
    "rmsprop": Row(
        "RMSprop", options=[{}, {"momentum": 0.5, "centered": True, "weight_decay": 0.1}],
        step_options=[{}, {"momentum": 0.9}, {"centered": True},
                      {"centered": True, "momentum": 0.5, "weight_decay": 0.1}, {"maximize": True}],
        emulation=emulate.rmsprop, reference="rmsprop", tol=STEP_TOL,
        oracle=("torch.optim", "RMSprop"), oracle_tol=TORCH_TOL,
        oracle_options=[{}, dict(momentum=0.5), dict(centered=True),
                        dict(centered=True, momentum=0.5, weight_decay=0.1, maximize=True)],
        mpi=[dict(centered=True, momentum=0.5)]),
    "lion": Row(
        "Lion",
        options=[{}, {"weight_decay": 0.1}, {"maximize": True}, {"betas": (0.95, 0.98)}],
        step_options=[{}, {"weight_decay": 0.1}, {"maximize": True}, {"betas": (0.95, 0.98)}],
        emulation=emulate.lion, reference="lion",
        oracle=("lion_pytorch", "Lion"), oracle_options=[{}, {"weight_decay": 0.1}],
        oracle_tol={F64: 1e-12}, mpi=[dict(weight_decay=1e-2)]),
    "prodigy": Row(
        "Prodigy", options=[{}, {"weight_decay": 0.1, "decouple": False}],
        step_options=[{}, {"weight_decay": 0.1, "decouple": False, "maximize": True},
                      {"betas": (0.0, 0.999), "weight_decay": 0.1, "use_bias_correction": True},
                      {"safeguard_warmup": True, "growth_rate": 1.5}],
        emulation=emulate.prodigy, reference="prodigy",
        oracle=("prodigyopt", "Prodigy"), oracle_options=PRODIGY_ORACLE_OPTIONS,
        oracle_tol={F64: 1e-12},
        mpi=[dict(weight_decay=1e-2), dict(safeguard_warmup=True, ema=0.9, max_grad_norm=2.0)]),
    "adamw_schedulefree": Row(
        "AdamWScheduleFree", options=[{}, {"weight_decay": 0.1, "warmup_steps": 3}],
        step_options=[], emulation=None, reference="schedulefree",
        oracle=("schedulefree", "AdamWScheduleFree"), oracle_options=SF_ADAMW_OPTIONS,
        oracle_tol={F64: 1e-12}, mpi=[dict(lr=1e-2, warmup_steps=2, weight_decay=1e-3)]),
    "sgd_schedulefree": Row(
        "SGDScheduleFree", options=[{}, {"momentum": 0.5, "r": 1.0}],
        step_options=[], emulation=None, reference="schedulefree",
        oracle=("schedulefree", "SGDScheduleFree"), oracle_options=SF_SGD_OPTIONS,
        oracle_tol={F64: 1e-12}, mpi=[dict(lr=0.1, r=1.0)]),
    "adagrad": Row(
        "Adagrad", options=[{}, {"weight_decay": 0.1, "maximize": True},
                            {"lr_decay": 0.05, "initial_accumulator_value": 0.5}],
        step_options=[{}, {"weight_decay": 0.1}, {"maximize": True}, {"lr_decay": 0.05},
                      {"initial_accumulator_value": 0.5, "eps": 1e-6}],
        emulation=emulate.adagrad, reference="adagrad", tol=STEP_TOL,
        oracle=("torch.optim", "Adagrad"), oracle_tol=LONG_TORCH_TOL, oracle_steps=200,
        oracle_options=[{}, dict(weight_decay=0.1), dict(maximize=True), dict(lr_decay=0.01),
                        dict(initial_accumulator_value=0.5),
                        dict(lr_decay=0.05, initial_accumulator_value=2.0, eps=1e-6,
                             weight_decay=0.05, maximize=True)],
        mpi=[dict(lr_decay=1e-2, initial_accumulator_value=0.1)]),
    "adadelta": Row(
        "Adadelta", options=[{}, {"rho": 0.5, "eps": 1e-4, "weight_decay": 0.1, "maximize": True}],
        step_options=[{}, {"weight_decay": 0.1}, {"maximize": True}, {"rho": 0.5, "eps": 1e-4},
                      {"rho": 0.0}],
        emulation=emulate.adadelta, reference="adadelta", tol=STEP_TOL,
        oracle=("torch.optim", "Adadelta"), oracle_tol=LONG_TORCH_TOL, oracle_steps=200,
        oracle_options=[{}, dict(weight_decay=0.1), dict(maximize=True), dict(rho=0.5),
                        dict(rho=0.99, eps=1e-8), dict(rho=0.0), dict(rho=1.0, eps=1e-3),
                        dict(lr=0.5, rho=0.95, eps=1e-4, weight_decay=0.01, maximize=True)],
        mpi=[dict(weight_decay=1e-3)]),
    "rprop": Row(
        "Rprop", options=[{}, {"maximize": True}, {"etas": (0.1, 2.0), "step_sizes": (1e-3, 0.05)}],
        step_options=[{}, {"maximize": True}, {"etas": (0.3, 1.5)},
                      {"etas": (0.1, 2.0), "step_sizes": (1e-3, 0.05)}],
        emulation=emulate.rprop, reference="rprop", tol=STEP_TOL,
        oracle=("torch.optim", "Rprop"), oracle_tol=LONG_TORCH_TOL, oracle_steps=200,
        oracle_options=[{}, dict(maximize=True), dict(lr=0.5), dict(etas=(0.3, 1.5)),
                        dict(etas=(0.9, 1.05)), dict(step_sizes=(1e-3, 0.05)),
                        dict(lr=1.0, step_sizes=(0.01, 0.2)),
                        dict(lr=1e-8, etas=(0.1, 2.0), step_sizes=(1e-4, 1.0), maximize=True)],
        mpi=[dict(step_sizes=(1e-5, 1.0))]),
}

# Hand-written lists that leave an algorithm out, and why (checked by
# tests/test_conformance.py: every other algorithm must be in each list).
COVERAGE_EXEMPT: dict[str, dict[str, str]] = {
    "test_fuzz.ALGORITHMS": {
        "prodigy": "scalars in and out: fuzzed in tests/test_prodigy.py (bad input)",
        "adamw_schedulefree": "no stateless step",
        "sgd_schedulefree": "no stateless step"},
    "test_minimize.METHODS": {
        "lion": "tests/test_algorithms.py::test_lion_minimizes_a_quadratic",
        "prodigy": "tests/test_prodigy.py::test_minimize_method_converges",
        "adamw_schedulefree": "tests/test_schedulefree.py (the minimize methods)",
        "sgd_schedulefree": "tests/test_schedulefree.py (the minimize methods)"},
    "test_compiled_objective.MANY_CASES": {
        "prodigy": "minimize_many refuses it (state over all parameters)",
        "adamw_schedulefree": "minimize_many refuses it (state over all parameters)",
        "sgd_schedulefree": "minimize_many refuses it (state over all parameters)"},
}


def cases(attr: str, names=None) -> list[tuple[str, dict[str, Any]]]:
    """(algorithm, option set) pairs of one column of the table."""
    return [(a, o) for a, row in DB.items() if names is None or a in names
            for o in getattr(row, attr)]


def case_id(case) -> str:
    a, o = case
    return a + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "")


def torch_cases(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(torch class, options) of one algorithm's rows compared with torch.optim."""
    row = DB[name]
    assert row.oracle is not None and row.oracle[0] == "torch.optim"
    return [(row.oracle[1], o) for o in row.oracle_options]
