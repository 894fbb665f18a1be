/* The expert store on the real stack (libmoeio + expert cache + Vulkan on lavapipe): every
 * acquired expert's bytes in its GPU slot equal the file's bytes, whether it came from disk
 * (zero copy or staged), from the host tier, from a prefetch or was already resident;
 * budgets hold; a read error fails that acquire only and leaks no slot. Prefetch: no
 * expert is read twice (the reader's read count is three per load), pinned experts are
 * never a guess's victim, a failed guess shows only in the stats, free waits for reads in
 * flight. The fault wrapper holds completions back to keep reads "in flight" on demand. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/expert_store.h"
#include "iouring/moeio-ops.h"
#include "model/gguf.h"
#include "model/model.h"

static char dir[256], path[300];
static gguf_t *g;
static model_t *m;
static vkc_ctx_t *vkc;
static int fd = -1;

static void setup(void)
{
    char err[512], cmd[1024];
    const char *b = getenv("MOE_BUILDDIR");
    snprintf(dir, sizeof(dir), "%s/test-expert-store-XXXXXX", b ? b : ".");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/m.gguf", dir);
    snprintf(cmd, sizeof(cmd),
             "%s/tools/moe mkmodel --arch qwen2moe --type q4_K --layers 3 --experts 12 "
             "--top-k 3 --seed 9 -o %s >/dev/null",
             b ? b : ".", path);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof(err)), 0);
    ck_assert_msg(model_load(g, &m, err, sizeof(err)) == 0, "%s", err);
    vkc_options_t o = {.validation = -1};
    int r = vkc_ctx_new(&o, &vkc, err, sizeof(err));
    ck_assert_msg(r == 0, "no Vulkan device: %s", err);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
}

static void teardown(void)
{
    char cmd[600];
    if (vkc) {
        char last[256] = "";
        uint64_t msgs = vkc_ctx_validation_messages(vkc, last, sizeof(last));
        ck_assert_msg(msgs == 0, "validation: %s", last);
    }
    close(fd);
    vkc = vkc_ctx_free(vkc);
    m = model_free(m);
    g = gguf_free(g);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* The expert's bytes in its slot equal the file's. */
static void check_bytes(uint32_t layer, int32_t e, const expert_ref_t *ref)
{
    model_range_t rg[MODEL_EXPERT_PARTS];
    ck_assert_int_eq(model_expert_ranges(m, layer, (uint32_t)e, rg), 0);
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
        uint8_t *want = malloc(rg[p].size), *got = malloc(rg[p].size);
        ck_assert_int_eq(pread(fd, want, rg[p].size, (off_t)rg[p].offset), (ssize_t)rg[p].size);
        ck_assert_int_eq(vkc_buffer_read(vkc, ref->buf, ref->off[p], got, rg[p].size), 0);
        ck_assert_msg(!memcmp(want, got, rg[p].size), "layer %u expert %d part %d differs",
                      layer, e, p);
        free(want);
        free(got);
    }
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static bool has(const int32_t *ids, uint32_t n, int32_t e)
{
    for (uint32_t j = 0; j < n; j++)
        if (ids[j] == e)
            return true;
    return false;
}

/* A random skewed top-k: k distinct experts, some hot. */
static void pick(int32_t *ids, uint32_t k)
{
    uint32_t ne = m->hp.n_expert;
    for (uint32_t i = 0; i < k; i++) {
        int32_t e;
        do
            e = (int32_t)(rnd(4) ? rnd(ne / 3 + 1) : rnd(ne));
        while (has(ids, i, e));
        ids[i] = e;
    }
}

