/* Tests of the expert cache (residency, pinning, coalescing, policies, host tier), of
 * Belady's optimum and of routing trace files. Randomized tests are seeded and replayable;
 * every step of them runs the cache's own invariant checker. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/expert_cache.h"
#include "cache/expert_trace.h"

#define NONE EXPERT_SLOT_NONE

static uint64_t test_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(test_rng(s) % n);
}

static expert_cache_t *make(uint32_t n_layer, uint32_t n_expert, uint32_t gpu, uint32_t host,
                            expert_policy_t policy)
{
    expert_cache_params_t p = {.n_layer = n_layer,
                               .n_expert = n_expert,
                               .gpu_slots = gpu,
                               .host_slots = host,
                               .policy = policy,
                               .expert_bytes = 1000,
                               .half_life = 1000,
                               .cold_ticks = 2,
                               .window = 1};
    expert_cache_t *c = NULL;
    ck_assert_int_eq(expert_cache_new(&p, &c), 0);
    return c;
}

static void check_ok(const expert_cache_t *c)
{
    char err[200] = "";
    int r = expert_cache_check(c, err, sizeof(err));
    ck_assert_msg(r == 0, "invariant broken: %s", err);
    ck_assert_uint_le(expert_cache_gpu_used(c), expert_cache_params(c)->gpu_slots);
    ck_assert_uint_le(expert_cache_host_used(c), expert_cache_params(c)->host_slots);
}

/* Acquires one expert, completes its load at once, releases: one access. Returns status. */
static uint32_t touch(expert_cache_t *c, uint32_t layer, uint16_t e)
{
    expert_result_t r;
    ck_assert_int_eq(expert_cache_acquire_batch(c, layer, &e, 1, &r), 0);
    if (r.status == EXPERT_MISS_LOAD || r.status == EXPERT_HOST_HIT)
        ck_assert_int_eq(expert_cache_load_done(c, layer, e, 0), 0);
    ck_assert_int_eq(expert_cache_release(c, layer, &e, 1), 0);
    check_ok(c);
    return r.status;
}

static expert_state_t state_of(const expert_cache_t *c, uint32_t layer, uint16_t e)
{
    expert_info_t info;
    ck_assert_int_eq(expert_cache_lookup(c, layer, e, &info), 0);
    return info.state;
}

/* ---- budgets and pinning under random workloads ---- */

#define MAX_K     4
#define MAX_OUT   6
#define MAX_LOADS 256

struct held {
    uint32_t layer;
    size_t n;
    uint16_t ids[MAX_K];
    uint32_t slot[MAX_K];
};

struct inflight {
    uint32_t layer;
    uint16_t e;
};

static void random_ids(uint64_t *rng, uint32_t n_expert, uint16_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool again;
        do {
            ids[i] = (uint16_t)below(rng, n_expert);
            again = false;
            for (size_t j = 0; j < i; j++)
                again |= ids[j] == ids[i];
        } while (again);
    }
}

static void note_loads(const expert_result_t *res, const uint16_t *ids, size_t n, uint32_t layer,
                       struct inflight *loads, size_t *n_loads)
{
    for (size_t i = 0; i < n; i++) {
        if (res[i].status != EXPERT_MISS_LOAD && res[i].status != EXPERT_HOST_HIT)
            continue;
        for (size_t j = 0; j < *n_loads; j++) /* one read per expert in flight, ever */
            ck_assert(!(loads[j].layer == layer && loads[j].e == ids[i]));
        ck_assert_uint_lt(*n_loads, MAX_LOADS);
        loads[(*n_loads)++] = (struct inflight){layer, ids[i]};
    }
}

static void verify_pins(const expert_cache_t *c, const struct held *out, size_t n_out)
{
    for (size_t o = 0; o < n_out; o++)
        for (size_t i = 0; i < out[o].n; i++) {
            expert_info_t info;
            ck_assert_int_eq(expert_cache_lookup(c, out[o].layer, out[o].ids[i], &info), 0);
            ck_assert_msg(info.slot == out[o].slot[i] && info.pins >= 1 &&
                              info.state != EXPERT_STATE_ABSENT,
                          "pinned expert %u/%u lost its slot", out[o].layer, out[o].ids[i]);
        }
}

static void random_workload(expert_policy_t policy, uint32_t gpu, uint32_t host, uint64_t seed,
                            int ops)
{
    const uint32_t L = 3, E = 8;
    expert_cache_params_t p = {.n_layer = L,
                               .n_expert = E,
                               .gpu_slots = gpu,
                               .host_slots = host,
                               .policy = policy,
                               .expert_bytes = 1,
                               .half_life = 1 + (uint32_t)(seed % 50),
                               .cold_ticks = 1 + (uint32_t)(seed % 4),
                               .window = 1 + (uint32_t)(seed % 5)};
    expert_cache_t *c = NULL;
    ck_assert_int_eq(expert_cache_new(&p, &c), 0);
    struct held out[MAX_OUT];
    struct inflight loads[MAX_LOADS];
    size_t n_out = 0, n_loads = 0;
    uint64_t rng = seed;
    int busy_seen = 0;

    for (int op = 0; op < ops; op++) {
        uint32_t what = below(&rng, 10);
        if (what < 4 && n_out < MAX_OUT) { /* acquire */
            struct held *h = &out[n_out];
            expert_result_t res[MAX_K];
            h->layer = below(&rng, L);
            h->n = 1 + below(&rng, MAX_K);
            random_ids(&rng, E, h->ids, h->n);
            int r = expert_cache_acquire_batch(c, h->layer, h->ids, h->n, res);
            ck_assert(r == 0 || r == -EBUSY);
            note_loads(res, h->ids, h->n, h->layer, loads, &n_loads);
            size_t kept = 0;
            for (size_t i = 0; i < h->n; i++) {
                if (res[i].status == EXPERT_BUSY) {
                    busy_seen++;
                    ck_assert_int_eq(r, -EBUSY);
                    continue;
                }
                ck_assert_uint_lt(res[i].slot, gpu);
                h->ids[kept] = h->ids[i];
                h->slot[kept++] = res[i].slot;
            }
            h->n = kept;
            if (kept)
                n_out++;
        } else if (what < 6 && n_loads) { /* a load ends, one in eight fails */
            size_t j = below(&rng, (uint32_t)n_loads);
            int err = below(&rng, 8) == 0 ? -EIO : 0;
            ck_assert_int_eq(expert_cache_load_done(c, loads[j].layer, loads[j].e, err), 0);
            loads[j] = loads[--n_loads];
        } else if (what < 8 && n_out) { /* a step ends */
            size_t o = below(&rng, (uint32_t)n_out);
            ck_assert_int_eq(expert_cache_release(c, out[o].layer, out[o].ids, out[o].n), 0);
            out[o] = out[--n_out];
        } else { /* a prefetch */
            uint16_t ids[MAX_K];
            expert_result_t res[MAX_K];
            uint32_t layer = below(&rng, L);
            size_t n = 1 + below(&rng, MAX_K);
            random_ids(&rng, E, ids, n);
            int r = expert_cache_prefetch(c, layer, ids, n, res);
            ck_assert_int_ge(r, 0);
            note_loads(res, ids, n, layer, loads, &n_loads);
        }
        check_ok(c);
        verify_pins(c, out, n_out);
    }
    /* Drain: every load ends, every pin goes; then nothing is pinned or loading. */
    while (n_loads) {
        n_loads--;
        ck_assert_int_eq(expert_cache_load_done(c, loads[n_loads].layer, loads[n_loads].e, 0), 0);
    }
    while (n_out) {
        n_out--;
        ck_assert_int_eq(expert_cache_release(c, out[n_out].layer, out[n_out].ids, out[n_out].n),
                         0);
    }
    check_ok(c);
    for (uint32_t l = 0; l < L; l++)
        for (uint16_t e = 0; e < E; e++) {
            expert_info_t info;
            ck_assert_int_eq(expert_cache_lookup(c, l, e, &info), 0);
            ck_assert_uint_eq(info.pins, 0);
            ck_assert(info.state == EXPERT_STATE_ABSENT || info.state == EXPERT_STATE_RESIDENT);
        }
    if (gpu <= 4)
        ck_assert_int_gt(busy_seen, 0); /* the workload did reach the all-pinned case */
    expert_cache_free(c);
}

