/* The CPU reference: each op of tests/ref/ref_ops.h against values worked out by hand (or
 * by an independent decoding written here), then the whole forward pass on synthetic
 * models of every architecture and weight type (`moe mkmodel`): deterministic, finite,
 * KV-cache invariant, F32 ~ F16, and `moe run --json` equal to the library call. */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/model.h"
#include "model/quant.h"
#include "ref/ref_forward.h"
#include "ref/ref_ops.h"
#include "text/tokenizer.h"

#define EPS 1e-6

static void assert_close(const float *got, const double *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                      "element %zu: got %.9g, want %.9g", i, (double)got[i], want[i]);
}

/* ---- ops against hand-computed values ---- */

START_TEST(matvec_f32_is_row_dot_products)
{
    const float W[3 * 4] = {1, 2, 3, 4, /**/ 0, -1, 0, 1, /**/ 0.5f, 0.5f, 0.5f, 0.5f};
    const float x[4] = {1, 1, 2, -1};
    float y[3];
    const double want[3] = {1 + 2 + 6 - 4, -1 - 1, 0.5 * 3};

    ref_matvec(GGML_TYPE_F32, W, 3, 4, x, y);
    assert_close(y, want, 3, EPS);

    /* matmul: two tokens, second one is 2x */
    float X[2 * 4], Y[2 * 3];
    memcpy(X, x, sizeof(x));
    for (int i = 0; i < 4; i++)
        X[4 + i] = 2 * x[i];
    ref_matmul(GGML_TYPE_F32, W, 3, 4, X, 2, Y);
    assert_close(Y, want, 3, EPS);
    const double want2[3] = {2 * want[0], 2 * want[1], 2 * want[2]};
    assert_close(Y + 3, want2, 3, EPS);
}
END_TEST

/* A Q8_0 block as GGML lays it out: f16 scale d, then 32 int8 quants; x = d * q. The
 * expected values decode the bytes here, independently of quant.c. */
#define Q8_BLOCK 34
static void q8_block(uint8_t *b, uint16_t d_f16, int seed)
{
    b[0] = (uint8_t)(d_f16 & 0xff);
    b[1] = (uint8_t)(d_f16 >> 8);
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)((i * 7 + seed * 13) % 61 - 30);
}

START_TEST(matvec_q8_0_matches_dequantize_then_dot)
{
    /* 2 rows x 64 columns = 2 blocks per row; scales 0.5 (0x3800), 0.25 (0x3400),
     * 2.0 (0x4000), 1.0 (0x3c00) */
    const uint16_t d[4] = {0x3800, 0x3400, 0x4000, 0x3c00};
    const double dv[4] = {0.5, 0.25, 2.0, 1.0};
    uint8_t W[4 * Q8_BLOCK];
    float x[64], y[2], row[64];
    double want[2] = {0, 0};

    for (int b = 0; b < 4; b++)
        q8_block(W + b * Q8_BLOCK, d[b], b);
    for (int c = 0; c < 64; c++)
        x[c] = (float)((c % 5) - 2) * 0.125f;
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 64; c++) {
            int b = r * 2 + c / 32;
            want[r] += dv[b] * (int8_t)W[b * Q8_BLOCK + 2 + c % 32] * x[c];
        }
    ref_matvec(GGML_TYPE_Q8_0, W, 2, 64, x, y);
    assert_close(y, want, 2, 1e-5);

    /* get_row of row 1 is its dequantized values */
    ref_get_row(GGML_TYPE_Q8_0, W, 64, 1, row);
    for (int c = 0; c < 64; c++)
        ck_assert_float_eq(
            row[c], (float)(dv[2 + c / 32] * (int8_t)W[(2 + c / 32) * Q8_BLOCK + 2 + c % 32]));
}
END_TEST

START_TEST(matvec_f16_matches_halves)
{
    /* 1.0, -2.0, 0.5, 3.0 as halves */
    const uint16_t W[4] = {0x3c00, 0xc000, 0x3800, 0x4200};
    const float x[4] = {1, 2, 4, 1};
    float y[1];
    const double want[1] = {1 - 4 + 2 + 3};

    ref_matvec(GGML_TYPE_F16, W, 1, 4, x, y);
    assert_close(y, want, 1, EPS);
}
END_TEST

START_TEST(matvec_of_an_uncomputable_type_is_nan_not_a_crash)
{
    const uint8_t W[64] = {0};
    const float x[32] = {0};
    float y[1] = {0};

    ref_matvec(GGML_TYPE_COUNT_ + 7, W, 1, 32, x, y);
    ck_assert(isnan(y[0]));
}
END_TEST

