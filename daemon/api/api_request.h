/* Parsing and validating the body of an OpenAI-style completion or chat request into
 * generation parameters. Every field is type- and range-checked here, once, so nothing
 * downstream sees an out-of-range number; unknown fields are ignored (SDKs send extras such
 * as "user"). Pure: no I/O, no globals; the fuzz harness drives it directly. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_MAX_STOP 4
#define API_MAX_STOP_LEN 256
#define API_MAX_MESSAGES 1024
#define API_MAX_TOP_LOGPROBS 20

enum api_kind { API_COMPLETION, API_CHAT };

typedef struct api_message {
    char *role;    /* system, user, assistant, tool */
    char *content; /* text parts joined */
} api_message_t;

typedef struct api_request {
    enum api_kind kind;
    char *model;            /* as sent; NULL when absent */
    char *prompt;           /* completions: the prompt text (NULL when prompt_ids) */
    int32_t *prompt_ids;    /* completions: a prompt given as token ids */
    size_t n_prompt_ids;
    api_message_t *messages; /* chat */
    size_t n_messages;
    uint32_t max_tokens;    /* 0 = not given: the server's cap applies */
    float temperature;      /* [0, 2], default 1 */
    float top_p;            /* (0, 1], default 1 */
    uint32_t top_k;         /* 0 = off */
    float min_p;            /* [0, 1], default 0 */
    float presence_penalty; /* [-2, 2] */
    float frequency_penalty;/* [-2, 2] */
    float repetition_penalty; /* (0, 10], default 1 */
    bool has_seed;
    uint64_t seed;
    char *stop[API_MAX_STOP];
    size_t n_stop;
    bool stream;
    bool include_usage;     /* stream_options.include_usage */
    bool logprobs;
    uint32_t top_logprobs;  /* [0, 20] */
    bool ignore_eos;        /* llama.cpp's extension: generate past end-of-generation tokens
                             * (benchmarks want exactly max_tokens) */
} api_request_t;

/* An error a client caused: HTTP status, OpenAI error type, the offending parameter. */
typedef struct api_error {
    int status;
    const char *type; /* "invalid_request_error", ... */
    char param[64];
    char message[256];
} api_error_t;

/* Parses body (len bytes, not NUL-terminated) as a request of the given kind. max_tokens_cap
 * bounds max_tokens. Returns 0, or -EINVAL with err filled (status 400), or -ENOMEM. */
int api_request_parse(const char *body, size_t len, enum api_kind kind, uint32_t max_tokens_cap,
                      api_request_t *ret, api_error_t *err);
void api_request_clear(api_request_t *r);
