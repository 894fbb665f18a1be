/* `moe`: the developer and operator tool. One binary, one subcommand per job (inspect a
 * GGUF, make a synthetic model, run a generation, tokenize, benchmark). It links the same
 * libraries the daemon runs, so what it measures is what moed does. */
#include <stdio.h>
#include <string.h>

#include "moe.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"inspect", moe_cmd_inspect, "show a GGUF model's architecture, sizes and tensors"},
    {"mkmodel", moe_cmd_mkmodel, "write a deterministic synthetic MoE model"},
    {"run", moe_cmd_run, "generate tokens from a prompt"},
    {"tokenize", moe_cmd_tokenize, "text to token ids with a model's tokenizer"},
    {"detokenize", moe_cmd_detokenize, "token ids to text"},
    {"bench", moe_cmd_bench, "benchmarks (kernels, io, cache, decode, tokenize)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: moe COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n'moe COMMAND --help' describes each.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "moe: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

void moe_json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}