START_TEST(rmsnorm_scales_by_root_mean_square)
{
    const float x[4] = {1, 2, 3, 4};
    const float w[4] = {1, 1, 2, 0.5f};
    float out[4];
    const double s = 1.0 / sqrt(7.5 + 1e-5); /* mean(x^2) = 30/4 */
    const double want[4] = {1 * s, 2 * s, 3 * s * 2, 4 * s * 0.5};
    const double want_nw[4] = {1 * s, 2 * s, 3 * s, 4 * s};

    ref_rmsnorm(x, w, 4, 1e-5f, out);
    assert_close(out, want, 4, EPS);
    ref_rmsnorm(x, NULL, 4, 1e-5f, out);
    assert_close(out, want_nw, 4, EPS);
    memcpy(out, x, sizeof(x)); /* in place */
    ref_rmsnorm(out, w, 4, 1e-5f, out);
    assert_close(out, want, 4, EPS);
}
END_TEST

static void rot(double *v, int a, int b, double th)
{
    double x0 = v[a], x1 = v[b];
    v[a] = x0 * cos(th) - x1 * sin(th);
    v[b] = x0 * sin(th) + x1 * cos(th);
}

START_TEST(rope_norm_and_neox_pair_different_dims)
{
    /* head_dim 8, n_rot 4, base 10000, pos 3: theta_0 = 3, theta_1 = 3 * 10000^(-1/2) */
    const double t0 = 3.0, t1 = 3.0 * 0.01;
    float x[8];
    double want[8];

    for (int i = 0; i < 8; i++)
        x[i] = (float)(i + 1), want[i] = i + 1;
    ref_rope(x, 8, 4, 0, 3, 10000.0f, 1.0f); /* NORM: (0,1) and (2,3) */
    rot(want, 0, 1, t0);
    rot(want, 2, 3, t1);
    assert_close(x, want, 8, 1e-5);
    for (int i = 4; i < 8; i++)
        ck_assert_float_eq(x[i], (float)(i + 1)); /* past n_rot: untouched */

    for (int i = 0; i < 8; i++)
        x[i] = (float)(i + 1), want[i] = i + 1;
    ref_rope(x, 8, 4, 1, 3, 10000.0f, 1.0f); /* NEOX: (0,2) and (1,3) */
    rot(want, 0, 2, t0);
    rot(want, 1, 3, t1);
    assert_close(x, want, 8, 1e-5);
    for (int i = 4; i < 8; i++)
        ck_assert_float_eq(x[i], (float)(i + 1));

    /* freq_scale 0.5 at pos 6 turns as far as pos 3 does; full rotation n_rot = head_dim */
    float a[8], b[8];
    for (int i = 0; i < 8; i++)
        a[i] = b[i] = (float)(i + 1);
    ref_rope(a, 8, 8, 1, 6, 10000.0f, 0.5f);
    ref_rope(b, 8, 8, 1, 3, 10000.0f, 1.0f);
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq_tol(a[i], b[i], 1e-5);

    /* position 0 is the identity */
    for (int i = 0; i < 8; i++)
        a[i] = (float)(i + 1);
    ref_rope(a, 8, 8, 0, 0, 10000.0f, 1.0f);
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(a[i], (float)(i + 1));
}
END_TEST

START_TEST(softmax_is_stable_and_sums_to_one)
{
    float x[3] = {1, 2, 3};
    const double e = exp(1.0), z = 1 + e + e * e;
    const double want[3] = {1 / z, e / z, e * e / z};

    ref_softmax(x, 3);
    assert_close(x, want, 3, EPS);

    float big[2] = {1000, 1000};
    const double half[2] = {0.5, 0.5};
    ref_softmax(big, 2);
    assert_close(big, half, 2, EPS);
}
END_TEST

START_TEST(swiglu_is_silu_gate_times_up)
{
    const float g[3] = {0, 1, -2}, u[3] = {5, 2, 3};
    float out[3];
    const double want[3] = {0, 2 / (1 + exp(-1.0)), 3 * -2 / (1 + exp(2.0))};

    ref_swiglu(g, u, 3, out);
    assert_close(out, want, 3, EPS);
    ck_assert_float_eq_tol(ref_sigmoid(0.0f), 0.5f, 1e-7);
}
END_TEST

