/* The CPU reference operations (ref_ops.h): each transformer op in plain C with float32
 * arithmetic, written to be read next to the math and next to GGML's CPU backend, which
 * defines the semantics moed must match. The shaders and the engine are tested against
 * these functions, so clarity beats speed: no SIMD, no threads, and sums run in index
 * order.
 *
 * Invariants: no allocation (block-sized stack buffers only), no logging, no global
 * state; a weight type moed cannot dequantize (model loading refuses those, so it is a
 * programming error here) turns the output into NaN rather than aborting. */
#include "ref_ops.h"

#include <math.h>
#include <string.h>

#include "model/quant.h"

/* Elements dequantized at a time: a multiple of every block size (1, 32, 256). */
#define REF_CHUNK 256

/* Bytes of `n` elements of type t (n a multiple of its block size), 0 when unknown. */
static size_t type_bytes(uint32_t t, size_t n)
{
    uint64_t bytes;

    if (quant_row_size(t, n, &bytes) < 0)
        return 0;
    return (size_t)bytes;
}

static void fill_nan(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = NAN;
}

/* dot(dequant(row), x) over cols elements, dequantizing REF_CHUNK elements at a time.
 * Returns NAN when the type cannot be dequantized. */
static float row_dot(uint32_t t, const uint8_t *row, size_t cols, const float *x)
{
    float buf[REF_CHUNK];
    float sum = 0.0f;

    for (size_t c0 = 0; c0 < cols; c0 += REF_CHUNK) {
        size_t n = cols - c0 < REF_CHUNK ? cols - c0 : REF_CHUNK;
        size_t off = type_bytes(t, c0);

        if ((c0 && !off) || quant_dequantize(t, row + off, buf, n) < 0)
            return NAN;
        for (size_t i = 0; i < n; i++)
            sum += buf[i] * x[c0 + i];
    }
    return sum;
}

void ref_matvec(uint32_t t, const void *W, size_t rows, size_t cols, const float *x, float *y)
{
    size_t row_bytes = type_bytes(t, cols);

    if (!row_bytes) {
        fill_nan(y, rows);
        return;
    }
    // y[r] = W[r,:] . x
    for (size_t r = 0; r < rows; r++)
        y[r] = row_dot(t, (const uint8_t *)W + r * row_bytes, cols, x);
}

void ref_matmul(uint32_t t, const void *W, size_t rows, size_t cols, const float *X, size_t n_tok,
                float *Y)
{
    // Y[n,:] = W X[n,:], one token at a time (the reference has no batched kernel)
    for (size_t n = 0; n < n_tok; n++)
        ref_matvec(t, W, rows, cols, X + n * cols, Y + n * rows);
}

void ref_get_row(uint32_t t, const void *W, size_t cols, size_t r, float *out)
{
    size_t row_bytes = type_bytes(t, cols);

    if (!row_bytes || quant_dequantize(t, (const uint8_t *)W + r * row_bytes, out, cols) < 0)
        fill_nan(out, cols);
}

/* ggml_compute_forward_rms_norm_f32 (ggml-cpu/ops.cpp): scale = 1/sqrt(mean(x^2) + eps),
 * then build_norm multiplies by the weight (llama-graph.cpp). */
void ref_rmsnorm(const float *x, const float *w, size_t n, float eps, float *out)
{
    float ss = 0.0f;

    for (size_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    const float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] * scale * (w ? w[i] : 1.0f);
}

/* ggml rope (ggml-cpu/ops.cpp ggml_compute_forward_rope_flt with ggml_rope_cache_init and
 * rope_yarn, ext_factor = 0, attn_factor = 1): pair i (i < n_rot/2) turns by
 * theta_i = pos * freq_scale * base^(-2i/n_rot). NORM pairs x[2i], x[2i+1]; NEOX pairs
 * x[i], x[i + n_rot/2]. Elements n_rot..head_dim-1 pass through unrotated. GGML builds
 * theta_i by repeated multiplication (theta *= base^(-2/n_rot)); the direct power here
 * differs from it by a few ulp, far below any kernel tolerance. */
