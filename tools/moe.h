/* Subcommands of the `moe` tool. Each takes its own argv (argv[0] is the subcommand's
 * name), prints its own --help, and returns the process exit status: 0 success, 1 failure,
 * 2 usage error. */
#pragma once
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"
#include "settings.h"

int moe_cmd_inspect(int argc, char **argv);
int moe_cmd_mkmodel(int argc, char **argv);
int moe_cmd_run(int argc, char **argv);
int moe_cmd_tokenize(int argc, char **argv);
int moe_cmd_detokenize(int argc, char **argv);
int moe_cmd_bench(int argc, char **argv);

/* Prints s as a JSON string (quotes, escapes) on stdout: the --json outputs. */
void moe_json_str(const char *s);

/* `moe bench` subcommands; each takes --json and then prints one JSON object whose
 * headline ratio is in the field "ratio". */
int moe_bench_kernels(int argc, char **argv);
int moe_bench_io(int argc, char **argv);
int moe_bench_cache(int argc, char **argv);
int moe_bench_tokenize(int argc, char **argv);
int moe_bench_decode(int argc, char **argv);

/* ---- the engine, as `moe run` and `moe bench decode` open it (moe-run.c) ---- */

/* Load progress drawn on stderr (only when it is a terminal). */
typedef struct moe_progress {
    bool on;
    int shown;          /* permille last drawn; -1: nothing drawn yet */
    double t0, t_drawn; /* CLOCK_MONOTONIC seconds: the load's start, the last draw */
} moe_progress_t;

/* The engine flags both commands take. Values go through moed's settings table
 * (settings_set), so names, ranges and meanings are those of moed.conf(5). */
typedef struct moe_engine_opts {
    settings_t st;      /* engine, device, gpu-cache, host-cache, ctx, io-depth, prefetch,
                         * cache-policy, cache-dir */
    bool ctx_set;       /* --ctx given */
    bool cache_dir_set; /* --cache-dir given (moed's default is not the CLI's) */
    moe_progress_t bar; /* outlives the engine: the progress callback points here */
} moe_engine_opts_t;

/* getopt_long entries of the engine flags; their val is MOE_OPT_ENGINE, and the handler
 * finds the flag by the long index (moe_engine_opt). */
#define MOE_OPT_ENGINE 0x4000
// clang-format off
#define MOE_ENGINE_LONGOPTS                                     \
    {"engine", required_argument, NULL, MOE_OPT_ENGINE},        \
    {"device", required_argument, NULL, MOE_OPT_ENGINE},        \
    {"gpu-cache", required_argument, NULL, MOE_OPT_ENGINE},     \
    {"host-cache", required_argument, NULL, MOE_OPT_ENGINE},    \
    {"ctx", required_argument, NULL, MOE_OPT_ENGINE},           \
    {"no-prefetch", no_argument, NULL, MOE_OPT_ENGINE},         \
    {"cache-policy", required_argument, NULL, MOE_OPT_ENGINE},  \
    {"io-depth", required_argument, NULL, MOE_OPT_ENGINE},      \
    {"cache-dir", required_argument, NULL, MOE_OPT_ENGINE}
// clang-format on
/* The --help lines of those flags (reference: whether --engine is offered). */
void moe_engine_usage(FILE *f, bool reference, const char *ctx_default);

/* Fills o with moed's defaults. 0 or -ENOMEM. */
int moe_engine_opts_init(moe_engine_opts_t *o);
void moe_engine_opts_clear(moe_engine_opts_t *o);
/* One engine flag: name is the long option's name, value its argument (NULL for flags).
 * 0, or -EINVAL with a one-line reason in err. */
int moe_engine_opt(moe_engine_opts_t *o, const char *name, const char *value, char *err,
                   size_t errlen);
/* With the validation layer on (MOE_VK_VALIDATION=1), any message it gave is a bug: prints
 * the count and the last one as who, and returns -EPROTO. 0 otherwise. */
int moe_engine_check(engine_t *e, const char *who);
/* Opens the engine o asks for on m (file path): n_ctx positions per sequence, n_seq
 * sequences, steps of up to n_batch entries. gpu_cache overrides o's --gpu-cache when not
 * UINT64_MAX. 0 or -errno with a one-line reason in err. */
int moe_engine_open(moe_engine_opts_t *o, const model_t *m, const char *path, uint32_t n_ctx,
                    uint32_t n_seq, uint32_t n_batch, uint64_t gpu_cache, engine_t **ret, char *err,
                    size_t errlen);
