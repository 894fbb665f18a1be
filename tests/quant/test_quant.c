/* tests/quant/test_quant.c: the GGML quant formats of daemon/model/quant.c. Checks the
 * traits table against GGML's block sizes, decodes hand-built blocks whose values were
 * worked out by hand from the format definitions (ggml-common.h, ggml-quants.c), checks the
 * simple quantizers' bytes and rounding against GGML's quantize_row_*_ref on hand-worked
 * inputs, bounds the round-trip error of every type on several distributions (and shows
 * the bounds would catch a broken layout), and covers the half/bfloat16 edge cases,
 * quant_row_size's refusals and the type-name parser. */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/quant.h"

/* ---- helpers --------------------------------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* splitmix64: a fixed, seedable stream so every run tests the same data. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s) /* [0, 1) */
{
    return (float)(rng_next(s) >> 40) * 0x1p-24f;
}

static float rng_gauss(uint64_t *s)
{
    float u1 = rng_uniform(s), u2 = rng_uniform(s);
    if (u1 < 1e-7f)
        u1 = 1e-7f;
    return sqrtf(-2.f * logf(u1)) * cosf(6.2831853f * u2);
}

static void dequant_ok(uint32_t type, const void *src, float *dst, size_t n)
{
    ck_assert_int_eq(quant_dequantize(type, src, dst, n), 0);
}

static void assert_floats_eq(const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i])
            ck_abort_msg("element %zu: got %.9g, want %.9g", i, (double)got[i], (double)want[i]);
    }
}

/* ---- (1) traits ------------------------------------------------------------------------ */

/* Block and type sizes per GGML (ggml/src/ggml.c type_traits with the block structs of
 * ggml/src/ggml-common.h, ggml-org/llama.cpp at commit 01243c58). */
static const struct {
    uint32_t type;
    const char *name;
    uint32_t block_size, type_size;
    bool can_compute;
} expected_traits[] = {
    {GGML_TYPE_F32, "f32", 1, 4, true},
    {GGML_TYPE_F16, "f16", 1, 2, true},
    {GGML_TYPE_Q4_0, "q4_0", 32, 18, true},
    {GGML_TYPE_Q4_1, "q4_1", 32, 20, true},
    {GGML_TYPE_Q5_0, "q5_0", 32, 22, true},
    {GGML_TYPE_Q5_1, "q5_1", 32, 24, true},
    {GGML_TYPE_Q8_0, "q8_0", 32, 34, true},
    {GGML_TYPE_Q8_1, "q8_1", 32, 36, false},
    {GGML_TYPE_Q2_K, "q2_K", 256, 84, false},
    {GGML_TYPE_Q3_K, "q3_K", 256, 110, false},
    {GGML_TYPE_Q4_K, "q4_K", 256, 144, true},
    {GGML_TYPE_Q5_K, "q5_K", 256, 176, true},
    {GGML_TYPE_Q6_K, "q6_K", 256, 210, true},
    {GGML_TYPE_Q8_K, "q8_K", 256, 292, false},
    {GGML_TYPE_IQ2_XXS, "iq2_xxs", 256, 66, false},
    {GGML_TYPE_IQ2_XS, "iq2_xs", 256, 74, false},
    {GGML_TYPE_IQ3_XXS, "iq3_xxs", 256, 98, false},
    {GGML_TYPE_IQ1_S, "iq1_s", 256, 50, false},
    {GGML_TYPE_IQ4_NL, "iq4_nl", 32, 18, false},
    {GGML_TYPE_IQ3_S, "iq3_s", 256, 110, false},
    {GGML_TYPE_IQ2_S, "iq2_s", 256, 82, false},
    {GGML_TYPE_IQ4_XS, "iq4_xs", 256, 136, false},
    {GGML_TYPE_I8, "i8", 1, 1, false},
    {GGML_TYPE_I16, "i16", 1, 2, false},
    {GGML_TYPE_I32, "i32", 1, 4, false},
    {GGML_TYPE_I64, "i64", 1, 8, false},
    {GGML_TYPE_F64, "f64", 1, 8, false},
    {GGML_TYPE_IQ1_M, "iq1_m", 256, 56, false},
    {GGML_TYPE_BF16, "bf16", 1, 2, true},
    {GGML_TYPE_TQ1_0, "tq1_0", 256, 54, false},
    {GGML_TYPE_TQ2_0, "tq2_0", 256, 66, false},
    {GGML_TYPE_MXFP4, "mxfp4", 32, 17, false},
    {GGML_TYPE_NVFP4, "nvfp4", 64, 36, false},
    {GGML_TYPE_Q1_0, "q1_0", 128, 18, false},
    {GGML_TYPE_Q2_0, "q2_0", 64, 18, false},
};
#define N_TYPES (sizeof(expected_traits) / sizeof(expected_traits[0]))

START_TEST(traits_match_ggml_block_and_type_sizes)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        const quant_traits_t *t = quant_traits(expected_traits[i].type);
        ck_assert_msg(t != NULL, "type %u unknown", expected_traits[i].type);
        ck_assert_str_eq(t->name, expected_traits[i].name);
        ck_assert_uint_eq(t->block_size, expected_traits[i].block_size);
        ck_assert_uint_eq(t->type_size, expected_traits[i].type_size);
        ck_assert_int_eq(t->can_compute, expected_traits[i].can_compute);
    }
}
END_TEST

START_TEST(traits_unknown_for_ids_ggml_never_had_or_removed)
{
    const uint32_t gaps[] = {4, 5, 31, 32, 33, 36, 37, 38, GGML_TYPE_COUNT_, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(gaps) / sizeof(gaps[0]); i++)
        ck_assert_msg(quant_traits(gaps[i]) == NULL, "type %u should be unknown", gaps[i]);
    /* and every other id below the bound is one of the listed types */
    size_t known = 0;
    for (uint32_t t = 0; t < GGML_TYPE_COUNT_; t++)
        known += quant_traits(t) != NULL;
    ck_assert_uint_eq(known, N_TYPES);
}
END_TEST

START_TEST(non_computable_types_are_refused_by_dequantize_and_quantize)
{
    float f[256] = {0};
    uint8_t b[2048] = {0};
    for (size_t i = 0; i < N_TYPES; i++) {
        if (expected_traits[i].can_compute)
            continue;
        const uint32_t n = expected_traits[i].block_size;
        ck_assert_int_eq(quant_dequantize(expected_traits[i].type, b, f, n), -EINVAL);
        ck_assert_int_eq(quant_quantize(expected_traits[i].type, f, b, n), -EINVAL);
    }
    ck_assert_int_eq(quant_dequantize(4, b, f, 32), -EINVAL);
    ck_assert_int_eq(quant_quantize(UINT32_MAX, f, b, 32), -EINVAL);
}
END_TEST

