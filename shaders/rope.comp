#version 450
/* shaders/rope.comp: rotary position embedding, in place, on X[t][h][d] (t < n_tok,
 * h < n_head, d < head_dim) at position pos[t]: pair i < n_rot / 2 turns by
 *   theta_i = pos * freq_scale * freq_base^(-2 i / n_rot)
 * NORM (neox = 0) pairs (2i, 2i + 1), NEOX (neox = 1) pairs (i, i + n_rot / 2); dims from
 * n_rot on are untouched (as tests/ref/ref_ops.c ref_rope, GGML with ext_factor 0).
 * One lane per (token, head, pair).
 * Bindings: 0 X float[] X[t * tok_stride + h * head_stride + d]; 1 POS int[n_tok].
 * Push constants (struct vkc_pc_rope): n_tok, n_head, head_dim, n_rot, tok_stride,
 *   head_stride, neox, freq_base, freq_scale
 * Specialization: 0 WG. Dispatch: ceil(n_tok * n_head * n_rot / 2 / WG) (flattened). */
#include "common.glsl"

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(binding = 0) buffer Xb { float X[]; };
layout(binding = 1) readonly buffer Pb { int POS[]; };

layout(push_constant) uniform PC {
    uint n_tok, n_head, head_dim, n_rot, tok_stride, head_stride, neox;
    float freq_base, freq_scale;
} pc;

void main()
{
    uint half_rot = pc.n_rot / 2u;
    uint g = wg_linear() * WG + gl_LocalInvocationID.x;
    if (g >= pc.n_tok * pc.n_head * half_rot)
        return;
    uint i = g % half_rot, h = (g / half_rot) % pc.n_head, t = g / (half_rot * pc.n_head);
    float theta = float(POS[t]) * pc.freq_scale *
                  pow(pc.freq_base, -float(2u * i) / float(pc.n_rot));
    float c = cos(theta), s = sin(theta);
    uint base = t * pc.tok_stride + h * pc.head_stride;
    uint a = base + (pc.neox != 0u ? i : 2u * i);
    uint b = base + (pc.neox != 0u ? i + half_rot : 2u * i + 1u);
    float x0 = X[a], x1 = X[b];
    X[a] = x0 * c - x1 * s;
    X[b] = x0 * s + x1 * c;
}
