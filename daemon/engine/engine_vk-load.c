/* Loading for the Vulkan engine: the resident tensors of the model (embeddings, norms,
 * attention, routers, shared experts, output) read with libmoeio into device buffers,
 * split by rows where one exceeds the device's binding limit, with load progress; the F16
 * KV cache; the activations and the small host-visible buffers of a step; and the default
 * size of the GPU expert tier. Experts are never read here: expert_store.c streams them. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_vk-internal.h"
#include "iouring/moeio.h"
#include "model/quant.h"

#define set_err engine_vk_set_err

void engine_vk_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- loading ------------------------------------------------------------------------- */

typedef struct loader {
    moeio_t *io;
    moeio_pool_t *pool;
    uint64_t done, total;
    engine_vk_t *e;
} loader_t;

/* Reads [off, off+len) of the file into buf at dst_off, through the pool in pieces. */
static int load_bytes(loader_t *ld, uint64_t off, uint64_t len, vkc_buffer_t *buf,
                      uint64_t dst_off)
{
    const uint64_t piece = moeio_pool_size(ld->pool) - 2 * MOEIO_ALIGN;
    while (len) {
        uint64_t n = len < piece ? len : piece;
        moeio_read_t rd = {.offset = off, .len = n, .dst = moeio_pool_base(ld->pool)};
        int r = moeio_read_batch(ld->io, &rd, 1);
        if (r < 0)
            return r;
        r = vkc_buffer_write(ld->e->vkc, buf, dst_off, (char *)rd.dst + rd.inner, n);
        if (r < 0)
            return r;
        off += n;
        dst_off += n;
        len -= n;
        ld->done += n;
        if (ld->e->cfg.progress)
            ld->e->cfg.progress(ld->e->cfg.progress_userdata, ld->done, ld->total);
    }
    return 0;
}

/* Uploads tensor t as rows x cols (rows = product of the outer dims). Absent: empty wt. */
static int wt_load(loader_t *ld, const gguf_tensor_t *t, wt_t *w, char *err, size_t errlen)
{
    engine_vk_t *e = ld->e;
    const vkc_device_info_t *info = vkc_ctx_info(e->vkc);
    uint64_t rows = 1, row_bytes, limit;
    int r;
    memset(w, 0, sizeof(*w));
    if (!t)
        return 0;
    for (uint32_t d = 1; d < t->n_dims; d++)
        rows *= t->ne[d];
    r = quant_row_size(t->type, t->ne[0], &row_bytes);
    if (r < 0 || rows > UINT32_MAX || t->ne[0] > UINT32_MAX || row_bytes * rows != t->size) {
        set_err(err, errlen, "tensor %s: size does not match its type and shape", t->name);
        return -EINVAL;
    }
    if (t->type != 0 /* F32 */ && !vkc_matvec_supports(t->type)) {
        set_err(err, errlen, "tensor %s: type %" PRIu32 " has no Vulkan kernel", t->name,
                t->type);
        return -ENOTSUP;
    }
    w->type = t->type;
    w->rows = (uint32_t)rows;
    w->cols = (uint32_t)t->ne[0];
    w->row_bytes = row_bytes;
    // one binding reaches maxStorageBufferRange bytes (128 MiB on lavapipe): split by rows
    limit = info->max_storage_range < info->max_allocation ? info->max_storage_range
                                                           : info->max_allocation;
    limit = limit > 4096 ? limit - 4096 : limit;
    uint64_t per = limit / row_bytes;
    if (per == 0 || (rows + per - 1) / per > WT_PARTS_MAX) {
        set_err(err, errlen, "tensor %s: rows of %" PRIu64 " bytes exceed the device's binding "
                "limit of %" PRIu64, t->name, row_bytes, limit);
        return -E2BIG;
    }
    for (uint64_t r0 = 0; r0 < rows; r0 += per) {
        uint32_t n = (uint32_t)(rows - r0 < per ? rows - r0 : per);
        uint32_t p = w->n_parts++;
        w->part[p].row0 = (uint32_t)r0;
        w->part[p].rows = n;
        r = vkc_buffer_new(e->vkc, VKC_MEM_DEVICE, (uint64_t)n * row_bytes, &w->part[p].buf);
        if (r < 0) {
            set_err(err, errlen, "tensor %s: no device memory for %" PRIu64 " bytes", t->name,
                    (uint64_t)n * row_bytes);
            return r;
        }
        r = load_bytes(ld, t->offset + r0 * row_bytes, (uint64_t)n * row_bytes, w->part[p].buf, 0);
        if (r < 0) {
            set_err(err, errlen, "tensor %s: reading the model: %s", t->name, strerror(-r));
            return r;
        }
    }
    return 0;
}

