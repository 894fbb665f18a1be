/* moe bench kernels: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_bench_kernels(int argc, char **argv)
{
    fprintf(stderr, "moe bench kernels: not implemented yet\n");
    return 1;
}
