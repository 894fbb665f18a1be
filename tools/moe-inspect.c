/* moe inspect: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_cmd_inspect(int argc, char **argv)
{
    fprintf(stderr, "moe inspect: not implemented yet\n");
    return 1;
}
