/* shaders/common.glsl: helpers shared by every kernel.
 *
 * Weight and byte buffers are bound as uint[] (32-bit words) so that no shader needs the
 * 8/16-bit storage features: GGML blocks are 18, 22 or 34 bytes long, so a block may start at
 * a 2-byte boundary; ld32() reads a 32-bit little-endian word at any 2-aligned byte offset.
 * Half floats use unpackHalf2x16 (core GLSL 4.20), bfloat16 is the top half of an f32. */
#ifndef MOE_COMMON_GLSL
#define MOE_COMMON_GLSL

/* Flattened workgroup index for dispatches that spread rows over x and y (x <= 65535). */
uint wg_linear()
{
    return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

float f16_lo(uint w) { return unpackHalf2x16(w).x; }
float f16_hi(uint w) { return unpackHalf2x16(w).y; }
float bf16_lo(uint w) { return uintBitsToFloat(w << 16); }
float bf16_hi(uint w) { return uintBitsToFloat(w & 0xffff0000u); }

/* Signed byte k (0..3) of a word. */
int s8(uint w, uint k) { return bitfieldExtract(int(w), int(8u * k), 8); }
/* Unsigned byte k (0..3) of a word. */
uint u8(uint w, uint k) { return bitfieldExtract(w, int(8u * k), 8); }

#endif