/* The cache's invariants hold and the GPU tier is within its budget. */
static void check_store(expert_store_t *st)
{
    char err[256];
    ck_assert_msg(expert_cache_check(expert_store_cache(st), err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_le(expert_cache_gpu_used(expert_store_cache(st)), expert_store_gpu_slots(st));
}

/* Random skewed top-k per layer for `steps` steps; every acquired expert checked. */
static void churn(expert_store_t *st, int steps)
{
    uint32_t k = m->hp.n_expert_used;
    for (int s = 0; s < steps; s++)
        for (uint32_t l = 0; l < m->hp.n_layer; l++) {
            int32_t ids[16];
            expert_ref_t refs[16];
            pick(ids, k);
            ck_assert_int_eq(expert_store_acquire(st, l, ids, k, refs), 0);
            for (uint32_t i = 0; i < k; i++)
                check_bytes(l, ids[i], &refs[i]);
            expert_store_release(st, l, ids, k);
            check_store(st);
        }
}

static enum moeio_backend backend = MOEIO_BACKEND_AUTO; /* of the stores make() makes */

static expert_store_t *make(uint32_t gpu_slots, uint32_t host_slots, bool staged,
                            moeio_wrapper_t *wrap)
{
    char err[512];
    expert_store_config_t c = {.model = m, .path = path, .vkc = vkc, .gpu_bytes = 1ull << 40,
                               .force_staged = staged};
    expert_store_t *st;
    /* First learn the slot size, then size the budgets in slots. */
    ck_assert_msg(expert_store_new(&c, &st, err, sizeof(err)) == 0, "%s", err);
    uint64_t sb = expert_store_slot_bytes(st);
    expert_store_free(st);
    c.gpu_bytes = sb * gpu_slots;
    c.host_bytes = sb * host_slots;
    c.io.wrapper = wrap;
    c.io.backend = backend;
    ck_assert_msg(expert_store_new(&c, &st, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(expert_store_gpu_slots(st), gpu_slots);
    ck_assert_uint_eq(expert_store_host_slots(st), host_slots);
    ck_assert(expert_store_zero_copy(st) == (!staged && vkc_ctx_info(vkc)->unified_memory &&
                                             vkc_ctx_info(vkc)->host_import));
    return st;
}

START_TEST(streamed_experts_equal_the_file_zero_copy_or_staged)
{
    for (int staged = 0; staged < 2; staged++) {
        expert_store_t *st = make(m->hp.n_expert_used * m->hp.n_layer + 2, 0, staged, NULL);
        churn(st, 12);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_gt(s.cache.misses, 20); /* it really streamed */
        ck_assert_uint_gt(s.cache.hits, 0);
        expert_store_free(st);
    }
}
END_TEST

START_TEST(host_tier_copies_are_byte_identical)
{
    for (int staged = 0; staged < 2; staged++) {
        expert_store_t *st = make(m->hp.n_expert_used + 1, 10, staged, NULL);
        churn(st, 15);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_gt(s.cache.host_hits, 0);
        ck_assert_uint_gt(s.cache.demotions, 0);
        expert_store_free(st);
    }
}
END_TEST

START_TEST(everything_resident_when_the_budget_allows)
{
    uint32_t all = m->hp.n_layer * m->hp.n_expert;
    expert_store_t *st = make(all, 0, false, NULL);
    churn(st, 10);
    churn(st, 5);
    expert_store_stats_t s;
    expert_store_stats(st, &s);
    ck_assert_uint_le(s.cache.misses, all); /* each expert read at most once */
    ck_assert_uint_eq(s.cache.evictions, 0);
    expert_store_free(st);
}
END_TEST

/* Fails the reaped operation number fail_at with -EIO. While `hold` is set, keeps every
 * completion back: reads stay in flight as far as the store can tell, and nobody blocks as
 * long as only non-blocking calls (prefetch, poll) run meanwhile. Counts the operations
 * queued and handed back. */
typedef struct fault {
    moeio_wrapper_t w;
    int seen, fail_at;
    bool hold;
    int skip_reaps; /* then keeps back this many more reap calls' worth */
    int queued, reaped;
} fault_t;

static int f_queue(void *state, moeio_op_t *op)
{
    fault_t *f = state;
    int r = f->w.inner.ops->queue(f->w.inner.state, op);
    f->queued += r == 0;
    return r;
}
static int f_submit(void *state, unsigned wait_nr)
{
    fault_t *f = state;
    return f->w.inner.ops->submit(f->w.inner.state, wait_nr);
}
static int f_reap(void *state, moeio_op_t **ret)
{
    fault_t *f = state;
    if (f->hold)
        return 0;
    if (f->skip_reaps > 0) {
        f->skip_reaps--;
        return 0;
    }
    int r = f->w.inner.ops->reap(f->w.inner.state, ret);
    f->reaped += r == 1;
    if (r == 1 && ++f->seen == f->fail_at)
        (*ret)->res = -EIO;
    return r;
}
static const moeio_ops_t fault_ops = {"fault", f_queue, f_submit, f_reap};

START_TEST(a_read_error_fails_that_acquire_only_and_leaks_no_slot)
{
    fault_t f = {.w = {.ops = &fault_ops}, .fail_at = 2};
    expert_store_t *st = make(m->hp.n_expert_used + 1, 0, false, &f.w);
    int32_t ids[3] = {0, 1, 2};
    expert_ref_t refs[3];
    ck_assert_int_eq(expert_store_acquire(st, 1, ids, 3, refs), -EIO);
    ck_assert_uint_eq(expert_cache_gpu_used(expert_store_cache(st)), 2); /* the 2 good ones */
    char err[256];
    ck_assert_msg(expert_cache_check(expert_store_cache(st), err, sizeof(err)) == 0, "%s", err);
    /* The failed expert is read again next time and its bytes are right. */
    ck_assert_int_eq(expert_store_acquire(st, 1, ids, 3, refs), 0);
    for (int i = 0; i < 3; i++)
        check_bytes(1, ids[i], &refs[i]);
    expert_store_release(st, 1, ids, 3);
    churn(st, 4);
    expert_store_stats_t s;
    expert_store_stats(st, &s);
    ck_assert_uint_eq(s.io_errors, 1);
    expert_store_free(st);
}
END_TEST

/* ---- prefetch ---- */

static expert_info_t info_of(expert_store_t *st, uint32_t layer, int32_t e)
{
    expert_info_t info;
    ck_assert_int_eq(expert_cache_lookup(expert_store_cache(st), layer, (uint16_t)e, &info), 0);
    return info;
}

/* Polls until no guess is loading (a few seconds at most). */
static void poll_until_landed(expert_store_t *st)
{
    for (int t = 0; t < 5000; t++) {
        ck_assert_int_eq(expert_store_poll(st), 0);
        bool loading = false;
        for (uint32_t l = 0; l < m->hp.n_layer; l++)
            for (uint32_t e = 0; e < m->hp.n_expert; e++)
                loading |= info_of(st, l, (int32_t)e).state == EXPERT_STATE_LOADING;
        if (!loading)
            return;
        usleep(1000);
    }
    ck_abort_msg("prefetched experts never landed");
}

/* Every expert load read each of its three ranges exactly once: no read twice (once the
 * guesses in flight are in). */
static void check_read_once(expert_store_t *st)
{
    poll_until_landed(st);
    expert_store_stats_t s;
    expert_store_stats(st, &s);
    ck_assert_uint_eq(s.reads, 3 * (s.cache.misses + s.cache.prefetch_issued));
}

/* churn with the engine's overlap: after acquiring layer l, guess layer l+1's experts (its
 * real top-k with one wrong) and poll while "the GPU computes"; every acquire checked. */
static void churn_prefetch(expert_store_t *st, int steps)
{
    uint32_t k = m->hp.n_expert_used, nl = m->hp.n_layer;
    int32_t ids[16], next[16], guess[16];
    expert_ref_t refs[16];
    pick(next, k);
    for (int s = 0; s < steps; s++)
        for (uint32_t l = 0; l < nl; l++) {
            memcpy(ids, next, sizeof(ids));
            pick(next, k);
            ck_assert_int_eq(expert_store_acquire(st, l, ids, k, refs), 0);
            memcpy(guess, next, sizeof(guess));
            int32_t wrong;
            do
                wrong = (int32_t)rnd(m->hp.n_expert);
            while (has(next, k, wrong));
            guess[rnd(k)] = wrong;
            ck_assert_int_ge(expert_store_prefetch(st, (l + 1) % nl, guess, k), 0);
            ck_assert_int_eq(expert_store_poll(st), 0);
            for (uint32_t i = 0; i < k; i++)
                check_bytes(l, ids[i], &refs[i]);
            expert_store_release(st, l, ids, k);
            check_store(st);
        }
}

START_TEST(prefetched_experts_equal_the_file_zero_copy_or_staged)
{
    for (int mode = 0; mode < 4; mode++) {
        /* io_uring where the kernel has it, and the pread workers (their own completions) */
        bool staged = mode & 1;
        backend = mode & 2 ? MOEIO_BACKEND_PREAD : MOEIO_BACKEND_AUTO;
        expert_store_t *st = make(m->hp.n_expert_used * m->hp.n_layer + 2, 0, staged, NULL);
        churn_prefetch(st, 12);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_gt(s.cache.prefetch_issued, 5);
        ck_assert_uint_gt(s.cache.prefetch_used, 0);
        ck_assert_uint_le(s.cache.prefetch_used + s.cache.prefetch_wasted, s.cache.prefetch_issued);
        ck_assert_uint_gt(s.cache.misses, 0);
        ck_assert_uint_eq(s.io_errors, 0);
        ck_assert_uint_le(s.prefetch_wait_ns, s.read_ns);
        check_read_once(st);
        expert_store_free(st);
    }
    backend = MOEIO_BACKEND_AUTO;
}
END_TEST

START_TEST(acquire_waits_for_a_prefetch_in_flight_and_reads_it_once)
{
    for (int mode = 0; mode < 4; mode++) {
        bool staged = mode & 1;
        backend = mode & 2 ? MOEIO_BACKEND_PREAD : MOEIO_BACKEND_AUTO;
        fault_t f = {.w = {.ops = &fault_ops}, .hold = true};
        expert_store_t *st = make(m->hp.n_expert_used * m->hp.n_layer + 4, 0, staged, &f.w);
        int32_t ids[3] = {4, 5, 6};
        expert_ref_t refs[3];
        ck_assert_int_eq(expert_store_prefetch(st, 1, ids, 3), 3);
        ck_assert_int_eq(expert_store_prefetch(st, 1, ids, 3), 0); /* on their way already */
        ck_assert_int_eq(expert_store_poll(st), 0);
        for (int i = 0; i < 3; i++) {
            expert_info_t info = info_of(st, 1, ids[i]);
            ck_assert_int_eq(info.state, EXPERT_STATE_LOADING);
            ck_assert(info.speculative);
            ck_assert_uint_eq(info.pins, 0);
        }
        /* Still in flight when acquire looks: it has to wait for them. */
        f.hold = false;
        f.skip_reaps = 1;
        ck_assert_int_eq(expert_store_acquire(st, 1, ids, 3, refs), 0);
        for (int i = 0; i < 3; i++)
            check_bytes(1, ids[i], &refs[i]);
        expert_store_release(st, 1, ids, 3);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_eq(s.cache.misses, 0);
        ck_assert_uint_eq(s.cache.hits, 3);
        ck_assert_uint_eq(s.cache.prefetch_issued, 3);
        ck_assert_uint_eq(s.cache.prefetch_used, 3);
        ck_assert_uint_eq(s.cache.prefetch_wasted, 0);
        ck_assert_uint_eq(s.reads, 9);
        ck_assert_uint_gt(s.prefetch_wait_ns, 0);
        ck_assert_uint_ge(s.read_ns, s.prefetch_wait_ns);

        /* Landed through poll: acquire then finds them resident and waits for nothing. */
        int32_t more[3] = {7, 8, 9};
        ck_assert_int_eq(expert_store_prefetch(st, 2, more, 3), 3);
        poll_until_landed(st);
        uint64_t waited = s.prefetch_wait_ns;
        ck_assert_int_eq(expert_store_acquire(st, 2, more, 3, refs), 0);
        for (int i = 0; i < 3; i++)
            check_bytes(2, more[i], &refs[i]);
        expert_store_release(st, 2, more, 3);
        expert_store_stats(st, &s);
        ck_assert_uint_eq(s.prefetch_wait_ns, waited);
        ck_assert_uint_eq(s.cache.prefetch_used, 6);
        ck_assert_uint_eq(s.cache.misses, 0);
        check_read_once(st);
        check_store(st);
        expert_store_free(st);
    }
    backend = MOEIO_BACKEND_AUTO;
}
END_TEST

START_TEST(prefetch_beyond_the_cache_never_evicts_pinned_experts)
{
    for (int staged = 0; staged < 2; staged++) {
        expert_store_t *st = make(8, 0, staged, NULL); /* prefetch_max: 8 / 4 */
        int32_t pinned[3] = {0, 1, 2}, all[12];
        expert_ref_t refs[2][3];
        for (int32_t e = 0; e < 12; e++)
            all[e] = e;
        ck_assert_int_eq(expert_store_acquire(st, 0, pinned, 3, refs[0]), 0);
        ck_assert_int_eq(expert_store_acquire(st, 1, pinned, 3, refs[1]), 0);
        /* 6 of 8 slots pinned: only the 2 free ones may take guesses. */
        ck_assert_int_eq(expert_store_prefetch(st, 2, all, 12), 2);
        poll_until_landed(st);
        /* Full: the only unpinned slots hold unused guesses, never a victim for another. */
        ck_assert_int_eq(expert_store_prefetch(st, 2, all, 12), 0);
        ck_assert_int_eq(expert_store_prefetch(st, 0, all, 12), 0);
        for (uint32_t l = 0; l < 2; l++)
            for (int i = 0; i < 3; i++) {
                expert_info_t info = info_of(st, l, pinned[i]);
                ck_assert_int_eq(info.state, EXPERT_STATE_RESIDENT);
                ck_assert_uint_eq(info.pins, 1);
                check_bytes(l, pinned[i], &refs[l][i]);
            }
        ck_assert_uint_eq(expert_cache_gpu_used(expert_store_cache(st)), 8);
        check_store(st);
        expert_store_release(st, 0, pinned, 3);
        expert_store_release(st, 1, pinned, 3);

        /* The two guesses are whole and count as used once acquired. */
        int32_t got[2];
        int n = 0;
        for (int32_t e = 0; e < 12; e++)
            if (info_of(st, 2, e).state == EXPERT_STATE_RESIDENT)
                got[n++] = e;
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(expert_store_acquire(st, 2, got, 2, refs[0]), 0);
        for (int i = 0; i < 2; i++)
            check_bytes(2, got[i], &refs[0][i]);
        expert_store_release(st, 2, got, 2);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_eq(s.cache.prefetch_issued, 2);
        ck_assert_uint_eq(s.cache.prefetch_used, 2);
        check_read_once(st);
        expert_store_free(st);
    }
}
END_TEST

START_TEST(a_failed_prefetch_read_shows_only_in_the_stats)
{
    for (int mode = 0; mode < 4; mode++) {
        bool staged = mode & 1, via_poll = mode & 2;
        fault_t f = {.w = {.ops = &fault_ops}, .fail_at = 2, .hold = true};
        expert_store_t *st = make(m->hp.n_expert_used * m->hp.n_layer + 4, 0, staged, &f.w);
        int32_t ids[3] = {3, 4, 5};
        expert_ref_t refs[3];
        ck_assert_int_eq(expert_store_prefetch(st, 1, ids, 3), 3);
        f.hold = false;
        if (via_poll) { /* the failure is reaped before anyone needs the expert */
            poll_until_landed(st);
            ck_assert_uint_eq(expert_cache_gpu_used(expert_store_cache(st)), 2);
            check_store(st);
        }
        ck_assert_int_eq(expert_store_acquire(st, 1, ids, 3, refs), 0);
        for (int i = 0; i < 3; i++)
            check_bytes(1, ids[i], &refs[i]);
        expert_store_release(st, 1, ids, 3);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_eq(s.io_errors, 1);
        ck_assert_uint_eq(s.cache.load_failures, 1);
        ck_assert_uint_eq(s.cache.prefetch_issued, 3);
        ck_assert_uint_eq(s.cache.prefetch_wasted, 1);
        ck_assert_uint_eq(s.cache.prefetch_used, 2);
        ck_assert_uint_eq(s.cache.misses, 1); /* the failed guess, read again on demand */
        check_read_once(st);
        check_store(st);
        churn_prefetch(st, 2);
        expert_store_free(st);
    }
}
END_TEST

START_TEST(free_waits_for_reads_in_flight)
{
    for (int staged = 0; staged < 2; staged++) {
        fault_t f = {.w = {.ops = &fault_ops}, .hold = true};
        expert_store_t *st = make(m->hp.n_expert_used * m->hp.n_layer + 4, 0, staged, &f.w);
        int32_t ids[3] = {0, 1, 2};
        ck_assert_int_eq(expert_store_prefetch(st, 0, ids, 3), 3);
        ck_assert_int_eq(f.reaped, 0);
        f.hold = false;
        expert_store_free(st);
        ck_assert_int_gt(f.queued, 0);
        ck_assert_int_eq(f.reaped, f.queued); /* every read came back before the memory went */

        /* Reads in flight, others read and (staged) in or waiting for a transfer. */
        fault_t f2 = {.w = {.ops = &fault_ops}};
        st = make(m->hp.n_expert_used * m->hp.n_layer + 4, 0, staged, &f2.w);
        ck_assert_int_eq(expert_store_prefetch(st, 0, ids, 3), 3);
        usleep(20000);
        ck_assert_int_eq(expert_store_poll(st), 0);
        ck_assert_int_ge(expert_store_prefetch(st, 1, ids, 3), 0);
        expert_store_free(st);
        ck_assert_int_eq(f2.reaped, f2.queued);
    }
}
END_TEST

START_TEST(prefetch_leaves_host_copies_to_acquire_and_demotes_byte_identically)
{
    for (int mode = 0; mode < 4; mode++) {
        /* A small GPU tier, and one past a step's experts, where victims go cold so that
         * guesses evict (and demote) some. */
        bool staged = mode & 1;
        uint32_t k = m->hp.n_expert_used;
        uint32_t slots = mode & 2 ? k * m->hp.n_layer + 7 : k + 1;
        expert_store_t *st = make(slots, 10, staged, NULL);
        churn_prefetch(st, 15);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_gt(s.cache.host_hits, 0);
        ck_assert_uint_gt(s.cache.demotions, 0);
        ck_assert_uint_gt(s.cache.prefetch_issued, 0);
        check_read_once(st);
        /* An expert with a host copy and no GPU slot is not a guess worth a load. */
        int found = 0;
        for (uint32_t l = 0; l < m->hp.n_layer && !found; l++)
            for (int32_t e = 0; e < (int32_t)m->hp.n_expert && !found; e++) {
                expert_info_t info = info_of(st, l, e);
                if (info.slot != EXPERT_SLOT_NONE || info.host_slot == EXPERT_SLOT_NONE)
                    continue;
                found = 1;
                ck_assert_int_eq(expert_store_prefetch(st, l, &e, 1), 0);
                ck_assert_int_eq(info_of(st, l, e).state, EXPERT_STATE_ABSENT);
            }
        ck_assert(found);
        expert_store_free(st);
    }
}
END_TEST

START_TEST(a_guess_in_flight_never_makes_acquire_busy)
{
    for (int staged = 0; staged < 2; staged++) {
        fault_t f = {.w = {.ops = &fault_ops}, .hold = true};
        expert_store_t *st = make(m->hp.n_expert_used, 0, staged, &f.w); /* a layer: all */
        int32_t guess = 7, ids[3] = {0, 1, 2};
        expert_ref_t refs[3];
        ck_assert_int_eq(expert_store_prefetch(st, 0, &guess, 1), 1);
        /* Still loading when acquire decides: one of these has no slot until it lands. */
        f.hold = false;
        f.skip_reaps = 1;
        ck_assert_int_eq(expert_store_acquire(st, 1, ids, 3, refs), 0);
        for (int i = 0; i < 3; i++)
            check_bytes(1, ids[i], &refs[i]);
        expert_store_release(st, 1, ids, 3);
        expert_store_stats_t s;
        expert_store_stats(st, &s);
        ck_assert_uint_eq(s.cache.busy, 1); /* the first answer, before the guess landed */
        ck_assert_uint_eq(s.cache.load_failures, 0);
        ck_assert_uint_eq(s.cache.misses, 3);
        ck_assert_uint_eq(s.cache.prefetch_wasted, 1);
        check_read_once(st);
        check_store(st);
        expert_store_free(st);
    }
}
END_TEST

START_TEST(prefetch_refuses_bad_arguments)
{
    expert_store_t *st = make(m->hp.n_expert_used + 1, 0, false, NULL);
    int32_t bad_id = (int32_t)m->hp.n_expert, neg = -1, ok = 0;
    ck_assert_int_eq(expert_store_prefetch(st, m->hp.n_layer, &ok, 1), -EINVAL);
    ck_assert_int_eq(expert_store_prefetch(st, 0, &bad_id, 1), -EINVAL);
    ck_assert_int_eq(expert_store_prefetch(st, 0, &neg, 1), -EINVAL);
    ck_assert_int_eq(expert_store_prefetch(st, 0, NULL, 0), 0);
    ck_assert_uint_eq(expert_cache_gpu_used(expert_store_cache(st)), 0);
    expert_store_free(st);
}
END_TEST

START_TEST(a_budget_below_one_layer_is_refused_with_the_reason)
{
    char err[512] = "";
    expert_store_config_t c = {.model = m, .path = path, .vkc = vkc, .gpu_bytes = 1};
    expert_store_t *st;
    ck_assert_int_eq(expert_store_new(&c, &st, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "needs 3"));
}
END_TEST

int main(void)
{
    /* Keep the driver and layer loaded past vkDestroyInstance so that LeakSanitizer can name
     * (and tests/gpu/lsan.supp suppress) what they still hold at exit. */
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);
    dlopen("libVkLayer_khronos_validation.so", RTLD_NOW | RTLD_NODELETE);
    vkc_ctx_t *probe;
    char err[256];
    vkc_options_t o = {.validation = 0};
    if (vkc_ctx_new(&o, &probe, err, sizeof(err)) < 0) {
        printf("skip: no Vulkan device: %s\n", err);
        return 77;
    }
    vkc_ctx_free(probe);
    Suite *s = suite_create("expert_store");
    TCase *tc = tcase_create("store");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, streamed_experts_equal_the_file_zero_copy_or_staged);
    tcase_add_test(tc, host_tier_copies_are_byte_identical);
    tcase_add_test(tc, everything_resident_when_the_budget_allows);
    tcase_add_test(tc, a_read_error_fails_that_acquire_only_and_leaks_no_slot);
    tcase_add_test(tc, a_budget_below_one_layer_is_refused_with_the_reason);
    tcase_add_test(tc, prefetched_experts_equal_the_file_zero_copy_or_staged);
    tcase_add_test(tc, acquire_waits_for_a_prefetch_in_flight_and_reads_it_once);
    tcase_add_test(tc, prefetch_beyond_the_cache_never_evicts_pinned_experts);
    tcase_add_test(tc, a_failed_prefetch_read_shows_only_in_the_stats);
    tcase_add_test(tc, free_waits_for_reads_in_flight);
    tcase_add_test(tc, prefetch_leaves_host_copies_to_acquire_and_demotes_byte_identically);
    tcase_add_test(tc, a_guess_in_flight_never_makes_acquire_busy);
    tcase_add_test(tc, prefetch_refuses_bad_arguments);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
