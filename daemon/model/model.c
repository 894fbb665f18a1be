/* model_load: turns a parsed GGUF header into a model description moed can run, or
 * refuses it with one line naming the key or tensor that is wrong. It reads the
 * hyperparameters with llama.cpp's keys and defaults (src/llama-model.cpp load_hparams),
 * checks every tensor of the architecture's map (arch.c) for presence, shape (GGML order,
 * ne[0] = input width) and type, refuses any tensor the map does not know (llama.cpp
 * refuses those too: "wrong number of tensors"), and computes where each expert's bytes
 * lie: in ffn_{gate,up,down}_exps the expert is the outermost dimension, so expert e of a
 * [cols, rows, n_expert] tensor is the contiguous slice at offset + e * rows * row_size.
 *
 * Invariants of a loaded model: every required role is present with its exact shape, every
 * matrix type is computable (quant_traits()->can_compute), norms and biases are F32, the
 * three expert tensors of a layer hold exactly n_expert slices each, and
 * resident_bytes + expert_bytes_total is the sum of all tensor sizes of the file.
 * The model borrows tensor infos and strings from the gguf_t; it never reads tensor data. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/quant.h"

#define MODEL_MAX_LAYERS  4096u
#define MODEL_MAX_EXPERTS 512u /* LLAMA_MAX_EXPERTS in llama.cpp */
#define MODEL_MAX_WIDTH   (1u << 20)
#define MODEL_MAX_HEADS   4096u
#define MODEL_MAX_VOCAB   (1u << 24)

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int rc,
                                                      const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- hyperparameter keys ---- */

/* Reads element i of a packed little-endian integer array as uint64 (negative refused). */
static int arr_int(enum gguf_type t, const void *data, uint64_t i, uint64_t *ret)
{
    const unsigned char *p = data;
    switch (t) {
    case GGUF_TYPE_UINT8:
        *ret = p[i];
        return 0;
    case GGUF_TYPE_INT8: {
        int8_t v;
        memcpy(&v, p + i, 1);
        if (v < 0)
            return -ERANGE;
        *ret = (uint64_t)v;
        return 0;
    }
    case GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        *ret = v;
        return 0;
    }
    case GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, p + 2 * i, 2);
        if (v < 0)
            return -ERANGE;
        *ret = (uint64_t)v;
        return 0;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, p + 4 * i, 4);
        *ret = v;
        return 0;
    }
    case GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        if (v < 0)
            return -ERANGE;
        *ret = (uint64_t)v;
        return 0;
    }
    case GGUF_TYPE_UINT64: {
        uint64_t v;
        memcpy(&v, p + 8 * i, 8);
        *ret = v;
        return 0;
    }
    case GGUF_TYPE_INT64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        if (v < 0)
            return -ERANGE;
        *ret = (uint64_t)v;
        return 0;
    }
    default:
        return -EINVAL;
    }
}

typedef struct keyctx {
    const gguf_t *g;
    const char *arch;
    uint32_t n_layer; /* for per-layer arrays; 0 until known */
    char *err;
    size_t errlen;
} keyctx_t;

/* <arch>.<suffix> as a u32. Missing: -ENOENT with a reason when required, else 0 and *v
 * untouched (the default stays). A per-layer array (llama.cpp's get_key_or_arr) is
 * accepted when all n_layer entries are equal; moed has no per-layer widths. */
