/* shaders/dequant.glsl: GGML block decoding, one section per weight type, selected by the
 * TYPE_* macro the build passes to glslc (-DTYPE_Q4_K ...). Byte layouts follow GGML's
 * block structs (ggml-common.h in llama.cpp) and are checked against quant_dequantize() by
 * tests/gpu. Before including, the shader declares `uint W[]` (the weight words) as the
 * buffer named by the macro WBUF.
 *
 * Every type decodes in "chunks" of CHUNK elements of a row:
 *   dq_chunk(row_byte_offset, chunk_index, n_valid, out float w[CHUNK])
 * or, for kernels that fold the scales into their sums (matvec), the raw quants and NG
 * (scale, offset) pairs, one per GS = CHUNK / NG elements:
 *   dq_chunk_q(row_byte_offset, chunk_index, n_valid, out float q[CHUNK], out vec2 dm[NG])
 * element i of chunk c is column c * CHUNK + i. CHUNK is 32 for the 32-element block types,
 * 64 for K-quants (two sub-blocks sharing their bytes) and 16 for F32/F16/BF16 (where a
 * row's length need not be a multiple of 16: DQ_PARTIAL is set and n_valid counts the
 * valid elements). A shader that declares WBUF4 (the same buffer as uvec4[]) and a constant
 * VEC4 != 0 promises 16-aligned rows; decoders then use 16-byte loads where they can. WBUF8
 * (the same buffer as u64vec2[], shaderInt64) makes those 16 bytes two 8-byte words: lavapipe
 * loads lane by lane, one step per component, so that halves its steps.
 * Integers become floats through int (uint-to-float has no AVX2 instruction: LLVM expands
 * it into several). Words are read with as few 32-bit loads as possible: on lavapipe every
 * load costs a scalar loop over the lanes, so load count, not bytes, sets the speed.
 * Row byte offsets are 4-aligned for F32, Q4_1, Q5_1, Q4_K, Q5_K and 2-aligned otherwise. */
#ifndef MOE_DEQUANT_GLSL
#define MOE_DEQUANT_GLSL
/* Fixed-count loops are unrolled ([[unroll]]): a local array indexed by a loop counter that is
 * not a constant after unrolling becomes scratch memory on lavapipe, 10x slower. */
#extension GL_EXT_control_flow_attributes : enable
#include "common.glsl"

/* A 32-bit little-endian word at a 2-aligned byte offset into WBUF. */
uint ld32(uint boff)
{
    uint i = boff >> 2;
    if ((boff & 2u) == 0u)
        return WBUF[i];
    return (WBUF[i] >> 16) | (WBUF[i + 1u] << 16);
}
/* Words i..i+n-1 of the 2-aligned byte range at boff, without a branch: both aligned words
 * are read and shifted (lavapipe runs both sides of a divergent branch anyway). */
uint ldf(uint base, uint sh, uint k)
{
    uint lo = WBUF[base + k], hi = WBUF[base + k + 1u];
    return sh == 0u ? lo : (lo >> 16) | (hi << 16);
}
/* The 16-bit value at a 2-aligned byte offset. */
uint ld16(uint boff)
{
    return (WBUF[boff >> 2] >> ((boff & 2u) * 8u)) & 0xffffu;
}

/* Eight 32-bit words of the 2-aligned byte range at boff (9 loads, no branch). */
void ld8(uint boff, out uint o[8])
{
    uint base = boff >> 2;
    bool mis = (boff & 2u) != 0u;
    uint r[9];
    [[unroll]] for (uint k = 0u; k < 9u; k++)
        r[k] = WBUF[base + k];
    [[unroll]] for (uint k = 0u; k < 8u; k++)
        o[k] = mis ? (r[k] >> 16) | (r[k + 1u] << 16) : r[k];
}
/* Four words of the 2-aligned byte range at boff (5 loads, no branch). */
void ld4(uint boff, out uint o[4])
{
    uint base = boff >> 2;
    bool mis = (boff & 2u) != 0u;
    uint r[5];
    [[unroll]] for (uint k = 0u; k < 5u; k++)
        r[k] = WBUF[base + k];
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        o[k] = mis ? (r[k] >> 16) | (r[k + 1u] << 16) : r[k];
}

