/* moe bench cache: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_bench_cache(int argc, char **argv)
{
    fprintf(stderr, "moe bench cache: not implemented yet\n");
    return 1;
}
