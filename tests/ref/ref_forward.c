/* The CPU reference forward pass (ref_forward.h): every weight dequantized once to float32
 * at load, then one token at a time through the same steps as llama.cpp's graph builders
 * for the architectures moed supports (src/models/{qwen3moe,qwen2moe,olmoe,llama}.cpp and
 * llm_graph_context::build_moe_ffn / build_ffn / build_attn in src/llama-graph.cpp). The
 * differences between the architectures are data (model_hparams_t: rope style, q/k norm,
 * biases, gating, renormalization, shared expert), so one function, ref_forward, reads top
 * to bottom like the math for all of them.
 *
 * Invariants: a state's KV cache holds positions 0..n_pos-1 of one sequence, each written
 * by the ref_forward call for that position; a forward step allocates nothing. The float
 * weights give bit-for-bit the results ref_matvec gives on the quantized weights (same
 * dequantized values, same summation order), so ref_ops and this file agree exactly.
 * Callers: tests/, `moe run` (until the engine exists), engine and cache tests (routing
 * hook). */
#include "ref_forward.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/quant.h"
#include "ref_ops.h"

/* Weights of one layer, float32, row-major: W[r][c] with c the input index (GGML ne[0]). */
typedef struct ref_layer {
    float *attn_norm;  /* [n_embd] */
    float *wq;         /* [n_head*head_dim_k][n_embd] */
    float *wk;         /* [n_head_kv*head_dim_k][n_embd] */
    float *wv;         /* [n_head_kv*head_dim_v][n_embd] */
    float *wo;         /* [n_embd][n_head*head_dim_v] */
    float *bq;         /* [n_head*head_dim_k] or NULL (biases: qwen2moe) */
    float *bk;         /* [n_head_kv*head_dim_k] or NULL */
    float *bv;         /* [n_head_kv*head_dim_v] or NULL */
    float *q_norm;     /* [head_dim_k] (HEAD) or [n_head*head_dim_k] (FULL) or NULL */
    float *k_norm;     /* [head_dim_k] (HEAD) or [n_head_kv*head_dim_k] (FULL) or NULL */
    float *ffn_norm;   /* [n_embd] */
    float *router;     /* [n_expert][n_embd] */
    float *gate_exps;  /* [n_expert][n_ff_exp][n_embd] */
    float *up_exps;    /* [n_expert][n_ff_exp][n_embd] */
    float *down_exps;  /* [n_expert][n_embd][n_ff_exp] */
    float *gate_shexp; /* [n_ff_shexp][n_embd] or NULL */
    float *up_shexp;   /* [n_ff_shexp][n_embd] or NULL */
    float *down_shexp; /* [n_embd][n_ff_shexp] or NULL */
    float *shexp_gate; /* [n_embd] or NULL */
} ref_layer_t;

struct ref_model {
    const model_t *m;    /* borrowed */
    float *tok_embd;     /* [n_vocab][n_embd] */
    float *output_norm;  /* [n_embd] */
    float *output;       /* [n_vocab][n_embd]; == tok_embd when tied */
    ref_layer_t *layers; /* [n_layer] */
};

