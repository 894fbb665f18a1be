#version 450
/* shaders/matmul.comp: Y = W X for many vectors at once (prefill), tiled. W of one GGML type
 * (TYPE_* define, decoded by dequant.glsl), X and Y float32; same operands and results as
 * matvec.comp, which vkc_cmd_matvec() uses below a threshold of vectors.
 * A workgroup computes a tile of WG * R rows by TV vectors: lane l owns rows r0 + i * WG + l
 * (i < R) for all TV vectors, so each weight is read and decoded once per TV vectors (not once
 * per vector) and every output has one owner (no reduction, no shared memory, no barrier).
 * The scales are folded into the sums as in matvec: acc += d_g * (q . x)_g + m_g * sum(x)_g.
 * x reaches the lanes in one of two ways:
 *   plain (no MM_SG): every lane reads the x values of the chunk for the TV vectors itself;
 *     all lanes read the same addresses, one broadcast load on a GPU.
 *   MM_SG (CPU devices, where a workgroup is one subgroup of SIMD lanes and every load is a
 *     scalar loop over the lanes, see dequant.glsl): lane l loads only its P = CHUNK / WG
 *     elements of each vector and subgroupShuffle hands them to the other lanes, so an x
 *     value costs one lane's load instead of WG; weights and x are read with 64-bit words
 *     (8 bytes per step of that loop). Needs WG == the subgroup size. (lavapipe turns a
 *     shuffle into one permute; subgroupBroadcast became a loop over the lanes to find the
 *     first active one, per call: batch 64 Q4_K 5 GFLOP/s with it, 12-15 with shuffles.)
 *
 * Bindings: 0 W  uint[] weight words, rows of row_bytes bytes starting at byte w_off
 *           1 X  float[] X[v * x_stride + c], v < n_vec, c < cols
 *           2 Y  float[] Y[v * y_stride + r], r < rows (written, or added to when accum)
 * Push constants (struct vkc_pc_matvec in daemon/gpu/vkc-kernels.c, shared with matvec):
 *   rows, cols, n_vec, row_bytes, x_stride, y_stride, w_off, accum
 * Specialization: 0 WG workgroup size, 1 R rows per lane, 2 TV vectors per tile, 3 VEC4: rows of
 *   W start 16-aligned (wide weight loads), 4 XVEC4: x_stride a multiple of 4 (wide x loads).
 * Dispatch: x*y = row tiles of WG * R rows (flattened, wg_linear), z = ceil(n_vec / TV).
 *
 * MM_GROUPED (vkc_cmd_matmul_grouped): one dispatch for many matrices of the same shape and type
 * in one buffer, each with its own run of vectors: the expert FFN of a batch, where each of
 * the ~20 experts a batch routes to sees one or two tokens, in one dispatch instead of one
 * per expert (lavapipe: ~80 us per dispatch, more than the expert's own work). Binding 3
 * holds a uvec4 per group (byte offset of its matrix in W, first vector of X, vectors, first
 * vector of Y); z = the group; a workgroup runs all its group's vectors in tiles of TV; the
 * host checked every group against the bindings. pc.n_vec and pc.w_off are unused. */
#extension GL_KHR_shader_subgroup_basic : enable
#ifdef MM_SG
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#endif

layout(constant_id = 0) const uint WG = 8;
layout(constant_id = 1) const uint R = 4;
layout(constant_id = 2) const uint TV = 8;
layout(constant_id = 3) const uint VEC4 = 0;
layout(constant_id = 4) const uint XVEC4 = 0;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Wb { uint W[]; };
layout(binding = 0) readonly buffer Wb4 { uvec4 W4[]; }; /* the same bytes, 16 at a time */
layout(binding = 1) readonly buffer Xb { float X[]; };
layout(binding = 1) readonly buffer Xb4 { vec4 X4[]; };
#ifdef MM_SG
layout(binding = 0) readonly buffer Wb8 { u64vec2 W8[]; }; /* 16 bytes as two 8-byte words */
layout(binding = 1) readonly buffer Xb8 { u64vec2 X8[]; };
#define WBUF8 W8
#endif
layout(binding = 2) buffer Yb { float Y[]; };
#ifdef MM_GROUPED
/* per group: byte offset of its matrix in W, first vector in X, vectors, first vector in Y */
layout(binding = 3) readonly buffer Gb { uvec4 G[]; };
#endif

layout(push_constant) uniform PC {
    uint rows, cols, n_vec, row_bytes;
    uint x_stride, y_stride, w_off, accum;
} pc;

#define WBUF W
#define WBUF4 W4
#include "dequant.glsl"

#ifdef MM_SG
/* x elements of a chunk that each lane loads (WG and CHUNK are powers of two) */
const uint P = (uint(CHUNK) + WG - 1u) / WG;
#endif