START_TEST(budget_never_exceeded_under_random_workloads)
{
    const uint32_t gpus[] = {4, 9, 24}, hosts[] = {0, 3, 30};
    for (int policy = 0; policy < EXPERT_POLICY_COUNT_; policy++)
        for (size_t g = 0; g < 3; g++)
            for (size_t h = 0; h < 3; h++)
                for (uint64_t seed = 1; seed <= 2; seed++)
                    random_workload((expert_policy_t)policy, gpus[g], hosts[h],
                                    seed * 7919 + g * 31 + h, 3000);
}
END_TEST

START_TEST(pinned_slots_are_never_evicted_and_full_pins_give_ebusy)
{
    for (int policy = 0; policy < EXPERT_POLICY_COUNT_; policy++) {
        expert_cache_t *c = make(1, 8, 2, 0, (expert_policy_t)policy);
        uint16_t ids[2] = {0, 1}, more[2] = {2, 3};
        expert_result_t res[2];
        ck_assert_int_eq(expert_cache_acquire_batch(c, 0, ids, 2, res), 0);
        ck_assert_int_eq(expert_cache_load_done(c, 0, 0, 0), 0);
        ck_assert_int_eq(expert_cache_load_done(c, 0, 1, 0), 0);
        uint32_t s0 = res[0].slot, s1 = res[1].slot;
        ck_assert_uint_ne(s0, s1);

        ck_assert_int_eq(expert_cache_acquire_batch(c, 0, more, 2, res), -EBUSY);
        ck_assert_uint_eq(res[0].status, EXPERT_BUSY);
        ck_assert_uint_eq(res[1].status, EXPERT_BUSY);
        ck_assert_uint_eq(res[0].slot, NONE);
        ck_assert_int_eq(expert_cache_prefetch(c, 0, more, 2, res), 0);
        ck_assert_uint_eq(res[0].status, EXPERT_BUSY);
        check_ok(c);
        expert_info_t info;
        ck_assert_int_eq(expert_cache_lookup(c, 0, 0, &info), 0);
        ck_assert_uint_eq(info.slot, s0);
        ck_assert_int_eq(info.state, EXPERT_STATE_RESIDENT);
        ck_assert_int_eq(expert_cache_lookup(c, 0, 1, &info), 0);
        ck_assert_uint_eq(info.slot, s1);
        ck_assert_int_eq(state_of(c, 0, 2), EXPERT_STATE_ABSENT);

        /* Half the batch fits once one expert is released: the other is BUSY. */
        ck_assert_int_eq(expert_cache_release(c, 0, ids, 1), 0);
        ck_assert_int_eq(expert_cache_acquire_batch(c, 0, more, 2, res), -EBUSY);
        ck_assert_uint_eq(res[0].status, EXPERT_MISS_LOAD);
        ck_assert_uint_eq(res[0].slot, s0);
        ck_assert_uint_eq(res[1].status, EXPERT_BUSY);
        ck_assert_int_eq(state_of(c, 0, 1), EXPERT_STATE_RESIDENT);
        expert_cache_stats_t st;
        ck_assert_int_eq(expert_cache_get_stats(c, 0, &st), 0);
        ck_assert_uint_eq(st.busy, 3);
        check_ok(c);
        expert_cache_free(c);
    }
}
END_TEST

START_TEST(coalesces_acquires_of_a_loading_expert)
{
    expert_cache_t *c = make(2, 8, 4, 0, EXPERT_POLICY_LRU);
    uint16_t e = 5;
    expert_result_t a, b;
    ck_assert_int_eq(expert_cache_acquire_batch(c, 1, &e, 1, &a), 0);
    ck_assert_int_eq(expert_cache_acquire_batch(c, 1, &e, 1, &b), 0);
    ck_assert_uint_eq(a.status, EXPERT_MISS_LOAD);
    ck_assert_uint_eq(b.status, EXPERT_PENDING);
    ck_assert_uint_eq(a.slot, b.slot);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 1);
    ck_assert_int_eq(state_of(c, 1, 5), EXPERT_STATE_LOADING);
    ck_assert_int_eq(expert_cache_load_done(c, 1, 5, 0), 0);
    ck_assert_int_eq(expert_cache_load_done(c, 1, 5, 0), -EINVAL); /* only one read */
    expert_info_t info;
    ck_assert_int_eq(expert_cache_lookup(c, 1, 5, &info), 0);
    ck_assert_int_eq(info.state, EXPERT_STATE_RESIDENT);
    ck_assert_uint_eq(info.pins, 2);
    expert_cache_stats_t st;
    ck_assert_int_eq(expert_cache_get_stats(c, 1, &st), 0);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_uint_eq(st.pending, 1);
    ck_assert_uint_eq(st.bytes_read, 1000);
    ck_assert_int_eq(expert_cache_release(c, 1, &e, 1), 0);
    ck_assert_int_eq(expert_cache_release(c, 1, &e, 1), 0);
    ck_assert_int_eq(expert_cache_release(c, 1, &e, 1), -EINVAL); /* not pinned any more */
    check_ok(c);

    /* A demand acquire of a prefetch in flight joins it too, and counts as a used guess. */
    e = 6;
    ck_assert_int_eq(expert_cache_prefetch(c, 1, &e, 1, &a), 1);
    ck_assert_uint_eq(a.status, EXPERT_MISS_LOAD);
    ck_assert_int_eq(expert_cache_acquire_batch(c, 1, &e, 1, &b), 0);
    ck_assert_uint_eq(b.status, EXPERT_PENDING);
    ck_assert_uint_eq(b.slot, a.slot);
    ck_assert_int_eq(expert_cache_load_done(c, 1, 6, 0), 0);
    ck_assert_int_eq(state_of(c, 1, 6), EXPERT_STATE_RESIDENT);
    ck_assert_int_eq(expert_cache_get_stats(c, 1, &st), 0);
    ck_assert_uint_eq(st.prefetch_issued, 1);
    ck_assert_uint_eq(st.prefetch_used, 1);
    ck_assert_int_eq(expert_cache_release(c, 1, &e, 1), 0);
    check_ok(c);
    expert_cache_free(c);
}
END_TEST

