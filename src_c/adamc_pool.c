/* adamc's own thread pool: parallel loops that never make a step slower than the
 * calling thread alone.
 *
 * Why not OpenMP: an OpenMP team is fork-join with spinning workers. Next to BLAS
 * (whose threads also spin) or on a busy host, the spinning workers take the cores
 * other threads need, and the caller waits at the region's barrier for a worker the
 * OS has not scheduled: a 40 us step became 8 ms. Here:
 *
 *  - the caller publishes a job and starts on it at once; workers join when they
 *    wake, claiming chunks with an atomic add. The caller waits only for chunks a
 *    worker has already claimed (and so is running), never for a worker that has
 *    not started;
 *  - workers spin briefly after a job (a step is often followed by the next
 *    array's job within a microsecond), then sleep on a futex;
 *  - a thread enters the kernels only with a token: at most `limit` threads run
 *    adamc kernels at once in the whole process, whatever the number of callers.
 *    Callers wait for a token; workers join only when one is free, and leave after
 *    their current chunk when a caller is waiting. A caller between two kernel calls
 *    may keep its token only while that keeps nobody out (adamc_may_keep_token; the
 *    minimize loop also only while its iterations are short);
 *  - with the adaptive policy, each (kernel kind, size class) remembers how fast it
 *    ran on one thread and on several, uses the faster, and re-measures the other
 *    now and then (rarely while the choice keeps being confirmed).
 *
 * Elements are independent and the sums of squares are split by n only, so the
 * results are the same bits for any split and thread count. Nothing here changes a
 * setting that other libraries share (no OpenMP, no BLAS calls, no environment).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adamc.h"

/* The platform layer: threads, sleeping on a word and waking it (a futex), a clock.
 *   futex    Linux: the futex system call.
 *   condvar  other POSIX systems (macOS, the BSDs): a mutex and a condition variable
 *            per word. ADAMC_POOL_CONDVAR=1 forces it on Linux, to test it there.
 *   win32    Windows (MSVC, mingw-w64): threads from _beginthreadex, WaitOnAddress
 *            and WakeByAddress* (Windows 8 and later; Python 3.10 needs 8.1). */
#if defined(ADAMC_NO_THREADS)
#define ADAMC_POOL 0
#elif defined(_WIN32)
#define ADAMC_POOL 1
#define ADAMC_WAIT_WIN32 1
#if !defined(_WIN32_WINNT) || _WIN32_WINNT < 0x0602
#undef _WIN32_WINNT
#define _WIN32_WINNT 0x0602 /* WaitOnAddress */
#endif
#include <windows.h>
#include <process.h>
#if defined(_MSC_VER)
#pragma comment(lib, "synchronization.lib")
#endif
#elif defined(__unix__) || defined(__APPLE__)
#define ADAMC_POOL 1
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <fcntl.h>
#endif
#if defined(__linux__) && !(defined(ADAMC_POOL_CONDVAR) && ADAMC_POOL_CONDVAR)
#define ADAMC_WAIT_FUTEX 1
#include <linux/futex.h>
#include <sys/syscall.h>
#else
#define ADAMC_WAIT_CONDVAR 1
#endif
#else
#define ADAMC_POOL 0
#endif

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define RLOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define FETCH_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define CAS(p, expected, desired)                                                        \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_SEQ_CST,       \
                                __ATOMIC_SEQ_CST)

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#elif defined(_WIN32)
#define CPU_RELAX() YieldProcessor()
#else
#define CPU_RELAX() ((void)0)
#endif

enum { MAX_THREADS = ADAMC_MAX_THREADS, KINDS = ADAMC_POLICY_KINDS, BUCKETS = 48 };

/* A job's chunks are numbered 0 .. nchunks-1; range r of a job is a contiguous run
 * of them, packed as (next << 32) | stop. Thread r starts on range r (the same part
 * of the arrays at every step, so it stays in that core's cache), then takes chunks
 * from the others. A claim is one atomic add on `next`; a word with next >= stop has
 * nothing left, and every range is exhausted before its job can end, so a claim
 * that succeeds always belongs to the job in the slot. */
typedef struct {
    uint64_t word;
    char pad[64 - sizeof(uint64_t)];
} range_t;