void engine_vk_wt_free(wt_t *w)
{
    for (uint32_t p = 0; p < w->n_parts; p++)
        vkc_buffer_free(w->part[p].buf);
    memset(w, 0, sizeof(*w));
}

static uint64_t tensor_bytes(const gguf_tensor_t *t)
{
    return t ? t->size : 0;
}
/* ---- device memory for the rest ------------------------------------------------------------ */

static uint64_t resident_bytes(const model_t *m)
{
    uint64_t b = tensor_bytes(m->tok_embd) + tensor_bytes(m->output_norm);
    if (m->output && m->output != m->tok_embd)
        b += tensor_bytes(m->output);
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer_t *t = &m->layers[il];
        const gguf_tensor_t *ts[] = {t->attn_norm, t->wq,       t->wk,         t->wv,
                                     t->wo,        t->bq,       t->bk,         t->bv,
                                     t->q_norm,    t->k_norm,   t->ffn_norm,   t->router,
                                     t->gate_shexp, t->up_shexp, t->down_shexp, t->shexp_gate};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
            b += tensor_bytes(ts[i]);
    }
    return b;
}

static int new_buf(engine_vk_t *e, enum vkc_mem_kind kind, uint64_t bytes, vkc_buffer_t **ret,
                   const char *what, char *err, size_t errlen)
{
    int r = vkc_buffer_new(e->vkc, kind, bytes ? bytes : 16, ret);
    if (r < 0)
        set_err(err, errlen, "%s: cannot allocate %" PRIu64 " bytes of %s memory: %s", what, bytes,
                kind == VKC_MEM_DEVICE ? "device" : "host-visible", strerror(-r));
    return r;
}