START_TEST(dequantize_and_quantize_refuse_partial_blocks)
{
    float f[512] = {0};
    uint8_t b[1024] = {0};
    ck_assert_int_eq(quant_dequantize(GGML_TYPE_Q4_0, b, f, 31), -EINVAL);
    ck_assert_int_eq(quant_dequantize(GGML_TYPE_Q4_K, b, f, 288), -EINVAL);
    ck_assert_int_eq(quant_quantize(GGML_TYPE_Q8_0, f, b, 33), -EINVAL);
    ck_assert_int_eq(quant_quantize(GGML_TYPE_Q6_K, f, b, 128), -EINVAL);
    /* zero elements is a valid, empty row */
    ck_assert_int_eq(quant_dequantize(GGML_TYPE_Q6_K, b, f, 0), 0);
    ck_assert_int_eq(quant_quantize(GGML_TYPE_F32, f, b, 0), 0);
}
END_TEST

/* ---- (2) hand-built blocks ------------------------------------------------------------- */

START_TEST(f32_f16_bf16_rows_decode_to_the_encoded_values)
{
    const uint8_t f32[] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0,
                           0x00, 0x00, 0x00, 0x80, 0xdb, 0x0f, 0x49, 0x40};
    const float f32_want[] = {1.0f, -2.5f, -0.0f, 0x1.921fb6p+1f};
    /* 0x3c00 1, 0xc100 -2.5, 0x0001 2^-24, 0x7bff 65504, 0x3555 1365/4096, 0x03ff
     * 1023 * 2^-24, 0x0400 2^-14, 0xfc00 -inf */
    const uint8_t f16[] = {0x00, 0x3c, 0x00, 0xc1, 0x01, 0x00, 0xff, 0x7b,
                           0x55, 0x35, 0xff, 0x03, 0x00, 0x04, 0x00, 0xfc};
    const float f16_want[] = {
        1.0f, -2.5f, 0x1p-24f, 65504.0f, 1365.f / 4096.f, 1023 * 0x1p-24f, 0x1p-14f, -INFINITY};
    /* 0x3f80 1, 0xc020 -2.5, 0x4049 3.140625, 0x0001 2^-133 (f32 subnormal), 0xff80 -inf */
    const uint8_t bf16[] = {0x80, 0x3f, 0x20, 0xc0, 0x49, 0x40, 0x01, 0x00, 0x80, 0xff};
    const float bf16_want[] = {1.0f, -2.5f, 3.140625f, 0x1p-133f, -INFINITY};
    float y[8];

    dequant_ok(GGML_TYPE_F32, f32, y, 4);
    assert_floats_eq(y, f32_want, 4);
    ck_assert(signbit(y[2]));
    dequant_ok(GGML_TYPE_F16, f16, y, 8);
    assert_floats_eq(y, f16_want, 8);
    dequant_ok(GGML_TYPE_BF16, bf16, y, 5);
    assert_floats_eq(y, bf16_want, 5);
}
END_TEST

START_TEST(q8_0_block_decodes_signed_bytes_times_d)
{
    const uint8_t blk[34] = {
        0x00, 0x38, /* d = 0.5 */
        0x80, 0x7f, 0x00, 0x01, 0xff, 0xfe, 0x02, 0x10, 0xf0, 0x40, 0xc0,
        0x05, 0xfb, 0x7e, 0x81, 0x33, 0xcd, 0x0a, 0xf6, 0x64, 0x9c, 0x11,
        0xef, 0x22, 0xde, 0x03, 0xfd, 0x7d, 0x83, 0x20, 0xe0, 0x55,
    };
    const float want[32] = {-64,  63.5, 0,   0.5,   -0.5, -1,    1,     8,  -8,  32,  -32,
                            2.5,  -2.5, 63,  -63.5, 25.5, -25.5, 5,     -5, 50,  -50, 8.5,
                            -8.5, 17,   -17, 1.5,   -1.5, 62.5,  -62.5, 16, -16, 42.5};
    float y[32];
    dequant_ok(GGML_TYPE_Q8_0, blk, y, 32);
    assert_floats_eq(y, want, 32);
}
END_TEST

/* qs shared by the 4- and 5-bit blocks below: low nibble of byte j is j, high nibble is
 * 8 + j for j < 8 and j - 8 after. */
static const uint8_t qs16[16] = {0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7,
                                 0x08, 0x19, 0x2a, 0x3b, 0x4c, 0x5d, 0x6e, 0x7f};

START_TEST(q4_0_low_nibbles_are_the_first_half_of_the_block)
{
    uint8_t blk[18] = {0x00, 0x40}; /* d = 2 */
    memcpy(blk + 2, qs16, 16);
    /* element j < 16: (j - 8) * 2; element 16 + j: (high nibble - 8) * 2 */
    const float want[32] = {-16, -14, -12, -10, -8, -6, -4, -2, 0,   2,   4,   6,   8,  10, 12, 14,
                            0,   2,   4,   6,   8,  10, 12, 14, -16, -14, -12, -10, -8, -6, -4, -2};
    float y[32];
    dequant_ok(GGML_TYPE_Q4_0, blk, y, 32);
    assert_floats_eq(y, want, 32);
}
END_TEST

START_TEST(q4_1_block_decodes_q_times_d_plus_m)
{
    uint8_t blk[20] = {0x00, 0x38, 0x00, 0xc0}; /* d = 0.5, m = -2 */
    memcpy(blk + 4, qs16, 16);
    const float want[32] = {-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2,  2.5,  3,  3.5,  4, 4.5, 5, 5.5,
                            2,  2.5,  3,  3.5,  4, 4.5, 5, 5.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5};
    float y[32];
    dequant_ok(GGML_TYPE_Q4_1, blk, y, 32);
    assert_floats_eq(y, want, 32);
}
END_TEST

