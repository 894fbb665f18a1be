#version 450
/* shaders/argmax.comp: the k largest logits of each row (k = 1: argmax), for sampling.
 *   IDS[r][j], VALS[r][j], j < k: the j-th largest of X[r][0..n), ties to the lower id.
 * One workgroup per row. The order is total: (v, i) ranks above (w, l) when v > w, or
 * v == w and i < l; NaN never ranks (a row of NaNs yields id -1). Round j scans the row for
 * the best element ranking below the one round j - 1 chose, so k rounds read the row k times
 * but need no per-lane candidate lists (k <= 64 would not fit in registers) and the result
 * is exact and deterministic. Each round ends in a shared-memory reduction over the lanes.
 *
 * Bindings: 0 X    float[] X[r * x_stride + i], i < n
 *           1 IDS  int[]   IDS[r * k + j]
 *           2 VALS float[] VALS[r * k + j]
 * Push constants (struct vkc_pc_topk in daemon/gpu/vkc-ops2.c): n, n_rows, k, x_stride
 * Specialization: 0 WG workgroup size (a power of two).
 * Dispatch: x = n_rows (flattened, wg_linear). */
layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Xb { float X[]; };
layout(binding = 1) writeonly buffer Ib { int IDS[]; };
layout(binding = 2) writeonly buffer Vb { float VALS[]; };

layout(push_constant) uniform PC {
    uint n, n_rows, k, x_stride;
} pc;

#include "common.glsl"

#define NEG_INF uintBitsToFloat(0xff800000u)

shared float sv[WG];
shared int si[WG];

/* (v, i) ranks above (w, l); id -1 marks "nothing" and ranks below everything. */
bool above(float v, int i, float w, int l)
{
    if (i < 0)
        return false;
    if (l < 0)
        return true;
    return v > w || (v == w && i < l);
}

void main()
{
    uint r = wg_linear(), lid = gl_LocalInvocationID.x;
    if (r >= pc.n_rows) /* whole workgroup leaves: uniform */
        return;
    uint xb = r * pc.x_stride;
    float pv = 0.0; /* the previous round's choice; pi = -1: none yet */
    int pi = -1;
    for (uint j = 0u; j < pc.k; j++) {
        float bv = 0.0;
        int bi = -1;
        for (uint i = lid; i < pc.n; i += WG) {
            float v = X[xb + i];
            if (isnan(v))
                continue;
            /* only candidates ranking below the previous choice */
            if (pi >= 0 && !above(pv, pi, v, int(i)))
                continue;
            if (above(v, int(i), bv, bi)) {
                bv = v;
                bi = int(i);
            }
        }
        sv[lid] = bv;
        si[lid] = bi;
        barrier();
        for (uint h = WG / 2u; h > 0u; h >>= 1) {
            if (lid < h && above(sv[lid + h], si[lid + h], sv[lid], si[lid])) {
                sv[lid] = sv[lid + h];
                si[lid] = si[lid + h];
            }
            barrier(); /* each level reads the previous level's winners */
        }
        pv = sv[0];
        pi = si[0];
        if (lid == 0u) {
            IDS[r * pc.k + j] = pi;
            VALS[r * pc.k + j] = pi >= 0 ? pv : NEG_INF;
        }
        barrier(); /* sv/si are overwritten by the next round */
        if (pi < 0) { /* row exhausted (k > n, or NaNs): uniform, pi is shared */
            for (uint jj = j + 1u + lid; jj < pc.k; jj += WG) {
                IDS[r * pc.k + jj] = -1;
                VALS[r * pc.k + jj] = NEG_INF;
            }
            return;
        }
    }
}
