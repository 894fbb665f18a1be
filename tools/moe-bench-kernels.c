/* moe bench kernels: how close the matrix-vector products (vkc_cmd_matvec with one vector,
 * decode) come to a plain copy on the same device in the same run (decode is bandwidth-bound),
 * and the FLOP/s of the same call over a prefill-sized batch (the tiled matrix-matrix kernel).
 * Figures: weight bytes read per second for matvec; bytes copied per second (each byte read
 * once and written once) for copy, measured right before each type; ratio = matvec / that
 * copy; prefill FLOP/s = 2 rows cols n / s. With --json one object whose "ratio" is the
 * minimum over Q8_0, Q4_0 and Q4_K and whose "copy_bytes_per_s" is the best copy. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/vkc.h"
#include "model/quant.h"
#include "moe.h"

static const uint32_t bench_types[] = {
    GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_BENCH_TYPES (sizeof(bench_types) / sizeof(bench_types[0]))

typedef struct bench {
    vkc_ctx_t *ctx;
    vkc_cmd_t *cmd;
    double min_seconds; /* repeat each measurement at least this long */
    clockid_t clock;    /* CLOCK_MONOTONIC, or the process CPU time (--cpu-time) */
} bench_t;

static double now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef int (*record_fn)(vkc_cmd_t *cmd, void *arg);

/* Seconds per call of rec: one warm-up submission, then batches of `per` calls (with a
 * barrier between, as the engine would have) until min_seconds have passed; the best batch
 * counts (the machine is shared: other processes only ever make a batch slower). */
static int time_kernel(bench_t *b, record_fn rec, void *arg, int per, double *ret_seconds)
{
    int r;
    double spent = 0, best = 1e30;
    for (int round = 0; round == 0 || spent < b->min_seconds; round++) {
        if ((r = vkc_cmd_begin(b->cmd)) < 0)
            return r;
        for (int i = 0; i < per; i++) {
            if ((r = rec(b->cmd, arg)) < 0)
                return r;
            vkc_cmd_barrier(b->cmd, "the next repetition writes the same output");
        }
        double t0 = now(b->clock), w0 = now(CLOCK_MONOTONIC);
        if ((r = vkc_cmd_submit_wait(b->cmd)) < 0)
            return r;
        double t = now(b->clock) - t0;
        if (round > 0) { /* round 0 warms caches and compiles the pipeline */
            spent += now(CLOCK_MONOTONIC) - w0;
            best = t < best ? t : best;
        }
    }
    *ret_seconds = best / per;
    return 0;
}

typedef struct copy_arg {
    vkc_view_t src, dst;
    uint64_t n;
} copy_arg_t;

static int rec_copy(vkc_cmd_t *cmd, void *arg)
{
    copy_arg_t *a = arg;
    return vkc_cmd_copy(cmd, a->src, a->dst, a->n);
}

static int rec_matvec(vkc_cmd_t *cmd, void *arg)
{
    return vkc_cmd_matvec(cmd, arg);
}

static int bench_copy(bench_t *b, uint64_t n, double *ret_bps)
{
    vkc_buffer_t *s = NULL, *d = NULL;
    int r = vkc_buffer_new(b->ctx, VKC_MEM_DEVICE, n, &s);
    if (r == 0)
        r = vkc_buffer_new(b->ctx, VKC_MEM_DEVICE, n, &d);
    if (r == 0) {
        void *m = vkc_buffer_map(s);
        if (m)
            memset(m, 1, n);
        copy_arg_t a = {{s, 0}, {d, 0}, n};
        double sec;
        r = time_kernel(b, rec_copy, &a, 4, &sec);
        if (r == 0)
            *ret_bps = n / sec;
    }
    vkc_buffer_free(d);
    vkc_buffer_free(s);
    return r;
}

