/* Tests of the model description (arch.c, model.c) and of the tools that make and show
 * models (moe mkmodel, moe inspect). Models come from the real mkmodel binary
 * ($MOE_BUILDDIR/tools/moe) for every architecture and weight type, and from the GGUF
 * writer for the malformed cases mkmodel cannot make. Files live under one mkdtemp()
 * folder, removed at the end. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/model.h"
#include "model/quant.h"
#include "ref_forward.h"

static char tmpdir[256];
static char moe_bin[512];

static const char *const arch_names[] = {"qwen3moe", "qwen2moe", "olmoe", "llama"};
static const char *const type_names[] = {"f32", "f16", "q8_0", "q4_0", "q4_K", "q6_K", "q4_K_M"};
#define N_ARCH 4
#define N_TYPE 7

/* ---- helpers ---- */

__attribute__((format(printf, 1, 2))) static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void path_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* Makes a tiny model with mkmodel; the path lands in out. */
static void mk(char *out, size_t len, const char *name, const char *args)
{
    path_of(out, len, name);
    int rc = run("'%s' mkmodel %s -o '%s' > /dev/null", moe_bin, args, out);
    ck_assert_msg(rc == 0, "mkmodel %s failed (%d)", args, rc);
}

static model_t *load_ok(const char *path, gguf_t **ret_g)
{
    char err[512] = "";
    gguf_t *g = NULL;
    model_t *m = NULL;
    int r = gguf_open(path, &g, err, sizeof(err));
    ck_assert_msg(r == 0, "gguf_open %s: %s", path, err);
    r = model_load(g, &m, err, sizeof(err));
    ck_assert_msg(r == 0, "model_load %s: %s", path, err);
    *ret_g = g;
    return m;
}

/* model_load's verdict on path: the return code, and the reason in err. */
static int load_rc(const char *path, char *err, size_t errlen)
{
    gguf_t *g = NULL;
    model_t *m = NULL;
    err[0] = '\0';
    int r = gguf_open(path, &g, err, errlen);
    ck_assert_msg(r == 0, "gguf_open %s: %s", path, err);
    r = model_load(g, &m, err, errlen);
    model_free(m);
    gguf_free(g);
    return r;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Expert ranges lie inside their tensors and tile them exactly: sorted slices of a
 * tensor are contiguous from its offset to its end, and their sizes add up to it. */
static void check_expert_tiling(const model_t *m)
{
    const uint32_t ne = m->hp.n_expert;
    uint64_t *starts = calloc(ne, sizeof(*starts));
    ck_assert_ptr_nonnull(starts);
    uint64_t sum_all = 0;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer_t *l = &m->layers[il];
        const gguf_tensor_t *parts[3] = {l->gate_exps, l->up_exps, l->down_exps};
        uint64_t layer_bytes = 0;
        for (int p = 0; p < 3; p++) {
            uint64_t size = 0;
            for (uint32_t e = 0; e < ne; e++) {
                model_range_t r[MODEL_EXPERT_PARTS];
                ck_assert_int_eq(model_expert_ranges(m, il, e, r), 0);
                ck_assert_uint_ge(r[p].offset, parts[p]->offset);
                ck_assert_uint_le(r[p].offset + r[p].size, parts[p]->offset + parts[p]->size);
                ck_assert_uint_eq(r[p].type, parts[p]->type);
                ck_assert_uint_eq(r[p].cols, parts[p]->ne[0]);
                ck_assert_uint_eq(r[p].rows, parts[p]->ne[1]);
                starts[e] = r[p].offset;
                size = r[p].size;
                if (p == 0)
                    layer_bytes += r[0].size + r[1].size + r[2].size;
            }
            qsort(starts, ne, sizeof(*starts), cmp_u64);
            ck_assert_uint_eq(starts[0], parts[p]->offset);
            for (uint32_t e = 1; e < ne; e++)
                ck_assert_uint_eq(starts[e], starts[e - 1] + size); /* no gap, no overlap */
            ck_assert_uint_eq(size * ne, parts[p]->size);
        }
        ck_assert_uint_eq(layer_bytes, (uint64_t)ne * model_layer_expert_bytes(m, il));
        ck_assert_uint_le(model_layer_expert_bytes(m, il), m->expert_bytes);
        sum_all += layer_bytes;
    }
    ck_assert_uint_eq(sum_all, m->expert_bytes_total);
    model_range_t r[MODEL_EXPERT_PARTS];
    ck_assert_int_eq(model_expert_ranges(m, m->hp.n_layer, 0, r), -EINVAL);
    ck_assert_int_eq(model_expert_ranges(m, 0, ne, r), -EINVAL);
    free(starts);
}