#if defined(TYPE_F32)
#define CHUNK 16
#define NG 1
#define DQ_PARTIAL 1
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = (ro >> 2) + c * 16u;
    dm[0] = vec2(1.0, 0.0);
    if (n == 16u) {
        [[unroll]] for (uint i = 0u; i < 16u; i++)
            w[i] = uintBitsToFloat(WBUF[b + i]);
        return;
    }
    [[unroll]] for (uint i = 0u; i < 16u; i++)
        w[i] = i < n ? uintBitsToFloat(WBUF[b + i]) : 0.0;
}
#elif defined(TYPE_F16) || defined(TYPE_BF16)
#define CHUNK 16
#define NG 1
#define DQ_PARTIAL 1
float h2f(uint h)
{
#if defined(TYPE_F16)
    return unpackHalf2x16(h).x;
#else
    return uintBitsToFloat(h << 16);
#endif
}
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = ro + c * 32u;
    dm[0] = vec2(1.0, 0.0);
    if (n == 16u) {
        uint q[8];
        ld8(b, q);
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            w[2u * i] = h2f(q[i] & 0xffffu);
            w[2u * i + 1u] = h2f(q[i] >> 16);
        }
        return;
    }
    [[unroll]] for (uint i = 0u; i < 16u; i++)
        w[i] = i < n ? h2f(ld16(b + 2u * i)) : 0.0;
}
#elif (defined(TYPE_Q4_0) || defined(TYPE_Q8_0)) && defined(DQ_X8)
/* Eight consecutive Q4_0 (18-byte) or Q8_0 (34-byte) blocks per chunk, read with 16-byte
 * loads: 144 or 272 bytes, 9 or 17 uvec4, rows 16-aligned (the includer guarantees it, see
 * matvec's *_x8 modules). Layouts as in the per-block sections below. */
#define CHUNK 256
#define NG 8
#if defined(TYPE_Q4_0)
#define BLOCK_BYTES 18u
#define NV4 9u
#else
#define BLOCK_BYTES 34u
#define NV4 17u
#endif
uint rw(uint r[4u * NV4 + 1u], uint off) /* word at constant 2-aligned byte offset off */
{
    uint i = off >> 2;
    return (off & 2u) != 0u ? (r[i] >> 16) | (r[i + 1u] << 16) : r[i];
}
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b4 = (ro + c * 8u * BLOCK_BYTES) >> 4;
    uint r[4u * NV4 + 1u];
    [[unroll]] for (uint k = 0u; k < NV4; k++) {
#ifdef WBUF8
        u64vec2 e = WBUF8[b4 + k]; /* lavapipe: 8 bytes per step of its per-lane load loop */
        uvec4 t = uvec4(unpackUint2x32(e.x), unpackUint2x32(e.y));
#else
        uvec4 t = WBUF4[b4 + k];
#endif
        r[4u * k] = t.x;
        r[4u * k + 1u] = t.y;
        r[4u * k + 2u] = t.z;
        r[4u * k + 3u] = t.w;
    }
    r[4u * NV4] = 0u;
    [[unroll]] for (uint blk = 0u; blk < 8u; blk++) {
        uint o = blk * BLOCK_BYTES;
        float d = unpackHalf2x16(rw(r, o)).x;
#if defined(TYPE_Q4_0)
        dm[blk] = vec2(d, -8.0 * d);
        [[unroll]] for (uint k = 0u; k < 4u; k++) {
            uint q = rw(r, o + 2u + 4u * k);
            [[unroll]] for (uint i = 0u; i < 4u; i++) {
                w[32u * blk + 4u * k + i] = float(int((q >> (8u * i)) & 15u));
                w[32u * blk + 16u + 4u * k + i] = float(int((q >> (8u * i + 4u)) & 15u));
            }
        }
#else
        dm[blk] = vec2(d, 0.0);
        [[unroll]] for (uint k = 0u; k < 8u; k++) {
            uint q = rw(r, o + 2u + 4u * k);
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                w[32u * blk + 4u * k + i] = float(s8(q, i));
        }
#endif
    }
}
#elif defined(TYPE_Q4_0) || defined(TYPE_Q4_1)
/* Q4_0: {f16 d; u8 qs[16]} 18 bytes, w = d * (q - 8).
 * Q4_1: {f16 d, m; u8 qs[16]} 20 bytes, w = d * q + m.
 * Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble. */