typedef struct {
    /* the one job slot, owned by the caller that holds `busy` */
    int busy;
    adamc_body_fn body;
    void *ctx;
    ptrdiff_t n, chunk;
    int nranges;
    int64_t t_publish; /* ns, for the workers' wake-up latency */
    uint32_t pending;  /* chunks not finished yet; futex word of a waiting caller */
    int caller_waiting;
    range_t ranges[MAX_THREADS];

    uint32_t seq; /* futex word of sleeping workers: +1 per published job */
    int sleepers;

    /* tokens: threads inside kernels. A caller that has to wait registers in
     * `waiters` and sleeps on `token_gen`, which every leave and limit change bumps;
     * while callers wait, a leaving thread hands its token over (`handoff`) instead
     * of freeing it, so that new callers cannot overtake the waiting ones. */
    int active, limit, waiters, peak;
    uint32_t handoff, token_gen;

    int nworkers;
    int spin_ns;
    int adaptive;
    int host_check; /* the adaptive policy keeps one thread while the host is full */
    ptrdiff_t threshold; /* bytes from which a call may use several threads */
    ptrdiff_t step_chunk; /* smallest chunk of a step, in elements (a multiple of 64) */

    /* counters for show_config, the tests and the benchmarks */
    uint64_t jobs_single, jobs_parallel, joins, wake_ns_total;
    int64_t wake_ns_max;
} pool_t;

/* At least 4096 elements per chunk of a step: about a microsecond of work. */
static pool_t P = {.limit = 1, .spin_ns = 20000, .adaptive = 1, .host_check = 1,
                   .threshold = 1 << 16, .step_chunk = 4096};

/* Adaptive choice per (kind, size class): nanoseconds per byte on one thread ([0])
 * and on several ([1]), exponentially weighted. */
typedef struct {
    int lock;
    int warm; /* the first call of a size is not measured: page faults, cold caches */
    int have[2];
    double ns_per_byte[2];
    uint32_t calls, interval;
    int choice; /* 0 one thread, 1 several */
    int probe_next; /* the next call is a probe of several threads (after a warm-up) */
    uint32_t deferred; /* trials of several threads put off while the host was full */
} policy_t;

#if ADAMC_POOL
static policy_t POLICY[KINDS][BUCKETS];
#endif

enum { PROBE_FIRST = 16, PROBE_MAX = 1024 };

/* The host's load, read at most every HOST_REFRESH_NS (see host_is_full). */
enum { HOST_REFRESH_NS = 10000000 };
#if ADAMC_POOL
static int64_t host_checked_ns = INT64_MIN / 2;
static int host_full;
#endif

/* ---------------------------------------------------------------------------------
 * Sleeping and waking */

#if ADAMC_WAIT_FUTEX
static void
wait_on(uint32_t *addr, uint32_t expected)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void
wake(uint32_t *addr, int count)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}
#elif ADAMC_WAIT_CONDVAR
/* One mutex and condition variable per word that threads sleep on (each has its own
 * sleepers: workers on `seq`, the caller of a job on `pending`, callers waiting for a
 * token on `token_gen`), so that a wake-up reaches only the threads it is for. The
 * value is checked under the mutex, and a waker takes the mutex after changing it:
 * a wake-up between the check and the sleep cannot be lost. */
typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
} waitq_t;

static waitq_t WAITQ[3] = {{PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER},
                           {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER},
                           {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER}};

static waitq_t *
waitq_of(const uint32_t *addr)
{
    return addr == &P.seq ? &WAITQ[0] : addr == &P.pending ? &WAITQ[1] : &WAITQ[2];
}

static void
wait_on(uint32_t *addr, uint32_t expected)
{
    waitq_t *q = waitq_of(addr);
    pthread_mutex_lock(&q->mutex);
    if (LOAD(addr) == expected)
        pthread_cond_wait(&q->cond, &q->mutex);
    pthread_mutex_unlock(&q->mutex);
}

static void
wake(uint32_t *addr, int count)
{
    waitq_t *q = waitq_of(addr);
    pthread_mutex_lock(&q->mutex);
    if (count == 1)
        pthread_cond_signal(&q->cond);
    else
        pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mutex);
}
#elif ADAMC_WAIT_WIN32
static void
wait_on(uint32_t *addr, uint32_t expected)
{
    WaitOnAddress((volatile VOID *)addr, &expected, sizeof expected, INFINITE);
}

static void
wake(uint32_t *addr, int count)
{
    if (count == 1)
        WakeByAddressSingle((PVOID)addr);
    else
        WakeByAddressAll((PVOID)addr);
}
#endif

#if ADAMC_POOL
static int64_t
now_ns(void)
{
#if ADAMC_WAIT_WIN32
    LARGE_INTEGER c, f; /* the frequency is fixed at boot; reading it is cheap */
    QueryPerformanceCounter(&c);
    QueryPerformanceFrequency(&f);
    const int64_t ticks = c.QuadPart, hz = f.QuadPart;
    return ticks / hz * 1000000000 + ticks % hz * 1000000000 / hz;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}
#endif

/* ---------------------------------------------------------------------------------
 * Tokens */

static void
note_peak(int a)
{
    int p = RLOAD(&P.peak);
    while (a > p && !CAS(&P.peak, &p, a)) {
    }
}

