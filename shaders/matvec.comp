#version 450
/* shaders/matvec.comp: y = W x for a batch of vectors, W of one GGML type (TYPE_* define,
 * decoded by dequant.glsl), x and y float32. Decode is bandwidth-bound: every weight byte is
 * read once per pass of up to NVEC vectors; the bench compares its bytes/s with copy.comp.
 *
 * Bindings: 0 W  uint[] weight words, rows of row_bytes bytes starting at byte w_off
 *           1 X  float[] X[v * x_stride + c], v < n_vec, c < cols
 *           2 Y  float[] Y[v * y_stride + r], r < rows (written, or added to when ACCUM)
 * Push constants (struct vkc_pc_matvec in daemon/gpu/vkc-kernels.c):
 *   rows, cols, n_vec, row_bytes, x_stride, y_stride, w_off, accum
 * Specialization: 0 WG workgroup size, 1 NROWS rows per workgroup, 2 USE_SUBGROUP
 *   (subgroupAdd, else a shared-memory tree), 3 NVEC vectors per pass, 4 VEC4: rows of W
 *   start 16-aligned and x_stride is a multiple of 4, so 16-byte loads can be used
 *   (lavapipe runs a scalar loop over the lanes for every load; a vec4 costs about a word).
 * Build defines: DQ_X8 eight-block chunks (dequant.glsl), DQ_U64 the same 16-byte loads of W
 *   and x as two 8-byte words (CPU devices with shaderInt64: half the steps of that loop).
 * The lanes of a workgroup stride over the chunks (dequant.glsl) of NROWS rows; each lane
 * loads the x values of its chunk once and reuses them for all NROWS rows (on lavapipe,
 * where every load is a scalar loop over the lanes, x loads would otherwise cost more than
 * the weights); partial sums meet with subgroupAdd (shared memory only across subgroups).
 * Dispatch: x*y = row groups (flattened, wg_linear), z = ceil(n_vec / NVEC). */
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable

layout(constant_id = 0) const uint WG = 32;
layout(constant_id = 1) const uint NROWS = 1;
layout(constant_id = 2) const uint USE_SUBGROUP = 1;
layout(constant_id = 3) const uint NVEC = 1;
layout(constant_id = 4) const uint VEC4 = 0;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Wb { uint W[]; };
layout(binding = 0) readonly buffer Wb4 { uvec4 W4[]; }; /* the same bytes, 16 at a time */
layout(binding = 1) readonly buffer Xb { float X[]; };
layout(binding = 1) readonly buffer Xb4 { vec4 X4[]; };
layout(binding = 2) buffer Yb { float Y[]; };

layout(push_constant) uniform PC {
    uint rows, cols, n_vec, row_bytes;
    uint x_stride, y_stride, w_off, accum;
} pc;

#ifdef DQ_U64
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
layout(binding = 0) readonly buffer Wb8 { u64vec2 W8[]; }; /* the same bytes, 8 at a time */
layout(binding = 1) readonly buffer Xb8 { u64vec2 X8[]; };
#define WBUF8 W8
#endif
#define WBUF W
#define WBUF4 W4
#include "dequant.glsl"

shared float red[WG];

void store(uint r, uint v, float s)
{
    if (r < pc.rows && v < pc.n_vec) {
        uint i = v * pc.y_stride + r;
        Y[i] = pc.accum != 0u ? Y[i] + s : s;
    }
}

float xs[NVEC][CHUNK]; /* x at the columns of the current chunk, for each vector */
float xsum[NVEC][NG];  /* sums of xs over each scale group */

/* acc[r][v] += sum_i w(row r0 + r, chunk c)[i] * x[v][c * CHUNK + i]. With w = q * d + m per
 * group: = sum_g d_g * (q . x)_g + m_g * sum(x)_g, so x (and its group sums) is loaded once
 * per chunk for all NROWS rows and each weight costs one multiply-add. */
