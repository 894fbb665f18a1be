/* vkc-ops.c: C entry points of the small per-token kernels: RMSNorm (shaders/rmsnorm.comp),
 * RoPE (rope.comp), element-wise add/scale/weighted accumulate/SwiGLU/sigmoid gate
 * (eltwise.comp) and the MoE router (router.comp). Each checks shapes, fills the push-constant
 * struct mirroring its shader's block (size asserted) and records one dispatch. Float
 * operands must sit at offsets the device can bind directly (a multiple of the storage offset
 * alignment); bigger kernels are in vkc-kernels.c. Called while recording a cmd. */
#include <errno.h>

#include "gpu/vkc-internal.h"

static uint32_t groups_for(uint64_t n, uint32_t wg)
{
    return (uint32_t)((n + wg - 1) / wg);
}

/* Float operands are bound at their own offset: it must need no skew. */
static bool aligned(const vkc_cmd_t *cmd, vkc_view_t v)
{
    return v.buf && vkc_bind_skew(cmd->ctx, v.off) == 0;
}

struct vkc_pc_rmsnorm {
    uint32_t n, n_rows, x_stride, out_stride, w_rows, has_w;
    float eps;
};
_Static_assert(sizeof(struct vkc_pc_rmsnorm) == 28, "mirrors PC in shaders/rmsnorm.comp");

int vkc_cmd_rmsnorm(vkc_cmd_t *cmd, const vkc_rmsnorm_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t xs = a->x_stride ? a->x_stride : a->n, os = a->out_stride ? a->out_stride : a->n;
    uint32_t w_rows = a->w_rows ? a->w_rows : 1;
    bool has_w = a->w.buf != NULL;
    if (a->n == 0 || a->n_rows == 0 || xs < a->n || os < a->n || !aligned(cmd, a->x) ||
        !aligned(cmd, a->out) || (has_w && !aligned(cmd, a->w)))
        return vkc_cmd_fail(cmd, -EINVAL);
    /* CPU devices: a workgroup of one subgroup, reduced by subgroupAdd without barriers */
    bool one_sg = ctx->info.type == VKC_DEVICE_CPU && ctx->info.subgroup_arithmetic;
    uint32_t wg = ctx->info.type == VKC_DEVICE_CPU ? ctx->info.subgroup_size : 64;
    uint32_t spec[2] = {wg, ctx->info.subgroup_arithmetic};
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, one_sg ? "rmsnorm_sg" : "rmsnorm", spec, 2, 3,
                             sizeof(struct vkc_pc_rmsnorm), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_rmsnorm pc = {a->n, a->n_rows, xs, os, w_rows, has_w, a->eps};
    vkc_bind_t b[3] = {
        {a->x.buf, a->x.off, ((uint64_t)(a->n_rows - 1) * xs + a->n) * 4},
        {has_w ? a->w.buf : a->x.buf, has_w ? a->w.off : a->x.off,
         has_w ? (uint64_t)w_rows * a->n * 4 : 4},
        {a->out.buf, a->out.off, ((uint64_t)(a->n_rows - 1) * os + a->n) * 4},
    };
    return vkc_cmd_dispatch(cmd, p, b, 3, &pc, a->n_rows, 1);
}

struct vkc_pc_rope {
    uint32_t n_tok, n_head, head_dim, n_rot, tok_stride, head_stride, neox;
    float freq_base, freq_scale;
};
_Static_assert(sizeof(struct vkc_pc_rope) == 36, "mirrors PC in shaders/rope.comp");

int vkc_cmd_rope(vkc_cmd_t *cmd, const vkc_rope_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t hs = a->head_stride ? a->head_stride : a->head_dim;
    uint32_t ts = a->tok_stride ? a->tok_stride : a->n_head * hs;
    if (a->n_tok == 0 || a->n_head == 0 || a->n_rot % 2 || a->n_rot > a->head_dim ||
        hs < a->head_dim || !aligned(cmd, a->x) || !aligned(cmd, a->pos))
        return vkc_cmd_fail(cmd, -EINVAL);
    if (a->n_rot == 0)
        return 0;
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "rope", &wg, 1, 2, sizeof(struct vkc_pc_rope), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_rope pc = {a->n_tok, a->n_head, a->head_dim,  a->n_rot,     ts,
                             hs,       a->neox,   a->freq_base, a->freq_scale};
    vkc_bind_t b[2] = {
        {a->x.buf, a->x.off,
         ((uint64_t)(a->n_tok - 1) * ts + (uint64_t)(a->n_head - 1) * hs + a->head_dim) * 4},
        {a->pos.buf, a->pos.off, (uint64_t)a->n_tok * 4},
    };
    uint64_t lanes = (uint64_t)a->n_tok * a->n_head * (a->n_rot / 2);
    return vkc_cmd_dispatch(cmd, p, b, 2, &pc, groups_for(lanes, wg), 1);
}

