/* daemon/model/quant.c: GGML tensor types on the CPU. It knows the block geometry of every
 * GGML type id (so a GGUF reader can size any tensor) and dequantizes and quantizes the
 * types moed computes with: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
 * Byte layouts follow GGML's block structs (ggml/src/ggml-common.h) and the arithmetic
 * follows ggml/src/ggml-quants.c (dequantize_row_*, quantize_row_*_ref), both read at
 * ggml-org/llama.cpp commit 01243c58. Blocks are read and written byte by byte (little
 * endian, no alignment assumed), never through C structs, so the code does not depend on
 * host padding or endianness. Invariants: every function is pure (no globals, no
 * allocation, no logging), one switch per call picks a per-type loop, and any input bytes
 * decode to some float without undefined behaviour. Callers: the GGUF reader (sizes),
 * mkmodel (quantize), the CPU reference and the tests (dequantize). */
#include "model/quant.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#define QK   32  /* elements per block of the simple formats (QK4_0 ... QK8_1) */
#define QK_K 256 /* elements per K-quant super-block */

/* Bytes per block, from the block structs of ggml-common.h. */
enum {
    Q4_0_BYTES = 2 + QK / 2,                          /* d, qs[16] */
    Q4_1_BYTES = 4 + QK / 2,                          /* d, m, qs[16] */
    Q5_0_BYTES = 2 + 4 + QK / 2,                      /* d, qh[4], qs[16] */
    Q5_1_BYTES = 4 + 4 + QK / 2,                      /* d, m, qh[4], qs[16] */
    Q8_0_BYTES = 2 + QK,                              /* d, qs[32] */
    Q8_1_BYTES = 4 + QK,                              /* d, s, qs[32] */
    Q2_K_BYTES = QK_K / 16 + QK_K / 4 + 4,            /* scales, qs, d, dmin */
    Q3_K_BYTES = QK_K / 8 + QK_K / 4 + 12 + 2,        /* hmask, qs, scales, d */
    Q4_K_BYTES = 4 + 12 + QK_K / 2,                   /* d, dmin, scales[12], qs[128] */
    Q5_K_BYTES = 4 + 12 + QK_K / 8 + QK_K / 2,        /* d, dmin, scales[12], qh[32], qs[128] */
    Q6_K_BYTES = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, /* ql[128], qh[64], scales[16], d */
    Q8_K_BYTES = 4 + QK_K + QK_K / 16 * 2,            /* float d, qs, int16 bsums[16] */
};

/* Every GGML type id of ggml.h's enum; ids GGML removed stay NULL names (unknown). Sizes
 * of the types moed does not compute are from the same ggml-common.h structs. */
