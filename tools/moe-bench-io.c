/* moe bench io: how fast libmoeio streams experts, next to fio on the same file.
 *
 * Reads experts the way the engine does: a random layer and a random expert, its three byte
 * ranges (gate, up, down: model_expert_ranges) submitted together into one slot of a
 * registered host pool, O_DIRECT, with `depth` reads in flight; a slot is refilled as soon
 * as its expert has arrived. Then, in the same run, fio reads the same file with io_uring,
 * O_DIRECT, the same depth and request sizes (the three range sizes rounded up to 4 KiB, as
 * bssplit), and the ratio of the two bandwidths is the headline ("ratio" with --json).
 * Ours counts only the wanted bytes (not the widening to 4 KiB bounds).
 *
 * Without a GGUF model (--raw-size BYTES) the file is raw bytes (created, random, if it is
 * missing or smaller) laid out like qwen3moe-30B-A3B at Q4_K/Q6_K: 128 experts per layer
 * of 884736 + 884736 + 1290240 bytes, tensors stacked per layer, 32-byte aligned.
 *
 * Memory: the only buffers are the pool (its size is the budget: --pool-mib, default what
 * the depth needs) plus fixed overhead, whatever the model's size; peak RSS is printed.
 * O_DIRECT bypasses the page cache, so repeated runs measure the drive; --buffered measures
 * the page cache as much as the drive. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "iouring/moeio.h"
#include "model/model.h"
#include "moe.h"

extern char **environ;

#define ROUNDS_MAX 20
#define RAW_EXPERTS 128
#define RAW_BASE 12320 /* where tensor data starts: 32-aligned, not 4096-aligned */
static const uint64_t raw_parts[MODEL_EXPERT_PARTS] = {884736, 884736, 1290240};

typedef struct opts {
    const char *path;
    unsigned depth;
    uint64_t reads;     /* experts to read; 0 = time-based */
    double seconds;
    bool buffered, json, no_fio, small_pages, part_align;
    uint64_t raw_size;  /* raw mode when > 0 */
    uint64_t pool_bytes;
    enum moeio_backend backend;
    uint64_t seed;
    unsigned rounds;
    const char *iolog;  /* write the widened reads as a fio iolog (v2) */
    FILE *iolog_f;
} opts_t;

/* Where experts lie: a model, or the raw layout. */
typedef struct layout {
    gguf_t *gguf;
    model_t *model;
    uint32_t n_layer, n_expert;
    uint64_t layer_bytes;  /* raw */
    uint64_t expert_span;  /* bytes a slot needs: the largest expert, widened */
    uint64_t part[MODEL_EXPERT_PARTS]; /* sizes of expert 0 of layer 0's ranges */
    const char *what;
} layout_t;

typedef struct slot {
    moeio_read_t r[MODEL_EXPERT_PARTS];
    unsigned left;
} slot_t;

typedef struct result {
    uint64_t experts, reads, bytes, bytes_io, errors;
    double seconds;
    double last_bw, last_seconds; /* of the latest round */
    moeio_stats_t stats;          /* reads and latency histogram, summed over rounds */
    moeio_info_t info;
} result_t;

/* ---- parsing ------------------------------------------------------------------------------ */

static int parse_u64(const char *s, uint64_t *ret)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *ret = (uint64_t)v << shift;
    return 0;
}

