/* The Vulkan engine: the MoE forward pass of engine.h on one Vulkan device. At start the
 * resident part of the model (embeddings, norms, attention, routers, shared experts, output)
 * is read with libmoeio into device buffers; experts are never read at start: the expert
 * store (expert_store.c) streams the ones a layer routes to into its GPU slots.
 *
 * A step runs a batch of entries (any mix of prefill and decode positions of any sequences)
 * layer by layer with one device round trip per layer: the command buffer of layer L holds
 * the expert FFN of layer L-1, the attention of layer L and its router; the host waits for
 * it, reads back only the chosen expert ids and weights, asks the store for the union of
 * those experts over the batch (tokens that pick the same expert share one load), writes
 * the slot table and the entries, and records the next. While the device computes, the
 * store already reads the experts layer L+1 is guessed to need: layer L+1's router applied
 * to layer L's input, computed in the same command buffer. When a batch needs more experts
 * than the GPU tier holds at once, the experts run in waves; every expert's output lands in
 * its own row and the combine sums each token's rows in the fixed order of the router, so
 * the numbers do not depend on residency, waves or batching (DESIGN.md).
 *
 * Memory: weights and the F16 KV cache (n_seq_max x n_ctx rows per layer) are device-local;
 * activations are sized for n_batch entries; the inputs of a step, the routing read-back,
 * the slot table, the entries and the logits live in small host-visible buffers. Tensors
 * larger than maxStorageBufferRange are split by rows. One thread owns the engine. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_vk-internal.h"
#include "iouring/moeio.h"

#define set_err engine_vk_set_err

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static vkc_view_t V(vkc_buffer_t *b, uint64_t off)
{
    return (vkc_view_t){b, off};
}

/* ---- recording helpers ------------------------------------------------------------------ */

/* Y[v][0..rows) = W X[v] for v < n_vec, over W's row parts. */
static int rec_matvec(engine_vk_t *e, const wt_t *w, vkc_view_t x, uint32_t x_stride,
                      vkc_view_t y, uint32_t y_stride, uint32_t n_vec, bool accumulate)
{
    for (uint32_t p = 0; p < w->n_parts; p++) {
        vkc_matvec_args_t a = {
            .type = w->type,
            .rows = w->part[p].rows,
            .cols = w->cols,
            .n_vec = n_vec,
            .w = V(w->part[p].buf, 0),
            .x = x,
            .y = V(y.buf, y.off + (uint64_t)w->part[p].row0 * 4),
            .x_stride = x_stride ? x_stride : w->cols,
            .y_stride = y_stride ? y_stride : w->rows,
            .accumulate = accumulate,
        };
        int r = vkc_cmd_matvec(e->cmd, &a);
        if (r < 0)
            return r;
    }
    return 0;
}

static int rec_rmsnorm(engine_vk_t *e, vkc_view_t x, const wt_t *w, vkc_view_t out, uint32_t n,
                       uint32_t n_rows, uint32_t w_rows)
{
    vkc_rmsnorm_args_t a = {
        .n = n,
        .n_rows = n_rows,
        .x = x,
        .w = w ? V(w->part[0].buf, 0) : V(NULL, 0),
        .out = out,
        .w_rows = w_rows,
        .eps = e->hp->rms_eps,
    };
    return vkc_cmd_rmsnorm(e->cmd, &a);
}

static int rec_elt(engine_vk_t *e, enum vkc_eltwise_op op, uint32_t n, vkc_view_t a, vkc_view_t b,
                   vkc_view_t out, enum vkc_bcast mode, uint32_t row)
{
    vkc_eltwise_args_t args = {
        .op = op, .n = n, .a = a, .b = b, .out = out, .s = 1.0f, .row = row, .b_mode = mode};
    return vkc_cmd_eltwise(e->cmd, &args);
}

static void barrier(engine_vk_t *e, const char *why)
{
    vkc_cmd_barrier(e->cmd, why);
}

/* Embedding of n tokens into x (ids per row part in inp: out-of-part ids give zero rows, so
 * adding the parts gives each token its row exactly). */
static int rec_embed(engine_vk_t *e, uint32_t n)
{
    const wt_t *w = &e->tok_embd;
    const uint32_t E = e->hp->n_embd;
    int r = 0;
    for (uint32_t p = 0; p < w->n_parts && r == 0; p++) {
        vkc_embed_args_t a = {
            .type = w->type,
            .n_rows = w->part[p].rows,
            .cols = w->cols,
            .n_tok = n,
            .w = V(w->part[p].buf, 0),
            .ids = V(e->inp, (uint64_t)p * AL(e->n_batch * 4)),
            .out = p == 0 ? V(e->x, 0) : V(e->tmp, 0),
        };
        r = vkc_cmd_embed(e->cmd, &a);
        if (r == 0 && p > 0) {
            barrier(e, "embedding part -> sum");
            r = rec_elt(e, VKC_ADD, n * E, V(e->x, 0), V(e->tmp, 0), V(e->x, 0), VKC_B_FULL, 0);
        }
    }
    return r;
}

/* x += attention(rmsnorm(x)) for layer il; then xb = rmsnorm(x) * ffn_norm and the router
 * logits/choices of layer il (and the guess for il + 1) into the host-visible route buffer. */