START_TEST(failed_load_releases_its_reservation)
{
    expert_cache_t *c = make(1, 8, 2, 0, EXPERT_POLICY_LFRU);
    uint16_t e = 3;
    expert_result_t r, r2;
    /* Speculative: nobody pins it, so the slot comes back at once. */
    ck_assert_int_eq(expert_cache_prefetch(c, 0, &e, 1, &r), 1);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 1);
    ck_assert_int_eq(expert_cache_load_done(c, 0, 3, -EIO), 0);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 0);
    ck_assert_int_eq(state_of(c, 0, 3), EXPERT_STATE_ABSENT);
    check_ok(c);
    for (int i = 0; i < 100; i++) { /* no slot leaks however often it fails */
        ck_assert_int_eq(expert_cache_prefetch(c, 0, &e, 1, &r), 1);
        ck_assert_int_eq(expert_cache_load_done(c, 0, 3, -EIO), 0);
    }
    ck_assert_uint_eq(expert_cache_gpu_used(c), 0);

    /* Demand: the pinned slot turns FAILED, comes back at the last release. */
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &e, 1, &r), 0);
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &e, 1, &r2), 0);
    ck_assert_uint_eq(r2.status, EXPERT_PENDING);
    ck_assert_int_eq(expert_cache_load_done(c, 0, 3, -EIO), 0);
    ck_assert_int_eq(state_of(c, 0, 3), EXPERT_STATE_FAILED);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 1);
    check_ok(c);
    ck_assert_int_eq(expert_cache_release(c, 0, &e, 1), 0);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 1);
    ck_assert_int_eq(expert_cache_release(c, 0, &e, 1), 0);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 0);
    ck_assert_int_eq(state_of(c, 0, 3), EXPERT_STATE_ABSENT);

    /* A new acquire of a FAILED expert re-arms the read in the same slot. */
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &e, 1, &r), 0);
    ck_assert_int_eq(expert_cache_load_done(c, 0, 3, -EIO), 0);
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &e, 1, &r2), 0);
    ck_assert_uint_eq(r2.status, EXPERT_MISS_LOAD);
    ck_assert_uint_eq(r2.slot, r.slot);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 1);
    ck_assert_int_eq(expert_cache_load_done(c, 0, 3, 0), 0);
    ck_assert_int_eq(state_of(c, 0, 3), EXPERT_STATE_RESIDENT);
    uint16_t twice[2] = {3, 3};
    ck_assert_int_eq(expert_cache_release(c, 0, twice, 2), -EINVAL); /* repeated id */
    ck_assert_int_eq(expert_cache_release(c, 0, &e, 1), 0);
    ck_assert_int_eq(expert_cache_release(c, 0, &e, 1), 0);
    expert_cache_stats_t st;
    ck_assert_int_eq(expert_cache_get_stats(c, EXPERT_LAYER_ALL, &st), 0);
    ck_assert_uint_eq(st.load_failures, 103);
    ck_assert_uint_eq(st.prefetch_wasted, 101);
    check_ok(c);
    expert_cache_free(c);
}
END_TEST

START_TEST(refuses_bad_arguments_without_changing_anything)
{
    expert_cache_t *c = make(2, 8, 4, 0, EXPERT_POLICY_LRU);
    uint16_t dup[3] = {1, 2, 1}, big[2] = {1, 8}, ok = 1;
    expert_result_t res[3];
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, dup, 3, res), -EINVAL);
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, big, 2, res), -EINVAL);
    ck_assert_int_eq(expert_cache_acquire_batch(c, 2, &ok, 1, res), -EINVAL);
    ck_assert_int_eq(expert_cache_prefetch(c, 0, dup, 3, res), -EINVAL);
    ck_assert_int_eq(expert_cache_load_done(c, 0, 1, 0), -EINVAL);
    ck_assert_int_eq(expert_cache_release(c, 0, &ok, 1), -EINVAL);
    ck_assert_uint_eq(expert_cache_gpu_used(c), 0);
    ck_assert_int_eq(state_of(c, 0, 1), EXPERT_STATE_ABSENT);
    check_ok(c);
    expert_cache_free(c);

    expert_cache_params_t p = {.n_layer = 1, .n_expert = 4, .gpu_slots = 0};
    expert_cache_t *none = NULL;
    ck_assert_int_eq(expert_cache_new(&p, &none), -EINVAL);
    p.gpu_slots = 1;
    p.n_expert = 70000;
    ck_assert_int_eq(expert_cache_new(&p, &none), -EINVAL);
    ck_assert_ptr_null(none);
    ck_assert_ptr_null(expert_cache_free(NULL));

    uint32_t n = 7;
    ck_assert_int_eq(expert_cache_slots_for_budget(10ull << 30, 3ull << 20, &n), 0);
    ck_assert_uint_eq(n, 3413);
    ck_assert_int_eq(expert_cache_slots_for_budget(100, 0, &n), -EINVAL);
    ck_assert_int_eq(expert_cache_slots_for_budget(UINT64_MAX, 1, &n), -ERANGE);
    ck_assert_uint_eq(n, 3413);
    expert_policy_t pol;
    ck_assert_int_eq(expert_policy_from_name("lfru", &pol), 0);
    ck_assert_int_eq(pol, EXPERT_POLICY_LFRU);
    ck_assert_int_eq(expert_policy_from_name("fifo", &pol), -EINVAL);
}
END_TEST

/* ---- policies on hand-written traces ---- */

