/* A MoE model as moed understands it: the architecture, its hyperparameters, the tensor
 * of each role with its shape checked, and where each expert's bytes lie in the file.
 * Built from a gguf_t by model_load, which refuses (with a one-line reason) any
 * architecture, quant type, missing tensor or shape moed cannot run. The semantics of each
 * architecture are those of llama.cpp for the same GGUF (src/llama-model.cpp, llama-arch.cpp,
 * llama-graph.cpp build_moe_ffn); arch.c holds them as data so the reference, the engine,
 * mkmodel and inspect share one table. A model_t only describes; it holds no weights. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"

enum model_arch {
    MODEL_ARCH_QWEN3MOE,
    MODEL_ARCH_QWEN2MOE,
    MODEL_ARCH_OLMOE,
    MODEL_ARCH_LLAMA, /* llama with expert_count > 0: Mixtral */
    MODEL_ARCH_COUNT_,
};

enum model_rope {
    MODEL_ROPE_NORM, /* rotate adjacent pairs (x[2i], x[2i+1]) : llama/Mixtral */
    MODEL_ROPE_NEOX, /* rotate halves (x[i], x[i + n_rot/2]) : qwen2moe, qwen3moe, olmoe */
};

enum model_qk_norm {
    MODEL_QK_NORM_NONE,
    MODEL_QK_NORM_HEAD, /* RMSNorm over each head (weight [head_dim]) : qwen3moe */
    MODEL_QK_NORM_FULL, /* RMSNorm over the whole q / k vector (weight [n_head*head_dim]) : olmoe */
};

enum model_gating {
    MODEL_GATING_SOFTMAX, /* probabilities = softmax(router logits), then top-k */
    MODEL_GATING_SIGMOID, /* (deepseek2/3 later) */
};

typedef struct model_hparams {
    uint32_t n_vocab;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim_k;     /* attention.key_length, default n_embd / n_head */
    uint32_t head_dim_v;     /* attention.value_length, default n_embd / n_head */
    uint32_t n_rot;          /* rope.dimension_count, default head_dim_k */
    uint32_t n_ctx_train;    /* context_length */
    uint32_t n_expert;       /* expert_count */
    uint32_t n_expert_used;  /* expert_used_count (top-k) */
    uint32_t n_ff_exp;       /* expert_feed_forward_length (per-expert hidden width) */
    uint32_t n_ff_shexp;     /* expert_shared_feed_forward_length, 0 = no shared expert */
    float rms_eps;           /* attention.layer_norm_rms_epsilon */
    float rope_freq_base;    /* rope.freq_base, default 10000 */
    float rope_freq_scale;   /* 1 / rope.scaling.factor when linear scaling, else 1 */
    float expert_weights_scale; /* multiplies the chosen weights; 1 when absent */
    /* semantics, fixed per architecture (arch.c) */
    enum model_rope rope;
    enum model_qk_norm qk_norm;
    enum model_gating gating;
    bool norm_topk;          /* renormalize the k chosen weights to sum 1 */
    bool attn_bias;          /* q/k/v biases present (qwen2moe) */
    bool shexp_gate;         /* shared expert output *= sigmoid(ffn_gate_inp_shexp . x) */
    bool tied_output;        /* output.weight absent: logits use token_embd */
} model_hparams_t;

/* Tensor infos are borrowed from the gguf_t (NULL when the role is absent). Shapes use
 * GGML order: ne[0] is the input (row) width. */
typedef struct model_layer {
    const gguf_tensor_t *attn_norm;  /* [n_embd] F32 */
    const gguf_tensor_t *wq;         /* [n_embd, n_head*head_dim_k] */
    const gguf_tensor_t *wk;         /* [n_embd, n_head_kv*head_dim_k] */
    const gguf_tensor_t *wv;         /* [n_embd, n_head_kv*head_dim_v] */
    const gguf_tensor_t *wo;         /* [n_head*head_dim_v, n_embd] */
    const gguf_tensor_t *bq, *bk, *bv; /* biases (qwen2moe) F32 */
    const gguf_tensor_t *q_norm;     /* [head_dim_k] or [n_head*head_dim_k] F32 */
    const gguf_tensor_t *k_norm;     /* [head_dim_k] or [n_head_kv*head_dim_k] F32 */
    const gguf_tensor_t *ffn_norm;   /* [n_embd] F32 */
    const gguf_tensor_t *router;     /* ffn_gate_inp [n_embd, n_expert] */
    const gguf_tensor_t *gate_exps;  /* [n_embd, n_ff_exp, n_expert] */
    const gguf_tensor_t *up_exps;    /* [n_embd, n_ff_exp, n_expert] */
    const gguf_tensor_t *down_exps;  /* [n_ff_exp, n_embd, n_expert] */
    const gguf_tensor_t *gate_shexp; /* [n_embd, n_ff_shexp] */
    const gguf_tensor_t *up_shexp;   /* [n_embd, n_ff_shexp] */
    const gguf_tensor_t *down_shexp; /* [n_ff_shexp, n_embd] */
    const gguf_tensor_t *shexp_gate; /* ffn_gate_inp_shexp [n_embd] (1 output) */
} model_layer_t;

