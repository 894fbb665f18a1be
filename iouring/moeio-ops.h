/* The one I/O seam of libmoeio: a backend is a table of three functions over an opaque
 * state. moeio.c owns all policy (widening, chunking, continuation of short reads, retries,
 * depth, stats); a backend only moves bytes. Backends: io_uring (moeio-uring.c), a pread
 * worker pool (moeio-pread.c); tests wrap either with a fault injector (struct
 * moeio_wrapper below).
 *
 * Contract: queue() takes an op (moeio_op_t: buf, off, len, buf_index) that stays valid and
 * untouched by the caller until reap() hands it back with op->res set (bytes read, 0 at end
 * of file, or -errno). The caller never has more than `depth` ops queued or in flight, so
 * queue() cannot run out of room. submit(wait_nr) passes queued ops on (one io_uring_enter)
 * and blocks until at least wait_nr completions are ready to reap. reap() never blocks. */
#pragma once
#include "iouring/moeio.h"

typedef struct moeio_ops {
    const char *name;
    int (*queue)(void *state, moeio_op_t *op);            /* 0 or -errno */
    int (*submit)(void *state, unsigned wait_nr);         /* 0 or -errno */
    int (*reap)(void *state, moeio_op_t **ret);           /* 1 (got one), 0 (none) */
} moeio_ops_t;

/* Test seam (moeio_config_t.wrapper): moeio_new fills `inner` with the backend it started,
 * then routes every op through ops, called with state = the wrapper itself; the wrapper
 * forwards to inner.ops with inner.state. Embed it first in the wrapper's own struct. */
typedef struct moeio_wrapper {
    const moeio_ops_t *ops;
    struct {
        const moeio_ops_t *ops;
        void *state;
    } inner;
} moeio_wrapper_t;

/* Backends (internal to libmoeio). */
typedef struct moeio_uring moeio_uring_t;
/* iov: the pool split into registrable pieces (may be NULL/0: nothing to register). */
struct iovec;
int moeio_uring_new(int fd, unsigned depth, const struct iovec *iov, unsigned n_iov,
                    bool register_file, moeio_uring_t **ret);
moeio_uring_t *moeio_uring_free(moeio_uring_t *u);
int moeio_uring_buffers_err(const moeio_uring_t *u); /* 0 registered, -errno, 1 not tried */
int moeio_uring_file_err(const moeio_uring_t *u);    /* 0 registered, -errno, 1 not tried */
extern const moeio_ops_t moeio_uring_ops;

typedef struct moeio_pread moeio_pread_t;
int moeio_pread_new(int fd, unsigned threads, moeio_pread_t **ret);
moeio_pread_t *moeio_pread_free(moeio_pread_t *p);
extern const moeio_ops_t moeio_pread_ops;
