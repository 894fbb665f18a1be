/* moe bench decode: the engine's decode and prefill speed next to its bound, all measured
 * in one run (these machines are noisy; a figure from another run is not a yardstick).
 *
 * Four measurements:
 *  1. streaming: the engine with the caches asked for (--gpu-cache, --host-cache), after
 *     a warm-up on another prompt (pipelines compiled, the cache as a used engine's),
 *     prefills B sequences of P synthetic prompt ids (one step per sequence, logits for
 *     its last entry only, as the scheduler does), then decodes N steps of B entries,
 *     greedily. The figures: decode and prefill tokens/s, expert hit rate, bytes streamed
 *     per token, prefetch accuracy, and where the time went (read_wait_ns, gpu_wait_ns).
 *  2. resident: the same on a second engine whose GPU cache holds every expert. Decoding
 *     is deterministic, so a warm pass on a prompt touches exactly the experts its timed
 *     pass uses: the timed pass reads nothing (resident_misses says so) and is
 *     compute-bound. 1 and 2 alternate in rounds (--rounds, default 3), each round on its
 *     own prompt, so load from other processes falls on both sides alike; both chose
 *     the same tokens (tokens_equal).
 *  3. the copy kernel (vkc_cmd_copy) on the same device, as `moe bench kernels` times it.
 *  4. the drive: `moe bench io` on the model file (fio, expert-sized random reads at the
 *     engine's io depth), run as a child of this process; without fio our own libmoeio
 *     bandwidth from the same child, named as such.
 *
 * bound = min(compute tokens/s, I/O bandwidth / bytes streamed per token); ratio = decode
 * tokens/s / bound. active_bw_ratio = active weight bytes per token x resident tokens/s /
 * copy bytes/s: how close decode comes to moving its weights at copy speed. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "gpu/vkc.h"
#include "iouring/moeio.h"
#include "model/gguf.h"
#include "model/model.h"
#include "moe.h"

extern char **environ;

#define DEC_MAX_TOKENS 4096
#define DEC_MAX_PROMPT 512
#define DEC_MAX_BATCH  64
#define DEC_MAX_ROUNDS 10
#define DEC_COPY_BYTES (64ull << 20)

typedef struct dec_opts {
    const char *path;
    uint32_t tokens, prompt, batch, rounds;
    double io_seconds;
    bool json, no_fio;
    moe_engine_opts_t eng;
} dec_opts_t;

/* What one timed pass of the engine did. Stats are differences over the phase. */
typedef struct dec_pass {
    double prefill_s, decode_s;
    uint64_t prefill_tokens, decode_tokens, decode_steps;
    engine_stats_t pre, dec;
    int32_t *ids; /* [batch][tokens]: the tokens fed in decode, for comparing passes */
} dec_pass_t;

typedef struct dec_io {
    double bps;         /* bytes/s; 0: unknown */
    const char *source; /* "fio" or "libmoeio" */
} dec_io_t;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moe bench decode MODEL [--tokens N] [--prompt P] [--batch B]\n"
            "                              [--gpu-cache BYTES] [--host-cache BYTES] [OPTIONS]\n"
            "                              [--json]\n"
            "\n"
            "Prefills B sequences of P synthetic prompt ids and decodes N steps greedily on the\n"
            "Vulkan engine with the given caches, then again with every expert resident (the\n"
            "compute bound), times the copy kernel on the same device and the drive (fio on\n"
            "the model file, as `moe bench io`), and prints decode and prefill tokens/s, the\n"
            "expert hit rate, bytes streamed per token, prefetch accuracy and the ratio of\n"
            "decode tokens/s to the bound min(compute, I/O bandwidth / streamed bytes per\n"
            "token).\n"
            "\n"
            "  --tokens N          decode steps (default 32; B tokens each)\n"
            "  --prompt P          prompt ids per sequence (default 32, at most %u)\n"
            "  --batch B           sequences decoded together (default 1, at most %u);\n"
            "                      tokens/s are the aggregate\n"
            "  --rounds R          rounds of a streaming and a resident pass, alternating\n"
            "                      (default 3, at most %u); ratio_median is over rounds\n"
            "  --io-seconds S      how long fio reads (default 2)\n"
            "  --no-fio            use libmoeio's own bandwidth for the I/O bound\n",
            DEC_MAX_PROMPT, DEC_MAX_BATCH, DEC_MAX_ROUNDS);
    moe_engine_usage(f, false, "prompt + tokens + 1");
    fprintf(f, "  --json              one object: decode_tokens_per_s, prefill_tokens_per_s,\n"
               "                      hit_rate, bytes_streamed_per_token, prefetch_accuracy,\n"
               "                      compute_tokens_per_s, io_bytes_per_s, io_source,\n"
               "                      io_tokens_per_s, bound_tokens_per_s, bound, ratio,\n"
               "                      active_bytes_per_token, copy_bytes_per_s, active_bw_ratio,\n"
               "                      read_wait_ns, gpu_wait_ns, ... (moe(1) lists them all)\n");
}

