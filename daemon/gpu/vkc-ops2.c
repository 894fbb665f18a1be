/* vkc-ops2.c: the C entry points of shaders/embed.comp, argmax.comp, attention.comp and
 * moe_ffn.comp (declared in vkc-ops2.h): each checks the shape, picks the pipeline variant,
 * fills the push-constant block (a C struct mirroring the shader's, size-checked) and
 * records the dispatch with vkc_cmd_dispatch(). Invariants: float and index operands are
 * bound at their own offset, which must therefore be a multiple of the storage offset
 * alignment (as in vkc-kernels.c); weight and cache operands may start anywhere 2- or
 * 4-aligned, the shader adds the distance from the aligned binding start. Called by the
 * engine while recording a cmd; nothing here waits or logs. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>

#include "gpu/vkc-internal.h"
#include "model/quant.h"

static uint32_t div_up(uint64_t a, uint64_t b)
{
    return (uint32_t)((a + b - 1) / b);
}

/* Module name of a per-type variant ("embed_q4_k"), NULL for a type without a decoder. */
static const char *typed_module(const char *family, uint32_t type, char *buf, size_t size)
{
    static const struct {
        uint32_t type;
        const char *suffix;
    } t[] = {
        {GGML_TYPE_F32, "f32"},   {GGML_TYPE_F16, "f16"},   {GGML_TYPE_BF16, "bf16"},
        {GGML_TYPE_Q4_0, "q4_0"}, {GGML_TYPE_Q4_1, "q4_1"}, {GGML_TYPE_Q5_0, "q5_0"},
        {GGML_TYPE_Q5_1, "q5_1"}, {GGML_TYPE_Q8_0, "q8_0"}, {GGML_TYPE_Q4_K, "q4_k"},
        {GGML_TYPE_Q5_K, "q5_k"}, {GGML_TYPE_Q6_K, "q6_k"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i].type == type) {
            snprintf(buf, size, "%s_%s", family, t[i].suffix);
            return buf;
        }
    return NULL;
}

/* Bytes of a row of cols elements of type, 0 when cols is not a whole number of blocks or
 * the row would not fit the shaders' 32-bit offsets. */
static uint64_t row_bytes_of(uint32_t type, uint32_t cols)
{
    uint64_t n;
    const quant_traits_t *q = quant_traits(type);
    if (!q || q->block_size == 0 || cols % q->block_size || quant_row_size(type, cols, &n) < 0 ||
        n > UINT32_MAX)
        return 0;
    return n;
}

/* A float or index operand: bound exactly at its offset. */
static bool aligned_view(const vkc_ctx_t *ctx, vkc_view_t v)
{
    return v.buf && vkc_bind_skew(ctx, v.off) == 0;
}

/* ---- embedding -------------------------------------------------------------------------- */

struct vkc_pc_embed {
    uint32_t n_tok, cols, n_rows, row_bytes, w_off, out_stride;
};
_Static_assert(sizeof(struct vkc_pc_embed) == 24, "mirrors PC in shaders/embed.comp");