static int key_u32(const keyctx_t *k, const char *suffix, bool required, uint32_t *v)
{
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", k->arch, suffix);
    int r = gguf_get_u32(k->g, key, v);
    if (r == 0)
        return 0;
    if (r == -ENOENT)
        return required ? fail(k->err, k->errlen, -EINVAL, "missing key %s", key) : 0;
    if (r == -ERANGE)
        return fail(k->err, k->errlen, -EINVAL, "key %s: value out of range", key);

    enum gguf_type t;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(k->g, key, &t, &n, &data) != 0 || !data)
        return fail(k->err, k->errlen, -EINVAL, "key %s: not an unsigned integer", key);
    if (k->n_layer == 0 || n != k->n_layer)
        return fail(k->err, k->errlen, -EINVAL, "key %s: array of %" PRIu64 " values, expected %u",
                    key, n, k->n_layer);
    uint64_t first = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x;
        if (arr_int(t, data, i, &x) != 0 || x > UINT32_MAX)
            return fail(k->err, k->errlen, -EINVAL,
                        "key %s[%" PRIu64 "]: not an unsigned 32-bit integer", key, i);
        if (i == 0)
            first = x;
        else if (x != first)
            return fail(k->err, k->errlen, -ENOTSUP,
                        "key %s: per-layer values differ (layer %" PRIu64 "), not supported", key,
                        i);
    }
    *v = (uint32_t)first;
    return 0;
}

static int key_f32(const keyctx_t *k, const char *suffix, bool required, float *v)
{
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", k->arch, suffix);
    int r = gguf_get_f32(k->g, key, v);
    if (r == 0)
        return 0;
    if (r == -ENOENT)
        return required ? fail(k->err, k->errlen, -EINVAL, "missing key %s", key) : 0;
    return fail(k->err, k->errlen, -EINVAL, "key %s: not a float", key);
}

/* Rope scaling as llama.cpp reads it: type defaults to "linear"; the factor (or the old
 * rope.scale_linear key) gives freq_scale = 1/factor, 0 or absent meaning 1. moed has no
 * YaRN or LongRoPE: refused unless the factor leaves rope unscaled. */
static int read_rope_scaling(const keyctx_t *k, model_hparams_t *hp)
{
    char key[160];
    const char *type = "linear";
    snprintf(key, sizeof(key), "%s.rope.scaling.type", k->arch);
    int r = gguf_get_str(k->g, key, &type);
    if (r != 0 && r != -ENOENT)
        return fail(k->err, k->errlen, -EINVAL, "key %s: not a string", key);

    float factor = 0.0f;
    bool have = false;
    snprintf(key, sizeof(key), "%s.rope.scaling.factor", k->arch);
    r = gguf_get_f32(k->g, key, &factor);
    if (r == 0) {
        have = true;
    } else if (r != -ENOENT) {
        return fail(k->err, k->errlen, -EINVAL, "key %s: not a float", key);
    } else {
        snprintf(key, sizeof(key), "%s.rope.scale_linear", k->arch);
        r = gguf_get_f32(k->g, key, &factor);
        if (r == 0)
            have = true;
        else if (r != -ENOENT)
            return fail(k->err, k->errlen, -EINVAL, "key %s: not a float", key);
    }
    if (have && (!isfinite(factor) || factor < 0.0f))
        return fail(k->err, k->errlen, -EINVAL, "key %s: bad rope scaling factor %g", key,
                    (double)factor);
    float scale = factor == 0.0f ? 1.0f : 1.0f / factor;

    if (!strcmp(type, "none")) {
        hp->rope_freq_scale = 1.0f;
    } else if (!strcmp(type, "linear")) {
        hp->rope_freq_scale = scale;
    } else if (!strcmp(type, "yarn") || !strcmp(type, "longrope")) {
        if (scale != 1.0f)
            return fail(k->err, k->errlen, -ENOTSUP,
                        "key %s.rope.scaling.type: '%s' rope scaling is not supported", k->arch,
                        type);
        hp->rope_freq_scale = 1.0f;
    } else {
        return fail(k->err, k->errlen, -EINVAL,
                    "key %s.rope.scaling.type: unknown rope scaling type '%s'", k->arch, type);
    }
    return 0;
}