static int parse_count(const char *s, uint32_t max, uint32_t *ret)
{
    uint64_t v;

    if (settings_parse_u64(s, false, &v) < 0 || v < 1 || v > max)
        return -ERANGE;
    *ret = (uint32_t)v;
    return 0;
}

/* 0, 1 (--help printed) or -EINVAL (a message printed). */
static int parse_args(int argc, char **argv, dec_opts_t *o)
{
    enum {
        OPT_TOKENS = 256,
        OPT_PROMPT,
        OPT_BATCH,
        OPT_IO_SECONDS,
        OPT_NO_FIO,
        OPT_JSON,
        OPT_ROUNDS
    };
    static const struct option longopts[] = {
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"io-seconds", required_argument, NULL, OPT_IO_SECONDS},
        {"no-fio", no_argument, NULL, OPT_NO_FIO},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        MOE_ENGINE_LONGOPTS,
        {0},
    };
    char err[256];
    int c, idx = 0, r = 0;

    optind = 1;
    while (r == 0 && (c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        switch (c) {
        case OPT_TOKENS:
            r = parse_count(optarg, DEC_MAX_TOKENS, &o->tokens);
            break;
        case OPT_PROMPT:
            r = parse_count(optarg, DEC_MAX_PROMPT, &o->prompt);
            break;
        case OPT_BATCH:
            r = parse_count(optarg, DEC_MAX_BATCH, &o->batch);
            break;
        case OPT_IO_SECONDS: {
            char *end;
            errno = 0;
            o->io_seconds = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(o->io_seconds >= 0.5 && o->io_seconds <= 60))
                r = -ERANGE;
            break;
        }
        case OPT_ROUNDS:
            r = parse_count(optarg, DEC_MAX_ROUNDS, &o->rounds);
            break;
        case OPT_NO_FIO:
            o->no_fio = true;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case MOE_OPT_ENGINE:
            if (!strcmp(longopts[idx].name, "engine") && strcmp(optarg, "vulkan")) {
                fprintf(stderr, "moe bench decode: measures the Vulkan engine; no --engine\n");
                return -EINVAL;
            }
            if (moe_engine_opt(&o->eng, longopts[idx].name, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "moe bench decode: %s\n", err);
                return -EINVAL;
            }
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
        if (r < 0)
            fprintf(stderr, "moe bench decode: bad value for --%s: '%s'\n", longopts[idx].name,
                    optarg);
    }
    if (r < 0)
        return r;
    if (optind + 1 != argc) {
        fprintf(stderr, "moe bench decode: wants one MODEL\n");
        usage(stderr);
        return -EINVAL;
    }
    o->path = argv[optind];
    if (o->eng.ctx_set && o->eng.st.ctx < o->prompt + o->tokens + 1) {
        fprintf(stderr, "moe bench decode: --ctx must be at least prompt + tokens + 1 = %u\n",
                o->prompt + o->tokens + 1);
        return -EINVAL;
    }
    return 0;
}

/* ---- one pass ---- */

static void stats_sub(engine_stats_t *d, const engine_stats_t *a, const engine_stats_t *b)
{
    *d = (engine_stats_t){
        .steps = a->steps - b->steps,
        .tokens = a->tokens - b->tokens,
        .expert_hits = a->expert_hits - b->expert_hits,
        .expert_misses = a->expert_misses - b->expert_misses,
        .bytes_streamed = a->bytes_streamed - b->bytes_streamed,
        .expert_host_hits = a->expert_host_hits - b->expert_host_hits,
        .prefetch_issued = a->prefetch_issued - b->prefetch_issued,
        .prefetch_used = a->prefetch_used - b->prefetch_used,
        .guesses = a->guesses - b->guesses,
        .guesses_right = a->guesses_right - b->guesses_right,
        .waves = a->waves - b->waves,
        .io_errors = a->io_errors - b->io_errors,
        .read_wait_ns = a->read_wait_ns - b->read_wait_ns,
        .gpu_wait_ns = a->gpu_wait_ns - b->gpu_wait_ns,
    };
    // how often the guess was right, counted by the engine per guessed expert (issued vs
    // used counts straddle the window: a guess issued before it can be used inside it)
    d->prefetch_accuracy = d->guesses ? (double)d->guesses_right / (double)d->guesses : -1;
}

