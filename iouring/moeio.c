/* moeio.c: the policy half of libmoeio (moeio.h): reads of byte ranges, widened, sorted,
 * pipelined at a fixed depth through one backend (moeio-ops.h), with continuation of short
 * reads, retries and per-read errors.
 *
 * A read's life (the function that performs each step):
 *
 *   moeio_submit:  validate -> (bad: FINISHED, res -EINVAL)
 *                  widen to [aoff, aoff+span) and link into `pending`, sorted by offset
 *   io_fill:       PENDING -> IN FLIGHT: one op = the next chunk [aoff+done, ...) of at most
 *                  op_max bytes that stays inside one registered buffer (io_issue)
 *   io_complete:   op came back with res:
 *                    res > 0, wanted bytes covered           -> FINISHED, res 0
 *                    res > 0, not covered (chunked or short) -> next op, IN FLIGHT
 *                    -EAGAIN / -EINTR                         -> same op again (retries)
 *                    -EINVAL from the first O_DIRECT reads    -> O_DIRECT off, same op again
 *                    0 (end of file) / other -errno           -> FINISHED, res -ENODATA/-errno
 *   io_finish:     FINISHED -> `done` list (moeio_reap) or counted off (moeio_read_batch)
 *
 * Invariants: inflight <= depth, counting ops queued to the backend and not yet reaped; a
 * read has at most one op outstanding (its embedded priv_.op); every exit from moeio_reap /
 * moeio_submit / moeio_read_batch (io_drive) leaves no op queued unsubmitted; `done` only grows here and shrinks in
 * moeio_reap. With O_DIRECT every op's offset, length and buffer are multiples of
 * MOEIO_ALIGN: widening makes them so, continuations restart at the aligned offset at or
 * below the short end (re-reading < 4 KiB), chunk limits are multiples of 4 KiB.
 *
 * Short reads: O_DIRECT reads that reach end of file return the bytes up to it (that is how
 * the last range of a file is read); io_uring may also return short for other reasons, so
 * any short read is continued until the wanted bytes are in, with a cap on attempts that do
 * not make progress. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "iouring/moeio-ops.h"

#define OP_MAX (1u << 30) /* bytes per op and per registered iovec (kernel: SZ_1G) */
#define RETRY_MAX 16u            /* EAGAIN/EINTR/no-progress attempts per read */
#define DEPTH_DEFAULT 32u
#define THREADS_DEFAULT 4u

enum read_flags {
    READ_BATCH = 1u << 0,  /* owned by moeio_read_batch: not put on `done` */
    READ_DIRECT = 1u << 1, /* outstanding op was issued with O_DIRECT on */
};

typedef struct read_list {
    moeio_read_t *head, *tail;
    size_t n;
} read_list_t;

struct moeio {
    int fd;
    uint64_t file_size;
    bool direct, direct_proven; /* O_DIRECT on; a direct read has succeeded */
    unsigned depth;
    uint32_t op_max;            /* bytes per op and per registered iovec */
    const moeio_ops_t *ops;     /* what ops go through: the backend or a test wrapper */
    void *state;
    moeio_uring_t *uring;       /* exactly one of uring / pread is set */
    moeio_pread_t *pread;
    char *pool_base;            /* registered pool, NULL if none registered */
    size_t pool_size;
    read_list_t pending;        /* waiting for a free slot of the depth */
    read_list_t done;           /* finished, waiting for moeio_reap */
    unsigned inflight;          /* ops given to the backend, not reaped */
    unsigned queued;            /* of which not yet submitted */
    size_t batch_left;          /* reads of the running moeio_read_batch not finished */
    int fatal;                  /* backend failure: every later call returns it */
    uint64_t t_inflight;        /* when inflight last changed (for stats.inflight_ns) */
    moeio_stats_t stats;
    moeio_info_t info;
};

/* ---- small helpers ------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Call before inflight changes: integrates the depth actually used over time. */
static void io_account(moeio_t *io, uint64_t now)
{
    if (io->t_inflight)
        io->stats.inflight_ns += (uint64_t)io->inflight * (now - io->t_inflight);
    io->t_inflight = now;
}

