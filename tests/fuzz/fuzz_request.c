/* libFuzzer harness for the request path: an HTTP body -> api_request_parse, as both a
 * completion and a chat request (the server calls it with the body as it arrived, not
 * NUL-terminated, and the configured max-tokens cap). Whatever is accepted is checked
 * against the promises api_request.h makes to everything downstream:
 *   - every number lies in its documented range (no NaN, no inf);
 *   - every string is NUL-terminated with no NUL inside its JSON length, so C code that
 *     reads it with strlen sees all of it;
 *   - a completion has exactly one of prompt / prompt_ids, non-negative ids; a chat has
 *     1..API_MAX_MESSAGES messages whose role is one of the four the renderers know;
 *   - n_stop <= API_MAX_STOP, each stop 1..API_MAX_STOP_LEN bytes;
 *   - a refusal is a 400 with a message, and leaves nothing allocated (LeakSanitizer).
 * The first input byte picks the max-tokens cap (0 = none, or a small one) so the cap's
 * boundary is reached, and the mode: the rest is the whole body, or (bit 2) the value of one
 * field (bits 3-7 choose which) inside an otherwise valid request, so that mutation alone,
 * with no seeds or dictionary, reaches every field's checker. A broken invariant traps. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static void check_range(float v, float lo, float hi, bool lo_open)
{
    CHECK(isfinite(v));
    CHECK(v <= hi && v >= lo);
    CHECK(!lo_open || v > lo);
}

/* A C string: terminated, and (read through a volatile sink) every byte is addressable. */
static size_t check_str(const char *s)
{
    CHECK(s);
    size_t n = strlen(s);
    volatile char sink = 0;
    if (n)
        sink ^= s[n - 1];
    (void)sink;
    return n;
}

static void check_accepted(const api_request_t *r, enum api_kind kind, uint32_t cap)
{
    CHECK(r->kind == kind);
    if (r->model)
        check_str(r->model);
    if (kind == API_COMPLETION) {
        CHECK(!r->messages && r->n_messages == 0);
        CHECK((r->prompt != NULL) != (r->prompt_ids != NULL));
        if (r->prompt)
            check_str(r->prompt);
        else
            CHECK(r->n_prompt_ids > 0);
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            CHECK(r->prompt_ids[i] >= 0);
    } else {
        static const char *const roles[] = {"system", "user", "assistant", "tool"};
        CHECK(!r->prompt && !r->prompt_ids);
        CHECK(r->n_messages >= 1 && r->n_messages <= API_MAX_MESSAGES && r->messages);
        for (size_t i = 0; i < r->n_messages; i++) {
            size_t k;
            check_str(r->messages[i].content);
            check_str(r->messages[i].role);
            for (k = 0; k < 4; k++)
                if (!strcmp(r->messages[i].role, roles[k]))
                    break;
            CHECK(k < 4);
        }
    }
    CHECK(r->max_tokens <= (cap ? cap : UINT32_MAX >> 1));
    check_range(r->temperature, 0, 2, false);
    check_range(r->top_p, 0, 1, true);
    check_range(r->min_p, 0, 1, false);
    check_range(r->presence_penalty, -2, 2, false);
    check_range(r->frequency_penalty, -2, 2, false);
    check_range(r->repetition_penalty, 0, 10, true);
    CHECK(r->top_k <= 1u << 20);
    CHECK(r->n_stop <= API_MAX_STOP);
    for (size_t i = 0; i < r->n_stop; i++) {
        size_t n = check_str(r->stop[i]);
        CHECK(n >= 1 && n <= API_MAX_STOP_LEN);
    }
    for (size_t i = r->n_stop; i < API_MAX_STOP; i++)
        CHECK(r->stop[i] == NULL);
    CHECK(r->top_logprobs <= API_MAX_TOP_LOGPROBS);
    /* bools hold 0 or 1: a bool never written would hold the 0xa5 filling (UBSan) */
    CHECK(r->stream + r->include_usage + r->logprobs + r->ignore_eos + r->has_seed <= 5);
}

static void one(const char *body, size_t len, enum api_kind kind, uint32_t cap)
{
    api_request_t r;
    api_error_t e;
    memset(&r, 0xa5, sizeof(r)); /* the parser must not rely on the caller zeroing it */
    memset(&e, 0, sizeof(e));
    int rc = api_request_parse(body, len, kind, cap, &r, &e);
    if (rc == 0) {
        check_accepted(&r, kind, cap);
        api_request_clear(&r);
        return;
    }
    CHECK(rc == -EINVAL || rc == -ENOMEM);
    if (rc == -EINVAL) {
        CHECK(e.status == 400 && e.type && e.type[0]);
        CHECK(memchr(e.message, 0, sizeof(e.message)) && e.message[0]);
        CHECK(memchr(e.param, 0, sizeof(e.param)));
    }
}

static const char *const fields[] = {
    "prompt",
    "messages",
    "model",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "top_k",
    "seed",
    "stop",
    "stream",
    "ignore_eos",
    "stream_options",
    "logprobs",
    "top_logprobs",
};

/* {"prompt":"a","messages":[{"role":"user","content":"x"}],"FIELD":VALUE} (without the
 * fixed prompt or messages when FIELD is one of them). Returns the length written. */
static size_t templated(char *out, const char *field, const uint8_t *value, size_t n)
{
    size_t o = (size_t)sprintf(out, "{");
    if (strcmp(field, "prompt"))
        o += (size_t)sprintf(out + o, "\"prompt\":\"a\",");
    if (strcmp(field, "messages"))
        o += (size_t)sprintf(out + o, "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],");
    o += (size_t)sprintf(out + o, "\"%s\":", field);
    memcpy(out + o, value, n);
    o += n;
    out[o++] = '}';
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t caps[] = {0, 1, 16, 4096};
    if (size < 1)
        return 0;
    uint32_t cap = caps[data[0] & 3];
    /* An exact-size heap copy: ASan sees any read past the body's end. */
    size_t len = size - 1;
    char *body;
    if (data[0] & 4) {
        const char *field = fields[(data[0] >> 3) % (sizeof(fields) / sizeof(fields[0]))];
        char *tmp = malloc(len + 128);
        if (!tmp)
            return 0;
        len = templated(tmp, field, data + 1, len);
        body = malloc(len);
        if (body)
            memcpy(body, tmp, len);
        free(tmp);
    } else {
        body = malloc(len ? len : 1);
        if (body)
            memcpy(body, data + 1, len);
    }
    if (!body)
        return 0;
    one(body, len, API_COMPLETION, cap);
    one(body, len, API_CHAT, cap);
    free(body);
    return 0;
}
