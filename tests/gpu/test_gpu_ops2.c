/* tests/gpu: the kernels of daemon/gpu/vkc-ops2.c against tests/ref on random inputs whose
 * sizes are not multiples of the workgroup sizes:
 *  - embedding gather, every weight type: both sides decode the same bytes, so the rows
 *    must match exactly (tolerance 0);
 *  - argmax/top-k: exact ids and values, ties to the lower id;
 *  - attention (decode, several sequences; causal prefill) over an F16 cache against
 *    ref_attention fed the same F16-rounded K/V: nmse < 1e-10 (float summation order only);
 *  - expert FFN through a slot table against ref_matvec/ref_swiglu per entry: nmse < 1e-9
 *    (float summation order), and bit-identical output when the entries are split over
 *    several calls;
 *  - bad shapes are refused with -EINVAL and reported again by submit. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/quant.h"
#include "ref_ops.h"
#include "test_gpu.h"

void add_ops2_tests(Suite *s); /* called by test_gpu.c */

static const uint32_t all_types[] = {
    GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_ALL_TYPES (sizeof(all_types) / sizeof(all_types[0]))

static uint32_t rand_below(uint32_t n)
{
    return (uint32_t)((frand() + 1.0f) * 0.5f * (float)n) % n;
}

/* ---- embedding -------------------------------------------------------------------------- */

START_TEST(embed_gathers_dequantized_rows)
{
    uint32_t t = all_types[_i];
    uint32_t bs = quant_traits(t)->block_size;
    uint32_t cols = bs == 1 ? 301 : bs == 32 ? 32 * 7 : 256 * 3, n_rows = 37, n_tok = 45;
    size_t wsize;
    uint8_t *w = random_weights(t, n_rows, cols, &wsize);
    int32_t ids[45];
    for (uint32_t i = 0; i < n_tok; i++)
        ids[i] = (int32_t)rand_below(n_rows);
    ids[3] = (int32_t)n_rows; /* out of range: zeros */
    ids[7] = -1;
    uint32_t os = cols + 3;
    size_t out_n = (size_t)n_tok * os;
    float *got = calloc(out_n, sizeof(float)), *want = calloc(out_n, sizeof(float));
    for (uint32_t i = 0; i < n_tok; i++)
        if (ids[i] >= 0 && (uint32_t)ids[i] < n_rows)
            ref_get_row(t, w, cols, (size_t)ids[i], want + (size_t)i * os);
    vkc_buffer_t *bw = buf_with(w, wsize), *bi = buf_with(ids, sizeof(ids));
    vkc_buffer_t *bo = buf_with(got, out_n * sizeof(float));
    begin();
    vkc_embed_args_t a = {.type = t,
                          .n_rows = n_rows,
                          .cols = cols,
                          .n_tok = n_tok,
                          .w = {bw, 0},
                          .ids = {bi, 0},
                          .out = {bo, 0},
                          .out_stride = os};
    ck_assert_int_eq(vkc_cmd_embed(cmd, &a), 0);
    submit();
    read_back(bo, got, out_n * sizeof(float));
    for (size_t i = 0; i < out_n; i++)
        ck_assert_msg(got[i] == want[i], "%s element %zu: %g, want %g", quant_traits(t)->name, i,
                      got[i], want[i]);
    vkc_buffer_free(bw);
    vkc_buffer_free(bi);
    vkc_buffer_free(bo);
    free(w);
    free(got);
    free(want);
}
END_TEST

/* ---- top-k ------------------------------------------------------------------------------ */

/* The reference: k best of x[0..n) by (value desc, id asc), NaN skipped. */
static void ref_topk(const float *x, uint32_t n, uint32_t k, int32_t *ids, float *vals)
{
    for (uint32_t j = 0; j < k; j++) {
        int32_t best = -1;
        for (uint32_t i = 0; i < n; i++) {
            if (isnan(x[i]))
                continue;
            bool taken = false;
            for (uint32_t l = 0; l < j; l++)
                taken |= ids[l] == (int32_t)i;
            if (!taken && (best < 0 || x[i] > x[best]))
                best = (int32_t)i;
        }
        ids[j] = best;
        vals[j] = best >= 0 ? x[best] : -INFINITY;
    }
}

static void check_topk(uint32_t n, uint32_t n_rows, uint32_t k)
{
    uint32_t xs = n + 5;
    size_t nx = (size_t)n_rows * xs;
    float *x = malloc(nx * sizeof(float));
    fill(x, nx, 4.0f);
    /* ties: quantize some rows to a few levels; plant a NaN */
    for (uint32_t r = 0; r < n_rows; r += 2)
        for (uint32_t i = 0; i < n; i++)
            x[(size_t)r * xs + i] = floorf(x[(size_t)r * xs + i]);
    x[1] = NAN;
    int32_t *ids = malloc(sizeof(int32_t) * n_rows * k), *want_ids = malloc(sizeof(int32_t) * k);
    float *vals = malloc(sizeof(float) * n_rows * k), *want_vals = malloc(sizeof(float) * k);
    vkc_buffer_t *bx = buf_with(x, nx * sizeof(float));
    vkc_buffer_t *bi = buf_with(NULL, sizeof(int32_t) * n_rows * k);
    vkc_buffer_t *bv = buf_with(NULL, sizeof(float) * n_rows * k);
    begin();
    vkc_topk_args_t a = {.n = n,
                         .n_rows = n_rows,
                         .k = k,
                         .x_stride = xs,
                         .x = {bx, 0},
                         .ids = {bi, 0},
                         .vals = {bv, 0}};
    ck_assert_int_eq(vkc_cmd_topk(cmd, &a), 0);
    submit();
    read_back(bi, ids, sizeof(int32_t) * n_rows * k);
    read_back(bv, vals, sizeof(float) * n_rows * k);
    for (uint32_t r = 0; r < n_rows; r++) {
        ref_topk(x + (size_t)r * xs, n, k, want_ids, want_vals);
        for (uint32_t j = 0; j < k; j++) {
            ck_assert_msg(ids[r * k + j] == want_ids[j], "n %u k %u row %u rank %u: id %d, want %d",
                          n, k, r, j, ids[r * k + j], want_ids[j]);
            ck_assert(vals[r * k + j] == want_vals[j]);
        }
    }
    vkc_buffer_free(bx);
    vkc_buffer_free(bi);
    vkc_buffer_free(bv);
    free(x);
    free(ids);
    free(vals);
    free(want_ids);
    free(want_vals);
}

START_TEST(topk_matches_reference_with_ties_to_lower_id)
{
    check_topk(1, 1, 1);    /* one value */
    check_topk(3001, 5, 1); /* argmax */
    check_topk(3001, 3, 40);
    check_topk(517, 2, 64);
    check_topk(20, 3, 30); /* k > n: ids -1 past the row */
}
END_TEST

/* ---- attention -------------------------------------------------------------------------- */

/* A cache holding several sequences: sequence s owns rows [first[s], first[s] + len[s]). */
typedef struct att_case {
    uint32_t n_head, n_head_kv, dk, dv, n_ctx, n_seq;
    const uint32_t *first, *len;
    float q_scale; /* magnitude of the queries: large values test the online softmax */
} att_case_t;

static float f16_round(float f)
{
    return quant_f16_to_f32(quant_f32_to_f16(f));
}

/* Store every sequence's K/V rows with vkc_cmd_kv_store, then run attention for the
 * queries (query i of sequence seq_of[i] sees n_kv[i] rows from its first row); compare the
 * cache with f16-rounded inputs exactly and the output with ref_attention. */
static void check_attention(const att_case_t *c, uint32_t n_q, const uint32_t *seq_of,
                            const uint32_t *n_kv)
{
    uint32_t kr = c->n_head_kv * c->dk, vr = c->n_head_kv * c->dv; /* elements per row */
    uint32_t n_rows = 0;
    for (uint32_t s = 0; s < c->n_seq; s++)
        n_rows += c->len[s];
    float *ks = malloc(sizeof(float) * n_rows * kr), *vs = malloc(sizeof(float) * n_rows * vr);
    uint32_t *rows = malloc(sizeof(uint32_t) * n_rows);
    fill(ks, (size_t)n_rows * kr, 1.0f);
    fill(vs, (size_t)n_rows * vr, 1.0f);
    /* host copies of the caches, f16-rounded, for the reference */
    float *kc = calloc((size_t)c->n_ctx * kr, sizeof(float));
    float *vc = calloc((size_t)c->n_ctx * vr, sizeof(float));
    for (uint32_t s = 0, i = 0; s < c->n_seq; s++)
        for (uint32_t p = 0; p < c->len[s]; p++, i++) {
            rows[i] = c->first[s] + p;
            for (uint32_t e = 0; e < kr; e++)
                kc[(size_t)rows[i] * kr + e] = f16_round(ks[(size_t)i * kr + e]);
            for (uint32_t e = 0; e < vr; e++)
                vc[(size_t)rows[i] * vr + e] = f16_round(vs[(size_t)i * vr + e]);
        }
    uint32_t qn = c->n_head * c->dk, on = c->n_head * c->dv;
    float *q = malloc(sizeof(float) * n_q * qn), *out = malloc(sizeof(float) * n_q * on);
    float *want = malloc(sizeof(float) * n_q * on);
    uint32_t *ranges = malloc(sizeof(uint32_t) * 2 * n_q);
    fill(q, (size_t)n_q * qn, c->q_scale);
    float scale = 1.0f / sqrtf((float)c->dk);
    for (uint32_t i = 0; i < n_q; i++) {
        uint32_t s = seq_of[i];
        ranges[2 * i] = c->first[s];
        ranges[2 * i + 1] = n_kv[i];
        if (n_kv[i] == 0)
            memset(want + (size_t)i * on, 0, sizeof(float) * on);
        else
            ref_attention(q + (size_t)i * qn, kc + (size_t)c->first[s] * kr,
                          vc + (size_t)c->first[s] * vr, n_kv[i], c->n_head, c->n_head_kv, c->dk,
                          c->dv, scale, want + (size_t)i * on);
    }
    size_t kbytes = (size_t)c->n_ctx * kr * 2, vbytes = (size_t)c->n_ctx * vr * 2;
    vkc_buffer_t *bks = buf_with(ks, sizeof(float) * n_rows * kr);
    vkc_buffer_t *bvs = buf_with(vs, sizeof(float) * n_rows * vr);
    vkc_buffer_t *brows = buf_with(rows, sizeof(uint32_t) * n_rows);
    /* K at byte 0 of its buffer, V at byte 4 of its own: both binding paths */
    vkc_buffer_t *bk = buf_with(NULL, kbytes), *bv = buf_with(NULL, vbytes + 4);
    vkc_buffer_t *bq = buf_with(q, sizeof(float) * n_q * qn);
    vkc_buffer_t *br = buf_with(ranges, sizeof(uint32_t) * 2 * n_q);
    vkc_buffer_t *bo = buf_with(NULL, sizeof(float) * n_q * on);
    begin();
    vkc_kv_store_args_t sk = {.n_rows = n_rows,
                              .row_elems = kr,
                              .n_ctx = c->n_ctx,
                              .src = {bks, 0},
                              .cache = {bk, 0},
                              .rows = {brows, 0}};
    vkc_kv_store_args_t sv = {.n_rows = n_rows,
                              .row_elems = vr,
                              .n_ctx = c->n_ctx,
                              .src = {bvs, 0},
                              .cache = {bv, 4},
                              .rows = {brows, 0}};
    ck_assert_int_eq(vkc_cmd_kv_store(cmd, &sk), 0);
    ck_assert_int_eq(vkc_cmd_kv_store(cmd, &sv), 0);
    vkc_cmd_barrier(cmd, "attention reads the K/V rows just stored");
    vkc_attention_args_t a = {.n_q = n_q,
                              .n_head = c->n_head,
                              .n_head_kv = c->n_head_kv,
                              .head_dim_k = c->dk,
                              .head_dim_v = c->dv,
                              .n_ctx = c->n_ctx,
                              .scale = scale,
                              .q = {bq, 0},
                              .k = {bk, 0},
                              .v = {bv, 4},
                              .ranges = {br, 0},
                              .out = {bo, 0}};
    ck_assert_int_eq(vkc_cmd_attention(cmd, &a), 0);
    submit();
    /* the cache holds exactly the f16 of what was stored */
    uint16_t *kh = malloc(kbytes), *vh = malloc(vbytes + 4);
    read_back(bk, kh, kbytes);
    read_back(bv, vh, vbytes + 4);
    for (uint32_t i = 0; i < n_rows; i++) {
        for (uint32_t e = 0; e < kr; e++)
            ck_assert_uint_eq(kh[(size_t)rows[i] * kr + e],
                              quant_f32_to_f16(ks[(size_t)i * kr + e]));
        for (uint32_t e = 0; e < vr; e++)
            ck_assert_uint_eq(vh[2 + (size_t)rows[i] * vr + e],
                              quant_f32_to_f16(vs[(size_t)i * vr + e]));
    }
    read_back(bo, out, sizeof(float) * n_q * on);
    double nmse = ref_nmse(want, out, (size_t)n_q * on), e = norm_err(out, want, (size_t)n_q * on);
    ck_assert_msg(nmse < 1e-10 && e < 1e-5, "heads %u/%u dims %u/%u n_q %u: nmse %g, error %g",
                  c->n_head, c->n_head_kv, c->dk, c->dv, n_q, nmse, e);
    vkc_buffer_t *bufs[] = {bks, bvs, brows, bk, bv, bq, br, bo};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        vkc_buffer_free(bufs[i]);
    free(ks);
    free(vs);
    free(rows);
    free(kc);
    free(vc);
    free(q);
    free(out);
    free(want);
    free(ranges);
    free(kh);
    free(vh);
}

/* Decode: one query per sequence over all its rows, several sequences per dispatch. */
static void check_decode(const att_case_t *c)
{
    uint32_t seq_of[16], n_kv[16];
    for (uint32_t s = 0; s < c->n_seq; s++) {
        seq_of[s] = s;
        n_kv[s] = c->len[s];
    }
    check_attention(c, c->n_seq, seq_of, n_kv);
}

START_TEST(attention_decode_matches_reference_over_several_sequences)
{
    /* lengths 1, 65 and 130 straddle the 64-row tiles; an empty sequence gives zeros */
    static const uint32_t first[] = {0, 70, 150, 300, 399}, len[] = {1, 65, 130, 99, 0};
    att_case_t gqa = {.n_head = 6,
                      .n_head_kv = 2,
                      .dk = 72,
                      .dv = 72,
                      .n_ctx = 400,
                      .n_seq = 5,
                      .first = first,
                      .len = len,
                      .q_scale = 1.0f};
    check_decode(&gqa);
    att_case_t big = gqa; /* logits in the hundreds: exp() would overflow without the max */
    big.q_scale = 300.0f;
    check_decode(&big);
    att_case_t wide = {.n_head = 4,
                       .n_head_kv = 4,
                       .dk = 256,
                       .dv = 256,
                       .n_ctx = 400,
                       .n_seq = 5,
                       .first = first,
                       .len = len,
                       .q_scale = 1.0f};
    check_decode(&wide);
    att_case_t mixed = {.n_head = 8,
                        .n_head_kv = 1,
                        .dk = 96,
                        .dv = 162,
                        .n_ctx = 400,
                        .n_seq = 5,
                        .first = first,
                        .len = len,
                        .q_scale = 1.0f};
    check_decode(&mixed);
}
END_TEST

/* Causal prefill: every position of two sequences as a query, position i seeing rows
 * 0..i of its own sequence, all in one dispatch. */
START_TEST(attention_prefill_is_causal_and_matches_reference)
{
    static const uint32_t first[] = {10, 150}, len[] = {77, 130};
    att_case_t c = {.n_head = 4,
                    .n_head_kv = 2,
                    .dk = 64,
                    .dv = 64,
                    .n_ctx = 300,
                    .n_seq = 2,
                    .first = first,
                    .len = len,
                    .q_scale = 4.0f};
    uint32_t seq_of[207], n_kv[207], n = 0;
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t p = 0; p < len[s]; p++, n++) {
            seq_of[n] = s;
            n_kv[n] = p + 1;
        }
    check_attention(&c, n, seq_of, n_kv);
}
END_TEST