int engine_vk_alloc_scratch(engine_vk_t *e, char *err, size_t errlen)
{
    const model_hparams_t *hp = e->hp;
    const uint64_t B = e->n_batch, E = hp->n_embd, K = hp->n_expert_used, X = hp->n_expert;
    const uint64_t nq = (uint64_t)hp->n_head * hp->head_dim_k,
                   nk = (uint64_t)hp->n_head_kv * hp->head_dim_k,
                   nv = (uint64_t)hp->n_head_kv * hp->head_dim_v,
                   no = (uint64_t)hp->n_head * hp->head_dim_v;
    const uint64_t S = hp->n_ff_shexp ? hp->n_ff_shexp : 1;
    const struct {
        vkc_buffer_t **b;
        uint64_t floats;
        const char *what;
    } d[] = {
        {&e->x, B * E, "activations"},      {&e->xb, B * E, "activations"},
        {&e->xb2, B * E, "activations"},    {&e->q, B * nq, "queries"},
        {&e->k, B * nk, "keys"},            {&e->v, B * nv, "values"},
        {&e->att, B * no, "attention"},     {&e->ffo, B * E, "activations"},
        {&e->sg, B * S, "shared expert"},   {&e->su, B * S, "shared expert"},
        {&e->gsh, B, "shared expert gate"}, {&e->rlog, B * X, "router logits"},
        {&e->plog, B * X, "router logits"}, {&e->h, B * K * hp->n_ff_exp, "expert hidden"},
        {&e->y, B * K * E, "expert outputs"}, {&e->xl, B * E, "output rows"},
        {&e->tmp, B * E, "activations"},
        {&e->xg, e->expert_matvec ? B * K * E : 4, "expert inputs"},
        {&e->hu, e->expert_matvec ? B * K * hp->n_ff_exp : 4, "expert hidden"},
        {&e->yg, e->expert_matvec ? B * K * E : 4, "expert outputs"},
    };
    int r;
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        if ((r = new_buf(e, VKC_MEM_DEVICE, d[i].floats * 4, d[i].b, d[i].what, err, errlen)) < 0)
            return r;
    // host-visible: step inputs, routing read-back, slot table + entries, logits
    e->off_pos = (uint64_t)WT_PARTS_MAX * AL(B * 4);
    e->off_rows = AL(e->off_pos + B * 4);
    e->off_ranges = AL(e->off_rows + B * 4);
    if ((r = new_buf(e, VKC_MEM_HOST, e->off_ranges + 2 * B * 4, &e->inp, "step inputs", err,
                     errlen)) < 0)
        return r;
    e->off_rw = AL(B * K * 4);
    e->off_pids = 2 * AL(B * K * 4);
    e->off_pw = 3 * AL(B * K * 4);
    if ((r = new_buf(e, VKC_MEM_HOST, 4 * AL(B * K * 4), &e->route, "routing", err, errlen)) < 0)
        return r;
    e->off_entries = AL(X * sizeof(vkc_moe_slot_t));
    e->off_gids = AL(e->off_entries + B * K * sizeof(vkc_moe_entry_t));
    // gather ids (each wave's at the next 256-byte boundary: at most 255 bytes of slack in
    // all) + the row permutation + the grouped-matmul tables of a wave (gate, up, down: each
    // at most one table per expert, 256-aligned)
    e->off_groups = e->off_gids + AL(B * K * 4) + 256 + AL(B * K * 4);
    if ((r = new_buf(e, VKC_MEM_HOST,
                     e->off_groups + (e->expert_matvec ? 3 * X * AL(16) : 0), &e->table,
                     "slot table", err, errlen)) < 0)
        return r;
    if ((r = new_buf(e, VKC_MEM_HOST, (uint64_t)e->n_logits_max * hp->n_vocab * 4, &e->logits,
                     "logits", err, errlen)) < 0)
        return r;
    return 0;
}

int engine_vk_load_weights(engine_vk_t *e, char *err, size_t errlen)
{
    const model_t *m = e->base.model;
    loader_t ld = {.e = e, .total = resident_bytes(m)};
    moeio_config_t io = {.backend = (enum moeio_backend)e->cfg.io_backend,
                         .buffered = e->cfg.io_buffered, .depth = 4};
    int r = moeio_pool_new(16u << 20, 0, &ld.pool);
    if (r < 0) {
        set_err(err, errlen, "no memory for the load buffer");
        return r;
    }
    r = moeio_new(e->cfg.path, &io, ld.pool, &ld.io);
    if (r < 0) {
        set_err(err, errlen, "%s: %s", e->cfg.path, strerror(-r));
        goto out;
    }
    if ((r = wt_load(&ld, m->tok_embd, &e->tok_embd, err, errlen)) < 0 ||
        (r = wt_load(&ld, m->output_norm, &e->output_norm, err, errlen)) < 0)
        goto out;
    // tied output: logits use token_embd (llama-model.cpp, TENSOR_DUPLICATED)
    if (m->output && m->output != m->tok_embd) {
        if ((r = wt_load(&ld, m->output, &e->output, err, errlen)) < 0)
            goto out;
    } else {
        e->output = e->tok_embd;
        e->output_is_embd = true;
    }
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer_t *t = &m->layers[il];
        vk_layer_t *l = &e->layers[il];
        const struct {
            const gguf_tensor_t *t;
            wt_t *w;
        } parts[] = {
            {t->attn_norm, &l->attn_norm},   {t->wq, &l->wq},
            {t->wk, &l->wk},                 {t->wv, &l->wv},
            {t->wo, &l->wo},                 {t->bq, &l->bq},
            {t->bk, &l->bk},                 {t->bv, &l->bv},
            {t->q_norm, &l->q_norm},         {t->k_norm, &l->k_norm},
            {t->ffn_norm, &l->ffn_norm},     {t->router, &l->router},
            {t->gate_shexp, &l->gate_shexp}, {t->up_shexp, &l->up_shexp},
            {t->down_shexp, &l->down_shexp}, {t->shexp_gate, &l->shexp_gate},
        };
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
            if ((r = wt_load(&ld, parts[i].t, parts[i].w, err, errlen)) < 0)
                goto out;
        // norms, biases and the gate vector are bound whole: they are small and F32
        const wt_t *vec[] = {&l->attn_norm, &l->ffn_norm, &l->bq, &l->bk, &l->bv, &l->q_norm,
                             &l->k_norm};
        for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++)
            if (vec[i]->n_parts > 1 || (vec[i]->n_parts && vec[i]->type != 0)) {
                set_err(err, errlen, "layer %" PRIu32 ": norm and bias vectors must be F32", il);
                r = -ENOTSUP;
                goto out;
            }
        if ((t->bq != NULL) != (t->bk != NULL) || (t->bq != NULL) != (t->bv != NULL)) {
            set_err(err, errlen, "layer %" PRIu32 ": q, k and v biases must come together", il);
            r = -ENOTSUP;
            goto out;
        }
    }
    if (e->output_norm.type != 0) {
        set_err(err, errlen, "output_norm must be F32");
        r = -ENOTSUP;
    }