START_TEST(q5_0_qh_bit_j_is_the_fifth_bit_of_element_j)
{
    /* d = 1; qh = 0xff00f00f: bits 0-3, 12-15 and 24-31 set */
    uint8_t blk[22] = {0x00, 0x3c, 0x0f, 0xf0, 0x00, 0xff};
    memcpy(blk + 6, qs16, 16);
    const float want[32] = {0,  1,  2,  3,  -12, -11, -10, -9, -8, -7, -6, -5, 12, 13, 14, 15,
                            -8, -7, -6, -5, -4,  -3,  -2,  -1, 0,  1,  2,  3,  4,  5,  6,  7};
    float y[32];
    dequant_ok(GGML_TYPE_Q5_0, blk, y, 32);
    assert_floats_eq(y, want, 32);
}
END_TEST

START_TEST(q5_1_block_decodes_five_bit_q_times_d_plus_m)
{
    /* d = 0.5, m = 1, qh as the Q5_0 test */
    uint8_t blk[24] = {0x00, 0x38, 0x00, 0x3c, 0x0f, 0xf0, 0x00, 0xff};
    memcpy(blk + 8, qs16, 16);
    const float want[32] = {9, 9.5, 10, 10.5, 3, 3.5, 4, 4.5, 5, 5.5, 6,  6.5,  15, 15.5, 16, 16.5,
                            5, 5.5, 6,  6.5,  7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11, 11.5, 12, 12.5};
    float y[32];
    dequant_ok(GGML_TYPE_Q5_1, blk, y, 32);
    assert_floats_eq(y, want, 32);
}
END_TEST

/* The 12 packed scale bytes of the Q4_K/Q5_K tests, packed by hand from
 * sc = {1, 2, 3, 63, 17, 33, 48, 5}, m = {0, 1, 2, 60, 16, 31, 47, 63}:
 * bytes 0-3 sc[0..3] | top two bits of sc[4..7] << 6, bytes 4-7 m[0..3] | top bits of
 * m[4..7] << 6, bytes 8-11 low nibble of sc[4..7] | low nibble of m[4..7] << 4. */
static const uint8_t k_scales[12] = {0x41, 0x82, 0xc3, 0x3f, 0x40, 0x41,
                                     0x82, 0xfc, 0x01, 0xf1, 0xf0, 0xf5};
static const float k_sc[8] = {1, 2, 3, 63, 17, 33, 48, 5};
static const float k_m[8] = {0, 1, 2, 60, 16, 31, 47, 63};

static uint8_t k_qs(int i) /* the 128 qs bytes */
{
    return (uint8_t)(i * 7 + 3);
}

static uint8_t k_qh(int i) /* the 32 Q5_K qh bytes */
{
    return (uint8_t)(i * 29 + 5);
}

/* Element e of a Q4_K/Q5_K block as the format defines it: 64-element chunk c = e / 64
 * uses qs[32c .. 32c + 31], low nibbles for its first 32 elements, high for the rest;
 * qh bit 2c (first 32) or 2c + 1 (rest) of qh[e % 32]; sub-block e / 32. */
static float k_expected(int e, bool five_bit)
{
    const int c = e / 64, within = e % 64, sub = e / 32;
    const uint8_t byte = k_qs(32 * c + within % 32);
    int q = within < 32 ? byte & 15 : byte >> 4;
    if (five_bit)
        q += 16 * ((k_qh(e % 32) >> (2 * c + (within >= 32))) & 1);
    return 1.0f * k_sc[sub] * (float)q - 0.5f * k_m[sub]; /* d = 1, dmin = 0.5 */
}

START_TEST(q4_k_decodes_packed_six_bit_scales_and_mins)
{
    uint8_t blk[144] = {0x00, 0x3c, 0x00, 0x38}; /* d = 1, dmin = 0.5 */
    memcpy(blk + 4, k_scales, 12);
    for (int i = 0; i < 128; i++)
        blk[16 + i] = k_qs(i);
    float y[256], want[256];
    dequant_ok(GGML_TYPE_Q4_K, blk, y, 256);
    for (int e = 0; e < 256; e++)
        want[e] = k_expected(e, false);
    assert_floats_eq(y, want, 256);
    /* spot values worked out on paper */
    ck_assert_float_eq(y[0], 3.0f);     /* qs[0] = 0x03 low, sc 1 */
    ck_assert_float_eq(y[32], -0.5f);   /* qs[0] high 0, sc 2, m 1 */
    ck_assert_float_eq(y[96], 852.0f);  /* qs[32] = 0xe3 high 14, sc 63, m 60 */
    ck_assert_float_eq(y[150], 213.0f); /* qs[86] = 0x5d low 13, sc 17, m 16 */
    ck_assert_float_eq(y[170], -15.5f); /* qs[74] = 0x09 high 0, sc 33, m 31 */
    ck_assert_float_eq(y[200], 504.5f); /* qs[104] = 0xdb low 11, sc 48, m 47 */
    ck_assert_float_eq(y[255], 3.5f);   /* qs[127] = 0x7c high 7, sc 5, m 63 */
}
END_TEST

START_TEST(q5_k_takes_the_fifth_bit_from_qh_bit_pairs)
{
    uint8_t blk[176] = {0x00, 0x3c, 0x00, 0x38}; /* d = 1, dmin = 0.5 */
    memcpy(blk + 4, k_scales, 12);
    for (int i = 0; i < 32; i++)
        blk[16 + i] = k_qh(i);
    for (int i = 0; i < 128; i++)
        blk[48 + i] = k_qs(i);
    float y[256], want[256];
    dequant_ok(GGML_TYPE_Q5_K, blk, y, 256);
    for (int e = 0; e < 256; e++)
        want[e] = k_expected(e, true);
    assert_floats_eq(y, want, 256);
    ck_assert_float_eq(y[0], 19.0f);   /* qh[0] = 0x05 bit 0 set: 3 + 16 */
    ck_assert_float_eq(y[32], -0.5f);  /* bit 1 clear: 0, sc 2, m 1 */
    ck_assert_float_eq(y[64], 56.0f);  /* bit 2 set: 3 + 16 = 19, sc 3, m 2 */
    ck_assert_float_eq(y[96], 852.0f); /* bit 3 clear: 14, sc 63, m 60 */
    ck_assert_float_eq(y[255], 83.5f); /* qh[31] = 0x88 bit 7 set: 7 + 16, sc 5, m 63 */
}
END_TEST

static const int8_t q6_scales[16] = {1, -1, 2, -2, 127, -128, 3, 4, 5, 6, 7, 8, -3, -4, 10, 0};

static uint8_t q6_ql(int i)
{
    return (uint8_t)(i * 13 + 7);
}