static int parse_seconds(const char *s, double *ret)
{
    char *end;
    if (!s)
        return -EINVAL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0 && v <= 3600))
        return -EINVAL;
    *ret = v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moe bench io MODEL [--depth N] [--reads N] [--seconds S] [--rounds R]\n"
            "                          [--buffered] [--backend auto|io_uring|pread]\n"
            "                          [--pool-mib N] [--raw-size BYTES] [--seed N]\n"
            "                          [--small-pages] [--part-align] [--iolog FILE]\n"
            "                          [--no-fio] [--json]\n"
            "\n"
            "Reads random experts (3 ranges each) of MODEL with libmoeio, O_DIRECT, at queue\n"
            "depth N (default 32) for S seconds (default 5) or N experts, then runs fio\n"
            "(io_uring, direct, same depth and request sizes) on the same file; R rounds\n"
            "(default 3) alternate the two. Prints both bandwidths and their ratio.\n"
            "--raw-size: MODEL is raw bytes in a qwen3moe-like layout, created with random\n"
            "bytes if missing or smaller. --buffered measures the page cache as much as the\n"
            "drive. --small-pages: no huge pages for the pool (like fio's buffers).\n"
            "--part-align: each range at a 2 MiB boundary of the pool. --iolog: write our\n"
            "reads as a fio iolog (fio --read_iolog=FILE --replay_no_stall=1 replays them).\n");
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.depth = 32, .seconds = 5, .seed = 1, .rounds = 3};
    bool have_seconds = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        int r = 0;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--buffered")) {
            o->buffered = true;
        } else if (!strcmp(a, "--part-align")) {
            o->part_align = true;
        } else if (!strcmp(a, "--small-pages")) {
            o->small_pages = true;
        } else if (!strcmp(a, "--no-fio")) {
            o->no_fio = true;
        } else if (!strcmp(a, "--depth")) {
            r = parse_u64(v, &n);
            if (r == 0 && (n < 1 || n > MOEIO_DEPTH_MAX))
                r = -ERANGE;
            o->depth = (unsigned)n, i++;
        } else if (!strcmp(a, "--iolog")) {
            o->iolog = v, i++;
            r = v ? 0 : -EINVAL;
        } else if (!strcmp(a, "--rounds")) {
            r = parse_u64(v, &n), i++;
            if (r == 0 && (n < 1 || n > ROUNDS_MAX))
                r = -ERANGE;
            o->rounds = (unsigned)n;
        } else if (!strcmp(a, "--reads")) {
            r = parse_u64(v, &o->reads), i++;
        } else if (!strcmp(a, "--seconds")) {
            r = parse_seconds(v, &o->seconds), i++;
            have_seconds = true;
        } else if (!strcmp(a, "--raw-size")) {
            r = parse_u64(v, &o->raw_size), i++;
        } else if (!strcmp(a, "--pool-mib")) {
            r = parse_u64(v, &n), i++;
            if (r == 0 && (n < 4 || n > (1u << 20)))
                r = -ERANGE;
            o->pool_bytes = n << 20;
        } else if (!strcmp(a, "--seed")) {
            r = parse_u64(v, &o->seed), i++;
        } else if (!strcmp(a, "--backend")) {
            r = moeio_backend_from_name(v, &o->backend), i++;
        } else if (a[0] == '-' || o->path) {
            fprintf(stderr, "moe bench io: unexpected argument '%s'\n", a);
            return -EINVAL;
        } else {
            o->path = a;
        }
        if (r < 0) {
            fprintf(stderr, "moe bench io: bad value for %s: '%s'\n", a, v ? v : "");
            return -EINVAL;
        }
    }
    if (!o->path) {
        usage(stderr);
        return -EINVAL;
    }
    if (o->reads && !have_seconds)
        o->seconds = 0; /* count-based */
    if (!o->seed)
        o->seed = 1;
    return 0;
}

/* ---- the layout ----------------------------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int raw_create(const char *path, uint64_t size)
{
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size >= size)
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    static uint64_t buf[1 << 17]; /* 1 MiB: RSS stays small whatever the size */
    uint64_t seed = 0x2545f4914f6cdd1dull;
    int r = 0;
    for (uint64_t at = 0; at < size && r == 0;) {
        for (size_t i = 0; i < sizeof(buf) / 8; i++)
            buf[i] = xorshift(&seed);
        size_t n = size - at < sizeof(buf) ? (size_t)(size - at) : sizeof(buf);
        ssize_t w = write(fd, buf, n);
        if (w <= 0)
            r = w < 0 ? -errno : -EIO;
        at += w > 0 ? (uint64_t)w : 0;
    }
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); /* start cold */
    close(fd);
    return r;
}

