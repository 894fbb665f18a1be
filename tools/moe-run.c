/* `moe run`: generate tokens from a prompt, offline, with no daemon. The prompt is text
 * (through the model's tokenizer) or ids; the output is the text, streamed, or with --json
 * one object with the chosen id and the five highest logits of every generated position
 * (the format tests compare the engine and the reference with).
 *
 * Three parts that do not know each other: the engine (the seam of engine.h: the Vulkan
 * engine by default, the CPU reference with --engine reference, driven the way the daemon's
 * scheduler drives it: the prompt in one step per n_batch entries with logits only for its
 * last entry, then one entry per decode step), the generation loop (prefill, then pick,
 * report, feed back; greedy or seeded sampling, stop at end of generation), and the front
 * (arguments, tokenizer, printing). The engine's flags and its opening (with a load
 * progress bar) are shared with `moe bench decode` through moe.h. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/gguf.h"
#include "model/model.h"
#include "moe.h"
#include "ref_forward.h"
#include "settings.h"
#include "text/tokenizer.h"

#define RUN_MAX_PROMPT 65536
#define RUN_MAX_GEN    (1u << 20)
#define RUN_MAX_BATCH  512 /* prompt entries per engine step; longer prompts take more steps */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the engine: flags, progress bar, opening ---- */

int moe_engine_opts_init(moe_engine_opts_t *o)
{
    *o = (moe_engine_opts_t){.bar = {.on = isatty(STDERR_FILENO) == 1, .shown = -1}};
    return settings_init(&o->st);
}

void moe_engine_opts_clear(moe_engine_opts_t *o)
{
    settings_clear(&o->st);
}

int moe_engine_opt(moe_engine_opts_t *o, const char *name, const char *value, char *err,
                   size_t errlen)
{
    if (!strcmp(name, "no-prefetch"))
        return settings_set(&o->st, "prefetch", "no", err, errlen);
    o->ctx_set |= !strcmp(name, "ctx");
    o->cache_dir_set |= !strcmp(name, "cache-dir");
    return settings_set(&o->st, name, value, err, errlen);
}

int moe_engine_check(engine_t *e, const char *who)
{
    char last[512] = "";
    uint64_t n;

    if (strcmp(e->vt->name, "vulkan") != 0) /* the reference has no validation layer */
        return 0;
    n = engine_vk_validation_messages(e, last, sizeof(last));
    if (n == 0)
        return 0;
    fprintf(stderr, "%s: %" PRIu64 " Vulkan validation messages; the last: %s\n", who, n, last);
    return -EPROTO;
}

void moe_engine_usage(FILE *f, bool reference, const char *ctx_default)
{
    if (reference)
        fprintf(f, "  --engine E          vulkan (default) or reference (the CPU reference in\n"
                   "                      float32: small models, for checking)\n");
    fprintf(f,
            "  --device X          Vulkan device: index, UUID or name substring (default:\n"
            "                      discrete, then integrated, then CPU)\n"
            "  --gpu-cache BYTES   GPU memory for experts, K/M/G suffixes (default 0: every\n"
            "                      expert if they fit, else what fits)\n"
            "  --host-cache BYTES  host RAM for the second expert tier (default 0: none)\n"
            "  --ctx N             positions per sequence (default: %s)\n"
            "  --no-prefetch       do not read the next layer's likely experts ahead\n"
            "  --cache-policy P    expert eviction: lru or lfru (default, frequency-aware)\n"
            "  --io-depth N        expert reads in flight (default 64)\n"
            "  --cache-dir DIR     keep the Vulkan pipeline cache in DIR (default: none)\n"
            "  (these mean what the same settings of moed.conf(5) mean)\n",
            ctx_default);
}

/* Draws "loading  42% [############                  ] 120.3/286.0 MiB 1.2 s" over itself,
 * at most ten times a second (and always the end): a terminal is slow to scroll. */
static void progress_draw(void *userdata, uint64_t done, uint64_t total)
{
    moe_progress_t *b = userdata;
    const int width = 30;
    int permille = total && done < total ? (int)(done * 1000 / total) : 1000;
    double t = now_s();
    char bar[32];

    if (permille == b->shown || (permille < 1000 && b->shown >= 0 && t - b->t_drawn < 0.1))
        return;
    b->shown = permille;
    b->t_drawn = t;
    for (int i = 0; i < width; i++)
        bar[i] = i < permille * width / 1000 ? '#' : ' ';
    bar[width] = '\0';
    fprintf(stderr, "\rmoe: loading %3d%% [%s] %.1f/%.1f MiB %.1f s", permille / 10, bar,
            (double)done / 1048576.0, (double)total / 1048576.0, t - b->t0);
    fflush(stderr);
}