static uint8_t q6_qh(int i)
{
    return (uint8_t)(i * 53 + 1);
}

START_TEST(q6_k_decodes_ql_qh_and_int8_scales)
{
    uint8_t blk[210];
    for (int i = 0; i < 128; i++)
        blk[i] = q6_ql(i);
    for (int i = 0; i < 64; i++)
        blk[128 + i] = q6_qh(i);
    memcpy(blk + 192, q6_scales, 16);
    blk[208] = 0x00; /* d = 0.5 */
    blk[209] = 0x38;
    float y[256], want[256];
    dequant_ok(GGML_TYPE_Q6_K, blk, y, 256);
    /* Element e: half h = e / 128, group g = (e % 128) / 32, l = e % 32; low 4 bits from
     * ql[64h + 32(g & 1) + l] (low nibble for g < 2, high for g >= 2), top 2 bits from
     * bits 2g, 2g + 1 of qh[32h + l]; value d * scales[e / 16] * (q - 32). */
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, g = (e % 128) / 32, l = e % 32;
        const uint8_t lb = q6_ql(64 * h + 32 * (g & 1) + l);
        const int lo = g < 2 ? lb & 15 : lb >> 4;
        const int hi = (q6_qh(32 * h + l) >> (2 * g)) & 3;
        want[e] = 0.5f * (float)q6_scales[e / 16] * (float)((lo | hi << 4) - 32);
    }
    assert_floats_eq(y, want, 256);
    ck_assert_float_eq(y[0], -4.5f);    /* ql[0] = 0x07, qh[0] bits 0-1 = 1: 23 - 32, sc 1 */
    ck_assert_float_eq(y[32], -25.0f);  /* ql[32] = 0xa7 low 7, qh bits 2-3 = 0, sc 2 */
    ck_assert_float_eq(y[64], -2032.f); /* ql[0] high 0, bits 4-5 = 0: -32, sc 127 */
    ck_assert_float_eq(y[80], 192.0f);  /* ql[16] = 0xd7 high 13, qh[16] = 0x51: 29, sc -128 */
    ck_assert_float_eq(y[96], -33.0f);  /* ql[32] high 10, bits 6-7 = 0: -22, sc 3 */
    ck_assert_float_eq(y[200], 33.0f);  /* ql[72] = 0xaf high 10, qh[40] = 0x49: -22, sc -3 */
    ck_assert_float_eq(y[239], 50.0f);  /* ql[111] = 0xaa high 10, qh[47] = 0xbc: 42, sc 10 */
}
END_TEST

/* ---- (2b) quantizer bytes match GGML's reference rounding ------------------------------ */

static void quant_ok(uint32_t type, const float *src, void *dst, size_t n)
{
    ck_assert_int_eq(quant_quantize(type, src, dst, n), 0);
}

START_TEST(q4_0_quantizer_rounds_halves_up_like_ggml)
{
    /* x = j - 16: max magnitude -16, d = -16 / -8 = 2; q = trunc(x / 2 + 8.5), max 15 */
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    const uint8_t want[18] = {0x00, 0x40, 0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3,
                              0xc4, 0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7, 0xf7, 0xf8};
    uint8_t got[18];
    quant_ok(GGML_TYPE_Q4_0, x, got, 32);
    ck_assert_mem_eq(got, want, 18);
}
END_TEST

START_TEST(q8_0_quantizer_rounds_halves_away_from_zero)
{
    /* amax 127 so d = 1 and q = roundf(x) */
    float x[32] = {-127, 0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 126.49f, 3.4999f, 0, 100, -100, 64.5f};
    uint8_t want[34] = {0x00, 0x3c, 0x81, 0x01, 0xff, 0x02, 0x03,
                        0xfd, 0x7e, 0x03, 0x00, 0x64, 0x9c, 0x41};
    uint8_t got[34];
    quant_ok(GGML_TYPE_Q8_0, x, got, 32);
    ck_assert_mem_eq(got, want, 34);
}
END_TEST

START_TEST(q4_1_quantizer_stores_min_and_rounds_halves_up)
{
    /* min 0, max 15: d = 1, m = 0, q = trunc(x + 0.5) */
    float x[32] = {0, 15, 0.5f, 1.5f, 2.5f, 14.5f, 7.49f, 7.5f, 3};
    x[16] = 15;
    x[31] = 9.5f;
    uint8_t want[20] = {0x00, 0x3c, 0x00, 0x00, 0xf0, 0x0f, 0x01, 0x02, 0x03, 0x0f,
                        0x07, 0x08, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0};
    uint8_t got[20];
    quant_ok(GGML_TYPE_Q4_1, x, got, 32);
    ck_assert_mem_eq(got, want, 20);
}
END_TEST

START_TEST(q5_0_quantizer_packs_fifth_bits_into_qh)
{
    /* max magnitude -16: d = 1, q = trunc(x + 16.5), max 31; zeros give 16 (fifth bit set) */
    float x[32] = {-16, 15.5f, 0.5f, -0.5f, -15.6f, 3};
    x[16] = 7;
    x[17] = -8;
    x[31] = 15;
    /* fifth bits clear only for elements 0, 4 and 17: qh = 0xfffdffee */
    const uint8_t want[22] = {0x00, 0x3c, 0xee, 0xff, 0xfd, 0xff, 0x70, 0x8f, 0x01, 0x00, 0x00,
                              0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0};
    uint8_t got[22];
    quant_ok(GGML_TYPE_Q5_0, x, got, 32);
    ck_assert_mem_eq(got, want, 22);
}
END_TEST