static int rec_attention_and_router(engine_vk_t *e, uint32_t il, uint32_t n, bool guess)
{
    const model_hparams_t *hp = e->hp;
    const vk_layer_t *l = &e->layers[il];
    const uint32_t E = hp->n_embd, dk = hp->head_dim_k, dv = hp->head_dim_v;
    const uint32_t nq = hp->n_head * dk, nk = hp->n_head_kv * dk, nv = hp->n_head_kv * dv;
    const uint32_t K = hp->n_expert_used;
    int r;

    if ((r = rec_rmsnorm(e, V(e->x, 0), &l->attn_norm, V(e->xb, 0), E, n, 1)) < 0)
        return r;
    barrier(e, "attn_norm -> qkv");
    if ((r = rec_matvec(e, &l->wq, V(e->xb, 0), E, V(e->q, 0), nq, n, false)) < 0 ||
        (r = rec_matvec(e, &l->wk, V(e->xb, 0), E, V(e->k, 0), nk, n, false)) < 0 ||
        (r = rec_matvec(e, &l->wv, V(e->xb, 0), E, V(e->v, 0), nv, n, false)) < 0)
        return r;
    barrier(e, "qkv -> bias, norm, rope");
    if (l->bq.n_parts &&
        ((r = rec_elt(e, VKC_ADD, n * nq, V(e->q, 0), V(l->bq.part[0].buf, 0), V(e->q, 0),
                      VKC_B_ROW, nq)) < 0 ||
         (r = rec_elt(e, VKC_ADD, n * nk, V(e->k, 0), V(l->bk.part[0].buf, 0), V(e->k, 0),
                      VKC_B_ROW, nk)) < 0 ||
         (r = rec_elt(e, VKC_ADD, n * nv, V(e->v, 0), V(l->bv.part[0].buf, 0), V(e->v, 0),
                      VKC_B_ROW, nv)) < 0))
        return r;
    if (l->bq.n_parts)
        barrier(e, "bias -> norm, rope");
    // q/k RMSNorm before RoPE: per head (qwen3moe) or whole vector (olmoe)
    if (hp->qk_norm == MODEL_QK_NORM_HEAD) {
        if ((r = rec_rmsnorm(e, V(e->q, 0), &l->q_norm, V(e->q, 0), dk, n * hp->n_head, 1)) < 0 ||
            (r = rec_rmsnorm(e, V(e->k, 0), &l->k_norm, V(e->k, 0), dk, n * hp->n_head_kv, 1)) < 0)
            return r;
        barrier(e, "q/k norm -> rope");
    } else if (hp->qk_norm == MODEL_QK_NORM_FULL) {
        if ((r = rec_rmsnorm(e, V(e->q, 0), &l->q_norm, V(e->q, 0), nq, n, 1)) < 0 ||
            (r = rec_rmsnorm(e, V(e->k, 0), &l->k_norm, V(e->k, 0), nk, n, 1)) < 0)
            return r;
        barrier(e, "q/k norm -> rope");
    }
    vkc_rope_args_t rq = {
        .n_tok = n,
        .n_head = hp->n_head,
        .head_dim = dk,
        .n_rot = hp->n_rot,
        .x = V(e->q, 0),
        .pos = V(e->inp, e->off_pos),
        .neox = hp->rope == MODEL_ROPE_NEOX,
        .freq_base = hp->rope_freq_base,
        .freq_scale = hp->rope_freq_scale,
    };
    vkc_rope_args_t rk = rq;
    rk.n_head = hp->n_head_kv;
    rk.x = V(e->k, 0);
    if ((r = vkc_cmd_rope(e->cmd, &rq)) < 0 || (r = vkc_cmd_rope(e->cmd, &rk)) < 0)
        return r;
    barrier(e, "rope -> kv store");
    vkc_kv_store_args_t sk = {
        .n_rows = n,
        .row_elems = nk,
        .n_ctx = e->base.n_seq_max * e->base.n_ctx,
        .src = V(e->k, 0),
        .cache = V(l->k_cache, 0),
        .rows = V(e->inp, e->off_rows),
    };
    vkc_kv_store_args_t sv = sk;
    sv.row_elems = nv;
    sv.src = V(e->v, 0);
    sv.cache = V(l->v_cache, 0);
    if ((r = vkc_cmd_kv_store(e->cmd, &sk)) < 0 || (r = vkc_cmd_kv_store(e->cmd, &sv)) < 0)
        return r;
    barrier(e, "kv store -> attention");
    vkc_attention_args_t at = {
        .n_q = n,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .head_dim_k = dk,
        .head_dim_v = dv,
        .n_ctx = e->base.n_seq_max * e->base.n_ctx,
        .scale = 1.0f / sqrtf((float)dk),
        .q = V(e->q, 0),
        .k = V(l->k_cache, 0),
        .v = V(l->v_cache, 0),
        .ranges = V(e->inp, e->off_ranges),
        .out = V(e->att, 0),
    };
    if ((r = vkc_cmd_attention(e->cmd, &at)) < 0)
        return r;
    barrier(e, "attention -> wo");
    if ((r = rec_matvec(e, &l->wo, V(e->att, 0), hp->n_head * dv, V(e->xb2, 0), E, n, false)) < 0)
        return r;
    barrier(e, "wo -> residual");
    if ((r = rec_elt(e, VKC_ADD, n * E, V(e->x, 0), V(e->xb2, 0), V(e->x, 0), VKC_B_FULL, 0)) < 0)
        return r;
    barrier(e, "residual -> ffn_norm");
    if ((r = rec_rmsnorm(e, V(e->x, 0), &l->ffn_norm, V(e->xb, 0), E, n, 1)) < 0)
        return r;
    barrier(e, "ffn_norm -> router, shared expert");
    if ((r = rec_matvec(e, &l->router, V(e->xb, 0), E, V(e->rlog, 0), hp->n_expert, n, false)) < 0)
        return r;
    if (guess && (r = rec_matvec(e, &e->layers[il + 1].router, V(e->xb, 0), E, V(e->plog, 0),
                                 hp->n_expert, n, false)) < 0)
        return r;
    barrier(e, "router logits -> top-k");
    vkc_router_args_t ra = {
        .n_tok = n,
        .n_expert = hp->n_expert,
        .k = K,
        .logits = V(e->rlog, 0),
        .ids = V(e->route, 0),
        .weights = V(e->route, e->off_rw),
        .gating_sigmoid = hp->gating == MODEL_GATING_SIGMOID,
        .norm_topk = hp->norm_topk,
        .scale = hp->expert_weights_scale,
    };
    if ((r = vkc_cmd_router(e->cmd, &ra)) < 0)
        return r;
    if (guess) {
        vkc_router_args_t pa = ra;
        pa.logits = V(e->plog, 0);
        pa.ids = V(e->route, e->off_pids);
        pa.weights = V(e->route, e->off_pw);
        if ((r = vkc_cmd_router(e->cmd, &pa)) < 0)
            return r;
    }
    // the shared expert does not depend on the routing: record it before the read-back
    if (l->gate_shexp.n_parts) {
        const uint32_t S = hp->n_ff_shexp;
        if ((r = rec_matvec(e, &l->gate_shexp, V(e->xb, 0), E, V(e->sg, 0), S, n, false)) < 0 ||
            (r = rec_matvec(e, &l->up_shexp, V(e->xb, 0), E, V(e->su, 0), S, n, false)) < 0)
            return r;
        if (l->shexp_gate.n_parts &&
            (r = rec_matvec(e, &l->shexp_gate, V(e->xb, 0), E, V(e->gsh, 0), 1, n, false)) < 0)
            return r;
        barrier(e, "shared expert gate/up -> swiglu");
        if ((r = rec_elt(e, VKC_SWIGLU, n * S, V(e->sg, 0), V(e->su, 0), V(e->sg, 0), VKC_B_FULL,
                         0)) < 0)
            return r;
        barrier(e, "swiglu -> shared expert down");
        if ((r = rec_matvec(e, &l->down_shexp, V(e->sg, 0), S, V(e->xb2, 0), E, n, false)) < 0)
            return r;
        if (l->shexp_gate.n_parts) {
            barrier(e, "shared expert down -> gate");
            if ((r = rec_elt(e, VKC_SIG_GATE, n * E, V(e->xb2, 0), V(e->gsh, 0), V(e->xb2, 0),
                             VKC_B_PER_ROW, E)) < 0)
                return r;
        }
    }
    return 0;
}