static void check_semantics(const model_t *m, enum model_arch a)
{
    const model_hparams_t *hp = &m->hp;
    ck_assert_int_eq(m->arch, a);
    ck_assert_int_eq(hp->gating, MODEL_GATING_SOFTMAX);
    ck_assert(hp->expert_weights_scale == 1.0f);
    switch (a) {
    case MODEL_ARCH_QWEN3MOE:
        ck_assert_int_eq(hp->rope, MODEL_ROPE_NEOX);
        ck_assert_int_eq(hp->qk_norm, MODEL_QK_NORM_HEAD);
        ck_assert(hp->norm_topk && !hp->attn_bias && !hp->shexp_gate);
        ck_assert_uint_eq(hp->n_ff_shexp, 0);
        ck_assert_uint_eq(m->layers[0].q_norm->ne[0], hp->head_dim_k);
        break;
    case MODEL_ARCH_QWEN2MOE:
        ck_assert_int_eq(hp->rope, MODEL_ROPE_NEOX);
        ck_assert_int_eq(hp->qk_norm, MODEL_QK_NORM_NONE);
        ck_assert(!hp->norm_topk && hp->attn_bias && hp->shexp_gate);
        ck_assert_uint_gt(hp->n_ff_shexp, 0);
        ck_assert_ptr_nonnull(m->layers[0].bq);
        ck_assert_ptr_nonnull(m->layers[0].shexp_gate);
        ck_assert_ptr_nonnull(m->layers[0].down_shexp);
        break;
    case MODEL_ARCH_OLMOE:
        ck_assert_int_eq(hp->rope, MODEL_ROPE_NEOX);
        ck_assert_int_eq(hp->qk_norm, MODEL_QK_NORM_FULL);
        ck_assert(!hp->norm_topk && !hp->attn_bias && !hp->shexp_gate);
        ck_assert_uint_eq(m->layers[0].q_norm->ne[0], (uint64_t)hp->n_head * hp->head_dim_k);
        ck_assert_uint_eq(m->layers[0].k_norm->ne[0], hp->n_embd);
        break;
    case MODEL_ARCH_LLAMA:
        ck_assert_int_eq(hp->rope, MODEL_ROPE_NORM);
        ck_assert_int_eq(hp->qk_norm, MODEL_QK_NORM_NONE);
        ck_assert(hp->norm_topk && !hp->attn_bias && !hp->shexp_gate);
        ck_assert_ptr_null(m->layers[0].q_norm);
        break;
    default:
        ck_abort();
    }
}

/* ---- every architecture x weight type from mkmodel ---- */

START_TEST(mkmodel_makes_every_arch_and_type_loadable)
{
    /* _i = arch * N_TYPE + type */
    const char *arch = arch_names[_i / N_TYPE], *type = type_names[_i % N_TYPE];
    char path[512], name[64], args[256];
    snprintf(name, sizeof(name), "m-%s-%s.gguf", arch, type);
    snprintf(args, sizeof(args),
             "--arch %s --type %s --layers 3 --experts 6 --top-k 2 --ff-exp 256 --seed 7", arch,
             type);
    mk(path, sizeof(path), name, args);

    gguf_t *g;
    model_t *m = load_ok(path, &g);
    enum model_arch a;
    ck_assert_int_eq(model_arch_from_name(arch, &a), 0);
    check_semantics(m, a);
    ck_assert_uint_eq(m->hp.n_layer, 3);
    ck_assert_uint_eq(m->hp.n_embd, 256);
    ck_assert_uint_eq(m->hp.n_expert, 6);
    ck_assert_uint_eq(m->hp.n_expert_used, 2);
    ck_assert_uint_eq(m->hp.n_ff_exp, 256);
    ck_assert_uint_eq(m->hp.n_vocab, m->tok_embd->ne[1]);
    ck_assert(!m->hp.tied_output && m->output != m->tok_embd);
    check_expert_tiling(m);

    uint64_t total = 0;
    for (size_t i = 0; i < gguf_n_tensors(g); i++)
        total += gguf_tensor(g, i)->size;
    ck_assert_uint_eq(m->resident_bytes + m->expert_bytes_total, total);
    uint64_t active = model_active_bytes(m);
    ck_assert_uint_gt(active, 0);
    ck_assert_uint_lt(active, total);

    if (!strcmp(type, "q4_K_M")) {
        /* llama.cpp's mix: output q6_K, ffn_down of the "more bits" layers q6_K. With 3
         * layers use_more_bits(i, 3) = i < 0 || i >= 2 || i % 3 == 2: layer 2 only. */
        ck_assert_uint_eq(m->output->type, GGML_TYPE_Q6_K);
        ck_assert_uint_eq(m->layers[0].down_exps->type, GGML_TYPE_Q4_K);
        ck_assert_uint_eq(m->layers[2].down_exps->type, GGML_TYPE_Q6_K);
        ck_assert_uint_eq(m->layers[0].gate_exps->type, GGML_TYPE_Q4_K);
        ck_assert_uint_gt(m->expert_bytes, model_layer_expert_bytes(m, 0));
    } else {
        uint32_t t;
        ck_assert_int_eq(quant_type_from_name(type, &t), 0);
        ck_assert_uint_eq(m->layers[1].up_exps->type, t);
        ck_assert_uint_eq(m->layers[0].wq->type, t);
    }
    ck_assert_uint_eq(m->layers[0].router->type, GGML_TYPE_F32);
    ck_assert_uint_eq(m->layers[0].attn_norm->type, GGML_TYPE_F32);
    model_free(m);
    gguf_free(g);
    unlink(path);
}
END_TEST

