"""The conformance table (tests/optim_db.py) itself: one row per algorithm, every
hand-written per-algorithm list of the tests complete, and the bits of every
algorithm x option set x dtype x size identical at every SIMD level and thread count.

The emulation and reference checks of the other files run at one SIMD level on one
thread (conftest.one_level); the identity test here carries them to the others.
"""
import inspect

import numpy as np
import pytest

import adamc
from adamc import _reference
from adamc.algorithms import ALGORITHMS, CLASSES, METHODS
from conftest import SIZES, THREADS, assert_same_bits_everywhere, marked_sizes
from optim_db import COVERAGE_EXEMPT, DB, case_id


# ----------------------------------------------------------------------------------
# The table

def test_every_algorithm_has_a_row():
    assert set(DB) == set(ALGORITHMS)


@pytest.mark.parametrize("name", list(DB))
def test_row_names_its_class_twins_and_oracle(name):
    row, algorithm = DB[name], ALGORITHMS[name]
    assert row.cls in {c.name for c in algorithm.classes}
    assert callable(getattr(_reference, row.reference))
    assert row.options and all(isinstance(o, dict) for o in row.options)
    if algorithm.stateless:
        # a stateless step: emulated bit for bit, checked against its reference
        assert row.emulation is not None and row.emulation.__name__ == name
        assert row.step_options, "no option sets for the stateless step"
    else:
        assert row.emulation is None and not row.step_options
    assert row.oracle is not None and row.oracle_options and row.oracle_tol
    assert row.mpi, "no option sets run under MPI (tests/mpi_worker.py)"
    # every option set is one the class accepts
    params = inspect.signature(getattr(adamc, row.cls)).parameters
    for o in row.options + row.step_options + row.oracle_options + row.mpi:
        assert set(o) <= set(params), (o, set(o) - set(params))


def _algorithms_of_classes(classes):
    return {CLASSES[c.__name__][0].name for c in classes}


def _algorithms_of_methods(methods):
    return {METHODS[m][0].name for m in methods}


def _lists():
    """Every hand-written per-algorithm list of the tests: (name, algorithms in it)."""
    import test_bits
    import test_checkpoint
    import test_compiled_objective as tco
    import test_fuzz
    import test_minimize
    import test_optim
    import test_schedules
    yield "test_bits.CLASS_RUNS", _algorithms_of_classes(c for c, _ in test_bits.CLASS_RUNS.values())
    yield "test_checkpoint.FAMILY", _algorithms_of_classes(c for c, _ in test_checkpoint.FAMILY)
    yield "test_optim.FAMILY", _algorithms_of_classes(f[0] for f in test_optim.FAMILY)
    yield "test_schedules.CLASSES", _algorithms_of_classes(test_schedules.CLASSES)
    yield "test_fuzz.ALGORITHMS", set(test_fuzz.ALGORITHMS)
    yield "test_minimize.METHODS", _algorithms_of_methods(test_minimize.METHODS)
    yield "test_compiled_objective.CASES", _algorithms_of_methods(
        c.get("method", "adam") for c in tco.CASES.values())
    yield "test_compiled_objective.MANY_CASES", _algorithms_of_methods(
        c.get("method", "adam") for c in tco.MANY_CASES.values())


@pytest.mark.parametrize("listed", list(_lists()), ids=lambda x: x[0])
def test_hand_written_lists_cover_every_algorithm(listed):
    where, names = listed
    exempt = COVERAGE_EXEMPT.get(where, {})
    assert set(exempt) <= set(ALGORITHMS), f"{where}: exemptions of unknown algorithms"
    missing = set(ALGORITHMS) - names - set(exempt)
    assert not missing, f"{where} has no case of {sorted(missing)} (add one, or an " \
        "exemption with its reason to optim_db.COVERAGE_EXEMPT)"
    assert not names & set(exempt), f"{where}: {sorted(names & set(exempt))} are exempt " \
        "but covered: remove the exemption"


# ----------------------------------------------------------------------------------
# Identity across SIMD levels and thread counts: every algorithm, option set (of the
# class and of the stateless step), dtype and size, through the class (which shares
# the stateless step's kernel and preparation: tests/test_algorithms.py), plus one
# clipped run per algorithm (the norm's sum of squares and the clamp).

def _identity_cases():
    out = []
    for name, row in DB.items():
        seen = []
        for o in row.options + row.step_options + [dict(row.options[0], max_grad_norm=1.0,
                                                        clip_value=0.5)]:
            if o not in seen:
                seen.append(o)
        out += [(name, o) for o in seen]
    return out


IDENTITY_CASES = _identity_cases()


def grad_at(rng, n, dtype):
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1)
    g[rng.random(n) < 0.05] = 0.0
    return g.astype(dtype)


def _trajectory(name, opt, dtype, p0, grads):
    ps = [p.astype(dtype) for p in p0]
    o = getattr(adamc, DB[name].cls)(ps, **opt)
    with np.errstate(all="ignore"):
        for g in grads:
            o.step([x.astype(dtype) for x in g])
    sd = o.state_dict()
    scalars = [float(v) for g in sd["param_groups"] for k, v in sorted(g.items())
               if k in ("d", "d_max", "d_numerator", "weight_sum", "lr_max")]
    states = [v for st in sd["state"].values() for _, v in sorted(st.items())
              if isinstance(v, np.ndarray)]
    return ps + states + [np.array(scalars + [float(st.get("mu_product", 0.0))
                                              for st in sd["state"].values()])]


@pytest.mark.parametrize("n", marked_sizes(SIZES))
@pytest.mark.parametrize("case", IDENTITY_CASES, ids=case_id)
def test_bits_identical_across_levels_and_threads(case, n):
    name, opt = case
    rng = np.random.default_rng(41)
    p0 = [rng.standard_normal(n), rng.standard_normal(7)]
    # the same gradients (rounded to each dtype) at every level and thread count
    grads = [[grad_at(rng, p.size, np.float64) for p in p0]
             for _ in range(2 if n > 2**16 else 12)]
    # (arrays under 64 KiB never reach the pool's threads: one thread stands for all)
    assert_same_bits_everywhere(lambda dtype: _trajectory(name, opt, dtype, p0, grads),
                                THREADS if n >= 2**13 else [1])