static moeio_read_t *read_of_op(moeio_op_t *op)
{
    return (moeio_read_t *)((char *)op - offsetof(moeio_read_t, priv_.op));
}

static void list_push(read_list_t *l, moeio_read_t *r)
{
    r->priv_.next = NULL;
    if (l->tail)
        l->tail->priv_.next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static moeio_read_t *list_pop(read_list_t *l)
{
    moeio_read_t *r = l->head;
    if (r) {
        l->head = r->priv_.next;
        if (!l->head)
            l->tail = NULL;
        l->n--;
    }
    return r;
}

/* Stable merge sort of a NULL-terminated list by file offset: no allocation. */
static moeio_read_t *list_sort(moeio_read_t *h, size_t n)
{
    if (n < 2)
        return h;
    moeio_read_t *b = h, *prev = NULL;
    for (size_t i = 0; i < n / 2; i++)
        prev = b, b = b->priv_.next;
    prev->priv_.next = NULL;
    moeio_read_t *a = list_sort(h, n / 2);
    b = list_sort(b, n - n / 2);
    moeio_read_t head = {0}, *t = &head;
    while (a && b) {
        moeio_read_t **m = b->offset < a->offset ? &b : &a;
        t->priv_.next = *m;
        t = *m;
        *m = (*m)->priv_.next;
    }
    t->priv_.next = a ? a : b;
    return head.priv_.next;
}

uint64_t moeio_span(uint64_t offset, uint64_t len, uint32_t *ret_inner)
{
    uint64_t a = offset & ~(uint64_t)(MOEIO_ALIGN - 1);
    uint64_t end = (offset + len + MOEIO_ALIGN - 1) & ~(uint64_t)(MOEIO_ALIGN - 1);
    if (ret_inner)
        *ret_inner = (uint32_t)(offset - a);
    return end - a;
}

const char *moeio_backend_name(enum moeio_backend b)
{
    switch (b) {
    case MOEIO_BACKEND_AUTO: return "auto";
    case MOEIO_BACKEND_IO_URING: return "io_uring";
    case MOEIO_BACKEND_PREAD: return "pread";
    }
    return "?";
}

int moeio_backend_from_name(const char *name, enum moeio_backend *ret)
{
    for (enum moeio_backend b = MOEIO_BACKEND_AUTO; b <= MOEIO_BACKEND_PREAD; b++)
        if (name && !strcmp(name, moeio_backend_name(b))) {
            *ret = b;
            return 0;
        }
    return -EINVAL;
}

/* Records a degraded mode once, with its reason, in info.notes / info.text. */
static void io_note(moeio_t *io, enum moeio_note note, int err, const char *what)
{
    if (io->info.notes & note)
        return;
    io->info.notes |= note;
    const char *name = strerrorname_np(-err);
    size_t used = strlen(io->info.text);
    snprintf(io->info.text + used, sizeof(io->info.text) - used, "%s%s (%s)",
             used ? "; " : "", what, name ? name : "?");
}

/* ---- opening --------------------------------------------------------------------------- */

static int io_open_file(moeio_t *io, const char *path, bool buffered)
{
    int fd = -1;
    if (!buffered) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (fd >= 0)
            io->direct = true;
        else if (errno != EINVAL)
            return -errno;
        else
            io_note(io, MOEIO_NOTE_BUFFERED, (io->info.buffered_err = -EINVAL),
                    "O_DIRECT refused by the filesystem: buffered reads through the page cache");
    }
    if (fd < 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -errno;
    }
    io->fd = fd;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    io->file_size = (uint64_t)st.st_size;
    return 0;
}