static uint64_t widened(uint64_t len) { return len + 2 * MOEIO_ALIGN; }

static int layout_open(const opts_t *o, layout_t *L)
{
    *L = (layout_t){0};
    if (o->raw_size) {
        uint64_t expert = raw_parts[0] + raw_parts[1] + raw_parts[2];
        L->layer_bytes = (RAW_EXPERTS * expert + 31) & ~(uint64_t)31;
        if (o->raw_size < RAW_BASE + L->layer_bytes) {
            fprintf(stderr, "moe bench io: --raw-size must be at least %" PRIu64 "\n",
                    RAW_BASE + L->layer_bytes);
            return -EINVAL;
        }
        int r = raw_create(o->path, o->raw_size);
        if (r < 0) {
            fprintf(stderr, "moe bench io: cannot create %s: %s\n", o->path, strerror(-r));
            return r;
        }
        L->n_layer = (uint32_t)((o->raw_size - RAW_BASE) / L->layer_bytes);
        L->n_expert = RAW_EXPERTS;
        memcpy(L->part, raw_parts, sizeof(raw_parts));
        L->expert_span = widened(raw_parts[0]) + widened(raw_parts[1]) + widened(raw_parts[2]);
        L->what = "raw (qwen3moe-like layout)";
        return 0;
    }
    char err[256] = "";
    int r = gguf_open(o->path, &L->gguf, err, sizeof(err));
    if (r == 0)
        r = model_load(L->gguf, &L->model, err, sizeof(err));
    if (r < 0) {
        if (err[0]) /* the reason names the file already */
            fprintf(stderr, "moe bench io: %s (use --raw-size for a raw file)\n", err);
        else
            fprintf(stderr, "moe bench io: %s: %s\n", o->path, strerror(-r));
        return r;
    }
    L->n_layer = L->model->hp.n_layer;
    L->n_expert = L->model->hp.n_expert;
    if (!L->n_layer || !L->n_expert) {
        fprintf(stderr, "moe bench io: %s has no experts\n", o->path);
        return -EINVAL;
    }
    L->expert_span = L->model->expert_bytes + MODEL_EXPERT_PARTS * 2 * MOEIO_ALIGN;
    model_range_t rg[MODEL_EXPERT_PARTS];
    if (model_expert_ranges(L->model, 0, 0, rg) == 0)
        for (int p = 0; p < MODEL_EXPERT_PARTS; p++)
            L->part[p] = rg[p].size;
    L->what = model_arch_name(L->model->arch);
    return 0;
}

static void layout_close(layout_t *L)
{
    model_free(L->model);
    gguf_free(L->gguf);
}

static int layout_ranges(const layout_t *L, uint32_t il, uint32_t e,
                         uint64_t off[MODEL_EXPERT_PARTS], uint64_t len[MODEL_EXPERT_PARTS])
{
    if (L->model) {
        model_range_t rg[MODEL_EXPERT_PARTS];
        int r = model_expert_ranges(L->model, il, e, rg);
        if (r < 0)
            return r;
        for (int p = 0; p < MODEL_EXPERT_PARTS; p++)
            off[p] = rg[p].offset, len[p] = rg[p].size;
        return 0;
    }
    uint64_t at = RAW_BASE + (uint64_t)il * L->layer_bytes;
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
        off[p] = at + (uint64_t)e * raw_parts[p];
        len[p] = raw_parts[p];
        at += (uint64_t)RAW_EXPERTS * raw_parts[p];
    }
    return 0;
}

/* ---- our side --------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Points slot s at a random expert and submits its three ranges in one go. */
static char *part_align(char *p, bool on)
{
    uintptr_t a = MOEIO_POOL_ALIGN - 1;
    return on ? (char *)(((uintptr_t)p + a) & ~a) : p;
}