static int32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;

    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

/* Prefill and greedy decode of o->batch sequences on e for `tokens` steps, timed; fills p
 * (p->ids allocated by the caller). `prompt_seed` picks the synthetic prompts. Sequences
 * are freed at the end, so a pass can be repeated. */
static int run_pass(engine_t *e, const dec_opts_t *o, uint64_t prompt_seed, uint32_t tokens,
                    dec_pass_t *p)
{
    const uint32_t B = o->batch, V = e->n_vocab;
    uint32_t seqs[DEC_MAX_BATCH];
    uint32_t n_seq = 0;
    float *logits = malloc((size_t)B * V * sizeof(float));
    engine_entry_t *en = calloc(o->prompt > B ? o->prompt : B, sizeof(*en));
    engine_stats_t s0, s1, s2;
    int r = logits && en ? 0 : -ENOMEM;

    while (r == 0 && n_seq < B)
        r = engine_seq_new(e, &seqs[n_seq++]);
    if (r < 0)
        n_seq--;
    engine_stats(e, &s0);
    double t0 = now_s();
    // prefill: one step per sequence, its prompt ids synthetic but different per sequence
    for (uint32_t b = 0; r == 0 && b < B; b++) {
        uint64_t x = 0x9e3779b97f4a7c15ull * (b + 1) + prompt_seed;
        for (uint32_t i = 0; i < o->prompt; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            en[i] = (engine_entry_t){
                .seq = seqs[b], .token = (int32_t)(x % V), .pos = i, .logits = i + 1 == o->prompt};
        }
        r = engine_step(e, en, o->prompt, logits + (size_t)b * V);
    }
    double t1 = now_s();
    engine_stats(e, &s1);
    // decode: every sequence feeds back its arg-max, all in one step
    for (uint32_t t = 0; r == 0 && t < tokens; t++) {
        for (uint32_t b = 0; b < B; b++) {
            int32_t id = argmax(logits + (size_t)b * V, V);
            p->ids[(size_t)b * o->tokens + t] = id;
            en[b] =
                (engine_entry_t){.seq = seqs[b], .token = id, .pos = o->prompt + t, .logits = true};
        }
        r = engine_step(e, en, B, logits);
    }
    double t2 = now_s();
    engine_stats(e, &s2);
    for (uint32_t b = 0; b < n_seq; b++)
        engine_seq_free(e, seqs[b]);
    free(en);
    free(logits);
    if (r < 0)
        return r;
    p->prefill_s = t1 - t0;
    p->decode_s = t2 - t1;
    p->prefill_tokens = (uint64_t)B * o->prompt;
    p->decode_tokens = (uint64_t)B * tokens;
    p->decode_steps = tokens;
    stats_sub(&p->pre, &s1, &s0);
    stats_sub(&p->dec, &s2, &s1);
    return 0;
}

/* GPU cache bytes that hold every expert: a slot is the expert widened to 4 KiB windows
 * per part, rounded to the device's import alignment (64 KiB covers the devices seen). */
static uint64_t all_experts_bytes(const model_t *m)
{
    uint64_t slot = (m->expert_bytes + MODEL_EXPERT_PARTS * 2 * 4096 + 65535) & ~65535ull;

    return (uint64_t)m->hp.n_layer * m->hp.n_expert * slot;
}

/* Opens the engine for the bench (gpu_cache as moe_engine_open takes it). The resident one
 * falls back to what fits when every expert does not. 0 or -errno, reported. */
static int bench_open(dec_opts_t *o, const model_t *m, uint64_t gpu_cache, engine_t **ret)
{
    char err[512] = "";
    uint32_t n_batch = o->prompt > o->batch ? o->prompt : o->batch;
    uint32_t n_ctx = o->eng.ctx_set ? o->eng.st.ctx : o->prompt + o->tokens + 1;
    int r = moe_engine_open(&o->eng, m, o->path, n_ctx, o->batch, n_batch, gpu_cache, ret, err,
                            sizeof(err));

    if (r == -ENOMEM && gpu_cache != UINT64_MAX && gpu_cache != 0) {
        fprintf(stderr,
                "moe bench decode: every expert does not fit the device (%s); the "
                "\"resident\" engine gets what fits (see resident_misses)\n",
                err);
        r = moe_engine_open(&o->eng, m, o->path, n_ctx, o->batch, n_batch, 0, ret, err,
                            sizeof(err));
    }
    if (r < 0)
        fprintf(stderr, "moe bench decode: %s: Vulkan engine: %s%s%s\n", o->path, err,
                err[0] ? ": " : "", strerror(-r));
    return r;
}