/* Direct-generated expert blocks decode to finite values with the intended spread. */
START_TEST(mkmodel_expert_weights_have_sane_scale)
{
    static const char *const types[] = {"f32",  "f16",  "bf16", "q8_0", "q4_0", "q4_1",
                                        "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"};
    const char *type = types[_i];
    char path[512], name[64], args[160];
    snprintf(name, sizeof(name), "w-%s.gguf", type);
    snprintf(args, sizeof(args),
             "--type %s --layers 2 --experts 4 --top-k 2 --embd 512 "
             "--heads 8 --head-dim 64 --ff-exp 512",
             type);
    mk(path, sizeof(path), name, args);
    gguf_t *g;
    model_t *m = load_ok(path, &g);
    model_range_t r[MODEL_EXPERT_PARTS];
    ck_assert_int_eq(model_expert_ranges(m, 1, 3, r), 0);
    const double want[3] = {1.0 / sqrt(512.0), 1.0 / sqrt(512.0), 1.0 / (sqrt(512.0) * 2.0)};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    for (int p = 0; p < 3; p++) {
        uint8_t *buf = malloc(r[p].size);
        float *f = malloc((size_t)r[p].rows * r[p].cols * sizeof(float));
        ck_assert(buf && f);
        ck_assert_int_eq(pread(fd, buf, r[p].size, (off_t)r[p].offset), (ssize_t)r[p].size);
        size_t n = (size_t)r[p].rows * r[p].cols;
        ck_assert_int_eq(quant_dequantize(r[p].type, buf, f, n), 0);
        /* no ck_assert inside the loop: each one is a message to the parent process */
        double s = 0, s2 = 0;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad += !isfinite(f[i]);
            s += f[i];
            s2 += (double)f[i] * f[i];
        }
        ck_assert_msg(bad == 0, "%s: %zu non-finite weights", type, bad);
        double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
        ck_assert_msg(fabs(mean) < 0.1 * want[p], "%s part %d: mean %g", type, p, mean);
        ck_assert_msg(sd > 0.8 * want[p] && sd < 1.25 * want[p], "%s part %d: sd %g want %g", type,
                      p, sd, want[p]);
        free(buf);
        free(f);
    }
    close(fd);
    model_free(m);
    gguf_free(g);
    unlink(path);
}
END_TEST

static int files_equal(const char *a, const char *b)
{
    return run("cmp -s '%s' '%s'", a, b) == 0;
}

START_TEST(mkmodel_is_deterministic_and_seeded)
{
    char a[512], b[512], c[512];
    const char *args = "--arch qwen2moe --type q4_K_M --layers 2 --experts 4 --top-k 2";
    mk(a, sizeof(a), "det-a.gguf", args);
    mk(b, sizeof(b), "det-b.gguf", args);
    char args2[256];
    snprintf(args2, sizeof(args2), "%s --seed 2", args);
    mk(c, sizeof(c), "det-c.gguf", args2);
    ck_assert_msg(files_equal(a, b), "same flags, different bytes");
    ck_assert_msg(!files_equal(a, c), "different seed, same bytes");
    unlink(a);
    unlink(b);
    unlink(c);
}
END_TEST

START_TEST(mkmodel_default_is_small_qwen3moe_and_vocab_copies)
{
    char path[512];
    mk(path, sizeof(path), "default.gguf", "");
    gguf_t *g;
    model_t *m = load_ok(path, &g);
    ck_assert_int_eq(m->arch, MODEL_ARCH_QWEN3MOE);
    ck_assert_uint_eq(m->hp.n_layer, 4);
    ck_assert_uint_eq(m->hp.n_expert, 16);
    ck_assert_uint_eq(m->hp.n_expert_used, 4);
    ck_assert_uint_eq(m->layers[0].wq->type, GGML_TYPE_Q8_0);
    const char *s;
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
    ck_assert_str_eq(s, "gpt2");
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.chat_template", &s), 0);
    ck_assert_ptr_nonnull(strstr(s, "<|im_start|>"));
    uint32_t eos;
    ck_assert_int_eq(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos), 0);
    ck_assert_int_eq(gguf_get_arr_str(g, "tokenizer.ggml.tokens", eos, &s), 0);
    ck_assert_str_eq(s, "<|im_end|>");
    ck_assert_int_eq(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 32, &s), 0);
    ck_assert_str_eq(s, "\xc4\xa0"); /* byte 0x20 -> U+0120 */
    model_free(m);
    gguf_free(g);
    unlink(path);

    const char *shared = getenv("MOE_SHARED_DATA");
    char vocab[512];
    snprintf(vocab, sizeof(vocab), "%s/vocab/ggml-vocab-gpt-2.gguf", shared ? shared : ".");
    if (access(vocab, R_OK) != 0)
        return; /* no shared data here: the built-in vocab was checked */
    char args[768];
    snprintf(args, sizeof(args),
             "--arch llama --tied --layers 1 --experts 2 --top-k 1 --vocab '%s'", vocab);
    mk(path, sizeof(path), "vocab.gguf", args);
    m = load_ok(path, &g);
    ck_assert_uint_eq(m->hp.n_vocab, 50257);
    ck_assert(m->hp.tied_output && m->output == m->tok_embd);
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.ggml.pre", &s), 0);
    ck_assert_str_eq(s, "gpt-2");
    model_free(m);
    gguf_free(g);
    unlink(path);
}
END_TEST

