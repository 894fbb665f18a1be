/* libmoe-client internals shared by its files: the client object, the HTTP/1.1 response
 * reader (client-http.c) and the SSE event splitter (client-sse.c). Nothing here is
 * exported: only the moe_client_* functions of moe/client.h are. */
#ifndef MOE_CLIENT_INTERNAL_H
#define MOE_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>
#include <sys/types.h>

#include "moe/client.h"

struct moe_client {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char errmsg[512];
    int timeout_ms;
    /* Set by moe_client_cancel(), cleared when a request starts. */
    atomic_int cancel;
    /* The socket of the request in flight, -1 between requests: moe_client_cancel() shuts it
     * down so a blocked read returns at once. */
    atomic_int fd;
    /* moe_client_cancel() calls between reading fd and shutting it down: http_close() waits
     * for none before close(), so a cancel never shuts down a reused descriptor. */
    atomic_int cancelling;
    /* One request at a time per object. */
    pthread_mutex_t lock;
};

/* Record a one-line message for moe_client_errmsg() and return err (a negative errno). */
int client_fail(moe_client *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The negative errno for an HTTP error status (see the mapping in moe/client.h). */
int client_status_errno(int status);

enum http_body_mode {
    HTTP_BODY_LENGTH,  /* Content-Length bytes */
    HTTP_BODY_CHUNKED, /* Transfer-Encoding: chunked */
    HTTP_BODY_EOF,     /* until the daemon closes (HTTP/1.0 style) */
};

/* One response being read from one connection. buf holds bytes read but not yet consumed
 * (buf[pos..len)); it is the only input buffer: no allocation per read. */
typedef struct http_conn {
    moe_client *c;
    int fd;
    int status;
    enum http_body_mode mode;
    uint64_t remaining; /* LENGTH: body bytes left; CHUNKED: bytes left in this chunk */
    bool in_chunk;      /* CHUNKED: a chunk's data is being read (its CRLF follows) */
    bool body_done;
    size_t pos, len;
    char buf[16384];
} http_conn_t;

/* Connect to c->path and publish the socket for moe_client_cancel(). On failure errmsg
 * says why (no socket file, stale socket, permission). */
int http_connect(moe_client *c, http_conn_t *h);

/* Unpublish and close the connection (idempotent). */
void http_close(http_conn_t *h);

/* Send one request (body may be NULL for GET) and read the response's status line and
 * headers; h->status is set, the body is next. */
int http_request(http_conn_t *h, const char *method, const char *path, const char *body);

/* Read up to cap bytes of the body into out: the count, 0 at the end of the body, or a
 * negative errno (-ECANCELED when cancelled). */
ssize_t http_read_body(http_conn_t *h, char *out, size_t cap);

/* Read the whole body (at most max bytes, else -EMSGSIZE) into a NUL-terminated heap
 * string. */
int http_read_all(http_conn_t *h, size_t max, char **ret, size_t *ret_len);

/* SSE: splits a body into lines and events. Callback per event's data (NUL-terminated);
 * comment lines (": ping") go to on_comment when set. A non-zero return stops the split and
 * is returned. */
typedef struct sse_parser {
    char *line; /* the line being assembled (grows to MOE_CLIENT_MAX_LINE at most) */
    size_t line_len, line_cap;
    char *data; /* the event's data lines joined by '\n' */
    size_t data_len, data_cap;
    bool have_data;
    int (*on_event)(void *ud, const char *data, size_t len);
    int (*on_comment)(void *ud);
    void *ud;
} sse_parser_t;

void sse_init(sse_parser_t *p, int (*on_event)(void *, const char *, size_t),
              int (*on_comment)(void *), void *ud);
/* Feed n bytes; returns 0, a callback's non-zero, or -EMSGSIZE/-ENOMEM. */
int sse_feed(sse_parser_t *p, const char *bytes, size_t n);
/* The body ended: dispatch an event that had no blank line after it. */
int sse_finish(sse_parser_t *p);
void sse_done(sse_parser_t *p);

#endif
