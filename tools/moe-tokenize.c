/* moe tokenize: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_cmd_tokenize(int argc, char **argv)
{
    fprintf(stderr, "moe tokenize: not implemented yet\n");
    return 1;
}

int moe_cmd_detokenize(int argc, char **argv)
{
    fprintf(stderr, "moe detokenize: not implemented yet\n");
    return 1;
}

int moe_bench_tokenize(int argc, char **argv)
{
    fprintf(stderr, "moe bench tokenize: not implemented yet\n");
    return 1;
}
