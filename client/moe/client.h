/* libmoe-client: the C client of moed (an OpenAI-compatible HTTP API on a Unix socket).
 *
 * Use:
 *     moe_client *c;
 *     moe_client_new(NULL, &c);              // $MOED_SOCKET, else /run/moed/moed.sock
 *     moe_client_params p;
 *     moe_client_params_init(&p);
 *     p.max_tokens = 64;
 *     moe_client_result r;
 *     int rc = moe_client_complete(c, "Once upon a time", &p, on_token, NULL, &r);
 *     if (rc < 0) fprintf(stderr, "%s\n", moe_client_errmsg(c));
 *     else moe_client_result_clear(&r);
 *     moe_client_free(c);
 *
 * Conventions: every function that can fail returns 0 (or a count) on success and a
 * negative errno on failure, never touches errno, and writes its ret_* out-parameters only
 * on success. After a failure, moe_client_errmsg() says what went wrong in one line (the
 * daemon's own message when it sent one).
 *
 * Error mapping (negative errno returned -> cause):
 *   -ENOENT        no socket file at the path: moed is not running (or another path)
 *   -ECONNREFUSED  a socket file but nobody listening (a stale socket: moed is not running)
 *   -EACCES        permission denied: on the socket file, or HTTP 401/403 from moed
 *   -EINVAL        HTTP 400: the request was refused as malformed or out of range; also
 *                  a bad argument to a library function
 *   -E2BIG         HTTP 413: the request body is over the daemon's limit
 *   -EBUSY         HTTP 429: the daemon's queue is full; try again later
 *   -EAGAIN        HTTP 503: the daemon is loading or shutting down
 *   -EOPNOTSUPP    HTTP 404/405: the daemon does not serve this route (an older moed?)
 *   -EIO           any other HTTP 5xx, or an error event in the middle of a stream
 *                  (an error event carrying one of the codes above maps as above)
 *   -EPROTO        the answer is not HTTP/JSON/SSE as moed speaks it
 *   -EMSGSIZE      the answer is over the library's size limits (MOE_CLIENT_MAX_*)
 *   -ETIMEDOUT     no byte from the daemon for the timeout (moe_client_set_timeout)
 *   -ECANCELED     the request was cancelled (moe_client_cancel or a callback's non-zero)
 *   -ENAMETOOLONG  the socket path does not fit in a sockaddr_un
 *   -ENOMEM        out of memory
 *
 * Threads: a moe_client runs one request at a time. Calls on one object from several
 * threads are serialized by a lock inside it (a second caller waits); use one object per
 * thread for parallel requests. moe_client_cancel() is the exception: it may be called from
 * any thread and from a signal handler (it is async-signal-safe) while a request runs.
 * The library has no global state; it never prints and never installs signal handlers.
 * It sends with MSG_NOSIGNAL, so a daemon that goes away cannot raise SIGPIPE.
 */
#ifndef MOE_CLIENT_H
#define MOE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_CLIENT_PUBLIC __attribute__((visibility("default")))

/* Where moed listens unless told otherwise ($MOED_SOCKET overrides it). */
#define MOE_CLIENT_DEFAULT_SOCKET "/run/moed/moed.sock"

/* Bounds on what a (broken or hostile) daemon can make the client allocate. */
#define MOE_CLIENT_MAX_HEADER (16u << 10) /* status line plus headers */
#define MOE_CLIENT_MAX_BODY   (16u << 20) /* a non-streamed body, and the text kept */
#define MOE_CLIENT_MAX_LINE   (1u << 20)  /* one SSE line (one event's data) */

typedef struct moe_client moe_client;

/* Sampling and length settings. moe_client_params_init() marks every field "unset" (the
 * daemon's default applies); set the ones you want. */
typedef struct moe_client_params {
    int max_tokens;            /* > 0, or 0 = unset */
    double temperature;        /* 0..2 (0 = greedy), NaN = unset */
    double top_p;              /* (0, 1], NaN = unset */
    int top_k;                 /* >= 0 (0 = off), -1 = unset */
    double min_p;              /* 0..1, NaN = unset */
    double presence_penalty;   /* -2..2, NaN = unset */
    double frequency_penalty;  /* -2..2, NaN = unset */
    double repetition_penalty; /* (0, 10], NaN = unset */
    int has_seed;              /* non-zero: send seed */
    int64_t seed;
    const char *const *stop; /* n_stop stop strings (the daemon allows a few), or NULL */
    size_t n_stop;
    int ignore_eos;    /* non-zero: generate max_tokens even past end-of-text */
    const char *model; /* model id, or NULL (moed serves one model) */
} moe_client_params;

/* One chat message: role is "system", "user" or "assistant". */
typedef struct moe_client_message {
    const char *role;
    const char *content;
} moe_client_message;

/* What a finished request produced. Owned by the caller: free with
 * moe_client_result_clear(). text holds the answer (content), reasoning the thinking
 * (reasoning_content, "" when none); both NUL-terminated, capped at MOE_CLIENT_MAX_BODY.
 * A model can emit a NUL byte (JSON "\u0000"): the _len fields count every byte. */
