/* Shared by the test_gpu_*.c files: the context and cmd of the run, random inputs, upload
 * and readback, the normalized error, and the validation check every test ends with. */
#pragma once
#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "gpu/vkc.h"

extern vkc_ctx_t *ctx;
extern vkc_cmd_t *cmd;

float frand(void);
void fill(float *v, size_t n, float scale);
/* Fails the current test if the validation layer said anything since the last call. */
void no_validation_messages(void);
/* A device buffer of n bytes holding data (uninitialised when data is NULL). */
vkc_buffer_t *buf_with(const void *data, size_t n);
void read_back(const vkc_buffer_t *b, void *dst, size_t n);
/* max |got - want| / max(1, max |want|); NaN counts as infinite. */
double norm_err(const float *got, const float *want, size_t n);
void begin(void);
/* Submit, wait, and check that validation stayed silent. */
void submit(void);

void add_context_tests(Suite *s);
void add_matvec_tests(Suite *s);
void add_ops_tests(Suite *s);
/* Random rows x cols weights of GGML type t (quantized from uniform [-1, 1)); malloc'd. */
uint8_t *random_weights(uint32_t t, uint32_t rows, uint32_t cols, size_t *ret_size);