/* All hyperparameters except n_vocab (which comes from token_embd). */
static int read_hparams(const keyctx_t *k0, enum model_arch a, model_hparams_t *hp)
{
    const model_arch_info_t *ai = model_arch_info(a);
    keyctx_t k = *k0;
    int r;
    uint32_t n_ff = 0;

    memset(hp, 0, sizeof(*hp));
    if ((r = key_u32(&k, "context_length", true, &hp->n_ctx_train)) ||
        (r = key_u32(&k, "embedding_length", true, &hp->n_embd)) ||
        (r = key_u32(&k, "block_count", true, &hp->n_layer)))
        return r;
    if (hp->n_layer == 0 || hp->n_layer > MODEL_MAX_LAYERS)
        return fail(k.err, k.errlen, -EINVAL, "key %s.block_count: %u layers out of range 1..%u",
                    k.arch, hp->n_layer, MODEL_MAX_LAYERS);
    k.n_layer = hp->n_layer;

    if ((r = key_u32(&k, "expert_count", false, &hp->n_expert)) ||
        (r = key_u32(&k, "expert_used_count", false, &hp->n_expert_used)))
        return r;
    if (hp->n_expert == 0)
        return fail(k.err, k.errlen, -ENOTSUP,
                    "key %s.expert_count is 0 or missing: a dense %s model is not a MoE model",
                    k.arch, k.arch);

    if ((r = key_u32(&k, "feed_forward_length", false, &n_ff)) ||
        (r = key_u32(&k, "attention.head_count", true, &hp->n_head)))
        return r;
    if (hp->n_head == 0)
        return fail(k.err, k.errlen, -EINVAL, "key %s.attention.head_count is 0", k.arch);
    hp->n_head_kv = hp->n_head; /* llama.cpp: optional, defaults to n_head */
    if ((r = key_u32(&k, "attention.head_count_kv", false, &hp->n_head_kv)))
        return r;

    hp->head_dim_k = hp->n_embd / hp->n_head;
    hp->head_dim_v = hp->n_embd / hp->n_head;
    if ((r = key_u32(&k, "attention.key_length", false, &hp->head_dim_k)) ||
        (r = key_u32(&k, "attention.value_length", false, &hp->head_dim_v)))
        return r;
    hp->n_rot = hp->head_dim_k;
    if ((r = key_u32(&k, "rope.dimension_count", false, &hp->n_rot)))
        return r;

    hp->rope_freq_base = 10000.0f;
    if ((r = key_f32(&k, "rope.freq_base", false, &hp->rope_freq_base)) ||
        (r = read_rope_scaling(&k, hp)) ||
        (r = key_f32(&k, "attention.layer_norm_rms_epsilon", true, &hp->rms_eps)))
        return r;

    /* The expert width: qwen* read expert_feed_forward_length (default n_ff / top-k);
     * olmoe and llama shape their expert tensors with n_ff itself. */
    if (ai->ff_exp_key) {
        if ((r = key_u32(&k, "expert_feed_forward_length", false, &hp->n_ff_exp)))
            return r;
        if (hp->n_ff_exp == 0 && hp->n_expert_used)
            hp->n_ff_exp = n_ff / hp->n_expert_used;
    } else {
        hp->n_ff_exp = n_ff;
    }
    if (hp->n_ff_exp == 0)
        return fail(k.err, k.errlen, -EINVAL, "missing key %s.%s: the expert width is unknown",
                    k.arch, ai->ff_exp_key ? "expert_feed_forward_length" : "feed_forward_length");
    if (ai->shexp) {
        if ((r = key_u32(&k, "expert_shared_feed_forward_length", false, &hp->n_ff_shexp)))
            return r;
        if (hp->n_ff_shexp == 0)
            hp->n_ff_shexp = n_ff; /* llama.cpp: n_ff_shexp ? n_ff_shexp : n_ff */
        if (hp->n_ff_shexp == 0)
            return fail(k.err, k.errlen, -EINVAL,
                        "missing key %s.expert_shared_feed_forward_length: the shared expert width "
                        "is unknown",
                        k.arch);
    }
    /* None of the four architectures applies expert_weights_scale (build_moe_ffn is
     * called with scale_w false), whatever the file says. */
    hp->expert_weights_scale = 1.0f;
    return 0;
}

