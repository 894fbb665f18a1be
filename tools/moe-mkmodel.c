/* moe mkmodel: writes a deterministic synthetic MoE model as a GGUF file that model_load,
 * the CPU reference and llama.cpp all accept. The tensor map comes from arch.c (the same
 * table model_load checks), so every supported architecture and weight type can be made.
 *
 * Determinism: each tensor draws from its own xoshiro256** stream seeded by
 * splitmix64(seed ^ fnv1a(tensor name)); chunk sizes are fixed and the random numbers use
 * integer arithmetic, so the same flags give a byte-identical file, and no tensor depends
 * on another's draw order. (The one libm call, logf for the router skew, is once per router
 * row; quant_quantize is moed's own code.)
 *
 * Bounded memory: tensors are generated and written chunk by chunk (at most CHUNK_BYTES of
 * output plus the floats behind it), through gguf_writer's stream; a 20 GiB model needs a
 * few MiB of RAM.
 *
 * Weights. Non-expert tensors are Gaussian floats, quantized with quant_quantize (or
 * converted for F32/F16/BF16). The expert tensors, which are nearly all of a large model,
 * are made directly in their final form so tens of GiB write at disk speed: for block
 * types, uniform random quant codes with the block scales set so the dequantized weights
 * have the target standard deviation and no mean (valid blocks: any code is legal, the
 * scales are finite halves); for F32/F16/BF16, uniform floats with the target deviation.
 * Scales keep activations sane through any depth: a matrix reading fan_in inputs has
 * sigma = 1/sqrt(fan_in), and the two matrices that write into the residual stream
 * (attn_output, ffn_down*) get a further 1/sqrt(2 * n_layer), as GPT-2's init does, so the
 * residual stream stays near the embedding's scale; norms are 1 + N(0, 0.02^2), biases
 * N(0, 0.02^2).
 *
 * Routing skew (--skew S, 0 = uniform). Trained routers favour some experts per layer and
 * consecutive tokens reuse experts. Here every token embedding carries a shared component
 * along one random +-1 direction u (as much energy as its own random part), which survives
 * the residual stream and RMSNorm, so every normalized hidden state x has x.u/|u| close to
 * c = sqrt(n_embd / 2). Router row e is a random vector made orthogonal to u (so S = 0
 * routes uniformly) plus beta_e * u/|u| with beta_e = -S * ln(1 + rank_e) / c, rank_e a
 * per-layer random permutation of the experts: the router logit of expert e carries a
 * bias -S*ln(1 + rank), so softmax popularity falls off as (1 + rank)^-S (Zipf with
 * exponent S), with a different favourite set in every layer. The output head is made
 * orthogonal to u too, so the shared component does not bias the logits.
 *
 * Measured with the CPU reference on 96 random prompt tokens, 32 experts top-4 (uniform:
 * each expert used by k/E = 12.5% of tokens, 12.5% of a token's experts reused by the
 * next): skew 0: top expert 24% of tokens, reuse 14%; 0.5 (the default): 71%, 37%;
 * 0.75: 87%, 51%; 1: 97%, 63%. Reuse here comes from popularity alone: the hidden state
 * carries little context, so a favourite is shared by most tokens rather than by a run of
 * neighbours as in trained models (where "same experts as the previous token" is right
 * ~41% of the time with a flatter popularity). tests/model measures this. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "model/gguf.h"
#include "model/model.h"
#include "model/quant.h"
#include "moe.h"

#define CHUNK_BYTES (4u << 20)
#define TYPE_Q4_K_M UINT32_MAX /* the mixed recipe, not a GGML type */

/* ---- random numbers ---- */

typedef struct rng {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static void rng_init(rng_t *r, uint64_t seed, const char *stream)
{
    uint64_t x = seed ^ fnv1a(stream);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng_t *r) /* xoshiro256** */
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

static inline float rng_unit(rng_t *r) /* [0, 1) */
{
    return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Approximately N(0, 1): the sum of four uniform 16-bit draws (Irwin-Hall), centred and
 * scaled. Integer arithmetic and one rounding, so it is the same on every machine (no libm),
 * and cheap; tails end at 3.46 sigma, which weights do not miss. */
static float rng_gauss(rng_t *r)
{
    uint64_t v = rng_next(r);
    int32_t s = (int32_t)((v & 0xffff) + ((v >> 16) & 0xffff) + ((v >> 32) & 0xffff) + (v >> 48));
    return (float)(s - 131070) * (1.0f / 37837.23f);
}

static void rng_bytes(rng_t *r, uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint64_t v = rng_next(r);
        memcpy(p, &v, 8);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = rng_next(r);
        memcpy(p, &v, n);
    }
}

/* ---- options ---- */

typedef struct mk_opts {
    enum model_arch arch;
    uint32_t type; /* GGML type or TYPE_Q4_K_M */
    uint32_t layers, embd, heads, heads_kv, head_dim, experts, top_k, ff_exp, ff_shared, ctx;
    bool heads_kv_set, head_dim_set, ff_shared_set, tied;
    const char *vocab, *out;
    float skew;
    uint64_t seed;
} mk_opts_t;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: moe mkmodel -o FILE [OPTIONS]\n"
        "Writes a deterministic synthetic MoE model (GGUF) in a stream with bounded memory.\n\n"
        "  -o, --output FILE     file to write (required)\n"
        "  --arch ARCH           qwen3moe (default), qwen2moe, olmoe, llama (Mixtral-style)\n"
        "  --type TYPE           f32 f16 bf16 q8_0 (default) q4_0 q4_1 q5_0 q5_1 q4_K q5_K q6_K,\n"
        "                        or q4_K_M (llama.cpp's Q4_K_M mix: q6_K output and some\n"
        "                        attn_v/ffn_down layers, q4_K elsewhere)\n"
        "  --seed N              random seed (default 1); same flags => same bytes\n"
        "  --layers N            blocks (default 4)\n"
        "  --embd N              embedding width (default 256)\n"
        "  --heads N             attention heads (default 8)\n"
        "  --heads-kv N          kv heads (default 4; olmoe: = heads)\n"
        "  --head-dim N          head size (default 32; qwen2moe/olmoe: embd / heads)\n"
        "  --experts N           experts per layer (default 16)\n"
        "  --top-k N             experts used per token (default 4)\n"
        "  --ff-exp N            expert hidden width (default 256)\n"
        "  --ff-shared N         shared expert width, qwen2moe (default 2 x ff-exp)\n"
        "  --ctx N               training context length (default 4096)\n"
        "  --vocab FILE          copy every tokenizer.* key from this GGUF (n_vocab = its\n"
        "                        token count); default: built-in byte-level BPE vocabulary\n"
        "  --skew S              routing skew, 0 = uniform (default 0.5): expert popularity\n"
        "                        falls off as (1 + rank)^-S, a different order per layer\n"
        "  --tied                no output.weight: logits use token_embd\n"
        "  -h, --help            this text\n");
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
    char *end = NULL;
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -ERANGE;
    *ret = v;
    return 0;
}

