/* The Vulkan engine against the CPU reference (tests/ref), on lavapipe with the validation
 * layer on. For every architecture x {F16, Q8_0, Q4_0, Q4_K} tiny synthetic model: the
 * engine's 32 greedy tokens after an 8-token prompt equal the reference's, and its logits
 * match at every step within LOGIT_TOL of the largest logit (the engine keeps K and V in
 * F16 and sums in other orders; measured <= 8e-5). The logits are bit-identical with the
 * GPU expert cache at its minimum (one layer's top-k, half the experts in the host tier:
 * the prompt runs in waves and every layer streams) and with every expert resident; a
 * sequence batched with 7 others gets the same tokens and logits within BATCH_TOL. Also:
 * bad entries are refused without running anything, an I/O error while streaming fails the
 * step with -EIO and leaves the engine usable, and a device that cannot hold the GPU tier
 * asked for gets a smaller one. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/expert_store.h"
#include "iouring/moeio-ops.h"
#include "model/gguf.h"
#include "model/model.h"
#include "ref_forward.h"

#define N_PROMPT 8
#define N_GEN 32
#define N_OTHERS 7
/* Max |engine - reference| over a step's logits, relative to the largest |logit| (>= 1). */
#define LOGIT_TOL 1e-3
/* A sequence batched with others: the same tokens, and logits equal up to float rounding
 * (many-vector matrix products may sum a row in another order than one-vector ones). */
#define BATCH_TOL 5e-5

static char dir[256];