START_TEST(mkmodel_refuses_bad_options)
{
    char path[512];
    path_of(path, sizeof(path), "bad.gguf");
    const char *bad[] = {
        "--layers 0",
        "--layers 12x",
        "--experts 4 --top-k 5",
        "--type q2_K",
        "--type nope",
        "--arch gpt2",
        "--skew -1",
        "--skew nan",
        "--arch olmoe --heads-kv 2",
        "--seed -3",
        "--embd 300 --arch qwen2moe --heads 7",
        "--frobnicate",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = run("'%s' mkmodel %s -o '%s' > /dev/null 2>&1", moe_bin, bad[i], path);
        ck_assert_msg(rc != 0, "accepted: %s", bad[i]);
        ck_assert_msg(access(path, F_OK) != 0, "left a file behind: %s", bad[i]);
    }
    ck_assert_int_eq(run("'%s' mkmodel > /dev/null 2>&1", moe_bin), 2); /* no -o */
    ck_assert_int_eq(run("'%s' mkmodel --help > /dev/null", moe_bin), 0);
}
END_TEST

/* Routing skew: on layer 0, with hidden states taken straight from the embeddings, the
 * most popular expert takes far more than its uniform share with --skew 2 and about its
 * share with --skew 0. */
static double top_share(const char *path, int *ret_best)
{
    gguf_t *g;
    model_t *m = load_ok(path, &g);
    const uint32_t n = m->hp.n_embd, ne = m->hp.n_expert, k = m->hp.n_expert_used;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    uint8_t *emb = malloc(m->tok_embd->size);
    float *router = malloc(m->layers[0].router->size), *x = malloc(n * sizeof(float));
    ck_assert(emb && router && x);
    ck_assert_int_eq(pread(fd, emb, m->tok_embd->size, (off_t)m->tok_embd->offset),
                     (ssize_t)m->tok_embd->size);
    ck_assert_int_eq(
        pread(fd, router, m->layers[0].router->size, (off_t)m->layers[0].router->offset),
        (ssize_t)m->layers[0].router->size);
    uint64_t rs;
    ck_assert_int_eq(quant_row_size(m->tok_embd->type, n, &rs), 0);
    uint32_t *hits = calloc(ne, sizeof(*hits));
    double logit[64];
    ck_assert_uint_le(ne, 64);
    for (uint32_t t = 0; t < m->hp.n_vocab; t++) {
        ck_assert_int_eq(quant_dequantize(m->tok_embd->type, emb + t * rs, x, n), 0);
        double ss = 0;
        for (uint32_t i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        double inv = 1.0 / sqrt(ss / n + 1e-6);
        for (uint32_t e = 0; e < ne; e++) {
            double d = 0;
            for (uint32_t i = 0; i < n; i++)
                d += (double)router[(size_t)e * n + i] * x[i] * inv;
            logit[e] = d;
        }
        for (uint32_t j = 0; j < k; j++) { /* top-k by repeated argmax */
            uint32_t best = 0;
            for (uint32_t e = 1; e < ne; e++)
                if (logit[e] > logit[best])
                    best = e;
            hits[best]++;
            logit[best] = -1e300;
        }
    }
    uint32_t best = 0;
    for (uint32_t e = 1; e < ne; e++)
        if (hits[e] > hits[best])
            best = e;
    double share = (double)hits[best] / ((double)m->hp.n_vocab * k);
    *ret_best = (int)best;
    free(hits);
    free(emb);
    free(router);
    free(x);
    close(fd);
    model_free(m);
    gguf_free(g);
    return share;
}

START_TEST(mkmodel_skew_makes_some_experts_popular)
{
    char flat[512], skewed[512];
    const char *args = "--type q8_0 --layers 1 --experts 16 --top-k 2 --ff-exp 64";
    char a0[128], a2[128];
    snprintf(a0, sizeof(a0), "%s --skew 0", args);
    snprintf(a2, sizeof(a2), "%s --skew 2", args);
    mk(flat, sizeof(flat), "skew0.gguf", a0);
    mk(skewed, sizeof(skewed), "skew2.gguf", a2);
    int b0, b2;
    double s0 = top_share(flat, &b0), s2 = top_share(skewed, &b2);
    /* uniform share = 1/16 = 0.0625 */
    ck_assert_msg(s0 < 0.15, "skew 0: top expert share %g", s0);
    ck_assert_msg(s2 > 0.3, "skew 2: top expert share %g", s2);
    unlink(flat);
    unlink(skewed);
}
END_TEST

/* Routing through the CPU reference: per layer, the share of all (token, slot) picks that
 * went to the most popular expert, and the reuse rate (the fraction of a token's experts
 * that the previous token also used in that layer; uniform routing gives k/E). Random
 * prompt tokens: no help from repeated text. */
typedef struct route_stats {
    uint32_t n_layer, n_expert, k;
    uint32_t *hits; /* [n_layer][n_expert] */
    int32_t *prev;  /* [n_layer][k] of the previous position, -1 none */
    uint64_t reused, pairs;
} route_stats_t;

static void on_route(void *ud, uint32_t layer, int32_t pos, const int32_t *ids,
                     const float *weights, uint32_t k)
{
    route_stats_t *rs = ud;
    int32_t *prev = rs->prev + (size_t)layer * rs->k;
    for (uint32_t j = 0; j < k; j++) {
        rs->hits[(size_t)layer * rs->n_expert + (uint32_t)ids[j]]++;
        if (pos > 0) {
            for (uint32_t i = 0; i < k; i++)
                rs->reused += prev[i] == ids[j];
            rs->pairs++;
        }
    }
    memcpy(prev, ids, k * sizeof(*ids));
}

static void routing_measure(const char *path, double *ret_top, double *ret_reuse)
{
    gguf_t *g;
    model_t *m = load_ok(path, &g);
    char err[256];
    ref_model_t *rm = NULL;
    ref_state_t *st = NULL;
    ck_assert_msg(ref_model_new(m, path, &rm, err, sizeof(err)) == 0, "%s", err);
    const uint32_t n_pos = 96;
    ck_assert_int_eq(ref_state_new(rm, n_pos, &st), 0);
    route_stats_t rs = {
        .n_layer = m->hp.n_layer, .n_expert = m->hp.n_expert, .k = m->hp.n_expert_used};
    rs.hits = calloc((size_t)rs.n_layer * rs.n_expert, sizeof(*rs.hits));
    rs.prev = calloc((size_t)rs.n_layer * rs.k, sizeof(*rs.prev));
    float *logits = malloc(m->hp.n_vocab * sizeof(float));
    ck_assert(rs.hits && rs.prev && logits);
    ref_state_set_route_hook(st, on_route, &rs);
    uint64_t x = 12345;
    for (uint32_t pos = 0; pos < n_pos; pos++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int32_t tok = (int32_t)((x >> 33) % m->hp.n_vocab);
        ck_assert_int_eq(ref_forward(st, tok, (int32_t)pos, logits), 0);
    }
    double top = 0;
    for (uint32_t l = 0; l < rs.n_layer; l++) {
        uint32_t best = 0;
        for (uint32_t e = 0; e < rs.n_expert; e++)
            if (rs.hits[(size_t)l * rs.n_expert + e] > best)
                best = rs.hits[(size_t)l * rs.n_expert + e];
        top += (double)best / ((double)n_pos * rs.k);
    }
    *ret_top = top * rs.k / rs.n_layer; /* fraction of tokens */
    *ret_reuse = (double)rs.reused / (double)rs.pairs;
    free(rs.hits);
    free(rs.prev);
    free(logits);
    ref_state_free(st);
    ref_model_free(rm);
    model_free(m);
    gguf_free(g);
}

START_TEST(mkmodel_skew_gives_popularity_and_reuse_in_the_reference)
{
    static const char *const skews[] = {"0", "0.5", "0.75", "1", "2"};
    double top[5], reuse[5];
    for (int i = 0; i < 5; i++) {
        char path[512], name[64], args[160];
        snprintf(name, sizeof(name), "route-%d.gguf", i);
        snprintf(args, sizeof(args), "--experts 32 --top-k 4 --ff-exp 64 --skew %s", skews[i]);
        mk(path, sizeof(path), name, args);
        routing_measure(path, &top[i], &reuse[i]);
        printf("routing skew %-4s: most popular expert used by %.2f of tokens, reuse %.3f "
               "(uniform: k/E = 0.125 for both)\n",
               skews[i], top[i], reuse[i]);
        unlink(path);
    }
    ck_assert_msg(top[0] < 0.45, "skew 0: top expert in %g of tokens", top[0]);
    ck_assert_msg(reuse[0] < 0.2, "skew 0: reuse %g", reuse[0]);
    ck_assert_msg(top[3] > 1.5 * top[0], "skew 1 top %g vs %g", top[3], top[0]);
    ck_assert_msg(reuse[2] > 0.25 && reuse[3] > 0.35, "reuse %g, %g", reuse[2], reuse[3]);
    for (int i = 1; i < 5; i++)
        ck_assert_msg(reuse[i] > reuse[i - 1], "reuse does not grow with skew at %s", skews[i]);
}
END_TEST

/* ---- refusals, built with the GGUF writer ---- */

enum mutation {
    MUT_NONE,
    MUT_ARCH_UNKNOWN,
    MUT_MISSING_TENSOR,
    MUT_WRONG_SHAPE,
    MUT_PER_EXPERT,
    MUT_TOPK_TOO_BIG,
    MUT_DENSE_LLAMA,
    MUT_NORM_NOT_F32,
    MUT_EXTRA_TENSOR,
    MUT_VOCAB_MISMATCH,
    MUT_NO_EPS,
    MUT_UNCOMPUTABLE,
    MUT_TOPK_ZERO,
    MUT_YARN,
};

/* A tiny F32 llama-with-experts model (or qwen3moe), with one mutation. */
static void write_tiny(const char *path, enum model_arch a, enum mutation mut)
{
    model_hparams_t hp = {
        .n_vocab = 16,
        .n_embd = 32,
        .n_layer = 2,
        .n_head = 4,
        .n_head_kv = 2,
        .head_dim_k = 8,
        .head_dim_v = 8,
        .n_rot = 8,
        .n_ctx_train = 128,
        .n_expert = 4,
        .n_expert_used = 2,
        .n_ff_exp = 32,
    };
    const char *an = model_arch_name(a);
    char key[128];
    gguf_writer_t *w;
    ck_assert_int_eq(gguf_writer_new(path, 32, &w), 0);
    ck_assert_int_eq(
        gguf_writer_add_str(w, "general.architecture", mut == MUT_ARCH_UNKNOWN ? "gpt2" : an), 0);
#define U32(sfx, v)                                                                                \
    do {                                                                                           \
        snprintf(key, sizeof(key), "%s.%s", an, sfx);                                              \
        ck_assert_int_eq(gguf_writer_add_u32(w, key, v), 0);                                       \
    } while (0)
    U32("context_length", 128);
    U32("embedding_length", 32);
    U32("block_count", 2);
    U32("feed_forward_length", 32);
    U32("attention.head_count", 4);
    U32("attention.head_count_kv", 2);
    if (mut != MUT_DENSE_LLAMA)
        U32("expert_count", 4);
    U32("expert_used_count", mut == MUT_TOPK_TOO_BIG ? 5 : mut == MUT_TOPK_ZERO ? 0 : 2);
    if (a == MODEL_ARCH_QWEN3MOE)
        U32("expert_feed_forward_length", 32);
#undef U32
    if (mut != MUT_NO_EPS) {
        snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", an);
        ck_assert_int_eq(gguf_writer_add_f32(w, key, 1e-5f), 0);
    }
    if (mut == MUT_YARN) {
        snprintf(key, sizeof(key), "%s.rope.scaling.type", an);
        ck_assert_int_eq(gguf_writer_add_str(w, key, "yarn"), 0);
        snprintf(key, sizeof(key), "%s.rope.scaling.factor", an);
        ck_assert_int_eq(gguf_writer_add_f32(w, key, 4.0f), 0);
    }
    if (mut == MUT_VOCAB_MISMATCH) {
        const char *toks[3] = {"a", "b", "c"};
        uint64_t lens[3] = {1, 1, 1};
        ck_assert_int_eq(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 3), 0);
    }

    /* tensors: the spec table, mutated */
    struct {
        char name[96];
        uint32_t n_dims;
        uint64_t ne[4];
        uint32_t type;
    } t[128];
    size_t n = 0;
    for (unsigned r = 0; r < MODEL_ROLE_COUNT_; r++) {
        model_tensor_spec_t s;
        if (model_tensor_spec(a, &hp, (enum model_role)r, &s) != 0 || !s.required)
            continue;
        for (uint32_t il = 0; il < (s.per_layer ? hp.n_layer : 1); il++) {
            ck_assert_int_eq(model_tensor_name(&s, il, t[n].name, sizeof(t[n].name)), 0);
            t[n].n_dims = s.n_dims;
            memcpy(t[n].ne, s.ne, sizeof(s.ne));
            t[n].type = GGML_TYPE_F32;
            if (mut == MUT_MISSING_TENSOR && r == MODEL_ROLE_WK && il == 1)
                continue;
            if (mut == MUT_WRONG_SHAPE && r == MODEL_ROLE_WO && il == 0)
                t[n].ne[1] = 16;
            if (mut == MUT_NORM_NOT_F32 && r == MODEL_ROLE_FFN_NORM && il == 1)
                t[n].type = GGML_TYPE_F16;
            if (mut == MUT_UNCOMPUTABLE && r == MODEL_ROLE_WQ && il == 0)
                t[n].type = GGML_TYPE_I32; /* a GGML type no kernel computes */
            if (mut == MUT_PER_EXPERT && il == 0 &&
                (r == MODEL_ROLE_GATE_EXPS || r == MODEL_ROLE_UP_EXPS ||
                 r == MODEL_ROLE_DOWN_EXPS)) {
                /* old Mixtral: blk.0.ffn_{gate,up,down}.E.weight, one 2-D tensor each */
                static const char *const part[] = {"gate", "up", "down"};
                const char *pn = part[r - MODEL_ROLE_GATE_EXPS];
                for (uint32_t e = 0; e < hp.n_expert; e++) {
                    snprintf(t[n].name, sizeof(t[n].name), "blk.0.ffn_%s.%u.weight", pn, e);
                    t[n].n_dims = 2;
                    t[n].ne[0] = s.ne[0];
                    t[n].ne[1] = s.ne[1];
                    t[n].ne[2] = t[n].ne[3] = 1;
                    t[n].type = GGML_TYPE_F32;
                    n++;
                }
                continue;
            }
            n++;
        }
    }
    if (mut == MUT_EXTRA_TENSOR) {
        snprintf(t[n].name, sizeof(t[n].name), "blk.0.attn_output.bias");
        t[n].n_dims = 1;
        t[n].ne[0] = 32;
        t[n].ne[1] = t[n].ne[2] = t[n].ne[3] = 1;
        t[n].type = GGML_TYPE_F32;
        n++;
    }
    ck_assert_uint_le(n, 128);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(gguf_writer_add_tensor(w, t[i].name, t[i].n_dims, t[i].ne, t[i].type), 0);
    ck_assert_int_eq(gguf_writer_begin_data(w), 0);
    static const uint8_t zeros[4096];
    for (size_t i = 0; i < n; i++) {
        uint64_t rs;
        ck_assert_int_eq(quant_row_size(t[i].type, t[i].ne[0], &rs), 0);
        uint64_t left = rs * t[i].ne[1] * t[i].ne[2] * t[i].ne[3];
        while (left) {
            size_t c = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);
            ck_assert_int_eq(gguf_writer_write(w, zeros, c), 0);
            left -= c;
        }
    }
    ck_assert_int_eq(gguf_writer_finish(w), 0);
}