START_TEST(q5_1_quantizer_packs_fifth_bits_into_qh)
{
    /* min 0, max 31: d = 1, m = 0, q = trunc(x + 0.5) */
    float x[32] = {0, 31, 15.5f, 16.49f, 0.5f};
    x[16] = 31;
    x[17] = 17.5f;
    /* q = 0, 31, 16, 16, 1, ..., [16] 31, [17] 18: qh bits 1, 2, 3, 16, 17 */
    const uint8_t want[24] = {0x00, 0x3c, 0x00, 0x00, 0x0e, 0x00, 0x03, 0x00,
                              0xf0, 0x2f, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                              0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    uint8_t got[24];
    quant_ok(GGML_TYPE_Q5_1, x, got, 32);
    ck_assert_mem_eq(got, want, 24);
}
END_TEST

START_TEST(quantizers_reproduce_values_already_on_their_grid)
{
    /* A block whose values sit exactly on the format's grid must survive unchanged. */
    float x[256], y[256];
    uint8_t b[256 * 4];
    for (int j = 0; j < 32; j++)
        x[j] = 0.25f * (float)(j % 16 - 8); /* Q4_0 grid with d = 0.25, -8 present */
    quant_ok(GGML_TYPE_Q4_0, x, b, 32);
    dequant_ok(GGML_TYPE_Q4_0, b, y, 32);
    assert_floats_eq(y, x, 32);
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j * 4 - 64) / 8.f; /* Q8_0: -8 .. 7.5 step 0.5 */
    x[0] = -63.5f;                        /* amax 63.5 -> d = 0.5 */
    quant_ok(GGML_TYPE_Q8_0, x, b, 32);
    dequant_ok(GGML_TYPE_Q8_0, b, y, 32);
    assert_floats_eq(y, x, 32);
    for (int j = 0; j < 256; j++) /* Q6_K: constant blocks need one level per sub-block */
        x[j] = j < 128 ? 0.5f : -2.0f;
    quant_ok(GGML_TYPE_Q6_K, x, b, 256);
    dequant_ok(GGML_TYPE_Q6_K, b, y, 256);
    for (int j = 0; j < 256; j++)
        ck_assert_float_eq_tol(y[j], x[j], 2e-3f);
}
END_TEST

START_TEST(all_zero_blocks_stay_zero)
{
    const uint32_t types[] = {GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                              GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                              GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    float x[512] = {0}, y[512];
    uint8_t b[2048];
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        quant_ok(types[t], x, b, 512);
        memset(y, 0xff, sizeof(y));
        dequant_ok(types[t], b, y, 512);
        for (int i = 0; i < 512; i++)
            ck_assert_msg(y[i] == 0.f, "%s element %d is %g", quant_traits(types[t])->name, i,
                          (double)y[i]);
    }
}
END_TEST

/* ---- (3) round trips ------------------------------------------------------------------- */

enum dist { DIST_GAUSS, DIST_UNIFORM, DIST_OFFSET, DIST_HEAVY, DIST_BLOCKSCALE, DIST_COUNT };

static void fill(float *x, size_t n, enum dist d, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        switch (d) {
        case DIST_GAUSS:
            x[i] = rng_gauss(&s);
            break;
        case DIST_UNIFORM: /* [-1, 1) */
            x[i] = 2.f * rng_uniform(&s) - 1.f;
            break;
        case DIST_OFFSET: /* all positive, [1, 1.5): exercises the min of the affine types */
            x[i] = 1.f + 0.5f * rng_uniform(&s);
            break;
        case DIST_HEAVY: /* 1 % outliers 20x the rest */
            x[i] = rng_gauss(&s) * (rng_next(&s) % 100 == 0 ? 20.f : 1.f);
            break;
        default: /* DIST_BLOCKSCALE: magnitude 1e-3 .. 1e3 changing every 256 */
            x[i] = rng_gauss(&s) * powf(10.f, (float)((i / 256) % 7) - 3.f);
            break;
        }
    }
}

/* FNV-1a, to pin quantizer output compactly. */
static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

START_TEST(k_quantizer_bytes_are_pinned)
{
    /* The K-quant searches are deterministic but too long to work out by hand; these
     * hashes of their output on fixed data make any change to them deliberate (e.g. a
     * speed-up must keep the bytes). Recorded from this implementation, not from GGML.
     * Only checked on x86-64 without FMA, where no compiler contracts a*b+c: with FMA
     * the rounding of intermediate sums, and so a few codes, may differ. */
#if defined(__x86_64__) && !defined(__FMA__)
    static const struct {
        uint32_t type;
        uint64_t hash;
    } pinned[] = {
        {GGML_TYPE_Q4_K, 0xd513b925345999d1ull},
        {GGML_TYPE_Q5_K, 0x106bd6c872a4e9ffull},
        {GGML_TYPE_Q6_K, 0x918fd73a2b7fe4d7ull},
    };
    const size_t n = 256 * 16;
    float *x = malloc(n * sizeof(float));
    uint8_t *q = malloc(n);
    ck_assert(x && q);
    fill(x, n / 2, DIST_HEAVY, 1234);
    fill(x + n / 2, n / 2, DIST_OFFSET, 5678);
    for (size_t i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++) {
        uint64_t bytes;
        ck_assert_int_eq(quant_row_size(pinned[i].type, n, &bytes), 0);
        quant_ok(pinned[i].type, x, q, n);
        const uint64_t h = fnv1a(q, bytes);
        ck_assert_msg(h == pinned[i].hash, "%s: hash 0x%016llx", quant_traits(pinned[i].type)->name,
                      (unsigned long long)h);
    }
    free(x);
    free(q);
#endif
}
END_TEST

/* sqrt(sum (x - y)^2 / sum x^2), with y read at an element offset (0 for the real check,
 * 1 to model a quantizer that puts the right values in the wrong places). */
static double nrmse(const float *x, const float *y, size_t n, size_t shift)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)x[(i + shift) % n] - (double)y[i];
        e += d * d;
        r += (double)x[i] * (double)x[i];
    }
    return sqrt(e / r);
}

/* Upper bounds of the normalized RMS error per distribution, about 1.3x to 2x the measured
 * values (e.g. Q4_0 on Gaussian data measures 8.6 %, Q8_0 0.54 %, Q4_K 7.2 %, Q6_K 1.8 %). */
static const struct {
    uint32_t type;
    double bound[DIST_COUNT]; /* gauss, uniform, offset, heavy, blockscale */
} round_trip[] = {
    {GGML_TYPE_F16, {0.0004, 0.0004, 0.0004, 0.0004, 0.0004}},
    {GGML_TYPE_BF16, {0.003, 0.003, 0.003, 0.003, 0.003}},
    {GGML_TYPE_Q4_0, {0.11, 0.09, 0.06, 0.18, 0.11}},
    {GGML_TYPE_Q4_1, {0.10, 0.08, 0.01, 0.14, 0.10}},
    {GGML_TYPE_Q5_0, {0.055, 0.045, 0.03, 0.11, 0.055}},
    {GGML_TYPE_Q5_1, {0.05, 0.04, 0.005, 0.07, 0.05}},
    {GGML_TYPE_Q8_0, {0.007, 0.005, 0.0035, 0.015, 0.007}},
    {GGML_TYPE_Q4_K, {0.09, 0.07, 0.028, 0.125, 0.09}},
    {GGML_TYPE_Q5_K, {0.045, 0.035, 0.014, 0.065, 0.045}},
    {GGML_TYPE_Q6_K, {0.023, 0.018, 0.012, 0.04, 0.023}},
};
#define N_ROUND_TRIP (sizeof(round_trip) / sizeof(round_trip[0]))

