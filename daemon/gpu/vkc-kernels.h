/* Kernel entry points: each records one dispatch (or a few) into a cmd and returns 0 or
 * -errno (-EINVAL bad shape or type, -E2BIG an operand past maxStorageBufferRange, -ENOMEM
 * descriptor or pipeline memory). Operands are (buffer, byte offset) views; offsets of float
 * operands must be multiples of 4 and every binding is made from the buffer's start rounded
 * down to the device's storage offset alignment, so any 4-aligned offset works. Shapes
 * follow tests/ref/ref_ops.h. Recording does not wait; put vkc_cmd_barrier() between
 * dependent kernels. Included by gpu/vkc.h. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

typedef struct vkc_view {
    vkc_buffer_t *buf;
    uint64_t off; /* bytes */
} vkc_view_t;

/* dst[0..n) = src[0..n), n a multiple of 16 bytes: the bandwidth yardstick. */
int vkc_cmd_copy(vkc_cmd_t *cmd, vkc_view_t src, vkc_view_t dst, uint64_t n);

/* Y[v][r] (+)= sum_c W[r][c] * X[v][c] for v < n_vec (1..any; weights are read once per 8
 * vectors), W rows x cols of GGML type `type` (cols a multiple of the block size),
 * X and Y float32 with strides x_stride / y_stride floats (0: cols / rows). */
typedef struct vkc_matvec_args {
    uint32_t type;
    uint32_t rows, cols, n_vec;
    vkc_view_t w, x, y;
    uint32_t x_stride, y_stride;
    bool accumulate; /* add into Y instead of overwriting */
} vkc_matvec_args_t;
int vkc_cmd_matvec(vkc_cmd_t *cmd, const vkc_matvec_args_t *a);
/* True when the type has a matvec kernel. */
bool vkc_matvec_supports(uint32_t type);

/* How matvec maps rows to lanes (see shaders/matvec.comp): layout 0 strides lanes over a
 * row's blocks and reduces with subgroupAdd (GPUs), layout 1 gives each lane whole rows (CPU
 * devices); wg lanes per workgroup; rows per workgroup (layout 0) or per lane (layout 1).
 * Defaults depend on the device type; `moe bench kernels` can override them to compare. */
typedef struct vkc_matvec_tuning {
    uint32_t layout, wg, rows;
} vkc_matvec_tuning_t;
void vkc_matvec_get_tuning(vkc_ctx_t *ctx, vkc_matvec_tuning_t *ret);
int vkc_matvec_set_tuning(vkc_ctx_t *ctx, const vkc_matvec_tuning_t *t);