/* ---- experts ----------------------------------------------------------------------------- */

static void unpin(engine_vk_t *e)
{
    if (e->n_pinned)
        expert_store_release(e->store, e->pinned_layer, e->pinned, e->n_pinned);
    e->n_pinned = 0;
}

/* Distinct experts among n*K ids, in first-seen order. */
static uint32_t union_of(engine_vk_t *e, const int32_t *ids, uint32_t count, int32_t *out)
{
    const uint32_t X = e->hp->n_expert;
    uint32_t u = 0;
    memset(e->mark, 0, X);
    for (uint32_t i = 0; i < count; i++) {
        int32_t id = ids[i];
        if (id < 0 || (uint32_t)id >= X || e->mark[id])
            continue;
        e->mark[id] = 1;
        out[u++] = id;
    }
    return u;
}

/* One grouped matmul per weight buffer among the wave's experts (usually one buffer: the
 * tier's slots are few large buffers): expert j's `part` matrix times its rows of x (vectors
 * b0 + grp_start[j]..) into the same rows of y. The group tables go to the table buffer at
 * *cursor (256-aligned each; the wave's earlier dispatches keep theirs). e->mark: done flags. */
static int rec_grouped(engine_vk_t *e, uint32_t part, uint32_t type, uint32_t rows,
                       uint32_t cols, uint32_t count, uint32_t b0, vkc_buffer_t *x,
                       vkc_buffer_t *y, uint64_t *cursor)
{
    int r;
    memset(e->mark, 0, count);
    for (uint32_t j = 0; j < count; j++) {
        if (e->mark[j])
            continue;
        vkc_buffer_t *buf = e->refs[j].buf;
        uint32_t n = 0;
        for (uint32_t k = j; k < count; k++) {
            if (e->mark[k] || e->refs[k].buf != buf)
                continue;
            e->mark[k] = 1;
            e->mm_groups[n++] = (vkc_matmul_group_t){.w_off = e->refs[k].off[part],
                                                     .x_vec = b0 + e->grp_start[k],
                                                     .n_vec = e->grp_count[k],
                                                     .y_vec = b0 + e->grp_start[k]};
        }
        vkc_matmul_grouped_args_t a = {.type = type, .rows = rows, .cols = cols,
                                       .w = V(buf, 0), .x = V(x, 0), .y = V(y, 0),
                                       .table = V(e->table, e->off_groups + *cursor),
                                       .groups = e->mm_groups, .n_groups = n};
        if ((r = vkc_cmd_matmul_grouped(e->cmd, &a)) < 0)
            return r;
        *cursor = AL(*cursor + (uint64_t)n * 16);
    }
    return 0;
}

/* The expert FFN through the tuned matmul kernels: the entries' input rows gathered (grouped
 * by expert), gate and up of every expert over its group in one grouped dispatch each,
 * SwiGLU, down likewise, then each entry's row scaled by its weight into Y[row] for the
 * combine. Same math as the slot-table kernel. */
