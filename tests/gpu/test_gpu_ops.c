/* tests/gpu: RMSNorm (row and per head), RoPE (NORM and NEOX, partial rotation), the
 * element-wise kernels and the router against tests/ref, on sizes that are not multiples of
 * any workgroup size. Tolerances (normalized, see test_gpu.h): 1e-5 for norms, element-wise
 * and router weights (same float math, a different summation order or exp); 2e-3 for RoPE,
 * whose angles reach hundreds of radians where float cos/sin implementations differ; router
 * ids must match exactly. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_ops.h"
#include "test_gpu.h"

static float *fvec(size_t n, float scale)
{
    float *v = malloc(sizeof(float) * n);
    fill(v, n, scale);
    return v;
}

static void check_rmsnorm(uint32_t n, uint32_t n_rows, bool weight, bool in_place)
{
    float *x = fvec((size_t)n * n_rows, 3.0f), *w = fvec(n, 1.0f);
    float *want = malloc(sizeof(float) * n * n_rows), *got = malloc(sizeof(float) * n * n_rows);
    for (uint32_t r = 0; r < n_rows; r++)
        ref_rmsnorm(x + (size_t)r * n, weight ? w : NULL, n, 1e-6f, want + (size_t)r * n);
    vkc_buffer_t *bx = buf_with(x, sizeof(float) * n * n_rows),
                 *bw = buf_with(w, sizeof(float) * n);
    vkc_buffer_t *bo = in_place ? bx : buf_with(NULL, sizeof(float) * n * n_rows);
    begin();
    vkc_rmsnorm_args_t a = {.n = n,
                            .n_rows = n_rows,
                            .x = {bx, 0},
                            .w = {weight ? bw : NULL, 0},
                            .out = {bo, 0},
                            .eps = 1e-6f};
    ck_assert_int_eq(vkc_cmd_rmsnorm(cmd, &a), 0);
    submit();
    read_back(bo, got, sizeof(float) * n * n_rows);
    double e = norm_err(got, want, (size_t)n * n_rows);
    ck_assert_msg(e < 1e-5, "rmsnorm n %u rows %u: error %g", n, n_rows, e);
    if (!in_place)
        vkc_buffer_free(bo);
    vkc_buffer_free(bx);
    vkc_buffer_free(bw);
    free(x);
    free(w);
    free(want);
    free(got);
}

START_TEST(rmsnorm_matches_reference)
{
    check_rmsnorm(1000, 5, true, false);   /* whole rows (n_embd) */
    check_rmsnorm(72, 3 * 7, false, true); /* per head, in place, no weight */
    check_rmsnorm(4099, 2, true, true);
}
END_TEST

static void check_rope(bool neox, uint32_t head_dim, uint32_t n_rot, float scale)
{
    const uint32_t n_tok = 5, n_head = 3;
    size_t n = (size_t)n_tok * n_head * head_dim;
    float *x = fvec(n, 1.0f), *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    int32_t pos[5] = {0, 1, 17, 301, 600};
    memcpy(want, x, sizeof(float) * n);
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t h = 0; h < n_head; h++)
            ref_rope(want + ((size_t)t * n_head + h) * head_dim, head_dim, n_rot, neox, pos[t],
                     10000.0f, scale);
    vkc_buffer_t *bx = buf_with(x, sizeof(float) * n), *bp = buf_with(pos, sizeof(pos));
    begin();
    vkc_rope_args_t a = {.n_tok = n_tok,
                         .n_head = n_head,
                         .head_dim = head_dim,
                         .n_rot = n_rot,
                         .x = {bx, 0},
                         .pos = {bp, 0},
                         .neox = neox,
                         .freq_base = 10000.0f,
                         .freq_scale = scale};
    ck_assert_int_eq(vkc_cmd_rope(cmd, &a), 0);
    submit();
    read_back(bx, got, sizeof(float) * n);
    double e = norm_err(got, want, n);
    ck_assert_msg(e < 2e-3, "rope neox %d head_dim %u n_rot %u: error %g", neox, head_dim, n_rot,
                  e);
    vkc_buffer_free(bx);
    vkc_buffer_free(bp);
    free(x);
    free(want);
    free(got);
}