int vkc_cmd_embed(vkc_cmd_t *cmd, const vkc_embed_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    char name[32];
    const char *module = typed_module("embed", a->type, name, sizeof(name));
    uint64_t rb = module ? row_bytes_of(a->type, a->cols) : 0;
    uint32_t os = a->out_stride ? a->out_stride : a->cols;
    if (!rb || a->n_rows == 0 || a->n_tok == 0 || os < a->cols || a->w.off % 2 ||
        !aligned_view(ctx, a->ids) || !aligned_view(ctx, a->out) || !a->w.buf)
        return vkc_cmd_fail(cmd, -EINVAL);
    uint32_t chunk = quant_traits(a->type)->block_size == 1 ? 8 : 32; /* dequant.glsl CHUNK */
    uint64_t lanes = (uint64_t)a->n_tok * div_up(a->cols, chunk);
    uint64_t w_need = rb * a->n_rows;
    if (lanes > UINT32_MAX || w_need + vkc_bind_skew(ctx, a->w.off) > UINT32_MAX)
        return vkc_cmd_fail(cmd, -E2BIG);
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, module, &wg, 1, 3, sizeof(struct vkc_pc_embed), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_embed pc = {.n_tok = a->n_tok,
                              .cols = a->cols,
                              .n_rows = a->n_rows,
                              .row_bytes = (uint32_t)rb,
                              .w_off = (uint32_t)vkc_bind_skew(ctx, a->w.off),
                              .out_stride = os};
    vkc_bind_t b[3] = {{a->w.buf, a->w.off, w_need},
                       {a->ids.buf, a->ids.off, 4ull * a->n_tok},
                       {a->out.buf, a->out.off, ((uint64_t)(a->n_tok - 1) * os + a->cols) * 4}};
    return vkc_cmd_dispatch(cmd, p, b, 3, &pc, div_up(lanes, wg), 1);
}

/* ---- logits: argmax and top-k ------------------------------------------------------------ */

struct vkc_pc_topk {
    uint32_t n, n_rows, k, x_stride;
};
_Static_assert(sizeof(struct vkc_pc_topk) == 16, "mirrors PC in shaders/argmax.comp");

int vkc_cmd_topk(vkc_cmd_t *cmd, const vkc_topk_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t xs = a->x_stride ? a->x_stride : a->n;
    if (a->n == 0 || a->n > INT32_MAX || a->n_rows == 0 || a->k == 0 || a->k > VKC_TOPK_MAX ||
        xs < a->n || !aligned_view(ctx, a->x) || !aligned_view(ctx, a->ids) ||
        !aligned_view(ctx, a->vals))
        return vkc_cmd_fail(cmd, -EINVAL);
    /* a wide workgroup: one row is all the parallelism a sampling step has */
    const uint32_t wg = ctx->info.type == VKC_DEVICE_CPU ? 64 : 256;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "argmax", &wg, 1, 3, sizeof(struct vkc_pc_topk), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_topk pc = {.n = a->n, .n_rows = a->n_rows, .k = a->k, .x_stride = xs};
    uint64_t out = 4ull * a->n_rows * a->k;
    vkc_bind_t b[3] = {{a->x.buf, a->x.off, ((uint64_t)(a->n_rows - 1) * xs + a->n) * 4},
                       {a->ids.buf, a->ids.off, out},
                       {a->vals.buf, a->vals.off, out}};
    return vkc_cmd_dispatch(cmd, p, b, 3, &pc, a->n_rows, 1);
}

/* ---- attention over the F16 KV cache ---------------------------------------------------- */

struct vkc_pc_kv_store {
    uint32_t n_rows, row_elems, src_stride, c_off, n_ctx;
};
_Static_assert(sizeof(struct vkc_pc_kv_store) == 20, "mirrors PC (KV_STORE) in attention.comp");

int vkc_cmd_kv_store(vkc_cmd_t *cmd, const vkc_kv_store_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t ss = a->src_stride ? a->src_stride : a->row_elems;
    if (a->n_rows == 0 || a->row_elems == 0 || a->row_elems % 2 || a->n_ctx == 0 ||
        ss < a->row_elems || !aligned_view(ctx, a->src) || !aligned_view(ctx, a->rows) ||
        !a->cache.buf || a->cache.off % 4)
        return vkc_cmd_fail(cmd, -EINVAL);
    uint64_t words = (uint64_t)a->n_rows * (a->row_elems / 2);
    uint64_t c_need = (uint64_t)a->n_ctx * a->row_elems * 2;
    if (words > UINT32_MAX || c_need / 4 + vkc_bind_skew(ctx, a->cache.off) / 4 > UINT32_MAX)
        return vkc_cmd_fail(cmd, -E2BIG);
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "kv_store", &wg, 1, 3, sizeof(struct vkc_pc_kv_store), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_kv_store pc = {.n_rows = a->n_rows,
                                 .row_elems = a->row_elems,
                                 .src_stride = ss,
                                 .c_off = (uint32_t)(vkc_bind_skew(ctx, a->cache.off) / 4),
                                 .n_ctx = a->n_ctx};
    vkc_bind_t b[3] = {
        {a->src.buf, a->src.off, ((uint64_t)(a->n_rows - 1) * ss + a->row_elems) * 4},
        {a->cache.buf, a->cache.off, c_need},
        {a->rows.buf, a->rows.off, 4ull * a->n_rows}};
    return vkc_cmd_dispatch(cmd, p, b, 3, &pc, div_up(words, wg), 1);
}