static const quant_traits_t quant_table[GGML_TYPE_COUNT_] = {
    [GGML_TYPE_F32] = {"f32", 1, 4, true},
    [GGML_TYPE_F16] = {"f16", 1, 2, true},
    [GGML_TYPE_Q4_0] = {"q4_0", QK, Q4_0_BYTES, true},
    [GGML_TYPE_Q4_1] = {"q4_1", QK, Q4_1_BYTES, true},
    [GGML_TYPE_Q5_0] = {"q5_0", QK, Q5_0_BYTES, true},
    [GGML_TYPE_Q5_1] = {"q5_1", QK, Q5_1_BYTES, true},
    [GGML_TYPE_Q8_0] = {"q8_0", QK, Q8_0_BYTES, true},
    [GGML_TYPE_Q8_1] = {"q8_1", QK, Q8_1_BYTES, false},
    [GGML_TYPE_Q2_K] = {"q2_K", QK_K, Q2_K_BYTES, false},
    [GGML_TYPE_Q3_K] = {"q3_K", QK_K, Q3_K_BYTES, false},
    [GGML_TYPE_Q4_K] = {"q4_K", QK_K, Q4_K_BYTES, true},
    [GGML_TYPE_Q5_K] = {"q5_K", QK_K, Q5_K_BYTES, true},
    [GGML_TYPE_Q6_K] = {"q6_K", QK_K, Q6_K_BYTES, true},
    [GGML_TYPE_Q8_K] = {"q8_K", QK_K, Q8_K_BYTES, false},
    [GGML_TYPE_IQ2_XXS] = {"iq2_xxs", QK_K, 2 + QK_K / 4, false},
    [GGML_TYPE_IQ2_XS] = {"iq2_xs", QK_K, 2 + QK_K / 4 + QK_K / 32, false},
    [GGML_TYPE_IQ3_XXS] = {"iq3_xxs", QK_K, 2 + 3 * QK_K / 8, false},
    [GGML_TYPE_IQ1_S] = {"iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16, false},
    [GGML_TYPE_IQ4_NL] = {"iq4_nl", QK, 2 + QK / 2, false},
    [GGML_TYPE_IQ3_S] = {"iq3_s", QK_K, 2 + 13 * (QK_K / 32) + QK_K / 64, false},
    [GGML_TYPE_IQ2_S] = {"iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16, false},
    [GGML_TYPE_IQ4_XS] = {"iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2, false},
    [GGML_TYPE_I8] = {"i8", 1, 1, false},
    [GGML_TYPE_I16] = {"i16", 1, 2, false},
    [GGML_TYPE_I32] = {"i32", 1, 4, false},
    [GGML_TYPE_I64] = {"i64", 1, 8, false},
    [GGML_TYPE_F64] = {"f64", 1, 8, false},
    [GGML_TYPE_IQ1_M] = {"iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false},
    [GGML_TYPE_BF16] = {"bf16", 1, 2, true},
    [GGML_TYPE_TQ1_0] = {"tq1_0", QK_K, 2 + QK_K / 64 + (QK_K - 4 * QK_K / 64) / 5, false},
    [GGML_TYPE_TQ2_0] = {"tq2_0", QK_K, 2 + QK_K / 4, false},
    [GGML_TYPE_MXFP4] = {"mxfp4", 32, 1 + 32 / 2, false},
    [GGML_TYPE_NVFP4] = {"nvfp4", 64, 64 / 16 + 64 / 2, false},
    [GGML_TYPE_Q1_0] = {"q1_0", 128, 2 + 128 / 8, false},
    [GGML_TYPE_Q2_0] = {"q2_0", 64, 2 + 64 / 4, false},
};

const quant_traits_t *quant_traits(uint32_t type)
{
    if (type >= GGML_TYPE_COUNT_ || !quant_table[type].name)
        return NULL;
    return &quant_table[type];
}

int quant_row_size(uint32_t type, uint64_t n, uint64_t *ret_bytes)
{
    const quant_traits_t *t = quant_traits(type);
    uint64_t bytes;

    if (!t || n % t->block_size != 0)
        return -EINVAL;
    if (__builtin_mul_overflow(n / t->block_size, (uint64_t)t->type_size, &bytes))
        return -EOVERFLOW;
    *ret_bytes = bytes;
    return 0;
}

int quant_type_from_name(const char *name, uint32_t *ret_type)
{
    if (!name)
        return -EINVAL;
    for (uint32_t i = 0; i < GGML_TYPE_COUNT_; i++) {
        if (quant_table[i].name && strcasecmp(quant_table[i].name, name) == 0) {
            *ret_type = i;
            return 0;
        }
    }
    return -EINVAL;
}

/* ---- scalar conversions ---------------------------------------------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static inline float half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t man = h & 0x3ff;

    if (exp == 0x1f) /* inf or NaN: keep the payload in the top mantissa bits */
        return bits_f32(sign | 0x7f800000 | man << 13);
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in float */
        const float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | (exp + 112) << 23 | man << 13); /* rebias 15 -> 127 */
}

static inline uint16_t float_to_half(float f)
{
    const uint32_t x = f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffff;

    if (ax > 0x7f800000) /* NaN */
        return sign | 0x7e00;
    if (ax >= 0x477ff000) /* >= 65520, the midpoint above 65504, rounds (to even) to inf */
        return sign | 0x7c00;
    if (ax >= 0x38800000) { /* normal half (>= 2^-14): rebias 127 -> 15, round 13 bits */
        const uint32_t m = ax - 0x38000000;
        /* Adding 0xfff plus the lowest kept bit rounds to nearest even; a mantissa carry
         * correctly bumps the exponent. */
        return sign | (uint16_t)((m + 0x0fff + ((m >> 13) & 1)) >> 13);
    }
    /* Subnormal half: the result counts units of 2^-24. ax = man * 2^(e - 150) with the
     * implicit bit, so the count is man >> (126 - e), rounded to nearest even. */
    const uint32_t e = ax >> 23;
    if (e < 102) /* below 2^-25: rounds to zero */
        return sign;
    const uint32_t man = (ax & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e; /* 14..24 */
    const uint32_t half = 1u << (shift - 1);
    const uint32_t rem = man & ((1u << shift) - 1);
    uint32_t q = man >> shift;
    if (rem > half || (rem == half && (q & 1)))
        q++; /* may reach 0x400, which is the smallest normal's encoding */
    return sign | (uint16_t)q;
}

static inline float bf16_to_float(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

static inline uint16_t float_to_bf16(float f)
{
    const uint32_t x = f32_bits(f);

    if ((x & 0x7fffffff) > 0x7f800000) /* NaN: truncate, force the quiet bit */
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float quant_f16_to_f32(uint16_t h)
{
    return half_to_float(h);
}

uint16_t quant_f32_to_f16(float f)
{
    return float_to_half(f);
}

float quant_bf16_to_f32(uint16_t h)
{
    return bf16_to_float(h);
}

uint16_t quant_f32_to_bf16(float f)
{
    return float_to_bf16(f);
}

/* ---- byte access and rounding helpers -------------------------------------------------- */

static inline uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)v);
    put_u16(p + 2, (uint16_t)(v >> 16));
}

static inline float get_half(const uint8_t *p)
{
    return half_to_float(get_u16(p));
}

/* v clamped to lo..hi, NaN to lo. Written as comparisons rather than fminf/fmaxf, which
 * GCC leaves as libm calls unless -ffinite-math-only; these compile to minss/maxss. */
static inline float clamp_float(float v, float lo, float hi)
{
    v = v >= lo ? v : lo; /* false for NaN */
    return v <= hi ? v : hi;
}

/* Round half to even, as GGML's nearest_int: adding 1.5 * 2^23 leaves no fraction bits, so
 * the FPU's default rounding does the work. Exact for |f| <= 4194303 (GGML asserts that);
 * any other float, NaN included, still yields some int in -2^22..2^22 without undefined
 * behaviour, and every caller clamps the result to its code range. */
static inline int round_even(float f)
{
    return (int)(f32_bits(f + 12582912.f) & 0x007fffff) - 0x00400000;
}

/* (int)v clamped to 0..hi, for GGML's "(int8_t)(v + 0.5f)" style quantizers whose v is
 * never below zero for finite input; truncation of v >= 0 is floor. */
static inline int trunc_clamp(float v, int hi)
{
    return (int)clamp_float(v, 0.f, (float)hi);
}

static inline int clamp_int(int v, int lo, int hi)
{
    v = v < lo ? lo : v; /* two plain selects, which compilers turn into min/max */
    return v > hi ? hi : v;
}

/* ---- simple formats: blocks of 32 ------------------------------------------------------ */

/* Q4_0 [d f16][qs 16]: element j < 16 is the low nibble of qs[j], element j + 16 its high
 * nibble; x = (q - 8) * d. */
static void dequant_q4_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q4_0_BYTES, y += QK) {
        const float d = get_half(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (float)((qs[j] & 0x0f) - 8) * d;
            y[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* Q4_1 [d f16][m f16][qs 16]: nibbles as Q4_0; x = q * d + m. */
static void dequant_q4_1(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q4_1_BYTES, y += QK) {
        const float d = get_half(b), m = get_half(b + 2);
        const uint8_t *qs = b + 4;
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (float)(qs[j] & 0x0f) * d + m;
            y[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Q5_0 [d f16][qh u32 LE][qs 16]: nibbles as Q4_0, bit j of qh is bit 4 of element j;
 * x = (q - 16) * d. */
static void dequant_q5_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q5_0_BYTES, y += QK) {
        const float d = get_half(b);
        const uint32_t qh = get_u32(b + 2);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = (qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            const int q1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)(q0 - 16) * d;
            y[j + QK / 2] = (float)(q1 - 16) * d;
        }
    }
}

/* Q5_1 [d f16][m f16][qh u32 LE][qs 16]: bits as Q5_0; x = q * d + m. */
static void dequant_q5_1(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q5_1_BYTES, y += QK) {
        const float d = get_half(b), m = get_half(b + 2);
        const uint32_t qh = get_u32(b + 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = (qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            const int q1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)q0 * d + m;
            y[j + QK / 2] = (float)q1 * d + m;
        }
    }
}

/* Q8_0 [d f16][qs int8 32]: x = q * d. */
static void dequant_q8_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q8_0_BYTES, y += QK) {
        const float d = get_half(b);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* The 4/5-bit "symmetric" quantizers scale by the signed value of largest magnitude, so
 * that value lands exactly on the most negative code (-8 or -16). */
static float block_signed_absmax(const float *x)
{
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void block_min_max(const float *x, float *ret_min, float *ret_max)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    *ret_min = min;
    *ret_max = max;
}

static void quant_q4_0(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, b += Q4_0_BYTES) {
        const float d = block_signed_absmax(x) / -8;
        const float id = d != 0.f ? 1.0f / d : 0.f;
        put_u16(b, float_to_half(d));
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = trunc_clamp(x[j] * id + 8.5f, 15);
            const int q1 = trunc_clamp(x[j + QK / 2] * id + 8.5f, 15);
            b[2 + j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void quant_q4_1(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, b += Q4_1_BYTES) {
        float min, max;
        block_min_max(x, &min, &max);
        const float d = (max - min) / 15;
        const float id = d != 0.f ? 1.0f / d : 0.f;
        put_u16(b, float_to_half(d));
        put_u16(b + 2, float_to_half(min));
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = trunc_clamp((x[j] - min) * id + 0.5f, 15);
            const int q1 = trunc_clamp((x[j + QK / 2] - min) * id + 0.5f, 15);
            b[4 + j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void quant_q5_0(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, b += Q5_0_BYTES) {
        const float d = block_signed_absmax(x) / -16;
        const float id = d != 0.f ? 1.0f / d : 0.f;
        uint32_t qh = 0;
        put_u16(b, float_to_half(d));
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = trunc_clamp(x[j] * id + 16.5f, 31);
            const int q1 = trunc_clamp(x[j + QK / 2] * id + 16.5f, 31);
            b[6 + j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        put_u32(b + 2, qh);
    }
}

static void quant_q5_1(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, b += Q5_1_BYTES) {
        float min, max;
        block_min_max(x, &min, &max);
        const float d = (max - min) / 31;
        const float id = d != 0.f ? 1.0f / d : 0.f;
        uint32_t qh = 0;
        put_u16(b, float_to_half(d));
        put_u16(b + 2, float_to_half(min));
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = trunc_clamp((x[j] - min) * id + 0.5f, 31);
            const int q1 = trunc_clamp((x[j + QK / 2] - min) * id + 0.5f, 31);
            b[8 + j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        put_u32(b + 4, qh);
    }
}

static void quant_q8_0(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, b += Q8_0_BYTES) {
        float amax = 0.f;
        for (int j = 0; j < QK; j++)
            amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127;
        const float id = d != 0.f ? 1.0f / d : 0.f;
        put_u16(b, float_to_half(d));
        /* roundf: halves away from zero, as GGML; the clamp only matters for non-finite x */
        for (int j = 0; j < QK; j++)
            b[2 + j] = (uint8_t)(int8_t)roundf(clamp_float(x[j] * id, -127.f, 127.f));
    }
}

/* ---- K-quants: super-blocks of 256 ----------------------------------------------------- */

/* Q4_K and Q5_K keep 8 sub-blocks of 32, each with a 6-bit scale code sc and min code m,
 * packed into 12 bytes (GGML's get_scale_min_k4):
 *   j < 4:  sc[j] = s[j] & 63,                         m[j] = s[j + 4] & 63
 *   j >= 4: sc[j] = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4,
 *           m[j]  = (s[j + 4] >> 4) | (s[j] >> 6) << 4
 * i.e. bytes 0..3 hold sc 0..3 and the top bits of sc 4..7, bytes 4..7 m 0..3 and the top
 * bits of m 4..7, bytes 8..11 the low nibbles of sc 4..7 (low) and m 4..7 (high). */
static void kq_unpack_scales(const uint8_t *s, uint8_t *sc, uint8_t *m)
{
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4);
        m[j] = (uint8_t)((s[j + 4] >> 4) | (s[j] >> 6) << 4);
    }
}

static void kq_pack_scales(const uint8_t *sc, const uint8_t *m, uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | (m[j + 4] & 0x0f) << 4);
    }
}

/* Q4_K [d f16][dmin f16][scales 12][qs 128]: 64 elements per 32 bytes of qs; element
 * 64c + l (l < 32) is the low nibble of qs[32c + l] (sub-block 2c), element 64c + 32 + l
 * its high nibble (sub-block 2c + 1); x = d * sc * q - dmin * m. */
static void dequant_q4_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q4_K_BYTES) {
        const float d = get_half(b), dmin = get_half(b + 2);
        const uint8_t *q = b + 16;
        uint8_t sc[8], m[8];
        kq_unpack_scales(b + 4, sc, m);
        for (int c = 0; c < 4; c++, q += 32) {
            const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
            const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* Q5_K [d f16][dmin f16][scales 12][qh 32][qs 128]: low nibbles as Q4_K; bit 2c of qh[l]
 * is bit 4 of element 64c + l, bit 2c + 1 that of element 64c + 32 + l. */
static void dequant_q5_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q5_K_BYTES) {
        const float d = get_half(b), dmin = get_half(b + 2);
        const uint8_t *qh = b + 16, *q = b + 48;
        uint8_t sc[8], m[8];
        kq_unpack_scales(b + 4, sc, m);
        for (int c = 0; c < 4; c++, q += 32) {
            const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
            const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((q[l] & 0x0f) | ((qh[l] >> (2 * c)) & 1) << 4) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((q[l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4) - m2;
        }
    }
}

/* Q6_K [ql 128][qh 64][scales int8 16][d f16]: two halves of 128 elements, each with 64
 * bytes of ql and 32 of qh. In half h, for l < 32: element 128h + l takes the low nibble
 * of ql[64h + l] and qh[32h + l] bits 0-1, element +32 the low nibble of ql[64h + 32 + l]
 * and bits 2-3, element +64 the high nibble of ql[64h + l] and bits 4-5, element +96 the
 * high nibble of ql[64h + 32 + l] and bits 6-7. Sub-block of 16 e has scale scales[e / 16];
 * x = d * scale * (q - 32). */
static void dequant_q6_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += Q6_K_BYTES) {
        const float d = get_half(b + 208);
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* Four float or int32 lanes, one per sub-block (GCC vector extensions, 16 bytes: one SSE
 * or NEON register, so no ABI questions for the inline helpers). Lane-wise arithmetic is
 * the same IEEE single-precision arithmetic as scalar code. */
#define KQ_LANES 4
typedef float kq_vf __attribute__((vector_size(KQ_LANES * sizeof(float))));
typedef int32_t kq_vi __attribute__((vector_size(KQ_LANES * sizeof(int32_t))));

static inline kq_vf kq_select(kq_vi mask, kq_vf a, kq_vf b) /* mask lanes are 0 or -1 */
{
    return (kq_vf)(((kq_vi)a & mask) | ((kq_vi)b & ~mask));
}

/* round_even and clamp to lo..hi in every lane */
static inline kq_vi kq_round_clamp(kq_vf v, kq_vi lo, kq_vi hi)
{
    kq_vi l = ((kq_vi)(v + 12582912.f) & 0x007fffff) - 0x00400000;
    const kq_vi under = l < lo;
    l = (l & ~under) | (lo & under);
    const kq_vi over = l > hi;
    return (l & ~over) | (hi & over);
}

/* Fit x[i] ~ scale * L[i] - neg_min with L in 0..nmax and neg_min >= 0 for each of 4
 * sub-blocks of 32 (one per lane), minimizing the weighted squared error: GGML's
 * make_qkx2_quants. Start from the min/max grid, then try nstep + 1
 * stretched grids (nmax + rmin + rdelta * is levels over the range) and keep the
 * least-squares (scale, min) of whichever assignment gives the smallest error. Like GGML,
 * a better fit also moves the range start used by later grids.
 * The lanes run side by side only for speed (the search is ~90 % of Q4_K/Q5_K quantizing):
 * each lane performs exactly the operations of a one-sub-block fit in the same order (its
 * sums run over elements in order), so the result is that of fitting the sub-blocks one
 * at a time. xt[i] and wt[i] hold element i of every sub-block; codes go to Lt likewise. */
static void kq_fit_affine4(const kq_vf *xt, const kq_vf *wt, int nmax, float rmin, float rdelta,
                           int nstep, kq_vi *Lt, float *ret_scale, float *ret_neg_min)
{
    const kq_vi vnmax = (kq_vi){0} + nmax;
    kq_vf min = xt[0], max = xt[0], sum_w = wt[0], sum_x = wt[0] * xt[0];
    kq_vf Lauxf[32];
    kq_vi Laux[32];

    for (int i = 1; i < 32; i++) {
        min = kq_select(xt[i] < min, xt[i], min);
        max = kq_select(xt[i] > max, xt[i], max);
        sum_w += wt[i];
        sum_x += wt[i] * xt[i];
    }
    min = kq_select(min > 0, (kq_vf){0}, min); /* the offset only pulls down */
    /* A flat lane (all values equal and <= 0) keeps L = 0, scale 0 and min = that value,
     * as GGML's early return; iscale 0 sends every code to 0 without dividing by its zero
     * range, and ok below keeps the search from touching it. */
    const kq_vi flat = max == min;
    kq_vf range = kq_select(flat, (kq_vf){0} + 1.f, max - min);
    kq_vf iscale = kq_select(flat, (kq_vf){0}, (float)nmax / range);
    kq_vf scale = kq_select(flat, (kq_vf){0}, 1 / iscale);
    kq_vf best_error = {0};
    for (int i = 0; i < 32; i++) {
        Lt[i] = kq_round_clamp(iscale * (xt[i] - min), (kq_vi){0}, vnmax);
        const kq_vf diff = scale * __builtin_convertvector(Lt[i], kq_vf) + min - xt[i];
        best_error += wt[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        kq_vf sum_l = {0}, sum_l2 = {0}, sum_xl = {0}, cur_error = {0};

        range = kq_select(flat, (kq_vf){0} + 1.f, max - min);
        iscale = kq_select(flat, (kq_vf){0}, (rmin + rdelta * (float)is + (float)nmax) / range);
        for (int i = 0; i < 32; i++) {
            Laux[i] = kq_round_clamp(iscale * (xt[i] - min), (kq_vi){0}, vnmax);
            const kq_vf l = Lauxf[i] = __builtin_convertvector(Laux[i], kq_vf);
            sum_l += wt[i] * l;
            sum_l2 += wt[i] * l * l;
            sum_xl += wt[i] * l * xt[i];
        }
        const kq_vf D = sum_w * sum_l2 - sum_l * sum_l;
        const kq_vi ok = (D > 0) & ~flat;
        const kq_vf Ds = kq_select(ok, D, (kq_vf){0} + 1.f); /* others are discarded */
        kq_vf this_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds;
        kq_vf this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds;
        const kq_vi pos = this_min > 0;
        this_min = kq_select(pos, (kq_vf){0}, this_min);
        this_scale = kq_select(pos, sum_xl / kq_select(sum_l2 > 0, sum_l2, Ds), this_scale);
        for (int i = 0; i < 32; i++) {
            const kq_vf diff = this_scale * Lauxf[i] + this_min - xt[i];
            cur_error += wt[i] * (diff * diff);
        }
        const kq_vi better = ok & (cur_error < best_error);
        best_error = kq_select(better, cur_error, best_error);
        scale = kq_select(better, this_scale, scale);
        min = kq_select(better, this_min, min);
        for (int i = 0; i < 32; i++)
            Lt[i] = (Laux[i] & better) | (Lt[i] & ~better);
    }
    for (int j = 0; j < KQ_LANES; j++) {
        ret_scale[j] = scale[j];
        ret_neg_min[j] = -min[j];
    }
}

/* The Q4_K/Q5_K quantizer (GGML's quantize_row_q4_K_ref / q5_K_ref): fit each sub-block
 * of 32 with weights |x| + rms, quantize the 8 scales and 8 mins to 6 bits against their
 * maxima, then requantize every element against the scale and min it will decode with.
 * Writes d, dmin and the 12 scale bytes to b and the codes 0..nmax to L[256]. */
static void kq_quant_affine_superblock(const float *x, uint8_t *b, int nmax, float rmin, int nstep,
                                       uint8_t *L)
{
    kq_vf xt[2][32], wt[2][32]; /* [half][element], lane = sub-block within the half */
    kq_vi Lt[2][32];
    float scales[8], mins[8];
    float max_scale = 0, max_min = 0;
    uint8_t sc[8], m[8];

    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) {
            xt[j / 4][l][j % 4] = xs[l];
            wt[j / 4][l][j % 4] = av_x + fabsf(xs[l]);
        }
    }
    kq_fit_affine4(xt[0], wt[0], nmax, rmin, 0.1f, nstep, Lt[0], scales, mins);
    kq_fit_affine4(xt[1], wt[1], nmax, rmin, 0.1f, nstep, Lt[1], scales + 4, mins + 4);
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)Lt[j / 4][l][j % 4];
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)clamp_int(round_even(inv_scale * scales[j]), 0, 63);
        m[j] = (uint8_t)clamp_int(round_even(inv_min * mins[j]), 0, 63);
    }
    const uint16_t dh = float_to_half(max_scale / 63.f);
    const uint16_t dminh = float_to_half(max_min / 63.f);
    put_u16(b, dh);
    put_u16(b + 2, dminh);
    kq_pack_scales(sc, m, b + 4);

    for (int j = 0; j < 8; j++) {
        const float d = half_to_float(dh) * sc[j];
        if (d == 0.f) /* every code decodes alike; keep the fit's codes */
            continue;
        const float dm = half_to_float(dminh) * m[j];
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clamp_int(round_even((x[32 * j + l] + dm) / d), 0, nmax);
    }
}