#define CHUNK 32
#define NG 1
#if defined(TYPE_Q4_0)
#define BLOCK_BYTES 18u
#define QS_OFF 2u
#else
#define BLOCK_BYTES 20u
#define QS_OFF 4u
#endif
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = ro + c * BLOCK_BYTES;
#if defined(TYPE_Q4_0)
    /* the 18 bytes lie in 5 words whatever the 2-byte phase of b */
    uint r[5];
    [[unroll]] for (uint k = 0u; k < 5u; k++)
        r[k] = WBUF[(b >> 2) + k];
    bool mis = (b & 2u) != 0u;
    float d = unpackHalf2x16(mis ? r[0] >> 16 : r[0]).x;
    dm[0] = vec2(d, -8.0 * d);
    uint q[4];
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        q[k] = mis ? r[k + 1u] : (r[k] >> 16) | (r[k + 1u] << 16);
#else
    uint h = WBUF[b >> 2];
    dm[0] = unpackHalf2x16(h);
    uint q[4];
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        q[k] = WBUF[(b >> 2) + 1u + k];
#endif
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            w[4u * k + i] = float(int((q[k] >> (8u * i)) & 15u));
            w[16u + 4u * k + i] = float(int((q[k] >> (8u * i + 4u)) & 15u));
        }
}
#elif defined(TYPE_Q5_0) || defined(TYPE_Q5_1)
/* Q5_0: {f16 d; u8 qh[4]; u8 qs[16]} 22 bytes, w = d * (q - 16).
 * Q5_1: {f16 d, m; u8 qh[4]; u8 qs[16]} 24 bytes, w = d * q + m.
 * q of element j < 16: low nibble of qs[j] | bit j of qh << 4; of j + 16: high nibble of
 * qs[j] | bit j + 16 of qh << 4. */
#define CHUNK 32
#define NG 1
#if defined(TYPE_Q5_0)
#define BLOCK_BYTES 22u
#else
#define BLOCK_BYTES 24u
#endif
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = ro + c * BLOCK_BYTES;
#if defined(TYPE_Q5_0)
    uint h[2];
    h[0] = ld32(b);
    float d = f16_lo(h[0]);
    dm[0] = vec2(d, -16.0 * d);
    uint q[4];
    ld4(b + 6u, q);
    uint qh = (h[0] >> 16) | (ld16(b + 4u) << 16);
#else
    uint h0 = WBUF[b >> 2];
    dm[0] = unpackHalf2x16(h0);
    uint qh = WBUF[(b >> 2) + 1u];
    uint q[4];
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        q[k] = WBUF[(b >> 2) + 2u + k];
#endif
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            uint j = 4u * k + i;
            uint lo = ((q[k] >> (8u * i)) & 15u) | (((qh >> j) & 1u) << 4);
            uint hi = ((q[k] >> (8u * i + 4u)) & 15u) | (((qh >> (j + 16u)) & 1u) << 4);
            w[j] = float(int(lo));
            w[16u + j] = float(int(hi));
        }
}
#elif defined(TYPE_Q8_0)
/* Q8_0: {f16 d; i8 qs[32]} 34 bytes, w = d * q. */
#define CHUNK 32
#define NG 1
#define BLOCK_BYTES 34u
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = ro + c * BLOCK_BYTES;
    /* the 34 bytes lie in 9 words whatever the 2-byte phase of b */
    uint r[9];
    [[unroll]] for (uint k = 0u; k < 9u; k++)
        r[k] = WBUF[(b >> 2) + k];
    bool mis = (b & 2u) != 0u;
    dm[0] = vec2(unpackHalf2x16(mis ? r[0] >> 16 : r[0]).x, 0.0);
    uint q[8];
    [[unroll]] for (uint k = 0u; k < 8u; k++)
        q[k] = mis ? r[k + 1u] : (r[k] >> 16) | (r[k + 1u] << 16);
    [[unroll]] for (uint k = 0u; k < 8u; k++)
        [[unroll]] for (uint i = 0u; i < 4u; i++)
            w[4u * k + i] = float(s8(q[k], i));
}
#elif defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
/* Q4_K: {f16 d, dmin; u8 scales[12]; u8 qs[128]} 144 bytes per 256 elements.
 * Q5_K: {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} 176 bytes.
 * Sub-block j (0..7) of 32 elements has a 6-bit scale sc and min m packed in scales[]
 * (GGML's get_scale_min_k4), w = d * sc * q - dmin * m; q is the low (j even) or high (j odd)
 * nibble of qs[32 * (j / 2) + l], plus, for Q5_K, bit j of qh[l] << 4.
 * A chunk is the 64 elements of sub-blocks 2g and 2g + 1, which share their qs bytes. */
