/* client-http.c: the small HTTP/1.1 client of libmoe-client, over AF_UNIX.
 *
 * One connection per request (Connection: close), so no keep-alive state can go stale.
 * The reader keeps one fixed buffer per response (http_conn_t.buf) and decodes
 * Content-Length, chunked, and read-until-close bodies from it. Every size a daemon
 * controls is bounded: the head (MOE_CLIENT_MAX_HEADER), a chunk-size line (the buffer),
 * a whole body (the caller's max). Every wait goes through poll() with the client's
 * timeout, and checks the cancel flag, which moe_client_cancel() sets before it shuts the
 * socket down (that wakes a blocked poll with end-of-file).
 *
 * Invariant: h->fd is published in c->fd for exactly as long as it is open. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client-internal.h"

int client_fail(moe_client *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    return err;
}

int client_status_errno(int status)
{
    switch (status) {
    case 400:
        return -EINVAL;
    case 401:
    case 403:
        return -EACCES;
    case 404:
    case 405:
        return -EOPNOTSUPP;
    case 413:
        return -E2BIG;
    case 429:
        return -EBUSY;
    case 503:
        return -EAGAIN;
    default:
        return status >= 500 ? -EIO : -EPROTO;
    }
}

int http_connect(moe_client *c, http_conn_t *h)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, c->path, sizeof(sa.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return client_fail(c, -errno, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        switch (e) {
        case ENOENT:
        case ENOTDIR:
            return client_fail(c, -ENOENT,
                               "moed is not running: no socket at %s "
                               "(start it with 'systemctl start moed', or pass --socket)",
                               c->path);
        case ECONNREFUSED:
            return client_fail(c, -ECONNREFUSED,
                               "moed is not running: nobody listens on %s "
                               "(a stale socket)",
                               c->path);
        case EACCES:
        case EPERM:
            return client_fail(c, -EACCES,
                               "permission denied on %s "
                               "(are you in the group allowed to use moed?)",
                               c->path);
        default:
            return client_fail(c, -e, "cannot connect to %s: %s", c->path, strerror(e));
        }
    }
    memset(h, 0, offsetof(http_conn_t, buf));
    h->c = c;
    h->fd = fd;
    atomic_store(&c->fd, fd);
    /* A cancel that came before the fd was published found nothing to shut down. */
    if (atomic_load(&c->cancel)) {
        http_close(h);
        return client_fail(c, -ECANCELED, "cancelled");
    }
    return 0;
}

void http_close(http_conn_t *h)
{
    if (h->fd < 0)
        return;
    atomic_store(&h->c->fd, -1);
    /* A cancel that read the fd before it was unpublished finishes its shutdown() first
     * (a few instructions; a signal handler on this thread completes before we spin). */
    while (atomic_load(&h->c->cancelling) > 0)
        sched_yield();
    close(h->fd);
    h->fd = -1;
}

static int cancelled(http_conn_t *h)
{
    return atomic_load(&h->c->cancel) ? client_fail(h->c, -ECANCELED, "cancelled") : 0;
}

