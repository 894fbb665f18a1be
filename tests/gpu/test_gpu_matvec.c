/* tests/gpu: matrix-vector products for every weight type against ref_matmul, on shapes that
 * are not multiples of the workgroup or rows-per-workgroup, for batches of 1..64 vectors; and
 * the tiled matrix-matrix kernel that vkc_cmd_matvec switches to for many vectors (forced
 * from one vector on through the tuning, so every batch size reaches it), up to 257 vectors,
 * with row counts and batches that are not multiples of its tile. Both sides decode the same
 * bytes, so only summation order differs: tolerance 1e-4 (normalized, see test_gpu.h) for
 * every type. The grouped matmul (many matrices, each with its own vectors, one dispatch)
 * likewise per group. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model/quant.h"
#include "ref_ops.h"
#include "test_gpu.h"

static const uint32_t types[] = {
    GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

/* Columns for a type: an odd count for float types, an odd number of blocks otherwise. */
static uint32_t cols_for(uint32_t t)
{
    uint32_t bs = quant_traits(t)->block_size;
    return bs == 1 ? 389 : bs == 32 ? 32 * 13 : 256 * 3;
}

/* Random rows x cols weights of type t: returns the bytes (malloc) and their size. */
uint8_t *random_weights(uint32_t t, uint32_t rows, uint32_t cols, size_t *ret_size)
{
    uint64_t row_bytes;
    ck_assert_int_eq(quant_row_size(t, cols, &row_bytes), 0);
    float *f = malloc(sizeof(float) * cols);
    uint8_t *w = malloc(row_bytes * rows + 4);
    for (uint32_t r = 0; r < rows; r++) {
        fill(f, cols, 1.0f);
        ck_assert_int_eq(quant_quantize(t, f, w + r * row_bytes, cols), 0);
    }
    free(f);
    *ret_size = row_bytes * rows;
    return w;
}

static uint32_t w_offset;     /* bytes before W in its buffer (a multiple of 4) */
static uint32_t x_pad, y_pad; /* floats between rows of X / Y beyond cols / rows */

static void check_matvec(uint32_t t, uint32_t rows, uint32_t cols, uint32_t n_vec, bool accum)
{
    size_t wsize;
    uint8_t *w = random_weights(t, rows, cols, &wsize);
    uint32_t xs = cols + x_pad, ys = rows + y_pad;
    size_t nx = (size_t)xs * n_vec, ny = (size_t)ys * n_vec;
    float *x = malloc(sizeof(float) * nx), *xd = malloc(sizeof(float) * cols * n_vec);
    float *y = malloc(sizeof(float) * ny), *y0 = malloc(sizeof(float) * ny);
    float *want = malloc(sizeof(float) * rows * n_vec), *got = malloc(sizeof(float) * rows * n_vec);
    fill(x, nx, 1.0f);
    fill(y0, ny, 1.0f);
    for (uint32_t v = 0; v < n_vec; v++) /* the reference takes dense rows */
        memcpy(xd + (size_t)v * cols, x + (size_t)v * xs, sizeof(float) * cols);
    ref_matmul(t, w, rows, cols, xd, n_vec, want);
    if (accum)
        for (uint32_t v = 0; v < n_vec; v++)
            for (uint32_t r = 0; r < rows; r++)
                want[(size_t)v * rows + r] += y0[(size_t)v * ys + r];
    vkc_buffer_t *bw = buf_with(NULL, wsize + w_offset), *bx = buf_with(x, sizeof(float) * nx);
    vkc_buffer_t *by = buf_with(y0, sizeof(float) * ny);
    ck_assert_int_eq(vkc_buffer_write(ctx, bw, w_offset, w, wsize), 0);
    begin();
    vkc_matvec_args_t a = {.type = t,
                           .rows = rows,
                           .cols = cols,
                           .n_vec = n_vec,
                           .w = {bw, w_offset},
                           .x = {bx, 0},
                           .y = {by, 0},
                           .x_stride = xs,
                           .y_stride = ys,
                           .accumulate = accum};
    ck_assert_int_eq(vkc_cmd_matvec(cmd, &a), 0);
    submit();
    read_back(by, y, sizeof(float) * ny);
    for (uint32_t v = 0; v < n_vec; v++) {
        memcpy(got + (size_t)v * rows, y + (size_t)v * ys, sizeof(float) * rows);
        for (uint32_t r = rows; r < ys; r++) /* the padding between rows stays untouched */
            ck_assert_float_eq(y[(size_t)v * ys + r], y0[(size_t)v * ys + r]);
    }
    double e = norm_err(got, want, (size_t)rows * n_vec);
    ck_assert_msg(e < 1e-4, "%s rows %u cols %u n_vec %u: error %g (y[0] %g want %g)",
                  quant_traits(t)->name, rows, cols, n_vec, e, got[0], want[0]);
    vkc_buffer_free(bw);
    vkc_buffer_free(bx);
    vkc_buffer_free(by);
    free(w);
    free(x);
    free(xd);
    free(y);
    free(y0);
    free(want);
    free(got);
}