/* The pool as iovecs of at most op_max bytes, as io_uring_register_buffers wants. */
static int io_pool_iovecs(const moeio_t *io, const moeio_pool_t *pool, struct iovec **ret,
                          unsigned *ret_n)
{
    size_t size = moeio_pool_size(pool), piece = io->op_max;
    size_t n_pieces = (size + piece - 1) / piece;
    if (n_pieces > 16384) /* IORING_MAX_REG_BUFFERS */
        return -E2BIG;
    unsigned n = (unsigned)n_pieces;
    struct iovec *iov = calloc(n, sizeof(*iov));
    if (!iov)
        return -ENOMEM;
    char *base = moeio_pool_base(pool);
    for (unsigned i = 0; i < n; i++) {
        size_t off = (size_t)i * piece;
        iov[i] = (struct iovec){base + off, size - off < piece ? size - off : piece};
    }
    *ret = iov;
    *ret_n = n;
    return 0;
}

static int io_start_uring(moeio_t *io, const moeio_config_t *cfg, moeio_pool_t *pool)
{
    struct iovec *iov = NULL;
    unsigned n_iov = 0;
    if (pool && !cfg->no_register_buffers) {
        int r = io_pool_iovecs(io, pool, &iov, &n_iov);
        if (r < 0)
            n_iov = 0, io->info.unregistered_err = r;
    }
    int r = moeio_uring_new(io->fd, io->depth, iov, n_iov, !cfg->no_register_file, &io->uring);
    free(iov);
    if (r < 0)
        return r;
    int e = moeio_uring_buffers_err(io->uring);
    if (e == 0) {
        io->pool_base = moeio_pool_base(pool);
        io->pool_size = moeio_pool_size(pool);
        io->info.buffers_registered = true;
    } else if (e < 0 || io->info.unregistered_err < 0) {
        e = e < 0 ? e : io->info.unregistered_err;
        io->info.unregistered_err = e;
        io_note(io, MOEIO_NOTE_UNREGISTERED, e,
                "io_uring_register_buffers failed (RLIMIT_MEMLOCK without CAP_IPC_LOCK?): "
                "unregistered reads");
    }
    e = moeio_uring_file_err(io->uring);
    if (e == 0) {
        io->info.file_registered = true;
    } else if (e < 0) {
        io->info.file_unreg_err = e;
        io_note(io, MOEIO_NOTE_FILE_UNREG, e, "io_uring_register_files failed: plain fd");
    }
    io->ops = &moeio_uring_ops;
    io->state = io->uring;
    io->info.backend = MOEIO_BACKEND_IO_URING;
    return 0;
}

static int io_start_backend(moeio_t *io, const moeio_config_t *cfg, moeio_pool_t *pool,
                            unsigned threads)
{
    if (cfg->backend != MOEIO_BACKEND_PREAD) {
        int r = io_start_uring(io, cfg, pool);
        if (r == 0)
            return 0;
        if (cfg->backend == MOEIO_BACKEND_IO_URING)
            return r;
        io->info.pread_err = r;
        io_note(io, MOEIO_NOTE_PREAD, r, "io_uring unavailable: pread worker pool");
    }
    int r = moeio_pread_new(io->fd, threads, &io->pread);
    if (r < 0)
        return r;
    io->ops = &moeio_pread_ops;
    io->state = io->pread;
    io->info.backend = MOEIO_BACKEND_PREAD;
    io->info.threads = threads;
    return 0;
}