void ref_rope(float *x, size_t head_dim, size_t n_rot, int neox, int32_t pos, float freq_base,
              float freq_scale)
{
    if (n_rot > head_dim)
        n_rot = head_dim;
    for (size_t i = 0; i < n_rot / 2; i++) {
        const float theta =
            (float)pos * freq_scale * powf(freq_base, -(float)(2 * i) / (float)n_rot);
        const float c = cosf(theta), s = sinf(theta);
        const size_t a = neox ? i : 2 * i;
        const size_t b = neox ? i + n_rot / 2 : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];

        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/* ggml_soft_max: exp(x - max) * (1 / sum). */
void ref_softmax(float *x, size_t n)
{
    float max = -INFINITY, sum = 0.0f;

    for (size_t i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

/* ggml_silu: x / (1 + exp(-x)); SwiGLU multiplies it by the up projection. */
void ref_swiglu(const float *gate, const float *up, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static float dot(const float *a, const float *b, size_t n)
{
    float sum = 0.0f;

    for (size_t i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

/* out_h = softmax(q_h . K[:,g]^T * scale) V[:,g], g = h / (n_head / n_head_kv): GQA as
 * llama-graph.cpp build_attn_mha does by broadcasting the KV heads. The scores are not
 * stored (no allocation): pass 1 finds their maximum, pass 2 recomputes them, identically,
 * and accumulates the exp-weighted values; the division by the sum comes last. Causality
 * is the caller's: it passes the n_kv positions the query may see. */
void ref_attention(const float *q, const float *K, const float *V, size_t n_kv, size_t n_head,
                   size_t n_head_kv, size_t head_dim_k, size_t head_dim_v, float scale, float *out)
{
    const size_t group = n_head / n_head_kv;

    for (size_t h = 0; h < n_head; h++) {
        const float *qh = q + h * head_dim_k;
        const size_t g = h / group;
        float *oh = out + h * head_dim_v;
        float max = -INFINITY, sum = 0.0f;

        // scores s_t = q_h . k_t * scale ; max_t s_t
        for (size_t t = 0; t < n_kv; t++) {
            float s = dot(qh, K + (t * n_head_kv + g) * head_dim_k, head_dim_k) * scale;
            max = s > max ? s : max;
        }
        // o_h = sum_t exp(s_t - max) v_t / sum_t exp(s_t - max)
        memset(oh, 0, head_dim_v * sizeof(*oh));
        for (size_t t = 0; t < n_kv; t++) {
            float s = dot(qh, K + (t * n_head_kv + g) * head_dim_k, head_dim_k) * scale;
            float p = expf(s - max);
            const float *vt = V + (t * n_head_kv + g) * head_dim_v;

            sum += p;
            for (size_t i = 0; i < head_dim_v; i++)
                oh[i] += p * vt[i];
        }
        const float inv = 1.0f / sum;
        for (size_t i = 0; i < head_dim_v; i++)
            oh[i] *= inv;
    }
}

/* Probability of expert e, recomputed on demand (identically each time) so routing needs no
 * buffer: softmax as ggml_soft_max computes it, or the sigmoid. */
static float route_prob(const float *logits, size_t e, int gating_sigmoid, float max, float inv)
{
    return gating_sigmoid ? ref_sigmoid(logits[e]) : expf(logits[e] - max) * inv;
}

/* llama-graph.cpp build_moe_ffn: probs = softmax|sigmoid(logits); selected =
 * argsort_top_k(probs) (ties: lower id, our choice: GGML leaves it open); weights =
 * probs[selected]; with norm_w, weights /= max(sum(weights), 6.103515625e-5) (the smallest
 * normal F16, as GGML clamps); then weights *= w_scale unless w_scale is 0 or 1 (0 means
 * "no scale" there too). */
void ref_route(const float *logits, size_t n_expert, size_t k, int gating_sigmoid, int norm_topk,
               float scale, int32_t *ids, float *weights)
{
    float max = -INFINITY, inv = 1.0f;

    if (!gating_sigmoid) {
        float sum = 0.0f;

        for (size_t e = 0; e < n_expert; e++)
            max = logits[e] > max ? logits[e] : max;
        for (size_t e = 0; e < n_expert; e++)
            sum += expf(logits[e] - max);
        inv = 1.0f / sum;
    }
    // top-k: the j-th pick is the largest probability not picked yet; strict '>' keeps
    // the lower id on ties
    for (size_t j = 0; j < k; j++) {
        int32_t best = -1;
        float best_p = -INFINITY;

        for (size_t e = 0; e < n_expert; e++) {
            int taken = 0;

            for (size_t i = 0; i < j; i++)
                taken |= ids[i] == (int32_t)e;
            if (taken)
                continue;
            float p = route_prob(logits, e, gating_sigmoid, max, inv);
            if (best < 0 || p > best_p) {
                best = (int32_t)e;
                best_p = p;
            }
        }
        ids[j] = best;
        weights[j] = best_p;
    }
    if (norm_topk) {
        float sum = 0.0f;

        for (size_t j = 0; j < k; j++)
            sum += weights[j];
        if (sum < 6.103515625e-5f)
            sum = 6.103515625e-5f;
        for (size_t j = 0; j < k; j++)
            weights[j] /= sum;
    }
    if (scale != 0.0f && scale != 1.0f)
        for (size_t j = 0; j < k; j++)
            weights[j] *= scale;
}

double ref_nmse(const float *ref, const float *got, size_t n)
{
    double err = 0.0, norm = 0.0;

    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)ref[i];

        err += d * d;
        norm += (double)ref[i] * (double)ref[i];
    }
    if (norm == 0.0)
        return err == 0.0 ? 0.0 : INFINITY;
    return err / norm;
}