static int rec_experts_matvec(engine_vk_t *e, uint32_t n, uint32_t count, uint32_t b0,
                              uint32_t ne, const model_range_t *rg)
{
    const uint32_t E = e->hp->n_embd, F = e->hp->n_ff_exp;
    const vkc_moe_entry_t *ent =
        (const vkc_moe_entry_t *)((char *)vkc_buffer_map(e->table) + e->off_entries) + b0;
    int32_t *gids = (int32_t *)((char *)vkc_buffer_map(e->table) + e->off_gids);
    uint64_t cursor = 0; // earlier waves completed: their group tables are free again
    int r;
    // gather ids of this wave at a 256-byte-aligned spot of its own (earlier waves' are done)
    const uint64_t gofs = AL((uint64_t)b0 * 4);
    for (uint32_t i = 0; i < ne; i++)
        gids[gofs / 4 + i] = (int32_t)ent[i].token;
    vkc_embed_args_t g = {.type = 0 /* F32 */, .n_rows = n, .cols = E, .n_tok = ne,
                          .w = V(e->xb, 0), .ids = V(e->table, e->off_gids + gofs),
                          .out = V(e->xg, (uint64_t)b0 * E * 4)};
    if ((r = vkc_cmd_embed(e->cmd, &g)) < 0)
        return r;
    barrier(e, "gather -> expert gate/up");
    if ((r = rec_grouped(e, MODEL_EXPERT_GATE, rg[MODEL_EXPERT_GATE].type, F, E, count, b0,
                         e->xg, e->h, &cursor)) < 0 ||
        (r = rec_grouped(e, MODEL_EXPERT_UP, rg[MODEL_EXPERT_UP].type, F, E, count, b0, e->xg,
                         e->hu, &cursor)) < 0)
        return r;
    barrier(e, "expert gate/up -> swiglu");
    if ((r = rec_elt(e, VKC_SWIGLU, ne * F, V(e->h, (uint64_t)b0 * F * 4),
                     V(e->hu, (uint64_t)b0 * F * 4), V(e->h, (uint64_t)b0 * F * 4), VKC_B_FULL,
                     0)) < 0)
        return r;
    barrier(e, "swiglu -> expert down");
    return rec_grouped(e, MODEL_EXPERT_DOWN, rg[MODEL_EXPERT_DOWN].type, E, F, count, b0, e->h,
                       e->yg, &cursor);
}

/* After the last wave of the matvec path: Y[t k + j] = w(t, j) * YG[entry of (t, j)] over
 * all the layer's entries: a gather by row, then a per-row product with the routing
 * weights, which are laid out [t][j] like the rows. */
static int rec_experts_matvec_finish(engine_vk_t *e, uint32_t n, uint32_t total)
{
    const uint32_t E = e->hp->n_embd, rows = n * e->hp->n_expert_used;
    const vkc_moe_entry_t *ent =
        (const vkc_moe_entry_t *)((char *)vkc_buffer_map(e->table) + e->off_entries);
    const uint64_t pofs = e->off_gids + AL((uint64_t)e->n_batch * e->hp->n_expert_used * 4) + 256;
    int32_t *perm = (int32_t *)((char *)vkc_buffer_map(e->table) + pofs);
    int r;
    for (uint32_t i = 0; i < rows; i++)
        perm[i] = -1; // a row no entry writes (an invalid id): zeros
    for (uint32_t i = 0; i < total; i++)
        perm[ent[i].row] = (int32_t)i;
    barrier(e, "expert down -> weighted rows");
    vkc_embed_args_t sc = {.type = 0 /* F32 */, .n_rows = total, .cols = E, .n_tok = rows,
                           .w = V(e->yg, 0), .ids = V(e->table, pofs), .out = V(e->y, 0)};
    if ((r = vkc_cmd_embed(e->cmd, &sc)) < 0)
        return r;
    barrier(e, "gathered rows -> weights");
    return rec_elt(e, VKC_MUL, rows * E, V(e->y, 0), V(e->route, e->off_rw), V(e->y, 0),
                   VKC_B_PER_ROW, E);
}

/* Records the expert FFN of entries whose expert is among uni[first..first+count), whose
 * refs are refs[0..count). Slot table index = union position. */
static int rec_experts(engine_vk_t *e, uint32_t il, uint32_t n, uint32_t first, uint32_t count,
                       uint32_t *base)
{
    const model_hparams_t *hp = e->hp;
    const uint32_t K = hp->n_expert_used;
    const int32_t *ids = vkc_buffer_map(e->route);
    const float *w = (const float *)((char *)vkc_buffer_map(e->route) + e->off_rw);
    vkc_moe_slot_t *slots = vkc_buffer_map(e->table);
    // this wave's entries follow the earlier waves' (their outputs stay where they are)
    vkc_moe_entry_t *ent = (vkc_moe_entry_t *)((char *)slots + e->off_entries) + *base;
    uint32_t ne = 0;
    int r;
    // entries grouped by expert: each expert's weights are read once for all its tokens
    for (uint32_t j = 0; j < count; j++) {
        int32_t id = e->uni[first + j];
        e->grp_start[j] = ne;
        for (uint32_t t = 0; t < n; t++)
            for (uint32_t s = 0; s < K; s++)
                if (ids[t * K + s] == id)
                    ent[ne++] = (vkc_moe_entry_t){t, w[t * K + s], j, t * K + s};
        e->grp_count[j] = ne - e->grp_start[j];
    }
    if (!ne)
        return 0;
    model_range_t rg[MODEL_EXPERT_PARTS];
    if ((r = model_expert_ranges(e->base.model, il, (uint32_t)e->uni[first], rg)) < 0)
        return r;
    const uint32_t b0 = *base;
    *base += ne;
    if (e->expert_matvec)
        return rec_experts_matvec(e, n, count, b0, ne, rg);
    for (uint32_t j = 0; j < count; j++) {
        const expert_ref_t *rf = &e->refs[j];
        r = vkc_moe_slot_set(&slots[j], V(rf->buf, rf->off[MODEL_EXPERT_GATE]),
                             V(rf->buf, rf->off[MODEL_EXPERT_UP]),
                             V(rf->buf, rf->off[MODEL_EXPERT_DOWN]));
        if (r < 0)
            return r;
    }
    vkc_moe_args_t a = {
        .gate_up_type = rg[MODEL_EXPERT_GATE].type,
        .down_type = rg[MODEL_EXPERT_DOWN].type,
        .n_embd = hp->n_embd,
        .n_ff = hp->n_ff_exp,
        .n_slots = count,
        .n_entries = ne,
        .n_tok = n,
        .n_rows = n * K,
        .slots = V(e->table, 0),
        .entries = V(e->table, e->off_entries + (uint64_t)b0 * sizeof(vkc_moe_entry_t)),
        .x = V(e->xb, 0),
        .h = V(e->h, 0),
        .y = V(e->y, 0),
    };
    return vkc_cmd_moe_experts(e->cmd, &a);
}