START_TEST(rope_matches_reference)
{
    check_rope(false, 80, 80, 1.0f);
    check_rope(true, 80, 80, 1.0f);
    check_rope(false, 80, 48, 0.25f); /* partial rotation, scaled positions */
    check_rope(true, 96, 32, 1.0f);
}
END_TEST

static float silu(float g)
{
    return g / (1.0f + expf(-g));
}

START_TEST(eltwise_ops_match_reference)
{
    const uint32_t row = 331, rows = 3, n = row * rows, wt_stride = 4;
    float *a = fvec(n, 4.0f), *b = fvec(n, 4.0f), *o = fvec(n, 1.0f),
          *wt = fvec(rows * wt_stride, 1.0f);
    float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    vkc_buffer_t *ba = buf_with(a, 4 * n), *bb = buf_with(b, 4 * n),
                 *bw = buf_with(wt, 4 * rows * wt_stride);
    vkc_buffer_t *bo = buf_with(NULL, 4 * n);
    for (int op = VKC_ADD; op <= VKC_SIG_GATE; op++) {
        for (uint32_t i = 0; i < n; i++) {
            switch (op) {
            case VKC_ADD:
                want[i] = a[i] + b[i];
                break;
            case VKC_SCALE:
                want[i] = 0.7f * a[i];
                break;
            case VKC_ACCUM:
                want[i] = o[i] + 0.7f * wt[(i / row) * wt_stride + 2] * a[i];
                break;
            case VKC_SWIGLU:
                ref_swiglu(&a[i], &b[i], 1, &want[i]);
                break;
            default:
                want[i] = a[i] * ref_sigmoid(b[i]);
                break;
            }
        }
        if (op == VKC_SWIGLU)
            ck_assert_float_eq_tol(want[0], silu(a[0]) * b[0], 1e-6);
        ck_assert_int_eq(vkc_buffer_write(ctx, bo, 0, o, 4 * n), 0);
        begin();
        vkc_eltwise_args_t e = {.op = (enum vkc_eltwise_op)op,
                                .n = n,
                                .a = {ba, 0},
                                .b = {bb, 0},
                                .out = {bo, 0},
                                .wt = {bw, 0},
                                .s = 0.7f,
                                .row = row,
                                .wt_stride = wt_stride,
                                .wt_index = 2};
        ck_assert_int_eq(vkc_cmd_eltwise(cmd, &e), 0);
        submit();
        read_back(bo, got, 4 * n);
        double err = norm_err(got, want, n);
        ck_assert_msg(err < 1e-5, "eltwise op %d: error %g", op, err);
    }
    vkc_buffer_free(ba);
    vkc_buffer_free(bb);
    vkc_buffer_free(bw);
    vkc_buffer_free(bo);
    free(a);
    free(b);
    free(o);
    free(wt);
    free(want);
    free(got);
}
END_TEST

static void check_router(uint32_t n_tok, uint32_t n_expert, uint32_t k, bool sig, bool norm,
                         float scale)
{
    float *l = fvec((size_t)n_tok * n_expert, 4.0f);
    int32_t *ids = malloc(4 * n_tok * k), *gids = malloc(4 * n_tok * k);
    float *w = malloc(4 * n_tok * k), *gw = malloc(4 * n_tok * k);
    for (uint32_t t = 0; t < n_tok; t++)
        ref_route(l + (size_t)t * n_expert, n_expert, k, sig, norm, scale, ids + t * k, w + t * k);
    vkc_buffer_t *bl = buf_with(l, 4 * n_tok * n_expert), *bi = buf_with(NULL, 4 * n_tok * k);
    vkc_buffer_t *bw = buf_with(NULL, 4 * n_tok * k);
    begin();
    vkc_router_args_t a = {.n_tok = n_tok,
                           .n_expert = n_expert,
                           .k = k,
                           .logits = {bl, 0},
                           .ids = {bi, 0},
                           .weights = {bw, 0},
                           .gating_sigmoid = sig,
                           .norm_topk = norm,
                           .scale = scale};
    ck_assert_int_eq(vkc_cmd_router(cmd, &a), 0);
    submit();
    read_back(bi, gids, 4 * n_tok * k);
    read_back(bw, gw, 4 * n_tok * k);
    for (uint32_t i = 0; i < n_tok * k; i++)
        ck_assert_msg(gids[i] == ids[i], "router token %u pick %u: id %d, want %d", i / k, i % k,
                      gids[i], ids[i]);
    double e = norm_err(gw, w, (size_t)n_tok * k);
    ck_assert_msg(e < 1e-5, "router weights: error %g", e);
    vkc_buffer_free(bl);
    vkc_buffer_free(bi);
    vkc_buffer_free(bw);
    free(l);
    free(ids);
    free(gids);
    free(w);
    free(gw);
}