/* One expert of one layer is three contiguous byte ranges of the file. */
enum { MODEL_EXPERT_GATE, MODEL_EXPERT_UP, MODEL_EXPERT_DOWN, MODEL_EXPERT_PARTS };
typedef struct model_range {
    uint64_t offset; /* absolute file offset */
    uint64_t size;   /* bytes */
    uint32_t type;   /* ggml type of the slice */
    uint32_t rows;   /* output rows of this matrix slice */
    uint32_t cols;   /* input width (ne[0]) */
} model_range_t;

typedef struct model {
    const gguf_t *gguf; /* borrowed: must outlive the model */
    enum model_arch arch;
    const char *name;   /* general.name or the architecture's name */
    model_hparams_t hp;
    const gguf_tensor_t *tok_embd;    /* [n_embd, n_vocab] */
    const gguf_tensor_t *output_norm; /* [n_embd] F32 */
    const gguf_tensor_t *output;      /* [n_embd, n_vocab]; == tok_embd when tied */
    model_layer_t *layers;            /* [n_layer] */
    uint64_t expert_bytes;            /* largest expert (gate+up+down) in bytes */
    uint64_t expert_bytes_total;      /* all experts of all layers */
    uint64_t resident_bytes;          /* every other tensor */
} model_t;

/* Tensor roles: one entry per tensor a layer (or the model) can have. arch.c maps each
 * role to its GGUF name, expected shape and allowed types for an architecture, so model_load
 * (which checks a file) and mkmodel (which writes one) share one table. */
enum model_role {
    MODEL_ROLE_TOK_EMBD,    /* token_embd.weight            [n_embd, n_vocab] */
    MODEL_ROLE_OUTPUT_NORM, /* output_norm.weight           [n_embd] */
    MODEL_ROLE_OUTPUT,      /* output.weight                [n_embd, n_vocab] (optional: tied) */
    MODEL_ROLE_ATTN_NORM,   /* blk.N.attn_norm.weight       [n_embd] */
    MODEL_ROLE_WQ,          /* blk.N.attn_q.weight          [n_embd, n_head*head_dim_k] */
    MODEL_ROLE_WK,          /* blk.N.attn_k.weight          [n_embd, n_head_kv*head_dim_k] */
    MODEL_ROLE_WV,          /* blk.N.attn_v.weight          [n_embd, n_head_kv*head_dim_v] */
    MODEL_ROLE_WO,          /* blk.N.attn_output.weight     [n_head*head_dim_v, n_embd] */
    MODEL_ROLE_BQ,          /* blk.N.attn_q.bias            [n_head*head_dim_k] (optional) */
    MODEL_ROLE_BK,          /* blk.N.attn_k.bias            [n_head_kv*head_dim_k] (optional) */
    MODEL_ROLE_BV,          /* blk.N.attn_v.bias            [n_head_kv*head_dim_v] (optional) */
    MODEL_ROLE_Q_NORM,      /* blk.N.attn_q_norm.weight     [head_dim_k] or [n_head*head_dim_k] */
    MODEL_ROLE_K_NORM,      /* blk.N.attn_k_norm.weight     [head_dim_k] or [n_head_kv*head_dim_k] */
    MODEL_ROLE_FFN_NORM,    /* blk.N.ffn_norm.weight        [n_embd] */
    MODEL_ROLE_ROUTER,      /* blk.N.ffn_gate_inp.weight    [n_embd, n_expert] */
    MODEL_ROLE_GATE_EXPS,   /* blk.N.ffn_gate_exps.weight   [n_embd, n_ff_exp, n_expert] */
    MODEL_ROLE_UP_EXPS,     /* blk.N.ffn_up_exps.weight     [n_embd, n_ff_exp, n_expert] */
    MODEL_ROLE_DOWN_EXPS,   /* blk.N.ffn_down_exps.weight   [n_ff_exp, n_embd, n_expert] */
    MODEL_ROLE_SHEXP_GATE,  /* blk.N.ffn_gate_inp_shexp.weight [n_embd] */
    MODEL_ROLE_GATE_SHEXP,  /* blk.N.ffn_gate_shexp.weight  [n_embd, n_ff_shexp] */
    MODEL_ROLE_UP_SHEXP,    /* blk.N.ffn_up_shexp.weight    [n_embd, n_ff_shexp] */
    MODEL_ROLE_DOWN_SHEXP,  /* blk.N.ffn_down_shexp.weight  [n_ff_shexp, n_embd] */
    MODEL_ROLE_COUNT_,
};