/* Only the matrix-vector kernel (CPU devices default to the tiled one from one vector on). */
static void force_matvec(vkc_matvec_tuning_t *saved)
{
    vkc_matvec_get_tuning(ctx, saved);
    vkc_matvec_tuning_t t = *saved;
    t.mm_min_vec = UINT32_MAX;
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), 0);
}

START_TEST(matvec_matches_reference)
{
    uint32_t t = types[_i];
    vkc_matvec_tuning_t saved;
    force_matvec(&saved);
    check_matvec(t, 67, cols_for(t), 1, false);
    check_matvec(t, 45, cols_for(t), 3, false);
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
}
END_TEST

START_TEST(matvec_batches_up_to_64_vectors)
{
    uint32_t t = types[_i];
    vkc_matvec_tuning_t saved;
    force_matvec(&saved);
    check_matvec(t, 29, cols_for(t), 13, true);
    if (t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_K || t == GGML_TYPE_F16)
        check_matvec(t, 19, cols_for(t), 64, false);
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
}
END_TEST

START_TEST(matvec_tunings_agree)
{
    vkc_matvec_tuning_t saved, t;
    vkc_matvec_get_tuning(ctx, &saved);
    const vkc_matvec_tuning_t all[] = {
        {.wg = 8, .rows = 1}, {.wg = 32, .rows = 3}, {.wg = 16, .rows = 8}, {.wg = 64, .rows = 2}};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        t = all[i];
        t.mm_min_vec = UINT32_MAX;
        ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), 0);
        check_matvec(GGML_TYPE_Q4_K, 37, 512, 2, false);
        check_matvec(GGML_TYPE_Q5_0, 37, 96, 1, false);
    }
    t = (vkc_matvec_tuning_t){.wg = 24, .rows = 1};
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), -EINVAL);
    t = (vkc_matvec_tuning_t){.wg = 8, .rows = 1, .mm_rows = 9};
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), -EINVAL);
    t = (vkc_matvec_tuning_t){.wg = 8, .rows = 1, .mm_wg = 12};
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), -EINVAL);
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
}
END_TEST

/* The tiled kernel from one vector on (mm_min_vec 1): every batch size reaches it. */
static void force_matmul(vkc_matvec_tuning_t *saved, uint32_t sg, uint32_t wg, uint32_t rows,
                         uint32_t vecs)
{
    vkc_matvec_get_tuning(ctx, saved);
    vkc_matvec_tuning_t t = *saved;
    t.mm_min_vec = 1;
    t.mm_sg = sg ? sg : t.mm_sg;
    t.mm_wg = wg ? wg : t.mm_wg;
    t.mm_rows = rows ? rows : t.mm_rows;
    t.mm_vecs = vecs ? vecs : t.mm_vecs;
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), 0);
}

START_TEST(matmul_matches_reference_for_1_to_64_vectors)
{
    uint32_t t = types[_i];
    vkc_matvec_tuning_t saved;
    force_matmul(&saved, 0, 0, 0, 0);
    static const uint32_t nv[] = {1, 3, 8, 13, 64}; /* tiles of 1, 2 and 8 vectors */
    for (size_t i = 0; i < sizeof(nv) / sizeof(nv[0]); i++)
        check_matvec(t, 37, cols_for(t), nv[i], nv[i] == 13);
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
}
END_TEST

