#version 450
/* shaders/copy.comp: dst = src, 16 bytes per lane per step, a grid-stride loop. The
 * bandwidth yardstick: `moe bench kernels` reports matvec bytes/s against this kernel's
 * bytes/s on the same device in the same run.
 * Bindings: 0 src uvec4[], 1 dst uvec4[].
 * Push constants (struct vkc_pc_copy): n16 = number of 16-byte units.
 * Specialization: 0 WG workgroup size. Dispatch: any number of workgroups along x. */
layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(binding = 0) readonly buffer Src { uvec4 src[]; };
layout(binding = 1) writeonly buffer Dst { uvec4 dst[]; };
layout(push_constant) uniform PC { uint n16; } pc;

void main()
{
    uint stride = gl_NumWorkGroups.x * WG;
    for (uint i = gl_GlobalInvocationID.x; i < pc.n16; i += stride)
        dst[i] = src[i];
}