/* Loop index _i of the tcase: type (N_ROUND_TRIP) x distribution. */
START_TEST(round_trip_error_stays_within_the_bound_of_each_type)
{
    const size_t t = (size_t)_i / DIST_COUNT;
    const enum dist d = (enum dist)(_i % DIST_COUNT);
    const uint32_t type = round_trip[t].type;
    const double bound = round_trip[t].bound[d];
    static const size_t blocks[] = {1, 3, 40}; /* in units of 256 elements */

    for (size_t k = 0; k < sizeof(blocks) / sizeof(blocks[0]); k++) {
        const size_t n = blocks[k] * 256;
        uint64_t bytes;
        ck_assert_int_eq(quant_row_size(type, n, &bytes), 0);
        float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
        uint8_t *q = malloc(bytes), *q2 = malloc(bytes);
        ck_assert(x && y && q && q2);
        fill(x, n, d, 0x5eed0000 + 977 * (uint64_t)_i + k);
        quant_ok(type, x, q, n);
        dequant_ok(type, q, y, n);
        const double err = nrmse(x, y, n, 0);
        ck_assert_msg(err < bound, "%s dist %d n %zu: error %.5f >= bound %.5f",
                      quant_traits(type)->name, (int)d, n, err, bound);
        /* the bound is tight enough to catch values landing in the wrong places */
        const double shifted = nrmse(x, y, n, 1);
        ck_assert_msg(shifted > bound, "%s dist %d: a one-element shift (%.5f) passes %.5f",
                      quant_traits(type)->name, (int)d, shifted, bound);
        /* deterministic: the same input gives the same bytes */
        quant_ok(type, x, q2, n);
        ck_assert_mem_eq(q, q2, bytes);
        free(x);
        free(y);
        free(q);
        free(q2);
    }
}
END_TEST

START_TEST(round_trip_bounds_catch_a_wrong_scale)
{
    /* A quantizer off by 5 % in scale must fail every bound below 5 %: dequantize the true
     * bytes and compare with the input scaled by 1.05. */
    const size_t n = 256 * 8;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    uint8_t *q = malloc(n * 4);
    ck_assert(x && y && q);
    fill(x, n, DIST_GAUSS, 42);
    for (size_t t = 0; t < N_ROUND_TRIP; t++) {
        const double bound = round_trip[t].bound[DIST_GAUSS];
        if (bound >= 0.04)
            continue;
        quant_ok(round_trip[t].type, x, q, n);
        dequant_ok(round_trip[t].type, q, y, n);
        for (size_t i = 0; i < n; i++)
            y[i] *= 1.05f;
        ck_assert_msg(nrmse(x, y, n, 0) > bound, "%s", quant_traits(round_trip[t].type)->name);
    }
    free(x);
    free(y);
    free(q);
}
END_TEST

START_TEST(swapping_nibble_halves_breaks_the_q4_bounds)
{
    /* A Q4_0 decoder that read nibbles interleaved (element 2j low, 2j + 1 high) would be a
     * classic layout bug; emulate it by swapping halves and check the bound notices. */
    const size_t n = 256;
    float x[256], y[256], z[256];
    uint8_t q[8 * 18];
    fill(x, n, DIST_GAUSS, 7);
    quant_ok(GGML_TYPE_Q4_0, x, q, n);
    dequant_ok(GGML_TYPE_Q4_0, q, y, n);
    for (size_t b = 0; b < n / 32; b++)
        for (int j = 0; j < 16; j++) {
            z[32 * b + 2 * j] = y[32 * b + j];
            z[32 * b + 2 * j + 1] = y[32 * b + 16 + j];
        }
    ck_assert(nrmse(x, y, n, 0) < round_trip[2].bound[DIST_GAUSS]);
    ck_assert(nrmse(x, z, n, 0) > round_trip[2].bound[DIST_GAUSS]);
}
END_TEST

/* ---- (4) half and bfloat16 ------------------------------------------------------------- */

START_TEST(f16_conversion_rounds_to_nearest_even_and_handles_specials)
{
    const struct {
        uint32_t f32;
        uint16_t f16;
    } cases[] = {
        {0x00000000, 0x0000}, /* +0 */
        {0x80000000, 0x8000}, /* -0 */
        {0x3f800000, 0x3c00}, /* 1 */
        {0xc0200000, 0xc100}, /* -2.5 */
        {0x477fe000, 0x7bff}, /* 65504, the largest half */
        {0x477fefff, 0x7bff}, /* just below the midpoint 65520 */
        {0x477ff000, 0x7c00}, /* 65520: tie, rounds to even = inf */
        {0x7f7fffff, 0x7c00}, /* FLT_MAX overflows to inf */
        {0x7f800000, 0x7c00}, /* inf */
        {0xff800000, 0xfc00}, /* -inf */
        {0x7fc00000, 0x7e00}, /* quiet NaN */
        {0xffc00001, 0xfe00}, /* negative NaN with payload: canonical, sign kept */
        {0x7f800001, 0x7e00}, /* signalling NaN becomes quiet, never inf */
        {0x33800000, 0x0001}, /* 2^-24, the smallest subnormal */
        {0x33000000, 0x0000}, /* 2^-25: tie between 0 and 2^-24, even is 0 */
        {0x33000001, 0x0001}, /* just above that tie */
        {0x33c00000, 0x0002}, /* 1.5 * 2^-24: tie between 1 and 2 units, even is 2 */
        {0x34200000, 0x0002}, /* 2.5 * 2^-24: tie between 2 and 3, even is 2 */
        {0x387fc000, 0x03ff}, /* 1023 * 2^-24, the largest subnormal */
        {0x387fe000, 0x0400}, /* 1023.5 units: tie, even is 1024 = smallest normal */
        {0x38800000, 0x0400}, /* 2^-14 */
        {0x3f801000, 0x3c00}, /* 1 + 2^-11: tie, stays on even 1 */
        {0x3f803000, 0x3c02}, /* 1 + 3 * 2^-11: tie, goes up to even 0x3c02 */
        {0x3f801001, 0x3c01}, /* just above the first tie */
        {0x00000001, 0x0000}, /* f32 subnormal underflows */
        {0x80000001, 0x8000}, /* to a signed zero */
        {0x33000000 | 0x80000000, 0x8000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint16_t got = quant_f32_to_f16(bits_f32(cases[i].f32));
        ck_assert_msg(got == cases[i].f16, "f32 0x%08x -> 0x%04x, want 0x%04x", cases[i].f32, got,
                      cases[i].f16);
    }
    ck_assert_float_eq(quant_f16_to_f32(0x0001), 0x1p-24f);
    ck_assert_float_eq(quant_f16_to_f32(0x03ff), 1023 * 0x1p-24f);
    ck_assert_float_eq(quant_f16_to_f32(0x0400), 0x1p-14f);
    ck_assert_float_eq(quant_f16_to_f32(0x7bff), 65504.f);
    ck_assert(isinf(quant_f16_to_f32(0x7c00)) && quant_f16_to_f32(0x7c00) > 0);
    ck_assert(isinf(quant_f16_to_f32(0xfc00)) && quant_f16_to_f32(0xfc00) < 0);
    ck_assert(isnan(quant_f16_to_f32(0x7e00)));
    ck_assert(isnan(quant_f16_to_f32(0x7c01)));
    ck_assert(signbit(quant_f16_to_f32(0x8000)) && quant_f16_to_f32(0x8000) == 0.f);
}
END_TEST

START_TEST(every_f16_value_survives_a_round_trip_through_f32)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = quant_f16_to_f32((uint16_t)h);
        const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff);
        if (nan) {
            ck_assert_msg(isnan(f), "0x%04x", h);
            continue;
        }
        ck_assert_msg(quant_f32_to_f16(f) == h, "0x%04x -> %g -> 0x%04x", h, (double)f,
                      quant_f32_to_f16(f));
    }
}
END_TEST