static void stats_add(engine_stats_t *a, const engine_stats_t *d)
{
    a->steps += d->steps, a->tokens += d->tokens;
    a->expert_hits += d->expert_hits, a->expert_misses += d->expert_misses;
    a->bytes_streamed += d->bytes_streamed, a->expert_host_hits += d->expert_host_hits;
    a->prefetch_issued += d->prefetch_issued, a->prefetch_used += d->prefetch_used;
    a->guesses += d->guesses, a->guesses_right += d->guesses_right;
    a->waves += d->waves, a->io_errors += d->io_errors;
    a->read_wait_ns += d->read_wait_ns, a->gpu_wait_ns += d->gpu_wait_ns;
    a->prefetch_accuracy = a->guesses ? (double)a->guesses_right / (double)a->guesses : -1;
}

/* Adds pass p's times, counts and stats to acc (acc->ids stays). */
static void pass_add(dec_pass_t *acc, const dec_pass_t *p)
{
    acc->prefill_s += p->prefill_s, acc->decode_s += p->decode_s;
    acc->prefill_tokens += p->prefill_tokens, acc->decode_tokens += p->decode_tokens;
    acc->decode_steps += p->decode_steps;
    stats_add(&acc->pre, &p->pre);
    stats_add(&acc->dec, &p->dec);
}

/* ---- the copy kernel ---- */

/* Bytes copied per second by vkc_cmd_copy over 64 MiB on the device o names, best of
 * batches of 4 after a warm-up batch (the machine is shared: others only slow a batch). */
static int bench_copy(const dec_opts_t *o, double *ret_bps)
{
    vkc_options_t opt = {.device = o->eng.st.device, .validation = -1};
    vkc_ctx_t *ctx = NULL;
    vkc_cmd_t *cmd = NULL;
    vkc_buffer_t *s = NULL, *d = NULL;
    char err[256] = "";
    double best = 1e30, spent = 0;
    int r = vkc_ctx_new(&opt, &ctx, err, sizeof(err));

    if (r == 0)
        r = vkc_cmd_new(ctx, &cmd);
    if (r == 0)
        r = vkc_buffer_new(ctx, VKC_MEM_DEVICE, DEC_COPY_BYTES, &s);
    if (r == 0)
        r = vkc_buffer_new(ctx, VKC_MEM_DEVICE, DEC_COPY_BYTES, &d);
    for (int round = 0; r == 0 && (round < 3 || spent < 0.3); round++) {
        if ((r = vkc_cmd_begin(cmd)) < 0)
            break;
        for (int i = 0; r == 0 && i < 4; i++) {
            r = vkc_cmd_copy(cmd, (vkc_view_t){s, 0}, (vkc_view_t){d, 0}, DEC_COPY_BYTES);
            vkc_cmd_barrier(cmd, "the next repetition writes the same output");
        }
        double t0 = now_s();
        if (r == 0)
            r = vkc_cmd_submit_wait(cmd);
        double t = now_s() - t0;
        if (round > 0) { /* round 0 warms caches and compiles the pipeline */
            spent += t;
            best = t < best ? t : best;
        }
    }
    vkc_buffer_free(d);
    vkc_buffer_free(s);
    vkc_cmd_free(cmd);
    if (r == 0 && vkc_ctx_validation_messages(ctx, err, sizeof(err)) > 0)
        r = -EPROTO; /* the validation layer is on (MOE_VK_VALIDATION=1) and complained */
    vkc_ctx_free(ctx);
    if (r < 0) {
        fprintf(stderr, "moe bench decode: copy kernel: %s\n", err[0] ? err : strerror(-r));
        return r;
    }
    *ret_bps = 4.0 * (double)DEC_COPY_BYTES / best;
    return 0;
}

/* ---- the drive ---- */

/* The number after "key": in a JSON text; -ENOENT when absent or null. */
static int json_number(const char *text, const char *key, double *ret)
{
    char pat[64];
    const char *p;
    char *end;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(text, pat);
    if (!p)
        return -ENOENT;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno)
        return -ENOENT;
    *ret = v;
    return 0;
}

/* Runs `moe bench io PATH --json` (this very binary) and reads fio's bandwidth from it, or
 * libmoeio's when fio did not run. */