struct ref_state {
    const ref_model_t *rm; /* borrowed */
    uint32_t n_ctx;
    uint32_t n_pos; /* positions 0..n_pos-1 are in the KV cache */
    float *k_cache; /* [n_layer][n_ctx][n_head_kv*head_dim_k] */
    float *v_cache; /* [n_layer][n_ctx][n_head_kv*head_dim_v] */
    /* activations of one step */
    float *x;             /* [n_embd] residual stream */
    float *xb;            /* [n_embd] normed input of a block */
    float *xb2;           /* [n_embd] output of a projection */
    float *ffn_out;       /* [n_embd] sum of the expert outputs */
    float *q;             /* [n_head*head_dim_k] */
    float *k;             /* [n_head_kv*head_dim_k] */
    float *v;             /* [n_head_kv*head_dim_v] */
    float *att;           /* [n_head*head_dim_v] */
    float *hb;            /* [max(n_ff_exp, n_ff_shexp)] gate, then SwiGLU */
    float *hb2;           /* [max(n_ff_exp, n_ff_shexp)] up */
    float *router_logits; /* [n_expert] */
    int32_t *ids;         /* [n_expert_used] */
    float *weights;       /* [n_expert_used] */
    ref_route_fn route_fn;
    void *route_userdata;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- loading ---- */

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Reads tensor t (NULL: absent, *ret = NULL) into a new float array of want elements. */
static int load_tensor(int fd, const gguf_tensor_t *t, uint64_t want, float **ret, char *err,
                       size_t errlen)
{
    uint64_t n = 1, row_bytes, bytes;
    void *raw = NULL;
    float *f = NULL;
    int r;

    *ret = NULL;
    if (!t)
        return 0;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (__builtin_mul_overflow(n, t->ne[d], &n))
            n = UINT64_MAX;
    if (n != want || !t->ne[0]) {
        set_err(err, errlen, "tensor %s: %" PRIu64 " elements, expected %" PRIu64, t->name, n,
                want);
        return -EINVAL;
    }
    r = quant_row_size(t->type, t->ne[0], &row_bytes);
    if (r < 0 || __builtin_mul_overflow(row_bytes, n / t->ne[0], &bytes) || bytes != t->size ||
        bytes > SIZE_MAX / 2 || n > SIZE_MAX / sizeof(float)) {
        set_err(err, errlen, "tensor %s: type %" PRIu32 " and shape do not match %" PRIu64 " bytes",
                t->name, t->type, t->size);
        return -EINVAL;
    }
    raw = malloc(bytes ? bytes : 1);
    f = malloc(n * sizeof(float));
    if (!raw || !f) {
        r = -ENOMEM;
        set_err(err, errlen, "tensor %s: out of memory for %" PRIu64 " floats", t->name, n);
        goto fail;
    }
    r = pread_full(fd, raw, bytes, t->offset);
    if (r < 0) {
        set_err(err, errlen, "tensor %s: reading %" PRIu64 " bytes at %" PRIu64 ": %s", t->name,
                bytes, t->offset, strerror(-r));
        goto fail;
    }
    r = quant_dequantize(t->type, raw, f, n);
    if (r < 0) {
        set_err(err, errlen, "tensor %s: cannot dequantize type %" PRIu32, t->name, t->type);
        goto fail;
    }
    free(raw);
    *ret = f;
    return 0;
fail:
    free(raw);
    free(f);
    return r;
}

static void layer_free(ref_layer_t *l)
{
    float **fields[] = {&l->attn_norm,  &l->wq,       &l->wk,         &l->wv,        &l->wo,
                        &l->bq,         &l->bk,       &l->bv,         &l->q_norm,    &l->k_norm,
                        &l->ffn_norm,   &l->router,   &l->gate_exps,  &l->up_exps,   &l->down_exps,
                        &l->gate_shexp, &l->up_shexp, &l->down_shexp, &l->shexp_gate};

    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

static int layer_load(int fd, const model_t *m, uint32_t il, ref_layer_t *l, char *err,
                      size_t errlen)
{
    const model_hparams_t *hp = &m->hp;
    const model_layer_t *t = &m->layers[il];
    const uint64_t E = hp->n_embd, nq = (uint64_t)hp->n_head * hp->head_dim_k,
                   nk = (uint64_t)hp->n_head_kv * hp->head_dim_k,
                   nv = (uint64_t)hp->n_head_kv * hp->head_dim_v,
                   no = (uint64_t)hp->n_head * hp->head_dim_v, X = hp->n_expert, F = hp->n_ff_exp,
                   S = hp->n_ff_shexp;
    const bool head = hp->qk_norm == MODEL_QK_NORM_HEAD;
    const struct {
        const gguf_tensor_t *t;
        uint64_t n;
        float **dst;
    } parts[] = {
        {t->attn_norm, E, &l->attn_norm},
        {t->wq, E * nq, &l->wq},
        {t->wk, E * nk, &l->wk},
        {t->wv, E * nv, &l->wv},
        {t->wo, no * E, &l->wo},
        {t->bq, nq, &l->bq},
        {t->bk, nk, &l->bk},
        {t->bv, nv, &l->bv},
        {t->q_norm, head ? hp->head_dim_k : nq, &l->q_norm},
        {t->k_norm, head ? hp->head_dim_k : nk, &l->k_norm},
        {t->ffn_norm, E, &l->ffn_norm},
        {t->router, E * X, &l->router},
        {t->gate_exps, E * F * X, &l->gate_exps},
        {t->up_exps, E * F * X, &l->up_exps},
        {t->down_exps, F * E * X, &l->down_exps},
        {t->gate_shexp, E * S, &l->gate_shexp},
        {t->up_shexp, E * S, &l->up_shexp},
        {t->down_shexp, S * E, &l->down_shexp},
        {t->shexp_gate, E, &l->shexp_gate},
    };

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        int r = load_tensor(fd, parts[i].t, parts[i].n, parts[i].dst, err, errlen);
        if (r < 0)
            return r;
    }
    if (!l->attn_norm || !l->wq || !l->wk || !l->wv || !l->wo || !l->ffn_norm || !l->router ||
        !l->gate_exps || !l->up_exps || !l->down_exps ||
        (hp->qk_norm != MODEL_QK_NORM_NONE && (!l->q_norm || !l->k_norm)) ||
        (S && (!l->gate_shexp || !l->up_shexp || !l->down_shexp)) ||
        (hp->shexp_gate && !l->shexp_gate)) {
        set_err(err, errlen, "layer %" PRIu32 ": a tensor the architecture needs is missing", il);
        return -EINVAL;
    }
    return 0;
}

/* Refuses a model whose float32 copy cannot fit: the reference is for small models. */
static int check_size(const model_t *m, char *err, size_t errlen)
{
    uint64_t bytes = 0;
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    const gguf_t *g = m->gguf;

    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor(g, i);
        uint64_t n = 1;

        for (uint32_t d = 0; d < t->n_dims; d++)
            if (__builtin_mul_overflow(n, t->ne[d], &n))
                n = UINT64_MAX / 8;
        if (__builtin_add_overflow(bytes, n * 4, &bytes))
            bytes = UINT64_MAX;
    }
    if (pages > 0 && psize > 0 && bytes / 4 * 5 > (uint64_t)pages * (uint64_t)psize) {
        set_err(err, errlen,
                "the CPU reference needs %.1f GiB of float32 weights, more than "
                "this machine has",
                (double)bytes / (1 << 30));
        return -E2BIG;
    }
    return 0;
}