int model_hparams_check(enum model_arch a, const model_hparams_t *hp, char *err, size_t errlen)
{
    const model_arch_info_t *ai = model_arch_info(a);
    if (!ai || !hp)
        return fail(err, errlen, -EINVAL, "unknown architecture");
    const char *n = ai->name;

    if (hp->n_embd == 0 || hp->n_embd > MODEL_MAX_WIDTH)
        return fail(err, errlen, -EINVAL, "%s.embedding_length %u out of range 1..%u", n,
                    hp->n_embd, MODEL_MAX_WIDTH);
    if (hp->n_layer == 0 || hp->n_layer > MODEL_MAX_LAYERS)
        return fail(err, errlen, -EINVAL, "%s.block_count %u out of range 1..%u", n, hp->n_layer,
                    MODEL_MAX_LAYERS);
    if (hp->n_ctx_train == 0)
        return fail(err, errlen, -EINVAL, "%s.context_length is 0", n);
    if (hp->n_vocab == 0 || hp->n_vocab > MODEL_MAX_VOCAB)
        return fail(err, errlen, -EINVAL, "vocabulary size %u out of range 1..%u", hp->n_vocab,
                    MODEL_MAX_VOCAB);
    if (hp->n_head == 0 || hp->n_head > MODEL_MAX_HEADS || hp->n_head_kv == 0 ||
        hp->n_head_kv > hp->n_head || hp->n_head % hp->n_head_kv != 0)
        return fail(err, errlen, -EINVAL,
                    "%s.attention.head_count %u / head_count_kv %u: kv heads must divide the heads",
                    n, hp->n_head, hp->n_head_kv);
    if (hp->head_dim_k == 0 || hp->head_dim_k > MODEL_MAX_HEADS || hp->head_dim_k % 2)
        return fail(err, errlen, -EINVAL, "%s.attention.key_length %u: must be even, 2..%u", n,
                    hp->head_dim_k, MODEL_MAX_HEADS);
    /* Every build_* of the four asserts n_embd_head_v == n_embd_head_k == n_rot. */
    if (hp->head_dim_v != hp->head_dim_k)
        return fail(err, errlen, -ENOTSUP,
                    "%s.attention.value_length %u differs from key_length %u: not supported", n,
                    hp->head_dim_v, hp->head_dim_k);
    if (hp->n_rot != hp->head_dim_k)
        return fail(err, errlen, -ENOTSUP,
                    "%s.rope.dimension_count %u differs from the head size %u: not supported", n,
                    hp->n_rot, hp->head_dim_k);
    if ((uint64_t)hp->n_head * hp->head_dim_k > MODEL_MAX_WIDTH)
        return fail(err, errlen, -EINVAL, "%s: attention width %u x %u too large", n, hp->n_head,
                    hp->head_dim_k);
    if (ai->attn_width_is_embd && (uint64_t)hp->n_head * hp->head_dim_k != hp->n_embd)
        return fail(err, errlen, -EINVAL,
                    "%s: head_count %u x head size %u must equal embedding_length %u", n,
                    hp->n_head, hp->head_dim_k, hp->n_embd);
    /* olmoe's attn_k_norm is [n_embd] in llama.cpp, which only works without GQA. */
    if (ai->qk_norm == MODEL_QK_NORM_FULL && hp->n_head_kv != hp->n_head)
        return fail(err, errlen, -EINVAL,
                    "%s: head_count_kv %u must equal head_count %u (attn_k_norm is [n_embd])", n,
                    hp->n_head_kv, hp->n_head);
    if (hp->n_expert == 0 || hp->n_expert > MODEL_MAX_EXPERTS)
        return fail(err, errlen, -EINVAL, "%s.expert_count %u out of range 1..%u", n, hp->n_expert,
                    MODEL_MAX_EXPERTS);
    if (hp->n_expert_used == 0 || hp->n_expert_used > hp->n_expert)
        return fail(err, errlen, -EINVAL, "%s.expert_used_count %u out of range 1..%u", n,
                    hp->n_expert_used, hp->n_expert);
    if (hp->n_ff_exp == 0 || hp->n_ff_exp > MODEL_MAX_WIDTH)
        return fail(err, errlen, -EINVAL, "%s: expert width %u out of range 1..%u", n, hp->n_ff_exp,
                    MODEL_MAX_WIDTH);
    if (ai->shexp ? (hp->n_ff_shexp == 0 || hp->n_ff_shexp > MODEL_MAX_WIDTH) : hp->n_ff_shexp)
        return fail(err, errlen, -EINVAL, "%s: shared expert width %u invalid", n, hp->n_ff_shexp);
    if (!isfinite(hp->rms_eps) || hp->rms_eps <= 0.0f || hp->rms_eps > 1.0f)
        return fail(err, errlen, -EINVAL, "%s.attention.layer_norm_rms_epsilon %g out of range", n,
                    (double)hp->rms_eps);
    if (!isfinite(hp->rope_freq_base) || hp->rope_freq_base <= 0.0f)
        return fail(err, errlen, -EINVAL, "%s.rope.freq_base %g out of range", n,
                    (double)hp->rope_freq_base);
    if (!isfinite(hp->rope_freq_scale) || hp->rope_freq_scale <= 0.0f)
        return fail(err, errlen, -EINVAL, "%s: rope frequency scale %g out of range", n,
                    (double)hp->rope_freq_scale);
    return 0;
}