START_TEST(routing_picks_top_k_ties_lower_id_renormalizes_and_scales)
{
    const float logits[5] = {1, 3, 3, 0, 2};
    const double z = exp(1.0) + 2 * exp(3.0) + 1 + exp(2.0);
    int32_t ids[3];
    float w[3];

    /* softmax, no renormalization (qwen2moe, olmoe) */
    ref_route(logits, 5, 3, 0, 0, 1.0f, ids, w);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 2);
    ck_assert_int_eq(ids[2], 4);
    const double want[3] = {exp(3.0) / z, exp(3.0) / z, exp(2.0) / z};
    assert_close(w, want, 3, EPS);

    /* renormalized (qwen3moe, Mixtral): the k weights sum to 1 */
    ref_route(logits, 5, 3, 0, 1, 1.0f, ids, w);
    const double s = 2 * exp(3.0) + exp(2.0);
    const double want_n[3] = {exp(3.0) / s, exp(3.0) / s, exp(2.0) / s};
    assert_close(w, want_n, 3, EPS);

    /* scale after renormalization; scale 0 means none, as in llama.cpp */
    ref_route(logits, 5, 3, 0, 1, 2.5f, ids, w);
    const double want_s[3] = {2.5 * want_n[0], 2.5 * want_n[1], 2.5 * want_n[2]};
    assert_close(w, want_s, 3, EPS);
    ref_route(logits, 5, 3, 0, 1, 0.0f, ids, w);
    assert_close(w, want_n, 3, EPS);

    /* sigmoid gating: the weights are the sigmoids */
    ref_route(logits, 5, 2, 1, 0, 1.0f, ids, w);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 2);
    const double want_sig[2] = {1 / (1 + exp(-3.0)), 1 / (1 + exp(-3.0))};
    assert_close(w, want_sig, 2, EPS);

    /* all equal: ids in order */
    const float flat[4] = {2, 2, 2, 2};
    ref_route(flat, 4, 3, 0, 0, 1.0f, ids, w);
    ck_assert_int_eq(ids[0], 0);
    ck_assert_int_eq(ids[1], 1);
    ck_assert_int_eq(ids[2], 2);
    ck_assert_float_eq_tol(w[0], 0.25f, 1e-7);

    /* renormalization clamps a vanishing sum at the smallest normal half */
    const float tiny[3] = {-30, -20, -20};
    ref_route(tiny, 3, 2, 1, 1, 1.0f, ids, w);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 2);
    const double want_c[2] = {1 / (1 + exp(20.0)) / 6.103515625e-5,
                              1 / (1 + exp(20.0)) / 6.103515625e-5};
    assert_close(w, want_c, 2, 1e-5);
}
END_TEST

START_TEST(attention_gqa_4_heads_2_kv_heads_by_hand)
{
    /* head_dim 2, 2 positions, scale 1. K: kv head g at t=0 is [1,0], at t=1 [0,0], so the
     * score of a query [a,0] is a at t=0 and 0 at t=1. */
    const float L3 = (float)log(3.0);
    const float q[4 * 2] = {L3, 0, /**/ 0, 0, /**/ L3, 0, /**/ -L3, 0};
    const float K[2 * 2 * 2] = {1, 0, 1, 0, /* t=0: g0, g1 */ 0, 0, 0, 0 /* t=1 */};
    const float V[2 * 2 * 2] = {4, 0, 1, 1, /* t=0: g0, g1 */ 0, 8, 5, 5 /* t=1 */};
    float out[4 * 2];
    /* head 0 (g0): weights 3/4, 1/4 -> [3, 2]; head 1 (g0): 1/2, 1/2 -> [2, 4];
     * head 2 (g1): 3/4, 1/4 -> [2, 2]; head 3 (g1): 1/4, 3/4 -> [4, 4] */
    const double want[8] = {3, 2, 2, 4, 2, 2, 4, 4};

    ref_attention(q, K, V, 2, 4, 2, 2, 2, 1.0f, out);
    assert_close(out, want, 8, 1e-5);

    /* causal window of one position: the output is V[0] of the head's group */
    const double want1[8] = {4, 0, 4, 0, 1, 1, 1, 1};
    ref_attention(q, K, V, 1, 4, 2, 2, 2, 1.0f, out);
    assert_close(out, want1, 8, 1e-6);

    /* the scale multiplies the scores: scale 0 makes every head uniform */
    const double want0[8] = {2, 4, 2, 4, 3, 3, 3, 3};
    ref_attention(q, K, V, 2, 4, 2, 2, 2, 0.0f, out);
    assert_close(out, want0, 8, 1e-6);
}
END_TEST

START_TEST(top_k_is_descending_with_ties_to_lower_index)
{
    const float x[7] = {1, 5, 3, 5, -1, 3, 4};
    int32_t ids[5];
    float v[5];
    const int32_t want[5] = {1, 3, 6, 2, 5};

    ref_top_k(x, 7, 5, ids, v);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(ids[i], want[i]);
        ck_assert_float_eq(v[i], x[want[i]]);
    }
}
END_TEST

START_TEST(nmse_is_relative_squared_error)
{
    const float r[3] = {3, 0, 4}, g[3] = {3, 1, 4}, z[3] = {0, 0, 0};

    ck_assert_double_eq_tol(ref_nmse(r, r, 3), 0.0, 1e-15);
    ck_assert_double_eq_tol(ref_nmse(r, g, 3), 1.0 / 25.0, 1e-12);
    ck_assert_double_eq_tol(ref_nmse(r, z, 3), 1.0, 1e-12);
    ck_assert_double_eq(ref_nmse(z, z, 3), 0.0);
    ck_assert(isinf(ref_nmse(z, r, 3)));
}
END_TEST

/* ---- whole models from `moe mkmodel` ---- */