START_TEST(lru_evicts_exactly_the_least_recent)
{
    expert_cache_t *c = make(2, 8, 3, 0, EXPERT_POLICY_LRU);
    /* A B C fill the 3 slots; A hits (order now B C A); D evicts B; B evicts C. */
    ck_assert_uint_eq(touch(c, 1, 0), EXPERT_MISS_LOAD);
    ck_assert_uint_eq(touch(c, 1, 1), EXPERT_MISS_LOAD);
    ck_assert_uint_eq(touch(c, 1, 2), EXPERT_MISS_LOAD);
    ck_assert_uint_eq(touch(c, 1, 0), EXPERT_HIT);
    ck_assert_uint_eq(touch(c, 1, 3), EXPERT_MISS_LOAD);
    ck_assert_int_eq(state_of(c, 1, 1), EXPERT_STATE_ABSENT);
    ck_assert_int_eq(state_of(c, 1, 0), EXPERT_STATE_RESIDENT);
    ck_assert_int_eq(state_of(c, 1, 2), EXPERT_STATE_RESIDENT);
    ck_assert_uint_eq(touch(c, 1, 1), EXPERT_MISS_LOAD);
    ck_assert_int_eq(state_of(c, 1, 2), EXPERT_STATE_ABSENT);
    ck_assert_int_eq(state_of(c, 1, 0), EXPERT_STATE_RESIDENT);
    ck_assert_int_eq(state_of(c, 1, 3), EXPERT_STATE_RESIDENT);
    /* Layers share the tier: layer 0's expert 0 evicts the LRU of any layer (A of 1). */
    ck_assert_uint_eq(touch(c, 0, 0), EXPERT_MISS_LOAD);
    ck_assert_int_eq(state_of(c, 1, 0), EXPERT_STATE_ABSENT);
    expert_cache_stats_t st;
    ck_assert_int_eq(expert_cache_get_stats(c, 1, &st), 0);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.misses, 5);
    ck_assert_uint_eq(st.evictions, 3);
    ck_assert_int_eq(expert_cache_get_stats(c, 0, &st), 0);
    ck_assert_uint_eq(st.evictions, 0);
    expert_cache_free(c);
}
END_TEST

START_TEST(lfru_keeps_a_hot_expert_that_lru_evicts)
{
    /* Three slots, a window of one tick. H is used five times, then A, B, C once each,
     * then H again. LRU keeps the three most recent (A, B, C) and misses H. LFRU: when C
     * comes, B is in the window, A (one use) and H (five) are ranked by heat: A goes, H
     * hits. */
    uint32_t last[EXPERT_POLICY_COUNT_];
    for (int policy = 0; policy < EXPERT_POLICY_COUNT_; policy++) {
        expert_cache_t *c = make(1, 16, 3, 0, (expert_policy_t)policy);
        for (int i = 0; i < 5; i++)
            touch(c, 0, 15);
        touch(c, 0, 1);
        touch(c, 0, 2);
        touch(c, 0, 3);
        last[policy] = touch(c, 0, 15);
        if (policy == EXPERT_POLICY_LFRU) {
            ck_assert_int_eq(state_of(c, 0, 1), EXPERT_STATE_ABSENT);
            ck_assert_int_eq(state_of(c, 0, 2), EXPERT_STATE_RESIDENT);
            ck_assert_int_eq(state_of(c, 0, 3), EXPERT_STATE_RESIDENT);
            /* A stream of one-off experts never pushes H out either. */
            for (uint16_t e = 4; e < 15; e++)
                touch(c, 0, e);
            ck_assert_int_eq(state_of(c, 0, 15), EXPERT_STATE_RESIDENT);
        }
        expert_cache_free(c);
    }
    ck_assert_uint_eq(last[EXPERT_POLICY_LRU], EXPERT_MISS_LOAD);
    ck_assert_uint_eq(last[EXPERT_POLICY_LFRU], EXPERT_HIT);
}
END_TEST

START_TEST(lfru_forgets_old_heat)
{
    /* Counters decay: an expert hot long ago (many half-lives) loses to recent ones. */
    expert_cache_params_t p = {.n_layer = 1,
                               .n_expert = 8,
                               .gpu_slots = 2,
                               .policy = EXPERT_POLICY_LFRU,
                               .half_life = 2,
                               .window = 1};
    expert_cache_t *c = NULL;
    ck_assert_int_eq(expert_cache_new(&p, &c), 0);
    for (int i = 0; i < 5; i++)
        touch(c, 0, 7);
    for (int i = 0; i < 20; i++)
        touch(c, 0, 1);
    touch(c, 0, 2); /* evicts 7: 7's 5 uses, 10 half-lives old, weigh
                     * ~2.8/1024; expert 1's weigh ~3.4 */
    ck_assert_int_eq(state_of(c, 0, 7), EXPERT_STATE_ABSENT);
    ck_assert_int_eq(state_of(c, 0, 1), EXPERT_STATE_RESIDENT);
    expert_cache_free(c);
}
END_TEST

START_TEST(prefetch_takes_only_free_or_cold_slots)
{
    for (int policy = 0; policy < EXPERT_POLICY_COUNT_; policy++) {
        expert_cache_t *c = make(1, 8, 2, 0, (expert_policy_t)policy); /* cold_ticks 2 */
        expert_result_t r;
        uint16_t e = 2;
        touch(c, 0, 0); /* tick 1 */
        touch(c, 0, 1); /* tick 2 */
        /* The victim (0) was used one tick ago: hot, so the guess is skipped. */
        ck_assert_int_eq(expert_cache_prefetch(c, 0, &e, 1, &r), 0);
        ck_assert_uint_eq(r.status, EXPERT_BUSY);
        touch(c, 0, 1); /* tick 3 */
        touch(c, 0, 1); /* tick 4: 0 is now older than cold_ticks */
        ck_assert_int_eq(expert_cache_prefetch(c, 0, &e, 1, &r), 1);
        ck_assert_uint_eq(r.status, EXPERT_MISS_LOAD);
        ck_assert_int_eq(state_of(c, 0, 0), EXPERT_STATE_ABSENT);
        ck_assert_int_eq(expert_cache_load_done(c, 0, 2, 0), 0);
        ck_assert_int_eq(state_of(c, 0, 2), EXPERT_STATE_RESIDENT);
        /* Already there: nothing to do. */
        ck_assert_int_eq(expert_cache_prefetch(c, 0, &e, 1, &r), 0);
        ck_assert_uint_eq(r.status, EXPERT_HIT);
        /* Another guess may not evict the unused one. */
        uint16_t f = 3;
        ck_assert_int_eq(expert_cache_prefetch(c, 0, &f, 1, &r), 0);
        ck_assert_uint_eq(touch(c, 0, 2), EXPERT_HIT);
        expert_cache_stats_t st;
        ck_assert_int_eq(expert_cache_get_stats(c, 0, &st), 0);
        ck_assert_uint_eq(st.prefetch_issued, 1);
        ck_assert_uint_eq(st.prefetch_used, 1);
        ck_assert_uint_eq(st.hits, 3);
        expert_cache_free(c);
    }
}
END_TEST