static int send_all(http_conn_t *h, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(h->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            int rc = cancelled(h);
            return rc < 0 ? rc : client_fail(h->c, -e, "send to moed: %s", strerror(e));
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Read more bytes into buf (compacting it first). Returns the count, 0 at end of file. */
static ssize_t fill(http_conn_t *h)
{
    if (h->pos > 0) {
        memmove(h->buf, h->buf + h->pos, h->len - h->pos);
        h->len -= h->pos;
        h->pos = 0;
    }
    if (h->len == sizeof(h->buf))
        return client_fail(h->c, -EMSGSIZE, "a line from moed is longer than %zu bytes",
                           sizeof(h->buf));
    for (;;) {
        int rc = cancelled(h);
        if (rc < 0)
            return rc;
        struct pollfd pfd = {.fd = h->fd, .events = POLLIN};
        int timeout = h->c->timeout_ms > 0 ? h->c->timeout_ms : -1;
        int n = poll(&pfd, 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return client_fail(h->c, -errno, "poll: %s", strerror(errno));
        if (n == 0)
            return client_fail(h->c, -ETIMEDOUT, "moed sent nothing for %d ms", h->c->timeout_ms);
        ssize_t k = recv(h->fd, h->buf + h->len, sizeof(h->buf) - h->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if ((rc = cancelled(h)) < 0)
            return rc;
        if (k < 0)
            return client_fail(h->c, -errno, "read from moed: %s", strerror(errno));
        h->len += (size_t)k;
        return k;
    }
}

/* The next line (CRLF or LF ended, terminator stripped, NUL-terminated in place). */
static int read_line(http_conn_t *h, char **ret, size_t *ret_len)
{
    for (;;) {
        char *s = h->buf + h->pos;
        char *nl = memchr(s, '\n', h->len - h->pos);
        if (nl) {
            size_t n = (size_t)(nl - s);
            h->pos += n + 1;
            if (n > 0 && s[n - 1] == '\r')
                n--;
            s[n] = '\0';
            *ret = s;
            *ret_len = n;
            return 0;
        }
        ssize_t k = fill(h);
        if (k < 0)
            return (int)k;
        if (k == 0)
            return client_fail(h->c, -EPROTO, "moed closed the connection in a header");
    }
}

static int parse_u64(const char *s, int base, uint64_t max, uint64_t *ret)
{
    uint64_t v = 0;
    size_t n = 0;
    for (; s[n]; n++) {
        int d;
        char ch = s[n];
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (base == 16 && ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (base == 16 && ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            break;
        if (v > (max - (uint64_t)d) / (uint64_t)base)
            return -ERANGE;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (n == 0)
        return -EINVAL;
    *ret = v;
    return (int)n;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static int read_head(http_conn_t *h)
{
    size_t total = 0;
    char *line;
    size_t n;
    int rc = read_line(h, &line, &n);
    if (rc < 0)
        return rc;
    total += n;
    uint64_t status;
    if (strncmp(line, "HTTP/1.", 7) != 0 || !line[7] || line[8] != ' ' ||
        parse_u64(line + 9, 10, 999, &status) != 3 || status < 100)
        return client_fail(h->c, -EPROTO, "moed's answer is not HTTP/1.x");
    h->status = (int)status;
    h->mode = HTTP_BODY_EOF;
    for (;;) {
        if ((rc = read_line(h, &line, &n)) < 0)
            return rc;
        total += n + 2;
        if (total > MOE_CLIENT_MAX_HEADER)
            return client_fail(h->c, -EMSGSIZE, "moed's response head is over %u bytes",
                               MOE_CLIENT_MAX_HEADER);
        if (n == 0)
            break;
        char *colon = strchr(line, ':');
        if (!colon)
            return client_fail(h->c, -EPROTO, "a malformed header line from moed");
        *colon = '\0';
        char *value = trim(colon + 1);
        if (strcasecmp(line, "Content-Length") == 0) {
            uint64_t len;
            if (parse_u64(value, 10, UINT64_MAX / 2, &len) != (int)strlen(value))
                return client_fail(h->c, -EPROTO, "a malformed Content-Length from moed");
            if (h->mode != HTTP_BODY_CHUNKED) {
                h->mode = HTTP_BODY_LENGTH;
                h->remaining = len;
            }
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            if (strcasestr(value, "chunked")) {
                h->mode = HTTP_BODY_CHUNKED; /* chunked wins over a length (RFC 9112) */
                h->remaining = 0;
            }
        }
    }
    /* No body for 1xx (skipped by the caller), 204 and 304. */
    if (h->status == 204 || h->status == 304)
        h->body_done = true;
    return 0;
}

int http_request(http_conn_t *h, const char *method, const char *path, const char *body)
{
    size_t blen = body ? strlen(body) : 0;
    char head[512], length[96] = "";
    if (body)
        snprintf(length, sizeof(length),
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: libmoe-client\r\n"
                     "Accept: application/json, text/event-stream\r\nConnection: close\r\n"
                     "%s\r\n",
                     method, path, length);
    if (n < 0 || (size_t)n >= sizeof(head))
        return client_fail(h->c, -EINVAL, "request line too long");
    int rc = send_all(h, head, (size_t)n);
    if (rc == 0 && body)
        rc = send_all(h, body, blen);
    if (rc < 0)
        return rc;
    do {
        if ((rc = read_head(h)) < 0)
            return rc;
    } while (h->status < 200); /* 100 Continue and friends: the real answer follows */
    return 0;
}

/* CHUNKED: start the next chunk (after the CRLF of the previous one). Sets body_done at
 * the last chunk, after skipping its trailers. */
static int next_chunk(http_conn_t *h)
{
    char *line;
    size_t n;
    int rc;
    if (h->in_chunk) {
        if ((rc = read_line(h, &line, &n)) < 0)
            return rc;
        if (n != 0)
            return client_fail(h->c, -EPROTO, "a chunk from moed is longer than its size");
        h->in_chunk = false;
    }
    if ((rc = read_line(h, &line, &n)) < 0)
        return rc;
    uint64_t size;
    int used = parse_u64(line, 16, MOE_CLIENT_MAX_BODY * 64ull, &size);
    if (used < 0 || (line[used] && line[used] != ';' && line[used] != ' '))
        return client_fail(h->c, -EPROTO, "a malformed chunk size from moed");
    if (size == 0) {
        do { /* trailers up to an empty line */
            if ((rc = read_line(h, &line, &n)) < 0)
                return rc;
        } while (n != 0);
        h->body_done = true;
        return 0;
    }
    h->remaining = size;
    h->in_chunk = true;
    return 0;
}

ssize_t http_read_body(http_conn_t *h, char *out, size_t cap)
{
    while (!h->body_done) {
        if (h->mode == HTTP_BODY_LENGTH && h->remaining == 0) {
            h->body_done = true;
            break;
        }
        if (h->mode == HTTP_BODY_CHUNKED && h->remaining == 0) {
            int rc = next_chunk(h);
            if (rc < 0)
                return rc;
            continue;
        }
        if (h->pos == h->len) {
            ssize_t k = fill(h);
            if (k < 0)
                return k;
            if (k == 0) {
                if (h->mode != HTTP_BODY_EOF)
                    return client_fail(h->c, -EPROTO,
                                       "moed closed the connection "
                                       "before the end of the body");
                h->body_done = true;
                break;
            }
        }
        size_t n = h->len - h->pos;
        if (n > cap)
            n = cap;
        if (h->mode != HTTP_BODY_EOF && n > h->remaining)
            n = (size_t)h->remaining;
        memcpy(out, h->buf + h->pos, n);
        h->pos += n;
        if (h->mode != HTTP_BODY_EOF)
            h->remaining -= n;
        return (ssize_t)n;
    }
    return 0;
}

int http_read_all(http_conn_t *h, size_t max, char **ret, size_t *ret_len)
{
    size_t len = 0, cap = 4096;
    char *s = malloc(cap);
    if (!s)
        return client_fail(h->c, -ENOMEM, "out of memory");
    for (;;) {
        if (cap - len < 2048) {
            if (cap > max) {
                free(s);
                return client_fail(h->c, -EMSGSIZE, "moed's answer is over %zu bytes", max);
            }
            char *t = realloc(s, cap * 2);
            if (!t) {
                free(s);
                return client_fail(h->c, -ENOMEM, "out of memory");
            }
            s = t;
            cap *= 2;
        }
        ssize_t k = http_read_body(h, s + len, cap - len - 1);
        if (k < 0) {
            free(s);
            return (int)k;
        }
        if (k == 0)
            break;
        len += (size_t)k;
        if (len > max) {
            free(s);
            return client_fail(h->c, -EMSGSIZE, "moed's answer is over %zu bytes", max);
        }
    }
    s[len] = '\0';
    *ret = s;
    if (ret_len)
        *ret_len = len;
    return 0;
}
