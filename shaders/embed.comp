#version 450
/* shaders/embed.comp: embedding row gather with dequantization,
 *   out[t][c] = dequant(W)[ids[t]][c],  t < n_tok, c < cols,
 * for one GGML weight type (TYPE_* define, decoded by dequant.glsl). Each lane decodes one
 * CHUNK (32 elements of a block, or 8 of a float row) of one gathered row, so a dispatch is
 * n_tok * ceil(cols / CHUNK) lanes and no lane waits on another. An id outside [0, n_rows)
 * (a client-controlled token id that slipped through) yields a row of zeros instead of a
 * read past the table.
 *
 * Bindings: 0 W   uint[] weight words, n_rows rows of row_bytes bytes starting at byte w_off
 *           1 IDS int[n_tok] row ids
 *           2 OUT float[] OUT[t * out_stride + c]
 * Push constants (struct vkc_pc_embed in daemon/gpu/vkc-ops2.c):
 *   n_tok, cols, n_rows, row_bytes, w_off, out_stride
 * Specialization: 0 WG workgroup size.
 * Dispatch: x = ceil(n_tok * ceil(cols / CHUNK) / WG) (flattened, wg_linear). */
layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Wb { uint W[]; };
layout(binding = 1) readonly buffer Ib { int IDS[]; };
layout(binding = 2) writeonly buffer Ob { float OUT[]; };

layout(push_constant) uniform PC {
    uint n_tok, cols, n_rows, row_bytes, w_off, out_stride;
} pc;

#define WBUF W
#include "dequant.glsl"

void main()
{
    uint nchunks = (pc.cols + CHUNK - 1u) / CHUNK;
    uint g = wg_linear() * WG + gl_LocalInvocationID.x;
    if (g >= pc.n_tok * nchunks)
        return;
    uint t = g / nchunks, c = g % nchunks;
    uint n = min(uint(CHUNK), pc.cols - c * CHUNK);
    int id = IDS[t];
    float w[CHUNK];
    if (id >= 0 && uint(id) < pc.n_rows) {
        dq_chunk(pc.w_off + uint(id) * pc.row_bytes, c, n, w);
    } else {
        for (uint i = 0u; i < CHUNK; i++)
            w[i] = 0.0;
    }
    uint o = t * pc.out_stride + c * CHUNK;
    for (uint i = 0u; i < n; i++)
        OUT[o + i] = w[i];
}
