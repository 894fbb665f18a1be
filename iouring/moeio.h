/* libmoeio: reads byte ranges of one file into aligned host memory, many at a time.
 *
 * moed streams experts (three byte ranges each) from NVMe. libmoeio turns a batch of
 * {file offset, length, destination} reads into as few system calls as possible: each read
 * is widened to 4096-aligned bounds (O_DIRECT needs that), the batch is sorted by offset and
 * handed to the kernel in one io_uring_enter, at most `depth` reads are in flight and the
 * rest follow as earlier ones complete. Short reads are continued, EAGAIN/EINTR retried, and
 * an error (EIO, ...) fails only the read it belongs to.
 *
 * Objects:
 *   moeio_pool_t  host memory for destinations: 2 MiB-aligned, huge pages where possible,
 *                 registered with io_uring by each moeio_t that uses it; its base and size
 *                 are public so the GPU layer can import it (VK_EXT_external_memory_host).
 *   moeio_t       one open file + one backend (io_uring, or a pread worker pool when
 *                 io_uring is refused) + queue + stats. Not thread-safe: one thread at a time.
 *   moeio_read_t  one read, owned by the caller (embed it; no allocation per read). It must
 *                 stay put from moeio_submit until it is returned by moeio_reap.
 *
 * Errors are 0 or -errno; errno is never relied on. Nothing here logs: degraded modes (no
 * O_DIRECT, no io_uring, unregistered buffers) are described once in moeio_info_t.notes
 * for the caller to log. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MOEIO_ALIGN 4096u                   /* file offset/length/destination alignment */
#define MOEIO_POOL_ALIGN (2u * 1024 * 1024) /* pool base and size alignment (huge page) */
#define MOEIO_DEPTH_MAX 4096u
#define MOEIO_THREADS_MAX 64u
#define MOEIO_LAT_BUCKETS 32 /* bucket i: latency in [2^i, 2^(i+1)) us; bucket 0 also < 1 us */

/* ---- host buffer pool --------------------------------------------------------------- */

typedef struct moeio_pool moeio_pool_t;

enum moeio_pool_flags {
    MOEIO_POOL_NO_HUGETLB = 1u << 0, /* in: do not try MAP_HUGETLB */
    MOEIO_POOL_NO_THP = 1u << 1,     /* in: do not ask for transparent huge pages */
    MOEIO_POOL_HUGETLB = 1u << 8,    /* out: backed by reserved huge pages (MAP_HUGETLB) */
    MOEIO_POOL_THP = 1u << 9,        /* out: madvise(MADV_HUGEPAGE) accepted */
    MOEIO_POOL_FOREIGN = 1u << 10,   /* out: caller's memory (moeio_pool_wrap) */
};

/* Maps at least `size` bytes (rounded up to MOEIO_POOL_ALIGN), 2 MiB-aligned: reserved huge
 * pages when the admin set some aside, else normal pages with MADV_HUGEPAGE. Pages are not
 * touched here (registration pins them). 0, -EINVAL (size 0), -ENOMEM. */
int moeio_pool_new(size_t size, unsigned flags, moeio_pool_t **ret);
/* Uses the caller's memory [base, base+size) as a pool; base and size must be multiples of
 * MOEIO_ALIGN. The memory is not freed by moeio_pool_free and must outlive the pool and
 * every moeio_t using it. 0 or -EINVAL. */
int moeio_pool_wrap(void *base, size_t size, moeio_pool_t **ret);
/* Unmaps (unless foreign). Every moeio_t using the pool must be freed first. NULL ok. */
moeio_pool_t *moeio_pool_free(moeio_pool_t *p);
void *moeio_pool_base(const moeio_pool_t *p);
size_t moeio_pool_size(const moeio_pool_t *p);
unsigned moeio_pool_flags(const moeio_pool_t *p);
/* Pointer to byte `off` of the pool, or NULL past its end. */
void *moeio_pool_ptr(const moeio_pool_t *p, size_t off);

/* ---- widening ----------------------------------------------------------------------- */

/* Bytes a destination needs for a read of [offset, offset+len): the range widened to
 * MOEIO_ALIGN bounds. *ret_inner (may be NULL) gets where the requested bytes start in it. */
uint64_t moeio_span(uint64_t offset, uint64_t len, uint32_t *ret_inner);

/* ---- reads ---------------------------------------------------------------------------- */

typedef struct moeio_op { /* one backend operation; see moeio-ops.h */
    void *buf;
    uint64_t off;
    uint32_t len;
    int buf_index; /* registered buffer, or -1 */
    int res;       /* written by the backend: bytes read or -errno */
    struct moeio_op *next;
} moeio_op_t;

typedef struct moeio_read {
    /* in: set by the caller */
    uint64_t offset; /* file offset of the first wanted byte */
    uint64_t len;    /* wanted bytes, > 0 */
    void *dst;       /* moeio_span(offset, len) bytes; MOEIO_ALIGN-aligned when direct */
    void *user;      /* caller's cookie, untouched */
    /* out: valid once the read is returned by moeio_reap / moeio_read_batch */
    int res;        /* 0, or -errno (-EIO from the drive, -EINVAL bad arguments or range past
                     * end of file, -ENODATA file ended early, ...) for this read only */
    uint32_t inner; /* the wanted bytes start at (char *)dst + inner */
    /* private */
    struct {
        uint64_t aoff, span, done, t0_ns;
        struct moeio_read *next;
        moeio_op_t op;
        unsigned retries;
        unsigned flags;
    } priv_;
} moeio_read_t;

/* ---- the reader ------------------------------------------------------------------------ */

typedef struct moeio moeio_t;