/* ---- tensors ---- */

static const gguf_tensor_t **role_slot(model_t *m, model_layer_t *l, enum model_role r)
{
    switch (r) {
    case MODEL_ROLE_TOK_EMBD:
        return &m->tok_embd;
    case MODEL_ROLE_OUTPUT_NORM:
        return &m->output_norm;
    case MODEL_ROLE_OUTPUT:
        return &m->output;
    case MODEL_ROLE_ATTN_NORM:
        return &l->attn_norm;
    case MODEL_ROLE_WQ:
        return &l->wq;
    case MODEL_ROLE_WK:
        return &l->wk;
    case MODEL_ROLE_WV:
        return &l->wv;
    case MODEL_ROLE_WO:
        return &l->wo;
    case MODEL_ROLE_BQ:
        return &l->bq;
    case MODEL_ROLE_BK:
        return &l->bk;
    case MODEL_ROLE_BV:
        return &l->bv;
    case MODEL_ROLE_Q_NORM:
        return &l->q_norm;
    case MODEL_ROLE_K_NORM:
        return &l->k_norm;
    case MODEL_ROLE_FFN_NORM:
        return &l->ffn_norm;
    case MODEL_ROLE_ROUTER:
        return &l->router;
    case MODEL_ROLE_GATE_EXPS:
        return &l->gate_exps;
    case MODEL_ROLE_UP_EXPS:
        return &l->up_exps;
    case MODEL_ROLE_DOWN_EXPS:
        return &l->down_exps;
    case MODEL_ROLE_SHEXP_GATE:
        return &l->shexp_gate;
    case MODEL_ROLE_GATE_SHEXP:
        return &l->gate_shexp;
    case MODEL_ROLE_UP_SHEXP:
        return &l->up_shexp;
    case MODEL_ROLE_DOWN_SHEXP:
        return &l->down_shexp;
    default:
        return NULL;
    }
}

static void shape_str(const uint64_t *ne, uint32_t n_dims, char *buf, size_t len)
{
    int o = snprintf(buf, len, "[");
    for (uint32_t d = 0; d < n_dims && o > 0 && (size_t)o < len; d++)
        o += snprintf(buf + o, len - (size_t)o, d ? ", %" PRIu64 : "%" PRIu64, ne[d]);
    if (o > 0 && (size_t)o < len)
        snprintf(buf + o, len - (size_t)o, "]");
}