START_TEST(loads_minimal_writer_model)
{
    char path[512], err[512];
    path_of(path, sizeof(path), "tiny-ok.gguf");
    write_tiny(path, MODEL_ARCH_LLAMA, MUT_NONE);
    ck_assert_msg(load_rc(path, err, sizeof(err)) == 0, "%s", err);
    write_tiny(path, MODEL_ARCH_QWEN3MOE, MUT_NONE);
    ck_assert_msg(load_rc(path, err, sizeof(err)) == 0, "%s", err);
    gguf_t *g;
    model_t *m = load_ok(path, &g);
    ck_assert(m->hp.tied_output); /* the writer model has no output.weight */
    ck_assert_uint_eq(m->hp.n_vocab, 16);
    ck_assert_str_eq(m->name, "qwen3moe");
    check_expert_tiling(m);
    model_free(m);
    gguf_free(g);
    unlink(path);
}
END_TEST

static const struct {
    enum mutation mut;
    enum model_arch arch;
    int rc;
    const char *needle; /* in the reason */
} refusals[] = {
    {MUT_ARCH_UNKNOWN, MODEL_ARCH_LLAMA, -ENOTSUP, "gpt2"},
    {MUT_MISSING_TENSOR, MODEL_ARCH_LLAMA, -EINVAL, "blk.1.attn_k.weight"},
    {MUT_WRONG_SHAPE, MODEL_ARCH_QWEN3MOE, -EINVAL, "blk.0.attn_output.weight"},
    {MUT_PER_EXPERT, MODEL_ARCH_LLAMA, -ENOTSUP, "per-expert"},
    {MUT_TOPK_TOO_BIG, MODEL_ARCH_QWEN3MOE, -EINVAL, "expert_used_count"},
    {MUT_TOPK_ZERO, MODEL_ARCH_LLAMA, -EINVAL, "expert_used_count"},
    {MUT_DENSE_LLAMA, MODEL_ARCH_LLAMA, -ENOTSUP, "expert_count"},
    {MUT_NORM_NOT_F32, MODEL_ARCH_LLAMA, -ENOTSUP, "blk.1.ffn_norm.weight"},
    {MUT_EXTRA_TENSOR, MODEL_ARCH_LLAMA, -ENOTSUP, "blk.0.attn_output.bias"},
    {MUT_VOCAB_MISMATCH, MODEL_ARCH_QWEN3MOE, -EINVAL, "tokenizer.ggml.tokens"},
    {MUT_NO_EPS, MODEL_ARCH_QWEN3MOE, -EINVAL, "layer_norm_rms_epsilon"},
    {MUT_UNCOMPUTABLE, MODEL_ARCH_LLAMA, -ENOTSUP, "blk.0.attn_q.weight"},
    {MUT_YARN, MODEL_ARCH_QWEN3MOE, -ENOTSUP, "yarn"},
};