static int gpu_wait(engine_vk_t *e)
{
    uint64_t t0 = now_ns();
    int r = vkc_cmd_submit(e->cmd, NULL);
    if (r == 0)
        r = vkc_cmd_wait(e->cmd, UINT64_MAX);
    e->stats.gpu_wait_ns += now_ns() - t0;
    return r < 0 && r != -ENOMEM && r != -E2BIG && r != -EINVAL ? -EIO : r;
}

/* Acquires the experts of layer il for the routed batch and records their FFN. Waves when
 * they do not all fit: each wave but the last is run and released before the next. */
static int do_experts(engine_vk_t *e, uint32_t il, uint32_t n)
{
    const uint32_t K = e->hp->n_expert_used;
    const int32_t *ids = vkc_buffer_map(e->route);
    uint32_t u = union_of(e, ids, n * K, e->uni);
    uint32_t first = 0, wave = u, base = 0;
    uint64_t t0;
    int r;

    while (first < u) {
        uint32_t cnt = u - first < wave ? u - first : wave;
        t0 = now_ns();
        r = expert_store_acquire(e->store, il, e->uni + first, cnt, e->refs);
        e->stats.read_wait_ns += now_ns() - t0;
        if (r == -EBUSY && cnt > 1) {
            wave = cnt / 2; // fewer at once: the tier is smaller than this batch's union
            continue;
        }
        if (r < 0) {
            if (r == -EIO)
                e->stats.io_errors++;
            return r == -EBUSY ? -ENOMEM : r;
        }
        if ((r = rec_experts(e, il, n, first, cnt, &base)) < 0) {
            expert_store_release(e->store, il, e->uni + first, cnt);
            return r;
        }
        if (first + cnt < u) {
            // a wave: run it now so its slots can be reused by the next
            e->stats.waves++;
            r = gpu_wait(e);
            expert_store_release(e->store, il, e->uni + first, cnt);
            if (r < 0)
                return r;
            if ((r = vkc_cmd_begin(e->cmd)) < 0)
                return r;
        } else {
            memcpy(e->pinned, e->uni + first, cnt * sizeof(int32_t));
            e->n_pinned = cnt;
            e->pinned_layer = il;
        }
        first += cnt;
    }
    return e->expert_matvec && base ? rec_experts_matvec_finish(e, n, base) : 0;
}

/* After the expert FFN of layer il: x += combine (+ gated shared expert). */
static int rec_ffn_out(engine_vk_t *e, uint32_t il, uint32_t n)
{
    const model_hparams_t *hp = e->hp;
    const uint32_t E = hp->n_embd;
    int r;
    barrier(e, "experts -> combine");
    vkc_moe_combine_args_t c = {
        .n_tok = n, .n_embd = E, .k = hp->n_expert_used, .y = V(e->y, 0), .out = V(e->ffo, 0)};
    if ((r = vkc_cmd_moe_combine(e->cmd, &c)) < 0)
        return r;
    barrier(e, "combine -> shared expert sum");
    if (e->layers[il].gate_shexp.n_parts) {
        // ffn_out = experts + shared, then x += ffn_out: the reference's order of sums
        if ((r = rec_elt(e, VKC_ADD, n * E, V(e->ffo, 0), V(e->xb2, 0), V(e->ffo, 0), VKC_B_FULL,
                         0)) < 0)
            return r;
        barrier(e, "shared expert sum -> residual");
    }
    if ((r = rec_elt(e, VKC_ADD, n * E, V(e->x, 0), V(e->ffo, 0), V(e->x, 0), VKC_B_FULL, 0)) < 0)
        return r;
    barrier(e, "residual -> next layer");
    return 0;
}

/* Remembers the guessed experts of layer il + 1 (from the route buffer) for prefetch. */
static void take_guess(engine_vk_t *e, uint32_t n)
{
    const uint32_t K = e->hp->n_expert_used;
    const int32_t *p = (const int32_t *)((char *)vkc_buffer_map(e->route) + e->off_pids);
    e->n_pred = union_of(e, p, n * K, e->pred);
}

/* How many guessed experts the layer then used. */
static void score_guess(engine_vk_t *e, uint32_t n)
{
    const uint32_t K = e->hp->n_expert_used;
    const int32_t *ids = vkc_buffer_map(e->route);
    memset(e->mark, 0, e->hp->n_expert);
    for (uint32_t i = 0; i < n * K; i++)
        if (ids[i] >= 0 && (uint32_t)ids[i] < e->hp->n_expert)
            e->mark[ids[i]] = 1;
    for (uint32_t i = 0; i < e->n_pred; i++)
        e->guess_right += e->mark[e->pred[i]];
    e->guess_total += e->n_pred;
}

/* ---- a step ------------------------------------------------------------------------------ */

/* Final norm and output matrix for cnt rows wanting logits, from logit_rows[first..]: gathered
 * into xl unless every row of the step wants them (then x is used as is). */