int moeio_new(const char *path, const moeio_config_t *cfg, moeio_pool_t *pool, moeio_t **ret)
{
    static const moeio_config_t defaults = {0};
    if (!cfg)
        cfg = &defaults;
    unsigned depth = cfg->depth ? cfg->depth : DEPTH_DEFAULT;
    unsigned threads = cfg->threads ? cfg->threads : THREADS_DEFAULT;
    uint32_t op_max = cfg->max_op_bytes ? cfg->max_op_bytes : OP_MAX;
    if (!path || depth > MOEIO_DEPTH_MAX || threads > MOEIO_THREADS_MAX ||
        cfg->backend > MOEIO_BACKEND_PREAD || op_max % MOEIO_ALIGN || op_max > OP_MAX)
        return -EINVAL;
    moeio_t *io = calloc(1, sizeof(*io));
    if (!io)
        return -ENOMEM;
    io->fd = -1;
    io->depth = depth;
    io->op_max = op_max;
    int r = io_open_file(io, path, cfg->buffered);
    if (r < 0)
        goto fail;
    r = io_start_backend(io, cfg, pool, threads);
    if (r < 0)
        goto fail;
    if (cfg->wrapper) {
        cfg->wrapper->inner.ops = io->ops;
        cfg->wrapper->inner.state = io->state;
        io->ops = cfg->wrapper->ops;
        io->state = cfg->wrapper;
    }
    io->info.depth = depth;
    io->info.file_size = io->file_size;
    io->info.direct = io->direct;
    *ret = io;
    return 0;
fail:
    moeio_free(io);
    return r;
}

/* ---- the pipeline ---------------------------------------------------------------------- */

static void io_finish(moeio_t *io, moeio_read_t *r, int res)
{
    r->res = res;
    r->inner = (uint32_t)(r->offset - r->priv_.aoff);
    moeio_stats_t *s = &io->stats;
    s->reads++;
    if (res < 0) {
        s->errors++;
    } else {
        s->reads_ok++;
        s->bytes += r->len;
    }
    uint64_t lat = r->priv_.t0_ns ? now_ns() - r->priv_.t0_ns : 0;
    uint64_t us = lat / 1000;
    unsigned b = us ? 63u - (unsigned)__builtin_clzll(us) : 0;
    s->lat_hist[b < MOEIO_LAT_BUCKETS ? b : MOEIO_LAT_BUCKETS - 1]++;
    s->lat_ns_total += lat;
    if (r->priv_.flags & READ_BATCH)
        io->batch_left--;
    else
        list_push(&io->done, r);
}

/* Hands the read's next chunk to the backend. */
static int io_issue(moeio_t *io, moeio_read_t *r)
{
    moeio_op_t *op = &r->priv_.op;
    uint64_t left = r->priv_.span - r->priv_.done;
    char *buf = (char *)r->dst + r->priv_.done;
    uint32_t len = left < io->op_max ? (uint32_t)left : io->op_max;
    int idx = -1;
    if (io->pool_base && buf >= io->pool_base && buf < io->pool_base + io->pool_size) {
        size_t at = (size_t)(buf - io->pool_base);
        size_t piece_end = (at / io->op_max + 1) * io->op_max;
        if (piece_end > io->pool_size)
            piece_end = io->pool_size;
        if (len > piece_end - at)
            len = (uint32_t)(piece_end - at);
        idx = (int)(at / io->op_max);
    }
    *op = (moeio_op_t){.buf = buf, .off = r->priv_.aoff + r->priv_.done, .len = len,
                       .buf_index = idx};
    if (io->direct)
        r->priv_.flags |= READ_DIRECT;
    else
        r->priv_.flags &= ~(unsigned)READ_DIRECT;
    uint64_t now = now_ns();
    if (!r->priv_.t0_ns)
        r->priv_.t0_ns = now;
    int e = io->ops->queue(io->state, op);
    if (e < 0)
        return e;
    io_account(io, now);
    io->inflight++;
    io->queued++;
    io->stats.ops++;
    return 0;
}

/* O_DIRECT was accepted at open but the first reads fail with EINVAL (some filesystems
 * only check in their read path): continue buffered, once, with a note. */
static int io_drop_direct(moeio_t *io)
{
    if (io->direct) {
        int fl = fcntl(io->fd, F_GETFL);
        if (fl < 0 || fcntl(io->fd, F_SETFL, fl & ~O_DIRECT) < 0)
            return -errno;
        io->direct = false;
        io->info.direct = false;
        io->info.buffered_err = -EINVAL;
        io_note(io, MOEIO_NOTE_BUFFERED, -EINVAL,
                "O_DIRECT reads refused by the filesystem: buffered reads through the page cache");
    }
    return 0;
}

