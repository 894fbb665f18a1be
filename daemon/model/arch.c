/* The MoE architectures moed runs, as data: per architecture the semantics flags
 * (rope style, q/k norm, gating, top-k renormalization, shared expert) and per tensor role
 * its GGUF name, expected shape and kind. model_load checks a file against this table and
 * mkmodel writes files from it, so the two cannot drift apart.
 *
 * Every fact comes from llama.cpp (ggml-org/llama.cpp):
 *   - src/llama-arch.cpp: tensor names (token_embd, blk.%d.attn_q, ffn_gate_inp,
 *     ffn_{gate,up,down}_exps, ffn_gate_inp_shexp, ...);
 *   - src/llama-model.cpp load_tensors: the shapes. qwen2moe and olmoe create wq/wo as
 *     {n_embd, n_embd} (so n_head*head_dim must be n_embd); olmoe's attn_q_norm and
 *     attn_k_norm are {n_embd} (RMSNorm over the whole q and k); qwen3moe's are
 *     {n_embd_head_k} (per head); qwen2moe and llama have optional q/k/v biases;
 *     n_ff_exp = expert_feed_forward_length or n_ff / n_expert_used for qwen*, while olmoe
 *     and llama (Mixtral) use n_ff for the expert width;
 *   - llama_model_rope_type: LLAMA -> NORM, QWEN2MOE/QWEN3MOE/OLMOE -> NEOX;
 *   - src/models/{qwen2moe,qwen3moe,olmoe,llama}.cpp: build_moe_ffn with softmax gating;
 *     norm_w (renormalize the top-k weights) true for qwen3moe and llama, false for
 *     qwen2moe and olmoe; no expert weight scale for any of the four; qwen2moe adds the
 *     shared expert times sigmoid(ffn_gate_inp_shexp . x). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

static const model_arch_info_t arch_infos[MODEL_ARCH_COUNT_] = {
    [MODEL_ARCH_QWEN3MOE] =
        {
            .name = "qwen3moe",
            .rope = MODEL_ROPE_NEOX,
            .qk_norm = MODEL_QK_NORM_HEAD,
            .gating = MODEL_GATING_SOFTMAX,
            .norm_topk = true,
            .ff_exp_key = true,
        },
    [MODEL_ARCH_QWEN2MOE] =
        {
            .name = "qwen2moe",
            .rope = MODEL_ROPE_NEOX,
            .qk_norm = MODEL_QK_NORM_NONE,
            .gating = MODEL_GATING_SOFTMAX,
            .norm_topk = false,
            .shexp = true,
            .attn_bias = true,
            .attn_width_is_embd = true,
            .ff_exp_key = true,
        },
    [MODEL_ARCH_OLMOE] =
        {
            .name = "olmoe",
            .rope = MODEL_ROPE_NEOX,
            .qk_norm = MODEL_QK_NORM_FULL,
            .gating = MODEL_GATING_SOFTMAX,
            .norm_topk = false,
            .attn_width_is_embd = true,
        },
    [MODEL_ARCH_LLAMA] =
        {
            .name = "llama",
            .rope = MODEL_ROPE_NORM,
            .qk_norm = MODEL_QK_NORM_NONE,
            .gating = MODEL_GATING_SOFTMAX,
            .norm_topk = true,
            .attn_bias = true,
        },
};

const model_arch_info_t *model_arch_info(enum model_arch a)
{
    if ((unsigned)a >= MODEL_ARCH_COUNT_)
        return NULL;
    return &arch_infos[a];
}

const char *model_arch_name(enum model_arch a)
{
    const model_arch_info_t *ai = model_arch_info(a);
    return ai ? ai->name : "unknown";
}

int model_arch_from_name(const char *name, enum model_arch *ret)
{
    if (!name)
        return -EINVAL;
    for (unsigned a = 0; a < MODEL_ARCH_COUNT_; a++) {
        if (!strcmp(arch_infos[a].name, name)) {
            *ret = (enum model_arch)a;
            return 0;
        }
    }
    return -ENOTSUP;
}

/* Fills a spec; ne beyond n_dims stays 1. */
static void spec_set(model_tensor_spec_t *s, const char *fmt, bool per_layer, bool required,
                     enum model_kind kind, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                     uint64_t ne2)
{
    s->fmt = fmt;
    s->per_layer = per_layer;
    s->required = required;
    s->kind = kind;
    s->n_dims = n_dims;
    s->ne[0] = ne0;
    s->ne[1] = n_dims > 1 ? ne1 : 1;
    s->ne[2] = n_dims > 2 ? ne2 : 1;
    s->ne[3] = 1;
}