#define CHUNK 64
#define NG 2
#if defined(TYPE_Q4_K)
#define BLOCK_BYTES 144u
#define QS_OFF 16u
#else
#define BLOCK_BYTES 176u
#define QS_OFF 48u
#endif
/* scale and min of sub-block j from the scales words s0 (bytes 0-3), s1 (4-7), s2 (8-11) */
vec2 k4_scale_min(uint j, uint s0, uint s1, uint s2)
{
    /* branch-free: j differs between lanes, and lavapipe would run both sides */
    int sh = int(8u * (j & 3u));
    uint a0 = bitfieldExtract(s0, sh, 8), a1 = bitfieldExtract(s1, sh, 8);
    uint a2 = bitfieldExtract(s2, sh, 8);
    uint lo_sc = a0 & 63u, lo_m = a1 & 63u;                /* j < 4 */
    uint hi_sc = (a2 & 15u) | ((a0 >> 6) << 4);             /* j >= 4 */
    uint hi_m = (a2 >> 4) | ((a1 >> 6) << 4);
    return j < 4u ? vec2(float(int(lo_sc)), float(int(lo_m))) : vec2(float(int(hi_sc)), float(int(hi_m)));
}
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint bw = (ro + (c >> 2) * BLOCK_BYTES) >> 2, g = c & 3u;
    uint qb = bw + QS_OFF / 4u + 8u * g;
    uvec4 hd, q0, q1;
#ifdef WBUF8
    if (VEC4 != 0u) {
        /* 8-byte words: lavapipe's per-lane load loop then moves 8 bytes a step, not 4 */
        u64vec2 a = WBUF8[bw >> 2], b = WBUF8[qb >> 2], e = WBUF8[(qb >> 2) + 1u];
        hd = uvec4(unpackUint2x32(a.x), unpackUint2x32(a.y));
        q0 = uvec4(unpackUint2x32(b.x), unpackUint2x32(b.y));
        q1 = uvec4(unpackUint2x32(e.x), unpackUint2x32(e.y));
    } else
#endif
#ifdef WBUF4
    if (VEC4 != 0u) {
        /* rows 16-aligned (spec constant): 16-byte loads, one lavapipe lane loop each */
        hd = WBUF4[bw >> 2];
        q0 = WBUF4[qb >> 2];
        q1 = WBUF4[(qb >> 2) + 1u];
    } else
#endif
    {
        hd = uvec4(WBUF[bw], WBUF[bw + 1u], WBUF[bw + 2u], WBUF[bw + 3u]);
        q0 = uvec4(WBUF[qb], WBUF[qb + 1u], WBUF[qb + 2u], WBUF[qb + 3u]);
        q1 = uvec4(WBUF[qb + 4u], WBUF[qb + 5u], WBUF[qb + 6u], WBUF[qb + 7u]);
    }
    uint qw[8] = uint[8](q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w);
    float d = f16_lo(hd.x), dmin = f16_hi(hd.x);
    vec2 a = k4_scale_min(2u * g, hd.y, hd.z, hd.w) * vec2(d, dmin);
    vec2 z = k4_scale_min(2u * g + 1u, hd.y, hd.z, hd.w) * vec2(d, dmin);
    dm[0] = vec2(a.x, -a.y);
    dm[1] = vec2(z.x, -z.y);
    [[unroll]] for (uint k = 0u; k < 8u; k++) {
        uint q = qw[k];
#if defined(TYPE_Q5_K)
        uint qh = WBUF[bw + 4u + k] >> (2u * g);
#endif
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            uint lo = (q >> (8u * i)) & 15u, hi = (q >> (8u * i + 4u)) & 15u;
#if defined(TYPE_Q5_K)
            lo |= ((qh >> (8u * i)) & 1u) << 4;
            hi |= ((qh >> (8u * i + 1u)) & 1u) << 4;
#endif
            w[4u * k + i] = float(int(lo));
            w[32u + 4u * k + i] = float(int(hi));
        }
    }
}
#elif defined(TYPE_Q6_K)
/* Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} 210 bytes per 256 elements.
 * Quarter k (0..3) of half n (0, 1), element l < 32, is element 128 n + 32 k + l:
 * q = (nibble (k / 2) of ql[64 n + 32 (k % 2) + l]) | (bits 2k..2k+1 of qh[32 n + l]) << 4,
 * w = d * scales[8 n + 2 k + l / 16] * (q - 32).
 * A chunk is quarters k0 = 2 (c % 2) and k0 + 1 of half n = (c / 2) % 2: they share the qh
 * bytes, the ql nibble and four consecutive scales. With DQ_HALF a chunk is all of half
 * n = c % 2 (128 elements, eight scales): the ql and qh bytes a 64-element chunk reads hold
 * the quants of both, so this halves the loads per weight (matmul _half_sg modules, tiles of
 * up to 4 vectors: 128 x values per vector stay live). */
