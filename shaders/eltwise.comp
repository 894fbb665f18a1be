#version 450
/* shaders/eltwise.comp: element-wise operations on n floats, the operation chosen by the
 * specialization constant OP:
 *   0 add       out[i] = a[i] + b[i]
 *   1 scale     out[i] = s * a[i]
 *   2 accum     out[i] += s * wt(i) * a[i]   (weighted accumulate: an expert's output into the
 *               token's sum, wt(i) = WT[(i / row) * wt_stride + wt_off] or 1 without weights)
 *   3 swiglu    out[i] = silu(a[i]) * b[i]    silu(x) = x / (1 + exp(-x))
 *   4 sig_gate  out[i] = a[i] * sigmoid(b[i])
 *   5 mul       out[i] = a[i] * b[i]          (per row: each expert output times its weight)
 * B is read as B[i] (b_mode 0), B[i % row] (1: a bias added to every row) or B[i / row]
 * (2: one value per row, the shared expert's gate of each token).
 * Bindings: 0 A float[n]; 1 B float[]; 2 OUT float[n] (may alias A or B); 3 WT float[].
 * Push constants (struct vkc_pc_eltwise): n, row, wt_stride, wt_off, has_wt, s, b_mode
 * Specialization: 0 WG, 1 OP, 2 BMODE (= b_mode: a constant, so B[i] costs no integer
 *   division: AVX2 has none, and llvmpipe computed i % row and i / row per element whatever
 *   the mode: 8 rows of 512, ADD 169 -> 63 us on lavapipe). Dispatch: ceil(n / WG). */
#include "common.glsl"

layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint OP = 0;
layout(constant_id = 2) const uint BMODE = 0;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Ab { float A[]; };
layout(binding = 1) readonly buffer Bb { float B[]; };
layout(binding = 2) buffer Ob { float OUT[]; };
layout(binding = 3) readonly buffer Wb { float WT[]; };

layout(push_constant) uniform PC {
    uint n, row, wt_stride, wt_off, has_wt;
    float s;
    uint b_mode;
} pc;

float b_at(uint i)
{
    if (BMODE == 1u)
        return B[i % pc.row];
    if (BMODE == 2u)
        return B[i / pc.row];
    return B[i];
}

void main()
{
    uint i = wg_linear() * WG + gl_LocalInvocationID.x;
    if (i >= pc.n)
        return;
    if (OP == 0u) {
        OUT[i] = A[i] + b_at(i);
    } else if (OP == 1u) {
        OUT[i] = pc.s * A[i];
    } else if (OP == 2u) {
        float w = pc.has_wt != 0u ? WT[(i / pc.row) * pc.wt_stride + pc.wt_off] : 1.0;
        OUT[i] += pc.s * w * A[i];
    } else if (OP == 3u) {
        float g = A[i];
        OUT[i] = g / (1.0 + exp(-g)) * b_at(i);
    } else if (OP == 4u) {
        OUT[i] = A[i] / (1.0 + exp(-b_at(i)));
    } else {
        OUT[i] = A[i] * b_at(i);
    }
}