static int slot_start(moeio_t *io, const layout_t *L, slot_t *s, uint64_t *seed, bool palign,
                      const opts_t *o)
{
    uint32_t il = (uint32_t)(xorshift(seed) % L->n_layer);
    uint32_t e = (uint32_t)(xorshift(seed) % L->n_expert);
    uint64_t off[MODEL_EXPERT_PARTS], len[MODEL_EXPERT_PARTS];
    int r = layout_ranges(L, il, e, off, len);
    if (r < 0)
        return r;
    char *dst = s->r[0].dst;
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
        s->r[p].offset = off[p];
        s->r[p].len = len[p];
        s->r[p].dst = dst = part_align(dst, palign);
        dst += moeio_span(off[p], len[p], NULL);
        if (o->iolog_f) /* the widened op, as fio would replay it */
            fprintf(o->iolog_f, "%s read %" PRIu64 " %" PRIu64 "\n", o->path,
                    off[p] & ~(uint64_t)(MOEIO_ALIGN - 1), moeio_span(off[p], len[p], NULL));
    }
    s->left = MODEL_EXPERT_PARTS;
    return moeio_submit(io, s->r, MODEL_EXPERT_PARTS);
}

/* One timed round on an open reader: keeps every slot busy with a random expert until the
 * time (or the expert count) is up, then drains. Adds to res. */
static int run_ours(moeio_t *io, const opts_t *o, const layout_t *L, moeio_pool_t *pool,
                    size_t n_slots, uint64_t *seed, result_t *res)
{
    slot_t *slots = calloc(n_slots, sizeof(*slots));
    moeio_read_t **done = calloc(n_slots * MODEL_EXPERT_PARTS, sizeof(*done));
    int r = slots && done ? 0 : -ENOMEM;
    uint64_t started = 0;
    moeio_reset_stats(io);
    double t0 = now_s(), stop = t0 + o->seconds;
    for (size_t i = 0; i < n_slots && r == 0; i++) {
        slots[i].r[0].dst = moeio_pool_ptr(pool, i * L->expert_span);
        for (int p = 0; p < MODEL_EXPERT_PARTS; p++)
            slots[i].r[p].user = &slots[i];
        if (!o->reads || started < o->reads)
            r = slot_start(io, L, &slots[i], seed, o->part_align, o), started++;
    }
    while (r == 0 && moeio_pending(io)) {
        int k = moeio_reap(io, 1, done, n_slots * MODEL_EXPERT_PARTS);
        if (k < 0) {
            r = k;
            break;
        }
        bool more = o->reads ? started < o->reads : now_s() < stop;
        for (int j = 0; j < k && r == 0; j++) {
            slot_t *s = done[j]->user;
            res->reads++;
            if (done[j]->res < 0)
                res->errors++;
            if (--s->left)
                continue;
            res->experts++;
            if (more && (!o->reads || started < o->reads))
                r = slot_start(io, L, s, seed, o->part_align, o), started++;
        }
    }
    double secs = now_s() - t0;
    moeio_stats_t st;
    moeio_get_stats(io, &st);
    res->seconds += secs;
    res->bytes += st.bytes;
    res->bytes_io += st.bytes_io;
    res->stats.reads += st.reads;
    res->stats.inflight_ns += st.inflight_ns;
    for (int i = 0; i < MOEIO_LAT_BUCKETS; i++)
        res->stats.lat_hist[i] += st.lat_hist[i];
    res->last_bw = secs > 0 ? (double)st.bytes / secs : 0;
    res->last_seconds = secs;
    if (r < 0)
        fprintf(stderr, "moe bench io: reading: %s\n", strerror(-r));
    free(done);
    free(slots);
    return r;
}

/* ---- fio ---------------------------------------------------------------------------------------- */