#if defined(DQ_HALF)
#define CHUNK 128
#define NG 8
#else
#define CHUNK 64
#define NG 4
#endif
#define BLOCK_BYTES 210u
/* The bytes a chunk needs are read as the aligned 16-byte units (uvec4, or u64vec2 where the
 * shader has WBUF8) that hold them, and realigned with selects: rows and blocks are only
 * 2-aligned, and the phase differs between lanes (matvec: lanes decode different blocks), so
 * a branch would be divergent and lavapipe would run both sides. ql (64 bytes) takes 5 units,
 * qh (32) 3, instead of 26 32-bit loads; every unit lies within the block (qh's last ends by
 * byte 208). On lavapipe each load is a scalar loop over the lanes: 11 loads, not 30. */
#if defined(WBUF4) || defined(WBUF8)
uvec4 q6_unit(uint i)
{
#ifdef WBUF8
    u64vec2 e = WBUF8[i];
    return uvec4(unpackUint2x32(e.x), unpackUint2x32(e.y));
#else
    return WBUF4[i];
#endif
}
#endif
/* NAME(boff, o): o[k] = the word at byte boff + 4 k (boff 2-aligned), k < N (N a multiple
 * of 4). With a 16-byte view: the N / 4 + 1 units that hold the range, realigned in three
 * steps (8 bytes, 4 bytes, then a 0- or 16-bit funnel shift); without one: the N + 1 words
 * that hold it. A macro because GLSL arrays need constant sizes: q6_ld16w, q6_ld8w. */
#if !defined(WBUF4) && !defined(WBUF8)
#define Q6_LDW(NAME, N)                                                                    \
    void NAME(uint boff, out uint o[N])                                                    \
    {                                                                                      \
        uint r[N + 1];                                                                     \
        [[unroll]] for (uint k = 0u; k < N + 1u; k++)                                      \
            r[k] = WBUF[(boff >> 2) + k];                                                  \
        [[unroll]] for (uint k = 0u; k < N; k++)                                           \
            o[k] = (boff & 2u) != 0u ? (r[k] >> 16) | (r[k + 1u] << 16) : r[k];            \
    }
#else
#define Q6_LDW(NAME, N)                                                                    \
    void NAME(uint boff, out uint o[N])                                                    \
    {                                                                                      \
        uint u[N + 4];                                                                     \
        [[unroll]] for (uint k = 0u; k < N / 4u + 1u; k++) {                              \
            uvec4 t = q6_unit((boff >> 4) + k);                                            \
            u[4u * k] = t.x;                                                               \
            u[4u * k + 1u] = t.y;                                                          \
            u[4u * k + 2u] = t.z;                                                          \
            u[4u * k + 3u] = t.w;                                                          \
        }                                                                                  \
        bool h8 = (boff & 8u) != 0u, h4 = (boff & 4u) != 0u;                               \
        uint e[N + 2], a[N + 1], sh = (boff & 2u) * 8u;                                    \
        [[unroll]] for (uint k = 0u; k < N + 2u; k++)                                      \
            e[k] = h8 ? u[k + 2u] : u[k];                                                  \
        [[unroll]] for (uint k = 0u; k < N + 1u; k++)                                      \
            a[k] = h4 ? e[k + 1u] : e[k];                                                  \
        [[unroll]] for (uint k = 0u; k < N; k++)                                           \
            o[k] = (a[k] >> sh) | ((a[k + 1u] << 1) << (31u - sh));                        \
    }
