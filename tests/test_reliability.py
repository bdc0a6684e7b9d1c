"""Threads, memory, allocation failure: the guarantees of the README's Reliability
section that are not covered by the numerical and checkpoint tests."""
import itertools
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import adamc
from conftest import bits, kernel_config


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


needs_proc = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm")


# ----------------------------------------------------------------------------------
# Threads

def test_gil_is_released_during_large_updates():
    """A Python thread makes progress while another thread is inside step(). With a
    switch interval of a second, the counting thread can only run when the stepping
    thread gives the GIL up, so progress during a step proves the release."""
    x = np.zeros(20_000_000, np.float32)
    g = np.ones_like(x)
    opt = adamc.Adam(x)
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1

    interval = sys.getswitchinterval()
    t = threading.Thread(target=count)
    with kernel_config(adamc._kernels.simd_level(), 1):
        sys.setswitchinterval(1.0)
        t.start()
        try:
            progress = []
            for _ in range(3):
                before = counter[0]
                opt.step(g)
                progress.append(counter[0] - before)
        finally:
            stop.set()
            sys.setswitchinterval(interval)
            t.join()
    assert max(progress) > 0


def test_two_optimizers_in_two_threads_match_serial_results():
    rng = np.random.default_rng(0)
    starts = [rng.standard_normal(1_000_003).astype(np.float32) for _ in range(2)]
    grads = [[rng.standard_normal(1_000_003).astype(np.float32) for _ in range(5)]
             for _ in range(2)]

    def run(k, out):
        x = starts[k].copy()
        opt = adamc.AdamW(x, lr=0.01)
        for g in grads[k]:
            opt.step(g)
        out[k] = x

    serial, parallel = {}, {}
    for k in range(2):
        run(k, serial)
    threads = [threading.Thread(target=run, args=(k, parallel)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        np.testing.assert_array_equal(bits(serial[k]), bits(parallel[k]))


def test_one_optimizer_stepped_from_two_threads_is_refused_not_corrupted():
    n = 4_000_000
    x = np.zeros(n, np.float32)
    g = np.full(n, 0.5, np.float32)
    opt = adamc.Adam(x, lr=0.01)
    done, refused, succeeded, wrong = threading.Event(), [0], [0], []

    def hammer():
        while not done.is_set():
            try:
                opt.step(g)
                succeeded[0] += 1
            except RuntimeError as exc:
                if "already running" not in str(exc):
                    wrong.append(str(exc))  # asserted in the main thread below
                refused[0] += 1

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for _ in range(30):
            try:
                opt.step(g)
                succeeded[0] += 1
            except RuntimeError as exc:
                assert "already running" in str(exc)
                refused[0] += 1
    finally:
        done.set()
        t.join()
    assert not wrong, wrong
    assert refused[0] > 0  # the calls did overlap
    assert opt.step_count == succeeded[0]
    y = np.zeros(n, np.float32)
    ref = adamc.Adam(y, lr=0.01)
    for _ in range(succeeded[0]):
        ref.step(g)
    np.testing.assert_array_equal(bits(x), bits(y))


# ----------------------------------------------------------------------------------
# Memory

@pytest.mark.parametrize("cls,kw", [(adamc.Adam, dict(amsgrad=True, max_grad_norm=1.0)),
                                    (adamc.SGD, dict(momentum=0.9, nonfinite="skip"))])
def test_no_python_allocations_per_step(cls, kw):
    x = np.zeros(10)
    g = np.ones(10)
    opt = cls(x, lr=adamc.schedules.cosine_decay(0.1, 1000), **kw)

    def run(steps):
        for _ in steps:
            opt.step(g)

    # warm up: the first steps validate hyperparameters, and CPython specialises the
    # bytecode of this loop (a one-off allocation that is not adamc's)
    run(itertools.repeat(None, 100))
    steps = itertools.repeat(None, 1000)  # the loop itself must not allocate either
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()  # after the line above: its result tuple is gone
        run(steps)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current == start and peak == start, (start, current, peak)


@needs_proc
def test_rss_flat_over_a_million_steps():
    x = np.zeros(100, np.float32)
    g = np.ones_like(x)
    opt = adamc.Adam(x)
    for _ in itertools.repeat(None, 20_000):
        opt.step(g)
    before = rss_bytes()
    for _ in itertools.repeat(None, 1_000_000):
        opt.step(g)
    growth = rss_bytes() - before
    assert growth < 1 << 20, f"RSS grew by {growth} bytes over 10**6 steps"


@needs_proc
def test_rss_flat_over_ten_thousand_optimizers():
    g = np.ones(1000)

    def cycle():
        x = np.zeros(1000)
        opt = adamc.RMSprop([{"params": [x]}, {"params": [np.zeros(3)]}], momentum=0.5,
                            centered=True)
        opt.step([g, np.ones(3)])
        opt.state_dict()

    for _ in range(500):
        cycle()
    before = rss_bytes()
    for _ in range(10_000):
        cycle()
    growth = rss_bytes() - before
    assert growth < 4 << 20, f"RSS grew by {growth} bytes over 10**4 optimizers"


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux only")
def test_state_allocation_failure_raises_memory_error():
    """With the address space capped, creating the state of a large parameter fails
    with MemoryError, cleanly, and the interpreter goes on."""
    code = textwrap.dedent("""
        import resource, numpy as np, adamc
        x = np.zeros(150_000_000, np.float32)          # 600 MB
        resource.setrlimit(resource.RLIMIT_AS, (1_700_000_000, resource.RLIM_INFINITY))
        try:
            adamc.Adam(x, amsgrad=True)                 # needs 3 x 600 MB more
        except MemoryError:
            print("MemoryError")
        opt = adamc.SGD(x, lr=0.5)                      # no state: still fine
        opt.step(np.ones_like(x))
        print("alive" if x[0] == -0.5 else "wrong")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MemoryError", "alive"]


# ----------------------------------------------------------------------------------
# User code that runs inside step() (schedules, sequence types) cannot pull arrays away

def test_sequence_type_returning_fresh_arrays_is_safe():
    class Fresh(list):
        def __getitem__(self, i):
            return np.ones(1 << 20)

    x = np.zeros(1 << 20)
    adamc.SGD(x, lr=0.5).step(Fresh([None]))
    assert np.all(x == -0.5)


def test_schedule_that_empties_the_grads_list_is_refused_cleanly():
    grads = [np.ones(1 << 20)]
    x = np.zeros(1 << 20)

    def sabotage(t):
        grads.clear()
        return 0.1

    opt = adamc.SGD([x], lr=sabotage)
    with pytest.raises(ValueError, match="grads has 0 arrays"):
        opt.step(grads)
    assert np.all(x == 0) and opt.step_count == 0


@pytest.mark.parametrize("edit", ["clear", "replace", "params"])
def test_schedule_that_edits_param_groups_is_refused_cleanly(edit):
    a, b = np.zeros(1000), np.zeros(1000)
    box = {}

    def sabotage(t):
        groups = box["opt"].param_groups
        if edit == "clear":
            groups.clear()
        elif edit == "replace":
            groups[1] = [1]
        else:
            groups[1]["params"].append(np.zeros(3))
        return 0.1

    opt = box["opt"] = adamc.SGD([{"params": [a], "lr": sabotage}, {"params": [b]}], lr=0.1)
    with pytest.raises((ValueError, TypeError), match="param_groups"):
        opt.step([np.ones(1000), np.ones(1000)])
    assert np.all(a == 0) and np.all(b == 0) and opt.step_count == 0


@pytest.mark.parametrize("call", ["load_state_dict", "reset", "add_param_group", "state_dict",
                                  "set_bounds"])
def test_slow_paths_cannot_run_inside_a_step(call):
    x = np.zeros(1000)
    box = {}

    def meddle(t):
        opt = box["opt"]
        if call == "load_state_dict":
            opt.load_state_dict(box["sd"])
        elif call == "reset":
            opt.reset()
        elif call == "add_param_group":
            opt.add_param_group({"params": [np.zeros(5)]})
        elif call == "state_dict":
            opt.state_dict()
        else:
            opt._set_bounds([np.zeros(1000)], [np.ones(1000)])
        return 0.1

    opt = box["opt"] = adamc.Adam(x, lr=meddle)
    box["sd"] = opt.state_dict()
    with pytest.raises(RuntimeError, match="stepping"):
        opt.step(np.ones(1000))
    assert np.all(x == 0) and opt.step_count == 0 and len(opt.param_groups) == 1


def test_step_refused_while_a_slow_path_holds_the_optimizer():
    x = np.zeros(10)
    opt = adamc.Adam(x)
    with opt._exclusive():
        with pytest.raises(RuntimeError, match="being modified"):
            opt.step(np.ones(10))
    opt.step(np.ones(10))
    assert opt.step_count == 1
