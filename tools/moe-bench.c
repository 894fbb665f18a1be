/* `moe bench SUBCOMMAND`: dispatch to the benchmarks. Every benchmark compares side by
 * side in one run (against fio, a copy kernel, or a bound) because these machines are
 * noisy, and with --json prints one object whose headline ratio is the field "ratio". */
#include <stdio.h>
#include <string.h>

#include "moe.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} benches[] = {
    {"kernels", moe_bench_kernels, "matrix-vector bytes/s vs a copy kernel, per quant type"},
    {"io", moe_bench_io, "expert reads vs fio on the same file"},
    {"cache", moe_bench_cache, "cache policies vs Belady's optimum on a routing trace"},
    {"tokenize", moe_bench_tokenize, "tokenizer throughput"},
    {"decode", moe_bench_decode, "engine decode/prefill tokens/s vs min(compute, I/O) bound"},
};

int moe_cmd_bench(int argc, char **argv)
{
    if (argc >= 2) {
        for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
            if (!strcmp(argv[1], benches[i].name))
                return benches[i].fn(argc - 1, argv + 1);
    }
    FILE *f = (argc >= 2 && !strcmp(argv[1], "--help")) ? stdout : stderr;
    fprintf(f, "usage: moe bench NAME [ARGS...] [--json]\n\nbenchmarks:\n");
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        fprintf(f, "  %-9s %s\n", benches[i].name, benches[i].help);
    fprintf(f, "\n`moe bench NAME --help` gives a benchmark's options and its JSON fields.\n");
    return f == stdout ? 0 : 2;
}