/* Past 64 vectors through the default threshold (no forcing): several vector tiles, and a
 * last one partly empty. */
START_TEST(matmul_takes_large_batches)
{
    uint32_t t = types[_i];
    check_matvec(t, 45, cols_for(t), 100, false);
    check_matvec(t, 33, cols_for(t), 257, true);
}
END_TEST

/* Plain x loads (the GPU path), other tile shapes, strided X and Y, misaligned weight rows. */
START_TEST(matmul_variants_agree)
{
    static const uint32_t some[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K};
    const vkc_device_info_t *in = vkc_ctx_info(ctx);
    struct {
        uint32_t sg, wg, rows, vecs;
    } v[] = {{2, 0, 0, 0}, {2, 16, 2, 16}, {0, 0, 1, 3}};
    for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
        vkc_matvec_tuning_t saved;
        force_matmul(&saved, v[k].sg, v[k].sg == 2 ? v[k].wg : in->subgroup_size, v[k].rows,
                     v[k].vecs);
        for (size_t i = 0; i < sizeof(some) / sizeof(some[0]); i++) {
            check_matvec(some[i], 41, 768, 5, false);
            x_pad = 3;
            y_pad = 2;
            check_matvec(some[i], 19, 256, 11, true);
            x_pad = y_pad = 0;
            w_offset = 4;
            check_matvec(some[i], 23, 512, 4, false);
            w_offset = 0;
        }
        ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
    }
    no_validation_messages();
}
END_TEST

/* 16-aligned rows of a multiple of 256 columns take the wide-load variants (Q4_0 and Q8_0:
 * eight blocks per chunk; K-quants: aligned super-blocks); odd offsets the word path. With the
 * default tuning (the tiled kernel on CPU devices), then the matrix-vector kernel. */
START_TEST(matvec_aligned_rows_use_wide_loads)
{
    static const uint32_t wide[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
                                    GGML_TYPE_Q6_K};
    vkc_matvec_tuning_t saved;
    vkc_matvec_get_tuning(ctx, &saved);
    for (size_t i = 0; i < 2 * sizeof(wide) / sizeof(wide[0]); i++) {
        if (i == sizeof(wide) / sizeof(wide[0]))
            force_matvec(&saved); /* the second pass: the matrix-vector kernel */
        uint32_t t = wide[i % (sizeof(wide) / sizeof(wide[0]))];
        check_matvec(t, 37, 768, 1, false);
        check_matvec(t, 21, 512, 5, true);
        check_matvec(t, 23, 256, 1, true);
        w_offset = 4; /* the same shapes through the word loads */
        check_matvec(t, 37, 768, 1, false);
        w_offset = 0;
    }
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
}
END_TEST

START_TEST(matvec_refuses_bad_shapes)
{
    vkc_buffer_t *b = buf_with(NULL, 4096);
    begin();
    vkc_matvec_args_t a = {.type = GGML_TYPE_Q4_0,
                           .rows = 4,
                           .cols = 33,
                           .n_vec = 1,
                           .w = {b, 0},
                           .x = {b, 0},
                           .y = {b, 0}};
    ck_assert_int_eq(vkc_cmd_matvec(cmd, &a), -EINVAL);
    a.cols = 32;
    a.type = GGML_TYPE_Q2_K;
    ck_assert_int_eq(vkc_cmd_matvec(cmd, &a), -EINVAL);
    a.type = GGML_TYPE_Q8_0;
    a.rows = 1000; /* 34000 weight bytes in a 4096-byte buffer */
    ck_assert_int_eq(vkc_cmd_matvec(cmd, &a), -EINVAL);
    ck_assert_int_eq(vkc_cmd_submit_wait(cmd), -EINVAL);
    vkc_buffer_free(b);
    no_validation_messages();
}
END_TEST