/* "bw_bytes" of the job's "read" section in fio's JSON output. */
static int fio_parse_bw(const char *out, double *ret)
{
    const char *p = strstr(out, "\"read\"");
    p = p ? strstr(p, "\"bw_bytes\"") : NULL;
    p = p ? strchr(p, ':') : NULL;
    if (!p)
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(p + 1, &end);
    if (errno || end == p + 1 || v < 0)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* fio's buffers get the kind of memory our pool has where fio can ask for it: reserved huge
 * pages (shmhuge) when our pool is MAP_HUGETLB. fio cannot ask for transparent huge pages,
 * so against a THP pool it reads into 4 KiB pages (malloc). */
static int run_fio(const opts_t *o, const layout_t *L, double seconds, const char *iomem,
                   char *bssplit, size_t bslen, double *ret_bw)
{
    uint64_t bs[MODEL_EXPERT_PARTS];
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++)
        bs[p] = (L->part[p] + MOEIO_ALIGN - 1) & ~(uint64_t)(MOEIO_ALIGN - 1);
    snprintf(bssplit, bslen, "%" PRIu64 "/33:%" PRIu64 "/33:%" PRIu64 "/34", bs[0], bs[1],
             bs[2]);
    char a_file[4200], a_depth[32], a_bs[200], a_rt[48], a_direct[16], a_mem[32];
    snprintf(a_mem, sizeof(a_mem), "--iomem=%s", iomem);
    snprintf(a_file, sizeof(a_file), "--filename=%s", o->path);
    snprintf(a_depth, sizeof(a_depth), "--iodepth=%u", o->depth);
    snprintf(a_bs, sizeof(a_bs), "--bssplit=%s", bssplit);
    snprintf(a_rt, sizeof(a_rt), "--runtime=%llums",
             (unsigned long long)(seconds * 1000 + 0.5) + 1);
    snprintf(a_direct, sizeof(a_direct), "--direct=%d", o->buffered ? 0 : 1);
    char *argv[] = {"fio", "--name=moe-bench-io", a_file, "--readonly", "--rw=randread",
                    "--ioengine=io_uring", a_direct, a_depth, a_bs, "--time_based", a_rt,
                    "--norandommap", "--randrepeat=0", "--fixedbufs", "--registerfiles", a_mem,
                    "--output-format=json", NULL};
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
    pid_t pid;
    int r = -posix_spawnp(&pid, "fio", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (r < 0) {
        close(pfd[0]);
        return r;
    }
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    for (;;) {
        if (out && len + 1 == cap && cap < (8u << 20))
            out = realloc(out, cap *= 2);
        if (!out)
            break;
        ssize_t n = read(pfd[0], out + len, cap - 1 - len);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
        len += n > 0 ? (size_t)n : 0;
    }
    close(pfd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!out)
        return -ENOMEM;
    out[len] = 0;
    r = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? fio_parse_bw(out, ret_bw) : -EIO;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        r = -ENOENT; /* not installed */
    free(out);
    return r;
}

static double median(double *v, unsigned n)
{
    for (unsigned i = 1; i < n; i++) /* insertion sort: n <= ROUNDS_MAX */
        for (unsigned j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- report -------------------------------------------------------------------------------- */

/* Upper bound (us) of the bucket holding the q-quantile of the latency histogram. */
static uint64_t lat_quantile(const moeio_stats_t *s, double q)
{
    uint64_t want = (uint64_t)(q * (double)s->reads + 0.5), seen = 0;
    for (int b = 0; b < MOEIO_LAT_BUCKETS; b++) {
        seen += s->lat_hist[b];
        if (seen >= want && seen)
            return (uint64_t)2 << b;
    }
    return 0;
}

/* Everything the report prints. */
typedef struct report {
    const opts_t *o;
    const layout_t *L;
    result_t res;
    uint64_t file_bytes, rss, pool_bytes;
    unsigned pool_flags;
    const char *pool_pages, *fio_iomem;
    char bssplit[200];
    int fio_err;
    bool have_fio;
    double bw, bw_io, fio_bw, ratio, ratio_median, mean_depth;
} report_t;

static void report_json(const report_t *R)
{
    const opts_t *o = R->o;
    const moeio_info_t *in = &R->res.info;
    printf("{\"bench\":\"io\",\"file\":");
    moe_json_str(o->path);
    printf(",\"file_bytes\":%" PRIu64 ",\"layout\":", R->file_bytes);
    moe_json_str(R->L->what);
    printf(",\"layers\":%u,\"experts_per_layer\":%u,\"backend\":\"%s\",\"direct\":%s,"
           "\"buffers_registered\":%s,\"depth\":%u,\"rounds\":%u,\"experts\":%" PRIu64
           ",\"reads\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"seconds\":%.3f,"
           "\"bytes\":%" PRIu64 ",\"bytes_per_s\":%.0f,\"device_bytes_per_s\":%.0f,"
           "\"lat_p50_us\":%" PRIu64 ",\"lat_p99_us\":%" PRIu64 ",\"mean_in_flight\":%.2f,",
           R->L->n_layer, R->L->n_expert, moeio_backend_name(in->backend),
           in->direct ? "true" : "false", in->buffers_registered ? "true" : "false", o->depth,
           o->rounds, R->res.experts, R->res.reads, R->res.errors, R->res.seconds, R->res.bytes,
           R->bw, R->bw_io, lat_quantile(&R->res.stats, 0.5), lat_quantile(&R->res.stats, 0.99),
           R->mean_depth);
    if (R->have_fio)
        printf("\"fio_bytes_per_s\":%.0f,\"fio_bssplit\":\"%s\",\"fio_iomem\":\"%s\","
               "\"ratio\":%.4f,\"ratio_median\":%.4f,",
               R->fio_bw, R->bssplit, R->fio_iomem, R->ratio, R->ratio_median);
    else
        printf("\"fio_bytes_per_s\":null,\"ratio\":null,");
    printf("\"pool_bytes\":%" PRIu64 ",\"pool_pages\":\"%s\",\"peak_rss_bytes\":%" PRIu64
           ",\"notes\":",
           R->pool_bytes, R->pool_pages, R->rss);
    moe_json_str(in->text);
    printf("}\n");
}

static void report_text(const report_t *R)
{
    const opts_t *o = R->o;
    const layout_t *L = R->L;
    const moeio_info_t *in = &R->res.info;
    printf("moe bench io: %s (%.2f GiB, %s, %u layers x %u experts, expert = 3 ranges of "
           "%" PRIu64 "+%" PRIu64 "+%" PRIu64 " bytes)\n",
           o->path, (double)R->file_bytes / (1 << 30), L->what, L->n_layer, L->n_expert,
           L->part[0], L->part[1], L->part[2]);
    printf("  moeio  %s, %s, depth %u, buffers %sregistered: %" PRIu64 " experts (%" PRIu64
           " reads, %" PRIu64 " errors) in %.2f s: %.1f MB/s (device %.1f MB/s), "
           "latency p50 < %" PRIu64 " us, p99 < %" PRIu64 " us, mean in flight %.1f\n",
           moeio_backend_name(in->backend), in->direct ? "O_DIRECT" : "buffered", o->depth,
           in->buffers_registered ? "" : "not ", R->res.experts, R->res.reads, R->res.errors,
           R->res.seconds, R->bw / 1e6, R->bw_io / 1e6, lat_quantile(&R->res.stats, 0.5),
           lat_quantile(&R->res.stats, 0.99), R->mean_depth);
    if (in->backend == MOEIO_BACKEND_PREAD)
        printf("  (pread backend: %u worker threads; in flight counts reads handed to them)\n",
               in->threads);
    if (in->text[0])
        printf("  notes  %s\n", in->text);
    if (R->have_fio)
        printf("  fio    io_uring, direct=%d, iodepth %u, bssplit %s, iomem %s: %.1f MB/s\n"
               "  ratio  %.3f (moeio / fio over %u alternating rounds; median of rounds %.3f)\n",
               o->buffered ? 0 : 1, o->depth, R->bssplit, R->fio_iomem, R->fio_bw / 1e6,
               R->ratio, o->rounds, R->ratio_median);
    else if (!o->no_fio)
        printf("  fio    not run: %s\n", R->fio_err == -ENOENT
                                             ? "fio is not installed"
                                             : "fio failed or its output was unreadable");
    if (R->have_fio && !(R->pool_flags & MOEIO_POOL_HUGETLB))
        printf("  note   fio's buffers are malloc'd 4 KiB pages, ours %s: requests differ in DMA\n"
               "         segments; with reserved huge pages (vm.nr_hugepages) both use hugetlb\n",
               R->pool_pages);
    if (R->pool_flags & MOEIO_POOL_HUGETLB) /* hugetlb pages are not counted in RSS */
        printf("  memory peak RSS %.1f MiB, plus the pool: %.1f MiB of hugetlb pages\n",
               (double)R->rss / (1 << 20), (double)R->pool_bytes / (1 << 20));
    else
        printf("  memory peak RSS %.1f MiB = pool %.1f MiB (%s) + %.1f MiB\n",
               (double)R->rss / (1 << 20), (double)R->pool_bytes / (1 << 20), R->pool_pages,
               ((double)R->rss - (double)R->pool_bytes) / (1 << 20));
    if (o->buffered)
        printf("  (buffered: reads go through the page cache; this measures it as much as the "
               "drive)\n");
}

/* Alternating rounds of ours and fio; fills R. 0 or -errno (ours failed). */
static int bench_rounds(opts_t *o, const layout_t *L, moeio_pool_t *pool, size_t n_slots,
                        report_t *R)
{
    moeio_config_t cfg = {.backend = o->backend, .depth = o->depth, .buffered = o->buffered};
    moeio_t *io = NULL;
    int r = moeio_new(o->path, &cfg, pool, &io);
    if (r < 0) {
        fprintf(stderr, "moe bench io: %s: %s\n", o->path, strerror(-r));
        return r;
    }
    moeio_get_info(io, &R->res.info);
    double fio_sum = 0, ratios[ROUNDS_MAX];
    unsigned fio_n = 0;
    uint64_t seed = o->seed;
    R->fio_err = o->no_fio ? -ECANCELED : 0;
    R->fio_iomem = R->pool_flags & MOEIO_POOL_HUGETLB ? "shmhuge" : "malloc";
    for (unsigned round = 0; r == 0 && round < o->rounds; round++) {
        /* odd rounds run fio first, so neither side always gets the drive's second wind */
        bool fio_first = round % 2 == 1 && !o->reads;
        double fbw = 0;
        if (fio_first && R->fio_err == 0)
            R->fio_err = run_fio(o, L, o->seconds, R->fio_iomem, R->bssplit,
                                 sizeof(R->bssplit), &fbw);
        r = run_ours(io, o, L, pool, n_slots, &seed, &R->res);
        if (r < 0 || R->fio_err < 0)
            continue;
        if (!fio_first)
            R->fio_err = run_fio(o, L, R->res.last_seconds, R->fio_iomem, R->bssplit,
                                 sizeof(R->bssplit), &fbw);
        if (R->fio_err < 0 || fbw <= 0)
            continue;
        ratios[fio_n++] = R->res.last_bw / fbw;
        fio_sum += fbw;
        if (!o->json)
            printf("  round %u: moeio %.1f MB/s, fio %.1f MB/s, ratio %.3f%s\n", round + 1,
                   R->res.last_bw / 1e6, fbw / 1e6, ratios[fio_n - 1],
                   fio_first ? " (fio ran first)" : "");
    }
    moeio_free(io);
    const result_t *res = &R->res;
    R->bw = res->seconds > 0 ? (double)res->bytes / res->seconds : 0;
    R->bw_io = res->seconds > 0 ? (double)res->bytes_io / res->seconds : 0;
    R->mean_depth = res->seconds > 0 ? (double)res->stats.inflight_ns / (res->seconds * 1e9) : 0;
    R->have_fio = fio_n == o->rounds;
    R->fio_bw = R->have_fio ? fio_sum / fio_n : 0;
    R->ratio = R->have_fio ? R->bw / R->fio_bw : 0;
    R->ratio_median = R->have_fio ? median(ratios, fio_n) : 0;
    return r;
}

static int iolog_open(opts_t *o)
{
    if (!o->iolog)
        return 0;
    o->iolog_f = fopen(o->iolog, "we");
    if (!o->iolog_f) {
        fprintf(stderr, "moe bench io: %s: %s\n", o->iolog, strerror(errno));
        return -EIO;
    }
    fprintf(o->iolog_f, "fio version 2 iolog\n%s add\n%s open\n", o->path, o->path);
    return 0;
}

static void iolog_close(opts_t *o)
{
    if (o->iolog_f) {
        fprintf(o->iolog_f, "%s close\n", o->path);
        fclose(o->iolog_f);
        o->iolog_f = NULL;
    }
}

int moe_bench_io(int argc, char **argv)
{
    opts_t o;
    int r = parse_opts(argc, argv, &o);
    if (r)
        return r > 0 ? 0 : 2;
    layout_t L;
    if (layout_open(&o, &L) < 0)
        return 1;
    if (o.part_align) /* each range in its own 2 MiB-aligned stretch of the pool */
        L.expert_span = MODEL_EXPERT_PARTS *
                        ((L.expert_span + MOEIO_POOL_ALIGN - 1) & ~(uint64_t)(MOEIO_POOL_ALIGN - 1));
    /* Enough expert slots to keep `depth` reads in flight while finished ones refill. */
    size_t n_slots = 2 * ((o.depth + MODEL_EXPERT_PARTS - 1) / MODEL_EXPERT_PARTS);
    if (o.pool_bytes) {
        size_t fit = o.pool_bytes / L.expert_span;
        if (fit < 1) {
            fprintf(stderr, "moe bench io: --pool-mib is smaller than one expert\n");
            layout_close(&L);
            return 2;
        }
        n_slots = fit < n_slots ? fit : n_slots;
    }
    moeio_pool_t *pool = NULL;
    unsigned pflags = o.small_pages ? MOEIO_POOL_NO_HUGETLB | MOEIO_POOL_NO_THP : 0;
    r = moeio_pool_new(n_slots * L.expert_span, pflags, &pool);
    if (r < 0) {
        fprintf(stderr, "moe bench io: pool of %zu bytes: %s\n", n_slots * L.expert_span,
                strerror(-r));
        layout_close(&L);
        return 1;
    }
    report_t R = {.o = &o, .L = &L, .pool_bytes = moeio_pool_size(pool),
                  .pool_flags = moeio_pool_flags(pool)};
    R.pool_pages = R.pool_flags & MOEIO_POOL_HUGETLB ? "hugetlb"
                   : R.pool_flags & MOEIO_POOL_THP   ? "THP"
                                                     : "4 KiB pages";
    r = iolog_open(&o);
    if (r == 0)
        r = bench_rounds(&o, &L, pool, n_slots, &R);
    iolog_close(&o);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    R.rss = (uint64_t)ru.ru_maxrss * 1024;
    moeio_pool_free(pool);
    struct stat st;
    R.file_bytes = stat(o.path, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (r == 0) {
        if (o.json)
            report_json(&R);
        else
            report_text(&R);
    }
    layout_close(&L);
    return r < 0 || R.res.errors ? 1 : 0;
}