/* One attempt at a token; queued: the caller is registered in `waiters`. */
static int
take_token(int queued)
{
    uint32_t h = LOAD(&P.handoff);
    while (h > 0)
        if (CAS(&P.handoff, &h, h - 1))
            return 1; /* `active` already counts it */
    if (queued || LOAD(&P.waiters) == 0) {
        int a = LOAD(&P.active);
        while (a < LOAD(&P.limit))
            if (CAS(&P.active, &a, a + 1))
                return 1;
    }
    return 0;
}

int
adamc_try_enter(void)
{
    if (!take_token(0))
        return 0;
    note_peak(LOAD(&P.active));
    return 1;
}

void
adamc_enter(void)
{
    if (adamc_try_enter())
        return;
#if ADAMC_POOL
    ADD(&P.waiters, 1);
    for (;;) {
        const uint32_t g = LOAD(&P.token_gen);
        if (take_token(1))
            break;
        if (LOAD(&P.handoff) == 0 && LOAD(&P.active) >= LOAD(&P.limit))
            wait_on(&P.token_gen, g);
    }
    ADD(&P.waiters, -1);
#else
    ADD(&P.waiters, 1);
    while (!take_token(1)) {
    }
    ADD(&P.waiters, -1);
#endif
    note_peak(LOAD(&P.active));
}

void
adamc_leave(void)
{
#if ADAMC_POOL
    if (LOAD(&P.waiters) > 0 && LOAD(&P.active) <= LOAD(&P.limit)) {
        /* A token handed to nobody (the waiter got one otherwise) is taken by the
         * next caller, so none is lost. */
        ADD(&P.handoff, 1);
        ADD(&P.token_gen, 1);
        wake(&P.token_gen, 1);
        return;
    }
    ADD(&P.active, -1);
    if (LOAD(&P.waiters) > 0) {
        ADD(&P.token_gen, 1);
        wake(&P.token_gen, 1);
    }
#else
    ADD(&P.active, -1);
#endif
}

/* Whether a thread that holds a token and steps out of the kernels for a moment (the
 * compiled minimize loop, between the steps of a C-objective fit) may keep it until
 * its next step, saving the two atomic read-modify-writes (about 22 ns here) of
 * leaving and entering again: only while it keeps nobody out. Another token must be
 * free (a new caller takes that one at once, and a worker may join a job), no caller
 * may be waiting, and no parallel job may be running (its workers need tokens). Plain
 * loads: a caller that comes after the check waits at most until the holder's next
 * step, where the check is made again (or finds the free token). With a limit of 1
 * it is never kept. */
int
adamc_may_keep_token(void)
{
    return RLOAD(&P.waiters) == 0 && RLOAD(&P.handoff) == 0 &&
           RLOAD(&P.active) < RLOAD(&P.limit) && RLOAD(&P.busy) == 0;
}