enum moeio_backend {
    MOEIO_BACKEND_AUTO,     /* io_uring, else pread workers (never fails for lack of io_uring) */
    MOEIO_BACKEND_IO_URING, /* io_uring or an error */
    MOEIO_BACKEND_PREAD,    /* pread worker pool */
};
const char *moeio_backend_name(enum moeio_backend b); /* "auto", "io_uring", "pread" */
int moeio_backend_from_name(const char *name, enum moeio_backend *ret); /* 0 or -EINVAL */

struct moeio_wrapper; /* moeio-ops.h: test seam */

typedef struct moeio_config {
    enum moeio_backend backend; /* default AUTO */
    unsigned depth;             /* reads in flight, 1..MOEIO_DEPTH_MAX; 0 = 32 */
    unsigned threads;           /* pread workers, 1..MOEIO_THREADS_MAX; 0 = 4 */
    bool buffered;              /* do not try O_DIRECT */
    bool no_register_buffers;   /* do not register the pool with io_uring */
    bool no_register_file;      /* do not register the file with io_uring */
    uint32_t max_op_bytes;      /* largest single op and registered-buffer piece, a multiple
                                 * of MOEIO_ALIGN; 0 = 1 GiB (the kernel's limit for one
                                 * registered buffer). Smaller values are for tests. */
    struct moeio_wrapper *wrapper; /* tests: every backend op goes through it; NULL */
} moeio_config_t;

/* Degraded modes, each set at most once, with the reason (a negative errno). */
enum moeio_note {
    MOEIO_NOTE_BUFFERED = 1u << 0,     /* O_DIRECT refused: buffered reads (page cache) */
    MOEIO_NOTE_PREAD = 1u << 1,        /* io_uring refused: pread worker pool */
    MOEIO_NOTE_UNREGISTERED = 1u << 2, /* buffer registration failed: plain reads */
    MOEIO_NOTE_FILE_UNREG = 1u << 3,   /* file registration failed: plain fd */
};

typedef struct moeio_info {
    enum moeio_backend backend; /* active: IO_URING or PREAD */
    bool direct;                /* O_DIRECT in use */
    bool buffers_registered;
    bool file_registered;
    unsigned depth, threads;
    uint64_t file_size;
    unsigned notes;             /* enum moeio_note */
    int buffered_err, pread_err, unregistered_err, file_unreg_err; /* -errno, 0 if none */
    char text[512]; /* the notes as one line for the log ("" when none) */
} moeio_info_t;

typedef struct moeio_stats {
    uint64_t reads;       /* reads finished, ok or not: == sum of lat_hist */
    uint64_t reads_ok;    /* reads - errors */
    uint64_t errors;      /* reads finished with res < 0 */
    uint64_t bytes;       /* wanted bytes of the reads that succeeded (sum of len) */
    uint64_t bytes_io;    /* bytes the backend transferred (widening, re-reads included) */
    uint64_t ops;         /* backend operations (chunks, continuations, retries included) */
    uint64_t short_reads; /* operations that returned fewer bytes than asked, continued */
    uint64_t retries;     /* operations retried after -EAGAIN / -EINTR */
    uint64_t submits;     /* submissions to the backend (io_uring_enter calls that submit) */
    uint64_t lat_ns_total;
    uint64_t inflight_ns; /* integral of ops in flight over time: / elapsed ns = mean depth */
    uint64_t lat_hist[MOEIO_LAT_BUCKETS]; /* reads by first submission -> completion time */
} moeio_stats_t;

/* Opens `path` for reading (O_DIRECT unless cfg->buffered; buffered with a note where the
 * filesystem refuses it), starts the backend (cfg->backend; AUTO falls back to pread with a
 * note) and registers `pool` (may be NULL: destinations are then plain pointers) and the
 * file with io_uring where it can. cfg may be NULL (defaults). The pool must outlive the
 * reader. 0, or -errno: the open's error, -EINVAL bad config, the io_uring error when
 * cfg->backend is IO_URING, -ENOMEM. */
int moeio_new(const char *path, const moeio_config_t *cfg, moeio_pool_t *pool, moeio_t **ret);
/* Waits for reads in flight (their buffers may still be written until then), stops the
 * backend, closes the file. NULL ok. */
moeio_t *moeio_free(moeio_t *io);

void moeio_get_info(const moeio_t *io, moeio_info_t *ret);
void moeio_get_stats(const moeio_t *io, moeio_stats_t *ret);
void moeio_reset_stats(moeio_t *io);
uint64_t moeio_file_size(const moeio_t *io);

/* Turns O_DIRECT on or off for later reads. Only while idle (-EBUSY otherwise); -EINVAL if
 * the filesystem refuses O_DIRECT. */
int moeio_set_direct(moeio_t *io, bool direct);

/* Asynchronous interface. moeio_submit validates the n reads (one with bad arguments
 * completes at once with res -EINVAL), queues them sorted by offset behind earlier ones,
 * and passes as many as the depth allows to the kernel in one system call. 0 or -errno
 * (backend failure; the reads are then not queued). */
int moeio_submit(moeio_t *io, moeio_read_t *reads, size_t n);
/* Drives I/O and returns finished reads: waits until at least min_complete reads have
 * finished (fewer if nothing else is queued), stores up to `max` of them in ret (oldest
 * first) and returns how many, or -errno if the backend failed. min_complete 0 polls. */
int moeio_reap(moeio_t *io, size_t min_complete, moeio_read_t **ret, size_t max);
/* Reads queued or in flight, not yet returned by moeio_reap. */
size_t moeio_pending(const moeio_t *io);

/* Blocking: submits the n reads and returns when all have finished (they are not returned
 * by moeio_reap). 0 if all succeeded, else the res of the first failed read (in array
 * order); each read's res tells which failed. */
int moeio_read_batch(moeio_t *io, moeio_read_t *reads, size_t n);
