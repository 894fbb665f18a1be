/* `moe run`: generate tokens from a prompt, offline, with no daemon. The prompt is text
 * (through the model's tokenizer) or ids; the output is the text, streamed, or with --json
 * one object with the chosen id and the five highest logits of every generated position
 * (the format tests compare the engine and the reference with).
 *
 * Three parts that do not know each other: the backend (a forward function that turns a
 * token at a position into logits: the CPU reference today, the Vulkan engine later), the
 * generation loop (prefill, then pick, report, feed back; greedy or seeded sampling, stop at
 * end of generation), and the front (arguments, tokenizer, printing). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/gguf.h"
#include "model/model.h"
#include "moe.h"
#include "ref_forward.h"
#include "text/tokenizer.h"

#define RUN_MAX_PROMPT 65536
#define RUN_MAX_GEN    (1u << 20)

/* ---- backend ---- */

/* Whatever computes logits[n_vocab] for token at pos; positions come in order from 0. */
typedef struct run_backend {
    void *ctx;
    uint32_t n_vocab;
    int (*forward)(void *ctx, int32_t token, int32_t pos, float *logits);
} run_backend_t;

static int ref_backend_forward(void *ctx, int32_t token, int32_t pos, float *logits)
{
    return ref_forward(ctx, token, pos, logits);
}

/* ---- sampler ---- */

typedef struct run_sampler {
    float temp;     /* 0: greedy */
    uint64_t state; /* splitmix64 */
} run_sampler_t;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Draws from softmax(logits / temp); greedy_id (the arg-max) when temp is 0. */
static int32_t sample(run_sampler_t *sm, const float *logits, uint32_t n, int32_t greedy_id)
{
    double sum = 0, u, acc = 0;
    const float max = logits[greedy_id];

    if (sm->temp <= 0.0f)
        return greedy_id;
    for (uint32_t i = 0; i < n; i++)
        sum += exp(((double)logits[i] - max) / sm->temp);
    u = (double)(splitmix64(&sm->state) >> 11) * 0x1.0p-53 * sum;
    for (uint32_t i = 0; i < n; i++) {
        acc += exp(((double)logits[i] - max) / sm->temp);
        if (u < acc)
            return (int32_t)i;
    }
    return greedy_id;
}

/* ---- generation loop ---- */

typedef struct run_stats {
    double prefill_s, decode_s;
    size_t n_prompt, n_gen;
} run_stats_t;

/* Called with each generated step; returning < 0 stops the loop with that error. */
typedef int (*run_emit_fn)(void *userdata, const ref_step_t *step);

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Prefills prompt, then generates up to n_gen tokens into steps (n_gen entries), stopping
 * after an end-of-generation token when tok is given. *ret_n: steps written. */
static int run_generate(const run_backend_t *be, const int32_t *prompt, size_t n_prompt,
                        size_t n_gen, run_sampler_t *sm, const tokenizer_t *tok, run_emit_fn emit,
                        void *userdata, ref_step_t *steps, size_t *ret_n, run_stats_t *stats)
{
    float *logits = malloc((size_t)be->n_vocab * sizeof(float));
    size_t n = 0;
    double t0 = now_s(), t1;
    int r = 0;

    if (!logits)
        return -ENOMEM;
    // prefill, one token at a time (the reference has no batched path)
    for (size_t p = 0; p < n_prompt && r == 0; p++)
        r = be->forward(be->ctx, prompt[p], (int32_t)p, logits);
    t1 = now_s();
    // decode: pick from the last logits, report, feed back
    while (r == 0 && n < n_gen) {
        ref_step_t *st = &steps[n];

        ref_top_k(logits, be->n_vocab, REF_TOPK, st->top_id, st->top_logit);
        st->id = sample(sm, logits, be->n_vocab, st->top_id[0]);
        n++;
        if (emit && (r = emit(userdata, st)) < 0)
            break;
        if (tok && tokenizer_is_eog(tok, st->id))
            break;
        if (n < n_gen)
            r = be->forward(be->ctx, st->id, (int32_t)(n_prompt + n - 1), logits);
    }
    free(logits);
    stats->prefill_s = t1 - t0;
    stats->decode_s = now_s() - t1;
    stats->n_prompt = n_prompt;
    stats->n_gen = n;
    *ret_n = n;
    return r;
}

/* ---- front ---- */

typedef struct run_opts {
    const char *model;
    const char *prompt;
    const char *prompt_ids;
    size_t n_gen;
    bool json;
    bool ignore_eos;
    float temp;
    uint64_t seed;
} run_opts_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: moe run --model FILE (--prompt TEXT | --prompt-ids 1,2,3) -n N [OPTIONS]\n"
               "\n"
               "Generates N tokens from the prompt on the CPU reference (the Vulkan engine will\n"
               "replace it) and streams the text, then prints tokens/s on stderr.\n"
               "\n"
               "  --model FILE        GGUF model\n"
               "  --prompt TEXT       prompt text, through the model's tokenizer (a BOS only when\n"
               "                      the file sets tokenizer.ggml.add_bos_token)\n"
               "  --prompt-ids LIST   prompt as comma-separated token ids\n"
               "  -n, --n-predict N   tokens to generate; an end-of-generation token is the last\n"
               "                      one (unless --ignore-eos)\n"
               "  --json              print one object instead of text:\n"
               "                      "
               "{\"prompt_ids\":[...],\"steps\":[{\"id\":ID,\"top5\":[[ID,LOGIT],...]},...]}\n"
               "  --temp T            sample from softmax(logits / T); 0 (default) is greedy\n"
               "  --seed S            sampler seed (default 0)\n"
               "  --ignore-eos        do not stop at end-of-generation tokens\n"
               "  -h, --help          this text\n");
}