START_TEST(refuses_bad_model_with_one_line_reason)
{
    char path[512], name[64], err[512];
    snprintf(name, sizeof(name), "tiny-bad-%d.gguf", _i);
    path_of(path, sizeof(path), name);
    write_tiny(path, refusals[_i].arch, refusals[_i].mut);
    int r = load_rc(path, err, sizeof(err));
    ck_assert_msg(r == refusals[_i].rc, "case %d: rc %d (%s), want %d", _i, r, err,
                  refusals[_i].rc);
    ck_assert_msg(strstr(err, refusals[_i].needle), "case %d: reason '%s' lacks '%s'", _i, err,
                  refusals[_i].needle);
    ck_assert_ptr_null(strchr(err, '\n'));
    unlink(path);
}
END_TEST

START_TEST(hparams_check_enforces_arch_constraints)
{
    char err[256];
    model_hparams_t hp = {
        .n_vocab = 16,
        .n_embd = 256,
        .n_layer = 2,
        .n_head = 8,
        .n_head_kv = 4,
        .head_dim_k = 32,
        .head_dim_v = 32,
        .n_rot = 32,
        .n_ctx_train = 128,
        .n_expert = 8,
        .n_expert_used = 2,
        .n_ff_exp = 64,
        .rms_eps = 1e-6f,
        .rope_freq_base = 1e4f,
        .rope_freq_scale = 1.0f,
    };
    ck_assert_int_eq(model_hparams_check(MODEL_ARCH_QWEN3MOE, &hp, err, sizeof(err)), 0);
    ck_assert_int_ne(model_hparams_check(MODEL_ARCH_QWEN2MOE, &hp, err, sizeof(err)),
                     0); /* no shexp */
    ck_assert_int_ne(model_hparams_check(MODEL_ARCH_OLMOE, &hp, err, sizeof(err)), 0); /* GQA */
    model_hparams_t h2 = hp;
    h2.head_dim_k = h2.head_dim_v = h2.n_rot = 64; /* 8 x 64 != 256: fine for qwen3moe only */
    ck_assert_int_eq(model_hparams_check(MODEL_ARCH_QWEN3MOE, &h2, err, sizeof(err)), 0);
    ck_assert_int_ne(model_hparams_check(MODEL_ARCH_QWEN2MOE, &h2, err, sizeof(err)), 0);
    h2 = hp;
    h2.n_rot = 16;
    ck_assert_int_eq(model_hparams_check(MODEL_ARCH_LLAMA, &h2, err, sizeof(err)), -ENOTSUP);
    h2 = hp;
    h2.n_head_kv = 3;
    ck_assert_int_eq(model_hparams_check(MODEL_ARCH_LLAMA, &h2, err, sizeof(err)), -EINVAL);
    h2 = hp;
    h2.rms_eps = NAN;
    ck_assert_int_eq(model_hparams_check(MODEL_ARCH_LLAMA, &h2, err, sizeof(err)), -EINVAL);

    enum model_arch a;
    ck_assert_int_eq(model_arch_from_name("olmoe", &a), 0);
    ck_assert_int_eq(a, MODEL_ARCH_OLMOE);
    ck_assert_int_eq(model_arch_from_name("mixtral", &a), -ENOTSUP);
    ck_assert_str_eq(model_arch_name(MODEL_ARCH_LLAMA), "llama");
    ck_assert_ptr_null(model_arch_info(MODEL_ARCH_COUNT_));
}
END_TEST