/* Shape and type of t against its spec. Dimensions past the spec's must be 1, as in
 * llama.cpp's check_tensor_dims. */
static int check_tensor(const gguf_tensor_t *t, const model_tensor_spec_t *s, char *err,
                        size_t errlen)
{
    bool ok = true;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        ok = ok && t->ne[d] == s->ne[d];
    if (!ok) {
        char got[96], want[96];
        shape_str(t->ne, t->n_dims, got, sizeof(got));
        shape_str(s->ne, s->n_dims, want, sizeof(want));
        return fail(err, errlen, -EINVAL, "tensor %s has shape %s, expected %s", t->name, got,
                    want);
    }
    const quant_traits_t *qt = quant_traits(t->type);
    const char *tn = qt ? qt->name : "unknown";
    if (s->kind == MODEL_KIND_NORM || s->kind == MODEL_KIND_BIAS) {
        if (t->type != GGML_TYPE_F32)
            return fail(err, errlen, -ENOTSUP, "tensor %s has type %s, expected f32", t->name, tn);
    } else if (!qt || !qt->can_compute) {
        return fail(err, errlen, -ENOTSUP, "tensor %s has type %s, which moed cannot compute",
                    t->name, tn);
    }
    return 0;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

/* Old Mixtral GGUFs stored each expert as its own tensor (blk.N.ffn_gate.E.weight);
 * llama.cpp converts them at load time, moed refuses them by name. */
static bool is_per_expert_name(const char *name)
{
    unsigned il, e;
    char part[8];
    int end = 0;
    if (sscanf(name, "blk.%u.ffn_%7[a-z].%u.weight%n", &il, part, &e, &end) == 3 &&
        name[end] == '\0')
        return !strcmp(part, "gate") || !strcmp(part, "up") || !strcmp(part, "down");
    return false;
}

static int per_expert_fail(const char *name, char *err, size_t errlen)
{
    return fail(err, errlen, -ENOTSUP,
                "tensor %s: old per-expert Mixtral layout; re-convert with a current llama.cpp "
                "(experts stacked in ffn_*_exps)",
                name);
}

/* Finds, checks and records every role; counts what it claimed in claimed[]. */
static int load_tensors(model_t *m, const gguf_t *g, const void **claimed, size_t *n_claimed,
                        char *err, size_t errlen)
{
    char name[128];
    uint32_t n_bias = 0;
    for (unsigned r = 0; r < MODEL_ROLE_COUNT_; r++) {
        model_tensor_spec_t s;
        if (model_tensor_spec(m->arch, &m->hp, (enum model_role)r, &s) == -ENOENT)
            continue;
        uint32_t n = s.per_layer ? m->hp.n_layer : 1;
        for (uint32_t il = 0; il < n; il++) {
            if (model_tensor_name(&s, il, name, sizeof(name)))
                return fail(err, errlen, -EINVAL, "tensor name too long");
            const gguf_tensor_t *t = gguf_find_tensor(g, name);
            if (!t) {
                if (!s.required)
                    continue;
                if (s.kind == MODEL_KIND_EXPERTS) {
                    char old[128];
                    snprintf(old, sizeof(old), "blk.%u.ffn_gate.0.weight", il);
                    if (gguf_find_tensor(g, old))
                        return per_expert_fail(old, err, errlen);
                }
                return fail(err, errlen, -EINVAL, "missing tensor %s", name);
            }
            int rc = check_tensor(t, &s, err, errlen);
            if (rc)
                return rc;
            *role_slot(m, &m->layers[il], (enum model_role)r) = t;
            claimed[(*n_claimed)++] = t;
            if (s.kind == MODEL_KIND_BIAS)
                n_bias++;
        }
    }
    /* Biases: all of q/k/v in every layer, or none (one flag describes the model). */
    if (n_bias != 0 && n_bias != 3 * m->hp.n_layer) {
        for (uint32_t il = 0; il < m->hp.n_layer; il++) {
            const model_layer_t *l = &m->layers[il];
            const char *miss = !l->bq ? "attn_q" : !l->bk ? "attn_k" : !l->bv ? "attn_v" : NULL;
            if (miss)
                return fail(err, errlen, -EINVAL,
                            "missing tensor blk.%u.%s.bias (other layers have q/k/v biases)", il,
                            miss);
        }
    }
    m->hp.attn_bias = n_bias != 0;
    m->hp.tied_output = m->output == NULL;
    if (!m->output)
        m->output = m->tok_embd;
    return 0;
}

static uint64_t slice_bytes(const gguf_tensor_t *t)
{
    uint64_t rs = 0;
    if (quant_row_size(t->type, t->ne[0], &rs) != 0)
        return 0;
    return rs * t->ne[1];
}

/* Every tensor of the file must have a role; sizes are summed into resident / expert. */
static int account_tensors(model_t *m, const gguf_t *g, const void **claimed, size_t n_claimed,
                           char *err, size_t errlen)
{
    qsort(claimed, n_claimed, sizeof(*claimed), cmp_ptr);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor(g, i);
        const void *key = t;
        if (!bsearch(&key, claimed, n_claimed, sizeof(*claimed), cmp_ptr)) {
            if (is_per_expert_name(t->name))
                return per_expert_fail(t->name, err, errlen);
            return fail(err, errlen, -ENOTSUP, "unexpected tensor %s in a %s model", t->name,
                        model_arch_name(m->arch));
        }
    }
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer_t *l = &m->layers[il];
        const gguf_tensor_t *parts[3] = {l->gate_exps, l->up_exps, l->down_exps};
        uint64_t per_expert = 0;
        for (int p = 0; p < 3; p++) {
            uint64_t sb = slice_bytes(parts[p]);
            if (sb == 0 || sb * m->hp.n_expert != parts[p]->size)
                return fail(err, errlen, -EINVAL,
                            "tensor %s: %" PRIu64 " bytes do not hold %u experts of %" PRIu64
                            " bytes",
                            parts[p]->name, parts[p]->size, m->hp.n_expert, sb);
            per_expert += sb;
        }
        if (per_expert > m->expert_bytes)
            m->expert_bytes = per_expert;
        m->expert_bytes_total += per_expert * m->hp.n_expert;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < gguf_n_tensors(g); i++)
        total += gguf_tensor(g, i)->size;
    m->resident_bytes = total - m->expert_bytes_total;
    return 0;
}