static void quant_q4_k(const float *x, uint8_t *b, size_t nb)
{
    uint8_t L[QK_K];

    for (size_t i = 0; i < nb; i++, x += QK_K, b += Q4_K_BYTES) {
        kq_quant_affine_superblock(x, b, 15, -1.f, 20, L);
        uint8_t *q = b + 16;
        for (int c = 0; c < 4; c++, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

static void quant_q5_k(const float *x, uint8_t *b, size_t nb)
{
    uint8_t L[QK_K];

    for (size_t i = 0; i < nb; i++, x += QK_K, b += Q5_K_BYTES) {
        kq_quant_affine_superblock(x, b, 31, -0.5f, 15, L);
        uint8_t *qh = b + 16, *q = b + 48;
        memset(qh, 0, 32);
        for (int c = 0; c < 4; c++, q += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
                q[l] = (uint8_t)((l1 & 0x0f) | (l2 & 0x0f) << 4);
                qh[l] |= (uint8_t)((l1 >> 4) << (2 * c) | (l2 >> 4) << (2 * c + 1));
            }
        }
    }
}

/* Fit x[i] ~ scale * (L[i] - nmax) with L in 0..2*nmax-1, weights x^2, for 4 groups of
 * 16 (one per lane): GGML's make_qx_quants with rmse_type 1. The value of largest
 * magnitude anchors code -nmax; 18 neighbouring grids are tried and the one with the best
 * weighted least-squares fit kept. The scale is signed (negative when that value is
 * positive). As in kq_fit_affine4, each lane does exactly a one-group fit's arithmetic. */
static void kq_fit_symmetric4(const kq_vf *xt, int nmax, kq_vi *Lt, float *ret_scale)
{
    const kq_vi lo = (kq_vi){0} - nmax, hi = (kq_vi){0} + nmax - 1;
    const kq_vf fzero = {0}, fone = fzero + 1.f;
    kq_vf max = fzero, amax = fzero;
    kq_vf w[16];

    for (int i = 0; i < 16; i++) {
        const kq_vf ax = (kq_vf)((kq_vi)xt[i] & 0x7fffffff); /* fabsf */
        const kq_vi bigger = ax > amax;
        amax = kq_select(bigger, ax, amax);
        max = kq_select(bigger, xt[i], max);
        w[i] = xt[i] * xt[i];
    }
    /* GGML's GROUP_MAX_EPS: an all-zero group gets L = 0 (code -nmax) and scale 0 */
    const kq_vi zero = amax < 1e-15f;
    max = kq_select(zero, fone, max);
    kq_vf iscale = -(float)nmax / max;
    kq_vf sumlx = fzero, suml2 = fzero;
    for (int i = 0; i < 16; i++) {
        const kq_vi l = kq_round_clamp(iscale * xt[i], lo, hi);
        const kq_vf lf = __builtin_convertvector(l, kq_vf);
        Lt[i] = l + nmax;
        sumlx += w[i] * xt[i] * lf;
        suml2 += w[i] * lf * lf;
    }
    kq_vf scale = kq_select(suml2 != 0, sumlx / kq_select(suml2 != 0, suml2, fone), fzero);
    kq_vf best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        kq_vi Laux[16];
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = fzero;
        for (int i = 0; i < 16; i++) {
            const kq_vi l = kq_round_clamp(iscale * xt[i], lo, hi);
            const kq_vf lf = __builtin_convertvector(l, kq_vf);
            Laux[i] = l + nmax;
            sumlx += w[i] * xt[i] * lf;
            suml2 += w[i] * lf * lf;
        }
        const kq_vi better = (suml2 > 0) & (sumlx * sumlx > best * suml2) & ~zero;
        scale = kq_select(better, sumlx / kq_select(better, suml2, fone), scale);
        best = kq_select(better, scale * sumlx, best);
        for (int i = 0; i < 16; i++)
            Lt[i] = (Laux[i] & better) | (Lt[i] & ~better);
    }
    for (int i = 0; i < 16; i++)
        Lt[i] &= ~zero;
    scale = kq_select(zero, fzero, scale);
    for (int j = 0; j < KQ_LANES; j++)
        ret_scale[j] = scale[j];
}

/* GGML's quantize_row_q6_K_ref: fit 16 sub-blocks of 16, quantize their signed scales to
 * int8 against the largest, requantize each element against its decoded scale. */
static void quant_q6_k(const float *x, uint8_t *b, size_t nb)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    kq_vf xt[16];
    kq_vi Lt[16];

    for (size_t i = 0; i < nb; i++, x += QK_K, b += Q6_K_BYTES) {
        float max_scale = 0, max_abs_scale = 0;
        for (int g = 0; g < 4; g++) { /* groups 4g .. 4g + 3, one per lane */
            for (int l = 0; l < 16; l++)
                for (int j = 0; j < KQ_LANES; j++)
                    xt[l][j] = x[16 * (4 * g + j) + l];
            kq_fit_symmetric4(xt, 32, Lt, scales + 4 * g);
            for (int l = 0; l < 16; l++)
                for (int j = 0; j < KQ_LANES; j++)
                    L[16 * (4 * g + j) + l] = (int8_t)Lt[l][j];
        }
        for (int ib = 0; ib < QK_K / 16; ib++) {
            if (fabsf(scales[ib]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < 1e-15f) { /* all zero: d = 0, every byte 0 */
            memset(b, 0, Q6_K_BYTES);
            continue;
        }
        const float iscale = -128.f / max_scale;
        const uint16_t dh = float_to_half(1 / iscale);
        int8_t *sc = (int8_t *)(b + 192);
        put_u16(b + 208, dh);
        for (int ib = 0; ib < QK_K / 16; ib++)
            sc[ib] = (int8_t)clamp_int(round_even(iscale * scales[ib]), -128, 127);
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = half_to_float(dh) * (float)sc[j];
            if (d == 0.f)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(clamp_int(round_even(x[16 * j + l] / d), -32, 31) + 32);
        }
        uint8_t *ql = b, *qh = b + 128;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
            const int8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int l1 = Lh[l], l2 = Lh[l + 32], l3 = Lh[l + 64], l4 = Lh[l + 96];
                ql[l] = (uint8_t)((l1 & 0x0f) | (l3 & 0x0f) << 4);
                ql[l + 32] = (uint8_t)((l2 & 0x0f) | (l4 & 0x0f) << 4);
                qh[l] = (uint8_t)(l1 >> 4 | (l2 >> 4) << 2 | (l3 >> 4) << 4 | (l4 >> 4) << 6);
            }
        }
    }
}