/* b broadcast: a bias row added to every row (VKC_B_ROW), one gate value per row
 * (VKC_B_PER_ROW), as the engine uses them for attention biases and the shared expert gate. */
START_TEST(eltwise_broadcast_matches_reference)
{
    const uint32_t row = 331, rows = 3, n = row * rows;
    float *a = fvec(n, 4.0f), *b = fvec(row, 4.0f);
    float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    vkc_buffer_t *ba = buf_with(a, 4 * n), *bb = buf_with(b, 4 * row), *bo = buf_with(NULL, 4 * n);
    const struct {
        enum vkc_eltwise_op op;
        enum vkc_bcast mode;
    } cases[] = {{VKC_ADD, VKC_B_ROW},        {VKC_SWIGLU, VKC_B_ROW},
                 {VKC_SIG_GATE, VKC_B_PER_ROW}, {VKC_ADD, VKC_B_PER_ROW},
                 {VKC_MUL, VKC_B_PER_ROW},      {VKC_MUL, VKC_B_ROW}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (uint32_t i = 0; i < n; i++) {
            float bi = cases[c].mode == VKC_B_ROW ? b[i % row] : b[i / row];
            if (cases[c].op == VKC_ADD)
                want[i] = a[i] + bi;
            else if (cases[c].op == VKC_SWIGLU)
                ref_swiglu(&a[i], &bi, 1, &want[i]);
            else if (cases[c].op == VKC_MUL)
                want[i] = a[i] * bi;
            else
                want[i] = a[i] * ref_sigmoid(bi);
        }
        begin();
        vkc_eltwise_args_t e = {.op = cases[c].op, .n = n, .a = {ba, 0}, .b = {bb, 0},
                                .out = {bo, 0}, .row = row, .b_mode = cases[c].mode};
        ck_assert_int_eq(vkc_cmd_eltwise(cmd, &e), 0);
        submit();
        read_back(bo, got, 4 * n);
        double err = norm_err(got, want, n);
        ck_assert_msg(err < 1e-5, "eltwise op %d mode %d: error %g", cases[c].op, cases[c].mode,
                      err);
    }
    // a broadcast without a row length is refused
    begin();
    vkc_eltwise_args_t bad = {.op = VKC_ADD, .n = n, .a = {ba, 0}, .b = {bb, 0}, .out = {bo, 0},
                              .b_mode = VKC_B_ROW};
    ck_assert_int_eq(vkc_cmd_eltwise(cmd, &bad), -EINVAL);
    ck_assert_int_eq(vkc_cmd_submit_wait(cmd), -EINVAL);
    vkc_buffer_free(ba);
    vkc_buffer_free(bb);
    vkc_buffer_free(bo);
    free(a);
    free(b);
    free(want);
    free(got);
}
END_TEST

START_TEST(router_matches_reference)
{
    check_router(37, 60, 6, false, true, 1.0f);   /* softmax, renormalized (Qwen-MoE style) */
    check_router(70, 128, 8, false, false, 1.0f); /* softmax, not renormalized */
    check_router(5, 256, 8, true, true, 2.5f);    /* sigmoid, renormalized, scaled */
    check_router(3, 8, 8, false, false, 0.0f);    /* k = n_expert */
}
END_TEST

void add_ops_tests(Suite *s)
{
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, rmsnorm_matches_reference);
    tcase_add_test(tc, rope_matches_reference);
    tcase_add_test(tc, eltwise_ops_match_reference);
    tcase_add_test(tc, eltwise_broadcast_matches_reference);
    tcase_add_test(tc, router_matches_reference);
    suite_add_tcase(s, tc);
}