int model_load(const gguf_t *g, model_t **ret, char *err, size_t errlen)
{
    const char *arch_name = NULL;
    enum model_arch a;
    model_t *m = NULL;
    const void **claimed = NULL;
    size_t n_claimed = 0;
    int r;

    if (!g || !ret)
        return fail(err, errlen, -EINVAL, "no file");
    r = gguf_get_str(g, "general.architecture", &arch_name);
    if (r == -ENOENT)
        return fail(err, errlen, -EINVAL, "missing key general.architecture");
    if (r)
        return fail(err, errlen, -EINVAL, "key general.architecture: not a string");
    if (model_arch_from_name(arch_name, &a) != 0)
        return fail(err, errlen, -ENOTSUP,
                    "unsupported architecture '%s' (moed runs qwen3moe, qwen2moe, olmoe, llama "
                    "with experts)",
                    arch_name);

    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->gguf = g;
    m->arch = a;

    keyctx_t k = {.g = g, .arch = arch_name, .err = err, .errlen = errlen};
    if ((r = read_hparams(&k, a, &m->hp)))
        goto fail;

    /* n_vocab is the row count of token_embd; a tokenizer that disagrees is refused, as
     * llama.cpp's shape check against vocab.n_tokens() does. */
    const gguf_tensor_t *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) {
        r = fail(err, errlen, -EINVAL, "missing tensor token_embd.weight");
        goto fail;
    }
    if (te->ne[1] == 0 || te->ne[1] > MODEL_MAX_VOCAB) {
        r = fail(err, errlen, -EINVAL, "tensor token_embd.weight: %" PRIu64 " rows out of range",
                 te->ne[1]);
        goto fail;
    }
    m->hp.n_vocab = (uint32_t)te->ne[1];
    enum gguf_type tt;
    uint64_t n_tokens;
    const void *unused;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &tt, &n_tokens, &unused) == 0 &&
        n_tokens != m->hp.n_vocab) {
        r = fail(err, errlen, -EINVAL,
                 "tensor token_embd.weight has %u rows but tokenizer.ggml.tokens has %" PRIu64
                 " tokens",
                 m->hp.n_vocab, n_tokens);
        goto fail;
    }
    if ((r = model_hparams_check(a, &m->hp, err, errlen)))
        goto fail;

    const model_arch_info_t *ai = model_arch_info(a);
    m->hp.rope = ai->rope;
    m->hp.qk_norm = ai->qk_norm;
    m->hp.gating = ai->gating;
    m->hp.norm_topk = ai->norm_topk;
    m->hp.shexp_gate = ai->shexp;

    m->name = arch_name;
    const char *gname = NULL;
    if (gguf_get_str(g, "general.name", &gname) == 0 && gname[0])
        m->name = gname;

    m->layers = calloc(m->hp.n_layer, sizeof(*m->layers));
    claimed = calloc(gguf_n_tensors(g) + 1, sizeof(*claimed));
    if (!m->layers || !claimed) {
        r = -ENOMEM;
        goto fail;
    }
    /* Each claimed tensor is distinct (names are unique), so at most n_tensors claims. */
    if ((r = load_tensors(m, g, claimed, &n_claimed, err, errlen)) ||
        (r = account_tensors(m, g, claimed, n_claimed, err, errlen)))
        goto fail;

    free(claimed);
    *ret = m;
    return 0;
