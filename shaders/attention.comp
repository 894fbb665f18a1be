#version 450
#extension GL_KHR_shader_subgroup_basic : enable
/* shaders/attention.comp: attention with GQA over an F16 KV cache, and the kernel that
 * stores new K/V rows into that cache (-DKV_STORE).
 *
 * Cache layout (one layer, K and V each): [n_ctx][n_head_kv][head_dim] half floats, packed
 * two per uint word (head dims are even, so a head's row starts on a word). A sequence owns
 * a contiguous range of cache rows; the engine passes its first row.
 *
 * ---- attention (default) ----
 * For query q < n_q and head h < n_head, with kv = h / (n_head / n_head_kv) (GQA) and the
 * query's visible cache rows [first, first + n_kv) from RANGES[q]:
 *   O[q][h][:] = sum_j softmax_j(scale * Q[q][h] . K[first + j][kv]) V[first + j][kv][:]
 * The same kernel serves decode (one query per sequence, n_kv = its length; many sequences
 * per dispatch, each with its own range) and causal prefill (query i at position pos_i of a
 * sequence sees n_kv = pos_i + 1 rows). One workgroup per (query, block of GS heads of one
 * GQA group) walks the rows in tiles of WG, each K and V word loaded and converted once for
 * the GS heads (loads set the speed on CPU devices): for every head of the block, lane l
 * scores row t0 + l, the tile's scores meet in shared memory, every
 * lane finds the tile's max, lane l turns its score into the weight exp(score - max), and
 * every lane folds the weights into a running max m and sum s (online softmax: when m
 * grows, s and the output accumulators are rescaled by exp(m_old - m_new), so no exp
 * overflows whatever the logits) while accumulating the V columns (two per word) it owns. n_kv = 0 writes zeros.
 * Rows past n_ctx are never read (the range is clamped).
 * Bindings: 0 Q float[] Q[q * q_stride + h * dk + d]
 *           1 K uint[]  K cache words from word k_off
 *           2 V uint[]  V cache words from word v_off
 *           3 RANGES uint[] RANGES[2 q] = first row, RANGES[2 q + 1] = n_kv
 *           4 O float[] O[q * o_stride + h * dv + d]
 * Push constants (struct vkc_pc_attention in daemon/gpu/vkc-ops2.c):
 *   n_q, n_head, n_head_kv, dk, dv, q_stride, o_stride, k_off, v_off, n_ctx, scale
 * Specialization: 0 WG workgroup size, 1 MAXD a bound on dk and dv (sizes shared memory and
 *   the per-lane accumulators: GS * ceil(MAXD / (2 WG)) words of V per lane), 2 GS query
 *   heads per workgroup (divides n_head / n_head_kv; 1 = one head per workgroup), 3 ONE_SG
 *   true where the workgroup is exactly one subgroup (subgroup barriers suffice).
 * Dispatch: x = n_q * (n_head / GS) (flattened, wg_linear), query-major.
 *
 * ---- KV_STORE ----
 *   CACHE[ROWS[i]][:] = f16(SRC[i][0..row_elems)), i < n_rows (K or V: one dispatch each)
 * Bindings: 0 SRC float[] SRC[i * src_stride + e]; 1 CACHE uint[] from word c_off;
 *           2 ROWS uint[n_rows] cache rows (rows >= n_ctx are skipped)
 * Push constants (struct vkc_pc_kv_store): n_rows, row_elems (even), src_stride, c_off, n_ctx
 * Specialization: 0 WG. Dispatch: x = ceil(n_rows * row_elems / 2 / WG); a lane per word. */
layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

#include "common.glsl"

#ifdef KV_STORE

layout(binding = 0) readonly buffer Sb { float SRC[]; };
layout(binding = 1) buffer Cb { uint CACHE[]; };
layout(binding = 2) readonly buffer Rb { uint ROWS[]; };
layout(push_constant) uniform PC {
    uint n_rows, row_elems, src_stride, c_off, n_ctx;
} pc;

void main()
{
    uint words = pc.row_elems / 2u;
    uint g = wg_linear() * WG + gl_LocalInvocationID.x;
    if (g >= pc.n_rows * words)
        return;
    uint i = g / words, w = g % words;
    uint row = ROWS[i];
    if (row >= pc.n_ctx)
        return;
    uint s = i * pc.src_stride + 2u * w;
    CACHE[pc.c_off + row * words + w] = packHalf2x16(vec2(SRC[s], SRC[s + 1u]));
}

