#version 450
/* shaders/moe_ffn.comp: the expert FFN through a slot table, in three phases.
 *
 * An entry e = (token t, weight g, slot s, row r) asks for expert slot s applied to token t:
 *   PHASE_UP   (TYPE_* = gate/up type):  H[r][i] = silu(gate_s[i] . X[t]) * (up_s[i] . X[t])
 *   PHASE_DOWN (TYPE_* = down type):     Y[r][c] = g * (down_s[c] . H[r])
 *   PHASE_COMBINE (no type):             OUT[t][c] (+)= sum_{j < k} Y[t k + j][c], j in order
 * gate_s, up_s are [n_ff][n_embd] and down_s [n_embd][n_ff], GGML-quantized; gate and up
 * share a type, down may differ (real MoE GGUFs mix Q4_K and Q6_K), which is why up and
 * down are separate dispatches, each compiled for one type.
 *
 * Why a slot table of buffer device addresses: the expert cache's slots live in several
 * buffers (each within maxStorageBufferRange, 128 MiB on lavapipe), and a dispatch touches
 * any subset of them. Descriptor arrays would cap the number of buffers per dispatch and tie
 * the pipeline layout to it; a 64-bit address per matrix reaches every slot of every buffer
 * through one small table the engine rewrites when residency changes.
 * SLOTS[s] is 8 words: gate, up, down addresses as (lo, hi) pairs, then 2 words of padding
 * (struct vkc_moe_slot). Addresses must be 16-aligned; rows are read with the 2-aligned
 * word loads of dequant.glsl.
 *
 * Why three phases: numerics must not depend on where experts live or how many are resident
 * (DESIGN.md). Each entry's weighted output goes to its own row Y[r] (r = t k + j for the
 * token's j-th expert), whichever pass computed it; the combine sums a token's k rows in the
 * fixed order j = 0..k-1. Splitting the entries over several passes (some experts loaded
 * later) therefore gives bit-identical results.
 *
 * Bindings (UP):      0 SLOTS uint[], 1 ENTRIES uint[4 n_entries], 2 X float[], 3 H float[]
 * Bindings (DOWN):    0 SLOTS uint[], 1 ENTRIES uint[4 n_entries], 2 H float[], 3 Y float[]
 * Bindings (COMBINE): 0 Y float[], 1 OUT float[]
 * ENTRIES[4 e ..]: token, weight (float bits), slot, row. X[t * x_stride + c];
 * H[r * n_ff + i]; Y[r * n_embd + c]; OUT[t * out_stride + c].
 * Push constants (struct vkc_pc_moe in daemon/gpu/vkc-ops2.c):
 *   n_entries, n_embd, n_ff, row_bytes (of the phase's matrix rows), x_stride, n_slots,
 *   n_tok, k, out_stride, accum, n_rows (of H and Y)
 * Entries with an out-of-range slot, token or row are skipped (their rows keep what they held).
 * Specialization: 0 WG workgroup size.
 * Dispatch (UP, DOWN): x = ceil(n_ff or n_embd / WG) (flattened, wg_linear), z = entry;
 * a lane owns one output row and walks its whole dot product, so no reduction is needed
 * (the layout that suits CPU devices; see matvec.comp's LAYOUT 1).
 * Dispatch (COMBINE): x = ceil(n_tok * n_embd / WG). */
layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform PC {
    uint n_entries, n_embd, n_ff, row_bytes, x_stride, n_slots, n_tok, k, out_stride, accum;
    uint n_rows;
} pc;

#ifdef PHASE_COMBINE
#include "common.glsl"

layout(binding = 0) readonly buffer Yb { float Y[]; };
layout(binding = 1) buffer Ob { float OUT[]; };

void main()
{
    uint g = wg_linear() * WG + gl_LocalInvocationID.x;
    if (g >= pc.n_tok * pc.n_embd)
        return;
    uint t = g / pc.n_embd, c = g % pc.n_embd;
    float sum = 0.0;
    for (uint j = 0u; j < pc.k; j++)
        sum += Y[(t * pc.k + j) * pc.n_embd + c];
    uint o = t * pc.out_stride + c;
    OUT[o] = pc.accum != 0u ? OUT[o] + sum : sum;
}

#else
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(buffer_reference, std430, buffer_reference_align = 4) readonly buffer WRef { uint w[]; };

layout(binding = 0) readonly buffer Sb { uint SLOTS[]; };
layout(binding = 1) readonly buffer Eb { uint ENTRIES[]; };
layout(binding = 2) readonly buffer Ib { float IN[]; };
layout(binding = 3) writeonly buffer Rb { float RES[]; };

WRef wr; /* the matrix dq_chunk reads: set before each call */
#define WBUF wr.w
#include "dequant.glsl"

WRef matrix(uint s, uint which)
{
    return WRef(uvec2(SLOTS[8u * s + 2u * which], SLOTS[8u * s + 2u * which + 1u]));
}

void main()
{
    uint e = gl_WorkGroupID.z;
    uint row = wg_linear() * WG + gl_LocalInvocationID.x;
    uint t = ENTRIES[4u * e], s = ENTRIES[4u * e + 2u], r = ENTRIES[4u * e + 3u];
    float weight = uintBitsToFloat(ENTRIES[4u * e + 1u]);
    if (s >= pc.n_slots || t >= pc.n_tok || r >= pc.n_rows)
        return;
#ifdef PHASE_UP
    if (row >= pc.n_ff)
        return;
    uint cols = pc.n_embd, xb = t * pc.x_stride;
    WRef gate = matrix(s, 0u), up = matrix(s, 1u);
    float ag = 0.0, au = 0.0;
#else
    if (row >= pc.n_embd)
        return;
    uint cols = pc.n_ff, xb = r * pc.n_ff;
    wr = matrix(s, 2u);
    float acc = 0.0;
#endif
    uint ro = row * pc.row_bytes;
    uint nchunks = (cols + CHUNK - 1u) / CHUNK;
    for (uint c = 0u; c < nchunks; c++) {
        uint n = min(uint(CHUNK), cols - c * CHUNK);
        float w[CHUNK];
#ifdef PHASE_UP
        float w2[CHUNK];
        wr = gate;
        dq_chunk(ro, c, n, w);
        wr = up;
        dq_chunk(ro, c, n, w2);
#else
        dq_chunk(ro, c, n, w);
#endif
        for (uint i = 0u; i < n; i++) {
            float x = IN[xb + c * CHUNK + i];
#ifdef PHASE_UP
            ag += w[i] * x;
            au += w2[i] * x;
#else
            acc += w[i] * x;
#endif
        }
    }
#ifdef PHASE_UP
    RES[r * pc.n_ff + row] = ag / (1.0 + exp(-ag)) * au; /* SwiGLU: silu(gate) * up */
#else
    RES[r * pc.n_embd + row] = weight * acc;
#endif
}
#endif