static int bench_drive(const dec_opts_t *o, dec_io_t *ret)
{
    char a_depth[32], a_secs[32], out[16384];
    unsigned depth = o->eng.st.io_depth < MOEIO_DEPTH_MAX ? o->eng.st.io_depth : MOEIO_DEPTH_MAX;
    char *argv[] = {"moe",    "bench",     "io",   (char *)o->path,
                    "--json", "--rounds",  "1",    "--depth",
                    a_depth,  "--seconds", a_secs, o->no_fio ? "--no-fio" : NULL,
                    NULL};
    posix_spawn_file_actions_t fa;
    size_t len = 0;
    int pfd[2], status = 0, r;
    pid_t pid;

    snprintf(a_depth, sizeof(a_depth), "%u", depth);
    snprintf(a_secs, sizeof(a_secs), "%.1f", o->io_seconds);
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
    r = -posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (r < 0) {
        close(pfd[0]);
        return r;
    }
    for (;;) {
        ssize_t n = read(pfd[0], out + len, sizeof(out) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    close(pfd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -EIO;
    *ret = (dec_io_t){.source = "fio"};
    if (json_number(out, "fio_bytes_per_s", &ret->bps) < 0) {
        ret->source = "libmoeio";
        if (json_number(out, "bytes_per_s", &ret->bps) < 0)
            return -EIO;
    }
    return 0;
}

/* ---- the report ---- */

typedef struct dec_report {
    const dec_opts_t *o;
    const model_t *m;
    char device[128];
    dec_pass_t st, res; /* streaming, resident: summed over the rounds */
    struct {
        double st_tps, res_tps, st_bytes_per_token;
    } round[DEC_MAX_ROUNDS];
    uint64_t gpu_cache_resident;
    uint64_t peak_rss; /* after the first streaming pass, before the resident engine opens */
    dec_io_t io;
    double copy_bps;
    /* derived */
    double decode_tps, prefill_tps, compute_tps, compute_prefill_tps;
    double hit_rate, host_hit_rate, streamed_per_token, io_tps, bound_tps, ratio, ratio_median;
    double active_per_token, active_bps, active_bw_ratio;
    const char *bound;
    bool tokens_equal;
} dec_report_t;

static double per_s(double n, double s)
{
    return s > 0 ? n / s : 0;
}

/* Weight bytes one decode step reads besides the experts: every resident matrix once
 * (shared by the step's entries), but of the token embedding only each entry's row unless
 * the output reuses it. */
static double dense_bytes(const model_t *m, double steps, double tokens)
{
    const gguf_tensor_t *te = m->tok_embd;
    double all = (double)m->resident_bytes;

    if (m->hp.tied_output || !te)
        return all * steps;
    return (all - (double)te->size) * steps + (double)te->size / m->hp.n_vocab * tokens;
}

static void report_derive(dec_report_t *R)
{
    const model_t *m = R->m;
    const engine_stats_t *d = &R->st.dec, *rd = &R->res.dec;
    uint64_t acq = d->expert_hits + d->expert_misses, racq = rd->expert_hits + rd->expert_misses;
    double expert_avg =
        (double)m->expert_bytes_total / ((double)m->hp.n_layer * (double)m->hp.n_expert);

    R->decode_tps = per_s((double)R->st.decode_tokens, R->st.decode_s);
    R->prefill_tps = per_s((double)R->st.prefill_tokens, R->st.prefill_s);
    R->compute_tps = per_s((double)R->res.decode_tokens, R->res.decode_s);
    R->compute_prefill_tps = per_s((double)R->res.prefill_tokens, R->res.prefill_s);
    R->hit_rate = acq ? (double)d->expert_hits / (double)acq : 1.0;
    R->host_hit_rate = d->expert_misses ? (double)d->expert_host_hits / d->expert_misses : 0;
    R->streamed_per_token = (double)d->bytes_streamed / (double)R->st.decode_tokens;
    R->io_tps = R->streamed_per_token > 0 && R->io.bps > 0 ? R->io.bps / R->streamed_per_token : 0;
    R->bound = R->io_tps > 0 && R->io_tps < R->compute_tps ? "io" : "compute";
    R->bound_tps = !strcmp(R->bound, "io") ? R->io_tps : R->compute_tps;
    R->ratio = R->bound_tps > 0 ? R->decode_tps / R->bound_tps : 0;
    // the same per round (each round runs both sides back to back), and their median
    double ratios[DEC_MAX_ROUNDS];
    uint32_t n = R->o->rounds;
    for (uint32_t k = 0; k < n; k++) {
        double io_k = R->round[k].st_bytes_per_token > 0 && R->io.bps > 0
                          ? R->io.bps / R->round[k].st_bytes_per_token
                          : 0;
        double bound_k = io_k > 0 && io_k < R->round[k].res_tps ? io_k : R->round[k].res_tps;
        ratios[k] = bound_k > 0 ? R->round[k].st_tps / bound_k : 0;
        for (uint32_t j = k; j > 0 && ratios[j] < ratios[j - 1]; j--) { /* insertion sort */
            double t = ratios[j];
            ratios[j] = ratios[j - 1], ratios[j - 1] = t;
        }
    }
    R->ratio_median = n % 2 ? ratios[n / 2] : (ratios[n / 2 - 1] + ratios[n / 2]) / 2;
    // what the resident decode moved: dense weights per step plus each acquired expert
    if (!racq) /* an engine that counts no acquisitions: top-k per layer per entry */
        racq = (uint64_t)m->hp.n_layer * m->hp.n_expert_used * R->res.decode_tokens;
    R->active_per_token =
        (dense_bytes(m, (double)R->res.decode_steps, (double)R->res.decode_tokens) +
         (double)racq * expert_avg) /
        (double)R->res.decode_tokens;
    R->active_bps = R->active_per_token * R->compute_tps;
    R->active_bw_ratio = R->copy_bps > 0 ? R->active_bps / R->copy_bps : 0;
}

/* A number, or null when it is not known (JSON has no infinity). */
static void json_num(const char *key, double v, bool known)
{
    if (known && isfinite(v))
        printf(",\"%s\":%.6g", key, v);
    else
        printf(",\"%s\":null", key);
}

static void report_json(const dec_report_t *R)
{
    const dec_opts_t *o = R->o;
    const engine_stats_t *d = &R->st.dec;

    printf("{\"bench\":\"decode\",\"model\":");
    moe_json_str(o->path);
    printf(",\"arch\":\"%s\",\"device\":", model_arch_name(R->m->arch));
    moe_json_str(R->device);
    printf(",\"batch\":%u,\"prompt\":%u,\"tokens\":%u,\"gpu_cache_bytes\":%" PRIu64
           ",\"host_cache_bytes\":%" PRIu64 ",\"expert_bytes_total\":%" PRIu64
           ",\"resident_bytes\":%" PRIu64 ",\"prefetch\":%s",
           o->batch, o->prompt, o->tokens, o->eng.st.gpu_cache, o->eng.st.host_cache,
           R->m->expert_bytes_total, R->m->resident_bytes, o->eng.st.prefetch ? "true" : "false");
    json_num("decode_tokens_per_s", R->decode_tps, true);
    json_num("prefill_tokens_per_s", R->prefill_tps, true);
    json_num("decode_seconds", R->st.decode_s, true);
    json_num("prefill_seconds", R->st.prefill_s, true);
    json_num("hit_rate", R->hit_rate, true);
    json_num("host_hit_rate", R->host_hit_rate, true);
    printf(",\"expert_hits\":%" PRIu64 ",\"expert_misses\":%" PRIu64
           ",\"expert_host_hits\":%" PRIu64 ",\"bytes_streamed\":%" PRIu64,
           d->expert_hits, d->expert_misses, d->expert_host_hits, d->bytes_streamed);
    json_num("bytes_streamed_per_token", R->streamed_per_token, true);
    json_num("prefetch_accuracy", d->prefetch_accuracy, d->guesses > 0);
    printf(",\"prefetch_issued\":%" PRIu64 ",\"prefetch_used\":%" PRIu64 ",\"waves\":%" PRIu64
           ",\"read_wait_ns\":%" PRIu64 ",\"gpu_wait_ns\":%" PRIu64,
           d->prefetch_issued, d->prefetch_used, d->waves, d->read_wait_ns, d->gpu_wait_ns);
    json_num("compute_tokens_per_s", R->compute_tps, true);
    json_num("compute_prefill_tokens_per_s", R->compute_prefill_tps, true);
    printf(",\"resident_gpu_cache_bytes\":%" PRIu64 ",\"resident_misses\":%" PRIu64
           ",\"resident_gpu_wait_ns\":%" PRIu64,
           R->gpu_cache_resident, R->res.dec.expert_misses, R->res.dec.gpu_wait_ns);
    printf(",\"peak_rss_bytes\":%" PRIu64, R->peak_rss);
    json_num("io_bytes_per_s", R->io.bps, R->io.bps > 0);
    printf(",\"io_source\":");
    if (R->io.source)
        moe_json_str(R->io.source);
    else
        printf("null");
    json_num("io_tokens_per_s", R->io_tps, R->io_tps > 0);
    json_num("bound_tokens_per_s", R->bound_tps, true);
    printf(",\"bound\":\"%s\"", R->bound);
    json_num("ratio", R->ratio, true);
    json_num("ratio_median", R->ratio_median, true);
    printf(",\"rounds\":%u", o->rounds);
    json_num("active_bytes_per_token", R->active_per_token, true);
    json_num("active_bytes_per_s", R->active_bps, true);
    json_num("copy_bytes_per_s", R->copy_bps, true);
    json_num("active_bw_ratio", R->active_bw_ratio, true);
    printf(",\"tokens_equal\":%s}\n", R->tokens_equal ? "true" : "false");
}

static void report_text(const dec_report_t *R)
{
    const dec_opts_t *o = R->o;
    const engine_stats_t *d = &R->st.dec;

    printf("moe bench decode: %s (%s, %.1f MiB of experts, %.1f MiB resident) on %s\n", o->path,
           model_arch_name(R->m->arch), (double)R->m->expert_bytes_total / 1048576.0,
           (double)R->m->resident_bytes / 1048576.0, R->device);
    printf("  streaming  gpu cache %.1f MiB, host cache %.1f MiB, prefetch %s, batch %u\n",
           (double)o->eng.st.gpu_cache / 1048576.0, (double)o->eng.st.host_cache / 1048576.0,
           o->eng.st.prefetch ? "on" : "off", o->batch);
    printf("    decode   %.2f tokens/s (%" PRIu64 " tokens in %.3f s), prefill %.2f tokens/s\n",
           R->decode_tps, R->st.decode_tokens, R->st.decode_s, R->prefill_tps);
    printf("    experts  hit rate %.3f (host tier %.3f of misses), %.2f MiB streamed per token, "
           "prefetch accuracy ",
           R->hit_rate, R->host_hit_rate, R->streamed_per_token / 1048576.0);
    if (d->guesses)
        printf("%.3f (%" PRIu64 " of %" PRIu64 " guessed experts routed to; %" PRIu64
               " read ahead)",
               d->prefetch_accuracy, d->guesses_right, d->guesses, d->prefetch_issued);
    else
        printf("n/a (no guesses)");
    printf(", %" PRIu64 " waves\n    waited   %.3f s for reads, %.3f s for the device\n", d->waves,
           (double)d->read_wait_ns * 1e-9, (double)d->gpu_wait_ns * 1e-9);
    printf("    memory   peak RSS %.1f MiB (on a unified-memory device the GPU tier is host RAM "
           "too)\n",
           (double)R->peak_rss / 1048576.0);
    printf("  resident   %.2f tokens/s decode, %.2f prefill (%" PRIu64 " misses in the timed "
           "pass)\n",
           R->compute_tps, R->compute_prefill_tps, R->res.dec.expert_misses);
    if (R->io.bps > 0)
        printf("  drive      %.1f MB/s (%s)%s", R->io.bps / 1e6, R->io.source,
               R->io_tps > 0 ? "" : ", nothing streamed: no I/O bound\n");
    else
        printf("  drive      not measured\n");
    if (R->io_tps > 0)
        printf(" -> %.2f tokens/s I/O-bound\n", R->io_tps);
    printf("  bound      %.2f tokens/s (%s); ratio %.3f (median of %u rounds %.3f)\n", R->bound_tps,
           R->bound, R->ratio, o->rounds, R->ratio_median);
    printf("  active     %.2f MiB/token x %.2f tokens/s = %.2f GB/s vs copy %.2f GB/s: %.3f\n",
           R->active_per_token / 1048576.0, R->compute_tps, R->active_bps / 1e9, R->copy_bps / 1e9,
           R->active_bw_ratio);
    if (!R->tokens_equal)
        printf("  note       the streaming and resident passes chose different tokens\n");
}

/* Measurements 1 and 2, side by side: after the streaming engine's warm-up, each round
 * runs a timed streaming pass and a resident one (a warm pass on the round's prompt, then
 * the timed pass) back to back, odd rounds resident first, so load from other processes
 * falls on both sides alike; each round has its own prompt. Fills R->st, R->res and
 * R->round. */
static int bench_rounds(dec_opts_t *o, const model_t *m, dec_report_t *R)
{
    engine_t *es = NULL, *er = NULL;
    dec_pass_t cur = {.ids = R->st.ids}, curr = {.ids = R->res.ids};
    struct rusage ru;
    int r = bench_open(o, m, UINT64_MAX, &es);

    if (r < 0)
        return r;
    snprintf(R->device, sizeof(R->device), "%s", es->device);
    R->tokens_equal = true;
    r = run_pass(es, o, 0x5eed, 2, &cur);
    for (uint32_t k = 0; r == 0 && k < o->rounds; k++) {
        for (int side = 0; r == 0 && side < 2; side++) {
            if ((side == 0) == (k % 2 == 0)) {
                if ((r = run_pass(es, o, k + 1, o->tokens, &cur)) < 0)
                    break;
                pass_add(&R->st, &cur);
                R->round[k].st_tps = per_s((double)cur.decode_tokens, cur.decode_s);
                R->round[k].st_bytes_per_token =
                    (double)cur.dec.bytes_streamed / (double)cur.decode_tokens;
                continue;
            }
            if (!er) { /* the streaming engine's peak, before the resident one adds its own */
                if (getrusage(RUSAGE_SELF, &ru) == 0)
                    R->peak_rss = (uint64_t)ru.ru_maxrss * 1024;
                if ((r = bench_open(o, m, R->gpu_cache_resident, &er)) < 0)
                    break;
            }
            r = run_pass(er, o, k + 1, o->tokens, &curr);
            if (r == 0)
                r = run_pass(er, o, k + 1, o->tokens, &curr);
            if (r < 0)
                break;
            pass_add(&R->res, &curr);
            R->round[k].res_tps = per_s((double)curr.decode_tokens, curr.decode_s);
        }
        // deterministic greedy decoding: both sides chose the same tokens for this prompt
        R->tokens_equal &=
            !memcmp(R->st.ids, R->res.ids, (size_t)o->batch * o->tokens * sizeof(int32_t));
    }
    if (r < 0)
        fprintf(stderr, "moe bench decode: engine step failed: %s\n", strerror(-r));
    if (r == 0)
        r = moe_engine_check(es, "moe bench decode");
    if (r == 0 && er)
        r = moe_engine_check(er, "moe bench decode");
    engine_free(er);
    engine_free(es);
    return r;
}

int moe_bench_decode(int argc, char **argv)
{
    dec_opts_t o = {.tokens = 32, .prompt = 32, .batch = 1, .rounds = 3, .io_seconds = 2};
    dec_report_t R = {.o = &o};
    char err[512] = "";
    gguf_t *g = NULL;
    model_t *m = NULL;
    int r, status = 1;

    if (moe_engine_opts_init(&o.eng) < 0)
        return 1;
    r = parse_args(argc, argv, &o);
    if (r != 0) {
        status = r > 0 ? 0 : 2;
        goto out;
    }
    r = gguf_open(o.path, &g, err, sizeof(err));
    if (r == 0)
        r = model_load(g, &m, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe bench decode: %s: %s\n", o.path, err[0] ? err : strerror(-r));
        goto out;
    }
    if (!m->hp.n_expert) {
        fprintf(stderr, "moe bench decode: %s has no experts\n", o.path);
        goto out;
    }
    R.m = m;
    R.st.ids = calloc((size_t)o.batch * o.tokens, sizeof(int32_t));
    R.res.ids = calloc((size_t)o.batch * o.tokens, sizeof(int32_t));
    if (!R.st.ids || !R.res.ids)
        goto out;
    // 1 and 2: streaming with the caches asked for, and every expert resident
    R.gpu_cache_resident = all_experts_bytes(m);
    if (bench_rounds(&o, m, &R) < 0)
        goto out;
    // 3. the copy kernel on the same device
    if (bench_copy(&o, &R.copy_bps) < 0)
        goto out;
    // 4. the drive
    r = bench_drive(&o, &R.io);
    if (r == 0 && !o.no_fio && strcmp(R.io.source, "fio"))
        fprintf(stderr, "moe bench decode: fio did not run (not installed?): the I/O bound "
                        "uses libmoeio's own read bandwidth\n");
    if (r < 0)
        fprintf(stderr, "moe bench decode: `moe bench io` on %s failed (%s): no I/O bound\n",
                o.path, strerror(-r));
    report_derive(&R);
    if (o.json)
        report_json(&R);
    else
        report_text(&R);
    status = fflush(stdout) == 0 ? 0 : 1;
out:
    free(R.res.ids);
    free(R.st.ids);
    model_free(m);
    gguf_free(g);
    moe_engine_opts_clear(&o.eng);
    return status;
}
