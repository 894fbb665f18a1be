/* The expert store on the real stack (libmoeio + expert cache + Vulkan on lavapipe): every
 * acquired expert's bytes in its GPU slot equal the file's bytes, whether it came from disk
 * (zero copy or staged), from the host tier or was already resident; budgets hold; a read
 * error fails that acquire only and leaks no slot. */
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

/* Random skewed top-k per layer for `steps` steps; every acquired expert checked. */
static void churn(expert_store_t *st, int steps)
{
    uint32_t k = m->hp.n_expert_used, ne = m->hp.n_expert;
    for (int s = 0; s < steps; s++)
        for (uint32_t l = 0; l < m->hp.n_layer; l++) {
            int32_t ids[16];
            expert_ref_t refs[16];
            for (uint32_t i = 0; i < k; i++) {
                int32_t e;
                bool dup;
                do {
                    e = (int32_t)(rnd(4) ? rnd(ne / 3 + 1) : rnd(ne)); /* some are hot */
                    dup = false;
                    for (uint32_t j = 0; j < i; j++)
                        dup |= ids[j] == e;
                } while (dup);
                ids[i] = e;
            }
            ck_assert_int_eq(expert_store_acquire(st, l, ids, k, refs), 0);
            for (uint32_t i = 0; i < k; i++)
                check_bytes(l, ids[i], &refs[i]);
            expert_store_release(st, l, ids, k);
            char err[256];
            ck_assert_msg(expert_cache_check(expert_store_cache(st), err, sizeof(err)) == 0,
                          "%s", err);
            ck_assert_uint_le(expert_cache_gpu_used(expert_store_cache(st)),
                              expert_store_gpu_slots(st));
        }
}

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

/* Fails the reaped operation number fail_at with -EIO. */
typedef struct fault {
    moeio_wrapper_t w;
    int seen, fail_at;
} fault_t;

static int f_queue(void *state, moeio_op_t *op)
{
    fault_t *f = state;
    return f->w.inner.ops->queue(f->w.inner.state, op);
}
static int f_submit(void *state, unsigned wait_nr)
{
    fault_t *f = state;
    return f->w.inner.ops->submit(f->w.inner.state, wait_nr);
}
static int f_reap(void *state, moeio_op_t **ret)
{
    fault_t *f = state;
    int r = f->w.inner.ops->reap(f->w.inner.state, ret);
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
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
