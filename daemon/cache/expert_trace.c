/* Routing trace files (format in expert_trace.h): the in-memory trace, the bounds-checked
 * parser, and the streaming writer the engine records through.
 *
 * Invariants of an expert_trace_t: every batch is non-empty, its layer < n_layer, its ids
 * < n_expert and distinct, steps never go back, start[] is increasing with
 * start[n_batch] == n_access. expert_trace_append is the only way in, so a parsed trace
 * and a built one satisfy the same checks. Nothing a file says reaches an assert: every
 * length is checked against the bytes left before it is used. */
#include "cache/expert_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char trace_magic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
#define COUNT_UNKNOWN     UINT64_MAX
#define RECORD_HEAD_BYTES 8u

/* ---- little-endian fields ---- */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void header_encode(uint8_t *h, uint32_t n_layer, uint32_t n_expert, uint64_t count)
{
    memcpy(h, trace_magic, sizeof(trace_magic));
    put_u32(h + 8, EXPERT_TRACE_VERSION);
    put_u32(h + 12, EXPERT_TRACE_HEADER_BYTES);
    put_u32(h + 16, n_layer);
    put_u32(h + 20, n_expert);
    put_u64(h + 24, count);
}

static bool sizes_ok(uint32_t n_layer, uint32_t n_expert)
{
    return n_layer >= 1 && n_layer <= UINT16_MAX && n_expert >= 1 && n_expert <= UINT16_MAX;
}

/* Checks one batch against the sizes; `mark` ([n_expert]) flags repeats with *epoch. */
static int batch_ok(uint32_t n_layer, uint32_t n_expert, uint32_t *mark, uint32_t *epoch,
                    uint32_t layer, const uint16_t *ids, size_t n)
{
    if (layer >= n_layer || n == 0 || n > n_expert || !ids)
        return -EINVAL;
    if (++*epoch == 0) {
        memset(mark, 0, sizeof(*mark) * n_expert);
        *epoch = 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= n_expert || mark[ids[i]] == *epoch)
            return -EINVAL;
        mark[ids[i]] = *epoch;
    }
    return 0;
}

/* ---- in-memory trace ---- */

struct trace_private {
    expert_trace_t pub; /* first: expert_trace_t * and struct trace_private * alias */
    uint32_t *mark;     /* [n_expert] repeat detection */
    uint32_t epoch;
};

int expert_trace_new(uint32_t n_layer, uint32_t n_expert, expert_trace_t **ret)
{
    if (!ret || !sizes_ok(n_layer, n_expert))
        return -EINVAL;
    struct trace_private *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return -ENOMEM;
    expert_trace_t *t = &tp->pub;
    t->n_layer = n_layer;
    t->n_expert = n_expert;
    tp->mark = calloc(n_expert, sizeof(*tp->mark));
    t->start = calloc(1, sizeof(*t->start));
    if (!tp->mark || !t->start) {
        expert_trace_free(t);
        return -ENOMEM;
    }
    *ret = t;
    return 0;
}

expert_trace_t *expert_trace_free(expert_trace_t *t)
{
    if (!t)
        return NULL;
    struct trace_private *tp = (struct trace_private *)t;
    free(t->ids);
    free(t->start);
    free(t->layer);
    free(t->step);
    free(tp->mark);
    free(tp);
    return NULL;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return -ENOMEM;
        ncap *= 2;
    }
    void *q = realloc(*p, ncap * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = ncap;
    return 0;
}

int expert_trace_append(expert_trace_t *t, uint32_t step, uint32_t layer, const uint16_t *ids,
                        size_t n)
{
    struct trace_private *tp = (struct trace_private *)t;
    if (!t)
        return -EINVAL;
    int r = batch_ok(t->n_layer, t->n_expert, tp->mark, &tp->epoch, layer, ids, n);
    if (r < 0)
        return r;
    if (t->n_batch && step < t->step[t->n_batch - 1])
        return -EINVAL;

    if (t->n_batch + 1 > t->cap_batch) { /* step, layer and start grow together */
        if (t->cap_batch > SIZE_MAX / 4 / sizeof(size_t))
            return -ENOMEM;
        size_t ncap = t->cap_batch ? 2 * t->cap_batch : 64;
        uint32_t *s = realloc(t->step, ncap * sizeof(*s));
        if (!s)
            return -ENOMEM;
        t->step = s;
        uint16_t *l = realloc(t->layer, ncap * sizeof(*l));
        if (!l)
            return -ENOMEM;
        t->layer = l;
        size_t *st = realloc(t->start, (ncap + 1) * sizeof(*st));
        if (!st)
            return -ENOMEM;
        t->start = st;
        t->cap_batch = ncap;
    }
    if (grow((void **)&t->ids, &t->cap_ids, t->n_access + n, sizeof(*t->ids)) < 0)
        return -ENOMEM;

    memcpy(t->ids + t->n_access, ids, n * sizeof(*ids));
    t->step[t->n_batch] = step;
    t->layer[t->n_batch] = (uint16_t)layer;
    t->n_access += n;
    t->n_batch++;
    t->start[t->n_batch] = t->n_access;
    if (n > t->max_batch)
        t->max_batch = (uint32_t)n;
    return 0;
}