static int rec_logits(engine_vk_t *e, uint32_t first, uint32_t cnt, bool every_row)
{
    const uint32_t E = e->hp->n_embd;
    vkc_view_t src = V(e->x, 0);
    int r;
    if (!every_row || first > 0) {
        for (uint32_t j = 0; j < cnt; j++) {
            vkc_eltwise_args_t cp = {
                .op = VKC_SCALE,
                .n = E,
                .a = V(e->x, (uint64_t)e->logit_rows[first + j] * E * 4),
                .out = V(e->xl, (uint64_t)j * E * 4),
                .s = 1.0f,
            };
            if ((r = vkc_cmd_eltwise(e->cmd, &cp)) < 0)
                return r;
        }
        barrier(e, "gather -> output norm");
        src = V(e->xl, 0);
    }
    if ((r = rec_rmsnorm(e, src, &e->output_norm, V(e->xl, 0), E, cnt, 1)) < 0)
        return r;
    barrier(e, "output norm -> output");
    return rec_matvec(e, &e->output, V(e->xl, 0), E, V(e->logits, 0), e->hp->n_vocab, cnt, false);
}

static int run_chunk(engine_vk_t *e, const engine_entry_t *en, uint32_t n, float *logits,
                     size_t *n_out)
{
    const model_hparams_t *hp = e->hp;
    const uint32_t L = hp->n_layer;
    const uint32_t n_ctx = e->base.n_ctx;
    int32_t *in_ids = vkc_buffer_map(e->inp);
    int32_t *in_pos = (int32_t *)((char *)in_ids + e->off_pos);
    uint32_t *in_rows = (uint32_t *)((char *)in_ids + e->off_rows);
    uint32_t *in_ranges = (uint32_t *)((char *)in_ids + e->off_ranges);
    const bool prefetch = !e->cfg.no_prefetch && L > 1 &&
                          expert_store_gpu_slots(e->store) < L * hp->n_expert;
    uint32_t n_log = 0;
    int r;

    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t p = 0; p < e->tok_embd.n_parts; p++) {
            int64_t id = (int64_t)en[i].token - e->tok_embd.part[p].row0;
            in_ids[p * (AL(e->n_batch * 4) / 4) + i] =
                id >= 0 && id < e->tok_embd.part[p].rows ? (int32_t)id : -1;
        }
        in_pos[i] = (int32_t)en[i].pos;
        in_rows[i] = en[i].seq * n_ctx + en[i].pos;
        in_ranges[2 * i] = en[i].seq * n_ctx;
        in_ranges[2 * i + 1] = en[i].pos + 1;
    }
    if ((r = vkc_cmd_begin(e->cmd)) < 0)
        return r;
    if ((r = rec_embed(e, n)) < 0)
        goto fail;
    barrier(e, "embedding -> layer 0");
    for (uint32_t il = 0; il < L; il++) {
        bool guess = prefetch && il + 1 < L;
        if ((r = rec_attention_and_router(e, il, n, guess)) < 0)
            goto fail;
        if ((r = gpu_wait(e)) < 0)
            goto fail;
        unpin(e); // the previous layer's experts ran in that submission
        if (prefetch && il > 0)
            score_guess(e, n);
        if ((r = vkc_cmd_begin(e->cmd)) < 0)
            goto fail;
        if ((r = do_experts(e, il, n)) < 0)
            goto fail;
        if ((r = rec_ffn_out(e, il, n)) < 0)
            goto fail;
        if (guess) {
            // read layer il + 1's likely experts while the device computes
            take_guess(e, n);
            // a hint: a guess that cannot start (tier pinned, bad id) costs nothing later
            (void)expert_store_prefetch(e->store, il + 1, e->pred, e->n_pred);
        }
    }
    // logits of the rows that ask for them, gathered so the output matrix is read once
    for (uint32_t i = 0; i < n; i++)
        if (en[i].logits)
            e->logit_rows[n_log++] = i;
    uint32_t first = 0;
    do {
        uint32_t cnt = n_log - first < e->n_logits_max ? n_log - first : e->n_logits_max;
        if (cnt && (r = rec_logits(e, first, cnt, n_log == n)) < 0)
            goto fail;
        if ((r = gpu_wait(e)) < 0)
            goto fail;
        unpin(e);
        if (cnt)
            memcpy(logits + (*n_out + first) * (size_t)hp->n_vocab, vkc_buffer_map(e->logits),
                   (size_t)cnt * hp->n_vocab * sizeof(float));
        first += cnt;
    } while (first < n_log && (r = vkc_cmd_begin(e->cmd)) == 0);
    if (r < 0)
        goto fail;
    *n_out += n_log;
    for (uint32_t i = 0; i < n; i++)
        e->seqs[en[i].seq].n_pos = en[i].pos + 1;
    e->stats.tokens += n;
    return 0;
fail:
    // whatever was recorded or submitted is finished or abandoned before memory is reused
    vkc_cmd_wait(e->cmd, UINT64_MAX);
    unpin(e);
    return r;
}

static int vk_step(engine_t *base, const engine_entry_t *entries, size_t n, float *logits)
{
    engine_vk_t *e = (engine_vk_t *)base;
    size_t n_out = 0;
    int r = 0;
    // validate everything before running anything: positions follow the cache in order
    for (size_t i = 0; i < n; i++) {
        const engine_entry_t *en = &entries[i];
        if (en->seq >= base->n_seq_max || !e->seqs[en->seq].used || en->pos >= base->n_ctx ||
            en->token < 0 || (uint32_t)en->token >= base->n_vocab)
            return -EINVAL;
        uint32_t expect = e->seqs[en->seq].n_pos;
        for (size_t j = 0; j < i; j++)
            if (entries[j].seq == en->seq)
                expect = entries[j].pos + 1;
        if (en->pos > expect)
            return -EINVAL;
    }
    for (size_t i = 0; i < n && r == 0; i += e->n_batch) {
        uint32_t m = (uint32_t)(n - i < e->n_batch ? n - i : e->n_batch);
        r = run_chunk(e, entries + i, m, logits, &n_out);
    }
    e->stats.steps++;
    return r;
}

