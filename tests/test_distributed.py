"""adamc.distributed: the pieces that need no MPI here, and real ``mpiexec -n 2`` and
``-n 3`` launches of tests/mpi_worker.py (every scenario must pass on every rank)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from adamc import _kernels
from adamc._fitting.minimize_sync import _batch_weight
from adamc._parallel.reducer import BLOCK, _shard_bounds
from conftest import mpiexec

HERE = Path(__file__).parent
WORKER = HERE / "mpi_worker.py"
# Seconds per launch (a normal one takes a few): a deadlock fails the test instead
# of hanging CI.
TIMEOUT = 150


MPIEXEC = mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and mpiexec: pip install 'adamc[mpi]'")


def launch(n: int, *args: str, timeout: float = TIMEOUT,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert MPIEXEC is not None
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=HERE.parent,
                          env=None if env is None else {**os.environ, **env})


# ----------------------------------------------------------------------------------
# Without MPI

def test_imports_without_mpi4py_and_says_how_to_install(monkeypatch):
    code = textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None          # as if mpi4py were not installed
        import numpy as np, adamc, adamc.distributed
        x = np.zeros(3)
        for call in (lambda: adamc.distributed.DistributedOptimizer(adamc.Adam(x)),
                     lambda: adamc.minimize(lambda v: float(v @ v), x,
                                            options={"comm": object()})):
            try:
                call()
            except ImportError as exc:
                assert "pip install 'adamc[mpi]'" in str(exc), exc
            else:
                raise AssertionError("no ImportError")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("total", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 3, 10**6])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_are_whole_blocks_covering_everything(total, size):
    b = _shard_bounds(total, size)
    assert b[0] == 0 and b[-1] == total and len(b) == size + 1
    assert all(lo <= hi for lo, hi in zip(b, b[1:]))
    assert all(x % BLOCK == 0 for x in b[:-1])
    counts = [hi - lo for lo, hi in zip(b, b[1:])]
    if total >= size * BLOCK:  # even: one block apart (plus the partial last block)
        assert max(counts) - min(counts) <= 2 * BLOCK


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_sum_squares_is_blockwise_and_layout_independent(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(5 * BLOCK + 37).astype(dtype)
    whole = np.zeros(6)
    _kernels.block_sum_squares(a, 0, BLOCK, np.inf, whole)
    expect = [np.sum(a[k * BLOCK:(k + 1) * BLOCK].astype(np.float64) ** 2) for k in range(6)]
    np.testing.assert_allclose(whole, expect, rtol=1e-13)
    # shards that begin on block boundaries give the same bits for every block
    parts = np.zeros(6)
    _kernels.block_sum_squares(a[:2 * BLOCK].copy(), 0, BLOCK, np.inf, parts[:2])
    _kernels.block_sum_squares(a[2 * BLOCK:].copy(), 2 * BLOCK, BLOCK, np.inf, parts[2:])
    assert np.array_equal(parts, whole)
    # clamping, and a piece that starts inside a block
    clipped = np.zeros(2)
    _kernels.block_sum_squares(a[10:BLOCK + 20], 10, BLOCK, 0.5, clipped)
    c = np.clip(a[10:BLOCK + 20].astype(np.float64), -0.5, 0.5)
    np.testing.assert_allclose(clipped, [np.sum(c[:BLOCK - 10] ** 2),
                                         np.sum(c[BLOCK - 10:] ** 2)], rtol=1e-13)
    with pytest.raises(ValueError, match="too short"):
        _kernels.block_sum_squares(a, 0, BLOCK, np.inf, np.zeros(2))
    with pytest.raises(TypeError, match="float64"):
        _kernels.block_sum_squares(a, 0, BLOCK, np.inf, np.zeros(6, np.float32))


class _ThreadComm:
    """allgather between threads standing for ranks (what _agree needs of a comm)."""

    def __init__(self, size):
        import threading
        self.size, self.slots = size, [None] * size
        self.barrier = threading.Barrier(size)

    def rank(self, r):
        comm = self

        class View:
            def allgather(self, value):
                comm.slots[r] = value
                comm.barrier.wait()
                out = list(comm.slots)
                comm.barrier.wait()
                return out
        return View()


def _on_ranks(size, body):
    """body(rank, comm) on `size` threads; what each raised (None: nothing)."""
    import threading
    comm, raised = _ThreadComm(size), [None] * size

    def run(r):
        try:
            body(r, comm.rank(r))
        except Exception as exc:
            raised[r] = exc
    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return raised


@pytest.mark.parametrize("original", [ZeroDivisionError("bad batch"), ValueError("no data")])
def test_an_agreed_error_passes_a_second_agreement_unchanged(original):
    """minimize_many's lockstep agrees on a rank's error inside its loop, and the
    driver agrees on whatever the loop raised: the rank and message must stay those
    of the first agreement (it said 'on 2 ranks, first on rank 0: ... on rank 1')."""
    from adamc._parallel.collective import RankError, _agree

    def body(rank, comm):
        try:
            _agree(comm, original if rank == 1 else None)
        except Exception as exc:
            first[rank] = exc
            _agree(comm, exc)

    first = [None] * 3
    raised = _on_ranks(3, body)
    named = isinstance(original, ZeroDivisionError)  # not one of the types kept: RankError
    prefix = "ZeroDivisionError " if named else ""
    expected = f"{prefix}on rank 1: {original}"
    for r in range(3):
        assert raised[r] is first[r]  # the same exception, raised again
        assert str(raised[r]) == expected and raised[r].rank == 1
        assert isinstance(raised[r], RankError if named else ValueError)
    # a rank that dropped the agreed error gets the same message from the others
    raised = _on_ranks(3, lambda rank, comm: _agree(comm, first[rank] if rank else None))
    assert [str(e) for e in raised] == [expected] * 3 and raised[0].rank == 1
    # two fresh failures are still counted as two
    raised = _on_ranks(3, lambda rank, comm: _agree(comm, original if rank else None))
    assert [str(e) for e in raised] == [f"{prefix}on 2 ranks, first on rank 1: {original}"] * 3


def test_batch_weight_is_the_length_of_the_first_array():
    assert _batch_weight((np.zeros((7, 3)), np.zeros(7))) == 7.0
    assert _batch_weight(()) == 1.0
    with pytest.raises(ValueError, match="number of samples"):
        _batch_weight((3.0,))


# ----------------------------------------------------------------------------------
# Real launches

SCENARIOS = ["sharded_equals_single_process", "clipping_replicated_equals_sharded",
             "reduction_in_rounds", "fast_reduction_within_rounding",
             "sharded_state_memory", "no_allocation_per_step",
             "nonfinite_on_one_rank", "inconsistent_input_raises_everywhere",
             "more_collective_failures", "empty_parameter_group",
             "checkpoint_any_number_of_ranks", "minimize_weighted_batches",
             "minimize_matches_single_process", "minimize_collective_stops",
             "minimize_checkpoint_resume", "get_last_lr_in_both_modes",
             "engines_equal_single_process", "schedulefree_eval_train_round_trip",
             "engines_checkpoint_resume"]


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """One launch per number of ranks (2 first: the 3-rank launch also reads the
    2-rank checkpoint); results per rank and scenario."""
    tmp = tmp_path_factory.mktemp("mpi")
    out = {}
    for n in (2, 3):
        proc = launch(n, str(WORKER), str(tmp))
        results: dict[str, list[str]] = {}
        for rank in range(n):
            path = tmp / f"results-{n}-{rank}.txt"
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines:
                name, _, status = line.partition(" ")
                results.setdefault(name, []).append(status)
        out[n] = (proc, results)
    return out


def test_worker_lists_every_scenario():
    import ast
    tree = ast.parse(WORKER.read_text())
    names = [f.name for f in tree.body if isinstance(f, ast.FunctionDef)
             and any(getattr(d, "id", None) == "scenario" for d in f.decorator_list)]
    assert names == SCENARIOS


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name", SCENARIOS)
def test_mpi_scenario(launches, n, name):
    proc, results = launches[n]
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = results.get(name, [])
    assert len(statuses) == n, \
        f"{len(statuses)} of {n} ranks reported {name}: {proc.stderr[-2000:]}"
    failures = [s for s in statuses if s != "OK"]
    assert not failures, failures[0].replace(" | ", "\n")


ONE_RANK = ["sharded_equals_single_process", "clipping_replicated_equals_sharded",
            "empty_parameter_group",
            "fast_reduction_within_rounding", "sharded_state_memory", "nonfinite_on_one_rank",
            "checkpoint_any_number_of_ranks", "minimize_matches_single_process",
            "minimize_checkpoint_resume", "get_last_lr_in_both_modes",
            "engines_equal_single_process", "schedulefree_eval_train_round_trip",
            "engines_checkpoint_resume"]


@needs_mpi
def test_one_rank(tmp_path):
    """A single rank (no communication, the optimizer's own step when possible)
    gives the results of the plain optimizer."""
    proc = launch(1, str(WORKER), str(tmp_path), *ONE_RANK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "results-1-0.txt").read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ONE_RANK
    failures = [line for line in lines if not line.endswith(" OK")]
    assert not failures, failures[0].replace(" | ", "\n")


@needs_mpi
def test_abort_on_error_ends_the_job_naming_the_rank():
    code = textwrap.dedent("""
        from mpi4py import MPI
        from adamc.distributed import abort_on_error
        comm = MPI.COMM_WORLD
        with abort_on_error(comm):
            if comm.Get_rank() == 1:
                raise ZeroDivisionError("user code failed")
            comm.Barrier()            # rank 0 would wait here forever
    """)
    proc = launch(2, "-c", code, timeout=120)
    assert proc.returncode != 0
    assert "adamc.distributed: rank 1 of 2 failed" in proc.stderr
    assert "ZeroDivisionError: user code failed" in proc.stderr


@needs_mpi
def test_replicated_params_identical_with_fast_reduction_on_three_ranks(tmp_path):
    """The opt-out reduction still leaves every rank with the same parameters,
    because every rank updates from the same allreduced buffer."""
    code = textwrap.dedent("""
        import numpy as np, zlib, adamc
        from mpi4py import MPI
        from adamc.distributed import DistributedOptimizer
        comm = MPI.COMM_WORLD
        x = np.linspace(-1, 1, 3000).astype(np.float32)
        opt = DistributedOptimizer(adamc.Adam(x), comm, reproducible=False)
        for t in range(5):
            opt.step(np.sin(x * 1.7 * (comm.rank + 1) + t).astype(np.float32) / 3.3)
        crcs = comm.allgather(zlib.crc32(x.view(np.uint8)))
        assert len(set(crcs)) == 1, crcs
        if comm.rank == 0:
            print("same on", len(crcs), "ranks")
    """)
    proc = launch(3, "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "same on 3 ranks"


@needs_mpi
def test_reproducible_whatever_algorithm_the_mpi_library_picks():
    """Three launches of 3 ranks, each with other MPICH algorithms for Allreduce,
    Alltoallv and Allgatherv (as another library or cluster would pick): the
    reproducible reduction gives the same bits every time and in both modes. (MPI's
    own Allreduce gave 3 different results for 4 algorithms here; not asserted,
    it is the library's business.)"""
    code = textwrap.dedent("""
        import numpy as np, zlib, adamc
        from mpi4py import MPI
        from adamc.distributed import DistributedOptimizer
        comm = MPI.COMM_WORLD
        crcs = []
        for mode in ("replicated", "sharded"):
            x = np.linspace(-1, 1, 300_000).astype(np.float32)
            opt = DistributedOptimizer(adamc.Adam(x, max_grad_norm=50.0), comm, mode)
            for t in range(3):
                g = np.sin(x * 1.7 * (comm.rank + 1) + t) / 3.3 + 1e-3 * comm.rank
                opt.step(g.astype(np.float32))
            crcs.append(zlib.crc32(x.data))
        if comm.rank == 0:
            print(*crcs)
    """)
    settings = [("recursive_doubling", "scattered", "recursive_doubling"),
                ("ring", "pairwise_sendrecv_replace", "ring"),
                ("tree", "scattered", "brucks")]
    outputs = []
    for allreduce, alltoallv, allgatherv in settings:
        proc = launch(3, "-c", code, timeout=120, env={
            "MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": allreduce,
            "MPIR_CVAR_ALLTOALLV_INTRA_ALGORITHM": alltoallv,
            "MPIR_CVAR_ALLGATHERV_INTRA_ALGORITHM": allgatherv})
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout.split())
    assert all(len(o) == 2 and o[0] == o[1] for o in outputs), outputs  # modes agree
    assert len({o[0] for o in outputs}) == 1, outputs  # algorithms do not matter


@needs_mpi
def test_minimize_fits_the_engines_with_the_bits_of_one_process():
    """Prodigy, the schedule-free methods and ema through the distributed minimize
    (every rank steps the whole optimizer with the mean f and g): the bits of one
    process."""
    code = textwrap.dedent("""
        import numpy as np, adamc
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        f = lambda x: (float(np.sum((x - 0.3) ** 2)), 2 * (x - 0.3))
        for method, options in [("prodigy", {}), ("adamw_schedulefree", {"lr": 0.05}),
                                ("adam", {"lr": 0.05, "ema": 0.9})]:
            one = adamc.minimize(f, np.zeros(5), jac=True, method=method,
                                 options=dict(options, maxiter=200))
            many = adamc.minimize(f, np.zeros(5), jac=True, method=method,
                                  options=dict(options, maxiter=200, comm=comm))
            assert np.array_equal(one.x, many.x) and one.nit == many.nit, method
            if "ema" in options:
                assert np.array_equal(one.x_ema, many.x_ema)
        if comm.rank == 0:
            print("ok")
    """)
    proc = launch(2, "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