int ref_model_new(const model_t *m, const char *path, ref_model_t **ret, char *err, size_t errlen)
{
    const model_hparams_t *hp = &m->hp;
    ref_model_t *rm = NULL;
    int fd = -1, r;

    r = check_size(m, err, errlen);
    if (r < 0)
        return r;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    rm = calloc(1, sizeof(*rm));
    if (!rm || !(rm->layers = calloc(hp->n_layer ? hp->n_layer : 1, sizeof(*rm->layers)))) {
        r = -ENOMEM;
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    rm->m = m;
    r = load_tensor(fd, m->tok_embd, (uint64_t)hp->n_embd * hp->n_vocab, &rm->tok_embd, err,
                    errlen);
    if (r < 0)
        goto fail;
    r = load_tensor(fd, m->output_norm, hp->n_embd, &rm->output_norm, err, errlen);
    if (r < 0)
        goto fail;
    // tied output: logits use token_embd (llama-model.cpp, TENSOR_DUPLICATED)
    if (m->output && m->output != m->tok_embd) {
        r = load_tensor(fd, m->output, (uint64_t)hp->n_embd * hp->n_vocab, &rm->output, err,
                        errlen);
        if (r < 0)
            goto fail;
    } else {
        rm->output = rm->tok_embd;
    }
    if (!rm->tok_embd || !rm->output_norm) {
        r = -EINVAL;
        set_err(err, errlen, "token_embd or output_norm missing");
        goto fail;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        r = layer_load(fd, m, il, &rm->layers[il], err, errlen);
        if (r < 0)
            goto fail;
    }
    close(fd);
    *ret = rm;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    ref_model_free(rm);
    return r;
}

ref_model_t *ref_model_free(ref_model_t *rm)
{
    if (!rm)
        return NULL;
    if (rm->layers)
        for (uint32_t il = 0; il < rm->m->hp.n_layer; il++)
            layer_free(&rm->layers[il]);
    free(rm->layers);
    if (rm->output != rm->tok_embd)
        free(rm->output);
    free(rm->tok_embd);
    free(rm->output_norm);
    free(rm);
    return NULL;
}

const model_t *ref_model_desc(const ref_model_t *rm)
{
    return rm->m;
}

/* ---- state ---- */

static int alloc_floats(uint64_t n, float **ret)
{
    if (n > SIZE_MAX / sizeof(float))
        return -EINVAL;
    *ret = calloc(n ? n : 1, sizeof(float));
    return *ret ? 0 : -ENOMEM;
}

int ref_state_new(const ref_model_t *rm, uint32_t n_ctx, ref_state_t **ret)
{
    const model_hparams_t *hp = &rm->m->hp;
    const uint64_t nk = (uint64_t)hp->n_head_kv * hp->head_dim_k,
                   nv = (uint64_t)hp->n_head_kv * hp->head_dim_v;
    const uint64_t ff = hp->n_ff_exp > hp->n_ff_shexp ? hp->n_ff_exp : hp->n_ff_shexp;
    uint64_t kv_k, kv_v;
    ref_state_t *s;
    int r = 0;

    if (!n_ctx || __builtin_mul_overflow((uint64_t)hp->n_layer * n_ctx, nk, &kv_k) ||
        __builtin_mul_overflow((uint64_t)hp->n_layer * n_ctx, nv, &kv_v))
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->rm = rm;
    s->n_ctx = n_ctx;
    const struct {
        uint64_t n;
        float **dst;
    } bufs[] = {
        {kv_k, &s->k_cache},
        {kv_v, &s->v_cache},
        {hp->n_embd, &s->x},
        {hp->n_embd, &s->xb},
        {hp->n_embd, &s->xb2},
        {hp->n_embd, &s->ffn_out},
        {(uint64_t)hp->n_head * hp->head_dim_k, &s->q},
        {nk, &s->k},
        {nv, &s->v},
        {(uint64_t)hp->n_head * hp->head_dim_v, &s->att},
        {ff, &s->hb},
        {ff, &s->hb2},
        {hp->n_expert, &s->router_logits},
        {hp->n_expert_used, &s->weights},
    };
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]) && r == 0; i++)
        r = alloc_floats(bufs[i].n, bufs[i].dst);
    if (r == 0 && !(s->ids = calloc(hp->n_expert_used ? hp->n_expert_used : 1, sizeof(*s->ids))))
        r = -ENOMEM;
    if (r < 0) {
        ref_state_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

ref_state_t *ref_state_free(ref_state_t *s)
{
    if (!s)
        return NULL;
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->ffn_out);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->router_logits);
    free(s->ids);
    free(s->weights);
    free(s);
    return NULL;
}