START_TEST(prefetch_keeps_few_guesses_in_flight)
{
    expert_cache_t *c = make(1, 16, 8, 0, EXPERT_POLICY_LFRU); /* prefetch_max 8/4 = 2 */
    uint16_t ids[4] = {0, 1, 2, 3}, more = 4;
    expert_result_t res[4];
    ck_assert_int_eq(expert_cache_prefetch(c, 0, ids, 4, res), 2);
    ck_assert_uint_eq(res[0].status, EXPERT_MISS_LOAD);
    ck_assert_uint_eq(res[1].status, EXPERT_MISS_LOAD);
    ck_assert_uint_eq(res[2].status, EXPERT_BUSY);
    ck_assert_uint_eq(res[3].status, EXPERT_BUSY);
    /* Demand still gets the free slots at once. */
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, ids + 2, 2, res), 0);
    ck_assert_uint_eq(res[0].status, EXPERT_MISS_LOAD);
    /* A guess taken over by demand no longer counts against the limit. */
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, ids, 1, res), 0);
    ck_assert_uint_eq(res[0].status, EXPERT_PENDING);
    ck_assert_int_eq(expert_cache_prefetch(c, 0, &more, 1, res), 1);
    check_ok(c);
    for (uint16_t e = 0; e < 5; e++)
        ck_assert_int_eq(expert_cache_load_done(c, 0, e, 0), 0);
    check_ok(c);
    expert_cache_free(c);
}
END_TEST

START_TEST(host_tier_takes_demotions_and_serves_host_hits)
{
    for (int policy = 0; policy < EXPERT_POLICY_COUNT_; policy++) {
        expert_cache_t *c = make(1, 8, 1, 2, (expert_policy_t)policy);
        expert_result_t r;
        uint16_t a = 0, b = 1, x = 2, y = 3;
        ck_assert_uint_eq(touch(c, 0, a), EXPERT_MISS_LOAD);

        /* B takes A's GPU slot; A goes down to the host tier (copy first). */
        ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &b, 1, &r), 0);
        ck_assert_uint_eq(r.status, EXPERT_MISS_LOAD);
        ck_assert_uint_eq(r.slot, 0);
        ck_assert_uint_ne(r.demote_host_slot, NONE);
        uint32_t ha = r.demote_host_slot;
        expert_info_t info;
        ck_assert_int_eq(expert_cache_lookup(c, 0, a, &info), 0);
        ck_assert_int_eq(info.state, EXPERT_STATE_ABSENT);
        ck_assert_uint_eq(info.host_slot, ha);
        ck_assert_int_eq(expert_cache_load_done(c, 0, b, 0), 0);
        ck_assert_int_eq(expert_cache_release(c, 0, &b, 1), 0);

        /* A comes back from RAM, no disk read; B is demoted in turn. */
        ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &a, 1, &r), 0);
        ck_assert_uint_eq(r.status, EXPERT_HOST_HIT);
        ck_assert_uint_eq(r.host_slot, ha);
        ck_assert_uint_ne(r.demote_host_slot, NONE);
        ck_assert_uint_ne(r.demote_host_slot, ha);
        check_ok(c);
        ck_assert_int_eq(expert_cache_load_done(c, 0, a, 0), 0);
        ck_assert_int_eq(expert_cache_release(c, 0, &a, 1), 0);

        /* A still has its host copy, so evicting it again copies nothing. */
        ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &b, 1, &r), 0);
        ck_assert_uint_eq(r.status, EXPERT_HOST_HIT);
        ck_assert_uint_eq(r.demote_host_slot, NONE);
        ck_assert_int_eq(expert_cache_load_done(c, 0, b, 0), 0);
        ck_assert_int_eq(expert_cache_release(c, 0, &b, 1), 0);
        ck_assert_uint_eq(expert_cache_host_used(c), 2);

        /* X, Y: the host tier is full (A, B), so Y's demotion of X drops the host LRU. */
        ck_assert_uint_eq(touch(c, 0, x), EXPERT_MISS_LOAD);
        ck_assert_uint_eq(touch(c, 0, y), EXPERT_MISS_LOAD);
        ck_assert_int_eq(expert_cache_lookup(c, 0, x, &info), 0);
        ck_assert_uint_ne(info.host_slot, NONE);
        ck_assert_uint_eq(expert_cache_host_used(c), 2);

        expert_cache_stats_t st;
        ck_assert_int_eq(expert_cache_get_stats(c, 0, &st), 0);
        ck_assert_uint_eq(st.host_hits, 2);
        ck_assert_uint_eq(st.misses, 4);
        ck_assert_uint_eq(st.demotions, 3);
        ck_assert_uint_eq(st.host_evictions, 1);
        ck_assert_uint_eq(st.bytes_host, 2000);
        ck_assert_uint_eq(st.bytes_read, 4000);
        check_ok(c);
        expert_cache_free(c);
    }
}
END_TEST

START_TEST(host_copy_source_is_never_evicted_while_copying)
{
    expert_cache_t *c = make(1, 8, 2, 1, EXPERT_POLICY_LRU);
    uint16_t a = 0, b = 1, d = 2, both[2] = {1, 2};
    expert_result_t r[2];
    touch(c, 0, a);
    touch(c, 0, b);
    touch(c, 0, d); /* evicts A to host slot 0 */
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, &a, 1, r), 0);
    ck_assert_uint_eq(r[0].status, EXPERT_HOST_HIT); /* copy in flight from host 0 */
    ck_assert_uint_eq(r[0].host_slot, 0);
    /* A took B's slot (B dropped: the only host slot is A's copy source, busy). D gets
     * pinned, B finds nothing to evict; host slot 0 stays A's. */
    ck_assert_int_eq(expert_cache_acquire_batch(c, 0, both, 2, r), -EBUSY);
    ck_assert_uint_eq(r[0].status, EXPERT_BUSY);
    ck_assert_uint_eq(r[1].status, EXPERT_HIT);
    expert_info_t info;
    ck_assert_int_eq(expert_cache_lookup(c, 0, a, &info), 0);
    ck_assert_uint_eq(info.host_slot, 0);
    ck_assert_int_eq(expert_cache_lookup(c, 0, b, &info), 0);
    ck_assert_uint_eq(info.host_slot, NONE);
    ck_assert_int_eq(expert_cache_load_done(c, 0, a, 0), 0);
    check_ok(c);
    ck_assert_int_eq(expert_cache_release(c, 0, &a, 1), 0);
    ck_assert_int_eq(expert_cache_release(c, 0, &d, 1), 0);
    expert_cache_free(c);
}
END_TEST

