/* moe run: not written yet (placeholder so the tool builds while it is). */
#include <stdio.h>

#include "moe.h"

int moe_cmd_run(int argc, char **argv)
{
    fprintf(stderr, "moe run: not implemented yet\n");
    return 1;
}