int model_tensor_spec(enum model_arch a, const model_hparams_t *hp, enum model_role r,
                      model_tensor_spec_t *ret)
{
    const model_arch_info_t *ai = model_arch_info(a);
    if (!ai || !hp || (unsigned)r >= MODEL_ROLE_COUNT_)
        return -EINVAL;

    const uint64_t embd = hp->n_embd, vocab = hp->n_vocab;
    const uint64_t q_width = (uint64_t)hp->n_head * hp->head_dim_k;
    const uint64_t k_width = (uint64_t)hp->n_head_kv * hp->head_dim_k;
    const uint64_t v_width = (uint64_t)hp->n_head_kv * hp->head_dim_v;
    const uint64_t o_width = (uint64_t)hp->n_head * hp->head_dim_v;
    model_tensor_spec_t s;

    switch (r) {
    case MODEL_ROLE_TOK_EMBD:
        spec_set(&s, "token_embd.weight", false, true, MODEL_KIND_MATRIX, 2, embd, vocab, 1);
        break;
    case MODEL_ROLE_OUTPUT_NORM:
        spec_set(&s, "output_norm.weight", false, true, MODEL_KIND_NORM, 1, embd, 1, 1);
        break;
    case MODEL_ROLE_OUTPUT:
        /* Absent means tied to token_embd. llama.cpp itself insists on output.weight for
         * qwen2moe and olmoe; accepting its absence there is a superset with one meaning. */
        spec_set(&s, "output.weight", false, false, MODEL_KIND_MATRIX, 2, embd, vocab, 1);
        break;
    case MODEL_ROLE_ATTN_NORM:
        spec_set(&s, "blk.%u.attn_norm.weight", true, true, MODEL_KIND_NORM, 1, embd, 1, 1);
        break;
    case MODEL_ROLE_WQ:
        spec_set(&s, "blk.%u.attn_q.weight", true, true, MODEL_KIND_MATRIX, 2, embd, q_width, 1);
        break;
    case MODEL_ROLE_WK:
        spec_set(&s, "blk.%u.attn_k.weight", true, true, MODEL_KIND_MATRIX, 2, embd, k_width, 1);
        break;
    case MODEL_ROLE_WV:
        spec_set(&s, "blk.%u.attn_v.weight", true, true, MODEL_KIND_MATRIX, 2, embd, v_width, 1);
        break;
    case MODEL_ROLE_WO:
        spec_set(&s, "blk.%u.attn_output.weight", true, true, MODEL_KIND_MATRIX, 2, o_width, embd,
                 1);
        break;
    case MODEL_ROLE_BQ:
    case MODEL_ROLE_BK:
    case MODEL_ROLE_BV:
        if (!ai->attn_bias)
            return -ENOENT;
        if (r == MODEL_ROLE_BQ)
            spec_set(&s, "blk.%u.attn_q.bias", true, false, MODEL_KIND_BIAS, 1, q_width, 1, 1);
        else if (r == MODEL_ROLE_BK)
            spec_set(&s, "blk.%u.attn_k.bias", true, false, MODEL_KIND_BIAS, 1, k_width, 1, 1);
        else
            spec_set(&s, "blk.%u.attn_v.bias", true, false, MODEL_KIND_BIAS, 1, v_width, 1, 1);
        break;
    case MODEL_ROLE_Q_NORM:
    case MODEL_ROLE_K_NORM: {
        if (ai->qk_norm == MODEL_QK_NORM_NONE)
            return -ENOENT;
        bool q = r == MODEL_ROLE_Q_NORM;
        uint64_t n = ai->qk_norm == MODEL_QK_NORM_HEAD ? hp->head_dim_k : q ? q_width : k_width;
        spec_set(&s, q ? "blk.%u.attn_q_norm.weight" : "blk.%u.attn_k_norm.weight", true, true,
                 MODEL_KIND_NORM, 1, n, 1, 1);
        break;
    }
    case MODEL_ROLE_FFN_NORM:
        spec_set(&s, "blk.%u.ffn_norm.weight", true, true, MODEL_KIND_NORM, 1, embd, 1, 1);
        break;
    case MODEL_ROLE_ROUTER:
        spec_set(&s, "blk.%u.ffn_gate_inp.weight", true, true, MODEL_KIND_ROUTER, 2, embd,
                 hp->n_expert, 1);
        break;
    case MODEL_ROLE_GATE_EXPS:
        spec_set(&s, "blk.%u.ffn_gate_exps.weight", true, true, MODEL_KIND_EXPERTS, 3, embd,
                 hp->n_ff_exp, hp->n_expert);
        break;
    case MODEL_ROLE_UP_EXPS:
        spec_set(&s, "blk.%u.ffn_up_exps.weight", true, true, MODEL_KIND_EXPERTS, 3, embd,
                 hp->n_ff_exp, hp->n_expert);
        break;
    case MODEL_ROLE_DOWN_EXPS:
        spec_set(&s, "blk.%u.ffn_down_exps.weight", true, true, MODEL_KIND_EXPERTS, 3, hp->n_ff_exp,
                 embd, hp->n_expert);
        break;
    case MODEL_ROLE_SHEXP_GATE:
    case MODEL_ROLE_GATE_SHEXP:
    case MODEL_ROLE_UP_SHEXP:
    case MODEL_ROLE_DOWN_SHEXP:
        if (!ai->shexp)
            return -ENOENT;
        if (r == MODEL_ROLE_SHEXP_GATE)
            spec_set(&s, "blk.%u.ffn_gate_inp_shexp.weight", true, true, MODEL_KIND_ROUTER, 1, embd,
                     1, 1);
        else if (r == MODEL_ROLE_GATE_SHEXP)
            spec_set(&s, "blk.%u.ffn_gate_shexp.weight", true, true, MODEL_KIND_MATRIX, 2, embd,
                     hp->n_ff_shexp, 1);
        else if (r == MODEL_ROLE_UP_SHEXP)
            spec_set(&s, "blk.%u.ffn_up_shexp.weight", true, true, MODEL_KIND_MATRIX, 2, embd,
                     hp->n_ff_shexp, 1);
        else
            spec_set(&s, "blk.%u.ffn_down_shexp.weight", true, true, MODEL_KIND_MATRIX, 2,
                     hp->n_ff_shexp, embd, 1);
        break;
    default:
        return -EINVAL;
    }
    *ret = s;
    return 0;
}

int model_tensor_name(const model_tensor_spec_t *s, uint32_t il, char *buf, size_t len)
{
    /* The format holds one "%u" (per-layer names) or none; expanded by hand so the
     * table's strings never reach printf as formats. */
    const char *mark = s->per_layer ? strstr(s->fmt, "%u") : NULL;
    int n;
    if (!mark)
        n = snprintf(buf, len, "%s", s->fmt);
    else
        n = snprintf(buf, len, "%.*s%u%s", (int)(mark - s->fmt), s->fmt, il, mark + 2);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