/* ---- Belady ---- */

static expert_trace_t *trace_of(uint32_t n_expert, const char *batches)
{
    /* "AB,CA,BD": batches of layer 0, experts named A.. in order. */
    expert_trace_t *t = NULL;
    ck_assert_int_eq(expert_trace_new(1, n_expert, &t), 0);
    uint16_t ids[16];
    size_t n = 0;
    uint32_t step = 0;
    for (const char *p = batches;; p++) {
        if (*p == ',' || *p == 0) {
            ck_assert_int_eq(expert_trace_append(t, step++, 0, ids, n), 0);
            n = 0;
            if (!*p)
                break;
            continue;
        }
        ids[n++] = (uint16_t)(*p - 'A');
    }
    return t;
}

static uint64_t belady(const expert_trace_t *t, uint32_t slots)
{
    uint64_t hits = 0;
    ck_assert_int_eq(expert_trace_belady(t, slots, &hits), 0);
    return hits;
}

static uint64_t replay_hits(const expert_trace_t *t, expert_policy_t pol, uint32_t slots,
                            uint32_t host)
{
    expert_cache_params_t p = {.gpu_slots = slots, .host_slots = host, .policy = pol};
    expert_cache_stats_t st;
    ck_assert_int_eq(expert_trace_replay(t, &p, &st), 0);
    ck_assert_uint_eq(st.hits + st.misses + st.host_hits, t->n_access);
    return st.hits;
}

START_TEST(belady_matches_hand_checked_traces)
{
    /* Two slots, one expert per step: A B C A B D A B C.
     *  A miss [A]; B miss [A B]; C miss, next uses A@3 B@4: evict B -> [A C];
     *  A hit; B miss, next A@6 C@8: evict C -> [A B]; D miss, next A@6 B@7: evict B
     *  -> [A D]; A hit; B miss (A, D never again); C miss. Hits: 2.
     * LRU on the same trace never hits: each expert comes back just after eviction. */
    expert_trace_t *t = trace_of(8, "A,B,C,A,B,D,A,B,C");
    ck_assert_uint_eq(belady(t, 2), 2);
    ck_assert_uint_eq(replay_hits(t, EXPERT_POLICY_LRU, 2, 0), 0);
    expert_trace_free(t);

    /* Three slots, batches of two: AB, CA, BD, AC.
     *  AB: 2 misses [A B]; CA: A hit, C miss into the free slot [A B C];
     *  BD: B hit, D miss, victim among A, C (B is pinned; A and C both next at batch 3),
     *  say A -> [B C D]; AC: C hit, A miss. Hits: 3 of 8. */
    t = trace_of(8, "AB,CA,BD,AC");
    ck_assert_uint_eq(belady(t, 3), 3);
    expert_trace_free(t);

    /* Pinning counts: two slots, AB, AC, B. At C, flat MIN would evict A (never used
     * again) but A is pinned by its batch, so B goes and misses at the end. Hits: 1. */
    t = trace_of(8, "AB,AC,B");
    ck_assert_uint_eq(belady(t, 2), 1);
    ck_assert_uint_eq(replay_hits(t, EXPERT_POLICY_LRU, 2, 0), 1);
    uint64_t h;
    ck_assert_int_eq(expert_trace_belady(t, 1, &h), -E2BIG); /* a batch of 2 in 1 slot */
    expert_trace_free(t);
}
END_TEST

START_TEST(belady_is_at_least_every_policy_on_random_traces)
{
    for (uint64_t seed = 1; seed <= 12; seed++) {
        expert_trace_synth_params_t sp = {.n_layer = 1 + (uint32_t)(seed % 4),
                                          .n_expert = 16 + (uint32_t)(seed % 3) * 8,
                                          .top_k = 1 + (uint32_t)(seed % 4),
                                          .n_step = 300,
                                          .skew = 0.4 * (double)(seed % 4),
                                          .reuse = 0.1 * (double)(seed % 5),
                                          .drift = 0.05,
                                          .seed = seed};
        expert_trace_t *t = NULL;
        ck_assert_int_eq(expert_trace_synth(&sp, &t), 0);
        ck_assert_uint_eq(t->n_access, (size_t)sp.n_layer * sp.n_step * sp.top_k);
        uint32_t keys = sp.n_layer * sp.n_expert;
        for (uint32_t slots = sp.top_k; slots <= keys; slots += keys / 5 + 1) {
            uint64_t opt = belady(t, slots);
            for (int pol = 0; pol < EXPERT_POLICY_COUNT_; pol++) {
                ck_assert_uint_le(replay_hits(t, (expert_policy_t)pol, slots, 0), opt);
                ck_assert_uint_le(replay_hits(t, (expert_policy_t)pol, slots, 7), opt);
            }
        }
        /* Room for everything: only the first use of each key misses. */
        uint8_t seen[4 * 32] = {0};
        uint64_t distinct = 0;
        for (size_t b = 0; b < t->n_batch; b++)
            for (size_t a = t->start[b]; a < t->start[b + 1]; a++) {
                uint32_t k = t->layer[b] * sp.n_expert + t->ids[a];
                distinct += !seen[k];
                seen[k] = 1;
            }
        ck_assert_uint_eq(belady(t, keys), t->n_access - distinct);
        ck_assert_uint_eq(replay_hits(t, EXPERT_POLICY_LRU, keys, 0), t->n_access - distinct);
        expert_trace_free(t);
    }
}
END_TEST

/* Exhaustive optimum by dynamic programming over resident sets (at most 6 keys): from
 * batch b with resident set m, the best number of future hits. After batch b the resident
 * set is the batch plus any subset of what was resident, within the slots. */
static uint64_t optimum_by_search(const expert_trace_t *t, uint32_t slots)
{
    enum { MASKS = 64 };
    uint64_t best[MASKS], next[MASKS];
    for (int m = 0; m < MASKS; m++)
        next[m] = 0;
    for (size_t b = t->n_batch; b-- > 0;) {
        unsigned batch = 0;
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++)
            batch |= 1u << t->ids[a];
        for (unsigned m = 0; m < MASKS; m++) {
            uint64_t top = 0;
            unsigned keep = m & ~batch;
            for (unsigned sub = keep;; sub = (sub - 1) & keep) { /* every subset of keep */
                unsigned after = sub | batch;
                if ((uint32_t)__builtin_popcount(after) <= slots && next[after] > top)
                    top = next[after];
                if (!sub)
                    break;
            }
            best[m] = top + (uint64_t)__builtin_popcount(m & batch);
        }
        memcpy(next, best, sizeof(next));
    }
    return next[0];
}