/* A decimal unsigned integer in [0, max], digits only (no sign, no blanks). */
static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -ERANGE;
    *ret = v;
    return 0;
}

/* "1,2,3" into a new array, each id < n_vocab. */
static int parse_ids(const char *s, uint32_t n_vocab, int32_t **ret, size_t *ret_n)
{
    size_t n = 1, i = 0;
    int32_t *ids;

    for (const char *p = s; *p; p++)
        n += *p == ',';
    if (n > RUN_MAX_PROMPT)
        return -E2BIG;
    ids = malloc(n * sizeof(*ids));
    if (!ids)
        return -ENOMEM;
    for (const char *p = s;; i++) {
        char buf[24];
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        uint64_t v;

        if (len == 0 || len >= sizeof(buf))
            goto bad;
        memcpy(buf, p, len);
        buf[len] = '\0';
        if (parse_u64(buf, n_vocab ? n_vocab - 1 : 0, &v) < 0 || !n_vocab)
            goto bad;
        ids[i] = (int32_t)v;
        if (!comma)
            break;
        p = comma + 1;
    }
    *ret = ids;
    *ret_n = n;
    return 0;
bad:
    free(ids);
    return -EINVAL;
}

static int parse_args(int argc, char **argv, run_opts_t *o)
{
    enum { OPT_PROMPT = 256, OPT_PROMPT_IDS, OPT_JSON, OPT_TEMP, OPT_SEED, OPT_IGNORE_EOS };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"prompt-ids", required_argument, NULL, OPT_PROMPT_IDS},
        {"n-predict", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, OPT_JSON},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"seed", required_argument, NULL, OPT_SEED},
        {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool have_n = false;
    uint64_t v;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "m:n:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model = optarg;
            break;
        case OPT_PROMPT:
            o->prompt = optarg;
            break;
        case OPT_PROMPT_IDS:
            o->prompt_ids = optarg;
            break;
        case 'n':
            if (parse_u64(optarg, RUN_MAX_GEN, &v) < 0) {
                fprintf(stderr, "moe run: -n wants a count from 0 to %u, not '%s'\n", RUN_MAX_GEN,
                        optarg);
                return -EINVAL;
            }
            o->n_gen = v;
            have_n = true;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_TEMP: {
            char *end;
            errno = 0;
            o->temp = strtof(optarg, &end);
            if (errno || end == optarg || *end || !isfinite(o->temp) || o->temp < 0.0f ||
                o->temp > 100.0f) {
                fprintf(stderr, "moe run: --temp wants a number from 0 to 100, not '%s'\n", optarg);
                return -EINVAL;
            }
            break;
        }
        case OPT_SEED:
            if (parse_u64(optarg, UINT64_MAX, &o->seed) < 0) {
                fprintf(stderr, "moe run: --seed wants an unsigned integer, not '%s'\n", optarg);
                return -EINVAL;
            }
            break;
        case OPT_IGNORE_EOS:
            o->ignore_eos = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "moe run: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    if (!o->model || !have_n || !o->prompt == !o->prompt_ids) {
        fprintf(stderr, "moe run: needs --model, -n and one of --prompt, --prompt-ids\n");
        usage(stderr);
        return -EINVAL;
    }
    return 0;
}

/* The prompt text through the tokenizer; BOS/EOS only as tokenizer.ggml.add_bos_token
 * (add_eos_token) in the file ask. */
static int encode_prompt(const gguf_t *g, const tokenizer_t *tok, const char *text, int32_t **ret,
                         size_t *ret_n)
{
    bool add_bos = false;
    unsigned flags = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int r;

    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos) == 0 && add_bos)
        flags |= TOKENIZER_ADD_SPECIAL;
    r = tokenizer_encode_alloc(tok, text, strlen(text), flags, &ids, &n);
    if (r < 0)
        return r;
    if (n == 0 || n > RUN_MAX_PROMPT) {
        free(ids);
        return n == 0 ? -ENODATA : -E2BIG;
    }
    *ret = ids;
    *ret_n = n;
    return 0;
}

/* Text mode: print each token's bytes as it comes (an end-of-generation token prints
 * nothing). */
static int emit_text(void *userdata, const ref_step_t *step)
{
    const tokenizer_t *tok = userdata;
    char buf[256];
    int n;

    if (!tok) {
        printf("%" PRId32 " ", step->id);
    } else if (!tokenizer_is_eog(tok, step->id)) {
        n = tokenizer_token_to_piece(tok, step->id, buf, sizeof(buf));
        if (n < 0)
            return n;
        fwrite(buf, 1, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf), stdout);
    }
    fflush(stdout);
    return 0;
}