/* Weight bytes/s of a rows x cols matvec of type t over n_vec vectors, and the FLOP/s. */
static int bench_matvec(bench_t *b, uint32_t t, uint32_t rows, uint32_t cols, uint32_t n_vec,
                        double *ret_bps, double *ret_flops, uint64_t *ret_bytes)
{
    uint64_t row_bytes;
    int r = quant_row_size(t, cols, &row_bytes);
    if (r < 0)
        return r;
    uint64_t max_range = vkc_ctx_info(b->ctx)->max_storage_range;
    if (row_bytes * rows > max_range)
        rows = (uint32_t)(max_range / row_bytes);
    vkc_buffer_t *w = NULL, *x = NULL, *y = NULL;
    r = vkc_buffer_new(b->ctx, VKC_MEM_DEVICE, row_bytes * rows, &w);
    if (r == 0)
        r = vkc_buffer_new(b->ctx, VKC_MEM_DEVICE, 4ull * cols * n_vec, &x);
    if (r == 0)
        r = vkc_buffer_new(b->ctx, VKC_MEM_DEVICE, 4ull * rows * n_vec, &y);
    if (r == 0) {
        /* valid blocks (quantized noise) so no NaN/denormal paths are timed: one row repeated */
        float *f = malloc(sizeof(float) * cols);
        uint8_t *row = malloc(row_bytes);
        r = f && row ? 0 : -ENOMEM;
        for (uint32_t i = 0; r == 0 && i < cols; i++)
            f[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        if (r == 0)
            r = quant_quantize(t, f, row, cols);
        for (uint32_t i = 0; r == 0 && i < rows; i++)
            r = vkc_buffer_write(b->ctx, w, i * row_bytes, row, row_bytes);
        for (uint32_t i = 0; r == 0 && i < n_vec; i++)
            r = vkc_buffer_write(b->ctx, x, 4ull * cols * i, f, 4ull * cols);
        free(f);
        free(row);
    }
    if (r == 0) {
        vkc_matvec_args_t a = {.type = t,
                               .rows = rows,
                               .cols = cols,
                               .n_vec = n_vec,
                               .w = {w, 0},
                               .x = {x, 0},
                               .y = {y, 0}};
        double sec;
        r = time_kernel(b, rec_matvec, &a, 4, &sec);
        if (r == 0) {
            *ret_bps = row_bytes * rows / sec;
            *ret_flops = 2.0 * rows * cols * n_vec / sec;
            *ret_bytes = row_bytes * rows;
        }
    }
    vkc_buffer_free(y);
    vkc_buffer_free(x);
    vkc_buffer_free(w);
    return r;
}

static int parse_u32(const char *s, uint32_t *ret)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || !*s || *end || v == 0 || v > UINT32_MAX)
        return -EINVAL;
    *ret = (uint32_t)v;
    return 0;
}

static int usage(FILE *f)
{
    fprintf(f, "usage: moe bench kernels [--device X] [--rows R] [--cols C] [--batch N]\n"
               "                         [--tuning W,R[,...]] [--seconds S] [--type T]\n"
               "                         [--cpu-time] [--json]\n"
               "  --device X   device index, UUID or name substring (default: first GPU)\n"
               "  --rows R     matrix rows (default 32768, past the caches; capped at the\n"
               "               device's storage buffer range)\n"
               "  --cols C     matrix columns (default 4096, a multiple of 256)\n"
               "  --batch N    vectors for the prefill FLOP/s figure (default 64; rows / 8)\n"
               "  --tuning W,R[,M,MW,MR,MV,SG]  matvec workgroup size and rows per\n"
               "               workgroup; matmul from M vectors on, its workgroup size, rows\n"
               "               per lane, vectors per tile, x sharing (1 subgroup, 2 loads)\n"
               "  --seconds S  minimum time per measurement (default 0.5)\n"
               "  --type T     only weight type T (e.g. q4_K)\n"
               "  --cpu-time   time by the process's CPU time (all the driver's threads), not\n"
               "               the wall clock: on a CPU device on a loaded machine, less\n"
               "               sensitive to other processes\n"
               "  --json       one JSON object; \"ratio\" = min over q8_0, q4_0, q4_K\n");
    return f == stdout ? 0 : 2;
}