/* GQA: group sizes 1, 2, 4 and 8, 16 past the cap of heads per workgroup on CPU devices,
 * 6 (a divisor), head dims whose per-lane state lowers the cap (256) or with an odd number
 * of words (66), in decode over several sequences and in causal prefill. */
START_TEST(attention_gqa_group_sizes_match_reference)
{
    static const uint32_t first[] = {0, 70, 150, 300, 399}, len[] = {1, 65, 130, 99, 0};
    static const uint32_t pfirst[] = {5, 60}, plen[] = {33, 20};
    static const uint32_t groups[][3] = {/* n_head, n_head_kv, head dim */
                                         {2, 2, 64},  {4, 2, 64},  {8, 2, 64}, {8, 1, 64},
                                         {16, 2, 128}, {16, 1, 64}, {12, 2, 64}, {8, 2, 256},
                                         {8, 2, 66} /* an odd number of K words */};
    for (size_t gi = 0; gi < sizeof(groups) / sizeof(groups[0]); gi++) {
        att_case_t c = {.n_head = groups[gi][0],
                        .n_head_kv = groups[gi][1],
                        .dk = groups[gi][2],
                        .dv = groups[gi][2],
                        .n_ctx = 400,
                        .n_seq = 5,
                        .first = first,
                        .len = len,
                        .q_scale = 4.0f};
        check_decode(&c);
        att_case_t p = c;
        p.n_seq = 2;
        p.first = pfirst;
        p.len = plen;
        uint32_t seq_of[53], n_kv[53], n = 0;
        for (uint32_t s = 0; s < 2; s++)
            for (uint32_t i = 0; i < plen[s]; i++, n++) {
                seq_of[n] = s;
                n_kv[n] = i + 1;
            }
        check_attention(&p, n, seq_of, n_kv);
    }
}
END_TEST

