/* Generation over HTTP: turns a validated api_request_t into prompt ids (chat template,
 * tokenizer), submits it to the scheduler, and answers it as one JSON object or as an SSE
 * stream in OpenAI's wire format (text_completion / chat.completion[.chunk]).
 * Runs in the connection's thread; never touches the engine. */
#pragma once
#include <microhttpd.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "api/api_request.h"
#include "log.h"
#include "sched/scheduler.h"
#include "text/chat.h"
#include "text/tokenizer.h"

typedef struct api_gen_ctx {
    sched_t *sched;
    const tokenizer_t *tok;
    const chat_template_t *chat; /* NULL: chat requests refused with chat_error */
    const char *chat_error;      /* why the model has no usable chat template */
    const char *model_id;
    uint32_t max_tokens;     /* server cap and default */
    uint32_t request_timeout_s;
    atomic_uint *live;       /* generation answers not yet finished (for a clean stop) */
    const log_ctx_t *log;    /* one record per request (never its text) */
    atomic_uint_fast64_t *tokens_in, *tokens_out; /* metrics counters, may be NULL */
} api_gen_ctx_t;

/* Status and body of an error answer, filled when api_generate returns < 0. */
typedef struct api_gen_error {
    unsigned status;
    const char *type;
    const char *retry_after; /* "N" or NULL */
    char message[256];
} api_gen_error_t;

/* Builds the response for req from a client with uid. On success *ret is a response to
 * queue with status 200 (streamed or not); the request is consumed either way. */
int api_generate(const api_gen_ctx_t *g, api_request_t *req, uid_t uid,
                 struct MHD_Response **ret, api_gen_error_t *err);
