/* Kernel entry points for the embedding gather, logits top-k, attention over the F16 KV
 * cache and the expert FFN through a slot table (daemon/gpu/vkc-ops2.c; shaders/embed.comp,
 * argmax.comp, attention.comp, moe_ffn.comp). Same conventions as vkc-kernels.h: each call
 * records into a cmd and returns 0 or -errno (-EINVAL bad shape, type or a float operand at
 * an offset that is not a multiple of the storage offset alignment, -E2BIG an operand past
 * maxStorageBufferRange, -ENOTSUP a device feature missing, -ENOMEM descriptor or pipeline
 * memory); recording does not wait; put vkc_cmd_barrier() between dependent kernels.
 * Included by gpu/vkc.h. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* ---- embedding -------------------------------------------------------------------------- */

/* OUT[t][c] = dequant(W)[ids[t]][c] for t < n_tok, c < cols: W is n_rows x cols of GGML
 * type `type` (any type vkc_matvec_supports), ids int32[n_tok] on the device, OUT float32
 * with stride out_stride floats (0: cols). An id outside [0, n_rows) gives a row of zeros. */
typedef struct vkc_embed_args {
    uint32_t type;
    uint32_t n_rows, cols, n_tok;
    vkc_view_t w, ids, out;
    uint32_t out_stride;
} vkc_embed_args_t;
int vkc_cmd_embed(vkc_cmd_t *cmd, const vkc_embed_args_t *a);

/* ---- logits: argmax and top-k ------------------------------------------------------------ */

/* For each row r < n_rows of X (float32, n values, stride x_stride floats, 0: n): the k
 * (1..64) largest values in descending order, ties to the lower id, into IDS int32[r][k] and
 * VALS float32[r][k]. NaNs are never chosen; when fewer than k values remain the rest is
 * id -1, value -inf. k = 1 is argmax. Reads each row k times. */
#define VKC_TOPK_MAX 64
typedef struct vkc_topk_args {
    uint32_t n, n_rows, k, x_stride;
    vkc_view_t x, ids, vals;
} vkc_topk_args_t;
int vkc_cmd_topk(vkc_cmd_t *cmd, const vkc_topk_args_t *a);

/* ---- attention over the F16 KV cache ---------------------------------------------------- */

/* K and V caches of one layer: [n_ctx][n_head_kv][head_dim] half floats each, starting at a
 * 4-aligned byte offset (the view). */

/* CACHE[rows[i]][0..row_elems) = f16(SRC[i][0..row_elems)) for i < n_rows: stores the new
 * K (or V) rows of a step (row_elems = n_head_kv * head_dim, even). SRC float32 with stride
 * src_stride floats (0: row_elems); rows uint32[n_rows] on the device (cache rows, i.e. the
 * sequence's first row plus the position); rows >= n_ctx are skipped. */
typedef struct vkc_kv_store_args {
    uint32_t n_rows, row_elems, src_stride, n_ctx;
    vkc_view_t src, cache, rows;
} vkc_kv_store_args_t;
int vkc_cmd_kv_store(vkc_cmd_t *cmd, const vkc_kv_store_args_t *a);

/* For each query q < n_q and head h < n_head (GQA: KV head h / (n_head / n_head_kv)):
 *   OUT[q][h] = softmax(scale * Q[q][h] . K[first_q + j][kv]) V[first_q + j][kv], j < n_kv_q
 * with (first_q, n_kv_q) = ranges uint32[2 q], [2 q + 1] on the device (clamped to n_ctx;
 * n_kv_q = 0 gives zeros). Decode: one query per sequence, its range = its cached rows;
 * several sequences in one dispatch. Causal prefill: query i at position pos_i of a sequence
 * starting at row first gets (first, pos_i + 1). Q float32 [n_q][q_stride] (0: n_head *
 * head_dim_k), OUT float32 [n_q][o_stride] (0: n_head * head_dim_v); head dims even and
 * <= VKC_ATTENTION_MAX_HEAD_DIM; a numerically stable online softmax. */
#define VKC_ATTENTION_MAX_HEAD_DIM 512
typedef struct vkc_attention_args {
    uint32_t n_q, n_head, n_head_kv, head_dim_k, head_dim_v, n_ctx;
    uint32_t q_stride, o_stride;
    float scale;
    vkc_view_t q, k, v, ranges, out;
} vkc_attention_args_t;
int vkc_cmd_attention(vkc_cmd_t *cmd, const vkc_attention_args_t *a);

/* ---- expert FFN through a slot table ------------------------------------------------------ */

/* One slot of the expert cache as the shaders see it: device addresses (vkc_buffer_address
 * + offset, 16-aligned) of the expert's gate [n_ff][n_embd], up [n_ff][n_embd] and down
 * [n_embd][n_ff] matrices. The engine keeps an array of these in a device buffer. */
typedef struct vkc_moe_slot {
    uint64_t gate, up, down, pad;
} vkc_moe_slot_t;
_Static_assert(sizeof(vkc_moe_slot_t) == 32, "mirrors SLOTS in shaders/moe_ffn.comp");
/* Fill a slot from views: -ENOTSUP without buffer device address, -EINVAL unaligned. */
int vkc_moe_slot_set(vkc_moe_slot_t *slot, vkc_view_t gate, vkc_view_t up, vkc_view_t down);

/* Expert `slot` applied to token `token`, scaled by `weight`, written to row `row` of H and
 * Y (row = token * k + j for the token's j-th expert, so vkc_cmd_moe_combine finds it). */
typedef struct vkc_moe_entry {
    uint32_t token;
    float weight;
    uint32_t slot, row;
} vkc_moe_entry_t;
_Static_assert(sizeof(vkc_moe_entry_t) == 16, "mirrors ENTRIES in shaders/moe_ffn.comp");

/* For each entry e < n_entries (entries: vkc_moe_entry_t[] on the device; slots:
 * vkc_moe_slot_t[n_slots] on the device):
 *   H[row][i] = silu(gate . X[token]) * (up . X[token])   i < n_ff
 *   Y[row][c] = weight * (down . H[row])                   c < n_embd
 * X float32 [n_tok][x_stride] (0: n_embd); H float32 [n_rows][n_ff] and Y float32
 * [n_rows][n_embd] are scratch of the caller. gate and up are of type gate_up_type, down of
 * down_type (cols multiples of the block size). Records two dispatches with a barrier
 * between. Entries with a slot >= n_slots, token >= n_tok or row >= n_rows are skipped.
 * Each entry writes only its own rows, so the engine may split a step's entries over
 * several calls (experts loaded later) with identical results. -ENOTSUP without buffer
 * device address. */
typedef struct vkc_moe_args {
    uint32_t gate_up_type, down_type;
    uint32_t n_embd, n_ff, n_slots, n_entries, n_tok, x_stride, n_rows;
    vkc_view_t slots, entries, x, h, y;
} vkc_moe_args_t;
int vkc_cmd_moe_experts(vkc_cmd_t *cmd, const vkc_moe_args_t *a);

/* OUT[t][c] (+)= sum_{j < k} Y[t * k + j][c] for t < n_tok, c < n_embd, summed in the order
 * j = 0..k-1 (deterministic whatever computed the rows); OUT float32 with stride out_stride
 * floats (0: n_embd); accumulate adds the sum to OUT (the residual). */
typedef struct vkc_moe_combine_args {
    uint32_t n_tok, n_embd, k, out_stride;
    vkc_view_t y, out;
    bool accumulate;
} vkc_moe_combine_args_t;
int vkc_cmd_moe_combine(vkc_cmd_t *cmd, const vkc_moe_combine_args_t *a);