#if ADAMC_POOL
/* A worker takes a token only when one is free and no caller is waiting for it. */
static int
worker_try_enter(void)
{
    int a = LOAD(&P.active);
    while (a < LOAD(&P.limit) && LOAD(&P.waiters) == 0) {
        if (CAS(&P.active, &a, a + 1)) {
            note_peak(a + 1);
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------
 * Chunks */

static ptrdiff_t
claim(int r)
{
    const uint64_t w = __atomic_fetch_add(&P.ranges[r].word, (uint64_t)1 << 32, __ATOMIC_ACQ_REL);
    const uint32_t next = (uint32_t)(w >> 32), stop = (uint32_t)w;
    return next < stop ? (ptrdiff_t)next : -1;
}

static int
claimable(int nranges)
{
    for (int r = 0; r < nranges; r++) {
        const uint64_t w = __atomic_load_n(&P.ranges[r].word, __ATOMIC_ACQUIRE);
        if ((uint32_t)(w >> 32) < (uint32_t)w)
            return 1;
    }
    return 0;
}

static void
run_chunk(ptrdiff_t c)
{
    const ptrdiff_t b = c * P.chunk;
    const ptrdiff_t e = b + P.chunk < P.n ? b + P.chunk : P.n;
    P.body(P.ctx, b, e);
    if (__atomic_sub_fetch(&P.pending, 1, __ATOMIC_SEQ_CST) == 0 && LOAD(&P.caller_waiting))
        wake(&P.pending, 1);
}

/* Work through range `home`, then the others; a worker (not the caller) stops
 * between chunks when a caller waits for its token. Returns the chunks done. */
static int
work(int home, int nranges, int is_worker)
{
    int done = 0;
    for (int k = 0; k < nranges; k++) {
        const int r = (home + k) % nranges;
        ptrdiff_t c;
        while ((c = claim(r)) >= 0) {
            run_chunk(c);
            done++;
            if (is_worker && LOAD(&P.waiters) > 0)
                return done;
        }
    }
    return done;
}

/* Returns whether this worker did any of the job's chunks. */
static int
participate(int id)
{
    const int nranges = RLOAD(&P.nranges);
    if (nranges < 2 || !claimable(nranges) || !worker_try_enter())
        return 0;
    const int64_t t0 = RLOAD(&P.t_publish);
    const int64_t late = now_ns() - t0;
    const int did = work(id % nranges, nranges, 1) > 0;
    if (did) {
        __atomic_add_fetch(&P.joins, 1, __ATOMIC_RELAXED);
        if (late > 0 && late < 1000000000) {
            __atomic_add_fetch(&P.wake_ns_total, (uint64_t)late, __ATOMIC_RELAXED);
            int64_t m = RLOAD(&P.wake_ns_max);
            while (late > m && !CAS(&P.wake_ns_max, &m, late)) {
            }
        }
    }
    adamc_leave();
    return did;
}

static void
worker_loop(int id)
{
    uint32_t seen = LOAD(&P.seq);
    int worked = 0;
    for (;;) {
        uint32_t s = LOAD(&P.seq);
        /* Spin only after real work: a worker that found no chunk or no token (the
         * cores are taken by other callers) goes back to sleep at once. */
        if (s == seen && worked) {
            const int64_t until = now_ns() + RLOAD(&P.spin_ns);
            for (int i = 0; (s = LOAD(&P.seq)) == seen; i++) {
                CPU_RELAX();
                if ((i & 63) == 63 && now_ns() > until)
                    break;
            }
        }
        if (s == seen) {
            ADD(&P.sleepers, 1);
            while ((s = LOAD(&P.seq)) == seen)
                wait_on(&P.seq, seen);
            ADD(&P.sleepers, -1);
        }
        seen = s;
        worked = participate(id);
    }
}

#if ADAMC_WAIT_WIN32
static unsigned __stdcall
worker_main(void *arg)
{
    worker_loop((int)(intptr_t)arg);
    return 0;
}

/* Returns 0 when the worker runs. _beginthreadex (not CreateThread) sets up the C
 * runtime for the thread; the handle is closed at once (a detached thread). The
 * console's Ctrl-C arrives on a thread of its own: nothing to mask. */
static int
start_thread(int id)
{
    const uintptr_t h = _beginthreadex(NULL, 256 * 1024, worker_main, (void *)(intptr_t)id,
                                       STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
    if (h == 0)
        return -1;
    CloseHandle((HANDLE)h);
    return 0;
}
#else
static void *
worker_main(void *arg)
{
    worker_loop((int)(intptr_t)arg);
    return NULL;
}

static int
start_thread(int id)
{
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* Signals stay with the interpreter's threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const int err = pthread_create(&tid, &attr, worker_main, (void *)(intptr_t)id);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return err;
}
#endif

static void
start_workers(int wanted)
{
    if (wanted > MAX_THREADS - 1)
        wanted = MAX_THREADS - 1;
    while (P.nworkers < wanted) {
        if (start_thread(P.nworkers + 1) != 0)
            break; /* run with the workers we have */
        __atomic_store_n(&P.nworkers, P.nworkers + 1, __ATOMIC_RELAXED);
    }
}

#if !ADAMC_WAIT_WIN32
/* In a child of fork() only the forking thread exists: start again from scratch. */
static void
after_fork_child(void)
{
    const int limit = P.limit, spin = P.spin_ns, adaptive = P.adaptive;
    const int host_check = P.host_check;
    const ptrdiff_t threshold = P.threshold, step_chunk = P.step_chunk;
    memset(&P, 0, sizeof P);
    memset(POLICY, 0, sizeof POLICY);
    host_checked_ns = INT64_MIN / 2; /* this process's threads are not the parent's */
    P.limit = limit;
    P.spin_ns = spin;
    P.adaptive = adaptive;
    P.host_check = host_check;
    P.threshold = threshold;
    P.step_chunk = step_chunk;
#if ADAMC_WAIT_CONDVAR
    for (int q = 0; q < 3; q++) {
        pthread_mutex_init(&WAITQ[q].mutex, NULL);
        pthread_cond_init(&WAITQ[q].cond, NULL);
    }
#endif
}

/* Registered when the library is loaded: a fork before the first parallel job, while
 * another thread holds a token, must not leave the child with that token counted. */
__attribute__((constructor)) static void
register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}
#endif

/* ---------------------------------------------------------------------------------
 * The adaptive policy */

static int
bucket_of(ptrdiff_t nbytes)
{
    int b = 0;
    while (b < BUCKETS - 1 && ((ptrdiff_t)2 << b) <= nbytes)
        b++;
    return b;
}

static void
unlock(policy_t *e)
{
    __atomic_store_n(&e->lock, 0, __ATOMIC_RELEASE);
}

/* Whether the host has more runnable threads than CPUs without this call's workers
 * (Linux: the runnable count of /proc/loadavg, this thread included, less the pool's
 * workers that are awake). A worker woken then finds no idle CPU: it takes turns with
 * another process's thread, often by preempting its own caller on the caller's CPU,
 * and a chunk it holds when it is preempted stops the job until it runs again. With
 * both CPUs of a 2-CPU host spinning in other processes, such calls took up to 12 ms
 * instead of 0.5 (N = 1e6 float32 Adam), and the first 100 steps, with the policy's
 * first measurements and probes of several threads, 1.2x the time of one thread.
 * Elsewhere: never full. */
static int
host_full_now(void)
{
#if defined(__linux__)
    static long ncpus = 0;
    char buf[128];
    if (ncpus <= 0)
        ncpus = sysconf(_SC_NPROCESSORS_ONLN);
    const int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ncpus <= 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    const ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0)
        return 0;
    buf[len] = '\0';
    /* "0.52 0.58 0.59 3/811 12345": the fourth field counts the runnable threads */
    const char *p = buf;
    for (int field = 0; field < 3; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return 0;
        p++;
    }
    const long runnable = strtol(p, NULL, 10);
    const long awake = (long)LOAD(&P.nworkers) - (long)LOAD(&P.sleepers);
    return runnable - (awake > 0 ? awake : 0) > ncpus;
#else
    return 0;
#endif
}

static int
host_is_full(void)
{
    const int64_t t = now_ns();
    if (t - __atomic_load_n(&host_checked_ns, __ATOMIC_RELAXED) < HOST_REFRESH_NS)
        return RLOAD(&host_full);
    __atomic_store_n(&host_checked_ns, t, __ATOMIC_RELAXED);
    const int full = host_full_now();
    __atomic_store_n(&host_full, full, __ATOMIC_RELAXED);
    return full;
}

/* Whether the policy may try several threads now (measure them for the first time, or
 * probe them while one thread is in use): always while the host has a free CPU; while
 * it is full, after PROBE_MAX calls that waited for it (the host's load may be one
 * that several threads beat: processes of lower priority, say). `host`: 1 or 0 as the
 * tests give it, -1 to read it. A trial granted stays granted until several threads
 * are measured (a first call on them only wakes the workers). */
static int
trial(policy_t *e, int host)
{
    if (e->deferred >= PROBE_MAX || !RLOAD(&P.host_check) ||
        !(host < 0 ? host_is_full() : host))
        return 1;
    e->deferred++;
    return 0;
}

/* Returns 1 to use several threads; *slot is the entry to update afterwards (or
 * NULL when another caller holds it: then nothing is recorded). `host`: see trial(). */
static int
choose(int kind, ptrdiff_t nbytes, int host, policy_t **slot)
{
    *slot = NULL;
    if (!LOAD(&P.adaptive))
        return 1;
    policy_t *e = &POLICY[kind & (KINDS - 1)][bucket_of(nbytes)];
    int unlocked = 0;
    if (!CAS(&e->lock, &unlocked, 1))
        return RLOAD(&e->choice);
    if (!e->warm) {
        e->warm = 1;
        unlock(e);
        return 0;
    }
    *slot = e;
    if (!e->have[0])
        return 0;
    if (!e->have[1])
        return trial(e, host);
    /* Prefer one thread unless several were clearly faster: it leaves the other
     * cores to the rest of the process and the host. */
    const int best = e->ns_per_byte[1] < 0.97 * e->ns_per_byte[0];
    __atomic_store_n(&e->choice, best, __ATOMIC_RELAXED);
    if (e->interval == 0)
        e->interval = PROBE_FIRST;
    if (e->probe_next) {
        e->probe_next = 0;
        return 1;
    }
    if (++e->calls >= e->interval) {
        if (best) {
            e->calls = 0;
            return 0; /* a probe of one thread */
        }
        if (!trial(e, host))
            return 0; /* put off: the next call asks again */
        e->calls = 0;
        /* A probe of several threads after many calls on one finds the workers
         * asleep: a first call on several wakes them and is not measured. */
        e->probe_next = 1;
        unlock(e);
        *slot = NULL;
        return 1;
    }
    return best;
}

static void
record(policy_t *e, int mode, int64_t elapsed_ns, ptrdiff_t nbytes)
{
    if (nbytes <= 0) {
        unlock(e);
        return;
    }
    double sample = (double)elapsed_ns / (double)nbytes;
    const int probe = e->have[0] && e->have[1] && mode != e->choice;
    if (mode)
        e->deferred = 0;
    if (!e->have[mode]) {
        e->ns_per_byte[mode] = sample;
        e->have[mode] = 1;
    } else {
        /* A descheduled call can take 100x longer: clip it, so one bad sample
         * moves the estimate by at most a bounded amount. */
        if (sample > 4.0 * e->ns_per_byte[mode])
            sample = 4.0 * e->ns_per_byte[mode];
        const double w = probe ? 0.5 : 0.125;
        e->ns_per_byte[mode] += w * (sample - e->ns_per_byte[mode]);
    }
    if (probe) {
        const int best = e->ns_per_byte[1] < 0.97 * e->ns_per_byte[0];
        /* Did this probe alone beat the mode in use? Then look again soon: the
         * estimate moves half way per probe, and conditions may have changed. */
        const int won = mode ? sample < 0.97 * e->ns_per_byte[0]
                             : !(e->ns_per_byte[1] < 0.97 * sample);
        if (best != e->choice) {
            __atomic_store_n(&e->choice, best, __ATOMIC_RELAXED);
            e->interval = PROBE_FIRST;
        } else if (won) {
            e->interval = PROBE_FIRST;
        } else {
            e->interval = e->interval < PROBE_MAX / 2 ? e->interval * 2 : PROBE_MAX;
        }
    }
    unlock(e);
}

#endif /* ADAMC_POOL */

/* ---------------------------------------------------------------------------------
 * Entry points */

void
adamc_parallel(int kind, ptrdiff_t nbytes, adamc_body_fn body, void *ctx, ptrdiff_t n,
               ptrdiff_t chunk_min)
{
#if ADAMC_POOL
    const int limit = LOAD(&P.limit);
    int unlocked = 0;
    policy_t *slot = NULL;
    if (chunk_min < 1)
        chunk_min = 1;
    if (limit < 2 || (kind >= 0 && nbytes < LOAD(&P.threshold)) || n <= chunk_min) {
        body(ctx, 0, n);
        return;
    }
    const int multi = kind < 0 ? 1 : choose(kind, nbytes, -1, &slot);
    if (!multi || LOAD(&P.waiters) > 0 || !CAS(&P.busy, &unlocked, 1)) {
        /* One thread, callers waiting for tokens, or another caller has the pool: run
         * alone. (A worker still finishing the previous job holds its token for a
         * moment: it takes chunks of this one before it lets go.) What was measured
         * is a run on one thread, whatever had been chosen. */
        const int64_t t0 = slot ? now_ns() : 0;
        body(ctx, 0, n);
        __atomic_add_fetch(&P.jobs_single, 1, __ATOMIC_RELAXED);
        if (slot)
            record(slot, 0, now_ns() - t0, nbytes);
        return;
    }
    int nthreads = limit < MAX_THREADS ? limit : MAX_THREADS;
    if (P.nworkers < nthreads - 1) {
        start_workers(nthreads - 1);
        if (slot) { /* creating threads is not what a step costs: not measured */
            unlock(slot);
            slot = NULL;
        }
    }
    if (nthreads > P.nworkers + 1)
        nthreads = P.nworkers + 1;

    /* Chunks of an eighth of a thread's share (at least chunk_min elements; a
     * multiple of 64, whole cache lines, for element loops): a worker that is
     * preempted holds back little, and the calls are few enough that their cost does
     * not show. */
    ptrdiff_t chunk = n / nthreads / 8;
    if (chunk_min >= 64)
        chunk = (chunk + 63) / 64 * 64;
    if (chunk < chunk_min)
        chunk = chunk_min;
    const ptrdiff_t nchunks = (n + chunk - 1) / chunk;
    if (nchunks > UINT32_MAX || nthreads < 2 || nchunks < 2) {
        STORE(&P.busy, 0);
        if (slot)
            unlock(slot);
        body(ctx, 0, n);
        __atomic_add_fetch(&P.jobs_single, 1, __ATOMIC_RELAXED);
        return;
    }
    const int nranges = nthreads < nchunks ? nthreads : (int)nchunks;
    const int64_t t0 = now_ns();
    P.body = body;
    P.ctx = ctx;
    P.n = n;
    P.chunk = chunk;
    __atomic_store_n(&P.t_publish, t0, __ATOMIC_RELAXED);
    STORE(&P.caller_waiting, 0);
    STORE(&P.pending, (uint32_t)nchunks);
    STORE(&P.nranges, nranges);
    for (int r = 0; r < nranges; r++) {
        const uint64_t begin = (uint64_t)(nchunks * r / nranges);
        const uint64_t stop = (uint64_t)(nchunks * (r + 1) / nranges);
        __atomic_store_n(&P.ranges[r].word, (begin << 32) | stop, __ATOMIC_RELEASE);
    }
    ADD(&P.seq, 1);
    /* Sleeping workers could not join while other callers hold every token. */
    if (LOAD(&P.sleepers) > 0 && LOAD(&P.active) < limit)
        wake(&P.seq, nthreads - 1);

    work(0, nranges, 0);

    /* Everything is claimed; wait for the chunks workers are running: spin for up to
     * 50 us (a chunk takes a few), then sleep, so that a worker the host preempted
     * gets this core if it needs it. */
    if (LOAD(&P.pending) != 0) {
        const int64_t until = now_ns() + 50000;
        for (int i = 1; LOAD(&P.pending) != 0; i++) {
            if ((i & 63) != 0 || now_ns() < until) {
                CPU_RELAX();
                continue;
            }
            STORE(&P.caller_waiting, 1);
            const uint32_t left = LOAD(&P.pending);
            if (left != 0)
                wait_on(&P.pending, left);
        }
    }
    STORE(&P.nranges, 0);
    STORE(&P.busy, 0);
    __atomic_add_fetch(&P.jobs_parallel, 1, __ATOMIC_RELAXED);
    if (slot)
        record(slot, 1, now_ns() - t0, nbytes);
#else
    (void)kind;
    (void)nbytes;
    (void)chunk_min;
    body(ctx, 0, n);
#endif
}

int
adamc_have_threads(void)
{
    return ADAMC_POOL;
}

int
adamc_get_num_threads(void)
{
    return LOAD(&P.limit);
}

void
adamc_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    if (!ADAMC_POOL)
        n = 1;
    STORE(&P.limit, n);
#if ADAMC_POOL
    if (LOAD(&P.waiters) > 0) {
        ADD(&P.token_gen, 1);
        wake(&P.token_gen, MAX_THREADS);
    }
#endif
}

int
adamc_get_host_check(void)
{
    return LOAD(&P.host_check);
}

void
adamc_set_host_check(int on)
{
    STORE(&P.host_check, on != 0);
}

int
adamc_get_adaptive(void)
{
    return LOAD(&P.adaptive);
}

void
adamc_set_adaptive(int on)
{
    STORE(&P.adaptive, on != 0);
}

ptrdiff_t
adamc_get_threshold(void)
{
    return LOAD(&P.threshold);
}

void
adamc_set_threshold(ptrdiff_t nbytes)
{
    STORE(&P.threshold, nbytes < 0 ? 0 : nbytes);
}

ptrdiff_t
adamc_get_step_chunk(void)
{
    return LOAD(&P.step_chunk);
}

void
adamc_set_step_chunk(ptrdiff_t elements)
{
    elements = (elements + 63) / 64 * 64;
    STORE(&P.step_chunk, elements < 64 ? 64 : elements);
}

int
adamc_get_spin_ns(void)
{
    return LOAD(&P.spin_ns);
}

void
adamc_set_spin_ns(int ns)
{
    STORE(&P.spin_ns, ns < 0 ? 0 : ns);
}

void
adamc_pool_stats(adamc_stats *s)
{
    s->workers = LOAD(&P.nworkers);
    s->active = LOAD(&P.active);
    s->peak = LOAD(&P.peak);
    s->jobs_single = LOAD(&P.jobs_single);
    s->jobs_parallel = LOAD(&P.jobs_parallel);
    s->joins = LOAD(&P.joins);
    s->wake_ns_total = LOAD(&P.wake_ns_total);
    s->wake_ns_max = LOAD(&P.wake_ns_max);
}

void
adamc_reset_stats(int forget_policy)
{
    STORE(&P.peak, LOAD(&P.active));
    STORE(&P.jobs_single, 0);
    STORE(&P.jobs_parallel, 0);
    STORE(&P.joins, 0);
    STORE(&P.wake_ns_total, 0);
    STORE(&P.wake_ns_max, 0);
#if ADAMC_POOL
    if (forget_policy) {
        for (int k = 0; k < KINDS; k++)
            for (int b = 0; b < BUCKETS; b++) {
                policy_t *e = &POLICY[k][b];
                int unlocked = 0;
                while (!CAS(&e->lock, &unlocked, 1))
                    unlocked = 0;
                e->have[0] = e->have[1] = e->warm = 0;
                e->calls = e->interval = 0;
                e->probe_next = 0;
                e->deferred = 0;
                __atomic_store_n(&e->choice, 0, __ATOMIC_RELAXED);
                __atomic_store_n(&e->lock, 0, __ATOMIC_RELEASE);
            }
    }
#else
    (void)forget_policy;
#endif
}

int
adamc_policy_choice(int kind, ptrdiff_t nbytes, double *ns_one, double *ns_many)
{
#if ADAMC_POOL
    policy_t *e = &POLICY[kind & (KINDS - 1)][bucket_of(nbytes)];
    *ns_one = e->have[0] ? e->ns_per_byte[0] : -1.0;
    *ns_many = e->have[1] ? e->ns_per_byte[1] : -1.0;
    return RLOAD(&e->choice);
#else
    (void)kind;
    (void)nbytes;
    *ns_one = *ns_many = -1.0;
    return 0;
#endif
}

int
adamc_policy_simulate(int kind, ptrdiff_t nbytes, int64_t ns_one, int64_t ns_many, int host_full,
                      int calls, unsigned char *modes)
{
#if ADAMC_POOL
    for (int i = 0; i < calls; i++) {
        policy_t *slot;
        const int multi = choose(kind, nbytes, host_full != 0, &slot);
        if (slot != NULL) /* NULL: the unmeasured first call */
            record(slot, multi, multi ? ns_many : ns_one, nbytes);
        modes[i] = (unsigned char)multi;
    }
    return 0;
#else
    (void)kind;
    (void)nbytes;
    (void)ns_one;
    (void)ns_many;
    (void)host_full;
    (void)calls;
    (void)modes;
    return -1;
#endif
}

/* ---------------------------------------------------------------------------------
 * The kernels' loops on the pool */

typedef struct {
    adamc_chunk_fn fn;
    const adamc_task *task;
} step_ctx;

static void
step_body(void *ctx, ptrdiff_t begin, ptrdiff_t end)
{
    const step_ctx *c = (const step_ctx *)ctx;
    c->fn(c->task, begin, end);
}

void
adamc_run(adamc_chunk_fn fn, const adamc_task *task, ptrdiff_t n, int kind, ptrdiff_t nbytes)
{
    /* what adamc_parallel does under the threshold, without its two indirect calls
     * (they showed in the per-step cost at n = 10) */
    if (nbytes < RLOAD(&P.threshold)) {
        fn(task, 0, n);
        return;
    }
    step_ctx c = {fn, task};
    adamc_parallel(kind, nbytes, step_body, &c, n, RLOAD(&P.step_chunk));
}

enum { MAX_PARTS = ADAMC_SUM_PARTS, PART = ADAMC_SUM_PART };

typedef struct {
    adamc_sumsq_fn fn;
    const void *grad;
    ptrdiff_t n, parts;
    double clip;
    double *partial;
} sumsq_ctx;

static void
sumsq_body(void *ctx, ptrdiff_t begin, ptrdiff_t end)
{
    const sumsq_ctx *c = (const sumsq_ctx *)ctx;
    for (ptrdiff_t k = begin; k < end; k++)
        c->partial[k] = c->fn(c->grad, c->n * k / c->parts, c->n * (k + 1) / c->parts, c->clip);
}

double
adamc_sum_squares(adamc_sumsq_fn fn, const void *grad, ptrdiff_t n, double clip, int kind,
                  ptrdiff_t nbytes)
{
    /* Partitions of about 32K elements, at most 64: their boundaries depend on n only,
     * so the partial sums and their (ordered) total are the same for any thread count. */
    double partial[MAX_PARTS];
    ptrdiff_t parts = n / PART;
    if (parts < 1)
        parts = 1;
    if (parts > MAX_PARTS)
        parts = MAX_PARTS;
    sumsq_ctx c = {fn, grad, n, parts, clip, partial};
    adamc_parallel(kind, nbytes, sumsq_body, &c, parts, 1);
    double total = 0.0;
    for (ptrdiff_t k = 0; k < parts; k++)
        total += partial[k];
    return total;
}

typedef struct {
    adamc_reduce_fn fn;
    const adamc_task *task;
    ptrdiff_t n, parts;
    double *partial; /* two per partition */
} reduce_ctx;

static void
reduce_body(void *ctx, ptrdiff_t begin, ptrdiff_t end)
{
    const reduce_ctx *c = (const reduce_ctx *)ctx;
    for (ptrdiff_t k = begin; k < end; k++)
        c->fn(c->task, c->n * k / c->parts, c->n * (k + 1) / c->parts, c->partial + 2 * k);
}

void
adamc_reduce2(adamc_reduce_fn fn, const adamc_task *task, ptrdiff_t n, int kind,
              ptrdiff_t nbytes, double *out)
{
    /* the partitions of adamc_sum_squares: boundaries that depend on n only */
    double partial[2 * MAX_PARTS];
    ptrdiff_t parts = n / PART;
    if (parts < 1)
        parts = 1;
    if (parts > MAX_PARTS)
        parts = MAX_PARTS;
    reduce_ctx c = {fn, task, n, parts, partial};
    adamc_parallel(kind, nbytes, reduce_body, &c, parts, 1);
    out[0] = out[1] = 0.0;
    for (ptrdiff_t k = 0; k < parts; k++) {
        out[0] += partial[2 * k];
        out[1] += partial[2 * k + 1];
    }
}