/* xs[v][i] = x[v][c * CHUNK + i] for the TV vectors (rows xv[v] of X), 0 past n valid. */
void load_x(uint c, uint n, uint xv[TV], out float xs[TV][CHUNK])
{
#ifdef MM_SG
    /* lane s holds elements [e0, e0 + P); the clamp only moves lanes past the chunk's end
     * (WG > CHUNK), whose values nobody broadcasts */
    uint e0 = min(gl_SubgroupInvocationID * P, uint(CHUNK) - P);
    [[unroll]] for (uint v = 0u; v < TV; v++) {
        uint xb = xv[v] + c * CHUNK + e0;
        float xl[P];
#ifndef DQ_PARTIAL
        if (XVEC4 != 0u && P % 4u == 0u) {
            [[unroll]] for (uint k = 0u; k < P / 4u; k++) {
                u64vec2 e = X8[xb / 4u + k];
                vec4 t = uintBitsToFloat(uvec4(unpackUint2x32(e.x), unpackUint2x32(e.y)));
                xl[4u * k] = t.x;
                xl[4u * k + 1u] = t.y;
                xl[4u * k + 2u] = t.z;
                xl[4u * k + 3u] = t.w;
            }
        } else
#endif
        [[unroll]] for (uint j = 0u; j < P; j++)
#ifdef DQ_PARTIAL
            xl[j] = e0 + j < n ? X[xb + j] : 0.0;
#else
            xl[j] = X[xb + j];
#endif
        [[unroll]] for (uint i = 0u; i < CHUNK; i++)
            xs[v][i] = subgroupShuffle(xl[i % P], i / P);
    }
#else
    [[unroll]] for (uint v = 0u; v < TV; v++) {
        uint xb = xv[v] + c * CHUNK;
#ifndef DQ_PARTIAL
        if (XVEC4 != 0u) {
            [[unroll]] for (uint k = 0u; k < CHUNK / 4u; k++) {
                vec4 t = X4[xb / 4u + k];
                xs[v][4u * k] = t.x;
                xs[v][4u * k + 1u] = t.y;
                xs[v][4u * k + 2u] = t.z;
                xs[v][4u * k + 3u] = t.w;
            }
        } else
#endif
        [[unroll]] for (uint i = 0u; i < CHUNK; i++)
#ifdef DQ_PARTIAL
            xs[v][i] = i < n ? X[xb + i] : 0.0;
#else
            xs[v][i] = X[xb + i];
#endif
    }
#endif
}

/* One tile: rows r0.. of the matrix at byte w_off, vectors v0 .. min(v0 + TV, nv) - 1 of the
 * nv at X[xb + v * x_stride], into Y[yb + v * y_stride + r]. */
void tile(uint w_off, uint r0, uint v0, uint nv, uint xb, uint yb)
{
    uint lid = gl_LocalInvocationID.x;
    uint nchunks = (pc.cols + CHUNK - 1u) / CHUNK;

    /* rows and vectors past the end repeat the last one: loads stay in bounds, stores skip */
    uint ro[R], xv[TV];
    [[unroll]] for (uint i = 0u; i < R; i++)
        ro[i] = w_off + min(r0 + i * WG + lid, pc.rows - 1u) * pc.row_bytes;
    [[unroll]] for (uint v = 0u; v < TV; v++)
        xv[v] = xb + min(v0 + v, nv - 1u) * pc.x_stride;
    float acc[R][TV];
    [[unroll]] for (uint i = 0u; i < R; i++)
        [[unroll]] for (uint v = 0u; v < TV; v++)
            acc[i][v] = 0.0;

    for (uint c = 0u; c < nchunks; c++) {
        uint n = min(uint(CHUNK), pc.cols - c * CHUNK);
        float xs[TV][CHUNK];
        load_x(c, n, xv, xs);
        float xsum[TV][NG]; /* sums of xs over each scale group, for the offsets m_g */
        [[unroll]] for (uint v = 0u; v < TV; v++)
            [[unroll]] for (uint g = 0u; g < NG; g++) {
                float t = 0.0;
                [[unroll]] for (uint k = 0u; k < GS; k++)
                    t += xs[v][g * GS + k];
                xsum[v][g] = t;
            }
        [[unroll]] for (uint i = 0u; i < R; i++) {
            float q[CHUNK];
            vec2 dm[NG];
            dq_chunk_q(ro[i], c, n, q, dm);
            [[unroll]] for (uint v = 0u; v < TV; v++)
                [[unroll]] for (uint g = 0u; g < NG; g++) {
                    float s = 0.0;
                    [[unroll]] for (uint k = 0u; k < GS; k++)
                        s = fma(q[g * GS + k], xs[v][g * GS + k], s);
                    acc[i][v] = fma(dm[g].x, s, fma(dm[g].y, xsum[v][g], acc[i][v]));
                }
        }
    }

    [[unroll]] for (uint i = 0u; i < R; i++) {
        uint r = r0 + i * WG + lid;
        [[unroll]] for (uint v = 0u; v < TV; v++) {
            if (r < pc.rows && v0 + v < nv) {
                uint y = yb + (v0 + v) * pc.y_stride + r;
                Y[y] = pc.accum != 0u ? Y[y] + acc[i][v] : acc[i][v];
            }
        }
    }
}

void main()
{
    uint r0 = wg_linear() * (WG * R);
    if (r0 >= pc.rows) /* whole workgroup: uniform, so subgroupShuffle keeps all its lanes */
        return;
#ifdef MM_GROUPED
    /* group z: its matrix and vectors from the table, all its vectors in tiles of TV */
    uvec4 g = G[gl_WorkGroupID.z];
    for (uint v0 = 0u; v0 < g.z; v0 += TV)
        tile(g.x, r0, v0, g.z, g.y * pc.x_stride, g.w * pc.y_stride);
#else
    tile(pc.w_off, r0, gl_WorkGroupID.z * TV, pc.n_vec, 0u, 0u);
#endif
}