fail:
    free(claimed);
    model_free(m);
    return r;
}

model_t *model_free(model_t *m)
{
    if (m) {
        free(m->layers);
        free(m);
    }
    return NULL;
}

int model_expert_ranges(const model_t *m, uint32_t il, uint32_t e,
                        model_range_t ret[MODEL_EXPERT_PARTS])
{
    if (!m || il >= m->hp.n_layer || e >= m->hp.n_expert)
        return -EINVAL;
    const model_layer_t *l = &m->layers[il];
    const gguf_tensor_t *parts[MODEL_EXPERT_PARTS] = {l->gate_exps, l->up_exps, l->down_exps};
    model_range_t out[MODEL_EXPERT_PARTS];
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
        const gguf_tensor_t *t = parts[p];
        uint64_t sb = slice_bytes(t);
        out[p] = (model_range_t){
            .offset = t->offset + (uint64_t)e * sb,
            .size = sb,
            .type = t->type,
            .rows = (uint32_t)t->ne[1],
            .cols = (uint32_t)t->ne[0],
        };
    }
    memcpy(ret, out, sizeof(out));
    return 0;
}

uint64_t model_layer_expert_bytes(const model_t *m, uint32_t il)
{
    if (!m || il >= m->hp.n_layer)
        return 0;
    const model_layer_t *l = &m->layers[il];
    return slice_bytes(l->gate_exps) + slice_bytes(l->up_exps) + slice_bytes(l->down_exps);
}

uint64_t model_active_bytes(const model_t *m)
{
    if (!m)
        return 0;
    /* A token reads one row of token_embd, unless the output head is tied to it: then the
     * whole matrix is read for the logits anyway. */
    uint64_t bytes = m->resident_bytes;
    if (!m->hp.tied_output) {
        uint64_t rs = 0;
        if (quant_row_size(m->tok_embd->type, m->tok_embd->ne[0], &rs) == 0)
            bytes = bytes - m->tok_embd->size + rs;
    }
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        bytes += (uint64_t)m->hp.n_expert_used * model_layer_expert_bytes(m, il);
    return bytes;
}
