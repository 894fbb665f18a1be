/* CPU reference operations: plain C, float32 throughout, written for clarity, not speed.
 * Every shader and the engine are compared against these (and ref_forward.c, built from
 * them). Shapes follow GGML: a weight matrix W of type t has `rows` rows of `cols`
 * elements, row r at byte offset r * quant_row_size(t, cols). */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* y[r] = sum_c dequant(W)[r][c] * x[c], r < rows. W is rows x cols of ggml type t. */
void ref_matvec(uint32_t t, const void *W, size_t rows, size_t cols, const float *x, float *y);
/* Y[n][r] = sum_c W[r][c] * X[n][c] for n < n_tok (X is n_tok x cols, Y is n_tok x rows). */
void ref_matmul(uint32_t t, const void *W, size_t rows, size_t cols, const float *X, size_t n_tok,
                float *Y);
/* Row r of W dequantized into out[cols] (embedding gather). */
void ref_get_row(uint32_t t, const void *W, size_t cols, size_t r, float *out);
/* out = x / sqrt(mean(x^2) + eps) * w (w may be NULL: no weight). In place allowed. */
void ref_rmsnorm(const float *x, const float *w, size_t n, float eps, float *out);
/* RoPE on one head vector of head_dim elements at position pos, rotating the first n_rot
 * dims. neox=0: pairs (2i, 2i+1); neox=1: pairs (i, i + n_rot/2). theta_i = pos * freq_scale
 * * base^(-2i/n_rot). In place. */
void ref_rope(float *x, size_t head_dim, size_t n_rot, int neox, int32_t pos, float freq_base,
              float freq_scale);
/* In-place numerically stable softmax of n values. */
void ref_softmax(float *x, size_t n);
/* out[i] = silu(gate[i]) * up[i]. */
void ref_swiglu(const float *gate, const float *up, size_t n, float *out);
static inline float ref_sigmoid(float x);
/* Attention of one query position over n_kv cached positions with GQA: q is
 * [n_head][head_dim_k], K is [n_kv][n_head_kv][head_dim_k], V is [n_kv][n_head_kv][head_dim_v]
 * (float; the engine's F16 KV cache is compared with a tolerance), out is
 * [n_head][head_dim_v]; scale is usually 1/sqrt(head_dim_k). Query head h uses KV head
 * h / (n_head / n_head_kv). */
void ref_attention(const float *q, const float *K, const float *V, size_t n_kv, size_t n_head,
                   size_t n_head_kv, size_t head_dim_k, size_t head_dim_v, float scale, float *out);
/* MoE routing of one token: logits[n_expert] -> probabilities (softmax, or sigmoid when
 * gating_sigmoid) -> the k largest (ties: lower id first) -> weights, renormalized to sum 1
 * when norm_topk, then multiplied by scale. ids[k], weights[k] in descending order. */
void ref_route(const float *logits, size_t n_expert, size_t k, int gating_sigmoid, int norm_topk,
               float scale, int32_t *ids, float *weights);
/* Normalized mean squared error of got against ref: sum (got - ref)^2 / sum ref^2 (the
 * measure of GGML's test-backend-ops; 0 when equal, 1 when got is all zeros), summed in
 * double. ref all zeros: 0 if got is too, else INFINITY. NaN anywhere gives NaN. */
double ref_nmse(const float *ref, const float *got, size_t n);

static inline float ref_sigmoid(float x)
{
    return 1.0f / (1.0f + __builtin_expf(-x));
}