/* ---- dispatch -------------------------------------------------------------------------- */

int quant_dequantize(uint32_t type, const void *src, float *dst, size_t n)
{
    const quant_traits_t *t = quant_traits(type);
    const uint8_t *b = src;

    if (!t || !t->can_compute || n % t->block_size != 0)
        return -EINVAL;
    const size_t nb = n / t->block_size;
    switch (type) {
    case GGML_TYPE_F32:
        if (n)
            memcpy(dst, src, n * sizeof(float));
        break;
    case GGML_TYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = half_to_float(get_u16(b + 2 * i));
        break;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = bf16_to_float(get_u16(b + 2 * i));
        break;
    case GGML_TYPE_Q4_0:
        dequant_q4_0(b, dst, nb);
        break;
    case GGML_TYPE_Q4_1:
        dequant_q4_1(b, dst, nb);
        break;
    case GGML_TYPE_Q5_0:
        dequant_q5_0(b, dst, nb);
        break;
    case GGML_TYPE_Q5_1:
        dequant_q5_1(b, dst, nb);
        break;
    case GGML_TYPE_Q8_0:
        dequant_q8_0(b, dst, nb);
        break;
    case GGML_TYPE_Q4_K:
        dequant_q4_k(b, dst, nb);
        break;
    case GGML_TYPE_Q5_K:
        dequant_q5_k(b, dst, nb);
        break;
    case GGML_TYPE_Q6_K:
        dequant_q6_k(b, dst, nb);
        break;
    default:
        return -EINVAL;
    }
    return 0;
}