static int io_complete(moeio_t *io, moeio_read_t *r)
{
    moeio_op_t *op = &r->priv_.op;
    int res = op->res;
    uint64_t want_end = r->offset - r->priv_.aoff + r->len; /* in span coordinates */
    if (res > 0) {
        io->stats.bytes_io += (uint64_t)res;
        if (r->priv_.flags & READ_DIRECT)
            io->direct_proven = true;
        uint64_t before = r->priv_.done;
        r->priv_.done += (uint64_t)res;
        if (r->priv_.done >= want_end) {
            io_finish(io, r, 0);
            return 0;
        }
        if ((uint32_t)res < op->len) {
            io->stats.short_reads++;
            if (io->direct)
                r->priv_.done &= ~(uint64_t)(MOEIO_ALIGN - 1);
            if (r->priv_.done <= before && ++r->priv_.retries > RETRY_MAX) {
                io_finish(io, r, -EIO);
                return 0;
            }
        }
        return io_issue(io, r);
    }
    if (res == 0) { /* end of file before the wanted bytes: the file shrank */
        io_finish(io, r, -ENODATA);
        return 0;
    }
    if (res == -EINVAL && (r->priv_.flags & READ_DIRECT) && !io->direct_proven) {
        int e = io_drop_direct(io);
        if (e < 0) {
            io_finish(io, r, res);
            return 0;
        }
        return io_issue(io, r);
    }
    if ((res == -EAGAIN || res == -EINTR) && ++r->priv_.retries <= RETRY_MAX) {
        io->stats.retries++;
        return io_issue(io, r);
    }
    io_finish(io, r, res);
    return 0;
}

/* Takes every completion that is ready, without blocking. */
static int io_collect(moeio_t *io)
{
    moeio_op_t *op;
    while (io->ops->reap(io->state, &op) == 1) {
        io_account(io, now_ns());
        io->inflight--;
        int e = io_complete(io, read_of_op(op));
        if (e < 0)
            return e;
    }
    return 0;
}

/* Moves pending reads into the backend while the depth has room. */
static int io_fill(moeio_t *io)
{
    while (io->inflight < io->depth && io->pending.head) {
        int e = io_issue(io, list_pop(&io->pending));
        if (e < 0)
            return e;
    }
    return 0;
}

/* Submits what is queued (one system call) and waits for wait_nr completions. */
static int io_flush(moeio_t *io, unsigned wait_nr)
{
    if (!io->queued && !wait_nr)
        return 0;
    if (wait_nr > io->inflight)
        wait_nr = io->inflight;
    if (io->queued)
        io->stats.submits++;
    io->queued = 0;
    return io->ops->submit(io->state, wait_nr);
}

static int io_fail(moeio_t *io, int e)
{
    if (!io->fatal)
        io->fatal = e;
    return e;
}

/* Drives I/O until satisfied(io, arg) holds or nothing is left in flight: each turn takes
 * the completions that are ready, refills the depth, and makes one system call that
 * submits and, unless satisfied, waits for the next completion. Finished reads are handed
 * back as soon as they are collected, never held across another wait. Leaves nothing
 * queued unsubmitted. */
static int io_drive(moeio_t *io, bool (*satisfied)(const moeio_t *, size_t), size_t arg)
{
    for (;;) {
        int e = io_collect(io);
        if (e == 0)
            e = io_fill(io);
        if (e < 0)
            return io_fail(io, e);
        bool stop = satisfied(io, arg) || !io->inflight; /* !inflight: pending is empty too */
        e = io_flush(io, stop ? 0 : 1);
        if (e < 0)
            return io_fail(io, e);
        if (stop)
            return 0;
    }
}

static bool reap_satisfied(const moeio_t *io, size_t min_complete)
{
    return io->done.n >= min_complete;
}

static bool batch_satisfied(const moeio_t *io, size_t unused)
{
    return io->batch_left == 0;
}

