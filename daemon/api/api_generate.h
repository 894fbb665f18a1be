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

/* A Prometheus histogram of seconds with fixed buckets (API_HIST_BOUNDS). */
#define API_HIST_N 12
typedef struct api_hist {
    atomic_uint_fast64_t bucket[API_HIST_N + 1]; /* last: +Inf */
    atomic_uint_fast64_t sum_us;
    atomic_uint_fast64_t count;
} api_hist_t;
extern const double api_hist_bounds[API_HIST_N];
void api_hist_observe(api_hist_t *h, double seconds);
/* Appends the histogram's text (name_bucket{le=..}, _sum, _count) to buf at *off. */
void api_hist_format(const api_hist_t *h, const char *name, const char *help, char *buf,
                     size_t len, size_t *off);

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
    api_hist_t *latency, *ttft;                  /* may be NULL */
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