void ref_state_set_route_hook(ref_state_t *s, ref_route_fn fn, void *userdata)
{
    s->route_fn = fn;
    s->route_userdata = userdata;
}

/* ---- the forward pass ---- */

/* y[rows] = W[rows][cols] x[cols]; the same sums, in the same order, as ref_matvec. */
static void matvec(const float *W, size_t rows, size_t cols, const float *x, float *y)
{
    for (size_t r = 0; r < rows; r++) {
        const float *w = W + r * cols;
        float sum = 0.0f;

        for (size_t c = 0; c < cols; c++)
            sum += w[c] * x[c];
        y[r] = sum;
    }
}

static void add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* down(silu(gate x) * up x) of one expert (or the shared expert): build_ffn with
 * LLM_FFN_SILU, LLM_FFN_PAR, and build_moe_ffn's per-expert matmuls. out: [n_embd]. */
static void ffn_swiglu(ref_state_t *s, const float *gate, const float *up, const float *down,
                       size_t n_ff, const float *x, float *out)
{
    const size_t E = s->rm->m->hp.n_embd;

    matvec(gate, n_ff, E, x, s->hb);
    matvec(up, n_ff, E, x, s->hb2);
    ref_swiglu(s->hb, s->hb2, n_ff, s->hb);
    matvec(down, E, n_ff, s->hb, out);
}

/* Attention block of layer il for the token whose normed input is s->xb: writes the
 * output projection into s->xb2. (src/models/<arch>.cpp, "self_attention"). */