int quant_quantize(uint32_t type, const float *src, void *dst, size_t n)
{
    const quant_traits_t *t = quant_traits(type);
    uint8_t *b = dst;

    if (!t || !t->can_compute || n % t->block_size != 0)
        return -EINVAL;
    const size_t nb = n / t->block_size;
    switch (type) {
    case GGML_TYPE_F32:
        if (n)
            memcpy(dst, src, n * sizeof(float));
        break;
    case GGML_TYPE_F16:
        for (size_t i = 0; i < n; i++)
            put_u16(b + 2 * i, float_to_half(src[i]));
        break;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            put_u16(b + 2 * i, float_to_bf16(src[i]));
        break;
    case GGML_TYPE_Q4_0:
        quant_q4_0(src, b, nb);
        break;
    case GGML_TYPE_Q4_1:
        quant_q4_1(src, b, nb);
        break;
    case GGML_TYPE_Q5_0:
        quant_q5_0(src, b, nb);
        break;
    case GGML_TYPE_Q5_1:
        quant_q5_1(src, b, nb);
        break;
    case GGML_TYPE_Q8_0:
        quant_q8_0(src, b, nb);
        break;
    case GGML_TYPE_Q4_K:
        quant_q4_k(src, b, nb);
        break;
    case GGML_TYPE_Q5_K:
        quant_q5_k(src, b, nb);
        break;
    case GGML_TYPE_Q6_K:
        quant_q6_k(src, b, nb);
        break;
    default:
        return -EINVAL;
    }
    return 0;
}