/* The grouped matmul (the expert FFN of a batch): five matrices of one type at scattered
 * offsets of one buffer, each with its own run of vectors (none, one, more than a tile), the
 * runs out of order in X and Y with vectors nobody owns between them; every group against
 * ref_matmul, the vectors nobody owns untouched. `skew`: bytes added to every matrix's offset
 * (4: the word loads instead of the wide ones). */
static void check_grouped(uint32_t t, uint32_t rows, uint32_t cols, uint32_t skew)
{
    enum { G = 5 };
    static const uint32_t nv[G] = {1, 0, 3, 2, 11}, xv[G] = {16, 0, 1, 5, 4},
                          yv[G] = {0, 20, 2, 17, 5}; /* y vector 1, 16 and 19: nobody's */
    const uint32_t n_x = 18, n_y = 21, xs = cols + 2, ys = rows + 1;
    size_t mat;
    uint8_t *w[G];
    for (uint32_t g = 0; g < G; g++)
        w[g] = random_weights(t, rows, cols, &mat);
    const uint64_t stride = (mat + 1000 + 15) / 16 * 16; /* gaps between the matrices */
    float *x = malloc(sizeof(float) * xs * n_x), *y0 = malloc(sizeof(float) * ys * n_y);
    float *y = malloc(sizeof(float) * ys * n_y);
    fill(x, (size_t)xs * n_x, 1.0f);
    fill(y0, (size_t)ys * n_y, 1.0f);
    vkc_buffer_t *bw = buf_with(NULL, stride * G + skew), *bx = buf_with(x, sizeof(float) * xs * n_x);
    vkc_buffer_t *by = buf_with(y0, sizeof(float) * ys * n_y), *bt;
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_HOST, 4096, &bt), 0);
    vkc_matmul_group_t gr[G];
    for (uint32_t g = 0; g < G; g++) {
        /* matrix g sits in slot G - 1 - g: offsets out of order too */
        uint64_t off = (G - 1 - g) * stride + skew;
        ck_assert_int_eq(vkc_buffer_write(ctx, bw, off, w[g], mat), 0);
        gr[g] = (vkc_matmul_group_t){.w_off = off, .x_vec = xv[g], .n_vec = nv[g], .y_vec = yv[g]};
    }
    begin();
    vkc_matmul_grouped_args_t a = {.type = t, .rows = rows, .cols = cols, .w = {bw, 0},
                                   .x = {bx, 0}, .y = {by, 0}, .table = {bt, 256},
                                   .x_stride = xs, .y_stride = ys, .groups = gr, .n_groups = G};
    ck_assert_int_eq(vkc_cmd_matmul_grouped(cmd, &a), 0);
    submit();
    read_back(by, y, sizeof(float) * ys * n_y);
    bool owned[21] = {0};
    for (uint32_t g = 0; g < G; g++) {
        if (!nv[g])
            continue;
        float *xd = malloc(sizeof(float) * cols * nv[g]), *want = malloc(sizeof(float) * rows * nv[g]);
        float *got = malloc(sizeof(float) * rows * nv[g]);
        for (uint32_t v = 0; v < nv[g]; v++) {
            memcpy(xd + (size_t)v * cols, x + (size_t)(xv[g] + v) * xs, sizeof(float) * cols);
            memcpy(got + (size_t)v * rows, y + (size_t)(yv[g] + v) * ys, sizeof(float) * rows);
            owned[yv[g] + v] = true;
        }
        ref_matmul(t, w[g], rows, cols, xd, nv[g], want);
        double e = norm_err(got, want, (size_t)rows * nv[g]);
        ck_assert_msg(e < 1e-4, "%s group %u (%u vectors) skew %u: error %g",
                      quant_traits(t)->name, g, nv[g], skew, e);
        free(xd);
        free(want);
        free(got);
    }
    for (uint32_t v = 0; v < n_y; v++) /* vectors of no group, and the padding of all */
        for (uint32_t r = owned[v] ? rows : 0; r < ys; r++)
            ck_assert_float_eq(y[(size_t)v * ys + r], y0[(size_t)v * ys + r]);
    vkc_buffer_free(bt);
    vkc_buffer_free(bw);
    vkc_buffer_free(bx);
    vkc_buffer_free(by);
    for (uint32_t g = 0; g < G; g++)
        free(w[g]);
    free(x);
    free(y);
    free(y0);
}