START_TEST(f16_rounding_matches_exact_nearest_even_on_random_floats)
{
    /* Against an independent oracle: pick the nearer of the two neighbouring halves in
     * double arithmetic, ties to the even code. */
    uint64_t s = 99;
    for (int i = 0; i < 200000; i++) {
        /* magnitudes around the whole half range, subnormals included */
        const float f = (rng_uniform(&s) * 2.f - 1.f) * ldexpf(1.f, (int)(rng_next(&s) % 42) - 26);
        const uint16_t h = quant_f32_to_f16(f);
        const double back = quant_f16_to_f32(h);
        if (isinf(back)) {
            ck_assert(fabs((double)f) >= 65520.0);
            continue;
        }
        /* neighbours one code down and up, in the direction of the magnitude */
        const uint16_t mag = h & 0x7fff;
        const double lo = mag ? quant_f16_to_f32((uint16_t)(mag - 1)) : 0;
        const double hi = mag < 0x7bff ? quant_f16_to_f32((uint16_t)(mag + 1)) : INFINITY;
        const double a = fabs((double)f), r = fabs(back);
        ck_assert_msg(fabs(a - r) <= a - lo || mag == 0, "%a -> 0x%04x", (double)f, h);
        ck_assert_msg(fabs(a - r) <= hi - a, "%a -> 0x%04x", (double)f, h);
        if (fabs(a - r) == a - lo && mag != 0) /* a tie going down must land on even */
            ck_assert_msg((mag & 1) == 0, "%a -> 0x%04x", (double)f, h);
        if (fabs(a - r) == hi - a) /* a tie going up too */
            ck_assert_msg((mag & 1) == 0, "%a -> 0x%04x", (double)f, h);
    }
}
END_TEST

START_TEST(bf16_conversion_rounds_to_nearest_even_like_ggml)
{
    const struct {
        uint32_t f32;
        uint16_t bf16;
    } cases[] = {
        {0x3f800000, 0x3f80}, /* 1 */
        {0x3f808000, 0x3f80}, /* tie, stays on even */
        {0x3f818000, 0x3f82}, /* tie, goes up to even */
        {0x3f808001, 0x3f81}, /* above the tie */
        {0x3f807fff, 0x3f80}, /* below the tie */
        {0xbf818000, 0xbf82}, /* sign does not change rounding */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX rounds to inf, as GGML */
        {0x7f800000, 0x7f80}, /* inf */
        {0xff800000, 0xff80}, /* -inf */
        {0x7f800001, 0x7fc0}, /* signalling NaN: truncated, quiet bit forced */
        {0xffc12345, 0xffc1}, /* quiet NaN keeps its top payload */
        {0x00000001, 0x0000}, /* the tiniest subnormal rounds to 0 */
        {0x00010000, 0x0001}, /* subnormals are kept, not flushed */
        {0x00018000, 0x0002}, /* subnormal tie goes to even */
        {0x80000000, 0x8000}, /* -0 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint16_t got = quant_f32_to_bf16(bits_f32(cases[i].f32));
        ck_assert_msg(got == cases[i].bf16, "f32 0x%08x -> 0x%04x, want 0x%04x", cases[i].f32, got,
                      cases[i].bf16);
    }
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = quant_bf16_to_f32((uint16_t)h);
        ck_assert_uint_eq(f32_bits(f), h << 16); /* widening is exact, NaN payload kept */
        if (!isnan(f))
            ck_assert_uint_eq(quant_f32_to_bf16(f), h);
    }
}
END_TEST

/* ---- (5) row sizes --------------------------------------------------------------------- */

START_TEST(row_size_multiplies_blocks_by_type_size)
{
    uint64_t bytes = 0;
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q4_K, 256, &bytes), 0);
    ck_assert_uint_eq(bytes, 144);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q4_K, 4096, &bytes), 0);
    ck_assert_uint_eq(bytes, 16 * 144);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q8_0, 4096, &bytes), 0);
    ck_assert_uint_eq(bytes, 128 * 34);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_F32, 7, &bytes), 0);
    ck_assert_uint_eq(bytes, 28);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_IQ4_XS, 512, &bytes), 0); /* not computable */
    ck_assert_uint_eq(bytes, 272);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q6_K, 0, &bytes), 0);
    ck_assert_uint_eq(bytes, 0);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_F32, UINT64_C(1) << 61, &bytes), 0);
    ck_assert_uint_eq(bytes, UINT64_C(1) << 63);
}
END_TEST

