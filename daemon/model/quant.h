/* GGML tensor types: block geometry, CPU dequantize and quantize, byte-exact with GGML's
 * layouts (ggml-common.h in llama.cpp is the source of the block structs). The reference,
 * mkmodel and the tests use these; the shaders decode the same bytes on the GPU.
 * Thread-safe, no allocation, no logging. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values are GGML's type ids as stored in GGUF tensor infos. */
enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    /* 31..33 (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) were removed from GGUF by GGML. */
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    /* 36..38 (IQ4_NL_4_4, _4_8, _8_8) were removed from GGUF by GGML. */
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_NVFP4 = 40,
    GGML_TYPE_Q1_0 = 41,
    GGML_TYPE_Q2_0 = 42,
    GGML_TYPE_COUNT_ = 43, /* upper bound of the table, not a type */
};

typedef struct quant_traits {
    const char *name;    /* "q4_K", as GGML spells it */
    uint32_t block_size; /* elements per block (1 for F32/F16/BF16) */
    uint32_t type_size;  /* bytes per block */
    bool can_compute;    /* moed can dequantize it (CPU and shaders) */
} quant_traits_t;

/* Traits of a GGML type id, or NULL when the id is not a GGML type at all (gaps such as 4, 5
 * and 31..33 included). Types GGML knows but moed cannot compute have can_compute = false
 * (GGUF reading still accepts and sizes them; model loading refuses them). can_compute is
 * true for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K. The pointer
 * is to static storage. */
const quant_traits_t *quant_traits(uint32_t type);

/* Bytes of a row of n elements: 0 on success, -EINVAL for an unknown type or n not a
 * multiple of the block size, -EOVERFLOW if it does not fit in 64 bits. Works for every
 * type quant_traits knows, computable or not. */
int quant_row_size(uint32_t type, uint64_t n, uint64_t *ret_bytes);

/* Dequantize n elements (a multiple of the block size) from src (quant_row_size bytes, no
 * alignment needed) into dst, with the arithmetic of GGML's dequantize_row_* (same
 * operations in the same order). Returns 0, or -EINVAL for a type that cannot be
 * computed or n not a multiple of the block size. Any bytes are valid input. */
int quant_dequantize(uint32_t type, const void *src, float *dst, size_t n);

/* Quantize n elements (a multiple of the block size) into dst (quant_row_size bytes).
 * Deterministic: the same input gives the same bytes on every run, with or without
 * threads; across builds too, unless a compiler fuses multiply-adds (FMA targets with
 * -ffp-contract=fast), which can move a K-quant code by one step.
 * Returns 0, or -EINVAL for a type that cannot be computed or n not a multiple of the
 * block size.
 * - F16, BF16: round to nearest even (below).
 * - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: GGML's quantize_row_*_ref, same rounding (Q8_0 rounds
 *   halves away from zero, the 4/5-bit ones add 0.5 and truncate, i.e. halves go up).
 * - Q4_K, Q5_K, Q6_K: the algorithm of GGML's quantize_row_{q4,q5,q6}_K_ref (weighted
 *   scale/min search of make_qkx2_quants, make_qx_quants for Q6_K, round half to even),
 *   meant to give GGML's bytes; not checked against GGML binaries (none on the build
 *   machine). Known deviation: scale codes are clamped to 0..63 where GGML wraps a
 *   negative code through uint8_t (unreachable with finite input). Speed on one core of
 *   the build machine: ~40 M elements/s for Q4_K/Q5_K, ~50 M/s for Q6_K, 200-300 M/s
 *   for the simple formats; callers with gigabytes to write should split rows over
 *   threads (the functions share no state).
 * Input should be finite; NaN or infinity gives defined but meaningless bytes (GGML
 * asserts or invokes undefined behaviour there). */
int quant_quantize(uint32_t type, const float *src, void *dst, size_t n);

/* Half and bfloat16 conversions, shared with the tests.
 * f32 -> f16: round to nearest even, subnormal halves produced, overflow (>= 65520) goes
 * to infinity, any NaN becomes the quiet NaN 0x7e00 with its sign (as GGML's portable
 * fp32_to_fp16).
 * f32 -> bf16: GGML's ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits
 * (so FLT_MAX rounds to infinity), subnormals kept, NaN truncated and forced quiet.
 * f16/bf16 -> f32 are exact (NaN payloads kept). */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/* Parse a type name as quant_traits spells it ("q4_K", "f16", "iq4_xs"...),
 * case-insensitive ("Q4_K", "q4_k"). -EINVAL if unknown or NULL. */
int quant_type_from_name(const char *name, uint32_t *ret_type);
