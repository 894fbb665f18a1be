/* Stream a completion from moed with libmoe-client.
 * Build: cc example.c $(pkg-config --cflags --libs moe-client) -o example */
#include <moe/client.h>
#include <stdio.h>

static int print_token(void *userdata, const char *text, size_t len, unsigned flags)
{
    (void)userdata, (void)flags; /* flags & MOE_CLIENT_TOKEN_REASONING: thinking */
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* non-zero stops the answer */
}

int main(int argc, char **argv)
{
    moe_client *c;
    if (moe_client_new(NULL, &c) < 0) /* $MOED_SOCKET, else /run/moed/moed.sock */
        return 1;
    moe_client_params p;
    moe_client_params_init(&p);
    p.max_tokens = 64;
    moe_client_result r;
    int rc =
        moe_client_complete(c, argc > 1 ? argv[1] : "Once upon a time", &p, print_token, NULL, &r);
    if (rc < 0) {
        fprintf(stderr, "example: %s\n", moe_client_errmsg(c));
    } else {
        printf("\n[%lld tokens, %s]\n", (long long)r.completion_tokens, r.finish_reason);
        moe_client_result_clear(&r);
    }
    moe_client_free(c);
    return rc < 0;
}