static void attention(ref_state_t *s, uint32_t il, int32_t pos)
{
    const model_hparams_t *hp = &s->rm->m->hp;
    const ref_layer_t *l = &s->rm->layers[il];
    const size_t E = hp->n_embd, dk = hp->head_dim_k, dv = hp->head_dim_v;
    const size_t nq = hp->n_head * dk, nk = hp->n_head_kv * dk, nv = hp->n_head_kv * dv;
    const int neox = hp->rope == MODEL_ROPE_NEOX;

    // Q, K, V projections (+ biases: qwen2moe), build_qkv
    matvec(l->wq, nq, E, s->xb, s->q);
    matvec(l->wk, nk, E, s->xb, s->k);
    matvec(l->wv, nv, E, s->xb, s->v);
    if (l->bq)
        add(s->q, l->bq, nq);
    if (l->bk)
        add(s->k, l->bk, nk);
    if (l->bv)
        add(s->v, l->bv, nv);

    // Q/K RMSNorm before RoPE: per head (qwen3moe.cpp: build_norm on the [head_dim, n_head]
    // view) or over the whole vector (olmoe.cpp: build_norm before the reshape)
    if (hp->qk_norm == MODEL_QK_NORM_HEAD) {
        for (size_t h = 0; h < hp->n_head; h++)
            ref_rmsnorm(s->q + h * dk, l->q_norm, dk, hp->rms_eps, s->q + h * dk);
        for (size_t h = 0; h < hp->n_head_kv; h++)
            ref_rmsnorm(s->k + h * dk, l->k_norm, dk, hp->rms_eps, s->k + h * dk);
    } else if (hp->qk_norm == MODEL_QK_NORM_FULL) {
        ref_rmsnorm(s->q, l->q_norm, nq, hp->rms_eps, s->q);
        ref_rmsnorm(s->k, l->k_norm, nk, hp->rms_eps, s->k);
    }

    // RoPE on every head of q and k (ggml_rope_ext; NORM for llama, NEOX for the qwens/olmoe)
    for (size_t h = 0; h < hp->n_head; h++)
        ref_rope(s->q + h * dk, dk, hp->n_rot, neox, pos, hp->rope_freq_base, hp->rope_freq_scale);
    for (size_t h = 0; h < hp->n_head_kv; h++)
        ref_rope(s->k + h * dk, dk, hp->n_rot, neox, pos, hp->rope_freq_base, hp->rope_freq_scale);

    // KV cache: row pos of this layer
    float *K = s->k_cache + (size_t)il * s->n_ctx * nk;
    float *V = s->v_cache + (size_t)il * s->n_ctx * nv;
    memcpy(K + (size_t)pos * nk, s->k, nk * sizeof(float));
    memcpy(V + (size_t)pos * nv, s->v, nv * sizeof(float));

    // softmax(q K^T / sqrt(head_dim)) V over positions 0..pos (causal), GQA
    ref_attention(s->q, K, V, (size_t)pos + 1, hp->n_head, hp->n_head_kv, dk, dv,
                  1.0f / sqrtf((float)dk), s->att);

    // output projection
    matvec(l->wo, E, hp->n_head * dv, s->att, s->xb2);
}

/* MoE block of layer il for the normed input s->xb: writes sum of the weighted experts
 * (+ the gated shared expert) into s->ffn_out. llama-graph.cpp build_moe_ffn; the shared
 * expert as in qwen2moe.cpp. */
static void moe(ref_state_t *s, uint32_t il, int32_t pos)
{
    const model_hparams_t *hp = &s->rm->m->hp;
    const ref_layer_t *l = &s->rm->layers[il];
    const size_t E = hp->n_embd, F = hp->n_ff_exp, k = hp->n_expert_used;

    // router logits [n_expert] -> probabilities -> top-k ids and weights
    matvec(l->router, hp->n_expert, E, s->xb, s->router_logits);
    ref_route(s->router_logits, hp->n_expert, k, hp->gating == MODEL_GATING_SIGMOID, hp->norm_topk,
              hp->expert_weights_scale, s->ids, s->weights);
    if (s->route_fn)
        s->route_fn(s->route_userdata, il, pos, s->ids, s->weights, (uint32_t)k);

    // ffn_out = sum_j w_j * down_j(silu(gate_j x) * up_j x), summed in selection order
    memset(s->ffn_out, 0, E * sizeof(float));
    for (size_t j = 0; j < k; j++) {
        const size_t e = (size_t)s->ids[j];

        ffn_swiglu(s, l->gate_exps + e * F * E, l->up_exps + e * F * E, l->down_exps + e * E * F, F,
                   s->xb, s->xb2);
        for (size_t i = 0; i < E; i++)
            s->ffn_out[i] += s->weights[j] * s->xb2[i];
    }

    // shared expert, times sigmoid(shexp_gate . x) when gated (qwen2moe)
    if (hp->n_ff_shexp) {
        float g = 1.0f;

        ffn_swiglu(s, l->gate_shexp, l->up_shexp, l->down_shexp, hp->n_ff_shexp, s->xb, s->xb2);
        if (l->shexp_gate) {
            matvec(l->shexp_gate, 1, E, s->xb, &g);
            g = ref_sigmoid(g);
        }
        for (size_t i = 0; i < E; i++)
            s->ffn_out[i] += s->xb2[i] * g;
    }
}