#else

layout(constant_id = 1) const uint MAXD = 128;
layout(constant_id = 2) const uint GS = 1; /* query heads per workgroup (see the header) */
layout(constant_id = 3) const bool ONE_SG = false; /* the workgroup is one subgroup */
const uint NW = (MAXD + 2u * WG - 1u) / (2u * WG); /* V words per lane */

layout(binding = 0) readonly buffer Qb { float Q[]; };
layout(binding = 1) readonly buffer Kb { uint K[]; };
layout(binding = 2) readonly buffer Vb { uint V[]; };
layout(binding = 3) readonly buffer Rb { uint RANGES[]; };
layout(binding = 4) writeonly buffer Ob { float O[]; };
layout(push_constant) uniform PC {
    uint n_q, n_head, n_head_kv, dk, dv, q_stride, o_stride, k_off, v_off, n_ctx;
    float scale;
} pc;

#define NEG_INF uintBitsToFloat(0xff800000u)

/* The two halves of a word as floats, by bit arithmetic. Why not unpackHalf2x16: on
 * llvmpipe it was the bottleneck of the whole kernel (a decode over 4096 rows, 32 heads of
 * 128, took 135 ms with it and 60 ms without, on 2 cores). Shifting a half's exponent and mantissa into a
 * float's and multiplying by 2^112 rebiases the exponent (15 -> 127); inf/NaN (exponent
 * 31) get the all-ones float exponent. Exact for normal halves, zeros, inf and NaN; half
 * subnormals (|x| < 6.1e-5) pass through a float subnormal and read as zero on a device
 * that flushes float denormals, which changes an attention score or value by < 6.1e-5. */
vec2 h2(uint w)
{
    uvec2 h = uvec2(w & 0xffffu, w >> 16);
    uvec2 em = (h & 0x7fffu) << 13;
    vec2 f = uintBitsToFloat(em) * uintBitsToFloat(0x77800000u);
    uvec2 b = floatBitsToUint(f);
    b = mix(b, em | 0x7f800000u, greaterThanEqual(h & 0x7c00u, uvec2(0x7c00u)));
    return uintBitsToFloat(b | ((h & 0x8000u) << 16));
}

/* Workgroup barrier; a subgroup one where the workgroup is one subgroup (no switch between
 * SIMD groups on llvmpipe). */
void wg_barrier()
{
    if (ONE_SG) {
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    } else {
        barrier();
    }
}

/* the block's query heads, pre-scaled: head i's element d at qs[i * MAXD + d], read four
 * at a time (half the shared loads of two floats per K word: on llvmpipe each is a loop over
 * the lanes) */
shared vec4 qs[GS * MAXD / 4u];
/* the tile's scores, then weights: head i's row jj at ps[i * WG + jj], read four at a time */
shared vec4 ps[GS * WG / 4u];