static bool io_validate(const moeio_t *io, const moeio_read_t *r)
{
    if (!r->dst || !r->len || r->offset > io->file_size || r->len > io->file_size - r->offset)
        return false;
    return !io->direct || (uintptr_t)r->dst % MOEIO_ALIGN == 0;
}

static void io_enqueue(moeio_t *io, moeio_read_t *reads, size_t n, unsigned flags)
{
    moeio_read_t *head = NULL, **tail = &head;
    size_t n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        moeio_read_t *r = &reads[i];
        r->res = 0;
        r->priv_.flags = flags;
        r->priv_.done = r->priv_.t0_ns = 0;
        r->priv_.retries = 0;
        r->priv_.aoff = r->offset & ~(uint64_t)(MOEIO_ALIGN - 1);
        if (!io_validate(io, r)) {
            r->priv_.aoff = r->offset;
            io_finish(io, r, -EINVAL);
            continue;
        }
        r->priv_.span = moeio_span(r->offset, r->len, NULL);
        *tail = r;
        tail = &r->priv_.next;
        n_ok++;
    }
    *tail = NULL;
    head = list_sort(head, n_ok);
    for (moeio_read_t *r = head, *next; r; r = next) {
        next = r->priv_.next;
        list_push(&io->pending, r);
    }
}

int moeio_submit(moeio_t *io, moeio_read_t *reads, size_t n)
{
    if (io->fatal)
        return io->fatal;
    io_enqueue(io, reads, n, 0);
    int e = io_fill(io);
    if (e == 0)
        e = io_flush(io, 0);
    return e < 0 ? io_fail(io, e) : 0;
}

int moeio_reap(moeio_t *io, size_t min_complete, moeio_read_t **ret, size_t max)
{
    if (io->fatal)
        return io->fatal;
    int e = io_drive(io, reap_satisfied, min_complete);
    if (e < 0)
        return e;
    size_t k = 0;
    while (k < max && io->done.head)
        ret[k++] = list_pop(&io->done);
    return (int)k;
}

size_t moeio_pending(const moeio_t *io)
{
    return io->pending.n + io->inflight + io->done.n; /* in flight: one op per read */
}

int moeio_read_batch(moeio_t *io, moeio_read_t *reads, size_t n)
{
    if (io->fatal)
        return io->fatal;
    io->batch_left = n;
    io_enqueue(io, reads, n, READ_BATCH);
    int e = io_drive(io, batch_satisfied, 0);
    if (e < 0)
        return e;
    for (size_t i = 0; i < n; i++)
        if (reads[i].res < 0)
            return reads[i].res;
    return 0;
}

/* ---- the rest -------------------------------------------------------------------------- */

moeio_t *moeio_free(moeio_t *io)
{
    if (!io)
        return NULL;
    /* The kernel or a worker may still write into buffers of reads in flight: wait. */
    while (io->ops && io->inflight && !io->fatal) {
        moeio_op_t *op;
        if (io->ops->submit(io->state, 1) < 0)
            break;
        while (io->ops->reap(io->state, &op) == 1)
            io->inflight--;
    }
    moeio_uring_free(io->uring);
    moeio_pread_free(io->pread);
    if (io->fd >= 0)
        close(io->fd);
    free(io);
    return NULL;
}

int moeio_set_direct(moeio_t *io, bool direct)
{
    if (io->inflight || io->pending.head)
        return -EBUSY;
    int fl = fcntl(io->fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (fcntl(io->fd, F_SETFL, direct ? fl | O_DIRECT : fl & ~O_DIRECT) < 0)
        return -errno;
    io->direct = direct;
    io->direct_proven = false;
    io->info.direct = direct;
    return 0;
}

void moeio_get_info(const moeio_t *io, moeio_info_t *ret) { *ret = io->info; }
void moeio_get_stats(const moeio_t *io, moeio_stats_t *ret) { *ret = io->stats; }
void moeio_reset_stats(moeio_t *io)
{
    io->stats = (moeio_stats_t){0};
    io->t_inflight = 0;
}
uint64_t moeio_file_size(const moeio_t *io) { return io->file_size; }
