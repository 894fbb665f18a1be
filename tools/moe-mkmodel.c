/* moe mkmodel: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_cmd_mkmodel(int argc, char **argv)
{
    fprintf(stderr, "moe mkmodel: not implemented yet\n");
    return 1;
}