/* the most query heads one attention workgroup serves (GS in shaders/attention.comp) */
#define VKC_ATTENTION_MAX_GROUP 8

struct vkc_pc_attention {
    uint32_t n_q, n_head, n_head_kv, dk, dv, q_stride, o_stride, k_off, v_off, n_ctx;
    float scale;
};
_Static_assert(sizeof(struct vkc_pc_attention) == 44, "mirrors PC in shaders/attention.comp");

int vkc_cmd_attention(vkc_cmd_t *cmd, const vkc_attention_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t dk = a->head_dim_k, dv = a->head_dim_v;
    if (a->n_q == 0 || a->n_head == 0 || a->n_head_kv == 0 || a->n_head % a->n_head_kv || dk == 0 ||
        dv == 0 || dk % 2 || dv % 2 || dk > VKC_ATTENTION_MAX_HEAD_DIM ||
        dv > VKC_ATTENTION_MAX_HEAD_DIM || a->n_ctx == 0 || !isfinite(a->scale))
        return vkc_cmd_fail(cmd, -EINVAL);
    uint32_t qs = a->q_stride ? a->q_stride : a->n_head * dk;
    uint32_t os = a->o_stride ? a->o_stride : a->n_head * dv;
    if (qs < a->n_head * dk || os < a->n_head * dv || !aligned_view(ctx, a->q) ||
        !aligned_view(ctx, a->ranges) || !aligned_view(ctx, a->out) || !a->k.buf || !a->v.buf ||
        a->k.off % 4 || a->v.off % 4)
        return vkc_cmd_fail(cmd, -EINVAL);
    uint64_t k_need = (uint64_t)a->n_ctx * a->n_head_kv * dk * 2;
    uint64_t v_need = (uint64_t)a->n_ctx * a->n_head_kv * dv * 2;
    if ((uint64_t)a->n_q * a->n_head > UINT32_MAX || k_need / 4 + 64 > UINT32_MAX ||
        v_need / 4 + 64 > UINT32_MAX)
        return vkc_cmd_fail(cmd, -E2BIG);
    /* MAXD: the smallest power of two >= both head dims, so few variants are built */
    uint32_t maxd = 64;
    while (maxd < dk || maxd < dv)
        maxd *= 2;
    /* WG: the tile of cache rows scored at once (four barriers per tile). On CPU devices
     * one subgroup per workgroup: llvmpipe runs a wider workgroup as several SIMD groups
     * switched at every barrier: a decode over 4096 rows, 32 heads of 128, took 60 ms at
     * WG 64 and 36 ms at WG 8 on lavapipe with 2 cores. GPUs want 64 lanes of loads. */
    uint32_t wg = 64;
    if (ctx->info.type == VKC_DEVICE_CPU)
        wg = ctx->info.subgroup_size < 8    ? 8
             : ctx->info.subgroup_size > 64 ? 64
                                            : ctx->info.subgroup_size;
    /* GS: query heads per workgroup, all of one GQA group, so each K/V word is loaded and
     * converted once for GS heads. On CPU devices loads set the speed (every buffer load is a
     * scalar loop over the lanes on llvmpipe): GS is the largest divisor of the group size
     * within a cap on the per-lane state (GS * ceil(maxd / (2 wg)) accumulator words), one
     * pipeline per GS used. GPUs keep one head per workgroup (GS 1). */
    uint32_t gs = 1;
    if (ctx->info.type == VKC_DEVICE_CPU) {
        uint32_t group = a->n_head / a->n_head_kv, nw = div_up(maxd, 2 * wg);
        for (uint32_t c = 1; c <= VKC_ATTENTION_MAX_GROUP && c * nw <= 64; c++)
            if (group % c == 0)
                gs = c;
    }
    /* ONE_SG: the workgroup is exactly one subgroup, so subgroup barriers order it */
    uint32_t one_sg = ctx->info.type == VKC_DEVICE_CPU && wg == ctx->info.subgroup_size;
    uint32_t spec[4] = {wg, maxd, gs, one_sg};
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "attention", spec, 4, 5, sizeof(struct vkc_pc_attention), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_attention pc = {
        .n_q = a->n_q,
        .n_head = a->n_head,
        .n_head_kv = a->n_head_kv,
        .dk = dk,
        .dv = dv,
        .q_stride = qs,
        .o_stride = os,
        .k_off = (uint32_t)(vkc_bind_skew(ctx, a->k.off) / 4),
        .v_off = (uint32_t)(vkc_bind_skew(ctx, a->v.off) / 4),
        .n_ctx = a->n_ctx,
        .scale = a->scale,
    };
    vkc_bind_t b[5] = {
        {a->q.buf, a->q.off, ((uint64_t)(a->n_q - 1) * qs + a->n_head * dk) * 4},
        {a->k.buf, a->k.off, k_need},
        {a->v.buf, a->v.off, v_need},
        {a->ranges.buf, a->ranges.off, 8ull * a->n_q},
        {a->out.buf, a->out.off, ((uint64_t)(a->n_q - 1) * os + a->n_head * dv) * 4}};
    return vkc_cmd_dispatch(cmd, p, b, 5, &pc, a->n_q * (a->n_head / gs), 1);
}