static int vk_seq_new(engine_t *base, uint32_t *ret_seq)
{
    engine_vk_t *e = (engine_vk_t *)base;
    for (uint32_t i = 0; i < base->n_seq_max; i++)
        if (!e->seqs[i].used) {
            e->seqs[i] = (vk_seq_t){.used = true};
            *ret_seq = i;
            return 0;
        }
    return -EBUSY;
}

static void vk_seq_free(engine_t *base, uint32_t seq)
{
    engine_vk_t *e = (engine_vk_t *)base;
    if (seq < base->n_seq_max)
        e->seqs[seq] = (vk_seq_t){0};
}

static void vk_stats(engine_t *base, engine_stats_t *ret)
{
    engine_vk_t *e = (engine_vk_t *)base;
    expert_store_stats_t s;
    *ret = e->stats;
    expert_store_stats(e->store, &s);
    ret->expert_hits = s.cache.hits + s.cache.pending;
    ret->expert_misses = s.cache.misses + s.cache.host_hits;
    ret->expert_host_hits = s.cache.host_hits;
    ret->bytes_streamed = s.cache.bytes_read;
    ret->prefetch_issued = s.cache.prefetch_issued;
    ret->prefetch_used = s.cache.prefetch_used;
    ret->io_errors = s.io_errors;
    ret->device_bytes = vkc_ctx_device_bytes(e->vkc);
    ret->gpu_cache_bytes = e->gpu_cache_bytes;
    ret->guesses = e->guess_total;
    ret->guesses_right = e->guess_right;
    ret->prefetch_accuracy =
        e->guess_total ? (double)e->guess_right / (double)e->guess_total : -1.0;
}

static void vk_free(engine_t *base)
{
    engine_vk_t *e = (engine_vk_t *)base;
    if (!e)
        return;
    if (e->cmd)
        vkc_cmd_wait(e->cmd, UINT64_MAX);
    if (e->store)
        unpin(e);
    e->store = expert_store_free(e->store);
    e->cmd = vkc_cmd_free(e->cmd);
    vkc_buffer_t **bufs[] = {&e->x,   &e->xb,  &e->xb2,   &e->q,     &e->k,      &e->v,
                             &e->att, &e->ffo, &e->sg,    &e->su,    &e->gsh,    &e->rlog,
                             &e->plog, &e->h,  &e->y,     &e->xl,    &e->tmp,    &e->inp,
                             &e->route, &e->table, &e->logits, &e->xg, &e->hu, &e->yg};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        *bufs[i] = vkc_buffer_free(*bufs[i]);
    if (e->layers)
        for (uint32_t il = 0; il < e->hp->n_layer; il++) {
            vk_layer_t *l = &e->layers[il];
            wt_t *ws[] = {&l->attn_norm, &l->wq,       &l->wk,       &l->wv,         &l->wo,
                          &l->bq,        &l->bk,       &l->bv,       &l->q_norm,     &l->k_norm,
                          &l->ffn_norm,  &l->router,   &l->gate_shexp, &l->up_shexp,
                          &l->down_shexp, &l->shexp_gate};
            for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
                engine_vk_wt_free(ws[i]);
            vkc_buffer_free(l->k_cache);
            vkc_buffer_free(l->v_cache);
        }
    if (!e->output_is_embd)
        engine_vk_wt_free(&e->output);
    engine_vk_wt_free(&e->tok_embd);
    engine_vk_wt_free(&e->output_norm);
    free(e->layers);
    vkc_ctx_free(e->vkc);
    free(e->seqs);
    free(e->uni);
    free(e->pred);
    free(e->pinned);
    free(e->mark);
    free(e->refs);
    free(e->logit_rows);
    free(e->grp_start);
    free(e->grp_count);
    free(e->mm_groups);
    free(e);
}

static const engine_vtable_t vk_vtable = {
    .name = "vulkan",
    .seq_new = vk_seq_new,
    .seq_free = vk_seq_free,
    .step = vk_step,
    .stats = vk_stats,
    .free = vk_free,
};

/* ---- construction ------------------------------------------------------------------------ */
/* Which expert path is faster where: measured with `moe bench decode` (README). */
static bool expert_matvec_default(const vkc_device_info_t *info)
{
    const char *f = getenv("MOE_EXPERT_KERNEL"); // for comparing the two: "slots" or "matvec"
    if (f && *f)
        return !strcmp(f, "matvec");
    return info->type == VKC_DEVICE_CPU;
}