void chunk_dot(uint r0, uint c, uint v0, inout float acc[NROWS][NVEC])
{
    uint n = min(uint(CHUNK), pc.cols - c * CHUNK);
    [[unroll]] for (uint v = 0u; v < NVEC; v++) {
        uint xb = min(v0 + v, pc.n_vec - 1u) * pc.x_stride + c * CHUNK;
#ifndef DQ_PARTIAL
        if (VEC4 != 0u) {
            [[unroll]] for (uint i = 0u; i < CHUNK / 4u; i++) {
#ifdef DQ_U64
                u64vec2 e = X8[xb / 4u + i];
                vec4 t = uintBitsToFloat(uvec4(unpackUint2x32(e.x), unpackUint2x32(e.y)));
#else
                vec4 t = X4[xb / 4u + i];
#endif
                xs[v][4u * i] = t.x;
                xs[v][4u * i + 1u] = t.y;
                xs[v][4u * i + 2u] = t.z;
                xs[v][4u * i + 3u] = t.w;
            }
        } else
#endif
        [[unroll]] for (uint i = 0u; i < CHUNK; i++)
#ifdef DQ_PARTIAL
            xs[v][i] = i < n ? X[xb + i] : 0.0;
#else
            xs[v][i] = X[xb + i];
#endif
        [[unroll]] for (uint g = 0u; g < NG; g++) {
            float t = 0.0;
            [[unroll]] for (uint i = 0u; i < GS; i++)
                t += xs[v][g * GS + i];
            xsum[v][g] = t;
        }
    }
    [[unroll]] for (uint r = 0u; r < NROWS; r++) {
        float q[CHUNK];
        vec2 dm[NG];
        dq_chunk_q(pc.w_off + min(r0 + r, pc.rows - 1u) * pc.row_bytes, c, n, q, dm);
        [[unroll]] for (uint v = 0u; v < NVEC; v++) {
            [[unroll]] for (uint g = 0u; g < NG; g++) {
                float s = 0.0;
                [[unroll]] for (uint i = 0u; i < GS; i++)
                    s = fma(q[g * GS + i], xs[v][g * GS + i], s);
                acc[r][v] = fma(dm[g].x, s, fma(dm[g].y, xsum[v][g], acc[r][v]));
            }
        }
    }
}

void main()
{
    uint lid = gl_LocalInvocationID.x;
    uint nchunks = (pc.cols + CHUNK - 1u) / CHUNK;
    uint v0 = gl_WorkGroupID.z * NVEC;
    float acc[NROWS][NVEC];
    [[unroll]] for (uint r = 0u; r < NROWS; r++)
        [[unroll]] for (uint v = 0u; v < NVEC; v++)
            acc[r][v] = 0.0;

    uint r0 = wg_linear() * NROWS;
    if (r0 >= pc.rows) /* whole workgroup leaves: uniform, so no barrier is skipped by half */
        return;
    for (uint c = lid; c < nchunks; c += WG)
        chunk_dot(r0, c, v0, acc);

    [[unroll]] for (uint r = 0u; r < NROWS; r++) {
        [[unroll]] for (uint v = 0u; v < NVEC; v++) {
            float s;
            if (USE_SUBGROUP != 0u) {
                s = subgroupAdd(acc[r][v]);
                if (gl_NumSubgroups > 1u) {
                    /* partial sums of the subgroups meet in shared memory */
                    if (subgroupElect())
                        red[gl_SubgroupID] = s;
                    barrier();
                    if (lid == 0u)
                        for (uint g = 1u; g < gl_NumSubgroups; g++)
                            s += red[g];
                    barrier(); /* red[] is reused by the next (r, v) */
                }
            } else {
                red[lid] = acc[r][v];
                barrier();
                for (uint h = WG / 2u; h > 0u; h >>= 1) {
                    if (lid < h)
                        red[lid] += red[lid + h];
                    barrier(); /* each level reads the previous level's sums */
                }
                s = red[0];
                barrier(); /* red[] is reused by the next (r, v) */
            }
            if (lid == 0u)
                store(r0 + r, v0 + v, s);
        }
    }
}
