/* moe bench cache: how close the expert cache's policies come to Belady's clairvoyant
 * optimum on one routing trace. The trace is a file the engine recorded (format in
 * daemon/cache/expert_trace.h) or a synthetic one (--synthetic; the generator is described
 * there too). Every policy replays the trace through the real expert cache (all experts of
 * one (step, layer) pinned together, loads completing at once); Belady's hit count is
 * computed on the same trace with the same pinning. Figures: GPU-tier hit rate per policy
 * and for Belady, host-tier hits when --host-slots is given, nanoseconds of cache work per
 * access, and ratio = best policy's hit rate / Belady's. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/expert_cache.h"
#include "cache/expert_trace.h"
#include "moe.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *ret)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !*s || *end || *s == '-' || v < lo || v > hi)
        return -EINVAL;
    *ret = (uint32_t)v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *ret)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !*s || *end || !(v >= lo && v <= hi))
        return -EINVAL;
    *ret = v;
    return 0;
}

static int usage(FILE *f)
{
    fprintf(f, "usage: moe bench cache TRACE --slots N [--host-slots M] [--half-life H] [--json]\n"
               "       moe bench cache --synthetic [--layers L] [--experts E] [--top-k K]\n"
               "                       [--steps S] [--skew Z] [--reuse R] [--drift D]\n"
               "                       [--seed N] [--slots N] [--write FILE] [...]\n"
               "  TRACE          routing trace recorded by moed\n"
               "  --slots N      GPU-tier slots (synthetic default: a quarter of all experts)\n"
               "  --host-slots M host-tier slots (default 0: no host tier)\n"
               "  --half-life H  LFRU half-life in acquires (default 64 x layers)\n"
               "  --window W     LFRU recency window in acquires (default: layers)\n"
               "  --synthetic    generate the trace: Zipf popularity per layer (skew Z,\n"
               "                 default 1.0), each pick repeats the previous step's expert\n"
               "                 with probability R (default 0.4), two ranks swap with\n"
               "                 probability D per layer and step (default 0.02); defaults\n"
               "                 48 layers, 128 experts, top-8, 1000 steps, seed 1\n"
               "  --write FILE   save the synthetic trace\n"
               "  --json         one JSON object; \"ratio\" = best policy / Belady\n");
    return f == stdout ? 0 : 2;
}

typedef struct {
    expert_cache_stats_t st;
    double ns_per_access;
} run_t;

int moe_bench_cache(int argc, char **argv)
{
    expert_trace_synth_params_t sp = {.n_layer = 48,
                                      .n_expert = 128,
                                      .top_k = 8,
                                      .n_step = 1000,
                                      .skew = 1.0,
                                      .reuse = 0.4,
                                      .drift = 0.02,
                                      .seed = 1};
    uint32_t slots = 0, host_slots = 0, half_life = 0, window = 0, seed = 1;
    bool json = false, synthetic = false;
    const char *write_path = NULL;
    static const struct option opts[] = {
        {"slots", required_argument, NULL, 's'},
        {"host-slots", required_argument, NULL, 'm'},
        {"half-life", required_argument, NULL, 'H'},
        {"window", required_argument, NULL, 'W'},
        {"synthetic", no_argument, NULL, 'S'},
        {"layers", required_argument, NULL, 'L'},
        {"experts", required_argument, NULL, 'E'},
        {"top-k", required_argument, NULL, 'K'},
        {"steps", required_argument, NULL, 'T'},
        {"skew", required_argument, NULL, 'Z'},
        {"reuse", required_argument, NULL, 'R'},
        {"drift", required_argument, NULL, 'D'},
        {"seed", required_argument, NULL, 'N'},
        {"write", required_argument, NULL, 'w'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c, bad = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            bad |= parse_u32(optarg, 1, UINT32_MAX - 2, &slots);
            break;
        case 'm':
            bad |= parse_u32(optarg, 0, UINT32_MAX - 2, &host_slots);
            break;
        case 'H':
            bad |= parse_u32(optarg, 1, UINT32_MAX, &half_life);
            break;
        case 'W':
            bad |= parse_u32(optarg, 1, UINT32_MAX, &window);
            break;
        case 'S':
            synthetic = true;
            break;
        case 'L':
            bad |= parse_u32(optarg, 1, UINT16_MAX, &sp.n_layer);
            break;
        case 'E':
            bad |= parse_u32(optarg, 1, UINT16_MAX, &sp.n_expert);
            break;
        case 'K':
            bad |= parse_u32(optarg, 1, UINT16_MAX, &sp.top_k);
            break;
        case 'T':
            bad |= parse_u32(optarg, 1, 10000000, &sp.n_step);
            break;
        case 'Z':
            bad |= parse_double(optarg, 0, 16, &sp.skew);
            break;
        case 'R':
            bad |= parse_double(optarg, 0, 1, &sp.reuse);
            break;
        case 'D':
            bad |= parse_double(optarg, 0, 1, &sp.drift);
            break;
        case 'N':
            bad |= parse_u32(optarg, 0, UINT32_MAX, &seed);
            break;
        case 'w':
            write_path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            return usage(stdout);
        default:
            return usage(stderr);
        }
    }
    if (bad || (synthetic ? optind != argc : optind != argc - 1) || (!synthetic && !slots))
        return usage(stderr);
    sp.seed = seed;

    expert_trace_t *t = NULL;
    char what[256], err[256] = "";
    int r;
    if (synthetic) {
        if (sp.top_k > sp.n_expert || (uint64_t)sp.n_layer * sp.n_step * sp.top_k > 1ull << 31) {
            fprintf(stderr, "moe bench cache: top-k above experts or trace too large\n");
            return 2;
        }
        r = expert_trace_synth(&sp, &t);
        snprintf(what, sizeof(what),
                 "synthetic: %u layers x %u experts, top-%u, %u steps, skew %.2f, reuse "
                 "%.2f, drift %.3f, seed %u",
                 sp.n_layer, sp.n_expert, sp.top_k, sp.n_step, sp.skew, sp.reuse, sp.drift, seed);
        if (r == 0 && write_path && (r = expert_trace_save(t, write_path)) < 0)
            snprintf(err, sizeof(err), "cannot write %s: %s", write_path, strerror(-r));
        if (!slots)
            slots =
                sp.n_layer * sp.n_expert / 4 > sp.top_k ? sp.n_layer * sp.n_expert / 4 : sp.top_k;
    } else {
        r = expert_trace_load(argv[optind], &t, err, sizeof(err));
        snprintf(what, sizeof(what), "%s", argv[optind]);
    }
    if (r < 0) {
        fprintf(stderr, "moe bench cache: %s\n", *err ? err : strerror(-r));
        expert_trace_free(t);
        return 1;
    }
    if (t->max_batch > slots) {
        fprintf(stderr, "moe bench cache: a batch of %u experts does not fit in %u slots\n",
                t->max_batch, slots);
        expert_trace_free(t);
        return 2;
    }

    run_t runs[EXPERT_POLICY_COUNT_];
    for (int p = 0; p < EXPERT_POLICY_COUNT_; p++) {
        expert_cache_params_t cp = {.gpu_slots = slots,
                                    .host_slots = host_slots,
                                    .policy = (expert_policy_t)p,
                                    .half_life = half_life,
                                    .window = window};
        double t0 = now_s();
        r = expert_trace_replay(t, &cp, &runs[p].st);
        runs[p].ns_per_access = (now_s() - t0) * 1e9 / (t->n_access ? (double)t->n_access : 1);
        if (r < 0) {
            fprintf(stderr, "moe bench cache: replay (%s): %s\n",
                    expert_policy_name((expert_policy_t)p), strerror(-r));
            expert_trace_free(t);
            return 1;
        }
    }
    uint64_t opt = 0;
    double t0 = now_s();
    r = expert_trace_belady(t, slots, &opt);
    double belady_ns = (now_s() - t0) * 1e9 / (t->n_access ? (double)t->n_access : 1);
    if (r < 0) {
        fprintf(stderr, "moe bench cache: belady: %s\n", strerror(-r));
        expert_trace_free(t);
        return 1;
    }

    double n = t->n_access ? (double)t->n_access : 1, opt_rate = (double)opt / n;
    int best = 0;
    for (int p = 1; p < EXPERT_POLICY_COUNT_; p++)
        if (runs[p].st.hits > runs[best].st.hits)
            best = p;
    double ratio = opt ? (double)runs[best].st.hits / (double)opt : 1.0;
    uint64_t n_keys = (uint64_t)t->n_layer * t->n_expert;

    if (json) {
        printf("{\"bench\":\"cache\",\"trace\":");
        moe_json_str(what);
        printf(",\"n_layer\":%u,\"n_expert\":%u,\"batches\":%zu,\"accesses\":%zu,"
               "\"gpu_slots\":%u,\"host_slots\":%u,\"policies\":{",
               t->n_layer, t->n_expert, t->n_batch, t->n_access, slots, host_slots);
        for (int p = 0; p < EXPERT_POLICY_COUNT_; p++) {
            const expert_cache_stats_t *s = &runs[p].st;
            printf("%s\"%s\":{\"hit_rate\":%.6f,\"hits\":%llu,\"misses\":%llu,"
                   "\"host_hits\":%llu,\"vs_belady\":%.6f,\"ns_per_access\":%.1f}",
                   p ? "," : "", expert_policy_name((expert_policy_t)p), (double)s->hits / n,
                   (unsigned long long)s->hits, (unsigned long long)s->misses,
                   (unsigned long long)s->host_hits, opt ? (double)s->hits / (double)opt : 1.0,
                   runs[p].ns_per_access);
        }
        printf("},\"belady\":{\"hit_rate\":%.6f,\"hits\":%llu},\"best\":\"%s\","
               "\"ratio\":%.6f}\n",
               opt_rate, (unsigned long long)opt, expert_policy_name((expert_policy_t)best), ratio);
    } else {
        printf("trace: %s\n", what);
        printf("%zu accesses in %zu batches; gpu slots %u (%.1f%% of %llu experts), host "
               "slots %u\n",
               t->n_access, t->n_batch, slots, 100.0 * slots / (double)n_keys,
               (unsigned long long)n_keys, host_slots);
        printf("%-8s %9s %10s %10s %10s %10s\n", "policy", "hit rate", "misses", "host hits",
               "vs belady", "ns/access");
        for (int p = 0; p < EXPERT_POLICY_COUNT_; p++) {
            const expert_cache_stats_t *s = &runs[p].st;
            printf("%-8s %9.4f %10llu %10llu %10.4f %10.1f\n",
                   expert_policy_name((expert_policy_t)p), (double)s->hits / n,
                   (unsigned long long)s->misses, (unsigned long long)s->host_hits,
                   opt ? (double)s->hits / (double)opt : 1.0, runs[p].ns_per_access);
        }
        printf("%-8s %9.4f %10llu %10s %10s %10.1f\n", "belady", opt_rate,
               (unsigned long long)(t->n_access - opt), "-", "1.0000", belady_ns);
        printf("ratio (best policy / belady): %.4f (%s)\n", ratio,
               expert_policy_name((expert_policy_t)best));
    }
    expert_trace_free(t);
    return 0;
}