static const char *const archs[] = {"qwen3moe", "qwen2moe", "olmoe", "llama"};
static const char *const types[] = {"f32", "f16", "q8_0", "q4_0", "q4_K", "q6_K", "q4_K_M"};
#define N_ARCH (sizeof(archs) / sizeof(archs[0]))
#define N_TYPE (sizeof(types) / sizeof(types[0]))
#define N_GEN  32

static char tmpdir[256];
static char moe_tool[512];

static void model_path(char *buf, size_t len, const char *arch, const char *type)
{
    snprintf(buf, len, "%s/%s-%s.gguf", tmpdir, arch, type);
}

/* Small enough that the whole suite stays fast under ASan, big enough for every shape to
 * matter: 2 layers, GQA, 8 experts top-2, 256-wide rows for the K-quants. */
/* Starts `moe mkmodel` in the background; returns its pid or -1. */
static pid_t mkmodel_start(const char *arch, const char *type, const char *extra, const char *out)
{
    char cmd[2048];
    pid_t pid;

    snprintf(cmd, sizeof(cmd),
             "exec '%s' mkmodel --arch %s --type %s --seed 7 --layers 2 --embd 256 "
             "--ff-exp 256 --experts 8 --top-k 2 %s -o '%s' >/dev/null 2>&1",
             moe_tool, arch, type, extra, out);
    pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

typedef struct loaded {
    gguf_t *g;
    model_t *m;
    ref_model_t *rm;
} loaded_t;

static void load(const char *arch, const char *type, loaded_t *l)
{
    char path[512], err[256] = "";

    model_path(path, sizeof(path), arch, type);
    ck_assert_msg(gguf_open(path, &l->g, err, sizeof(err)) == 0, "%s: %s", path, err);
    ck_assert_msg(model_load(l->g, &l->m, err, sizeof(err)) == 0, "%s: %s", path, err);
    ck_assert_msg(ref_model_new(l->m, path, &l->rm, err, sizeof(err)) == 0, "%s: %s", path, err);
}

static void unload(loaded_t *l)
{
    ref_model_free(l->rm);
    model_free(l->m);
    gguf_free(l->g);
}

static const int32_t prompt[4] = {1, 17, 42, 5};

typedef struct route_log {
    uint32_t n_calls;
    uint32_t n_layer;
    int bad;
} route_log_t;

static void on_route(void *userdata, uint32_t layer, int32_t pos, const int32_t *ids,
                     const float *weights, uint32_t k)
{
    route_log_t *log = userdata;

    log->bad |= layer != log->n_calls % log->n_layer;
    for (uint32_t i = 0; i < k; i++) {
        log->bad |= !(weights[i] > 0 && isfinite(weights[i]));
        for (uint32_t j = 0; j < i; j++)
            log->bad |= ids[i] == ids[j];
        log->bad |= i > 0 && weights[i] > weights[i - 1] * 1.0001f;
    }
    log->n_calls++;
}

/* _i: arch index * N_TYPE + type index; the last one is a model with tied output */
START_TEST(decodes_32_tokens_deterministically)
{
    const bool tied = (size_t)_i == N_ARCH * N_TYPE;
    const char *arch = tied ? "llama" : archs[_i / N_TYPE],
               *type = tied ? "tied" : types[_i % N_TYPE];
    ref_step_t a[N_GEN], b[N_GEN];
    ref_state_t *s;
    loaded_t l;
    route_log_t log = {0};

    load(arch, type, &l);
    ck_assert(l.m->hp.tied_output == tied);
    log.n_layer = l.m->hp.n_layer;
    ck_assert_int_eq(ref_state_new(l.rm, 4 + N_GEN, &s), 0);
    ref_state_set_route_hook(s, on_route, &log);
    ck_assert_int_eq(ref_generate(s, prompt, 4, N_GEN, a), 0);
    ck_assert_uint_eq(log.n_calls, (4 + N_GEN - 1) * l.m->hp.n_layer);
    ck_assert_msg(!log.bad, "%s %s: routing hook saw bad ids or weights", arch, type);
    ref_state_set_route_hook(s, NULL, NULL);
    ck_assert_int_eq(ref_generate(s, prompt, 4, N_GEN, b), 0);
    ck_assert_msg(memcmp(a, b, sizeof(a)) == 0, "%s %s: two runs differ", arch, type);

    /* logits finite and not constant; ids in the vocabulary */
    for (int i = 0; i < N_GEN; i++) {
        ck_assert_int_ge(a[i].id, 0);
        ck_assert_int_lt(a[i].id, (int)l.m->hp.n_vocab);
        for (int j = 0; j < REF_TOPK; j++)
            ck_assert_msg(isfinite(a[i].top_logit[j]), "%s %s step %d", arch, type, i);
        ck_assert_msg(a[i].top_logit[0] > a[i].top_logit[REF_TOPK - 1],
                      "%s %s: flat logits at step %d", arch, type, i);
    }
    /* a model that says the same token 32 times is suspicious but possible; a model
     * whose logits never change is broken */
    int changes = 0;
    for (int i = 1; i < N_GEN; i++)
        changes += a[i].top_logit[0] != a[0].top_logit[0];
    ck_assert_msg(changes > 0, "%s %s: logits identical at every step", arch, type);
    ref_state_free(s);
    unload(&l);
}
END_TEST

/* The KV cache changes nothing: logits at position p from a fresh state fed tokens 0..p
 * equal the incremental ones; rewinding over garbage and re-feeding restores them. */
START_TEST(kv_cache_is_invisible)
{
    const char *arch = archs[_i], *type = "q8_0";
    enum { N = 12 };
    int32_t toks[N];
    loaded_t l;
    ref_state_t *inc, *fresh;
    ref_step_t steps[N - 4 + 1];

    load(arch, type, &l);
    const size_t V = l.m->hp.n_vocab;
    float *want = malloc(N * V * sizeof(float)), *got = malloc(V * sizeof(float));
    ck_assert_ptr_nonnull(want);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(ref_state_new(l.rm, N, &inc), 0);
    ck_assert_int_eq(ref_generate(inc, prompt, 4, N - 4 + 1, steps), 0);
    memcpy(toks, prompt, sizeof(prompt));
    for (int i = 4; i < N; i++)
        toks[i] = steps[i - 4].id;
    for (int p = 0; p < N; p++)
        ck_assert_int_eq(ref_forward(inc, toks[p], p, want + p * V), 0);

    for (int p = 0; p < N; p += 5) {
        ck_assert_int_eq(ref_state_new(l.rm, N, &fresh), 0);
        for (int q = 0; q <= p; q++)
            ck_assert_int_eq(ref_forward(fresh, toks[q], q, got), 0);
        ck_assert_msg(memcmp(got, want + p * V, V * sizeof(float)) == 0,
                      "%s: position %d differs fresh vs incremental", arch, p);
        ref_state_free(fresh);
    }

    /* garbage at 6..9, rewind to 6, re-feed: the same logits */
    for (int p = 6; p < 10; p++)
        ck_assert_int_eq(ref_forward(inc, (int32_t)((p * 31) % V), p, got), 0);
    for (int p = 6; p < N; p++)
        ck_assert_int_eq(ref_forward(inc, toks[p], p, got), 0);
    ck_assert(memcmp(got, want + (N - 1) * V, V * sizeof(float)) == 0);

    /* positions must be contiguous; tokens in range */
    ck_assert_int_eq(ref_state_new(l.rm, N, &fresh), 0);
    ck_assert_int_eq(ref_forward(fresh, 1, 1, got), -EINVAL);
    ck_assert_int_eq(ref_forward(fresh, (int32_t)V, 0, got), -EINVAL);
    ck_assert_int_eq(ref_forward(fresh, -1, 0, got), -EINVAL);
    for (int p = 0; p < N; p++)
        ck_assert_int_eq(ref_forward(fresh, 1, p, got), 0);
    ck_assert_int_eq(ref_forward(fresh, 1, N, got), -EINVAL);
    ref_state_free(fresh);

    ref_state_free(inc);
    free(want);
    free(got);
    unload(&l);
}
END_TEST

/* Expert sets chosen per position and layer, to tell quantization noise from a routing
 * flip (a near-tie between two experts that rounding decides: a discrete jump, not an
 * error). */
#define CMP_N   8
#define CMP_MAX 16
typedef struct route_rec {
    int32_t ids[CMP_N][CMP_MAX][CMP_MAX];
} route_rec_t;

static void on_route_rec(void *userdata, uint32_t layer, int32_t pos, const int32_t *ids,
                         const float *weights, uint32_t k)
{
    route_rec_t *rec = userdata;

    /* as a set: sorted */
    for (uint32_t i = 0; i < k; i++) {
        int32_t v = ids[i];
        uint32_t j = i;
        while (j > 0 && rec->ids[pos][layer][j - 1] > v) {
            rec->ids[pos][layer][j] = rec->ids[pos][layer][j - 1];
            j--;
        }
        rec->ids[pos][layer][j] = v;
    }
}

/* Teacher-forced logits of the same prompt for two types of the same seed, compared at the
 * positions up to the first routing difference (*ret_n of them). Returns the largest
 * |a - b| over the largest |a| there. */
static double type_error(const char *arch, const char *ta, const char *tb, int *ret_n)
{
    const int32_t toks[CMP_N] = {1, 17, 42, 5, 99, 3, 250, 7};
    static route_rec_t ra, rb;
    loaded_t la, lb;
    ref_state_t *sa, *sb;
    double max_diff = 0, max_abs = 0;
    int n = 0;

    load(arch, ta, &la);
    load(arch, tb, &lb);
    const size_t V = la.m->hp.n_vocab;
    ck_assert_uint_eq(V, lb.m->hp.n_vocab);
    ck_assert_uint_le(la.m->hp.n_layer, CMP_MAX);
    ck_assert_uint_le(la.m->hp.n_expert_used, CMP_MAX);
    memset(&ra, 0, sizeof(ra));
    memset(&rb, 0, sizeof(rb));
    float *a = malloc(V * sizeof(float)), *b = malloc(V * sizeof(float));
    ck_assert_int_eq(ref_state_new(la.rm, CMP_N, &sa), 0);
    ck_assert_int_eq(ref_state_new(lb.rm, CMP_N, &sb), 0);
    ref_state_set_route_hook(sa, on_route_rec, &ra);
    ref_state_set_route_hook(sb, on_route_rec, &rb);
    for (int p = 0; p < CMP_N; p++) {
        ck_assert_int_eq(ref_forward(sa, toks[p] % (int32_t)V, p, a), 0);
        ck_assert_int_eq(ref_forward(sb, toks[p] % (int32_t)V, p, b), 0);
        if (memcmp(ra.ids[p], rb.ids[p], sizeof(ra.ids[p])) != 0)
            break;
        n++;
        for (size_t i = 0; i < V; i++) {
            max_diff = fmax(max_diff, fabs((double)a[i] - b[i]));
            max_abs = fmax(max_abs, fabs((double)a[i]));
        }
    }
    ref_state_free(sa);
    ref_state_free(sb);
    free(a);
    free(b);
    unload(&la);
    unload(&lb);
    *ret_n = n;
    return n ? max_diff / max_abs : 0;
}

/* mkmodel makes the same float weights for F32 and F16 of one seed (block-quantized expert
 * tensors are drawn directly as codes, so Q8_0 and the others are different models): the
 * F16 rounding must move the logits only a little. */
START_TEST(f16_model_gives_nearly_the_f32_logits)
{
    const char *arch = archs[_i];
    int n;
    double e = type_error(arch, "f32", "f16", &n);

    ck_assert_msg(n >= 2, "%s: routing differs from the first positions (%d equal)", arch, n);
    ck_assert_msg(e < 0.01, "%s: f16 vs f32 normalized error %g", arch, e);
    fprintf(stderr, "%s: normalized logit error f16 vs f32 %.2g (%d positions)\n", arch, e, n);
}
END_TEST

/* `moe run --json` prints exactly {"prompt_ids":[...],"steps":[{"id":..,"top5":[[id,logit]
 * x5]}...]} and it matches ref_generate bit for bit (%.9g round-trips float32). */
/* Runs `moe run --model path ARGS --json` and parses its stdout, which must be exactly one
 * JSON object (jansson refuses anything but whitespace after it). */
static json_t *moe_run_json(const char *path, const char *args)
{
    char cmd[2048];
    json_error_t jerr;

    snprintf(cmd, sizeof(cmd), "'%s' run --engine reference --model '%s' %s --json 2>/dev/null",
             moe_tool, path, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    json_t *root = json_loadf(p, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_msg(root != NULL, "moe run %s: output is not one JSON object: %s", args, jerr.text);
    return root;
}

/* The generated ids of a `moe run --json` object; returns their count. */
static size_t json_step_ids(json_t *root, int32_t *ids, size_t max)
{
    json_t *steps = json_object_get(root, "steps");
    size_t n = json_array_size(steps);

    ck_assert_uint_le(n, max);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)json_integer_value(json_object_get(json_array_get(steps, i), "id"));
    return n;
}

START_TEST(moe_run_json_matches_the_library)
{
    const char *arch = archs[_i];
    enum { N = 6 };
    char path[512], args[128];
    ref_step_t steps[N];
    ref_state_t *s;
    loaded_t l;

    model_path(path, sizeof(path), arch, "q4_K");
    load(arch, "q4_K", &l);
    ck_assert_int_eq(ref_state_new(l.rm, 4 + N, &s), 0);
    ck_assert_int_eq(ref_generate(s, prompt, 4, N, steps), 0);

    snprintf(args, sizeof(args), "--prompt-ids 1,17,42,5 -n %d --ignore-eos", N);
    json_t *root = moe_run_json(path, args);
    ck_assert(json_is_object(root));
    ck_assert_uint_eq(json_object_size(root), 2);
    ck_assert_str_eq(json_object_iter_key(json_object_iter(root)), "prompt_ids"); /* in order */

    json_t *pids = json_object_get(root, "prompt_ids");
    ck_assert(json_is_array(pids));
    ck_assert_uint_eq(json_array_size(pids), 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(json_integer_value(json_array_get(pids, i)), prompt[i]);

    json_t *js = json_object_get(root, "steps");
    ck_assert(json_is_array(js));
    ck_assert_uint_eq(json_array_size(js), N);
    for (size_t i = 0; i < N; i++) {
        json_t *st = json_array_get(js, i);
        ck_assert(json_is_object(st));
        ck_assert_uint_eq(json_object_size(st), 2);
        ck_assert_str_eq(json_object_iter_key(json_object_iter(st)), "id");
        ck_assert(json_is_integer(json_object_get(st, "id")));
        ck_assert_int_eq(json_integer_value(json_object_get(st, "id")), steps[i].id);
        json_t *top = json_object_get(st, "top5");
        ck_assert(json_is_array(top));
        ck_assert_uint_eq(json_array_size(top), 5);
        for (size_t j = 0; j < 5; j++) {
            json_t *pair = json_array_get(top, j);
            ck_assert(json_is_array(pair));
            ck_assert_uint_eq(json_array_size(pair), 2);
            ck_assert(json_is_integer(json_array_get(pair, 0)));
            ck_assert(json_is_number(json_array_get(pair, 1)));
            ck_assert_int_eq(json_integer_value(json_array_get(pair, 0)), steps[i].top_id[j]);
            ck_assert_float_eq((float)json_number_value(json_array_get(pair, 1)),
                               steps[i].top_logit[j]);
        }
    }
    json_decref(root);
    ref_state_free(s);
    unload(&l);
}
END_TEST

/* --prompt goes through the model's tokenizer (BOS only as the metadata says); generation
 * stops after an end-of-generation token unless --ignore-eos; --temp samples, the same
 * seed giving the same ids. */
START_TEST(moe_run_prompt_text_eog_and_sampling)
{
    enum { N = 16 };
    const char *text = "Hello world";
    char path[512], args[256], err[256];
    int32_t want[64], got[N], greedy[N], a[N], b[N];
    ref_step_t steps[N];
    tokenizer_t *tok;
    ref_state_t *s;
    loaded_t l;
    bool add_bos = false;

    model_path(path, sizeof(path), "qwen3moe", "q8_0");
    load("qwen3moe", "q8_0", &l);
    ck_assert_msg(tokenizer_new(l.g, &tok, err, sizeof(err)) == 0, "%s", err);

    /* prompt text: the ids the tokenizer gives */
    if (gguf_get_bool(l.g, "tokenizer.ggml.add_bos_token", &add_bos) != 0)
        add_bos = false;
    int n_want =
        tokenizer_encode(tok, text, strlen(text), add_bos ? TOKENIZER_ADD_SPECIAL : 0, want, 64);
    ck_assert_int_gt(n_want, 0);
    ck_assert_int_le(n_want, 64);
    snprintf(args, sizeof(args), "--prompt '%s' -n 2", text);
    json_t *root = moe_run_json(path, args);
    json_t *pids = json_object_get(root, "prompt_ids");
    ck_assert_uint_eq(json_array_size(pids), (size_t)n_want);
    for (int i = 0; i < n_want; i++)
        ck_assert_int_eq(json_integer_value(json_array_get(pids, i)), want[i]);
    json_decref(root);

    /* end of generation: find a one-token prompt whose greedy run says EOG early */
    int eog_prompt = -1, eog_at = -1;
    ck_assert_int_eq(ref_state_new(l.rm, 1 + N, &s), 0);
    for (int32_t p = 1; p < 64 && eog_prompt < 0; p++) {
        ck_assert_int_eq(ref_generate(s, &p, 1, N, steps), 0);
        for (int i = 0; i < N - 1 && eog_at < 0; i++)
            if (tokenizer_is_eog(tok, steps[i].id))
                eog_prompt = p, eog_at = i;
    }
    if (eog_prompt >= 0) {
        snprintf(args, sizeof(args), "--prompt-ids %d -n %d", eog_prompt, N);
        root = moe_run_json(path, args);
        ck_assert_uint_eq(json_step_ids(root, got, N), (size_t)eog_at + 1);
        ck_assert(tokenizer_is_eog(tok, got[eog_at]));
        json_decref(root);
    } else {
        fprintf(stderr, "note: no greedy run of this model reaches end of generation\n");
    }

    /* sampling: reproducible per seed, different from greedy or from another seed */
    root = moe_run_json(path, "--prompt-ids 1,17,42,5 -n 16 --ignore-eos");
    ck_assert_uint_eq(json_step_ids(root, greedy, N), N);
    json_decref(root);
    root = moe_run_json(path, "--prompt-ids 1,17,42,5 -n 16 --ignore-eos --temp 1.5 --seed 5");
    ck_assert_uint_eq(json_step_ids(root, a, N), N);
    json_decref(root);
    root = moe_run_json(path, "--prompt-ids 1,17,42,5 -n 16 --ignore-eos --temp 1.5 --seed 5");
    ck_assert_uint_eq(json_step_ids(root, b, N), N);
    json_decref(root);
    ck_assert(memcmp(a, b, sizeof(a)) == 0);
    root = moe_run_json(path, "--prompt-ids 1,17,42,5 -n 16 --ignore-eos --temp 1.5 --seed 6");
    ck_assert_uint_eq(json_step_ids(root, b, N), N);
    json_decref(root);
    ck_assert(memcmp(a, b, sizeof(a)) != 0 || memcmp(a, greedy, sizeof(a)) != 0);
    for (int i = 0; i < N; i++)
        ck_assert(a[i] >= 0 && (uint32_t)a[i] < l.m->hp.n_vocab);

    ref_state_free(s);
    tokenizer_free(tok);
    unload(&l);
}
END_TEST

START_TEST(moe_run_refuses_bad_arguments)
{
    char path[512], cmd[2048];
    const char *bad[] = {
        "--prompt-ids 1,x,3 -n 2",        "--prompt-ids 1,,3 -n 2",
        "--prompt-ids 99999999 -n 2",     "--prompt-ids 1 -n -1",
        "--prompt-ids 1 -n 2x",           "--prompt-ids '' -n 2",
        "--prompt-ids 1 -n 2 --temp nan", "-n 2",
    };

    model_path(path, sizeof(path), "llama", "f32");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(cmd, sizeof(cmd), "'%s' run --model '%s' %s >/dev/null 2>&1", moe_tool, path,
                 bad[i]);
        int st = system(cmd);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "accepted: %s", bad[i]);
    }
    snprintf(cmd, sizeof(cmd), "'%s' run --help >/dev/null 2>&1", moe_tool);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- setup ---- */

/* Every model of the grid plus a tied-output one, made by as many mkmodel processes at
 * once as there are CPUs (the suite's biggest cost under ASan). */
static int make_models(void)
{
    const size_t n = N_ARCH * N_TYPE + 1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const size_t jobs = ncpu < 1 ? 1 : ncpu > 8 ? 8 : (size_t)ncpu;
    size_t started = 0, running = 0;
    int failed = 0, st;
    char path[512];

    while (started < n || running > 0) {
        if (started < n && running < jobs && !failed) {
            const bool tied = started == n - 1;
            const char *arch = tied ? "llama" : archs[started / N_TYPE];
            const char *type = tied ? "q8_0" : types[started % N_TYPE];

            model_path(path, sizeof(path), arch, tied ? "tied" : type);
            if (mkmodel_start(arch, type, tied ? "--tied" : "", path) < 0)
                failed = 1;
            else
                running++;
            started++;
            continue;
        }
        if (running == 0)
            break;
        if (wait(&st) < 0)
            return -1;
        running--;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    if (failed)
        fprintf(stderr, "moe mkmodel failed (%s mkmodel)\n", moe_tool);
    return failed ? -1 : 0;
}

static void remove_models(void)
{
    char path[512];

    for (size_t a = 0; a < N_ARCH; a++)
        for (size_t t = 0; t < N_TYPE; t++) {
            model_path(path, sizeof(path), archs[a], types[t]);
            unlink(path);
        }
    model_path(path, sizeof(path), "llama", "tied");
    unlink(path);
    rmdir(tmpdir);
}

int main(void)
{
    const char *bd = getenv("MOE_BUILDDIR");
    Suite *su = suite_create("forward");
    TCase *ops = tcase_create("ops");
    int n_failed;

    tcase_add_test(ops, matvec_f32_is_row_dot_products);
    tcase_add_test(ops, matvec_q8_0_matches_dequantize_then_dot);
    tcase_add_test(ops, matvec_f16_matches_halves);
    tcase_add_test(ops, matvec_of_an_uncomputable_type_is_nan_not_a_crash);
    tcase_add_test(ops, rmsnorm_scales_by_root_mean_square);
    tcase_add_test(ops, rope_norm_and_neox_pair_different_dims);
    tcase_add_test(ops, softmax_is_stable_and_sums_to_one);
    tcase_add_test(ops, swiglu_is_silu_gate_times_up);
    tcase_add_test(ops, routing_picks_top_k_ties_lower_id_renormalizes_and_scales);
    tcase_add_test(ops, attention_gqa_4_heads_2_kv_heads_by_hand);
    tcase_add_test(ops, top_k_is_descending_with_ties_to_lower_index);
    tcase_add_test(ops, nmse_is_relative_squared_error);
    suite_add_tcase(su, ops);

    snprintf(tmpdir, sizeof(tmpdir), "%s/moe-forward-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(moe_tool, sizeof(moe_tool), "%s/tools/moe", bd ? bd : ".");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    if (make_models() == 0) {
        TCase *models = tcase_create("models");

        tcase_set_timeout(models, 300);
        tcase_add_loop_test(models, decodes_32_tokens_deterministically, 0,
                            (int)(N_ARCH * N_TYPE + 1));
        tcase_add_loop_test(models, kv_cache_is_invisible, 0, (int)N_ARCH);
        tcase_add_loop_test(models, f16_model_gives_nearly_the_f32_logits, 0, (int)N_ARCH);
        tcase_add_loop_test(models, moe_run_json_matches_the_library, 0, (int)N_ARCH);
        tcase_add_test(models, moe_run_prompt_text_eog_and_sampling);
        tcase_add_test(models, moe_run_refuses_bad_arguments);
        suite_add_tcase(su, models);
    } else {
        fprintf(stderr, "SKIP model tests: `moe mkmodel` cannot make the models yet\n");
    }

    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    n_failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_models();
    return n_failed ? 1 : 0;
}