START_TEST(belady_equals_exhaustive_optimum_on_small_traces)
{
    uint64_t rng = 5;
    for (int trial = 0; trial < 300; trial++) {
        uint32_t kmax = 1 + below(&rng, 3), n_keys = kmax + 1 + below(&rng, 6 - kmax);
        expert_trace_t *t = NULL;
        ck_assert_int_eq(expert_trace_new(1, n_keys, &t), 0);
        for (uint32_t b = 0; b < 24; b++) {
            uint16_t ids[3];
            size_t n = 1 + below(&rng, kmax);
            random_ids(&rng, n_keys, ids, n);
            ck_assert_int_eq(expert_trace_append(t, b, 0, ids, n), 0);
        }
        for (uint32_t slots = t->max_batch; slots <= n_keys; slots++)
            ck_assert_uint_eq(belady(t, slots), optimum_by_search(t, slots));
        expert_trace_free(t);
    }
}
END_TEST

/* Plain LRU by brute force: the resident key with the oldest (batch, position) that is
 * not in the current batch goes. */
static uint64_t lru_by_scan(const expert_trace_t *t, uint32_t slots)
{
    size_t n_keys = (size_t)t->n_layer * t->n_expert;
    uint64_t *stamp = calloc(n_keys, sizeof(*stamp)), hits = 0; /* 0 = not resident */
    uint32_t used = 0;
    for (size_t b = 0; b < t->n_batch; b++) {
        uint64_t now = (b + 1) << 16;
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++) {
            size_t k = (size_t)t->layer[b] * t->n_expert + t->ids[a];
            if (stamp[k]) { /* a hit: pinned before any miss of the batch evicts */
                hits++;
                stamp[k] = now + 1;
            }
        }
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++) {
            size_t k = (size_t)t->layer[b] * t->n_expert + t->ids[a];
            if (stamp[k] == 0 && used == slots) {
                size_t victim = SIZE_MAX;
                for (size_t v = 0; v < n_keys; v++)
                    if (stamp[v] && stamp[v] < now &&
                        (victim == SIZE_MAX || stamp[v] < stamp[victim]))
                        victim = v;
                stamp[victim] = 0;
                used--;
            }
            if (stamp[k] == 0)
                used++;
            stamp[k] = now + 1; /* in the batch: never a victim of this batch */
        }
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++) /* release order */
            stamp[(size_t)t->layer[b] * t->n_expert + t->ids[a]] = now + 1 + (a - t->start[b]);
    }
    free(stamp);
    return hits;
}

START_TEST(lru_matches_a_brute_force_lru)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        expert_trace_synth_params_t sp = {.n_layer = 3,
                                          .n_expert = 12,
                                          .top_k = 1 + (uint32_t)seed % 4,
                                          .n_step = 200,
                                          .skew = 0.8,
                                          .reuse = 0.3,
                                          .drift = 0.1,
                                          .seed = seed};
        expert_trace_t *t = NULL;
        ck_assert_int_eq(expert_trace_synth(&sp, &t), 0);
        for (uint32_t slots = sp.top_k; slots <= 36; slots += 5)
            ck_assert_uint_eq(replay_hits(t, EXPERT_POLICY_LRU, slots, 0), lru_by_scan(t, slots));
        expert_trace_free(t);
    }
}
END_TEST

START_TEST(synthetic_traces_are_deterministic_and_skewed)
{
    expert_trace_synth_params_t sp = {.n_layer = 2,
                                      .n_expert = 64,
                                      .top_k = 4,
                                      .n_step = 500,
                                      .skew = 1.2,
                                      .reuse = 0.3,
                                      .seed = 42};
    expert_trace_t *a = NULL, *b = NULL;
    ck_assert_int_eq(expert_trace_synth(&sp, &a), 0);
    ck_assert_int_eq(expert_trace_synth(&sp, &b), 0);
    ck_assert_uint_eq(a->n_access, b->n_access);
    ck_assert_mem_eq(a->ids, b->ids, a->n_access * sizeof(*a->ids));
    /* The 8 most used experts of layer 0 take well over 8/64 of its accesses. */
    uint32_t count[64] = {0}, total = 0;
    for (size_t bt = 0; bt < a->n_batch; bt++)
        if (a->layer[bt] == 0)
            for (size_t i = a->start[bt]; i < a->start[bt + 1]; i++, total++)
                count[a->ids[i]]++;
    for (int i = 0; i < 8; i++) /* partial selection sort: top 8 first */
        for (int j = i + 1; j < 64; j++)
            if (count[j] > count[i]) {
                uint32_t x = count[i];
                count[i] = count[j];
                count[j] = x;
            }
    uint32_t top = 0;
    for (int i = 0; i < 8; i++)
        top += count[i];
    ck_assert_uint_gt(top * 100, total * 40);
    expert_trace_free(a);
    expert_trace_free(b);
    sp.top_k = 65;
    ck_assert_int_eq(expert_trace_synth(&sp, &a), -EINVAL);
}
END_TEST

/* ---- trace files ---- */

static char *tmp_path(const char *name)
{
    static char path[256];
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof(path), "%s/test_cache_%d_%s", dir, (int)getpid(), name);
    return path;
}

static void traces_equal(const expert_trace_t *a, const expert_trace_t *b)
{
    ck_assert_uint_eq(a->n_layer, b->n_layer);
    ck_assert_uint_eq(a->n_expert, b->n_expert);
    ck_assert_uint_eq(a->n_batch, b->n_batch);
    ck_assert_uint_eq(a->n_access, b->n_access);
    ck_assert_mem_eq(a->step, b->step, a->n_batch * sizeof(*a->step));
    ck_assert_mem_eq(a->layer, b->layer, a->n_batch * sizeof(*a->layer));
    ck_assert_mem_eq(a->start, b->start, (a->n_batch + 1) * sizeof(*a->start));
    ck_assert_mem_eq(a->ids, b->ids, a->n_access * sizeof(*a->ids));
}

static uint8_t *slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *ret_len = (size_t)len;
    return buf;
}