/* ---- moe inspect ---- */

START_TEST(inspect_prints_arch_and_refuses_truncated_file)
{
    char path[512], trunc[512], out[512];
    mk(path, sizeof(path), "insp.gguf", "--arch olmoe --layers 2 --experts 4 --top-k 2");
    path_of(out, sizeof(out), "insp.out");
    ck_assert_int_eq(run("'%s' inspect '%s' > '%s'", moe_bin, path, out), 0);
    ck_assert_int_eq(run("grep -q 'architecture:  olmoe' '%s'", out), 0);
    ck_assert_int_eq(run("'%s' inspect --json --tensors '%s' > '%s'", moe_bin, path, out), 0);
    ck_assert_int_eq(run("grep -q '\"architecture\":\"olmoe\"' '%s'", out), 0);
    ck_assert_int_eq(run("grep -q 'blk.1.ffn_down_exps.weight' '%s'", out), 0);

    /* cut the file in the middle of its tensor data */
    path_of(trunc, sizeof(trunc), "insp-trunc.gguf");
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(run("head -c %lld '%s' > '%s'", (long long)st.st_size / 2, path, trunc), 0);
    ck_assert_int_eq(run("'%s' inspect '%s' > /dev/null 2> '%s'", moe_bin, trunc, out), 1);
    ck_assert_int_eq(run("grep -q 'moe inspect: .*insp-trunc.gguf: ' '%s'", out), 0);
    ck_assert_int_eq(run("test $(wc -l < '%s') -eq 1", out), 0);

    /* a valid GGUF that is not a model moed runs */
    write_tiny(trunc, MODEL_ARCH_LLAMA, MUT_DENSE_LLAMA);
    ck_assert_int_eq(run("'%s' inspect '%s' > /dev/null 2> '%s'", moe_bin, trunc, out), 1);
    ck_assert_int_eq(run("grep -q 'expert_count' '%s'", out), 0);
    ck_assert_int_eq(run("'%s' inspect > /dev/null 2>&1", moe_bin), 2);
    ck_assert_int_eq(run("'%s' inspect --help > /dev/null", moe_bin), 0);
    unlink(path);
    unlink(trunc);
    unlink(out);
}
END_TEST