enum model_kind {
    MODEL_KIND_NORM,    /* 1-D F32 weight of a norm */
    MODEL_KIND_BIAS,    /* 1-D F32 bias */
    MODEL_KIND_MATRIX,  /* a weight matrix: any type moed can compute */
    MODEL_KIND_ROUTER,  /* expert router (and the shared-expert gate vector): F32 in real
                         * files (llama.cpp never quantizes ffn_gate_inp), any computable type
                         * accepted */
    MODEL_KIND_EXPERTS, /* stacked expert matrices, outermost dim = expert */
};

typedef struct model_tensor_spec {
    const char *fmt;      /* GGUF name, printf format with one %u for the layer when per_layer */
    bool per_layer;
    bool required;        /* false: optional (tied output, attention biases) */
    enum model_kind kind;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* GGML order; unused dims 1 */
} model_tensor_spec_t;

/* The spec of role r for architecture a with hyperparameters hp (n_vocab included).
 * 0, or -ENOENT when the architecture has no such tensor. */
int model_tensor_spec(enum model_arch a, const model_hparams_t *hp, enum model_role r,
                      model_tensor_spec_t *ret);

/* The GGUF name of spec s for layer il (il ignored when !s->per_layer) into buf.
 * 0 or -ENAMETOOLONG. */
int model_tensor_name(const model_tensor_spec_t *s, uint32_t il, char *buf, size_t len);

/* Fixed facts of an architecture (arch.c), shared by model_load and mkmodel. */
typedef struct model_arch_info {
    const char *name;           /* general.architecture and the key prefix */
    enum model_rope rope;
    enum model_qk_norm qk_norm;
    enum model_gating gating;
    bool norm_topk;
    bool shexp;                 /* shared expert with a sigmoid gate (qwen2moe) */
    bool attn_bias;             /* q/k/v biases may be present (qwen2moe, llama) */
    bool attn_width_is_embd;    /* llama.cpp shapes wq/wo as [n_embd, n_embd] (qwen2moe, olmoe):
                                 * n_head*head_dim must equal n_embd */
    bool ff_exp_key;            /* n_ff_exp = expert_feed_forward_length, default
                                 * feed_forward_length / n_expert_used (qwen*); otherwise
                                 * n_ff_exp = feed_forward_length (olmoe, llama) */
} model_arch_info_t;

const model_arch_info_t *model_arch_info(enum model_arch a); /* NULL when out of range */

/* Checks hyperparameters against what the architecture (and llama.cpp) allows: ranges,
 * head divisibility, n_rot == head_dim, top-k within the expert count, arch constraints.
 * The semantics flags in hp are not read. 0 or -EINVAL with a one-line reason. */
int model_hparams_check(enum model_arch a, const model_hparams_t *hp, char *err, size_t errlen);

/* Builds a model description from g. On failure -errno (-ENOTSUP for an unsupported
 * architecture or type, -EINVAL for a missing or misshaped tensor or key) and a one-line
 * reason in err. */
int model_load(const gguf_t *g, model_t **ret, char *err, size_t errlen);
model_t *model_free(model_t *m);

/* The three byte ranges of expert e of layer il. 0 or -EINVAL (out of range). */
int model_expert_ranges(const model_t *m, uint32_t il, uint32_t e,
                        model_range_t ret[MODEL_EXPERT_PARTS]);

/* Bytes of weights read per token by a decode step: resident weights used per token
 * (excluding unused embedding rows) plus n_expert_used experts per layer. */
uint64_t model_active_bytes(const model_t *m);

/* Bytes of one expert (gate+up+down) of layer il (types may differ per layer in mixed
 * quantizations such as Q4_K_M); 0 when il is out of range. */
uint64_t model_layer_expert_bytes(const model_t *m, uint32_t il);

const char *model_arch_name(enum model_arch a);       /* "qwen3moe", ... */
int model_arch_from_name(const char *name, enum model_arch *ret);