/* ---- expert FFN through a slot table ------------------------------------------------------ */

#define MOE_SLOTS 6
#define MOE_BUFS  3 /* slots spread over several buffers, reached through addresses */

typedef struct moe_case {
    uint32_t gu_type, down_type, n_embd, n_ff;
} moe_case_t;

static const moe_case_t moe_cases[] = {
    {GGML_TYPE_F16, GGML_TYPE_F16, 200, 90},
    {GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, 32 * 11, 32 * 7},
    {GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, 32 * 11, 32 * 7},
    {GGML_TYPE_Q4_K, GGML_TYPE_Q4_K, 512, 256},
    {GGML_TYPE_Q6_K, GGML_TYPE_Q6_K, 256, 512},
    {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, 512, 256}, /* the usual mix: down in a wider type */
    {GGML_TYPE_Q5_K, GGML_TYPE_Q8_0, 256, 256},
};
#define N_MOE_CASES (sizeof(moe_cases) / sizeof(moe_cases[0]))

/* Run n entries (already on the device in be) in one vkc_cmd_moe_experts. */
static void moe_run(const moe_case_t *c, vkc_buffer_t *bs, vkc_buffer_t *be, uint32_t n,
                    vkc_buffer_t *bx, uint32_t n_tok, uint32_t n_rows, vkc_buffer_t *bh,
                    vkc_buffer_t *by)
{
    vkc_moe_args_t a = {.gate_up_type = c->gu_type,
                        .down_type = c->down_type,
                        .n_embd = c->n_embd,
                        .n_ff = c->n_ff,
                        .n_slots = MOE_SLOTS,
                        .n_entries = n,
                        .n_tok = n_tok,
                        .n_rows = n_rows,
                        .slots = {bs, 0},
                        .entries = {be, 0},
                        .x = {bx, 0},
                        .h = {bh, 0},
                        .y = {by, 0}};
    ck_assert_int_eq(vkc_cmd_moe_experts(cmd, &a), 0);
}