/* ---- main ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, mkmodel_makes_every_arch_and_type_loadable, 0, N_ARCH * N_TYPE);
    tcase_add_loop_test(tc, mkmodel_expert_weights_have_sane_scale, 0, 11);
    tcase_add_test(tc, mkmodel_is_deterministic_and_seeded);
    tcase_add_test(tc, mkmodel_default_is_small_qwen3moe_and_vocab_copies);
    tcase_add_test(tc, mkmodel_refuses_bad_options);
    tcase_add_test(tc, mkmodel_skew_makes_some_experts_popular);
    tcase_add_test(tc, mkmodel_skew_gives_popularity_and_reuse_in_the_reference);
    tcase_add_test(tc, loads_minimal_writer_model);
    tcase_add_loop_test(tc, refuses_bad_model_with_one_line_reason, 0,
                        (int)(sizeof(refusals) / sizeof(refusals[0])));
    tcase_add_test(tc, hparams_check_enforces_arch_constraints);
    tcase_add_test(tc, inspect_prints_arch_and_refuses_truncated_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *bd = getenv("MOE_BUILDDIR");
    snprintf(moe_bin, sizeof(moe_bin), "%s/tools/moe", bd ? bd : ".");
    if (access(moe_bin, X_OK) != 0) {
        fprintf(stderr, "test_model: %s not found (set MOE_BUILDDIR)\n", moe_bin);
        return 77;
    }
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/moe-test-model-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
}