typedef struct moe_client_result {
    char *text;
    size_t text_len;
    char *reasoning;
    size_t reasoning_len;
    char finish_reason[16];    /* "stop", "length", or "" when the daemon sent none */
    char id[64];               /* the daemon's completion id, or "" */
    int64_t prompt_tokens;     /* from usage; -1 when the daemon sent none */
    int64_t completion_tokens; /* from usage; -1 when the daemon sent none */
} moe_client_result;

/* Flags of a token callback's piece of text. */
#define MOE_CLIENT_TOKEN_REASONING 0x1u /* the text is thinking (reasoning_content) */

/* Called with each piece of streamed text as it arrives (len bytes at text, also
 * NUL-terminated, len counting any NUL byte inside; a piece may be several tokens). Return 0 to
 * go on, non-zero to cancel: the request then ends with -ECANCELED. */
typedef int (*moe_client_token_fn)(void *userdata, const char *text, size_t len, unsigned flags);

/* Create a client for the daemon at socket_path (NULL: $MOED_SOCKET when set and
 * non-empty, else MOE_CLIENT_DEFAULT_SOCKET). Does not connect: each request opens its own
 * connection. Errors: -ENAMETOOLONG, -ENOMEM. */
MOE_CLIENT_PUBLIC int moe_client_new(const char *socket_path, moe_client **ret);

/* Free a client (NULL is fine); returns NULL. Must not race a request on it. */
MOE_CLIENT_PUBLIC moe_client *moe_client_free(moe_client *c);

/* The socket path the client uses (owned by c). */
MOE_CLIENT_PUBLIC const char *moe_client_socket_path(const moe_client *c);

/* One line on the last failure of a call on c (owned by c, valid until the next call). */
MOE_CLIENT_PUBLIC const char *moe_client_errmsg(const moe_client *c);

/* Give up when the daemon sends nothing for timeout_ms (0: wait forever; default 300 s).
 * moed sends SSE pings while it processes a long prompt, so this need not cover it. */
MOE_CLIENT_PUBLIC void moe_client_set_timeout(moe_client *c, int timeout_ms);

/* Check that a daemon answers on the socket (connects, then hangs up). Errors: -ENOENT,
 * -ECONNREFUSED, -EACCES, and other connect(2) errors. */
MOE_CLIENT_PUBLIC int moe_client_connect(moe_client *c);

/* Cancel the request running on c, from any thread, a signal handler or its own token
 * callback: the request returns -ECANCELED soon after (its connection is shut down, which
 * the daemon sees as the client going away and frees the sequence). No effect when no
 * request runs. Async-signal-safe. */
MOE_CLIENT_PUBLIC void moe_client_cancel(moe_client *c);

/* Set every field of *p to "unset". */
MOE_CLIENT_PUBLIC void moe_client_params_init(moe_client_params *p);

/* Free what a result holds and zero it (NULL members are fine). */
MOE_CLIENT_PUBLIC void moe_client_result_clear(moe_client_result *r);

/* A text completion (POST /v1/completions). With on_token, the answer streams (SSE) and
 * on_token gets each piece as it arrives; without (NULL), the call blocks for the whole
 * answer. params may be NULL (all defaults). ret may be NULL when the caller only wants
 * the callback; otherwise it is filled on success (free it with moe_client_result_clear).
 * Errors: see the mapping above. */
MOE_CLIENT_PUBLIC int moe_client_complete(moe_client *c, const char *prompt,
                                          const moe_client_params *params,
                                          moe_client_token_fn on_token, void *userdata,
                                          moe_client_result *ret);

/* A chat completion (POST /v1/chat/completions) of n messages, through the model's chat
 * template; otherwise as moe_client_complete(). Thinking arrives with
 * MOE_CLIENT_TOKEN_REASONING set and lands in ret->reasoning, never in ret->text. */
MOE_CLIENT_PUBLIC int moe_client_chat(moe_client *c, const moe_client_message *messages, size_t n,
                                      const moe_client_params *params, moe_client_token_fn on_token,
                                      void *userdata, moe_client_result *ret);

/* The ids of the models served (GET /v1/models): a NULL-terminated array of strings in
 * *ret, freed with moe_client_strv_free(). Returns the count. */
MOE_CLIENT_PUBLIC int moe_client_models(moe_client *c, char ***ret);

/* Free a NULL-terminated string array (NULL is fine); returns NULL. */
MOE_CLIENT_PUBLIC char **moe_client_strv_free(char **strv);

/* GET /health: 0 when the daemon is ready, with the body (a JSON object: status, model,
 * device, queued, active) in *ret when ret is not NULL (free() it). A loading daemon
 * answers 503: -EAGAIN, its message in moe_client_errmsg(). */
MOE_CLIENT_PUBLIC int moe_client_health(moe_client *c, char **ret);

/* GET /metrics: the Prometheus text in *ret (free() it). */
MOE_CLIENT_PUBLIC int moe_client_metrics(moe_client *c, char **ret);

/* Find one sample in Prometheus text by its full name, labels included exactly as the
 * daemon writes them (e.g. "moed_tokens_total{kind=\"completion\"}"), and parse its value.
 * Errors: -ENOENT (no such sample), -EPROTO (the value is not a number). */
MOE_CLIENT_PUBLIC int moe_client_metrics_get(const char *text, const char *name, double *ret);

#ifdef __cplusplus
}
#endif
#endif