int moe_bench_kernels(int argc, char **argv)
{
    const char *device = NULL;
    uint32_t rows = 32768, cols = 4096, batch = 64;
    bool json = false, tuned = false, cpu_time = false;
    uint32_t only = UINT32_MAX; /* --type */
    vkc_matvec_tuning_t tuning = {0};
    double seconds = 0.5;
    static const struct option opts[] = {
        {"device", required_argument, NULL, 'd'},
        {"rows", required_argument, NULL, 'r'},
        {"cols", required_argument, NULL, 'c'},
        {"batch", required_argument, NULL, 'b'},
        {"tuning", required_argument, NULL, 't'},
        {"seconds", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"type", required_argument, NULL, 'T'},
        {"cpu-time", no_argument, NULL, 'C'},
        {0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            device = optarg;
            break;
        case 'r':
            if (parse_u32(optarg, &rows) < 0)
                return usage(stderr);
            break;
        case 'c':
            if (parse_u32(optarg, &cols) < 0 || cols % 256)
                return usage(stderr);
            break;
        case 'b':
            if (parse_u32(optarg, &batch) < 0 || batch > 4096)
                return usage(stderr);
            break;
        case 't':
            /* fields left out stay 0: set_tuning keeps their defaults */
            if (sscanf(optarg, "%u,%u,%u,%u,%u,%u,%u", &tuning.wg, &tuning.rows, &tuning.mm_min_vec,
                       &tuning.mm_wg, &tuning.mm_rows, &tuning.mm_vecs, &tuning.mm_sg) < 2)
                return usage(stderr);
            tuned = true;
            break;
        case 's': {
            char *end;
            seconds = strtod(optarg, &end);
            if (*end || !(seconds > 0 && seconds < 600))
                return usage(stderr);
            break;
        }
        case 'j':
            json = true;
            break;
        case 'T':
            if (quant_type_from_name(optarg, &only) < 0)
                return usage(stderr);
            break;
        case 'C':
            cpu_time = true;
            break;
        case 'h':
            return usage(stdout);
        default:
            return usage(stderr);
        }
    }
    if (optind != argc)
        return usage(stderr);

    bench_t b = {.min_seconds = seconds,
                 .clock = cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC};
    char err[256], line[1024];
    vkc_options_t opt = {.device = device, .validation = 0};
    int r = vkc_ctx_new(&opt, &b.ctx, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe bench kernels: %s: %s\n", err[0] ? err : "no device", strerror(-r));
        return 1;
    }
    vkc_device_info_format(vkc_ctx_info(b.ctx), line, sizeof(line));
    if (tuned && (r = vkc_matvec_set_tuning(b.ctx, &tuning)) < 0) {
        fprintf(stderr, "moe bench kernels: bad --tuning\n");
        vkc_ctx_free(b.ctx);
        return 2;
    }
    vkc_matvec_get_tuning(b.ctx, &tuning);
    r = vkc_cmd_new(b.ctx, &b.cmd);

    double copy_bps = 0, bps[N_BENCH_TYPES] = {0}, flops[N_BENCH_TYPES] = {0};
    double copy_at[N_BENCH_TYPES] = {0}, prefill_flops = 0, dummy;
    uint64_t bytes[N_BENCH_TYPES] = {0}, dummy_bytes;
    if (!json && r == 0)
        printf("%s\nmatvec tuning: workgroup %u, rows %u; matmul from %u vectors, workgroup %u, "
               "%u rows x %u vectors per lane%s\n",
               line, tuning.wg, tuning.rows, tuning.mm_min_vec, tuning.mm_wg, tuning.mm_rows,
               tuning.mm_vecs, tuning.mm_sg == 1 ? ", x by subgroup shuffles" : "");
    for (size_t i = 0; r == 0 && i < N_BENCH_TYPES; i++) {
        if (only != UINT32_MAX && bench_types[i] != only)
            continue;
        /* the copy right before each type's matvec: on a shared machine the load changes
         * over a run, and each ratio then compares two figures taken under the same load */
        r = bench_copy(&b, 64ull << 20, &copy_at[i]);
        if (r == 0)
            r = bench_matvec(&b, bench_types[i], rows, cols, 1, &bps[i], &dummy, &bytes[i]);
        if (r == 0)
            r = bench_matvec(&b, bench_types[i], rows / 8 ? rows / 8 : 1, cols, batch, &dummy,
                             &flops[i], &dummy_bytes);
        if (!json && r == 0)
            printf("%-5s matvec %6.2f GB/s  copy %5.2f GB/s  ratio %.2f  (%.1f MiB)   prefill %u: "
                   "%6.2f GFLOP/s\n",
                   quant_traits(bench_types[i])->name, bps[i] / 1e9, copy_at[i] / 1e9,
                   bps[i] / copy_at[i], bytes[i] / 1048576.0, batch, flops[i] / 1e9);
        if (bench_types[i] == GGML_TYPE_Q4_K)
            prefill_flops = flops[i];
        copy_bps = copy_at[i] > copy_bps ? copy_at[i] : copy_bps;
    }
    if (r < 0) {
        fprintf(stderr, "moe bench kernels: %s\n", strerror(-r));
        vkc_cmd_free(b.cmd);
        vkc_ctx_free(b.ctx);
        return 1;
    }
    double ratio = 1e9;
    for (size_t i = 0; i < N_BENCH_TYPES; i++)
        if (bench_types[i] == GGML_TYPE_Q8_0 || bench_types[i] == GGML_TYPE_Q4_0 ||
            bench_types[i] == GGML_TYPE_Q4_K)
            ratio = copy_at[i] > 0 && bps[i] / copy_at[i] < ratio ? bps[i] / copy_at[i] : ratio;
    if (ratio == 1e9) /* --type left all three out */
        ratio = 0;
    if (json) {
        const vkc_device_info_t *in = vkc_ctx_info(b.ctx);
        printf("{\"bench\": \"kernels\", \"device\": \"%s\", \"driver\": \"%s\", \"rows\": %u, "
               "\"cols\": %u, \"batch\": %u, \"copy_bytes_per_s\": %.0f, "
               "\"prefill_q4_K_flops\": %.0f, \"types\": {",
               in->name, in->driver, rows, cols, batch, copy_bps, prefill_flops);
        for (size_t i = 0; i < N_BENCH_TYPES; i++)
            printf("%s\"%s\": {\"matvec_bytes_per_s\": %.0f, \"copy_bytes_per_s\": %.0f, "
                   "\"ratio\": %.4f, \"prefill_flops\": %.0f}",
                   i ? ", " : "", quant_traits(bench_types[i])->name, bps[i], copy_at[i],
                   copy_at[i] > 0 ? bps[i] / copy_at[i] : 0, flops[i]);
        printf("}, \"ratio\": %.4f}\n", ratio);
    } else {
        printf("ratio (min of q8_0, q4_0, q4_K): %.2f\n", ratio);
    }
    vkc_cmd_free(b.cmd);
    vkc_ctx_free(b.ctx);
    return 0;
}