int ref_forward(ref_state_t *s, int32_t token, int32_t pos, float *logits)
{
    const ref_model_t *rm = s->rm;
    const model_hparams_t *hp = &rm->m->hp;
    const size_t E = hp->n_embd;

    if (token < 0 || (uint32_t)token >= hp->n_vocab || pos < 0 || (uint32_t)pos > s->n_pos ||
        (uint32_t)pos >= s->n_ctx)
        return -EINVAL;

    // token embedding: x = token_embd[token]
    memcpy(s->x, rm->tok_embd + (size_t)token * E, E * sizeof(float));

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const ref_layer_t *l = &rm->layers[il];

        // x += attention(RMSNorm(x) * attn_norm)
        ref_rmsnorm(s->x, l->attn_norm, E, hp->rms_eps, s->xb);
        attention(s, il, pos);
        add(s->x, s->xb2, E);

        // x += moe(RMSNorm(x) * ffn_norm)
        ref_rmsnorm(s->x, l->ffn_norm, E, hp->rms_eps, s->xb);
        moe(s, il, pos);
        add(s->x, s->ffn_out, E);
    }
    s->n_pos = (uint32_t)pos + 1;

    // logits = output . (RMSNorm(x) * output_norm)
    ref_rmsnorm(s->x, rm->output_norm, E, hp->rms_eps, s->xb);
    matvec(rm->output, hp->n_vocab, E, s->xb, logits);
    return 0;
}

/* ---- greedy decode and its JSON ---- */

void ref_top_k(const float *x, size_t n, size_t k, int32_t *ret_ids, float *ret_vals)
{
    size_t m = 0;

    for (size_t i = 0; i < n && k; i++) {
        if (m == k && !(x[i] > ret_vals[k - 1]))
            continue;
        // insert after every kept value >= x[i]: ties stay in index order
        size_t j = m < k ? m++ : k - 1;
        while (j > 0 && x[i] > ret_vals[j - 1]) {
            ret_vals[j] = ret_vals[j - 1];
            ret_ids[j] = ret_ids[j - 1];
            j--;
        }
        ret_vals[j] = x[i];
        ret_ids[j] = (int32_t)i;
    }
}

int ref_generate(ref_state_t *s, const int32_t *prompt, size_t n_prompt, size_t n_gen,
                 ref_step_t *ret_steps)
{
    const uint32_t n_vocab = s->rm->m->hp.n_vocab;
    float *logits;
    int r = 0;

    if (!n_prompt || n_vocab < REF_TOPK || n_prompt + n_gen - (n_gen > 0) > s->n_ctx)
        return -EINVAL;
    logits = malloc((size_t)n_vocab * sizeof(*logits));
    if (!logits)
        return -ENOMEM;
    // prefill, one token at a time
    for (size_t p = 0; p < n_prompt && r == 0; p++)
        r = ref_forward(s, prompt[p], (int32_t)p, logits);
    // decode: the arg-max of the last logits is the next token
    for (size_t i = 0; i < n_gen && r == 0; i++) {
        ref_step_t *st = &ret_steps[i];

        ref_top_k(logits, n_vocab, REF_TOPK, st->top_id, st->top_logit);
        st->id = st->top_id[0];
        if (i + 1 < n_gen)
            r = ref_forward(s, st->id, (int32_t)(n_prompt + i), logits);
    }
    free(logits);
    return r;
}

static void json_float(FILE *f, float v)
{
    if (isfinite(v))
        fprintf(f, "%.9g", (double)v);
    else
        fputs("null", f);
}

int ref_json_write(FILE *f, const int32_t *prompt, size_t n_prompt, const ref_step_t *steps,
                   size_t n_steps)
{
    fputs("{\"prompt_ids\":[", f);
    for (size_t i = 0; i < n_prompt; i++)
        fprintf(f, "%s%" PRId32, i ? "," : "", prompt[i]);
    fputs("],\"steps\":[", f);
    for (size_t i = 0; i < n_steps; i++) {
        fprintf(f, "%s{\"id\":%" PRId32 ",\"top5\":[", i ? "," : "", steps[i].id);
        for (size_t j = 0; j < REF_TOPK; j++) {
            fprintf(f, "%s[%" PRId32 ",", j ? "," : "", steps[i].top_id[j]);
            json_float(f, steps[i].top_logit[j]);
            fputc(']', f);
        }
        fputs("]}", f);
    }
    fputs("]}\n", f);
    return ferror(f) ? -EIO : 0;
}
