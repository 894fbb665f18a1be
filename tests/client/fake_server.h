/* A fake moed for the client tests: a thread serving a Unix socket in a temporary folder,
 * answering every connection with one canned byte string, written in pieces of `split`
 * bytes (so the client sees arbitrary read boundaries), then optionally an endless filler
 * (to test the client's size caps) or a pause until the client hangs up (to test
 * cancellation and timeouts). It records the last request it read. */
#ifndef FAKE_SERVER_H
#define FAKE_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct fake_server {
    char dir[64];
    char path[128];
    int lfd;
    pthread_t thread;
    /* What to answer (set before the request; the server reads them per connection). */
    char *response;
    size_t response_len;
    size_t split; /* bytes per write, 0 = all at once */
    bool filler;  /* after the response, write 'x' until the client hangs up */
    int hold_ms;  /* after the response, wait up to this long for the client to hang up */
    /* What happened. */
    char request[65536];
    size_t request_len;
    int connections;
    bool client_hung_up; /* the client closed while the server held or filled */
    pthread_mutex_t lock;
} fake_server_t;

/* Start a fake server on a fresh socket (fails the test on error). */
fake_server_t *fake_start(void);
/* Stop it, remove its socket and folder. */
void fake_stop(fake_server_t *f);
/* Wait (up to 5 s) until n connections were served in all; returns whether they were. */
bool fake_wait_served(fake_server_t *f, int n);
/* Set the answer (copied). */
void fake_answer(fake_server_t *f, const char *bytes, size_t len);

/* Build answers (heap strings, free()). */
/* A response with Content-Length and a body. */
char *fake_http(int status, const char *content_type, const char *body);
/* A 200 text/event-stream response whose body is sse, chunked in chunks of chunk bytes. */
char *fake_sse_chunked(const char *sse, size_t chunk);

#endif
