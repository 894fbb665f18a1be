/* Private to the Vulkan engine (engine_vk.c: the step; engine_vk-load.c: loading the
 * resident weights and allocating the KV cache and scratch): the engine's state. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/expert_store.h"
#include "gpu/vkc.h"

#define WT_PARTS_MAX 64
/* Sub-buffer offsets of host-visible operands: kernels bind at multiples of the storage
 * offset alignment, which Vulkan caps at 256. */
#define AL(x) (((uint64_t)(x) + 255) & ~(uint64_t)255)

/* A resident weight tensor, possibly split into row ranges that each fit one binding. */
typedef struct wt {
    uint32_t type, rows, cols, n_parts;
    uint64_t row_bytes;
    struct {
        vkc_buffer_t *buf;
        uint32_t row0, rows;
    } part[WT_PARTS_MAX];
} wt_t;

typedef struct vk_layer {
    wt_t attn_norm, wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm, ffn_norm, router;
    wt_t gate_shexp, up_shexp, down_shexp, shexp_gate;
    vkc_buffer_t *k_cache, *v_cache;
} vk_layer_t;

typedef struct vk_seq {
    bool used;
    uint32_t n_pos; /* positions 0..n_pos-1 are in the KV cache */
} vk_seq_t;

typedef struct engine_vk {
    engine_t base;
    engine_vk_config_t cfg;
    const model_hparams_t *hp;
    vkc_ctx_t *vkc;
    vkc_cmd_t *cmd;
    expert_store_t *store;
    wt_t tok_embd, output_norm, output;
    bool output_is_embd;
    vk_layer_t *layers;
    vk_seq_t *seqs;
    uint32_t n_batch, n_logits_max, ff_max;
    /* device scratch, sized for n_batch entries */
    vkc_buffer_t *x, *xb, *xb2, *q, *k, *v, *att, *ffo, *sg, *su, *gsh, *rlog, *plog, *h, *y,
        *xl, *tmp, *xg, *hu, *yg;
    /* host-visible */
    vkc_buffer_t *inp;    /* ids [WT_PARTS_MAX][n_batch], pos, kv rows, ranges [2 n_batch] */
    vkc_buffer_t *route;  /* ids, weights [n_batch][k] of the layer; guesses for the next */
    vkc_buffer_t *table;  /* vkc_moe_slot_t [n_expert], vkc_moe_entry_t [n_batch k] */
    vkc_buffer_t *logits; /* [n_logits_max][n_vocab] */
    uint64_t off_pos, off_rows, off_ranges, off_pids, off_pw, off_rw, off_entries, off_gids;
    uint64_t off_groups; /* grouped-matmul tables of the matvec expert path */
    /* host scratch */
    int32_t *uni;        /* union of a layer's experts */
    int32_t *pred;       /* guessed experts of the next layer */
    uint32_t n_pred;
    int32_t *pinned;     /* experts pinned for the layer in flight */
    uint32_t n_pinned, pinned_layer;
    uint8_t *mark;       /* [n_expert] */
    expert_ref_t *refs;
    uint32_t *logit_rows;
    uint32_t *grp_start, *grp_count; /* [n_expert]: each wave expert's entries */
    vkc_matmul_group_t *mm_groups;   /* [n_expert]: one grouped dispatch's table */
    bool expert_matvec;              /* expert FFN through matvec, not the slot-table kernel */
    engine_stats_t stats;
    uint64_t guess_total, guess_right;
    uint64_t gpu_cache_bytes; /* the tier's budget in use */
    bool shrunk;              /* smaller than asked: the device had no more */
} engine_vk_t;

void engine_vk_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reads the resident tensors into device buffers, reporting progress. */
int engine_vk_load_weights(engine_vk_t *e, char *err, size_t errlen);
/* The F16 K and V caches of every layer: n_seq_max x n_ctx rows each. */
int engine_vk_alloc_kv(engine_vk_t *e, char *err, size_t errlen);
/* Activations for n_batch entries and the host-visible step buffers. */
int engine_vk_alloc_scratch(engine_vk_t *e, char *err, size_t errlen);
/* The GPU expert tier when the caller left it to the engine. */
uint64_t engine_vk_auto_gpu_bytes(engine_vk_t *e);
void engine_vk_wt_free(wt_t *w);
