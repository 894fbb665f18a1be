/* The HTTP/1.1 server on a listening Unix socket (libmicrohttpd, one thread per
 * connection so a streamed response may block on its token queue without stalling others).
 * It routes, checks peer credentials against the allow-list, bounds bodies, and answers
 * every error as OpenAI-shaped JSON with the right status. Generation itself is handed to
 * the ops the daemon supplies (the scheduler); this file never touches GPU state. */
#pragma once
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "api/api_generate.h"
#include "api/api_request.h"
#include "log.h"
#include "settings.h"

typedef struct api_metrics {
    atomic_uint_fast64_t requests[6];    /* by status class: [1]=1xx .. [5]=5xx */
    atomic_uint_fast64_t denied;         /* connections refused by the allow-list */
    atomic_uint_fast64_t prompt_tokens;
    atomic_uint_fast64_t completion_tokens;
    api_hist_t latency;                  /* generation requests, seconds */
    api_hist_t ttft;                     /* time to first token, seconds */
} api_metrics_t;

/* Figures the daemon adds to /metrics and /health. */
typedef struct api_ops {
    void *userdata;
    /* Extra text appended to /metrics (engine and cache figures); may be NULL. */
    void (*metrics)(void *userdata, char *buf, size_t len);
    /* Extra JSON members for /health, e.g. "\"device\":\"...\"" (no braces), also while
     * loading (the progress); may be NULL. */
    void (*health)(void *userdata, char *buf, size_t len);
} api_ops_t;

typedef struct api_server_config {
    const settings_t *settings;
    const log_ctx_t *log;
    const char *model_id;     /* the id /v1/models lists */
    int64_t model_created;    /* unix time for /v1/models */
    api_ops_t ops;
    api_gen_ctx_t gen;        /* gen.sched NULL: generation answers 503 */
} api_server_config_t;

typedef struct api_server api_server_t;

/* Starts serving listen_fd (already bound and listening; not closed by the server). The
 * server answers 503 to everything but /health until api_server_set_ready(s, true). */
int api_server_new(const api_server_config_t *cfg, int listen_fd, api_server_t **ret,
                   char *err, size_t errlen);
/* Stops accepting connections and waits up to timeout_ms for every generation answer in
 * progress to be written to its end (its final event and [DONE]). -ETIMEDOUT if some were
 * still running. */
int api_server_drain(api_server_t *s, int timeout_ms);
/* Stops accepting and ends connections; waits for connection threads to finish. */
api_server_t *api_server_free(api_server_t *s);
void api_server_set_ready(api_server_t *s, bool ready);
/* Replaces the allow-lists (comma-separated names or ids); connections opened from now on
 * are checked against the new lists. -ENOENT (unknown name) with a reason; nothing changes
 * then. */
int api_server_set_allow(api_server_t *s, const char *users, const char *groups, char *err,
                         size_t errlen);
/* Generation goes to sched from now on (set before ready). */
void api_server_set_generator(api_server_t *s, sched_t *sched);
api_metrics_t *api_server_metrics(api_server_t *s);
unsigned api_server_connections(api_server_t *s);