START_TEST(matmul_grouped_matches_reference)
{
    uint32_t t = types[_i];
    check_grouped(t, 37, cols_for(t), 0);
    check_grouped(t, 8, cols_for(t), 4);
}
END_TEST

/* The plain-load tiles (the GPU path) and wider ones. */
START_TEST(matmul_grouped_variants_agree)
{
    static const uint32_t some[] = {GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    vkc_matvec_tuning_t saved;
    force_matmul(&saved, 2, 64, 2, 4);
    for (size_t i = 0; i < sizeof(some) / sizeof(some[0]); i++)
        check_grouped(some[i], 70, 512, 0);
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
    no_validation_messages();
}
END_TEST

/* A group past its buffer, a misaligned matrix, a table that is not host-visible or too
 * small: refused before anything is recorded. */
START_TEST(matmul_grouped_refuses_bad_groups)
{
    vkc_buffer_t *b = buf_with(NULL, 65536), *bt;
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_HOST, 256, &bt), 0);
    begin();
    vkc_matmul_group_t gr[2] = {{.w_off = 0, .x_vec = 0, .n_vec = 1, .y_vec = 0},
                                {.w_off = 34 * 64, .x_vec = 1, .n_vec = 1, .y_vec = 1}};
    vkc_matmul_grouped_args_t a = {.type = GGML_TYPE_Q8_0, .rows = 64, .cols = 32, .w = {b, 0},
                                   .x = {b, 0}, .y = {b, 0}, .table = {bt, 0}, .groups = gr,
                                   .n_groups = 2};
    gr[1].w_off = 65536 - 34 * 62; /* its last rows end past the buffer */
    ck_assert_int_eq(vkc_cmd_matmul_grouped(cmd, &a), -EINVAL);
    gr[1].w_off = 34 * 64 + 2;
    ck_assert_int_eq(vkc_cmd_matmul_grouped(cmd, &a), -EINVAL);
    gr[1].w_off = 34 * 64;
    gr[1].x_vec = 65536 / 128; /* X vectors past the buffer */
    ck_assert_int_eq(vkc_cmd_matmul_grouped(cmd, &a), -EINVAL);
    gr[1].x_vec = 1;
    a.n_groups = 17; /* 272 table bytes in 256 */
    ck_assert_int_eq(vkc_cmd_matmul_grouped(cmd, &a), -EINVAL);
    a.n_groups = 2;
    a.table = (vkc_view_t){b, 0}; /* device-local: the host cannot write the table */
    if (!vkc_buffer_map(b))
        ck_assert_int_eq(vkc_cmd_matmul_grouped(cmd, &a), -EINVAL);
    ck_assert_int_eq(vkc_cmd_submit_wait(cmd), -EINVAL);
    vkc_buffer_free(bt);
    vkc_buffer_free(b);
    no_validation_messages();
}
END_TEST

void add_matvec_tests(Suite *s)
{
    TCase *tc = tcase_create("matvec");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, matvec_matches_reference, 0, N_TYPES);
    tcase_add_loop_test(tc, matvec_batches_up_to_64_vectors, 0, N_TYPES);
    tcase_add_test(tc, matvec_tunings_agree);
    tcase_add_loop_test(tc, matmul_matches_reference_for_1_to_64_vectors, 0, N_TYPES);
    tcase_add_loop_test(tc, matmul_takes_large_batches, 0, N_TYPES);
    tcase_add_test(tc, matmul_variants_agree);
    tcase_add_test(tc, matvec_aligned_rows_use_wide_loads);
    tcase_add_test(tc, matvec_refuses_bad_shapes);
    tcase_add_loop_test(tc, matmul_grouped_matches_reference, 0, N_TYPES);
    tcase_add_test(tc, matmul_grouped_variants_agree);
    tcase_add_test(tc, matmul_grouped_refuses_bad_groups);
    suite_add_tcase(s, tc);
}