int engine_vk_new(const engine_vk_config_t *cfg, engine_t **ret, char *err, size_t errlen)
{
    const model_t *m = cfg->model;
    engine_vk_t *e;
    int r;
    if (!m || !cfg->path || !cfg->n_ctx || !cfg->n_seq_max || !m->hp.n_expert) {
        set_err(err, errlen, "engine: model, path, context and sequences are required");
        return -EINVAL;
    }
    const model_hparams_t *hp = &m->hp;
    if (hp->head_dim_k % 2 || hp->head_dim_v % 2 ||
        hp->head_dim_k > VKC_ATTENTION_MAX_HEAD_DIM ||
        hp->head_dim_v > VKC_ATTENTION_MAX_HEAD_DIM || hp->n_expert > 4096) {
        set_err(err, errlen, "engine: head dimensions or expert count outside the kernels' range");
        return -ENOTSUP;
    }
    if ((uint64_t)cfg->n_seq_max * cfg->n_ctx > UINT32_MAX) {
        set_err(err, errlen, "engine: sequences x context too large");
        return -EINVAL;
    }
    if (!(e = calloc(1, sizeof(*e))))
        return -ENOMEM;
    e->cfg = *cfg;
    e->hp = hp;
    e->base.vt = &vk_vtable;
    e->base.model = m;
    e->base.n_vocab = hp->n_vocab;
    e->base.n_ctx = cfg->n_ctx;
    e->base.n_seq_max = cfg->n_seq_max;
    e->n_batch = cfg->n_batch ? cfg->n_batch : 256;
    e->n_logits_max = cfg->n_seq_max > 8 ? cfg->n_seq_max : 8;
    if (e->n_logits_max > e->n_batch)
        e->n_logits_max = e->n_batch;
    const uint32_t X = hp->n_expert;
    e->layers = calloc(hp->n_layer, sizeof(*e->layers));
    e->seqs = calloc(cfg->n_seq_max, sizeof(*e->seqs));
    e->uni = calloc(X, sizeof(int32_t));
    e->pred = calloc(X, sizeof(int32_t));
    e->pinned = calloc(X, sizeof(int32_t));
    e->mark = calloc(X, 1);
    e->refs = calloc(X, sizeof(expert_ref_t));
    e->logit_rows = calloc(e->n_batch > X ? e->n_batch : X, sizeof(uint32_t));
    e->grp_start = calloc(X, sizeof(uint32_t));
    e->grp_count = calloc(X, sizeof(uint32_t));
    e->mm_groups = calloc(X, sizeof(*e->mm_groups));
    if (!e->layers || !e->seqs || !e->uni || !e->pred || !e->pinned || !e->mark || !e->refs ||
        !e->logit_rows || !e->grp_start || !e->grp_count ||
        !e->mm_groups) {
        r = -ENOMEM;
        set_err(err, errlen, "out of memory");
        goto fail;
    }

    vkc_options_t vo = {.device = cfg->device, .cache_dir = cfg->cache_dir,
                        .validation = cfg->validation, .device_limit = cfg->device_limit};
    if ((r = vkc_ctx_new(&vo, &e->vkc, err, errlen)) < 0)
        goto fail;
    const vkc_device_info_t *info = vkc_ctx_info(e->vkc);
    snprintf(e->base.device, sizeof(e->base.device), "%.127s", info->name);
    if (!info->buffer_device_address) {
        set_err(err, errlen, "%s: no buffer device address, which the expert kernels need",
                info->name);
        r = -ENOTSUP;
        goto fail;
    }
    e->expert_matvec = cfg->expert_kernel == ENGINE_EXPERTS_MATVEC ||
                       (cfg->expert_kernel == ENGINE_EXPERTS_AUTO && expert_matvec_default(info));
    if ((r = vkc_cmd_new(e->vkc, &e->cmd)) < 0) {
        set_err(err, errlen, "cannot create a command buffer: %s", strerror(-r));
        goto fail;
    }
    if ((r = engine_vk_load_weights(e, err, errlen)) < 0 || (r = engine_vk_alloc_kv(e, err, errlen)) < 0 ||
        (r = engine_vk_alloc_scratch(e, err, errlen)) < 0)
        goto fail;

    expert_store_config_t sc = {
        .model = m,
        .path = cfg->path,
        .vkc = e->vkc,
        .gpu_bytes = cfg->gpu_cache_bytes ? cfg->gpu_cache_bytes : engine_vk_auto_gpu_bytes(e),
        .host_bytes = cfg->host_cache_bytes,
        .policy = (expert_policy_t)cfg->policy,
        .io = {.backend = (enum moeio_backend)cfg->io_backend,
               .depth = cfg->io_depth ? cfg->io_depth : 64,
               .buffered = cfg->io_buffered,
               .wrapper = cfg->io_wrapper},
        .force_staged = cfg->force_staged,
    };
    // out of device (or pinned host) memory for the tier: retry smaller, down to one
    // layer's top-k, and say so; only then is it an error
    const uint64_t min_bytes = ((uint64_t)m->expert_bytes + 6 * MOEIO_ALIGN) * hp->n_expert_used;
    while ((r = expert_store_new(&sc, &e->store, err, errlen)) == -ENOMEM &&
           sc.gpu_bytes > min_bytes) {
        uint64_t less = sc.gpu_bytes / 4 * 3;
        sc.gpu_bytes = less > min_bytes ? less : min_bytes;
        e->shrunk = true;
    }
    if (r < 0)
        goto fail;
    e->gpu_cache_bytes = sc.gpu_bytes;
    *ret = &e->base;
    return 0;
fail:
    vk_free(&e->base);
    return r;
}

int engine_vk_describe(engine_t *base, char *buf, size_t size)
{
    engine_vk_t *e = (engine_vk_t *)base;
    char dev[768];
    vkc_device_info_format(vkc_ctx_info(e->vkc), dev, sizeof(dev));
    const char *notes = expert_store_io_notes(e->store);
    return snprintf(buf, size,
                    "%s; experts: %u GPU slots + %u host slots of %" PRIu64 " bytes (%s)%s%s%s",
                    dev, expert_store_gpu_slots(e->store), expert_store_host_slots(e->store),
                    expert_store_slot_bytes(e->store),
                    expert_store_zero_copy(e->store) ? "zero copy" : "staged",
                    e->shrunk ? "; GPU expert cache shrunk to what the device could allocate" : "",
                    notes[0] ? "; " : "", notes);
}

uint64_t engine_vk_validation_messages(engine_t *base, char *last, size_t size)
{
    return vkc_ctx_validation_messages(((engine_vk_t *)base)->vkc, last, size);
}