struct vkc_pc_eltwise {
    uint32_t n, row, wt_stride, wt_off, has_wt;
    float s;
    uint32_t b_mode;
};
_Static_assert(sizeof(struct vkc_pc_eltwise) == 28, "mirrors PC in shaders/eltwise.comp");

int vkc_cmd_eltwise(vkc_cmd_t *cmd, const vkc_eltwise_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    bool uses_b = a->op == VKC_ADD || a->op == VKC_SWIGLU || a->op == VKC_SIG_GATE ||
                  a->op == VKC_MUL;
    bool has_wt = a->op == VKC_ACCUM && a->wt.buf;
    if ((unsigned)a->op > VKC_MUL || a->n == 0 || !aligned(cmd, a->a) ||
        !aligned(cmd, a->out) || (uses_b && !aligned(cmd, a->b)) ||
        (has_wt && (!aligned(cmd, a->wt) || a->row == 0)) || (unsigned)a->b_mode > VKC_B_PER_ROW ||
        (uses_b && a->b_mode != VKC_B_FULL && a->row == 0))
        return vkc_cmd_fail(cmd, -EINVAL);
    uint32_t spec[3] = {64, a->op, uses_b ? (uint32_t)a->b_mode : 0};
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "eltwise", spec, 3, 4, sizeof(struct vkc_pc_eltwise), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    uint64_t bytes = (uint64_t)a->n * 4;
    uint64_t wt_need =
        has_wt ? ((uint64_t)(a->n - 1) / a->row * a->wt_stride + a->wt_index + 1) * 4 : 4;
    uint64_t b_bytes = a->b_mode == VKC_B_ROW       ? (uint64_t)a->row * 4
                       : a->b_mode == VKC_B_PER_ROW ? ((uint64_t)(a->n - 1) / a->row + 1) * 4
                                                    : bytes;
    struct vkc_pc_eltwise pc = {a->n,   a->row ? a->row : 1, a->wt_stride, a->wt_index, has_wt,
                                a->s,   uses_b ? (uint32_t)a->b_mode : 0};
    vkc_bind_t b[4] = {
        {a->a.buf, a->a.off, bytes},
        {uses_b ? a->b.buf : a->a.buf, uses_b ? a->b.off : a->a.off, uses_b ? b_bytes : bytes},
        {a->out.buf, a->out.off, bytes},
        {has_wt ? a->wt.buf : a->a.buf, has_wt ? a->wt.off : a->a.off, wt_need},
    };
    return vkc_cmd_dispatch(cmd, p, b, 4, &pc, groups_for(a->n, 64), 1);
}

struct vkc_pc_router {
    uint32_t n_tok, n_expert, k, l_stride, gating_sigmoid, norm_topk;
    float scale;
};
_Static_assert(sizeof(struct vkc_pc_router) == 28, "mirrors PC in shaders/router.comp");

int vkc_cmd_router(vkc_cmd_t *cmd, const vkc_router_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t ls = a->l_stride ? a->l_stride : a->n_expert;
    if (a->n_tok == 0 || a->n_expert == 0 || a->n_expert > 4096 || a->k == 0 ||
        a->k > a->n_expert || ls < a->n_expert || !aligned(cmd, a->logits) ||
        !aligned(cmd, a->ids) || !aligned(cmd, a->weights))
        return vkc_cmd_fail(cmd, -EINVAL);
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "router", &wg, 1, 3, sizeof(struct vkc_pc_router), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_router pc = {a->n_tok,          a->n_expert,  a->k,    ls,
                               a->gating_sigmoid, a->norm_topk, a->scale};
    uint64_t out = (uint64_t)a->n_tok * a->k * 4;
    vkc_bind_t b[3] = {
        {a->logits.buf, a->logits.off, ((uint64_t)(a->n_tok - 1) * ls + a->n_expert) * 4},
        {a->ids.buf, a->ids.off, out},
        {a->weights.buf, a->weights.off, out},
    };
    return vkc_cmd_dispatch(cmd, p, b, 3, &pc, groups_for(a->n_tok, wg), 1);
}