out:
    moeio_free(ld.io);
    moeio_pool_free(ld.pool);
    return r;
}

int engine_vk_alloc_kv(engine_vk_t *e, char *err, size_t errlen)
{
    const model_hparams_t *hp = e->hp;
    const uint64_t rows = (uint64_t)e->base.n_seq_max * e->base.n_ctx;
    const uint64_t kb = rows * hp->n_head_kv * hp->head_dim_k * 2,
                   vb = rows * hp->n_head_kv * hp->head_dim_v * 2;
    const vkc_device_info_t *info = vkc_ctx_info(e->vkc);
    if (kb > info->max_storage_range || vb > info->max_storage_range) {
        set_err(err, errlen,
                "KV cache of one layer (%" PRIu64 " bytes for %u sequences x %u positions) "
                "exceeds the device's binding limit of %" PRIu64 "; lower ctx or parallel",
                kb, e->base.n_seq_max, e->base.n_ctx, info->max_storage_range);
        return -E2BIG;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        int r;
        if ((r = new_buf(e, VKC_MEM_DEVICE, kb, &e->layers[il].k_cache, "KV cache", err, errlen)) <
                0 ||
            (r = new_buf(e, VKC_MEM_DEVICE, vb, &e->layers[il].v_cache, "KV cache", err, errlen)) <
                0)
            return r;
    }
    return 0;
}

/* The GPU tier when the caller left it to us: every expert if that fits what the device has
 * left after the rest, else what fits (minus a margin for the driver). */
uint64_t engine_vk_auto_gpu_bytes(engine_vk_t *e)
{
    const vkc_device_info_t *info = vkc_ctx_info(e->vkc);
    const model_t *m = e->base.model;
    uint64_t budget = 0, used = vkc_ctx_device_bytes(e->vkc);
    for (uint32_t i = 0; i < info->n_heaps; i++)
        if (info->heaps[i].device_local && info->heaps[i].budget > budget)
            budget = info->heaps[i].budget;
    if (e->cfg.device_limit)
        budget = e->cfg.device_limit;
    // expert slots are page-rounded: ask for a little more than the raw bytes
    uint64_t all = m->expert_bytes_total + (uint64_t)m->hp.n_layer * m->hp.n_expert * 3 * 8192;
    uint64_t avail = budget > used ? (budget - used) / 10 * 8 : 0;
    return all < avail ? all : avail;
}