/* ---- expert FFN through a slot table ------------------------------------------------------ */

struct vkc_pc_moe {
    uint32_t n_entries, n_embd, n_ff, row_bytes, x_stride, n_slots, n_tok, k, out_stride, accum;
    uint32_t n_rows;
};
_Static_assert(sizeof(struct vkc_pc_moe) == 44, "mirrors PC in shaders/moe_ffn.comp");

int vkc_moe_slot_set(vkc_moe_slot_t *slot, vkc_view_t gate, vkc_view_t up, vkc_view_t down)
{
    vkc_view_t v[3] = {gate, up, down};
    uint64_t addr[3];
    for (int i = 0; i < 3; i++) {
        if (!v[i].buf || v[i].off >= vkc_buffer_size(v[i].buf))
            return -EINVAL;
        uint64_t base = vkc_buffer_address(v[i].buf);
        if (!base)
            return -ENOTSUP;
        addr[i] = base + v[i].off;
        if (addr[i] % 16)
            return -EINVAL;
    }
    *slot = (vkc_moe_slot_t){.gate = addr[0], .up = addr[1], .down = addr[2]};
    return 0;
}

/* One of the two typed phases: lanes over `out_rows` rows, one z layer per entry. */
static int moe_phase(vkc_cmd_t *cmd, const char *family, uint32_t type, uint32_t row_bytes,
                     uint32_t out_rows, const struct vkc_pc_moe *pc, const vkc_bind_t b[4])
{
    char name[32];
    const char *module = typed_module(family, type, name, sizeof(name));
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(cmd->ctx, module, &wg, 1, 4, sizeof(*pc), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_moe c = *pc;
    c.row_bytes = row_bytes;
    return vkc_cmd_dispatch(cmd, p, b, 4, &c, div_up(out_rows, wg), pc->n_entries);
}

int vkc_cmd_moe_experts(vkc_cmd_t *cmd, const vkc_moe_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    char name[32];
    if (!ctx->info.buffer_device_address)
        return vkc_cmd_fail(cmd, -ENOTSUP);
    uint32_t xs = a->x_stride ? a->x_stride : a->n_embd;
    uint64_t gu_bytes = row_bytes_of(a->gate_up_type, a->n_embd);
    uint64_t d_bytes = row_bytes_of(a->down_type, a->n_ff);
    if (!typed_module("moe_up", a->gate_up_type, name, sizeof(name)) ||
        !typed_module("moe_down", a->down_type, name, sizeof(name)) || !gu_bytes || !d_bytes ||
        a->n_slots == 0 || a->n_tok == 0 || a->n_rows == 0 || xs < a->n_embd ||
        !aligned_view(ctx, a->slots) || !aligned_view(ctx, a->entries) ||
        !aligned_view(ctx, a->x) || !aligned_view(ctx, a->h) || !aligned_view(ctx, a->y))
        return vkc_cmd_fail(cmd, -EINVAL);
    if (a->n_entries == 0)
        return 0;
    if (a->n_entries > ctx->info.max_workgroup_count[2] || gu_bytes * a->n_ff > UINT32_MAX ||
        d_bytes * a->n_embd > UINT32_MAX ||
        (uint64_t)a->n_rows * (a->n_ff > a->n_embd ? a->n_ff : a->n_embd) > UINT32_MAX)
        return vkc_cmd_fail(cmd, -E2BIG);
    struct vkc_pc_moe pc = {.n_entries = a->n_entries,
                            .n_embd = a->n_embd,
                            .n_ff = a->n_ff,
                            .x_stride = xs,
                            .n_slots = a->n_slots,
                            .n_tok = a->n_tok,
                            .n_rows = a->n_rows};
    vkc_bind_t s = {a->slots.buf, a->slots.off, sizeof(vkc_moe_slot_t) * a->n_slots};
    vkc_bind_t e = {a->entries.buf, a->entries.off, sizeof(vkc_moe_entry_t) * a->n_entries};
    vkc_bind_t x = {a->x.buf, a->x.off, ((uint64_t)(a->n_tok - 1) * xs + a->n_embd) * 4};
    vkc_bind_t h = {a->h.buf, a->h.off, 4ull * a->n_rows * a->n_ff};
    vkc_bind_t y = {a->y.buf, a->y.off, 4ull * a->n_rows * a->n_embd};
    vkc_bind_t up[4] = {s, e, x, h}, down[4] = {s, e, h, y};
    int r = moe_phase(cmd, "moe_up", a->gate_up_type, (uint32_t)gu_bytes, a->n_ff, &pc, up);
    if (r < 0)
        return r;
    vkc_cmd_barrier(cmd, "moe down reads the H rows that moe up wrote");
    return moe_phase(cmd, "moe_down", a->down_type, (uint32_t)d_bytes, a->n_embd, &pc, down);
}

int vkc_cmd_moe_combine(vkc_cmd_t *cmd, const vkc_moe_combine_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t os = a->out_stride ? a->out_stride : a->n_embd;
    if (a->n_tok == 0 || a->n_embd == 0 || a->k == 0 || os < a->n_embd ||
        !aligned_view(ctx, a->y) || !aligned_view(ctx, a->out))
        return vkc_cmd_fail(cmd, -EINVAL);
    uint64_t n = (uint64_t)a->n_tok * a->n_embd;
    if (n * a->k > UINT32_MAX)
        return vkc_cmd_fail(cmd, -E2BIG);
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "moe_combine", &wg, 1, 2, sizeof(struct vkc_pc_moe), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_moe pc = {.n_embd = a->n_embd,
                            .n_tok = a->n_tok,
                            .k = a->k,
                            .out_stride = os,
                            .accum = a->accumulate};
    vkc_bind_t b[2] = {{a->y.buf, a->y.off, 4 * n * a->k},
                       {a->out.buf, a->out.off, ((uint64_t)(a->n_tok - 1) * os + a->n_embd) * 4}};
    return vkc_cmd_dispatch(cmd, p, b, 2, &pc, div_up(n, wg), 1);
}
