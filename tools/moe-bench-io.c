/* moe bench io: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_bench_io(int argc, char **argv)
{
    fprintf(stderr, "moe bench io: not implemented yet\n");
    return 1;
}
