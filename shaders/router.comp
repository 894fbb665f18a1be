#version 450
/* shaders/router.comp: MoE routing for a batch of tokens, as tests/ref/ref_ops.c ref_route:
 * logits[t][n_expert] -> probabilities (softmax, or sigmoid when gating_sigmoid) -> the k
 * largest (ties: lower id) -> weights, divided by max(sum, 2^-14) when norm_topk, then times
 * scale unless scale is 0 or 1. IDS[t][k] and WTS[t][k] in descending order.
 * One lane per token: k passes over the experts, each picking the largest (p, -id) below the
 * previous pick, so no per-expert state is kept (k * n_expert work, tiny for a router).
 * Bindings: 0 L float[] L[t * l_stride + e]; 1 IDS int[n_tok * k]; 2 WTS float[n_tok * k].
 * Push constants (struct vkc_pc_router): n_tok, n_expert, k, l_stride, gating_sigmoid,
 *   norm_topk, scale
 * Specialization: 0 WG. Dispatch: ceil(n_tok / WG) (flattened). */
#include "common.glsl"

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Lb { float L[]; };
layout(binding = 1) writeonly buffer Ib { int IDS[]; };
layout(binding = 2) buffer Wb { float WTS[]; };

layout(push_constant) uniform PC {
    uint n_tok, n_expert, k, l_stride, gating_sigmoid, norm_topk;
    float scale;
} pc;

void main()
{
    uint t = wg_linear() * WG + gl_LocalInvocationID.x;
    if (t >= pc.n_tok)
        return;
    uint lb = t * pc.l_stride;
    float mx = -1.0 / 0.0, inv = 1.0;
    if (pc.gating_sigmoid == 0u) {
        for (uint e = 0u; e < pc.n_expert; e++)
            mx = max(mx, L[lb + e]);
        float sum = 0.0;
        for (uint e = 0u; e < pc.n_expert; e++)
            sum += exp(L[lb + e] - mx);
        inv = 1.0 / sum;
    }
    float last_p = 1.0 / 0.0, total = 0.0;
    int last_id = -1;
    for (uint j = 0u; j < pc.k; j++) {
        int best = -1;
        float best_p = 0.0;
        for (uint e = 0u; e < pc.n_expert; e++) {
            float l = L[lb + e];
            float p = pc.gating_sigmoid != 0u ? 1.0 / (1.0 + exp(-l)) : exp(l - mx) * inv;
            /* below the last pick in the order (p descending, id ascending) */
            bool after = p < last_p || (p == last_p && int(e) > last_id);
            if (after && (best < 0 || p > best_p)) {
                best = int(e);
                best_p = p;
            }
        }
        IDS[t * pc.k + j] = best;
        WTS[t * pc.k + j] = best_p;
        total += best_p;
        last_p = best_p;
        last_id = best;
    }
    float f = 1.0;
    if (pc.norm_topk != 0u)
        f = 1.0 / max(total, 6.103515625e-5);
    if (pc.scale != 0.0 && pc.scale != 1.0)
        f *= pc.scale;
    for (uint j = 0u; j < pc.k; j++)
        WTS[t * pc.k + j] *= f;
}
