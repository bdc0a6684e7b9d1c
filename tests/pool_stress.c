/* Stress test of src_c/adamc_pool.c, built by tests/test_threads.py (also with
 * ThreadSanitizer): several callers run many jobs of random sizes at once; every
 * element of every job must be visited exactly once, and never more than `limit`
 * threads may be inside job bodies at the same time.
 *
 *   pool_stress CALLERS LIMIT JOBS [churn]     exit status 0 when every check held
 *
 * With "churn", the adaptive policy is on and another thread changes the limit
 * between 1 and LIMIT every 200 us (the bound checked is then LIMIT). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamc.h"

static int inside, most;

typedef struct {
    unsigned char *hits;
} job_ctx;

static void
body(void *ctx, ptrdiff_t begin, ptrdiff_t end)
{
    job_ctx *c = (job_ctx *)ctx;
    int now = __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&most, __ATOMIC_SEQ_CST);
    while (now > seen && !__atomic_compare_exchange_n(&most, &seen, now, 0, __ATOMIC_SEQ_CST,
                                                      __ATOMIC_SEQ_CST)) {
    }
    for (ptrdiff_t i = begin; i < end; i++)
        __atomic_add_fetch(&c->hits[i], 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
}

static int jobs, failures, churning, stop_churn;

static void *
churn(void *arg)
{
    const int limit = *(int *)arg;
    struct timespec pause = {0, 200000};
    for (int k = 0; !__atomic_load_n(&stop_churn, __ATOMIC_SEQ_CST); k++) {
        adamc_set_num_threads(1 + k % limit);
        nanosleep(&pause, NULL);
    }
    adamc_set_num_threads(limit);
    return NULL;
}

static void *
caller(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg * 2654435761u + 1;
    unsigned char *hits = malloc(1 << 20);
    for (int j = 0; j < jobs; j++) {
        seed = seed * 1103515245u + 12345u;
        const ptrdiff_t n = (ptrdiff_t)(seed >> 12) % (1 << 20);
        const ptrdiff_t chunk = 1 + (ptrdiff_t)(seed >> 8) % 3000;
        memset(hits, 0, (size_t)n);
        job_ctx c = {hits};
        adamc_enter();
        adamc_parallel(j % 30, n * 4, body, &c, n, chunk);
        adamc_leave();
        for (ptrdiff_t i = 0; i < n; i++)
            if (hits[i] != 1) {
                fprintf(stderr, "job %d: element %td of %td visited %d times\n", j, i, n,
                        hits[i]);
                __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
                break;
            }
    }
    free(hits);
    return NULL;
}

int
main(int argc, char **argv)
{
    if (argc != 4 && argc != 5)
        return 2;
    int callers = atoi(argv[1]), limit = atoi(argv[2]);
    jobs = atoi(argv[3]);
    churning = argc == 5 && strcmp(argv[4], "churn") == 0;
    if (callers > 64)
        callers = 64;
    adamc_set_num_threads(limit);
    adamc_set_threshold(0);
    adamc_set_adaptive(churning);
    adamc_set_spin_ns(2000);
    pthread_t t[64], churner;
    if (churning)
        pthread_create(&churner, NULL, churn, &limit);
    for (int i = 0; i < callers; i++)
        pthread_create(&t[i], NULL, caller, (void *)(size_t)i);
    for (int i = 0; i < callers; i++)
        pthread_join(t[i], NULL);
    if (churning) {
        __atomic_store_n(&stop_churn, 1, __ATOMIC_SEQ_CST);
        pthread_join(churner, NULL);
    }
    adamc_stats s;
    adamc_pool_stats(&s);
    printf("most %d peak %d joins %llu parallel %llu single %llu\n", most, s.peak,
           (unsigned long long)s.joins, (unsigned long long)s.jobs_parallel,
           (unsigned long long)s.jobs_single);
    if (most > limit || s.peak > limit) {
        fprintf(stderr, "%d threads inside at once, limit %d\n", most, limit);
        return 1;
    }
    return failures ? 1 : 0;
}
