"""Threads, memory, allocation failure: the guarantees of the README's Reliability
section that are not covered by the numerical and checkpoint tests."""
import itertools
import os
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


def _in_thread(fn):
    """Start fn in a thread; returns (thread, box): box["out"] or box["error"]."""
    box = {}

    def run():
        try:
            box["out"] = fn()
        except BaseException as exc:  # asserted by the caller
            box["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_a_step_waits_for_a_state_dict_running_in_another_thread():
    """state_dict() only reads: a step that meets it waits (it failed with 'being
    modified'). Deterministic: the read is held open while the step is tried."""
    x = np.zeros(1000)
    opt = adamc.Adam(x, lr=0.1)
    with opt._reading():  # what state_dict() holds while it copies
        t, box = _in_thread(lambda: opt.step(np.ones(1000)))
        t.join(0.3)
        assert "error" not in box and opt.step_count == 0 and np.all(x == 0)
    t.join(30)
    assert box == {"out": None} and opt.step_count == 1


def test_a_state_dict_waits_for_a_step_running_in_another_thread():
    """Deterministic: the step is held inside its lr schedule; the state_dict() of
    another thread must wait for it (it failed with 'stepping') and then see the
    state after that step, not a mixture."""
    x = np.zeros(1000)
    inside, go = threading.Event(), threading.Event()

    def lr(t):
        inside.set()
        assert go.wait(30)
        return 0.1

    opt = adamc.Adam(x, lr=lr)
    stepper, stepped = _in_thread(lambda: opt.step(np.ones(1000)))
    assert inside.wait(30)
    reader, read = _in_thread(opt.state_dict)
    reader.join(0.3)
    assert not read  # still waiting
    go.set()
    stepper.join(30)
    reader.join(30)
    assert stepped == {"out": None}, stepped
    assert "error" not in read, read["error"]
    sd = read["out"]
    assert sd["step_count"] == 1 and sd["state"][0]["step"] == 1
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], np.full(1000, 1 - 0.9))


def test_state_dicts_from_another_thread_never_fail_a_step_and_are_consistent():
    """Real threads, no hooks: one thread steps, another takes state dicts as fast as
    it can. No call fails, the parameters end with the serial bits, and every state
    dict is exactly the state after its step count."""
    import zlib
    n, steps = 30_000, 200  # 120 KB per array: the GIL is released in the kernels
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    x0 = rng.standard_normal(n).astype(np.float32)
    ref_x, crc = x0.copy(), {0: zlib.crc32(np.zeros(n, np.float32))}
    ref = adamc.Adam(ref_x, lr=1e-2)
    for t, g in enumerate(grads, 1):
        ref.step(g)
        crc[t] = zlib.crc32(ref._state_arrays[0][0])
    x = x0.copy()
    opt = adamc.Adam(x, lr=1e-2)
    done, seen, errors = threading.Event(), [], []

    def read():
        while not done.is_set():
            try:
                sd = opt.state_dict()
            except Exception as exc:  # asserted below
                errors.append(exc)
                continue
            seen.append((sd["step_count"], zlib.crc32(sd["state"][0]["exp_avg"])))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for g in grads:
            opt.step(g)
    finally:
        done.set()
        reader.join()
    assert not errors, errors[0]
    np.testing.assert_array_equal(bits(x), bits(ref_x))
    assert seen and all(c == crc[t] for t, c in seen), [t for t, c in seen if c != crc[t]]


def test_a_step_from_inside_a_step_says_it_is_a_re_entrant_call():
    x = np.zeros(10)
    box = {"calls": []}

    def lr(t):
        for call in (lambda: box["opt"].step(np.ones(10)), box["opt"].state_dict):
            try:
                call()
            except RuntimeError as exc:
                box["calls"].append(str(exc))
        return 0.1

    opt = box["opt"] = adamc.Adam(x, lr=lr)
    opt.step(np.ones(10))
    assert opt.step_count == 1
    step_msg, read_msg = box["calls"]
    assert "another thread" not in step_msg + read_msg
    assert step_msg.startswith("step() was made from inside step() of the same optimizer, "
                               "in the same thread (a re-entrant call, e.g. from its lr "
                               "schedule)"), step_msg
    assert "from inside step() of the same optimizer, in the same thread" in read_msg


