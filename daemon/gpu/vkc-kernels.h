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

/* Y[v][r] (+)= sum_c W[r][c] * X[v][c] for v < n_vec (1..any), W rows x cols of GGML type
 * `type` (cols a multiple of the block size; w.off a multiple of 4), X and Y float32 with strides
 * x_stride / y_stride floats (0: cols / rows). Below the tuning's mm_min_vec vectors the
 * matrix-vector kernel runs (weights read once per 8 vectors); from it on the tiled matrix-matrix
 * kernel (shaders/matmul.comp, weights read and decoded once per tile of mm_vecs vectors): on
 * GPUs from 16 vectors on, on CPU devices from one (faster there at every batch size). Both
 * give the same results within float rounding. */
typedef struct vkc_matvec_args {
    uint32_t type;
    uint32_t rows, cols, n_vec;
    vkc_view_t w, x, y;
    uint32_t x_stride, y_stride;
    bool accumulate; /* add into Y instead of overwriting */
} vkc_matvec_args_t;
int vkc_cmd_matvec(vkc_cmd_t *cmd, const vkc_matvec_args_t *a);
/* Many matrices of one type and shape in one buffer, each times its own run of vectors, in
 * one dispatch (shaders/matmul.comp, MM_GROUPED): group g multiplies the matrix at byte
 * w.off + w_off by vectors x_vec .. x_vec + n_vec - 1 of X (x_stride floats apart, default
 * cols) into vectors y_vec.. of Y (y_stride, default rows). Groups with no vectors are skipped.
 * The groups are checked against the bindings (-EINVAL) and written into `table`, 16 bytes
 * each, which must be host-mapped and stay untouched until the submission completes. For the
 * expert FFN of a batch: one dispatch for all experts instead of one each. */
typedef struct vkc_matmul_group {
    uint64_t w_off;
    uint32_t x_vec, n_vec, y_vec;
} vkc_matmul_group_t;
typedef struct vkc_matmul_grouped_args {
    uint32_t type, rows, cols;
    vkc_view_t w, x, y, table;
    uint32_t x_stride, y_stride;
    const vkc_matmul_group_t *groups;
    uint32_t n_groups;
} vkc_matmul_grouped_args_t;
int vkc_cmd_matmul_grouped(vkc_cmd_t *cmd, const vkc_matmul_grouped_args_t *a);
/* True when the type has a matvec (and matmul) kernel. */
bool vkc_matvec_supports(uint32_t type);

/* How matvec maps rows to lanes (see shaders/matvec.comp): wg lanes per workgroup (a power
 * of two) stride over the blocks of `rows` rows (1..32) and reduce with subgroupAdd. And when
 * and how the tiled matmul runs (shaders/matmul.comp): from mm_min_vec vectors on (UINT32_MAX:
 * never), mm_wg lanes (a power of two) of mm_rows rows each (1..8) by mm_vecs vectors (1..16);
 * mm_sg shares x through subgroupShuffle (CPU devices; needs mm_wg == the subgroup size and
 * the device's shuffle operations and shaderInt64). Defaults depend on the device type; a zero
 * mm_* field given to set_tuning keeps its current value, so {wg, rows} changes only matvec.
 * `moe bench kernels --tuning` overrides them to compare. */
typedef struct vkc_matvec_tuning {
    uint32_t wg, rows;
    uint32_t mm_min_vec, mm_wg, mm_rows, mm_vecs;
    uint32_t mm_sg; /* 1 subgroupShuffle, 2 plain loads (0 at set_tuning: the default) */
} vkc_matvec_tuning_t;
void vkc_matvec_get_tuning(vkc_ctx_t *ctx, vkc_matvec_tuning_t *ret);
int vkc_matvec_set_tuning(vkc_ctx_t *ctx, const vkc_matvec_tuning_t *t);

/* ---- norms, RoPE, element-wise, routing (vkc-ops.c) ------------------------------------ */

/* out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * w[(r % w_rows)][i] for r < n_rows,
 * i < n (ref_rmsnorm per row). Whole row: n = n_embd, a row per token. Per head: n =
 * head_dim, a row per (token, head). w.buf NULL: no weight. Strides in floats (0: n); out
 * may be x (in place). */
typedef struct vkc_rmsnorm_args {
    uint32_t n, n_rows;
    vkc_view_t x, w, out;
    uint32_t x_stride, out_stride, w_rows; /* w_rows 0 means 1 */
    float eps;
} vkc_rmsnorm_args_t;
int vkc_cmd_rmsnorm(vkc_cmd_t *cmd, const vkc_rmsnorm_args_t *a);

/* RoPE in place on x[t][h][0..head_dim) at positions pos[t] (int32 on the device), as
 * ref_rope: NORM (neox false) or NEOX pairs of the first n_rot dims. Strides in floats
 * (0: n_head * head_dim and head_dim). */
typedef struct vkc_rope_args {
    uint32_t n_tok, n_head, head_dim, n_rot;
    vkc_view_t x, pos;
    uint32_t tok_stride, head_stride;
    bool neox;
    float freq_base, freq_scale;
} vkc_rope_args_t;
int vkc_cmd_rope(vkc_cmd_t *cmd, const vkc_rope_args_t *a);

enum vkc_eltwise_op {
    VKC_ADD = 0,      /* out = a + b */
    VKC_SCALE = 1,    /* out = s * a */
    VKC_ACCUM = 2,    /* out += s * wt(i) * a: weighted accumulate */
    VKC_SWIGLU = 3,   /* out = silu(a) * b (a = gate, b = up) */
    VKC_SIG_GATE = 4, /* out = a * sigmoid(b) */
    VKC_MUL = 5,      /* out = a * b */
};
/* How b is indexed for ADD, SWIGLU, SIG_GATE and MUL. */
enum vkc_bcast {
    VKC_B_FULL = 0,    /* b[i] */
    VKC_B_ROW = 1,     /* b[i % row]: one row added to every row (a bias) */
    VKC_B_PER_ROW = 2, /* b[i / row]: one value per row (a per-token gate) */
};
/* n floats; out may alias a or b. For VKC_ACCUM with wt.buf set, element i is weighted by
 * wt[(i / row) * wt_stride + wt_index] (an expert's weight per token: row = n_embd). */
typedef struct vkc_eltwise_args {
    enum vkc_eltwise_op op;
    uint32_t n;
    vkc_view_t a, b, out, wt;
    float s;
    uint32_t row, wt_stride, wt_index;
    enum vkc_bcast b_mode; /* row must be set for ROW and PER_ROW */
} vkc_eltwise_args_t;
int vkc_cmd_eltwise(vkc_cmd_t *cmd, const vkc_eltwise_args_t *a);

/* Routing of n_tok tokens as ref_route: logits[t][n_expert] (stride l_stride floats, 0:
 * n_expert) -> ids int32[t][k] and weights float[t][k]. n_expert <= 4096, k <= n_expert. */
typedef struct vkc_router_args {
    uint32_t n_tok, n_expert, k;
    vkc_view_t logits, ids, weights;
    uint32_t l_stride;
    bool gating_sigmoid, norm_topk;
    float scale;
} vkc_router_args_t;
int vkc_cmd_router(vkc_cmd_t *cmd, const vkc_router_args_t *a);