static void check_moe(const moe_case_t *c, uint32_t n_tok, uint32_t k)
{
    uint32_t ne = c->n_embd, nf = c->n_ff, n = n_tok * k;
    /* experts: gate, up, down of slot i in buffer i % MOE_BUFS, 16-aligned */
    size_t gsz, usz, dsz;
    uint8_t *gate[MOE_SLOTS], *up[MOE_SLOTS], *down[MOE_SLOTS];
    for (int i = 0; i < MOE_SLOTS; i++) {
        gate[i] = random_weights(c->gu_type, nf, ne, &gsz);
        up[i] = random_weights(c->gu_type, nf, ne, &usz);
        down[i] = random_weights(c->down_type, ne, nf, &dsz);
    }
    size_t ga = (gsz + 15) & ~(size_t)15, ua = (usz + 15) & ~(size_t)15;
    size_t da = (dsz + 15) & ~(size_t)15, per = ga + ua + da;
    size_t per_buf = (MOE_SLOTS + MOE_BUFS - 1) / MOE_BUFS;
    vkc_buffer_t *wb[MOE_BUFS];
    for (int b = 0; b < MOE_BUFS; b++)
        wb[b] = buf_with(NULL, per * per_buf + 16);
    vkc_moe_slot_t slots[MOE_SLOTS];
    for (int i = 0; i < MOE_SLOTS; i++) {
        /* the first slot of each buffer sits 16 bytes in: offsets need not be aligned to
         * the storage offset alignment */
        uint64_t off = 16 + per * (size_t)(i / MOE_BUFS);
        vkc_buffer_t *b = wb[i % MOE_BUFS];
        ck_assert_int_eq(vkc_buffer_write(ctx, b, off, gate[i], gsz), 0);
        ck_assert_int_eq(vkc_buffer_write(ctx, b, off + ga, up[i], usz), 0);
        ck_assert_int_eq(vkc_buffer_write(ctx, b, off + ga + ua, down[i], dsz), 0);
        ck_assert_int_eq(vkc_moe_slot_set(&slots[i], (vkc_view_t){b, off},
                                          (vkc_view_t){b, off + ga},
                                          (vkc_view_t){b, off + ga + ua}),
                         0);
    }
    /* routing: token t's j-th expert is a distinct slot, weight in (0, 1) */
    vkc_moe_entry_t *e = malloc(sizeof(*e) * n);
    for (uint32_t t = 0; t < n_tok; t++) {
        uint32_t s0 = rand_below(MOE_SLOTS);
        for (uint32_t j = 0; j < k; j++)
            e[t * k + j] = (vkc_moe_entry_t){.token = t,
                                             .weight = 0.5f + 0.5f * frand(),
                                             .slot = (s0 + j) % MOE_SLOTS,
                                             .row = t * k + j};
    }
    float *x = malloc(sizeof(float) * n_tok * ne), *out0 = malloc(sizeof(float) * n_tok * ne);
    fill(x, (size_t)n_tok * ne, 1.0f);
    fill(out0, (size_t)n_tok * ne, 1.0f);
    /* reference: out[t] = out0[t] + sum_j w_j down_j(silu(gate_j x) * up_j x) */
    float *want = malloc(sizeof(float) * n_tok * ne), *g = malloc(sizeof(float) * nf);
    float *u = malloc(sizeof(float) * nf), *hh = malloc(sizeof(float) * nf);
    float *y = malloc(sizeof(float) * ne);
    memcpy(want, out0, sizeof(float) * n_tok * ne);
    for (uint32_t i = 0; i < n; i++) {
        const float *xt = x + (size_t)e[i].token * ne;
        ref_matvec(c->gu_type, gate[e[i].slot], nf, ne, xt, g);
        ref_matvec(c->gu_type, up[e[i].slot], nf, ne, xt, u);
        ref_swiglu(g, u, nf, hh);
        ref_matvec(c->down_type, down[e[i].slot], ne, nf, hh, y);
        for (uint32_t col = 0; col < ne; col++)
            want[(size_t)e[i].token * ne + col] += e[i].weight * y[col];
    }
    vkc_buffer_t *bs = buf_with(slots, sizeof(slots)), *be = buf_with(e, sizeof(*e) * n);
    vkc_buffer_t *bx = buf_with(x, sizeof(float) * n_tok * ne);
    vkc_buffer_t *bh = buf_with(NULL, sizeof(float) * n * nf);
    vkc_buffer_t *by = buf_with(NULL, sizeof(float) * n * ne);
    vkc_buffer_t *bo = buf_with(out0, sizeof(float) * n_tok * ne);
    vkc_buffer_t *bo2 = buf_with(out0, sizeof(float) * n_tok * ne);
    vkc_moe_combine_args_t ca = {
        .n_tok = n_tok, .n_embd = ne, .k = k, .y = {by, 0}, .out = {bo, 0}, .accumulate = true};
    /* all entries in one call */
    begin();
    moe_run(c, bs, be, n, bx, n_tok, n, bh, by);
    vkc_cmd_barrier(cmd, "combine reads the Y rows of every entry");
    ck_assert_int_eq(vkc_cmd_moe_combine(cmd, &ca), 0);
    submit();
    float *got = malloc(sizeof(float) * n_tok * ne), *got2 = malloc(sizeof(float) * n_tok * ne);
    read_back(bo, got, sizeof(float) * n_tok * ne);
    double nmse = ref_nmse(want, got, (size_t)n_tok * ne);
    ck_assert_msg(nmse < 1e-9, "%s/%s n_tok %u k %u: nmse %g", quant_traits(c->gu_type)->name,
                  quant_traits(c->down_type)->name, n_tok, k, nmse);
    /* the same entries over three calls in reverse order, as when experts arrive late:
     * bit-identical */
    uint32_t cut[4] = {0, n / 3, 2 * n / 3, n};
    vkc_buffer_t *bp[3]; /* each pass's entries in a buffer of its own, bound at offset 0 */
    for (int i = 0; i < 3; i++)
        bp[i] = buf_with(e + cut[i], sizeof(*e) * (cut[i + 1] > cut[i] ? cut[i + 1] - cut[i] : 1));
    begin();
    for (int i = 2; i >= 0; i--) {
        moe_run(c, bs, bp[i], cut[i + 1] - cut[i], bx, n_tok, n, bh, by);
        vkc_cmd_barrier(cmd, "the next pass reuses H; combine reads every Y row");
    }
    ca.out.buf = bo2;
    ck_assert_int_eq(vkc_cmd_moe_combine(cmd, &ca), 0);
    submit();
    read_back(bo2, got2, sizeof(float) * n_tok * ne);
    ck_assert_msg(memcmp(got, got2, sizeof(float) * n_tok * ne) == 0,
                  "split passes changed the result");
    vkc_buffer_t *bufs[] = {bs, be, bx, bh, by, bo, bo2, wb[0], wb[1], wb[2], bp[0], bp[1], bp[2]};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        vkc_buffer_free(bufs[i]);
    for (int i = 0; i < MOE_SLOTS; i++) {
        free(gate[i]);
        free(up[i]);
        free(down[i]);
    }
    free(e);
    free(x);
    free(out0);
    free(want);
    free(g);
    free(u);
    free(hh);
    free(y);
    free(got);
    free(got2);
}