START_TEST(trace_file_round_trips)
{
    expert_trace_synth_params_t sp = {.n_layer = 3,
                                      .n_expert = 300,
                                      .top_k = 40,
                                      .n_step = 50,
                                      .skew = 0.9,
                                      .reuse = 0.4,
                                      .seed = 7};
    expert_trace_t *t = NULL, *back = NULL;
    ck_assert_int_eq(expert_trace_synth(&sp, &t), 0);
    char *path = tmp_path("rt.trace");
    ck_assert_int_eq(expert_trace_save(t, path), 0);
    char err[200];
    ck_assert_int_eq(expert_trace_load(path, &back, err, sizeof(err)), 0);
    traces_equal(t, back);
    size_t len;
    uint8_t *buf = slurp(path, &len);
    ck_assert_uint_eq(len, 32 + 8 * t->n_batch + 2 * t->n_access);
    free(buf);
    unlink(path);
    expert_trace_free(back);

    /* Recording through the cache gives the batches it was asked for. */
    path = tmp_path("rec.trace");
    expert_trace_writer_t *w = NULL;
    ck_assert_int_eq(expert_trace_writer_open(path, 3, 300, &w), 0);
    expert_cache_params_t p = {.n_layer = 3, .n_expert = 300, .gpu_slots = 64};
    expert_cache_t *c = NULL;
    ck_assert_int_eq(expert_cache_new(&p, &c), 0);
    expert_cache_set_trace(c, w);
    expert_result_t res[40];
    for (size_t b = 0; b < t->n_batch; b++) {
        const uint16_t *ids = t->ids + t->start[b];
        size_t n = t->start[b + 1] - t->start[b];
        expert_cache_set_step(c, t->step[b]);
        ck_assert_int_eq(expert_cache_acquire_batch(c, t->layer[b], ids, n, res), 0);
        for (size_t i = 0; i < n; i++)
            if (res[i].status == EXPERT_MISS_LOAD)
                ck_assert_int_eq(expert_cache_load_done(c, t->layer[b], ids[i], 0), 0);
        ck_assert_int_eq(expert_cache_release(c, t->layer[b], ids, n), 0);
    }
    expert_cache_free(c);
    ck_assert_int_eq(expert_trace_writer_close(w), 0);
    ck_assert_int_eq(expert_trace_load(path, &back, err, sizeof(err)), 0);
    traces_equal(t, back);
    expert_trace_free(back);
    unlink(path);
    expert_trace_free(t);

    ck_assert_int_eq(expert_trace_load("/nonexistent/x.trace", &back, err, sizeof(err)), -ENOENT);
}
END_TEST

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

START_TEST(refuses_truncated_or_corrupt_trace_files)
{
    expert_trace_t *t = trace_of(8, "AB,CA,BD,AC"), *back = NULL;
    char *path = tmp_path("bad.trace");
    ck_assert_int_eq(expert_trace_save(t, path), 0);
    size_t len;
    uint8_t *good = slurp(path, &len);
    unlink(path);
    ck_assert_uint_eq(len, 32 + 4 * 12);
    char err[200];
    ck_assert_int_eq(expert_trace_parse(good, len, &back, err, sizeof(err)), 0);
    traces_equal(t, back);
    back = expert_trace_free(back);

    /* Every truncation is refused (the header's record count catches whole records). */
    for (size_t cut = 0; cut < len; cut++) {
        ck_assert_int_eq(expert_trace_parse(good, cut, &back, err, sizeof(err)), -EBADMSG);
        ck_assert_ptr_null(back);
    }
    uint8_t *bad = malloc(len);
    struct {
        size_t off;
        uint16_t value;
        int want;
    } cases[] = {
        {0, 'X', -EBADMSG},     /* magic */
        {8, 2, -ENOTSUP},       /* version */
        {12, 48, -EBADMSG},     /* header size */
        {16, 0, -EBADMSG},      /* no layers */
        {20, 0, -EBADMSG},      /* no experts */
        {24, 3, -EBADMSG},      /* record count */
        {32 + 4, 1, -EBADMSG},  /* layer 1 of 1 */
        {32 + 6, 0, -EBADMSG},  /* empty record */
        {32 + 6, 9, -EBADMSG},  /* more experts than exist */
        {32 + 8, 8, -EBADMSG},  /* expert 8 of 8 */
        {32 + 8, 1, -EBADMSG},  /* repeated expert (A B -> B B) */
        {32 + 12, 5, -EBADMSG}, /* step 5 then step 2 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(bad, good, len);
        put16(bad + cases[i].off, cases[i].value);
        int r = expert_trace_parse(bad, len, &back, err, sizeof(err));
        ck_assert_msg(r == cases[i].want, "case %zu: %d (%s)", i, r, err);
        ck_assert_ptr_null(back);
    }
    /* A writer that never closed leaves the count unknown: whole records are accepted,
     * a record cut short is not. */
    memcpy(bad, good, len);
    memset(bad + 24, 0xff, 8);
    ck_assert_int_eq(expert_trace_parse(bad, len - 12, &back, err, sizeof(err)), 0);
    ck_assert_uint_eq(back->n_batch, 3);
    back = expert_trace_free(back);
    ck_assert_int_eq(expert_trace_parse(bad, len - 2, &back, err, sizeof(err)), -EBADMSG);

    /* Random corruption never crashes the reader, whatever it decides. */
    uint64_t rng = 99;
    for (int i = 0; i < 20000; i++) {
        memcpy(bad, good, len);
        for (int k = 0; k < 3; k++)
            bad[below(&rng, (uint32_t)len)] = (uint8_t)test_rng(&rng);
        if (expert_trace_parse(bad, below(&rng, (uint32_t)len + 1), &back, NULL, 0) == 0)
            back = expert_trace_free(back);
    }
    free(bad);
    free(good);
    expert_trace_free(t);
}
END_TEST

static Suite *cache_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("cache");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, budget_never_exceeded_under_random_workloads);
    tcase_add_test(tc, pinned_slots_are_never_evicted_and_full_pins_give_ebusy);
    tcase_add_test(tc, coalesces_acquires_of_a_loading_expert);
    tcase_add_test(tc, failed_load_releases_its_reservation);
    tcase_add_test(tc, refuses_bad_arguments_without_changing_anything);
    tcase_add_test(tc, lru_evicts_exactly_the_least_recent);
    tcase_add_test(tc, lfru_keeps_a_hot_expert_that_lru_evicts);
    tcase_add_test(tc, lfru_forgets_old_heat);
    tcase_add_test(tc, prefetch_takes_only_free_or_cold_slots);
    tcase_add_test(tc, prefetch_keeps_few_guesses_in_flight);
    tcase_add_test(tc, host_tier_takes_demotions_and_serves_host_hits);
    tcase_add_test(tc, host_copy_source_is_never_evicted_while_copying);
    suite_add_tcase(s, tc);
    TCase *tt = tcase_create("trace");
    tcase_set_timeout(tt, 240);
    tcase_add_test(tt, belady_matches_hand_checked_traces);
    tcase_add_test(tt, belady_is_at_least_every_policy_on_random_traces);
    tcase_add_test(tt, belady_equals_exhaustive_optimum_on_small_traces);
    tcase_add_test(tt, lru_matches_a_brute_force_lru);
    tcase_add_test(tt, synthetic_traces_are_deterministic_and_skewed);
    tcase_add_test(tt, trace_file_round_trips);
    tcase_add_test(tt, refuses_truncated_or_corrupt_trace_files);
    suite_add_tcase(s, tt);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cache_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
