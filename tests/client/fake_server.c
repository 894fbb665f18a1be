/* fake_server.c: the canned-answer Unix socket server of the client tests (see
 * fake_server.h). One thread accepts connections one at a time until fake_stop() shuts the
 * listening socket down. */
#include "fake_server.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void sleep_us(long us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Read the request head and its Content-Length body (bounded by the request buffer). */
static void read_request(fake_server_t *f, int fd)
{
    size_t len = 0;
    size_t want = SIZE_MAX;
    while (len < sizeof(f->request) - 1 && len < want) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t k = recv(fd, f->request + len, sizeof(f->request) - 1 - len, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
        f->request[len] = '\0';
        char *end = strstr(f->request, "\r\n\r\n");
        if (end && want == SIZE_MAX) {
            want = (size_t)(end + 4 - f->request);
            char *cl = strcasestr(f->request, "Content-Length:");
            if (cl && cl < end)
                want += strtoul(cl + 15, NULL, 10);
        }
    }
    f->request_len = len;
}

/* Wait until the client hangs up (or ms pass). */
static bool wait_hangup(int fd, int ms)
{
    char b[256];
    for (int waited = 0; waited < ms; waited += 10) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) > 0) {
            ssize_t k = recv(fd, b, sizeof(b), MSG_DONTWAIT);
            if (k == 0 || (k < 0 && errno != EAGAIN))
                return true;
        }
    }
    return false;
}

static void serve(fake_server_t *f, int fd)
{
    read_request(f, fd);
    pthread_mutex_lock(&f->lock);
    size_t len = f->response_len, split = f->split ? f->split : len;
    char *resp = malloc(len + 1);
    memcpy(resp, f->response, len);
    bool filler = f->filler;
    int hold = f->hold_ms;
    pthread_mutex_unlock(&f->lock);
    bool gone = false;
    for (size_t off = 0; off < len && !gone; off += split) {
        size_t n = len - off < split ? len - off : split;
        if (send(fd, resp + off, n, MSG_NOSIGNAL) < 0)
            gone = true;
        if (split < len)
            sleep_us(200);
    }
    free(resp);
    if (filler && !gone) {
        char block[4096];
        memset(block, 'x', sizeof(block));
        while (send(fd, block, sizeof(block), MSG_NOSIGNAL) > 0)
            ;
        gone = true;
    }
    if (hold > 0 && !gone)
        gone = wait_hangup(fd, hold);
    pthread_mutex_lock(&f->lock);
    f->client_hung_up = gone;
    f->connections++;
    pthread_mutex_unlock(&f->lock);
    close(fd);
}

static void *fake_main(void *arg)
{
    fake_server_t *f = arg;
    for (;;) {
        int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        serve(f, fd);
    }
}

fake_server_t *fake_start(void)
{
    fake_server_t *f = calloc(1, sizeof(*f));
    ck_assert_ptr_nonnull(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/moe-client-test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/moed.sock", f->dir);
    pthread_mutex_init(&f->lock, NULL);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->lfd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(f->path), sizeof(sa.sun_path));
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(f->lfd, 16), 0);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
    return f;
}

void fake_stop(fake_server_t *f)
{
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    unlink(f->path);
    rmdir(f->dir);
    free(f->response);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

bool fake_wait_served(fake_server_t *f, int n)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&f->lock);
        bool done = f->connections >= n;
        pthread_mutex_unlock(&f->lock);
        if (done)
            return true;
        sleep_us(10000);
    }
    return false;
}

void fake_answer(fake_server_t *f, const char *bytes, size_t len)
{
    pthread_mutex_lock(&f->lock);
    free(f->response);
    f->response = malloc(len + 1);
    memcpy(f->response, bytes, len);
    f->response[len] = '\0';
    f->response_len = len;
    pthread_mutex_unlock(&f->lock);
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Whatever";
    }
}

char *fake_http(int status, const char *content_type, const char *body)
{
    char *s;
    ck_assert_int_ge(asprintf(&s,
                              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                              "\r\n%s",
                              status, reason(status), content_type, strlen(body), body),
                     0);
    return s;
}

char *fake_sse_chunked(const char *sse, size_t chunk)
{
    size_t n = strlen(sse);
    size_t cap = n * 2 + 256 + (n / (chunk ? chunk : 1) + 1) * 16;
    char *s = malloc(cap);
    int off = snprintf(s, cap,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        off += snprintf(s + off, cap - (size_t)off, "%zx\r\n", k);
        memcpy(s + off, sse + i, k);
        off += (int)k;
        off += snprintf(s + off, cap - (size_t)off, "\r\n");
    }
    snprintf(s + off, cap - (size_t)off, "0\r\n\r\n");
    return s;
}