static void setup(void)
{
    const char *b = getenv("MOE_BUILDDIR");
    snprintf(dir, sizeof(dir), "%s/test-engine-vk-XXXXXX", b ? b : ".");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

typedef struct tmodel {
    char path[400];
    gguf_t *g;
    model_t *m;
} tmodel_t;

static void tmodel_make(tmodel_t *t, const char *arch, const char *type, const char *extra)
{
    char err[512], cmd[1400];
    const char *b = getenv("MOE_BUILDDIR");
    bool whole = !strcmp(arch, "qwen2moe") || !strcmp(arch, "olmoe");
    snprintf(t->path, sizeof(t->path), "%s/%s-%s.gguf", dir, arch, type);
    snprintf(cmd, sizeof(cmd),
             "%s/tools/moe mkmodel --arch %s --type %s --layers 2 --embd 64 --heads 4 %s "
             "--experts 8 --top-k 2 --ff-exp 64 --seed 5 %s -o %s >/dev/null",
             b ? b : ".", arch, type, whole ? "" : "--heads-kv 2 --head-dim 16", extra ? extra : "",
             t->path);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(gguf_open(t->path, &t->g, err, sizeof(err)), 0);
    ck_assert_msg(model_load(t->g, &t->m, err, sizeof(err)) == 0, "%s", err);
}

static void tmodel_free(tmodel_t *t)
{
    t->m = model_free(t->m);
    t->g = gguf_free(t->g);
}

/* Tokens and logits of one run: prompt, then N_GEN greedy steps. */
typedef struct run {
    int32_t tokens[N_GEN];
    float *logits; /* [N_GEN][n_vocab]: the logits each token was chosen from */
} run_t;

static int32_t argmax(const float *x, uint32_t n)
{
    int32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (int32_t)i;
    return best;
}

static void prompt_of(uint32_t which, uint32_t n_vocab, int32_t *p)
{
    for (uint32_t i = 0; i < N_PROMPT; i++)
        p[i] = (int32_t)((7 + which * 31 + i * 13) % n_vocab);
}

static void run_ref(const tmodel_t *t, run_t *out)
{
    char err[512];
    ref_model_t *rm;
    ref_state_t *s;
    const uint32_t V = t->m->hp.n_vocab;
    int32_t prompt[N_PROMPT];
    ck_assert_msg(ref_model_new(t->m, t->path, &rm, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ref_state_new(rm, 64, &s), 0);
    out->logits = malloc(sizeof(float) * V * N_GEN);
    prompt_of(0, V, prompt);
    for (int i = 0; i < N_PROMPT; i++)
        ck_assert_int_eq(ref_forward(s, prompt[i], i, out->logits), 0);
    for (int g = 0; g < N_GEN; g++) {
        if (g)
            ck_assert_int_eq(ref_forward(s, out->tokens[g - 1], N_PROMPT + g - 1,
                                         out->logits + (size_t)g * V),
                             0);
        out->tokens[g] = argmax(out->logits + (size_t)g * V, V);
    }
    ref_state_free(s);
    ref_model_free(rm);
}

static engine_t *engine_open_cfg(const tmodel_t *t, uint64_t gpu_bytes, uint32_t n_seq,
                                 moeio_wrapper_t *wrapper, const engine_vk_config_t *more)
{
    char err[512];
    engine_t *e = NULL;
    engine_vk_config_t c = *more; // device_limit, force_staged, host_cache_bytes
    c.model = t->m;
    c.path = t->path;
    c.validation = 1;
    c.n_ctx = 64;
    c.n_seq_max = n_seq;
    c.gpu_cache_bytes = gpu_bytes;
    c.io_wrapper = wrapper;
    int r = engine_vk_new(&c, &e, err, sizeof(err));
    ck_assert_msg(r == 0, "engine_vk_new: %s (%d)", err, r);
    return e;
}

static engine_t *engine_open(const tmodel_t *t, uint64_t gpu_bytes, uint32_t n_seq,
                             moeio_wrapper_t *wrapper)
{
    return engine_open_cfg(t, gpu_bytes, n_seq, wrapper, &(engine_vk_config_t){0});
}

/* Runs sequence 0 (prompt 0) and n_others more (their own prompts) together. */
static void run_engine(engine_t *e, uint32_t n_others, run_t *out)
{
    const uint32_t V = e->n_vocab, n_seq = 1 + n_others;
    uint32_t seq[1 + N_OTHERS];
    int32_t prompt[N_PROMPT], last[1 + N_OTHERS];
    engine_entry_t en[(1 + N_OTHERS) * N_PROMPT];
    float *lg = malloc(sizeof(float) * V * n_seq);
    size_t n = 0;
    out->logits = malloc(sizeof(float) * V * N_GEN);
    for (uint32_t s = 0; s < n_seq; s++) {
        ck_assert_int_eq(engine_seq_new(e, &seq[s]), 0);
        prompt_of(s, V, prompt);
        for (uint32_t i = 0; i < N_PROMPT; i++)
            en[n++] = (engine_entry_t){seq[s], prompt[i], i, i == N_PROMPT - 1};
    }
    // the whole prompt of every sequence in one step: prefill and batching at once
    ck_assert_int_eq(engine_step(e, en, n, lg), 0);
    for (uint32_t g = 0; g < N_GEN; g++) {
        if (g) {
            for (uint32_t s = 0; s < n_seq; s++)
                en[s] = (engine_entry_t){seq[s], last[s], N_PROMPT + g - 1, true};
            ck_assert_int_eq(engine_step(e, en, n_seq, lg), 0);
        }
        for (uint32_t s = 0; s < n_seq; s++)
            last[s] = argmax(lg + (size_t)s * V, V);
        out->tokens[g] = last[0];
        memcpy(out->logits + (size_t)g * V, lg, sizeof(float) * V);
    }
    for (uint32_t s = 0; s < n_seq; s++)
        engine_seq_free(e, seq[s]);
    free(lg);
}

static double max_rel_diff(const float *a, const float *b, uint32_t n)
{
    double d = 0, scale = 1;
    for (uint32_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return d / scale;
}

static void check_close_tol(const run_t *got, const run_t *want, uint32_t V, const char *what,
                            double tol)
{
    for (int g = 0; g < N_GEN; g++) {
        ck_assert_msg(got->tokens[g] == want->tokens[g], "%s: token %d: %d, reference %d", what, g,
                      got->tokens[g], want->tokens[g]);
        double d = max_rel_diff(got->logits + (size_t)g * V, want->logits + (size_t)g * V, V);
        ck_assert_msg(d <= tol, "%s: step %d logits differ by %.3g of the largest", what, g,
                      d);
    }
}

static void check_close(const run_t *got, const run_t *want, uint32_t V, const char *what)
{
    check_close_tol(got, want, V, what, LOGIT_TOL);
}

static void check_same(const run_t *a, const run_t *b, uint32_t V, const char *what)
{
    ck_assert_msg(!memcmp(a->tokens, b->tokens, sizeof(a->tokens)), "%s: tokens differ", what);
    for (int g = 0; g < N_GEN; g++)
        ck_assert_msg(!memcmp(a->logits + (size_t)g * V, b->logits + (size_t)g * V,
                              sizeof(float) * V),
                      "%s: step %d logits differ (max %.3g)", what, g,
                      max_rel_diff(a->logits + (size_t)g * V, b->logits + (size_t)g * V, V));
}

static void check_validation(engine_t *e)
{
    char last[512] = "";
    uint64_t n = engine_vk_validation_messages(e, last, sizeof(last));
    ck_assert_msg(n == 0, "%llu validation messages, the last: %s", (unsigned long long)n, last);
}

static const char *const archs[] = {"qwen3moe", "qwen2moe", "olmoe", "llama"};
static const char *const types[] = {"f16", "q8_0", "q4_0", "q4_K"};

START_TEST(test_matches_reference)
{
    const char *arch = archs[_i / 4], *type = types[_i % 4];
    char what[128];
    tmodel_t t = {0};
    run_t ref = {0}, all = {0}, small = {0}, batched = {0};
    tmodel_make(&t, arch, type, NULL);
    const uint32_t V = t.m->hp.n_vocab;
    run_ref(&t, &ref);

    engine_t *e = engine_open(&t, 0, 1 + N_OTHERS, NULL); // every expert resident
    run_engine(e, 0, &all);
    snprintf(what, sizeof(what), "%s %s resident", arch, type);
    check_close(&all, &ref, V, what);
    run_engine(e, N_OTHERS, &batched);
    snprintf(what, sizeof(what), "%s %s batched with %d others", arch, type, N_OTHERS);
    check_close_tol(&batched, &all, V, what, BATCH_TOL);
    engine_stats_t st;
    engine_stats(e, &st);
    ck_assert_uint_gt(st.expert_misses, 0);
    check_validation(e);
    engine_free(e);

    // the other expert path (slot-table kernel vs matvec per expert) is right too
    // (f16 and q4_0 with both; lavapipe defaults to matvec per expert)
    if (_i % 2 == 0) {
        const int kernels[] = {ENGINE_EXPERTS_SLOTS, ENGINE_EXPERTS_MATVEC};
        for (int kk = 0; kk < 2; kk++) {
            run_t other = {0};
            engine_t *o = engine_open_cfg(&t, 0, 1, NULL,
                                          &(engine_vk_config_t){.expert_kernel = kernels[kk]});
            run_engine(o, 0, &other);
            snprintf(what, sizeof(what), "%s %s expert kernel %d", arch, type, kernels[kk]);
            check_close(&other, &ref, V, what);
            check_validation(o);
            engine_free(o);
            free(other.logits);
        }
    }
    // the smallest GPU tier: one layer's top-k; the 8-sequence prompt runs in waves
    uint64_t slot = t.m->expert_bytes + 3 * 2 * 4096;
    e = engine_open_cfg(&t, slot * t.m->hp.n_expert_used, 1 + N_OTHERS, NULL,
                        &(engine_vk_config_t){.host_cache_bytes = t.m->expert_bytes_total / 2});
    run_engine(e, 0, &small);
    snprintf(what, sizeof(what), "%s %s minimum cache", arch, type);
    check_same(&small, &all, V, what);
    free(batched.logits);
    run_engine(e, N_OTHERS, &batched);
    snprintf(what, sizeof(what), "%s %s minimum cache, batched", arch, type);
    check_close_tol(&batched, &all, V, what, BATCH_TOL);
    engine_stats(e, &st);
    ck_assert_uint_gt(st.waves, 0);
    ck_assert_uint_gt(st.bytes_streamed, t.m->expert_bytes_total); // every layer streamed
    check_validation(e);
    engine_free(e);

    free(ref.logits);
    free(all.logits);
    free(small.logits);
    free(batched.logits);
    tmodel_free(&t);
}
END_TEST

/* The device cannot hold the GPU tier asked for: the engine shrinks it to what it can
 * allocate, says so, and computes the same tokens. Staged, so the tier is device memory. */
START_TEST(test_device_memory_shrinks)
{
    tmodel_t t = {0};
    run_t ref = {0}, got = {0};
    char line[2048];
    tmodel_make(&t, "qwen3moe", "q8_0", "--experts 64 --embd 256 --ff-exp 256");
    ck_assert_uint_gt(t.m->expert_bytes_total, 24u << 20);
    run_ref(&t, &ref);
    engine_t *e = engine_open_cfg(&t, 1ull << 30, 1, NULL,
                                  &(engine_vk_config_t){.device_limit = 16u << 20,
                                                        .force_staged = true});
    engine_stats_t st;
    engine_stats(e, &st);
    ck_assert_uint_le(st.device_bytes, 16u << 20);
    ck_assert_uint_lt(st.gpu_cache_bytes, t.m->expert_bytes_total);
    engine_vk_describe(e, line, sizeof(line));
    ck_assert_msg(strstr(line, "shrunk"), "%s", line);
    run_engine(e, 0, &got);
    check_close(&got, &ref, e->n_vocab, "shrunk GPU tier");
    check_validation(e);
    engine_free(e);
    // below what the resident part needs: a clear error, no crash
    char err[512] = "";
    engine_vk_config_t c = {.model = t.m, .path = t.path, .validation = 1, .n_ctx = 64,
                            .n_seq_max = 1, .device_limit = 64u << 10};
    ck_assert_int_eq(engine_vk_new(&c, &e, err, sizeof(err)), -ENOMEM);
    ck_assert_msg(strstr(err, "device"), "%s", err);
    free(ref.logits);
    free(got.logits);
    tmodel_free(&t);
}
END_TEST

START_TEST(test_bad_entries)
{
    tmodel_t t = {0};
    tmodel_make(&t, "qwen3moe", "q8_0", NULL);
    engine_t *e = engine_open(&t, 0, 2, NULL);
    float *lg = malloc(sizeof(float) * e->n_vocab * 4);
    uint32_t s, s2;
    ck_assert_int_eq(engine_seq_new(e, &s), 0);
    ck_assert_int_eq(engine_seq_new(e, &s2), 0);
    ck_assert_int_eq(engine_seq_new(e, &(uint32_t){0}), -EBUSY);
    engine_entry_t bad[] = {
        {s, (int32_t)e->n_vocab, 0, true}, // token out of range
        {s, -1, 0, true},
        {s, 1, 1, true},                   // skips position 0
        {7, 1, 0, true},                   // no such sequence
        {s, 1, 64, true},                  // past the context
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(engine_step(e, &bad[i], 1, lg), -EINVAL);
    engine_seq_free(e, s2);
    engine_entry_t freed = {s2, 1, 0, true};
    ck_assert_int_eq(engine_step(e, &freed, 1, lg), -EINVAL);
    // nothing ran: the sequence still starts at 0, and going back cuts it
    engine_entry_t ok[] = {{s, 1, 0, false}, {s, 2, 1, true}};
    ck_assert_int_eq(engine_step(e, ok, 2, lg), 0);
    float first[512];
    memcpy(first, lg, sizeof(float) * (e->n_vocab < 512 ? e->n_vocab : 512));
    engine_entry_t again = {s, 2, 1, true};
    ck_assert_int_eq(engine_step(e, &again, 1, lg), 0);
    ck_assert(!memcmp(first, lg, sizeof(float) * (e->n_vocab < 512 ? e->n_vocab : 512)));
    free(lg);
    check_validation(e);
    engine_free(e);
    tmodel_free(&t);
}
END_TEST

/* Fails every read after the first `ok` backend operations with -EIO while armed. */
typedef struct fault {
    moeio_wrapper_t w;
    int armed;
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
    if (r == 1 && f->armed)
        (*ret)->res = -EIO;
    return r;
}
static const moeio_ops_t fault_ops = {"fault", f_queue, f_submit, f_reap};

START_TEST(test_io_error)
{
    tmodel_t t = {0};
    fault_t f = {.w = {.ops = &fault_ops}};
    tmodel_make(&t, "qwen3moe", "q8_0", NULL);
    uint64_t slot = t.m->expert_bytes + 3 * 2 * 4096;
    engine_t *e = engine_open(&t, slot * t.m->hp.n_expert_used, 1, &f.w);
    float *lg = malloc(sizeof(float) * e->n_vocab);
    uint32_t s;
    ck_assert_int_eq(engine_seq_new(e, &s), 0);
    engine_entry_t en = {s, 3, 0, true};
    f.armed = 1;
    ck_assert_int_eq(engine_step(e, &en, 1, lg), -EIO);
    engine_stats_t st;
    engine_stats(e, &st);
    ck_assert_uint_gt(st.io_errors, 0);
    // the device and the store still work: the same step now succeeds
    f.armed = 0;
    ck_assert_int_eq(engine_step(e, &en, 1, lg), 0);
    free(lg);
    engine_free(e);
    tmodel_free(&t);
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
    Suite *su = suite_create("engine_vk");
    TCase *tc = tcase_create("engine_vk");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_matches_reference, 0, 16);
    tcase_add_test(tc, test_device_memory_shrinks);
    tcase_add_test(tc, test_bad_entries);
    tcase_add_test(tc, test_io_error);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
