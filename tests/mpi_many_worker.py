"""Run under ``mpiexec -n N python tests/mpi_many_worker.py`` by tests/test_many.py:
adamc.minimize_many with options={"comm": comm} on every rank. Prints ``many OK``
on every rank where every check passed."""
import numpy as np
from mpi4py import MPI

import adamc
import adamc.distributed

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
B, N = 11, 3
rng = np.random.default_rng(0)
T, S = rng.normal(size=(B, N)), rng.uniform(0.5, 3, (B, N))
X0 = rng.normal(size=(B, N))
LR = np.linspace(0.01, 0.2, B)
evaluated = []


def fun(x, t, s, ids):
    evaluated.append(ids.copy())
    r = x - t
    return (s * r ** 4 + r * r).sum(axis=1), 4 * s * r ** 3 + 2 * r


opts = {"lr": LR, "gtol": 1e-4, "maxiter": 400}
args = dict(jac=True, bounds=[(-1, 1)] * N, batch_args=(T, S, np.arange(B)))
alone = adamc.minimize_many(fun, X0, options=opts, **args)
evaluated.clear()
res = adamc.minimize_many(fun, X0, options=dict(opts, comm=comm), **args)
for key in ("x", "fun", "jac", "nit", "nfev", "status"):
    np.testing.assert_array_equal(res[key], alone[key], err_msg=key)
mine = np.unique(np.concatenate(evaluated))
share = np.array_split(np.arange(B), size)[rank]
assert set(mine.tolist()) == set(range(B * rank // size, B * (rank + 1) // size)), mine
assert share.size >= 1

# a callback's StopIteration on one rank stops every rank at the same iteration
calls = []


def cb(intermediate_result):
    calls.append(1)
    if rank == size - 1 and len(calls) == 7:
        raise StopIteration


res = adamc.minimize_many(fun, X0, callback=cb, options=dict(opts, comm=comm), **args)
assert (res.status[res.status != 0] == 99).all() and (res.nit[res.status == 99] == 7).all()
assert (res.status == 99).any()
stopped = res

# an error on one rank is raised on every rank
def broken(x, t, s, ids):
    if rank == 1:
        raise ValueError("no data here")
    return fun(x, t, s, ids)


try:
    adamc.minimize_many(broken, X0, options=dict(opts, comm=comm), **args)
except ValueError as exc:
    assert "rank 1" in str(exc) and "no data here" in str(exc), exc
else:
    raise AssertionError("no error")

# and with a callback (the ranks then iterate in lockstep): the same error, once
def failing(x, t, s, ids):
    if rank == 1:
        raise ZeroDivisionError("bad rows")
    return fun(x, t, s, ids)


try:
    adamc.minimize_many(failing, X0, callback=lambda intermediate_result: None,
                        options=dict(opts, comm=comm), **args)
except adamc.distributed.RankError as exc:
    assert str(exc) == "ZeroDivisionError on rank 1: bad rows" and exc.rank == 1, exc
else:
    raise AssertionError("no error")

# inconsistent input raises everywhere
try:
    adamc.minimize_many(fun, X0 + rank, options=dict(opts, comm=comm), **args)
except ValueError as exc:
    assert "inconsistent" in str(exc), exc
else:
    raise AssertionError("no error")
# a C objective (here a ctypes callback of the same rows): each rank fits its share in
# C, the objective getting the problems' own indices
import ctypes  # noqa: E402

from scipy import LowLevelCallable  # noqa: E402

DOUBLE_P = ctypes.POINTER(ctypes.c_double)
indices = []


@ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_int, DOUBLE_P, DOUBLE_P, ctypes.c_long,
                  ctypes.c_void_p)
def row(n, xp, gp, i, data):
    indices.append(i)
    x = np.ctypeslib.as_array(xp, (1, n))
    f, g = fun(x, T[i:i + 1], S[i:i + 1], np.array([i]))
    np.ctypeslib.as_array(gp, (n,))[:] = g[0]
    return f[0]


llc = LowLevelCallable(row)
bounds = args["bounds"]
alone = adamc.minimize_many(fun, X0, options=opts, **args)
res = adamc.minimize_many(llc, X0, bounds=bounds, options=dict(opts, comm=comm))
for key in ("x", "fun", "jac", "nit", "nfev", "njev", "status"):
    np.testing.assert_array_equal(res[key], alone[key], err_msg=key)
assert set(indices) == set(range(B * rank // size, B * (rank + 1) // size)), set(indices)
calls.clear()
res = adamc.minimize_many(llc, X0, bounds=bounds, callback=cb, options=dict(opts, comm=comm))
for key in ("x", "fun", "jac", "nit", "nfev", "status"):
    np.testing.assert_array_equal(res[key], stopped[key], err_msg=key)
print(f"rank {rank}: many OK", flush=True)