int moe_engine_open(moe_engine_opts_t *o, const model_t *m, const char *path, uint32_t n_ctx,
                    uint32_t n_seq, uint32_t n_batch, uint64_t gpu_cache, engine_t **ret, char *err,
                    size_t errlen)
{
    if (o->st.engine == SETTINGS_ENGINE_REFERENCE)
        return engine_ref_new(m, path, n_ctx, n_seq, ret, err, errlen);
    const engine_vk_config_t cfg = {
        .model = m,
        .path = path,
        .device = o->st.device,
        .cache_dir = o->cache_dir_set ? o->st.cache_dir : NULL,
        .validation = -1,
        .n_ctx = n_ctx,
        .n_seq_max = n_seq,
        .n_batch = n_batch,
        .gpu_cache_bytes = gpu_cache != UINT64_MAX ? gpu_cache : o->st.gpu_cache,
        .host_cache_bytes = o->st.host_cache,
        .policy = (int)o->st.cache_policy,
        .io_depth = o->st.io_depth,
        .io_backend = (int)o->st.io_backend,
        .io_buffered = !o->st.io_direct,
        .no_prefetch = !o->st.prefetch,
        .progress = o->bar.on ? progress_draw : NULL,
        .progress_userdata = &o->bar,
    };
    o->bar.shown = -1;
    o->bar.t0 = now_s();
    int r = engine_vk_new(&cfg, ret, err, errlen);
    if (o->bar.shown >= 0) /* end the bar's line; later draws (none expected) start afresh */
        fputc('\n', stderr);
    o->bar.shown = -1;
    return r;
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

/* Prefills prompt into sequence seq of e, then generates up to n_gen tokens into steps
 * (n_gen entries), stopping after an end-of-generation token when tok is given. The prompt
 * goes in steps of up to n_batch entries; only its last entry asks for logits (the
 * scheduler's convention). *ret_n: steps written. */
static int run_generate(engine_t *e, uint32_t seq, const int32_t *prompt, size_t n_prompt,
                        size_t n_batch, size_t n_gen, run_sampler_t *sm, const tokenizer_t *tok,
                        run_emit_fn emit, void *userdata, ref_step_t *steps, size_t *ret_n,
                        run_stats_t *stats)
{
    float *logits = malloc((size_t)e->n_vocab * sizeof(float));
    engine_entry_t *en = calloc(n_batch, sizeof(*en));
    size_t n = 0;
    double t0 = now_s(), t1;
    int r = logits && en ? 0 : -ENOMEM;

    // prefill: the prompt in batches, logits for its last position only
    for (size_t p = 0; p < n_prompt && r == 0;) {
        size_t k = n_prompt - p < n_batch ? n_prompt - p : n_batch;

        for (size_t i = 0; i < k; i++, p++)
            en[i] = (engine_entry_t){
                .seq = seq, .token = prompt[p], .pos = (uint32_t)p, .logits = p + 1 == n_prompt};
        r = engine_step(e, en, k, logits);
    }
    t1 = now_s();
    // decode: pick from the last logits, report, feed back one entry per step
    while (r == 0 && n < n_gen) {
        ref_step_t *st = &steps[n];

        ref_top_k(logits, e->n_vocab, REF_TOPK, st->top_id, st->top_logit);
        st->id = sample(sm, logits, e->n_vocab, st->top_id[0]);
        n++;
        if (emit && (r = emit(userdata, st)) < 0)
            break;
        if (tok && tokenizer_is_eog(tok, st->id))
            break;
        if (n < n_gen) {
            en[0] = (engine_entry_t){
                .seq = seq, .token = st->id, .pos = (uint32_t)(n_prompt + n - 1), .logits = true};
            r = engine_step(e, en, 1, logits);
        }
    }
    free(en);
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
    moe_engine_opts_t eng;
} run_opts_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: moe run --model FILE (--prompt TEXT | --prompt-ids 1,2,3) -n N [OPTIONS]\n"
               "\n"
               "Generates N tokens from the prompt on the Vulkan engine (experts streamed from\n"
               "the file on demand) and streams the text, then prints tokens/s and the expert\n"
               "cache's figures on stderr. While the resident weights load, a progress bar is\n"
               "drawn when stderr is a terminal.\n"
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
               "  --ignore-eos        do not stop at end-of-generation tokens\n");
    moe_engine_usage(f, true, "the prompt's length + N");
    fprintf(f, "  -h, --help          this text\n"
               "\n"
               "With MOE_VK_VALIDATION=1 in the environment the Vulkan validation layer is on and\n"
               "any message it gives fails the run (exit status 1).\n");
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
        MOE_ENGINE_LONGOPTS,
        {0},
    };
    bool have_n = false;
    char err[256];
    uint64_t v;
    int c, idx = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "m:n:h", longopts, &idx)) != -1) {
        switch (c) {
        case MOE_OPT_ENGINE:
            if (moe_engine_opt(&o->eng, longopts[idx].name, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "moe run: %s\n", err);
                return -EINVAL;
            }
            break;
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

/* Tokens/s of both phases, and for the Vulkan engine what the expert cache did. */
static void print_stats(const run_stats_t *st, engine_t *e)
{
    engine_stats_t es;

    fprintf(stderr,
            "moe run: prompt %zu tokens in %.3f s (%.2f tokens/s), generated %zu tokens in "
            "%.3f s (%.2f tokens/s) [%s]\n",
            st->n_prompt, st->prefill_s,
            st->prefill_s > 0 ? (double)st->n_prompt / st->prefill_s : 0.0, st->n_gen, st->decode_s,
            st->decode_s > 0 ? (double)st->n_gen / st->decode_s : 0.0, e->device);
    engine_stats(e, &es);
    if (es.expert_hits + es.expert_misses == 0)
        return;
    fprintf(stderr,
            "moe run: experts: %.1f%% hits (%" PRIu64 " of %" PRIu64 "), %" PRIu64
            " from the host tier, %.1f MiB streamed, prefetch %" PRIu64 " issued, %" PRIu64
            " used, %" PRIu64 " waves; waited %.3f s for reads, %.3f s for the device\n",
            100.0 * (double)es.expert_hits / (double)(es.expert_hits + es.expert_misses),
            es.expert_hits, es.expert_hits + es.expert_misses, es.expert_host_hits,
            (double)es.bytes_streamed / 1048576.0, es.prefetch_issued, es.prefetch_used, es.waves,
            (double)es.read_wait_ns * 1e-9, (double)es.gpu_wait_ns * 1e-9);
}

/* The engine for one sequence of n positions, steps of up to n_batch entries. 0, or the
 * exit status. */
static int open_engine(run_opts_t *o, const model_t *m, size_t n, size_t n_batch, engine_t **ret)
{
    char err[512] = "";
    uint32_t n_ctx = o->eng.ctx_set ? o->eng.st.ctx : (uint32_t)(n > 16 ? n : 16);
    int r;

    if (n > n_ctx) {
        fprintf(stderr,
                "moe run: the prompt and -n need %zu positions, more than --ctx %" PRIu32 "\n", n,
                n_ctx);
        return 2;
    }
    r = moe_engine_open(&o->eng, m, o->model, n_ctx, 1, (uint32_t)n_batch, UINT64_MAX, ret, err,
                        sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe run: %s: %s engine: %s%s%s\n", o->model,
                o->eng.st.engine == SETTINGS_ENGINE_REFERENCE ? "reference" : "Vulkan", err,
                err[0] ? ": " : "", strerror(-r));
        return 1;
    }
    return 0;
}

int moe_cmd_run(int argc, char **argv)
{
    run_opts_t o = {0};
    char err[512] = "";
    gguf_t *g = NULL;
    model_t *m = NULL;
    engine_t *e = NULL;
    tokenizer_t *tok = NULL;
    int32_t *prompt = NULL;
    ref_step_t *steps = NULL;
    size_t n_prompt = 0, n_steps = 0, n_batch;
    uint32_t seq = 0;
    run_stats_t stats;
    int r, status = 1;

    if (moe_engine_opts_init(&o.eng) < 0) {
        fprintf(stderr, "moe run: out of memory\n");
        return 1;
    }
    r = parse_args(argc, argv, &o);
    if (r != 0) {
        status = r > 0 ? 0 : 2;
        goto out;
    }

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

    n_batch = n_prompt < RUN_MAX_BATCH ? n_prompt : RUN_MAX_BATCH;
    status = open_engine(&o, m, n_prompt + o.n_gen, n_batch, &e);
    if (status != 0)
        goto out;
    status = 1;
    r = engine_seq_new(e, &seq);
    steps = calloc(o.n_gen ? o.n_gen : 1, sizeof(*steps));
    if (r < 0 || !steps) {
        fprintf(stderr, "moe run: cannot allocate a sequence of %zu positions: %s\n",
                n_prompt + o.n_gen, strerror(r < 0 ? -r : ENOMEM));
        goto out;
    }
    run_sampler_t sm = {.temp = o.temp, .state = o.seed};

    r = run_generate(e, seq, prompt, n_prompt, n_batch, o.n_gen, &sm, o.ignore_eos ? NULL : tok,
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
    print_stats(&stats, e);
    status = moe_engine_check(e, "moe run") < 0 ? 1 : 0;
out:
    free(steps);
    free(prompt);
    e = engine_free(e);
    tokenizer_free(tok);
    model_free(m);
    gguf_free(g);
    moe_engine_opts_clear(&o.eng);
    return status;
}