void main()
{
    uint g = wg_linear(), lid = gl_LocalInvocationID.x;
    uint nb = pc.n_head / GS; /* head blocks per query */
    if (g >= pc.n_q * nb) /* whole workgroup leaves: uniform */
        return;
    uint q = g / nb, h0 = (g % nb) * GS;
    uint kvh = h0 / (pc.n_head / pc.n_head_kv); /* GS divides the group: one KV head */
    uint first = RANGES[2u * q];
    uint n_kv = RANGES[2u * q + 1u];
    n_kv = first >= pc.n_ctx ? 0u : min(n_kv, pc.n_ctx - first);

    for (uint d = lid; d < GS * pc.dk; d += WG) { /* the block's heads are adjacent in Q */
        uint e = (d / pc.dk) * MAXD + d % pc.dk;
        qs[e / 4u][e % 4u] = Q[q * pc.q_stride + h0 * pc.dk + d] * pc.scale;
    }
    wg_barrier(); /* qs complete before any lane scores */

    uint kw = pc.dk / 2u, vw = pc.dv / 2u;
    uint k_row = pc.n_head_kv * kw, v_row = pc.n_head_kv * vw; /* words per cache row */
    float m[GS], s[GS];
    vec2 acc[GS * NW]; /* head i's words at i * NW */
    for (uint i = 0u; i < GS; i++) {
        m[i] = NEG_INF;
        s[i] = 0.0;
    }
    for (uint i = 0u; i < GS * NW; i++)
        acc[i] = vec2(0.0);

    for (uint t0 = 0u; t0 < n_kv; t0 += WG) {
        uint j = t0 + lid;
        float sc[GS];
        for (uint i = 0u; i < GS; i++)
            sc[i] = NEG_INF;
        if (j < n_kv) {
            uint kb = pc.k_off + (first + j) * k_row + kvh * kw;
            for (uint i = 0u; i < GS; i++)
                sc[i] = 0.0;
            /* each K word loaded and converted once for the GS heads, two words a step */
            uint w = 0u;
            for (; w + 1u < kw; w += 2u) {
                vec2 a = h2(K[kb + w]), b = h2(K[kb + w + 1u]);
                for (uint i = 0u; i < GS; i++) {
                    vec4 qv = qs[i * (MAXD / 4u) + w / 2u];
                    sc[i] += qv.x * a.x + qv.y * a.y;
                    sc[i] += qv.z * b.x + qv.w * b.y;
                }
            }
            if (w < kw) { /* odd kw: the last word */
                vec2 a = h2(K[kb + w]);
                for (uint i = 0u; i < GS; i++) {
                    vec2 qv = qs[i * (MAXD / 4u) + w / 2u].xy;
                    sc[i] += qv.x * a.x + qv.y * a.y;
                }
            }
        }
        for (uint i = 0u; i < GS; i++)
            ps[(i * WG + lid) / 4u][lid % 4u] = sc[i];
        wg_barrier(); /* the tile's scores are visible to every lane */
        uint nt = min(WG, n_kv - t0);
        float mt[GS];
        for (uint i = 0u; i < GS; i++) { /* rows past n_kv scored -inf: no effect */
            mt[i] = m[i];
            for (uint jq = 0u; jq < WG / 4u; jq++) {
                vec4 v = ps[i * (WG / 4u) + jq];
                mt[i] = max(mt[i], max(max(v.x, v.y), max(v.z, v.w)));
            }
        }
        wg_barrier(); /* every lane has read the scores before they become weights */
        for (uint i = 0u; i < GS; i++) /* one exp per row and head, not one per lane */
            ps[(i * WG + lid) / 4u][lid % 4u] = j < n_kv ? exp(sc[i] - mt[i]) : 0.0;
        wg_barrier(); /* the weights are visible to every lane */
        /* rescale what was accumulated under the old max (nothing on the first tile) */
        for (uint i = 0u; i < GS; i++) {
            float alpha = m[i] == NEG_INF ? 0.0 : exp(m[i] - mt[i]);
            s[i] *= alpha;
            for (uint c = 0u; c < NW; c++)
                acc[i * NW + c] *= alpha;
            m[i] = mt[i];
        }
        vec4 pq[GS]; /* the weights of rows jj & ~3 .. (jj & ~3) + 3 */
        for (uint jj = 0u; jj < nt; jj++) {
            if (jj % 4u == 0u)
                for (uint i = 0u; i < GS; i++)
                    pq[i] = ps[i * (WG / 4u) + jj / 4u];
            float p[GS];
            for (uint i = 0u; i < GS; i++) {
                p[i] = pq[i][jj % 4u];
                s[i] += p[i];
            }
            uint vb = pc.v_off + (first + t0 + jj) * v_row + kvh * vw;
            for (uint c = 0u; c < NW; c++) {
                uint w = lid + c * WG;
                if (w < vw) {
                    vec2 v2 = h2(V[vb + w]); /* loaded and converted once for the GS heads */
                    for (uint i = 0u; i < GS; i++)
                        acc[i * NW + c] += p[i] * v2;
                }
            }
        }
        wg_barrier(); /* ps is overwritten by the next tile */
    }

    for (uint i = 0u; i < GS; i++) {
        float inv = s[i] > 0.0 ? 1.0 / s[i] : 0.0;
        uint ob = q * pc.o_stride + (h0 + i) * pc.dv;
        for (uint c = 0u; c < NW; c++) {
            uint w = lid + c * WG;
            if (w < vw) {
                O[ob + 2u * w] = acc[i * NW + c].x * inv;
                O[ob + 2u * w + 1u] = acc[i * NW + c].y * inv;
            }
        }
    }
}

#endif