START_TEST(row_size_refuses_partial_blocks_unknown_types_and_overflow)
{
    uint64_t bytes = 12345;
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q4_K, 255, &bytes), -EINVAL);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q4_K, 257, &bytes), -EINVAL);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q4_0, 48, &bytes), -EINVAL);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q1_0, 64, &bytes), -EINVAL);
    ck_assert_int_eq(quant_row_size(4, 32, &bytes), -EINVAL);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_COUNT_, 32, &bytes), -EINVAL);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_F32, UINT64_C(1) << 62, &bytes), -EOVERFLOW);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_F64, UINT64_MAX, &bytes), -EOVERFLOW);
    /* blocks of 256 that take 292 bytes: the largest multiple of 256 overflows (a type
     * smaller than its element count in bytes, like Q4_K, never can) */
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q8_K, UINT64_MAX & ~UINT64_C(255), &bytes),
                     -EOVERFLOW);
    ck_assert_uint_eq(bytes, 12345); /* untouched on failure */
    /* just fits: 2^62 - 1 floats are 2^64 - 4 bytes */
    ck_assert_int_eq(quant_row_size(GGML_TYPE_F32, UINT64_MAX / 4, &bytes), 0);
    ck_assert_uint_eq(bytes, UINT64_MAX - 3);
    ck_assert_int_eq(quant_row_size(GGML_TYPE_Q4_K, UINT64_MAX & ~UINT64_C(255), &bytes), 0);
    ck_assert_uint_eq(bytes, ((UINT64_MAX >> 8)) * 144);
}
END_TEST

/* ---- (6) names ------------------------------------------------------------------------- */

START_TEST(type_names_parse_back_to_their_ids_in_any_case)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        uint32_t t = 9999;
        const char *name = expected_traits[i].name;
        ck_assert_int_eq(quant_type_from_name(name, &t), 0);
        ck_assert_uint_eq(t, expected_traits[i].type);
        char upper[16], lower[16];
        size_t len = strlen(name);
        ck_assert_uint_lt(len, sizeof(upper));
        for (size_t k = 0; k <= len; k++) {
            upper[k] = (char)(name[k] >= 'a' && name[k] <= 'z' ? name[k] - 32 : name[k]);
            lower[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
        }
        t = 9999;
        ck_assert_int_eq(quant_type_from_name(upper, &t), 0);
        ck_assert_uint_eq(t, expected_traits[i].type);
        t = 9999;
        ck_assert_int_eq(quant_type_from_name(lower, &t), 0);
        ck_assert_uint_eq(t, expected_traits[i].type);
    }
}
END_TEST

START_TEST(unknown_type_names_are_refused)
{
    const char *bad[] = {"", "q4", "q4_k_m", "q4_K ", " f16", "f17", "Q4_0_4_4", "DEPRECATED"};
    uint32_t t = 777;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(quant_type_from_name(bad[i], &t) == -EINVAL, "'%s' accepted", bad[i]);
    ck_assert_int_eq(quant_type_from_name(NULL, &t), -EINVAL);
    ck_assert_uint_eq(t, 777);
}
END_TEST

static Suite *quant_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc;

    tc = tcase_create("traits");
    tcase_add_test(tc, traits_match_ggml_block_and_type_sizes);
    tcase_add_test(tc, traits_unknown_for_ids_ggml_never_had_or_removed);
    tcase_add_test(tc, non_computable_types_are_refused_by_dequantize_and_quantize);
    tcase_add_test(tc, dequantize_and_quantize_refuse_partial_blocks);
    suite_add_tcase(s, tc);

    tc = tcase_create("fixed_blocks");
    tcase_add_test(tc, f32_f16_bf16_rows_decode_to_the_encoded_values);
    tcase_add_test(tc, q8_0_block_decodes_signed_bytes_times_d);
    tcase_add_test(tc, q4_0_low_nibbles_are_the_first_half_of_the_block);
    tcase_add_test(tc, q4_1_block_decodes_q_times_d_plus_m);
    tcase_add_test(tc, q5_0_qh_bit_j_is_the_fifth_bit_of_element_j);
    tcase_add_test(tc, q5_1_block_decodes_five_bit_q_times_d_plus_m);
    tcase_add_test(tc, q4_k_decodes_packed_six_bit_scales_and_mins);
    tcase_add_test(tc, q5_k_takes_the_fifth_bit_from_qh_bit_pairs);
    tcase_add_test(tc, q6_k_decodes_ql_qh_and_int8_scales);
    suite_add_tcase(s, tc);

    tc = tcase_create("quantize_bytes");
    tcase_add_test(tc, q4_0_quantizer_rounds_halves_up_like_ggml);
    tcase_add_test(tc, q8_0_quantizer_rounds_halves_away_from_zero);
    tcase_add_test(tc, q4_1_quantizer_stores_min_and_rounds_halves_up);
    tcase_add_test(tc, q5_0_quantizer_packs_fifth_bits_into_qh);
    tcase_add_test(tc, q5_1_quantizer_packs_fifth_bits_into_qh);
    tcase_add_test(tc, quantizers_reproduce_values_already_on_their_grid);
    tcase_add_test(tc, all_zero_blocks_stay_zero);
    suite_add_tcase(s, tc);

    tc = tcase_create("round_trip");
    tcase_add_loop_test(tc, round_trip_error_stays_within_the_bound_of_each_type, 0,
                        (int)(N_ROUND_TRIP * DIST_COUNT));
    tcase_add_test(tc, round_trip_bounds_catch_a_wrong_scale);
    tcase_add_test(tc, swapping_nibble_halves_breaks_the_q4_bounds);
    tcase_add_test(tc, k_quantizer_bytes_are_pinned);
    suite_add_tcase(s, tc);

    tc = tcase_create("half_bf16");
    tcase_add_test(tc, f16_conversion_rounds_to_nearest_even_and_handles_specials);
    tcase_add_test(tc, every_f16_value_survives_a_round_trip_through_f32);
    tcase_add_test(tc, f16_rounding_matches_exact_nearest_even_on_random_floats);
    tcase_add_test(tc, bf16_conversion_rounds_to_nearest_even_like_ggml);
    suite_add_tcase(s, tc);

    tc = tcase_create("row_size_and_names");
    tcase_add_test(tc, row_size_multiplies_blocks_by_type_size);
    tcase_add_test(tc, row_size_refuses_partial_blocks_unknown_types_and_overflow);
    tcase_add_test(tc, type_names_parse_back_to_their_ids_in_any_case);
    tcase_add_test(tc, unknown_type_names_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(quant_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