_FORK = textwrap.dedent("""
    import os, sys, threading, numpy as np, adamc
    x = np.zeros({n}, np.float32)
    opt = adamc.Adam(x, lr=0.1)
    opt.step(np.ones_like(x))
    saved = opt.state_dict()
    inside, go, stop = threading.Event(), threading.Event(), threading.Event()
    how = sys.argv[1]

    def hold_step():  # inside step(), before it writes: in its lr schedule
        def lr(t):
            if threading.current_thread() is holder:
                inside.set()
                go.wait(30)
            return 0.1
        opt.param_groups[0]["lr"] = lr
        opt.step(np.ones_like(x))

    def hold_change():  # inside a slow path that changes the optimizer
        with opt._exclusive():
            inside.set()
            go.wait(30)

    def hold_read():
        with opt._reading():
            inside.set()
            go.wait(30)

    def keep_stepping():  # a large step: a fork lands while its kernels write
        inside.set()
        while not stop.is_set():
            opt.step(np.ones_like(x))

    holder = threading.Thread(target={{"step": hold_step, "change": hold_change,
                                      "read": hold_read, "loop": keep_stepping}}[how])
    holder.start()
    inside.wait(30)
    if how == "loop":
        import time
        time.sleep(0.2)
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists
        out = []
        before = x.copy()
        try:
            opt.step(np.ones_like(x))
            out.append("stepped")
        except RuntimeError as exc:
            out.append("refused: " + str(exc))
            for recover in ("state_dict", "step"):
                try:
                    getattr(opt, recover)(*([np.ones_like(x)] if recover == "step" else []))
                    out.append(recover + " worked")
                except RuntimeError as exc2:
                    out.append(recover + " refused too" if str(exc2) == str(exc) else "other")
            try:
                opt.load_state_dict({{"state": {{}}}})  # refused: it stays torn
            except ValueError:
                try:
                    opt.step(np.ones_like(x))
                except RuntimeError as exc2:
                    out.append("a failed load keeps it torn" if str(exc2) == str(exc)
                               else "other")
            opt.load_state_dict(saved)
            opt.step(np.ones_like(x))
            out.append("recovered by load_state_dict")
        if how in ("step", "read"):  # nothing was written: the state is the saved one
            twin = adamc.Adam(z := np.zeros_like(x), lr=0.1)
            twin.load_state_dict(saved)
            z[...] = before
            twin.step(np.ones_like(x))
            out.append("exact" if np.array_equal(x, z) and opt.step_count == 2 else "wrong")
        print("|".join(out), flush=True)
        os._exit(0)
    go.set()
    stop.set()
    holder.join()
    os.waitpid(pid, 0)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("how", ["step", "read", "change", "loop"])
def test_a_fork_child_gets_a_usable_optimizer_or_says_what_happened(how):
    """A fork while another thread holds the optimizer: that thread does not exist in
    the child. A step that had not written yet, or a read, is forgotten (the child
    steps on from the state before it); a step or change that was writing leaves the
    optimizer refusing with a message that says so until its state is replaced (it
    refused every step for good, as 'already running in another thread')."""
    n = 20_000_000 if how == "loop" else 1000
    proc = subprocess.run([sys.executable, "-c", _FORK.format(n=n), how],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().split("|")
    torn = ("refused: this process was forked while another thread of its parent was "
            "updating this optimizer")
    if how in ("step", "read"):
        assert out == ["stepped", "exact"], out
    elif how == "change":
        assert out[0].startswith(torn) and "load_state_dict() (or adamc.load), or call "\
            "reset()" in out[0], out
        assert out[1:] == ["state_dict refused too", "step refused too",
                           "a failed load keeps it torn", "recovered by load_state_dict"], out
    else:  # wherever the fork landed: stepped on, or refused as torn and recovered
        assert out == ["stepped"] or (out[0].startswith(torn) and out[-1] ==
                                      "recovered by load_state_dict"), out


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