static int parse_u32_opt(const char *name, const char *s, uint32_t min, uint32_t max, uint32_t *ret)
{
    uint64_t v;
    if (parse_u64(s, min, max, &v) != 0) {
        fprintf(stderr, "moe mkmodel: --%s '%s': expected an integer in %u..%u\n", name, s ? s : "",
                min, max);
        return -EINVAL;
    }
    *ret = (uint32_t)v;
    return 0;
}

static int parse_opts(int argc, char **argv, mk_opts_t *o)
{
    enum {
        O_ARCH = 256,
        O_TYPE,
        O_SEED,
        O_LAYERS,
        O_EMBD,
        O_HEADS,
        O_HEADS_KV,
        O_HEAD_DIM,
        O_EXPERTS,
        O_TOPK,
        O_FF_EXP,
        O_FF_SHARED,
        O_CTX,
        O_VOCAB,
        O_SKEW,
        O_TIED
    };
    static const struct option lo[] = {
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {"arch", required_argument, NULL, O_ARCH},
        {"type", required_argument, NULL, O_TYPE},
        {"seed", required_argument, NULL, O_SEED},
        {"layers", required_argument, NULL, O_LAYERS},
        {"embd", required_argument, NULL, O_EMBD},
        {"heads", required_argument, NULL, O_HEADS},
        {"heads-kv", required_argument, NULL, O_HEADS_KV},
        {"head-dim", required_argument, NULL, O_HEAD_DIM},
        {"experts", required_argument, NULL, O_EXPERTS},
        {"top-k", required_argument, NULL, O_TOPK},
        {"ff-exp", required_argument, NULL, O_FF_EXP},
        {"ff-shared", required_argument, NULL, O_FF_SHARED},
        {"ctx", required_argument, NULL, O_CTX},
        {"vocab", required_argument, NULL, O_VOCAB},
        {"skew", required_argument, NULL, O_SKEW},
        {"tied", no_argument, NULL, O_TIED},
        {NULL, 0, NULL, 0},
    };
    *o = (mk_opts_t){
        .arch = MODEL_ARCH_QWEN3MOE,
        .type = GGML_TYPE_Q8_0,
        .layers = 4,
        .embd = 256,
        .heads = 8,
        .heads_kv = 4,
        .head_dim = 32,
        .experts = 16,
        .top_k = 4,
        .ff_exp = 256,
        .ctx = 4096,
        .skew = 0.5f,
        .seed = 1,
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "ho:", lo, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case 'h':
            usage(stdout);
            return 1;
        case 'o':
            o->out = optarg;
            break;
        case O_ARCH:
            if (model_arch_from_name(optarg, &o->arch) != 0) {
                fprintf(stderr,
                        "moe mkmodel: --arch '%s': expected qwen3moe, qwen2moe, olmoe or llama\n",
                        optarg);
                return -EINVAL;
            }
            break;
        case O_TYPE:
            if (!strcasecmp(optarg, "q4_K_M")) {
                o->type = TYPE_Q4_K_M;
            } else if (quant_type_from_name(optarg, &o->type) != 0 || !quant_traits(o->type) ||
                       !quant_traits(o->type)->can_compute) {
                fprintf(stderr, "moe mkmodel: --type '%s': not a type moed computes\n", optarg);
                return -EINVAL;
            }
            break;
        case O_SEED:
            if (parse_u64(optarg, 0, UINT64_MAX, &o->seed) != 0) {
                fprintf(stderr, "moe mkmodel: --seed '%s': expected an unsigned integer\n", optarg);
                return -EINVAL;
            }
            break;
        case O_LAYERS:
            r = parse_u32_opt("layers", optarg, 1, 4096, &o->layers);
            break;
        case O_EMBD:
            r = parse_u32_opt("embd", optarg, 2, 1u << 16, &o->embd);
            break;
        case O_HEADS:
            r = parse_u32_opt("heads", optarg, 1, 4096, &o->heads);
            break;
        case O_HEADS_KV:
            r = parse_u32_opt("heads-kv", optarg, 1, 4096, &o->heads_kv);
            o->heads_kv_set = true;
            break;
        case O_HEAD_DIM:
            r = parse_u32_opt("head-dim", optarg, 2, 4096, &o->head_dim);
            o->head_dim_set = true;
            break;
        case O_EXPERTS:
            r = parse_u32_opt("experts", optarg, 1, 512, &o->experts);
            break;
        case O_TOPK:
            r = parse_u32_opt("top-k", optarg, 1, 512, &o->top_k);
            break;
        case O_FF_EXP:
            r = parse_u32_opt("ff-exp", optarg, 1, 1u << 18, &o->ff_exp);
            break;
        case O_FF_SHARED:
            r = parse_u32_opt("ff-shared", optarg, 1, 1u << 18, &o->ff_shared);
            o->ff_shared_set = true;
            break;
        case O_CTX:
            r = parse_u32_opt("ctx", optarg, 1, 1u << 24, &o->ctx);
            break;
        case O_VOCAB:
            o->vocab = optarg;
            break;
        case O_SKEW: {
            char *end = NULL;
            errno = 0;
            float v = strtof(optarg, &end);
            if (errno || end == optarg || *end || !isfinite(v) || v < 0.0f || v > 16.0f) {
                fprintf(stderr, "moe mkmodel: --skew '%s': expected a number in 0..16\n", optarg);
                return -EINVAL;
            }
            o->skew = v;
            break;
        }
        case O_TIED:
            o->tied = true;
            break;
        default:
            fprintf(stderr, "moe mkmodel: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return -EINVAL;
        }
        if (r)
            return r;
    }
    if (optind < argc) {
        fprintf(stderr, "moe mkmodel: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    if (!o->out) {
        fprintf(stderr, "moe mkmodel: -o FILE is required\n");
        return -EINVAL;
    }
    const model_arch_info_t *ai = model_arch_info(o->arch);
    if (ai->qk_norm == MODEL_QK_NORM_FULL && !o->heads_kv_set)
        o->heads_kv = o->heads;
    if (ai->attn_width_is_embd && !o->head_dim_set)
        o->head_dim = o->embd / o->heads;
    if (!o->ff_shared_set)
        o->ff_shared = 2 * o->ff_exp;
    return 0;
}

/* ---- vocabulary ---- */

typedef struct vocab {
    uint32_t n;
    char **tok;    /* [n] */
    uint64_t *len; /* [n] */
    int32_t *type; /* [n] */
    char **merges;
    uint64_t *merge_len;
    uint32_t n_merges;
    uint32_t bos, eos;
} vocab_t;

static vocab_t *vocab_free(vocab_t *v)
{
    if (!v)
        return NULL;
    for (uint32_t i = 0; v->tok && i < v->n; i++)
        free(v->tok[i]);
    for (uint32_t i = 0; v->merges && i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tok);
    free(v->len);
    free(v->type);
    free(v->merges);
    free(v->merge_len);
    free(v);
    return NULL;
}

/* UTF-8 of GPT-2's bytes_to_unicode image of byte b: printable Latin-1 bytes map to
 * themselves, the other 68 to U+0100.. in byte order. */
static int gpt2_byte_utf8(unsigned b, char out[4])
{
    unsigned cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) {
        cp = b;
    } else {
        unsigned n = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* Merges of the built-in vocabulary, in rank order; 'G' stands for the space symbol
 * U+0120 ('Ġ'). Each side is a token that exists before the merge. */
static const char *const builtin_merges[][2] = {
    {"G", "t"},  {"G", "a"}, {"h", "e"}, {"i", "n"},  {"r", "e"},  {"o", "n"},   {"Gt", "he"},
    {"e", "r"},  {"G", "s"}, {"a", "t"}, {"e", "n"},  {"n", "d"},  {"G", "w"},   {"G", "o"},
    {"i", "s"},  {"o", "u"}, {"G", "c"}, {"i", "t"},  {"e", "s"},  {"G", "b"},   {"o", "r"},
    {"G", "f"},  {"G", "m"}, {"a", "n"}, {"G", "p"},  {"in", "g"}, {"Ga", "nd"}, {"Gt", "o"},
    {"Go", "f"}, {"G", "i"}, {"l", "l"}, {"Gi", "n"},
};

static const struct {
    const char *text;
    int32_t type; /* llama.cpp token types: 3 CONTROL, 4 USER_DEFINED */
} builtin_special[] = {
    {"<|endoftext|>", 3}, {"<|im_start|>", 3}, {"<|im_end|>", 3}, {"<think>", 4}, {"</think>", 4},
};

static char *expand_g(const char *s)
{
    /* 'G' -> "\xc4\xa0" (U+0120) */
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += s[i] == 'G';
    char *o = malloc(n + extra + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 'G') {
            *p++ = (char)0xc4;
            *p++ = (char)0xa0;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

static int vocab_builtin(vocab_t **ret)
{
    const uint32_t n_merges = sizeof(builtin_merges) / sizeof(builtin_merges[0]);
    const uint32_t n_special = sizeof(builtin_special) / sizeof(builtin_special[0]);
    vocab_t *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v->n = 256 + n_merges + n_special;
    v->n_merges = n_merges;
    v->tok = calloc(v->n, sizeof(*v->tok));
    v->len = calloc(v->n, sizeof(*v->len));
    v->type = calloc(v->n, sizeof(*v->type));
    v->merges = calloc(n_merges, sizeof(*v->merges));
    v->merge_len = calloc(n_merges, sizeof(*v->merge_len));
    if (!v->tok || !v->len || !v->type || !v->merges || !v->merge_len)
        goto nomem;
    uint32_t id = 0;
    for (unsigned b = 0; b < 256; b++, id++) {
        char u[4];
        int n = gpt2_byte_utf8(b, u);
        if (!(v->tok[id] = malloc((size_t)n + 1)))
            goto nomem;
        memcpy(v->tok[id], u, (size_t)n);
        v->tok[id][n] = '\0';
        v->len[id] = (uint64_t)n;
        v->type[id] = 1; /* NORMAL */
    }
    for (uint32_t m = 0; m < n_merges; m++, id++) {
        char *a = expand_g(builtin_merges[m][0]), *b = expand_g(builtin_merges[m][1]);
        size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0;
        char *pair = a && b ? malloc(la + lb + 2) : NULL,
             *tok = a && b ? malloc(la + lb + 1) : NULL;
        if (!pair || !tok) {
            free(a), free(b), free(pair), free(tok);
            goto nomem;
        }
        snprintf(pair, la + lb + 2, "%s %s", a, b);
        snprintf(tok, la + lb + 1, "%s%s", a, b);
        free(a), free(b);
        v->merges[m] = pair;
        v->merge_len[m] = la + lb + 1;
        v->tok[id] = tok;
        v->len[id] = la + lb;
        v->type[id] = 1;
    }
    for (uint32_t s = 0; s < n_special; s++, id++) {
        if (!(v->tok[id] = strdup(builtin_special[s].text)))
            goto nomem;
        v->len[id] = strlen(builtin_special[s].text);
        v->type[id] = builtin_special[s].type;
    }
    v->bos = 256 + n_merges;     /* <|endoftext|> */
    v->eos = 256 + n_merges + 2; /* <|im_end|> */
    *ret = v;
    return 0;
nomem:
    vocab_free(v);
    return -ENOMEM;
}

static const char chatml_template[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

static int write_builtin_vocab(gguf_writer_t *w, const vocab_t *v)
{
    int r;
    if ((r = gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2")) ||
        (r = gguf_writer_add_str(w, "tokenizer.ggml.pre", "gpt-2")) ||
        (r = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok,
                                     v->len, v->n)) ||
        (r = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->type, v->n)) ||
        (r = gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                                     v->merge_len, v->n_merges)) ||
        (r = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", v->bos)) ||
        (r = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", v->eos)) ||
        (r = gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", v->bos)) ||
        (r = gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false)) ||
        (r = gguf_writer_add_str(w, "tokenizer.chat_template", chatml_template)))
        return r;
    return 0;
}

/* ---- tensor types ---- */

/* llama.cpp's use_more_bits (src/llama-quant.cpp): the first and last eighth of the layers
 * and every third one between get more bits in the Q4_K_M mix. */
static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type of role r in layer il; then llama.cpp's fallback when ne0 does not fit the
 * block (tensor_type_fallback: q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0, then f16). */
static uint32_t pick_type(const mk_opts_t *o, const model_tensor_spec_t *s, enum model_role r,
                          uint32_t il)
{
    if (s->kind == MODEL_KIND_NORM || s->kind == MODEL_KIND_BIAS || s->kind == MODEL_KIND_ROUTER)
        return GGML_TYPE_F32;
    uint32_t t = o->type;
    if (t == TYPE_Q4_K_M) {
        /* llama_tensor_get_type_impl for LLAMA_FTYPE_MOSTLY_Q4_K_M. */
        int L = (int)o->layers;
        t = GGML_TYPE_Q4_K;
        if (r == MODEL_ROLE_OUTPUT || (r == MODEL_ROLE_TOK_EMBD && o->tied))
            t = s->ne[0] % 256 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q6_K;
        else if (r == MODEL_ROLE_WV)
            t = o->experts == 8             ? GGML_TYPE_Q8_0
                : use_more_bits((int)il, L) ? GGML_TYPE_Q6_K
                                            : GGML_TYPE_Q4_K;
        else if (r == MODEL_ROLE_WK && o->experts == 8)
            t = GGML_TYPE_Q8_0;
        else if (r == MODEL_ROLE_WO && o->experts == 8)
            t = GGML_TYPE_Q5_K;
        else if ((r == MODEL_ROLE_DOWN_EXPS || r == MODEL_ROLE_DOWN_SHEXP) &&
                 use_more_bits((int)il, L))
            t = GGML_TYPE_Q6_K;
    }
    const quant_traits_t *qt = quant_traits(t);
    if (qt && s->ne[0] % qt->block_size == 0)
        return t;
    switch (t) {
    case GGML_TYPE_Q4_K:
        t = GGML_TYPE_Q5_0;
        break;
    case GGML_TYPE_Q5_K:
        t = GGML_TYPE_Q5_1;
        break;
    case GGML_TYPE_Q6_K:
        t = GGML_TYPE_Q8_0;
        break;
    default:
        break;
    }
    qt = quant_traits(t);
    return qt && s->ne[0] % qt->block_size == 0 ? t : GGML_TYPE_F16;
}

/* ---- weight generation ---- */

typedef struct gen {
    const mk_opts_t *o;
    const model_hparams_t *hp;
    float *dir;  /* [n_embd] the shared +-1 direction u (skew > 0) */
    float *fbuf; /* float staging for one chunk */
    size_t fbuf_n;
    uint8_t *obuf; /* output bytes of one chunk */
} gen_t;

static void put_half(uint8_t *p, float f)
{
    uint16_t h = quant_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* Fills n blocks of a block type with uniform random codes and scales chosen so the
 * dequantized values have deviation sigma and mean ~0. Layouts: ggml-common.h (block_q4_0
 * {d, qs[16]}, block_q4_1 {d, m, qs[16]}, block_q5_0 {d, qh[4], qs[16]}, block_q5_1
 * {d, m, qh[4], qs[16]}, block_q8_0 {d, qs[32]}, block_q4_K {d, dmin, scales[12], qs[128]},
 * block_q5_K {d, dmin, scales[12], qh[32], qs[128]}, block_q6_K {ql[128], qh[64],
 * scales[16], d}). The spread of a uniform code is (levels^2 - 1)/12; K-quants use sub-block
 * scale 16 (and min 16) so d stays a normal half for the widths moed meets. Returns false for
 * a type without a direct generator. */
static bool gen_blocks(uint32_t type, rng_t *rg, float sigma, uint8_t *dst, size_t n_blocks)
{
    const float sd4 = 4.6098f, sd5 = 9.2331f, sd6 = 18.4730f, sd8 = 73.9003f;
    size_t bs;
    switch (type) {
    case GGML_TYPE_Q4_0:
        bs = 18;
        break;
    case GGML_TYPE_Q4_1:
        bs = 20;
        break;
    case GGML_TYPE_Q5_0:
        bs = 22;
        break;
    case GGML_TYPE_Q5_1:
        bs = 24;
        break;
    case GGML_TYPE_Q8_0:
        bs = 34;
        break;
    case GGML_TYPE_Q4_K:
        bs = 144;
        break;
    case GGML_TYPE_Q5_K:
        bs = 176;
        break;
    case GGML_TYPE_Q6_K:
        bs = 210;
        break;
    default:
        return false;
    }
    const quant_traits_t *qt = quant_traits(type);
    if (!qt || qt->type_size != bs)
        return false;
    rng_bytes(rg, dst, bs * n_blocks);
    for (size_t b = 0; b < n_blocks; b++) {
        uint8_t *p = dst + b * bs;
        float jitter = 0.75f + 0.5f * (float)p[bs - 1] / 255.0f; /* per-block scale variety */
        switch (type) {
        case GGML_TYPE_Q4_0:
            /* (q - 8) * d has mean -d/2 over uniform codes; code 0 (-8) becomes 8 (0) so
             * the values are symmetric: -7..7, spread sqrt(17.5). */
            for (int i = 2; i < 18; i++) {
                if (!(p[i] & 0x0f))
                    p[i] |= 0x08;
                if (!(p[i] & 0xf0))
                    p[i] |= 0x80;
            }
            put_half(p, sigma * jitter / 4.1833f);
            break;
        case GGML_TYPE_Q5_0:
            put_half(p, sigma * jitter / sd5);
            break;
        case GGML_TYPE_Q8_0:
            put_half(p, sigma * jitter / sd8);
            break;
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_1: {
            bool five = type == GGML_TYPE_Q5_1;
            float d = sigma * jitter / (five ? sd5 : sd4);
            put_half(p, d);
            put_half(p + 2, -(five ? 15.5f : 7.5f) * d);
            break;
        }
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K: {
            bool five = type == GGML_TYPE_Q5_K;
            float d = sigma * jitter / (16.0f * (five ? sd5 : sd4));
            put_half(p, d);
            put_half(p + 2, (five ? 15.5f : 7.5f) * d); /* dmin * 16 = mean code * d * 16 */
            /* 6-bit scale 16 and min 16 for all 8 sub-blocks in get_scale_min_k4's packing:
             * bytes 0..7 carry the low 6 bits of sub-blocks 0..3 and the top 2 bits of 4..7,
             * bytes 8..11 the low 4 bits of 4..7 (0 here). */
            memset(p + 4, 16 | (1 << 6), 8);
            memset(p + 12, 0, 4);
            break;
        }
        case GGML_TYPE_Q6_K:
            memset(p + 192, 16, 16);
            put_half(p + 208, sigma * jitter / (16.0f * sd6));
            break;
        default:
            break;
        }
    }
    return true;
}

/* Converts n floats into type t at dst. */
static int encode_floats(uint32_t t, const float *src, uint8_t *dst, size_t n)
{
    if (t == GGML_TYPE_F32) {
        memcpy(dst, src, n * sizeof(float));
        return 0;
    }
    if (t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = t == GGML_TYPE_F16 ? quant_f32_to_f16(src[i]) : quant_f32_to_bf16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return 0;
    }
    return quant_quantize(t, src, dst, n);
}

/* Deviation of role r's entries (see the top comment). */
static float role_sigma(const gen_t *g, enum model_role r, const model_tensor_spec_t *s)
{
    float fan_in = (float)s->ne[0], depth = sqrtf(2.0f * (float)g->hp->n_layer);
    switch (r) {
    case MODEL_ROLE_TOK_EMBD:
        return 1.0f;
    case MODEL_ROLE_WO:
    case MODEL_ROLE_DOWN_EXPS:
    case MODEL_ROLE_DOWN_SHEXP:
        return 1.0f / (sqrtf(fan_in) * depth);
    default:
        return 1.0f / sqrtf(fan_in);
    }
}

/* One row of a float-generated tensor: row index `row` of the tensor (all dims flattened
 * past ne[0]). */
static void gen_row(gen_t *g, rng_t *rg, enum model_role r, const model_tensor_spec_t *s,
                    uint32_t il, uint64_t row, float sigma, float *out)
{
    const uint64_t n = s->ne[0];
    switch (s->kind) {
    case MODEL_KIND_NORM:
        for (uint64_t i = 0; i < n; i++)
            out[i] = 1.0f + 0.02f * rng_gauss(rg);
        return;
    case MODEL_KIND_BIAS:
        for (uint64_t i = 0; i < n; i++)
            out[i] = 0.02f * rng_gauss(rg);
        return;
    default:
        break;
    }
    for (uint64_t i = 0; i < n; i++)
        out[i] = sigma * rng_gauss(rg);
    if (!g->dir)
        return;
    if (r == MODEL_ROLE_TOK_EMBD) {
        for (uint64_t i = 0; i < n; i++)
            out[i] += g->dir[i]; /* shared component, as strong as the token's own */
    } else if (r == MODEL_ROLE_OUTPUT) {
        /* The shared component would add one fixed vector to the logits of every position
         * and make greedy decoding repeat one token: the head does not see it. */
        double dot = 0;
        for (uint64_t i = 0; i < n; i++)
            dot += (double)out[i] * g->dir[i];
        for (uint64_t i = 0; i < n; i++)
            out[i] -= (float)(dot / (double)n) * g->dir[i];
    } else if (r == MODEL_ROLE_ROUTER) {
        /* Remove the row's own component along u, then add the popularity bias. */
        double dot = 0;
        for (uint64_t i = 0; i < n; i++)
            dot += (double)out[i] * g->dir[i];
        float inv_n = 1.0f / (float)n;
        float c = sqrtf((float)n * 0.5f); /* expected x . u/|u| of a normalized state */
        /* rank of expert `row` in this layer: a permutation drawn from its own stream */
        char name[64];
        snprintf(name, sizeof(name), "moed.perm.%u", il);
        rng_t pr;
        rng_init(&pr, g->o->seed, name);
        uint32_t ne = g->hp->n_expert, rank = 0;
        uint32_t perm_small[512];
        for (uint32_t e = 0; e < ne; e++)
            perm_small[e] = e;
        for (uint32_t e = ne; e > 1; e--) {
            uint32_t j = (uint32_t)(rng_next(&pr) % e);
            uint32_t tmp = perm_small[e - 1];
            perm_small[e - 1] = perm_small[j];
            perm_small[j] = tmp;
        }
        for (uint32_t e = 0; e < ne; e++)
            if (perm_small[e] == row)
                rank = e;
        float beta = -g->o->skew * logf(1.0f + (float)rank) / c;
        float norm_u = sqrtf((float)n);
        for (uint64_t i = 0; i < n; i++)
            out[i] += (float)(-dot * inv_n) * g->dir[i] + beta * g->dir[i] / norm_u;
    }
}

/* Generates and writes one tensor, chunk by chunk. */
static int write_tensor(gen_t *g, gguf_writer_t *w, enum model_role r, const model_tensor_spec_t *s,
                        uint32_t il, const char *name, uint32_t type)
{
    uint64_t n0 = s->ne[0], rows = s->ne[1] * s->ne[2] * s->ne[3], row_size;
    int rc = quant_row_size(type, n0, &row_size);
    if (rc)
        return rc;
    uint64_t chunk_rows = CHUNK_BYTES / row_size;
    if (chunk_rows == 0)
        chunk_rows = 1;
    if (chunk_rows * n0 > g->fbuf_n)
        chunk_rows = g->fbuf_n / n0;
    rng_t rg;
    rng_init(&rg, g->o->seed, name);
    float sigma = role_sigma(g, r, s);
    const quant_traits_t *qt = quant_traits(type);
    bool direct = s->kind == MODEL_KIND_EXPERTS;

    for (uint64_t row = 0; row < rows; row += chunk_rows) {
        uint64_t nr = rows - row < chunk_rows ? rows - row : chunk_rows;
        size_t bytes = (size_t)(nr * row_size);
        if (direct && qt->block_size > 1 &&
            gen_blocks(type, &rg, sigma, g->obuf, (size_t)(nr * n0 / qt->block_size))) {
            /* quant codes made directly */
        } else if (direct) {
            /* float experts: uniform with deviation sigma (cheap; the bulk of the file) */
            float a = sigma * 1.7320508f;
            for (uint64_t i = 0; i < nr * n0; i++)
                g->fbuf[i] = a * (2.0f * rng_unit(&rg) - 1.0f);
            if ((rc = encode_floats(type, g->fbuf, g->obuf, (size_t)(nr * n0))))
                return rc;
        } else {
            for (uint64_t i = 0; i < nr; i++)
                gen_row(g, &rg, r, s, il, row + i, sigma, g->fbuf + i * n0);
            if ((rc = encode_floats(type, g->fbuf, g->obuf, (size_t)(nr * n0))))
                return rc;
        }
        if ((rc = gguf_writer_write(w, g->obuf, bytes)))
            return rc;
    }
    return 0;
}

/* ---- the file ---- */

typedef struct plan_entry {
    enum model_role role;
    uint32_t il;
    uint32_t type;
    model_tensor_spec_t spec;
    char name[96];
} plan_entry_t;

/* Tensor order as llama.cpp's converters write it: embeddings, the blocks, the head. */
static int build_plan(const mk_opts_t *o, const model_hparams_t *hp, plan_entry_t **ret,
                      size_t *ret_n)
{
    size_t cap = 2 + (size_t)hp->n_layer * MODEL_ROLE_COUNT_ + 1, n = 0;
    plan_entry_t *p = calloc(cap, sizeof(*p));
    if (!p)
        return -ENOMEM;
    const enum model_role head[] = {MODEL_ROLE_OUTPUT_NORM, MODEL_ROLE_OUTPUT};
    for (int pass = 0; pass < 3; pass++) {
        uint32_t layers = pass == 1 ? hp->n_layer : 1;
        for (uint32_t il = 0; il < layers; il++) {
            for (unsigned r = 0; r < MODEL_ROLE_COUNT_; r++) {
                if (pass == 0 && r != MODEL_ROLE_TOK_EMBD)
                    continue;
                if (pass == 2 && r != head[0] && r != head[1])
                    continue;
                model_tensor_spec_t s;
                if (model_tensor_spec(o->arch, hp, (enum model_role)r, &s) != 0)
                    continue;
                if (pass == 1 && !s.per_layer)
                    continue;
                if (r == MODEL_ROLE_OUTPUT && o->tied)
                    continue;
                /* Optional biases: written where real files have them (qwen2moe). */
                if (s.kind == MODEL_KIND_BIAS && o->arch != MODEL_ARCH_QWEN2MOE)
                    continue;
                plan_entry_t *e = &p[n++];
                e->role = (enum model_role)r;
                e->il = il;
                e->spec = s;
                e->type = pick_type(o, &s, e->role, il);
                if (model_tensor_name(&s, il, e->name, sizeof(e->name))) {
                    free(p);
                    return -ENAMETOOLONG;
                }
            }
        }
    }
    *ret = p;
    *ret_n = n;
    return 0;
}

static int write_hparams(gguf_writer_t *w, const mk_opts_t *o, const model_hparams_t *hp)
{
    const model_arch_info_t *ai = model_arch_info(o->arch);
    const char *a = ai->name;
    char key[128], name[128];
    int r = 0;
#define KU32(suffix, v)                                                                            \
    do {                                                                                           \
        snprintf(key, sizeof(key), "%s.%s", a, suffix);                                            \
        if (!r)                                                                                    \
            r = gguf_writer_add_u32(w, key, (v));                                                  \
    } while (0)
#define KF32(suffix, v)                                                                            \
    do {                                                                                           \
        snprintf(key, sizeof(key), "%s.%s", a, suffix);                                            \
        if (!r)                                                                                    \
            r = gguf_writer_add_f32(w, key, (v));                                                  \
    } while (0)
    snprintf(name, sizeof(name), "moed synthetic %s", a);
    r = gguf_writer_add_str(w, "general.architecture", a);
    if (!r)
        r = gguf_writer_add_str(w, "general.name", name);
    KU32("context_length", hp->n_ctx_train);
    KU32("embedding_length", hp->n_embd);
    KU32("block_count", hp->n_layer);
    /* qwen2moe falls back to feed_forward_length for the shared expert; the others use it
     * (olmoe, llama) or ignore it (qwen3moe) for the expert width. */
    KU32("feed_forward_length", ai->shexp ? hp->n_ff_shexp : hp->n_ff_exp);
    KU32("attention.head_count", hp->n_head);
    KU32("attention.head_count_kv", hp->n_head_kv);
    KU32("attention.key_length", hp->head_dim_k);
    KU32("attention.value_length", hp->head_dim_v);
    KU32("rope.dimension_count", hp->n_rot);
    KF32("rope.freq_base", hp->rope_freq_base);
    KF32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    KU32("expert_count", hp->n_expert);
    KU32("expert_used_count", hp->n_expert_used);
    if (ai->ff_exp_key)
        KU32("expert_feed_forward_length", hp->n_ff_exp);
    if (ai->shexp)
        KU32("expert_shared_feed_forward_length", hp->n_ff_shexp);
#undef KU32
#undef KF32
    if (!r)
        r = gguf_writer_add_u64(w, "moed.mkmodel.seed", o->seed);
    if (!r)
        r = gguf_writer_add_f32(w, "moed.mkmodel.skew", o->skew);
    return r;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run(const mk_opts_t *o)
{
    char err[256] = "";
    gguf_t *vg = NULL;
    vocab_t *v = NULL;
    gguf_writer_t *w = NULL;
    plan_entry_t *plan = NULL;
    size_t n_plan = 0;
    gen_t g = {.o = o};
    int r, status = 1;
    double t0 = now_s();

    model_hparams_t hp = {
        .n_embd = o->embd,
        .n_layer = o->layers,
        .n_head = o->heads,
        .n_head_kv = o->heads_kv,
        .head_dim_k = o->head_dim,
        .head_dim_v = o->head_dim,
        .n_rot = o->head_dim,
        .n_ctx_train = o->ctx,
        .n_expert = o->experts,
        .n_expert_used = o->top_k,
        .n_ff_exp = o->ff_exp,
        .rope_freq_scale = 1.0f,
        .expert_weights_scale = 1.0f,
    };
    const model_arch_info_t *ai = model_arch_info(o->arch);
    hp.n_ff_shexp = ai->shexp ? o->ff_shared : 0;
    hp.rope_freq_base = o->arch == MODEL_ARCH_OLMOE ? 10000.0f : 1000000.0f;
    hp.rms_eps = o->arch == MODEL_ARCH_QWEN3MOE || o->arch == MODEL_ARCH_QWEN2MOE ? 1e-6f : 1e-5f;

    if (o->vocab) {
        enum gguf_type tt;
        uint64_t n_tok;
        const void *unused;
        if ((r = gguf_open(o->vocab, &vg, err, sizeof(err))) != 0) {
            fprintf(stderr, "moe mkmodel: %s: %s\n", o->vocab, err);
            goto out;
        }
        if (gguf_get_arr(vg, "tokenizer.ggml.tokens", &tt, &n_tok, &unused) != 0 ||
            tt != GGUF_TYPE_STRING || n_tok == 0 || n_tok > (1u << 24)) {
            fprintf(stderr, "moe mkmodel: %s: no usable tokenizer.ggml.tokens\n", o->vocab);
            goto out;
        }
        hp.n_vocab = (uint32_t)n_tok;
    } else {
        if ((r = vocab_builtin(&v)) != 0) {
            fprintf(stderr, "moe mkmodel: %s\n", strerror(-r));
            goto out;
        }
        hp.n_vocab = v->n;
    }
    if ((r = model_hparams_check(o->arch, &hp, err, sizeof(err))) != 0) {
        fprintf(stderr, "moe mkmodel: %s\n", err);
        goto out;
    }
    if ((r = build_plan(o, &hp, &plan, &n_plan)) != 0)
        goto fail_errno;

    /* Buffers: one chunk of output and the floats behind it. */
    uint64_t max_n0 = 0;
    for (size_t i = 0; i < n_plan; i++)
        if (plan[i].spec.ne[0] > max_n0)
            max_n0 = plan[i].spec.ne[0];
    g.fbuf_n = CHUNK_BYTES / sizeof(float) > max_n0 ? CHUNK_BYTES / sizeof(float) : max_n0;
    g.fbuf = malloc(g.fbuf_n * sizeof(float));
    g.obuf =
        malloc(g.fbuf_n * sizeof(float) > CHUNK_BYTES ? g.fbuf_n * sizeof(float) : CHUNK_BYTES);
    g.hp = &hp;
    if (o->skew > 0.0f) {
        rng_t dr;
        rng_init(&dr, o->seed, "moed.direction");
        g.dir = malloc(hp.n_embd * sizeof(float));
        for (uint32_t i = 0; g.dir && i < hp.n_embd; i++)
            g.dir[i] = (rng_next(&dr) >> 63) ? 1.0f : -1.0f;
    }
    if (!g.fbuf || !g.obuf || (o->skew > 0.0f && !g.dir)) {
        r = -ENOMEM;
        goto fail_errno;
    }

    if ((r = gguf_writer_new(o->out, GGUF_DEFAULT_ALIGNMENT, &w)) != 0) {
        fprintf(stderr, "moe mkmodel: %s: %s\n", o->out, strerror(-r));
        goto out;
    }
    if ((r = write_hparams(w, o, &hp)) != 0)
        goto fail_errno;
    if (vg) {
        for (size_t i = 0; i < gguf_n_kv(vg); i++)
            if (!strncmp(gguf_kv_key(vg, i), "tokenizer.", 10) &&
                (r = gguf_writer_copy_kv(w, vg, i)) != 0)
                goto fail_errno;
    } else if ((r = write_builtin_vocab(w, v)) != 0) {
        goto fail_errno;
    }
    for (size_t i = 0; i < n_plan; i++)
        if ((r = gguf_writer_add_tensor(w, plan[i].name, plan[i].spec.n_dims, plan[i].spec.ne,
                                        plan[i].type)) != 0)
            goto fail_errno;
    if ((r = gguf_writer_begin_data(w)) != 0)
        goto fail_errno;
    uint64_t expert_bytes = 0;
    for (size_t i = 0; i < n_plan; i++) {
        const plan_entry_t *e = &plan[i];
        if ((r = write_tensor(&g, w, e->role, &e->spec, e->il, e->name, e->type)) != 0) {
            fprintf(stderr, "moe mkmodel: writing %s: %s\n", e->name, strerror(-r));
            goto out;
        }
        if (e->spec.kind == MODEL_KIND_EXPERTS) {
            uint64_t rs = 0;
            quant_row_size(e->type, e->spec.ne[0], &rs);
            expert_bytes += rs * e->spec.ne[1] * e->spec.ne[2];
        }
    }
    r = gguf_writer_finish(w);
    w = NULL;
    if (r != 0)
        goto fail_errno;

    struct stat st;
    double dt = now_s() - t0;
    uint64_t size = stat(o->out, &st) == 0 ? (uint64_t)st.st_size : 0;
    printf("%s: %" PRIu64 " bytes (%.1f MiB), experts %" PRIu64 " bytes (%.1f%%), %s %s, "
           "%zu tensors, %.2f s (%.0f MiB/s)\n",
           o->out, size, (double)size / 1048576.0, expert_bytes,
           size ? 100.0 * (double)expert_bytes / (double)size : 0.0, ai->name,
           o->type == TYPE_Q4_K_M ? "q4_K_M" : quant_traits(o->type)->name, n_plan, dt,
           dt > 0 ? (double)size / 1048576.0 / dt : 0.0);
    status = 0;
    goto out;

fail_errno:
    fprintf(stderr, "moe mkmodel: %s: %s\n", o->out, strerror(-r));
out:
    gguf_writer_free(w); /* unlinks an unfinished file */
    free(plan);
    free(g.fbuf);
    free(g.obuf);
    free(g.dir);
    vocab_free(v);
    gguf_free(vg);
    return status;
}

int moe_cmd_mkmodel(int argc, char **argv)
{
    mk_opts_t o;
    int r = parse_opts(argc, argv, &o);
    if (r > 0)
        return 0; /* --help */
    if (r < 0) {
        fprintf(stderr, "'moe mkmodel --help' lists the options\n");
        return 2;
    }
    return run(&o);
}
