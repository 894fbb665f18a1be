#version 450
/* shaders/rmsnorm.comp: RMSNorm of n_rows rows of n floats,
 *   out[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * (has_w ? w[(r % w_rows) * n + i] : 1).
 * Whole-row norm: n = n_embd, one row per token, w_rows = 1. Per-head norm (QK-norm): n =
 * head_dim, one row per (token, head), w_rows = 1 (or n_head for per-head weights).
 * One workgroup per row; partial sums of squares meet with subgroupAdd, then in shared
 * memory across subgroups (or a shared-memory tree without subgroup arithmetic).
 * Bindings: 0 X float[] X[r * x_stride + i]; 1 W float[w_rows * n]; 2 OUT float[] (may alias X).
 * Push constants (struct vkc_pc_rmsnorm in daemon/gpu/vkc-kernels.c):
 *   n, n_rows, x_stride, out_stride, w_rows, has_w, eps
 * Specialization: 0 WG, 1 USE_SUBGROUP. Dispatch: n_rows workgroups (flattened). */
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "common.glsl"

layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint USE_SUBGROUP = 1;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Xb { float X[]; };
layout(binding = 1) readonly buffer Wb { float Wt[]; };
layout(binding = 2) writeonly buffer Ob { float OUT[]; };

layout(push_constant) uniform PC {
    uint n, n_rows, x_stride, out_stride, w_rows, has_w;
    float eps;
} pc;

#ifndef ONE_SUBGROUP
shared float red[WG];
#endif

/* Sum of v over the workgroup, in every lane. */
float wg_sum(float v)
{
#ifdef ONE_SUBGROUP
    /* the workgroup is one subgroup: no shared memory, no barrier. Why a module of its own:
     * llvmpipe runs a shader that contains barrier() as coroutines, whose set-up per
     * workgroup cost ~25 us a row (8 rows: 227 -> 50 us), even where the barrier is never
     * reached */
    return subgroupAdd(v);
#else
    uint lid = gl_LocalInvocationID.x;
    if (USE_SUBGROUP != 0u) {
        v = subgroupAdd(v);
        if (gl_NumSubgroups == 1u)
            return v;
        if (subgroupElect())
            red[gl_SubgroupID] = v;
        barrier(); /* every subgroup's partial sum is in red[] */
        float s = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++)
            s += red[g];
        return s;
    }
    red[lid] = v;
    barrier(); /* all lanes' values are in red[] */
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (lid < h)
            red[lid] += red[lid + h];
        barrier(); /* each level reads the previous level's sums */
    }
    return red[0];
#endif
}

void main()
{
    uint r = wg_linear();
    if (r >= pc.n_rows) /* uniform per workgroup */
        return;
    uint lid = gl_LocalInvocationID.x, xb = r * pc.x_stride, ob = r * pc.out_stride;
    float ss = 0.0;
    for (uint i = lid; i < pc.n; i += WG)
        ss += X[xb + i] * X[xb + i];
    float scale = 1.0 / sqrt(wg_sum(ss) / float(pc.n) + pc.eps);
    uint wb = (r % pc.w_rows) * pc.n;
    for (uint i = lid; i < pc.n; i += WG)
        OUT[ob + i] = X[xb + i] * scale * (pc.has_w != 0u ? Wt[wb + i] : 1.0);
}
