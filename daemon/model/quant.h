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
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT_ = 40, /* upper bound of the table, not a type */
};

typedef struct quant_traits {
    const char *name;    /* "q4_K", as GGML spells it */
    uint32_t block_size; /* elements per block (1 for F32/F16/BF16) */
    uint32_t type_size;  /* bytes per block */
    bool can_compute;    /* moed can dequantize it (CPU and shaders) */
} quant_traits_t;

/* Traits of a GGML type id, or NULL when the id is not a GGML type at all. Types GGML
 * knows but moed cannot compute have can_compute = false (GGUF reading still accepts them;
 * model loading refuses them). */
const quant_traits_t *quant_traits(uint32_t type);

/* Bytes of a row of n elements: 0 on success, -EINVAL for an unknown type or n not a
 * multiple of the block size, -EOVERFLOW if it does not fit in 64 bits. */
int quant_row_size(uint32_t type, uint64_t n, uint64_t *ret_bytes);

/* Dequantize n elements (a multiple of the block size) from src into dst. Returns 0 or
 * -EINVAL for a type that cannot be computed. */
int quant_dequantize(uint32_t type, const void *src, float *dst, size_t n);

/* Quantize n elements (a multiple of the block size) into dst (quant_row_size bytes),
 * rounding as GGML's reference quantizers do (quantize_row_*_ref). Returns 0 or -EINVAL. */
int quant_quantize(uint32_t type, const float *src, void *dst, size_t n);

/* Half and bfloat16 conversions (round to nearest even), shared with the tests. */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/* Parse a type name ("q4_K", "Q4_K", "f16"...), case-insensitive. -EINVAL if unknown. */
int quant_type_from_name(const char *name, uint32_t *ret_type);
