/* tests/gpu: matrix-vector products for every weight type against ref_matmul, on shapes that
 * are not multiples of the workgroup or rows-per-workgroup, for batches of 1..64 vectors.
 * Both sides decode the same bytes, so only summation order differs: tolerance 1e-4
 * (normalized, see test_gpu.h) for every type. */
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

static uint32_t w_offset; /* bytes before W in its buffer (a multiple of 4) */

static void check_matvec(uint32_t t, uint32_t rows, uint32_t cols, uint32_t n_vec, bool accum)
{
    size_t wsize;
    uint8_t *w = random_weights(t, rows, cols, &wsize);
    float *x = malloc(sizeof(float) * cols * n_vec);
    float *y = malloc(sizeof(float) * rows * n_vec);
    float *want = malloc(sizeof(float) * rows * n_vec);
    float *y0 = malloc(sizeof(float) * rows * n_vec);
    fill(x, (size_t)cols * n_vec, 1.0f);
    fill(y0, (size_t)rows * n_vec, 1.0f);
    ref_matmul(t, w, rows, cols, x, n_vec, want);
    if (accum)
        for (size_t i = 0; i < (size_t)rows * n_vec; i++)
            want[i] += y0[i];
    vkc_buffer_t *bw = buf_with(NULL, wsize + w_offset),
                 *bx = buf_with(x, sizeof(float) * cols * n_vec);
    vkc_buffer_t *by = buf_with(y0, sizeof(float) * rows * n_vec);
    ck_assert_int_eq(vkc_buffer_write(ctx, bw, w_offset, w, wsize), 0);
    begin();
    vkc_matvec_args_t a = {.type = t,
                           .rows = rows,
                           .cols = cols,
                           .n_vec = n_vec,
                           .w = {bw, w_offset},
                           .x = {bx, 0},
                           .y = {by, 0},
                           .accumulate = accum};
    ck_assert_int_eq(vkc_cmd_matvec(cmd, &a), 0);
    submit();
    read_back(by, y, sizeof(float) * rows * n_vec);
    double e = norm_err(y, want, (size_t)rows * n_vec);
    ck_assert_msg(e < 1e-4, "%s rows %u cols %u n_vec %u: error %g (y[0] %g want %g)",
                  quant_traits(t)->name, rows, cols, n_vec, e, y[0], want[0]);
    vkc_buffer_free(bw);
    vkc_buffer_free(bx);
    vkc_buffer_free(by);
    free(w);
    free(x);
    free(y);
    free(want);
    free(y0);
}

START_TEST(matvec_matches_reference)
{
    uint32_t t = types[_i];
    check_matvec(t, 67, cols_for(t), 1, false);
    check_matvec(t, 45, cols_for(t), 3, false);
}
END_TEST

START_TEST(matvec_batches_up_to_64_vectors)
{
    uint32_t t = types[_i];
    check_matvec(t, 29, cols_for(t), 13, true);
    if (t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_K || t == GGML_TYPE_F16)
        check_matvec(t, 19, cols_for(t), 64, false);
}
END_TEST

START_TEST(matvec_tunings_agree)
{
    vkc_matvec_tuning_t saved, t;
    vkc_matvec_get_tuning(ctx, &saved);
    const vkc_matvec_tuning_t all[] = {{8, 1}, {32, 3}, {16, 8}, {64, 2}};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        t = all[i];
        ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), 0);
        check_matvec(GGML_TYPE_Q4_K, 37, 512, 2, false);
        check_matvec(GGML_TYPE_Q5_0, 37, 96, 1, false);
    }
    t = (vkc_matvec_tuning_t){24, 1};
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &t), -EINVAL);
    ck_assert_int_eq(vkc_matvec_set_tuning(ctx, &saved), 0);
}
END_TEST

/* 16-aligned rows of a multiple of 256 columns take the 16-byte-load variants (Q4_0 and
 * Q8_0: eight blocks per chunk; K-quants: aligned super-blocks); odd offsets the word path. */
START_TEST(matvec_aligned_rows_use_wide_loads)
{
    static const uint32_t wide[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
                                    GGML_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof(wide) / sizeof(wide[0]); i++) {
        check_matvec(wide[i], 37, 768, 1, false);
        check_matvec(wide[i], 21, 512, 5, true);
        check_matvec(wide[i], 23, 256, 1, true);
        w_offset = 4; /* the same shapes through the word loads */
        check_matvec(wide[i], 37, 768, 1, false);
        w_offset = 0;
    }
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

void add_matvec_tests(Suite *s)
{
    TCase *tc = tcase_create("matvec");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, matvec_matches_reference, 0, N_TYPES);
    tcase_add_loop_test(tc, matvec_batches_up_to_64_vectors, 0, N_TYPES);
    tcase_add_test(tc, matvec_tunings_agree);
    tcase_add_test(tc, matvec_aligned_rows_use_wide_loads);
    tcase_add_test(tc, matvec_refuses_bad_shapes);
    suite_add_tcase(s, tc);
}
