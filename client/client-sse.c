/* client-sse.c: splits a text/event-stream body into events (the subset moed writes).
 *
 * Bytes arrive in pieces cut anywhere (inside a line, inside a CRLF); the parser keeps the
 * partial line in p->line and the event's data lines in p->data, both grown on demand and
 * capped at MOE_CLIENT_MAX_LINE so a daemon that never sends a newline cannot make the
 * client allocate without bound. A line is "data: X" (the data, one optional space after
 * the colon dropped), ": comment" (moed's pings), another field (ignored), or empty (the end
 * of an event: its data goes to on_event). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client-internal.h"

void sse_init(sse_parser_t *p, int (*on_event)(void *, const char *, size_t),
              int (*on_comment)(void *), void *ud)
{
    memset(p, 0, sizeof(*p));
    p->on_event = on_event;
    p->on_comment = on_comment;
    p->ud = ud;
}

void sse_done(sse_parser_t *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

/* Make room for need more bytes plus a NUL in a buffer capped at MOE_CLIENT_MAX_LINE. */
static int reserve(char **buf, size_t *cap, size_t len, size_t need)
{
    if (len + need + 1 <= *cap)
        return 0;
    if (len + need + 1 > MOE_CLIENT_MAX_LINE)
        return -EMSGSIZE;
    size_t n = *cap ? *cap : 256;
    while (n < len + need + 1)
        n *= 2;
    if (n > MOE_CLIENT_MAX_LINE)
        n = MOE_CLIENT_MAX_LINE;
    char *t = realloc(*buf, n);
    if (!t)
        return -ENOMEM;
    *buf = t;
    *cap = n;
    return 0;
}

static int dispatch(sse_parser_t *p)
{
    if (!p->have_data)
        return 0;
    p->have_data = false;
    size_t n = p->data_len;
    p->data_len = 0;
    return p->on_event(p->ud, p->data, n);
}

static int line_done(sse_parser_t *p, const char *s, size_t n)
{
    if (n == 0)
        return dispatch(p);
    if (s[0] == ':')
        return p->on_comment ? p->on_comment(p->ud) : 0;
    if (n < 5 || memcmp(s, "data:", 5) != 0)
        return 0; /* event:, id:, retry: — moed does not send them; nothing to do */
    s += 5;
    n -= 5;
    if (n > 0 && s[0] == ' ')
        s++, n--;
    size_t sep = p->have_data ? 1 : 0;
    int rc = reserve(&p->data, &p->data_cap, p->data_len, n + sep);
    if (rc < 0)
        return rc;
    if (sep)
        p->data[p->data_len++] = '\n';
    memcpy(p->data + p->data_len, s, n);
    p->data_len += n;
    p->data[p->data_len] = '\0';
    p->have_data = true;
    return 0;
}

int sse_feed(sse_parser_t *p, const char *bytes, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(bytes, '\n', n);
        size_t take = nl ? (size_t)(nl - bytes) : n;
        int rc = reserve(&p->line, &p->line_cap, p->line_len, take);
        if (rc < 0)
            return rc;
        memcpy(p->line + p->line_len, bytes, take);
        p->line_len += take;
        bytes += take;
        n -= take;
        if (!nl)
            break;
        bytes++, n--; /* the '\n' */
        size_t len = p->line_len;
        if (len > 0 && p->line[len - 1] == '\r')
            len--;
        p->line[len] = '\0';
        p->line_len = 0;
        if ((rc = line_done(p, p->line, len)) != 0)
            return rc;
    }
    return 0;
}

int sse_finish(sse_parser_t *p)
{
    if (p->line_len > 0) {
        size_t len = p->line_len;
        if (p->line[len - 1] == '\r')
            len--;
        p->line[len] = '\0';
        p->line_len = 0;
        int rc = line_done(p, p->line, len);
        if (rc != 0)
            return rc;
    }
    return dispatch(p);
}