#endif
Q6_LDW(q6_ld16w, 16)
Q6_LDW(q6_ld8w, 8)
#if defined(DQ_HALF)
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = ro + (c >> 1) * BLOCK_BYTES, hn = c & 1u;
    float d = unpackHalf2x16(ld16(b + 208u)).x;
    uint sb = (b + 192u + 8u * hn) >> 2, ss = b & 2u; /* the eight scales: 3 words */
    uint s3[3] = uint[3](WBUF[sb], WBUF[sb + 1u], WBUF[sb + 2u]);
    uint sc[2];
    [[unroll]] for (uint k = 0u; k < 2u; k++)
        sc[k] = ss != 0u ? (s3[k] >> 16) | (s3[k + 1u] << 16) : s3[k];
    uint ql[16], qh[8];
    q6_ld16w(b + 64u * hn, ql);
    q6_ld8w(b + 128u + 32u * hn, qh);
    [[unroll]] for (uint g = 0u; g < 8u; g++)
        dm[g] = vec2(d * float(s8(sc[g >> 2], g & 3u)), 0.0);
    /* four quants a word, as below */
    [[unroll]] for (uint k = 0u; k < 4u; k++)
        [[unroll]] for (uint t = 0u; t < 8u; t++) {
            uint l = ((ql[t + 8u * (k & 1u)] >> (4u * (k >> 1))) & 0x0f0f0f0fu);
            uint p = (l | (((qh[t] >> (2u * k)) << 4) & 0x30303030u)) ^ 0x20202020u;
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                w[32u * k + 4u * t + i] = float(bitfieldExtract(int(p), int(8u * i), 6));
        }
}
#else
void dq_chunk_q(uint ro, uint c, uint n, out float w[CHUNK], out vec2 dm[NG])
{
    uint b = ro + (c >> 2) * BLOCK_BYTES, hn = (c >> 1) & 1u, k0 = 2u * (c & 1u);
    float d = unpackHalf2x16(ld16(b + 208u)).x;
    uint sc = ldf((b + 192u + 8u * hn + 2u * k0) >> 2, b & 2u, 0u);
    uint ql[16], qh[8];
    q6_ld16w(b + 64u * hn, ql);
    q6_ld8w(b + 128u + 32u * hn, qh);
    [[unroll]] for (uint g = 0u; g < 4u; g++)
        dm[g] = vec2(d * float(s8(sc, g)), 0.0);
    /* four quants a word: nibble k0 / 2 of ql | the qh bit pair << 4, then q - 32 is the
     * 6-bit two's complement of q ^ 32 (sign-extended by bitfieldExtract) */
    uint sh = 2u * k0; /* nibble shift 0 or 4, and the qh bits of quarter k0 */
    [[unroll]] for (uint t = 0u; t < 8u; t++) {
        uint h = qh[t] >> sh;
        uint pa = (((ql[t] >> sh) & 0x0f0f0f0fu) | ((h << 4) & 0x30303030u)) ^ 0x20202020u;
        uint pb = (((ql[t + 8u] >> sh) & 0x0f0f0f0fu) | ((h << 2) & 0x30303030u)) ^ 0x20202020u;
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            w[4u * t + i] = float(bitfieldExtract(int(pa), int(8u * i), 6));
            w[32u + 4u * t + i] = float(bitfieldExtract(int(pb), int(8u * i), 6));
        }
    }
}
#endif
#else
#error "dequant.glsl: no TYPE_* defined"
#endif

/* Group g of a chunk is elements [g * GS, (g + 1) * GS): each group has one scale and offset. */
#define GS (CHUNK / NG)

/* The chunk's weights: w[i] = q[i] * dm[i / GS].x + dm[i / GS].y. */
void dq_chunk(uint ro, uint c, uint n, out float w[CHUNK])
{
    vec2 dm[NG];
    dq_chunk_q(ro, c, n, w, dm);
    [[unroll]] for (uint i = 0u; i < CHUNK; i++)
        w[i] = w[i] * dm[i / GS].x + dm[i / GS].y;
}


#endif