/* ---- reading ---- */

static int fail(int r, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(int r, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return r;
}

int expert_trace_parse(const void *buf, size_t len, expert_trace_t **ret, char *err, size_t errlen)
{
    const uint8_t *p = buf;
    if (!ret || (len && !buf))
        return -EINVAL;
    if (len < EXPERT_TRACE_HEADER_BYTES || memcmp(p, trace_magic, sizeof(trace_magic)))
        return fail(-EBADMSG, err, errlen, "not a routing trace (bad magic or too short)");
    if (get_u32(p + 8) != EXPERT_TRACE_VERSION)
        return fail(-ENOTSUP, err, errlen, "trace version %u, this reader knows %u", get_u32(p + 8),
                    EXPERT_TRACE_VERSION);
    uint32_t hsize = get_u32(p + 12), n_layer = get_u32(p + 16), n_expert = get_u32(p + 20);
    uint64_t count = get_u64(p + 24);
    if (hsize != EXPERT_TRACE_HEADER_BYTES || !sizes_ok(n_layer, n_expert))
        return fail(-EBADMSG, err, errlen, "bad trace header (size %u, %u layers, %u experts)",
                    hsize, n_layer, n_expert);

    expert_trace_t *t = NULL;
    int r = expert_trace_new(n_layer, n_expert, &t);
    if (r < 0)
        return fail(r, err, errlen, "out of memory");
    uint16_t *ids = calloc(n_expert, sizeof(*ids));
    if (!ids) {
        r = fail(-ENOMEM, err, errlen, "out of memory");
        goto fail;
    }
    size_t off = EXPERT_TRACE_HEADER_BYTES;
    while (off < len) {
        size_t at = off;
        if (len - off < RECORD_HEAD_BYTES) {
            r = fail(-EBADMSG, err, errlen, "record at byte %zu cut short", at);
            goto fail;
        }
        uint32_t step = get_u32(p + off);
        uint32_t layer = get_u16(p + off + 4), n = get_u16(p + off + 6);
        off += RECORD_HEAD_BYTES;
        if (n == 0 || n > n_expert) {
            r = fail(-EBADMSG, err, errlen, "record at byte %zu has %u experts", at, n);
            goto fail;
        }
        if ((len - off) / 2 < n) {
            r = fail(-EBADMSG, err, errlen, "record at byte %zu cut short", at);
            goto fail;
        }
        for (uint32_t i = 0; i < n; i++)
            ids[i] = get_u16(p + off + 2 * i);
        off += 2 * (size_t)n;
        r = expert_trace_append(t, step, layer, ids, n);
        if (r == -ENOMEM) {
            r = fail(r, err, errlen, "out of memory");
            goto fail;
        }
        if (r < 0) {
            r = fail(-EBADMSG, err, errlen,
                     "record at byte %zu: layer, expert out of range, repeated, or step "
                     "going back",
                     at);
            goto fail;
        }
    }
    if (count != COUNT_UNKNOWN && count != t->n_batch) {
        r = fail(-EBADMSG, err, errlen, "header says %llu records, file holds %zu",
                 (unsigned long long)count, t->n_batch);
        goto fail;
    }
    free(ids);
    *ret = t;
    return 0;

fail:
    free(ids);
    expert_trace_free(t);
    return r;
}

int expert_trace_load(const char *path, expert_trace_t **ret, char *err, size_t errlen)
{
    uint8_t *buf = NULL;
    struct stat st;
    int r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(-errno, err, errlen, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        r = fail(-errno, err, errlen, "cannot stat %s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > EXPERT_TRACE_MAX_FILE_BYTES) {
        r = fail(-EFBIG, err, errlen, "%s: not a regular file under %llu bytes", path,
                 (unsigned long long)EXPERT_TRACE_MAX_FILE_BYTES);
        goto out;
    }
    size_t len = (size_t)st.st_size, got = 0;
    buf = malloc(len ? len : 1);
    if (!buf) {
        r = fail(-ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    while (got < len) {
        ssize_t k = read(fd, buf + got, len - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r = fail(k < 0 ? -errno : -EBADMSG, err, errlen, "cannot read %s", path);
            goto out;
        }
        got += (size_t)k;
    }
    r = expert_trace_parse(buf, len, ret, err, errlen);
out:
    free(buf);
    close(fd);
    return r;
}

/* ---- writing ---- */

struct expert_trace_writer {
    FILE *f;
    uint32_t n_layer, n_expert;
    uint64_t count;
    int error;      /* first error, sticky */
    uint32_t *mark; /* [n_expert] */
    uint32_t epoch;
};

int expert_trace_writer_open(const char *path, uint32_t n_layer, uint32_t n_expert,
                             expert_trace_writer_t **ret)
{
    if (!path || !ret || !sizes_ok(n_layer, n_expert))
        return -EINVAL;
    expert_trace_writer_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->n_layer = n_layer;
    w->n_expert = n_expert;
    w->mark = calloc(n_expert, sizeof(*w->mark));
    if (!w->mark) {
        free(w);
        return -ENOMEM;
    }
    w->f = fopen(path, "wbe");
    if (!w->f) {
        int r = -errno;
        free(w->mark);
        free(w);
        return r;
    }
    uint8_t h[EXPERT_TRACE_HEADER_BYTES];
    header_encode(h, n_layer, n_expert, COUNT_UNKNOWN);
    if (fwrite(h, sizeof(h), 1, w->f) != 1)
        w->error = -EIO;
    *ret = w;
    return 0;
}

int expert_trace_writer_append(expert_trace_writer_t *w, uint32_t step, uint32_t layer,
                               const uint16_t *ids, size_t n)
{
    if (!w)
        return -EINVAL;
    if (w->error)
        return w->error;
    int r = batch_ok(w->n_layer, w->n_expert, w->mark, &w->epoch, layer, ids, n);
    if (r < 0)
        return r;
    uint8_t head[RECORD_HEAD_BYTES], buf[64];
    put_u32(head, step);
    put_u16(head + 4, (uint16_t)layer);
    put_u16(head + 6, (uint16_t)n);
    if (fwrite(head, sizeof(head), 1, w->f) != 1)
        return w->error = -EIO;
    for (size_t i = 0; i < n;) { /* in chunks of 32 ids: no allocation */
        size_t k = 0;
        for (; k < sizeof(buf) / 2 && i < n; k++, i++)
            put_u16(buf + 2 * k, ids[i]);
        if (fwrite(buf, 2, k, w->f) != k)
            return w->error = -EIO;
    }
    w->count++;
    return 0;
}

int expert_trace_writer_close(expert_trace_writer_t *w)
{
    if (!w)
        return 0;
    int r = w->error;
    uint8_t count[8];
    put_u64(count, w->count);
    /* Patch the record count in; a stream that cannot seek keeps "unknown". */
    if (!r && fflush(w->f) != 0)
        r = -errno;
    if (!r && fseek(w->f, 24, SEEK_SET) == 0 && fwrite(count, sizeof(count), 1, w->f) != 1)
        r = -EIO;
    if (fclose(w->f) != 0 && !r)
        r = -errno;
    free(w->mark);
    free(w);
    return r;
}

int expert_trace_save(const expert_trace_t *t, const char *path)
{
    if (!t)
        return -EINVAL;
    expert_trace_writer_t *w = NULL;
    int r = expert_trace_writer_open(path, t->n_layer, t->n_expert, &w);
    if (r < 0)
        return r;
    for (size_t b = 0; b < t->n_batch && r == 0; b++)
        r = expert_trace_writer_append(w, t->step[b], t->layer[b], t->ids + t->start[b],
                                       t->start[b + 1] - t->start[b]);
    int r2 = expert_trace_writer_close(w);
    return r < 0 ? r : r2;
}