/* The prompt ids from --prompt (tokenizer) or --prompt-ids. 0, or the exit status: 1
 * failure, 2 usage error. err holds tokenizer_new's reason when tok is NULL. */
static int prepare_prompt(const run_opts_t *o, const gguf_t *g, const model_t *m,
                          const tokenizer_t *tok, const char *err, int32_t **ret, size_t *ret_n)
{
    int r;

    if (m->hp.n_vocab < REF_TOPK) {
        fprintf(stderr, "moe run: a vocabulary of %" PRIu32 " tokens is too small\n",
                m->hp.n_vocab);
        return 1;
    }
    if (o->prompt && !tok) {
        fprintf(stderr, "moe run: --prompt needs the model's tokenizer: %s\n", err);
        return 1;
    }
    if (o->prompt) {
        r = encode_prompt(g, tok, o->prompt, ret, ret_n);
        if (r < 0) {
            fprintf(stderr, "moe run: cannot tokenize the prompt: %s\n",
                    r == -ENODATA ? "it has no tokens" : strerror(-r));
            return 1;
        }
    } else if (parse_ids(o->prompt_ids, m->hp.n_vocab, ret, ret_n) < 0) {
        fprintf(stderr,
                "moe run: --prompt-ids wants comma-separated ids below %" PRIu32
                " (the vocabulary), not '%s'\n",
                m->hp.n_vocab, o->prompt_ids);
        return 2;
    }
    return 0;
}

static void print_stats(const run_stats_t *st)
{
    fprintf(stderr,
            "moe run: prompt %zu tokens in %.3f s (%.2f tokens/s), generated %zu tokens in "
            "%.3f s (%.2f tokens/s) [cpu reference]\n",
            st->n_prompt, st->prefill_s,
            st->prefill_s > 0 ? (double)st->n_prompt / st->prefill_s : 0.0, st->n_gen, st->decode_s,
            st->decode_s > 0 ? (double)st->n_gen / st->decode_s : 0.0);
}

int moe_cmd_run(int argc, char **argv)
{
    run_opts_t o = {0};
    char err[512] = "";
    gguf_t *g = NULL;
    model_t *m = NULL;
    ref_model_t *rm = NULL;
    ref_state_t *rs = NULL;
    tokenizer_t *tok = NULL;
    int32_t *prompt = NULL;
    ref_step_t *steps = NULL;
    size_t n_prompt = 0, n_steps = 0;
    run_stats_t stats;
    int r, status = 1;

    r = parse_args(argc, argv, &o);
    if (r != 0)
        return r > 0 ? 0 : 2;

    r = gguf_open(o.model, &g, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe run: %s: %s\n", o.model, err[0] ? err : strerror(-r));
        goto out;
    }
    r = model_load(g, &m, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe run: %s: %s\n", o.model, err[0] ? err : strerror(-r));
        goto out;
    }
    // the tokenizer: required for --prompt, optional otherwise (text and end of generation)
    if (tokenizer_new(g, &tok, err, sizeof(err)) < 0)
        tok = NULL;
    status = prepare_prompt(&o, g, m, tok, err, &prompt, &n_prompt);
    if (status != 0)
        goto out;
    status = 1;

    // the backend: the CPU reference
    r = ref_model_new(m, o.model, &rm, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe run: %s: %s\n", o.model, err);
        goto out;
    }
    r = ref_state_new(rm, (uint32_t)(n_prompt + o.n_gen), &rs);
    steps = calloc(o.n_gen ? o.n_gen : 1, sizeof(*steps));
    if (r < 0 || !steps) {
        fprintf(stderr, "moe run: cannot allocate a context of %zu positions: %s\n",
                n_prompt + o.n_gen, strerror(r < 0 ? -r : ENOMEM));
        goto out;
    }
    const run_backend_t be = {.ctx = rs, .n_vocab = m->hp.n_vocab, .forward = ref_backend_forward};
    run_sampler_t sm = {.temp = o.temp, .state = o.seed};

    r = run_generate(&be, prompt, n_prompt, o.n_gen, &sm, o.ignore_eos ? NULL : tok,
                     o.json ? NULL : emit_text, tok, steps, &n_steps, &stats);
    if (r < 0) {
        fprintf(stderr, "\nmoe run: generation failed: %s\n", strerror(-r));
        goto out;
    }
    if (o.json) {
        if (ref_json_write(stdout, prompt, n_prompt, steps, n_steps) < 0 || fflush(stdout)) {
            fprintf(stderr, "moe run: writing the output failed\n");
            goto out;
        }
    } else {
        putchar('\n');
    }
    print_stats(&stats);
    status = 0;
out:
    free(steps);
    free(prompt);
    ref_state_free(rs);
    ref_model_free(rm);
    tokenizer_free(tok);
    model_free(m);
    gguf_free(g);
    return status;
}