START_TEST(moe_ffn_matches_reference_and_ignores_pass_split)
{
    if (!vkc_ctx_info(ctx)->buffer_device_address)
        return; /* vkc_cmd_moe_experts returns -ENOTSUP; nothing to compare */
    const moe_case_t *c = &moe_cases[_i];
    check_moe(c, 1, 1);
    check_moe(c, 13, 3);
    check_moe(c, 64, 8);
}
END_TEST

/* ---- argument checks ---------------------------------------------------------------------- */

START_TEST(ops2_refuse_bad_shapes_and_report_them_at_submit)
{
    vkc_buffer_t *b = buf_with(NULL, 4096);
    begin();
    vkc_embed_args_t ea = {
        .type = 99, .n_rows = 1, .cols = 32, .n_tok = 1, .w = {b, 0}, .ids = {b, 0}, .out = {b, 0}};
    ck_assert_int_eq(vkc_cmd_embed(cmd, &ea), -EINVAL); /* no decoder for the type */
    ea.type = GGML_TYPE_Q4_K;
    ck_assert_int_eq(vkc_cmd_embed(cmd, &ea), -EINVAL); /* cols not a whole block */
    vkc_topk_args_t ta = {
        .n = 10, .n_rows = 1, .k = VKC_TOPK_MAX + 1, .x = {b, 0}, .ids = {b, 0}, .vals = {b, 0}};
    ck_assert_int_eq(vkc_cmd_topk(cmd, &ta), -EINVAL);
    vkc_attention_args_t aa = {.n_q = 1,
                               .n_head = 6,
                               .n_head_kv = 4,
                               .head_dim_k = 64,
                               .head_dim_v = 64,
                               .n_ctx = 1,
                               .scale = 1.0f,
                               .q = {b, 0},
                               .k = {b, 0},
                               .v = {b, 0},
                               .ranges = {b, 0},
                               .out = {b, 0}};
    ck_assert_int_eq(vkc_cmd_attention(cmd, &aa), -EINVAL); /* heads not a multiple */
    aa.n_head_kv = 2;
    aa.head_dim_k = 63;
    ck_assert_int_eq(vkc_cmd_attention(cmd, &aa), -EINVAL); /* odd head dim */
    vkc_moe_combine_args_t ca = {.n_tok = 1, .n_embd = 8, .k = 0, .y = {b, 0}, .out = {b, 0}};
    ck_assert_int_eq(vkc_cmd_moe_combine(cmd, &ca), -EINVAL);
    vkc_moe_slot_t slot;
    ck_assert_int_eq(
        vkc_moe_slot_set(&slot, (vkc_view_t){b, 4}, (vkc_view_t){b, 0}, (vkc_view_t){b, 0}),
        vkc_ctx_info(ctx)->buffer_device_address ? -EINVAL : -ENOTSUP);
    ck_assert_int_eq(vkc_cmd_submit_wait(cmd), -EINVAL); /* the first recording error */
    no_validation_messages();
    vkc_buffer_free(b);
}
END_TEST

void add_ops2_tests(Suite *s)
{
    TCase *tc = tcase_create("ops2");
    tcase_add_loop_test(tc, embed_gathers_dequantized_rows, 0, N_ALL_TYPES);
    tcase_add_test(tc, topk_matches_reference_with_ties_to_lower_id);
    tcase_add_test(tc, attention_decode_matches_reference_over_several_sequences);
    tcase_add_test(tc, attention_prefill_is_causal_and_matches_reference);
    tcase_add_test(tc, attention_gqa_group_sizes_match_reference);
    tcase_add_loop_test(tc, moe_ffn_matches_reference_and_ignores_pass_split, 0, N_MOE_CASES);
    tcase_add_test(tc, ops2_refuse_bad_shapes_and_report_them_at_submit);
    suite_add_tcase(s, tc);
}
